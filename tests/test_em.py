"""EM for mixtures of exponential families: scikit-learn agreement, monotonicity, fixed points."""

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings, strategies as st
from sklearn.mixture import GaussianMixture

import infogeo_jax as ig
from infogeo_jax.families import Categorical, MultivariateNormal, Normal, Poisson

TOL = dict(rtol=1e-10, atol=1e-10)


def _gaussian_data(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal([0.0, 0.0], 1.0, (60, 2)),
            rng.normal([3.0, 2.0], 0.7, (50, 2)),
            rng.normal([-2.0, 3.0], [0.5, 1.2], (40, 2)),
        ]
    )


def _normal_a(t1, t2):
    return -(t1**2) / (4.0 * t2) - 0.5 * jnp.log(-2.0 * t2)


# Product of two independent normals: the family of diagonal-covariance Gaussians, written from
# its log-partition alone (generic ExponentialFamily, Newton inverse of grad A).
DIAG = ig.ExponentialFamily(
    lambda th: _normal_a(th[0], th[1]) + _normal_a(th[2], th[3]),
    sufficient_statistic=lambda x: jnp.stack([x[0], x[0] ** 2, x[1], x[1] ** 2]),
    log_base_measure=lambda x: -jnp.log(2.0 * jnp.pi),
    in_domain=lambda th: (th[1] < 0) & (th[3] < 0),
    dim=4,
)


def _diag_theta(mean, var):
    return jnp.stack([mean[0] / var[0], -0.5 / var[0], mean[1] / var[1], -0.5 / var[1]])


def _diag_usual(theta):
    var = -0.5 / theta[jnp.array([1, 3])]
    return theta[jnp.array([0, 2])] * var, var


def _sklearn_fit(x, covariance_type, weights, means, precisions, num_steps):
    gm = GaussianMixture(
        len(weights),
        covariance_type=covariance_type,
        max_iter=num_steps,
        tol=0.0,
        reg_covar=0.0,
        weights_init=weights,
        means_init=means,
        precisions_init=precisions,
        n_init=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never "converges"
        gm.fit(x)
    assert gm.n_iter_ == num_steps
    return gm


NUM_STEPS = 25


def test_full_covariance_matches_sklearn():
    x = _gaussian_data()
    mvn = MultivariateNormal(2)
    w0 = jnp.array([0.2, 0.3, 0.5])
    means0 = jnp.asarray(x[[3, 70, 120]])  # one observation from each cluster
    covs0 = jnp.stack([jnp.eye(2), 2.0 * jnp.eye(2), jnp.array([[1.0, 0.3], [0.3, 1.0]])])
    th0 = jax.vmap(mvn.from_mean_covariance)(means0, covs0)
    res = ig.em(mvn, x, w0, th0, num_steps=NUM_STEPS)
    gm = _sklearn_fit(
        x,
        "full",
        np.asarray(w0),
        np.asarray(means0),
        np.linalg.inv(np.asarray(covs0)),
        NUM_STEPS,
    )
    means, covs = jax.vmap(mvn.mean_covariance)(res.theta)
    np.testing.assert_allclose(res.weights, gm.weights_, **TOL)
    np.testing.assert_allclose(means, gm.means_, **TOL)
    np.testing.assert_allclose(covs, gm.covariances_, **TOL)
    # sklearn's lower bound is the mean log-likelihood before its last M-step.
    np.testing.assert_allclose(res.mean_log_likelihood[-2], gm.lower_bound_, **TOL)
    np.testing.assert_allclose(res.mean_log_likelihood[-1], gm.score(x), **TOL)
    assert res.result == ig.RESULTS.successful and int(res.num_steps) == NUM_STEPS


def test_diagonal_covariance_matches_sklearn():
    x = _gaussian_data(1)
    means0 = np.array([[0.5, 0.5], [2.0, 2.5], [-1.0, 2.0]])
    vars0 = np.array([[1.0, 1.5], [0.8, 0.6], [0.7, 2.0]])
    w0 = np.array([0.3, 0.3, 0.4])
    th0 = jax.vmap(_diag_theta)(jnp.asarray(means0), jnp.asarray(vars0))
    res = ig.em(DIAG, x, w0, th0, num_steps=NUM_STEPS)
    gm = _sklearn_fit(x, "diag", w0, means0, 1.0 / vars0, NUM_STEPS)
    means, variances = jax.vmap(_diag_usual)(res.theta)
    np.testing.assert_allclose(res.weights, gm.weights_, **TOL)
    np.testing.assert_allclose(means, gm.means_, **TOL)
    np.testing.assert_allclose(variances, gm.covariances_, **TOL)
    np.testing.assert_allclose(res.mean_log_likelihood[-1], gm.score(x), **TOL)


@pytest.mark.slow
def test_univariate_normal_matches_sklearn():
    x = _gaussian_data(2)[:, 0]
    w0 = np.array([0.5, 0.5])
    th0 = jnp.stack(
        [Normal().from_usual(jnp.array([-1.0, 1.0])), Normal().from_usual(jnp.array([2.0, 1.0]))]
    )
    res = ig.em(Normal(), x, w0, th0, num_steps=NUM_STEPS)
    gm = _sklearn_fit(
        x[:, None], "full", w0, np.array([[-1.0], [2.0]]), np.ones((2, 1, 1)), NUM_STEPS
    )
    mean, std = jax.vmap(Normal().to_usual)(res.theta).T
    np.testing.assert_allclose(res.weights, gm.weights_, **TOL)
    np.testing.assert_allclose(mean, gm.means_[:, 0], **TOL)
    np.testing.assert_allclose(std**2, gm.covariances_[:, 0, 0], **TOL)


# ------------------------------------------------------------------------ monotonicity
NUM_RESTARTS = 4


@functools.partial(jax.jit, static_argnums=0)
def _restarts(family, x, key):
    keys = jax.random.split(key, NUM_RESTARTS)
    w0, th0 = jax.vmap(lambda k: ig.init_mixture(family, x, 3, k))(keys)
    return jax.vmap(functools.partial(ig.em, family, x, num_steps=30))(w0, th0)


def _assert_monotone(trace, strict=True):
    trace = np.asarray(trace)
    increments = np.diff(trace, axis=-1)
    assert np.all(increments >= -1e-12 * np.abs(trace[..., 1:])), increments.min()
    if strict:
        assert np.all(trace[..., -1] > trace[..., 0])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_log_likelihood_never_decreases_normal(seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 3.0, 3)
    x = jnp.asarray(rng.normal(centers[rng.integers(0, 3, 120)], rng.uniform(0.3, 2.0)))
    fits = _restarts(Normal(), x, jax.random.key(seed))
    _assert_monotone(fits.mean_log_likelihood)
    assert bool(jnp.all(fits.successful))


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_log_likelihood_never_decreases_poisson_and_categorical(seed):
    rng = np.random.default_rng(seed)
    counts = jnp.asarray(rng.poisson(rng.uniform(0.5, 15.0, 3)[rng.integers(0, 3, 120)]), float)
    _assert_monotone(_restarts(Poisson(), counts, jax.random.key(seed)).mean_log_likelihood)
    # init_mixture already lands a one-variable categorical mixture on its MLE (see below).
    labels = jnp.asarray(rng.integers(0, 5, 120))
    fits = _restarts(Categorical(5), labels, jax.random.key(seed))
    _assert_monotone(fits.mean_log_likelihood, strict=False)


@pytest.mark.slow
def test_restarts_under_vmap_equal_single_runs():
    x = jnp.asarray(_gaussian_data(3)[:, 1])
    fits = _restarts(Normal(), x, jax.random.key(7))
    keys = jax.random.split(jax.random.key(7), NUM_RESTARTS)
    for i in range(NUM_RESTARTS):
        w0, th0 = ig.init_mixture(Normal(), x, 3, keys[i])
        single = ig.em(Normal(), x, w0, th0, num_steps=30)
        np.testing.assert_allclose(fits.theta[i], single.theta, **TOL)
        np.testing.assert_allclose(fits.mean_log_likelihood[i], single.mean_log_likelihood, **TOL)


# ------------------------------------------------------------------------ fixed points
def test_categorical_mixture_reaches_the_saturated_mle_in_one_step():
    # A mixture of categoricals on one variable is again a categorical: after one M-step its
    # marginal equals the empirical frequencies f, the MLE, with log-likelihood sum f log f.
    labels = jnp.asarray(np.random.default_rng(5).integers(0, 4, 200))
    cat = Categorical(4)
    w0 = jnp.array([0.5, 0.3, 0.2])
    th0 = jnp.asarray(np.random.default_rng(8).normal(size=(3, 3)))
    res = ig.em(cat, labels, w0, th0, num_steps=3)
    freq = np.bincount(np.asarray(labels), minlength=4) / 200
    marginal = res.weights @ jax.vmap(cat.probabilities)(res.theta)
    np.testing.assert_allclose(marginal, freq, **TOL)
    np.testing.assert_allclose(res.mean_log_likelihood[1:], freq @ np.log(freq), **TOL)


def _numpy_poisson_em(x, weights, rates, num_steps):
    """Textbook EM for a Poisson mixture (Bishop 2006, Sec. 9.3 specialized), in numpy."""
    for _ in range(num_steps):
        log_r = np.log(weights) + scipy.stats.poisson.logpmf(x[:, None], rates[None, :])
        r = np.exp(log_r - scipy.special.logsumexp(log_r, axis=1, keepdims=True))
        weights = r.mean(0)
        rates = (r * x[:, None]).sum(0) / r.sum(0)
    return weights, rates


def test_poisson_mixture_matches_numpy_em_and_is_stationary():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.poisson(2.0, 80), rng.poisson(9.0, 70)]).astype(float)
    w0, rates0 = np.array([0.5, 0.5]), np.array([1.0, 5.0])
    res = ig.em(Poisson(), x, w0, jnp.log(rates0)[:, None], num_steps=200)
    weights, rates = _numpy_poisson_em(x, w0, rates0, 200)
    np.testing.assert_allclose(res.weights, weights, **TOL)
    np.testing.assert_allclose(jnp.exp(res.theta[:, 0]), rates, **TOL)

    # Fixed point: the log-likelihood gradient (softmax weights, natural parameters) vanishes.
    def mean_ll(logits, theta):
        mix = ig.Mixture(Poisson(), jax.nn.softmax(logits), theta)
        return mix.mean_log_likelihood(x)

    grads = jax.grad(mean_ll, argnums=(0, 1))(jnp.log(res.weights), res.theta)
    for g in grads:
        np.testing.assert_allclose(g, 0.0, atol=1e-10)


def test_sample_weights_equal_duplicated_data():
    x = jnp.asarray(_gaussian_data(4)[:40, 0])
    counts = jnp.asarray(np.random.default_rng(7).integers(1, 4, 40))
    w0 = jnp.array([0.5, 0.5])
    th0 = jnp.stack(
        [Normal().from_usual(jnp.array([-1.0, 1.0])), Normal().from_usual(jnp.array([1.0, 1.0]))]
    )
    weighted = ig.em(Normal(), x, w0, th0, num_steps=10, sample_weights=counts)
    duplicated = ig.em(Normal(), jnp.repeat(x, counts), w0, th0, num_steps=10)
    np.testing.assert_allclose(weighted.theta, duplicated.theta, **TOL)
    np.testing.assert_allclose(weighted.mean_log_likelihood, duplicated.mean_log_likelihood, **TOL)


def test_grad_through_em_obeys_the_envelope_theorem():
    # At a maximum, d/dx max_theta l(theta; x) = dl/dx at the fixed theta* (envelope theorem):
    # differentiating through the unrolled EM iterations must give the partial derivative.
    x = jnp.asarray(_gaussian_data(5)[:, 0])
    w0 = jnp.array([0.5, 0.5])
    th0 = jnp.stack(
        [Normal().from_usual(jnp.array([-1.0, 1.0])), Normal().from_usual(jnp.array([2.0, 1.0]))]
    )

    def final_ll(data):
        return ig.em(Normal(), data, w0, th0, num_steps=300).mean_log_likelihood[-1]

    res = ig.em(Normal(), x, w0, th0, num_steps=300)
    through = jax.grad(final_ll)(x)
    partial = jax.grad(lambda data: res.mixture.mean_log_likelihood(data))(x)
    np.testing.assert_allclose(through, partial, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------ Mixture helper
def test_mixture_log_prob_responsibilities_and_sampling():
    theta = jnp.stack(
        [Normal().from_usual(jnp.array([-2.0, 0.5])), Normal().from_usual(jnp.array([1.0, 1.5]))]
    )
    mix = ig.Mixture(Normal(), jnp.array([0.3, 0.7]), theta)
    x = jnp.linspace(-4.0, 4.0, 9)
    expected = 0.3 * scipy.stats.norm.pdf(x, -2.0, 0.5) + 0.7 * scipy.stats.norm.pdf(x, 1.0, 1.5)
    np.testing.assert_allclose(jnp.exp(jax.vmap(mix.log_prob)(x)), expected, **TOL)
    resp = jax.vmap(mix.responsibilities)(x)
    np.testing.assert_allclose(
        resp[:, 0], 0.3 * scipy.stats.norm.pdf(x, -2.0, 0.5) / expected, **TOL
    )
    samples, labels = mix.sample(jax.random.key(0), (4000,))
    # Monte Carlo: the label frequency has standard error sqrt(0.21 / 4000) ~ 0.0072; the mean
    # of the ~1200 draws of component 0 has standard error 0.5 / sqrt(1200) ~ 0.0144.
    assert abs(float(jnp.mean(labels == 0)) - 0.3) < 5 * 0.0073
    assert abs(float(jnp.mean(samples[labels == 0])) + 2.0) < 5 * 0.0145
    assert mix.num_components == 2


def test_early_stopping_with_tol():
    x = jnp.asarray(_gaussian_data(6)[:, 0])
    w0 = jnp.array([0.5, 0.5])
    th0 = jnp.stack(
        [Normal().from_usual(jnp.array([-1.0, 1.0])), Normal().from_usual(jnp.array([2.0, 1.0]))]
    )
    res = ig.em(Normal(), x, w0, th0, num_steps=500, tol=1e-9)
    steps = int(res.num_steps)
    assert 1 < steps < 500 and bool(res.successful)
    trace = np.asarray(res.mean_log_likelihood)
    assert np.all(trace[steps:] == trace[steps])  # frozen after convergence
    res = ig.em(Normal(), x, w0, th0, num_steps=3, tol=1e-12, throw=False)
    assert res.result == ig.RESULTS.max_steps_reached


@pytest.mark.slow
def test_float32_smoke():
    x = jnp.asarray(_gaussian_data(7), jnp.float32)
    mvn = MultivariateNormal(2)
    w0, th0 = ig.init_mixture(mvn, x, 3, jax.random.key(0))
    assert th0.dtype == jnp.float32
    res = ig.em(mvn, x, w0, th0, num_steps=10)
    assert res.theta.dtype == jnp.float32 and res.mean_log_likelihood.dtype == jnp.float32
    assert np.all(np.diff(np.asarray(res.mean_log_likelihood)) >= -1e-5)


# ------------------------------------------------------------------------ errors
def test_degenerate_component_is_reported():
    x = jnp.array([0.0, 0.0, 0.0, 5.0, 6.0, 7.0])
    th0 = jnp.stack(
        [Normal().from_usual(jnp.array([0.0, 0.1])), Normal().from_usual(jnp.array([6.0, 1.0]))]
    )
    w0 = jnp.array([0.5, 0.5])
    with pytest.raises(eqx.EquinoxRuntimeError, match="collapsed"):
        ig.em(Normal(), x, w0, th0, num_steps=5)
    res = ig.em(Normal(), x, w0, th0, num_steps=5, throw=False)
    assert res.result == ig.RESULTS.degenerate
    assert bool(jnp.all(jnp.isfinite(res.theta)))


def test_bad_inputs_raise():
    th0 = jnp.stack(
        [Normal().from_usual(jnp.array([0.0, 1.0])), Normal().from_usual(jnp.array([1.0, 1.0]))]
    )
    x = jnp.linspace(-1.0, 1.0, 10)
    with pytest.raises(ValueError, match="num_components, dim"):
        ig.em(Normal(), x, jnp.array([0.5, 0.5]), th0[0], num_steps=2)
    with pytest.raises(ValueError, match="2 columns"):
        ig.em(Normal(), x, jnp.array([0.5, 0.5]), jnp.zeros((2, 3)), num_steps=2)
    with pytest.raises(ValueError, match="num_steps"):
        ig.em(Normal(), x, jnp.array([0.5, 0.5]), th0, num_steps=0)
    with pytest.raises(TypeError, match="exponential family"):
        ig.em("normal", x, jnp.array([0.5, 0.5]), th0)  # type: ignore[arg-type]
    with pytest.raises(eqx.EquinoxRuntimeError, match="sum to one"):
        ig.em(Normal(), x, jnp.array([0.5, 0.6]), th0, num_steps=2)
    with pytest.raises(eqx.EquinoxRuntimeError, match="natural domain"):
        ig.Mixture(Normal(), jnp.array([0.5, 0.5]), jnp.array([[0.0, 1.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="at least 3 observations"):
        ig.init_mixture(Normal(), x[:2], 3, jax.random.key(0))
