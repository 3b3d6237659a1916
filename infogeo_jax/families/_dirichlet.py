"""The Dirichlet family on the (k-1)-simplex, and its k = 2 case, the Beta family."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from ._common import as_float, as_usual, dirichlet_initial


def _log_beta(alpha: Array) -> Array:
    gammaln = jax.scipy.special.gammaln
    return jnp.sum(gammaln(alpha)) - gammaln(jnp.sum(alpha))


def _dirichlet_mean(alpha: Array) -> Array:
    digamma = jax.scipy.special.digamma
    return digamma(alpha) - digamma(jnp.sum(alpha))


def _dirichlet_in_mean_domain(eta: Array) -> Array:
    # E[log x_i] < log E[x_i] (Jensen) and sum E[x_i] = 1  =>  sum exp(eta_i) < 1.
    return jnp.all(jnp.isfinite(eta) & (eta < 0)) & (jnp.sum(jnp.exp(eta)) < 1)


class Dirichlet(AbstractExponentialFamily):
    r"""Dirichlet distributions on the simplex, :math:`p(x) \propto \prod_i x_i^{\alpha_i - 1}`.

    Natural coordinates :math:`\theta = \alpha` (the concentrations), shape ``(k,)``;
    :math:`T(x) = (\log x_1, \dots, \log x_k)`, :math:`\log h(x) = -\sum_i \log x_i` (with
    respect to Lebesgue measure on the first k-1 coordinates), :math:`A(\alpha) = \sum_i
    \log\Gamma(\alpha_i) - \log\Gamma(\sum_i\alpha_i)`. Natural domain :math:`\alpha_i > 0`;
    expectation parameters :math:`\eta_i = \psi(\alpha_i) - \psi(\alpha_0)`; mean domain
    :math:`\sum_i e^{\eta_i} < 1`. The inverse of grad A has no closed form: Newton starts from
    Minka's fixed point (*Estimating a Dirichlet distribution*, 2000). These are also the
    coordinates of geomstats' ``DirichletDistributions``.

    Args:
        num_categories: k >= 2 (static).
    """

    num_categories: int = eqx.field(static=True)

    def __init__(self, num_categories: int):
        if int(num_categories) != num_categories or num_categories < 2:
            raise ValueError(f"`num_categories` must be an integer >= 2, got {num_categories}.")
        self.num_categories = int(num_categories)

    @property
    def dim(self) -> int:
        return self.num_categories

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return _log_beta(theta)

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta) & (theta > 0))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return _dirichlet_in_mean_domain(eta)

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.log(as_float(x))

    def log_base_measure(self, x: Sample) -> Scalar:
        return -jnp.sum(jnp.log(as_float(x)))

    def mean_parameters(self, theta: PointLike) -> Point:
        return _dirichlet_mean(self.check_point(theta))

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return dirichlet_initial(eta)

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Points of the simplex, shape ``shape + (k,)``."""
        theta = self.check_point(theta)
        return jax.random.dirichlet(key, theta, shape, dtype=theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from the k concentrations (they coincide)."""
        return as_usual(usual, self.num_categories)

    def to_usual(self, theta: PointLike) -> Point:
        """The k concentrations alpha, shape ``(k,)``."""
        return self.check_point(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Dirichlet", concentration=theta)


class Beta(AbstractExponentialFamily):
    r"""Beta distributions :math:`p(x) = x^{a-1}(1-x)^{b-1} / B(a, b)`, 0 < x < 1.

    Natural coordinates :math:`\theta = (a, b)`, shape ``(2,)``;
    :math:`T(x) = (\log x, \log(1-x))`, :math:`\log h(x) = -\log x - \log(1-x)`,
    :math:`A(\theta) = \log\Gamma(a) + \log\Gamma(b) - \log\Gamma(a+b)`. Natural domain
    a, b > 0; :math:`\eta = (\psi(a) - \psi(a+b), \psi(b) - \psi(a+b))`, mean domain
    :math:`e^{\eta_1} + e^{\eta_2} < 1`. The Dirichlet family with k = 2 with x a scalar; the
    coordinates of geomstats' ``BetaDistributions``.
    """

    @property
    def dim(self) -> int:
        return 2

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return _log_beta(theta)

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta) & (theta > 0))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return _dirichlet_in_mean_domain(eta)

    def sufficient_statistic(self, x: Sample) -> Point:
        x = as_float(x)
        return jnp.stack([jnp.log(x), jnp.log1p(-x)])

    def log_base_measure(self, x: Sample) -> Scalar:
        x = as_float(x)
        return -jnp.log(x) - jnp.log1p(-x)

    def mean_parameters(self, theta: PointLike) -> Point:
        return _dirichlet_mean(self.check_point(theta))

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return dirichlet_initial(eta)

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        return jax.random.beta(key, theta[0], theta[1], shape, dtype=theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [a, b]``, the shapes a, b > 0 (they coincide)."""
        return as_usual(usual, 2)

    def to_usual(self, theta: PointLike) -> Point:
        """``[a, b]``, shape ``(2,)``."""
        return self.check_point(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(
            library, "Beta", concentration1=theta[0], concentration0=theta[1]
        )
