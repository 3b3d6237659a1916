r"""Fisher builders: the ``fisher(params, **extra_args)`` callables of :func:`natural_gradient`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, Metric, PyTree
from .._manifold import AbstractStatisticalManifold
from ._common import vary as _vary, varying_axes as _varying_axes


def manifold_fisher(manifold: AbstractStatisticalManifold) -> Callable[..., Metric]:
    r"""The Fisher metric of a statistical manifold, with ``params`` its coordinates.

    .. math::
        F(\theta) = g(\theta) \quad (= \nabla^2 A(\theta) \text{ for an exponential family in
        natural parameters}).

    Works for any :class:`infogeo_jax.AbstractStatisticalManifold`: an exponential family
    (``params`` are its natural parameters), a ``StatisticalModel`` or a
    ``StatisticalManifold``, since only ``manifold.metric`` is used. ``params`` may be any pytree
    whose ``jax.flatten_util.ravel_pytree`` is the point ``theta`` of shape ``(dim,)``.

    Args:
        manifold: the statistical manifold.

    Returns:
        ``fisher(params, **extra_args) -> (dim, dim)`` array; extra arguments are ignored.

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

    def fisher(params: PyTree, **extra_args: Any) -> Metric:
        del extra_args
        theta, _ = ravel_pytree(params)
        return manifold.metric(theta)

    return fisher


def _batch_of(extra_args: dict[str, Any], name: str, builder: str) -> Any:
    if name not in extra_args:
        raise ValueError(
            f"{builder} needs the data batch: pass it to the optimizer's update as the extra "
            f"argument `{name}=...`, e.g. `opt.update(grads, state, params, {name}=batch)`."
        )
    return extra_args[name]


def _batch_size(outputs: PyTree) -> int:
    leaves = jax.tree.leaves(outputs)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ValueError("the model outputs must have a leading batch axis.")
    return leaves[0].shape[0]


AxisName = str | tuple[str, ...] | None
"""A ``shard_map`` / ``pmap`` axis name (or a tuple of them) to average the curvature over."""


def _axis_names(axis_name: AxisName) -> tuple[str, ...]:
    if axis_name is None:
        return ()
    names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"`axis_name` must be a str, a tuple of str or None, got {axis_name!r}.")
    return names


def _gauss_newton_operator(
    f: Callable[[PyTree], PyTree],
    params: PyTree,
    output_metric: Callable[[PyTree], Callable[[PyTree], PyTree]],
    *,
    data: PyTree = None,
    axis_name: AxisName = None,
) -> lx.FunctionLinearOperator:
    r"""Matrix-free :math:`\frac1n J^\top M J` with :math:`J` the Jacobian of ``f`` at ``params``.

    One forward pass (``jax.linearize``); ``output_metric(outputs)`` is the output-space metric
    (built once), and each product is a JVP, that metric and a VJP (``jax.linear_transpose``).
    With ``axis_name`` (inside ``shard_map`` or ``pmap``, ``data`` the local shard of the
    batch), each product is averaged over the devices of that axis (``jax.lax.pmean``), so the
    operator is the Fisher of the whole batch when the shards have equal sizes.
    """
    names = _axis_names(axis_name)
    unaveraged = _varying_axes(data) - _varying_axes(params) - set(names)
    if unaveraged:
        raise ValueError(
            f"the batch is split over the mesh axes {sorted(unaveraged)} (inside shard_map), "
            "but the Fisher is not averaged over them: pass `axis_name=` with those axes to the "
            "Fisher builder, e.g. `predictive_fisher(apply, output, "
            f"axis_name={sorted(unaveraged)[0]!r})`."
        )
    # The local Fisher varies over the data axes; mark params and tangents varying so that the
    # linearized model mixes them with the local batch, then average each product.
    outputs, jvp_fn = jax.linearize(f, _vary(params, names))
    vjp_fn = jax.linear_transpose(jvp_fn, _vary(params, names))
    n = _batch_size(outputs)
    metric = output_metric(outputs)

    def mv(v: PyTree) -> PyTree:
        (out,) = vjp_fn(metric(jvp_fn(_vary(v, names))))
        out = jax.tree.map(lambda leaf: leaf / n, out)
        return jax.lax.pmean(out, names) if names else out

    # The structure of the products themselves (under an explicit-sharding mesh they carry its
    # sharding even where `params` do not), so that input and output structures agree. No
    # closure conversion: the products are traced where they are used, so vectors with another
    # sharding or manual-axis type than `params` (a warm start, a sharded gradient) are
    # accepted, and the linearized residuals are never re-traced outside `shard_map`.
    structure = jax.eval_shape(mv, params)
    return lx.FunctionLinearOperator(
        mv,
        structure,
        tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
        closure_convert=False,  # pyright: ignore[reportCallIssue]
    )


def empirical_fisher(
    loglik: Callable[[PyTree, Any], Array],
    *,
    batch_arg: str = "batch",
    axis_name: AxisName = None,
) -> Callable[..., lx.FunctionLinearOperator]:
    r"""The empirical Fisher of a per-example log-likelihood, as a matrix-free operator.

    .. math::
        \hat F(\theta) = \frac1n \sum_{i=1}^n \nabla_\theta \ell(\theta, x_i)
        \nabla_\theta \ell(\theta, x_i)^\top = \frac1n G^\top G,

    applied as :math:`v \mapsto \frac1n G^\top (G v)` (one JVP and one VJP of the vector of
    per-example log-likelihoods), never forming :math:`G`. Scale the loss as the mean negative
    log-likelihood so that a unit learning rate is natural.

    Args:
        loglik: ``loglik(params, example) -> scalar`` for one example; the batch is a pytree
            whose leaves have a leading example axis (``jax.vmap`` maps it).
        batch_arg: name of the extra argument of ``update`` carrying the batch.
        axis_name: data parallelism inside ``jax.shard_map`` or ``jax.pmap``: the axis name
            (or tuple of names) over which the batch is split; every Fisher-vector product is
            averaged over it, so the operator is that of the whole batch (equal shards).

    Returns:
        ``fisher(params, **extra_args) -> lineax.FunctionLinearOperator`` on the params pytree.

    Raises:
        ValueError: (when called) if the batch extra argument is missing, or the batch is split
            over ``shard_map`` mesh axes that ``axis_name`` does not name.

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

    def fisher(params: PyTree, **extra_args: Any) -> lx.FunctionLinearOperator:
        batch = _batch_of(extra_args, batch_arg, "empirical_fisher")
        f = lambda p: jax.vmap(loglik, in_axes=(None, 0))(p, batch)
        return _gauss_newton_operator(
            f, params, lambda outputs: lambda u: u, data=batch, axis_name=axis_name
        )

    return fisher


def _categorical_metric(logits: Array) -> Callable[[Array], Array]:
    # Fisher of Categorical(softmax(logits)) in the logits: diag(p) - p p^T, per example.
    p = jax.nn.softmax(logits, axis=-1)
    return lambda u: p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)


def _default_inputs(batch: Any) -> Any:
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def predictive_fisher(
    apply: Callable[[PyTree, Any], Array],
    output: Literal["categorical", "gaussian"],
    *,
    noise_variance: float = 1.0,
    batch_arg: str = "batch",
    inputs_of: Callable[[Any], Any] | None = None,
    axis_name: AxisName = None,
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

    Args:
        apply: ``apply(params, inputs) -> outputs`` on a whole batch, outputs with a leading
            batch axis (logits on the last axis for ``"categorical"``). For an equinox module
            use e.g. ``lambda p, x: jax.vmap(eqx.combine(p, static))(x)``.
        output: ``"categorical"`` or ``"gaussian"``.
        noise_variance: :math:`\sigma^2` of the Gaussian output (ignored for categorical).
        batch_arg: name of the extra argument of ``update`` carrying the batch.
        inputs_of: ``inputs_of(batch) -> inputs``; default: ``batch[0]`` when the batch is a
            tuple or list (``(inputs, targets)``), else the batch itself.
        axis_name: data parallelism inside ``jax.shard_map`` or ``jax.pmap``: the axis name
            (or tuple of names) over which the batch is split; every Fisher-vector product is
            averaged over it, so the operator is that of the whole batch (equal shards). Under
            ``jax.jit`` with a sharded batch (``NamedSharding``) no axis name is needed.

    Returns:
        ``fisher(params, **extra_args) -> lineax.FunctionLinearOperator`` on the params pytree.

    Raises:
        ValueError: if ``output`` is unknown, or (when called) the batch argument is missing, or
            the batch is split over ``shard_map`` mesh axes that ``axis_name`` does not name.

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
    if output == "categorical":
        output_metric = _categorical_metric
    elif output == "gaussian":
        output_metric = lambda outputs: lambda u: jax.tree.map(lambda t: t / noise_variance, u)
    else:
        raise ValueError(f"`output` must be 'categorical' or 'gaussian', got {output!r}.")
    get_inputs = _default_inputs if inputs_of is None else inputs_of
    _axis_names(axis_name)  # validate now

    def fisher(params: PyTree, **extra_args: Any) -> lx.FunctionLinearOperator:
        inputs = get_inputs(_batch_of(extra_args, batch_arg, "predictive_fisher"))
        return _gauss_newton_operator(
            lambda p: apply(p, inputs), params, output_metric, data=inputs, axis_name=axis_name
        )

    return fisher
