r"""Gradient accumulation over micro-batches with the curvature of all of them, solved once."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .._custom_types import Array, PyTree
from ._apply import trainable_zeros
from ._common import require_params


class MultiStepsBatchState(NamedTuple):
    """State of :func:`multi_steps`.

    Attributes:
        mini_step: index of the next micro-batch in the current accumulation (int32).
        gradient_step: number of updates emitted so far (int32).
        acc_grads: running mean of the micro-batch gradients.
        batches: the micro-batches of the current accumulation, stacked on a leading axis of
            length ``every_k``.
        inner_state: the state of the wrapped optimizer.
    """

    mini_step: Array
    gradient_step: Array
    acc_grads: PyTree
    batches: PyTree
    inner_state: Any


def multi_steps(
    opt: optax.GradientTransformation,
    every_k: int,
    batch_like: Any,
    *,
    batch_arg: str = "batch",
) -> optax.GradientTransformationExtraArgs:
    r"""Accumulate ``every_k`` micro-batches, then run the wrapped optimizer once on all of them.

    .. math::
        \bar g = \frac1k \sum_{j=1}^k g_j, \qquad
        d = \mathrm{opt}(\bar g;\ \text{batch} = B_1 \cup \dots \cup B_k),

    so that with equal micro-batch sizes the emitted update is the update of one step on the
    whole batch: the mean gradient, and the Fisher (a mean over examples) of all micro-batches.
    The micro-steps in between return zero updates and do not run the wrapped optimizer (a
    ``jax.lax.cond``), so a natural-gradient solve runs once per emitted update.

    ``optax.MultiSteps`` cannot do this for a curvature-based optimizer: it calls the wrapped
    ``update`` on every micro-step (keeping its state only on the last), so the solve runs
    ``every_k`` times and the curvature sees the last micro-batch only. This wrapper stores the
    micro-batches (their inputs, not their activations) in its state; at the emitted step the
    Fisher is formed on their concatenation, so its forward pass holds the activations of the
    whole batch once.

    Args:
        opt: the wrapped optimizer, e.g. :func:`natural_gradient`.
        every_k: number of micro-batches per update.
        batch_like: one micro-batch (or a pytree of ``jax.ShapeDtypeStruct``) giving the shapes
            and dtypes of the stored micro-batches; each leaf has a leading example axis.
        batch_arg: name of the extra argument of ``update`` carrying the micro-batch.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params,
        batch=micro_batch, ...)`` needs ``params`` and the micro-batch.

    Raises:
        ValueError: if ``every_k < 1``, or (in ``update``) the micro-batch or ``params`` is
            missing.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import multi_steps, natural_gradient, predictive_fisher
        >>> apply = lambda w, x: x @ w
        >>> inner = natural_gradient(1.0, predictive_fisher(apply, "gaussian"), damping=0.0)
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]]); y = jnp.array([1.0, 2.0])
        >>> opt = multi_steps(inner, 2, batch_like=(x[:1], y[:1]))
        >>> w = jnp.zeros(2); state = opt.init(w)
        >>> for i in range(2):  # least squares: one emitted Newton step solves it
        ...     xb, yb = x[i:i + 1], y[i:i + 1]
        ...     updates, state = opt.update(xb.T @ (xb @ w - yb), state, w, batch=(xb, yb))
        ...     w = optax.apply_updates(w, updates)
        >>> bool(jnp.allclose(w, y, atol=1e-5))
        True

    References:
        Martens, *Deep learning via Hessian-free optimization*, ICML 2010, Sec. 4.2 (one
        curvature solve per parameter update on a large batch).
    """
    if not isinstance(every_k, int) or every_k < 1:
        raise ValueError(f"`every_k` must be a positive int, got {every_k!r}.")
    inner = optax.with_extra_args_support(opt)

    def init_fn(params: PyTree) -> MultiStepsBatchState:
        batches = jax.tree.map(
            lambda b: jnp.zeros((every_k, *jnp.shape(b)), jnp.result_type(b)), batch_like
        )
        return MultiStepsBatchState(
            mini_step=jnp.zeros((), jnp.int32),
            gradient_step=jnp.zeros((), jnp.int32),
            acc_grads=trainable_zeros(params),
            batches=batches,
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "multi_steps")
        if batch_arg not in extra_args:
            raise ValueError(
                f"multi_steps needs the micro-batch as the extra argument `{batch_arg}=` of "
                f"update: `opt.update(grads, state, params, {batch_arg}=micro_batch)`."
            )
        step = state.mini_step
        batches = jax.tree.map(
            lambda buf, b: buf.at[step].set(jnp.asarray(b, buf.dtype)),
            state.batches,
            extra_args[batch_arg],
        )
        acc = jax.tree.map(
            lambda a, g: a + (jnp.asarray(g, a.dtype) - a) / (step + 1).astype(a.dtype),
            state.acc_grads,
            updates,
        )
        emit = step == every_k - 1

        def run(acc, inner_state):
            whole = jax.tree.map(lambda buf: buf.reshape((-1, *buf.shape[2:])), batches)
            args = {**extra_args, batch_arg: whole}
            out, new_inner = inner.update(acc, inner_state, params, **args)
            return optax.tree.cast_like(out, updates), new_inner

        def wait(acc, inner_state):
            return jax.tree.map(jnp.zeros_like, updates), inner_state

        out, inner_state = jax.lax.cond(emit, run, wait, acc, state.inner_state)
        new_state = MultiStepsBatchState(
            mini_step=jnp.where(emit, 0, step + 1).astype(jnp.int32),
            gradient_step=state.gradient_step + emit.astype(jnp.int32),
            acc_grads=jax.tree.map(lambda a: jnp.where(emit, jnp.zeros_like(a), a), acc),
            batches=batches,
            inner_state=inner_state,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
