r"""Geodesics, exponential and logarithm maps, distances and parallel transport (diffrax ODEs).

Everything here is derived from one matrix-free object of the manifold, the contracted
Christoffel symbols :math:`\Gamma^{(\alpha)k}_{ij} u^i w^j` (``space._christoffel_contract``),
and from ``space.metric`` and ``space.in_domain``:

- the alpha-geodesic equation :math:`\ddot x^k + \Gamma^{(\alpha)k}_{ij}\dot x^i\dot x^j = 0`,
  solved as a first-order system in :math:`(x, \dot x)` by an adaptive Runge-Kutta method
  (Dopri8 in float64, Tsit5 in float32) with PID step-size control;
- its variational (Jacobi-field) equations, integrated alongside, giving the Jacobian of the
  exponential map for the custom JVP rules (so that ``jax.jvp``, ``jax.grad`` and
  ``jax.jacfwd`` work without differentiating through the solver or the Newton iterations);
- the logarithm map by damped Newton multiple shooting with continuation in the target, its
  Jacobians by internal numerical differentiation (perturbed trajectories on the same steps);
- the parallel-transport equation :math:`\dot W^k + \Gamma^{(\alpha')k}_{ij}\dot x^i W^j = 0`
  along an alpha-geodesic.

A trajectory that leaves the domain (``in_domain`` false) makes the vector field NaN, which the
step-size controller rejects; the solve then fails with a result code instead of returning a
silently wrong point.
"""

from __future__ import annotations

from typing import Any, cast

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._custom_types import Array, Point, Scalar, Tangent
from .._results import RESULTS
from ._space import GeodesicSpace


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
            solve fails rather than creep along a boundary.
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


# ---------------------------------------------------------------------------------------------
# The vector fields
# ---------------------------------------------------------------------------------------------
def _contract(space: GeodesicSpace, alpha, anchor: Point):
    """Domain-safe contracted Christoffel symbols ``(x, u, w) -> Gamma^k_ij u^i w^j``.

    Outside the domain the result is NaN (so the step is rejected) and the manifold is only
    ever evaluated at ``anchor``, so that its own domain checks never fire inside a solve.
    """

    def contract(x, u, w):
        ok = space.in_domain(x)
        safe_x = jnp.where(ok, x, anchor)
        out = space._christoffel_contract(safe_x, u, w, alpha)
        return jnp.where(ok, out, jnp.nan)

    return contract


def _primal_norm(error) -> Array:
    """Error norm over the position and velocity only (tangents ride on the same steps)."""
    return optx.rms_norm((error[0], error[1]))


def _odesolve(
    vector_field,
    y0,
    t1,
    cfg: _Settings,
    *,
    ts=None,
    adjoint=None,
    norm=_primal_norm,
    max_steps=None,
):
    """Solve ``dy/dt = vector_field(y)`` on ``[0, t1]`` from the tuple ``y0``.

    Returns ``(ys, ok)``: the state at ``t1`` (or at each of ``ts``, leading axis) and whether
    the solve succeeded with a finite state.
    """
    dtype = y0[0].dtype
    t1 = jnp.asarray(t1, dtype)
    controller = diffrax.PIDController(
        rtol=cfg.rtol,
        atol=cfg.atol,
        pcoeff=cfg.pcoeff,
        icoeff=cfg.icoeff,
        norm=norm,
        dtmin=cfg.min_step * t1,
        force_dtmin=False,
    )
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts)
    kwargs: dict[str, Any] = {} if adjoint is None else {"adjoint": adjoint}
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vector_field(y)),
        cfg.ode_solver,
        t0=jnp.zeros((), dtype),
        t1=t1,
        dt0=None,
        y0=y0,
        saveat=saveat,
        stepsize_controller=controller,
        max_steps=cfg.max_steps if max_steps is None else max_steps,
        throw=False,
        **kwargs,
    )
    ys = cast(tuple, sol.ys)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in ys]))
    ok = (sol.result == diffrax.RESULTS.successful) & finite
    if ts is None:
        ys = tuple(a[0] for a in ys)
    return ys, ok


def _geodesic_field(contract):
    def field(y):
        x, u = y
        return u, -contract(x, u, u)

    return field


def _variational_field(contract):
    """Geodesic flow with its variational (Jacobi-field) equations, tangents stacked first."""
    acceleration = lambda x, u: -contract(x, u, u)

    def field(y):
        x, u, dx, du = y

        def push(tx, tu):
            return jax.jvp(acceleration, (x, u), (tx, tu))

        acc, dacc = jax.vmap(push, out_axes=(None, 0))(dx, du)
        return u, acc, du, dacc

    return field


# ---------------------------------------------------------------------------------------------
# The flow and its Jacobian
# ---------------------------------------------------------------------------------------------
def flow_jacobian(space, alpha, theta, v, cfg: _Settings, ts=None):
    r"""Flow of the alpha-geodesic with its Jacobian with respect to ``(theta, v)``.

    Returns ``(x, u, jac_x, jac_u, ok)`` at time 1 (or at each of ``ts``), where
    ``jac_x[..., m, :]`` is the derivative of the position along the m-th of the ``2 dim``
    input directions (first the ``dim`` directions of ``theta``, then those of ``v``).
    """
    d = theta.shape[0]
    eye = jnp.eye(d, dtype=theta.dtype)
    zero = jnp.zeros_like(eye)
    dx0 = jnp.concatenate([eye, zero])
    du0 = jnp.concatenate([zero, eye])
    field = _variational_field(_contract(space, alpha, theta))
    t1 = 1.0 if ts is None else ts[-1]
    (x, u, jx, ju), ok = _odesolve(
        field, (theta, v, dx0, du0), t1, cfg, ts=ts, adjoint=diffrax.ForwardMode()
    )
    return x, u, jx, ju, ok


@eqx.filter_custom_jvp
def flow(space, alpha, theta, v, ts, cfg):
    r"""Positions and velocities of the alpha-geodesic through ``(theta, v)`` at times ``ts``.

    :math:`\gamma(0) = \theta`, :math:`\dot\gamma(0) = v`; ``ts`` nonnegative, nondecreasing.
    Returns ``(x, u, ok)``, ``x`` and ``u`` of shape ``(len(ts), dim)``. Differentiable
    (forward and reverse mode) through the variational equations.
    """
    field = _geodesic_field(_contract(space, alpha, theta))
    (x, u), ok = _odesolve(field, (theta, v), ts[-1], cfg, ts=ts)
    return x, u, ok


@flow.def_jvp
def _flow_jvp(primals, tangents):
    space, alpha, theta, v, ts, cfg = primals
    t_space, t_alpha, t_theta, t_v, t_ts, _ = tangents
    _no_parameter_tangents(t_space, t_alpha, "the geodesic flow")
    x, u, jx, ju, ok = flow_jacobian(space, alpha, theta, v, cfg, ts=ts)
    d = theta.shape[0]
    t_theta = jnp.zeros_like(theta) if t_theta is None else t_theta
    t_v = jnp.zeros_like(v) if t_v is None else t_v
    direction = jnp.concatenate([t_theta, t_v])
    dx = jnp.einsum("nmk,m->nk", jx, direction)
    du = jnp.einsum("nmk,m->nk", ju, direction)
    if t_ts is not None:
        # d/dt x = u and d/dt u = -Gamma(u, u) at each saved time.
        contract = _contract(space, alpha, theta)
        acc = -jax.vmap(lambda xi, ui: contract(xi, ui, ui))(x, u)
        dx = dx + u * t_ts[:, None]
        du = du + acc * t_ts[:, None]
    del d
    return (x, u, ok), (dx, du, None)


def _no_parameter_tangents(t_space, t_alpha, what: str) -> None:
    if any(leaf is not None for leaf in jax.tree_util.tree_leaves(t_space)):
        raise NotImplementedError(
            f"Differentiating {what} with respect to the manifold's own parameters is not "
            "supported; differentiate with respect to the points and tangent vectors."
        )
    if t_alpha is not None:
        raise NotImplementedError(f"Differentiating {what} with respect to alpha is not supported.")


# ---------------------------------------------------------------------------------------------
# The logarithm map: damped Newton shooting with continuation
# ---------------------------------------------------------------------------------------------
class _Tableau(eqx.Module):
    """An explicit embedded Runge-Kutta tableau (full lower-triangular ``a``), ``stages`` used."""

    a: Array  # (stages, stages)
    b: Array  # (stages,)
    e: Array  # (stages,) error weights
    order: int = eqx.field(static=True)


def _tableau(cfg: _Settings, dtype) -> _Tableau:
    solver = cfg.ode_solver
    tab = getattr(solver, "tableau", None)
    if tab is None:
        raise TypeError(
            "log_map needs an explicit Runge-Kutta `ode_solver` (such as diffrax.Dopri8(), "
            f"diffrax.Tsit5() or diffrax.Dopri5()), got {type(solver).__name__}."
        )
    b = np.asarray(tab.b_sol, dtype=np.float64)
    e = np.asarray(tab.b_error, dtype=np.float64)
    used = np.nonzero((b != 0) | (e != 0))[0]
    stages = int(used[-1]) + 1
    a = np.zeros((stages, stages))
    for i, row in enumerate(tab.a_lower[: stages - 1]):
        a[i + 1, : len(row)] = row
    order = solver.order(None)  # pyright: ignore[reportArgumentType]
    return _Tableau(
        a=jnp.asarray(a, dtype),
        b=jnp.asarray(b[:stages], dtype),
        e=jnp.asarray(e[:stages], dtype),
        order=int(order) if order is not None else 4,
    )


def _rk_step(field, tab: _Tableau, y, h):
    """One embedded Runge-Kutta step of ``dy/dt = field(y)`` (``y`` an array): (y1, error)."""
    stages = tab.b.shape[0]

    def stage(k, i):
        yi = y + h * jnp.tensordot(tab.a[i], k, axes=1)
        return k.at[i].set(field(yi)), None

    k, _ = jax.lax.scan(stage, jnp.zeros((stages,) + y.shape, y.dtype), jnp.arange(stages))
    return y + h * jnp.tensordot(tab.b, k, axes=1), h * jnp.tensordot(tab.e, k, axes=1)


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


def _shooting_jacobian(jac, n: int, d: int, dtype):
    """Dense Jacobian of the multiple-shooting residual in the stacked nodes ``(x_i, u_i)``.

    Rows: ``x_0 - theta_0`` (d), the junctions ``phi(x_i, u_i) - (x_{i+1}, u_{i+1})``
    (2d each), ``position(phi(x_{n-1}, u_{n-1})) - target`` (d).
    """
    eye_d = jnp.eye(d, dtype=dtype)
    minus_eye = -jnp.eye(2 * d, dtype=dtype)

    def zeros(rows, cols):
        return jnp.zeros((rows, cols), dtype)

    blocks = [[jnp.concatenate([eye_d, zeros(d, d)], 1)] + [zeros(d, 2 * d)] * (n - 1)]
    for i in range(n - 1):
        row = [zeros(2 * d, 2 * d)] * n
        row[i], row[i + 1] = jac[i], minus_eye
        blocks.append(row)
    blocks.append([zeros(d, 2 * d)] * (n - 1) + [jac[n - 1][:d]])
    return jnp.block(blocks)


class _Shooting(eqx.Module):
    r"""The per-pair constants of one shooting solve, in the rescaled coordinates ``y = x / c``.

    ``c`` holds one positive unit per coordinate: the smaller of the metric's own unit
    :math:`1/\sqrt{g_{kk}}` at the two ends and of the coordinate's magnitude there. In
    ``y`` every coordinate is of order one near the ends, so the ODE and Newton tolerances
    ``atol + rtol |y|`` are relative to the scale of each coordinate, and the Newton system is
    well scaled, whatever the units of the chart.
    """

    theta_0: Point  # rescaled
    theta_1: Point  # rescaled
    delta: Point  # rescaled theta_1 - theta_0
    unit: Point  # c
    center: Point
    radius: Scalar
    metric_0: Array
    conditioning: Scalar  # largest condition number of the equilibrated end-point metrics
    length: Scalar  # metric length of the coordinate segment (the guess's speed)


def _conditioning(metric_0, metric_1):
    """The larger condition number of the two metrics after diagonal equilibration."""

    def condition(g):
        diag = jnp.sqrt(jnp.abs(jnp.diagonal(g)))
        diag = jnp.where(diag > 0, diag, 1.0)
        eig = jnp.linalg.eigvalsh(g / jnp.outer(diag, diag))
        return jnp.where(eig[0] > 0, eig[-1] / jnp.where(eig[0] > 0, eig[0], 1.0), jnp.inf)

    return jnp.maximum(condition(metric_0), condition(metric_1))


def _coordinate_units(theta_0, theta_1, metric_0, metric_1):
    tiny = jnp.finfo(theta_0.dtype).tiny

    def unit(g):
        diag = jnp.diagonal(g)
        return jnp.where(diag > 0, 1.0 / jnp.sqrt(jnp.where(diag > 0, diag, 1.0)), jnp.inf)

    magnitude = jnp.maximum(jnp.abs(theta_0), jnp.abs(theta_1))
    magnitude = jnp.where(magnitude > 0, magnitude, jnp.inf)
    c = jnp.minimum(jnp.minimum(unit(metric_0), unit(metric_1)), magnitude)
    # All infinite (a zero coordinate with a degenerate metric entry): keep the chart's unit.
    return jnp.where(jnp.isfinite(c) & (c > tiny), c, 1.0)


# State of the shooting loop, one flat tuple:
#  Newton:  z, z_base, step, err_base, s, ds, s_conv, z_conv, s_prev, z_prev, n_back,
#           num_shots, status, z_done, err, end_velocity
#  the ODE of the current shot:  t, dt, dt_first, bundle, ode_steps, total_steps
_NUM_SHOTS, _STATUS, _Z_DONE, _ERR, _END = 11, 12, 13, 14, 15
_T, _DT, _DT_FIRST, _BUNDLE, _ODE_STEPS, _TOTAL = 16, 17, 18, 19, 20, 21


def _bundle(z, n: int, d: int):
    """Start states of the shot: each segment's node and the ``2 d`` unit tangent directions.

    Shape ``(2, n, 2 d + 1, d)``: positions and velocities of each segment's trajectory
    (index 0) and of its variations along the ``d`` position and the ``d`` velocity
    directions of the node (indices 1 to 2 d).
    """
    nodes = z.reshape(n, 2, d)
    dtype = z.dtype
    eye = jnp.eye(d, dtype=dtype)
    zeros = jnp.zeros((d, d), dtype)
    dx_basis = jnp.broadcast_to(jnp.concatenate([eye, zeros]), (n, 2 * d, d))
    du_basis = jnp.broadcast_to(jnp.concatenate([zeros, eye]), (n, 2 * d, d))
    x0 = jnp.concatenate([nodes[:, None, 0], dx_basis], axis=1)
    u0 = jnp.concatenate([nodes[:, None, 1], du_basis], axis=1)
    return jnp.stack([x0, u0])


def _shooting_start(space, alpha, theta_0, theta_1, cfg: _Settings):
    """The constants and the initial state of :func:`newton_shooting`."""
    dtype = theta_0.dtype
    d = theta_0.shape[0]
    n = cfg.num_segments
    size = 2 * d * n
    zero = jnp.zeros((size,), dtype)
    one = jnp.ones((), dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    times = jnp.arange(n, dtype=dtype) / n
    ends = jnp.concatenate([times, jnp.ones((1,), dtype)])
    guess, metrics = space._initial_velocities(theta_0, theta_1, alpha, ends)
    guess, metric_0, metric_1 = guess[:n], metrics[0], metrics[-1]
    unit = _coordinate_units(theta_0, theta_1, metric_0, metric_1)
    y_0, y_1 = theta_0 / unit, theta_1 / unit
    delta = y_1 - y_0
    center = 0.5 * (y_0 + y_1)
    radius = 100.0 * (jnp.max(jnp.abs(delta)) + jnp.max(jnp.abs(center))) + 1.0
    speed = jnp.sqrt(jnp.maximum(guess[0] @ metric_0 @ guess[0], 0.0))
    problem = _Shooting(
        y_0, y_1, delta, unit, center, radius, metric_0, _conditioning(metric_0, metric_1), speed
    )
    z_init = jnp.stack([y_0 + times[:, None] * delta, guess / unit], axis=1).reshape(size)
    first_dt = jnp.asarray(1.0 / (16 * n), dtype)
    state = (
        z_init,
        z_init,
        zero,
        inf,
        one,
        one,
        0 * one,
        zero,
        0 * one,
        zero,
        jnp.asarray(0),
        jnp.asarray(0),
        jnp.asarray(_RUNNING),
        z_init,
        inf,
        jnp.zeros_like(theta_0),
        0 * one,
        first_dt,
        first_dt,
        _bundle(z_init, n, d),
        jnp.asarray(0),
        jnp.asarray(0),
    )
    return problem, state


def _shooting_running(cfg: _Settings, state):
    return (state[_STATUS] == _RUNNING) & (state[_NUM_SHOTS] < cfg.max_newton_steps)


def _newton_update(cfg: _Settings, problem: _Shooting, state, bundle, ok):
    """The Newton / backtracking / continuation update after a shot from ``state[0]``."""
    theta_0, delta, unit = problem.theta_0, problem.delta, problem.unit
    dtype = theta_0.dtype
    d = theta_0.shape[0]
    n = cfg.num_segments
    size = 2 * d * n
    zero = jnp.zeros((size,), dtype)
    one = jnp.ones((), dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    times = jnp.arange(n, dtype=dtype) / n
    (z, z_base, step, err_base, s, ds, s_conv, z_conv, s_prev, z_prev, n_back, num_shots) = state[
        :12
    ]
    end_velocity = state[_END]

    def straight(s):
        # The coordinate segment at constant coordinate speed: exact as s -> 0.
        positions = theta_0 + times[:, None] * (s * delta)
        velocities = jnp.broadcast_to(s * delta, (n, d))
        return jnp.stack([positions, velocities], axis=1).reshape(size)

    nodes = z.reshape(n, 2, d)
    xb, ub = bundle[0], bundle[1]  # (n, 2d + 1, d)
    x, u = xb[:, 0], ub[:, 0]
    d_state = jnp.concatenate([xb[:, 1:], ub[:, 1:]], axis=-1)  # [segment, input, output]
    seg_jac = jnp.swapaxes(d_state, -1, -2)  # [segment, output, input]
    # (1 - s) y_0 + s y_1 is exactly y_1 at s = 1 (y_0 + s delta cancels when |y_0| >> |y_1|).
    target = (1 - s) * theta_0 + s * problem.theta_1
    residual = jnp.concatenate(
        [
            nodes[0, 0] - theta_0,
            jnp.stack([x[:-1] - nodes[1:, 0], u[:-1] - nodes[1:, 1]], axis=1).reshape(-1),
            x[-1] - target,
        ]
    )
    scale_x = jnp.abs(jnp.concatenate([theta_0[None], x]))  # (n + 1, d)
    scale_u = jnp.maximum(jnp.abs(u[:-1]), jnp.abs(nodes[1:, 1]))
    scale = jnp.concatenate(
        [
            scale_x[0],
            jnp.stack([jnp.maximum(scale_x[1:-1], jnp.abs(nodes[1:, 0])), scale_u], axis=1).reshape(
                -1
            ),
            jnp.maximum(scale_x[-1], jnp.abs(target)),
        ]
    )
    scaled = residual / (cfg.newton_atol + cfg.newton_rtol * scale)
    jac = _shooting_jacobian(seg_jac, n, d, dtype)
    u_end = u[-1]

    def predictor(s_new, s_conv, z_conv, s_prev, z_prev):
        secant = z_conv + (z_conv - z_prev) * (s_new - s_conv) / jnp.where(
            s_conv > s_prev, s_conv - s_prev, one
        )
        return jnp.where(s_conv > 0, secant, straight(s_new))

    err = jnp.sqrt(jnp.mean(scaled**2))
    ok = ok & jnp.isfinite(err)
    err = jnp.where(ok, err, inf)
    converged = ok & (jnp.max(jnp.abs(scaled)) <= 1)
    finished = converged & (s >= 1)
    improved = ok & (err < (1 - 1e-4) * err_base)
    newton = jnp.linalg.solve(jac, -jnp.where(ok, residual, 0.0))
    newton_ok = jnp.all(jnp.isfinite(newton))
    take_newton = ~converged & improved & newton_ok
    backtrack = ~converged & ~take_newton & jnp.isfinite(err_base) & (n_back < cfg.max_backtracks)
    shrink = ~converged & ~take_newton & ~backtrack

    # Converged at an intermediate level: advance the continuation.
    adv_ds = jnp.minimum(2 * ds, 1 - s)
    adv_s = s + adv_ds
    # Stalled: cut the continuation step and restart from the last converged level.
    cut_ds = 0.25 * (s - s_conv)
    cut_s = s_conv + cut_ds
    new_level = jnp.where(converged, adv_s, cut_s)
    predicted = predictor(
        new_level,
        jnp.where(converged, s, s_conv),
        jnp.where(converged, z, z_conv),
        jnp.where(converged, s_conv, s_prev),
        jnp.where(converged, z_conv, z_prev),
    )
    half_step = 0.5 * step

    def pick(advance, newton_value, back_value, shrink_value):
        out = jnp.where(take_newton, newton_value, shrink_value)
        out = jnp.where(backtrack, back_value, out)
        return jnp.where(converged, advance, out)

    new_z = pick(predicted, z + jnp.where(newton_ok, newton, 0.0), z_base + half_step, predicted)
    status = jnp.where(finished, _SUCCESS, _RUNNING)
    status = jnp.where(shrink & (cut_ds < cfg.min_continuation_step), _STALLED, status)
    return (
        new_z,
        jnp.where(take_newton, z, z_base),
        pick(zero, jnp.where(newton_ok, newton, 0.0), half_step, zero),
        pick(inf, err, err_base, inf),
        pick(adv_s, s, s, cut_s),
        pick(adv_ds, ds, ds, cut_ds),
        jnp.where(converged, s, s_conv),
        jnp.where(converged, z, z_conv),
        jnp.where(converged, s_conv, s_prev),
        jnp.where(converged, z_conv, z_prev),
        jnp.where(backtrack, n_back + 1, 0),
        num_shots + 1,
        status,
        jnp.where(finished, z, new_z),
        err,
        jnp.where(finished, u_end * unit, end_velocity),
    )


def _shooting_step(space, alpha, cfg: _Settings, problem: _Shooting, tab: _Tableau, state):
    r"""One Runge-Kutta step of the current shot, then the Newton update if the shot ended.

    All segments and their perturbed copies form one bundle integrated on one step sequence
    (error control on the unperturbed trajectories only: internal numerical differentiation,
    Bock), so that the difference quotients differentiate one smooth discrete map. A step
    with a non-finite result (the trajectory left the domain or the box
    ``|y - center| <= radius``) is rejected like an inaccurate one; a shot fails when its
    step falls below ``min_step`` or it takes more than ``max_shooting_steps`` steps.
    """
    unit = problem.unit
    n = cfg.num_segments
    d = unit.shape[0]
    duration = jnp.asarray(1.0 / n, unit.dtype)
    contract = _contract(space, alpha, problem.theta_0 * unit)

    def acceleration(y, w):
        inside = jnp.max(jnp.abs(y - problem.center)) <= problem.radius
        return jnp.where(inside, -contract(y * unit, w * unit, w * unit) / unit, jnp.nan)

    def segment(x, u, dx, du):
        # The acceleration and its derivative along each of the 2 d tangent directions.
        push = lambda tx, tu: jax.jvp(acceleration, (x, u), (tx, tu))  # noqa: E731
        acc, dacc = jax.vmap(push, out_axes=(None, 0))(dx, du)
        return jnp.concatenate([acc[None], dacc])

    def field(bundle):
        x, u = bundle[0], bundle[1]
        acc = jax.vmap(segment)(x[:, 0], u[:, 0], x[:, 1:], u[:, 1:])
        return jnp.stack([u, acc])

    t, dt, dt_first, bundle, ode_steps, total = state[16:22]
    h = jnp.minimum(dt, duration - t)
    new, error = _rk_step(field, tab, bundle, h)
    base_0, base_1, base_e = bundle[:, :, 0], new[:, :, 0], error[:, :, 0]
    finite = jnp.all(jnp.isfinite(new))
    weight = cfg.atol + cfg.rtol * jnp.maximum(jnp.abs(base_0), jnp.abs(base_1))
    err = jnp.sqrt(jnp.mean((base_e / weight) ** 2))
    err = jnp.where(finite & jnp.isfinite(err), err, jnp.inf)
    accept = err < 1
    inv = jnp.where(err > 0, 1.0 / err, jnp.inf)
    factor = jnp.clip(
        0.9 * inv ** (cfg.icoeff / tab.order),
        jnp.where(accept, 1.0, 0.2),
        jnp.where(accept, 10.0, 0.9),
    )
    next_dt = h * factor
    reached = accept & (h >= duration - t)
    ode_steps = ode_steps + 1
    too_small = ~accept & (next_dt < cfg.min_step * duration)
    too_many = ~reached & (ode_steps >= min(cfg.max_shooting_steps, cfg.max_steps))
    ended = reached | too_small | too_many
    bundle = jnp.where(accept, new, bundle)
    dt_first = jnp.where(accept & (ode_steps == 1), h, dt_first)
    moved = (
        jnp.where(accept, t + h, t),
        next_dt,
        dt_first,
        bundle,
        ode_steps,
        total + 1,
    )

    def end_shot(_):
        newton = _newton_update(cfg, problem, state, bundle, reached)
        start = _bundle(newton[0], n, d)
        zero_t = jnp.zeros_like(t)
        return newton + (zero_t, dt_first, dt_first, start, jnp.zeros_like(ode_steps), total + 1)

    def keep(_):
        return state[:16] + moved

    return jax.lax.cond(ended, end_shot, keep, None)


def _shooting_output(cfg: _Settings, problem: _Shooting, state):
    d = problem.theta_0.shape[0]
    z = state[_Z_DONE]
    v = z.reshape(cfg.num_segments, 2, d)[0, 1] * problem.unit
    speed = jnp.sqrt(jnp.maximum(v @ problem.metric_0 @ v, 0.0))
    # A failure where the chart cannot resolve the tolerance is blamed on the chart.
    eps = jnp.finfo(v.dtype).eps
    ill = problem.conditioning * eps > cfg.newton_rtol
    status = state[_STATUS]
    status = jnp.where((status != _SUCCESS) & ill, _ILL_CONDITIONED, status)
    return v, state[_END], status, state[_ERR], state[_NUM_SHOTS], speed


def _shooting_single(space, alpha, theta_0, theta_1, cfg: _Settings):
    problem, state = _shooting_start(space, alpha, theta_0, theta_1, cfg)
    tab = _tableau(cfg, theta_0.dtype)
    state = jax.lax.while_loop(
        lambda c: _shooting_running(cfg, c),
        lambda c: _shooting_step(space, alpha, cfg, problem, tab, c),
        state,
    )
    return _shooting_output(cfg, problem, state)


# Width of the window of pairs that advance together under ``jax.vmap`` (one vectorized
# Runge-Kutta step for all of them); a batch of at most this many pairs runs in one window.
_WINDOW = 32


def _where_lanes(mask, new, old):
    """Per-lane select over pytrees whose leaves all have the lane axis first."""

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _take_lanes(tree, index, axes=None):
    """``tree[index]`` on the leaves with a lane axis (``axes`` None: every leaf)."""
    if axes is None:
        return jax.tree_util.tree_map(lambda a: a[index], tree)
    return jax.tree_util.tree_map(lambda a, ax: a if ax is None else a[index], tree, axes)


def _put_lanes(tree, index, values):
    """``tree.at[index].set(values)``; an index equal to the batch size is dropped."""
    return jax.tree_util.tree_map(lambda a, v: a.at[index].set(v, mode="drop"), tree, values)


def newton_shooting(space, alpha, theta_0, theta_1, cfg: _Settings):
    r"""Solve :math:`\exp_{\theta_0}(v) = \theta_1` for :math:`v` by damped Newton shooting.

    Multiple shooting (Stoer & Bulirsch, *Introduction to Numerical Analysis*, Sec. 7.3.5):
    the geodesic is cut into ``num_segments`` pieces of duration 1/N whose start points and
    velocities :math:`(x_i, u_i)` are all unknowns, matched at the junctions, with
    :math:`x_0 = \theta_0` and the last end at the target. The exponential map's sensitivity,
    which grows like :math:`e^{c|v|}` on negatively curved manifolds, then enters only through
    1/N of the length, so Newton's basin is much larger than for single shooting. All the
    segments run in one batched Runge-Kutta integration (the tableau of ``ode_solver``, with
    the step-size control of an I controller), in coordinates rescaled by a unit per
    coordinate (see :class:`_Shooting`), together with their variational equations, which
    give the Jacobian of the shooting residual.

    One loop, one Runge-Kutta step per iteration; when a shot ends:

    - the target moves along the segment :math:`\theta_0 + s(\theta_1 - \theta_0)`,
      starting with :math:`s = 1` (no continuation for easy pairs);
    - a Newton step is kept when it reduces the scaled residual, else it is halved (up to
      ``max_backtracks`` times);
    - when Newton stalls at a level s, the continuation step is cut by four and restarted from
      the last converged level with a secant predictor; after a success it doubles.

    Under ``jax.vmap`` the pairs are scheduled as a work queue, so that no pair waits for
    another: a window of up to ``_WINDOW`` pairs advances by one vectorized Runge-Kutta step
    per iteration, each pair at its own step size and shot; a pair that finishes leaves the
    window at once and the next pair of the queue (longest coordinate segment first) takes
    its place. When the queue is empty and at most a quarter of the window is still busy,
    those pairs finish one at a time from where they stopped. Each pair thus follows exactly
    the iterates of the unbatched call, and the batch costs the sum of its pairs' steps.

    Returns ``(v, end_velocity, status, residual, num_steps, speed)``, the last being the
    metric norm of v at ``theta_0`` (the length of the geodesic).
    """
    dynamic, static = eqx.partition((space, alpha, cfg), eqx.is_array)

    def single(dynamic, theta_0, theta_1):
        space, alpha, cfg = eqx.combine(dynamic, static)
        return _shooting_single(space, alpha, theta_0, theta_1, cfg)

    @jax.custom_batching.custom_vmap
    def solve(dynamic, theta_0, theta_1):
        return single(dynamic, theta_0, theta_1)

    @solve.def_vmap
    def _batched(axis_size, in_batched, dynamic, theta_0, theta_1):
        args = (dynamic, theta_0, theta_1)
        axes = jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(in_batched))
        size = axis_size
        if size == 1:
            out = single(*_take_lanes(args, 0, axes))
            return jax.tree_util.tree_map(lambda a: a[None], out), jax.tree_util.tree_map(
                lambda _: True, out
            )
        cfg_any = eqx.combine(dynamic, static)[2]

        def start(dynamic, theta_0, theta_1):
            space, alpha, cfg = eqx.combine(dynamic, static)
            return _shooting_start(space, alpha, theta_0, theta_1, cfg)

        def step(dynamic, problem, state):
            space, alpha, cfg = eqx.combine(dynamic, static)
            tab = _tableau(cfg, problem.unit.dtype)
            return _shooting_step(space, alpha, cfg, problem, tab, state)

        problem, states = jax.vmap(start, in_axes=axes)(*args)
        running = jax.vmap(lambda c: _shooting_running(cfg_any, c))
        # Longest first, so that the slow pairs do not start last.
        first = jnp.argsort(-problem.length)
        width = min(size, _WINDOW)
        slots = first[:width]
        window = (slots, _take_lanes(problem, slots), _take_lanes(states, slots))

        def busy(carry):
            slots, _, _, _, queued = carry
            active = jnp.sum(slots < size)
            return (active > 0) & ((queued < size) | (4 * active > width))

        def advance(carry):
            slots, window_problem, window_state, states, queued = carry
            filled = slots < size
            lanes = jnp.minimum(slots, size - 1)
            dyn = _take_lanes(dynamic, lanes, axes[0])
            stepped = jax.vmap(step, in_axes=(axes[0], 0, 0))(dyn, window_problem, window_state)
            done = filled & ~running(stepped)
            states = _put_lanes(states, jnp.where(done, slots, size), stepped)
            position = queued + jnp.cumsum(done) - 1
            take = done & (position < size)
            slots = jnp.where(take, first[jnp.minimum(position, size - 1)], slots)
            slots = jnp.where(done & ~take, size, slots)
            fresh = jnp.minimum(slots, size - 1)
            window_problem = _where_lanes(take, _take_lanes(problem, fresh), window_problem)
            window_state = _where_lanes(take, _take_lanes(states, fresh), stepped)
            queued = jnp.minimum(queued + jnp.sum(done), size)
            return slots, window_problem, window_state, states, queued

        slots, _, window_state, states, _ = jax.lax.while_loop(
            busy, advance, window + (states, jnp.asarray(width))
        )
        states = _put_lanes(states, slots, window_state)
        still = running(states)
        order = jnp.argsort(~still, stable=True)  # the running pairs first

        def finish_one(carry):
            k, states = carry
            i = order[k]
            space, alpha, cfg = eqx.combine(_take_lanes(dynamic, i, axes[0]), static)
            tab = _tableau(cfg, problem.unit.dtype)
            problem_i = _take_lanes(problem, i)
            state_i = jax.lax.while_loop(
                lambda c: _shooting_running(cfg, c),
                lambda c: _shooting_step(space, alpha, cfg, problem_i, tab, c),
                _take_lanes(states, i),
            )
            return k + 1, _put_lanes(states, i, state_i)

        count = jnp.sum(still)
        _, states = jax.lax.while_loop(lambda c: c[0] < count, finish_one, (0, states))
        out = jax.vmap(lambda p, c: _shooting_output(cfg_any, p, c))(problem, states)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return solve(dynamic, theta_0, theta_1)


@eqx.filter_custom_jvp
def log_map_core(space, alpha, theta_0, theta_1, cfg):
    r"""Newton shooting, differentiable in ``(theta_0, theta_1)``.

    Derivatives by the implicit function theorem on :math:`\exp_{\theta_0}(v) = \theta_1`:
    :math:`dv = (\partial_v\exp)^{-1}(d\theta_1 - \partial_{\theta_0}\exp\,d\theta_0)`.
    """
    return newton_shooting(space, alpha, theta_0, theta_1, cfg)


@log_map_core.def_jvp
def _log_map_core_jvp(primals, tangents):
    space, alpha, theta_0, theta_1, cfg = primals
    t_space, t_alpha, t_theta_0, t_theta_1, _ = tangents
    _no_parameter_tangents(t_space, t_alpha, "log_map")
    sol = log_map_core(space, alpha, theta_0, theta_1, cfg)
    _, _, jx, ju, _ = flow_jacobian(space, alpha, theta_0, sol[0], cfg)
    d = theta_0.shape[0]  # jx, ju: (2d, d), rows are input directions
    v = sol[0]
    jx_theta, jx_v = jx[:d].T, jx[d:].T  # d x / d theta_0, d x / d v  (d, d)
    ju_theta, ju_v = ju[:d].T, ju[d:].T
    t_theta_0 = jnp.zeros_like(theta_0) if t_theta_0 is None else t_theta_0
    t_theta_1 = jnp.zeros_like(theta_1) if t_theta_1 is None else t_theta_1
    dv = jnp.linalg.solve(jx_v, t_theta_1 - jx_theta @ t_theta_0)
    du = ju_theta @ t_theta_0 + ju_v @ dv
    g_0 = space.metric(theta_0)
    speed = sol[5]
    d_speed = jnp.where(
        speed > 0,
        (v @ g_0 @ dv + 0.5 * v @ jax.jvp(space.metric, (theta_0,), (t_theta_0,))[1] @ v)
        / jnp.where(speed > 0, speed, 1.0),
        0.0,
    )
    return sol, (dv, du, None, None, None, d_speed)


@eqx.filter_custom_jvp
def distance_core(space, theta_0, theta_1, cfg):
    r"""Fisher-Rao distance and the shooting solution.

    First derivatives by the envelope theorem (the length is stationary at a geodesic):
    :math:`\partial d / \partial\theta_1 = g(\theta_1)\dot\gamma(1) / d`,
    :math:`\partial d / \partial\theta_0 = -g(\theta_0)\dot\gamma(0) / d`.
    """
    sol = log_map_core(space, 0.0, theta_0, theta_1, cfg)
    return sol[5], sol


@distance_core.def_jvp
def _distance_core_jvp(primals, tangents):
    space, theta_0, theta_1, cfg = primals
    t_space, t_theta_0, t_theta_1, _ = tangents
    _no_parameter_tangents(t_space, None, "geodesic_distance")
    dist, sol = distance_core(space, theta_0, theta_1, cfg)
    positive = dist > 0
    safe = jnp.where(positive, dist, 1.0)
    t_dist = jnp.zeros_like(dist)
    if t_theta_1 is not None:
        grad_1 = space.metric(theta_1) @ sol[1] / safe
        t_dist = t_dist + jnp.where(positive, grad_1 @ t_theta_1, 0.0)
    if t_theta_0 is not None:
        grad_0 = -(space.metric(theta_0) @ sol[0]) / safe
        t_dist = t_dist + jnp.where(positive, grad_0 @ t_theta_0, 0.0)
    return (dist, sol), (t_dist, (None,) * 6)


# ---------------------------------------------------------------------------------------------
# Parallel transport
# ---------------------------------------------------------------------------------------------
def _transport_field(space, alpha, transport_alpha, theta):
    geodesic_contract = _contract(space, alpha, theta)
    transport_contract = _contract(space, transport_alpha, theta)

    def field(y):
        x, u, vec = y
        return u, -geodesic_contract(x, u, u), -transport_contract(x, u, vec)

    return field


@eqx.filter_custom_jvp
def transport(space, alpha, transport_alpha, theta, v, w, cfg: _Settings):
    r"""Transport ``w`` along the alpha-geodesic :math:`\exp_\theta(tv)`, :math:`t \in [0, 1]`.

    Uses the ``transport_alpha`` connection; returns ``(x1, w1, ok)``. Differentiable in forward
    and reverse mode with respect to ``theta``, ``v`` and ``w``, through the variational
    equations (as :func:`flow`).
    """
    field = _transport_field(space, alpha, transport_alpha, theta)
    (x1, _, w1), ok = _odesolve(field, (theta, v, w), 1.0, cfg, norm=optx.rms_norm)
    return x1, w1, ok


@transport.def_jvp
def _transport_jvp(primals, tangents):
    space, alpha, transport_alpha, theta, v, w, cfg = primals
    t_space, t_alpha, t_transport_alpha, t_theta, t_v, t_w, _ = tangents
    _no_parameter_tangents(t_space, t_alpha, "parallel transport")
    _no_parameter_tangents(None, t_transport_alpha, "parallel transport")
    field = _transport_field(space, alpha, transport_alpha, theta)

    def augmented(y):
        # The transport system with its variational equations, 3 dim directions stacked first.
        x, u, vec, dx, du, dvec = y

        def push(tx, tu, tw):
            return jax.jvp(lambda a, b, c: field((a, b, c)), (x, u, vec), (tx, tu, tw))

        (fx, fu, fw), (dfx, dfu, dfw) = jax.vmap(push, out_axes=(None, 0))(dx, du, dvec)
        return fx, fu, fw, dfx, dfu, dfw

    d = theta.shape[0]
    eye = jnp.eye(d, dtype=theta.dtype)
    zero = jnp.zeros_like(eye)
    starts = (
        theta,
        v,
        w,
        jnp.concatenate([eye, zero, zero]),
        jnp.concatenate([zero, eye, zero]),
        jnp.concatenate([zero, zero, eye]),
    )
    primal_norm = lambda error: optx.rms_norm((error[0], error[1], error[2]))
    (x1, _, w1, jx, _, jw), ok = _odesolve(
        augmented, starts, 1.0, cfg, norm=primal_norm, adjoint=diffrax.ForwardMode()
    )
    direction = jnp.concatenate(
        [jnp.zeros_like(a) if t is None else t for a, t in ((theta, t_theta), (v, t_v), (w, t_w))]
    )
    return (x1, w1, ok), (direction @ jx, direction @ jw, None)
