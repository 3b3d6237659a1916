"""Distributions of numpyro, distrax and TFP-on-JAX as sources of geometry, and back.

TFP 0.25's JAX substrate (and distrax, built on it) reads ``jax.interpreters.xla
.pytype_aval_mappings``, which jax 0.4.36+ no longer has; ``tfp-nightly`` reads the new location.
The test-only shim below restores the attribute (an alias of ``jax.core``'s mapping) before
importing them; the library itself never imports TFP or distrax for ``from_distribution``.
"""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp

from infogeo_jax import FiniteSupport, MonteCarlo, Quadrature, StatisticalModel
from infogeo_jax._distributions import DistributionSampler
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
    Normal,
    Poisson,
)

nd = pytest.importorskip("numpyro.distributions")

EULER = 0.5772156649015329


def _tfp_and_distrax():
    from jax.interpreters import xla

    if "pytype_aval_mappings" not in vars(xla):
        from jax._src import core

        xla.pytype_aval_mappings = core.pytype_aval_mappings
    try:
        import distrax
        import tensorflow_probability.substrates.jax.distributions as tfd
    except Exception as error:  # pragma: no cover - depends on the installation
        return None, None, repr(error)
    return tfd, distrax, None


tfd, distrax, _IMPORT_ERROR = _tfp_and_distrax()
needs_tfp = pytest.mark.skipif(tfd is None, reason=f"TFP-on-JAX does not import: {_IMPORT_ERROR}")


def close(actual, expected, rtol=1e-10, atol=1e-10):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _simplex(p):
    return jnp.append(p, 1.0 - jnp.sum(p))


def _cat_theta(p):
    return Categorical(3).from_usual(_simplex(p))


# name -> (numpyro, TFP, distrax constructors of theta, the family, its to_theta, rule, point)
def _cases():
    cases = {
        "normal": (
            lambda t: nd.Normal(t[0], t[1]),
            lambda t: tfd.Normal(t[0], t[1]),
            lambda t: distrax.Normal(t[0], t[1]),
            Normal(),
            Normal().from_usual,
            Quadrature,
            [0.4, 1.7],
        ),
        "gamma": (
            lambda t: nd.Gamma(t[0], t[1]),
            lambda t: tfd.Gamma(t[0], t[1]),
            lambda t: distrax.Gamma(t[0], t[1]),
            Gamma(),
            Gamma().from_usual,
            Quadrature,
            [2.5, 1.5],
        ),
        "beta": (
            lambda t: nd.Beta(t[0], t[1]),
            lambda t: tfd.Beta(t[0], t[1]),
            lambda t: distrax.Beta(t[0], t[1]),
            Beta(),
            Beta().from_usual,
            Quadrature,
            [2.5, 3.5],
        ),
        "bernoulli": (
            lambda t: nd.Bernoulli(probs=t[0]),
            lambda t: tfd.Bernoulli(probs=t[0]),
            lambda t: distrax.Bernoulli(probs=t[0]),
            Bernoulli(),
            Bernoulli().from_usual,
            FiniteSupport,
            [0.3],
        ),
        "binomial": (
            lambda t: nd.Binomial(7, probs=t[0]),
            lambda t: tfd.Binomial(7.0, probs=t[0]),
            None,  # distrax has no binomial
            Binomial(7),
            Binomial(7).from_usual,
            FiniteSupport,
            [0.3],
        ),
        "categorical": (
            lambda t: nd.Categorical(probs=_simplex(t)),
            lambda t: tfd.Categorical(probs=_simplex(t)),
            lambda t: distrax.Categorical(probs=_simplex(t)),
            Categorical(3),
            _cat_theta,
            FiniteSupport,
            [0.2, 0.5],
        ),
    }
    return cases


CASES = _cases()
EXACT = list(CASES)


def _check_exact(make, name):
    _, _, _, family, to_theta, rule, point = CASES[name]
    u = jnp.asarray(point)
    model = StatisticalModel.from_distribution(make, example=u)
    assert isinstance(model.expectation, rule)
    expected = family.reparameterize(to_theta).fisher_information(u)
    close(eqx.filter_jit(model.fisher_information)(u), expected)
    return model


@pytest.mark.parametrize("name", EXACT)
def test_numpyro_exact_rules_give_pulled_back_family_fisher(name):
    _check_exact(CASES[name][0], name)


@needs_tfp
@pytest.mark.parametrize("name", EXACT)
def test_tfp_exact_rules_give_pulled_back_family_fisher(name):
    _check_exact(CASES[name][1], name)


@needs_tfp
@pytest.mark.parametrize("name", ["normal", "gamma", "bernoulli", "categorical"])
def test_distrax_exact_rules_give_pulled_back_family_fisher(name):
    _check_exact(CASES[name][2], name)


def _check_monte_carlo(make, family, to_theta, point, num_samples=4096):
    u = jnp.asarray(point)
    model = StatisticalModel.from_distribution(make, example=u, num_samples=num_samples)
    assert isinstance(model.expectation, MonteCarlo)
    fisher = eqx.filter_jit(model.fisher_information)(u)
    score = jax.grad(model.log_density_fn)

    def outer(x):
        s = score(u, x)
        return jnp.outer(s, s)

    stderr = eqx.filter_jit(model.expectation.standard_error)(outer, u, model.log_density_fn)
    expected = family.reparameterize(to_theta).fisher_information(u)
    # Five standard errors elementwise (the estimate is unbiased).
    assert np.all(np.abs(np.asarray(fisher - expected)) <= 5 * np.asarray(stderr) + 1e-12)
    return model


def test_numpyro_poisson_monte_carlo_and_exact_rule():
    u = jnp.array([3.5])
    make = lambda t: nd.Poisson(t[0])
    _check_monte_carlo(make, Poisson(), Poisson().from_usual, [3.5])
    # With a finite rule the same model is exact (tail mass beyond 80 below 1e-50).
    rule = FiniteSupport(jnp.arange(80), normalization_tolerance=1e-12)
    model = StatisticalModel.from_distribution(make, rule)
    close(eqx.filter_jit(model.fisher_information)(u), [[1.0 / 3.5]])  # 1 / lambda


def test_numpyro_dirichlet_monte_carlo():
    _check_monte_carlo(
        lambda t: nd.Dirichlet(t), Dirichlet(3), Dirichlet(3).from_usual, [2.0, 3.0, 4.0]
    )


@needs_tfp
def test_tfp_poisson_and_distrax_dirichlet_monte_carlo():
    _check_monte_carlo(lambda t: tfd.Poisson(rate=t[0]), Poisson(), Poisson().from_usual, [3.5])
    _check_monte_carlo(
        lambda t: distrax.Dirichlet(t), Dirichlet(3), Dirichlet(3).from_usual, [2.0, 3.0, 4.0]
    )


def test_numpyro_multivariate_normal_monte_carlo():
    # (mean, vech(covariance)) -> numpyro's MultivariateNormal; the family in the same chart.
    mvn = MultivariateNormal(2)

    def make(u):
        cov = jnp.array([[u[2], u[3]], [u[3], u[4]]])
        return nd.MultivariateNormal(u[:2], covariance_matrix=cov)

    _check_monte_carlo(make, mvn, mvn.from_usual, [0.3, -0.2, 1.5, 0.4, 0.8], num_samples=8192)


def _curvature(make, point=(0.3, 1.6)):
    model = StatisticalModel.from_distribution(make, example=jnp.asarray(point))
    return eqx.filter_jit(model.scalar_curvature)(jnp.asarray(point))


def test_normal_scalar_curvature_is_minus_one_numpyro():
    close(_curvature(lambda t: nd.Normal(t[0], t[1])), -1.0, rtol=1e-8, atol=1e-8)


@needs_tfp
def test_normal_scalar_curvature_is_minus_one_tfp_and_distrax():
    close(_curvature(lambda t: tfd.Normal(t[0], t[1])), -1.0, rtol=1e-8, atol=1e-8)
    close(_curvature(lambda t: distrax.Normal(t[0], t[1])), -1.0, rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------------ published Fisher matrices
def _fisher(make, point):
    model = StatisticalModel.from_distribution(make, example=jnp.asarray(point))
    assert isinstance(model.expectation, Quadrature)
    return eqx.filter_jit(model.fisher_information)(jnp.asarray(point))


def test_student_t_published_fisher():
    # Lange, Little & Taylor, JASA 84 (1989), Eq. (A.2)-(A.3), in (nu, mu, sigma):
    # I_mumu = (nu+1) / ((nu+3) s^2), I_ss = 2 nu / ((nu+3) s^2), I_nus = -2 / (s (nu+1)(nu+3)),
    # I_nunu = [psi1(nu/2) - psi1((nu+1)/2)] / 4 - (nu+5) / (2 nu (nu+1)(nu+3)).
    nu, mu, s = 4.0, 0.3, 1.7
    i_nn = 0.25 * (sp.polygamma(1, nu / 2) - sp.polygamma(1, (nu + 1) / 2))
    i_nn -= (nu + 5) / (2 * nu * (nu + 1) * (nu + 3))
    i_ns = -2 / (s * (nu + 1) * (nu + 3))
    expected = np.array(
        [
            [i_nn, 0.0, i_ns],
            [0.0, (nu + 1) / ((nu + 3) * s**2), 0.0],
            [i_ns, 0.0, 2 * nu / ((nu + 3) * s**2)],
        ]
    )
    close(_fisher(lambda t: nd.StudentT(t[0], t[1], t[2]), [nu, mu, s]), expected, 1e-9, 1e-9)


def test_von_mises_published_fisher():
    # Mardia & Jupp, Directional Statistics (2000), Sec. 5.3.3 / 12.3: in (mu, kappa),
    # diag(kappa A(kappa), A'(kappa)) with A = I1 / I0 and A' = 1 - A / kappa - A^2.
    mu, kappa = 0.5, 2.0
    a = sp.i1e(kappa) / sp.i0e(kappa)
    expected = np.diag([kappa * a, 1 - a / kappa - a**2])
    close(_fisher(lambda t: nd.VonMises(t[0], t[1]), [mu, kappa]), expected, 1e-9, 1e-9)


def test_log_normal_published_fisher():
    # log X ~ N(mu, sigma^2), so the Fisher metric is the normal's: diag(1, 2) / sigma^2
    # (Johnson, Kotz & Balakrishnan, Continuous Univariate Distributions 1 (1994), Sec. 14.4).
    mu, sigma = 0.2, 0.8
    expected = np.diag([1.0, 2.0]) / sigma**2
    close(_fisher(lambda t: nd.LogNormal(t[0], t[1]), [mu, sigma]), expected, 1e-9, 1e-9)


def test_weibull_published_fisher():
    # Rinne, The Weibull Distribution: A Handbook (2009), Eq. (11.14), in (scale b, shape c):
    # I_bb = (c / b)^2, I_bc = -(1 - gamma) / b, I_cc = ((1 - gamma)^2 + pi^2 / 6) / c^2.
    b, c = 1.3, 2.2
    expected = np.array(
        [
            [(c / b) ** 2, -(1 - EULER) / b],
            [-(1 - EULER) / b, ((1 - EULER) ** 2 + np.pi**2 / 6) / c**2],
        ]
    )
    close(_fisher(lambda t: nd.Weibull(t[0], t[1]), [b, c]), expected, 1e-9, 1e-9)


# ------------------------------------------------------------------------ transformations, errors
@pytest.fixture(scope="module")
def normal_model():
    make = lambda t: nd.Normal(t[0], t[1])
    return StatisticalModel.from_distribution(make, example=jnp.array([0.0, 1.0]))


def test_jit_vmap_grad(normal_model):
    points = jnp.array([[0.0, 1.0], [1.0, 2.5]])
    fisher = eqx.filter_jit(jax.vmap(normal_model.fisher_information))(points)
    expected = jax.vmap(lambda u: jnp.diag(jnp.array([1.0, 2.0])) / u[1] ** 2)(points)
    close(fisher, expected)
    # d/dsigma log det g = -4 / sigma.
    grad = eqx.filter_jit(
        jax.grad(lambda u: jnp.linalg.slogdet(normal_model.fisher_information(u))[1])
    )
    close(grad(jnp.array([0.3, 2.0])), [0.0, -2.0])


def test_parameters_outside_support_raise(normal_model):
    bad = jnp.array([0.0, -1.0])
    with pytest.raises(Exception, match="outside the parameter domain"):
        eqx.filter_jit(normal_model.fisher_information)(bad)
    with pytest.raises(Exception, match="outside the parameter domain|invalid scale"):
        normal_model.fisher_information(bad)


def test_static_misuse_errors():
    with pytest.raises(ValueError, match="example"):
        StatisticalModel.from_distribution(lambda t: nd.Normal(t[0], t[1]))
    with pytest.raises(TypeError, match="numpyro, distrax or TFP"):
        StatisticalModel.from_distribution(lambda t: t, example=jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="batch_shape"):
        StatisticalModel.from_distribution(lambda t: nd.Normal(t, 1.0), example=jnp.zeros(2))


def test_independent_event_goes_to_monte_carlo():
    make = lambda t: nd.Normal(t, 1.0).to_event(1)
    model = StatisticalModel.from_distribution(make, example=jnp.zeros(2), num_samples=8)
    assert isinstance(model.expectation, MonteCarlo)
    # numpyro's Normal has a reparameterized sampler: chosen, and visible in the repr.
    assert model.expectation.reparameterized
    assert "reparameterized=True" in repr(model.expectation)
    poisson = StatisticalModel.from_distribution(
        lambda t: nd.Poisson(t[0]), example=jnp.array([2.0]), num_samples=8
    )
    assert isinstance(poisson.expectation, MonteCarlo)
    assert not poisson.expectation.reparameterized


def _forced_monte_carlo(reparameterized, num_samples, key):
    make = lambda t: nd.Normal(t[0], t[1])
    sampler = DistributionSampler(make, reparameterized=reparameterized)
    rule = MonteCarlo(sampler, num_samples, key, reparameterized=reparameterized)
    return StatisticalModel.from_distribution(make, expectation=rule)


def test_reparameterized_sampler_refused_where_absent():
    sampler = DistributionSampler(lambda t: nd.Poisson(t[0]), reparameterized=True)
    with pytest.raises(ValueError, match="no reparameterized sampler"):
        sampler(jnp.array([2.0]), jax.random.key(0), 4)
    with pytest.raises(TypeError, match="bool"):
        MonteCarlo(sampler, 4, jax.random.key(0), reparameterized=1)  # type: ignore[arg-type]


# Spread of sqrt(n) * (estimate - truth) for the normal in (mu, sigma) at n = 1024, measured over
# 16 keys (max |Gamma error| and std of the scalar-curvature error, rounded up): the tolerances
# below are 4 of these spreads / sqrt(n). Likelihood-ratio derivatives are noisier than pathwise.
MC_SPREAD = {
    False: {"christoffel": 6.0, "curvature": 8.0},
    True: {"christoffel": 2.0, "curvature": 3.5},
}


# The likelihood-ratio case differentiates the weights three times for the curvature (slow to
# compile); the fast selection keeps the pathwise case, and other tests cover the weights.
@pytest.mark.parametrize("reparameterized", [pytest.param(False, marks=pytest.mark.slow), True])
def test_monte_carlo_normal_geometry_in_both_modes(reparameterized):
    # Closed forms in (mu, sigma) (Amari & Nagaoka 2000, sec. 2.3; Costa, Santos & Strapasson,
    # "Fisher information distance", Discrete Appl. Math. 197 (2015)): g = diag(1, 2) / sigma^2,
    # Gamma^mu_{mu sigma} = -1/sigma, Gamma^sigma_{mu mu} = 1/(2 sigma),
    # Gamma^sigma_{sigma sigma} = -1/sigma, scalar curvature -1.
    n = 4096
    model = _forced_monte_carlo(reparameterized, n, jax.random.key(1))
    u = jnp.array([0.3, 1.7])
    fisher, gamma, curvature = eqx.filter_jit(
        lambda th: (
            model.fisher_information(th),
            model.christoffel_symbols(th),
            model.scalar_curvature(th),
        )
    )(u)
    s = u[1]
    expected_gamma = jnp.zeros((2, 2, 2))
    expected_gamma = expected_gamma.at[0, 0, 1].set(-1 / s).at[0, 1, 0].set(-1 / s)
    expected_gamma = expected_gamma.at[1, 0, 0].set(1 / (2 * s)).at[1, 1, 1].set(-1 / s)
    # Second route: the catalogue family pulled back to (mu, sigma).
    family = Normal().reparameterize(Normal().from_usual)
    np.testing.assert_allclose(
        family.christoffel_symbols(u), expected_gamma, rtol=1e-12, atol=1e-12
    )
    score = jax.grad(model.log_density_fn)
    outer = lambda x: jnp.outer(score(u, x), score(u, x))
    stderr = eqx.filter_jit(model.expectation.standard_error)(outer, u, model.log_density_fn)
    expected_fisher = jnp.diag(jnp.array([1.0, 2.0])) / s**2
    assert np.all(np.abs(np.asarray(fisher - expected_fisher)) <= 5 * np.asarray(stderr) + 1e-12)
    spread = MC_SPREAD[reparameterized]
    np.testing.assert_allclose(
        gamma, expected_gamma, rtol=0, atol=4 * spread["christoffel"] / np.sqrt(n)
    )
    np.testing.assert_allclose(curvature, -1.0, rtol=0, atol=4 * spread["curvature"] / np.sqrt(n))


def test_pathwise_gradient_variance_not_above_likelihood_ratio():
    # d/dtheta E_theta[x] = (1, 0) for the normal in (mu, sigma): per-sample gradient estimates
    # (one draw each, many keys) have variance (0, 1) pathwise (dx/dtheta = (1, eps)), larger
    # under likelihood-ratio weights (x * score).
    u = jnp.array([0.3, 1.7])
    keys = jax.random.split(jax.random.key(2), 2000)

    def per_sample(reparameterized):
        @eqx.filter_jit
        @jax.vmap
        def grads(key):
            model = _forced_monte_carlo(reparameterized, 1, key)
            mean = lambda th: model.expectation.expect(lambda x: x, th, model.log_density_fn)
            return jax.grad(mean)(u)

        return grads(keys)

    pathwise, lr = per_sample(True), per_sample(False)
    np.testing.assert_allclose(pathwise.mean(0), [1.0, 0.0], atol=0.1)
    np.testing.assert_allclose(lr.mean(0), [1.0, 0.0], atol=0.3)
    assert np.all(np.var(pathwise, 0) <= np.var(lr, 0))


def test_libraries_are_not_imported_by_infogeo_jax():
    code = (
        "import sys, infogeo_jax; "
        "bad = [m for m in ('numpyro', 'distrax', 'tensorflow_probability') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ the reverse direction
REVERSE = [
    (Normal(), Normal().from_usual(jnp.array([0.4, 1.7])), [-1.0, 0.3, 2.5]),
    (Gamma(), Gamma().from_usual(jnp.array([2.5, 1.5])), [0.2, 1.0, 4.0]),
    (Beta(), Beta().from_usual(jnp.array([0.7, 2.0])), [0.1, 0.5, 0.9]),
    (Dirichlet(3), jnp.array([0.5, 1.0, 4.0]), [[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]]),
    (Bernoulli(), Bernoulli().from_usual(jnp.array([0.3])), [0, 1]),
    (Categorical(4), Categorical(4).from_usual(jnp.array([0.1, 0.2, 0.3, 0.4])), [0, 2, 3]),
    (Poisson(), Poisson().from_usual(jnp.array([3.5])), [0, 2, 9]),
    (Binomial(7), Binomial(7).from_usual(jnp.array([0.3])), [0, 3, 7]),
    (Exponential(), Exponential().from_usual(jnp.array([2.0])), [0.1, 2.0]),
    (
        MultivariateNormal(2),
        MultivariateNormal(2).from_usual(jnp.array([0.3, -0.2, 1.5, 0.4, 0.8])),
        [[0.0, 0.0], [1.0, -2.0]],
    ),
    (Geometric(), Geometric().from_usual(jnp.array([0.4])), [0, 1, 7]),
    (
        Multinomial(6, 3),
        Multinomial(6, 3).from_usual(jnp.array([0.2, 0.3, 0.5])),
        [[1.0, 2.0, 3.0], [6.0, 0.0, 0.0]],
    ),
    (
        DiagonalNormal(2),
        DiagonalNormal(2).from_usual(jnp.array([0.5, -1.0, 1.5, 0.7])),
        [[0.1, 0.2], [2.0, -2.5]],
    ),
]
IDS = [type(f).__name__ for f, _, _ in REVERSE]


def _check_reverse(library, family, theta, xs):
    try:
        d = family.to_distribution(theta, library=library)
    except NotImplementedError as error:
        assert library == "distrax"  # distrax lacks Poisson, Binomial, Exponential, Geometric
        assert "has no" in str(error)
        return
    for x in xs:
        x = jnp.asarray(x)
        close(d.log_prob(x), family.log_prob(theta, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family,theta,xs", REVERSE, ids=IDS)
def test_to_distribution_numpyro_log_prob(family, theta, xs):
    _check_reverse("numpyro", family, theta, xs)


@needs_tfp
@pytest.mark.parametrize("library", ["tfp", "distrax"])
def test_to_distribution_tfp_distrax_log_prob(library):
    for family, theta, xs in REVERSE:
        _check_reverse(library, family, theta, xs)


def test_to_distribution_unknown_library():
    with pytest.raises(ValueError, match="library"):
        Normal().to_distribution(jnp.array([0.0, -0.5]), library="pyro")
