"""The multinomial family: counts of n trials over k classes."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_float, as_usual, check_mean, sphere_distance


class Multinomial(AbstractExponentialFamily):
    r"""Multinomial distributions of n trials over k classes with probabilities p.

    :math:`p(x) = \frac{n!}{\prod_i x_i!}\prod_i p_i^{x_i}` for count vectors x of shape
    ``(k,)`` summing to n. Natural coordinates: the k-1 logits against the last class,
    :math:`\theta_i = \log(p_i/p_{k-1})`, shape ``(k-1,)``; :math:`T(x) = (x_0, \dots,
    x_{k-2})`, :math:`\log h(x) = \log n! - \sum_i\log x_i!`,
    :math:`A(\theta) = n\log(1 + \sum_i e^{\theta_i})`. Expectation parameters
    :math:`\eta = n (p_0, \dots, p_{k-2})`; Fisher information
    :math:`n(\mathrm{diag}(p) - pp^\top)` on the first k-1 classes: n times the categorical
    metric, a sphere of radius :math:`2\sqrt n`, with Fisher-Rao distance
    :math:`2\sqrt n\arccos\sum_i\sqrt{p_iq_i}`. ``num_trials = 1`` is the categorical family
    (with one-hot outcomes).

    Args:
        num_trials: n >= 1 (static).
        num_classes: k >= 2 (static).

    Example:
        >>> import jax.numpy as jnp
        >>> fam = Multinomial(10, 3)
        >>> theta = fam.from_usual(jnp.array([0.2, 0.3, 0.5]))
        >>> bool(jnp.allclose(fam.mean_parameters(theta), jnp.array([2.0, 3.0])))
        True
    """

    num_trials: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)

    def __init__(self, num_trials: int, num_classes: int):
        if int(num_trials) != num_trials or num_trials < 1:
            raise ValueError(f"`num_trials` must be a positive integer, got {num_trials}.")
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes}.")
        self.num_trials = int(num_trials)
        self.num_classes = int(num_classes)

    @property
    def dim(self) -> int:
        return self.num_classes - 1

    def _full_logits(self, theta: Point) -> Array:
        return jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return self.num_trials * jax.nn.logsumexp(self._full_logits(theta))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta) & (eta > 0)) & (jnp.sum(eta) < self.num_trials)

    def sufficient_statistic(self, x: Sample) -> Point:
        """The first k-1 counts of the count vector ``x`` (shape ``(k,)``)."""
        x = as_float(x)
        if x.shape != (self.num_classes,):
            raise ValueError(f"`x` must be a count vector of shape ({self.num_classes},).")
        return x[:-1]

    def log_base_measure(self, x: Sample) -> Scalar:
        x = as_float(x)
        gammaln = jax.scipy.special.gammaln
        return gammaln(self.num_trials + 1.0) - jnp.sum(gammaln(x + 1.0))

    def probabilities(self, theta: PointLike) -> Array:
        """All k class probabilities, shape ``(k,)``."""
        return jax.nn.softmax(self._full_logits(self.check_point(theta)))

    def mean_parameters(self, theta: PointLike) -> Point:
        return self.num_trials * self.probabilities(theta)[:-1]

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form :math:`\theta_i = \log\eta_i - \log(n - \sum_j\eta_j)`."""
        eta = as_point(eta, self.dim, "eta")
        eta = check_mean(
            eta, self.in_mean_domain(eta), "Multinomial", "eta > 0 and sum(eta) < num_trials"
        )
        return jnp.log(eta) - jnp.log(self.num_trials - jnp.sum(eta))

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return jnp.zeros_like(eta)

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed form :math:`2\sqrt n\arccos\sum_i\sqrt{p_iq_i}`."""
        log_p = jax.nn.log_softmax(self._full_logits(self.check_point(theta_0)))
        log_q = jax.nn.log_softmax(self._full_logits(self.check_point(theta_1)))
        chord = sphere_distance(jnp.exp(0.5 * log_p), jnp.exp(0.5 * log_q))
        return jnp.sqrt(float(self.num_trials)) * chord

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Count vectors of shape ``shape + (k,)``."""
        p = self.probabilities(theta)
        return jax.random.multinomial(
            key, float(self.num_trials), p, shape=tuple(shape) + (self.num_classes,), dtype=p.dtype
        )

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from the k class probabilities (positive, summing to one)."""
        p = as_usual(usual, self.num_classes)
        return jnp.log(p[:-1]) - jnp.log(p[-1])

    def to_usual(self, theta: PointLike) -> Point:
        """The k class probabilities, shape ``(k,)``."""
        return self.probabilities(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(
            library, "Multinomial", total_count=self.num_trials, logits=self._full_logits(theta)
        )
