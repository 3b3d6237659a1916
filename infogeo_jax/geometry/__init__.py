"""Metric-level Riemannian engine: connections, curvature, geodesics from (g, T) alone.

The functions here take plain callables ``metric(theta)`` and ``skewness(theta)``; the methods of
:class:`infogeo_jax.AbstractStatisticalManifold` are thin wrappers around them.
"""
