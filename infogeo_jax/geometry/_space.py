r"""What the geodesic solvers need from a manifold: a small structural protocol.

The solvers of :mod:`infogeo_jax.geometry` never import the statistical manifolds above them;
they take any object with these four methods. :class:`infogeo_jax.AbstractStatisticalManifold`
provides all four (generic routes from the metric and the skewness tensor), and an exponential
family overrides the last two with its flat-connection shortcuts.
"""

from __future__ import annotations

from typing import Protocol

from .._custom_types import Array, Float, Metric, Point, Scalar, ScalarLike, Tangent


class GeodesicSpace(Protocol):
    r"""A Riemannian manifold with an alpha-connection, in one chart of dimension ``dim``."""

    def metric(self, theta: Point) -> Metric:
        r"""The metric :math:`g_{ij}(\theta)`, ``(dim, dim)``."""
        ...

    def in_domain(self, theta: Point) -> Scalar:
        r"""Whether :math:`\theta` lies in the domain of the chart (boolean scalar)."""
        ...

    def _christoffel_contract(
        self, theta: Point, u: Tangent, w: Tangent, alpha: ScalarLike
    ) -> Tangent:
        r"""Contracted symbols :math:`\Gamma^{(\alpha)k}_{ij}(\theta) u^i w^j`, ``(dim,)``."""
        ...

    def _initial_velocities(
        self, theta_0: Point, theta_1: Point, alpha: ScalarLike, times: Array
    ) -> tuple[Float[Array, "times dim"], Float[Array, "times dim dim"]]:
        r"""Guesses of the log-map velocities along the segment, and the metrics there."""
        ...
