"""The exponential family of exponential distributions."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_float, as_usual, check_mean


class Exponential(AbstractExponentialFamily):
    r"""Exponential distributions :math:`p(x) = \lambda e^{-\lambda x}`, :math:`x \ge 0`.

    Natural coordinates :math:`\theta = (-\lambda)`, shape ``(1,)``; :math:`T(x) = (x)`,
    :math:`h(x) = 1`, :math:`A(\theta) = -\log(-\theta)`. Natural domain :math:`\theta < 0`;
    mean domain :math:`\eta = 1/\lambda > 0`. Fisher information :math:`1/\theta^2 = 1/\lambda^2`;
    Fisher-Rao distance :math:`|\log(\lambda_1/\lambda_0)|`.
    """

    @property
    def dim(self) -> int:
        return 1

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return -jnp.log(-theta[0])

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta) & (theta < 0))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta) & (eta > 0))

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.reshape(as_float(x), (1,))

    def log_base_measure(self, x: Sample) -> Scalar:
        x = as_float(x)
        return jnp.where(x >= 0, 0.0, -jnp.inf).astype(x.dtype)

    def mean_parameters(self, theta: PointLike) -> Point:
        return -1.0 / self.check_point(theta)

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form :math:`\theta = -1/\eta` (Newton options are accepted and ignored)."""
        eta = as_point(eta, 1, "eta")
        return -1.0 / check_mean(eta, self.in_mean_domain(eta), "Exponential", "eta > 0")

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed-form Fisher-Rao distance :math:`|\log(\lambda_1 / \lambda_0)|`."""
        theta_0 = self.check_point(theta_0)
        theta_1 = self.check_point(theta_1)
        return jnp.abs(jnp.log(theta_1[0] / theta_0[0]))

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return -jnp.ones_like(eta)

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        return jax.random.exponential(key, shape, dtype=theta.dtype) / (-theta[0])

    def from_usual(self, usual: PointLike) -> Point:
        r"""Natural parameters from ``usual = [rate]``, :math:`\lambda > 0`."""
        return -as_usual(usual, 1)

    def to_usual(self, theta: PointLike) -> Point:
        r"""``[rate]``, shape ``(1,)``."""
        return -self.check_point(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Exponential", rate=-theta[0])
