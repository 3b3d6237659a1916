"""Small shared helpers: point validation, safe math, linear algebra on the metric."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, BoolScalar, Metric, Point, PointLike


def as_point(theta: PointLike, dim: int | None = None, name: str = "theta") -> Point:
    """Convert ``theta`` to an inexact 1-D array and check its shape (static, at trace time).

    Raises:
        ValueError: if ``theta`` is not 1-D, or not of length ``dim`` when ``dim`` is known.
    """
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.inexact):
        theta = theta.astype(jnp.result_type(float))
    if theta.ndim != 1:
        raise ValueError(
            f"`{name}` must be an unbatched 1-D array of shape (dim,), got shape {theta.shape}. "
            "Batch over points with `jax.vmap`."
        )
    if dim is not None and theta.shape[0] != dim:
        raise ValueError(f"`{name}` must have shape ({dim},), got shape {theta.shape}.")
    return theta


def check_domain(theta: Point, ok: BoolScalar, message: str) -> Point:
    """Raise (eagerly and under ``jit``) when ``ok`` is false; returns ``theta`` unchanged."""
    return eqx.error_if(theta, jnp.logical_not(ok), message)


def solve_metric(g: Metric, b: Array) -> Array:
    """Solve ``g x = b`` for a symmetric positive-definite ``g`` (``b`` may have extra axes)."""
    factor = jax.scipy.linalg.cho_factor(g)
    return jax.scipy.linalg.cho_solve(factor, b)


def inverse_metric(g: Metric) -> Metric:
    """Inverse of a symmetric positive-definite matrix, symmetrized."""
    inv = solve_metric(g, jnp.eye(g.shape[0], dtype=g.dtype))
    return 0.5 * (inv + inv.T)


def safe_sqrt(x: Array) -> Array:
    """``sqrt(max(x, 0))`` whose gradient is zero (not ``inf``/``nan``) at zero."""
    positive = x > 0
    safe_x = jnp.where(positive, x, 1.0)
    return jnp.where(positive, jnp.sqrt(safe_x), 0.0)
