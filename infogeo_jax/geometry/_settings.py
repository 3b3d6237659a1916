r"""Settings of the geodesic solvers and the outcome of the logarithm-map solve."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Array, Scalar, Tangent
from .._results import RESULTS


class GeodesicSolver(eqx.Module):
    r"""Numerical settings of the geodesic solvers (``exp_map``, ``log_map``, ...).

    Every ``None`` takes a dtype-aware default: in float64 the Dopri8 method with
    ``rtol = atol = 1e-12`` and a Newton tolerance of ``1e-11``; in float32 Tsit5 with
    ``rtol = atol = 1e-6`` and a Newton tolerance of ``1e-4``.

    Args:
        ode_solver: an adaptive diffrax solver (e.g. ``diffrax.Tsit5()``, ``diffrax.Dopri8()``).
        rtol: relative tolerance of the PID step-size controller.
        atol: absolute tolerance of the PID step-size controller.
        pcoeff: proportional coefficient of the PID controller.
        icoeff: integral coefficient of the PID controller.
        max_steps: maximum number of ODE steps per solve (static).
        max_shooting_steps: maximum number of ODE steps of one shot of ``log_map`` (static).
            A trial shot that needs more is a bad Newton iterate (it runs towards the boundary
            or blows up) and is rejected like a shot that leaves the domain, so that it costs
            little; a converged geodesic of a hard pair takes well under a hundred steps.
        min_step: smallest ODE step, as a fraction of the integration interval; below it the
            solve fails rather than creep along a boundary. Not applied by ``geodesic`` at
            several times, whose steps land on those times (a step clipped there can be tiny);
            there such a solve fails at ``max_steps``.
        newton_rtol: relative tolerance of the shooting: it stops when every mismatch (at the
            junctions of the segments and at the end point) is at most
            :math:`\mathrm{atol} + \mathrm{rtol}|x|` elementwise, x the matched quantity.
        newton_atol: absolute tolerance of the same test.
        max_newton_steps: maximum number of shots (ODE solves) in ``log_map`` (static).
        max_backtracks: halvings of a Newton step that does not reduce the residual before the
            continuation step is reduced instead (static).
        min_continuation_step: smallest continuation step in the target before ``log_map``
            gives up with ``RESULTS.continuation_failed``.
        num_segments: number of segments of the multiple shooting in ``log_map`` (static); 1 is
            single shooting. More segments widen Newton's basin on strongly curved manifolds
            at the cost of more trajectories per solve.

    Example:
        >>> import diffrax
        >>> from infogeo_jax.geometry import GeodesicSolver
        >>> solver = GeodesicSolver(ode_solver=diffrax.Tsit5(), rtol=1e-8, atol=1e-8)
    """

    ode_solver: diffrax.AbstractAdaptiveSolver | None = None
    rtol: float | None = None
    atol: float | None = None
    pcoeff: float = 0.0
    icoeff: float = 1.0
    max_steps: int = eqx.field(static=True, default=4096)
    max_shooting_steps: int = eqx.field(static=True, default=256)
    min_step: float | None = None
    newton_rtol: float | None = None
    newton_atol: float | None = None
    max_newton_steps: int = eqx.field(static=True, default=200)
    max_backtracks: int = eqx.field(static=True, default=8)
    min_continuation_step: float = 1e-6
    num_segments: int = eqx.field(static=True, default=4)

    def __check_init__(self):
        if self.ode_solver is not None and not isinstance(
            self.ode_solver, diffrax.AbstractAdaptiveSolver
        ):
            raise TypeError(
                "`ode_solver` must be an adaptive diffrax solver such as diffrax.Tsit5() or "
                f"diffrax.Dopri8(), got {type(self.ode_solver).__name__}."
            )
        if min(self.max_steps, self.max_shooting_steps, self.max_newton_steps) < 1 or (
            self.num_segments < 1
        ):
            raise ValueError(
                "`max_steps`, `max_shooting_steps`, `max_newton_steps` and `num_segments` must "
                "be positive integers."
            )

    def _for(self, dtype) -> _Settings:
        wide = jnp.finfo(dtype).bits >= 64
        ode_tol = 1e-12 if wide else 1e-6
        newton_tol = 1e-11 if wide else 1e-4
        return _Settings(
            ode_solver=self.ode_solver
            if self.ode_solver is not None
            else (diffrax.Dopri8() if wide else diffrax.Tsit5()),
            rtol=ode_tol if self.rtol is None else self.rtol,
            atol=ode_tol if self.atol is None else self.atol,
            pcoeff=self.pcoeff,
            icoeff=self.icoeff,
            max_steps=self.max_steps,
            max_shooting_steps=self.max_shooting_steps,
            min_step=(1e-10 if wide else 1e-5) if self.min_step is None else self.min_step,
            newton_rtol=newton_tol if self.newton_rtol is None else self.newton_rtol,
            newton_atol=newton_tol if self.newton_atol is None else self.newton_atol,
            max_newton_steps=self.max_newton_steps,
            max_backtracks=self.max_backtracks,
            min_continuation_step=self.min_continuation_step,
            num_segments=self.num_segments,
        )


class _Settings(eqx.Module):
    """A :class:`GeodesicSolver` with every default resolved for one dtype."""

    ode_solver: diffrax.AbstractAdaptiveSolver
    rtol: float
    atol: float
    pcoeff: float
    icoeff: float
    max_steps: int = eqx.field(static=True)
    max_shooting_steps: int = eqx.field(static=True)
    min_step: float
    newton_rtol: float
    newton_atol: float
    max_newton_steps: int = eqx.field(static=True)
    max_backtracks: int = eqx.field(static=True)
    min_continuation_step: float
    num_segments: int = eqx.field(static=True)


class LogMapSolution(eqx.Module):
    """Outcome of the shooting solve of the logarithm map.

    Attributes:
        velocity: initial velocity :math:`v` of the alpha-geodesic from ``theta_0`` that
            reaches ``theta_1`` at ``t = 1``, shape ``(dim,)``.
        end_velocity: velocity of that geodesic at ``t = 1`` (at ``theta_1``).
        result: a :class:`RESULTS` code; ``RESULTS.successful`` when converged.
        residual: root-mean-square of the scaled shooting residual (the solve converged when
            every scaled entry is at most 1).
        num_steps: number of shots (ODE solves) taken.
    """

    velocity: Tangent
    end_velocity: Tangent
    result: RESULTS
    residual: Scalar
    num_steps: Array


# Status of one shooting solve (an integer, also under vmap).
_RUNNING, _SUCCESS, _STALLED, _ILL_CONDITIONED = 0, 1, 2, 3


def solution_from_status(velocity, end_velocity, status, residual, num_steps) -> LogMapSolution:
    """Wrap the raw outputs of :func:`newton_shooting` into a :class:`LogMapSolution`."""
    result = RESULTS.where(status == _SUCCESS, RESULTS.successful, RESULTS.max_newton_steps_reached)
    result = RESULTS.where(status == _STALLED, RESULTS.continuation_failed, result)
    result = RESULTS.where(status == _ILL_CONDITIONED, RESULTS.ill_conditioned_metric, result)
    return LogMapSolution(
        velocity=velocity,
        end_velocity=end_velocity,
        result=result,
        residual=residual,
        num_steps=num_steps,
    )
