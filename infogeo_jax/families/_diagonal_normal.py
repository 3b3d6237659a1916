"""The d-dimensional normal family with diagonal covariance."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Metric, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point, safe_sqrt
from ._common import as_float, as_usual, check_mean


class DiagonalNormal(AbstractExponentialFamily):
    r"""Normal distributions :math:`N(\mu, \mathrm{diag}(\sigma^2))` on :math:`\mathbb R^d`.

    Independent coordinates, so the family is the product of d univariate normal families.
    Natural coordinates, shape ``(2d,)``: ``theta[:d]`` :math:`= \mu_i/\sigma_i^2` and
    ``theta[d:]`` :math:`= -1/(2\sigma_i^2)`; :math:`T(x) = (x, x^2)` (elementwise),
    :math:`\log h = -\frac d2\log 2\pi`, :math:`A(\theta) = \sum_i -\frac{\theta_i^2}
    {4\theta_{d+i}} - \frac12\log(-2\theta_{d+i})`. Natural domain :math:`\theta_{d+i} < 0`;
    expectation parameters :math:`(\mu, \mu^2 + \sigma^2)`. Usual parameters
    ``[mu (d), sigma (d)]``; in them the Fisher metric is
    :math:`\mathrm{diag}(1/\sigma_i^2, 2/\sigma_i^2)`, a product of d hyperbolic planes of
    scalar curvature -1 each (total -d), and the Fisher-Rao distance is the root sum of
    squares of the univariate distances.

    Args:
        num_dims: d >= 1 (static).

    Example:
        >>> import jax.numpy as jnp
        >>> fam = DiagonalNormal(2)
        >>> theta = fam.from_usual(jnp.array([0.0, 1.0, 1.0, 2.0]))  # mu, then sigma
        >>> fam.to_usual(theta).tolist()
        [0.0, 1.0, 1.0, 2.0]
    """

    num_dims: int = eqx.field(static=True)

    def __init__(self, num_dims: int):
        if int(num_dims) != num_dims or num_dims < 1:
            raise ValueError(f"`num_dims` must be a positive integer, got {num_dims}.")
        self.num_dims = int(num_dims)

    @property
    def dim(self) -> int:
        return 2 * self.num_dims

    def _split(self, theta: Point) -> tuple[Array, Array]:
        return theta[: self.num_dims], theta[self.num_dims :]

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        t1, t2 = self._split(theta)
        return jnp.sum(-(t1**2) / (4.0 * t2) - 0.5 * jnp.log(-2.0 * t2))

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta)) & jnp.all(self._split(theta)[1] < 0)

    def in_mean_domain(self, eta: Point) -> Scalar:
        e1, e2 = self._split(eta)
        return jnp.all(jnp.isfinite(eta)) & jnp.all(e2 - e1**2 > 0)

    def sufficient_statistic(self, x: Sample) -> Point:
        x = as_float(x)
        if x.shape != (self.num_dims,):
            raise ValueError(f"`x` must have shape ({self.num_dims},), got {x.shape}.")
        return jnp.concatenate([x, x**2])

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.asarray(-0.5 * self.num_dims * np.log(2 * np.pi), jnp.result_type(float))

    def _fisher_information_closed_form(self, theta: Point) -> Metric:
        r"""Closed form: the block-diagonal :math:`\mathrm{Cov}[T]` (checked against autodiff)."""
        theta = self.check_point(theta)
        t1, t2 = self._split(theta)
        var = -0.5 / t2
        mu = t1 * var
        d11 = var
        d12 = 2.0 * mu * var
        d22 = 2.0 * var**2 + 4.0 * mu**2 * var
        top = jnp.concatenate([jnp.diag(d11), jnp.diag(d12)], axis=1)
        bottom = jnp.concatenate([jnp.diag(d12), jnp.diag(d22)], axis=1)
        return jnp.concatenate([top, bottom], axis=0)

    def mean_parameters(self, theta: PointLike) -> Point:
        t1, t2 = self._split(self.check_point(theta))
        var = -0.5 / t2
        mu = t1 * var
        return jnp.concatenate([mu, mu**2 + var])

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        """Closed form, coordinate by coordinate (Newton options are accepted and ignored)."""
        eta = as_point(eta, self.dim, "eta")
        eta = check_mean(eta, self.in_mean_domain(eta), "DiagonalNormal", "eta2 > eta1**2")
        e1, e2 = self._split(eta)
        var = e2 - e1**2
        return jnp.concatenate([e1 / var, -0.5 / var])

    def _initial_natural_parameters(self, eta: Point) -> Point:
        d = self.num_dims
        return jnp.concatenate([jnp.zeros(d, eta.dtype), jnp.full(d, -0.5, eta.dtype)])

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed form: root sum of squares of the univariate normal distances.

        Each :math:`2\sqrt2\,\mathrm{artanh}\sqrt{\frac{\Delta\mu^2/2 + (\sigma_0-\sigma_1)^2}
        {\Delta\mu^2/2 + (\sigma_0+\sigma_1)^2}}` (Costa, Santos & Strapasson 2015); a product
        manifold's distance is the Euclidean combination of the factors'.
        """
        d = self.num_dims
        u0, u1 = self.to_usual(theta_0), self.to_usual(theta_1)
        m0, s0, m1, s1 = u0[:d], u0[d:], u1[:d], u1[d:]
        half_dmu2 = 0.5 * (m0 - m1) ** 2
        ratio = (half_dmu2 + (s0 - s1) ** 2) / (half_dmu2 + (s0 + s1) ** 2)
        each = 2.0 * jnp.sqrt(2.0) * jnp.arctanh(safe_sqrt(ratio))
        return safe_sqrt(jnp.sum(each**2))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Samples of shape ``shape + (d,)``."""
        usual = self.to_usual(theta)
        d = self.num_dims
        z = jax.random.normal(key, tuple(shape) + (d,), dtype=usual.dtype)
        return usual[:d] + usual[d:] * z

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [mu (d), sigma (d)]`` (sigma > 0)."""
        usual = as_usual(usual, self.dim)
        mean, std = self._split(usual)
        var = std**2
        return jnp.concatenate([mean / var, -0.5 / var])

    def to_usual(self, theta: PointLike) -> Point:
        """``[mu (d), sigma (d)]``, shape ``(2d,)``."""
        t1, t2 = self._split(self.check_point(theta))
        var = -0.5 / t2
        return jnp.concatenate([t1 * var, jnp.sqrt(var)])

    def _native_distribution(self, theta: Point, library: str) -> Any:
        usual = self.to_usual(theta)
        mean, std = self._split(usual)
        if library == "numpyro":
            return native_distribution(library, "Normal", loc=mean, scale=std).to_event(1)
        return native_distribution(library, "MultivariateNormalDiag", loc=mean, scale_diag=std)
