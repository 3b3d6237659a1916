"""Helpers shared by the optimizers: extra-argument routing, ``params`` checks, dtype pinning."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def require_params(params: Any, name: str) -> Any:
    """Raise a clear ``ValueError`` (at trace time) when ``params`` was not passed.

    Raises:
        ValueError: if ``params`` is ``None``.
    """
    if params is None:
        raise ValueError(
            f"{name} needs the current parameters: call `update(updates, state, params)` "
            "(and `optax.apply_updates(params, updates)` afterwards)."
        )
    return params


def check_same_structure(params: Any, updates: Any, name: str) -> None:
    """Raise a clear ``ValueError`` (at trace time) when ``params`` and ``updates`` differ.

    The gradient must have the pytree structure and leaf shapes of the parameters.
    """
    p_leaves, p_def = jax.tree.flatten(params)
    u_leaves, u_def = jax.tree.flatten(updates)
    if p_def != u_def:
        raise ValueError(
            f"{name}: the updates (gradients) and params have different pytree structures: "
            f"updates {u_def}, params {p_def}. Pass the gradient of the loss with respect to "
            "exactly these params."
        )
    p_shapes = [jnp.shape(leaf) for leaf in p_leaves]
    u_shapes = [jnp.shape(leaf) for leaf in u_leaves]
    if p_shapes != u_shapes:
        raise ValueError(
            f"{name}: the updates (gradients) and params have different leaf shapes: updates "
            f"{u_shapes}, params {p_shapes}."
        )


def check_static_hyperparameter(name: str, value: Any, *, allow_zero: bool) -> None:
    """Raise ``ValueError`` at construction for a Python-number hyperparameter out of range.

    Traced values (e.g. under ``optax.inject_hyperparams``) are checked at run time instead.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    ok = value >= 0 if allow_zero else value > 0
    if not ok:  # also catches NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {bound}, got {value}.")


def working_dtype(dtype: Any) -> Any:
    """The dtype solves run in: ``dtype`` promoted to at least float32 (bfloat16 -> float32)."""
    return jnp.promote_types(dtype, jnp.float32)


def call_with_supported(fn: Callable[..., Any], *args: Any, **extra_args: Any) -> Any:
    """Call ``fn(*args, **kw)`` with only the extra keyword arguments that ``fn`` accepts.

    A function with a ``**kwargs`` parameter receives them all; otherwise the arguments it does
    not name are dropped, so that optimizers in one ``optax.chain`` can share extra arguments.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins, some C callables: pass everything
        return fn(*args, **extra_args)
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return fn(*args, **extra_args)
    names = {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return fn(*args, **{k: v for k, v in extra_args.items() if k in names})


def cast_like(tree: Any, reference: Any) -> Any:
    """Cast every leaf of ``tree`` to the dtype of the matching leaf of ``reference``."""
    return jax.tree.map(lambda x, r: jnp.asarray(x, jnp.result_type(r)), tree, reference)


def tree_dtype(tree: Any) -> Any:
    """The promoted (widest) floating dtype of the leaves of ``tree``."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.result_type(float)
    dtype = jnp.result_type(*leaves)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return dtype


def varying_axes(tree: Any) -> frozenset[str]:
    """The manual mesh axes over which some leaf of ``tree`` varies (inside ``shard_map``)."""
    axes: set[str] = set()
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        aval = jax.typeof(leaf)
        mat = getattr(aval, "manual_axis_type", None)  # jax >= 0.9; older versions: `aval.vma`
        axes |= set(getattr(mat, "varying", None) or getattr(aval, "vma", None) or ())
    return frozenset(axes)


def vary(tree: Any, names: tuple[str, ...] | frozenset[str]) -> Any:
    """Type the leaves of ``tree`` as varying over the manual axes ``names`` (values unchanged)."""
    if not names:
        return tree

    def leaf(x):
        missing = tuple(sorted(set(names) - varying_axes(x)))
        if not missing:
            return x
        if hasattr(jax.lax, "pcast"):  # a JAX version test, not a test of our objects
            return jax.lax.pcast(x, missing, to="varying")
        return jax.lax.pvary(x, missing)  # pyright: ignore[reportAttributeAccessIssue]

    return jax.tree.map(leaf, tree)


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """Real inner product of two pytrees with the same structure (sum over all leaves)."""
    products = [jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    if not products:
        return jnp.zeros((), tree_dtype(a))
    return functools.reduce(jnp.add, products)


def _cg_from_zero(matvec: Callable[[Any], Any], rhs: Any, max_steps, rtol, atol) -> Any:
    r"""Plain conjugate gradient from ``x = 0``, at most ``max_steps`` iterations.

    Stops when the residual 2-norm is at most ``atol + rtol * |rhs|``, after ``max_steps``
    iterations, or on breakdown: a search direction :math:`p` with
    :math:`p^\top A p \le 8 \epsilon\, \rho_{\max} |p|^2` (machine epsilon
    :math:`\epsilon`, :math:`\rho_{\max}` the largest Rayleigh quotient
    :math:`p^\top A p / |p|^2` met so far), i.e. :math:`A` is singular, indefinite or not
    finite along :math:`p` to working precision. Every test is a ratio of inner products, so
    the method is invariant to scaling the operator. Returns ``(x, breakdown)``; on breakdown
    ``x`` is the iterate so far (never NaN unless the operator is), and ``breakdown`` is true
    only if the residual was still above :math:`\sqrt{\epsilon}\,|b|` (below it, the
    iterate is as good as the working precision allows).
    """
    dtype = tree_dtype(rhs)
    zero = jax.tree.map(jnp.zeros_like, rhs)
    rs0 = tree_vdot(rhs, rhs)
    tol = jnp.asarray(atol, dtype) + jnp.asarray(rtol, dtype) * jnp.sqrt(rs0)
    rel = 8 * jnp.finfo(dtype).eps

    def cond(carry):
        _, _, _, rs, step, ok, _ = carry
        return ok & (step < max_steps) & (rs > tol**2)

    def body(carry):
        x, r, p, rs, step, _, rq_max = carry
        ap = matvec(p)
        pap = tree_vdot(p, ap)
        pp = tree_vdot(p, p)
        ok = (pap > 0) & (pap > rel * rq_max * pp)
        alpha = jnp.where(ok, rs / jnp.where(ok, pap, 1.0), 0.0)
        x = jax.tree.map(lambda xi, pi: xi + alpha.astype(xi.dtype) * pi, x, p)
        r = jax.tree.map(lambda ri, ai: ri - alpha.astype(ri.dtype) * ai, r, ap)
        rs_new = tree_vdot(r, r)
        beta = jnp.where(ok, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        p = jax.tree.map(lambda ri, pi: ri + beta.astype(ri.dtype) * pi, r, p)
        rq = jnp.where(ok, pap / jnp.where(ok, pp, 1.0), 0.0)
        return x, r, p, jnp.where(ok, rs_new, rs), step + 1, ok, jnp.maximum(rq_max, rq)

    init = (
        zero,
        rhs,
        rhs,
        rs0,
        jnp.zeros((), jnp.int32),
        jnp.ones((), bool),
        jnp.zeros((), dtype),
    )
    # Inside shard_map, a carry typed like the right-hand side (see `conjugate_gradient`).
    x, _, _, rs, _, ok, _ = jax.lax.while_loop(cond, body, vary(init, varying_axes(rhs)))
    # A breakdown after the residual fell below sqrt(eps) relative is the end of what the
    # working precision can resolve, not a failure.
    return x, jnp.logical_not(ok) & (rs > jnp.finfo(dtype).eps * rs0)


def conjugate_gradient(
    matvec: Callable[[Any], Any], rhs: Any, x0: Any, max_steps, rtol, atol
) -> tuple[Any, jax.Array]:
    r"""Solve :math:`A x = b` (A symmetric positive semi-definite) by truncated, warm-started CG.

    The warm start ``x0`` is used only when it beats zero on the CG objective
    :math:`q(x) = \frac12 x^\top A x - b^\top x` (then the returned iterate has
    :math:`q < q(x_0) < 0`, so it is a descent direction); the correction is found by CG from
    zero on the residual system. The solve is wrapped in ``jax.lax.custom_linear_solve``, so
    derivatives (forward and reverse) are those of the exact solve :math:`A^{-1} b`, each
    computed by the same truncated CG (implicit differentiation, as in ``lineax``).

    For a singular :math:`A` and a consistent system (:math:`b` in the range of :math:`A`),
    CG from zero stays in the range and converges to the minimum-norm solution of the residual
    system; an inconsistent system (:math:`b` with a component in the null space) has no
    solution, and CG reports a breakdown.

    Returns:
        ``(x, breakdown)``: the solution and a boolean scalar, true when CG broke down before
        reaching its tolerance (:math:`A` singular, indefinite or not finite along a search
        direction), in which case ``x`` does not solve the system.
    """
    x0 = jax.lax.stop_gradient(x0)
    ax0 = matvec(x0)
    q0 = 0.5 * tree_vdot(x0, ax0) - tree_vdot(rhs, x0)
    use = jax.lax.stop_gradient(q0 < 0)
    start = jax.tree.map(lambda x: jnp.where(use, x, jnp.zeros_like(x)), x0)
    residual = jax.tree.map(lambda b, a: b - jnp.where(use, a, jnp.zeros_like(a)), rhs, ax0)
    # Inside shard_map a matvec may close over a device's data (and average its products over
    # the devices): run the solve typed as varying over those axes, as its closure is, and give
    # the result (the same on every device) the type of its inputs again by averaging it.
    _, consts = jax.closure_convert(matvec, residual)
    extra = tuple(sorted(varying_axes(consts) - varying_axes((rhs, x0))))
    correction, breakdown = jax.lax.custom_linear_solve(
        matvec,
        vary(residual, extra),
        lambda mv, b: _cg_from_zero(mv, b, max_steps, rtol, atol),
        symmetric=True,
        has_aux=True,
    )
    if extra:
        correction = jax.lax.pmean(correction, extra)
        breakdown = jax.lax.pmax(breakdown.astype(jnp.int32), extra) > 0
    return jax.tree.map(lambda s, c: s + c, start, correction), breakdown
