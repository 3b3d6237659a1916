"""The family catalogue: densities, Fisher metrics, KL, dual coordinates, distances, errors.

Every closed form below cites its source; every override is compared with its autodiff default.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special as sp
import scipy.stats as st
from hypothesis import given, settings, strategies as hst

from infogeo_jax import AbstractExponentialFamily as AEF, AbstractStatisticalManifold
from infogeo_jax._dually_flat import AbstractDuallyFlatManifold
from infogeo_jax.families import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    DiagonalNormal,
    Dirichlet,
    Exponential,
    Gamma,
    Geometric,
    Multinomial,
    MultivariateNormal,
    NegativeBinomial,
    Normal,
    Poisson,
)

RTOL, ATOL = 1e-12, 1e-12
_L = np.array([[1.0, 0.0, 0.0], [0.3, 1.2, 0.0], [-0.5, 0.2, 0.7]])
MVN_MEAN, MVN_COV = np.array([0.5, -1.0, 2.0]), _L @ _L.T

# (family, theta, scipy frozen distribution, sample points)
CASES = {
    "bernoulli": (Bernoulli(), Bernoulli().from_usual(jnp.array([0.3])), st.bernoulli(0.3), [0, 1]),
    "binomial": (
        Binomial(7),
        Binomial(7).from_usual(jnp.array([0.3])),
        st.binom(7, 0.3),
        [0, 3, 7],
    ),
    "negbinomial": (
        NegativeBinomial(2.5),
        NegativeBinomial(2.5).from_usual(jnp.array([0.4])),
        st.nbinom(2.5, 0.4),
        [0, 3, 11],
    ),
    "poisson": (Poisson(), Poisson().from_usual(jnp.array([3.5])), st.poisson(3.5), [0, 1, 9]),
    "exponential": (
        Exponential(),
        Exponential().from_usual(jnp.array([2.0])),
        st.expon(scale=0.5),
        [0.1, 2.0],
    ),
    "normal": (
        Normal(),
        Normal().from_usual(jnp.array([0.7, 2.0])),
        st.norm(0.7, 2.0),
        [-1.0, 0.2, 3.0],
    ),
    "gamma": (
        Gamma(),
        Gamma().from_usual(jnp.array([2.5, 1.5])),
        st.gamma(2.5, scale=1 / 1.5),
        [0.3, 2.0],
    ),
    "beta": (Beta(), Beta().from_usual(jnp.array([0.7, 2.0])), st.beta(0.7, 2.0), [0.2, 0.9]),
    "categorical": (
        Categorical(4),
        Categorical(4).from_usual(jnp.array([0.1, 0.2, 0.3, 0.4])),
        None,
        [0, 1, 2, 3],
    ),
    "dirichlet": (
        Dirichlet(3),
        jnp.array([0.5, 1.0, 4.0]),
        st.dirichlet(np.array([0.5, 1.0, 4.0])),
        [np.array([0.2, 0.3, 0.5]), np.array([0.05, 0.05, 0.9])],
    ),
    "mvn": (
        MultivariateNormal(3),
        MultivariateNormal(3).from_mean_covariance(MVN_MEAN, MVN_COV),
        st.multivariate_normal(MVN_MEAN, MVN_COV),
        [np.array([0.1, 0.2, 0.3]), np.array([1.0, -2.0, 2.5])],
    ),
    "geometric": (
        Geometric(),
        Geometric().from_usual(jnp.array([0.4])),
        st.geom(0.4, loc=-1),  # scipy counts trials; loc=-1 counts failures
        [0, 1, 7],
    ),
    "multinomial": (
        Multinomial(6, 3),
        Multinomial(6, 3).from_usual(jnp.array([0.2, 0.3, 0.5])),
        st.multinomial(6, [0.2, 0.3, 0.5]),
        [np.array([1.0, 2.0, 3.0]), np.array([6.0, 0.0, 0.0])],
    ),
    "diagnormal": (
        DiagonalNormal(2),
        DiagonalNormal(2).from_usual(jnp.array([0.5, -1.0, 1.5, 0.7])),
        st.multivariate_normal([0.5, -1.0], np.diag([1.5**2, 0.7**2])),
        [np.array([0.1, 0.2]), np.array([2.0, -2.5])],
    ),
}
NAMES = list(CASES)


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------ densities
@pytest.mark.parametrize("name", NAMES)
def test_log_prob_matches_scipy(name):
    # Reference: scipy.stats logpmf/logpdf, which checks A, T and h together.
    fam, theta, dist, xs = CASES[name]
    for x in xs:
        if name == "categorical":
            expected = np.log([0.1, 0.2, 0.3, 0.4][x])
        elif hasattr(dist, "logpmf"):
            expected = dist.logpmf(x)
        else:
            expected = dist.logpdf(x)
        close(fam.log_prob(theta, x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "fam,theta,support",
    [
        (Binomial(7), Binomial(7).from_usual(jnp.array([0.3])), np.arange(8)),
        (Poisson(), Poisson().from_usual(jnp.array([3.5])), np.arange(80)),  # tail mass < 1e-40
        (NegativeBinomial(2.5), NegativeBinomial(2.5).from_usual(jnp.array([0.4])), np.arange(400)),
        (Categorical(5), Categorical(5).from_usual(jnp.full(5, 0.2)), np.arange(5)),
    ],
)
def test_discrete_normalization_and_moments_by_exact_sums(fam, theta, support):
    # Second route for A (normalization), eta = E[T] and the Fisher = Cov[T] by exact sums.
    logp = jax.vmap(lambda x: fam.log_prob(theta, x))(jnp.asarray(support))
    p = jnp.exp(logp)
    stats = jax.vmap(fam.sufficient_statistic)(jnp.asarray(support))
    close(jnp.sum(p), 1.0, atol=1e-12)
    eta = p @ stats
    close(eta, fam.mean_parameters(theta), rtol=1e-11, atol=1e-12)
    centered = stats - eta
    close(centered.T @ (p[:, None] * centered), fam.fisher_information(theta), rtol=1e-10)


@pytest.mark.parametrize("name", ["gamma", "beta", "exponential", "normal"])
def test_continuous_mean_and_fisher_by_quadrature(name):
    # Second route: E[T(x)] and Cov[T(x)] by scipy.integrate.quad on the density.
    fam, theta, dist, _ = CASES[name]
    lo, hi = dist.support()

    def stat(x, i):
        return float(fam.sufficient_statistic(x)[i])

    def expect(f):
        return scipy.integrate.quad(
            lambda x: f(x) * dist.pdf(x), lo, hi, epsabs=1e-13, epsrel=1e-12
        )[0]

    d = fam.dim
    eta = np.array([expect(lambda x, i=i: stat(x, i)) for i in range(d)])
    close(fam.mean_parameters(theta), eta, rtol=1e-9, atol=1e-10)
    cov = np.array(
        [
            [
                expect(lambda x, i=i, j=j: (stat(x, i) - eta[i]) * (stat(x, j) - eta[j]))
                for j in range(d)
            ]
            for i in range(d)
        ]
    )
    close(fam.fisher_information(theta), cov, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", ["dirichlet", "mvn", "gamma"])
def test_fisher_equals_covariance_of_t_monte_carlo(name):
    # Second route by Monte Carlo, n = 40_000 samples (seeded). Each entry of the sample covariance
    # has standard error sqrt(Var[(T_i - eta_i)(T_j - eta_j)] / n); we allow 5 standard errors.
    fam, theta, _, _ = CASES[name]
    n = 40_000
    x = fam.sample(theta, jax.random.PRNGKey(0), (n,))
    t = jax.vmap(fam.sufficient_statistic)(x)
    eta = fam.mean_parameters(theta)
    products = (t - eta)[:, :, None] * (t - eta)[:, None, :]
    estimate = jnp.mean(products, axis=0)
    stderr = jnp.std(products, axis=0) / np.sqrt(n)
    assert jnp.all(jnp.abs(estimate - fam.fisher_information(theta)) <= 5 * stderr + 1e-12)
    mean_stderr = jnp.std(t, axis=0) / np.sqrt(n)
    assert jnp.all(jnp.abs(jnp.mean(t, axis=0) - eta) <= 5 * mean_stderr)


# ------------------------------------------------------------------------------ Fisher closed forms
def test_bernoulli_fisher_in_both_coordinates():
    # Fisher of Bernoulli: p(1 - p) in the logit, 1 / (p (1 - p)) in p (Amari 2016, Ex. 2.1).
    fam = Bernoulli()
    for p in [0.05, 0.3, 0.5, 0.9]:
        theta = fam.from_usual(jnp.array([p]))
        close(fam.fisher_information(theta)[0, 0], p * (1 - p))
        jac = jax.jacfwd(fam.from_usual)(jnp.array([p]))[0, 0]
        close(jac**2 * fam.fisher_information(theta)[0, 0], 1 / (p * (1 - p)), rtol=1e-12)


def test_scalar_family_fisher_closed_forms():
    # Poisson: lambda in theta = log lambda; Exponential: 1/theta^2; Binomial: n p (1-p);
    # NegativeBinomial: r (1-p) / p^2 in theta = log(1 - p) (Casella & Berger, Ex. 7.3.x).
    close(Poisson().fisher_information(Poisson().from_usual(jnp.array([3.5])))[0, 0], 3.5)
    close(Exponential().fisher_information(jnp.array([-2.0]))[0, 0], 0.25)
    close(Binomial(7).fisher_information(Binomial(7).from_usual(jnp.array([0.3])))[0, 0], 7 * 0.21)
    nb = NegativeBinomial(2.5)
    close(nb.fisher_information(nb.from_usual(jnp.array([0.4])))[0, 0], 2.5 * 0.6 / 0.16)


def test_normal_fisher_in_mean_std():
    # N(mu, sigma): g = diag(1, 2) / sigma^2 (Amari & Nagaoka 2000, Sec. 2.3; Rao 1945).
    fam = Normal()
    for mu, sigma in [(0.0, 1.0), (1.5, 0.3), (-2.0, 4.0)]:
        jac = jax.jacfwd(lambda u: fam.from_usual(jnp.array([u[0], u[1]])))(jnp.array([mu, sigma]))
        g = jac.T @ fam.fisher_information(fam.from_usual(jnp.array([mu, sigma]))) @ jac
        close(g, np.diag([1.0, 2.0]) / sigma**2)


def test_gamma_beta_dirichlet_fisher_closed_forms():
    # Gamma in (k, -beta): [[psi1(k), 1/beta], [1/beta, k/beta^2]]; Beta/Dirichlet:
    # diag(psi1(alpha)) - psi1(alpha_0) (Minka 2000, Eq. 12; Amari 2016, Sec. 2.2).
    k, rate = 2.5, 1.5
    expected = np.array([[sp.polygamma(1, k), 1 / rate], [1 / rate, k / rate**2]])
    close(Gamma().fisher_information(Gamma().from_usual(jnp.array([k, rate]))), expected)
    for alpha in [np.array([0.7, 2.0]), np.array([0.5, 1.0, 4.0])]:
        expected = np.diag(sp.polygamma(1, alpha)) - sp.polygamma(1, alpha.sum())
        fam = Beta() if alpha.size == 2 else Dirichlet(3)
        close(fam.fisher_information(jnp.asarray(alpha)), expected)


def test_categorical_fisher_closed_form():
    # Multinomial logit Fisher: diag(p) - p p^T on the first k-1 classes.
    p = jnp.array([0.1, 0.2, 0.3, 0.4])
    fam = Categorical(4)
    q = p[:-1]
    close(fam.fisher_information(fam.from_usual(p)), jnp.diag(q) - jnp.outer(q, q))


def test_mvn_fisher_in_mean_covariance():
    # g(dmu, dmu) = dmu^T S^-1 dmu, g(dS, dS) = 1/2 tr(S^-1 dS S^-1 dS), no cross term
    # (Skovgaard 1984; Amari & Nagaoka 2000, Sec. 2.3).
    fam = MultivariateNormal(3)
    mean, cov = jnp.asarray(MVN_MEAN), jnp.asarray(MVN_COV)
    theta = fam.from_mean_covariance(mean, cov)
    g = fam.fisher_information(theta)
    precision = jnp.linalg.inv(cov)
    rng = np.random.default_rng(0)
    for _ in range(3):
        dmu = jnp.asarray(rng.normal(size=3))
        ds = rng.normal(size=(3, 3))
        ds = jnp.asarray(ds + ds.T)
        _, dtheta = jax.jvp(fam.from_mean_covariance, (mean, cov), (dmu, ds))
        expected = dmu @ precision @ dmu + 0.5 * jnp.trace(precision @ ds @ precision @ ds)
        close(dtheta @ g @ dtheta, expected, rtol=1e-11)


# ------------------------------------------------------------------------------ KL closed forms
def test_kl_closed_forms():
    # Poisson: l1 log(l1/l2) - l1 + l2; Exponential: log(l1/l2) + l2/l1 - 1;
    # Gamma (Penny 2001): (k1-k2) psi(k1) - lnG(k1) + lnG(k2) + k2 ln(b1/b2) + k1 (b2-b1)/b1;
    # Dirichlet/Beta (Penny 2001): lnB(b) - lnB(a) + sum (a_i - b_i)(psi(a_i) - psi(a_0));
    # MVN: 1/2 [tr(S2^-1 S1) + dm^T S2^-1 dm - d + ln det S2 / det S1] (Kullback 1959).
    l1, l2 = 3.5, 1.2
    fam = Poisson()
    close(
        fam.kl_divergence(fam.from_usual(jnp.array([l1])), fam.from_usual(jnp.array([l2]))),
        l1 * np.log(l1 / l2) - l1 + l2,
    )
    fam = Exponential()
    close(
        fam.kl_divergence(fam.from_usual(jnp.array([l1])), fam.from_usual(jnp.array([l2]))),
        np.log(l1 / l2) + l2 / l1 - 1,
    )
    k1, b1, k2, b2 = 2.5, 1.5, 0.7, 3.0
    expected = (
        (k1 - k2) * sp.digamma(k1)
        - sp.gammaln(k1)
        + sp.gammaln(k2)
        + k2 * np.log(b1 / b2)
        + k1 * (b2 - b1) / b1
    )
    close(
        Gamma().kl_divergence(
            Gamma().from_usual(jnp.array([k1, b1])), Gamma().from_usual(jnp.array([k2, b2]))
        ),
        expected,
    )
    a, b = np.array([0.5, 1.0, 4.0]), np.array([6.0, 0.7, 2.0])

    def log_b(x):
        return sp.gammaln(x).sum() - sp.gammaln(x.sum())

    expected = log_b(b) - log_b(a) + np.sum((a - b) * (sp.digamma(a) - sp.digamma(a.sum())))
    close(Dirichlet(3).kl_divergence(jnp.asarray(a), jnp.asarray(b)), expected)
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.3, 0.2, 0.1])
    cat = Categorical(4)
    close(cat.kl_divergence(cat.from_usual(p), cat.from_usual(q)), np.sum(p * np.log(p / q)))
    mvn = MultivariateNormal(3)
    m2, s2 = np.array([0.0, 1.0, -1.0]), np.diag([2.0, 0.5, 1.5]) + 0.1
    s2_inv = np.linalg.inv(s2)
    dm = m2 - MVN_MEAN
    expected = 0.5 * (
        np.trace(s2_inv @ MVN_COV)
        + dm @ s2_inv @ dm
        - 3
        + np.log(np.linalg.det(s2) / np.linalg.det(MVN_COV))
    )
    close(
        mvn.kl_divergence(
            mvn.from_mean_covariance(MVN_MEAN, MVN_COV), mvn.from_mean_covariance(m2, s2)
        ),
        expected,
    )
    bino = Binomial(7)
    expected = 7 * (0.3 * np.log(0.3 / 0.6) + 0.7 * np.log(0.7 / 0.4))
    close(
        bino.kl_divergence(bino.from_usual(jnp.array([0.3])), bino.from_usual(jnp.array([0.6]))),
        expected,
    )


# ------------------------------------------------------------------------------ dual coordinates
@pytest.mark.parametrize("name", NAMES)
def test_overrides_match_autodiff_defaults(name):
    fam, theta, _, _ = CASES[name]
    eta = fam.mean_parameters(theta)
    close(eta, AEF.mean_parameters(fam, theta))
    # method="numerical" is the autodiff Hessian of A, whatever the family overrides.
    close(fam.fisher_information(theta), fam.fisher_information(theta, method="numerical"))
    if name in ("bernoulli", "binomial", "categorical", "diagnormal", "beta", "dirichlet"):
        close(
            fam.fisher_information(theta, method="closed_form"),
            fam.fisher_information(theta, method="numerical"),
        )
    else:
        with pytest.raises(ValueError, match="no closed-form Fisher information"):
            fam.fisher_information(theta, method="closed_form")
    close(fam.natural_parameters(eta), theta, rtol=1e-10, atol=1e-10)
    # The generic damped Newton from the family's own starting point reaches the same theta.
    close(AEF.natural_parameters(fam, eta), theta, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["beta", "dirichlet"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, -1.0, 1.0])
def test_dirichlet_contracted_symbols_match_autodiff(name, alpha):
    # Closed form T_ijk = psi2(alpha_i) delta_ijk - psi2(alpha_0) (Minka 2000, Sec. 1) against
    # the dually flat default (two JVPs of grad A) and the metric-only route of the base.
    fam, theta, _, _ = CASES[name]
    key_u, key_w = jax.random.split(jax.random.key(3))
    u = jax.random.normal(key_u, theta.shape, theta.dtype)
    w = jax.random.normal(key_w, theta.shape, theta.dtype)
    closed = fam._christoffel_contract(theta, u, w, alpha)
    flat = AbstractDuallyFlatManifold._christoffel_contract(fam, theta, u, w, alpha)
    generic = AbstractStatisticalManifold._christoffel_contract(fam, theta, u, w, alpha)
    close(closed, flat, rtol=1e-12, atol=1e-13)
    close(closed, generic, rtol=1e-10, atol=1e-12)
    symbols = fam.christoffel_symbols(theta, alpha)
    close(closed, jnp.einsum("kij,i,j->k", symbols, u, w), rtol=1e-10, atol=1e-12)


def test_polygamma_remainders_keep_full_relative_accuracy():
    # Reference: mpmath's polygamma (A&S Eqs. 6.4.1, 6.4.6), its precision raised with x so that
    # psi_1(x) - 1/x and psi_2(x) + 1/x^2 do not cancel.
    import mpmath

    from infogeo_jax.families._common import polygamma_remainders

    xs = np.concatenate([np.logspace(-300, 40, 69), np.linspace(0.01, 30.0, 120), [10.0]])
    xs = np.concatenate([xs, np.nextafter(10.0, [0.0, 20.0])])
    uh, vh = map(np.asarray, polygamma_remainders(jnp.asarray(xs)))
    ref_u, ref_v = [], []
    for x in xs:
        with mpmath.workdps(int(40 + 2 * max(0.0, np.log10(x)))):
            big = mpmath.mpf(float(x))
            ref_u.append(float(big**2 * (mpmath.polygamma(1, big) - 1 / big)))
            ref_v.append(float(big**3 * (mpmath.polygamma(2, big) + 1 / big**2)))
    np.testing.assert_allclose(uh, ref_u, rtol=2e-15, atol=0)
    np.testing.assert_allclose(vh, ref_v, rtol=2e-15, atol=0)
    # Second route: the limits x^2 psi_1(x) -> 1 and x^3 psi_2(x) -> -2 as x -> 0, and 1/2 and
    # -1 as x -> infinity (A&S Eqs. 6.4.10, 6.4.12), with no underflow at either end.
    tiny, huge = polygamma_remainders(jnp.array([1e-300, 1e300]))
    close(tiny, jnp.array([1.0, 0.5]), rtol=1e-15, atol=0)
    close(huge, jnp.array([-2.0, -1.0]), rtol=1e-15, atol=0)


@pytest.mark.parametrize(
    "concentrations",
    [(0.3, 2.0, 5.0), (1e6, 2e6, 3e6), (1e-3, 1e8, 2.0), (1e12, 1e12)],
)
def test_dirichlet_metric_solve_keeps_full_accuracy(concentrations):
    # g = diag(psi1(alpha)) - psi1(alpha_0) 11^T (Minka 2000, Sec. 1), solved in 60-digit mpmath
    # arithmetic. Its condition number grows like the concentrations (a Cholesky solve of the
    # float64 matrix loses 4 digits at 1e6 and 12 at 1e12); the rank-one form must not.
    import mpmath

    from infogeo_jax.families._dirichlet import _dirichlet_polygammas, _dirichlet_solve

    alpha = jnp.asarray(concentrations)
    b = jnp.linspace(1.0, 2.0, alpha.shape[0])
    ours = _dirichlet_solve(alpha, _dirichlet_polygammas(alpha)[0], b)
    with mpmath.workdps(60):
        a = [mpmath.mpf(float(x)) for x in concentrations]
        q = mpmath.polygamma(1, sum(a))
        g = mpmath.matrix(len(a), len(a))
        for i in range(len(a)):
            for j in range(len(a)):
                g[i, j] = (mpmath.polygamma(1, a[i]) if i == j else 0) - q
        ref = mpmath.lu_solve(g, mpmath.matrix([float(v) for v in b]))
        ref = np.array([float(v) for v in ref])
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=2e-15, atol=0)
    if max(concentrations) < 10:
        # Second route, where the metric is well conditioned: a Cholesky solve of the matrix.
        g64 = Dirichlet(alpha.shape[0]).fisher_information(alpha, method="closed_form")
        close(ours, jnp.linalg.solve(g64, b), rtol=1e-13, atol=0)


@pytest.mark.parametrize(
    "fam,theta",
    [
        (Gamma(), Gamma().from_usual(jnp.array([0.05, 3.0]))),
        (Gamma(), Gamma().from_usual(jnp.array([200.0, 0.1]))),
        (Beta(), jnp.array([0.2, 0.3])),
        (Beta(), jnp.array([20.0, 10.0])),
        (Dirichlet(3), jnp.array([0.5, 1.0, 4.0])),
        (Dirichlet(3), jnp.array([6.0, 0.7, 2.0])),
    ],
)
def test_newton_inverse_on_hard_points(fam, theta):
    close(fam.natural_parameters(fam.mean_parameters(theta)), theta, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_usual_round_trip(name):
    fam, theta, _, _ = CASES[name]
    usual = fam.to_usual(theta)
    assert usual.ndim == 1
    close(fam.from_usual(usual), theta)


@settings(max_examples=25, deadline=None)
@given(
    hst.floats(0.05, 20.0),
    hst.floats(0.05, 20.0),
)
def test_beta_gamma_inverse_property(a, b):
    for fam, theta in [
        (Beta(), jnp.array([a, b])),
        (Gamma(), Gamma().from_usual(jnp.array([a, b]))),
    ]:
        close(fam.natural_parameters(fam.mean_parameters(theta)), theta, rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------ distances
def _curve_length(fam, path, num=2001):
    """Length of t -> path(t) in the Fisher metric, by Simpson's rule on a fine grid."""
    ts = jnp.linspace(0.0, 1.0, num)

    def speed(t):
        theta, velocity = jax.jvp(path, (t,), (jnp.ones_like(t),))
        return jnp.sqrt(velocity @ fam.fisher_information(theta) @ velocity)

    return scipy.integrate.simpson(np.asarray(jax.vmap(speed)(ts)), x=np.asarray(ts))


def test_normal_distance_against_poincare_half_plane():
    # Costa, Santos & Strapasson (2015), Eq. (7): with (mu/sqrt2, sigma) the normal manifold is
    # sqrt(2) times the Poincare half-plane, d = sqrt2 arccosh(1 + (dx^2 + dy^2) / (2 y1 y2)).
    fam = Normal()
    for (m1, s1), (m2, s2) in [
        ((0.0, 1.0), (1.0, 2.0)),
        ((-3.0, 0.2), (4.0, 5.0)),
        ((0.0, 1.0), (0.0, 3.0)),
    ]:
        dx = (m1 - m2) / np.sqrt(2)
        expected = np.sqrt(2) * np.arccosh(1 + (dx**2 + (s1 - s2) ** 2) / (2 * s1 * s2))
        close(
            fam.geodesic_distance(
                fam.from_usual(jnp.array([m1, s1])), fam.from_usual(jnp.array([m2, s2]))
            ),
            expected,
            rtol=1e-12,
        )


def test_closed_form_distances_equal_lengths_of_known_geodesics():
    # Second route: integrate the Fisher speed along the known geodesic: straight lines in
    # sqrt(lambda) (Poisson), log(lambda) (Exponential), great circles of sqrt(p) (Categorical,
    # Binomial: the sphere of radius 2, Amari & Nagaoka 2000, Sec. 2.5).
    pois = Poisson()
    path = lambda t: jnp.log(((1 - t) * jnp.sqrt(0.7) + t * jnp.sqrt(9.0)) ** 2)[None]
    close(pois.geodesic_distance(path(0.0), path(1.0)), _curve_length(pois, path), rtol=1e-9)
    expo = Exponential()
    path = lambda t: -jnp.exp((1 - t) * jnp.log(0.3) + t * jnp.log(5.0))[None]
    close(expo.geodesic_distance(path(0.0), path(1.0)), _curve_length(expo, path), rtol=1e-9)
    cat = Categorical(3)
    u, v = jnp.sqrt(jnp.array([0.7, 0.2, 0.1])), jnp.sqrt(jnp.array([0.1, 0.3, 0.6]))
    omega = jnp.arccos(u @ v)

    def sphere_path(t):
        s = (jnp.sin((1 - t) * omega) * u + jnp.sin(t * omega) * v) / jnp.sin(omega)
        return jnp.log(s[:-1] ** 2) - jnp.log(s[-1] ** 2)

    close(
        cat.geodesic_distance(sphere_path(0.0), sphere_path(1.0)),
        _curve_length(cat, sphere_path),
        rtol=1e-9,
    )
    bino = Binomial(5)
    p0, p1 = 0.1, 0.8
    w = jnp.arcsin(jnp.sqrt(jnp.array([p0, p1])))
    path = lambda t: (lambda s: jnp.log(s) - jnp.log1p(-s))(
        jnp.sin((1 - t) * w[0] + t * w[1]) ** 2
    )[None]
    close(bino.geodesic_distance(path(0.0), path(1.0)), _curve_length(bino, path), rtol=1e-9)
    bern = Bernoulli()
    close(
        bern.geodesic_distance(bern.from_usual(jnp.array([p0])), bern.from_usual(jnp.array([p1]))),
        bino.geodesic_distance(path(0.0), path(1.0)) / np.sqrt(5),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "name",
    [
        "bernoulli",
        "binomial",
        "poisson",
        "exponential",
        "normal",
        "categorical",
        "geometric",
        "multinomial",
    ],
)
def test_distance_small_separation_symmetry_and_gradient(name):
    fam, theta, _, _ = CASES[name]
    direction = jnp.linspace(0.3, 1.0, fam.dim) * jnp.where(jnp.arange(fam.dim) % 2 == 0, 1, -1)
    h = 1e-6
    local = h * jnp.sqrt(direction @ fam.fisher_information(theta) @ direction)
    close(fam.geodesic_distance(theta, theta + h * direction), local, rtol=1e-5)
    other = theta + 0.3 * direction
    close(fam.geodesic_distance(theta, other), fam.geodesic_distance(other, theta))
    assert fam.geodesic_distance(theta, theta) == 0
    grad = jax.grad(fam.geodesic_distance, argnums=1)(theta, theta)
    assert jnp.all(jnp.isfinite(grad))


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "fam,bad",
    [
        (Exponential(), jnp.array([0.5])),
        (Normal(), jnp.array([0.0, 1.0])),
        (Gamma(), jnp.array([-1.0, -1.0])),
        (Beta(), jnp.array([0.0, 1.0])),
        (Dirichlet(3), jnp.array([1.0, -1.0, 1.0])),
        (MultivariateNormal(2), jnp.array([0.0, 0.0, 1.0, 0.0, -1.0])),
        (NegativeBinomial(2.0), jnp.array([0.1])),
        (Poisson(), jnp.array([jnp.nan])),
    ],
)
def test_out_of_domain_theta_raises_eagerly_and_under_jit(fam, bad):
    with pytest.raises(Exception, match="outside the parameter domain"):
        fam.fisher_information(bad)
    with pytest.raises(Exception, match="outside the parameter domain"):
        jax.block_until_ready(eqx.filter_jit(fam.kl_divergence)(bad, bad))


@pytest.mark.parametrize(
    "fam,bad",
    [
        (Bernoulli(), jnp.array([1.0])),
        (Binomial(3), jnp.array([3.5])),
        (Poisson(), jnp.array([-1.0])),
        (Exponential(), jnp.array([0.0])),
        (Normal(), jnp.array([1.0, 0.5])),
        (Gamma(), jnp.array([2.0, 1.0])),
        (Beta(), jnp.array([-0.1, -0.1])),
        (Dirichlet(2), jnp.array([-0.1, -0.1])),
        (Categorical(3), jnp.array([0.6, 0.6])),
        (MultivariateNormal(1), jnp.array([1.0, 0.5])),
    ],
)
def test_out_of_mean_domain_eta_raises(fam, bad):
    with pytest.raises(Exception, match="mean domain"):
        fam.natural_parameters(bad)


def test_wrong_shapes_and_bad_constructor_arguments():
    with pytest.raises(ValueError, match="shape"):
        Normal().fisher_information(jnp.zeros(3))
    with pytest.raises(ValueError, match="1-D"):
        Poisson().fisher_information(jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match="num_classes"):
        Categorical(1)
    with pytest.raises(ValueError, match="num_trials"):
        Binomial(0)
    with pytest.raises(ValueError, match="shape"):
        MultivariateNormal(2).from_mean_covariance(jnp.zeros(3), jnp.eye(2))


# ------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("name", NAMES)
def test_sample_shape_and_mean(name):
    # Sample mean of T(x) within 5 standard errors of eta (n = 4000, seeded).
    fam, theta, _, _ = CASES[name]
    n = 4000
    x = fam.sample(theta, jax.random.PRNGKey(1), (n,))
    assert x.shape[0] == n
    t = jax.vmap(fam.sufficient_statistic)(x)
    eta = fam.mean_parameters(theta)
    stderr = jnp.sqrt(jnp.diag(fam.fisher_information(theta)) / n)
    assert jnp.all(jnp.abs(jnp.mean(t, axis=0) - eta) <= 5 * stderr)


# ------------------------------------------------------------------------------ transformations
@pytest.mark.parametrize("name", NAMES)
def test_jit_vmap_grad(name):
    fam, theta, _, _ = CASES[name]
    batch = jnp.stack([theta, theta, theta])
    fisher = jax.jit(jax.vmap(fam.fisher_information))(batch)
    close(fisher[1], fam.fisher_information(theta))
    close(jax.grad(fam.log_partition)(theta), fam.mean_parameters(theta))
    eta = fam.mean_parameters(theta)
    # d theta / d eta = g^{-1} through the (closed-form or Newton) inverse.
    jac = jax.jacfwd(fam.natural_parameters)(eta)
    close(jac, jnp.linalg.inv(fam.fisher_information(theta)), rtol=1e-8, atol=1e-9)
    close(jax.jit(fam.kl_divergence)(theta, theta), 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_float32_smoke(name):
    fam, theta, _, _ = CASES[name]
    theta32 = jnp.asarray(theta, jnp.float32)
    g = fam.fisher_information(theta32)
    assert g.dtype == jnp.float32
    close(g, fam.fisher_information(theta), rtol=1e-4, atol=1e-5)
    eta = fam.mean_parameters(theta32)
    assert eta.dtype == jnp.float32
    close(fam.natural_parameters(eta), theta, rtol=1e-3, atol=1e-3)


CLOSED_FORM_DISTANCES = [
    "bernoulli",
    "binomial",
    "poisson",
    "exponential",
    "normal",
    "categorical",
    "geometric",
    "multinomial",
    "diagnormal",
]


@pytest.mark.parametrize("name", CLOSED_FORM_DISTANCES)
def test_closed_form_distance_accepts_the_base_signature(name):
    # The closed forms are reached through the base method and its keywords, so code
    # written against the base class (solver=, throw=) runs on every family.
    from infogeo_jax.geometry import GeodesicSolver

    fam, theta = CASES[name][0], CASES[name][1]
    other = 1.2 * theta + 0.05  # inside every natural domain used here
    plain = fam.geodesic_distance(theta, other)
    keyed = fam.geodesic_distance(theta, other, solver=GeodesicSolver(), throw=False)
    np.testing.assert_allclose(keyed, plain, rtol=RTOL, atol=ATOL)
    assert float(plain) > 0.0


@pytest.mark.parametrize("name", CLOSED_FORM_DISTANCES)
def test_distance_closed_form_route_equals_numerical_route(name):
    # method="closed_form" (the published formula) against method="numerical" (the shooting
    # solve of the Levi-Civita geodesic on the autodiff metric): two independent routes.
    fam, theta = CASES[name][0], CASES[name][1]
    route = jax.jit(
        lambda a, b: (
            fam.geodesic_distance(a, b, method="closed_form"),
            fam.geodesic_distance(a, b, method="numerical"),
            fam.geodesic_distance(a, b),
        )
    )
    for other in (1.2 * theta + 0.05, 0.7 * theta - 0.1):
        closed, numerical, auto = route(theta, other)
        np.testing.assert_allclose(closed, numerical, rtol=1e-9, atol=1e-12)
        assert auto == closed
        assert float(closed) > 0.0


def test_distance_method_errors():
    gamma = Gamma()
    a, b = gamma.from_usual(jnp.array([2.0, 1.0])), gamma.from_usual(jnp.array([3.0, 1.5]))
    with pytest.raises(ValueError, match="Gamma has no closed-form geodesic distance"):
        gamma.geodesic_distance(a, b, method="closed_form")
    with pytest.raises(ValueError, match="`method` of geodesic_distance must be one of"):
        Normal().geodesic_distance(a, b, method="exact")  # type: ignore[arg-type]
    # Without a closed form, "auto" and "numerical" are the same solve.
    close(gamma.geodesic_distance(a, b), gamma.geodesic_distance(a, b, method="numerical"))


@pytest.mark.parametrize("name", ["normal", "gamma", "beta", "categorical"])
def test_scalar_curvature_closed_form_route_equals_numerical_route(name):
    # The closed-form sectional curvature (normal -1/2, categorical 1/4: a sphere of radius 2,
    # gamma and beta: Le Brigant, Preston & Puechmorel 2021) against the contraction of g and T
    # from autodiff of the log-partition.
    fam, theta = CASES[name][0], CASES[name][1]
    routes = jax.jit(
        lambda th, a: (
            fam.scalar_curvature(th, a, method="closed_form"),
            fam.scalar_curvature(th, a, method="numerical"),
            fam.scalar_curvature(th, a),
        )
    )
    for alpha in (0.0, 0.5):
        closed, numerical, auto = routes(theta, jnp.asarray(alpha))
        close(closed, numerical, rtol=1e-9, atol=1e-12)
        assert auto == closed


def test_scalar_curvature_method_errors():
    poisson, theta = CASES["poisson"][0], CASES["poisson"][1]
    with pytest.raises(ValueError, match="Poisson has no closed-form scalar curvature"):
        poisson.scalar_curvature(theta, method="closed_form")
    with pytest.raises(ValueError, match="`method` of scalar_curvature must be one of"):
        poisson.scalar_curvature(theta, method="autodiff")  # type: ignore[arg-type]
    chart = Normal().reparameterize(Normal().from_usual)
    with pytest.raises(ValueError, match="no closed-form scalar curvature"):
        chart.scalar_curvature(jnp.array([0.3, 1.7]), method="closed_form")


# ------------------------------------------------------------------------------ usual charts
def _vech_basis_metric(mean, cov):
    # Skovgaard (1984): g(dmu, dmu) = dmu^T S^-1 dmu, g(dS, dS') = 1/2 tr(S^-1 dS S^-1 dS'),
    # no cross term; evaluated on the coordinate basis of (mean, vech(cov)).
    d = mean.shape[0]
    prec = np.linalg.inv(cov)
    rows, cols = np.tril_indices(d)
    basis = []
    for r, c in zip(rows, cols):
        e = np.zeros((d, d))
        e[r, c] = e[c, r] = 1.0
        basis.append(e)
    m = len(basis)
    g = np.zeros((d + m, d + m))
    g[:d, :d] = prec
    for a in range(m):
        for b in range(m):
            g[d + a, d + b] = 0.5 * np.trace(prec @ basis[a] @ prec @ basis[b])
    return g


def _published_usual_fisher():
    k, rate, a, b, mu, s = 2.5, 1.5, 0.7, 2.0, 0.7, 2.0
    p3 = np.array([0.2, 0.3, 0.5])
    simplex = np.diag(1 / p3[:-1]) + 1 / p3[-1]  # in the first k-1 probabilities
    alpha = np.array([0.5, 1.0, 4.0])
    cov = np.array([[1.5, 0.4], [0.4, 0.8]])
    return [
        # Rao (1945); Amari & Nagaoka (2000), Sec. 2.3: diag(1, 2) / sigma^2 in (mu, sigma).
        ("normal", Normal(), Normal().from_usual, [mu, s], np.diag([1.0, 2.0]) / s**2),
        # Minka, Estimating a Gamma distribution (2002): [[psi1(k), -1/b], [-1/b, k/b^2]].
        (
            "gamma",
            Gamma(),
            Gamma().from_usual,
            [k, rate],
            np.array([[sp.polygamma(1, k), -1 / rate], [-1 / rate, k / rate**2]]),
        ),
        # Johnson, Kotz & Balakrishnan, Continuous Univariate Distributions 2 (1995), Sec. 25.4.
        (
            "beta",
            Beta(),
            Beta().from_usual,
            [a, b],
            np.diag(sp.polygamma(1, [a, b])) - sp.polygamma(1, a + b),
        ),
        # Bernoulli / binomial / Poisson / exponential / geometric / negative binomial in their
        # usual parameter (Casella & Berger, Statistical Inference (2002), Sec. 7.3).
        ("bernoulli", Bernoulli(), Bernoulli().from_usual, [0.3], [[1 / (0.3 * 0.7)]]),
        ("binomial", Binomial(7), Binomial(7).from_usual, [0.3], [[7 / (0.3 * 0.7)]]),
        ("poisson", Poisson(), Poisson().from_usual, [3.5], [[1 / 3.5]]),
        ("exponential", Exponential(), Exponential().from_usual, [2.0], [[1 / 4.0]]),
        ("geometric", Geometric(), Geometric().from_usual, [0.4], [[1 / (0.16 * 0.6)]]),
        (
            "negbinomial",
            NegativeBinomial(2.5),
            NegativeBinomial(2.5).from_usual,
            [0.4],
            [[2.5 / (0.16 * 0.6)]],
        ),
        # Multinomial in the first k-1 probabilities: n (diag(1/p) + 1/p_k) (Rao 1945).
        (
            "categorical",
            Categorical(3),
            lambda q: Categorical(3).from_usual(jnp.append(q, 1 - jnp.sum(q))),
            p3[:-1],
            simplex,
        ),
        (
            "multinomial",
            Multinomial(6, 3),
            lambda q: Multinomial(6, 3).from_usual(jnp.append(q, 1 - jnp.sum(q))),
            p3[:-1],
            6 * simplex,
        ),
        # Dirichlet: diag(psi1(alpha)) - psi1(alpha_0) (Minka 2000, Eq. 12).
        (
            "dirichlet",
            Dirichlet(3),
            Dirichlet(3).from_usual,
            alpha,
            np.diag(sp.polygamma(1, alpha)) - sp.polygamma(1, alpha.sum()),
        ),
        # Product of normal planes: diag(1/sigma^2, 2/sigma^2) per coordinate.
        (
            "diagnormal",
            DiagonalNormal(2),
            DiagonalNormal(2).from_usual,
            [0.5, -1.0, 1.5, 0.7],
            np.diag([1 / 1.5**2, 1 / 0.7**2, 2 / 1.5**2, 2 / 0.7**2]),
        ),
        (
            "mvn",
            MultivariateNormal(2),
            MultivariateNormal(2).from_usual,
            [0.3, -0.2, 1.5, 0.4, 0.8],
            _vech_basis_metric(np.array([0.3, -0.2]), cov),
        ),
    ]


USUAL = _published_usual_fisher()


@pytest.mark.parametrize("case", USUAL, ids=[c[0] for c in USUAL])
def test_fisher_in_usual_chart_is_the_published_one(case):
    _, fam, to_theta, usual, expected = case
    chart = fam.reparameterize(to_theta)
    u = jnp.asarray(usual, dtype=jnp.float64)
    close(eqx.filter_jit(chart.fisher_information)(u), expected, rtol=1e-12, atol=1e-12)
    # Second route: the pull-back by hand, J^T g J with J from jax.jacfwd.
    jac = jax.jacfwd(to_theta)(u)
    close(chart.metric(u), jac.T @ fam.fisher_information(to_theta(u)) @ jac, rtol=1e-13)


def test_normal_usual_chart_christoffel_and_curvature():
    # Levi-Civita symbols of diag(1, 2) / sigma^2 in (mu, sigma) (Costa, Santos & Strapasson,
    # Discrete Appl. Math. 197 (2015), Sec. 3): G^mu_{mu s} = -1/s, G^s_{mu mu} = 1/(2 s),
    # G^s_{s s} = -1/s, the rest zero; scalar curvature -1.
    fam = Normal()
    chart = fam.reparameterize(fam.from_usual)
    s = 1.7
    u = jnp.array([0.3, s])
    expected = np.zeros((2, 2, 2))
    expected[0, 0, 1] = expected[0, 1, 0] = -1 / s
    expected[1, 0, 0] = 1 / (2 * s)
    expected[1, 1, 1] = -1 / s
    close(eqx.filter_jit(chart.christoffel_symbols)(u), expected, rtol=1e-12, atol=1e-12)
    close(eqx.filter_jit(chart.scalar_curvature)(u), -1.0, rtol=1e-12, atol=1e-12)
    # The skewness tensor is a tensor: its pull-back agrees with the model route's value
    # E[s^3] in (mu, sigma): T_{mu mu s} = 2 / s^3, T_{s s s} = 8 / s^3.
    t = chart.skewness_tensor(u)
    close(t[0, 0, 1], 2 / s**3)
    close(t[1, 1, 1], 8 / s**3)


def test_tangent_conversions_are_inverse_jacobians():
    fam = Gamma()
    u = jnp.array([2.5, 1.5])
    v = jnp.array([0.3, -0.7])
    theta = fam.from_usual(u)
    dtheta = fam.tangent_from_usual(u, v)
    close(dtheta, jax.jacfwd(fam.from_usual)(u) @ v)
    close(fam.tangent_to_usual(theta, dtheta), v)
    # Norms agree in both charts (the metric is a tensor).
    chart = fam.reparameterize(fam.from_usual)
    close(chart.norm(u, v), fam.norm(theta, dtheta))
    with pytest.raises(ValueError, match="shape"):
        fam.tangent_from_usual(u, jnp.ones(3))


def test_usual_coordinates_take_arrays_only():
    with pytest.raises(ValueError, match="usual"):
        Normal().from_usual(jnp.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="usual"):
        Poisson().from_usual(jnp.array(2.0))


def test_new_family_distances_match_curve_lengths():
    # Geometric: ds = dp / (p sqrt(1 - p)); length by quadrature of sqrt(g) in p.
    fam = Geometric()
    p0, p1 = 0.2, 0.7
    length = scipy.integrate.quad(lambda p: 1 / (p * np.sqrt(1 - p)), p0, p1, epsabs=1e-13)[0]
    d = fam.geodesic_distance(fam.from_usual(jnp.array([p0])), fam.from_usual(jnp.array([p1])))
    close(d, length, rtol=1e-11)
    # Multinomial(n): sqrt(n) times the categorical distance (the sphere of radius 2 sqrt n).
    p, q = jnp.array([0.2, 0.3, 0.5]), jnp.array([0.6, 0.1, 0.3])
    multi, cat = Multinomial(6, 3), Categorical(3)
    close(
        multi.geodesic_distance(multi.from_usual(p), multi.from_usual(q)),
        np.sqrt(6) * cat.geodesic_distance(cat.from_usual(p), cat.from_usual(q)),
    )
    # Diagonal normal: the root sum of squares of the univariate distances.
    diag, normal = DiagonalNormal(2), Normal()
    a, b = jnp.array([0.0, 1.0, 1.0, 0.5]), jnp.array([1.0, -1.0, 2.0, 0.7])
    each = [
        normal.geodesic_distance(
            normal.from_usual(jnp.array([a[i], a[2 + i]])),
            normal.from_usual(jnp.array([b[i], b[2 + i]])),
        )
        for i in range(2)
    ]
    close(diag.geodesic_distance(diag.from_usual(a), diag.from_usual(b)), np.hypot(*each))
    # The diagonal normal's scalar curvature is -1 per coordinate plane.
    curvature = eqx.filter_jit(diag.reparameterize(diag.from_usual).scalar_curvature)(a)
    close(curvature, -2.0, rtol=1e-10)


def test_reparameterize_method_routes_agree():
    # closed_form: the family's closed-form metric and distance; numerical: Hessian of A by
    # autodiff and shooting in (mu, sigma). Costa, Santos & Strapasson (2015), Eq. (7).
    fam = Normal()
    closed = fam.reparameterize(fam.from_usual)
    numerical = fam.reparameterize(fam.from_usual, method="numerical")
    u0, u1 = jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0])
    close(closed.metric(u0), numerical.metric(u0), rtol=1e-13)
    expected = fam.geodesic_distance(fam.from_usual(u0), fam.from_usual(u1))
    close(closed.geodesic_distance(u0, u1), expected, rtol=1e-13)
    close(eqx.filter_jit(numerical.geodesic_distance)(u0, u1), expected, rtol=1e-8)
    with pytest.raises(ValueError, match="method"):
        fam.reparameterize(fam.from_usual, method="exact")
