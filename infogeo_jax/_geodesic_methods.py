r"""The jitted bodies of the geodesic methods of :class:`AbstractStatisticalManifold`.

Each function is jitted once per manifold, alpha and solver settings. A manifold's closed forms
(the flat e- and m-connections of an exponential family, say) come in through its hooks
``_exp_map_closed_form``, ``_geodesic_closed_form``, ``_log_map_closed_form`` and
``_transport_closed_form``, which return ``NotImplemented`` where there is none; the numerical
routes are the solvers of :mod:`infogeo_jax.geometry`.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Point, Tangent
from ._misc import fail_or_nan
from ._results import RESULTS
from .geometry import _geodesic
from .geometry._geodesic import GeodesicSolver, LogMapSolution

ODE_FAILED = (
    "exp_map/geodesic: the geodesic ODE solve failed: the geodesic left the domain of the "
    "manifold, or the solver hit `max_steps` or its minimum step size. Use a shorter "
    "velocity, or raise `GeodesicSolver(max_steps=...)`; throw=False returns NaN instead."
)


def concretely_nonnegative(t) -> bool:
    """Whether ``t`` is known now (not traced) and has no negative entry."""
    try:
        return bool(np.all(np.asarray(t) >= 0))
    except jax.errors.JAXTypeError:
        return False


def settings(solver: GeodesicSolver | None, theta: Point) -> Any:
    """The solver's settings in the dtype of ``theta`` (the default solver for ``None``)."""
    if solver is None:
        solver = GeodesicSolver()
    elif not isinstance(solver, GeodesicSolver):
        raise TypeError(
            f"`solver` must be an infogeo_jax.geometry.GeodesicSolver, got {type(solver).__name__}."
        )
    return solver._for(theta.dtype)


@eqx.filter_jit
def exp_map(space, alpha, theta, v, cfg, throw):
    closed = space._exp_map_closed_form(theta, v, alpha, throw)
    if closed is not NotImplemented:
        return closed
    ts = jnp.ones((1,), theta.dtype)
    x, _, ok = _geodesic.flow(space, alpha, theta, v, ts, cfg)
    return fail_or_nan(x[0], ok, throw, ODE_FAILED)


@eqx.filter_jit
def geodesic(space, alpha, theta, v, ts, cfg, throw, nonnegative):
    closed = space._geodesic_closed_form(theta, v, ts, alpha, throw)
    if closed is not NotImplemented:
        return closed
    tau = jnp.abs(ts)
    order = jnp.argsort(tau)
    inverse = jnp.argsort(order)
    tau_sorted = tau[order]
    if nonnegative:
        x, _, ok = _geodesic.flow(space, alpha, theta, v, tau_sorted, cfg)
        x = x[inverse]
    else:
        both = jnp.stack([v, -v])
        x_pm, _, ok_pm = jax.vmap(
            lambda vel: _geodesic.flow(space, alpha, theta, vel, tau_sorted, cfg)
        )(both)
        x = jnp.where((ts >= 0)[:, None], x_pm[0][inverse], x_pm[1][inverse])
        ok = jnp.all(ok_pm)
    return fail_or_nan(x, ok, throw, ODE_FAILED)


@eqx.filter_jit
def solve_log_map(space, alpha, theta_0, theta_1, cfg) -> LogMapSolution:
    closed = space._log_map_closed_form(theta_0, theta_1, alpha)
    if closed is not NotImplemented:
        v, u = closed
        return _geodesic.solution_from_status(
            v, u, jnp.asarray(_geodesic._SUCCESS), jnp.zeros((), v.dtype), jnp.asarray(0)
        )
    raw = _geodesic.log_map_core(space, alpha, theta_0, theta_1, cfg)
    return _geodesic.solution_from_status(*raw[:5])


# The convergence checks of `log_map` and `distance` stay outside the jitted solves: called
# eagerly, the compiled solve then holds no host callback (`equinox.error_if` is one), so that
# JAX's persistent compilation cache can keep it (it does not store programs with host
# callbacks), and the check runs on the concrete result. Under an outer `jit` the check is
# traced into the caller's program as before.
def log_map(space, alpha, theta_0, theta_1, cfg, throw):
    sol = solve_log_map(space, alpha, theta_0, theta_1, cfg)
    if throw:
        return sol.result.error_if(sol.velocity, sol.result != RESULTS.successful)
    return sol.velocity


@eqx.filter_jit
def _distance_and_result(space, theta_0, theta_1, cfg):
    dist, raw = _geodesic.distance_core(space, theta_0, theta_1, cfg)
    return dist, _geodesic.solution_from_status(*raw[:5]).result


def distance(space, theta_0, theta_1, cfg, throw):
    dist, result = _distance_and_result(space, theta_0, theta_1, cfg)
    if throw:
        dist = result.error_if(dist, result != RESULTS.successful)
    return dist


@eqx.filter_jit
def transport(space, alpha, transport_alpha, theta, v, w, end, cfg, throw) -> Tangent:
    def end_point() -> Point:
        return exp_map(space, alpha, theta, v, cfg, throw) if end is None else end

    closed = space._transport_closed_form(theta, w, end_point, transport_alpha)
    if closed is not NotImplemented:
        return closed
    _, w1, ok = _geodesic.transport(space, alpha, transport_alpha, theta, v, w, cfg)
    return fail_or_nan(w1, ok, throw, ODE_FAILED.replace("exp_map/geodesic", "parallel_transport"))
