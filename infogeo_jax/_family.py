r"""Exponential families from their log-partition function alone.

An exponential family has densities

.. math::
    p(x \mid \theta) = h(x) \exp(\langle \theta, T(x) \rangle - A(\theta)),

with natural parameters :math:`\theta`, sufficient statistic :math:`T`, log base measure
:math:`\log h` and log-partition :math:`A`. Its Fisher metric is :math:`g = \nabla^2 A`, its
skewness tensor :math:`T_{ijk} = \partial_i\partial_j\partial_k A`, its expectation parameters
:math:`\eta = \nabla A(\theta)` and its dual potential :math:`A^*(\eta) = \langle\theta,\eta\rangle
- A(\theta)`. Every divergence between two members has a closed form in A.

Precision: every quantity is computed in the dtype of ``theta``. Measured in float32 against
float64 (Normal, Gamma, Beta, Dirichlet and generic families, tests/test_exponential_family.py):
the Fisher metric and the expectation parameters agree to about 2e-7 relative, the skewness
tensor to about 1e-6, the curvature to about 1e-5, and the Newton inverse
:meth:`~AbstractExponentialFamily.natural_parameters` to about 3e-6. The divergences are
differences of values of A, so in float32 they lose about :math:`10^{-7}|A|` absolutely (about
1e-4 to 1e-3 relative for distributions 20% apart, worse for closer ones). Use float64
(``jax.config.update("jax_enable_x64", True)``) for tight geometry.

Errors: shape and type misuse raises ``ValueError``/``TypeError`` at trace time. Value errors
(theta outside the natural domain, eta outside the mean domain, a Newton solve that did not
converge) use ``equinox.error_if``: eagerly and under ``equinox.filter_jit`` they raise
``equinox.EquinoxRuntimeError`` with the message; under plain ``jax.jit`` they raise
``jax.errors.JaxRuntimeError`` whose text contains the same message. Both are ``RuntimeError``.
"""

from __future__ import annotations

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
from ._distributions import LIBRARIES
from ._dually_flat import AbstractDuallyFlatManifold
from ._fitting import fit_moments
from ._legendre import legendre_inverse, solver_tolerances
from ._manifold import Method, check_method, no_closed_form
from ._misc import (
    as_point,
    bregman_gap,
    check_domain,
    directional_derivatives,
    exprel,
    safe_sqrt,
)
from ._model import StatisticalModel
from ._reparameterized import ReparameterizedFamily
from .geometry import _curvature


def _default_tolerance(dtype) -> float:
    return 1e-10 if jnp.finfo(dtype).bits >= 64 else 1e-5


class AbstractExponentialFamily(AbstractDuallyFlatManifold):
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
            f"{type(self).__name__} has no base measure; pass `log_base_measure=` to use densities."
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
    def fisher_information(self, theta: PointLike, *, method: Method = "auto") -> Metric:
        r"""Fisher information :math:`g_{ij}(\theta) = \partial_i \partial_j A(\theta)`.

        Equals :math:`\mathrm{Cov}_\theta[T(x)]` and the Hessian of
        :math:`\mathrm{KL}(p_\theta \| p_{\theta'})` in :math:`\theta'` at :math:`\theta' = \theta`.
        Families with a closed form (Bernoulli, binomial, categorical, diagonal normal) supply
        it through the hook ``_fisher_information_closed_form(theta)``; ``method`` chooses the
        route as in :meth:`~infogeo_jax.AbstractStatisticalManifold.geodesic_distance`
        (``"numerical"``: the autodiff Hessian of A).

        Args:
            theta: natural parameters, shape ``(dim,)``.
            method: ``"auto"``, ``"closed_form"`` or ``"numerical"`` (static).

        Returns:
            Symmetric positive-definite array of shape ``(dim, dim)``, index order ``[i, j]``.

        Raises:
            ValueError: if ``theta`` does not have shape ``(dim,)``, on an unknown ``method``, or on
                ``method="closed_form"`` where there is no closed form.
            RuntimeError: (``equinox.EquinoxRuntimeError``) if ``theta`` is outside the natural
                domain, eagerly and under ``jit``.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Bernoulli
            >>> float(Bernoulli().fisher_information(jnp.array([0.0]))[0, 0])  # p(1-p)
            0.25

        References:
            Amari & Nagaoka (2000), Eq. (3.34); Brown, *Fundamentals of Statistical Exponential
            Families* (1986), Cor. 2.3.
        """
        check_method(method, "fisher_information")
        theta = self.check_point(theta)
        if method != "numerical":
            closed = self._fisher_information_closed_form(theta)
            if closed is not NotImplemented:
                return closed
            if method == "closed_form":
                raise no_closed_form(self, "Fisher information")
        return jax.hessian(self._raw_log_partition)(theta)

    def _fisher_information_closed_form(self, theta: Point) -> Metric:
        """Closed-form Fisher information at a checked theta, or ``NotImplemented`` (default)."""
        return NotImplemented

    def _unchecked_metric(self, theta: Point) -> Metric:
        """The Fisher information at a theta known to be in the domain (no domain check)."""
        closed = self._fisher_information_closed_form(theta)
        if closed is not NotImplemented:
            return closed
        return jax.hessian(self._raw_log_partition)(theta)

    def metric(self, theta: PointLike) -> Metric:
        """The Fisher metric; same as :meth:`fisher_information`."""
        return self.fisher_information(theta)

    def skewness_tensor(self, theta: PointLike) -> Tensor3:
        r"""Amari-Chentsov tensor :math:`T_{ijk} = \partial_i\partial_j\partial_k A(\theta)`.

        Equals :math:`E[(T-\eta)_i (T-\eta)_j (T-\eta)_k]`, the third cumulant of the
        sufficient statistic.

        Args:
            theta: natural parameters, shape ``(dim,)``.

        Returns:
            Totally symmetric array of shape ``(dim, dim, dim)``, index order ``[i, j, k]``.

        Raises:
            ValueError: if ``theta`` does not have shape ``(dim,)``.
            RuntimeError: if ``theta`` is outside the natural domain.

        References:
            Amari & Nagaoka (2000), Eq. (3.39) and Sec. 2.3 (the cubic form of a dually flat
            structure).
        """
        theta = self.check_point(theta)
        return jax.jacfwd(jax.hessian(self._raw_log_partition))(theta)

    def christoffel_first_kind(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor3:
        r"""Alpha-connection symbols of the first kind in natural coordinates, ``[i, j, k]``.

        .. math::
            \Gamma^{(\alpha)}_{ij,k} = \frac{1-\alpha}{2} \partial_i\partial_j\partial_k A.

        Zero for the e-connection (alpha = +1): the natural parameters are affine coordinates.
        The closed form of the generic
        :meth:`AbstractStatisticalManifold.christoffel_first_kind` (Levi-Civita part
        :math:`\frac12 T` minus :math:`\frac\alpha2 T`).

        Args:
            theta: natural parameters, shape ``(dim,)``.
            alpha: Amari's alpha, a scalar.

        Returns:
            Array of shape ``(dim, dim, dim)``, index order ``[i, j, k]``.

        References:
            Amari & Nagaoka (2000), Sec. 2.3 and Eq. (3.49).
        """
        theta = self.check_point(theta)
        alpha = _as_scalar(alpha, theta.dtype, "alpha")
        return 0.5 * (1.0 - alpha) * self.skewness_tensor(theta)

    def riemann_tensor(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor4:
        r"""Alpha-curvature ``[l, i, j, k]`` from the third derivatives of A alone.

        The fourth derivatives cancel in natural coordinates, leaving
        :math:`R_{nijk} = \frac{1-\alpha^2}{4}(T_{nkm} g^{mb} T_{jib} - T_{njm} g^{mb} T_{kib})`,
        :math:`R^l{}_{ijk} = g^{ln} R_{nijk}`; zero for alpha = +1 and -1 (dual flatness).
        See :meth:`AbstractStatisticalManifold.riemann_tensor` for the sign convention; the
        tests check this closed form against the generic autodiff curvature.

        Args:
            theta: natural parameters, shape ``(dim,)``.
            alpha: Amari's alpha, a scalar.

        Returns:
            Array of shape ``(dim, dim, dim, dim)``, index order ``[l, i, j, k]``.

        References:
            Amari & Nagaoka (2000), Sec. 2.3 and Thm. 3.5; Amari (2016), Sec. 6.2.
        """
        theta = self.check_point(theta)
        alpha = _as_scalar(alpha, theta.dtype, "alpha")
        sectional = self._sectional_curvature_closed_form(theta)
        if sectional is not None:
            g = self.fisher_information(theta)
            eye = jnp.eye(g.shape[0], dtype=g.dtype)
            lowered = jnp.einsum("lj,ik->lijk", eye, g) - jnp.einsum("lk,ij->lijk", eye, g)
            return (1.0 - alpha**2) * sectional * lowered
        return _curvature.exponential_family_riemann(
            self.fisher_information(theta), self.skewness_tensor(theta), alpha
        )

    def ricci_tensor(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Metric:
        r"""Ricci tensor ``[i, k]`` :math:`= R^l{}_{ilk}` of the alpha-connection, in O(dim^4).

        Contracted in closed form from :math:`g` and :math:`T` without forming the Riemann
        tensor: :math:`\mathrm{Ric}_{ik} = \frac{1-\alpha^2}{4}(T^l{}_{km} T_{li}{}^m -
        \tau_m T_{ki}{}^m)`, :math:`\tau_m = g^{ln} T_{lnm}` (indices raised by
        :math:`g^{-1}`), so the scalar curvature costs O(dim^4) time and O(dim^3) memory rather
        than O(dim^5) and O(dim^4). Tested against the contraction of :meth:`riemann_tensor`.

        Args:
            theta: natural parameters, shape ``(dim,)``.
            alpha: Amari's alpha, a scalar.

        Returns:
            Array of shape ``(dim, dim)``.
        """
        theta = self.check_point(theta)
        alpha = _as_scalar(alpha, theta.dtype, "alpha")
        sectional = self._sectional_curvature_closed_form(theta)
        if sectional is not None:
            g = self.fisher_information(theta)
            return (1.0 - alpha**2) * sectional * (g.shape[0] - 1) * g
        return _curvature.exponential_family_ricci(
            self.fisher_information(theta), self.skewness_tensor(theta), alpha
        )

    def scalar_curvature(
        self, theta: PointLike, alpha: ScalarLike = 0.0, *, method: Method = "auto"
    ) -> Scalar:
        r"""Scalar curvature :math:`g^{ik} R_{ik}` of the alpha-connection.

        For an exponential family :math:`R^{(\alpha)} = (1-\alpha^2) R^{(0)}` in natural
        coordinates. Families whose Levi-Civita sectional curvature K has a closed form (every
        two-dimensional family: the normal, gamma and beta; the categorical, a sphere of
        radius 2) return :math:`(1-\alpha^2)\, d(d-1) K` from it, which stays accurate where
        the metric in natural coordinates is badly conditioned (a normal with a large mean, a
        gamma with a large shape); the others contract :meth:`ricci_tensor`.
        ``method="numerical"`` forces the contraction of g and T (from autodiff of A),
        ``method="closed_form"`` requires the closed form (``ValueError`` where there is none).

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> round(float(Normal().scalar_curvature(jnp.array([0.3, -0.5]))), 4)
            -1.0
        """
        check_method(method, "scalar_curvature")
        theta = self.check_point(theta)
        alpha = _as_scalar(alpha, theta.dtype, "alpha")
        closed = method != "numerical"
        sectional = self._sectional_curvature_closed_form(theta) if closed else None
        if sectional is not None:
            d = theta.shape[0]
            # Keep the value tied to the checked theta: a constant K would let jit drop the
            # domain check.
            sectional = jnp.where(jnp.all(jnp.isfinite(theta)), sectional, jnp.nan)
            return (1.0 - alpha**2) * d * (d - 1) * sectional
        if method == "closed_form":
            raise no_closed_form(self, "scalar curvature")
        g = self.fisher_information(theta)
        ricci = _curvature.exponential_family_ricci(g, self.skewness_tensor(theta), alpha)
        return _curvature.scalar_from_ricci(g, ricci)

    def _sectional_curvature_closed_form(self, theta: Point) -> Scalar | None:
        """Levi-Civita sectional curvature K where the family has constant-K planes.

        Override in families where every tangent plane has the same sectional curvature at
        theta (all two-dimensional families, and spaces of constant curvature); ``None`` (the
        default) means: use the general contraction of g and T.
        """
        return None

    # ------------------------------------------------------------------ dual coordinates
    def mean_parameters(self, theta: PointLike) -> Point:
        r"""Expectation parameters :math:`\eta = \nabla A(\theta) = E_\theta[T(x)]`.

        Args:
            theta: natural parameters, shape ``(dim,)``.

        Returns:
            :math:`\eta`, shape ``(dim,)``; the affine coordinates of the m-connection.

        Raises:
            ValueError: if ``theta`` does not have shape ``(dim,)``.
            RuntimeError: if ``theta`` is outside the natural domain.

        References:
            Amari & Nagaoka (2000), Eq. (3.33).
        """
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
        (Armijo) line search that keeps every iterate inside the natural domain, followed by up
        to three undamped polishing steps. The solve has converged when the Newton decrement
        (the Fisher length of the remaining Newton step, an affine-invariant error measure)

        .. math::
            \lambda(\theta) = \sqrt{r^\top g(\theta)^{-1} r}, \qquad r = \nabla A(\theta) - \eta,

        satisfies :math:`\lambda \le \mathrm{atol} + \mathrm{rtol}\,
        \sqrt{|\eta|^\top |g^{-1}| |\eta|}` (the second term is the scale of rounding errors in
        :math:`\nabla A`). Derivatives with respect to ``eta`` and to any array in the family
        (module fields or arrays closed over by ``log_partition``) come from the implicit
        function theorem, :math:`d\theta = g(\theta)^{-1}(d\eta - \partial\nabla A)`, at every
        order (``jax.grad``, ``jax.jacfwd``, ``jax.hessian`` all work).

        Args:
            eta: expectation parameters, shape ``(dim,)``, in the interior of the mean domain.
            initial_theta: starting point inside the natural domain (default: the family's; if
                that is outside the domain, e.g. zeros for a normal log-partition, the probe
                of the stencil :math:`\pm s e_i`, :math:`\pm s\mathbf 1`,
                :math:`s \in \{1/2, 1, 2, 8\}` around it that is inside the domain and has
                the smallest :math:`A(\theta) - \langle\theta, \eta\rangle`).
            max_steps: maximum number of damped Newton steps.
            rtol: relative tolerance (default 1e-13 in float64, 1e-5 in float32).
            atol: absolute tolerance on the decrement (default 1e-10 in float64, 1e-5 in
                float32).
            throw: raise if the solve did not converge (also under ``jit``). With
                ``throw=False`` the last iterate is returned: check it yourself.

        Returns:
            Natural parameters :math:`\theta` with :math:`\nabla A(\theta) = \eta`.

        Raises:
            ValueError: if ``eta`` (or ``initial_theta``) does not have shape ``(dim,)``.
            RuntimeError: (``equinox.EquinoxRuntimeError``; under ``jax.jit`` a
                ``jax.errors.JaxRuntimeError`` carrying the same message) if ``eta`` is outside
                the mean domain, the starting point is outside the natural domain, or Newton
                did not converge (``throw=True``).

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax import ExponentialFamily
            >>> poisson = ExponentialFamily(lambda th: jnp.exp(th[0]))
            >>> float(poisson.natural_parameters(jnp.array([1.0]))[0])  # log(1)
            0.0
        """
        eta = as_point(eta, self.dim, "eta")
        if initial_theta is None:
            theta0 = None
        else:
            theta0 = as_point(initial_theta, eta.shape[0], "initial_theta").astype(eta.dtype)
        if not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"`max_steps` must be a non-negative int, got {max_steps!r}.")
        default_rtol, default_atol = solver_tolerances(eta.dtype)
        rtol = default_rtol if rtol is None else float(rtol)
        atol = default_atol if atol is None else float(atol)
        return legendre_inverse(self, eta, theta0, max_steps, rtol, atol, bool(throw))

    def dual_potential(self, eta: PointLike, **solve_kwargs: Any) -> Scalar:
        r"""Dual potential (negative entropy up to the base measure).

        .. math::
            A^*(\eta) = \langle \theta, \eta \rangle - A(\theta),
            \quad \theta = (\nabla A)^{-1}(\eta),

        so that :math:`\nabla A^* = \theta` and :math:`\nabla^2 A^* = g(\theta)^{-1}`; the
        Legendre dual of A. ``solve_kwargs`` go to :meth:`natural_parameters`.

        Raises:
            ValueError: if ``eta`` does not have shape ``(dim,)``.
            RuntimeError: if ``eta`` is outside the mean domain (see :meth:`natural_parameters`).

        References:
            Amari & Nagaoka (2000), Sec. 3.3, Eq. (3.35).
        """
        eta = as_point(eta, self.dim, "eta")
        theta = self.natural_parameters(eta, **solve_kwargs)
        return theta @ eta.astype(theta.dtype) - self._raw_log_partition(theta)

    # ------------------------------------------------------------------ densities
    def _statistic(self, x: Sample, dim: int) -> Point:
        stat = jnp.asarray(self.sufficient_statistic(x))
        if stat.shape != (dim,):
            raise ValueError(
                f"`sufficient_statistic(x)` returned shape {stat.shape}, expected ({dim},): pass "
                "one unbatched sample x (batch with jax.vmap)."
            )
        return stat

    def log_prob(self, theta: PointLike, x: Sample) -> Scalar:
        r"""Log-density of one outcome ``x``.

        .. math::
            \log p(x \mid \theta) = \langle\theta, T(x)\rangle - A(\theta) + \log h(x).

        Args:
            theta: natural parameters, shape ``(dim,)``.
            x: one outcome (a scalar or an array, as the family defines it); batch with
                ``jax.vmap``.

        Returns:
            The scalar log-density (log-mass for discrete families).

        Raises:
            ValueError: if ``theta`` or ``T(x)`` does not have shape ``(dim,)``.
            RuntimeError: if ``theta`` is outside the natural domain.
            NotImplementedError: if the family has no sufficient statistic / base measure.
        """
        theta = self.check_point(theta)
        stat = self._statistic(x, theta.shape[0]).astype(theta.dtype)
        return theta @ stat - self._raw_log_partition(theta) + self.log_base_measure(x)

    def maximum_likelihood(self, data: Array, **solve_kwargs: Any) -> Point:
        r"""Maximum-likelihood natural parameters from i.i.d. samples (leading axis = samples).

        .. math::
            \hat\eta = \frac1n \sum_{i=1}^n T(x_i), \qquad
            \hat\theta = (\nabla A)^{-1}(\hat\eta).

        Args:
            data: samples stacked along the leading axis (a pytree of such arrays is accepted).
            **solve_kwargs: options of :meth:`natural_parameters`.

        Returns:
            :math:`\hat\theta`, shape ``(dim,)``.

        The moments are centered where the family allows: the normal and multivariate normal
        fit the mean and the two-pass centered covariance directly (data 1e8 + [1, 2, 3] give
        sigma 0.816496580927726 to the last digit); the other families average T(x) around a
        shift (the first sample) before the inverse of grad A.

        Raises:
            ValueError: if ``data`` has no leading sample axis or no samples.
            TypeError: if ``data`` is complex.
            RuntimeError: if ``data`` contain NaN or inf, or the data are degenerate (no member
                matches their moments: constant data for a normal, all-zero Bernoulli data; the
                MLE does not exist).

        References:
            Barndorff-Nielsen, *Information and Exponential Families* (1978), Sec. 9.3.
        """
        return fit_moments(self, data, None, solve_kwargs)

    def _closed_form_fit(self, data: Array, weights: Array) -> tuple[Point, Scalar] | None:
        """Moment matching from samples in closed form, with centered moments.

        Returns ``(theta, ok)`` (``ok``: the moments are inside the mean domain) for families
        whose natural parameters follow from centered moments (the normal families), or
        ``None`` (the default): then T(x) is averaged and grad A inverted.
        ``weights`` are non-negative and sum to one.
        """
        del data, weights
        return None

    # ------------------------------------------------------------------ geodesics (flat)
    def e_geodesic(self, theta_0: PointLike, theta_1: PointLike, t: ScalarLike) -> Point:
        r"""The e-geodesic (alpha = +1): a straight line in natural parameters.

        :math:`\theta(t) = (1 - t)\theta_0 + t\theta_1`; its densities are the normalized
        geometric mixtures :math:`p_0^{1-t} p_1^t`. For t in [0, 1] it stays in the (convex)
        natural domain; outside it extrapolates and may leave the domain.

        Args:
            theta_0: natural parameters at t = 0, shape ``(dim,)``.
            theta_1: natural parameters at t = 1, shape ``(dim,)``.
            t: a scalar time (batch with ``jax.vmap``).

        Returns:
            :math:`\theta(t)`, shape ``(dim,)``.

        Raises:
            ValueError: on shape errors.
            RuntimeError: if an endpoint or :math:`\theta(t)` is outside the natural domain.

        References:
            Amari & Nagaoka (2000), Sec. 3.3 (e-flatness of exponential families).
        """
        theta_0, theta_1 = self._prepare_pair(theta_0, theta_1, ("theta_0", "theta_1"))
        t = _as_scalar(t, theta_0.dtype, "t")
        theta_t = (1.0 - t) * theta_0 + t * theta_1
        return check_domain(
            theta_t,
            self.in_domain(theta_t),
            f"e_geodesic: theta(t) leaves the natural domain of {type(self).__name__} (t "
            "outside [0, 1] extrapolates).",
        )

    def m_geodesic(
        self, theta_0: PointLike, theta_1: PointLike, t: ScalarLike, **solve_kwargs: Any
    ) -> Point:
        r"""The m-geodesic (alpha = -1): a straight line in expectation parameters.

        :math:`\eta(t) = (1 - t)\eta_0 + t\eta_1`, returned as natural parameters
        :math:`\theta(t) = (\nabla A)^{-1}(\eta(t))`; its densities are the mixtures
        :math:`(1-t)p_0 + tp_1` projected (moment-matched) onto the family.

        Args:
            theta_0: natural parameters at t = 0, shape ``(dim,)``.
            theta_1: natural parameters at t = 1, shape ``(dim,)``.
            t: a scalar time (batch with ``jax.vmap``).
            **solve_kwargs: options of :meth:`natural_parameters`.

        Returns:
            :math:`\theta(t)`, shape ``(dim,)``.

        Raises:
            ValueError: on shape errors.
            RuntimeError: if an endpoint is outside the natural domain, or :math:`\eta(t)`
                outside the mean domain (t outside [0, 1] extrapolates).

        References:
            Amari & Nagaoka (2000), Sec. 3.3 (m-flatness of exponential families).
        """
        theta_0, theta_1 = self._prepare_pair(theta_0, theta_1, ("theta_0", "theta_1"))
        t = _as_scalar(t, theta_0.dtype, "t")
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

        The difference cancels when the divergence is small against :math:`|A|` (two nearby
        normals with a large mean); there the equal Taylor remainder
        :math:`\int_0^1 (1-t)\,\Delta^\top g(\theta_p + t\Delta)\Delta\,dt`,
        :math:`\Delta = \theta_q - \theta_p`, is used instead (by Gauss-Legendre quadrature),
        whichever has the smaller error estimate; the result is accurate to about 1e-12
        relative for near and far pairs alike (to the rounding of ``p`` and ``q`` themselves).

        Args:
            p: natural parameters of the first argument (the expectation is under p).
            q: natural parameters of the second argument.

        Returns:
            The non-negative scalar :math:`\mathrm{KL}(p\|q)` (up to rounding).

        Raises:
            ValueError: if ``p`` and ``q`` do not have shape ``(dim,)``.
            RuntimeError: if ``p`` or ``q`` is outside the natural domain.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Poisson
            >>> fam = Poisson()  # KL = l_p log(l_p / l_q) - l_p + l_q
            >>> kl = fam.kl_divergence(jnp.log(jnp.array([2.0])), jnp.log(jnp.array([3.0])))

        References:
            Amari & Nagaoka (2000), Eq. (3.45); Banerjee et al., JMLR 6 (2005), Thm. 4.
        """
        p, q = self._prepare_pair(p, q)
        return bregman_gap(self._raw_log_partition, q, p)

    def _prepare_pair(
        self, p: PointLike, q: PointLike, names: tuple[str, str] = ("p", "q")
    ) -> tuple[Point, Point]:
        """Validate two points of this family: shapes at trace time, domains with error_if."""
        p = as_point(p, self.dim, names[0])
        q = as_point(q, p.shape[0], names[1])
        return self._check_in_domain(p, names[0]), self._check_in_domain(q, names[1])

    def _log_affinity_over_weight(
        self, base: Point, other: Point, w: ScalarLike, series: bool = True
    ) -> tuple[Scalar, Scalar]:
        r"""The ratio :math:`s(w) = f(w)/w` and whether the integral is finite.

        Here :math:`f(w) = \log\int p_{other}^w p_{base}^{1-w}
        = A(\theta_b + w\Delta) - A(\theta_b) - w(A(\theta_o) - A(\theta_b))`,
        :math:`\Delta = \theta_o - \theta_b`, finite iff :math:`\theta_b + w\Delta` lies in the
        natural domain. The direct formula loses :math:`\epsilon|A|/|w|` to cancellation as
        :math:`w \to 0`; there the Taylor series :math:`s = -\mathrm{KL}(base\|other) +
        \sum_{k=2}^{4} \phi^{(k)}(0) w^{k-1}/k!` in :math:`\phi(t) = A(\theta_b + t\Delta)` is
        used instead, whichever has the smaller error estimate. Both are smooth in w, so the
        result is accurate (to about 1e-12 relative) and differentiable through w = 0.
        """
        w = jnp.asarray(w, base.dtype)
        raw_a = self._raw_log_partition
        delta = other - base
        mix = base + w * delta
        ok = self.in_domain(mix)
        safe_mix = jnp.where(ok, mix, base)
        a_base, a_other, a_mix = raw_a(base), raw_a(other), raw_a(safe_mix)
        is_zero = w == 0
        safe_w = jnp.where(is_zero, 1.0, w)
        direct = (a_mix - a_base) / safe_w - (a_other - a_base)
        if not series:
            return direct, ok
        eps = jnp.finfo(base.dtype).eps
        _, d1, d2, d3, d4 = directional_derivatives(raw_a, base, delta, 4)
        # Rounding in A is relative to the size of its terms, not to its (possibly zero) value.
        size = jnp.abs(a_mix) + jnp.abs(a_base) + jnp.abs(d1) + jnp.abs(d2)
        direct_error = jnp.where(is_zero, jnp.inf, 4 * eps * size / jnp.abs(safe_w))
        taylor = d1 - (a_other - a_base) + w * (d2 / 2 + w * (d3 / 6 + w * d4 / 24))
        taylor_error = jnp.abs(d4 / 24 * w**3) + 4 * eps * jnp.abs(d1)
        use_taylor = taylor_error < direct_error
        return jnp.where(use_taylor, taylor, direct), ok

    def alpha_divergence(self, p: PointLike, q: PointLike, alpha: ScalarLike) -> Scalar:
        r"""Amari alpha-divergence.

        .. math::
            D_\alpha(p \| q) = \frac{4}{1-\alpha^2}\Big(1 - \int p^{\frac{1-\alpha}{2}}
            q^{\frac{1+\alpha}{2}}\Big),

        with the limits :math:`D_{-1}(p\|q) = \mathrm{KL}(p\|q)` and
        :math:`D_{+1}(p\|q) = \mathrm{KL}(q\|p)`, and the duality
        :math:`D_\alpha(p\|q) = D_{-\alpha}(q\|p)`. For exponential families the integral is
        :math:`\exp(A(a\theta_p + b\theta_q) - aA(\theta_p) - bA(\theta_q))`,
        :math:`a = (1-\alpha)/2`, :math:`b = (1+\alpha)/2`. Writing the smaller weight
        :math:`w = \min(a, b)` and the log-integral :math:`f = w s`, the divergence is computed
        as :math:`-s\,\frac{e^{ws} - 1}{ws} / (1 - w)`, with no 0/0 form: it is smooth and
        accurate through :math:`\alpha = \pm 1` (see the Taylor switch in the source), and its
        gradients are finite there.

        Args:
            p: natural parameters of the first argument, shape ``(dim,)``.
            q: natural parameters of the second argument, shape ``(dim,)``.
            alpha: a real scalar (any value; :math:`|\alpha| > 1` may diverge).

        Returns:
            The non-negative scalar :math:`D_\alpha(p\|q)`; ``inf`` when the integral diverges
            (:math:`|\alpha| > 1` and :math:`a\theta_p + b\theta_q` is outside the natural
            domain).

        Raises:
            ValueError: on shape errors (``alpha`` must be a scalar).
            RuntimeError: if ``p`` or ``q`` is outside the natural domain.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> fam = Normal()
            >>> p = fam.from_usual(jnp.array([0.0, 1.0]))
            >>> q = fam.from_usual(jnp.array([1.0, 2.0]))
            >>> d = fam.alpha_divergence(p, q, -1.0)  # equals fam.kl_divergence(p, q)

        References:
            Amari, *Information Geometry and Its Applications* (2016), Eq. (3.58);
            Amari & Nagaoka (2000), Eq. (3.80).
        """
        p, q = self._prepare_pair(p, q)
        alpha = _as_scalar(alpha, p.dtype, "alpha")
        # Base the expansion on the point with the larger weight, so that w <= 1/2 on [-1, 1].
        q_is_base = alpha >= 0
        base = jnp.where(q_is_base, q, p)
        other = jnp.where(q_is_base, p, q)
        w = jnp.where(q_is_base, 0.5 * (1.0 - alpha), 0.5 * (1.0 + alpha))
        s, ok = self._log_affinity_over_weight(base, other, w)
        s = jnp.where(ok, s, 0.0)
        return jnp.where(ok, -s * exprel(w * s) / (1.0 - w), jnp.inf)

    def renyi_divergence(self, p: PointLike, q: PointLike, order: ScalarLike) -> Scalar:
        r"""Renyi divergence of the given order :math:`\lambda \ge 0`.

        .. math::
            D_\lambda(p \| q) = \frac{1}{\lambda - 1} \log \int p^\lambda q^{1-\lambda}
            = \frac{A(\lambda\theta_p + (1-\lambda)\theta_q) - \lambda A(\theta_p)
              - (1-\lambda) A(\theta_q)}{\lambda - 1},

        with :math:`D_1 = \mathrm{KL}(p\|q)`, taken smoothly (a Taylor expansion in
        :math:`1 - \lambda` replaces the 0/0 form near :math:`\lambda = 1`), :math:`D_0 = 0`
        (common support) and ``inf`` where the integral diverges (:math:`\lambda > 1` and
        :math:`\lambda\theta_p + (1-\lambda)\theta_q` outside the natural domain).

        Raises:
            ValueError: on shape errors (``order`` must be a scalar).
            RuntimeError: if ``order < 0`` or ``p``/``q`` is outside the natural domain.

        References:
            Renyi (1961); van Erven & Harremoes, IEEE Trans. Inf. Theory 60 (2014), Eq. (1);
            Liese & Vajda, *Convex Statistical Distances* (1987) for exponential families;
            Gil, Alajaji & Linder, Information Sciences 249 (2013), Table 2 (normal case).
        """
        p, q = self._prepare_pair(p, q)
        order = _as_scalar(order, p.dtype, "order")
        order = eqx.error_if(order, order < 0, "renyi_divergence: the order must be non-negative.")
        s, ok = self._log_affinity_over_weight(p, q, 1.0 - order)
        return jnp.where(ok, -jnp.where(ok, s, 0.0), jnp.inf)

    def bhattacharyya_distance(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Bhattacharyya distance :math:`-\log \int \sqrt{p q}`.

        For exponential families,
        :math:`\frac{A(\theta_p) + A(\theta_q)}{2} - A(\frac{\theta_p + \theta_q}{2}) \ge 0`
        (clipped at 0 against rounding).

        References:
            Bhattacharyya (1943); Nielsen & Boltz, IEEE Trans. Inf. Theory 57 (2011), Eq. (3)
            for exponential families.
        """
        p, q = self._prepare_pair(p, q)
        s, _ = self._log_affinity_over_weight(q, p, 0.5, series=False)
        return jnp.maximum(-0.5 * s, 0.0)

    def hellinger_distance(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Hellinger distance :math:`\sqrt{1 - \int \sqrt{p q}}` (in [0, 1]).

        Equals :math:`\sqrt{1 - e^{-B(p,q)}}` with B the Bhattacharyya distance; its gradient is
        finite (zero) at p = q.
        """
        p, q = self._prepare_pair(p, q)
        return safe_sqrt(-jnp.expm1(-self.bhattacharyya_distance(p, q)))

    # ------------------------------------------------------------------------- model view
    def as_model(self, expectation: Any) -> Any:
        r"""This family as a :class:`~infogeo_jax.StatisticalModel` (``log_prob`` as log-density).

        The model computes the geometry by expectation (:math:`E[s s^\top]`,
        :math:`E[s^{\otimes 3}]` under the rule) instead of from derivatives of A, so both
        routes can be compared on one family. Needs :meth:`sufficient_statistic` and
        :meth:`log_base_measure`.

        Args:
            expectation: an expectation rule (FiniteSupport, Quadrature, TensorProduct,
                MonteCarlo) for this family's sample space.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax import FiniteSupport
            >>> from infogeo_jax.families import Binomial
            >>> model = Binomial(4).as_model(FiniteSupport(jnp.arange(5)))
        """
        return StatisticalModel(self.log_prob, expectation, dim=self.dim, in_domain=self.in_domain)

    # ------------------------------------------------------------------ coordinates
    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from the family's usual parameters (a 1-D array).

        Every catalogue family takes and returns 1-D arrays (arrays in, arrays out), so that
        ``family.reparameterize(family.from_usual)`` is the family in its usual chart. A
        family without usual parameters (e.g. :class:`ExponentialFamily`) raises.

        Raises:
            NotImplementedError: if the family defines no usual parameters.
        """
        raise NotImplementedError(f"{type(self).__name__} defines no usual parameters.")

    def to_usual(self, theta: PointLike) -> Point:
        """The usual parameters (a 1-D array) from natural parameters; inverse of from_usual."""
        raise NotImplementedError(f"{type(self).__name__} defines no usual parameters.")

    def tangent_from_usual(self, usual: PointLike, v: PointLike) -> Point:
        r"""Push a tangent vector forward from the usual chart: :math:`\dot\theta = J v`.

        :math:`J = \partial\theta / \partial u` is the Jacobian of :meth:`from_usual` at
        ``usual``; a gradient (a covector) goes the other way, by :math:`J^\top`.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Poisson
            >>> # theta = log(rate): d theta = d rate / rate
            >>> Poisson().tangent_from_usual(jnp.array([2.0]), jnp.array([1.0])).tolist()
            [0.5]
        """
        usual = jnp.asarray(usual, jnp.result_type(float))
        v = jnp.asarray(v, usual.dtype)
        if v.shape != usual.shape:
            raise ValueError(f"`v` must have the shape of `usual` {usual.shape}, got {v.shape}.")
        return jax.jvp(self.from_usual, (usual,), (v,))[1]

    def tangent_to_usual(self, theta: PointLike, v: PointLike) -> Point:
        r"""Push a tangent vector at ``theta`` forward to the usual chart: :math:`J v`.

        :math:`J = \partial u / \partial\theta` is the Jacobian of :meth:`to_usual`; this is the
        inverse of :meth:`tangent_from_usual` at ``usual = to_usual(theta)``.
        """
        theta = self.check_point(theta)
        v = as_point(v, theta.shape[0], "v").astype(theta.dtype)
        return jax.jvp(self.to_usual, (theta,), (v,))[1]

    def reparameterize(
        self,
        to_theta: Callable[[Point], Point],
        *,
        dim: int | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
        method: str = "closed_form",
    ) -> Any:
        r"""The family in new coordinates :math:`\varphi`, with :math:`\theta = t(\varphi)`.

        Exact: the metric and the skewness tensor are pulled back from the family's closed
        forms, :math:`\tilde g = J^\top g J`, :math:`\tilde T_{abc} = J_{ia}J_{jb}J_{kc}T_{ijk}`
        (no expectation rule), and the Christoffel symbols and curvature follow in
        :math:`\varphi`. ``family.reparameterize(family.from_usual)`` is the family in its usual
        parameters.

        Args:
            to_theta: ``to_theta(phi) -> theta``, smooth and injective.
            dim: static dimension of phi (default: the family's).
            in_domain: optional extra predicate on phi (the family's domain at
                ``to_theta(phi)`` is always checked).
            method: ``"closed_form"`` (the family's closed-form metric and distance where it
                has them) or ``"numerical"`` (Hessian of A by autodiff, distance by shooting
                in phi): see :class:`~infogeo_jax.ReparameterizedFamily`.

        Returns:
            A :class:`~infogeo_jax.ReparameterizedFamily`.

        Raises:
            TypeError: if ``to_theta`` is not callable.
            ValueError: on an unknown ``method``.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> fam = Normal()
            >>> usual = fam.reparameterize(fam.from_usual)  # (mu, sigma)
            >>> bool(jnp.allclose(usual.fisher_information(jnp.array([0.0, 2.0])),
            ...                   jnp.diag(jnp.array([0.25, 0.5]))))
            True
            >>> round(float(usual.scalar_curvature(jnp.array([0.0, 2.0]))), 6)
            -1.0
        """
        if not callable(to_theta):
            raise TypeError("`to_theta` must be a callable phi -> theta.")
        return ReparameterizedFamily(
            self, to_theta, in_domain, self.dim if dim is None else int(dim), method
        )

    def to_distribution(self, theta: PointLike, library: str = "numpyro") -> Any:
        """This member as a distribution object of a JAX probability library.

        For sampling and plotting with the library's own tools. The library is imported
        only now.

        Args:
            theta: natural parameters, shape ``(dim,)``.
            library: ``"numpyro"``, ``"distrax"`` or ``"tfp"``.

        Returns:
            A distribution with the same log-density as :meth:`log_prob`.

        Raises:
            ValueError: on an unknown library.
            NotImplementedError: if the family has no counterpart in that library.
            ImportError: if the library is not installed or does not import.
        """
        if library not in LIBRARIES:
            raise ValueError(f"`library` must be one of {LIBRARIES}, got {library!r}.")
        return self._native_distribution(self.check_point(theta), library)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} has no counterpart in {library}; use `log_prob` and "
            "`sample` directly."
        )


def _as_scalar(x: ScalarLike, dtype, name: str) -> Scalar:
    """A scalar array of ``dtype``; ``ValueError`` (at trace time) for any other shape."""
    x = jnp.asarray(x)
    if x.ndim != 0:
        raise ValueError(f"`{name}` must be a scalar, got shape {x.shape}; use jax.vmap to batch.")
    return x.astype(dtype)
