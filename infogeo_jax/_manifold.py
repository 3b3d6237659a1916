r"""The shared abstract base of every statistical manifold, and the user-metric manifold.

A statistical manifold is a triple :math:`(M, g, T)`: a Riemannian metric :math:`g` (the Fisher
metric for a statistical model) and a totally symmetric skewness tensor :math:`T` (the
Amari-Chentsov tensor). Everything else (the alpha-connections, their curvature, geodesics,
distances, parallel transport) is derived from :math:`(g, T)` alone by automatic differentiation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from ._custom_types import (
    Metric,
    Point,
    PointLike,
    Scalar,
    ScalarLike,
    Tangent,
    Tensor3,
    Tensor4,
)
from ._misc import as_point, check_domain
from .geometry import _curvature


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
        return check_domain(
            theta,
            self.in_domain(theta),
            f"theta is outside the parameter domain of {type(self).__name__}.",
        )

    @abc.abstractmethod
    def metric(self, theta: PointLike) -> Metric:
        r"""The metric :math:`g_{ij}(\theta)`, shape ``(dim, dim)``, index order ``[i, j]``."""

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
        return _curvature.riemann_from_christoffel(
            lambda th: self.christoffel_symbols(th, alpha), theta
        )

    def ricci_tensor(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Metric:
        r"""Ricci tensor ``[i, k]`` :math:`= R^l{}_{ilk}` of the alpha-connection."""
        return _curvature.ricci_from_riemann(self.riemann_tensor(theta, alpha))

    def scalar_curvature(self, theta: PointLike, alpha: ScalarLike = 0.0) -> Scalar:
        r"""Scalar curvature :math:`g^{ik} R_{ik}` of the alpha-connection.

        A sphere of radius r gives :math:`2/r^2`; the univariate normal family gives -1 (and
        :math:`-(1-\alpha^2)` for the alpha-connection).

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax.families import Normal
            >>> float(Normal().scalar_curvature(jnp.array([0.3, -0.5])))  # doctest: +SKIP
            -1.0
        """
        theta = self.check_point(theta)
        return _curvature.scalar_from_ricci(
            self.metric(theta), self.ricci_tensor(theta, alpha)
        )

    def sectional_curvature(
        self, theta: PointLike, u: Tangent, v: Tangent, alpha: ScalarLike = 0.0
    ) -> Scalar:
        r"""Sectional curvature of the plane spanned by tangent vectors ``u`` and ``v``.

        .. math::
            K(u, v) = \frac{g(R(u, v) v, u)}{g(u,u) g(v,v) - g(u,v)^2}.
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
        from ._misc import safe_sqrt

        return safe_sqrt(self.inner(theta, v, v))


class StatisticalManifold(AbstractStatisticalManifold):
    r"""A statistical manifold from a user's metric (and optional skewness) function.

    Args:
        metric: ``metric(theta) -> (dim, dim)`` symmetric positive-definite matrix.
        skewness: optional ``skewness(theta) -> (dim, dim, dim)`` totally symmetric tensor;
            ``None`` means zero, i.e. a plain Riemannian manifold on which every
            alpha-connection is the Levi-Civita connection.
        dim: optional static dimension, used for shape checks.
        in_domain: optional ``in_domain(theta) -> bool`` predicate for the coordinate domain.

    Example:
        >>> import jax.numpy as jnp
        >>> # The hyperbolic half-plane (Poincare metric), curvature -1 / scalar curvature -2.
        >>> half_plane = StatisticalManifold(lambda th: jnp.eye(2) / th[1] ** 2)
        >>> float(half_plane.scalar_curvature(jnp.array([0.0, 2.0])))  # doctest: +SKIP
        -2.0
    """

    metric_fn: Callable[[Point], Metric]
    skewness_fn: Callable[[Point], Tensor3] | None = None
    static_dim: int | None = eqx.field(static=True, default=None)
    in_domain_fn: Callable[[Point], Scalar] | None = None

    def __init__(
        self,
        metric: Callable[[Point], Metric],
        skewness: Callable[[Point], Tensor3] | None = None,
        *,
        dim: int | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
    ):
        if not callable(metric):
            raise TypeError("`metric` must be a callable theta -> (dim, dim) array.")
        if skewness is not None and not callable(skewness):
            raise TypeError("`skewness` must be None or a callable theta -> (dim, dim, dim).")
        self.metric_fn = metric
        self.skewness_fn = skewness
        self.static_dim = dim
        self.in_domain_fn = in_domain

    @property
    def dim(self) -> int | None:
        return self.static_dim

    def in_domain(self, theta: Point) -> Scalar:
        ok = jnp.all(jnp.isfinite(theta))
        if self.in_domain_fn is not None:
            ok = jnp.logical_and(ok, self.in_domain_fn(theta))
        return ok

    def metric(self, theta: PointLike) -> Metric:
        """The user's metric at ``theta``, shape ``(dim, dim)``."""
        theta = self.check_point(theta)
        g = jnp.asarray(self.metric_fn(theta))
        d = theta.shape[0]
        if g.shape != (d, d):
            raise ValueError(f"`metric(theta)` must have shape ({d}, {d}), got {g.shape}.")
        return g

    def skewness_tensor(self, theta: PointLike) -> Tensor3:
        """The user's skewness tensor at ``theta`` (zero when none was given)."""
        if self.skewness_fn is None:
            return super().skewness_tensor(theta)
        theta = self.check_point(theta)
        t = jnp.asarray(self.skewness_fn(theta))
        d = theta.shape[0]
        if t.shape != (d, d, d):
            raise ValueError(f"`skewness(theta)` must have shape ({d}, {d}, {d}), got {t.shape}.")
        return t

    def _has_skewness(self) -> bool:
        return self.skewness_fn is not None
