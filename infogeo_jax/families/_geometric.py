"""The geometric family (failures before the first success)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_float, as_usual, check_mean


class Geometric(AbstractExponentialFamily):
    r"""Geometric distributions :math:`p(x) = (1-p)^x p`, :math:`x = 0, 1, \dots` (failures).

    Natural coordinates :math:`\theta = (\log(1-p))`, shape ``(1,)``, natural domain
    :math:`\theta < 0`; :math:`T(x) = (x)`, :math:`h = 1`, :math:`A(\theta) = -\log(1-e^\theta)`
    (computed as ``-log(-expm1(theta))``); mean :math:`\eta = (1-p)/p > 0`. Fisher information
    :math:`(1-p)/p^2` in theta and :math:`1/(p^2(1-p))` in p; Fisher-Rao distance
    :math:`2|\mathrm{artanh}\sqrt{1-p_1} - \mathrm{artanh}\sqrt{1-p_0}|`. The negative binomial
    family with one success.

    Example:
        >>> import jax.numpy as jnp
        >>> fam = Geometric()
        >>> theta = fam.from_usual(jnp.array([0.25]))
        >>> round(float(fam.fisher_information(theta)[0, 0]), 12)  # (1 - p) / p^2
        12.0
    """

    @property
    def dim(self) -> int:
        return 1

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return -jnp.log(-jnp.expm1(theta[0]))

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta) & (theta < 0))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta) & (eta > 0))

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.reshape(as_float(x), (1,))

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.zeros((), jnp.result_type(float))

    def mean_parameters(self, theta: PointLike) -> Point:
        theta = self.check_point(theta)
        return -jnp.exp(theta) / jnp.expm1(theta)

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form :math:`\theta = \log(\eta / (1 + \eta))` (Newton options ignored)."""
        eta = as_point(eta, 1, "eta")
        eta = check_mean(eta, self.in_mean_domain(eta), "Geometric", "eta > 0")
        return jnp.log(eta) - jnp.log1p(eta)

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return -jnp.ones_like(eta)

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed form :math:`2|\mathrm{artanh}\sqrt{1-p_1} - \mathrm{artanh}\sqrt{1-p_0}|`.

        From :math:`ds = dp / (p\sqrt{1-p})`.
        """
        q0 = jnp.exp(0.5 * self.check_point(theta_0)[0])  # sqrt(1 - p)
        q1 = jnp.exp(0.5 * self.check_point(theta_1)[0])
        return 2.0 * jnp.abs(jnp.arctanh(q1) - jnp.arctanh(q0))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        # Inversion: floor(log U / log(1 - p)), U uniform on (0, 1].
        u = jax.random.uniform(key, shape, dtype=theta.dtype, minval=0.0, maxval=1.0)
        return jnp.floor(jnp.log1p(-u) / theta[0])

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [p]``, the success probability in (0, 1)."""
        return jnp.log1p(-as_usual(usual, 1))

    def to_usual(self, theta: PointLike) -> Point:
        """``[p]``, the success probability, shape ``(1,)``."""
        return -jnp.expm1(self.check_point(theta))

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Geometric", probs=-jnp.expm1(theta[0]))
