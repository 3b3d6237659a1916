r"""A statistical manifold given directly by a user's metric (and optional skewness) function."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from ._custom_types import Metric, Point, PointLike, Scalar, Tensor3
from ._manifold import AbstractStatisticalManifold
from ._misc import check_metric, finite_and_in_domain


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
        >>> round(float(half_plane.scalar_curvature(jnp.array([0.0, 2.0]))), 4)
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
        return finite_and_in_domain(theta, self.in_domain_fn)

    def metric(self, theta: PointLike) -> Metric:
        r"""The user's metric at ``theta``, shape ``(dim, dim)``.

        Checked at every evaluation (eagerly and under ``jit``): it must be finite, symmetric
        (to within :math:`\sqrt{\epsilon}\max|g|`) and positive definite, otherwise an
        ``equinox.EquinoxRuntimeError`` names the failing condition; every derived quantity
        (curvature, geodesics, norms) goes through this check.

        Raises:
            ValueError: if ``metric(theta)`` does not have shape ``(dim, dim)``.
            TypeError: if it is complex.
            RuntimeError: if it is not finite, not symmetric or not positive definite.
        """
        theta = self.check_point(theta)
        g = jnp.asarray(self.metric_fn(theta))
        d = theta.shape[0]
        if g.shape != (d, d):
            raise ValueError(f"`metric(theta)` must have shape ({d}, {d}), got {g.shape}.")
        if jnp.issubdtype(g.dtype, jnp.complexfloating):
            raise TypeError(f"`metric(theta)` must be real, got dtype {g.dtype}.")
        if not jnp.issubdtype(g.dtype, jnp.inexact):
            g = g.astype(theta.dtype)
        return check_metric(g, "`metric(theta)`")

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
