r"""Exponential families from their log-partition function alone.

An exponential family has densities

.. math::
    p(x \mid \theta) = h(x) \exp(\langle \theta, T(x) \rangle - A(\theta)),

with natural parameters :math:`\theta`, sufficient statistic :math:`T`, log base measure
:math:`\log h` and log-partition :math:`A`. Its Fisher metric is :math:`g = \nabla^2 A`, its
skewness tensor :math:`T_{ijk} = \partial_i\partial_j\partial_k A`, its expectation parameters
:math:`\eta = \nabla A(\theta)` and its dual potential :math:`A^*(\eta) = \langle\theta,\eta\rangle
- A(\theta)`. Every divergence between two members has a closed form in A.

Precision: every quantity is computed in the dtype of ``theta``. In float32 the Fisher metric is
good to about 1e-6 relative, the skewness tensor and curvature to about 1e-4, and the Newton
inverse of :meth:`natural_parameters` stops at a residual of about 1e-5 relative; use float64
(``jax.config.update("jax_enable_x64", True)``) for tight geometry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import (
    Array,
    Metric,
    Point,
    PointLike,
    PRNGKeyArray,
    Sample,
    Scalar,
    ScalarLike,
    Tensor3,
    Tensor4,
)
from ._manifold import AbstractStatisticalManifold
from ._misc import as_point, check_domain, safe_sqrt, solve_metric
from .geometry import _curvature


def _default_tolerance(dtype) -> float:
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


class AbstractExponentialFamily(AbstractStatisticalManifold):
    r"""Abstract base of exponential families, defined by the log-partition :math:`A(\theta)`.

    Subclasses implement :meth:`log_partition`; :meth:`sufficient_statistic`,
    :meth:`log_base_measure` and :meth:`sample` are needed only for densities and sampling.
    Every other method has an autodiff default that a subclass may override with a closed form
    "for efficiency" (the tests check each override against the default).
    """

    # ------------------------------------------------------------------ defining pieces
    def log_partition(self, theta: PointLike) -> Scalar:
        r"""The log-partition :math:`A(\theta) = \log\int h(x) e^{\langle\theta, T(x)\rangle}dx`."""
        raise NotImplementedError(f"{type(self).__name__} must implement `log_partition`.")

    def sufficient_statistic(self, x: Sample) -> Point:
        """The sufficient statistic ``T(x)``, shape ``(dim,)``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no sufficient statistic; pass `sufficient_statistic=` "
            "to use densities, log_prob or maximum likelihood."
        )

    def log_base_measure(self, x: Sample) -> Scalar:
        r"""The log base measure :math:`\log h(x)`."""
        raise NotImplementedError(
            f"{type(self).__name__} has no base measure; pass `log_base_measure=` to use "
            "densities."
        )

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Draw samples with leading axes ``shape`` from ``p(x | theta)``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement `sample`.")

    def _raw_log_partition(self, theta: Point) -> Scalar:
        """A(theta) without the domain check (used inside solvers and domain tests)."""
        return self.log_partition(theta)

    def in_domain(self, theta: Point) -> Scalar:
        r"""Whether :math:`A(\theta) < \infty` (default: ``A`` is finite at ``theta``)."""
        return jnp.logical_and(
            jnp.all(jnp.isfinite(theta)), jnp.isfinite(self._raw_log_partition(theta))
        )

    def in_mean_domain(self, eta: Point) -> Scalar:
        r"""Whether ``eta`` lies in the interior of the mean domain (default: finite)."""
        return jnp.all(jnp.isfinite(eta))

    # ------------------------------------------------------------------ Fisher geometry
    def fisher_information(self, theta: PointLike) -> Metric:
        r"""Fisher information :math:`g_{ij}(\theta) = \partial_i \partial_j A(\theta)`.

        Equals :math:`\mathrm{Cov}_\theta[T(x)]` and the Hessian of
        :math:`\mathrm{KL}(p_\theta \| p_{\theta'})` in :math:`\theta'` at :math:`\theta' = \theta`.

        Args:
            theta: natural parameters, shape ``(dim,)``.

        Returns:
            Symmetric positive-definite array of shape ``(dim, dim)``, index order ``[i, j]``.

        Raises:
            equinox.EquinoxRuntimeError: if ``theta`` is outside the natural domain.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Bernoulli
            >>> Bernoulli().fisher_information(jnp.array([0.0]))  # p(1-p) = 0.25
            Array([[0.25]], dtype=float32)
        """
        theta = self.check_point(theta)
        return jax.hessian(self._raw_log_partition)(theta)

    def metric(self, theta: PointLike) -> Metric:
        """The Fisher metric; same as :meth:`fisher_information`."""
        return self.fisher_information(theta)

    def skewness_tensor(self, theta: PointLike) -> Tensor3:
        r"""Amari-Chentsov tensor :math:`T_{ijk} = \partial_i\partial_j\partial_k A(\theta)`.

        Equals :math:`E[(T-\eta)_i (T-\eta)_j (T-\eta)_k]`, the third cumulant of the
        sufficient statistic. Index order ``[i, j, k]``, totally symmetric.
        """
        theta = self.check_point(theta)
        return jax.jacfwd(jax.hessian(self._raw_log_partition))(theta)

    def christoffel_first_kind(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor3:
        r"""Alpha-connection symbols of the first kind in natural coordinates, ``[i, j, k]``.

        .. math::
            \Gamma^{(\alpha)}_{ij,k} = \frac{1-\alpha}{2} \partial_i\partial_j\partial_k A.

        Zero for the e-connection (alpha = +1): the natural parameters are affine coordinates.

        References:
            Amari & Nagaoka (2000), Sec. 2.3 and Eq. (3.49).
        """
        return 0.5 * (1.0 - jnp.asarray(alpha)) * self.skewness_tensor(theta)

    def riemann_tensor(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor4:
        r"""Alpha-curvature ``[l, i, j, k]`` from the third derivatives of A alone.

        The fourth derivatives cancel in natural coordinates, leaving
        :math:`R_{nijk} = \frac{1-\alpha^2}{4}(T_{nkm} g^{mb} T_{jib} - T_{njm} g^{mb} T_{kib})`,
        :math:`R^l{}_{ijk} = g^{ln} R_{nijk}`; zero for alpha = +1 and -1 (dual flatness).
        See :meth:`AbstractStatisticalManifold.riemann_tensor` for the sign convention.
        """
        theta = self.check_point(theta)
        return _curvature.exponential_family_riemann(
            self.fisher_information(theta), self.skewness_tensor(theta), alpha
        )

    # ------------------------------------------------------------------ dual coordinates
    def mean_parameters(self, theta: PointLike) -> Point:
        r"""Expectation parameters :math:`\eta = \nabla A(\theta) = E_\theta[T(x)]`."""
        theta = self.check_point(theta)
        return jax.grad(self._raw_log_partition)(theta)

    def _initial_natural_parameters(self, eta: Point) -> Point:
        """Starting point of the Newton inverse (default: zeros)."""
        return jnp.zeros_like(eta)

    def natural_parameters(
        self,
        eta: PointLike,
        *,
        initial_theta: PointLike | None = None,
        max_steps: int = 100,
        rtol: float | None = None,
        atol: float | None = None,
        throw: bool = True,
    ) -> Point:
        r"""Natural parameters from expectation parameters: the inverse of :math:`\nabla A`.

        Solves :math:`\nabla A(\theta) = \eta`, i.e. minimizes the convex function
        :math:`A(\theta) - \langle \theta, \eta \rangle`, by Newton's method with a backtracking
        (Armijo) line search that keeps every iterate inside the natural domain. Derivatives
        with respect to ``eta`` (and any array in the family) come from the implicit function
        theorem, :math:`d\theta = g(\theta)^{-1} d\eta`, at every order.

        Args:
            eta: expectation parameters, shape ``(dim,)``, in the interior of the mean domain.
            initial_theta: starting point inside the natural domain (default: the family's).
            max_steps: maximum number of Newton steps.
            rtol: relative tolerance of the convergence test
                :math:`|\nabla A(\theta) - \eta| \le \mathrm{atol} + \mathrm{rtol}|\eta|`
                elementwise (default 1e-10 in float64, 1e-5 in float32).
            atol: absolute tolerance of the same test (same default).
            throw: raise if the solve did not converge (also under ``jit``). With
                ``throw=False`` the unconverged iterate is returned: check it yourself.

        Returns:
            Natural parameters :math:`\theta` with :math:`\nabla A(\theta) = \eta`.

        Raises:
            equinox.EquinoxRuntimeError: if ``eta`` is outside the mean domain or Newton did not
                converge (``throw=True``).
        """
        eta = as_point(eta, self.dim, "eta")
        eta = check_domain(
            eta,
            self.in_mean_domain(eta),
            f"eta is outside the mean domain of {type(self).__name__}.",
        )
        if initial_theta is None:
            theta0 = self._initial_natural_parameters(eta)
        else:
            theta0 = as_point(initial_theta, eta.shape[0], "initial_theta").astype(eta.dtype)
        theta0 = eqx.error_if(
            theta0,
            jnp.logical_not(self.in_domain(theta0)),
            "natural_parameters: the Newton starting point is outside the natural domain of "
            f"{type(self).__name__}; pass `initial_theta=` (a point inside the domain).",
        )
        tol = _default_tolerance(eta.dtype)
        rtol = tol if rtol is None else rtol
        atol = tol if atol is None else atol
        theta = _solve_legendre(self, eta, theta0, max_steps, rtol, atol)
        if throw:
            residual = jax.grad(self._raw_log_partition)(theta) - eta
            converged = jnp.all(jnp.abs(residual) <= 10 * (atol + rtol * jnp.abs(eta)))
            converged = jnp.logical_and(converged, jnp.all(jnp.isfinite(theta)))
            theta = eqx.error_if(
                theta,
                jnp.logical_not(converged),
                "natural_parameters: the Newton inverse of grad A did not converge; eta may be "
                "outside (or on the boundary of) the mean domain. Pass `initial_theta`, raise "
                "`max_steps`, or use throw=False to inspect the iterate.",
            )
        return theta

    def dual_potential(self, eta: PointLike, **solve_kwargs: Any) -> Scalar:
        r"""Dual potential (negative entropy up to the base measure).

        .. math::
            A^*(\eta) = \langle \theta, \eta \rangle - A(\theta),
            \quad \theta = (\nabla A)^{-1}(\eta),

        so that :math:`\nabla A^* = \theta` and :math:`\nabla^2 A^* = g(\theta)^{-1}`.
        """
        theta = self.natural_parameters(eta, **solve_kwargs)
        eta = jnp.asarray(eta, theta.dtype)
        return theta @ eta - self._raw_log_partition(theta)

    # ------------------------------------------------------------------ densities
    def log_prob(self, theta: PointLike, x: Sample) -> Scalar:
        r"""Log-density :math:`\langle\theta, T(x)\rangle - A(\theta) + \log h(x)` of one ``x``."""
        theta = self.check_point(theta)
        return (
            theta @ self.sufficient_statistic(x)
            - self._raw_log_partition(theta)
            + self.log_base_measure(x)
        )

    def maximum_likelihood(self, data: Array, **solve_kwargs: Any) -> Point:
        r"""Maximum-likelihood natural parameters from i.i.d. samples (leading axis = samples).

        :math:`\hat\eta = \frac1n \sum_i T(x_i)`, :math:`\hat\theta = (\nabla A)^{-1}(\hat\eta)`.
        Raises if :math:`\hat\eta` is on the boundary of the mean domain (the MLE does not exist,
        e.g. all-zero Bernoulli data).
        """
        eta_hat = jnp.mean(jax.vmap(self.sufficient_statistic)(data), axis=0)
        return self.natural_parameters(eta_hat, **solve_kwargs)

    # ------------------------------------------------------------------ geodesics (flat)
    def e_geodesic(self, theta_0: PointLike, theta_1: PointLike, t: ScalarLike) -> Point:
        r"""The e-geodesic (alpha = +1): a straight line in natural parameters.

        :math:`\theta(t) = (1 - t)\theta_0 + t\theta_1`; its densities are the normalized
        geometric mixtures :math:`p_0^{1-t} p_1^t`.
        """
        theta_0 = self.check_point(theta_0)
        theta_1 = as_point(theta_1, theta_0.shape[0], "theta_1")
        theta_1 = self.check_point(theta_1)
        t = jnp.asarray(t, theta_0.dtype)
        return (1.0 - t) * theta_0 + t * theta_1

    def m_geodesic(
        self, theta_0: PointLike, theta_1: PointLike, t: ScalarLike, **solve_kwargs: Any
    ) -> Point:
        r"""The m-geodesic (alpha = -1): a straight line in expectation parameters.

        :math:`\eta(t) = (1 - t)\eta_0 + t\eta_1`, returned as natural parameters
        :math:`\theta(t) = (\nabla A)^{-1}(\eta(t))`.
        """
        eta_0 = self.mean_parameters(theta_0)
        eta_1 = self.mean_parameters(theta_1)
        return self.natural_parameters((1.0 - t) * eta_0 + t * eta_1, **solve_kwargs)

    # ------------------------------------------------------------------ divergences
    def kl_divergence(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Kullback-Leibler divergence :math:`\mathrm{KL}(p \| q) = E_p[\log p/q]`.

        For exponential families this is the Bregman divergence of A with swapped arguments:

        .. math::
            \mathrm{KL}(p_{\theta_p} \| p_{\theta_q}) = A(\theta_q) - A(\theta_p)
            - \langle \theta_q - \theta_p, \eta_p \rangle = B_A(\theta_q, \theta_p).

        Args:
            p: natural parameters of the first argument (the expectation is under p).
            q: natural parameters of the second argument.
        """
        p = self.check_point(p)
        q = self.check_point(as_point(q, p.shape[0], "q"))
        a_p, eta_p = jax.value_and_grad(self._raw_log_partition)(p)
        return self._raw_log_partition(q) - a_p - (q - p) @ eta_p

    def _log_affinity(self, p: Point, q: Point, weight: ScalarLike) -> Scalar:
        r"""Log of :math:`\int p^w q^{1-w}`, or +inf where the mixture leaves the domain."""
        weight = jnp.asarray(weight, p.dtype)
        mix = weight * p + (1.0 - weight) * q
        ok = self.in_domain(mix)
        safe_mix = jnp.where(ok, mix, p)
        value = (
            self._raw_log_partition(safe_mix)
            - weight * self._raw_log_partition(p)
            - (1.0 - weight) * self._raw_log_partition(q)
        )
        return jnp.where(ok, value, jnp.inf)

    def _log_affinity_over_weight(self, base: Point, other: Point, w: ScalarLike) -> Scalar:
        r"""Second-order expansion of :math:`f(w)/w` for small w.

        Here :math:`f(w) = \log\int p_{other}^w p_{base}^{1-w}`:
        :math:`f(w)/w \approx -\mathrm{KL}(base\|other) + \tfrac{w}{2}\Delta^\top g(base)\Delta`.
        """
        delta = other - base
        curvature = delta @ self.fisher_information(base) @ delta
        return -self.kl_divergence(base, other) + 0.5 * w * curvature

    def _prepare_pair(self, p: PointLike, q: PointLike) -> tuple[Point, Point]:
        p = self.check_point(p)
        q = self.check_point(as_point(q, p.shape[0], "q"))
        return p, q

    def alpha_divergence(self, p: PointLike, q: PointLike, alpha: ScalarLike) -> Scalar:
        r"""Amari alpha-divergence.

        .. math::
            D_\alpha(p \| q) = \frac{4}{1-\alpha^2}\Big(1 - \int p^{\frac{1-\alpha}{2}}
            q^{\frac{1+\alpha}{2}}\Big),

        with the limits :math:`D_{-1}(p\|q) = \mathrm{KL}(p\|q)` and
        :math:`D_{+1}(p\|q) = \mathrm{KL}(q\|p)`, and the duality
        :math:`D_\alpha(p\|q) = D_{-\alpha}(q\|p)`. For exponential families the integral is
        :math:`\exp(A(a\theta_p + b\theta_q) - aA(\theta_p) - bA(\theta_q))`,
        :math:`a = (1-\alpha)/2`, :math:`b = (1+\alpha)/2`. Near :math:`\alpha = \pm 1` a
        second-order expansion replaces the 0/0 form, so the value is smooth in alpha. Returns
        ``inf`` when the integral diverges (:math:`|\alpha| > 1` and the mixture leaves the
        domain).

        References:
            Amari, *Information Geometry and Its Applications* (2016), Eq. (3.58);
            Amari & Nagaoka (2000), Eq. (3.80).
        """
        p, q = self._prepare_pair(p, q)
        alpha = jnp.asarray(alpha, p.dtype)
        a = 0.5 * (1.0 - alpha)  # weight on p
        b = 0.5 * (1.0 + alpha)  # weight on q
        small = jnp.finfo(p.dtype).eps ** (1.0 / 3.0)
        near_q = jnp.abs(a) < small  # alpha -> +1
        near_p = jnp.abs(b) < small  # alpha -> -1
        general_a = jnp.where(near_q | near_p, 0.5, a)
        f = self._log_affinity(p, q, general_a)
        general = -jnp.expm1(f) / (general_a * (1.0 - general_a))
        # alpha -> +1: f = a s with base q; alpha -> -1: f = b s with base p.
        s_q = self._log_affinity_over_weight(q, p, a)
        s_p = self._log_affinity_over_weight(p, q, b)
        limit_q = -(s_q + 0.5 * a * s_q**2) / b
        limit_p = -(s_p + 0.5 * b * s_p**2) / a
        return jnp.where(near_q, limit_q, jnp.where(near_p, limit_p, general))

    def renyi_divergence(self, p: PointLike, q: PointLike, order: ScalarLike) -> Scalar:
        r"""Renyi divergence of the given order (> 0).

        .. math::
            D_\lambda(p \| q) = \frac{1}{\lambda - 1} \log \int p^\lambda q^{1-\lambda}
            = \frac{A(\lambda\theta_p + (1-\lambda)\theta_q) - \lambda A(\theta_p)
              - (1-\lambda) A(\theta_q)}{\lambda - 1},

        with :math:`D_1 = \mathrm{KL}(p\|q)` (taken smoothly by a second-order expansion) and
        ``inf`` where the integral diverges.

        References:
            Renyi (1961); van Erven & Harremoes, IEEE Trans. Inf. Theory 60 (2014);
            Liese & Vajda, *Convex Statistical Distances* (1987) for exponential families.
        """
        p, q = self._prepare_pair(p, q)
        order = jnp.asarray(order, p.dtype)
        b = 1.0 - order  # weight on q
        small = jnp.finfo(p.dtype).eps ** (1.0 / 3.0)
        near_one = jnp.abs(b) < small
        general_order = jnp.where(near_one, 0.5, order)
        general = self._log_affinity(p, q, general_order) / (general_order - 1.0)
        limit = -self._log_affinity_over_weight(p, q, b)
        return jnp.where(near_one, limit, general)

    def bhattacharyya_distance(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Bhattacharyya distance :math:`-\log \int \sqrt{p q}`.

        For exponential families,
        :math:`\frac{A(\theta_p) + A(\theta_q)}{2} - A(\frac{\theta_p + \theta_q}{2})`.
        """
        p, q = self._prepare_pair(p, q)
        return -self._log_affinity(p, q, 0.5)

    def hellinger_distance(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Hellinger distance :math:`\sqrt{1 - \int \sqrt{p q}}` (in [0, 1]).

        Equals :math:`\sqrt{1 - e^{-B(p,q)}}` with B the Bhattacharyya distance; its gradient is
        finite (zero) at p = q.
        """
        p, q = self._prepare_pair(p, q)
        return safe_sqrt(-jnp.expm1(self._log_affinity(p, q, 0.5)))


@eqx.filter_jit
def _solve_legendre(family, eta, theta0, max_steps, rtol, atol):
    """Jitted once per family and settings, so eager calls do not re-trace the Newton loops."""
    dynamic, static = eqx.partition(family, eqx.is_inexact_array)
    return _legendre_inverse(static, max_steps, rtol, atol, dynamic, eta, theta0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _legendre_inverse(static, max_steps, rtol, atol, dynamic, eta, theta0):
    family = eqx.combine(dynamic, static)
    return _damped_newton(family, eta, theta0, max_steps, rtol, atol)


@_legendre_inverse.defjvp
def _legendre_inverse_jvp(static, max_steps, rtol, atol, primals, tangents):
    dynamic, eta, theta0 = primals
    d_dynamic, d_eta, _ = tangents
    theta = _legendre_inverse(static, max_steps, rtol, atol, dynamic, eta, theta0)

    def grad_a(dyn, th):
        return jax.grad(eqx.combine(dyn, static)._raw_log_partition)(th)

    # Implicit function theorem on grad A(theta; dynamic) = eta.
    _, d_grad = jax.jvp(lambda dyn: grad_a(dyn, theta), (dynamic,), (d_dynamic,))
    hess = jax.jacfwd(lambda th: grad_a(dynamic, th))(theta)
    d_theta = solve_metric(hess, d_eta - d_grad)
    return theta, d_theta


def _damped_newton(family, eta, theta0, max_steps, rtol, atol):
    """Newton on f(theta) = A(theta) - <theta, eta> with an Armijo backtracking line search."""
    raw_a = family._raw_log_partition

    def objective(theta):
        value = raw_a(theta) - theta @ eta
        ok = jnp.logical_and(family.in_domain(theta), jnp.isfinite(value))
        return jnp.where(ok, value, jnp.inf)

    def converged(theta):
        residual = jax.grad(raw_a)(theta) - eta
        return jnp.all(jnp.abs(residual) <= atol + rtol * jnp.abs(eta))

    def cond(carry):
        theta, step, done = carry
        return jnp.logical_and(step < max_steps, jnp.logical_not(done))

    def body(carry):
        theta, step, _ = carry
        value = objective(theta)
        gradient = jax.grad(raw_a)(theta) - eta
        hess = jax.hessian(raw_a)(theta)
        direction = -solve_metric(hess, gradient)
        # Fall back to steepest descent if the Hessian solve failed numerically.
        direction = jnp.where(jnp.all(jnp.isfinite(direction)), direction, -gradient)
        slope = gradient @ direction

        def ls_cond(ls):
            t, count = ls
            trial = objective(theta + t * direction)
            return jnp.logical_and(count < 60, ~(trial <= value + 1e-4 * t * slope))

        def ls_body(ls):
            t, count = ls
            return 0.5 * t, count + 1

        t, _ = jax.lax.while_loop(ls_cond, ls_body, (jnp.ones((), theta.dtype), 0))
        new_theta = theta + t * direction
        new_theta = jnp.where(jnp.isfinite(objective(new_theta)), new_theta, theta)
        return new_theta, step + 1, converged(new_theta)

    theta0 = jnp.asarray(theta0, eta.dtype)
    init = (theta0, jnp.asarray(0), converged(theta0))
    theta, _, _ = jax.lax.while_loop(cond, body, init)
    # One undamped polishing step: Newton converges quadratically, so a step taken once the
    # residual is small brings theta to (nearly) machine precision. Kept only if it helps.
    residual = jax.grad(raw_a)(theta) - eta
    polished = theta - solve_metric(jax.hessian(raw_a)(theta), residual)
    polished_residual = jax.grad(raw_a)(polished) - eta
    better = jnp.logical_and(
        jnp.isfinite(objective(polished)),
        jnp.max(jnp.abs(polished_residual)) <= jnp.max(jnp.abs(residual)),
    )
    return jnp.where(better, polished, theta)


class ExponentialFamily(AbstractExponentialFamily):
    r"""An exponential family given by its log-partition function (and optionally T, h).

    Args:
        log_partition: ``A(theta) -> scalar``, convex, smooth on the natural domain. Write it
            stably (``logsumexp``, ``log1p``, ``gammaln``) and return ``inf``/``nan`` outside the
            domain (or supply ``in_domain``).
        sufficient_statistic: optional ``T(x) -> (dim,)``, for densities, MLE and the model view.
        log_base_measure: optional ``log h(x) -> scalar`` (default 0 when T is given).
        in_domain: optional ``in_domain(theta) -> bool`` for the natural domain (default:
            ``A(theta)`` is finite).
        dim: optional static dimension, for shape checks.
        sampler: optional ``sampler(theta, key, shape) -> samples``.

    Example:
        >>> import jax.numpy as jnp
        >>> bernoulli = ExponentialFamily(lambda th: jnp.logaddexp(0.0, th[0]))
        >>> float(bernoulli.fisher_information(jnp.array([0.0]))[0, 0])
        0.25
    """

    log_partition_fn: Callable[[Point], Scalar]
    sufficient_statistic_fn: Callable[[Sample], Point] | None = None
    log_base_measure_fn: Callable[[Sample], Scalar] | None = None
    in_domain_fn: Callable[[Point], Scalar] | None = None
    sampler_fn: Callable[..., Array] | None = None
    static_dim: int | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        log_partition: Callable[[Point], Scalar],
        sufficient_statistic: Callable[[Sample], Point] | None = None,
        log_base_measure: Callable[[Sample], Scalar] | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
        *,
        dim: int | None = None,
        sampler: Callable[..., Array] | None = None,
    ):
        for name, fn in [
            ("log_partition", log_partition),
            ("sufficient_statistic", sufficient_statistic),
            ("log_base_measure", log_base_measure),
            ("in_domain", in_domain),
            ("sampler", sampler),
        ]:
            if fn is not None and not callable(fn):
                raise TypeError(f"`{name}` must be callable (or None), got {type(fn).__name__}.")
        self.log_partition_fn = log_partition
        self.sufficient_statistic_fn = sufficient_statistic
        self.log_base_measure_fn = log_base_measure
        self.in_domain_fn = in_domain
        self.sampler_fn = sampler
        self.static_dim = dim

    @property
    def dim(self) -> int | None:
        return self.static_dim

    def _raw_log_partition(self, theta: Point) -> Scalar:
        value = jnp.asarray(self.log_partition_fn(theta))
        if value.shape != ():
            raise ValueError(
                f"`log_partition(theta)` must return a scalar, got shape {value.shape}."
            )
        return value

    def log_partition(self, theta: PointLike) -> Scalar:
        r"""The user's log-partition :math:`A(\theta)`."""
        return self._raw_log_partition(self.check_point(theta))

    def in_domain(self, theta: Point) -> Scalar:
        ok = super().in_domain(theta)
        if self.in_domain_fn is not None:
            ok = jnp.logical_and(ok, self.in_domain_fn(theta))
        return ok

    def sufficient_statistic(self, x: Sample) -> Point:
        if self.sufficient_statistic_fn is None:
            return super().sufficient_statistic(x)
        return jnp.atleast_1d(jnp.asarray(self.sufficient_statistic_fn(x)))

    def log_base_measure(self, x: Sample) -> Scalar:
        if self.log_base_measure_fn is None:
            if self.sufficient_statistic_fn is None:
                return super().log_base_measure(x)
            return jnp.zeros(())
        return jnp.asarray(self.log_base_measure_fn(x))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        if self.sampler_fn is None:
            return super().sample(theta, key, shape)
        return self.sampler_fn(self.check_point(theta), key, shape)


