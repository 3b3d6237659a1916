r"""Hand a model to the curvature builders: equinox, flax nnx, flax linen, haiku, plain functions.

Every curvature builder (:func:`~infogeo_jax.optim.predictive_fisher`,
:func:`~infogeo_jax.optim.empirical_fisher`, the Kronecker-factored optimizer) needs the
network as a function of the parameters that the optimizer's ``update`` receives. This module
turns whatever the user has into that function, so that no one writes closures over the static
parts of a model:

- a plain function ``apply(params, inputs) -> outputs`` is used as it is;
- an ``equinox.Module`` is called per example (``jax.vmap``), rebuilt from the params (the
  arrays of ``eqx.filter(model, eqx.is_array)`` or of ``eqx.filter(model,
  eqx.is_inexact_array)``) and the non-array leaves (activation functions, ...) and integer
  buffers of the module it was built from;
- a flax nnx module (through ``nnx.Optimizer(model, tx, wrt=nnx.Param)``) is rebuilt by
  ``nnx.merge`` from its graph definition, the params and its other state inside the traced
  function, with dropout deterministic and batch normalization in train mode (batch
  statistics): the curvature is that of the deterministic network on the batch, and the model's
  own ``BatchStat`` and RNG variables are never read back or mutated;
- a flax linen module is applied as ``module.apply({"params": params}, inputs)``;
- a haiku ``hk.transform``-ed pair is applied as ``transformed.apply(params, None, inputs)``
  (``hk.without_apply_rng``: ``transformed.apply(params, inputs)``).

Internal entry points (stable; the curvature builders and K-FAC call them):

- :func:`as_apply` ``(model) -> apply``: ``apply(params, inputs) -> outputs`` with batch-leading
  outputs, over the pytree that ``update`` receives as ``params`` (an ``equinox.Module`` whose
  fields are pytrees and hashable static parts, so builders that hold it stay pytrees).
- :func:`is_trainable` ``(leaf) -> bool``: the leaves that are differentiated (inexact
  arrays); integer buffers and non-array leaves are not.
- :func:`split_trainable` ``(params, full_params=None) -> (trainable, rebuild)``: ``trainable``
  is ``params`` with ``None`` at every leaf that is not trainable (the structure of the
  gradients of ``eqx.filter_grad``); ``rebuild(trainable)`` gives back the whole parameter
  pytree that ``apply`` takes. Inside ``optax.masked`` / ``optax.multi_transform`` the params
  have ``optax.MaskedNode`` at the leaves that are not selected; ``full_params`` (the whole
  parameters, passed to ``update`` as an extra argument) then supplies their values, so the
  curvature on the selected leaves is computed with the full model.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import PyTree

ApplyFn = Callable[[PyTree, Any], PyTree]


class _Static:
    """Holder of a static (non-array) object, compared by identity so that it is hashable."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)

    def __repr__(self) -> str:
        return f"_Static({type(self.value).__name__})"


class AbstractApply(eqx.Module):
    """``apply(params, inputs) -> outputs`` (batch-leading) built from a model."""

    def __call__(self, params: PyTree, inputs: Any) -> PyTree:
        raise NotImplementedError


class _PlainApply(AbstractApply):
    fn: _Static = eqx.field(static=True)

    def __call__(self, params: PyTree, inputs: Any) -> PyTree:
        return self.fn.value(params, inputs)


def _is_buffer(leaf: Any) -> bool:
    return eqx.is_array(leaf) and not eqx.is_inexact_array(leaf)


class _EquinoxApply(AbstractApply):
    static: _Static = eqx.field(static=True)
    buffers: PyTree

    def __call__(self, params: PyTree, inputs: Any) -> PyTree:
        model = eqx.combine(params, self.buffers, self.static.value)
        return jax.vmap(model)(inputs)


class _NnxApply(AbstractApply):
    graphdef: _Static = eqx.field(static=True)
    rest: PyTree

    def __call__(self, params: PyTree, inputs: Any) -> PyTree:
        from flax import nnx

        # Merged inside the traced function: fresh variables at this trace level, so train-mode
        # batch normalization may update its (throwaway) statistics; the user's model is untouched.
        model = nnx.merge(self.graphdef.value, params, self.rest)
        model.set_attributes(
            deterministic=True, use_running_average=False, raise_if_not_found=False
        )
        return model(inputs)


class _LinenApply(AbstractApply):
    module: _Static = eqx.field(static=True)

    def __call__(self, params: PyTree, inputs: Any) -> PyTree:
        return self.module.value.apply({"params": params}, inputs)


class _HaikuApply(AbstractApply):
    transformed: _Static = eqx.field(static=True)
    takes_rng: bool = eqx.field(static=True)

    def __call__(self, params: PyTree, inputs: Any) -> PyTree:
        if self.takes_rng:
            return self.transformed.value.apply(params, None, inputs)
        return self.transformed.value.apply(params, inputs)


def _haiku_takes_rng(transformed: Any) -> bool:
    try:
        names = list(inspect.signature(transformed.apply).parameters)
    except (TypeError, ValueError):
        return True
    return len(names) > 1 and names[1] == "rng"


def as_apply(model: Any) -> AbstractApply:
    """Turn a model into ``apply(params, inputs) -> outputs`` over the optimizer's ``params``.

    Args:
        model: a plain function ``apply(params, inputs)``, an ``equinox.Module`` (called per
            example), a flax nnx module, a flax linen module, or a haiku ``Transformed``.

    Returns:
        An ``equinox.Module`` callable as ``apply(params, inputs)`` with batch-leading outputs.

    Raises:
        TypeError: if ``model`` is none of these.
    """
    if isinstance(model, AbstractApply):
        return model
    if "flax.nnx" in sys.modules:
        from flax import nnx

        if isinstance(model, nnx.Module):
            graphdef, _, rest = nnx.split(model, nnx.Param, ...)
            return _NnxApply(_Static(graphdef), nnx.as_pure(rest))
    if "flax.linen" in sys.modules:
        from flax import linen

        if isinstance(model, linen.Module):
            return _LinenApply(_Static(model))
    if "haiku" in sys.modules:
        import haiku as hk

        if isinstance(model, hk.Transformed):
            return _HaikuApply(_Static(model), _haiku_takes_rng(model))
        if isinstance(model, hk.TransformedWithState):
            raise TypeError(
                "a haiku `transform_with_state` model has state: pass a plain function, e.g. "
                "`lambda p, x: transformed.apply(p, state, None, x)[0]`."
            )
    if isinstance(model, eqx.Module) and callable(model):
        static = eqx.filter(model, eqx.is_array, inverse=True)
        return _EquinoxApply(_Static(static), eqx.filter(model, _is_buffer))
    if callable(model):
        return _PlainApply(_Static(model))
    raise TypeError(
        "the model must be a function `apply(params, inputs) -> outputs`, an equinox module, a "
        f"flax nnx or linen module, or a haiku transform; got {type(model).__name__}."
    )


def is_trainable(leaf: Any) -> bool:
    """Whether a params leaf is differentiated: inexact (floating or complex) arrays only."""
    return eqx.is_inexact_array(leaf)


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def has_masked_leaves(params: PyTree) -> bool:
    """Whether ``params`` comes from ``optax.masked`` / ``optax.multi_transform``."""
    return any(_is_masked(x) for x in jax.tree.leaves(params, is_leaf=_is_masked))


def split_trainable(
    params: PyTree, full_params: PyTree | None = None, *, builder: str = "the Fisher"
) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Split ``params`` into the differentiated leaves and a function that rebuilds the rest.

    Args:
        params: the ``params`` that the optimizer's ``update`` receives (``optax.MaskedNode`` at
            leaves that ``optax.masked`` / ``optax.multi_transform`` did not select).
        full_params: the whole parameters (same structure, arrays everywhere), needed when
            ``params`` has masked leaves.
        builder: name used in error messages.

    Returns:
        ``(trainable, rebuild)``: ``trainable`` is ``params`` with ``None`` at every leaf that
        is not an inexact array (``MaskedNode`` kept); ``rebuild(trainable)`` is the parameter
        pytree the model takes (masked leaves from ``full_params``, integer buffers from
        ``params``).

    Raises:
        ValueError: if ``params`` has masked leaves and ``full_params`` is missing or does not
            match.
    """
    trainable = jax.tree.map(
        lambda x: x if (_is_masked(x) or is_trainable(x)) else None, params, is_leaf=_is_masked
    )
    leaves, treedef = jax.tree.flatten(params, is_leaf=_is_masked)
    full_leaves = leaves
    if any(_is_masked(x) for x in leaves):
        if full_params is None:
            raise ValueError(
                f"{builder} is inside `optax.masked` / `optax.multi_transform` and sees only the "
                "selected leaves; pass the whole parameters to the optimizer's update as the "
                "extra argument `full_params=params` (e.g. `opt.update(grads, state, params, "
                "batch=batch, full_params=params)`), so that the curvature of the selected "
                "leaves is computed with the full model."
            )
        full_leaves, full_treedef = jax.tree.flatten(full_params, is_leaf=_is_masked)
        if len(full_leaves) != len(leaves) or any(_is_masked(x) for x in full_leaves):
            raise ValueError(
                f"{builder}: `full_params` must be the whole parameters (the pytree given to "
                f"`init`), with the structure of the params; got {full_treedef} for {treedef}."
            )

    def rebuild(t: PyTree) -> PyTree:
        t_leaves = treedef.flatten_up_to(t)
        merged = [
            f if _is_masked(p) else (p if tl is None else tl)
            for p, tl, f in zip(leaves, t_leaves, full_leaves)
        ]
        return jax.tree.unflatten(treedef, merged)

    return trainable, rebuild


def trainable_zeros(params: PyTree) -> PyTree:
    """Zeros like the trainable leaves of ``params``, ``None`` elsewhere (optimizer state)."""
    return jax.tree.map(
        lambda x: jnp.zeros_like(x) if is_trainable(x) else None,
        params,
        is_leaf=_is_masked,
    )


def check_not_schedule_value(fn: Any, name: str, optimizer: str) -> None:
    """Raise a ``TypeError`` naming the fix when a callable argument arrives as a value.

    ``optax.inject_hyperparams`` takes every callable argument for a schedule and passes the
    optimizer its value at the step count; the Fisher builders' results survive that (they
    return themselves), a plain function does not.
    """
    if callable(fn):
        return
    raise TypeError(
        f"{optimizer}: `{name}` must be callable, got {type(fn).__name__}. Under "
        "`optax.inject_hyperparams` every callable argument is taken for a schedule and "
        f"replaced by its value: pass `static_args=({name!r},)` to inject_hyperparams, or wrap "
        f"the function as `infogeo_jax.optim.not_a_schedule({name})`."
    )


class _NotASchedule(eqx.Module):
    fn: _Static = eqx.field(static=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and is_step_count(args[0]):
            return self
        return self.fn.value(*args, **kwargs)


def is_step_count(x: Any) -> bool:
    """Whether ``x`` is a bare integer scalar (how ``optax.inject_hyperparams`` calls schedules)."""
    if not isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return False
    return jnp.ndim(x) == 0 and jnp.issubdtype(jnp.result_type(x), jnp.integer)


def not_a_schedule(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a function so that ``optax.inject_hyperparams`` passes it through as it is.

    ``optax.inject_hyperparams`` takes every callable argument for a schedule: it calls it with
    the integer step count and hands the optimizer the result. The wrapper, called with a bare
    integer scalar and nothing else, returns itself; otherwise it calls ``fn``. Use it for a
    hand-written ``fisher`` or a mirror-descent ``potential`` (the Fisher builders' results
    behave so already), instead of ``static_args``.

    Args:
        fn: the function (e.g. ``potential(params) -> scalar``); it must not itself be a
            function of a bare integer scalar.

    Returns:
        A callable ``equinox.Module`` that calls ``fn``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import mirror_descent, not_a_schedule
        >>> potential = not_a_schedule(lambda x: 0.5 * jnp.sum(x**2))
        >>> opt = optax.inject_hyperparams(mirror_descent)(0.1, potential)
        >>> state = opt.init(jnp.ones(2))
        >>> updates, state = opt.update(jnp.ones(2), state, jnp.ones(2))
        >>> bool(jnp.allclose(updates, -0.1))
        True
    """
    if isinstance(fn, _NotASchedule):
        return fn
    return _NotASchedule(_Static(fn))


def apply_gradients(state: Any, *, grads: PyTree, **extra_args: Any) -> Any:
    """``TrainState.apply_gradients`` that forwards extra arguments (the batch) to the optimizer.

    flax's ``TrainState.apply_gradients(grads=..., **kwargs)`` passes its keyword arguments to
    ``replace``, not to ``tx.update``, so an optimizer that needs the batch cannot be used
    through it. This function does the same update with ``extra_args`` passed to
    ``state.tx.update``; it works for any ``flax.training.train_state.TrainState`` (or a
    subclass: the other fields are kept; change them with ``.replace`` afterwards).

    Args:
        state: a flax ``TrainState`` (fields ``step``, ``params``, ``tx``, ``opt_state``).
        grads: the gradients, with the structure of ``state.params``.
        **extra_args: extra arguments of the optimizer's ``update``, e.g. ``batch=batch``.

    Returns:
        The new state: ``step + 1``, updated ``params`` and ``opt_state``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from flax.training.train_state import TrainState
        >>> from infogeo_jax.optim import apply_gradients, natural_gradient, predictive_fisher
        >>> apply = lambda w, x: x @ w
        >>> opt = natural_gradient(1.0, predictive_fisher(apply, "gaussian"), damping=0.0)
        >>> state = TrainState.create(apply_fn=apply, params=jnp.zeros(2), tx=opt)
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]]); y = jnp.array([1.0, 2.0])
        >>> grads = x.T @ (x @ state.params - y) / 2
        >>> state = apply_gradients(state, grads=grads, batch=(x, y))
        >>> bool(jnp.allclose(state.params, y, atol=1e-5))
        True
    """
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, **extra_args)
    return state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
    )
