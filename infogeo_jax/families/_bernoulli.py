"""The Bernoulli family in logit coordinates."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._custom_types import (
    Array,
    Metric,
    Point,
    PointLike,
    PRNGKeyArray,
    Sample,
    Scalar,
    Tensor3,
)
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_usual, check_mean, logit_distance


class Bernoulli(AbstractExponentialFamily):
    r"""Bernoulli distributions :math:`p(x) = \mu^x (1-\mu)^{1-x}`, :math:`x \in \{0, 1\}`.

    Natural coordinates: :math:`\theta = (\log\frac{\mu}{1-\mu})` (the logit), shape ``(1,)``;
    :math:`T(x) = (x)`, :math:`h(x) = 1`, :math:`A(\theta) = \log(1 + e^\theta)` (computed as
    ``logaddexp(0, theta)``). Natural domain: all of R; mean domain: (0, 1).
    Fisher information :math:`\mu(1-\mu)` in theta, :math:`1/(\mu(1-\mu))` in mu.

    Example:
        >>> import jax.numpy as jnp
        >>> fam = Bernoulli()
        >>> theta = fam.from_usual(jnp.array([0.25]))
        >>> round(float(fam.fisher_information(theta)[0, 0]), 12)  # 0.25 * 0.75
        0.1875
    """

    @property
    def dim(self) -> int:
        return 1

    def log_partition(self, theta: PointLike) -> Scalar:
        theta = self.check_point(theta)
        return self._raw_log_partition(theta)

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return jnp.logaddexp(0.0, theta[0])

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.reshape(jnp.asarray(x, dtype=jnp.result_type(float)), (1,))

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.zeros((), jnp.result_type(float))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all((eta > 0) & (eta < 1))

    # closed-form overrides (checked against autodiff in the tests)
    def _fisher_information_closed_form(self, theta: Point) -> Metric:
        # sigmoid(t) sigmoid(-t), not mu (1 - mu): accurate for logits of any size.
        theta = self.check_point(theta)
        return jnp.reshape(jax.nn.sigmoid(theta[0]) * jax.nn.sigmoid(-theta[0]), (1, 1))

    def skewness_tensor(self, theta: PointLike) -> Tensor3:
        # mu (1 - mu) (1 - 2 mu) = sigmoid(t) sigmoid(-t) tanh(-t / 2), no cancellation.
        theta = self.check_point(theta)
        t = theta[0]
        value = jax.nn.sigmoid(t) * jax.nn.sigmoid(-t) * jnp.tanh(-0.5 * t)
        return jnp.reshape(value, (1, 1, 1))

    def mean_parameters(self, theta: PointLike) -> Point:
        return jax.nn.sigmoid(self.check_point(theta))

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        """Closed form: the logit of eta (the Newton options are accepted and ignored)."""
        eta = as_point(eta, 1, "eta")
        eta = self._check_mean(eta)
        return jnp.log(eta) - jnp.log1p(-eta)

    def _check_mean(self, eta: Point) -> Point:
        return check_mean(eta, self.in_mean_domain(eta), "Bernoulli", "0 < eta < 1")

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed-form Fisher-Rao distance.

        :math:`2\arccos(\sqrt{p_0 p_1} + \sqrt{(1-p_0)(1-p_1)})` (Rao 1945), evaluated as
        :math:`2|\arctan e^{\theta_1/2} - \arctan e^{\theta_0/2}|` in log space, accurate to
        a few ulps relative for logits of any size.
        """
        return logit_distance(self.check_point(theta_0)[0], self.check_point(theta_1)[0])

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        return jax.random.bernoulli(key, jax.nn.sigmoid(theta[0]), shape).astype(theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [p]``, the success probability in (0, 1)."""
        return self.natural_parameters(as_usual(usual, 1))

    def to_usual(self, theta: PointLike) -> Point:
        """``[p]``, the success probability, shape ``(1,)``."""
        return self.mean_parameters(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Bernoulli", logits=theta[0])
