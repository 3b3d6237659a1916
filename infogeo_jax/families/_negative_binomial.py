"""The negative binomial family with a fixed number of successes."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_float, as_usual, check_mean


class NegativeBinomial(AbstractExponentialFamily):
    r"""Negative binomial: failures x before the r-th success, success probability p.

    :math:`p(x) = \binom{x + r - 1}{x} (1-p)^x p^r`, :math:`x = 0, 1, \dots`, with r fixed
    (``r = 1`` is the geometric distribution). Natural coordinates :math:`\theta = (\log(1-p))`,
    shape ``(1,)``, domain :math:`\theta < 0`; :math:`T(x) = (x)`,
    :math:`\log h(x) = \log\binom{x+r-1}{x}`, :math:`A(\theta) = -r\log(1 - e^\theta)`; mean
    :math:`\eta = r(1-p)/p > 0`. Fisher information :math:`r(1-p)/p^2` in theta.

    Args:
        num_successes: r > 0 (static; need not be an integer).
    """

    num_successes: float = eqx.field(static=True)

    def __init__(self, num_successes: float):
        if not num_successes > 0:
            raise ValueError(f"`num_successes` must be positive, got {num_successes}.")
        self.num_successes = float(num_successes)

    @property
    def dim(self) -> int:
        return 1

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return -self.num_successes * jnp.log(-jnp.expm1(theta[0]))

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta) & (theta < 0))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta) & (eta > 0))

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.reshape(as_float(x), (1,))

    def log_base_measure(self, x: Sample) -> Scalar:
        x = as_float(x)
        r = self.num_successes
        gammaln = jax.scipy.special.gammaln
        return gammaln(x + r) - gammaln(x + 1.0) - gammaln(r)

    def mean_parameters(self, theta: PointLike) -> Point:
        theta = self.check_point(theta)
        return -self.num_successes * jnp.exp(theta) / jnp.expm1(theta)

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form :math:`\theta = \log(\eta / (r + \eta))` (Newton options ignored)."""
        eta = as_point(eta, 1, "eta")
        eta = check_mean(eta, self.in_mean_domain(eta), "NegativeBinomial", "eta > 0")
        return jnp.log(eta) - jnp.log(self.num_successes + eta)

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return -jnp.ones_like(eta)

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        # Gamma-Poisson mixture: lambda ~ Gamma(r, rate p / (1 - p)), x ~ Poisson(lambda).
        key_gamma, key_poisson = jax.random.split(key)
        odds = jnp.exp(theta[0]) / -jnp.expm1(theta[0])  # (1 - p) / p
        lam = jax.random.gamma(key_gamma, self.num_successes, shape, dtype=theta.dtype) * odds
        return jax.random.poisson(key_poisson, lam, shape).astype(theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [p]``, the success probability in (0, 1)."""
        return jnp.log1p(-as_usual(usual, 1))

    def to_usual(self, theta: PointLike) -> Point:
        """``[p]``, the success probability, shape ``(1,)``."""
        return -jnp.expm1(self.check_point(theta))
