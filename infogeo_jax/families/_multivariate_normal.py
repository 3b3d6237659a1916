"""The multivariate normal family with full covariance."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point, cholesky_ok
from ._common import as_float, as_usual, check_mean


class MultivariateNormal(AbstractExponentialFamily):
    r"""d-dimensional normal distributions :math:`N(\mu, \Sigma)` with full covariance.

    Natural coordinates (a flat vector of length :math:`d + d(d+1)/2`):

    - ``theta[:d]`` :math:`= \Sigma^{-1}\mu`;
    - ``theta[d:]`` = the lower triangle of :math:`\Theta = -\frac12\Sigma^{-1}` in the order of
      ``numpy.tril_indices(d)`` (row by row), with the off-diagonal entries doubled.

    Sufficient statistic :math:`T(x) = (x, \mathrm{vech}(x x^\top))` (lower triangle, same order,
    not doubled), so that
    :math:`\langle\theta, T(x)\rangle = x^\top\Sigma^{-1}\mu + x^\top\Theta x`.
    :math:`\log h(x) = -\frac d2\log 2\pi`, and with precision :math:`P = -2\Theta`,
    :math:`A(\theta) = \frac12 h^\top P^{-1} h - \frac12\log\det P`. Natural domain: P positive
    definite (checked by a Cholesky factorization). Expectation parameters
    :math:`\eta = (\mu, \mathrm{vech}(\Sigma + \mu\mu^\top))`. Use :meth:`from_mean_covariance` /
    :meth:`mean_covariance` (mean, covariance), :meth:`from_usual` / :meth:`to_usual` (the
    flat chart of mean and vech of the covariance) and :meth:`unpack` / :meth:`pack` (linear
    part, Theta).

    Args:
        num_dims: d >= 1 (static).
    """

    num_dims: int = eqx.field(static=True)

    def __init__(self, num_dims: int):
        if int(num_dims) != num_dims or num_dims < 1:
            raise ValueError(f"`num_dims` must be a positive integer, got {num_dims}.")
        self.num_dims = int(num_dims)

    @property
    def dim(self) -> int:
        d = self.num_dims
        return d + d * (d + 1) // 2

    def _tril(self) -> tuple[np.ndarray, np.ndarray]:
        return np.tril_indices(self.num_dims)

    def _symmetric(self, flat: Array, off_diagonal_scale: float) -> Array:
        rows, cols = self._tril()
        scale = np.where(rows == cols, 1.0, off_diagonal_scale)
        scaled = flat * jnp.asarray(scale, flat.dtype)
        lower = jnp.zeros((self.num_dims, self.num_dims), flat.dtype).at[rows, cols].set(scaled)
        return lower + jnp.tril(lower, -1).T

    def _vech(self, matrix: Array, off_diagonal_scale: float) -> Array:
        rows, cols = self._tril()
        scale = np.where(rows == cols, 1.0, off_diagonal_scale)
        return matrix[rows, cols] * jnp.asarray(scale, matrix.dtype)

    def unpack(self, theta: PointLike) -> tuple[Array, Array]:
        r"""Split natural parameters into :math:`(\Sigma^{-1}\mu, \Theta = -\frac12\Sigma^{-1})`."""
        theta = as_point(theta, self.dim)
        d = self.num_dims
        return theta[:d], self._symmetric(theta[d:], 0.5)

    def pack(self, linear: Array, theta_matrix: Array) -> Point:
        r"""Inverse of :meth:`unpack`: flatten :math:`(\Sigma^{-1}\mu, \Theta)`."""
        return jnp.concatenate([linear, self._vech(theta_matrix, 2.0)])

    def _precision_cholesky(self, theta: Point) -> tuple[Array, Array]:
        linear, theta_matrix = self.unpack(theta)
        return linear, jnp.linalg.cholesky(-2.0 * theta_matrix)

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        linear, chol = self._precision_cholesky(theta)
        z = jax.scipy.linalg.solve_triangular(chol, linear, lower=True)
        return 0.5 * z @ z - jnp.sum(jnp.log(jnp.diag(chol)))

    def in_domain(self, theta: Point) -> Scalar:
        _, chol = self._precision_cholesky(theta)
        return (
            jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.diag(chol) > 0)
        )

    def _mean_to_usual(self, eta: Point) -> tuple[Array, Array]:
        d = self.num_dims
        mean = eta[:d]
        cov = self._symmetric(eta[d:], 1.0) - jnp.outer(mean, mean)
        return mean, cov

    def in_mean_domain(self, eta: Point) -> Scalar:
        _, cov = self._mean_to_usual(eta)
        chol = jnp.linalg.cholesky(cov)
        return (
            jnp.all(jnp.isfinite(eta)) & jnp.all(jnp.isfinite(chol)) & jnp.all(jnp.diag(chol) > 0)
        )

    def sufficient_statistic(self, x: Sample) -> Point:
        x = as_float(x)
        if x.shape != (self.num_dims,):
            raise ValueError(f"`x` must have shape ({self.num_dims},), got {x.shape}.")
        return jnp.concatenate([x, self._vech(jnp.outer(x, x), 1.0)])

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.asarray(-0.5 * self.num_dims * np.log(2 * np.pi), jnp.result_type(float))

    def mean_parameters(self, theta: PointLike) -> Point:
        mean, cov = self.mean_covariance(theta)
        return jnp.concatenate([mean, self._vech(cov + jnp.outer(mean, mean), 1.0)])

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form: :math:`\Sigma = S - \mu\mu^\top`, then :meth:`from_usual`."""
        eta = as_point(eta, self.dim, "eta")
        eta = check_mean(
            eta, self.in_mean_domain(eta), "MultivariateNormal", "positive-definite covariance"
        )
        mean, cov = self._mean_to_usual(eta)
        return self.from_mean_covariance(mean, cov)

    def _closed_form_fit(self, data: Array, weights: Array) -> tuple[Point, Scalar] | None:
        # Two-pass centered moments: the mean around the first sample, then the covariance of
        # the deviations (no E[x x^T] - mu mu^T cancellation).
        if data.ndim != 2 or data.shape[1] != self.num_dims:
            return None
        x = data.astype(jnp.result_type(data.dtype, float))
        w = weights.astype(x.dtype)
        mean = x[0] + w @ (x - x[0])
        dev = x - mean
        bias = w @ dev
        cov = (dev * w[:, None]).T @ dev - jnp.outer(bias, bias)
        cov = 0.5 * (cov + cov.T)
        # Numerically singular (collinear data): a pivot at the rounding level of the diagonal.
        pivots = jnp.diag(jnp.linalg.cholesky(cov)) ** 2
        floor = self.num_dims * jnp.finfo(cov.dtype).eps * jnp.max(jnp.diag(cov))
        ok = jnp.all(jnp.isfinite(mean)) & cholesky_ok(cov) & jnp.all(pivots > 64 * floor)
        safe = jnp.where(ok, cov, jnp.eye(self.num_dims, dtype=cov.dtype))
        return self.from_mean_covariance(mean, safe), ok

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return self.from_mean_covariance(
            jnp.zeros(self.num_dims, eta.dtype), jnp.eye(self.num_dims, dtype=eta.dtype)
        )

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples of shape ``shape + (d,)``."""
        mean, cov = self.mean_covariance(theta)
        return jax.random.multivariate_normal(key, mean, cov, shape, dtype=mean.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        r"""Natural parameters from ``usual = concatenate([mean, vech(covariance)])``.

        ``vech`` is the lower triangle in the order of ``numpy.tril_indices(d)`` (not doubled),
        so ``usual`` has the length of theta and is a chart. :meth:`from_mean_covariance` takes
        the mean and the full covariance matrix.
        """
        usual = as_usual(usual, self.dim)
        d = self.num_dims
        return self.from_mean_covariance(usual[:d], self._symmetric(usual[d:], 1.0))

    def to_usual(self, theta: PointLike) -> Point:
        """``concatenate([mean, vech(covariance)])``, shape ``(dim,)``; see :meth:`from_usual`."""
        mean, covariance = self.mean_covariance(theta)
        return jnp.concatenate([mean, self._vech(covariance, 1.0)])

    def _native_distribution(self, theta: Point, library: str) -> Any:
        mean, covariance = self.mean_covariance(theta)
        return native_distribution(
            library, "MultivariateNormal", loc=mean, covariance_matrix=covariance
        )

    def from_mean_covariance(self, mean: Array, covariance: Array) -> Point:
        """Natural parameters from the mean ``(d,)`` and a positive-definite covariance."""
        mean = as_float(mean)
        covariance = as_float(covariance)
        d = self.num_dims
        if mean.shape != (d,) or covariance.shape != (d, d):
            raise ValueError(
                f"`mean` must have shape ({d},) and `covariance` ({d}, {d}); got {mean.shape} "
                f"and {covariance.shape}."
            )
        factor = jax.scipy.linalg.cho_factor(covariance)
        precision = jax.scipy.linalg.cho_solve(factor, jnp.eye(d, dtype=covariance.dtype))
        precision = 0.5 * (precision + precision.T)
        return self.pack(precision @ mean, -0.5 * precision)

    def mean_covariance(self, theta: PointLike) -> tuple[Array, Array]:
        """``(mean, covariance)`` from natural parameters, shapes ``(d,)`` and ``(d, d)``."""
        theta = self.check_point(theta)
        linear, chol = self._precision_cholesky(theta)
        eye = jnp.eye(self.num_dims, dtype=theta.dtype)
        chol_inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
        covariance = chol_inv.T @ chol_inv
        return covariance @ linear, covariance
