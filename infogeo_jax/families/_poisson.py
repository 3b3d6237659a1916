"""The Poisson family."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_float, as_usual, check_mean


def _log_max(dtype) -> float:
    """Largest theta with exp(theta) finite in ``dtype``."""
    return float(np.log(np.finfo(dtype).max))


class Poisson(AbstractExponentialFamily):
    r"""Poisson distributions :math:`p(x) = \lambda^x e^{-\lambda} / x!`, :math:`x = 0, 1, \dots`.

    Natural coordinates :math:`\theta = (\log\lambda)`, shape ``(1,)``; :math:`T(x) = (x)`,
    :math:`\log h(x) = -\log x!`, :math:`A(\theta) = e^\theta`. Natural domain R; mean domain
    :math:`\eta = \lambda > 0`. Fisher information :math:`\lambda` in theta, :math:`1/\lambda` in
    lambda; Fisher-Rao distance :math:`2|\sqrt{\lambda_1} - \sqrt{\lambda_0}|`.
    """

    @property
    def dim(self) -> int:
        return 1

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return jnp.exp(theta[0])

    def in_domain(self, theta: Point) -> Scalar:
        # The natural domain is all of R; exp(theta) must also stay below the float range.
        return jnp.all(jnp.isfinite(theta)) & jnp.all(theta < _log_max(theta.dtype))

    def _check_in_domain(self, theta: Point, name: str) -> Point:
        finite = jnp.all(jnp.isfinite(theta))
        limit = _log_max(theta.dtype)
        messages = [
            f"{name} is outside the parameter domain of Poisson ({name} must be finite).",
            f"{name}: exp({name}) overflows {jnp.dtype(theta.dtype).name} (the rate exceeds the "
            f"largest float, {name} > {limit:.2f}); the natural domain is all of R, but the "
            "rate and every quantity of this family are exp(theta).",
        ]
        bad = ~self.in_domain(theta)
        return eqx.branched_error_if(theta, bad, jnp.where(finite, 1, 0), messages)

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta) & (eta > 0))

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.reshape(as_float(x), (1,))

    def log_base_measure(self, x: Sample) -> Scalar:
        return -jax.scipy.special.gammaln(as_float(x) + 1.0)

    def mean_parameters(self, theta: PointLike) -> Point:
        return jnp.exp(self.check_point(theta))

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form :math:`\theta = \log\eta` (Newton options are accepted and ignored)."""
        eta = as_point(eta, 1, "eta")
        return jnp.log(check_mean(eta, self.in_mean_domain(eta), "Poisson", "eta > 0"))

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed-form Fisher-Rao distance :math:`2|\sqrt{\lambda_1} - \sqrt{\lambda_0}|`."""
        theta_0 = self.check_point(theta_0)
        theta_1 = self.check_point(theta_1)
        return 2.0 * jnp.abs(jnp.exp(0.5 * theta_1[0]) - jnp.exp(0.5 * theta_0[0]))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        return jax.random.poisson(key, jnp.exp(theta[0]), shape).astype(theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        r"""Natural parameters from ``usual = [rate]``, the mean :math:`\lambda > 0`."""
        return jnp.log(as_usual(usual, 1))

    def to_usual(self, theta: PointLike) -> Point:
        r"""``[rate]``, shape ``(1,)``."""
        return jnp.exp(self.check_point(theta))

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Poisson", rate=jnp.exp(theta[0]))
