"""The gamma family (shape and rate)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from ._common import as_float, as_usual, polygamma_remainders


class Gamma(AbstractExponentialFamily):
    r"""Gamma distributions :math:`p(x) = \frac{\beta^k}{\Gamma(k)} x^{k-1} e^{-\beta x}`, x > 0.

    Natural coordinates :math:`\theta = (k, -\beta)` (shape, minus rate), shape ``(2,)``;
    :math:`T(x) = (\log x, x)`, :math:`\log h(x) = -\log x`,
    :math:`A(\theta) = \log\Gamma(\theta_1) - \theta_1\log(-\theta_2)`. Natural domain
    :math:`\theta_1 > 0, \theta_2 < 0`; expectation parameters
    :math:`\eta = (\psi(k) - \log\beta, k/\beta)`, mean domain :math:`\eta_2 > 0`,
    :math:`\eta_1 < \log\eta_2` (Jensen). The inverse of grad A has no closed form: Newton starts
    from Minka's approximation :math:`k \approx (3 - s + \sqrt{(s-3)^2 + 24s})/(12s)`,
    :math:`s = \log\eta_2 - \eta_1` (Minka, *Estimating a Gamma distribution*, 2002).
    The scalar curvature is :math:`(\psi_1 + k\psi_2) / (2 (k\psi_1 - 1)^2)` (Amari 1985), computed
    from polygamma remainders without cancellation (it tends to -1 as :math:`k \to \infty`).
    """

    @property
    def dim(self) -> int:
        return 2

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return jax.scipy.special.gammaln(theta[0]) - theta[0] * jnp.log(-theta[1])

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta)) & (theta[0] > 0) & (theta[1] < 0)

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta)) & (eta[1] > 0) & (eta[0] < jnp.log(eta[1]))

    def sufficient_statistic(self, x: Sample) -> Point:
        x = as_float(x)
        return jnp.stack([jnp.log(x), x])

    def log_base_measure(self, x: Sample) -> Scalar:
        return -jnp.log(as_float(x))

    def mean_parameters(self, theta: PointLike) -> Point:
        theta = self.check_point(theta)
        k, rate = theta[0], -theta[1]
        return jnp.stack([jax.scipy.special.digamma(k) - jnp.log(rate), k / rate])

    def _sectional_curvature_closed_form(self, theta: Point) -> Scalar:
        # K = (psi1 + k psi2) / (4 (k psi1 - 1)^2) with psi1 = 1/k + u, psi2 = -1/k^2 + v:
        # k psi1 - 1 = k u and psi1 + k psi2 = u + k v, so with the scaled remainders
        # uh = k^2 u, vh = k^3 v: K = (uh + vh) / (4 uh^2), no cancellation at large shape.
        uh, vh = polygamma_remainders(theta[0])
        return (uh + vh) / (4.0 * uh**2)

    def _initial_natural_parameters(self, eta: Point) -> Point:
        s = jnp.log(eta[1]) - eta[0]
        k = (3.0 - s + jnp.sqrt((s - 3.0) ** 2 + 24.0 * s)) / (12.0 * s)
        return jnp.stack([k, -k / eta[1]])

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        return jax.random.gamma(key, theta[0], shape, dtype=theta.dtype) / (-theta[1])

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [shape, rate]`` (k > 0, beta > 0)."""
        usual = as_usual(usual, 2)
        return usual * jnp.array([1.0, -1.0], usual.dtype)

    def to_usual(self, theta: PointLike) -> Point:
        """``[shape, rate]``, shape ``(2,)``."""
        theta = self.check_point(theta)
        return theta * jnp.array([1.0, -1.0], theta.dtype)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Gamma", concentration=theta[0], rate=-theta[1])
