"""Tests of StatisticalModel: the geometry of a model given by its log-density alone.

Every quantity is checked against a published closed form (source in a comment) and by a second
route: score outer product vs negative expected Hessian, the model route vs the Hessian-of-A
route of the catalogue families, a model vs the model of its sufficient statistic (Chentsov),
a pulled-back metric vs J^T g J, and Monte Carlo vs quadrature within standard errors.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate as si
import scipy.special as sps
from hypothesis import given, settings, strategies as st

import infogeo_jax.families as fams
from infogeo_jax import (
    ExponentialFamily,
    FiniteSupport,
    MonteCarlo,
    Quadrature,
    StatisticalModel,
    TensorProduct,
)

INF = math.inf


# ---------------------------------------------------------------- models used below
def cauchy_ld(theta, x):  # location mu, scale gamma > 0
    z = (x - theta[0]) / theta[1]
    return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)


def normal_ld(theta, x):  # mean mu, standard deviation sigma > 0
    z = (x - theta[0]) / theta[1]
    return -0.5 * z**2 - jnp.log(theta[1]) - 0.5 * jnp.log(2 * jnp.pi)


def loc_scale(theta):
    return theta[0], theta[1]


def positive_scale(theta):
    return theta[1] > 0


CAUCHY = StatisticalModel(
    cauchy_ld,
    Quadrature(-INF, INF, 64, center=loc_scale),
    dim=2,
    in_domain=positive_scale,
)
NORMAL = StatisticalModel(
    normal_ld, Quadrature(-INF, INF, 192, center=loc_scale), dim=2, in_domain=positive_scale
)


class StudentT(eqx.Module):
    """Location-scale Student t log-density with known degrees of freedom nu (an array leaf)."""

    nu: jax.Array

    def __call__(self, theta, x):
        nu = self.nu
        z = (x - theta[0]) / theta[1]
        return (
            jax.scipy.special.gammaln((nu + 1) / 2)
            - jax.scipy.special.gammaln(nu / 2)
            - 0.5 * jnp.log(nu * jnp.pi)
            - jnp.log(theta[1])
            - (nu + 1) / 2 * jnp.log1p(z**2 / nu)
        )


@eqx.filter_jit
def fisher_and_skewness(model, theta):
    return model.fisher_information(theta), model.skewness_tensor(theta)


@eqx.filter_jit
def family_geometry(family, theta):
    """The Hessian-of-A route (jitted: the families' eager calls are slow to dispatch)."""
    return family.fisher_information(theta), family.skewness_tensor(theta)


@eqx.filter_jit
def cauchy_geometry(theta):
    return (
        CAUCHY.fisher_information(theta),
        CAUCHY.fisher_information(theta, method="hessian"),
        CAUCHY.skewness_tensor(theta),
        CAUCHY.scalar_curvature(theta),
    )


def close(actual, desired, tol):
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol)


# ---------------------------------------------------------------- non-exponential families
@settings(max_examples=10, deadline=None)
@given(mu=st.floats(-5.0, 5.0), log_gamma=st.floats(-2.0, 2.0))
def test_cauchy_fisher_skewness_and_curvature(mu, log_gamma):
    # Fisher metric of the Cauchy location-scale family: (d mu^2 + d gamma^2) / (2 gamma^2), a
    # hyperbolic plane of Gaussian curvature -2 (scalar curvature 2K = -4 in our convention); its
    # skewness tensor vanishes. Nielsen, "On Voronoi diagrams on the information-geometric
    # Cauchy manifolds", Entropy 22 (2020) 713, Sec. 2; the third moments of the scores
    # (sin 2t, -cos 2t) / gamma, t uniform, vanish.
    gamma = math.exp(log_gamma)
    theta = jnp.array([mu, gamma])
    g, g_hessian, t, scalar = cauchy_geometry(theta)
    close(g, np.eye(2) / (2 * gamma**2), 1e-12 / gamma**2)
    close(g_hessian, g, 1e-12 / gamma**2)  # second route: -E[Hessian]
    close(t, np.zeros((2, 2, 2)), 1e-12 / gamma**3)
    close(scalar, -4.0, 1e-9)


@pytest.mark.parametrize("nu", [1.0, 2.5, 4.0, 30.0])
def test_student_t_fisher_closed_form(nu):
    # Known nu: g = diag((nu + 1) / (nu + 3), 2 nu / (nu + 3)) / sigma^2.
    # Lange, Little & Taylor, "Robust statistical modeling using the t distribution", JASA 84
    # (1989) 881-896, Sec. 3 / Appendix (information matrix of (mu, sigma) with nu fixed).
    model = StatisticalModel(
        StudentT(jnp.asarray(nu)), Quadrature(-INF, INF, 192, center=loc_scale), dim=2
    )
    sigma = 1.7
    theta = jnp.array([-0.4, sigma])
    g, t = fisher_and_skewness(model, theta)
    expected = np.diag([(nu + 1) / (nu + 3), 2 * nu / (nu + 3)]) / sigma**2
    close(g, expected, 1e-11)
    # skewness: T_mmm = T_mss = 0 by the symmetry of the t density in x - mu
    close(t[0, 0, 0], 0.0, 1e-12)
    close(t[0, 1, 1], 0.0, 1e-12)


def mixture_ld(theta, x):  # w N(-1, 1) + (1 - w) N(1.5, 0.7^2), parameter theta = (w,)
    w = theta[0]
    return jnp.logaddexp(
        jnp.log(w) + normal_ld(jnp.array([-1.0, 1.0]), x),
        jnp.log1p(-w) + normal_ld(jnp.array([1.5, 0.7]), x),
    )


def test_gaussian_mixture_weight_against_high_precision_reference():
    # I(w) = int (phi_1 - phi_2)^2 / p_w dx; reference by adaptive Gauss-Kronrod (scipy quad,
    # QUADPACK) on three pieces with requested absolute error 1e-13.
    w = 0.35
    phi1 = lambda x: math.exp(-0.5 * (x + 1) ** 2) / math.sqrt(2 * math.pi)
    phi2 = lambda x: math.exp(-0.5 * ((x - 1.5) / 0.7) ** 2) / (0.7 * math.sqrt(2 * math.pi))

    def integrand(x):
        mix = w * phi1(x) + (1 - w) * phi2(x)
        return 0.0 if mix == 0.0 else (phi1(x) - phi2(x)) ** 2 / mix

    reference, error = 0.0, 0.0
    for lo, hi in [(-40.0, -1.0), (-1.0, 1.5), (1.5, 40.0)]:  # beyond +-40: below 1e-300
        value, err = si.quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-13, limit=200)
        reference, error = reference + value, error + err
    assert error < 1e-12
    model = StatisticalModel(
        mixture_ld,
        Quadrature(-INF, INF, 192, center=lambda th: (0.6, 1.5)),
        dim=1,
        in_domain=lambda th: (th[0] > 0) & (th[0] < 1),
    )
    g = jax.jit(model.fisher_information)(jnp.array([w]))
    g_hessian = jax.jit(lambda th: model.fisher_information(th, method="hessian"))(jnp.array([w]))
    close(g[0, 0], reference, 1e-11)
    close(g_hessian[0, 0], reference, 1e-11)


# ---------------------------------------------------------------- the catalogue families
def _gamma_center(theta):
    k, rate = theta[0], -theta[1]
    return k / rate, jnp.sqrt(k) / rate


def _mvn_center(i):
    def center(theta):
        mean, cov = fams.MultivariateNormal(2).mean_covariance(theta)
        return mean[i], jnp.sqrt(cov[i, i])

    return center


def _dirichlet_stick(theta, u):
    # Dirichlet(3) in stick-breaking coordinates u in (0, 1)^2: x = (u0, (1-u0) u1, ...),
    # |dx/du| = 1 - u0. A bijection of the sample space leaves the Fisher metric unchanged.
    x = jnp.stack([u[0], (1 - u[0]) * u[1], (1 - u[0]) * (1 - u[1])])
    return fams.Dirichlet(3).log_prob(theta, x) + jnp.log1p(-u[0])


def _catalogue():
    normal = fams.Normal()
    return {
        "Bernoulli": (fams.Bernoulli(), FiniteSupport(jnp.arange(2)), [0.4]),
        "Binomial": (fams.Binomial(7), FiniteSupport(jnp.arange(8)), [-0.8]),
        "Categorical": (fams.Categorical(4), FiniteSupport(jnp.arange(4)), [0.3, -0.5, 0.2]),
        # truncated at 60 / 200: the tails (4e-50, 1e-40) are far below the tolerance
        "Poisson": (fams.Poisson(), FiniteSupport(jnp.arange(60.0)), [math.log(3.7)]),
        "NegativeBinomial": (
            fams.NegativeBinomial(2.5),
            FiniteSupport(jnp.arange(200.0)),
            [math.log(0.6)],
        ),
        "Exponential": (
            fams.Exponential(),
            Quadrature(0.0, INF, 192, center=lambda th: (-1 / th[0],) * 2),
            [-2.3],
        ),
        "Gamma": (fams.Gamma(), Quadrature(0.0, INF, 192, center=_gamma_center), [2.5, -1.3]),
        "Normal": (
            normal,
            Quadrature(-INF, INF, 192, center=normal.to_usual),
            [0.4 / 1.69, -0.5 / 1.69],
        ),
        "Beta": (fams.Beta(), Quadrature(0.0, 1.0, 128), [2.0, 3.0]),
        "Dirichlet": (
            fams.Dirichlet(3),
            TensorProduct([Quadrature(0.0, 1.0, 64), Quadrature(0.0, 1.0, 64)]),
            [1.5, 2.0, 1.2],
        ),
    }


@pytest.mark.parametrize("name", list(_catalogue()))
def test_catalogue_model_route_equals_hessian_of_log_partition(name):
    # (MultivariateNormal: see the two tests below.)
    family, rule, theta = _catalogue()[name]
    tol = 1e-10
    theta = jnp.asarray(theta, float)
    if name == "Dirichlet":
        model = StatisticalModel(_dirichlet_stick, rule, dim=3)
    else:
        model = family.as_model(rule)
    g, t = fisher_and_skewness(model, theta)
    g_ref, t_ref = family_geometry(family, theta)
    scale_g, scale_t = float(jnp.max(jnp.abs(g_ref))), float(jnp.max(jnp.abs(t_ref)))
    np.testing.assert_allclose(g, g_ref, rtol=tol, atol=tol * scale_g)
    np.testing.assert_allclose(t, t_ref, rtol=10 * tol, atol=10 * tol * scale_t)


_MVN = fams.MultivariateNormal(2)
_MVN_THETA = _MVN.from_mean_covariance(jnp.array([0.3, -0.2]), jnp.array([[1.5, 0.4], [0.4, 0.8]]))


@pytest.mark.slow
def test_multivariate_normal_tensor_product_quadrature():
    # 128^2 nodes with Gaussian tails: 1.4e-9 (Fisher) and 2e-8 (skewness) relative, measured.
    rule = TensorProduct([Quadrature(-INF, INF, 128, center=_mvn_center(i)) for i in (0, 1)])
    g, t = fisher_and_skewness(_MVN.as_model(rule), _MVN_THETA)
    g_ref, t_ref = family_geometry(_MVN, _MVN_THETA)
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-8 * float(jnp.max(jnp.abs(g_ref))))
    np.testing.assert_allclose(t, t_ref, rtol=1e-7, atol=1e-7 * float(jnp.max(jnp.abs(t_ref))))


def _mvn_sampler(theta, key, n):
    return _MVN.sample(theta, key, (n,))


@eqx.filter_jit
def _mvn_monte_carlo(theta):
    rule = MonteCarlo(_mvn_sampler, 4000, jax.random.key(5))
    model = _MVN.as_model(rule)
    score = jax.grad(model.log_density)
    outer = lambda x: jnp.outer(score(theta, x), score(theta, x))
    return model.fisher_information(theta), rule.standard_error(outer, theta, _MVN.log_prob)


@pytest.mark.slow
def test_multivariate_normal_monte_carlo_within_standard_error():
    # Monte Carlo route for the 5-parameter bivariate normal: every Fisher entry within
    # 5 standard errors (from the per-sample score outer products) of the Hessian of A.
    g, se = _mvn_monte_carlo(_MVN_THETA)
    g_ref, _ = family_geometry(_MVN, _MVN_THETA)
    assert np.all(np.abs(g - g_ref) <= 5 * se)
    assert np.max(se) < 0.1 * float(jnp.max(jnp.abs(g_ref)))  # the check is informative


def test_beta_with_endpoint_singularities():
    # Beta(0.5, 0.7): densities infinite at both ends. Closed form (trigamma):
    # g = [[psi1(a) - psi1(a+b), -psi1(a+b)], [-psi1(a+b), psi1(b) - psi1(a+b)]].
    # The singularity at x = 1 is resolved only to the float64 spacing of x there, which
    # bounds the skewness tensor's accuracy (documented in Quadrature).
    a, b = 0.5, 0.7
    model = fams.Beta().as_model(Quadrature(0.0, 1.0, 128))
    theta = jnp.array([a, b])
    g, t = fisher_and_skewness(model, theta)
    p1 = lambda v: sps.polygamma(1, v)
    closed = np.array([[p1(a) - p1(a + b), -p1(a + b)], [-p1(a + b), p1(b) - p1(a + b)]])
    close(g, closed, 1e-8)
    close(t, family_geometry(fams.Beta(), theta)[1], 5e-8)


def test_generic_exponential_family_as_model():
    # An ExponentialFamily built from its log-partition alone (the Poisson, A = exp(theta)).
    family = ExponentialFamily(
        lambda th: jnp.exp(th[0]),
        sufficient_statistic=lambda x: x,
        log_base_measure=lambda x: -jax.scipy.special.gammaln(x + 1.0),
        dim=1,
    )
    model = family.as_model(FiniteSupport(jnp.arange(80.0)))
    theta = jnp.array([math.log(5.0)])
    g, t = fisher_and_skewness(model, theta)
    close(g, [[5.0]], 1e-12)  # Poisson: Var(x) = lambda, third cumulant lambda
    close(t, [[[5.0]]], 1e-12)


@eqx.filter_jit
def _christoffels(model, family, theta):
    return [
        (model.christoffel_symbols(theta, alpha), family.christoffel_symbols(theta, alpha))
        for alpha in (-1.0, 0.0, 1.0)
    ]


def test_normal_christoffel_symbols_model_route_vs_exponential_family_route():
    family = fams.Normal()
    model = family.as_model(Quadrature(-INF, INF, 192, center=family.to_usual))
    theta = family.from_usual(jnp.array([0.4, 1.3]))
    for by_model, by_family in _christoffels(model, family, theta):
        scale = float(jnp.max(jnp.abs(by_family))) + 1.0
        np.testing.assert_allclose(by_model, by_family, rtol=1e-9, atol=1e-9 * scale)
    # alpha = +1 is flat in natural coordinates: the e-connection symbols vanish
    e_symbols = _christoffels(model, family, theta)[2][0]
    close(e_symbols, np.zeros((2, 2, 2)), 1e-9)


# ---------------------------------------------------------------- Chentsov invariance
@settings(max_examples=8, deadline=None)
@given(logit=st.floats(-3.0, 3.0))
def test_chentsov_bernoulli_trials_vs_binomial(logit):
    # n Bernoulli trials (2^n outcomes) vs the binomial count (their sufficient statistic):
    # equal Fisher metrics n p (1 - p) and skewness n p (1 - p) (1 - 2 p) (Chentsov 1972).
    g_trials, t_trials, g_count, t_count = _chentsov_geometry(jnp.array([logit]))
    p = 1 / (1 + math.exp(-logit))
    close(g_trials, g_count, 1e-12)
    close(t_trials, t_count, 1e-12)
    close(g_trials[0, 0], 6 * p * (1 - p), 1e-12)
    close(t_trials[0, 0, 0], 6 * p * (1 - p) * (1 - 2 * p), 1e-12)


def _bernoulli_trials_ld(theta, x):  # x in {0, 1}^6
    return jnp.sum(x) * theta[0] - 6 * jnp.logaddexp(0.0, theta[0])


_TRIALS = StatisticalModel(
    _bernoulli_trials_ld, TensorProduct([FiniteSupport(jnp.array([0.0, 1.0]))] * 6), dim=1
)
_COUNT = fams.Binomial(6).as_model(FiniteSupport(jnp.arange(7)))


@jax.jit
def _chentsov_geometry(theta):
    return (*fisher_and_skewness(_TRIALS, theta), *fisher_and_skewness(_COUNT, theta))


# ---------------------------------------------------------------- reparameterization
def _to_mu_sigma(phi):  # (mu, log sigma) -> (mu, sigma)
    return jnp.stack([phi[0], jnp.exp(phi[1])])


@jax.jit
def _reparameterized(phi):
    log_model = NORMAL.reparameterize(_to_mu_sigma)
    theta = _to_mu_sigma(phi)
    return (
        log_model.fisher_information(phi),
        NORMAL.fisher_information(theta),
        jax.jacfwd(_to_mu_sigma)(phi),
        log_model.skewness_tensor(phi),
    )


def test_reparameterize_normal_mu_log_sigma():
    # In (mu, sigma): g = diag(1, 2) / sigma^2; T_{mu mu sigma} = 2 / sigma^3,
    # T_{sigma sigma sigma} = 8 / sigma^3 (moments of z: E z^2 (z^2 - 1) = 2,
    # E (z^2 - 1)^3 = 8). In (mu, log sigma): g = diag(1 / sigma^2, 2), T pulls back with J.
    sigma = 1.6
    phi = jnp.array([0.3, math.log(sigma)])
    g_phi, g_theta, jac, t_phi = _reparameterized(phi)
    close(g_phi, np.diag([1 / sigma**2, 2.0]), 1e-12)
    close(g_phi, jac.T @ g_theta @ jac, 1e-12)
    expected_t = np.zeros((2, 2, 2))
    for idx in [(0, 0, 1), (0, 1, 0), (1, 0, 0)]:
        expected_t[idx] = 2 / sigma**2
    expected_t[1, 1, 1] = 8.0
    close(t_phi, expected_t, 1e-11)
    # composition and the to_theta constructor argument give the same model
    twice = NORMAL.reparameterize(lambda p: p * 2.0).reparameterize(lambda p: p / 2.0)
    direct = StatisticalModel(
        normal_ld, NORMAL.expectation, to_theta=_to_mu_sigma, in_domain=lambda p: True
    )
    theta = jnp.array([0.3, sigma])
    g_twice, g_direct = jax.jit(
        lambda th, ph: (twice.fisher_information(th), direct.fisher_information(ph))
    )(theta, phi)
    close(g_twice, g_theta, 1e-13)
    close(g_direct, g_phi, 1e-13)
    with pytest.raises(Exception, match="outside the parameter domain"):
        NORMAL.reparameterize(lambda p: jnp.stack([p[0], p[1] - 10.0])).fisher_information(phi)


@pytest.mark.slow
def test_reparameterized_scalar_curvature_is_invariant():
    # The normal family has scalar curvature -1 in any coordinates (Amari, Information
    # Geometry and Its Applications, 2016, Sec. 7.2); here through the (mu, log sigma) model.
    log_model = NORMAL.reparameterize(_to_mu_sigma)
    phi = jnp.array([0.3, math.log(1.6)])
    close(jax.jit(log_model.scalar_curvature)(phi), -1.0, 1e-8)
    close(jax.jit(NORMAL.scalar_curvature)(_to_mu_sigma(phi)), -1.0, 1e-8)


# ---------------------------------------------------------------- Cramer-Rao
def test_cramer_rao_bound_and_delta_method():
    # Normal (mu, sigma): I^{-1} / n = diag(sigma^2, sigma^2 / 2) / n; for psi = sigma^2 the
    # delta method gives 2 sigma^4 / n (Lehmann & Casella 1998, Example 2.5.16).
    sigma, n = 1.3, 50
    theta = jnp.array([0.2, sigma])
    jac = jnp.array([0.0, 2 * sigma])  # the Jacobian of psi = sigma^2, given as an array
    crb, variance, both, by_array = jax.jit(
        lambda th: (
            NORMAL.cramer_rao_bound(th, n),
            NORMAL.cramer_rao_bound(th, n, lambda t: t[1] ** 2),
            NORMAL.cramer_rao_bound(th, n, lambda t: jnp.stack([t[0], t[1] ** 2])),
            NORMAL.cramer_rao_bound(th, n, jac),
        )
    )(theta)
    close(crb, np.diag([sigma**2, sigma**2 / 2]) / n, 1e-12)
    close(variance, 2 * sigma**4 / n, 1e-12)
    close(both, np.diag([sigma**2 / n, 2 * sigma**4 / n]), 1e-12)
    close(by_array, variance, 1e-14)


_CAUCHY_LOCATION = StatisticalModel(
    lambda th, x: cauchy_ld(jnp.stack([th[0], 1.0]), x),
    Quadrature(-INF, INF, 64, center=lambda th: (th[0], 1.0)),
    dim=1,
)


@jax.jit
def _cauchy_mle_variance(key):
    # Replicated Cauchy location MLEs (scale known, 1) by Fisher scoring from the median.
    def mle(x):
        def step(mu, _):
            z = x - mu
            score = jnp.sum(2 * z / (1 + z**2))
            return mu + score / (0.5 * x.shape[0]), None

        mu, _ = jax.lax.scan(step, jnp.median(x), None, length=60)
        return mu

    out = []
    for n, k in zip((10, 200), jax.random.split(key)):
        samples = 0.7 + jax.random.cauchy(k, (4000, n))
        out.append(jnp.var(jax.vmap(mle)(samples), ddof=1))
    return out


@pytest.mark.slow
def test_mle_variance_approaches_cramer_rao_bound():
    # Var(MLE) * n -> 1 / I = 2 gamma^2 = 2 for the Cauchy location; the bound comes from the
    # model's quadrature Fisher. 4000 replications: relative standard error of a variance
    # about sqrt(2 / 4000) = 2.2 %, so 4 standard errors = 9 %.
    var_10, var_200 = _cauchy_mle_variance(jax.random.key(7))
    theta = jnp.array([0.7])
    crb_10 = float(_CAUCHY_LOCATION.cramer_rao_bound(theta, 10)[0, 0])
    crb_200 = float(_CAUCHY_LOCATION.cramer_rao_bound(theta, 200)[0, 0])
    close(crb_200, 2.0 / 200, 1e-12)
    ratio_10, ratio_200 = float(var_10) / crb_10, float(var_200) / crb_200
    assert abs(ratio_200 - 1.0) < 0.09
    assert ratio_10 - 1.0 > 0.09  # small samples: clearly above the bound ...
    assert abs(ratio_200 - 1.0) < ratio_10 - 1.0  # ... and approaching it as n grows


# ---------------------------------------------------------------- empirical Fisher
_NORMAL_LOCATION = StatisticalModel(
    lambda th, x: normal_ld(jnp.stack([th[0], 1.0]), x),
    Quadrature(-INF, INF, 192, center=lambda th: (th[0], 1.0)),
    dim=1,
)


def test_empirical_fisher_differs_from_fisher_away_from_the_truth():
    # Unit-variance normal location: data ~ N(mu0, 1). The empirical Fisher at mu is
    # mean((x - mu)^2) -> 1 + (mu - mu0)^2 while the Fisher is 1 (Kunstner et al., NeurIPS 2019).
    mu0, n = 0.5, 20000
    data = mu0 + jax.random.normal(jax.random.key(3), (n,))
    emp = jax.jit(_NORMAL_LOCATION.empirical_fisher)
    fisher = jax.jit(_NORMAL_LOCATION.fisher_information)
    for mu in (mu0, mu0 + 1.5):
        theta = jnp.array([mu])
        value = float(emp(theta, data)[0, 0])
        close(value, float(jnp.mean((data - mu) ** 2)), 1e-12)  # second route: by hand
        se = math.sqrt((2 + 4 * (mu - mu0) ** 2) / n)  # sd of (x - mu)^2 over sqrt(n)
        assert abs(value - (1 + (mu - mu0) ** 2)) < 5 * se
        close(fisher(theta)[0, 0], 1.0, 1e-12)
    assert float(emp(jnp.array([mu0 + 1.5]), data)[0, 0]) > 3.0  # not the Fisher information


# ---------------------------------------------------------------- divergences
@jax.jit
def _normal_divergences(p, q):
    family = fams.Normal()
    model = family.as_model(Quadrature(-INF, INF, 192, center=family.to_usual))
    pairs = []
    for name, args in [
        ("kl_divergence", ()),
        ("alpha_divergence", (-1.0,)),
        ("alpha_divergence", (0.0,)),
        ("alpha_divergence", (0.7,)),
        ("alpha_divergence", (1.0,)),
        ("alpha_divergence", (-1.0 + 1e-6,)),  # smooth through the limits
        ("alpha_divergence", (1.0 - 1e-6,)),
        ("renyi_divergence", (0.5,)),
        ("renyi_divergence", (1.0,)),
        ("renyi_divergence", (1.5,)),
        ("bhattacharyya_distance", ()),
        ("hellinger_distance", ()),
    ]:
        pairs.append((getattr(model, name)(p, q, *args), getattr(family, name)(p, q, *args)))
    return pairs


def test_divergences_by_expectation_match_exponential_family_closed_forms():
    family = fams.Normal()
    p, q = family.from_usual(jnp.array([0.2, 1.1])), family.from_usual(jnp.array([-0.3, 0.8]))
    for by_model, by_family in _normal_divergences(p, q):
        close(by_model, by_family, 1e-10)
    # limits and duality: D_{-1}(p||q) = KL(p||q), D_{+1}(p||q) = KL(q||p)
    pairs = _normal_divergences(p, q)
    close(pairs[1][0], pairs[0][0], 1e-12)
    close(pairs[4][0], _normal_divergences(q, p)[0][0], 1e-12)


def test_cauchy_kl_closed_form_and_second_order_expansion():
    # KL(C(m1, g1) || C(m2, g2)) = log(((g1 + g2)^2 + (m1 - m2)^2) / (4 g1 g2)), symmetric.
    # Chyzak & Nielsen, "A closed-form formula for the Kullback-Leibler divergence between
    # Cauchy distributions", arXiv:1905.10965 (2019).
    # The integrand log p / q has singularities near the real axis when q is narrow and far
    # from p: more nodes than for the Fisher metric (64 nodes give 6e-6 here, 256 give 1e-15).
    fine = StatisticalModel(cauchy_ld, Quadrature(-INF, INF, 256, center=loc_scale), dim=2)
    kl = jax.jit(fine.kl_divergence)
    p, q = jnp.array([0.3, 1.2]), jnp.array([-1.0, 0.5])
    expected = math.log(((1.2 + 0.5) ** 2 + 1.3**2) / (4 * 1.2 * 0.5))
    close(kl(p, q), expected, 1e-12)
    close(kl(q, p), expected, 1e-12)
    # KL(theta, theta + h v) - h^2 v^T g v / 2 = O(h^3)
    v = jnp.array([0.6, -0.8])
    g = jax.jit(CAUCHY.fisher_information)(p)
    residual = [abs(float(kl(p, p + h * v)) - 0.5 * h**2 * float(v @ g @ v)) for h in (0.1, 0.05)]
    assert residual[1] < residual[0] / 6.0  # ratio 8 for a cubic remainder


# ---------------------------------------------------------------- Monte Carlo route
def _normal_sampler(theta, key, n):
    return theta[0] + theta[1] * jax.random.normal(key, (n,), dtype=theta.dtype)


@eqx.filter_jit
def _mc_first_kind(keys, theta):
    def one(key):
        model = StatisticalModel(normal_ld, MonteCarlo(_normal_sampler, 1000, key), dim=2)
        return model.fisher_information(theta), model.christoffel_first_kind(theta, 0.5)

    return jax.vmap(one)(keys)


def test_monte_carlo_fisher_and_christoffel_unbiased():
    # The Monte Carlo Fisher metric and Christoffel symbols of the first kind (linear in g, dg
    # and T) are unbiased: their mean over 64 seeds equals the quadrature value within 5
    # standard errors of that mean.
    # Closed forms in (mu, sigma): g = diag(1, 2) / sigma^2, so d_sigma g = -2 diag(1, 2) /
    # sigma^3; T_{mu mu sigma} = 2 / sigma^3, T_{sigma sigma sigma} = 8 / sigma^3;
    # Gamma^(alpha)_{ij,k} = (d_i g_jk + d_j g_ik - d_k g_ij) / 2 - alpha / 2 T_ijk
    # (Amari & Nagaoka 2000, Eq. (2.27) with the skewness of Sec. 2.3).
    sigma = 1.4
    theta = jnp.array([0.3, sigma])
    g_mc, gamma_mc = _mc_first_kind(jax.random.split(jax.random.key(11), 64), theta)
    g_ref = np.diag([1.0, 2.0]) / sigma**2
    dg = np.zeros((2, 2, 2))
    dg[:, :, 1] = -2.0 * np.diag([1.0, 2.0]) / sigma**3
    skew = np.zeros((2, 2, 2))
    for idx in [(0, 0, 1), (0, 1, 0), (1, 0, 0)]:
        skew[idx] = 2 / sigma**3
    skew[1, 1, 1] = 8 / sigma**3
    levi_civita = 0.5 * (
        np.einsum("jki->ijk", dg) + np.einsum("ikj->ijk", dg) - np.einsum("ijk->ijk", dg)
    )
    gamma_ref = levi_civita - 0.25 * skew  # alpha = 0.5
    for est, ref in [(g_mc, g_ref), (gamma_mc, gamma_ref)]:
        se = np.std(est, axis=0, ddof=1) / math.sqrt(est.shape[0])
        assert np.all(np.abs(np.mean(est, axis=0) - ref) <= 5 * se + 1e-12)
        assert np.max(se) < 0.05 * float(np.max(np.abs(ref)))  # informative


# ---------------------------------------------------------------- transformations, dtype
def test_jit_vmap_grad_through_public_functions():
    thetas = jnp.array([[0.0, 1.0], [1.0, 2.0], [-2.0, 0.5]])
    gs = jax.jit(jax.vmap(CAUCHY.fisher_information))(thetas)
    close(gs, jax.vmap(lambda th: jnp.eye(2) / (2 * th[1] ** 2))(thetas), 1e-12)
    # grad_q KL(p || q) = eta(q) - eta(p) for an exponential family in natural coordinates
    family = fams.Normal()
    model = family.as_model(Quadrature(-INF, INF, 192, center=family.to_usual))
    p, q = family.from_usual(jnp.array([0.2, 1.1])), family.from_usual(jnp.array([-0.3, 0.8]))
    grad = jax.jit(jax.grad(model.kl_divergence, argnums=1))(p, q)
    close(grad, family.mean_parameters(q) - family.mean_parameters(p), 1e-10)
    # log_density, score, expect, total_mass under vmap over outcomes / jit
    xs = jnp.linspace(-3.0, 3.0, 5)
    theta = jnp.array([0.5, 2.0])
    scores = jax.jit(jax.vmap(CAUCHY.score, in_axes=(None, 0)))(theta, xs)
    by_hand = jax.jit(jax.vmap(jax.grad(cauchy_ld), in_axes=(None, 0)))(theta, xs)
    close(scores, by_hand, 1e-14)
    close(
        jax.jit(jax.vmap(CAUCHY.log_density, in_axes=(None, 0)))(theta, xs),
        np.log(1 / (np.pi * 2.0 * (1 + ((np.asarray(xs) - 0.5) / 2.0) ** 2))),
        1e-14,
    )
    close(jax.jit(CAUCHY.total_mass)(theta), 1.0, 1e-14)
    second = jax.jit(lambda th: CAUCHY.expect(lambda x: jnp.log1p(((x - th[0]) / th[1]) ** 2), th))(
        theta
    )
    close(second, 2 * math.log(2.0), 1e-12)  # E log(1 + z^2) = 2 log 2 for the Cauchy


_CAUCHY32 = StatisticalModel(cauchy_ld, Quadrature(-INF, INF, 48, center=loc_scale), dim=2)


@jax.jit
def _float32_all(theta, q, data):
    m = _CAUCHY32
    return {
        "fisher": m.fisher_information(theta),
        "hessian": m.fisher_information(theta, method="hessian"),
        "metric": m.metric(theta),
        "skewness": m.skewness_tensor(theta),
        "score": m.score(theta, 0.3),
        "log_density": m.log_density(theta, 0.3),
        "expect": m.expect(lambda x: jnp.ones((), x.dtype), theta),
        "mass": m.total_mass(theta),
        "empirical": m.empirical_fisher(theta, data),
        "crb": m.cramer_rao_bound(theta, 10),
        "kl": m.kl_divergence(theta, q),
        "alpha": m.alpha_divergence(theta, q, 0.3),
        "renyi": m.renyi_divergence(theta, q, 0.5),
        "bhattacharyya": m.bhattacharyya_distance(theta, q),
        "hellinger": m.hellinger_distance(theta, q),
        "reparameterized": m.reparameterize(lambda p: p * 2.0).fisher_information(theta / 2.0),
    }


def test_float32_smoke():
    theta = jnp.array([0.2, 1.5], jnp.float32)
    q = jnp.array([0.5, 1.0], jnp.float32)
    out = _float32_all(theta, q, jnp.linspace(-2, 2, 7, dtype=jnp.float32))
    for name, value in out.items():
        assert value.dtype == jnp.float32, name
        assert np.all(np.isfinite(value)), name
    np.testing.assert_allclose(out["fisher"], np.eye(2) / (2 * 1.5**2), rtol=1e-5, atol=1e-6)
    expected_kl = math.log(((1.5 + 1.0) ** 2 + 0.3**2) / (4 * 1.5))
    np.testing.assert_allclose(out["kl"], expected_kl, rtol=1e-4)


# ---------------------------------------------------------------- bad input
def test_unnormalized_density_and_nonfinite_score_raise():
    unnormalized = StatisticalModel(
        lambda th, x: cauchy_ld(th, x) + 1.0, Quadrature(-INF, INF, 33, center=loc_scale), dim=2
    )
    theta = jnp.array([0.0, 1.0])
    with pytest.raises(Exception, match=r"does not normalize.*mass = 2\.718"):
        unnormalized.fisher_information(theta)
    with pytest.raises(Exception, match="does not normalize"):
        jax.jit(unnormalized.fisher_information)(theta)
    close(unnormalized.total_mass(theta), math.e, 1e-12)
    # a score that is NaN at the node x = mu (33 nodes: one sits on the center) where p > 0
    kinked = StatisticalModel(
        lambda th, x: cauchy_ld(th, x) + 0.0 * jnp.sqrt(jnp.abs(x - th[0])),
        Quadrature(-INF, INF, 33, center=loc_scale),
        dim=2,
    )
    with pytest.raises(Exception, match="not finite at a node"):
        kinked.fisher_information(theta)
    with pytest.raises(Exception, match="not finite at a node"):
        jax.jit(kinked.fisher_information)(theta)
    with pytest.raises(Exception, match="score is not finite"):
        CAUCHY.empirical_fisher(theta, jnp.array([0.0, jnp.inf]))


def test_wrong_shapes_and_arguments_raise():
    theta = jnp.array([0.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        CAUCHY.fisher_information(jnp.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="1-D"):
        CAUCHY.fisher_information(jnp.ones((2, 2)))
    with pytest.raises(Exception, match="outside the parameter domain"):
        CAUCHY.fisher_information(jnp.array([0.0, -1.0]))
    with pytest.raises(Exception, match="outside the parameter domain"):
        jax.jit(CAUCHY.fisher_information)(jnp.array([0.0, -1.0]))
    with pytest.raises(ValueError, match="method"):
        CAUCHY.fisher_information(theta, method="observed")
    with pytest.raises(ValueError, match="Jacobian"):
        CAUCHY.cramer_rao_bound(theta, 10, jnp.ones(3))
    with pytest.raises(ValueError, match="num_samples"):
        CAUCHY.cramer_rao_bound(theta, 0)
    with pytest.raises(ValueError, match="leading axis"):
        CAUCHY.empirical_fisher(theta, jnp.asarray(1.0))
    with pytest.raises(ValueError, match="must return a scalar"):
        StatisticalModel(lambda th, x: th * x, CAUCHY.expectation).fisher_information(theta)
    with pytest.raises(ValueError, match="1-D array"):
        CAUCHY.reparameterize(lambda p: p[0]).fisher_information(theta)
    mc = StatisticalModel(normal_ld, MonteCarlo(_normal_sampler, 10, jax.random.key(0)))
    with pytest.raises(TypeError, match="deterministic rule"):
        mc.total_mass(theta)
    with pytest.raises(TypeError, match="log_density"):
        StatisticalModel(3.0, CAUCHY.expectation)
    with pytest.raises(TypeError, match="expectation rule"):
        StatisticalModel(cauchy_ld, lambda f: f)
    with pytest.raises(TypeError, match="in_domain"):
        StatisticalModel(cauchy_ld, CAUCHY.expectation, in_domain=1)
    with pytest.raises(ValueError, match="dim"):
        StatisticalModel(cauchy_ld, CAUCHY.expectation, dim=0)
    with pytest.raises(TypeError, match="to_theta"):
        CAUCHY.reparameterize(2.0)
