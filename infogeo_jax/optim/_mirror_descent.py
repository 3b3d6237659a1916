r"""Mirror descent and exponentiated gradient as optax transformations."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import Array, PyTree
from .._family import AbstractExponentialFamily
from ._apply import check_not_schedule_value
from ._common import (
    cast_like,
    check_same_structure,
    require_params,
    tree_dtype,
    working_dtype,
)

# The domain predicate of a family's own potentials: `mirror_descent(lr, family.log_partition)`
# keeps the Newton line search inside the family's domain without the user passing `in_domain`.
_DOMAIN_OF_POTENTIAL = {"log_partition": "in_domain", "dual_potential": "in_mean_domain"}


def _family_domain(potential: Callable[..., Any]) -> Callable[[PyTree], Array] | None:
    """``family.in_domain`` for ``family.log_partition`` (bound methods of a family), else None."""
    owner = getattr(potential, "__self__", None)  # a bound method, of any callable kind
    name = getattr(getattr(potential, "__func__", None), "__name__", None)
    if isinstance(owner, AbstractExponentialFamily) and name in _DOMAIN_OF_POTENTIAL:
        predicate = getattr(owner, _DOMAIN_OF_POTENTIAL[name])
        return lambda params: predicate(ravel_pytree(params)[0])
    return None


def _finite_gradient_check(updates: PyTree, params: PyTree, name: str, throw: bool):
    """``(updates, bad)``: raise (``throw``) or flag when the gradient is not finite."""
    leaves = jax.tree.leaves(updates)
    bad = jnp.logical_not(jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in leaves])))
    if throw:
        updates = eqx.error_if(
            updates,
            bad,
            f"{name}: the gradient contains NaN or inf (a diverged loss or a bad batch). To "
            "skip such steps, build the optimizer with `throw=False` and wrap it in "
            "`optax.apply_if_finite`.",
        )
    del params
    return updates, bad


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


def _ravel_working(tree: PyTree) -> tuple[Array, Callable[[Array], PyTree]]:
    """Like ``ravel_pytree``, in at least float32, with an ``unravel`` that keeps that dtype.

    ``jax.flatten_util.ravel_pytree``'s ``unravel`` casts back to each leaf's dtype, which
    would evaluate the potential (and factor its Hessian) in bfloat16 for bfloat16 params.
    """
    leaves, treedef = jax.tree.flatten(tree)
    dtype = working_dtype(tree_dtype(tree))
    shapes = [jnp.shape(leaf) for leaf in leaves]
    sizes = [math.prod(shape) for shape in shapes]
    flat = (
        jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])
        if leaves
        else (jnp.zeros((0,), dtype))
    )

    def unravel(x: Array) -> PyTree:
        parts, offset = [], 0
        for shape, size in zip(shapes, sizes):
            parts.append(x[offset : offset + size].reshape(shape))
            offset += size
        return jax.tree.unflatten(treedef, parts)

    return flat, unravel


def _newton_inverse_gradient(
    potential: Callable[[PyTree], Array],
    dual: PyTree,
    start: PyTree,
    max_steps: int,
    rtol: float | None,
    atol: float | None,
    throw: bool,
    in_domain: Callable[[PyTree], Array] | None,
    ok: Array | bool = True,
) -> PyTree:
    r"""Solve :math:`\nabla F(x) = y` by damped Newton on :math:`F(x) - \langle x, y\rangle`.

    Backtracking (Armijo) keeps every iterate inside ``in_domain`` (when given; the potential
    is never evaluated outside it) and where :math:`F` is finite.
    """
    x0, unravel = _ravel_working(start)
    y, _ = _ravel_working(dual)
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
        converged_ok = converged(x, 100.0) & jnp.all(jnp.isfinite(x))
        x = eqx.error_if(
            x,
            jnp.logical_not(converged_ok) & ok,
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
    every iterate stays in ``in_domain``, where the potential is evaluated only (pass it when
    the potential raises or is undefined outside its domain). A family's own potentials need
    no ``in_domain``: for ``family.log_partition`` (``family.dual_potential``) it defaults to
    ``family.in_domain`` (``family.in_mean_domain``), so the line search treats a trial point
    outside the domain as a rejected step and the family's domain check never fires there.

    bfloat16 and float16 params: the mirror step (gradient of the potential, Newton solve)
    runs in float32 and the result is cast back.

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
            Newton line search (default: the family's domain for a family's own potential).
        throw: raise (also under ``jit``) on a NaN or inf gradient and if the Newton solve did
            not converge; with ``False`` a non-finite gradient gives an all-NaN direction
            (which ``optax.apply_if_finite`` skips).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
        ValueError: if ``params`` is missing in ``update``, the gradient and ``params`` have
            different pytree structures, or ``damping`` is a negative number, or a nonzero
            number while ``inverse_gradient`` is given.
        equinox.EquinoxRuntimeError: (``throw=True``) if the gradient is not finite or the
            Newton inverse did not converge, or
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

    domain = _family_domain(potential) if in_domain is None else in_domain

    def init_fn(params: PyTree) -> ScaleByMirrorDescentState:
        del params
        return ScaleByMirrorDescentState(count=jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        name = "mirror_descent"
        require_params(params, "scale_by_mirror_descent / mirror_descent")
        check_same_structure(params, updates, name)
        # The mirror step runs in at least float32 (bfloat16 / float16 params included).
        dtype = working_dtype(tree_dtype(updates))
        work_params = jax.tree.map(lambda p: p.astype(working_dtype(p.dtype)), params)
        updates_w, grad_bad = _finite_gradient_check(
            jax.tree.map(lambda g, p: jnp.asarray(g, p.dtype), updates, work_params),
            params,
            name,
            throw,
        )
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

        grad_potential = jax.grad(damped_potential)(work_params)
        dual = jax.tree.map(lambda a, g: a - lr.astype(a.dtype) * g, grad_potential, updates_w)
        if inverse_gradient is not None:
            target = inverse_gradient(dual)
        else:
            target = _newton_inverse_gradient(
                damped_potential,
                dual,
                work_params,
                newton_max_steps,
                newton_rtol,
                newton_atol,
                throw,
                domain,
                ok=jnp.logical_not(grad_bad),
            )
        target = cast_like(target, params)
        new_state = ScaleByMirrorDescentState(count=jnp.asarray(optax.safe_increment(state.count)))
        direction = _direction(work_params, cast_like(target, work_params), lr)
        if not throw:
            direction = jax.tree.map(lambda d: jnp.where(grad_bad, jnp.nan, d), direction)
        return cast_like(direction, updates), new_state

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
        in_domain: optional ``in_domain(params) -> bool`` kept by the Newton line search
            (default: the family's domain when ``potential`` is ``family.log_partition``).
        throw: raise on a non-finite gradient or if the Newton solve did not converge.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from infogeo_jax.families import Poisson
        >>> from infogeo_jax.optim import mirror_descent
        >>> family = Poisson()
        >>> nll = lambda theta: family.log_partition(theta) - 3.0 * theta[0]  # mean count 3
        >>> opt = mirror_descent(1.0, family.log_partition)  # the family's domain is kept
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
    """``p * exp(-lr g)`` rescaled to the old total over ``axis``; zeros kept at zero, no NaN."""
    work = working_dtype(p.dtype)
    p, g = p.astype(work), g.astype(work)
    positive = p > 0
    s = jnp.where(positive, -lr.astype(work) * g, -jnp.inf)
    m = jnp.max(s, axis=axis, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    w = jnp.where(positive, p * jnp.exp(jnp.where(positive, s - m, 0.0)), 0.0)
    total = jnp.sum(w, axis=axis, keepdims=True)
    mass = jnp.sum(p, axis=axis, keepdims=True)
    return w / jnp.where(total > 0, total, 1.0) * mass


def _simplex_checks(params: PyTree, updates: PyTree) -> tuple[Array, Array]:
    """``(bad_params, bad_gradient)``: a negative or non-finite entry; NaN, or inf where p > 0."""

    def any_of(tree):
        return jnp.any(jnp.asarray([jnp.any(leaf) for leaf in jax.tree.leaves(tree)] or [False]))

    bad_p = any_of(jax.tree.map(lambda p: jnp.logical_not(jnp.isfinite(p)) | (p < 0), params))
    bad_g = any_of(
        jax.tree.map(lambda p, g: jnp.isnan(g) | (jnp.isinf(g) & (p > 0)), params, updates)
    )
    return bad_p, bad_g


def scale_by_exponentiated_gradient(
    learning_rate: optax.ScalarOrSchedule = 1.0, *, axis: int | None = None, throw: bool = True
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
    A leaf of nonnegative entries summing to :math:`c` keeps summing to :math:`c` (the
    normalization restores the old total; computed in at least float32, so bfloat16 and float16
    params work). The exponentials are computed
    after subtracting the maximum (no overflow); zero entries stay exactly zero and never
    produce NaN, even where the gradient is infinite, and an entry that underflows lands on a
    tiny nonnegative number (at most a few ulp of its old value), never on a negative rounding
    residue.

    Args:
        learning_rate: :math:`\alpha`, a scalar or an optax schedule.
        axis: the simplex axis of each leaf, or ``None`` for the whole leaf.
        throw: raise (also under ``jit``) on a negative, NaN or inf param entry, or a gradient
            that is NaN (or inf at a positive entry); with ``False`` these give an all-NaN
            direction instead (which ``optax.apply_if_finite`` skips).

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
        ValueError: if ``params`` is missing in ``update``, or the gradient and ``params`` have
            different pytree structures.
        equinox.EquinoxRuntimeError: (``throw=True``) on a negative or non-finite param entry,
            or a NaN gradient (or an infinite one at a positive entry).

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
        name = "exponentiated_gradient"
        require_params(params, "scale_by_exponentiated_gradient / exponentiated_gradient")
        check_same_structure(params, updates, name)
        lr = _learning_rate(learning_rate, state.count, working_dtype(tree_dtype(updates)))
        bad_p, bad_g = _simplex_checks(params, updates)
        if throw:
            params = eqx.error_if(
                params,
                bad_p,
                f"{name}: params must be finite and nonnegative (each leaf a point of a "
                "simplex, or nonnegative entries with a fixed total); got a negative, NaN or "
                "inf entry.",
            )
            params = eqx.error_if(
                params,
                bad_g & jnp.logical_not(bad_p),
                f"{name}: the gradient contains NaN, or inf at a positive entry (a diverged "
                "loss or a bad batch). To skip such steps, build the optimizer with "
                "`throw=False` and wrap it in `optax.apply_if_finite`.",
            )
        target = jax.tree.map(lambda p, g: _exponentiated_leaf(p, g, lr, axis), params, updates)
        target = cast_like(target, params)
        new_state = ScaleByExponentiatedGradientState(
            count=jnp.asarray(optax.safe_increment(state.count))
        )
        direction = _direction(params, target, lr, nonnegative=True)
        if not throw:
            direction = jax.tree.map(lambda d: jnp.where(bad_p | bad_g, jnp.nan, d), direction)
        return cast_like(direction, updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def exponentiated_gradient(
    learning_rate: optax.ScalarOrSchedule, *, axis: int | None = None, throw: bool = True
) -> optax.GradientTransformationExtraArgs:
    r"""Exponentiated gradient: :math:`p_+ \propto p \odot e^{-\alpha g}` on the simplex.

    :func:`scale_by_exponentiated_gradient` chained with ``optax.scale_by_learning_rate`` of the
    same learning rate: the update is :math:`p_+ - p` (up to rounding), so leaves that sum to
    one keep summing to one and stay nonnegative; zeros stay zero.

    Args:
        learning_rate: :math:`\alpha`, a scalar or an optax schedule.
        axis: the simplex axis of each leaf, or ``None`` for the whole leaf.
        throw: raise on bad params or a NaN gradient (see
            :func:`scale_by_exponentiated_gradient`).

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
        scale_by_exponentiated_gradient(learning_rate, axis=axis, throw=throw),
        optax.scale_by_learning_rate(learning_rate),
    )
