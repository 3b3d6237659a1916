r"""K-FAC: the Kronecker-factored natural gradient, blocks found by tracing the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import PyTree
from ._apply import _is_masked, as_apply, has_masked_leaves, split_trainable
from ._common import cast_like, require_params
from ._kfac_blocks import (
    Plan,
    block_matrix,
    build_plan,
    input_rows,
    output_rows,
    perturbed_apply,
    restrict_plan,
    unblock_matrix,
    zero_perturbations,
)

Estimator = Literal["sampled", "exact", "empirical"]


class ScaleByKFACState(NamedTuple):
    r"""State of :func:`scale_by_kfac` (arrays only: checkpointable, ``lax.scan``-able).

    Attributes:
        count: number of updates so far (int32).
        stats_count: number of curvature estimates folded into the averages (int32).
        key: the PRNG key (``uint32[2]``) of the sampled targets.
        factors_a: input factors :math:`A` of the Kronecker blocks (float32 or wider).
        factors_g: output factors :math:`G` of the Kronecker blocks.
        eigvals_a: eigenvalues of each :math:`A` at the last inversion.
        eigvecs_a: eigenvectors of each :math:`A` (columns).
        eigvals_g: eigenvalues of each :math:`G`.
        eigvecs_g: eigenvectors of each :math:`G`.
        diagonals: the diagonal Fisher estimate of each unmatched leaf (leaf-shaped).
        inv_a: inverse of each damped :math:`A + \pi\sqrt\lambda I` at the last inversion
            (``inverse="cholesky"``; the four eigen-fields are then empty).
        inv_g: inverse of each damped :math:`G + \sqrt\lambda/\pi\, I`
            (``inverse="cholesky"``; empty for ``inverse="eigh"``).
        damping: the damping :math:`\lambda` in use (adapted with ``adapt_damping_every``, else
            the ``damping`` argument of the last update).
        rho: the last Levenberg-Marquardt reduction ratio (``nan`` until one is measured).
    """

    count: jax.Array
    stats_count: jax.Array
    key: jax.Array
    factors_a: tuple[jax.Array, ...]
    factors_g: tuple[jax.Array, ...]
    eigvals_a: tuple[jax.Array, ...]
    eigvecs_a: tuple[jax.Array, ...]
    eigvals_g: tuple[jax.Array, ...]
    eigvecs_g: tuple[jax.Array, ...]
    diagonals: tuple[jax.Array, ...]
    inv_a: tuple[jax.Array, ...] = ()
    inv_g: tuple[jax.Array, ...] = ()
    damping: jax.Array | tuple = ()
    rho: jax.Array | tuple = ()


_DAMPING_RANGE = (1e-8, 1e8)


def _negative_log_likelihood(outputs, targets, output, noise_variance):
    """Mean negative log-likelihood of the batch (up to a constant) under the model's outputs."""
    f = outputs.astype(jnp.promote_types(outputs.dtype, jnp.float32))
    if output == "categorical":
        logp = jax.nn.log_softmax(f, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(targets)[..., None], axis=-1))
    r = f - jnp.asarray(targets, f.dtype)
    return 0.5 * jnp.mean(jnp.sum(r.reshape(r.shape[0], -1) ** 2, axis=-1)) / noise_variance


def _lm_damping(damping, rho, omega):
    r"""The Levenberg-Marquardt rule for the damping :math:`\lambda`.

    :math:`\lambda \omega` if :math:`\rho > 3/4`, :math:`\lambda / \omega` if
    :math:`\rho < 1/4` (or not finite), else unchanged; clipped to a safe range.
    """
    new = jnp.where(rho > 0.75, damping * omega, damping)
    new = jnp.where((rho < 0.25) | ~jnp.isfinite(rho), damping / omega, new)
    return jnp.clip(new, *_DAMPING_RANGE).astype(damping.dtype)


def _algebra_dtype(leaves) -> Any:
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return jnp.promote_types(dtype, jnp.float32)


def _default_inputs(batch: Any) -> Any:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _default_targets(batch: Any) -> Any:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "estimator='empirical' needs observed targets: pass the batch as (inputs, targets) "
            "or give `targets_of`."
        )
    return batch[1]


def _output_cotangents(
    outputs: jax.Array,
    output: str,
    estimator: str,
    key: jax.Array,
    targets: Any,
    noise_variance: float,
) -> jax.Array:
    """Per-example output gradients of the log-likelihood, stacked ``(K, *outputs.shape)``.

    Their second moment, summed over ``K`` and averaged over examples, is the output Fisher:
    one sampled target (``"sampled"``, unbiased), its exact square root (``"exact"``), or the
    observed target (``"empirical"``).
    """
    f = jax.lax.stop_gradient(outputs).astype(jnp.promote_types(outputs.dtype, jnp.float32))
    n = f.shape[0]
    k_sample, k_sign = jax.random.split(key)
    if output == "categorical":
        p = jax.nn.softmax(f, axis=-1)
        c = f.shape[-1]
        if estimator == "sampled":
            y = jax.random.categorical(k_sample, jnp.log(jnp.maximum(p, 1e-30)), axis=-1)
            cot = (p - jax.nn.one_hot(y, c, dtype=p.dtype))[None]
        elif estimator == "empirical":
            cot = (p - jax.nn.one_hot(targets, c, dtype=p.dtype))[None]
        else:  # columns of diag(sqrt p) - p sqrt(p)^T, whose Gram matrix is diag(p) - p p^T
            eye = jnp.eye(c, dtype=p.dtype)
            cot = jnp.moveaxis(jnp.sqrt(p)[..., None] * (eye - p[..., None, :]), -2, 0)
    else:
        scale = 1.0 / jnp.sqrt(jnp.asarray(noise_variance, f.dtype))
        if estimator == "sampled":
            cot = (jax.random.normal(k_sample, f.shape, f.dtype) * scale)[None]
        elif estimator == "empirical":
            cot = ((f - jnp.asarray(targets, f.dtype)) / noise_variance)[None]
        else:
            m = int(np.prod(f.shape[1:], dtype=np.int64))
            basis = jnp.eye(m, dtype=f.dtype).reshape(m, 1, *f.shape[1:]) * scale
            cot = jnp.broadcast_to(basis, (m, *f.shape))
    # Random signs per example: the Kronecker factors are unchanged (squares), and the squared
    # batch gradient of an unmatched leaf becomes an unbiased estimate of its Fisher diagonal.
    signs = jax.random.rademacher(k_sign, (n,), f.dtype).reshape(n, *([1] * (f.ndim - 1)))
    return (cot * signs[None]).astype(outputs.dtype)


def _statistics(plan: Plan, params, inputs, targets, key, output, estimator, noise_variance):
    """New factor statistics ``(As, Gs, diagonals)`` from one forward and backward pass."""
    leaves = jax.tree.leaves(params)
    dtype = _algebra_dtype(leaves)
    diag_leaves = [leaves[i] for i in plan.diagonal]

    def f(diag, perts):
        ls = list(leaves)
        for i, leaf in zip(plan.diagonal, diag):
            ls[i] = leaf
        p = jax.tree.unflatten(plan.params_treedef, ls)
        return perturbed_apply(plan, p, inputs, perts)

    outputs, vjp_fn, acts = jax.vjp(f, diag_leaves, zero_perturbations(plan), has_aux=True)
    if not isinstance(outputs, jax.Array) or outputs.ndim < 1:
        raise ValueError(
            "scale_by_kfac: `apply(params, inputs)` must return one array of outputs with a "
            f"leading batch axis (logits or means), got {jax.tree.structure(outputs)}."
        )
    n = outputs.shape[0]
    cots = _output_cotangents(outputs, output, estimator, key, targets, noise_variance)
    diag_grads, pert_grads = jax.vmap(vjp_fn)(cots)
    acts = [jax.lax.stop_gradient(a) for a in acts]
    factors_a, factors_g = [], []
    for block in plan.blocks:
        rows_a, rows_g = [], []
        for j in block.sites:
            site = plan.sites[j]
            a = input_rows(site, acts[j]).astype(dtype)
            if block.bias is not None:
                h = jnp.full((a.shape[0], 1), 1.0 if site.bias is not None else 0.0, dtype)
                a = jnp.concatenate([a, h], axis=1)
            rows_a.append(a)
            g = jax.vmap(lambda t, site=site: output_rows(site, t))(pert_grads[j])
            rows_g.append(g.reshape(-1, g.shape[-1]).astype(dtype))
        a = jnp.concatenate(rows_a, axis=0)
        g = jnp.concatenate(rows_g, axis=0)
        factors_a.append(a.T @ a / a.shape[0])
        factors_g.append(g.T @ g / n)
    diagonals = [jnp.sum(jnp.square(d.astype(dtype)), axis=0) / n for d in diag_grads]
    return tuple(factors_a), tuple(factors_g), tuple(diagonals)


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    vals, vecs = jnp.linalg.eigh(0.5 * (m + m.T))
    return jnp.maximum(vals, 0.0), vecs


def _precondition(v, vals_a, vecs_a, vals_g, vecs_g, damping, split):
    r"""Solve :math:`(A \otimes G + \text{damping}) x = v` on the matrix ``v`` (d_in, d_out)."""
    if split == "pi":
        mean_a, mean_g = jnp.mean(vals_a), jnp.mean(vals_g)
        ok = (mean_a > 0) & (mean_g > 0)
        pi = jnp.where(ok, jnp.sqrt(jnp.where(ok, mean_a / jnp.where(ok, mean_g, 1.0), 1.0)), 1.0)
        root = jnp.sqrt(damping)
        denom = (vals_a + pi * root)[:, None] * (vals_g + root / pi)[None, :]
    else:
        denom = vals_a[:, None] * vals_g[None, :] + damping
    return vecs_a @ ((vecs_a.T @ v @ vecs_g) / denom) @ vecs_g.T


def _pi(a: jax.Array, g: jax.Array) -> jax.Array:
    r"""The pi-rule split, :math:`\pi^2 = (\mathrm{tr}\,A / d_A) / (\mathrm{tr}\,G / d_G)`."""
    mean_a, mean_g = jnp.trace(a) / a.shape[0], jnp.trace(g) / g.shape[0]
    ok = (mean_a > 0) & (mean_g > 0)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, mean_a / jnp.where(ok, mean_g, 1.0), 1.0)), 1.0)


def _damped_inverses(a: jax.Array, g: jax.Array, damping: jax.Array):
    r""":math:`(A + \pi\sqrt\lambda I)^{-1}`, :math:`(G + \sqrt\lambda/\pi\,I)^{-1}` by Cholesky."""

    def inv(m, shift):
        eye = jnp.eye(m.shape[0], dtype=m.dtype)
        chol = jnp.linalg.cholesky(0.5 * (m + m.T) + shift * eye)
        # (L L^T)^{-1} = L^{-T} L^{-1}: one triangular solve and one matrix product (on CPU
        # several times faster than cho_solve against the identity, two triangular solves).
        inv_chol = jax.lax.linalg.triangular_solve(chol, eye, left_side=True, lower=True)
        x = inv_chol.T @ inv_chol
        return 0.5 * (x + x.T)

    pi, root = _pi(a, g), jnp.sqrt(damping)
    return inv(a, pi * root), inv(g, root / pi)


def kfac_matvec(plan: Plan, state: ScaleByKFACState, tangent: PyTree) -> PyTree:
    r"""The undamped K-FAC Fisher times ``tangent``: :math:`A V G` per block, :math:`D v` else."""
    leaves = jax.tree.leaves(tangent)
    out = list(leaves)
    for b, block in enumerate(plan.blocks):
        v = block_matrix(block, leaves)
        for i, leaf in unblock_matrix(
            block, state.factors_a[b] @ v @ state.factors_g[b], leaves
        ).items():
            out[i] = leaf
    for i, d in zip(plan.diagonal, state.diagonals):
        out[i] = d * leaves[i]
    return jax.tree.unflatten(jax.tree.structure(tangent), out)


def _fvp_leaves(plan: Plan, fa, fg, diags, leaves: list[Any]) -> list[Any]:
    """The undamped K-FAC Fisher times the vector ``leaves`` (``None`` where not selected)."""
    out: list[Any] = [None] * len(leaves)
    for b, block in enumerate(plan.blocks):
        v = block_matrix(block, leaves)
        for i, leaf in unblock_matrix(block, fa[b] @ v @ fg[b], leaves).items():
            out[i] = leaf
    for i, dg in zip(plan.diagonal, diags):
        out[i] = dg * leaves[i]
    return out


def _resolve_inverse(inverse, damping_split):
    if inverse is None:
        return "eigh" if damping_split == "exact" else "cholesky"
    if inverse not in ("cholesky", "eigh"):
        raise ValueError(f"`inverse` must be 'cholesky', 'eigh' or None, got {inverse!r}.")
    if inverse == "cholesky" and damping_split == "exact":
        raise ValueError(
            "`damping_split='exact'` solves against A ⊗ G + damping I through the factors' "
            "eigenbases: use `inverse='eigh'` (or None) with it, or `damping_split='pi'`."
        )
    return inverse


def _check_options(output, estimator, damping_split, curvature_every, inverse_every, decay):
    if output not in ("categorical", "gaussian"):
        raise ValueError(f"`output` must be 'categorical' or 'gaussian', got {output!r}.")
    if estimator not in ("sampled", "exact", "empirical"):
        raise ValueError(
            f"`estimator` must be 'sampled', 'exact' or 'empirical', got {estimator!r}."
        )
    if damping_split not in ("pi", "exact"):
        raise ValueError(f"`damping_split` must be 'pi' or 'exact', got {damping_split!r}.")
    for name, value in (("curvature_every", curvature_every), ("inverse_every", inverse_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    if isinstance(decay, (int, float)) and not 0.0 <= decay < 1.0:
        raise ValueError(f"`decay` must be in [0, 1), got {decay!r}.")


def scale_by_kfac(
    apply: Callable[[PyTree, Any], jax.Array],
    output: Literal["categorical", "gaussian"],
    *,
    example_inputs: Any = None,
    example_params: Any = None,
    damping: float | jax.Array = 1e-2,
    decay: float | jax.Array = 0.9,
    curvature_every: int = 1,
    inverse_every: int = 10,
    estimator: Estimator = "sampled",
    damping_split: Literal["pi", "exact"] = "pi",
    inverse: Literal["cholesky", "eigh"] | None = None,
    max_kl: float | jax.Array | None = 1e-2,
    adapt_damping_every: int | None = None,
    damping_omega: float | None = None,
    noise_variance: float = 1.0,
    batch_arg: str = "batch",
    inputs_of: Callable[[Any], Any] | None = None,
    targets_of: Callable[[Any], Any] | None = None,
    seed: int = 0,
    axis_name: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient by the inverse of a Kronecker-factored Fisher (K-FAC).

    For each weight :math:`W` (a ``(d_in, d_out)`` matrix, with its bias as one more row) the
    Fisher block is approximated by a Kronecker product and the update solves against it:

    .. math::
        F_W \approx A \otimes G, \quad A = \mathbb E[\tilde a \tilde a^\top], \quad
        G = \mathbb E\big[\textstyle\sum_t g_t g_t^\top\big], \qquad
        d_W = (A + \pi \sqrt\lambda I)^{-1} \, \nabla_W \, (G + \tfrac{\sqrt\lambda}{\pi} I)^{-1},

    with :math:`\tilde a = (a, 1)` the layer input (patches for a convolution, averaged over
    positions), :math:`g_t = \partial \log p(y \mid x) / \partial s_t` the back-propagated
    gradient of the pre-activation at position :math:`t` under a target :math:`y` drawn from
    the model (the true Fisher), and :math:`\pi^2 = (\operatorname{tr} A / d_{in}) /
    (\operatorname{tr} G / d_{out})` the factored Tikhonov split. Unmatched leaves use a
    diagonal Fisher, :math:`d = \nabla / (\operatorname{diag} F + \lambda)`. The blocks are
    found by tracing ``apply`` (see :func:`kfac_blocks`): no layer tags. Averages are
    exponential moving averages (``decay``) updated every ``curvature_every`` steps; the
    factors' inverses are refreshed every ``inverse_every`` steps and cached. By default
    (``inverse="cholesky"``) a refresh inverts the two damped matrices above through their
    Cholesky factors, several times cheaper than eigendecompositions, and the steps apply the
    cached inverses by two matrix products;
    ``damping`` may change (e.g. by ``optax.inject_hyperparams``, without recompiling) and
    takes effect at the next refresh. ``inverse="eigh"`` caches the factors'
    eigendecompositions instead, so that ``damping`` acts exactly at every step; it is the
    route of ``damping_split="exact"``.

    With ``max_kl`` (on by default) the step is shrunk, never grown, so that its second-order
    KL divergence under the damped approximation, :math:`\tfrac12 d^\top \nabla`, is at most
    ``max_kl`` at learning rate 1 (KL clipping): this keeps the early steps, taken while the
    curvature estimate is still poor, from overshooting. ``max_kl=None`` turns it off.

    With ``adapt_damping_every`` set, the damping follows the Levenberg-Marquardt rule of
    Martens & Grosse (2015, Sec. 6.5): every ``adapt_damping_every`` (:math:`T_1`) steps the
    reduction ratio of the unit step :math:`\delta = -d` (the step at learning rate 1),

    .. math::
        \rho = \frac{h(\theta + \delta) - h(\theta)}{M(\delta)}, \qquad
        M(\delta) = \nabla h^\top \delta + \tfrac12 \delta^\top (\hat F + \lambda I) \delta,

    is measured on the batch, with :math:`h` the mean negative log-likelihood of the observed
    targets (the gradient passed to ``update`` must be its gradient) and :math:`\hat F` the
    Kronecker-factored Fisher; then :math:`\lambda \leftarrow \omega\lambda` if
    :math:`\rho > 3/4`, :math:`\lambda \leftarrow \lambda/\omega` if :math:`\rho < 1/4`,
    :math:`\omega = (19/20)^{T_1}`. It costs two forward passes every :math:`T_1` steps. The
    damping in use and the last :math:`\rho` are in the state.

    Args:
        apply: the model, in any form :func:`predictive_fisher` takes (a function
            ``apply(params, inputs)``, an equinox module, a flax nnx or linen module, a haiku
            transform); its outputs one array with a leading batch axis (logits on the last
            axis for ``"categorical"``, means for ``"gaussian"``).
        output: ``"categorical"`` or ``"gaussian"``, as for :func:`predictive_fisher`.
        example_inputs: a batch of inputs (arrays or ``jax.ShapeDtypeStruct`` s) used by
            ``init`` to find the blocks and size the state; any batch size. Optional: without
            it ``init`` returns the state without its factors, and the first ``update`` finds
            the blocks from its batch and adds them (so a jitted step traces twice, once for
            each state layout; pass ``example_inputs`` where the state must keep one layout
            from ``init`` on, as the carry of ``lax.scan`` or a checkpoint template).
        example_params: the whole parameters (arrays or ``jax.ShapeDtypeStruct`` s), needed
            by ``init`` only inside ``optax.masked`` / ``optax.multi_transform``, where it
            sees the selected leaves alone. There ``update`` also needs the whole current
            parameters as the extra argument ``full_params=params``: the blocks are found and
            the statistics taken on the full model, and only the selected leaves are
            preconditioned (a selected weight whose bias is frozen keeps its block without
            the bias row; a selected bias of a frozen weight gets a diagonal block).
        damping: Tikhonov damping :math:`\lambda > 0` of the Fisher.
        decay: moving-average factor of the curvature statistics.
        curvature_every: update the statistics every this many steps.
        inverse_every: refresh the factors' inverses every this many steps.
        estimator: ``"sampled"`` (true Fisher, one sampled target per example),
            ``"exact"`` (the output Fisher's square root: one backward pass per output),
            or ``"empirical"`` (the observed targets).
        damping_split: ``"pi"`` (factored Tikhonov, Martens & Grosse 2015, Sec. 6.3) or
            ``"exact"`` (:math:`(A \otimes G + \lambda I)^{-1}` through the eigenbases).
        inverse: ``"cholesky"`` (the damped factors inverted by Cholesky, the default with
            ``damping_split="pi"``) or ``"eigh"`` (eigendecompositions, the default and only
            choice with ``damping_split="exact"``); ``None`` picks the default.
        max_kl: bound on the step's KL divergence (at learning rate 1), or ``None``.
        adapt_damping_every: adapt ``damping`` by the Levenberg-Marquardt rule (see above)
            every this many steps (:math:`T_1`, e.g. 5); ``damping`` is then the initial
            value. Needs the batch's observed targets (``targets_of``). ``None`` (default):
            the damping is fixed.
        damping_omega: the factor :math:`\omega < 1`; default :math:`(19/20)^{T_1}`.
        noise_variance: :math:`\sigma^2` of the Gaussian output.
        batch_arg: name of the extra argument of ``update`` carrying the batch.
        inputs_of: ``inputs_of(batch) -> inputs``; default ``batch[0]`` for a tuple batch,
            else the batch itself.
        targets_of: ``targets_of(batch) -> targets`` (``"empirical"`` only); default
            ``batch[1]``.
        seed: seed of the sampled targets.
        axis_name: data parallelism: inside ``shard_map`` / ``pmap`` over this axis, each
            device holds a shard of the batch and the factor statistics are averaged over
            the axis (``jax.lax.pmean``; equal shard sizes), so every device holds the same
            curvature (the gradients must be averaged by the caller, as usual).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params,
        batch=...)``.

    Raises:
        ValueError: for unknown options, a missing ``example_params`` (in ``init``, under
            ``optax.masked``), missing ``params``, batch or (under
            ``optax.masked``) ``full_params`` in ``update``, or outputs that are not one
            batch-leading array.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import scale_by_kfac
        >>> apply = lambda p, x: x @ p["W"] + p["b"]
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (32, 3)); y = x @ jnp.ones((3, 2))
        >>> params = {"W": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
        >>> opt = optax.chain(scale_by_kfac(apply, "gaussian", example_inputs=x, damping=1e-9,
        ...                                 estimator="exact", damping_split="exact",
        ...                                 max_kl=None),
        ...                   optax.scale(-1.0))
        >>> state = opt.init(params)
        >>> loss = lambda p: 0.5 * jnp.mean(jnp.sum((apply(p, x) - y) ** 2, axis=-1))
        >>> updates, state = opt.update(jax.grad(loss)(params), state, params, batch=(x, y))
        >>> bool(loss(optax.apply_updates(params, updates)) < 1e-6)  # one exact Newton step
        True

    References:
        Martens & Grosse, *Optimizing neural networks with Kronecker-factored approximate
        curvature*, ICML 2015, Sec. 3, 5, 6.3; Grosse & Martens, *A Kronecker-factored
        approximate Fisher matrix for convolution layers*, ICML 2016; Ba, Grosse & Martens,
        *Distributed second-order optimization using Kronecker-factored approximations*, ICLR
        2017 (KL clipping).
    """
    _check_options(output, estimator, damping_split, curvature_every, inverse_every, decay)
    # Python numbers are checked here; arrays (optax.inject_hyperparams) are taken as given.
    adaptive_damping = adapt_damping_every is not None
    damping_every = 1 if adapt_damping_every is None else adapt_damping_every
    if isinstance(damping_every, (int, float)) and (
        damping_every < 1 or int(damping_every) != damping_every
    ):
        raise ValueError(
            f"`adapt_damping_every` must be a positive int or None, got {adapt_damping_every!r}."
        )
    if isinstance(damping_omega, (int, float)) and not 0.0 < damping_omega < 1.0:
        raise ValueError(f"`damping_omega` must be in (0, 1), got {damping_omega!r}.")
    omega = (19.0 / 20.0) ** damping_every if damping_omega is None else damping_omega
    inverse = _resolve_inverse(inverse, damping_split)
    if isinstance(damping, (int, float)) and damping <= 0:
        raise ValueError(f"`damping` must be positive, got {damping!r}.")
    model = as_apply(apply)
    get_inputs = _default_inputs if inputs_of is None else inputs_of
    get_targets = _default_targets if targets_of is None else targets_of

    def selected_plan(params: PyTree, full_params: PyTree, inputs: Any) -> Plan:
        """The plan of the selected leaves (all of them outside ``optax.masked``)."""
        p_leaves = jax.tree.leaves(params, is_leaf=_is_masked)
        if not any(_is_masked(x) for x in p_leaves):
            return build_plan(model, params, inputs)
        plan = build_plan(model, full_params, inputs)
        return restrict_plan(plan, {i for i, x in enumerate(p_leaves) if not _is_masked(x)})

    def full_params_at_init(params: PyTree) -> PyTree:
        if not has_masked_leaves(params):
            return params
        if example_params is None:
            raise ValueError(
                "scale_by_kfac is inside `optax.masked` / `optax.multi_transform`, so `init` "
                "sees only the selected leaves: pass the whole parameters (or "
                "jax.ShapeDtypeStruct s of them) as `example_params=` to find the blocks, "
                "and `full_params=params` to `update`."
            )
        split_trainable(params, example_params, builder="scale_by_kfac")  # validates
        return example_params

    def blank_state(dtype) -> ScaleByKFACState:
        """The state before the blocks are known: counters, key and damping only."""
        return ScaleByKFACState(
            count=jnp.zeros((), jnp.int32),
            stats_count=jnp.zeros((), jnp.int32),
            key=jax.random.PRNGKey(seed),
            factors_a=(),
            factors_g=(),
            eigvals_a=(),
            eigvecs_a=(),
            eigvals_g=(),
            eigvecs_g=(),
            diagonals=(),
            damping=jnp.asarray(damping, dtype),
            rho=jnp.asarray(jnp.nan, dtype),
        )

    def with_blocks(state: ScaleByKFACState, plan: Plan, full: PyTree) -> ScaleByKFACState:
        """``state`` with identity factors and zero diagonals for the blocks of ``plan``."""
        leaves = jax.tree.leaves(full)
        dtype = _algebra_dtype(leaves)
        eig = inverse == "eigh"
        eye = lambda d: jnp.eye(d, dtype=dtype)
        ones = lambda d: jnp.ones(d, dtype)
        da = [b.d_in for b in plan.blocks]
        dg = [b.d_out for b in plan.blocks]
        return state._replace(
            factors_a=tuple(eye(d) for d in da),
            factors_g=tuple(eye(d) for d in dg),
            eigvals_a=tuple(ones(d) for d in da) if eig else (),
            eigvecs_a=tuple(eye(d) for d in da) if eig else (),
            eigvals_g=tuple(ones(d) for d in dg) if eig else (),
            eigvecs_g=tuple(eye(d) for d in dg) if eig else (),
            diagonals=tuple(jnp.zeros(np.shape(leaves[i]), dtype) for i in plan.diagonal),
            inv_a=() if eig else tuple(eye(d) for d in da),
            inv_g=() if eig else tuple(eye(d) for d in dg),
        )

    def init_fn(params: PyTree) -> ScaleByKFACState:
        full = full_params_at_init(params)
        state = blank_state(_algebra_dtype(jax.tree.leaves(full)))
        if example_inputs is None:
            # The blocks are found at the first update, from the batch (see the docstring).
            return state
        return with_blocks(state, selected_plan(params, full, example_inputs), full)

    def lm_update(plan, params, inputs, targets, g32, d, fa, fg, diags, damp, state):
        """Reduction ratio of the unit step -d and the Levenberg-Marquardt damping update."""

        def measure(_):
            leaves = jax.tree.leaves(params)
            moved = list(leaves)
            delta = [None if x is None else -x for x in d]
            for i, x in enumerate(delta):
                if x is not None:
                    moved[i] = leaves[i] + x.astype(leaves[i].dtype)
            nll = lambda ls: _negative_log_likelihood(
                model(jax.tree.unflatten(plan.params_treedef, ls), inputs),
                targets,
                output,
                noise_variance,
            )
            h0, h1 = nll(leaves), nll(moved)
            if axis_name is not None:
                h0, h1 = jax.lax.pmean((h0, h1), axis_name)
            fd = _fvp_leaves(plan, fa, fg, diags, delta)
            pairs = [(x, g, f) for x, g, f in zip(delta, g32, fd) if x is not None]
            model_change = sum(
                jnp.vdot(g, x) + 0.5 * jnp.vdot(x, f) + 0.5 * damp * jnp.vdot(x, x)
                for x, g, f in pairs
            )
            rho = ((h1 - h0) / model_change).astype(damp.dtype)
            return _lm_damping(damp, rho, omega), rho

        def skip(_):
            return damp, state.rho

        return jax.lax.cond(state.count % damping_every == damping_every - 1, measure, skip, None)

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "scale_by_kfac / kfac")
        if batch_arg not in extra_args:
            raise ValueError(
                f"scale_by_kfac needs the data batch: pass it to update as the extra argument "
                f"`{batch_arg}=...`, e.g. `opt.update(grads, state, params, {batch_arg}=batch)`."
            )
        batch = extra_args[batch_arg]
        inputs = get_inputs(batch)
        need_targets = estimator == "empirical" or adaptive_damping
        targets = get_targets(batch) if need_targets else None
        p_def = jax.tree.structure(params, is_leaf=_is_masked)
        selected = params
        if has_masked_leaves(params):
            # The model runs on the whole parameters; only the selected leaves are updated.
            params = extra_args.get("full_params")
            split_trainable(selected, params, builder="scale_by_kfac")  # validates
        plan = selected_plan(selected, params, inputs)
        if not state.factors_a and not state.diagonals:  # initialized without example_inputs
            state = with_blocks(state, plan, params)
        if len(plan.blocks) != len(state.factors_a) or len(plan.diagonal) != len(state.diagonals):
            raise ValueError(
                "scale_by_kfac: the model's blocks differ from those found at init; "
                "`example_inputs` must be inputs of the same model."
            )
        key, sub = jax.random.split(state.key)
        dtype = (
            state.factors_a[0].dtype if state.factors_a else _algebra_dtype(jax.tree.leaves(params))
        )

        def refresh(_):
            new_a, new_g, new_d = _statistics(
                plan, params, inputs, targets, sub, output, estimator, noise_variance
            )
            if axis_name is not None:
                new_a, new_g, new_d = jax.lax.pmean((new_a, new_g, new_d), axis_name)
            k = state.stats_count.astype(dtype)
            w = jnp.minimum(jnp.asarray(decay, dtype), k / (k + 1.0))
            mix = lambda old, new: w * old + (1.0 - w) * new
            return (
                tuple(map(mix, state.factors_a, new_a)),
                tuple(map(mix, state.factors_g, new_g)),
                tuple(map(mix, state.diagonals, new_d)),
                state.stats_count + 1,
            )

        def keep(_):
            return state.factors_a, state.factors_g, state.diagonals, state.stats_count

        if curvature_every == 1:
            fa, fg, diags, stats_count = refresh(None)
        else:
            fa, fg, diags, stats_count = jax.lax.cond(
                state.count % curvature_every == 0, refresh, keep, None
            )

        damp = jnp.asarray(state.damping if adaptive_damping else damping, dtype)

        def invert(_):
            if inverse == "cholesky":
                ls = [_damped_inverses(a, g, damp) for a, g in zip(fa, fg)]
                return (), (), (), (), tuple(la for la, _ in ls), tuple(lg for _, lg in ls)
            ea = [_eigh(a) for a in fa]
            eg = [_eigh(g) for g in fg]
            return (
                tuple(v for v, _ in ea),
                tuple(q for _, q in ea),
                tuple(v for v, _ in eg),
                tuple(q for _, q in eg),
                (),
                (),
            )

        def cached(_):
            return (
                state.eigvals_a,
                state.eigvecs_a,
                state.eigvals_g,
                state.eigvecs_g,
                state.inv_a,
                state.inv_g,
            )

        if inverse_every == 1:
            inv = invert(None)
        else:
            inv = jax.lax.cond(state.count % inverse_every == 0, invert, cached, None)
        vals_a, vecs_a, vals_g, vecs_g, inv_a, inv_g = inv

        # Updates may hold None at non-trainable leaves (equinox.filter_grad) and MaskedNode at
        # frozen ones (optax.masked): align with params.
        g_leaves = p_def.flatten_up_to(updates)
        g32 = [
            None
            if g is None or _is_masked(g)
            else jnp.asarray(g, jnp.promote_types(jnp.result_type(g), dtype))
            for g in g_leaves
        ]
        out = list(g32)
        for b, block in enumerate(plan.blocks):
            v = block_matrix(block, g32)
            if inverse == "cholesky":
                x = inv_a[b] @ v @ inv_g[b]
            else:
                x = _precondition(
                    v, vals_a[b], vecs_a[b], vals_g[b], vecs_g[b], damp, damping_split
                )
            for i, leaf in unblock_matrix(block, x, g32).items():
                out[i] = leaf
        for i, d in zip(plan.diagonal, diags):
            out[i] = g32[i] / (d + damp)
        if max_kl is not None:
            quad = 0.5 * sum(
                jnp.vdot(x, g) for x, g in zip(out, g32) if x is not None and g is not None
            )
            eps = jnp.asarray(max_kl, dtype)
            scale = jnp.minimum(1.0, jnp.sqrt(eps / jnp.maximum(quad, jnp.finfo(dtype).tiny)))
            out = [x if x is None else x * scale for x in out]
        new_damping, rho = damp, state.rho
        if adaptive_damping:
            new_damping, rho = lm_update(
                plan, params, inputs, targets, g32, out, fa, fg, diags, damp, state
            )
        out = [g if g is None or _is_masked(g) else x for g, x in zip(g_leaves, out)]
        new_updates = cast_like(jax.tree.unflatten(p_def, out), updates)
        new_state = ScaleByKFACState(
            count=state.count + 1,
            stats_count=stats_count,
            key=key,
            factors_a=fa,
            factors_g=fg,
            eigvals_a=vals_a,
            eigvecs_a=vecs_a,
            eigvals_g=vals_g,
            eigvecs_g=vecs_g,
            diagonals=diags,
            inv_a=inv_a,
            inv_g=inv_g,
            damping=new_damping,
            rho=rho,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def kfac(
    learning_rate: optax.ScalarOrSchedule,
    apply: Callable[[PyTree, Any], jax.Array],
    output: Literal["categorical", "gaussian"],
    *,
    momentum: float | jax.Array | None = None,
    example_inputs: Any = None,
    example_params: Any = None,
    damping: float | jax.Array = 1e-2,
    decay: float | jax.Array = 0.9,
    curvature_every: int = 1,
    inverse_every: int = 10,
    estimator: Estimator = "sampled",
    damping_split: Literal["pi", "exact"] = "pi",
    inverse: Literal["cholesky", "eigh"] | None = None,
    max_kl: float | jax.Array | None = 1e-2,
    adapt_damping_every: int | None = None,
    damping_omega: float | None = None,
    noise_variance: float = 1.0,
    batch_arg: str = "batch",
    inputs_of: Callable[[Any], Any] | None = None,
    targets_of: Callable[[Any], Any] | None = None,
    seed: int = 0,
    axis_name: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""K-FAC: :math:`\theta \leftarrow \theta - \alpha \hat F^{-1} g`, a Kronecker-factored Fisher.

    :func:`scale_by_kfac` chained with ``optax.scale_by_learning_rate`` (and, with
    ``momentum``, heavy-ball momentum on the preconditioned direction in between,
    :math:`m \leftarrow \beta m + \hat F^{-1} g`, ``optax.trace``); see there for the
    arguments. ``update(grads, state, params, batch=batch)``. To change the learning rate or
    the damping during training without recompiling, use
    ``optax.inject_hyperparams(kfac, static_args=("apply", "output", ...))``.

    Args:
        learning_rate: step size :math:`\alpha` or an optax schedule.
        apply: ``apply(params, inputs) -> outputs`` (batch-leading).
        output: ``"categorical"`` or ``"gaussian"``.
        momentum: heavy-ball momentum :math:`\beta` of the preconditioned direction, or
            ``None`` (none).
        example_inputs: optional, a batch of inputs used by ``init`` to find the blocks
            (without it the first ``update`` finds them; see :func:`scale_by_kfac`).
        example_params: the whole parameters, for ``init`` inside ``optax.masked`` (see
            :func:`scale_by_kfac`).
        damping: Tikhonov damping.
        decay: moving-average factor of the statistics.
        curvature_every: statistics every this many steps.
        inverse_every: refresh the factors' inverses every this many steps.
        inverse: ``"cholesky"``, ``"eigh"`` or ``None`` (see :func:`scale_by_kfac`).
        estimator: ``"sampled"``, ``"exact"`` or ``"empirical"``.
        damping_split: ``"pi"`` or ``"exact"``.
        max_kl: optional KL bound of the step.
        adapt_damping_every: Levenberg-Marquardt damping every this many steps, or ``None``
            (see :func:`scale_by_kfac`).
        damping_omega: the adaptation factor.
        noise_variance: Gaussian output variance.
        batch_arg: name of the batch extra argument.
        inputs_of: inputs from the batch.
        targets_of: targets from the batch (empirical Fisher).
        seed: seed of the sampled targets.
        axis_name: average the statistics over this device axis (data parallelism).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import kfac
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
        >>> y = (x[:, 0] > 0).astype(jnp.int32)
        >>> apply = lambda p, x: jnp.tanh(x @ p["W1"]) @ p["W2"]
        >>> params = {"W1": 0.5 * jax.random.normal(jax.random.PRNGKey(1), (4, 8)),
        ...           "W2": jnp.zeros((8, 2))}
        >>> loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean()
        >>> opt = kfac(1.0, apply, "categorical", example_inputs=x)
        >>> @jax.jit
        ... def step(params, state):
        ...     updates, state = opt.update(jax.grad(loss)(params), state, params, batch=(x, y))
        ...     return optax.apply_updates(params, updates), state
        >>> state = opt.init(params); start = loss(params)
        >>> for _ in range(10):
        ...     params, state = step(params, state)
        >>> bool(loss(params) < 0.5 * start)
        True

    References:
        Martens & Grosse, *Optimizing neural networks with Kronecker-factored approximate
        curvature*, ICML 2015.
    """
    inner = scale_by_kfac(
        apply,
        output,
        example_inputs=example_inputs,
        example_params=example_params,
        damping=damping,
        decay=decay,
        curvature_every=curvature_every,
        inverse_every=inverse_every,
        estimator=estimator,
        damping_split=damping_split,
        inverse=inverse,
        max_kl=max_kl,
        adapt_damping_every=adapt_damping_every,
        damping_omega=damping_omega,
        noise_variance=noise_variance,
        batch_arg=batch_arg,
        inputs_of=inputs_of,
        targets_of=targets_of,
        seed=seed,
        axis_name=axis_name,
    )

    if momentum is None:  # the state of the two-part chain, as without the option
        return optax.chain(inner, optax.scale_by_learning_rate(learning_rate))
    return optax.chain(
        inner, optax.trace(decay=momentum), optax.scale_by_learning_rate(learning_rate)
    )
