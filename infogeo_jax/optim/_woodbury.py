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

from typing import Any

import equinox as eqx
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


def subsampled_solve(
    fisher: Any,
    params: PyTree,
    updates: PyTree,
    damping: jax.Array,
    solver: str,
    max_kl: Any,
    **extra_args: Any,
) -> tuple[PyTree, PyTree]:
    r"""``(x, step)``: :math:`x = (F + \lambda I)^{-1} g` exactly (Woodbury) or diagonally.

    ``step`` is ``x`` scaled to the KL radius ``max_kl`` when it is given (as in
    :func:`natural_gradient`), else ``x``.

    Raises:
        equinox.EquinoxRuntimeError: if the solve is not finite (zero damping with a singular
            Fisher).
    """
    blocks, n = gram_rows(fisher, params, **extra_args)
    g_leaves, g_treedef = jax.tree.flatten(updates)
    if len(g_leaves) != len(blocks):
        raise ValueError(
            f"the updates have {len(g_leaves)} array leaves but the Fisher has {len(blocks)} "
            "trainable leaves; pass the gradients of the trainable (inexact) leaves only."
        )
    dtype = jnp.promote_types(jnp.result_type(*g_leaves), jnp.float32)
    u = jnp.concatenate([b.astype(dtype) for b in blocks], axis=1)  # (m, P)
    g = jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in g_leaves])
    lam = damping.astype(dtype)
    if solver == "diagonal":
        x = g / (jnp.sum(u * u, axis=0) / n + lam)
    else:
        gram = u @ u.T + n * lam * jnp.eye(u.shape[0], dtype=dtype)
        z = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), u @ g)
        x = (g - u.T @ z) / lam
    x = eqx.error_if(
        x,
        jnp.logical_not(jnp.all(jnp.isfinite(x))),
        f"natural_gradient(solver={solver!r}): the damped Fisher is singular or the solve is "
        "not finite; use a positive `damping`.",
    )
    step = x
    if max_kl is not None:
        quad = 0.5 * jnp.vdot(g, x)
        eps = jnp.asarray(max_kl, dtype)
        step = x * jnp.where(quad > 0, jnp.sqrt(eps / jnp.where(quad > 0, quad, 1.0)), 1.0)

    def unflat(flat):
        sizes = [int(jnp.size(leaf)) for leaf in g_leaves]
        offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        parts = [
            flat[offsets[i] : offsets[i + 1]].reshape(jnp.shape(leaf)).astype(leaf.dtype)
            for i, leaf in enumerate(g_leaves)
        ]
        return jax.tree.unflatten(g_treedef, parts)

    return unflat(x), unflat(step)
