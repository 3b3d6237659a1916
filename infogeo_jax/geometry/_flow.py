r"""The geodesic flow, its Jacobian and parallel transport, as diffrax ODE solves.

Everything here is derived from one matrix-free object of the manifold, the contracted
Christoffel symbols :math:`\Gamma^{(\alpha)k}_{ij} u^i w^j` (``space._christoffel_contract``),
and from ``space.metric`` and ``space.in_domain``:

- the alpha-geodesic equation :math:`\ddot x^k + \Gamma^{(\alpha)k}_{ij}\dot x^i\dot x^j = 0`,
  solved as a first-order system in :math:`(x, \dot x)` by an adaptive Runge-Kutta method
  (Dopri8 in float64, Tsit5 in float32) with PID step-size control;
- its variational (Jacobi-field) equations, integrated alongside, giving the Jacobian of the
  exponential map for the custom JVP rules (so that ``jax.jvp``, ``jax.grad`` and
  ``jax.jacfwd`` work without differentiating through the solver);
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
import optimistix as optx

from .._custom_types import Array, Point
from ._settings import _Settings
from ._space import GeodesicSpace


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
    # Several save times are stepped to rather than interpolated: the dense output between the
    # steps is less accurate than the steps (about 1e-9 against 1e-12 for Dopri8 at rtol 1e-12
    # on Beta geodesics), and batched calls interpolated up to 1e-9 away from single calls. A
    # step clipped to land on a save time can be tiny, and the controller grows the next one
    # from it, so the smallest-step test would fire on a healthy solve: there a solve that
    # creeps along a boundary fails at `max_steps` instead.
    clip = ts is not None and ts.shape[0] > 1
    controller = diffrax.PIDController(
        rtol=cfg.rtol,
        atol=cfg.atol,
        pcoeff=cfg.pcoeff,
        icoeff=cfg.icoeff,
        norm=norm,
        dtmin=None if clip else cfg.min_step * t1,
        force_dtmin=False,
    )
    if clip:
        controller = diffrax.ClipStepSizeController(controller, step_ts=ts)
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
