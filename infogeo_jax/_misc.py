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


def finite_and_in_domain(theta: Point, in_domain=None) -> BoolScalar:
    """Whether ``theta`` is finite and satisfies an optional user predicate ``in_domain``."""
    ok = jnp.all(jnp.isfinite(theta))
    return ok if in_domain is None else jnp.logical_and(ok, in_domain(theta))


def solve_metric(g: Metric, b: Array) -> Array:
    """Solve ``g x = b`` for a symmetric positive-definite ``g`` (``b`` may have extra axes)."""
    factor = jax.scipy.linalg.cho_factor(g)
    return jax.scipy.linalg.cho_solve(factor, b)


def inverse_metric(g: Metric) -> Metric:
    """Inverse of a symmetric positive-definite matrix, symmetrized."""
    # The identity typed like `g` (batched and sharded like it under `vmap` of a sharded
    # batch, where an unbatched constant would not match the batch sharding of `g`).
    inv = solve_metric(g, jnp.eye(g.shape[0], dtype=g.dtype) + jnp.zeros_like(g))
    return 0.5 * (inv + inv.T)


def safe_sqrt(x: Array) -> Array:
    """``sqrt(max(x, 0))`` whose gradient is zero (not ``inf``/``nan``) at zero."""
    positive = x > 0
    safe_x = jnp.where(positive, x, 1.0)
    return jnp.where(positive, jnp.sqrt(safe_x), 0.0)


def exprel(x: Array) -> Array:
    r"""The relative exponential :math:`(e^x - 1)/x`, equal to 1 at 0, smooth and accurate.

    Elementwise. ``expm1(x) / x`` is accurate for every ``x != 0``, but its derivative cancels
    near 0; for :math:`|x| < 10^{-2}` a Taylor series to :math:`x^5` (truncation error below
    :math:`10^{-15}`, :math:`10^{-13}` for the derivative) replaces it, so the gradient is finite
    and accurate everywhere.
    """
    x = jnp.asarray(x)
    small = jnp.abs(x) < 1e-2
    safe_x = jnp.where(small, 1.0, x)
    series = 1.0 + x * (1 / 2 + x * (1 / 6 + x * (1 / 24 + x * (1 / 120 + x / 720))))
    return jnp.where(small, series, jnp.expm1(safe_x) / safe_x)


def directional_derivatives(fn, x: Array, v: Array, order: int) -> list[Array]:
    r"""The derivatives :math:`\frac{d^k}{ds^k} f(x + s v)\big|_{s=0}` for k = 0, ..., order.

    Computed by nested forward-mode differentiation of the scalar function of s, so it works for
    every primitive that has a JVP rule (``gammaln``, ``logsumexp``, ...). Meant for small orders
    (the cost grows like :math:`2^{\mathrm{order}}` evaluations of ``fn``).
    """

    def along(s):
        return fn(x + s * v)

    def all_derivatives(k):
        if k == 0:
            return lambda s: (along(s),)
        lower = all_derivatives(k - 1)

        def derivatives(s):
            primals, tangents = jax.jvp(lower, (s,), (jnp.ones_like(s),))
            return (*primals, tangents[-1])

        return derivatives

    return list(all_derivatives(order)(jnp.zeros((), x.dtype)))
