r"""Exact subsampled natural gradient by the Woodbury identity, and the diagonal Fisher.

The empirical and the predictive Fisher of a batch of :math:`n` examples are low-rank Gram
matrices :math:`F = \frac1n U^\top U`, with one row of :math:`U` per example and output
direction: the per-example score for the empirical Fisher; :math:`S_i^\top J_i`, with
:math:`S_i S_i^\top = F_{\mathrm{out}}(f_i)`, for the predictive Fisher. The damped system is
solved exactly through the :math:`m \times m` Gram matrix :math:`U U^\top` (:math:`m = n c`):

.. math::
    (F + \lambda I)^{-1} g = \frac1\lambda \big(g - U^\top (n \lambda I + U U^\top)^{-1} U g\big),

in :math:`O(m^2 P + m^3)` for :math:`P` parameters, never forming the :math:`P \times P`
matrix; the diagonal option uses :math:`\operatorname{diag} F = \frac1n \sum_r U_{r\cdot}^2`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .._custom_types import PyTree
from ._apply import split_trainable
from ._fisher import _batch_of, _EmpiricalFisher, _PredictiveFisher


def _output_root(out: jax.Array, output: str, noise_variance: float) -> jax.Array:
    """Rows ``r`` (stacked on a new leading axis) with ``sum_r r r^T`` the output Fisher."""
    dtype = jnp.promote_types(out.dtype, jnp.float32)
    f = out.astype(dtype)
    if output == "categorical":
        c = f.shape[-1]
        p = jax.nn.softmax(f, axis=-1).reshape(-1, c)  # (positions, c)
        eye = jnp.eye(c, dtype=dtype)
        # Columns of diag(sqrt p) - p sqrt(p)^T per position: their Gram is diag(p) - p p^T.
        cols = jnp.sqrt(p)[:, :, None] * (eye[None] - p[:, None, :])  # (positions, k, c)
        positions = p.shape[0]
        rows = jnp.zeros((positions, c, positions, c), dtype)
        rows = rows.at[jnp.arange(positions), :, jnp.arange(positions), :].set(cols)
        return rows.reshape(positions * c, *f.shape).astype(out.dtype)
    m = f.size
    eye = jnp.eye(m, dtype=dtype) / jnp.sqrt(jnp.asarray(noise_variance, dtype))
    return eye.reshape(m, *f.shape).astype(out.dtype)


def gram_rows(fisher: Any, params: PyTree, **extra_args: Any) -> tuple[list[jax.Array], int]:
    r"""The rows of :math:`U` (``F = U^T U / n``), one ``(m, leaf.size)`` block per trainable leaf.

    Raises:
        TypeError: if ``fisher`` was not built by ``predictive_fisher`` or
            ``empirical_fisher``.
    """
    trainable, rebuild = split_trainable(params, extra_args.get("full_params"), builder="woodbury")
    add_axis = lambda tree: jax.tree.map(lambda a: a[None], tree)
    if isinstance(fisher, _PredictiveFisher):
        batch = _batch_of(extra_args, fisher.batch_arg, "predictive_fisher")
        inputs = fisher.inputs_of.value(batch)
        model = fisher.model

        def rows_of(x):
            out, vjp_fn = jax.vjp(lambda t: model(rebuild(t), add_axis(x))[0], trainable)
            (rows,) = jax.vmap(vjp_fn)(_output_root(out, fisher.output, fisher.noise_variance))
            return rows

        rows = jax.vmap(rows_of)(inputs)
    elif isinstance(fisher, _EmpiricalFisher):
        batch = _batch_of(extra_args, fisher.batch_arg, "empirical_fisher")
        loglik = fisher.loglik.value
        if fisher.model is None:
            score = lambda e: jax.grad(lambda t: loglik(rebuild(t), e))(trainable)
            rows = jax.vmap(score)(batch)
        else:
            model = fisher.model
            inputs = fisher.inputs_of.value(batch)
            score = lambda x, e: jax.grad(lambda t: loglik(model(rebuild(t), add_axis(x))[0], e))(
                trainable
            )
            rows = jax.vmap(score)(inputs, batch)
        rows = jax.tree.map(lambda a: a[:, None], rows)
    else:
        raise TypeError(
            "solver='woodbury' and solver='diagonal' need the Fisher as a Gram matrix of "
            "per-example rows: build it with `predictive_fisher` or `empirical_fisher`, got "
            f"{type(fisher).__name__}."
        )
    leaves = jax.tree.leaves(rows)
    n = leaves[0].shape[0]
    return [leaf.reshape(-1, int(leaf[0, 0].size)) for leaf in leaves], n


def _damped_gram_solve(gram: jax.Array, b: jax.Array, shift: jax.Array) -> jax.Array:
    r""":math:`z = (K + s I)^{-1} b` for a Gram matrix :math:`K \succeq 0` and a shift :math:`s`.

    Scale-aware: :math:`K` is divided by its mean eigenvalue :math:`\operatorname{tr} K / m`
    (so the shift is measured against the Fisher's own scale) and factorized by Cholesky. When
    rounding makes the computed :math:`K + s I` indefinite (a shift below the Gram's rounding
    error, :math:`\epsilon \|K\|`, as with duplicated or collinear examples in float32), the
    solve falls back to an eigendecomposition with the negative rounding eigenvalues clipped to
    zero, the nearest positive semi-definite Gram (one ``lax.cond``: the fallback runs only when
    Cholesky fails). With a zero shift and a singular Gram the result is not finite, which the
    caller reports.
    """
    m = gram.shape[0]
    gram = 0.5 * (gram + gram.T)
    mean = jnp.trace(gram) / m
    scale = jnp.where(jnp.isfinite(mean) & (mean > 0), mean, jnp.ones_like(mean))
    k = gram / scale
    s = shift / scale
    rhs = b / scale
    eye = jnp.eye(m, dtype=gram.dtype)
    chol = jnp.linalg.cholesky(k + s * eye)
    ok = jnp.all(jnp.isfinite(chol))

    def by_cholesky(_):
        return jax.scipy.linalg.cho_solve((chol, True), rhs)

    def by_eigh(_):
        w, v = jnp.linalg.eigh(k)
        return v @ ((v.T @ rhs) / (jnp.maximum(w, 0) + s))

    return jax.lax.cond(ok, by_cholesky, by_eigh, None)


def subsampled_solve(
    fisher: Any,
    params: PyTree,
    updates: PyTree,
    damping: jax.Array,
    solver: str,
    max_kl: Any,
    **extra_args: Any,
) -> tuple[PyTree, PyTree, jax.Array]:
    r"""``(x, step, failed)``: :math:`x = (F + \lambda I)^{-1} g` exactly (Woodbury) or diagonally.

    ``step`` is ``x`` scaled to the KL radius ``max_kl`` when it is given (as in
    :func:`natural_gradient`), else ``x``. ``failed`` is a boolean scalar: the solve is not
    finite (zero damping: the Fisher of :math:`n` examples has rank at most :math:`m < P`, so
    the Woodbury form needs :math:`\lambda > 0`; or a non-finite gradient). The caller reports
    it, after the causes it checks first (a non-finite gradient, a negative damping).

    The products run blockwise over the parameter leaves (no concatenated copy of :math:`U`),
    in at least float32 and at the highest matmul precision (no TF32 or bfloat16 passes on
    accelerators): :math:`U U^\top = \sum_b U_b U_b^\top`, :math:`U g = \sum_b U_b g_b`,
    :math:`U^\top z = (z^\top U_b)_b`. The cost is that of the Gram, :math:`O(m^2 P)` with
    :math:`m = n c`, plus :math:`m` per-example backward passes for the rows.

    Raises:
        ValueError: if the gradient does not have one leaf per trainable leaf.
    """
    blocks, n = gram_rows(fisher, params, **extra_args)
    g_leaves, g_treedef = jax.tree.flatten(updates)
    if len(g_leaves) != len(blocks):
        raise ValueError(
            f"the updates have {len(g_leaves)} array leaves but the Fisher has {len(blocks)} "
            "trainable leaves; pass the gradients of the trainable (inexact) leaves only."
        )
    dtype = jnp.promote_types(jnp.result_type(*g_leaves), jnp.float32)
    us = [b.astype(dtype) for b in blocks]  # (m, P_b) each
    gs = [jnp.ravel(leaf).astype(dtype) for leaf in g_leaves]
    lam = damping.astype(dtype)
    hi = jax.lax.Precision.HIGHEST
    if solver == "diagonal":
        xs = [g / (jnp.sum(u * u, axis=0) / n + lam) for u, g in zip(us, gs)]
    else:
        gram = functools.reduce(jnp.add, [jnp.matmul(u, u.T, precision=hi) for u in us])
        ug = functools.reduce(jnp.add, [jnp.matmul(u, g, precision=hi) for u, g in zip(us, gs)])
        z = _damped_gram_solve(gram, ug, n * lam)
        xs = [(g - jnp.matmul(z, u, precision=hi)) / lam for u, g in zip(us, gs)]
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs]))
    failed = jnp.logical_not(finite)
    if solver == "woodbury":
        failed = failed | jnp.logical_not(lam > 0)
    steps = xs
    if max_kl is not None:
        quad = 0.5 * sum(jnp.vdot(g, x) for g, x in zip(gs, xs))
        eps = jnp.asarray(max_kl, dtype)
        factor = jnp.where(quad > 0, jnp.sqrt(eps / jnp.where(quad > 0, quad, 1.0)), 1.0)
        steps = [x * factor for x in xs]

    def unflat(parts):
        return jax.tree.unflatten(
            g_treedef,
            [
                part.reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf))
                for part, leaf in zip(parts, g_leaves)
            ],
        )

    return unflat(xs), unflat(steps), failed
