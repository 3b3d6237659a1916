"""Metric-level Riemannian engine: connections, curvature, geodesics from (g, T) alone.

The curvature functions here take plain callables ``metric(theta)`` and ``skewness(theta)``; the
geodesic solvers take a manifold. The methods of :class:`infogeo_jax.AbstractStatisticalManifold`
are thin wrappers around them. Public here: the settings of the geodesic solvers
(:class:`GeodesicSolver`), the outcome of the logarithm-map solve (:class:`LogMapSolution`) and
its result codes (:class:`RESULTS`).
"""

from .._results import RESULTS as RESULTS
from ._settings import (
    GeodesicSolver as GeodesicSolver,
    LogMapSolution as LogMapSolution,
)
