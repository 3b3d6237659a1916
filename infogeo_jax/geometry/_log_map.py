r"""The logarithm map and the distance: Newton shooting, batched scheduling, derivative rules."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._flow import _no_parameter_tangents, flow_jacobian
from ._settings import _Settings
from ._shooting import (
    _shooting_output,
    _shooting_running,
    _shooting_single,
    _shooting_start,
    _shooting_step,
    _shooting_steps,
    _shot_field,
    _tableau,
    _where_lanes,
)

# Width of the window of pairs that advance together under ``jax.vmap`` (one vectorized
# Runge-Kutta step for all of them); a batch of at most this many pairs runs in one window.
_WINDOW = 32


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
    coordinate (see :class:`_Shooting`), together with perturbed copies of each segment on the
    same steps, whose differences give the Jacobian of the shooting residual.

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

        def lane_field(dynamic, problem, bundle):
            space, alpha, _ = eqx.combine(dynamic, static)
            return _shot_field(space, alpha, problem)(bundle)

        problem, states = jax.vmap(start, in_axes=axes)(*args)
        tab = _tableau(cfg_any, problem.unit.dtype)
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

            def field(bundles):
                return jax.vmap(lane_field, in_axes=(axes[0], 0, 0))(dyn, window_problem, bundles)

            stepped = _shooting_steps(field, cfg_any, tab, window_problem, window_state)
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
