r"""The shared abstract base of every statistical manifold.

A statistical manifold is a triple :math:`(M, g, T)`: a Riemannian metric :math:`g` (the Fisher
metric for a statistical model) and a totally symmetric skewness tensor :math:`T` (the
Amari-Chentsov tensor). Everything else (the alpha-connections, their curvature, geodesics,
distances, parallel transport) is derived from :math:`(g, T)` alone by automatic differentiation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Literal, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _geodesic_methods
from ._custom_types import (
    Array,
    ArrayLike,
    Float,
    Metric,
    Point,
    PointLike,
    Scalar,
    ScalarLike,
    Tangent,
    Tensor3,
    Tensor4,
)
from ._misc import (
    as_point,
    check_alpha,
    check_domain,
    is_static_value,
    safe_sqrt,
    solve_metric,
)
from .geometry import _curvature
from .geometry._geodesic import GeodesicSolver, LogMapSolution

Method = Literal["auto", "closed_form", "numerical"]
_METHODS = ("auto", "closed_form", "numerical")


def check_method(method: str, name: str) -> str:
    """Validate a ``method=`` route keyword (static: a Python string)."""
    if method not in _METHODS:
        raise ValueError(
            f"`method` of {name} must be one of {_METHODS}, got {method!r}: 'closed_form' forces "
            "the family's closed form, 'numerical' the generic route, 'auto' prefers the closed "
            "form where there is one."
        )
    return method


def no_closed_form(manifold: object, name: str) -> ValueError:
    """The error of ``method='closed_form'`` on a manifold without a closed form."""
    return ValueError(
        f"{type(manifold).__name__} has no closed-form {name}: use method='auto' or "
        "method='numerical'."
    )


class AbstractStatisticalManifold(eqx.Module):
    r"""Abstract base of every source of geometry: supplies ``metric`` and ``skewness_tensor``.

    Subclasses implement :meth:`metric` (and usually :meth:`skewness_tensor`); all the geometry
    methods below are derived from them. Points are unbatched 1-D arrays ``theta`` of shape
    ``(dim,)``; batch with ``jax.vmap``.

    Conventions (Amari): the alpha-connection is
    :math:`\Gamma^{(\alpha)} = \Gamma^{(0)} - \frac{\alpha}{2} g^{-1} T`; ``alpha=+1`` is the
    e-connection, ``alpha=-1`` the m-connection and ``alpha=0`` the Levi-Civita connection of g.
    """

    @property
    def dim(self) -> int | None:
        """The manifold dimension when it is known statically, else ``None``."""
        return None

    def in_domain(self, theta: Point) -> Scalar:
        """Whether ``theta`` lies in the parameter domain (a boolean scalar array)."""
        return jnp.all(jnp.isfinite(theta))

    def check_point(self, theta: PointLike) -> Point:
        """Validate a point: shape at trace time, domain with ``equinox.error_if``.

        Raises:
            ValueError: if ``theta`` is not a 1-D array of length ``dim``.
            equinox.EquinoxRuntimeError: if ``theta`` is outside the domain (also under ``jit``).
        """
        theta = as_point(theta, self.dim)
        return self._check_in_domain(theta, "theta")

    def _check_in_domain(self, theta: Point, name: str) -> Point:
        """Raise (also under ``jit``) unless ``theta`` is in the domain; the message names why.

        Subclasses whose points can fail for more than one reason (a float overflow inside the
        domain, say) override this to name the real cause.
        """
        return check_domain(
            theta,
            self.in_domain(theta),
            f"{name} is outside the parameter domain of {type(self).__name__}.",
        )

    @abc.abstractmethod
    def metric(self, theta: PointLike) -> Metric:
        r"""The metric :math:`g_{ij}(\theta)`, shape ``(dim, dim)``, index order ``[i, j]``."""

    def _unchecked_metric(self, theta: Point) -> Metric:
        """The metric at a point the caller keeps in the domain (the solvers' starting guesses).

        Subclasses whose :meth:`metric` checks only its input override this to skip that
        check, which under ``jit`` is a host callback in the compiled solver. Default:
        :meth:`metric`, with all its checks.
        """
        return self.metric(theta)

    def skewness_tensor(self, theta: PointLike) -> Tensor3:
        r"""The skewness (Amari-Chentsov) tensor :math:`T_{ijk}(\theta)`, ``[i, j, k]``.

        Zero for a plain Riemannian manifold (the default).
        """
        theta = self.check_point(theta)
        d = theta.shape[0]
        return jnp.zeros((d, d, d), theta.dtype)

    def _has_skewness(self) -> bool:
        """Whether the skewness tensor can be non-zero (False lets alpha be ignored)."""
        return True

    # ------------------------------------------------------------------ connections
    def christoffel_first_kind(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor3:
        r"""Alpha-connection symbols of the first kind, index order ``[i, j, k]``.

        .. math::
            \Gamma^{(\alpha)}_{ij,k} = g(\nabla^{(\alpha)}_{\partial_i} \partial_j, \partial_k)
            = \tfrac12(\partial_i g_{jk} + \partial_j g_{ik} - \partial_k g_{ij})
              - \tfrac{\alpha}{2} T_{ijk}.

        Args:
            theta: point, shape ``(dim,)``.
            alpha: Amari's alpha (+1: e-connection, -1: m-connection, 0: Levi-Civita).

        Returns:
            Array of shape ``(dim, dim, dim)``.

        References:
            Amari & Nagaoka, *Methods of Information Geometry* (2000), Eq. (2.27).
        """
        theta = self.check_point(theta)
        alpha = check_alpha(alpha)
        skew = self.skewness_tensor if self._has_skewness() else None
        return _curvature.christoffel_first_kind(self.metric, skew, theta, alpha)

    def christoffel_symbols(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor3:
        r"""Alpha-connection Christoffel symbols, index order ``[k, i, j]`` (upper index first).

        .. math::
            \Gamma^{(\alpha)k}_{ij} = g^{kl} \Gamma^{(\alpha)}_{ij,l}.

        Args:
            theta: point, shape ``(dim,)``.
            alpha: Amari's alpha.

        Returns:
            Array of shape ``(dim, dim, dim)``, ``out[k, i, j]``.
        """
        theta = self.check_point(theta)
        return _curvature.raise_first_kind(
            self.metric(theta), self.christoffel_first_kind(theta, alpha)
        )

    # ------------------------------------------------------------------ curvature
    def riemann_tensor(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Tensor4:
        r"""Riemann curvature of the alpha-connection, index order ``[l, i, j, k]``.

        .. math::
            R^l{}_{ijk} = \partial_j \Gamma^l_{ki} - \partial_k \Gamma^l_{ji}
            + \Gamma^l_{jm}\Gamma^m_{ki} - \Gamma^l_{km}\Gamma^m_{ji}.

        With this sign a sphere of radius r has positive curvature.

        Args:
            theta: point, shape ``(dim,)``.
            alpha: Amari's alpha.

        Returns:
            Array of shape ``(dim, dim, dim, dim)``.
        """
        theta = self.check_point(theta)
        alpha = check_alpha(alpha)
        skew = self.skewness_tensor if self._has_skewness() else None
        return _curvature.riemann_from_metric(self.metric, skew, theta, alpha)

    def ricci_tensor(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Metric:
        r"""Ricci tensor ``[i, k]`` :math:`= R^l{}_{ilk}` of the alpha-connection."""
        return _curvature.ricci_from_riemann(self.riemann_tensor(theta, alpha))

    def scalar_curvature(
        self, theta: PointLike, alpha: ScalarLike = 0.0, *, method: Method = "auto"
    ) -> Scalar:
        r"""Scalar curvature :math:`g^{ik} R_{ik}` of the alpha-connection.

        A sphere of radius r gives :math:`2/r^2`; the univariate normal family gives -1 (and
        :math:`-(1-\alpha^2)` for the alpha-connection). ``method`` chooses the route as in
        :meth:`geodesic_distance`: exponential families with a closed-form sectional curvature
        take it under ``"auto"`` and ``"closed_form"``; ``"numerical"`` always contracts the
        curvature tensor; this generic manifold has no closed form (``"closed_form"`` raises
        ``ValueError``).

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> round(float(Normal().scalar_curvature(jnp.array([0.3, -0.5]))), 4)
            -1.0
        """
        check_method(method, "scalar_curvature")
        if method == "closed_form":
            raise no_closed_form(self, "scalar curvature")
        theta = self.check_point(theta)
        return _curvature.scalar_from_ricci(self.metric(theta), self.ricci_tensor(theta, alpha))

    def sectional_curvature(
        self, theta: PointLike, u: Tangent, v: Tangent, alpha: ScalarLike = 0.0
    ) -> Scalar:
        r"""Sectional curvature of the plane spanned by tangent vectors ``u`` and ``v``.

        .. math::
            K(u, v) = \frac{g(R(u, v) v, u)}{g(u,u) g(v,v) - g(u,v)^2}.

        Raises:
            ValueError: on shape errors or a non-scalar ``alpha``.
            RuntimeError: (``equinox.EquinoxRuntimeError``) if ``u`` and ``v`` do not span a
                plane (zero or parallel to within rounding:
                :math:`g(u,u)g(v,v) - g(u,v)^2 \le 64\epsilon\, g(u,u) g(v,v)`).
        """
        theta = self.check_point(theta)
        u = as_point(u, theta.shape[0], "u")
        v = as_point(v, theta.shape[0], "v")
        return _curvature.sectional_from_riemann(
            self.metric(theta), self.riemann_tensor(theta, alpha), u, v
        )

    # ------------------------------------------------------------------ metric helpers
    def inner(self, theta: PointLike, u: Tangent, v: Tangent) -> Scalar:
        r"""Inner product :math:`g_{ij}(\theta) u^i v^j` of two tangent vectors."""
        theta = self.check_point(theta)
        u = as_point(u, theta.shape[0], "u")
        v = as_point(v, theta.shape[0], "v")
        return u @ self.metric(theta) @ v

    def norm(self, theta: PointLike, v: Tangent) -> Scalar:
        r"""Norm :math:`\sqrt{g_{ij}(\theta) v^i v^j}` of a tangent vector."""
        return safe_sqrt(self.inner(theta, v, v))

    # ------------------------------------------------------------------ geodesics
    def _christoffel_contract(
        self, theta: Point, u: Tangent, w: Tangent, alpha: ScalarLike
    ) -> Tangent:
        r"""Matrix-free contracted symbols :math:`\Gamma^{(\alpha)k}_{ij} u^i w^j`, ``(dim,)``.

        Generic route: with one linearization of the metric,
        :math:`\Gamma_{ij,l}u^iw^j = \frac12[(D_u g)w + (D_w g)u - \nabla(u^\top g w)]_l
        - \frac{\alpha}{2}T(u, w, \cdot)_l`, then one Cholesky solve. Exponential families
        override it with :math:`\frac{1-\alpha}{2}g^{-1}D_uD_w\nabla A` (two JVPs of
        :math:`\nabla A`).
        """
        g, d_metric = jax.linearize(self.metric, theta)
        dg_u = d_metric(u)
        dg_w = dg_u if w is u else d_metric(w)
        (grad_uw,) = jax.linear_transpose(d_metric, theta)(jnp.outer(u, w))
        first = 0.5 * (dg_u @ w + dg_w @ u - grad_uw)
        if self._has_skewness() and not is_static_value(alpha, 0.0):
            skew = self.skewness_tensor(theta)
            first = first - 0.5 * alpha * jnp.einsum("ijk,i,j->k", skew, u, w)
        return solve_metric(g, first)

    def _initial_velocities(
        self, theta_0: Point, theta_1: Point, alpha: ScalarLike, times: Array
    ) -> tuple[Float[Array, "times dim"], Float[Array, "times dim dim"]]:
        r"""Guesses of ``log_map`` for the velocities at :math:`\theta_0 + t\Delta`, t in times.

        Levi-Civita guess: the coordinate segment reparameterized to constant metric speed,
        :math:`\dot x(t) = \Delta L / \|\Delta\|_{g(\theta_0 + t\Delta)}`, with
        :math:`\Delta = \theta_1 - \theta_0` and L the metric length of the segment (8-node
        Gauss-Legendre). Manifolds with flat connections override it (an exponential family
        blends in its e- and m-geodesic velocities).
        Also returns the metrics at the points :math:`\theta_0 + t\Delta`, t in times (shape
        ``(times, dim, dim)``), so that the solver need not evaluate them again.
        """
        delta = theta_1 - theta_0
        nodes, weights = np.polynomial.legendre.leggauss(8)
        quad = jnp.asarray(0.5 * (nodes + 1.0), theta_0.dtype)
        s = jnp.concatenate([quad, jnp.asarray(times, theta_0.dtype)])
        points = theta_0 + s[:, None] * delta
        inside = jax.vmap(self.in_domain)(points)
        safe = jnp.where(inside[:, None], points, theta_0)
        metrics = jax.vmap(self._unchecked_metric)(safe)  # one batched evaluation
        speeds = jnp.sqrt(jnp.maximum(jnp.einsum("i,nij,j->n", delta, metrics, delta), 0.0))
        length = jnp.asarray(0.5 * weights, theta_0.dtype) @ speeds[:8]
        tiny = jnp.finfo(theta_0.dtype).tiny
        velocities = delta * (length / jnp.maximum(speeds[8:], tiny))[:, None]
        return velocities, metrics[8:]

    def _check_tangent(self, theta: Point, v: Tangent, name: str) -> Tangent:
        v = as_point(v, theta.shape[0], name)
        if v.dtype != theta.dtype:
            v = v.astype(jnp.result_type(theta.dtype, v.dtype))
        return eqx.error_if(
            v, ~jnp.all(jnp.isfinite(v)), f"`{name}` must be a finite tangent vector."
        )

    def exp_map(
        self,
        theta: PointLike,
        v: Tangent,
        alpha: ScalarLike = 0.0,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
    ) -> Point:
        r"""Exponential map of the alpha-connection: the alpha-geodesic at ``t = 1``.

        Solves :math:`\ddot x^k + \Gamma^{(\alpha)k}_{ij}\dot x^i\dot x^j = 0`,
        :math:`x(0) = \theta`, :math:`\dot x(0) = v` with diffrax (Dopri8 in float64, Tsit5
        in float32, PID step-size control) and returns :math:`x(1)`. For an exponential
        family and a Python ``alpha`` of +1 or -1 the closed forms are used: the e-geodesic is
        :math:`\theta + v` (a straight line in natural parameters) and the m-geodesic the
        straight line :math:`\eta + g(\theta)v` in expectation parameters. Pass ``alpha``
        as an array to force the ODE route.

        Differentiable in ``theta`` and ``v`` (forward and reverse mode) through the
        variational equations.

        Args:
            theta: base point, shape ``(dim,)``.
            v: initial velocity, shape ``(dim,)``.
            alpha: Amari's alpha (+1: e-connection, -1: m-connection, 0: Levi-Civita).
            solver: numerical settings (:class:`infogeo_jax.geometry.GeodesicSolver`).
            throw: raise (also under ``jit``) if the solve fails, e.g. because the geodesic
                leaves the domain. With ``throw=False`` failed solves return NaN.

        Returns:
            The point :math:`\exp^{(\alpha)}_\theta(v)`, shape ``(dim,)``.

        Raises:
            equinox.EquinoxRuntimeError: if the solve failed and ``throw=True``.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> fam = Normal()
            >>> theta = fam.from_usual(jnp.array([0.0, 1.0]))
            >>> v = fam.log_map(theta, fam.from_usual(jnp.array([1.0, 2.0])))
            >>> fam.exp_map(theta, v).round(4).tolist()  # N(1, 2^2): (mu/s^2, -1/(2 s^2))
            [0.25, -0.125]

        References:
            Amari & Nagaoka (2000), Sec. 1.6 (geodesics) and Sec. 3.3 (alpha-connections).
        """
        alpha = check_alpha(alpha)
        theta = self.check_point(theta)
        v = self._check_tangent(theta, v, "v")
        cfg = _geodesic_methods.settings(solver, theta)
        return _geodesic_methods.exp_map(self, alpha, theta, v, cfg, throw)

    def geodesic(
        self,
        theta: PointLike,
        v: Tangent,
        t: ScalarLike | Float[ArrayLike, " times"],
        alpha: ScalarLike = 0.0,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
    ) -> Float[Array, "*times dim"]:
        r"""Points of the alpha-geodesic through ``theta`` with velocity ``v``, at times ``t``.

        :math:`\gamma(0) = \theta`, :math:`\dot\gamma(0) = v`,
        :math:`\gamma(t) = \exp^{(\alpha)}_\theta(t v)`, computed by one ODE solve through
        all the (sorted) times; negative times follow the geodesic backwards. Closed forms are
        used for the e- and m-geodesics of exponential families (Python ``alpha`` of +1 or -1).

        Args:
            theta: base point, shape ``(dim,)``.
            v: initial velocity, shape ``(dim,)``.
            t: a time or a 1-D array of times (any order, any sign).
            alpha: Amari's alpha.
            solver: numerical settings.
            throw: raise if the solve fails (also under ``jit``).

        Returns:
            Shape ``(dim,)`` for a scalar ``t``, else ``(len(t), dim)``.

        Raises:
            ValueError: if ``t`` has more than one axis.
            equinox.EquinoxRuntimeError: if the solve failed and ``throw=True``.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> fam = Normal()
            >>> path = fam.geodesic(fam.from_usual(jnp.array([0.0, 1.0])), jnp.array([0.5, 0.2]),
            ...                     jnp.linspace(0.0, 1.0, 5))
            >>> path.shape
            (5, 2)
        """
        alpha = check_alpha(alpha)
        theta = self.check_point(theta)
        v = self._check_tangent(theta, v, "v")
        t_arr = jnp.asarray(t, theta.dtype)
        if t_arr.ndim > 1:
            raise ValueError(f"`t` must be a scalar or a 1-D array of times, got {t_arr.shape}.")
        nonnegative = _geodesic_methods.concretely_nonnegative(t)
        cfg = _geodesic_methods.settings(solver, theta)
        ts = jnp.atleast_1d(t_arr)
        out = _geodesic_methods.geodesic(self, alpha, theta, v, ts, cfg, throw, nonnegative)
        return out[0] if t_arr.ndim == 0 else out

    def solve_log_map(
        self,
        theta_0: PointLike,
        theta_1: PointLike,
        alpha: ScalarLike = 0.0,
        *,
        solver: GeodesicSolver | None = None,
    ) -> LogMapSolution:
        r"""The shooting solve behind :meth:`log_map`, returning a result code instead of raising.

        Damped Newton multiple shooting on :math:`\exp^{(\alpha)}_{\theta_0}(v) = \theta_1`:
        the geodesic is cut into ``GeodesicSolver.num_segments`` pieces (default 4) whose
        starts are unknowns matched at the junctions, all integrated in one batched diffrax
        solve; the Jacobians come from perturbed trajectories integrated on the same steps.
        A Newton step that does not reduce the residual is halved; when Newton stalls, the
        target is moved by continuation along the coordinate segment from ``theta_0`` to
        ``theta_1`` (the e-geodesic for an exponential family). The initial guess is the
        segment reparameterized to constant metric speed (for exponential families blended,
        linearly in alpha, into the exact e- and m-geodesic velocities at alpha = +1 and -1).
        A trajectory that leaves the domain fails its solve, so the result is either a
        converged geodesic or a failure code, never a silently wrong velocity.

        Args:
            theta_0: start point, shape ``(dim,)``.
            theta_1: end point, shape ``(dim,)``.
            alpha: Amari's alpha.
            solver: numerical settings.

        Returns:
            A :class:`infogeo_jax.geometry.LogMapSolution` (``velocity``, ``end_velocity``,
            ``result``, ``residual``, ``num_steps``).

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Dirichlet
            >>> from infogeo_jax.geometry import RESULTS
            >>> sol = Dirichlet(3).solve_log_map(jnp.array([0.5, 1.0, 4.0]),
            ...                                  jnp.array([6.0, 0.7, 2.0]))
            >>> bool(sol.result == RESULTS.successful)
            True

        References:
            Stoer & Bulirsch, *Introduction to Numerical Analysis* (3rd ed., 2002), Sec. 7.3.5
            (multiple shooting); Bock, *Numerical treatment of inverse problems in chemical
            reaction kinetics* (1981) (internal numerical differentiation).
        """
        alpha = check_alpha(alpha)
        theta_0, theta_1 = self._check_pair(theta_0, theta_1)
        cfg = _geodesic_methods.settings(solver, theta_0)
        return _geodesic_methods.solve_log_map(self, alpha, theta_0, theta_1, cfg)

    def log_map(
        self,
        theta_0: PointLike,
        theta_1: PointLike,
        alpha: ScalarLike = 0.0,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
    ) -> Tangent:
        r"""Logarithm map: the velocity at ``theta_0`` of the alpha-geodesic to ``theta_1``.

        The initial velocity of the alpha-geodesic from ``theta_0`` that reaches ``theta_1`` at
        ``t = 1``; the inverse of :meth:`exp_map`. See :meth:`solve_log_map` for the algorithm.
        For exponential families and a Python ``alpha`` of +1 or -1 the closed forms
        :math:`\theta_1 - \theta_0` and :math:`g(\theta_0)^{-1}(\eta_1 - \eta_0)` are used.
        Differentiable in both points (forward and reverse mode) by the implicit function
        theorem on :math:`\exp_{\theta_0}(v) = \theta_1`, not through the Newton iterations.

        Args:
            theta_0: start point, shape ``(dim,)``.
            theta_1: end point, shape ``(dim,)``.
            alpha: Amari's alpha.
            solver: numerical settings.
            throw: raise (also under ``jit``) if the shooting did not converge; with
                ``throw=False`` the last iterate is returned (use :meth:`solve_log_map` to get
                the result code).

        Returns:
            The velocity :math:`v`, shape ``(dim,)``.

        Raises:
            equinox.EquinoxRuntimeError: if the shooting did not converge and ``throw=True``.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Beta
            >>> fam = Beta()
            >>> v = fam.log_map(jnp.array([0.2, 0.3]), jnp.array([20.0, 10.0]))
            >>> fam.exp_map(jnp.array([0.2, 0.3]), v).round(3).tolist()
            [20.0, 10.0]
        """
        alpha = check_alpha(alpha)
        theta_0, theta_1 = self._check_pair(theta_0, theta_1)
        cfg = _geodesic_methods.settings(solver, theta_0)
        return _geodesic_methods.log_map(self, alpha, theta_0, theta_1, cfg, throw)

    def geodesic_distance(
        self,
        theta_0: PointLike,
        theta_1: PointLike,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
        method: Method = "auto",
    ) -> Scalar:
        r"""Fisher-Rao (Levi-Civita) geodesic distance.

        :math:`d(\theta_0, \theta_1) = \|\log_{\theta_0}\theta_1\|_{g(\theta_0)}`, the
        length of the alpha = 0 geodesic found by :meth:`log_map`. Catalogue families with a
        closed form (normal, diagonal normal, categorical, multinomial, Bernoulli, binomial,
        geometric, Poisson, exponential) supply it through the hook
        ``_geodesic_distance_closed_form(theta_0, theta_1)``; ``method`` chooses the route:
        ``"auto"`` (the default) takes the closed form where there is one (``solver`` and
        ``throw`` are then unused: there is no solve), ``"closed_form"`` requires it, and
        ``"numerical"`` always shoots (so a closed form can be checked against the solve).
        Its first derivatives come from the envelope theorem, not from the Newton iterations:
        :math:`\partial d/\partial\theta_1 = g(\theta_1)\dot\gamma(1)/d` and
        :math:`\partial d/\partial\theta_0 = -g(\theta_0)\dot\gamma(0)/d` for the
        geodesic :math:`\gamma` from :math:`\theta_0` to :math:`\theta_1` (zero at
        :math:`\theta_0 = \theta_1`).

        Args:
            theta_0: first point, shape ``(dim,)``.
            theta_1: second point, shape ``(dim,)``.
            solver: numerical settings.
            throw: raise (also under ``jit``) if the shooting did not converge.
            method: ``"auto"``, ``"closed_form"`` or ``"numerical"`` (static).

        Returns:
            The distance, a nonnegative scalar.

        Raises:
            equinox.EquinoxRuntimeError: if the shooting did not converge and ``throw=True``.
            ValueError: on an unknown ``method``, or ``method="closed_form"`` where there is no
                closed form.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Poisson
            >>> fam = Poisson()  # closed form 2 |sqrt(l1) - sqrt(l0)|
            >>> a, b = jnp.log(jnp.array([1.0])), jnp.log(jnp.array([4.0]))
            >>> round(float(fam.geodesic_distance(a, b, method="numerical")), 4)
            2.0
            >>> round(float(fam.geodesic_distance(a, b, method="closed_form")), 4)
            2.0

        References:
            Rao, *Information and the accuracy attainable in the estimation of statistical
            parameters*, Bull. Calcutta Math. Soc. 37 (1945).
        """
        check_method(method, "geodesic_distance")
        theta_0, theta_1 = self._check_pair(theta_0, theta_1)
        if method != "numerical":
            closed = self._geodesic_distance_closed_form(theta_0, theta_1)
            if closed is not NotImplemented:
                return closed
            if method == "closed_form":
                raise no_closed_form(self, "geodesic distance")
        cfg = _geodesic_methods.settings(solver, theta_0)
        return _geodesic_methods.distance(self, theta_0, theta_1, cfg, throw)

    def _geodesic_distance_closed_form(self, theta_0: Point, theta_1: Point) -> Scalar:
        """Closed-form Fisher-Rao distance of checked points, or ``NotImplemented`` (default).

        Override in families with a closed form; :meth:`geodesic_distance` dispatches to it.
        """
        return NotImplemented

    # Closed forms of the geodesic methods: ``NotImplemented`` (the default) means "solve the
    # ODE". They receive checked points and a checked alpha (a Python number stays static, so an
    # override may key on its value); a manifold with flat connections overrides them.
    def _exp_map_closed_form(
        self, theta: Point, v: Tangent, alpha: ScalarLike, throw: bool
    ) -> Point:
        """Closed-form :meth:`exp_map`, or ``NotImplemented`` (default)."""
        return NotImplemented

    def _geodesic_closed_form(
        self, theta: Point, v: Tangent, ts: Array, alpha: ScalarLike, throw: bool
    ) -> Array:
        """Closed-form :meth:`geodesic` at the 1-D times ``ts``, or ``NotImplemented``."""
        return NotImplemented

    def _log_map_closed_form(
        self, theta_0: Point, theta_1: Point, alpha: ScalarLike
    ) -> tuple[Tangent, Tangent]:
        """Closed-form velocities at both ends of the geodesic, or ``NotImplemented``."""
        return NotImplemented

    def _transport_closed_form(
        self,
        theta: Point,
        w: Tangent,
        end_point: Callable[[], Point],
        transport_alpha: ScalarLike,
    ) -> Tangent:
        """Closed-form :meth:`parallel_transport` of ``w``, or ``NotImplemented``.

        ``end_point()`` gives the end of the curve (computed only if called).
        """
        return NotImplemented

    def parallel_transport(
        self,
        theta: PointLike,
        w: Tangent,
        v: Tangent | None = None,
        *,
        end_point: PointLike | None = None,
        alpha: ScalarLike = 0.0,
        transport_alpha: ScalarLike | None = None,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
    ) -> Tangent:
        r"""Parallel transport of ``w`` along an alpha-geodesic, with the alpha' connection.

        The curve is the alpha-geodesic :math:`x(t) = \exp^{(\alpha)}_\theta(tv)`,
        :math:`t \in [0, 1]`, given by its initial velocity ``v`` or by its ``end_point``
        (then :math:`v = \log^{(\alpha)}_\theta(\text{end\_point})`). Along it ``w`` is
        transported with the connection of ``transport_alpha`` (default ``alpha``):
        :math:`\dot W^k + \Gamma^{(\alpha')k}_{ij}\dot x^i W^j = 0`. Transports along
        alpha' and -alpha' preserve the pairing,
        :math:`g(\Pi^{(\alpha')}u, \Pi^{(-\alpha')}w) = g(u, w)` (duality), and alpha' = 0
        preserves g. For an exponential family and a Python ``transport_alpha`` of +1 or -1
        the flat closed forms are used: :math:`W(1) = w` (e-transport, natural coordinates)
        and :math:`W(1) = g(x(1))^{-1}g(\theta)w` (m-transport).

        Differentiable in forward and reverse mode with respect to ``theta``, ``w`` and ``v``
        (or ``end_point``), through the variational equations of the transport system.

        Args:
            theta: start point, shape ``(dim,)``.
            w: the tangent vector at ``theta`` to transport, shape ``(dim,)``.
            v: initial velocity of the curve (give exactly one of ``v`` and ``end_point``).
            end_point: end point of the curve.
            alpha: alpha of the geodesic along which to transport.
            transport_alpha: alpha of the connection that transports (default ``alpha``).
            solver: numerical settings.
            throw: raise (also under ``jit``) if a solve fails.

        Returns:
            The transported vector at the end of the curve, shape ``(dim,)``.

        Raises:
            ValueError: unless exactly one of ``v`` and ``end_point`` is given.
            equinox.EquinoxRuntimeError: if a solve failed and ``throw=True``.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> fam = Normal()
            >>> a = fam.from_usual(jnp.array([0.0, 1.0]))
            >>> b = fam.from_usual(jnp.array([1.0, 2.0]))
            >>> w = fam.parallel_transport(a, jnp.array([1.0, 0.0]), end_point=b)
            >>> w.shape
            (2,)

        References:
            Amari & Nagaoka (2000), Theorem 3.1 (duality of parallel transports).
        """
        if (v is None) == (end_point is None):
            raise ValueError("parallel_transport: give exactly one of `v` and `end_point`.")
        theta = self.check_point(theta)
        w = self._check_tangent(theta, w, "w")
        alpha = check_alpha(alpha)
        transport_alpha = alpha if transport_alpha is None else transport_alpha
        transport_alpha = check_alpha(transport_alpha, "transport_alpha")
        if end_point is not None:
            theta, end = self._check_pair(theta, end_point)
            v = self.log_map(theta, end, alpha, solver=solver, throw=throw)
        else:
            end = None
            v = self._check_tangent(theta, cast(Tangent, v), "v")
        cfg = _geodesic_methods.settings(solver, theta)
        return _geodesic_methods.transport(
            self, alpha, transport_alpha, theta, v, w, end, cfg, throw
        )

    def _check_pair(self, theta_0: PointLike, theta_1: PointLike) -> tuple[Point, Point]:
        theta_0 = self.check_point(theta_0)
        theta_1 = self.check_point(as_point(theta_1, theta_0.shape[0], "theta_1"))
        dtype = jnp.result_type(theta_0.dtype, theta_1.dtype)
        return theta_0.astype(dtype), theta_1.astype(dtype)
