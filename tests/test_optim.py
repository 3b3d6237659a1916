"""Tests of infogeo_jax.optim: natural gradient, mirror descent, exponentiated gradient, Fisher."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st
from jax.flatten_util import ravel_pytree

import infogeo_jax as ig
from infogeo_jax.families import Normal, Poisson
from infogeo_jax.optim import (
    ScaleByExponentiatedGradientState,
    ScaleByMirrorDescentState,
    ScaleByNaturalGradientState,
    empirical_fisher,
    exponentiated_gradient,
    manifold_fisher,
    mirror_descent,
    natural_gradient,
    predictive_fisher,
    scale_by_exponentiated_gradient,
    scale_by_mirror_descent,
    scale_by_natural_gradient,
)

TOL = dict(rtol=1e-10, atol=1e-10)
# equinox.error_if raises EquinoxRuntimeError eagerly, JaxRuntimeError under plain jax.jit.
RUNTIME_ERRORS = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)
NORMAL = Normal()
POISSON = Poisson()
# Fixed Normal data (float64): sample mean and biased variance give the closed-form MLE.
DATA = jnp.array([0.3, -1.2, 2.5, 0.7, 1.1, -0.4, 0.9, 1.8])
ETA_HAT = jnp.array([jnp.mean(DATA), jnp.mean(DATA**2)])


def normal_nll(theta):
    # Mean negative log-likelihood of an exponential family: A(theta) - <theta, eta_hat>.
    return NORMAL.log_partition(theta) - theta @ ETA_HAT


NLL_GRAD = jax.jit(jax.grad(normal_nll))
NLL_HESS = jax.jit(jax.hessian(normal_nll))


def _one_update(opt, grads, params, **extra):
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, **extra)
    return updates, state


# Jitted once per optimizer object: eager dispatch of every small op is what makes tests slow.
one_update = jax.jit(_one_update, static_argnums=0)


def spd_matrix(key, n):
    a = jax.random.normal(key, (n, n))
    return a @ a.T / n + 0.5 * jnp.eye(n)


# ---------------------------------------------------------------------------------------------
# Exact results
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_natural_gradient_is_newton_step_poisson(solver):
    # Poisson mean NLL L(theta) = e^theta - ybar theta; Newton's step (Nocedal & Wright,
    # Numerical Optimization, 2nd ed., Eq. (3.30)) is theta - L'/L'' = theta - 1 + ybar e^-theta.
    ybar, theta = 3.7, jnp.array([0.4])
    nll = lambda th: POISSON.log_partition(th) - ybar * th[0]
    opt = natural_gradient(1.0, manifold_fisher(POISSON), damping=0.0, solver=solver)
    updates, _ = one_update(opt, jax.jit(jax.grad(nll))(theta), theta)
    expected = theta - 1.0 + ybar * jnp.exp(-theta)
    np.testing.assert_allclose(theta + updates, expected, **TOL)


def test_natural_gradient_is_newton_step_normal():
    # Second route: Newton's step with the autodiff Hessian of the NLL (= Fisher for an EF).
    theta = NORMAL.from_usual(jnp.array([0.2, 1.5]))
    g = NLL_GRAD(theta)
    newton = theta - jnp.linalg.solve(NLL_HESS(theta), g)
    for solver in ["dense", "cg"]:
        opt = natural_gradient(1.0, manifold_fisher(NORMAL), damping=0.0, solver=solver)
        updates, _ = one_update(opt, g, theta)
        np.testing.assert_allclose(theta + updates, newton, **TOL)


@pytest.mark.parametrize("closed_form", [False, True])
def test_mirror_descent_with_log_partition_lands_on_mle(closed_form):
    # MLE of a normal sample (e.g. Casella & Berger, Statistical Inference, Example 7.2.11):
    # mu = mean, sigma^2 = biased variance; natural parameters (mu / s2, -1 / (2 s2)).
    mu, s2 = jnp.mean(DATA), jnp.var(DATA)
    mle = jnp.array([mu / s2, -0.5 / s2])
    theta = NORMAL.from_usual(jnp.array([-1.0, 0.5]))
    inverse = NORMAL.natural_parameters if closed_form else None
    opt = mirror_descent(
        1.0, NORMAL.log_partition, inverse_gradient=inverse, in_domain=NORMAL.in_domain
    )
    updates, state = one_update(opt, NLL_GRAD(theta), theta)
    np.testing.assert_allclose(theta + updates, mle, **TOL)
    np.testing.assert_allclose(theta + updates, NORMAL.maximum_likelihood(DATA), **TOL)
    assert isinstance(state[0], ScaleByMirrorDescentState)


def test_mirror_descent_is_natural_gradient_in_expectation_coordinates():
    # With A as potential: eta_+ = eta - lr grad_theta L = eta - lr F_eta^{-1} grad_eta L, with
    # F_eta = Hessian of the dual potential A* (Amari & Nagaoka 2000, Theorem 3.7).
    lr, theta = 0.3, NORMAL.from_usual(jnp.array([0.5, 2.0]))
    md_updates, _ = one_update(
        mirror_descent(lr, NORMAL.log_partition, in_domain=NORMAL.in_domain),
        NLL_GRAD(theta),
        theta,
    )
    eta = NORMAL.mean_parameters(theta)
    loss_eta = lambda e: normal_nll(NORMAL.natural_parameters(e))
    fisher_eta = manifold_fisher(ig.StatisticalManifold(jax.hessian(NORMAL.dual_potential)))
    ng_updates, _ = one_update(
        natural_gradient(lr, fisher_eta, damping=0.0, solver="dense"),
        jax.jit(jax.grad(loss_eta))(eta),
        eta,
    )
    np.testing.assert_allclose(
        theta + md_updates, NORMAL.natural_parameters(eta + ng_updates), **TOL
    )


def test_natural_gradient_transforms_as_tangent_vector():
    # theta = h(phi), phi = (mu, log sigma). F_phi = J^T F_theta J, g_phi = J^T g_theta, so
    # ng_phi = J^{-1} ng_theta (Amari 1998, Sec. 3): J ng_phi = ng_theta; not so for gradients.
    def h(phi):
        return NORMAL.from_usual(jnp.array([phi[0], jnp.exp(phi[1])]))

    phi = jnp.array([0.4, 0.3])
    theta = h(phi)
    jac = jax.jit(jax.jacobian(h))(phi)
    fisher_phi = manifold_fisher(ig.StatisticalManifold(lambda p: jac_t_f_j(h, p)))
    block_phi = scale_by_natural_gradient(fisher_phi, 0.0, solver="dense")
    block_theta = scale_by_natural_gradient(manifold_fisher(NORMAL), 0.0, solver="dense")
    g_phi = jax.jit(jax.grad(lambda p: normal_nll(h(p))))(phi)
    g_theta = NLL_GRAD(theta)
    ng_phi, _ = one_update(block_phi, g_phi, phi)
    ng_theta, _ = one_update(block_theta, g_theta, theta)
    np.testing.assert_allclose(jac @ ng_phi, ng_theta, **TOL)
    assert not np.allclose(jac @ g_phi, g_theta, rtol=1e-3, atol=1e-3)


def jac_t_f_j(h, phi):
    jac = jax.jit(jax.jacobian(h))(phi)
    return jac.T @ NORMAL.fisher_information(h(phi)) @ jac


# ---------------------------------------------------------------------------------------------
# Solvers: dense, CG, operators, damping, warm start, trust region
# ---------------------------------------------------------------------------------------------
KEY = jax.random.PRNGKey(0)
F5 = spd_matrix(KEY, 5)
G5 = jax.random.normal(jax.random.PRNGKey(1), (5,))
DICT_PARAMS = {"a": jnp.ones(2), "b": {"c": jnp.ones((3,))}}


def dict_operator(params, **_):
    flat, unravel = ravel_pytree(params)
    return lx.FunctionLinearOperator(
        lambda v: unravel(F5 @ ravel_pytree(v)[0]),
        jax.eval_shape(lambda: params),
        tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
    )


@pytest.mark.parametrize("kind", ["matrix", "operator"])
@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_dense_cg_matrix_operator_agree_on_dict(kind, solver):
    damping = 0.1
    expected = np.linalg.solve(np.asarray(F5) + damping * np.eye(5), np.asarray(G5))
    fisher = (lambda p: F5) if kind == "matrix" else dict_operator
    _, unravel = ravel_pytree(DICT_PARAMS)
    block = scale_by_natural_gradient(fisher, damping, solver=solver, cg_max_steps=50)
    direction, state = one_update(block, unravel(G5), DICT_PARAMS)
    np.testing.assert_allclose(ravel_pytree(direction)[0], expected, rtol=1e-9, atol=1e-9)
    assert isinstance(state, ScaleByNaturalGradientState)
    assert jax.tree.structure(state.solution) == jax.tree.structure(DICT_PARAMS)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 2.0))
def test_cg_with_n_steps_equals_dense(seed, damping):
    # CG terminates in at most n steps in exact arithmetic (Nocedal & Wright, Theorem 5.1).
    f = spd_matrix(jax.random.PRNGKey(seed), 5)
    g = jax.random.normal(jax.random.PRNGKey(seed + 1), (5,))
    dense, _ = _ng_step_dense(f, g, damping)
    cg, _ = _ng_step_cg(f, g, damping)
    np.testing.assert_allclose(cg, dense, rtol=1e-8, atol=1e-8)


@jax.jit
def _ng_step_dense(f, g, damping):
    return one_update(scale_by_natural_gradient(lambda p: f, damping, solver="dense"), g, g)


@jax.jit
def _ng_step_cg(f, g, damping):
    # Tolerances tight enough that CG runs to its n-step termination (the default cg_rtol=1e-6
    # stops earlier, by design).
    block = scale_by_natural_gradient(
        lambda p: f, damping, solver="cg", cg_max_steps=10, cg_rtol=1e-13, cg_atol=0.0
    )
    return one_update(block, g, g)


def test_warm_start_converges_over_updates():
    # With 1 CG step per update, restarting from the previous solution keeps improving; a cold
    # start always returns the same 1-step (steepest-descent) iterate.
    exact = np.linalg.solve(np.asarray(F5), np.asarray(G5))
    errors = {}
    for warm in [True, False]:
        block = scale_by_natural_gradient(
            lambda p: F5, 0.0, cg_max_steps=1, warm_start=warm, cg_rtol=0.0, cg_atol=0.0
        )
        state = block.init(G5)
        update = jax.jit(block.update)
        for _ in range(60):
            d, state = update(G5, state, G5)
        errors[warm] = float(jnp.max(jnp.abs(d - exact)))
    assert errors[True] < 1e-8
    assert errors[False] > 1e-2


def test_trust_region_scales_to_max_kl():
    # TRPO (Schulman et al. 2015, Appendix C): step = sqrt(2 eps / s^T F s) s.
    damping, eps = 0.05, 1e-3
    block = scale_by_natural_gradient(lambda p: F5, damping, solver="dense", max_kl=eps)
    d, _ = one_update(block, G5, G5)
    fd = F5 + damping * jnp.eye(5)
    np.testing.assert_allclose(0.5 * d @ fd @ d, eps, **TOL)
    s = jnp.linalg.solve(fd, G5)
    np.testing.assert_allclose(d, jnp.sqrt(2 * eps / (s @ fd @ s)) * s, **TOL)


def test_singular_dense_fisher_raises():
    block = scale_by_natural_gradient(lambda p: jnp.zeros((2, 2)), 0.0, solver="dense")
    with pytest.raises(RUNTIME_ERRORS, match="singular"):
        one_update(block, jnp.ones(2), jnp.ones(2))


def test_bad_fisher_output_raises():
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        one_update(scale_by_natural_gradient(lambda p: jnp.eye(3)), jnp.ones(2), jnp.ones(2))
    with pytest.raises(TypeError, match="2-D array or a lineax"):
        one_update(scale_by_natural_gradient(lambda p: "F"), jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match="'cg' or 'dense'"):
        scale_by_natural_gradient(lambda p: jnp.eye(2), solver="lu")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Fisher builders
# ---------------------------------------------------------------------------------------------
def test_manifold_fisher_family_and_model():
    theta = NORMAL.from_usual(jnp.array([0.3, 0.8]))
    fisher = jax.jit(manifold_fisher(NORMAL))
    # Closed form: Fisher of N(mu, s2) in natural coordinates is Cov[T(x)] =
    # [[s2, 2 mu s2], [2 mu s2, 4 mu^2 s2 + 2 s2^2]] (Amari & Nagaoka 2000, Sec. 2.2).
    mu, s2 = 0.3, 0.8**2
    closed = jnp.array([[s2, 2 * mu * s2], [2 * mu * s2, 4 * mu**2 * s2 + 2 * s2**2]])
    np.testing.assert_allclose(fisher(theta, batch=jnp.ones(2)), closed, **TOL)
    np.testing.assert_allclose(
        fisher(theta), jax.jit(jax.hessian(NORMAL.log_partition))(theta), **TOL
    )
    # A StatisticalModel (Bernoulli on {0, 1} in the logit): Fisher p (1 - p).
    log_density = lambda th, x: x * th[0] - jnp.logaddexp(0.0, th[0])
    model = ig.StatisticalModel(log_density, ig.FiniteSupport(jnp.array([0.0, 1.0])))
    p = jax.nn.sigmoid(0.7)
    model_fisher = jax.jit(manifold_fisher(model))
    np.testing.assert_allclose(model_fisher({"w": jnp.array([0.7])}), [[p * (1 - p)]], **TOL)
    with pytest.raises(TypeError, match="AbstractStatisticalManifold"):
        manifold_fisher(lambda th: th)  # type: ignore[arg-type]


X8 = jax.random.normal(jax.random.PRNGKey(3), (8, 3))
Y8 = jnp.array([0, 2, 1, 1, 0, 2, 2, 1])


def test_empirical_fisher_closed_form():
    # Linear-Gaussian log-likelihood l = -(y - x.w)^2 / 2: score r x, so F = mean r_i^2 x x^T.
    w = jnp.array([0.3, -0.2, 0.5])
    y = jnp.arange(8.0) / 4
    loglik = lambda w, ex: -0.5 * (ex[1] - ex[0] @ w) ** 2
    op = empirical_fisher(loglik)(w, batch=(X8, y), unused=1)
    r = y - X8 @ w
    closed = (X8 * r[:, None] ** 2).T @ X8 / 8
    np.testing.assert_allclose(op.as_matrix(), closed, **TOL)
    # Second route: per-example gradients by jax.jacobian.
    grads = jax.jit(jax.vmap(jax.grad(loglik), (None, 0)))(w, (X8, y))
    np.testing.assert_allclose(op.mv(w), grads.T @ (grads @ w) / 8, **TOL)
    with pytest.raises(ValueError, match="batch=batch"):
        empirical_fisher(loglik)(w)


def _linear_logits(params, x):
    return x @ params["W"] + params["b"]


LIN_PARAMS = {"W": 0.3 * jax.random.normal(jax.random.PRNGKey(4), (3, 3)), "b": jnp.zeros(3)}


def test_predictive_fisher_categorical_equals_hessian_and_expected_score():
    @jax.jit
    def three_matrices(params):
        op = predictive_fisher(_linear_logits, "categorical")(params, batch=(X8, Y8))
        matrix = jax.vmap(lambda e: ravel_pytree(op.mv(_unravel_lin(e)))[0])(jnp.eye(12))

        def mean_ce(flat):
            logits = _linear_logits(_unravel_lin(flat), X8)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), Y8[:, None], 1))

        flat = ravel_pytree(params)[0]

        def expected_outer(x):
            def loglik(flat, y):
                logits = _linear_logits(_unravel_lin(flat), x[None])[0]
                return jax.nn.log_softmax(logits)[y]

            scores = jax.vmap(jax.grad(loglik), (None, 0))(flat, jnp.arange(3))
            probs = jax.nn.softmax(_linear_logits(params, x[None])[0])
            return (scores * probs[:, None]).T @ scores

        return matrix, jax.hessian(mean_ce)(flat), jnp.mean(jax.vmap(expected_outer)(X8), 0)

    matrix, hessian, expected = three_matrices(LIN_PARAMS)
    # Route 1: for a linear model the GGN is the Hessian of the mean cross-entropy
    # (Martens 2020, Sec. 8.1).
    np.testing.assert_allclose(matrix, hessian, **TOL)
    # Route 2: E_{y ~ p}[score score^T] by an exact sum over classes (the Fisher's definition).
    np.testing.assert_allclose(matrix, expected, **TOL)


_unravel_lin = ravel_pytree(LIN_PARAMS)[1]


def test_predictive_fisher_gaussian_closed_form():
    # Gaussian mean output with variance s2: F = X^T X / (n s2) for a linear model.
    apply = lambda w, x: x @ w
    op = predictive_fisher(apply, "gaussian", noise_variance=0.5)(jnp.zeros(3), batch=X8)
    np.testing.assert_allclose(op.as_matrix(), X8.T @ X8 / (8 * 0.5), **TOL)
    op2 = predictive_fisher(apply, "gaussian", inputs_of=lambda b: b["x"])(
        jnp.zeros(3), batch={"x": X8}
    )
    np.testing.assert_allclose(op2.as_matrix(), X8.T @ X8 / 8, **TOL)
    with pytest.raises(ValueError, match="'categorical' or 'gaussian'"):
        predictive_fisher(apply, "poisson")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the data batch"):
        predictive_fisher(apply, "gaussian")(jnp.zeros(3))


def test_natural_gradient_with_predictive_fisher_on_equinox_module():
    # Softmax regression as an equinox Linear: lr 1, CG NG with the GGN + damping = Hessian of
    # (mean CE + damping/2 |params|^2) -> Newton's method converges quadratically to the optimum.
    model = eqx.nn.Linear(3, 3, key=jax.random.PRNGKey(5))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    apply = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
    lam = 0.1

    def loss(p, batch):
        x, y = batch
        logp = jax.nn.log_softmax(apply(p, x))
        reg = 0.5 * lam * sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(p))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1)) + reg

    opt = natural_gradient(1.0, predictive_fisher(apply, "categorical"), lam, cg_max_steps=12)

    @jax.jit
    def step(p, state):
        grads = jax.grad(loss)(p, (X8, Y8))
        updates, state = opt.update(grads, state, p, batch=(X8, Y8), other="ignored")
        return optax.apply_updates(p, updates), state

    state = opt.init(params)
    for _ in range(8):
        params, state = step(params, state)
    grad_norm = jax.jit(lambda p: optax.tree.norm(jax.grad(loss)(p, (X8, Y8))))(params)
    assert grad_norm < 1e-10


# ---------------------------------------------------------------------------------------------
# Mirror descent and exponentiated gradient
# ---------------------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.01, 2.0))
def test_mirror_descent_quadratic_potential_closed_form(seed, lr):
    # F = x^T Q x / 2: grad F = Q x, so theta_+ = theta - lr Q^{-1} g exactly.
    q = spd_matrix(jax.random.PRNGKey(seed), 5)
    theta = jax.random.normal(jax.random.PRNGKey(seed + 7), (5,))
    updates = _md_quadratic(q, theta, G5, lr)
    np.testing.assert_allclose(theta + updates, theta - lr * jnp.linalg.solve(q, G5), **TOL)


@jax.jit
def _md_quadratic(q, theta, g, lr):
    opt = mirror_descent(lr, lambda x: 0.5 * x @ q @ x)
    return one_update(opt, g, theta)[0]


def test_mirror_descent_schedule_and_pytree():
    # Entropic potential sum(x log x - x) on the positive orthant: x_+ = x exp(-lr_t g).
    schedule = optax.exponential_decay(0.5, 1, 0.5)
    params = {"u": jnp.array([0.5, 2.0]), "v": jnp.array([[1.5]])}
    potential = lambda p: sum(jnp.sum(x * jnp.log(x) - x) for x in jax.tree.leaves(p))
    opt = mirror_descent(schedule, potential)
    state = opt.init(params)
    g = {"u": jnp.array([1.0, -0.5]), "v": jnp.array([[0.3]])}
    update = jax.jit(opt.update)
    for t in range(3):
        updates, state = update(g, state, params)
        expected = jax.tree.map(lambda x, gg: x * jnp.exp(-schedule(t) * gg), params, g)
        params = optax.apply_updates(params, updates)
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, **TOL)


def test_mirror_descent_damping_closed_form_and_damped_natural_gradient_limit():
    # Quadratic F = x^T Q x / 2 with damping lam: the potential is F + lam |x|^2 / 2, so
    # theta_+ = theta - lr (Q + lam I)^{-1} g exactly (the Newton inverse is exact in one step).
    q = spd_matrix(jax.random.PRNGKey(3), 5)
    theta = jax.random.normal(jax.random.PRNGKey(4), (5,))
    lam, lr = 0.7, 0.3
    opt = mirror_descent(lr, lambda x: 0.5 * x @ q @ x, damping=lam)
    updates, _ = one_update(opt, G5, theta)
    expected = -lr * jnp.linalg.solve(q + lam * jnp.eye(5), G5)
    np.testing.assert_allclose(updates, expected, **TOL)
    # Second route: with A as the potential, the small-step direction is the damped natural
    # gradient (A'' + lam I)^{-1} g of natural_gradient with the same damping.
    theta = NORMAL.from_usual(jnp.array([0.4, 1.3]))
    g = NLL_GRAD(theta)
    md = scale_by_mirror_descent(
        NORMAL.log_partition, 1e-7, damping=lam, in_domain=NORMAL.in_domain
    )
    direction, _ = one_update(md, g, theta)
    ng = scale_by_natural_gradient(manifold_fisher(NORMAL), lam, solver="dense")
    expected, _ = one_update(ng, g, theta)
    np.testing.assert_allclose(direction, expected, rtol=1e-5, atol=1e-8)
    # And damping changes the step (the test can fail).
    undamped, _ = one_update(scale_by_mirror_descent(NORMAL.log_partition, 1e-7), g, theta)
    assert float(jnp.max(jnp.abs(undamped - direction))) > 1e-2


def test_mirror_descent_damping_errors():
    with pytest.raises(ValueError, match="damping"):
        mirror_descent(0.1, _entropy, damping=-1.0)
    with pytest.raises(ValueError, match="inverse_gradient"):
        mirror_descent(0.1, _entropy, damping=0.5, inverse_gradient=jnp.exp)
    # A traced damping (inject_hyperparams) is checked at run time.
    opt = optax.inject_hyperparams(mirror_descent, static_args=("potential", "inverse_gradient"))(
        learning_rate=0.1, potential=_entropy, inverse_gradient=jnp.exp, damping=0.5
    )
    with pytest.raises(RUNTIME_ERRORS, match="damping"):
        one_update(opt, jnp.array([0.3, -0.2]), jnp.array([1.0, 2.0]))


def test_mirror_descent_newton_failure_raises():
    # grad F = exp(x) > 0 cannot reach a negative dual point.
    opt = mirror_descent(1.0, lambda x: jnp.sum(jnp.exp(x)), newton_max_steps=20)
    with pytest.raises(RUNTIME_ERRORS, match="did not converge"):
        one_update(opt, jnp.array([5.0]), jnp.array([0.0]))


def _entropy(x):
    return jnp.sum(x * jnp.log(x) - x)


@jax.jit
def _md_block_and_aliases(theta, g, lr):
    # The block's direction, a hand-written chain and the alias: one trace for every lr.
    d, state = _one_update(scale_by_mirror_descent(_entropy, lr), g, theta, batch=1)
    manual = optax.chain(scale_by_mirror_descent(_entropy, lr), optax.scale_by_learning_rate(lr))
    u_manual, _ = _one_update(manual, g, theta)
    u_alias, _ = _one_update(mirror_descent(lr, _entropy), g, theta)
    return d, state, u_manual, u_alias


@jax.jit
def _eg_block(p, g, lr):
    return _one_update(scale_by_exponentiated_gradient(lr), g, p)


def test_scale_by_blocks_return_direction_that_chains_to_mirror_step():
    # The mirror blocks take the learning rate and return d = (theta - theta_+) / lr, so that
    # chained with scale_by_learning_rate(lr) the update is theta_+ - theta. For the entropic
    # potential theta_+ = theta exp(-lr g) (Beck & Teboulle 2003, Sec. 5); as lr -> 0,
    # d -> (Hess F)^{-1} g = theta g.
    theta, g = jnp.array([0.5, 2.0]), jnp.array([1.0, -0.5])
    d, state, u_manual, u_alias = _md_block_and_aliases(theta, g, 0.3)
    expected = theta * jnp.exp(-0.3 * g)
    np.testing.assert_allclose(theta - 0.3 * d, expected, **TOL)
    np.testing.assert_allclose(theta + u_manual, expected, **TOL)
    np.testing.assert_allclose(theta + u_alias, expected, **TOL)
    assert isinstance(state, ScaleByMirrorDescentState) and state.count == 1
    d = _md_block_and_aliases(theta, g, 1e-6)[0]
    np.testing.assert_allclose(d, theta * g, rtol=1e-5, atol=1e-5)
    d0 = _md_block_and_aliases(theta, g, 0.0)[0]
    np.testing.assert_allclose(d0, 0.0, **TOL)
    p = jnp.array([0.5, 0.3, 0.2])
    d, state = _eg_block(p, jnp.full(3, 2.0), 0.4)
    np.testing.assert_allclose(d, 0.0, **TOL)  # constant gradient: EG does not move
    assert isinstance(state, ScaleByExponentiatedGradientState) and state.count == 1
    g3 = jnp.array([1.0, 0.0, -1.0])
    d, _ = _eg_block(p, g3, 0.4)
    np.testing.assert_allclose(p - 0.4 * d, jax.nn.softmax(jnp.log(p) - 0.4 * g3), **TOL)


P_SIMPLEX = jnp.array([0.5, 0.3, 0.0, 0.2])


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4).filter(lambda v: sum(v) > 0.1),
    st.lists(st.floats(-50.0, 50.0), min_size=4, max_size=4),
    st.floats(0.0, 5.0),
)
def test_exponentiated_gradient_stays_on_simplex(p, g, lr):
    p = jnp.array(p) / sum(p)
    new = _eg_step(p, jnp.array(g), lr)
    assert bool(jnp.all(jnp.isfinite(new)))
    np.testing.assert_allclose(jnp.sum(new), 1.0, rtol=1e-12, atol=1e-12)
    assert bool(jnp.all(new >= 0))
    assert bool(jnp.all(jnp.where(p == 0, new == 0, True)))


@jax.jit
def _eg_step(p, g, lr):
    return p + one_update(exponentiated_gradient(lr), g, p)[0]


def test_exponentiated_gradient_closed_form_and_boundary():
    # Kivinen & Warmuth (1997), Eq. (3.2): p_+ = p exp(-lr g) / Z, i.e. softmax(log p - lr g).
    p = jnp.array([0.5, 0.3, 0.15, 0.05])
    g = jnp.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_allclose(_eg_step(p, g, 0.7), jax.nn.softmax(jnp.log(p) - 0.7 * g), **TOL)
    # Zeros with an infinite gradient there (g = -1/p): no NaN, zeros stay zero.
    g_inf = -1.0 / P_SIMPLEX
    new = _eg_step(P_SIMPLEX, g_inf, 0.1)
    positive = P_SIMPLEX > 0
    expected = jnp.where(positive, P_SIMPLEX * jnp.exp(-0.1 * jnp.where(positive, g_inf, 0)), 0)
    np.testing.assert_allclose(new, expected / jnp.sum(expected), **TOL)
    # Entries that underflow next to a large one land on tiny nonnegative numbers (a few ulp of
    # their old value), never on a negative rounding residue, for many learning rates.
    p = jnp.array([0.0, 0.0, 1.0, 0.5]) / 1.5
    for lr in np.linspace(2.5, 40.0, 16):
        new = _eg_step(p, jnp.array([0.0, 0.0, 0.0, 60.0]), lr)
        assert bool(jnp.all(new >= 0)) and 0 < float(new[3]) <= 1e-15
        np.testing.assert_allclose(new[2], 1.0, rtol=1e-15, atol=1e-15)
    # Row-stochastic matrix with axis=-1.
    rows = jnp.array([[0.2, 0.8], [1.0, 0.0]])
    opt = exponentiated_gradient(0.5, axis=-1)
    updates, state = one_update(opt, jnp.ones((2, 2)), rows, batch=jnp.ones(1))
    np.testing.assert_allclose(rows + updates, rows, **TOL)  # constant gradient: no move
    assert isinstance(state[0], ScaleByExponentiatedGradientState)


# ---------------------------------------------------------------------------------------------
# optax integration: chain, inject_hyperparams, MultiSteps, params, dtypes, extra args, jit/vmap
# ---------------------------------------------------------------------------------------------
ALL_OPTS = {
    "natural_gradient": lambda: natural_gradient(0.1, manifold_fisher(NORMAL), 0.01),
    "natural_gradient_dense": lambda: natural_gradient(
        0.1, manifold_fisher(NORMAL), 0.01, solver="dense", max_kl=0.1
    ),
    "mirror_descent": lambda: mirror_descent(0.1, NORMAL.log_partition, in_domain=NORMAL.in_domain),
    "exponentiated_gradient": lambda: exponentiated_gradient(0.1),
}


@pytest.mark.parametrize("name", list(ALL_OPTS))
def test_missing_params_raises(name):
    opt = ALL_OPTS[name]()
    theta = NORMAL.from_usual(jnp.array([0.0, 1.0]))
    state = opt.init(theta)
    with pytest.raises(ValueError, match="needs the current parameters"):
        opt.update(jnp.ones(2), state)
    with pytest.raises(ValueError, match="needs the current parameters"):
        jax.jit(opt.update)(jnp.ones(2), state)


@pytest.mark.parametrize("name", list(ALL_OPTS))
def test_float32_dtypes_kept(name):
    opt = ALL_OPTS[name]()
    params = jnp.array([0.5, 0.5], jnp.float32)
    if name != "exponentiated_gradient":
        params = NORMAL.from_usual(jnp.array([0.1, 1.2])).astype(jnp.float32)
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(jnp.array([0.3, -0.2], jnp.float32), state, params)
    assert updates.dtype == jnp.float32
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert bool(jnp.all(jnp.isfinite(updates)))


def test_float32_smoke_fisher_builders():
    @jax.jit
    def everything(params, x, y):
        op = predictive_fisher(_linear_logits, "categorical")(params, batch=(x, y))
        loglik = lambda p, ex: jax.nn.log_softmax(_linear_logits(p, ex[0][None])[0])[ex[1]]
        op_emp = empirical_fisher(loglik)(params, batch=(x, y))
        f = manifold_fisher(NORMAL)(NORMAL.from_usual(jnp.array([0.0, 1.0])).astype(jnp.float32))
        opt = natural_gradient(0.5, predictive_fisher(_linear_logits, "categorical"))
        return op.mv(params), op_emp.mv(params), f, one_update(opt, params, params, batch=(x, y))

    params = jax.tree.map(lambda a: a.astype(jnp.float32), LIN_PARAMS)
    out = everything(params, X8.astype(jnp.float32), Y8)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(out))
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(out))


def test_chain_and_extra_args_ignored():
    theta = NORMAL.from_usual(jnp.array([0.2, 1.5]))
    g = NLL_GRAD(theta)
    chained = optax.chain(
        optax.clip_by_global_norm(1e6),
        scale_by_natural_gradient(lambda p: NORMAL.fisher_information(p), 0.0, solver="dense"),
        optax.scale_by_learning_rate(1.0),
    )
    updates, _ = one_update(chained, g, theta, batch=jnp.ones(3), key=KEY)
    newton = -jnp.linalg.solve(NLL_HESS(theta), g)
    np.testing.assert_allclose(updates, newton, **TOL)
    for opt, p in [
        (mirror_descent(0.1, NORMAL.log_partition, in_domain=NORMAL.in_domain), theta),
        (exponentiated_gradient(0.1), jnp.array([0.4, 0.6])),
    ]:
        base, _ = one_update(opt, g, p)
        extra, _ = one_update(opt, g, p, batch=jnp.ones(3), key=KEY)
        np.testing.assert_allclose(base, extra, **TOL)


def test_inject_hyperparams_no_recompile():
    # lr and damping changed through the state; one trace; results match fresh optimizers.
    opt = optax.inject_hyperparams(natural_gradient, static_args=("fisher",))(
        learning_rate=1.0, fisher=lambda p: F5, damping=0.1, solver="dense"
    )

    @eqx.debug.assert_max_traces(max_traces=1)
    def step(g, state, p):
        return opt.update(g, state, p)

    step = jax.jit(step)
    state = opt.init(G5)
    for lr, damping in [(1.0, 0.1), (0.5, 0.2), (0.1, 1.0)]:
        state.hyperparams["learning_rate"] = jnp.asarray(lr)
        state.hyperparams["damping"] = jnp.asarray(damping)
        updates, state = step(G5, state, G5)
        expected = -lr * jnp.linalg.solve(F5 + damping * jnp.eye(5), G5)
        np.testing.assert_allclose(updates, expected, **TOL)
    md = optax.inject_hyperparams(mirror_descent, static_args=("potential",))(
        learning_rate=0.5, potential=lambda x: 0.5 * x @ x
    )
    md_step = jax.jit(eqx.debug.assert_max_traces(md.update, max_traces=1))
    md_state = md.init(G5)
    for lr in [0.5, 0.25]:
        md_state.hyperparams["learning_rate"] = jnp.asarray(lr)
        updates, md_state = md_step(G5, md_state, G5)
        np.testing.assert_allclose(updates, -lr * G5, **TOL)


def test_multisteps_averages_then_applies():
    # accumulator_dtype: optax 0.2.8 otherwise stores the running mean in float32.
    inner = natural_gradient(1.0, lambda p: F5, 0.0, solver="dense")
    opt = optax.MultiSteps(inner, 2, accumulator_dtype=jnp.float64)
    state = opt.init(G5)
    g1, g2 = G5, 2.0 * G5 + 1.0
    u1, state = opt.update(g1, state, G5)
    np.testing.assert_allclose(u1, 0.0, **TOL)
    u2, state = opt.update(g2, state, G5)
    np.testing.assert_allclose(u2, -jnp.linalg.solve(F5, 0.5 * (g1 + g2)), **TOL)


def test_vmap_and_grad_through_updates():
    # vmap over a batch of points: the Poisson Newton step closed form at each.
    thetas = jnp.linspace(-1.0, 1.0, 4)[:, None]
    nll = lambda th: POISSON.log_partition(th) - 2.0 * th[0]
    opt = natural_gradient(1.0, manifold_fisher(POISSON), 0.0, solver="dense")
    updates = jax.jit(jax.vmap(lambda th: one_update(opt, jax.grad(nll)(th), th)[0]))(thetas)
    np.testing.assert_allclose(thetas + updates, thetas - 1 + 2.0 * jnp.exp(-thetas), **TOL)
    # grad of the update w.r.t. the gradient: -(F + damping)^{-1} (linear map), for dense and CG.
    for solver in ["dense", "cg"]:
        ng = natural_gradient(1.0, lambda p: F5, 0.1, solver=solver, cg_max_steps=30)
        jac = jax.jit(jax.jacobian(lambda g: one_update(ng, g, G5)[0]))(G5)
        np.testing.assert_allclose(jac, -jnp.linalg.inv(F5 + 0.1 * jnp.eye(5)), **TOL)
    # grad through exponentiated gradient: d p_+ / d g of softmax(log p - lr g).
    p = jnp.array([0.5, 0.3, 0.2])
    eg_jac = jax.jit(jax.jacobian(lambda g: _eg_step(p, g, 0.3)))(jnp.zeros(3))
    np.testing.assert_allclose(eg_jac, -0.3 * (jnp.diag(p) - jnp.outer(p, p)), **TOL)


# ---------------------------------------------------------------------------------------------
# The CG loop: scale invariance in float32, warm-start safeguard, operator checks
# ---------------------------------------------------------------------------------------------
def test_cg_float32_is_scale_invariant_and_finite():
    # A mean-loss Fisher is small: eigenvalues 1e-6..1e-3 here. lineax.CG's absolute breakdown
    # test (|p^T A p| > 100 * 2 eps n |r|^2) returns NaN on it in float32; CG itself is invariant
    # to scaling A by a power of two (every scalar is a ratio of inner products), bit for bit.
    n = 200
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(8), (n, n)))
    a = ((q * jnp.logspace(-3.0, 0.0, n)) @ q.T).astype(jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(9), (n,), jnp.float32)
    scale = 2.0**-10

    @jax.jit
    def solve(matrix):
        block = scale_by_natural_gradient(lambda p: matrix, 0.0, cg_max_steps=60, cg_rtol=0.0)
        return one_update(block, b, b)[0]

    x_unit, x_small = solve(a), solve(scale * a)
    assert x_small.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x_small)))
    np.testing.assert_allclose(x_small * scale, x_unit, rtol=1e-6, atol=1e-6)
    # CG error bound (Nocedal & Wright, Numerical Optimization, 2nd ed., Eq. (5.36)):
    # |x_k - x*|_A <= 2 ((sqrt(k) - 1) / (sqrt(k) + 1))^k |x*|_A, condition number k = 1e3.
    a64 = a.astype(jnp.float64)
    exact = jnp.linalg.solve(a64, b.astype(jnp.float64))
    a_norm = lambda v: jnp.sqrt(v @ a64 @ v)
    rate = (jnp.sqrt(1e3) - 1) / (jnp.sqrt(1e3) + 1)
    assert float(a_norm(x_unit - exact)) <= float(2 * rate**60 * a_norm(exact))
    lineax_x = jax.jit(
        lambda m: (
            lx.linear_solve(
                lx.MatrixLinearOperator(m, lx.positive_semidefinite_tag),
                b,
                lx.CG(rtol=0.0, atol=0.0, max_steps=60),
                throw=False,
            ).value
        )
    )(scale * a)
    if bool(jnp.all(jnp.isfinite(lineax_x))):  # documents why we do not use lineax.CG
        pytest.skip("lineax.CG no longer breaks down here; consider using it")


def test_warm_start_safeguard_rejects_bad_start():
    # A warm start worse than zero on q(x) = x^T A x / 2 - b^T x is dropped: the 1-step result is
    # the cold 1-step (Cauchy) iterate (r^T r / r^T A r) r, a descent direction.
    block = scale_by_natural_gradient(lambda p: F5, 0.0, cg_max_steps=1, cg_rtol=0.0)
    exact = jnp.linalg.solve(F5, G5)
    bad = ScaleByNaturalGradientState(solution=-3.0 * exact)
    d, state = block.update(G5, bad, G5)
    cauchy = (G5 @ G5) / (G5 @ F5 @ G5) * G5
    np.testing.assert_allclose(d, cauchy, **TOL)
    np.testing.assert_allclose(state.solution, cauchy, **TOL)
    good = ScaleByNaturalGradientState(solution=0.9 * exact)
    d_good, _ = block.update(G5, good, G5)
    assert float(jnp.linalg.norm(d_good - exact)) < float(jnp.linalg.norm(0.9 * exact - exact))


def test_operator_on_wrong_structure_raises():
    op = lx.MatrixLinearOperator(jnp.eye(3))
    with pytest.raises(ValueError, match="must act on the params pytree"):
        one_update(scale_by_natural_gradient(lambda p: op), jnp.ones(2), jnp.ones(2))


# ---------------------------------------------------------------------------------------------
# bfloat16 / float16 params: factorizations and CG in float32 inside, results cast back
# ---------------------------------------------------------------------------------------------
LOW = [jnp.bfloat16, jnp.float16]
_LP_X = jax.random.normal(jax.random.key(3), (12, 3))
_LP_Y = jnp.sin(_LP_X[:, :2])
_LP_W = {
    "a": jax.random.normal(jax.random.key(4), (3, 4)),
    "b": jax.random.normal(jax.random.key(5), (4, 2)),
}


def _lp_apply(w, x):
    return jnp.tanh(x @ w["a"]) @ w["b"]


def _lp_loss(w, x):
    dtype = w["a"].dtype
    return 0.5 * jnp.mean(jnp.sum((_lp_apply(w, x) - _LP_Y.astype(dtype)) ** 2, -1))


def _low_precision_agrees(low, reference, dtype):
    # Agreement at the accuracy of the low-precision dtype: a few units of its epsilon times
    # the condition of the (damped) problem, relative to the size of the result.
    eps = float(jnp.finfo(dtype).eps)
    for lo, ref in zip(jax.tree.leaves(low), jax.tree.leaves(reference)):
        assert lo.dtype == dtype
        scale = float(jnp.max(jnp.abs(ref)))
        np.testing.assert_allclose(np.asarray(lo, np.float64), ref, rtol=0, atol=40 * eps * scale)


@pytest.mark.parametrize("solver", ["dense", "cg"])
@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_natural_gradient_low_precision(dtype, solver):
    opt = natural_gradient(0.5, predictive_fisher(_lp_apply, "gaussian"), 0.1, solver=solver)

    @jax.jit
    def train(w, x):
        state = opt.init(w)
        losses = [_lp_loss(w, x)]
        first = None
        for _ in range(3):
            updates, state = opt.update(jax.grad(_lp_loss)(w, x), state, w, batch=x)
            first = updates if first is None else first
            w = optax.apply_updates(w, updates)
            losses.append(_lp_loss(w, x))
        return jnp.stack([loss.astype(jnp.float32) for loss in losses]), first, state

    w_low = jax.tree.map(lambda a: a.astype(dtype), _LP_W)
    losses, first, state = train(w_low, _LP_X.astype(dtype))
    assert bool(jnp.all(jnp.diff(losses) < 0)) and float(losses[-1]) < 0.5 * float(losses[0])
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype == dtype
    # The same first update in float64 from the same (rounded) params and data.
    w64 = jax.tree.map(lambda a: a.astype(jnp.float64), w_low)
    x64 = _LP_X.astype(dtype).astype(jnp.float64)
    ref, _ = one_update(opt, jax.grad(_lp_loss)(w64, x64), w64, batch=x64)
    _low_precision_agrees(first, ref, dtype)


@pytest.mark.parametrize("dtype", LOW, ids=lambda d: jnp.dtype(d).name)
def test_matrix_fisher_mirror_descent_and_eg_low_precision(dtype):
    g5 = jax.random.normal(jax.random.key(6), (5,))
    f5 = spd_matrix(jax.random.key(7), 5)
    ng = natural_gradient(1.0, lambda p: f5.astype(dtype), 0.0, solver="dense")
    u, _ = one_update(ng, g5.astype(dtype), jnp.zeros(5, dtype))
    f_low = f5.astype(dtype).astype(jnp.float64)
    _low_precision_agrees(u, -jnp.linalg.solve(f_low, g5.astype(dtype).astype(jnp.float64)), dtype)
    # Mirror descent with a Newton inverse: the potential sum(exp(x)) (Poisson log-partitions),
    # whose mirror step has the closed form x_+ = log(exp(x) - lr g).
    x = jnp.array([0.1, -0.3, 0.4], dtype)
    g = jnp.array([0.2, -0.5, 0.3], dtype)
    md = mirror_descent(0.5, lambda t: jnp.sum(jnp.exp(t)))
    u, state = one_update(md, g, x)
    x64, g64 = x.astype(jnp.float64), g.astype(jnp.float64)
    _low_precision_agrees(u, jnp.log(jnp.exp(x64) - 0.5 * g64) - x64, dtype)
    assert state[0].count.dtype == jnp.int32
    # Exponentiated gradient: Kivinen & Warmuth (1997), Eq. (3.2), p_+ = softmax(log p - lr g).
    p = jnp.array([0.25, 0.25, 0.5], dtype)
    u, _ = one_update(exponentiated_gradient(0.7), g, p)
    p64 = p.astype(jnp.float64)
    _low_precision_agrees(u, jax.nn.softmax(jnp.log(p64) - 0.7 * g64) - p64, dtype)
