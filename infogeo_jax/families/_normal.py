"""The univariate normal family."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point, safe_sqrt
from ..geometry import GeodesicSolver
from ._common import as_usual


class Normal(AbstractExponentialFamily):
    r"""Univariate normal distributions :math:`N(\mu, \sigma^2)`.

    Natural coordinates :math:`\theta = (\mu/\sigma^2, -1/(2\sigma^2))`, shape ``(2,)``;
    :math:`T(x) = (x, x^2)`, :math:`\log h(x) = -\frac12\log 2\pi`,
    :math:`A(\theta) = -\frac{\theta_1^2}{4\theta_2} - \frac12\log(-2\theta_2)`.
    Natural domain :math:`\theta_2 < 0`; expectation parameters
    :math:`\eta = (\mu, \mu^2 + \sigma^2)`, mean domain :math:`\eta_2 > \eta_1^2`.
    In :math:`(\mu, \sigma)` the Fisher metric is :math:`\mathrm{diag}(1, 2)/\sigma^2`, a
    hyperbolic plane of scalar curvature -1.

    Example:
        >>> fam = Normal()
        >>> import jax.numpy as jnp
        >>> theta = fam.from_usual(jnp.array([0.0, 1.0]))  # mean 0, standard deviation 1
        >>> theta.tolist()  # (mu / sigma^2, -1 / (2 sigma^2))
        [0.0, -0.5]
        >>> fam.to_usual(theta).tolist()
        [0.0, 1.0]
    """

    @property
    def dim(self) -> int:
        return 2

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        t1, t2 = theta[0], theta[1]
        return -(t1**2) / (4.0 * t2) - 0.5 * jnp.log(-2.0 * t2)

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta)) & (theta[1] < 0)

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta)) & (eta[1] - eta[0] ** 2 > 0)

    def sufficient_statistic(self, x: Sample) -> Point:
        x = jnp.asarray(x, dtype=jnp.result_type(float))
        return jnp.stack([x, x**2])

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.asarray(-0.5 * jnp.log(2.0 * jnp.pi), jnp.result_type(float))

    # closed-form overrides (checked against autodiff in the tests)
    def mean_parameters(self, theta: PointLike) -> Point:
        theta = self.check_point(theta)
        var = -0.5 / theta[1]
        mu = theta[0] * var
        return jnp.stack([mu, mu**2 + var])

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form of the inverse of grad A (Newton options are accepted and ignored).

        :math:`\theta = (\eta_1/\sigma^2, -1/(2\sigma^2))`, :math:`\sigma^2 = \eta_2 - \eta_1^2`.
        """
        eta = as_point(eta, 2, "eta")
        eta = eqx.error_if(
            eta,
            ~self.in_mean_domain(eta),
            "eta is outside the normal mean domain (need eta[1] > eta[0]**2).",
        )
        var = eta[1] - eta[0] ** 2
        return jnp.stack([eta[0] / var, -0.5 / var])

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return jnp.array([0.0, -0.5], eta.dtype)

    def geodesic_distance(
        self,
        theta_0: PointLike,
        theta_1: PointLike,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
    ) -> Scalar:
        r"""Closed-form Fisher-Rao distance.

        .. math::
            d = 2\sqrt2\,\mathrm{artanh}\sqrt{\frac{(\mu_0-\mu_1)^2/2 + (\sigma_0-\sigma_1)^2}
            {(\mu_0-\mu_1)^2/2 + (\sigma_0+\sigma_1)^2}}.

        ``solver`` and ``throw`` are ignored (see the base method).

        References:
            Costa, Santos & Strapasson, *Fisher information distance: a geometrical reading*,
            Discrete Applied Mathematics 197 (2015), Eq. (7).
        """
        del solver, throw
        m0, s0 = self.to_usual(theta_0)
        m1, s1 = self.to_usual(theta_1)
        half_dmu2 = 0.5 * (m0 - m1) ** 2
        ratio = (half_dmu2 + (s0 - s1) ** 2) / (half_dmu2 + (s0 + s1) ** 2)
        return 2.0 * jnp.sqrt(2.0) * jnp.arctanh(safe_sqrt(ratio))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        mean, std = self.to_usual(theta)
        return mean + std * jax.random.normal(key, shape, dtype=mean.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [mean, std]`` (std > 0)."""
        mean, std = as_usual(usual, 2)
        var = std**2
        return jnp.stack([mean / var, -0.5 / var])

    def to_usual(self, theta: PointLike) -> Point:
        """``[mean, std]`` from natural parameters, shape ``(2,)``."""
        theta = self.check_point(theta)
        var = -0.5 / theta[1]
        return jnp.stack([theta[0] * var, jnp.sqrt(var)])

    def _native_distribution(self, theta: Point, library: str) -> Any:
        mean, std = self.to_usual(theta)
        return native_distribution(library, "Normal", loc=mean, scale=std)
