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

from typing import TYPE_CHECKING, Any, cast

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

from .._custom_types import Array, Point, Scalar, Tangent

if TYPE_CHECKING:
    from .._manifold import AbstractStatisticalManifold


class RESULTS(eqx.Enumeration):
    """Result codes of the geodesic solvers (``solution.result``)."""

    successful = ""
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
        if self.max_steps < 1 or self.max_newton_steps < 1 or self.num_segments < 1:
            raise ValueError(
                "`max_steps`, `max_newton_steps` and `num_segments` must be positive integers."
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
def _contract(space: AbstractStatisticalManifold, alpha, anchor: Point):
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


def _odesolve(vector_field, y0, t1, cfg: _Settings, *, ts=None, adjoint=None, norm=_primal_norm):
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
        max_steps=cfg.max_steps,
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
def _shoot_segments(space, alpha, starts, velocities, duration, cfg: _Settings, center, radius):
    """Flow every segment start ``(x_i, u_i)`` for ``duration``, with the Jacobians.

    Returns ``(x, u, jac, ok)``: the end states, shape ``(segments, dim)``, and
    ``jac[i]`` of shape ``(2 dim, 2 dim)``, the derivative of the end state ``(x, u)`` of
    segment i in its start state ``(x_i, u_i)`` (rows: outputs, columns: inputs).

    The Jacobians come from internal numerical differentiation (Bock): ``2 dim`` extra
    trajectories per segment with perturbed starts are integrated in the same solve, on the
    step sequence chosen for the unperturbed ones alone, so the difference quotients
    differentiate one smooth discrete map (accurate to about the square root of the machine
    epsilon, plenty for Newton's method) while only the geodesic field itself is compiled.
    A trajectory that runs outside the box ``|x - center| <= radius`` makes the vector field
    NaN, so the solve fails quickly instead of following an exponential blow-up for thousands
    of steps.
    """
    n, d = starts.shape
    dtype = starts.dtype
    contract = _contract(space, alpha, starts[0])
    eps = jnp.sqrt(jnp.finfo(dtype).eps)
    h_x = eps * (1.0 + jnp.max(jnp.abs(starts), axis=-1))  # (n,)
    h_u = eps * (1.0 + jnp.max(jnp.abs(velocities), axis=-1))
    eye = jnp.eye(d, dtype=dtype)
    zero = jnp.zeros((1, d), dtype)
    dx_basis = jnp.concatenate([zero, eye, jnp.zeros((d, d), dtype)])  # (2d + 1, d)
    du_basis = jnp.concatenate([zero, jnp.zeros((d, d), dtype), eye])
    x0 = starts[:, None, :] + h_x[:, None, None] * dx_basis[None]
    u0 = velocities[:, None, :] + h_u[:, None, None] * du_basis[None]

    def acceleration(x, u):
        inside = jnp.max(jnp.abs(x - center)) <= radius
        return jnp.where(inside, -contract(x, u, u), jnp.nan)

    def field(y):
        x, u = y
        return u, jax.vmap(jax.vmap(acceleration))(x, u)

    def base_norm(error):
        return optx.rms_norm((error[0][:, 0], error[1][:, 0]))

    (x, u), ok = _odesolve(
        field, (x0, u0), duration, cfg, norm=base_norm, adjoint=diffrax.ForwardMode()
    )
    steps = jnp.concatenate([jnp.repeat(h_x[:, None], d, 1), jnp.repeat(h_u[:, None], d, 1)], 1)
    d_state = jnp.concatenate([x[:, 1:] - x[:, :1], u[:, 1:] - u[:, :1]], axis=-1)
    jac = jnp.swapaxes(d_state / steps[:, :, None], -1, -2)  # [segment, output, input]
    return x[:, 0], u[:, 0], jac, ok


_RUNNING, _SUCCESS, _STALLED = 0, 1, 2


def solution_from_status(velocity, end_velocity, status, residual, num_steps) -> LogMapSolution:
    """Wrap the raw outputs of :func:`newton_shooting` into a :class:`LogMapSolution`."""
    result = RESULTS.where(status == _SUCCESS, RESULTS.successful, RESULTS.max_newton_steps_reached)
    result = RESULTS.where(status == _STALLED, RESULTS.continuation_failed, result)
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


def newton_shooting(space, alpha, theta_0, theta_1, cfg: _Settings):
    r"""Solve :math:`\exp_{\theta_0}(v) = \theta_1` for :math:`v` by damped Newton shooting.

    Multiple shooting (Stoer & Bulirsch, *Introduction to Numerical Analysis*, Sec. 7.3.5):
    the geodesic is cut into ``num_segments`` pieces of duration 1/N whose start points and
    velocities :math:`(x_i, u_i)` are all unknowns, matched at the junctions, with
    :math:`x_0 = \theta_0` and the last end at the target. The exponential map's sensitivity,
    which grows like :math:`e^{c|v|}` on negatively curved manifolds, then enters only through
    1/N of the length, so Newton's basin is much larger than for single shooting. All the
    segments run in one batched ODE solve.

    One loop, one batched shot per iteration:

    - the target moves along the segment :math:`\theta_0 + s(\theta_1 - \theta_0)`,
      starting with :math:`s = 1` (no continuation for easy pairs);
    - a Newton step is kept when it reduces the scaled residual, else it is halved (up to
      ``max_backtracks`` times);
    - when Newton stalls at a level s, the continuation step is cut by four and restarted from
      the last converged level with a secant predictor; after a success it doubles.

    Returns ``(v, end_velocity, status, residual, num_steps, speed)``, the last being the
    metric norm of v at ``theta_0`` (the length of the geodesic).
    """
    dtype = theta_0.dtype
    d = theta_0.shape[0]
    n = cfg.num_segments
    delta = theta_1 - theta_0
    size = 2 * d * n
    zero = jnp.zeros((size,), dtype)
    one = jnp.ones((), dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    times = jnp.arange(n, dtype=dtype) / n
    center = 0.5 * (theta_0 + theta_1)
    radius = 100.0 * (jnp.max(jnp.abs(delta)) + jnp.max(jnp.abs(center))) + 1.0

    def straight(s):
        # The coordinate segment at constant coordinate speed: exact as s -> 0.
        positions = theta_0 + times[:, None] * (s * delta)
        velocities = jnp.broadcast_to(s * delta, (n, d))
        return jnp.stack([positions, velocities], axis=1).reshape(size)

    def evaluate(z, s):
        nodes = z.reshape(n, 2, d)
        x, u, jac, ok = _shoot_segments(
            space, alpha, nodes[:, 0], nodes[:, 1], 1.0 / n, cfg, center, radius
        )
        target = theta_0 + s * delta
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
                jnp.stack(
                    [jnp.maximum(scale_x[1:-1], jnp.abs(nodes[1:, 0])), scale_u], axis=1
                ).reshape(-1),
                jnp.maximum(scale_x[-1], jnp.abs(target)),
            ]
        )
        scaled = residual / (cfg.newton_atol + cfg.newton_rtol * scale)
        return residual, scaled, _shooting_jacobian(jac, n, d, dtype), ok, u[-1]

    def predictor(s_new, s_conv, z_conv, s_prev, z_prev):
        secant = z_conv + (z_conv - z_prev) * (s_new - s_conv) / jnp.where(
            s_conv > s_prev, s_conv - s_prev, one
        )
        return jnp.where(s_conv > 0, secant, straight(s_new))

    # carry: (z, z_base, step, err_base, s, ds, s_conv, z_conv, s_prev, z_prev,
    #         n_back, num_steps, status, z_done, err, end_velocity)
    guess, metric_0 = space._initial_velocities(theta_0, theta_1, alpha, times)
    z_init = jnp.stack([theta_0 + times[:, None] * delta, guess], axis=1).reshape(size)
    init = (
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
    )

    def cond(carry):
        status, num_steps = carry[12], carry[11]
        return (status == _RUNNING) & (num_steps < cfg.max_newton_steps)

    def body(carry):
        (
            z,
            z_base,
            step,
            err_base,
            s,
            ds,
            s_conv,
            z_conv,
            s_prev,
            z_prev,
            n_back,
            num_steps,
            _,
            z_done,
            _,
            end_velocity,
        ) = carry
        residual, scaled, jac, ok, u_end = evaluate(z, s)
        err = jnp.sqrt(jnp.mean(scaled**2))
        ok = ok & jnp.isfinite(err)
        converged = ok & (jnp.max(jnp.abs(scaled)) <= 1)
        finished = converged & (s >= 1)
        improved = ok & (err < (1 - 1e-4) * err_base)
        newton = jnp.linalg.solve(jac, -residual)
        newton_ok = jnp.all(jnp.isfinite(newton))
        take_newton = ~converged & improved & newton_ok
        backtrack = (
            ~converged & ~take_newton & jnp.isfinite(err_base) & (n_back < cfg.max_backtracks)
        )
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

        new_z = pick(predicted, z + newton, z_base + half_step, predicted)
        new_z_base = jnp.where(take_newton, z, z_base)
        new_step = pick(zero, newton, half_step, zero)
        new_err_base = pick(inf, err, err_base, inf)
        new_s = pick(adv_s, s, s, cut_s)
        new_ds = pick(adv_ds, ds, ds, cut_ds)
        new_s_prev = jnp.where(converged, s_conv, s_prev)
        new_z_prev = jnp.where(converged, z_conv, z_prev)
        new_s_conv = jnp.where(converged, s, s_conv)
        new_z_conv = jnp.where(converged, z, z_conv)
        new_n_back = jnp.where(backtrack, n_back + 1, 0)
        status = jnp.where(finished, _SUCCESS, _RUNNING)
        status = jnp.where(shrink & (cut_ds < cfg.min_continuation_step), _STALLED, status)
        new_z_done = jnp.where(finished, z, new_z)
        new_end = jnp.where(finished, u_end, end_velocity)
        return (
            new_z,
            new_z_base,
            new_step,
            new_err_base,
            new_s,
            new_ds,
            new_s_conv,
            new_z_conv,
            new_s_prev,
            new_z_prev,
            new_n_back,
            num_steps + 1,
            status,
            new_z_done,
            err,
            new_end,
        )

    final = jax.lax.while_loop(cond, body, init)
    z, num_steps, status, err, end_velocity = final[13], final[11], final[12], final[14], final[15]
    v = z.reshape(n, 2, d)[0, 1]
    speed = jnp.sqrt(jnp.maximum(v @ metric_0 @ v, 0.0))
    return v, end_velocity, status, err, num_steps, speed


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
