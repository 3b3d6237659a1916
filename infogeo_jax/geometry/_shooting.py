r"""One shooting solve of the logarithm map: Runge-Kutta steps and damped Newton updates.

The state of a solve is one flat tuple advanced by :func:`_shooting_step`, one Runge-Kutta step
of the current shot per call, so that a solve is a single ``while_loop`` and a batch of solves
can be scheduled step by step (see :mod:`infogeo_jax.geometry._log_map`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Point, Scalar
from ._flow import _contract
from ._settings import _ILL_CONDITIONED, _RUNNING, _STALLED, _SUCCESS, _Settings


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


def _shooting_jacobian(jac, n: int, d: int, dtype):
    """Dense Jacobian of the multiple-shooting residual in the stacked nodes ``(x_i, u_i)``.

    Rows: ``x_0 - theta_0`` (d), the junctions ``phi(x_i, u_i) - (x_{i+1}, u_{i+1})``
    (2d each), ``position(phi(x_{n-1}, u_{n-1})) - target`` (d). ``jac`` holds the segments'
    Jacobians ``[segment, output, input]``, shape ``(n, 2d, 2d)``.
    """
    m = 2 * d
    size = m * n
    # The junction rows: the segment Jacobians on the block diagonal, -I one block to the right.
    diagonal = jnp.eye(n - 1, dtype=dtype)[:, None, :, None] * jac[:-1, :, None, :]
    junctions = jnp.pad(diagonal.reshape(m * (n - 1), m * (n - 1)), ((0, 0), (0, m)))
    junctions = junctions - jnp.eye(m * (n - 1), size, m, dtype=dtype)
    first = jnp.eye(d, size, dtype=dtype)
    last = jnp.pad(jac[-1, :d], ((0, 0), (size - m, 0)))
    return jnp.concatenate([first, junctions, last])


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
    metric_1: Array
    length: Scalar  # metric length of the coordinate segment (the guess's speed)


def _conditioning(metric_0, metric_1):
    """The larger condition number of the two metrics after diagonal equilibration.

    One eigenvalue call for both matrices: under ``vmap`` two independent batched LAPACK calls
    may run at once on XLA's CPU thread pool, and jaxlib's batched kernels, which wait for
    their share of that same pool, were seen to deadlock there on 2 cores.
    """
    g = jnp.stack([metric_0, metric_1])
    diag = jnp.sqrt(jnp.abs(jnp.diagonal(g, axis1=-2, axis2=-1)))
    diag = jnp.where(diag > 0, diag, 1.0)
    eig = jnp.linalg.eigvalsh(g / (diag[:, :, None] * diag[:, None, :]))
    low, high = eig[:, 0], eig[:, -1]
    condition = jnp.where(low > 0, high / jnp.where(low > 0, low, 1.0), jnp.inf)
    return jnp.max(condition)


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
    """Start states of the shot: each segment's node and its ``2 d`` perturbed copies.

    Shape ``(2, n, 2 d + 1, d)`` (positions, velocities), and the perturbation sizes
    ``(n,)`` of the positions and of the velocities.
    """
    nodes = z.reshape(n, 2, d)
    starts, velocities = nodes[:, 0], nodes[:, 1]
    dtype = z.dtype
    eps = jnp.sqrt(jnp.finfo(dtype).eps)
    h_x = eps * (1.0 + jnp.max(jnp.abs(starts), axis=-1))
    h_u = eps * (1.0 + jnp.max(jnp.abs(velocities), axis=-1))
    eye = jnp.eye(d, dtype=dtype)
    zero = jnp.zeros((1, d), dtype)
    dx_basis = jnp.concatenate([zero, eye, jnp.zeros((d, d), dtype)])  # (2d + 1, d)
    du_basis = jnp.concatenate([zero, jnp.zeros((d, d), dtype), eye])
    x0 = starts[:, None, :] + h_x[:, None, None] * dx_basis[None]
    u0 = velocities[:, None, :] + h_u[:, None, None] * du_basis[None]
    return jnp.stack([x0, u0]), h_x, h_u


def _constants(d: int, n: int, dtype):
    """The constants of a shooting solve with ``n`` segments in dimension ``d``.

    ``(size, zero, one, inf, times)``: the unknowns' count ``2 d n``, a zero vector of that
    size, 1 and inf as scalars, and the segments' start times ``i / n``.
    """
    size = 2 * d * n
    return (
        size,
        jnp.zeros((size,), dtype),
        jnp.ones((), dtype),
        jnp.asarray(jnp.inf, dtype),
        jnp.arange(n, dtype=dtype) / n,
    )


def _shooting_start(space, alpha, theta_0, theta_1, cfg: _Settings):
    """The constants and the initial state of :func:`newton_shooting`."""
    dtype = theta_0.dtype
    d = theta_0.shape[0]
    n = cfg.num_segments
    size, zero, one, inf, times = _constants(d, n, dtype)
    ends = jnp.concatenate([times, jnp.ones((1,), dtype)])
    guess, metrics = space._initial_velocities(theta_0, theta_1, alpha, ends)
    guess, metric_0, metric_1 = guess[:n], metrics[0], metrics[-1]
    unit = _coordinate_units(theta_0, theta_1, metric_0, metric_1)
    y_0, y_1 = theta_0 / unit, theta_1 / unit
    delta = y_1 - y_0
    center = 0.5 * (y_0 + y_1)
    radius = 100.0 * (jnp.max(jnp.abs(delta)) + jnp.max(jnp.abs(center))) + 1.0
    speed = jnp.sqrt(jnp.maximum(guess[0] @ metric_0 @ guess[0], 0.0))
    problem = _Shooting(y_0, y_1, delta, unit, center, radius, metric_0, metric_1, speed)
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
        _bundle(z_init, n, d)[0],
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
    size, zero, one, inf, times = _constants(d, n, dtype)
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
    _, h_x, h_u = _bundle(z, n, d)
    xb, ub = bundle[0], bundle[1]  # (n, 2d + 1, d)
    x, u = xb[:, 0], ub[:, 0]
    steps = jnp.concatenate([jnp.repeat(h_x[:, None], d, 1), jnp.repeat(h_u[:, None], d, 1)], 1)
    d_state = jnp.concatenate([xb[:, 1:] - xb[:, :1], ub[:, 1:] - ub[:, :1]], axis=-1)
    seg_jac = jnp.swapaxes(d_state / steps[:, :, None], -1, -2)  # [segment, output, input]
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


def _shot_field(space, alpha, problem: _Shooting):
    """The vector field of a shot's bundle ``(positions, velocities)``, shape ``(2, n, 2d+1, d)``.

    A point outside the domain or the box ``|y - center| <= radius`` gets a NaN acceleration, so
    that the step is rejected.
    """
    unit = problem.unit
    contract = _contract(space, alpha, problem.theta_0 * unit)

    def acceleration(y, w):
        inside = jnp.max(jnp.abs(y - problem.center)) <= problem.radius
        return jnp.where(inside, -contract(y * unit, w * unit, w * unit) / unit, jnp.nan)

    def field(bundle):
        return jnp.stack([bundle[1], jax.vmap(jax.vmap(acceleration))(bundle[0], bundle[1])])

    return field


def _step_size(cfg: _Settings, state):
    """The next Runge-Kutta step of the current shot (clipped to the segment's end)."""
    duration = 1.0 / cfg.num_segments
    return jnp.minimum(state[_DT], duration - state[_T])


def _after_rk(cfg: _Settings, tab: _Tableau, state, new, error, h):
    """Accept or reject the step from ``state`` to ``new``: the ODE part of the next state.

    Returns ``(moved, ended, reached)``: the entries ``16:22`` of the state after the step,
    whether the shot ended (reached its end, or failed), and whether it reached its end.
    """
    t, _, dt_first, bundle, ode_steps, total = state[16:22]
    duration = jnp.asarray(1.0 / cfg.num_segments, t.dtype)
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
    moved = (
        jnp.where(accept, t + h, t),
        next_dt,
        jnp.where(accept & (ode_steps == 1), h, dt_first),
        jnp.where(accept, new, bundle),
        ode_steps,
        total + 1,
    )
    return moved, reached | too_small | too_many, reached


def _end_shot(cfg: _Settings, problem: _Shooting, state, moved, reached):
    """The state after a shot ended: the Newton update, and the next shot's first step."""
    t, _, dt_first, bundle, ode_steps, total = moved
    newton = _newton_update(cfg, problem, state, bundle, reached)
    start = _bundle(newton[0], cfg.num_segments, problem.unit.shape[0])[0]
    return newton + (jnp.zeros_like(t), dt_first, dt_first, start, jnp.zeros_like(ode_steps), total)


def _shooting_step(space, alpha, cfg: _Settings, problem: _Shooting, tab: _Tableau, state):
    r"""One Runge-Kutta step of the current shot, then the Newton update if the shot ended.

    All segments and their perturbed copies form one bundle integrated on one step sequence
    (error control on the unperturbed trajectories only: internal numerical differentiation,
    Bock), so that the difference quotients differentiate one smooth discrete map. A step
    with a non-finite result (the trajectory left the domain or the box
    ``|y - center| <= radius``) is rejected like an inaccurate one; a shot fails when its
    step falls below ``min_step`` or it takes more than ``max_shooting_steps`` steps.
    """
    h = _step_size(cfg, state)
    new, error = _rk_step(_shot_field(space, alpha, problem), tab, state[_BUNDLE], h)
    moved, ended, reached = _after_rk(cfg, tab, state, new, error, h)
    return jax.lax.cond(
        ended,
        lambda _: _end_shot(cfg, problem, state, moved, reached),
        lambda _: state[:16] + moved,
        None,
    )


def _where_lanes(mask, new, old):
    """Per-lane select over pytrees whose leaves all have the lane axis first."""

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree_util.tree_map(pick, new, old)


def _shooting_steps(field, cfg: _Settings, tab: _Tableau, problems: _Shooting, states):
    """:func:`_shooting_step` for a window of lanes (leading axis), one vectorized RK step.

    ``field`` maps the lanes' bundles ``(lanes, 2, n, 2d+1, d)`` to their derivatives. The
    Runge-Kutta stages run on the stacked bundles, so that the stage buffer is laid out
    stage-major (a per-lane ``vmap`` of the stage loop would copy the whole buffer at every
    stage); the Newton update runs for every lane on the iterations where some lane's shot
    ended.
    """
    h = jax.vmap(lambda c: _step_size(cfg, c))(states)
    bundles = states[_BUNDLE]
    new, error = _rk_step(field, tab, bundles, h.reshape((-1,) + (1,) * (bundles.ndim - 1)))
    moved, ended, reached = jax.vmap(lambda *a: _after_rk(cfg, tab, *a))(states, new, error, h)
    kept = states[:16] + moved

    def newton(_):
        updated = jax.vmap(lambda *a: _end_shot(cfg, *a))(problems, states, moved, reached)
        return _where_lanes(ended, updated, kept)

    return jax.lax.cond(jnp.any(ended), newton, lambda _: kept, None)


def _shooting_output(cfg: _Settings, problem: _Shooting, state):
    d = problem.theta_0.shape[0]
    z = state[_Z_DONE]
    v = z.reshape(cfg.num_segments, 2, d)[0, 1] * problem.unit
    speed = jnp.sqrt(jnp.maximum(v @ problem.metric_0 @ v, 0.0))
    # A failure where the chart cannot resolve the tolerance is blamed on the chart.
    eps = jnp.finfo(v.dtype).eps
    # Computed after the loop, where no other LAPACK call can run beside it (see
    # `_conditioning`).
    ill = _conditioning(problem.metric_0, problem.metric_1) * eps > cfg.newton_rtol
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
