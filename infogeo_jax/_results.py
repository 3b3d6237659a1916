"""Result codes shared by every iterative solver of the package.

One :class:`RESULTS` enumeration holds the outcomes of the information projections, of EM and
of the geodesic (logarithm-map) solves. It is public as ``infogeo_jax.RESULTS`` and, for the
geodesic solvers, as ``infogeo_jax.geometry.RESULTS``: both names are the same object, so a code
returned by any solver compares equal to ``RESULTS.<name>`` through either path.
"""

from __future__ import annotations

import equinox as eqx


class RESULTS(eqx.Enumeration):
    """Outcome codes of the iterative solvers (compare with ``==``).

    ``successful`` is shared. The projections and EM report ``max_steps_reached``,
    ``nonfinite``, ``stalled`` and ``degenerate``; the logarithm map (and so the Fisher-Rao
    distance) reports ``max_newton_steps_reached``, ``continuation_failed`` and
    ``ill_conditioned_metric``.
    """

    successful = ""
    # --- projections and EM
    max_steps_reached = (
        "The iteration reached its step limit before converging. Raise `max_steps` (`num_steps` "
        "for EM), loosen the tolerance, or pass `throw=False` to inspect the last iterate."
    )
    nonfinite = (
        "A non-finite value appeared. The projection may not exist (the target lies on the "
        "boundary of the mean domain), `basis` or `constraint_matrix` may not have full rank, "
        "or the starting point is too far: pass a better `initial_coordinates`."
    )
    stalled = (
        "The line search could not decrease the objective: the problem is badly conditioned "
        "at this precision (use float64) or the expectation rule is too inaccurate."
    )
    degenerate = (
        "A mixture component lost all its weight or collapsed to the boundary of its family "
        "(e.g. a Gaussian on a single point). Use another initialization or fewer components."
    )
    # --- geodesic solvers
    max_newton_steps_reached = (
        "log_map: Newton shooting did not converge within `max_newton_steps` shots. The two "
        "points may be very far apart or near the boundary of the domain; raise "
        "`GeodesicSolver(max_newton_steps=...)`, or use throw=False and inspect the solution."
    )
    continuation_failed = (
        "log_map: Newton shooting failed even for targets very close to the converged ones "
        "(the continuation step fell below `min_continuation_step`). The geodesic may leave "
        "the domain, or the exponential map may be singular (conjugate points) here."
    )
    ill_conditioned_metric = (
        "log_map: Newton shooting did not converge, and the metric is too ill-conditioned in "
        "these coordinates for its tolerance (condition number of the equilibrated metric at "
        "an end point, times the machine epsilon, exceeds `newton_rtol`): the geodesic "
        "equation cannot be solved to that accuracy in this chart. Use better-conditioned "
        "coordinates (e.g. a location-scale chart instead of natural parameters far from the "
        "origin), or loosen `GeodesicSolver(newton_rtol=..., newton_atol=...)`."
    )
