r"""The convex problems behind the information projections, and their Newton solver.

Every projection minimizes a smooth strictly convex function of the subfamily coordinates
``w``: the tilted log-partition :math:`A(\theta(w)) - \langle\theta(w), \eta\rangle` (an
m-projection) or a reverse KL divergence (an e-projection). Each problem supplies its value,
gradient and metric (the Hessian, a Fisher matrix); :func:`run` minimizes it by damped Newton
steps with a backtracking line search and returns a :class:`ProjectionResult`, differentiable
by the implicit function theorem at the optimum.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Int

from ._custom_types import Array, Float, Metric, Point, Sample, Scalar
from ._family import AbstractExponentialFamily, _default_tolerance
from ._misc import solve_metric
from ._results import RESULTS


class ProjectionResult(eqx.Module):
    """The outcome of an iterative projection.

    Attributes:
        theta: natural parameters of the projection, shape ``(dim,)``.
        coordinates: its coordinates in the subfamily: ``w`` with
            ``theta = offset + basis @ w`` (e-flat subfamily), the multipliers ``lambda`` with
            ``theta = theta_target + constraint_matrix.T @ lambda`` (m-flat subfamily), or
            ``theta`` itself (whole family).
        num_steps: number of Newton / natural-gradient steps taken.
        result: a :class:`RESULTS` code.
    """

    theta: Point
    coordinates: Float[Array, " m"]
    num_steps: Int[Array, ""]
    result: RESULTS

    @property
    def successful(self) -> Array:
        """Whether the iteration converged (a boolean scalar array)."""
        return self.result == RESULTS.successful


# ---------------------------------------------------------------------------------- problems


class _AbstractProblem(eqx.Module):
    """An objective f(w) on the coordinates of an affine slice theta = o + B w."""

    family: AbstractExponentialFamily
    offset: Point
    basis: Float[Array, "dim m"]

    def theta(self, w: Array) -> Point:
        return self.offset + self.basis @ w

    def ok(self, w: Array) -> Array:
        return self.family.in_domain(self.theta(w))

    @abc.abstractmethod
    def value(self, w: Array) -> Scalar:
        """The objective at w (assumed inside the domain)."""

    @abc.abstractmethod
    def gradient(self, w: Array) -> Array:
        """Its gradient in w."""

    def metric(self, w: Array) -> Metric:
        """The Fisher metric of the slice, B^T g B (the Hessian for the affine problems)."""
        g = jax.hessian(self.family._raw_log_partition)(self.theta(w))
        return self.basis.T @ g @ self.basis


class _TiltedPartition(_AbstractProblem):
    r"""f(w) = A(o + B w) - <w, b>: both affine projections (convex, Hessian B^T g B)."""

    target: Array

    def value(self, w: Array) -> Scalar:
        return self.family._raw_log_partition(self.theta(w)) - w @ self.target

    def gradient(self, w: Array) -> Array:
        eta = jax.grad(self.family._raw_log_partition)(self.theta(w))
        return self.basis.T @ eta - self.target


class _ReverseKLMember(_AbstractProblem):
    r"""f(w) = KL(q_{o + B w} || p_{theta_p}) with p a member of the family (closed form)."""

    target_theta: Point

    def value(self, w: Array) -> Scalar:
        theta = self.theta(w)
        raw_a = self.family._raw_log_partition
        a_q, eta_q = jax.value_and_grad(raw_a)(theta)
        return raw_a(self.target_theta) - a_q - (self.target_theta - theta) @ eta_q

    def gradient(self, w: Array) -> Array:
        theta = self.theta(w)
        g = jax.hessian(self.family._raw_log_partition)(theta)
        return self.basis.T @ (g @ (theta - self.target_theta))


class _ReverseKLDensity(_AbstractProblem):
    r"""f(w) = KL(q_{o + B w} || p) + log Z for an unnormalized log-density of p."""

    log_density: Callable[[Sample], Scalar]
    expectation: Callable[[Callable[[Sample], Any], Point], Any]

    def _excess(self, x: Sample) -> Scalar:
        # l(x) = log p~(x) - log h(x): what the target adds to the base measure.
        return jnp.asarray(self.log_density(x)) - self.family.log_base_measure(x)

    def value(self, w: Array) -> Scalar:
        theta = self.theta(w)
        a, eta = jax.value_and_grad(self.family._raw_log_partition)(theta)
        return theta @ eta - a - self.expectation(self._excess, theta)

    def gradient(self, w: Array) -> Array:
        # Equals B^T (g theta - Cov_q[T(x), l(x)]) for an exact expectation; differentiating the
        # value keeps gradient and value consistent for an inexact rule (quadrature, MC).
        return jax.grad(self.value)(w)


# ---------------------------------------------------------------------------------- solver


def _minimize(problem: _AbstractProblem, w0: Array, max_steps: int, rtol: float, atol: float):
    """Damped Newton / natural-gradient descent with an Armijo line search inside the domain.

    The step is ``-metric(w)^{-1} gradient(w)`` (Newton for the affine projections, where the
    metric is the Hessian; the natural gradient for the e-projection). Converged when the full
    step is below ``atol + rtol |w|`` elementwise; that last step is still taken.
    Returns ``(w, num_steps, status)`` with status 0 converged, 1 running/max steps,
    2 non-finite, 3 stalled.
    """

    def safe_value(w, w_safe):
        ok = problem.ok(w)
        value = problem.value(jnp.where(ok, w, w_safe))
        return jnp.where(ok & jnp.isfinite(value), value, jnp.inf)

    def cond(carry):
        _, _, step, status = carry
        return (status == 1) & (step < max_steps)

    def body(carry):
        w, value, step, _ = carry
        gradient = problem.gradient(w)
        direction = -solve_metric(problem.metric(w), gradient)
        finite = jnp.all(jnp.isfinite(direction)) & jnp.isfinite(value)
        direction = jnp.where(finite, direction, 0.0)
        small = jnp.all(jnp.abs(direction) <= atol + rtol * jnp.abs(w))
        slope = gradient @ direction
        # Rounding level of the objective: near the optimum the decrease is below it, and the
        # Armijo test must not reject a good step for a last-bit change.
        noise = 64 * jnp.finfo(w.dtype).eps * jnp.maximum(jnp.abs(value), 1.0)

        def ls_cond(ls):
            t, count = ls
            trial = safe_value(w + t * direction, w)
            return (count < 60) & ~(trial <= value + 1e-4 * t * slope + noise)

        def ls_body(ls):
            t, count = ls
            return 0.5 * t, count + 1

        # Initial step: the secant minimizer of the objective along the direction, from the
        # slopes at t = 0 and t = 1 (t = 1 for Newton near the optimum; it corrects the natural
        # gradient where the Fisher metric differs from the Hessian), capped at 1.
        full = w + direction
        full_ok = problem.ok(full)
        slope_full = problem.gradient(jnp.where(full_ok, full, w)) @ direction
        curvature = slope_full - slope
        secant = -slope / jnp.where(curvature > 0, curvature, 1.0)
        use_secant = full_ok & (curvature > 0) & jnp.isfinite(secant) & (secant > 0)
        t0 = jnp.where(use_secant, jnp.minimum(secant, 4.0), 1.0).astype(w.dtype)
        t, count = jax.lax.while_loop(ls_cond, ls_body, (t0, 0))
        full_value = safe_value(full, w)
        searched = w + t * direction
        searched_value = safe_value(searched, w)
        accepted = (count < 60) & jnp.isfinite(searched_value)
        # A step below tolerance ends the iteration; it is taken even if the line search could
        # not certify a decrease (at rounding level), unless it leaves the domain.
        take_full = small & ~accepted & jnp.isfinite(full_value)
        new_w = jnp.where(accepted, searched, jnp.where(take_full, full, w))
        new_value = jnp.where(accepted, searched_value, jnp.where(take_full, full_value, value))
        status = jnp.where(~finite, 2, jnp.where(small, 0, jnp.where(accepted, 1, 3)))
        return new_w, new_value, step + 1, status

    value0 = safe_value(w0, w0)
    status0 = jnp.where(jnp.isfinite(value0), 1, 2)
    init = (w0, value0, jnp.asarray(0), status0)
    w, _, steps, status = jax.lax.while_loop(cond, body, init)
    return w, steps, status


@eqx.filter_custom_jvp
def _implicit(w_star, problem):
    """Return ``w_star``; its derivatives come from the optimality condition gradient = 0."""
    del problem
    return w_star


@_implicit.def_jvp
def _implicit_jvp(primals, tangents):
    w_star, problem = primals
    _, t_problem = tangents

    def residual(p):
        return p.gradient(w_star)

    _, d_residual = eqx.filter_jvp(residual, (problem,), (t_problem,))
    jac = jax.jacfwd(problem.gradient)(w_star)
    return w_star, -jnp.linalg.solve(jac, d_residual)


def run(
    problem: _AbstractProblem,
    w0: Array,
    max_steps: int,
    rtol: float | None,
    atol: float | None,
    throw: bool,
) -> ProjectionResult:
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise ValueError(f"`max_steps` must be a positive Python int, got {max_steps!r}.")
    tol = _default_tolerance(w0.dtype)
    rtol = tol if rtol is None else rtol
    atol = tol if atol is None else atol
    dynamic, static = eqx.partition(problem, eqx.is_array)
    frozen = eqx.combine(jax.lax.stop_gradient(dynamic), static)
    w, steps, status = _minimize(frozen, jax.lax.stop_gradient(w0), max_steps, rtol, atol)
    w = _implicit(w, problem)
    result = RESULTS.where(
        status == 0,
        RESULTS.successful,
        RESULTS.where(
            status == 2,
            RESULTS.nonfinite,
            RESULTS.where(status == 3, RESULTS.stalled, RESULTS.max_steps_reached),
        ),
    )
    theta = problem.theta(w)
    if throw:
        theta, w = result.error_if((theta, w), result != RESULTS.successful)
    return ProjectionResult(theta=theta, coordinates=w, num_steps=steps, result=result)
