"""Exact subsampled natural gradient (Woodbury) and the diagonal Fisher option."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from infogeo_jax.families import Poisson
from infogeo_jax.optim import (
    empirical_fisher,
    manifold_fisher,
    natural_gradient,
    predictive_fisher,
)

KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def mlp():
    model = eqx.nn.MLP(3, 4, 5, 1, activation=jnp.tanh, key=KEY)
    params = eqx.filter(model, eqx.is_inexact_array)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    y = jnp.arange(6) % 4
    grads = jax.tree.map(lambda t: jnp.cos(jnp.arange(t.size).reshape(t.shape) + 0.5), params)
    return model, params, x, y, grads


def _dense_and(fisher, params, grads, batch, lam, solver):
    """(dense damped solve, the solver's update) for the same Fisher, both at lr 1."""

    @jax.jit
    def run(params, grads):
        flat_g, unravel = ravel_pytree(grads)
        mat = ravel_pytree(params)[0].size
        f = fisher(params, batch=batch).as_matrix()
        want = jnp.linalg.solve(f + lam * jnp.eye(mat), flat_g)
        if solver == "diagonal":
            want = flat_g / (jnp.diag(f) + lam)
        opt = natural_gradient(1.0, fisher, lam, solver=solver)
        updates, _ = opt.update(grads, opt.init(params), params, batch=batch)
        return want, -ravel_pytree(updates)[0]

    return run(params, grads)


@pytest.mark.parametrize("solver", ["woodbury", "diagonal"])
@pytest.mark.parametrize("output", ["categorical", "gaussian"])
def test_predictive_equals_dense_damped_solve(mlp, solver, output):
    # Woodbury: (F + lam I)^{-1} g = (g - U^T (n lam I + U U^T)^{-1} U g) / lam with
    # F = U^T U / n (Ren & Goldfarb 2019, Eq. (6)); against the dense solve of the operator
    # that predictive_fisher builds (JVP/VJP products, a different route).
    model, params, x, y, grads = mlp
    fisher = predictive_fisher(model, output, noise_variance=0.7)
    want, got = _dense_and(fisher, params, grads, (x, y), 0.05, solver)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["woodbury", "diagonal"])
def test_empirical_equals_dense_damped_solve(mlp, solver):
    model, params, x, y, grads = mlp
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)

    def loglik(p, example):
        xi, yi = example
        return jax.nn.log_softmax(eqx.combine(p, static)(xi))[yi]

    fisher = empirical_fisher(loglik)
    want, got = _dense_and(fisher, params, grads, (x, y), 1e-3, solver)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # The same Fisher given through `model=` (loglik of the outputs).
    fisher = empirical_fisher(lambda out, e: jax.nn.log_softmax(out)[e[1]], model=model)
    want2, got2 = _dense_and(fisher, params, grads, (x, y), 1e-3, solver)
    np.testing.assert_allclose(got2, want, rtol=1e-10, atol=1e-12)


def test_woodbury_trains_and_needs_a_gram_fisher(mlp):
    model, params, x, y, _ = mlp
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        jax.vmap(eqx.combine(p, static))(x), y
    ).mean()
    opt = natural_gradient(1.0, predictive_fisher(model, "categorical"), 0.1, solver="woodbury")
    state = opt.init(params)
    step = jax.jit(lambda p, s: opt.update(jax.grad(loss)(p), s, p, batch=(x, y)))
    start = loss(params)
    for _ in range(5):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start
    bad = natural_gradient(1.0, manifold_fisher(Poisson()), 1e-2, solver="woodbury")
    with pytest.raises(TypeError, match="predictive_fisher"):
        bad.update(jnp.ones(1), bad.init(jnp.zeros(1)), jnp.zeros(1))
    with pytest.raises(ValueError, match="solver"):
        natural_gradient(1.0, manifold_fisher(Poisson()), solver="lu")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Closed forms: linear models, whose Fisher is known in terms of the data matrix alone.


def _linear_data(n=5, d=3, c=4, scale=1.0):
    x = scale * jax.random.normal(jax.random.PRNGKey(2), (n, d))
    w = 0.5 * jax.random.normal(jax.random.PRNGKey(3), (d, c))
    g = jnp.sin(jnp.arange(d * c).reshape(d, c) + 0.3)
    return x, w, g


@pytest.mark.parametrize("solver", ["woodbury", "diagonal"])
def test_linear_gaussian_closed_form(solver):
    # Linear regression f = x W with Gaussian noise sigma^2: the Fisher over vec(W) (row-major
    # W[i, o]) is F = kron(X^T X, I_c) / (n sigma^2), its diagonal mean(x_i^2) / sigma^2 per
    # output (Bishop, PRML 2006, Eq. 3.15 and Sec. 3.1.5, the precision of the likelihood).
    x, w, g = _linear_data()
    n, c = x.shape[0], w.shape[1]
    var, lam = 0.7, 1e-3
    f = np.kron(np.asarray(x.T @ x), np.eye(c)) / (n * var)
    flat_g = np.asarray(g).ravel()
    if solver == "woodbury":
        want = np.linalg.solve(f + lam * np.eye(f.shape[0]), flat_g)
    else:
        want = flat_g / (np.repeat(np.mean(np.asarray(x) ** 2, axis=0), c) / var + lam)
    fisher = predictive_fisher(lambda p, xs: xs @ p, "gaussian", noise_variance=var)
    opt = natural_gradient(1.0, fisher, lam, solver=solver)
    updates, _ = jax.jit(opt.update)(g, opt.init(w), w, batch=x)
    np.testing.assert_allclose(-np.asarray(updates).ravel(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", ["woodbury", "diagonal"])
def test_softmax_regression_closed_form(solver):
    # Multinomial logistic regression, logits x W: the Fisher (= the Hessian of the mean
    # cross-entropy) is (1/n) sum_i kron(x_i x_i^T, diag(p_i) - p_i p_i^T) (Bishop, PRML 2006,
    # Eq. 4.110); its diagonal at W[j, k] is mean_i x_ij^2 p_ik (1 - p_ik).
    x, w, g = _linear_data()
    p = np.asarray(jax.nn.softmax(x @ w, axis=-1))
    xs = np.asarray(x)
    lam = 1e-2
    flat_g = np.asarray(g).ravel()
    if solver == "woodbury":
        f = np.mean(
            [np.kron(np.outer(xi, xi), np.diag(pi) - np.outer(pi, pi)) for xi, pi in zip(xs, p)],
            axis=0,
        )
        want = np.linalg.solve(f + lam * np.eye(f.shape[0]), flat_g)
    else:
        want = flat_g / (np.mean(xs[:, :, None] ** 2 * (p * (1 - p))[:, None, :], 0).ravel() + lam)
    fisher = predictive_fisher(lambda p_, xs_: xs_ @ p_, "categorical")
    opt = natural_gradient(1.0, fisher, lam, solver=solver)
    updates, _ = jax.jit(opt.update)(g, opt.init(w), w, batch=x)
    np.testing.assert_allclose(-np.asarray(updates).ravel(), want, rtol=1e-10, atol=1e-12)


def test_sequence_outputs_and_max_kl_equal_dense(mlp):
    # Outputs with several positions per example (n, T, c) and a KL radius: still the dense
    # damped solve of the operator (rows per position), rescaled so 0.5 d^T (F + lam I) d = eps.
    model, params, x, y, grads = mlp
    apply = lambda p, xs: (
        jnp.stack(
            [jax.vmap(eqx.combine(p, eqx.filter(model, eqx.is_inexact_array, inverse=True)))(xs)]
            * 2,
            axis=1,
        )
        * jnp.array([1.0, -0.5])[None, :, None]
    )
    fisher = predictive_fisher(apply, "categorical")
    lam, eps = 0.03, 1e-3
    f = fisher(params, batch=x).as_matrix()
    flat_g = ravel_pytree(grads)[0]
    d = jnp.linalg.solve(f + lam * jnp.eye(f.shape[0]), flat_g)
    d = d * jnp.sqrt(eps / (0.5 * flat_g @ d))
    opt = natural_gradient(1.0, fisher, lam, solver="woodbury", max_kl=eps)
    updates, state = jax.jit(opt.update)(grads, opt.init(params), params, batch=x)
    got = -ravel_pytree(updates)[0]
    np.testing.assert_allclose(got, d, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(0.5 * got @ (f @ got + lam * got), eps, rtol=1e-10, atol=0)


# ---------------------------------------------------------------------------------------------
# float32: the scale-aware Gram solve


def test_float32_rank_deficient_gram_matches_float64():
    # Duplicated, badly scaled examples: the Gram U U^T is exactly singular, and its float32
    # rounding error (~eps |U U^T|) exceeds n * damping, so a plain Cholesky of the damped Gram
    # fails; the clipped eigendecomposition still gives the float64 solution to float32
    # accuracy (relative error ~ eps |F| / damping, here about 1e-5).
    rows = jnp.tile(jnp.array([[3000.0, -2000.0, 1000.0]]), (4, 1))
    x64 = jnp.concatenate([rows, jnp.array([[1.0, 2.0, 3.0]])])
    w64 = jnp.zeros((3, 2))
    g64 = jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]])
    lam = 1e-2
    fisher = predictive_fisher(lambda p, xs: xs @ p, "gaussian")
    want = np.linalg.solve(
        np.asarray(fisher(w64, batch=x64).as_matrix()) + lam * np.eye(6), np.asarray(g64).ravel()
    )
    x32, w32, g32 = (a.astype(jnp.float32) for a in (x64, w64, g64))
    u = jnp.kron(x32, jnp.eye(2, dtype=jnp.float32))  # the rows of U of this linear model
    naive = jnp.linalg.cholesky(u @ u.T + 5 * lam * jnp.eye(10, dtype=jnp.float32))
    assert not bool(jnp.all(jnp.isfinite(naive)))  # so the fallback is exercised
    opt = natural_gradient(1.0, fisher, lam, solver="woodbury")
    updates, _ = jax.jit(opt.update)(g32, opt.init(w32), w32, batch=x32)
    assert updates.dtype == jnp.float32
    got = -np.asarray(updates, np.float64).ravel()
    assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want)


def test_float32_training_no_retrace_injected_damping(mlp):
    model, params, x, y, _ = mlp
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        jax.vmap(eqx.combine(p, static))(x.astype(jnp.float32)), y
    ).mean()
    fisher = predictive_fisher(model, "categorical")
    opt = optax.inject_hyperparams(natural_gradient)(1.0, fisher, 0.1, solver="woodbury")
    state = opt.init(params)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(p, s):
        u, s = opt.update(jax.grad(loss)(p), s, p, batch=(x.astype(jnp.float32), y))
        return optax.apply_updates(p, u), s

    start = loss(params)
    for damping in (0.1, 0.05, 0.02):
        state.hyperparams["damping"] = jnp.asarray(damping, jnp.float32)
        params, state = step(params, state)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(params))
    assert loss(params) < 0.5 * start


def test_failures_are_named(mlp):
    model, params, x, y, grads = mlp
    fisher = predictive_fisher(model, "categorical")
    zero = natural_gradient(1.0, fisher, 0.0, solver="woodbury")
    with pytest.raises(Exception, match="damping` must be > 0"):
        jax.jit(zero.update)(grads, zero.init(params), params, batch=(x, y))
    nan_grads = jax.tree.map(lambda a: a.at[(0,) * a.ndim].set(jnp.nan), grads)
    opt = natural_gradient(1.0, fisher, 0.1, solver="woodbury")
    with pytest.raises(Exception, match="gradient contains NaN"):
        jax.jit(opt.update)(nan_grads, opt.init(params), params, batch=(x, y))
    quiet = natural_gradient(1.0, fisher, 0.1, solver="woodbury", throw=False)
    updates, _ = jax.jit(quiet.update)(nan_grads, quiet.init(params), params, batch=(x, y))
    assert all(bool(jnp.all(jnp.isnan(u))) for u in jax.tree.leaves(updates))
