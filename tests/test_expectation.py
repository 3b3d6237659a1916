"""Tests of the expectation rules (FiniteSupport, Quadrature, TensorProduct, MonteCarlo).

Each rule is checked on integrals with published closed forms (moments, normalizing constants,
tail probabilities), by a second route where one exists (scipy), for convergence in the node
count, for unbiasedness of Monte Carlo values and derivatives (tolerances from the standard
error), and for its error reporting.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps
from hypothesis import given, settings, strategies as st
from scipy import stats

from infogeo_jax import (
    AbstractExpectation,
    AbstractQuadratureRule,
    FiniteSupport,
    MonteCarlo,
    Quadrature,
    StatisticalModel,
    TensorProduct,
)

INF = math.inf


# ---------------------------------------------------------------- module-level densities
def normal_ld(theta, x):  # theta = (mu, sigma)
    z = (x - theta[0]) / theta[1]
    return -0.5 * z**2 - jnp.log(theta[1]) - 0.5 * jnp.log(2 * jnp.pi)


def cauchy_ld(theta, x):  # theta = (mu, gamma)
    z = (x - theta[0]) / theta[1]
    return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)


def beta_ld(theta, x):  # theta = (a, b)
    a, b = theta[0], theta[1]
    return (
        (a - 1) * jnp.log(x)
        + (b - 1) * jnp.log1p(-x)
        - (jax.scipy.special.gammaln(a) + jax.scipy.special.gammaln(b))
        + jax.scipy.special.gammaln(a + b)
    )


def gamma_ld(theta, x):  # theta = (shape k, rate beta)
    k, rate = theta[0], theta[1]
    return k * jnp.log(rate) - jax.scipy.special.gammaln(k) + (k - 1) * jnp.log(x) - rate * x


def reflected_exp_ld(theta, x):  # x <= 2: 2 - x ~ Exponential(rate theta[0])
    return jnp.log(theta[0]) - theta[0] * (2.0 - x)


def uniform_ld(theta, x):  # uniform on (2, 5), theta unused except for its dtype
    return jnp.zeros((), theta.dtype) - jnp.log(3.0) + 0.0 * theta[0]


def poisson_ld(theta, x):  # theta = (log rate,)
    return x * theta[0] - jnp.exp(theta[0]) - jax.scipy.special.gammaln(x + 1.0)


def bivariate_ld(theta, x):  # independent N(theta0, 1) x N(theta1, 2^2)
    return normal_ld(jnp.stack([theta[0], 1.0]), x[0]) + normal_ld(jnp.stack([theta[1], 2.0]), x[1])


def normal_center(theta):
    return theta[0], theta[1]


def normal_sampler(theta, key, n):
    return theta[0] + theta[1] * jax.random.normal(key, (n,), dtype=theta.dtype)


@eqx.filter_jit
def expect_jit(rule, fn, theta, log_density):
    """rule.expect under jit (eager op-by-op dispatch of the vmapped nodes is slow)."""
    fn = FNS[fn] if isinstance(fn, str) else fn
    return rule.expect(fn, theta, log_density)


@eqx.filter_jit
def mass_jit(rule, theta, log_density):
    return rule.total_mass(theta, log_density)


FNS = {
    "one": lambda x: jnp.ones(()),
    "x": lambda x: x,
    "x2": lambda x: x**2,
    "logx": lambda x: jnp.log(x),
    "moments": lambda x: (x, x**2, x**3),
}


# ---------------------------------------------------------------- Quadrature: integrals
def test_quadrature_real_line_moments_normal_and_cauchy():
    # Normal moments E[x] = mu, E[x^2] = mu^2 + sigma^2, E[x^3] = mu^3 + 3 mu sigma^2.
    rule = Quadrature(-INF, INF, 192, center=normal_center)
    mu, sigma = 0.7, 1.9
    theta = jnp.array([mu, sigma])
    m1, m2, m3 = expect_jit(rule, "moments", theta, normal_ld)
    np.testing.assert_allclose(m1, mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2, mu**2 + sigma**2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m3, mu**3 + 3 * mu * sigma**2, rtol=1e-12, atol=1e-12)
    # Cauchy: the mass, and E[log(1 + z^2)] = 2 log 2 with z = (x - mu) / gamma (a heavy-tailed,
    # log-growing integrand; e.g. Chyzak & Nielsen, arXiv:1905.10965, the Cauchy entropy).
    rule = Quadrature(-INF, INF, 96, center=normal_center)
    theta = jnp.array([-0.4, 2.5])
    mass = mass_jit(rule, theta, cauchy_ld)
    log_abs = expect_jit(rule, lambda x: jnp.log1p(((x + 0.4) / 2.5) ** 2), theta, cauchy_ld)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(log_abs, 2 * math.log(2.0), rtol=1e-12, atol=1e-12)


def test_quadrature_endpoint_singularities_beta():
    # Beta(0.5, 0.7): E[x] = a / (a + b); E[log x] = psi(a) - psi(a + b) (log-singular at 0).
    a, b = 0.5, 0.7
    rule = Quadrature(0.0, 1.0, 128)
    theta = jnp.array([a, b])
    np.testing.assert_allclose(mass_jit(rule, theta, beta_ld), 1.0, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        expect_jit(rule, "x", theta, beta_ld), a / (a + b), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(
        expect_jit(rule, "logx", theta, beta_ld),
        sps.digamma(a) - sps.digamma(a + b),
        rtol=1e-10,
        atol=1e-10,
    )


def test_quadrature_half_lines_and_shifted_interval():
    # Gamma(k=0.6, rate 1.7) on [0, inf): singular at 0; E[x] = k / rate,
    # E[log x] = psi(k) - log(rate). Centered and uncentered.
    theta = jnp.array([0.6, 1.7])
    x_and_log = lambda x: (x, jnp.log(x))
    for center in (None, lambda th: (th[0] / th[1], jnp.sqrt(th[0]) / th[1])):
        rule = Quadrature(0.0, INF, 160, center=center)
        mean, mean_log = expect_jit(rule, x_and_log, theta, gamma_ld)
        np.testing.assert_allclose(mean, 0.6 / 1.7, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            mean_log, sps.digamma(0.6) - math.log(1.7), rtol=1e-11, atol=1e-11
        )
    # (-inf, 2]: 2 - x ~ Exponential(3); E[x] = 2 - 1/3, E[x^2] = (2 - 1/3)^2 + 1/9.
    m1, m2, _ = expect_jit(
        Quadrature(-INF, 2.0, 160), "moments", jnp.array([3.0]), reflected_exp_ld
    )
    np.testing.assert_allclose(m1, 2 - 1 / 3, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m2, (2 - 1 / 3) ** 2 + 1 / 9, rtol=1e-12, atol=1e-12)
    # Interval (2, 5) not starting at 0: uniform moments (a + b) / 2 and (a^2 + ab + b^2) / 3.
    m1, m2, _ = expect_jit(Quadrature(2.0, 5.0, 64), "moments", jnp.array([0.0]), uniform_ld)
    np.testing.assert_allclose(m1, 3.5, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(m2, 13.0, rtol=1e-13, atol=1e-13)


def test_quadrature_converges_exponentially_in_num_nodes():
    # Student-t (nu = 3) second moment nu / (nu - 2) = 3: a heavy tail x^-4 weighted by x^2.
    nu = 3.0

    def student(theta, x):
        return (
            sps.gammaln((nu + 1) / 2)
            - sps.gammaln(nu / 2)
            - 0.5 * math.log(nu * math.pi)
            - (nu + 1) / 2 * jnp.log1p((x - theta[0]) ** 2 / nu)
        )

    theta = jnp.array([0.0])
    errors = [
        abs(
            float(
                expect_jit(
                    Quadrature(-INF, INF, n, normalization_tolerance=INF), "x2", theta, student
                )
            )
            - 3.0
        )
        for n in (16, 32, 64)
    ]
    assert errors[0] > 1e-4  # not converged with 16 nodes (so the test can fail) ...
    assert errors[1] < 1e-3 * errors[0]  # ... and each doubling gains orders of magnitude
    assert errors[2] < 1e-12


def test_quadrature_center_moves_nodes_and_derivatives_are_exact():
    # d/dmu E[x^2] = 2 mu and d/dsigma E[x^2] = 2 sigma: the moving nodes are differentiated.
    rule = Quadrature(-INF, INF, 192, center=normal_center)
    theta = jnp.array([0.3, 1.4])
    second = lambda th: rule.expect(FNS["x2"], th, normal_ld)
    grad, hess = jax.jit(lambda th: (jax.grad(second)(th), jax.hessian(second)(th)))(theta)
    np.testing.assert_allclose(grad, 2 * theta, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(hess, 2 * np.eye(2), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- FiniteSupport
def test_finite_support_exact_sums_and_truncation_error():
    # Truncated Poisson(3.7) on 0..K: one minus the mass is exactly the tail P(X > K).
    rate, k = 3.7, 14
    theta = jnp.array([math.log(rate)])
    tail = stats.poisson.sf(k, rate)  # about 3e-5: the stated truncation error
    rule = FiniteSupport(jnp.arange(k + 1.0), normalization_tolerance=1.1 * tail)
    mass = rule.total_mass(theta, poisson_ld)
    np.testing.assert_allclose(1.0 - mass, tail, rtol=1e-9, atol=1e-16)
    # the truncated mean misses exactly E[X; X > K] = rate * P(X > K - 1)
    mean = expect_jit(rule, lambda x: x, theta, poisson_ld)
    np.testing.assert_allclose(
        rate - mean, rate * stats.poisson.sf(k - 1, rate), rtol=1e-9, atol=1e-15
    )
    # the same rule with the default tolerance refuses the truncated support
    strict = FiniteSupport(jnp.arange(k + 1.0))
    with pytest.raises(Exception, match="does not normalize"):
        strict.expect(lambda x: x, theta, poisson_ld)


def test_finite_support_integer_points_used_as_indices():
    probs = jnp.array([0.1, 0.2, 0.3, 0.4])

    def categorical(theta, x):
        return jax.nn.log_softmax(jnp.append(theta, 0.0))[x]

    theta = jnp.log(probs[:3] / probs[3])
    rule = FiniteSupport(jnp.arange(4))
    assert rule.points.dtype.kind == "i"
    np.testing.assert_allclose(
        expect_jit(rule, lambda x: x * 1.0, theta, categorical),
        probs @ jnp.arange(4.0),
        rtol=1e-14,
        atol=1e-14,
    )


# ---------------------------------------------------------------- TensorProduct
def test_tensor_product_independent_coordinates():
    # Independent N(0.5, 1) x N(-1, 4): E[x0 x1] = -0.5, E[x1^2] = 5.
    center0 = lambda th: (th[0], 1.0)
    center1 = lambda th: (th[1], 2.0)
    rule = TensorProduct([Quadrature(-INF, INF, 160, center0), Quadrature(-INF, INF, 160, center1)])
    theta = jnp.array([0.5, -1.0])
    x, log_c, valid = rule.nodes(theta)
    assert x.shape == (160 * 160, 2) and log_c.shape == (160 * 160,) and valid.dtype == bool
    e01, e11 = expect_jit(rule, lambda x: (x[0] * x[1], x[1] ** 2), theta, bivariate_ld)
    np.testing.assert_allclose(e01, -0.5, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(e11, 5.0, rtol=1e-12, atol=1e-12)

    # A finite factor times a continuous one: x = (bit, y), y | bit ~ N(bit, 1).
    def mixed(theta, x):
        return (
            x[0] * theta[0] - jnp.logaddexp(0.0, theta[0]) + normal_ld(jnp.stack([x[0], 1.0]), x[1])
        )

    rule = TensorProduct([FiniteSupport(jnp.array([0, 1])), Quadrature(-INF, INF, 192)])
    p = jax.nn.sigmoid(0.3)
    np.testing.assert_allclose(
        expect_jit(rule, lambda x: x[1] ** 2, jnp.array([0.3]), mixed),
        1.0 + p,
        rtol=1e-12,
        atol=1e-12,
    )


# ---------------------------------------------------------------- MonteCarlo
MC_RULE = MonteCarlo(normal_sampler, 4000, jax.random.key(0))


@eqx.filter_jit
def _mc_value_and_grad(key, theta):
    rule = MonteCarlo(normal_sampler, 4000, key)
    f = lambda th: rule.expect(lambda x: x**2, th, normal_ld)
    return jax.value_and_grad(f)(theta)


def test_monte_carlo_value_and_derivative_are_unbiased():
    # E[x^2] = mu^2 + sigma^2 with gradient (2 mu, 2 sigma). Averaged over 64 independent keys
    # the estimates must agree with the truth within 5 standard errors of that average.
    theta = jnp.array([0.6, 1.3])
    keys = jax.random.split(jax.random.key(1), 64)
    values, grads = jax.vmap(_mc_value_and_grad, in_axes=(0, None))(keys, theta)
    for est, truth in [(values, 0.6**2 + 1.3**2), (grads, 2 * np.asarray(theta))]:
        se = np.std(est, axis=0, ddof=1) / math.sqrt(est.shape[0])
        assert np.all(np.abs(np.mean(est, axis=0) - truth) < 5 * se + 1e-12)
        assert np.all(se < 0.05 * np.abs(truth))  # the check is informative


def test_monte_carlo_holds_its_key_and_reports_standard_error():
    theta = jnp.array([0.0, 1.0])
    a = MC_RULE.expect(lambda x: x, theta, normal_ld)
    b = MC_RULE.expect(lambda x: x, theta, normal_ld)
    assert a == b  # common random numbers
    samples = MC_RULE.samples(theta)
    np.testing.assert_allclose(a, np.mean(samples), rtol=1e-13, atol=1e-15)
    se = MC_RULE.standard_error(lambda x: x, theta, normal_ld)
    np.testing.assert_allclose(se, np.std(samples, ddof=1) / math.sqrt(4000), rtol=1e-12)
    assert abs(float(a)) < 5 * float(se)


# ---------------------------------------------------------------- properties
@settings(max_examples=15, deadline=None)
@given(
    mu=st.floats(-3.0, 3.0),
    log_sigma=st.floats(-2.0, 2.0),
)
def test_property_quadrature_mass_and_variance(mu, log_sigma):
    sigma = math.exp(log_sigma)
    theta = jnp.array([mu, sigma])
    m1, m2, _ = _normal_moments(theta)
    np.testing.assert_allclose(m1, mu, rtol=1e-11, atol=1e-11 * sigma)
    np.testing.assert_allclose(m2 - m1**2, sigma**2, rtol=1e-11, atol=1e-13)


@jax.jit
def _normal_moments(theta):
    return Quadrature(-INF, INF, 192, center=normal_center).expect(FNS["moments"], theta, normal_ld)


# ---------------------------------------------------------------- transformations, dtypes
def test_jit_vmap_grad_through_rules():
    rule = Quadrature(0.0, 1.0, 96)
    thetas = jnp.array([[2.0, 3.0], [0.5, 0.7], [4.0, 1.5]])
    means = jax.jit(jax.vmap(lambda th: rule.expect(lambda x: x, th, beta_ld)))(thetas)
    np.testing.assert_allclose(means, thetas[:, 0] / thetas.sum(1), rtol=1e-9, atol=1e-9)
    # d/da E[x] = b / (a + b)^2
    g = jax.jit(jax.grad(lambda th: rule.expect(FNS["x"], th, beta_ld)))(jnp.array([2.0, 3.0]))
    np.testing.assert_allclose(g, [3 / 25, -2 / 25], rtol=1e-11, atol=1e-11)
    fs = FiniteSupport(jnp.arange(30.0))
    masses = jax.vmap(lambda th: fs.total_mass(th, poisson_ld))(jnp.log(jnp.array([[1.0], [2.0]])))
    np.testing.assert_allclose(masses, 1.0, rtol=1e-12, atol=1e-12)
    assert isinstance(rule, AbstractQuadratureRule) and isinstance(MC_RULE, AbstractExpectation)


def test_float32_smoke():
    theta = jnp.array([0.3, 1.2], jnp.float32)
    for rule in (
        Quadrature(-INF, INF, 64, center=normal_center),
        MonteCarlo(normal_sampler, 1024, jax.random.key(0)),
    ):
        value = expect_jit(rule, lambda x: x**2, theta, normal_ld)
        assert value.dtype == jnp.float32
        # float32 quadrature (64 nodes, Gaussian tails) to 1e-4; Monte Carlo within 5 standard
        # errors (the sd of x^2 is about 2.3, over sqrt(1024) = 32 samples)
        rtol = 1e-4 if isinstance(rule, Quadrature) else 5 * 2.3 / 32 / 1.53
        np.testing.assert_allclose(value, 0.09 + 1.44, rtol=rtol)
    both = TensorProduct(
        [
            Quadrature(-INF, INF, 64, center=lambda th: (th[0], 1.0)),
            Quadrature(-INF, INF, 64, center=lambda th: (th[1], 2.0)),
        ]
    )
    e01 = expect_jit(both, lambda x: x[0] * x[1], theta, bivariate_ld)
    assert e01.dtype == jnp.float32
    np.testing.assert_allclose(e01, 0.3 * 1.2, rtol=1e-5)
    fs = FiniteSupport(jnp.arange(40.0))  # float64 points follow theta to float32
    mass = mass_jit(fs, jnp.array([1.0], jnp.float32), poisson_ld)
    assert mass.dtype == jnp.float32
    np.testing.assert_allclose(mass, 1.0, rtol=1e-5)
    beta = expect_jit(Quadrature(0.0, 1.0, 64), "x", jnp.array([0.5, 0.7], jnp.float32), beta_ld)
    assert beta.dtype == jnp.float32
    np.testing.assert_allclose(beta, 0.5 / 1.2, rtol=1e-5)


# ---------------------------------------------------------------- bad input
def test_unnormalized_density_reports_its_mass():
    rule = Quadrature(-INF, INF, 33, center=normal_center)
    unnormalized = lambda th, x: cauchy_ld(th, x) + jnp.log(jnp.pi)  # mass pi
    theta = jnp.array([0.0, 1.0])
    with pytest.raises(Exception, match=r"does not normalize.*mass = 3\.14159"):
        rule.expect(lambda x: x, theta, unnormalized)
    with pytest.raises(Exception, match="does not normalize.*total_mass"):
        jax.jit(lambda th: rule.expect(lambda x: x, th, unnormalized))(theta)
    np.testing.assert_allclose(rule.total_mass(theta, unnormalized), math.pi, rtol=1e-12)
    # a rule that misses the mass (nodes far from a narrow density) is caught the same way
    narrow = jnp.array([40.0, 1e-3])
    with pytest.raises(Exception, match="does not normalize"):
        Quadrature(-INF, INF, 33).expect(lambda x: x, narrow, normal_ld)


def test_nan_density_and_nonfinite_integrand_raise():
    rule = Quadrature(-INF, INF, 33, center=normal_center)
    theta = jnp.array([0.0, 1.0])
    nan_density = lambda th, x: normal_ld(th, x) + jnp.log(x + 10.0)  # NaN for x < -10
    with pytest.raises(Exception, match="NaN or \\+inf"):
        rule.expect(lambda x: x, theta, nan_density)
    with pytest.raises(Exception, match="NaN or \\+inf"):
        jax.jit(lambda th: rule.expect(lambda x: x, th, nan_density))(theta)
    # an integrand that is infinite at the node x = mu (33 nodes: one sits on the center)
    with pytest.raises(Exception, match="not finite at a node"):
        expect_jit(rule, lambda x: 1.0 / (x - 0.0), theta, normal_ld)
    mc = MonteCarlo(normal_sampler, 16, jax.random.key(0))
    with pytest.raises(Exception, match="disagree"):
        mc.expect(lambda x: x, theta, lambda th, x: jnp.where(x > 0, 0.0, -jnp.inf))


def test_wrong_shapes_and_arguments_raise():
    theta = jnp.array([0.0, 1.0])
    rule = Quadrature(-INF, INF, 33, center=normal_center)
    with pytest.raises(ValueError, match="must return a scalar"):
        rule.expect(lambda x: x, theta, lambda th, x: jnp.stack([x, x]))
    bad_center = Quadrature(-INF, INF, 33, center=lambda th: (th, 1.0))
    with pytest.raises(ValueError, match="two scalars"):
        bad_center.expect(lambda x: x, theta, normal_ld)
    neg_scale = Quadrature(-INF, INF, 33, center=lambda th: (0.0, -1.0))
    with pytest.raises(Exception, match="scale > 0"):
        neg_scale.expect(lambda x: x, theta, normal_ld)
    with pytest.raises(Exception, match="scale > 0"):
        jax.jit(lambda th: neg_scale.expect(lambda x: x, th, normal_ld))(theta)
    wrong_sampler = MonteCarlo(lambda th, key, n: jnp.zeros((n + 1,)), 8, jax.random.key(0))
    with pytest.raises(ValueError, match="leading axis of length 8"):
        wrong_sampler.expect(lambda x: x, theta, normal_ld)
    with pytest.raises(ValueError, match="lower < upper"):
        Quadrature(1.0, 0.0, 32)
    with pytest.raises(ValueError, match="num_nodes"):
        Quadrature(0.0, 1.0, 2)
    with pytest.raises(ValueError, match="floats"):
        Quadrature("a", 1.0, 8)
    with pytest.raises(TypeError, match="center"):
        Quadrature(0.0, 1.0, 8, center=3.0)
    with pytest.raises(ValueError, match="leading axis"):
        FiniteSupport(jnp.asarray(1.0))
    with pytest.raises(ValueError, match="num_samples"):
        MonteCarlo(normal_sampler, 0, jax.random.key(0))
    with pytest.raises(TypeError, match="sampler"):
        MonteCarlo(3, 10, jax.random.key(0))
    with pytest.raises(TypeError, match="deterministic"):
        TensorProduct([MC_RULE])
    with pytest.raises(ValueError, match="at least one"):
        TensorProduct([])
    # sanity: StatisticalModel wraps the rules (imported here so the test file is standalone)
    assert StatisticalModel(normal_ld, rule).expectation is rule
