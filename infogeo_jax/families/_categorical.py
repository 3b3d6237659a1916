"""The categorical family on k classes."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Metric, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point
from ._common import as_usual, check_mean, sphere_distance


class Categorical(AbstractExponentialFamily):
    r"""Categorical distributions on classes :math:`\{0, \dots, k-1\}` with probabilities p.

    Natural coordinates: the k-1 logits against the last class,
    :math:`\theta_i = \log(p_i / p_{k-1})`, shape ``(k-1,)``; :math:`T(x)_i = [x = i]` for
    ``i < k-1``; :math:`h = 1`; :math:`A(\theta) = \log(1 + \sum_i e^{\theta_i})` (a
    ``logsumexp``). Expectation parameters :math:`\eta = (p_0, \dots, p_{k-2})`, mean domain
    :math:`\eta_i > 0`, :math:`\sum_i \eta_i < 1`. The Fisher metric is that of a sphere of
    radius 2 (through :math:`p \mapsto 2\sqrt{p}`); Fisher-Rao distance
    :math:`2\arccos\sum_i\sqrt{p_i q_i}`.

    Args:
        num_classes: k >= 2 (static).
    """

    num_classes: int = eqx.field(static=True)

    def __init__(self, num_classes: int):
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes}.")
        self.num_classes = int(num_classes)

    @property
    def dim(self) -> int:
        return self.num_classes - 1

    def _full_logits(self, theta: Point) -> Array:
        return jnp.concatenate([theta, jnp.zeros((1,), theta.dtype)])

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return jax.nn.logsumexp(self._full_logits(theta))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta) & (eta > 0)) & (jnp.sum(eta) < 1)

    def sufficient_statistic(self, x: Sample) -> Point:
        """One-hot encoding of the class label ``x`` without the last class."""
        x = jnp.asarray(x)
        return (jnp.arange(self.num_classes - 1) == x).astype(jnp.result_type(float))

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.zeros((), jnp.result_type(float))

    def probabilities(self, theta: PointLike) -> Array:
        """All k class probabilities, shape ``(k,)``."""
        return jax.nn.softmax(self._full_logits(self.check_point(theta)))

    def mean_parameters(self, theta: PointLike) -> Point:
        return self.probabilities(theta)[:-1]

    def _fisher_information_closed_form(self, theta: Point) -> Metric:
        r"""Closed form :math:`g_{ij} = p_i(\delta_{ij} - p_j)`, i, j < k - 1.

        The diagonal is :math:`p_i (1 - p_i)` with :math:`1 - p_i` summed over the other
        classes in log space, accurate for extreme logits (no cancellation near p = 1).
        """
        theta = self.check_point(theta)
        logits = self._full_logits(theta)
        log_p = jax.nn.log_softmax(logits)
        p = jnp.exp(log_p)[:-1]
        d = self.dim
        others = jnp.where(jnp.eye(d, self.num_classes, dtype=bool), -jnp.inf, logits[None, :])
        log_rest = jax.nn.logsumexp(others, axis=1) - jax.nn.logsumexp(logits)
        g = -jnp.outer(p, p)
        diagonal = jnp.exp(log_p[:-1] + log_rest)
        return g.at[jnp.arange(d), jnp.arange(d)].set(diagonal)

    def _sectional_curvature_closed_form(self, theta: Point) -> Scalar:
        # p -> 2 sqrt(p) maps the simplex onto a sphere of radius 2: K = 1 / 4.
        return jnp.asarray(0.25, theta.dtype)

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form :math:`\theta_i = \log\eta_i - \log(1 - \sum_j\eta_j)`."""
        eta = as_point(eta, self.dim, "eta")
        eta = check_mean(eta, self.in_mean_domain(eta), "Categorical", "eta > 0 and sum(eta) < 1")
        return jnp.log(eta) - jnp.log1p(-jnp.sum(eta))

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed-form Fisher-Rao distance :math:`2\arccos\sum_i\sqrt{p_i q_i}`.

        References:
            Rao (1945); Amari & Nagaoka (2000), Sec. 2.5 (the simplex as a sphere of radius 2).
        """
        log_p = jax.nn.log_softmax(self._full_logits(self.check_point(theta_0)))
        log_q = jax.nn.log_softmax(self._full_logits(self.check_point(theta_1)))
        return sphere_distance(jnp.exp(0.5 * log_p), jnp.exp(0.5 * log_q))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Class labels (integers) with leading axes ``shape``."""
        theta = self.check_point(theta)
        return jax.random.categorical(key, self._full_logits(theta), shape=shape)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from the k class probabilities (positive, summing to one).

        The k probabilities are one more number than the k-1 coordinates; the first k-1 of
        them (the expectation parameters) form a chart.
        """
        p = as_usual(usual, self.num_classes)
        return jnp.log(p[:-1]) - jnp.log(p[-1])

    def to_usual(self, theta: PointLike) -> Point:
        """The k class probabilities, shape ``(k,)``."""
        return self.probabilities(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Categorical", logits=self._full_logits(theta))
