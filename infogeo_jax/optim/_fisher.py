r"""Fisher builders: the ``fisher(params, **extra_args)`` callables of :func:`natural_gradient`.

Each builder returns an ``equinox.Module`` (a pytree with no array leaves of its own, apart
from a model's integer buffers or flax state) callable as ``fisher(params, **extra_args)``.
Called with a bare integer step count and nothing else, as ``optax.inject_hyperparams`` calls
whatever it takes for a schedule, it returns itself: so ``optax.inject_hyperparams(
natural_gradient)(...)`` needs no ``static_args``, and the Fisher reaches the optimizer as it
is. Inside ``optax.masked`` / ``optax.multi_transform`` the builders compute the curvature of
the selected leaves with the full model, whose parameters reach them as the extra argument
``full_params``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Metric, PyTree
from .._manifold import AbstractStatisticalManifold
from ._apply import AbstractApply, _Static, as_apply, is_step_count, split_trainable


class AbstractFisher(eqx.Module):
    """A Fisher builder's result: ``fisher(params, **extra_args)`` -> matrix or operator.

    Called with a bare integer step count (as ``optax.inject_hyperparams`` evaluates a
    schedule) it returns itself, so it is never mistaken for a schedule.
    """

    # A function object: hashed and compared by identity (it may hold arrays), so that
    # `jax.jit(fisher)` works.
    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __call__(self, params: PyTree, **extra_args: Any) -> Any:
        if not extra_args and is_step_count(params):
            return self
        return self.build(params, **extra_args)

    def build(self, params: PyTree, **extra_args: Any) -> Any:
        """The Fisher at ``params`` (a 2-D array or a lineax operator)."""
        raise NotImplementedError


def _selected_indices(params: PyTree, full_params: PyTree) -> np.ndarray:
    """Indices into ``ravel_pytree(full_params)`` of the leaves not masked in ``params``."""
    is_masked = lambda x: isinstance(x, optax.MaskedNode)
    masked = [is_masked(x) for x in jax.tree.leaves(params, is_leaf=is_masked)]
    sizes = [int(np.size(x)) for x in jax.tree.leaves(full_params)]
    offsets = np.cumsum([0, *sizes])
    chunks = [np.arange(offsets[i], offsets[i + 1]) for i, m in enumerate(masked) if not m]
    return np.concatenate(chunks) if chunks else np.zeros((0,), int)


class _ManifoldFisher(AbstractFisher):
    manifold: AbstractStatisticalManifold

    def build(self, params: PyTree, **extra_args: Any) -> Metric:
        full_params = extra_args.get("full_params")
        trainable, rebuild = split_trainable(params, full_params, builder="manifold_fisher")
        theta, _ = ravel_pytree(rebuild(trainable))
        metric = self.manifold.metric(theta)
        if full_params is None:
            return metric
        idx = _selected_indices(params, full_params)
        return metric[idx][:, idx]


def manifold_fisher(manifold: AbstractStatisticalManifold) -> Callable[..., Metric]:
    r"""The Fisher metric of a statistical manifold, with ``params`` its coordinates.

    .. math::
        F(\theta) = g(\theta) \quad (= \nabla^2 A(\theta) \text{ for an exponential family in
        natural parameters}).

    Works for any :class:`infogeo_jax.AbstractStatisticalManifold`: an exponential family
    (``params`` are its natural parameters), a ``StatisticalModel`` or a
    ``StatisticalManifold``, since only ``manifold.metric`` is used. ``params`` may be any pytree
    whose ``jax.flatten_util.ravel_pytree`` is the point ``theta`` of shape ``(dim,)``. Inside
    ``optax.masked`` / ``optax.multi_transform`` (pass ``full_params=params`` to ``update``)
    the result is the block of :math:`g` on the selected coordinates.

    Args:
        manifold: the statistical manifold.

    Returns:
        ``fisher(params, **extra_args) -> (dim, dim)`` array; extra arguments other than
        ``full_params`` are ignored.

    Raises:
        TypeError: if ``manifold`` is not an ``AbstractStatisticalManifold``.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.families import Poisson
        >>> from infogeo_jax.optim import manifold_fisher
        >>> manifold_fisher(Poisson())(jnp.array([0.0])).tolist()
        [[1.0]]

    References:
        Amari & Nagaoka, *Methods of Information Geometry* (2000), Eq. (2.6).
    """
    if not isinstance(manifold, AbstractStatisticalManifold):
        raise TypeError(
            "manifold_fisher expects an infogeo_jax.AbstractStatisticalManifold (an exponential "
            f"family, a StatisticalModel or a StatisticalManifold), got {type(manifold).__name__}."
        )
    return _ManifoldFisher(manifold)


def _batch_of(extra_args: dict[str, Any], name: str, builder: str) -> Any:
    if name not in extra_args:
        raise ValueError(
            f"{builder} needs the data batch as the extra argument `{name}=` of the optimizer's "
            "update. Write, in\n"
            f"  optax / equinox / haiku: updates, opt_state = opt.update(grads, opt_state, "
            f"params, {name}=batch)\n"
            f"  flax nnx:   optimizer.update(model, grads, {name}=batch)\n"
            f"  flax linen: state = infogeo_jax.optim.apply_gradients(state, grads=grads, "
            f"{name}=batch)\n"
            "(inside optax.masked / optax.multi_transform add `full_params=params`)."
        )
    return extra_args[name]


def _batch_size(outputs: PyTree) -> int:
    leaves = jax.tree.leaves(outputs)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ValueError("the model outputs must have a leading batch axis.")
    return leaves[0].shape[0]


def _gauss_newton_operator(
    f: Callable[[PyTree], PyTree],
    params: PyTree,
    output_metric: Callable[[PyTree], Callable[[PyTree], PyTree]],
) -> lx.FunctionLinearOperator:
    r"""Matrix-free :math:`\frac1n J^\top M J` with :math:`J` the Jacobian of ``f`` at ``params``.

    One forward pass (``jax.linearize``); ``output_metric(outputs)`` is the output-space metric
    (built once), and each product is a JVP, that metric and a VJP (``jax.linear_transpose``).
    """
    outputs, jvp_fn = jax.linearize(f, params)
    vjp_fn = jax.linear_transpose(jvp_fn, params)
    n = _batch_size(outputs)
    metric = output_metric(outputs)

    def mv(v: PyTree) -> PyTree:
        (out,) = vjp_fn(metric(jvp_fn(v)))
        return jax.tree.map(lambda leaf: leaf / n, out)

    structure = jax.eval_shape(lambda: params)
    return lx.FunctionLinearOperator(
        mv, structure, tags=(lx.symmetric_tag, lx.positive_semidefinite_tag)
    )


def _default_inputs(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


class _EmpiricalFisher(AbstractFisher):
    loglik: _Static = eqx.field(static=True)
    model: AbstractApply | None
    batch_arg: str = eqx.field(static=True)
    inputs_of: _Static = eqx.field(static=True)

    def build(self, params: PyTree, **extra_args: Any) -> lx.FunctionLinearOperator:
        batch = _batch_of(extra_args, self.batch_arg, "empirical_fisher")
        trainable, rebuild = split_trainable(
            params, extra_args.get("full_params"), builder="empirical_fisher"
        )
        loglik = self.loglik.value
        model = self.model
        if model is None:
            f = lambda t: jax.vmap(loglik, in_axes=(None, 0))(rebuild(t), batch)
        else:
            inputs = self.inputs_of.value(batch)
            f = lambda t: jax.vmap(loglik)(model(rebuild(t), inputs), batch)
        return _gauss_newton_operator(f, trainable, lambda outputs: lambda u: u)


def empirical_fisher(
    loglik: Callable[[Any, Any], Array],
    *,
    model: Any = None,
    batch_arg: str = "batch",
    inputs_of: Callable[[Any], Any] | None = None,
) -> Callable[..., lx.FunctionLinearOperator]:
    r"""The empirical Fisher of a per-example log-likelihood, as a matrix-free operator.

    .. math::
        \hat F(\theta) = \frac1n \sum_{i=1}^n \nabla_\theta \ell(\theta, x_i)
        \nabla_\theta \ell(\theta, x_i)^\top = \frac1n G^\top G,

    applied as :math:`v \mapsto \frac1n G^\top (G v)` (one JVP and one VJP of the vector of
    per-example log-likelihoods), never forming :math:`G`. Scale the loss as the mean negative
    log-likelihood so that a unit learning rate is natural. Only the inexact (floating) leaves
    of ``params`` are differentiated: the operator acts on ``params`` with ``None`` at integer
    leaves, as the gradients of ``equinox.filter_grad`` are.

    Args:
        loglik: without ``model``: ``loglik(params, example) -> scalar`` for one example (the
            batch is a pytree whose leaves have a leading example axis, mapped by
            ``jax.vmap``). With ``model``: ``loglik(outputs, example) -> scalar`` with
            ``outputs`` the model's outputs for that example.
        model: optional model, in any form :func:`predictive_fisher` takes (a function
            ``apply(params, inputs)``, an equinox module, a flax nnx or linen module, a haiku
            transform), applied to ``inputs_of(batch)``.
        batch_arg: name of the extra argument of ``update`` carrying the batch.
        inputs_of: with ``model``: ``inputs_of(batch) -> inputs``; default ``batch[0]`` for a
            tuple or list batch, else the batch itself.

    Returns:
        ``fisher(params, **extra_args) -> lineax.FunctionLinearOperator`` on the params pytree.

    Raises:
        ValueError: (when called) if the batch extra argument is missing, or the params are
            masked (``optax.masked``) and ``full_params`` is missing.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.optim import empirical_fisher
        >>> loglik = lambda w, x: -0.5 * jnp.sum((x - w) ** 2)
        >>> op = empirical_fisher(loglik)(jnp.zeros(2), batch=jnp.array([[1.0, 0.0], [-1.0, 0.0]]))
        >>> bool(jnp.allclose(op.as_matrix(), jnp.array([[1.0, 0.0], [0.0, 0.0]])))
        True

    References:
        Kunstner, Balles & Hennig, *Limitations of the empirical Fisher approximation for natural
        gradient descent*, NeurIPS 2019, Eq. (4).
    """
    return _EmpiricalFisher(
        _Static(loglik),
        None if model is None else as_apply(model),
        batch_arg,
        _Static(_default_inputs if inputs_of is None else inputs_of),
    )


def _categorical_metric(logits: Array) -> Callable[[Array], Array]:
    # Fisher of Categorical(softmax(logits)) in the logits: diag(p) - p p^T, per example.
    p = jax.nn.softmax(logits, axis=-1)
    return lambda u: p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)


class _PredictiveFisher(AbstractFisher):
    model: AbstractApply
    output: str = eqx.field(static=True)
    noise_variance: float = eqx.field(static=True)
    batch_arg: str = eqx.field(static=True)
    inputs_of: _Static = eqx.field(static=True)

    def build(self, params: PyTree, **extra_args: Any) -> lx.FunctionLinearOperator:
        batch = _batch_of(extra_args, self.batch_arg, "predictive_fisher")
        inputs = self.inputs_of.value(batch)
        trainable, rebuild = split_trainable(
            params, extra_args.get("full_params"), builder="predictive_fisher"
        )
        if self.output == "categorical":
            output_metric = _categorical_metric
        else:
            var = self.noise_variance
            output_metric = lambda outputs: lambda u: jax.tree.map(lambda t: t / var, u)
        model = self.model
        return _gauss_newton_operator(lambda t: model(rebuild(t), inputs), trainable, output_metric)


def predictive_fisher(
    apply: Any,
    output: Literal["categorical", "gaussian"],
    *,
    noise_variance: float = 1.0,
    batch_arg: str = "batch",
    inputs_of: Callable[[Any], Any] | None = None,
) -> Callable[..., lx.FunctionLinearOperator]:
    r"""The predictive Fisher of a network whose outputs parameterize an exponential family.

    .. math::
        F(\theta) = \frac1n \sum_{i=1}^n J_i^\top F_{\mathrm{out}}(f_i) J_i,
        \qquad J_i = \partial f(\theta, x_i) / \partial \theta,

    with :math:`F_{\mathrm{out}}` the Fisher of the output distribution in the network's
    outputs: :math:`\mathrm{diag}(p) - p p^\top` with :math:`p = \mathrm{softmax}(f)` for
    ``"categorical"`` (logits), :math:`I / \sigma^2` for ``"gaussian"`` (the mean, known noise
    variance :math:`\sigma^2`). Since these outputs are natural parameters, this equals the
    generalized Gauss-Newton matrix of the mean negative log-likelihood (softmax cross-entropy,
    or squared error over :math:`2\sigma^2`). Matrix-free: one forward pass, then a JVP and a
    VJP per product.

    The model is handed over as it is, in any of these forms (the params are what the
    optimizer's ``update`` receives):

    - a function ``apply(params, inputs) -> outputs`` (plain optax);
    - an ``equinox.Module`` called per example (``jax.vmap``), with params
      ``eqx.filter(model, eqx.is_array)`` (or ``eqx.is_inexact_array``); its activation
      functions and integer buffers are taken from the module given here;
    - a flax nnx module, trained through ``nnx.Optimizer(model, tx, wrt=nnx.Param)``: the
      curvature is that of the network in train mode with dropout off (batch normalization uses
      the batch statistics; dropout is deterministic, so the curvature is a function of the
      params and the batch alone and consumes no RNG state); the model's batch statistics and
      RNG state are never mutated;
    - a flax linen module, applied as ``module.apply({"params": params}, inputs)`` (train it with
      :func:`apply_gradients`, which forwards the batch);
    - a haiku ``hk.transform`` (applied with ``rng=None``) or ``hk.without_apply_rng`` pair.

    Only the inexact leaves of ``params`` are differentiated: the operator acts on ``params``
    with ``None`` at integer leaves, as the gradients of ``equinox.filter_grad`` are.

    Args:
        apply: the model, in one of the forms above; outputs with a leading batch axis (logits
            on the last axis for ``"categorical"``).
        output: ``"categorical"`` or ``"gaussian"``.
        noise_variance: :math:`\sigma^2` of the Gaussian output (ignored for categorical).
        batch_arg: name of the extra argument of ``update`` carrying the batch.
        inputs_of: ``inputs_of(batch) -> inputs``; default: ``batch[0]`` when the batch is a
            tuple or list (``(inputs, targets)``), else the batch itself.

    Returns:
        ``fisher(params, **extra_args) -> lineax.FunctionLinearOperator`` on the params pytree.

    Raises:
        ValueError: if ``output`` is unknown, or (when called) the batch argument is missing,
            or the params are masked (``optax.masked``) and ``full_params`` is missing.
        TypeError: if ``apply`` is not a model in one of the forms above.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.optim import predictive_fisher
        >>> apply = lambda w, x: x @ w
        >>> fisher = predictive_fisher(apply, "gaussian")
        >>> fisher(jnp.zeros(2), batch=jnp.array([[1.0, 0.0], [1.0, 2.0]])).as_matrix().tolist()
        [[1.0, 1.0], [1.0, 2.0]]

    References:
        Martens, *New insights and perspectives on the natural gradient method*, JMLR 21 (2020),
        Sec. 9.2; Schraudolph, *Fast curvature matrix-vector products for second-order gradient
        descent*, Neural Computation 14 (2002).
    """
    if output not in ("categorical", "gaussian"):
        raise ValueError(f"`output` must be 'categorical' or 'gaussian', got {output!r}.")
    return _PredictiveFisher(
        as_apply(apply),
        output,
        float(noise_variance),
        batch_arg,
        _Static(_default_inputs if inputs_of is None else inputs_of),
    )
