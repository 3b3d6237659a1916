r"""Natural gradient descent as an optax transformation: dense solves, CG, a KL trust region."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax
from jax.flatten_util import ravel_pytree

from .._custom_types import PyTree
from ._apply import check_not_schedule_value, trainable_view, trainable_zeros
from ._common import (
    call_with_supported,
    cast_like,
    check_same_structure,
    check_static_hyperparameter,
    conjugate_gradient,
    require_params,
    tree_dtype,
    tree_vdot,
    working_dtype,
)
from ._woodbury import subsampled_solve

FisherFn = Callable[..., Any]
"""``fisher(params, **extra_args)`` returning a 2-D array over the order of
``jax.flatten_util.ravel_pytree(params)`` or a ``lineax.AbstractLinearOperator`` on the params
pytree."""


class ScaleByNaturalGradientState(NamedTuple):
    r"""State of :func:`scale_by_natural_gradient`.

    Attributes:
        solution: the last solution :math:`(F + \lambda I)^{-1} g` (before any trust-region
            scaling), a pytree like ``params`` with the same dtypes; the warm start of the next
            conjugate-gradient solve.
    """

    solution: PyTree


def _check_structure(operator: lx.AbstractLinearOperator, updates: PyTree) -> None:
    """Raise a clear ``ValueError`` when the operator does not act on the params pytree."""
    leaves, treedef = jax.tree.flatten(updates)
    op_leaves, op_treedef = jax.tree.flatten(operator.in_structure())
    shapes = [jnp.shape(leaf) for leaf in leaves]
    op_shapes = [leaf.shape for leaf in op_leaves]
    if treedef != op_treedef or shapes != op_shapes:
        raise ValueError(
            "the lineax operator returned by `fisher` must act on the params pytree: its "
            f"in_structure is {op_treedef} with shapes {op_shapes}, but the updates are "
            f"{treedef} with shapes {shapes}."
        )


def _flat_matrix(operator: lx.AbstractLinearOperator, updates: PyTree) -> jax.Array:
    """Materialize a pytree operator as a matrix over the ``ravel_pytree(updates)`` order."""
    flat, unravel = ravel_pytree(updates)
    eye = jnp.eye(flat.shape[0], dtype=flat.dtype)
    return jax.vmap(lambda e: ravel_pytree(operator.mv(unravel(e)))[0], out_axes=1)(eye)


def _precision_note(params: PyTree) -> str:
    """A hint for params below float32: their Fisher is only known to their precision."""
    low = working_dtype(tree_dtype(params)) != tree_dtype(params)
    if not low:
        return ""
    dtype = jnp.dtype(tree_dtype(params))
    return (
        f" The Fisher is computed in {dtype.name} (relative accuracy about "
        f"{float(jnp.finfo(dtype).eps):.0e}): `damping` must exceed that times its scale."
    )


def scale_by_natural_gradient(
    fisher: FisherFn,
    damping: float | jax.Array = 1e-4,
    *,
    solver: Literal["cg", "dense", "woodbury", "diagonal"] = "cg",
    cg_max_steps: int = 20,
    cg_rtol: float = 1e-6,
    cg_atol: float = 1e-12,
    warm_start: bool = True,
    max_kl: float | jax.Array | None = None,
    throw: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient by the inverse (damped) Fisher information.

    .. math::
        d = (F(\theta) + \lambda I)^{-1} g,

    where :math:`g` is the incoming update (a gradient), :math:`F` the Fisher information at the
    current parameters and :math:`\lambda` the Tikhonov ``damping``. Chained with
    ``optax.scale_by_learning_rate`` (see :func:`natural_gradient`) this is Amari's natural
    gradient descent :math:`\theta \leftarrow \theta - \alpha d`; with :math:`\alpha = 1` on a
    negative log-likelihood of an exponential family it is exactly Newton's method.

    With ``solver="dense"`` the system is solved by a Cholesky factorization of the
    materialized matrix (small models). With ``solver="cg"`` (the default) it is solved
    matrix-free by conjugate gradient on Fisher-vector products (``fisher`` may return a
    ``lineax`` operator that is never materialized), at most ``cg_max_steps`` iterations,
    warm-started from the previous solution (``warm_start=True``; the warm start is kept only
    when it beats zero on the CG objective, so the direction is always a descent direction);
    a truncated CG solve is what Hessian-free optimization uses. The CG loop is our own rather
    than ``lineax.CG``, whose breakdown test is not invariant to the scale of the operator and
    returns NaN in float32 on a mean-loss Fisher (e.g. softmax regression on 64 x 10
    parameters); derivatives through the solve are implicit (``jax.lax.custom_linear_solve``).

    With ``max_kl`` set, the direction is rescaled, as in TRPO, so that its quadratic KL
    estimate is exactly ``max_kl``:

    .. math::
        d \leftarrow \sqrt{\frac{\epsilon}{\tfrac12 d^\top (F + \lambda I) d}}\; d,
        \qquad \tfrac12 d^\top (F + \lambda I) d = \epsilon,

    so that with learning rate 1 the step has (second-order) KL divergence ``max_kl``.

    Works on any parameter pytree (dicts, flax params, ``eqx.filter(model, eqx.is_array)``;
    only the inexact leaves are preconditioned, so gradients with ``None`` at integer leaves, as
    ``equinox.filter_grad`` gives, are accepted). Inside ``optax.masked`` or
    ``optax.multi_transform`` pass ``full_params=params`` to ``update``: the Fisher builders
    then compute the curvature of the selected leaves with the full model. ``damping`` and
    ``max_kl`` may be traced, so ``optax.inject_hyperparams(natural_gradient)`` changes them
    without recompiling; the Fisher builders' results are never taken for schedules (a
    hand-written ``fisher`` function is: wrap it in :func:`not_a_schedule`). bfloat16 and
    float16 params work with every solver: the Cholesky factorization and the CG recurrences
    run in float32 (Fisher-vector products in the params' dtype), and the update is cast back
    to the gradient's dtypes.

    Singular Fisher. With ``damping=0`` the Fisher may be singular (more parameters than
    examples, dead units). If the gradient lies in its range, CG returns a solution of
    :math:`F x = g` (the minimum-norm one when started from zero); if the gradient has a
    component in its null space, :math:`F x = g` has no solution and CG breaks down: this is
    reported (raised, with ``throw=True``), never returned as a vector that does not solve the
    system. ``solver="dense"`` needs :math:`F + \lambda I` positive definite. A truncated CG
    solve (``cg_max_steps`` reached) is not an error: it is a descent direction, as in
    Hessian-free optimization.

    Data parallelism. Under ``jax.jit`` with the batch sharded over devices
    (``jax.sharding.NamedSharding``, params replicated) nothing changes: the update is the
    single-device one. Inside ``jax.shard_map`` (or ``jax.pmap``) each device sees its shard of
    the batch: build the Fisher with the axis name (``predictive_fisher(..., axis_name="data")``
    or ``empirical_fisher``) so that every Fisher-vector product is averaged over the devices,
    and pass the gradient of the device-averaged loss (``jax.lax.pmean(loss, "data")``); the
    update is then the single-device update on the whole batch.

    Args:
        fisher: ``fisher(params, **extra_args)`` returning either a 2-D array over the order of
            ``jax.flatten_util.ravel_pytree(params)`` or a ``lineax.AbstractLinearOperator`` on
            the params pytree (see :func:`manifold_fisher`, :func:`empirical_fisher`,
            :func:`predictive_fisher`). Only the extra arguments that ``fisher`` names (or all of
            them when it takes ``**kwargs``) are passed on; the others are ignored.
        damping: Tikhonov term :math:`\lambda \ge 0` added to the Fisher.
        solver: ``"cg"`` (matrix-free conjugate gradient, default), ``"dense"`` (Cholesky),
            ``"woodbury"`` (exact, through the ``n c x n c`` Gram matrix of the batch's
            per-example rows, Ren & Goldfarb 2019: for a Fisher from
            :func:`predictive_fisher` or :func:`empirical_fisher`, its model applied to one
            example at a time; it needs ``damping > 0``, and costs :math:`O((nc)^2 P)`, so keep
            the curvature batch small; the Gram is factorized by a scale-aware Cholesky, with a
            clipped eigendecomposition where float32 rounding makes it indefinite) or
            ``"diagonal"`` (the diagonal of that Fisher).
        cg_max_steps: maximum number of CG iterations per update.
        cg_rtol: CG stops when the residual 2-norm is at most
            ``cg_atol + cg_rtol * |g|`` (or after ``cg_max_steps`` iterations).
        cg_atol: absolute tolerance of the CG residual 2-norm.
        warm_start: start CG from the previous solution instead of zero.
        max_kl: optional trust-region radius :math:`\epsilon > 0` (TRPO's ``max_kl``).
        throw: raise (also under ``jit``) on a NaN or inf gradient, a negative traced
            ``damping`` or non-positive traced ``max_kl``, or a damped Fisher that is singular
            along the gradient. With ``throw=False`` these give an all-NaN update instead
            (never a zero or finite wrong one), which ``optax.apply_if_finite`` skips.

    Returns:
        An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params``.

    Raises:
        ValueError: if ``solver`` is unknown, ``damping`` is a negative number, ``max_kl`` a
            non-positive number or ``cg_max_steps`` below 1 (at construction); if
            ``params`` is missing in ``update``, the gradient and ``params`` have different
            pytree structures or leaf shapes, or the Fisher matrix has the wrong shape.
        TypeError: if ``fisher`` returns neither a 2-D array nor a lineax operator.
        equinox.EquinoxRuntimeError: (``throw=True``) if the gradient is not finite, if a traced
            ``damping`` is negative or ``max_kl`` non-positive, or if the damped Fisher is
            singular, indefinite or not finite along the gradient (Cholesky fails, or CG breaks
            down).

    Example:
        >>> import jax.numpy as jnp, optax
        >>> from infogeo_jax.optim import scale_by_natural_gradient
        >>> opt = optax.chain(scale_by_natural_gradient(lambda p: 2.0 * jnp.eye(2), 0.0,
        ...                                             solver="dense"),
        ...                   optax.scale_by_learning_rate(1.0))
        >>> params = jnp.array([1.0, 2.0])
        >>> state = opt.init(params)
        >>> updates, state = opt.update(jnp.array([2.0, 2.0]), state, params)
        >>> bool(jnp.allclose(updates, -1.0))
        True

    References:
        Amari, *Natural gradient works efficiently in learning*, Neural Computation 10 (1998),
        Eq. (3.2); Martens, *Deep learning via Hessian-free optimization*, ICML 2010, Sec. 4;
        Schulman et al., *Trust Region Policy Optimization*, ICML 2015, Appendix C.
    """
    if solver not in ("cg", "dense", "woodbury", "diagonal"):
        raise ValueError(
            f"`solver` must be 'cg' or 'dense' (or 'woodbury' / 'diagonal' for a Fisher from "
            f"predictive_fisher or empirical_fisher), got {solver!r}."
        )
    check_not_schedule_value(fisher, "fisher", "natural_gradient")
    check_static_hyperparameter("damping", damping, allow_zero=True)
    if max_kl is not None:
        check_static_hyperparameter("max_kl", max_kl, allow_zero=False)
    if isinstance(cg_max_steps, (int, float)) and cg_max_steps < 1:
        raise ValueError(f"`cg_max_steps` must be a positive int, got {cg_max_steps!r}.")

    def init_fn(params: PyTree) -> ScaleByNaturalGradientState:
        return ScaleByNaturalGradientState(solution=trainable_zeros(params))

    def update_fn(updates, state, params=None, **extra_args):
        name = "natural_gradient"
        require_params(params, "scale_by_natural_gradient / natural_gradient")
        check_same_structure(trainable_view(params), updates, name)
        # Factorizations and CG run in at least float32 (bfloat16 / float16 params included);
        # the update and the state are cast back to the dtypes of the gradient and the params.
        dtype = working_dtype(tree_dtype(updates))
        damp = jnp.asarray(damping, dtype)
        bad_damp = jnp.logical_not(damp >= 0)  # negative or NaN
        kl = None if max_kl is None else jnp.asarray(max_kl, dtype)
        bad_kl = jnp.zeros((), bool) if kl is None else jnp.logical_not(kl > 0)

        def guard(x, grad_bad, failed):
            # One cause per failure, in the order a user should fix them.
            failed = failed & jnp.logical_not(grad_bad | bad_damp)
            if not throw:
                bad = grad_bad | bad_damp | bad_kl | failed
                return jax.tree.map(lambda leaf: jnp.where(bad, jnp.nan, leaf), x)
            x = eqx.error_if(
                x,
                grad_bad,
                f"{name}: the gradient contains NaN or inf (a diverged loss or a bad batch); "
                "the natural gradient is not defined. To skip such steps, build the optimizer "
                "with `throw=False` and wrap it in `optax.apply_if_finite`.",
            )
            x = eqx.error_if(x, bad_damp, f"{name}: `damping` must be >= 0 (and not NaN).")
            x = eqx.error_if(x, bad_kl, f"{name}: `max_kl` must be > 0.")
            return eqx.error_if(
                x,
                failed,
                f"{name}: the damped Fisher F + damping * I is singular, indefinite or not "
                "finite along the gradient, so (F + damping * I) x = g has no solution; "
                "increase `damping`."
                + {
                    "dense": " (solver='dense' factorizes by Cholesky and needs "
                    "F + damping * I positive definite.)",
                    "cg": " (conjugate gradient broke down.)",
                    "woodbury": " (solver='woodbury': the Fisher of a batch of n examples with "
                    "c outputs each has rank at most n * c, below the parameter count, so "
                    "`damping` must be > 0.)",
                }.get(solver, "")
                + _precision_note(params),
            )

        if solver in ("woodbury", "diagonal"):  # the Fisher's per-example Gram factor
            x, step, failed = subsampled_solve(
                fisher, params, updates, damp, solver, max_kl, **extra_args
            )
            grad_bad = jnp.logical_not(
                jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(updates)]))
            )
            step = guard(step, grad_bad, failed)
            solution = ScaleByNaturalGradientState(solution=cast_like(x, state.solution))
            return cast_like(step, updates), solution
        fisher_out = call_with_supported(fisher, params, **extra_args)
        flat_g, unravel = ravel_pytree(updates)
        flat_g = flat_g.astype(dtype)
        n = flat_g.shape[0]
        grad_bad = jnp.logical_not(jnp.all(jnp.isfinite(flat_g)))

        if isinstance(fisher_out, lx.AbstractLinearOperator):
            _check_structure(fisher_out, updates)
            matrix = _flat_matrix(fisher_out, updates) if solver == "dense" else None
        else:
            if not eqx.is_array_like(fisher_out):
                raise TypeError(
                    "`fisher(params, **extra_args)` must return a 2-D array or a "
                    f"lineax.AbstractLinearOperator, got {type(fisher_out).__name__}."
                )
            matrix = jnp.asarray(fisher_out)
            if matrix.shape != (n, n):
                raise ValueError(
                    f"`fisher` returned shape {matrix.shape}; expected ({n}, {n}), a matrix over "
                    "the order of `jax.flatten_util.ravel_pytree(params)` (params and gradient "
                    f"have {n} entries)."
                )

        if matrix is not None:
            # Flat coordinates: a matrix from `fisher`, or the materialized operator.
            matrix = matrix.astype(dtype)

            def damped_mv(v):
                return matrix @ v + damp * v

            if solver == "dense":
                # Symmetrized: a Fisher is symmetric, a materialized or low-precision one only
                # up to rounding.
                sym = 0.5 * (matrix + matrix.T)
                factor = jax.scipy.linalg.cho_factor(sym + damp * jnp.eye(n, dtype=dtype))
                flat_x = jax.scipy.linalg.cho_solve(factor, flat_g)
                failed = jnp.logical_not(jnp.all(jnp.isfinite(flat_x)))
            else:
                y0 = ravel_pytree(state.solution)[0].astype(dtype)
                y0 = y0 if warm_start else jnp.zeros_like(y0)
                flat_x, failed = conjugate_gradient(
                    damped_mv, flat_g, y0, cg_max_steps, cg_rtol, cg_atol
                )
            x = unravel(flat_x)
            quad = None if max_kl is None else 0.5 * jnp.vdot(flat_x, damped_mv(flat_x))
        else:
            # Matrix-free on the params pytree: Fisher-vector products only.
            assert isinstance(fisher_out, lx.AbstractLinearOperator)
            operator = fisher_out
            in_structure = operator.in_structure()
            vector = jax.tree.map(
                lambda g, t: jnp.asarray(g, working_dtype(t.dtype)), updates, in_structure
            )

            def damped_tree_mv(v):
                fv = operator.mv(cast_like(v, in_structure))
                return jax.tree.map(
                    lambda f, vi: f.astype(vi.dtype) + damp.astype(vi.dtype) * vi, fv, v
                )

            y0 = cast_like(state.solution, vector)
            y0 = y0 if warm_start else jax.tree.map(jnp.zeros_like, y0)
            x, failed = conjugate_gradient(
                damped_tree_mv, vector, y0, cg_max_steps, cg_rtol, cg_atol
            )
            quad = None if max_kl is None else 0.5 * tree_vdot(x, damped_tree_mv(x))

        x = guard(x, grad_bad, failed)

        new_state = ScaleByNaturalGradientState(solution=cast_like(x, state.solution))
        if quad is not None:
            eps = jnp.asarray(max_kl, dtype)
            scale = jnp.where(quad > 0, jnp.sqrt(eps / jnp.where(quad > 0, quad, 1.0)), 1.0)
            x = jax.tree.map(lambda leaf: leaf * scale.astype(leaf.dtype), x)
        return cast_like(x, updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def natural_gradient(
    learning_rate: optax.ScalarOrSchedule,
    fisher: FisherFn,
    damping: float | jax.Array = 1e-4,
    *,
    solver: Literal["cg", "dense", "woodbury", "diagonal"] = "cg",
    cg_max_steps: int = 20,
    cg_rtol: float = 1e-6,
    cg_atol: float = 1e-12,
    warm_start: bool = True,
    max_kl: float | jax.Array | None = None,
    throw: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Natural gradient descent: :math:`\theta \leftarrow \theta - \alpha (F + \lambda I)^{-1} g`.

    :func:`scale_by_natural_gradient` chained with ``optax.scale_by_learning_rate``; see there for
    the arguments. ``update(grads, state, params, **extra_args)`` needs ``params``; extra
    arguments (e.g. ``batch=``) reach ``fisher``. To change the learning rate or the damping
    during training without recompiling, use ``optax.inject_hyperparams(natural_gradient)(...)``
    (no ``static_args`` needed with the Fisher builders). For gradient accumulation over
    micro-batches use :func:`multi_steps` (``optax.MultiSteps`` would solve on every
    micro-batch, with the curvature of the last one only). The guide "Natural gradient in your
    training loop" (``docs/training_loop.md``) shows the equinox, flax and haiku loops.

    Args:
        learning_rate: step size :math:`\alpha` or an optax schedule.
        fisher: ``fisher(params, **extra_args)`` -> 2-D array or lineax operator.
        damping: Tikhonov damping :math:`\lambda`.
        solver: ``"cg"`` (default), ``"dense"``, ``"woodbury"`` or ``"diagonal"``.
        cg_max_steps: maximum CG iterations per update.
        cg_rtol: CG relative tolerance.
        cg_atol: CG absolute tolerance.
        warm_start: warm-start CG from the previous solution.
        max_kl: optional KL trust-region radius (TRPO).
        throw: raise on a NaN gradient, bad hyperparameters or a singular damped Fisher
            (``False``: an all-NaN update instead).

    Returns:
        An ``optax.GradientTransformationExtraArgs``.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> from infogeo_jax.families import Poisson
        >>> from infogeo_jax.optim import manifold_fisher, natural_gradient
        >>> family = Poisson()
        >>> nll = lambda theta: family.log_partition(theta) - 3.0 * theta[0]  # mean count 3
        >>> opt = natural_gradient(1.0, manifold_fisher(family), damping=0.0, solver="dense")
        >>> theta = jnp.array([0.0]); state = opt.init(theta)
        >>> for _ in range(8):
        ...     updates, state = opt.update(jax.grad(nll)(theta), state, theta)
        ...     theta = optax.apply_updates(theta, updates)
        >>> bool(jnp.allclose(theta, jnp.log(3.0)))
        True

    References:
        Amari, *Natural gradient works efficiently in learning*, Neural Computation 10 (1998).
    """
    return optax.chain(
        scale_by_natural_gradient(
            fisher,
            damping,
            solver=solver,
            cg_max_steps=cg_max_steps,
            cg_rtol=cg_rtol,
            cg_atol=cg_atol,
            warm_start=warm_start,
            max_kl=max_kl,
            throw=throw,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
