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
