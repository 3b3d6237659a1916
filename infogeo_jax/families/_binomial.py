"""The binomial family with a fixed number of trials."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Metric, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_float, as_usual, check_mean, logit_distance


class Binomial(AbstractExponentialFamily):
    r"""Binomial distributions with ``num_trials`` = n fixed: :math:`\binom{n}{x}p^x(1-p)^{n-x}`.

    Natural coordinates :math:`\theta = (\log\frac{p}{1-p})`, shape ``(1,)``; :math:`T(x) = (x)`,
    :math:`\log h(x) = \log\binom{n}{x}`, :math:`A(\theta) = n\log(1 + e^\theta)`. Mean domain
    :math:`0 < \eta = np < n`. Fisher information :math:`np(1-p)` in theta; Fisher-Rao distance
    :math:`2\sqrt{n}\arccos(\sqrt{p_0p_1} + \sqrt{(1-p_0)(1-p_1)})`. ``num_trials = 1`` is the
    Bernoulli family.

    Args:
        num_trials: the number of trials n >= 1 (static).
    """

    num_trials: int = eqx.field(static=True)

    def __init__(self, num_trials: int):
        if int(num_trials) != num_trials or num_trials < 1:
            raise ValueError(f"`num_trials` must be a positive integer, got {num_trials}.")
        self.num_trials = int(num_trials)

    @property
    def dim(self) -> int:
        return 1

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return self.num_trials * jnp.logaddexp(0.0, theta[0])

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all((eta > 0) & (eta < self.num_trials))

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.reshape(as_float(x), (1,))

    def log_base_measure(self, x: Sample) -> Scalar:
        x = as_float(x)
        n = self.num_trials
        gammaln = jax.scipy.special.gammaln
        return gammaln(n + 1.0) - gammaln(x + 1.0) - gammaln(n - x + 1.0)

    def mean_parameters(self, theta: PointLike) -> Point:
        return self.num_trials * jax.nn.sigmoid(self.check_point(theta))

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        """Closed form: the logit of eta / n (Newton options are accepted and ignored)."""
        eta = as_point(eta, 1, "eta")
        eta = check_mean(eta, self.in_mean_domain(eta), "Binomial", "0 < eta < num_trials")
        p = eta / self.num_trials
        return jnp.log(p) - jnp.log1p(-p)

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed form :math:`2\sqrt{n}\arccos(\sqrt{p_0p_1} + \sqrt{(1-p_0)(1-p_1)})`."""
        t0, t1 = self.check_point(theta_0)[0], self.check_point(theta_1)[0]
        return jnp.sqrt(float(self.num_trials)) * logit_distance(t0, t1)

    def _fisher_information_closed_form(self, theta: Point) -> Metric:
        # n sigmoid(t) sigmoid(-t): accurate for logits of any size.
        t = self.check_point(theta)[0]
        return jnp.reshape(self.num_trials * jax.nn.sigmoid(t) * jax.nn.sigmoid(-t), (1, 1))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        p = jax.nn.sigmoid(theta[0])
        return jax.random.binomial(key, self.num_trials, p, shape).astype(theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [p]``, the success probability in (0, 1)."""
        p = as_usual(usual, 1)
        return jnp.log(p) - jnp.log1p(-p)

    def to_usual(self, theta: PointLike) -> Point:
        """``[p]``, the success probability, shape ``(1,)``."""
        return jax.nn.sigmoid(self.check_point(theta))

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(
            library, "Binomial", total_count=self.num_trials, logits=theta[0]
        )
