"""The univariate normal family."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from .._misc import as_point, safe_sqrt
from ._common import as_usual


class Normal(AbstractExponentialFamily):
    r"""Univariate normal distributions :math:`N(\mu, \sigma^2)`.

    Natural coordinates :math:`\theta = (\mu/\sigma^2, -1/(2\sigma^2))`, shape ``(2,)``;
    :math:`T(x) = (x, x^2)`, :math:`\log h(x) = -\frac12\log 2\pi`,
    :math:`A(\theta) = -\frac{\theta_1^2}{4\theta_2} - \frac12\log(-2\theta_2)`.
    Natural domain :math:`\theta_2 < 0`; expectation parameters
    :math:`\eta = (\mu, \mu^2 + \sigma^2)`, mean domain :math:`\eta_2 > \eta_1^2`.
    In :math:`(\mu, \sigma)` the Fisher metric is :math:`\mathrm{diag}(1, 2)/\sigma^2`, a
    hyperbolic plane of scalar curvature -1.

    Example:
        >>> fam = Normal()
        >>> import jax.numpy as jnp
        >>> theta = fam.from_usual(jnp.array([0.0, 1.0]))  # mean 0, standard deviation 1
        >>> theta.tolist()  # (mu / sigma^2, -1 / (2 sigma^2))
        [0.0, -0.5]
        >>> fam.to_usual(theta).tolist()
        [0.0, 1.0]
    """

    @property
    def dim(self) -> int:
        return 2

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        t1, t2 = theta[0], theta[1]
        return -(t1**2) / (4.0 * t2) - 0.5 * jnp.log(-2.0 * t2)

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta)) & (theta[1] < 0)

    def in_mean_domain(self, eta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(eta)) & (eta[1] - eta[0] ** 2 > 0)

    def sufficient_statistic(self, x: Sample) -> Point:
        x = jnp.asarray(x, dtype=jnp.result_type(float))
        return jnp.stack([x, x**2])

    def log_base_measure(self, x: Sample) -> Scalar:
        return jnp.asarray(-0.5 * jnp.log(2.0 * jnp.pi), jnp.result_type(float))

    # closed-form overrides (checked against autodiff in the tests)
    def mean_parameters(self, theta: PointLike) -> Point:
        theta = self.check_point(theta)
        var = -0.5 / theta[1]
        mu = theta[0] * var
        return jnp.stack([mu, mu**2 + var])

    def natural_parameters(self, eta: PointLike, **kwargs) -> Point:
        r"""Closed form of the inverse of grad A (Newton options are accepted and ignored).

        :math:`\theta = (\eta_1/\sigma^2, -1/(2\sigma^2))`, :math:`\sigma^2 = \eta_2 - \eta_1^2`.
        """
        eta = as_point(eta, 2, "eta")
        eta = eqx.error_if(
            eta,
            ~self.in_mean_domain(eta),
            "eta is outside the normal mean domain (need eta[1] > eta[0]**2).",
        )
        var = eta[1] - eta[0] ** 2
        return jnp.stack([eta[0] / var, -0.5 / var])

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return jnp.array([0.0, -0.5], eta.dtype)

    def _closed_form_fit(self, data: Array, weights: Array) -> tuple[Point, Scalar] | None:
        # Two-pass centered moments: mean around the first sample, then the variance of the
        # deviations (with the rounding correction of the second pass).
        if data.ndim != 1:
            return None
        x = data.astype(jnp.result_type(data.dtype, float))
        w = weights.astype(x.dtype)
        mean = x[0] + w @ (x - x[0])
        dev = x - mean
        var = w @ (dev * dev) - (w @ dev) ** 2
        ok = jnp.isfinite(mean) & jnp.isfinite(var) & (var > 0)
        safe = jnp.where(ok, var, 1.0)
        return jnp.stack([mean / safe, -0.5 / safe]), ok

    def _sectional_curvature_closed_form(self, theta: Point) -> Scalar:
        # A hyperbolic plane: the Fisher metric in (mu, sigma) is diag(1, 2) / sigma^2.
        return jnp.asarray(-0.5, theta.dtype)

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        r"""Closed-form Fisher-Rao distance.

        .. math::
            d = 2\sqrt2\,\mathrm{artanh}\sqrt{\frac{(\mu_0-\mu_1)^2/2 + (\sigma_0-\sigma_1)^2}
            {(\mu_0-\mu_1)^2/2 + (\sigma_0+\sigma_1)^2}}
            = \sqrt2\,\mathrm{arccosh}\Big(1 + \frac{(\mu_0-\mu_1)^2/2 +
            (\sigma_0-\sigma_1)^2}{2\sigma_0\sigma_1}\Big),

        evaluated in the second (log1p) form, accurate to a few ulps for any pair (standard
        deviations 1e-150 and 1e150 included).

        References:
            Costa, Santos & Strapasson, *Fisher information distance: a geometrical reading*,
            Discrete Applied Mathematics 197 (2015), Eq. (7).
        """
        m0, s0 = self.to_usual(theta_0)
        m1, s1 = self.to_usual(theta_1)
        # d = sqrt2 arccosh(1 + w^2 / 2), w^2 = ((mu0 - mu1)^2 / 2 + (s0 - s1)^2) / (s0 s1):
        # the arccosh form with log1p has no cancellation near ratio 1 (far-apart sigmas), and
        # w is formed by hypot of scaled terms, so no square overflows or underflows.
        root = jnp.sqrt(s0) * jnp.sqrt(s1)
        w = jnp.hypot((m0 - m1) / (jnp.sqrt(2.0) * root), (s0 - s1) / root)
        big = w > 1e8
        safe_w = jnp.where(big, 1.0, w)
        z = 0.5 * safe_w**2
        near = jnp.log1p(z + safe_w * safe_sqrt(z + 2.0) / jnp.sqrt(2.0))
        far = 2.0 * jnp.log(jnp.where(big, w, 1.0))
        return jnp.sqrt(2.0) * jnp.where(big, far, near)

    def kl_divergence(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Closed form in the usual parameters, without cancellation.

        .. math::
            \mathrm{KL}(p\|q) = \tfrac12\big(e - \log(1 + e)\big)
            + \frac{(\mu_p - \mu_q)^2}{2\sigma_q^2}, \qquad
            e = \frac{\sigma_p^2}{\sigma_q^2} - 1 = \frac{\theta_{q,2} - \theta_{p,2}}
            {\theta_{p,2}},

        with :math:`e - \log(1+e)` by its series for :math:`|e| < 10^{-2}`; accurate to the
        rounding of the inputs for near and far pairs (Bishop 2006, Eq. (1.113) for the
        general formula).
        """
        p, q = self._prepare_pair(p, q)
        var_p, var_q = -0.5 / p[1], -0.5 / q[1]
        e = (q[1] - p[1]) / p[1]
        small = jnp.abs(e) < 1e-2
        safe = jnp.where(small, 0.5, e)
        direct = safe - jnp.log1p(safe)
        series = e * e * (0.5 + e * (-1 / 3 + e * (1 / 4 + e * (-1 / 5 + e * (1 / 6 - e / 7)))))
        shape_part = 0.5 * jnp.where(small, series, direct)
        # mu_p - mu_q = (t_p1 - t_q1) v_p + t_q1 (v_p - v_q), with
        # v_p - v_q = (t_p2 - t_q2) / (2 t_p2 t_q2): differences of inputs, no cancellation.
        d_mean = (p[0] - q[0]) * var_p + q[0] * (p[1] - q[1]) / (2.0 * p[1] * q[1])
        return shape_part + 0.5 * d_mean**2 / var_q

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        mean, std = self.to_usual(theta)
        return mean + std * jax.random.normal(key, shape, dtype=mean.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [mean, std]`` (std > 0)."""
        mean, std = as_usual(usual, 2)
        var = std**2
        return jnp.stack([mean / var, -0.5 / var])

    def to_usual(self, theta: PointLike) -> Point:
        """``[mean, std]`` from natural parameters, shape ``(2,)``."""
        theta = self.check_point(theta)
        var = -0.5 / theta[1]
        return jnp.stack([theta[0] * var, jnp.sqrt(var)])

    def _native_distribution(self, theta: Point, library: str) -> Any:
        mean, std = self.to_usual(theta)
        return native_distribution(library, "Normal", loc=mean, scale=std)
