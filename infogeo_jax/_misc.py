"""Small shared helpers: point validation, safe math, linear algebra on the metric."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, BoolScalar, Metric, Point, PointLike


def as_point(theta: PointLike, dim: int | None = None, name: str = "theta") -> Point:
    """Convert ``theta`` to an inexact 1-D array and check its shape (static, at trace time).

    Raises:
        TypeError: if ``theta`` is complex (parameters and tangent vectors are real).
        ValueError: if ``theta`` is not 1-D, or not of length ``dim`` when ``dim`` is known.
    """
    theta = jnp.asarray(theta)
    check_real(theta, name)
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


def check_real(x: Array, name: str) -> None:
    """Raise ``TypeError`` (at trace time) if ``x`` has a complex dtype."""
    if jnp.issubdtype(jnp.asarray(x).dtype, jnp.complexfloating):
        raise TypeError(
            f"`{name}` must be real, got dtype {jnp.asarray(x).dtype}: the geometry of "
            "statistical manifolds is defined on real parameters (pass the real part, or split "
            "real and imaginary parts into separate coordinates)."
        )


def check_alpha(alpha, name: str = "alpha"):
    """Validate Amari's ``alpha`` (or another real scalar argument) at trace time.

    Python and NumPy numbers are returned unchanged (so that closed forms keyed on their value
    stay available); arrays must be real and 0-dimensional.

    Raises:
        TypeError: if ``alpha`` is complex or not a number.
        ValueError: if ``alpha`` is an array with ``ndim > 0``.
    """
    if isinstance(alpha, bool):
        raise TypeError(f"`{name}` must be a real scalar, got a bool.")
    if isinstance(alpha, (int, float)):
        return alpha
    arr = jnp.asarray(alpha)
    check_real(arr, name)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be a real scalar, got dtype {arr.dtype}.")
    if arr.ndim != 0:
        raise ValueError(
            f"`{name}` must be a scalar, got shape {arr.shape}; use jax.vmap to batch over it."
        )
    return alpha


def is_static_value(alpha, value: float) -> bool:
    """Whether ``alpha`` is a Python (or NumPy) number equal to ``value``.

    JAX arrays never count as static, so passing ``jnp.asarray(alpha)`` forces the general
    (ODE) route even where a closed form exists.
    """
    if isinstance(alpha, (bool, int, float, np.floating, np.integer)):
        return float(alpha) == value
    return False


def fail_or_nan(x: Array, ok: BoolScalar, throw: bool, message: str) -> Array:
    """``x`` where ``ok``; otherwise raise ``message`` (``throw``, also under ``jit``) or NaN."""
    if throw:
        return eqx.error_if(x, jnp.logical_not(ok), message)
    return jnp.where(ok, x, jnp.nan)


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


def cholesky_ok(g: Metric) -> BoolScalar:
    """Whether ``g`` is finite and numerically positive definite (its Cholesky factor exists)."""
    chol = jnp.linalg.cholesky(g)
    return jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.diag(chol) > 0)


def check_metric(g: Metric, where: str) -> Metric:
    r"""Raise (eagerly and under ``jit``) unless ``g`` is a usable metric.

    A metric must be finite, symmetric to within :math:`\sqrt{\epsilon}\max|g|` and positive
    definite (checked by a Cholesky factorization: a singular or indefinite matrix fails).
    The message names the first failing condition.
    """
    finite = jnp.all(jnp.isfinite(g))
    safe = jnp.where(finite, g, jnp.eye(g.shape[0], dtype=g.dtype))
    scale = jnp.max(jnp.abs(safe))
    tol = jnp.sqrt(jnp.finfo(g.dtype).eps) * scale
    symmetric = jnp.all(jnp.abs(safe - safe.T) <= tol)
    positive = cholesky_ok(0.5 * (safe + safe.T))
    index = jnp.where(~finite, 0, jnp.where(~symmetric, 1, 2))
    messages = [
        f"{where} is not finite (NaN or inf) at theta.",
        f"{where} is not symmetric at theta (|g - g^T| exceeds sqrt(eps) max|g|); a metric "
        "must be a symmetric matrix.",
        f"{where} is not positive definite at theta (singular or indefinite: its Cholesky "
        "factorization fails). A Riemannian metric must be positive definite; check the "
        "formula, and that theta lies where the metric is non-degenerate.",
    ]
    return eqx.branched_error_if(g, ~(finite & symmetric & positive), index, messages)


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


def bregman_gap(fn, x: Array, y: Array) -> Array:
    r"""The Bregman gap :math:`F(x) - F(y) - \langle\nabla F(y), x - y\rangle`, compensated.

    Two routes, and the one with the smaller error estimate is returned:

    - direct: the three terms, which cancel when :math:`B \ll |F|` (two nearby members with a
      large log-partition: the error is about :math:`4\epsilon(|F(x)| + |F(y)| +
      |\langle\nabla F(y), x - y\rangle|)`);
    - integral: Taylor's remainder :math:`B = \int_0^1 (1 - t)\,\phi''(t)\,dt`,
      :math:`\phi(t) = F(y + t(x - y))`, by 16-node Gauss-Legendre quadrature of the second
      directional derivative (nested forward mode), with no cancellation; its error is
      estimated by the difference from the 8-node rule, and the route is used only when
      that estimate is below :math:`\sqrt\epsilon` relative (a nearly constant integrand).

    The integral is exact to rounding for nearby points (the integrand is then almost
    constant), which is where the direct form fails.
    """
    delta = x - y
    f_x = fn(x)
    f_y, grad_y = jax.value_and_grad(fn)(y)
    linear = jnp.vdot(grad_y, delta)
    direct = f_x - f_y - linear
    eps = jnp.finfo(direct.dtype).eps
    direct_error = 4 * eps * (jnp.abs(f_x) + jnp.abs(f_y) + jnp.abs(linear))

    def second(t):
        along = lambda s: fn(y + s * delta)
        first = lambda s: jax.jvp(along, (s,), (jnp.ones_like(s),))[1]
        return jax.jvp(first, (t,), (jnp.ones_like(t),))[1]

    def gauss(n):
        nodes, weights = np.polynomial.legendre.leggauss(n)
        t = jnp.asarray(0.5 * (nodes + 1.0), direct.dtype)
        w = jnp.asarray(0.5 * weights, direct.dtype)
        return jnp.sum(w * (1.0 - t) * jax.vmap(second)(t))

    fine = gauss(16)
    coarse = gauss(8)
    integral_error = jnp.abs(fine - coarse) + 4 * eps * jnp.abs(fine)
    converged = integral_error <= jnp.sqrt(eps) * jnp.abs(fine)
    use_integral = converged & (integral_error < direct_error)
    return jnp.where(use_integral, fine, direct)


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
