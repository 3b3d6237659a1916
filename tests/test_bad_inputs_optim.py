"""Bad and hard inputs to the optimizers: a table of cases, each run eagerly and under jit.

Every case either raises a clear error naming the real cause (checked with ``match``) or
returns a value that is checked against an independent reference (a closed form, or a
solve computed another way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
import pytest

from infogeo_jax.families import Normal, Poisson
from infogeo_jax.optim import (
    exponentiated_gradient,
    mirror_descent,
    natural_gradient,
    predictive_fisher,
)

TOL = dict(rtol=1e-10, atol=1e-12)
RUNTIME = eqx.EquinoxRuntimeError


def _update(opt, grads, params, **extra):
    updates, _ = opt.update(grads, opt.init(params), params, **extra)
    return updates


def _ng(fisher, grads, params, *, damping=0.0, **kw):
    return _update(natural_gradient(1.0, fisher, damping, **kw), grads, params)


F2 = jnp.array([[2.0, 0.5], [0.5, 1.0]])
G2 = jnp.array([1.0, -2.0])
P2 = jnp.zeros(2)
NAN2 = jnp.array([1.0, jnp.nan])
INF2 = jnp.array([jnp.inf, 1.0])
SINGULAR = jnp.diag(jnp.array([1.0, 0.0]))  # F x = (1, 1) has no solution
INDEFINITE = jnp.diag(jnp.array([1.0, -1.0]))
NAN_F = jnp.array([[1.0, jnp.nan], [jnp.nan, 1.0]])

# A rank-deficient but consistent system: F = B B^T (rank 2 in R^4), g = F c in range(F).
_B = jnp.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
RANK2 = _B @ _B.T
G_RANGE = RANK2 @ jnp.array([1.0, -1.0, 0.5, 2.0])


def _as_operator(matrix):
    return lx.MatrixLinearOperator(matrix, lx.symmetric_tag)


# A least-squares network with more parameters (12) than outputs (4 examples x 1): its
# Gauss-Newton Fisher J^T J / n is singular, and the gradient J^T r / n lies in its range.
_X = jnp.array([[1.0, 0.5, -1.0], [0.3, -0.2, 0.8], [-1.0, 1.0, 0.1], [0.5, 0.5, 0.5]])
_Y = jnp.array([[1.0], [-1.0], [0.5], [0.0]])
_W = {"a": jnp.full((3, 3), 0.2) + jnp.eye(3) * 0.1, "b": jnp.array([[0.5], [-0.3], [0.1]])}


def _net(w, x):
    return jnp.tanh(x @ w["a"]) @ w["b"]


def _net_loss(w):
    return 0.5 * jnp.mean(jnp.sum((_net(w, _X) - _Y) ** 2, -1))


def _net_fisher_matrix(w):
    flat, unravel = jax.flatten_util.ravel_pytree(w)
    jac = jax.jacobian(lambda f: _net(unravel(f), _X).ravel())(flat)
    return jac.T @ jac / _X.shape[0]


NORMAL = Normal()
POISSON = Poisson()
# A normal sample far from the start N(0, 1): mean 5, variance 0.01 (biased).
_DATA = 5.0 + 0.1 * jnp.array([-1.0, 1.0, -1.0, 1.0])
_T_BAR = jnp.array([jnp.mean(_DATA), jnp.mean(_DATA**2)])


def _normal_nll_grad(theta):
    return jax.grad(lambda t: NORMAL.log_partition(t) - t @ _T_BAR)(theta)


def _normal_mle():
    # Casella & Berger, Statistical Inference, Example 7.2.11: mu = mean, s2 = biased variance;
    # natural parameters (mu / s2, -1 / (2 s2)).
    mu, s2 = jnp.mean(_DATA), jnp.var(_DATA)
    return jnp.array([mu / s2, -0.5 / s2])


def _eg_new(p, g, lr, **kw):
    return p + _update(exponentiated_gradient(lr, **kw), g, p)


@dataclass(frozen=True)
class Case:
    """``call(*args)`` is run eagerly and under ``jax.jit``.

    ``error``: expected exception type and message regex, or ``check(result)`` asserting the
    value against an independent reference.
    """

    id: str
    call: Callable[..., Any]
    args: tuple = ()
    error: tuple[type[BaseException], str] | None = None
    check: Callable[[Any], None] | None = None


def _close_to(reference, **tol):
    def check(result):
        np.testing.assert_allclose(result, reference, **(tol or TOL))

    return check


def _solves(matrix, rhs, rtol):
    def check(result):
        np.testing.assert_allclose(-matrix @ result, rhs, rtol=rtol, atol=rtol * 1e-2)

    return check


def _nan_update(result):
    assert all(bool(jnp.all(jnp.isnan(leaf))) for leaf in jax.tree.leaves(result))


def _inject(opt_fn, static_args, **hyper):
    return optax.inject_hyperparams(opt_fn, static_args=static_args)(**hyper)


def _skipped_by_apply_if_finite(grads):
    opt = optax.apply_if_finite(natural_gradient(1.0, lambda p: F2, 0.0, throw=False), 3)
    params = jnp.ones(2)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state.notfinite_count


def _check_skipped(result):
    params, count = result
    np.testing.assert_array_equal(params, jnp.ones(2))  # the step was skipped
    assert int(count) == 1


def _net_update(w, **kw):
    fisher = predictive_fisher(_net, "gaussian")
    return _update(natural_gradient(1.0, fisher, 0.0, **kw), jax.grad(_net_loss)(w), w, batch=_X)


@jax.jit
def _net_reference(w):
    return _net_fisher_matrix(w), jax.flatten_util.ravel_pytree(jax.grad(_net_loss)(w))[0]


def _check_net_solves(update):
    matrix, g = _net_reference(_W)
    x = -jax.flatten_util.ravel_pytree(update)[0]
    assert np.linalg.matrix_rank(np.asarray(matrix)) < matrix.shape[0]  # singular indeed
    np.testing.assert_allclose(matrix @ x, g, rtol=1e-6, atol=1e-9)


NATURAL_GRADIENT_CASES = [
    # Non-finite gradients: the error names the gradient, not the Fisher.
    Case("ng-cg-nan-grad", lambda g: _ng(lambda p: F2, g, P2), (NAN2,), (RUNTIME, "gradient")),
    Case(
        "ng-dense-nan-grad",
        lambda g: _ng(lambda p: F2, g, P2, solver="dense"),
        (NAN2,),
        (RUNTIME, "gradient contains NaN or inf"),
    ),
    Case(
        "ng-op-inf-grad",
        lambda g: _ng(lambda p: _as_operator(F2), g, P2),
        (INF2,),
        (RUNTIME, "gradient contains NaN or inf"),
    ),
    # Singular, indefinite and non-finite Fishers with damping 0.
    Case(
        "ng-cg-zero-fisher",
        lambda g: _ng(lambda p: jnp.zeros((2, 2)), g, P2),
        (G2,),
        (RUNTIME, "singular"),
    ),
    Case(
        "ng-op-zero-fisher",
        lambda g: _ng(lambda p: _as_operator(jnp.zeros((2, 2))), g, P2),
        (G2,),
        (RUNTIME, "singular"),
    ),
    Case(
        "ng-dense-zero-fisher",
        lambda g: _ng(lambda p: jnp.zeros((2, 2)), g, P2, solver="dense"),
        (G2,),
        (RUNTIME, "singular"),
    ),
    Case(
        "ng-cg-inconsistent-singular",
        lambda g: _ng(lambda p: SINGULAR, g, P2),
        (jnp.ones(2),),
        (RUNTIME, "has no solution"),
    ),
    Case(
        "ng-cg-indefinite",
        lambda g: _ng(lambda p: INDEFINITE, g, P2),
        (jnp.ones(2),),
        (RUNTIME, "indefinite"),
    ),
    Case(
        "ng-cg-nan-fisher",
        lambda g: _ng(lambda p: NAN_F, g, P2),
        (G2,),
        (RUNTIME, "not finite"),
    ),
    Case(
        "ng-dense-bf16-singular-names-precision",
        lambda g: _ng(lambda p: SINGULAR, g, P2.astype(jnp.bfloat16), solver="dense"),
        (jnp.ones(2, jnp.bfloat16),),
        (RUNTIME, "computed in bfloat16"),
    ),
    # Rank-deficient but consistent: CG from zero returns the minimum-norm solution
    # (Hestenes & Stiefel 1952; reference: the Moore-Penrose pseudo-inverse).
    Case(
        "ng-cg-rank-deficient-min-norm",
        lambda g: _ng(lambda p: RANK2, g, jnp.zeros(4), cg_rtol=1e-12),
        (G_RANGE,),
        check=_close_to(-np.linalg.pinv(np.asarray(RANK2)) @ np.asarray(G_RANGE), rtol=1e-8),
    ),
    Case(
        "ng-cg-network-more-params-than-data",
        lambda w: _net_update(w, cg_rtol=1e-10, cg_max_steps=50),
        (_W,),
        check=_check_net_solves,
    ),
    # Bad hyperparameters: static numbers at construction, traced values at run time.
    Case(
        "ng-negative-damping-static",
        lambda g: _ng(lambda p: F2, g, P2, damping=-1.0),
        (G2,),
        (ValueError, r"`damping` must be >= 0"),
    ),
    Case(
        "ng-negative-damping-traced",
        lambda g, d: _update(
            _inject(
                natural_gradient, ("fisher",), learning_rate=1.0, fisher=lambda p: F2, damping=d
            ),
            g,
            P2,
        ),
        (G2, jnp.asarray(-0.5)),
        (RUNTIME, "damping"),
    ),
    Case(
        "ng-negative-max-kl-static",
        lambda g: _ng(lambda p: F2, g, P2, max_kl=-0.1),
        (G2,),
        (ValueError, r"`max_kl` must be > 0"),
    ),
    Case(
        "ng-negative-max-kl-traced",
        lambda g, kl: _update(
            _inject(
                natural_gradient, ("fisher",), learning_rate=1.0, fisher=lambda p: F2, max_kl=kl
            ),
            g,
            P2,
        ),
        (G2, jnp.asarray(-0.1)),
        (RUNTIME, "max_kl"),
    ),
    Case(
        "ng-max-kl-value",
        lambda g: _ng(lambda p: F2, g, P2, max_kl=0.02, solver="dense"),
        (G2,),
        # TRPO's rescaling (Schulman et al. 2015, App. C): d = sqrt(2 eps / d^T F d) F^-1 g.
        check=_close_to(
            -np.sqrt(2 * 0.02 / (G2 @ np.linalg.solve(F2, G2))) * np.linalg.solve(F2, G2)
        ),
    ),
    # Gradient and params with different pytrees: the error compares the two.
    Case(
        "ng-structure-mismatch",
        lambda: _ng(lambda p: jnp.eye(3), {"a": jnp.ones(2)}, {"a": jnp.ones(2), "b": 1.0}),
        error=(ValueError, "different pytree structures"),
    ),
    Case(
        "ng-shape-mismatch",
        lambda: _ng(lambda p: jnp.eye(3), {"a": jnp.ones(2)}, {"a": jnp.ones(3)}),
        error=(ValueError, r"different leaf shapes: updates \[\(2,\)\], params \[\(3,\)\]"),
    ),
    # throw=False: a NaN update (never a zero one), which optax.apply_if_finite skips.
    Case(
        "ng-throw-false-nan-grad",
        lambda g: _ng(lambda p: F2, g, P2, throw=False),
        (NAN2,),
        check=_nan_update,
    ),
    Case(
        "ng-throw-false-singular",
        lambda g: _ng(lambda p: SINGULAR, g, P2, throw=False),
        (jnp.ones(2),),
        check=_nan_update,
    ),
    Case(
        "ng-apply-if-finite-skips",
        _skipped_by_apply_if_finite,
        (NAN2,),
        check=_check_skipped,
    ),
]

MIRROR_DESCENT_CASES = [
    # The family's own log-partition as the potential: the Newton line search keeps to the
    # family's domain (theta_2 < 0) by itself; one step with lr = 1 lands on the MLE.
    Case(
        "md-family-log-partition-far-target",
        lambda t: t + _update(mirror_descent(1.0, NORMAL.log_partition), _normal_nll_grad(t), t),
        (NORMAL.from_usual(jnp.array([0.0, 1.0])),),
        check=_close_to(_normal_mle(), rtol=1e-9),
    ),
    # The family's dual potential A*(eta): the line search keeps eta in the mean domain
    # (eta > 0 for the Poisson); the mirror step is eta_+ = exp(log(eta) - lr g).
    Case(
        "md-family-dual-potential",
        lambda e: e + _update(mirror_descent(1.0, POISSON.dual_potential), jnp.array([3.0]), e),
        (jnp.array([2.0]),),
        check=_close_to(jnp.exp(jnp.log(2.0) - 3.0) * jnp.ones(1)),
    ),
    Case(
        "md-nan-grad",
        lambda g: _update(mirror_descent(0.1, lambda x: 0.5 * x @ x), g, P2),
        (NAN2,),
        (RUNTIME, "gradient contains NaN or inf"),
    ),
    Case(
        "md-structure-mismatch",
        lambda: _update(
            mirror_descent(0.1, lambda p: 0.5 * jnp.sum(p["a"] ** 2)),
            {"a": jnp.ones(2)},
            {"a": jnp.ones(2), "b": jnp.ones(1)},
        ),
        error=(ValueError, "different pytree structures"),
    ),
    Case(
        "md-negative-damping-static",
        lambda g: _update(mirror_descent(0.1, lambda x: 0.5 * x @ x, damping=-1.0), g, P2),
        (G2,),
        (ValueError, "`damping` must be >= 0"),
    ),
    Case(
        "md-throw-false-nan-grad",
        lambda g: _update(mirror_descent(0.1, lambda x: 0.5 * x @ x, throw=False), g, P2),
        (NAN2,),
        check=_nan_update,
    ),
]

P_OFF = jnp.array([0.2, 0.3])  # nonnegative, total 0.5
G_EG = jnp.array([1.0, -0.5])

EXPONENTIATED_GRADIENT_CASES = [
    # The documented promise: a leaf summing to c keeps summing to c (Kivinen & Warmuth 1997,
    # Eq. (3.2), scaled: p_+ = c softmax(log p - lr g)).
    Case(
        "eg-ones-keeps-total-2",
        lambda p, g: _eg_new(p, g, 0.5),
        (jnp.ones(2), G_EG),
        check=_close_to(2.0 * jax.nn.softmax(-0.5 * G_EG)),
    ),
    Case(
        "eg-partial-total-kept",
        lambda p, g: _eg_new(p, g, 0.7),
        (P_OFF, G_EG),
        check=_close_to(0.5 * jax.nn.softmax(jnp.log(P_OFF) - 0.7 * G_EG)),
    ),
    Case(
        "eg-rows-keep-their-totals",
        lambda p, g: _eg_new(p, g, 0.3, axis=-1),
        (jnp.array([[1.0, 3.0], [0.5, 0.0]]), jnp.array([[1.0, 0.0], [2.0, 5.0]])),
        check=_close_to(
            jnp.array(
                [
                    4.0
                    * jax.nn.softmax(jnp.log(jnp.array([0.25, 0.75])) - 0.3 * jnp.array([1, 0])),
                    jnp.array([0.5, 0.0]),
                ]
            )
        ),
    ),
    Case(
        "eg-negative-entry",
        lambda p, g: _eg_new(p, g, 0.1),
        (jnp.array([1.2, -0.2]), G_EG),
        (RUNTIME, "finite and nonnegative"),
    ),
    Case(
        "eg-nan-param",
        lambda p, g: _eg_new(p, g, 0.1),
        (jnp.array([jnp.nan, 0.5]), G_EG),
        (RUNTIME, "finite and nonnegative"),
    ),
    Case(
        "eg-nan-grad",
        lambda p, g: _eg_new(p, g, 0.1),
        (jnp.array([0.5, 0.5]), NAN2),
        (RUNTIME, "gradient contains NaN"),
    ),
    Case(
        "eg-inf-grad-at-positive-entry",
        lambda p, g: _eg_new(p, g, 0.1),
        (jnp.array([0.5, 0.5]), jnp.array([-jnp.inf, 0.0])),
        (RUNTIME, "inf at a positive entry"),
    ),
    Case(
        "eg-throw-false-negative-entry",
        lambda p, g: _update(exponentiated_gradient(0.1, throw=False), g, p),
        (jnp.array([1.2, -0.2]), G_EG),
        check=_nan_update,
    ),
    Case(
        "eg-structure-mismatch",
        lambda: _update(exponentiated_gradient(0.1), (jnp.ones(2),), [jnp.ones(2)]),
        error=(ValueError, "different pytree structures"),
    ),
]

CASES = NATURAL_GRADIENT_CASES + MIRROR_DESCENT_CASES + EXPONENTIATED_GRADIENT_CASES


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, mode: str):
    call = case.call if mode == "eager" else eqx.filter_jit(case.call)
    if case.error is not None:
        kind, message = case.error
        with pytest.raises(kind, match=message):
            jax.block_until_ready(call(*case.args))
    else:
        assert case.check is not None
        case.check(jax.block_until_ready(call(*case.args)))


def test_every_case_has_one_expectation():
    for case in CASES:
        assert (case.error is None) != (case.check is None), case.id
