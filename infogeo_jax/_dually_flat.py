r"""The flat connections of a dually flat (Hessian) manifold, as geodesic closed forms.

A potential :math:`A` strictly convex on a convex domain of affine coordinates :math:`\theta`
defines a dually flat structure: metric :math:`g = \nabla^2 A`, skewness
:math:`T = \nabla^3 A`, the e-connection (alpha = +1) flat in :math:`\theta` and the
m-connection (alpha = -1) flat in the dual coordinates :math:`\eta = \nabla A(\theta)`. So
the e- and m-geodesics are straight lines in :math:`\theta` and in :math:`\eta`, and the
e- and m-transports have closed forms. This base overrides the geodesic hooks of
:class:`AbstractStatisticalManifold` with them (Python ``alpha`` of +1 or -1; any other alpha,
or alpha given as an array, solves the geodesic ODE with the contracted symbols
:math:`\frac{1-\alpha}{2}g^{-1}\nabla^3 A(u, w, \cdot)`). Exponential families in natural
parameters are its subclasses (:math:`A` the log-partition).

References:
    Amari & Nagaoka, *Methods of Information Geometry* (2000), Sec. 3.3 (dually flat spaces)
    and Sec. 3.5 (dual coordinates); Amari (2016), Ch. 6.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._custom_types import Array, Point, Scalar, ScalarLike, Tangent
from ._manifold import AbstractStatisticalManifold
from ._misc import fail_or_nan, is_static_value, solve_metric

_LEFT_DOMAIN = (
    "exp_map/geodesic: the e-geodesic theta + t v leaves the natural domain of the family "
    "(the velocity is too large)."
)
_LEFT_MEAN_DOMAIN = (
    "exp_map/geodesic: the m-geodesic eta + t g v leaves the mean domain of the family "
    "(the velocity is too large)."
)


class AbstractDuallyFlatManifold(AbstractStatisticalManifold):
    """A statistical manifold in the affine coordinates of a convex potential ``A``.

    Subclasses supply the potential and the dual (Legendre) side; the geodesic closed forms
    follow.
    """

    @abc.abstractmethod
    def _raw_log_partition(self, theta: Point) -> Scalar:
        r"""The potential :math:`A(\theta)` at an unchecked point."""

    @abc.abstractmethod
    def in_mean_domain(self, eta: Point) -> Scalar:
        r"""Whether ``eta`` lies in the image of :math:`\nabla A` (boolean scalar)."""

    @abc.abstractmethod
    def natural_parameters(self, eta: Any, **solve_kwargs: Any) -> Point:
        r"""The Legendre inverse :math:`(\nabla A)^{-1}(\eta)`."""

    def _christoffel_contract(
        self, theta: Point, u: Tangent, w: Tangent, alpha: ScalarLike
    ) -> Tangent:
        r"""Contracted symbols :math:`\frac{1-\alpha}{2}g^{-1}D_uD_w\nabla A` (two JVPs).

        In natural coordinates the e-connection vanishes and the skewness tensor is the third
        derivative of A, so :math:`\Gamma^{(\alpha)k}_{ij}u^iw^j =
        \frac{1-\alpha}{2}g^{kl}\partial_i\partial_j\partial_l A\,u^iw^j`.
        """
        grad_a = jax.grad(self._raw_log_partition)

        def along_w(th):
            return jax.jvp(grad_a, (th,), (w,))[1]

        t_uw = jax.jvp(along_w, (theta,), (u,))[1]
        g = jax.hessian(self._raw_log_partition)(theta)
        return 0.5 * (1.0 - jnp.asarray(alpha, theta.dtype)) * solve_metric(g, t_uw)

    def _initial_velocities(
        self, theta_0: Point, theta_1: Point, alpha: ScalarLike, times: Array
    ) -> tuple[Array, Array]:
        r"""The Levi-Civita guess blended, linearly in alpha, with the flat velocities.

        The e-geodesic velocity :math:`\Delta = \theta_1 - \theta_0` is exact at alpha = +1 and
        the m-geodesic direction :math:`g^{-1}(\eta_1 - \eta_0)` at alpha = -1 (at
        :math:`\theta_0`).
        """
        velocities, metrics = super()._initial_velocities(theta_0, theta_1, alpha, times)
        if is_static_value(alpha, 0.0):
            return velocities, metrics
        grad_a = jax.grad(self._raw_log_partition)
        d_eta = grad_a(theta_1) - grad_a(theta_0)
        m_dir = jax.vmap(lambda g: solve_metric(g, d_eta))(metrics)
        a = jnp.clip(jnp.asarray(alpha, theta_0.dtype), -1.0, 1.0)
        w_e, w_m = jnp.maximum(a, 0.0), jnp.maximum(-a, 0.0)
        delta = theta_1 - theta_0
        velocities = (1.0 - w_e - w_m) * velocities + w_e * delta + w_m * m_dir
        return velocities, metrics

    def _m_flat_end(self, theta: Point, v: Tangent, t: ScalarLike, throw: bool) -> Point:
        r"""Natural parameters at :math:`\eta(\theta) + t g(\theta) v` (the m-geodesic)."""
        eta = jax.grad(self._raw_log_partition)(theta)
        g = jax.hessian(self._raw_log_partition)(theta)
        target = eta + t * (g @ v)
        ok = self.in_mean_domain(target)
        target = fail_or_nan(target, ok, throw, _LEFT_MEAN_DOMAIN)
        safe = jnp.where(ok, target, eta)
        x = self.natural_parameters(safe, throw=throw)
        return jnp.where(ok, x, jnp.nan)

    def _exp_map_closed_form(
        self, theta: Point, v: Tangent, alpha: ScalarLike, throw: bool
    ) -> Point:
        r"""The e-geodesic :math:`\theta + v` (alpha = +1), the m-geodesic (alpha = -1)."""
        if is_static_value(alpha, 1.0):
            x = theta + v
            return fail_or_nan(x, self.in_domain(x), throw, _LEFT_DOMAIN)
        if is_static_value(alpha, -1.0):
            return self._m_flat_end(theta, v, 1.0, throw)
        return NotImplemented

    def _geodesic_closed_form(
        self, theta: Point, v: Tangent, ts: Array, alpha: ScalarLike, throw: bool
    ) -> Array:
        """Straight lines in natural (alpha = +1) or expectation (alpha = -1) parameters."""
        if is_static_value(alpha, 1.0):
            x = theta + ts[:, None] * v
            return fail_or_nan(x, jnp.all(jax.vmap(self.in_domain)(x)), throw, _LEFT_DOMAIN)
        if is_static_value(alpha, -1.0):
            return jax.vmap(lambda t: self._m_flat_end(theta, v, t, throw))(ts)
        return NotImplemented

    def _log_map_closed_form(
        self, theta_0: Point, theta_1: Point, alpha: ScalarLike
    ) -> tuple[Tangent, Tangent]:
        r""":math:`\theta_1 - \theta_0` (alpha = +1); :math:`g^{-1}(\eta_1 - \eta_0)` (-1)."""
        if is_static_value(alpha, 1.0):
            v = theta_1 - theta_0
            return v, v
        if is_static_value(alpha, -1.0):
            grad_a = jax.grad(self._raw_log_partition)
            hess_a = jax.hessian(self._raw_log_partition)
            d_eta = grad_a(theta_1) - grad_a(theta_0)
            return solve_metric(hess_a(theta_0), d_eta), solve_metric(hess_a(theta_1), d_eta)
        return NotImplemented

    def _transport_closed_form(
        self,
        theta: Point,
        w: Tangent,
        end_point: Callable[[], Point],
        transport_alpha: ScalarLike,
    ) -> Tangent:
        r"""e-transport :math:`W(1) = w`; m-transport :math:`g(x(1))^{-1}g(\theta)w`."""
        if is_static_value(transport_alpha, 1.0):
            return w
        if is_static_value(transport_alpha, -1.0):
            metric = jax.hessian(self._raw_log_partition)
            return solve_metric(metric(end_point()), metric(theta) @ w)
        return NotImplemented
