r"""The Legendre inverse of an exponential family: natural parameters from expectation ones.

Solves :math:`\nabla A(\theta) = \eta` for :math:`\theta`, which is the minimizer of the
strictly convex :math:`A(\theta) - \langle\theta, \eta\rangle` over the natural domain: damped
Newton steps (halved until the point stays in the domain and the objective decreases), then a
few full Newton polish steps, and a convergence check in relative and absolute terms. The
starting point is the family's own guess, or the best of a few candidates along a search.
Derivatives come from the implicit function theorem,
:math:`\partial\theta/\partial\eta = (\nabla^2 A)^{-1}`, not from unrolling the iterations.

References:
    Amari & Nagaoka, *Methods of Information Geometry* (2000), Sec. 3.5 (Legendre duality);
    Nocedal & Wright, *Numerical Optimization* (2nd ed., 2006), Sec. 3.3 (Newton with line
    search).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Point
from ._misc import check_domain, inverse_metric, solve_metric


def solver_tolerances(dtype) -> tuple[float, float]:
    """Default (rtol, atol) of the Newton inverse of grad A."""
    if jnp.finfo(dtype).bits >= 64:
        return 1e-13, 1e-10
    return 1e-5, 1e-5


@eqx.filter_jit
def legendre_inverse(family, eta, theta0, max_steps, rtol, atol, throw):
    """Validation, Newton solve and convergence check, compiled once per family and settings."""
    name = type(family).__name__
    eta = check_domain(
        eta, family.in_mean_domain(eta), f"eta is outside the mean domain of {name}."
    )
    if theta0 is None:
        theta0 = _search_start(family, eta, family._initial_natural_parameters(eta))
        where = "no point of the start search is inside the domain"
    else:
        where = "it is the given `initial_theta`"
    theta0 = jnp.asarray(theta0, eta.dtype)
    theta0 = eqx.error_if(
        theta0,
        jnp.logical_not(family.in_domain(theta0)),
        f"natural_parameters: the Newton starting point is outside the natural domain of {name} "
        f"({where}); pass `initial_theta=` (a point inside the domain).",
    )
    # Closure-convert A and the domain test: arrays they close over (including tracers of an
    # outer jax.grad) become explicit inputs, so the implicit-function JVP sees them.
    functions = (
        eqx.filter_closure_convert(family._raw_log_partition, theta0),
        eqx.filter_closure_convert(family.in_domain, theta0),
    )
    dynamic, static = eqx.partition(functions, eqx.is_inexact_array)
    theta = _legendre_inverse(static, max_steps, rtol, atol, dynamic, eta, theta0)
    if throw:
        raw_a = functions[0]
        converged = _newton_state(raw_a, eta, theta, rtol, atol)[-1]
        converged = jnp.logical_and(converged, family.in_domain(theta))
        theta = eqx.error_if(
            theta,
            jnp.logical_not(converged),
            f"natural_parameters: the Newton inverse of grad A for {name} did not converge; eta "
            "may be outside (or on the boundary of) the mean domain. Pass `initial_theta`, "
            "raise `max_steps`, or use throw=False to inspect the iterate.",
        )
    return theta


def _search_start(family, eta: Point, default: Point) -> Point:
    r"""A Newton starting point inside the natural domain, found from A alone.

    ``default`` (the family's own start, zeros for a bare log-partition) is kept when it is in
    the domain. Otherwise a fixed stencil of probes around it and around zero is tried,
    :math:`\pm s e_i` and :math:`\pm s \mathbf 1` for :math:`s \in \{1/2, 1, 2, 8\}` (the
    domains of the usual families, e.g. :math:`\theta_2 < 0` for the normal, contain some of
    them), and the probe inside the domain with the smallest objective
    :math:`A(\theta) - \langle\theta, \eta\rangle` is returned (the default if none is
    inside: the caller then raises).
    """
    d = eta.shape[0]
    eye = np.eye(d)
    directions = np.concatenate([eye, -eye, np.ones((1, d)), -np.ones((1, d))])
    scales = np.array([0.5, 1.0, 2.0, 8.0])
    probes = jnp.asarray((scales[:, None, None] * directions[None]).reshape(-1, d), eta.dtype)
    centers = jnp.stack([jnp.where(jnp.isfinite(default), default, 0.0), jnp.zeros_like(eta)])
    probes = jnp.concatenate([centers, (centers[:, None, :] + probes[None]).reshape(-1, d)])

    def objective(theta):
        value = family._raw_log_partition(theta) - theta @ eta
        ok = family.in_domain(theta) & jnp.isfinite(value)
        return jnp.where(ok, value, jnp.inf)

    values = jax.vmap(objective)(jax.lax.stop_gradient(probes))
    best = probes[jnp.argmin(values)]
    found = jnp.isfinite(jnp.min(values))
    keep = family.in_domain(default)
    return jnp.where(keep | ~found, default, best)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _legendre_inverse(static, max_steps, rtol, atol, dynamic, eta, theta0):
    raw_a, in_domain = eqx.combine(dynamic, static)
    return _damped_newton(raw_a, in_domain, eta, theta0, max_steps, rtol, atol)


@_legendre_inverse.defjvp
def _legendre_inverse_jvp(static, max_steps, rtol, atol, primals, tangents):
    dynamic, eta, theta0 = primals
    d_dynamic, d_eta, _ = tangents  # the solution does not depend on the starting point
    theta = _legendre_inverse(static, max_steps, rtol, atol, dynamic, eta, theta0)

    def grad_a(dyn, th):
        return jax.grad(eqx.combine(dyn, static)[0])(th)

    # Implicit function theorem on grad A(theta; dynamic) = eta. Every operation below is
    # differentiable again (theta goes back through this rule), so all orders work.
    _, d_grad = jax.jvp(lambda dyn: grad_a(dyn, theta), (dynamic,), (d_dynamic,))
    hess = jax.jacfwd(lambda th: grad_a(dynamic, th))(theta)
    d_theta = solve_metric(hess, d_eta - d_grad)
    return theta, d_theta


def _newton_state(raw_a, eta, theta, rtol, atol):
    """Residual, Newton step, decrement and convergence flag at ``theta``."""
    residual = jax.grad(raw_a)(theta) - eta
    inverse = inverse_metric(jax.hessian(raw_a)(theta))
    step = -inverse @ residual
    decrement = jnp.sqrt(jnp.abs(residual @ step))
    scale = jnp.sqrt(jnp.abs(eta) @ jnp.abs(inverse) @ jnp.abs(eta))
    converged = jnp.logical_and(jnp.all(jnp.isfinite(step)), decrement <= atol + rtol * scale)
    return residual, step, decrement, converged


def _damped_newton(raw_a, in_domain, eta, theta0, max_steps, rtol, atol):
    """Newton on f(theta) = A(theta) - <theta, eta> with an Armijo backtracking line search."""

    def objective(theta):
        value = raw_a(theta) - theta @ eta
        ok = jnp.logical_and(in_domain(theta), jnp.isfinite(value))
        return jnp.where(ok, value, jnp.inf)

    def state(theta):
        residual, step, decrement, converged = _newton_state(raw_a, eta, theta, rtol, atol)
        finite = jnp.all(jnp.isfinite(step))
        # Steepest descent if the Hessian solve failed numerically (A not convex there).
        step = jnp.where(finite, step, -residual)
        decrement = jnp.where(finite & jnp.isfinite(decrement), decrement, jnp.inf)
        return step, decrement, converged

    def cond(carry):
        _, (_, _, done), count, stalled = carry
        return (count < max_steps) & jnp.logical_not(done) & jnp.logical_not(stalled)

    def body(carry):
        theta, (direction, decrement, done), count, _ = carry
        value = objective(theta)
        slope = -jnp.where(jnp.isfinite(decrement), decrement**2, direction @ direction)

        def armijo(t):
            return objective(theta + t * direction) <= value + 1e-4 * t * slope

        def ls_cond(ls):
            t, tries = ls
            return jnp.logical_and(tries < 50, jnp.logical_not(armijo(t)))

        def ls_body(ls):
            t, tries = ls
            return 0.5 * t, tries + 1

        t, _ = jax.lax.while_loop(ls_cond, ls_body, (jnp.ones((), theta.dtype), 0))
        accepted = armijo(t)
        # No acceptable step: rounding noise dominates the objective; the polishing below
        # takes over.
        new_theta = jnp.where(accepted, theta + t * direction, theta)
        new_state = state(new_theta)
        return new_theta, new_state, count + 1, jnp.logical_not(accepted)

    theta0 = jnp.asarray(theta0, eta.dtype)
    init = (theta0, state(theta0), jnp.asarray(0), jnp.asarray(False))
    theta, current, _, _ = jax.lax.while_loop(cond, body, init)

    # Undamped polishing steps: Newton converges quadratically, so once the decrement is
    # small each step squares it, down to rounding level. A step is kept only if it helps.
    def polish(carry, _):
        theta, (step, decrement, done) = carry
        candidate = theta + step
        new = state(candidate)
        better = jnp.isfinite(objective(candidate)) & (new[1] < decrement)
        keep = lambda new_leaf, old_leaf: jnp.where(better, new_leaf, old_leaf)
        old = (theta, (step, decrement, done))
        return jax.tree_util.tree_map(keep, (candidate, new), old), None

    (theta, _), _ = jax.lax.scan(polish, (theta, current), None, length=3)
    return theta
