r"""Mirror descent and exponentiated gradient as optax transformations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, PyTree
from ._apply import check_not_schedule_value
from ._common import cast_like, require_params, tree_dtype


class ScaleByMirrorDescentState(NamedTuple):
    """State of :func:`scale_by_mirror_descent`.

    Attributes:
        count: number of updates so far (int32), to evaluate a learning-rate schedule.
    """

    count: Array


class ScaleByExponentiatedGradientState(NamedTuple):
    """State of :func:`scale_by_exponentiated_gradient`.

    Attributes:
        count: number of updates so far (int32), to evaluate a learning-rate schedule.
    """

    count: Array


def _learning_rate(learning_rate: optax.ScalarOrSchedule, count: Array, dtype: Any) -> Array:
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(lr, dtype)


def _direction(params: PyTree, target: PyTree, lr: Array, nonnegative: bool = False) -> PyTree:
    r"""The direction :math:`d = (\theta - \theta_+) / \alpha` of a mirror step.

    Chained with ``optax.scale_by_learning_rate(alpha)`` the update is :math:`-\alpha d =
    \theta_+ - \theta`, so ``optax.apply_updates`` lands on :math:`\theta_+` up to rounding
    (two roundings of the product and quotient, a few ulp of :math:`\theta`). For
    :math:`\alpha = 0` the direction is zero. With ``nonnegative``, the target is raised to at
    least :math:`4\epsilon\theta` (machine epsilon :math:`\epsilon`) where :math:`\theta > 0`:
    then :math:`|\alpha d| < \theta` after every rounding, so an entry that underflows lands on a
    tiny nonnegative number, never on a negative rounding residue (zeros stay exactly zero).
    """

    def leaf(p: Array, t: Array) -> Array:
        if nonnegative:
            eps = jnp.finfo(p.dtype).eps if jnp.issubdtype(p.dtype, jnp.floating) else 0.0
            t = jnp.where(p > 0, jnp.maximum(t, 4 * eps * p), t)
        step = lr.astype(p.dtype)
        nonzero = step != 0
        return jnp.where(nonzero, (p - t) / jnp.where(nonzero, step, 1.0), jnp.zeros_like(p))

    return jax.tree.map(leaf, params, target)


def _newton_inverse_gradient(
    potential: Callable[[PyTree], Array],
    dual: PyTree,
    start: PyTree,
    max_steps: int,
    rtol: float | None,
    atol: float | None,
    throw: bool,
    in_domain: Callable[[PyTree], Array] | None,
) -> PyTree:
    r"""Solve :math:`\nabla F(x) = y` by damped Newton on :math:`F(x) - \langle x, y\rangle`.

    Backtracking (Armijo) keeps every iterate inside ``in_domain`` (when given; the potential
    is never evaluated outside it) and where :math:`F` is finite.
    """
    x0, unravel = ravel_pytree(start)
    y, _ = ravel_pytree(dual)
    y = y.astype(x0.dtype)
    tol = 1e-12 if x0.dtype == jnp.float64 else 1e-6
    rtol = tol if rtol is None else rtol
    atol = tol if atol is None else atol
    flat_potential = lambda x: potential(unravel(x))
    objective = lambda x: flat_potential(x) - jnp.vdot(x, y)
    gradient = lambda x: jax.grad(flat_potential)(x) - y

    def converged(x, slack=1.0):
        return jnp.all(jnp.abs(gradient(x)) <= slack * (atol + rtol * jnp.abs(y)))

    def cond(carry):
        x, step = carry
        return (step < max_steps) & jnp.logical_not(converged(x))

    def body(carry):
        x, step = carry
        grad = gradient(x)
        hess = jax.hessian(flat_potential)(x)
        dx = jnp.linalg.solve(hess, grad)
        f0 = objective(x)
        slope = jnp.vdot(grad, dx)

        def ls_cond(ls):
            t, i = ls
            trial = x - t * dx
            if in_domain is not None:
                inside = in_domain(unravel(trial))
                f = jnp.where(inside, objective(jnp.where(inside, trial, x)), jnp.inf)
            else:
                f = objective(trial)
            bad = jnp.logical_not(jnp.isfinite(f)) | (f > f0 - 1e-4 * t * slope)
            return bad & (i < 60)

        t, _ = jax.lax.while_loop(
            ls_cond, lambda ls: (0.5 * ls[0], ls[1] + 1), (jnp.ones((), x.dtype), 0)
        )
        return x - t * dx, step + 1

    x, _ = jax.lax.while_loop(cond, body, (x0, 0))
    if throw:
        ok = converged(x, 100.0) & jnp.all(jnp.isfinite(x))
        x = eqx.error_if(
            x,
            jnp.logical_not(ok),
            "mirror_descent: the Newton solve of grad(potential)(theta) = y did not converge; "
            "the dual point may be outside the range of grad(potential). Pass a closed-form "
            "`inverse_gradient`, lower the learning rate, or raise `newton_max_steps`.",
        )
    return unravel(x)


def _with_tikhonov(potential: Callable[[PyTree], Array], damping: Array, x: PyTree) -> Array:
    """``potential(x) + damping / 2 * |x|^2`` over all leaves of ``x``."""
    squared = sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(x))
    return potential(x) + 0.5 * damping.astype(jnp.result_type(squared)) * squared


def scale_by_mirror_descent(
    potential: Callable[[PyTree], Array],
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    damping: float | Array = 0.0,
    inverse_gradient: Callable[[PyTree], PyTree] | None = None,
    newton_max_steps: int = 50,
    newton_rtol: float | None = None,
    newton_atol: float | None = None,
    in_domain: Callable[[PyTree], Array] | None = None,
    throw: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""The mirror-descent step for the mirror map :math:`\nabla F` (``potential`` :math:`F`).

    Mirror descent steps in the dual coordinates :math:`\nabla F(\theta)`:

    .. math::
        \theta_{+} = (\nabla F)^{-1}\big(\nabla F(\theta) - \alpha g\big).

    The step is not linear in :math:`\alpha`, so a direction computed without :math:`\alpha`
    cannot reproduce it after ``optax.scale_by_learning_rate``. This block therefore takes the
    learning rate and returns the direction

    .. math::
        d = \frac{\theta - \theta_+}{\alpha} \quad (d = 0 \text{ for } \alpha = 0),

    and :func:`mirror_descent` chains it with ``optax.scale_by_learning_rate`` of the same
    learning rate (same schedule, same count), so the chained update :math:`-\alpha d` is
    exactly :math:`\theta_+ - \theta` up to rounding. Use the same learning rate in both
    places when composing by hand. As :math:`\alpha \to 0`,
    :math:`d \to (\nabla^2 F)^{-1} g`, the natural gradient for the Hessian metric of F.

    With the log-partition :math:`A` of an exponential family as the
    potential (``params`` its natural parameters), mirror descent is natural gradient descent in
    the expectation parameters, and with :math:`\alpha = 1` on the mean negative
    log-likelihood it lands on the maximum-likelihood estimate in one step.

    ``damping`` :math:`\lambda` adds the Tikhonov term :math:`\frac\lambda2\|\theta\|^2` to the
    potential, so the metric :math:`\nabla^2 F` (the Fisher, for :math:`F = A`) becomes
    :math:`\nabla^2 F + \lambda I` as in :func:`natural_gradient`: the small-step limit is the
    damped natural gradient :math:`(\nabla^2 F + \lambda I)^{-1} g`. The damped mirror map has
    no closed-form inverse, so ``damping`` must be 0 when ``inverse_gradient`` is given.

    The inverse :math:`(\nabla F)^{-1} = \nabla F^*` comes from ``inverse_gradient`` when given
    (a closed form, e.g. ``family.natural_parameters``), else from a damped Newton solve on
    :math:`F(x) - \langle x, y\rangle` started at the current parameters, backtracking so that
    every iterate stays in ``in_domain`` (pass it when the potential raises or is undefined
    outside its domain, e.g. ``in_domain=family.in_domain`` with ``family.log_partition``).

    Args:
        potential: strictly convex :math:`F(\text{params}) \to` scalar (a Legendre function).
        learning_rate: :math:`\alpha`, a scalar or an optax schedule.
        damping: Tikhonov term :math:`\lambda \ge 0` added to the metric :math:`\nabla^2 F`
            (the potential becomes :math:`F + \frac\lambda2\|\theta\|^2`).
        inverse_gradient: optional closed form of :math:`(\nabla F)^{-1}`, pytree to pytree
            (only with ``damping=0``).
        newton_max_steps: maximum Newton steps of the numerical inverse.
        newton_rtol: relative tolerance of the Newton solve (default 1e-12 in float64, 1e-6 in
            float32), elementwise on :math:`\nabla F(x) - y`; ``throw`` raises beyond 100 times
            the tolerance.
        newton_atol: absolute tolerance of the same test.
        in_domain: optional ``in_domain(params) -> bool`` of the potential's domain, kept by the
            Newton line search.
        throw: raise (also under ``jit``) if the Newton solve did not converge.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
        ValueError: if ``params`` is missing in ``update``, or ``damping`` is a nonzero number
            while ``inverse_gradient`` is given.
        equinox.EquinoxRuntimeError: if the Newton inverse did not converge (``throw=True``), or
            (a traced ``damping``, e.g. under ``optax.inject_hyperparams``) if ``damping`` is
            negative, or nonzero with ``inverse_gradient``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import scale_by_mirror_descent
        >>> potential = lambda x: 0.5 * jnp.sum(x**2)  # Euclidean mirror map: plain gradient
        >>> opt = scale_by_mirror_descent(potential, 0.1)
        >>> params = jnp.array([1.0, 2.0])
        >>> direction, _ = opt.update(jnp.array([1.0, 1.0]), opt.init(params), params)
        >>> bool(jnp.allclose(direction, 1.0))
        True

    References:
        Nemirovski & Yudin, *Problem Complexity and Method Efficiency in Optimization* (1983);
        Beck & Teboulle, *Mirror descent and nonlinear projected subgradient methods*, Oper.
        Res. Lett. 31 (2003), Eq. (3.1); Raskutti & Mukherjee, *The information geometry of
        mirror descent*, IEEE Trans. Inf. Theory 61 (2015), Theorem 1.
    """
    check_not_schedule_value(potential, "potential", "mirror_descent")
    for name, fn in (("inverse_gradient", inverse_gradient), ("in_domain", in_domain)):
        if fn is not None:
            check_not_schedule_value(fn, name, "mirror_descent")
    # A Python 0 (the default) adds nothing: skip the term and its run-time check.
    static_zero_damping = isinstance(damping, (int, float)) and damping == 0
    if isinstance(damping, (int, float)):
        if damping < 0:
            raise ValueError(f"`damping` must be >= 0, got {damping}.")
        if damping != 0 and inverse_gradient is not None:
            raise ValueError(
                "`inverse_gradient` is the closed-form inverse of the undamped mirror map; it "
                "cannot be combined with a nonzero `damping` (drop one of them)."
            )

    def init_fn(params: PyTree) -> ScaleByMirrorDescentState:
        del params
        return ScaleByMirrorDescentState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(params, "scale_by_mirror_descent / mirror_descent")
        dtype = tree_dtype(updates)
        lr = _learning_rate(learning_rate, state.count, dtype)
        if static_zero_damping:
            damped_potential = potential
        else:
            damp = jnp.asarray(damping, dtype)
            bad_damping = (damp < 0) | ((damp != 0) & (inverse_gradient is not None))
            damp = eqx.error_if(
                damp,
                bad_damping,
                "mirror_descent: `damping` must be >= 0, and 0 when `inverse_gradient` is given.",
            )
            damped_potential = functools.partial(_with_tikhonov, potential, damp)

        grad_potential = jax.grad(damped_potential)(params)
        dual = jax.tree.map(lambda a, g: a - lr.astype(a.dtype) * g, grad_potential, updates)
        if inverse_gradient is not None:
            target = inverse_gradient(dual)
        else:
            target = _newton_inverse_gradient(
                damped_potential,
                dual,
                params,
                newton_max_steps,
                newton_rtol,
                newton_atol,
                throw,
                in_domain,
            )
        target = cast_like(target, params)
        new_state = ScaleByMirrorDescentState(count=jnp.asarray(optax.safe_increment(state.count)))
        return cast_like(_direction(params, target, lr), updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mirror_descent(
    learning_rate: optax.ScalarOrSchedule,
    potential: Callable[[PyTree], Array],
    *,
    damping: float | Array = 0.0,
    inverse_gradient: Callable[[PyTree], PyTree] | None = None,
    newton_max_steps: int = 50,
    newton_rtol: float | None = None,
    newton_atol: float | None = None,
    in_domain: Callable[[PyTree], Array] | None = None,
    throw: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Mirror descent: :math:`\theta_+ = (\nabla F)^{-1}(\nabla F(\theta) - \alpha g)`.

    :func:`scale_by_mirror_descent` (which takes the learning rate and returns
    :math:`d = (\theta - \theta_+)/\alpha`) chained with ``optax.scale_by_learning_rate`` of the
    same learning rate, so the update :math:`-\alpha d` is the mirror step
    :math:`\theta_+ - \theta` (up to rounding).
    ``optax.inject_hyperparams`` takes every callable argument for a schedule: wrap
    ``potential`` (and ``inverse_gradient``, ``in_domain`` when given) in
    :func:`not_a_schedule`, or pass their names in ``static_args``.

    Args:
        learning_rate: :math:`\alpha`, a scalar or an optax schedule.
        potential: the Legendre function :math:`F` of the mirror map :math:`\nabla F`.
        damping: Tikhonov term added to the metric :math:`\nabla^2 F` (see
            :func:`scale_by_mirror_descent`).
        inverse_gradient: optional closed form of :math:`(\nabla F)^{-1}` (``damping=0``).
        newton_max_steps: maximum Newton steps of the numerical inverse.
        newton_rtol: relative tolerance of the Newton solve.
        newton_atol: absolute tolerance of the Newton solve.
        in_domain: optional ``in_domain(params) -> bool`` kept by the Newton line search.
        throw: raise if the Newton solve did not converge.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from infogeo_jax.families import Poisson
        >>> from infogeo_jax.optim import mirror_descent
        >>> family = Poisson()
        >>> nll = lambda theta: family.log_partition(theta) - 3.0 * theta[0]  # mean count 3
        >>> opt = mirror_descent(1.0, family.log_partition, in_domain=family.in_domain)
        >>> theta = jnp.array([0.0])
        >>> updates, _ = opt.update(jax.grad(nll)(theta), opt.init(theta), theta)
        >>> bool(jnp.allclose(optax.apply_updates(theta, updates), jnp.log(3.0)))
        True

    References:
        Beck & Teboulle, Oper. Res. Lett. 31 (2003), Eq. (3.1).
    """
    return optax.chain(
        scale_by_mirror_descent(
            potential,
            learning_rate,
            damping=damping,
            inverse_gradient=inverse_gradient,
            newton_max_steps=newton_max_steps,
            newton_rtol=newton_rtol,
            newton_atol=newton_atol,
            in_domain=in_domain,
            throw=throw,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )


def _exponentiated_leaf(p: Array, g: Array, lr: Array, axis: int | None) -> Array:
    """``p * exp(-lr g)`` renormalized over ``axis``, zeros kept at zero, no NaN."""
    positive = p > 0
    s = jnp.where(positive, -lr.astype(p.dtype) * g, -jnp.inf)
    m = jnp.max(s, axis=axis, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    w = jnp.where(positive, p * jnp.exp(jnp.where(positive, s - m, 0.0)), 0.0)
    total = jnp.sum(w, axis=axis, keepdims=True)
    return w / jnp.where(total > 0, total, 1.0)


def scale_by_exponentiated_gradient(
    learning_rate: optax.ScalarOrSchedule = 1.0, *, axis: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""The exponentiated-gradient step for parameters on the probability simplex.

    Each leaf :math:`p` (summing to one over ``axis``; ``None``: the whole leaf) moves to

    .. math::
        p_+ = \frac{p \odot e^{-\alpha g}}{\sum p \odot e^{-\alpha g}},

    mirror descent with the negative entropy :math:`\sum p \log p` as the potential, restricted
    to the simplex (Kivinen & Warmuth). As in :func:`scale_by_mirror_descent`, the block takes
    the learning rate and returns :math:`d = (p - p_+)/\alpha`, and
    :func:`exponentiated_gradient` chains it with ``optax.scale_by_learning_rate`` of the same
    learning rate, so that the update :math:`-\alpha d` lands on :math:`p_+` (up to rounding).
    A leaf summing to :math:`c` keeps summing to :math:`c`. The exponentials are computed
    after subtracting the maximum (no overflow); zero entries stay exactly zero and never
    produce NaN, even where the gradient is infinite, and an entry that underflows lands on a
    tiny nonnegative number (at most a few ulp of its old value), never on a negative rounding
    residue.

    Args:
        learning_rate: :math:`\alpha`, a scalar or an optax schedule.
        axis: the simplex axis of each leaf, or ``None`` for the whole leaf.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
        ValueError: if ``params`` is missing in ``update``.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.optim import scale_by_exponentiated_gradient
        >>> p = jnp.array([0.5, 0.5, 0.0])
        >>> lr = jnp.log(3.0)
        >>> opt = scale_by_exponentiated_gradient(lr)
        >>> direction, _ = opt.update(jnp.array([0.0, 1.0, 0.0]), opt.init(p), p)
        >>> bool(jnp.allclose(p - lr * direction, jnp.array([0.75, 0.25, 0.0])))
        True

    References:
        Kivinen & Warmuth, *Exponentiated gradient versus gradient descent for linear
        predictors*, Information and Computation 132 (1997), Eq. (3.2).
    """

    def init_fn(params: PyTree) -> ScaleByExponentiatedGradientState:
        del params
        return ScaleByExponentiatedGradientState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(params, "scale_by_exponentiated_gradient / exponentiated_gradient")
        lr = _learning_rate(learning_rate, state.count, tree_dtype(updates))
        target = jax.tree.map(lambda p, g: _exponentiated_leaf(p, g, lr, axis), params, updates)
        new_state = ScaleByExponentiatedGradientState(
            count=jnp.asarray(optax.safe_increment(state.count))
        )
        return cast_like(_direction(params, target, lr, nonnegative=True), updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def exponentiated_gradient(
    learning_rate: optax.ScalarOrSchedule, *, axis: int | None = None
) -> optax.GradientTransformationExtraArgs:
    r"""Exponentiated gradient: :math:`p_+ \propto p \odot e^{-\alpha g}` on the simplex.

    :func:`scale_by_exponentiated_gradient` chained with ``optax.scale_by_learning_rate`` of the
    same learning rate: the update is :math:`p_+ - p` (up to rounding), so leaves that sum to
    one keep summing to one and stay nonnegative; zeros stay zero.

    Args:
        learning_rate: :math:`\alpha`, a scalar or an optax schedule.
        axis: the simplex axis of each leaf, or ``None`` for the whole leaf.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import exponentiated_gradient
        >>> p = jnp.array([0.25, 0.25, 0.5])
        >>> opt = exponentiated_gradient(0.1)
        >>> updates, _ = opt.update(jnp.array([1.0, 0.0, 0.0]), opt.init(p), p)
        >>> float(jnp.sum(optax.apply_updates(p, updates)))
        1.0

    References:
        Kivinen & Warmuth, Information and Computation 132 (1997).
    """
    return optax.chain(
        scale_by_exponentiated_gradient(learning_rate, axis=axis),
        optax.scale_by_learning_rate(learning_rate),
    )
