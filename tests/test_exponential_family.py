"""ExponentialFamily from the log-partition alone: dual coordinates, Newton inverse, identities.

Every quantity is checked two ways: against a closed form (source in a comment) and by a second
route (catalogue family with closed-form overrides, Hessian of A vs covariance of T(x), Bregman
and dual-potential identities, implicit derivatives vs closed forms and finite differences).
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given, settings, strategies as hst
from hypothesis.extra import numpy as hnp

from infogeo_jax import ExponentialFamily, bregman_divergence
from infogeo_jax.families import Bernoulli, Categorical, Dirichlet, Exponential, Normal, Poisson

RTOL, ATOL = 1e-12, 1e-12
NEWTON_RTOL, NEWTON_ATOL = 1e-10, 1e-10  # quantities that go through the Newton inverse


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------ generic families
def _normal_a(th):
    # A of N(mu, s^2) in theta = (mu / s^2, -1 / (2 s^2)) (Amari & Nagaoka 2000, Ch. 2, the
    # normal example): A = mu^2 / (2 s^2) + log s.
    return -(th[0] ** 2) / (4.0 * th[1]) - 0.5 * jnp.log(-2.0 * th[1])


def _cat3_a(th):
    return jax.nn.logsumexp(jnp.concatenate([th, jnp.zeros(1, th.dtype)]))


def _exponential_a(th):
    return -jnp.log(-th[0])


POISSON_A = ExponentialFamily(
    lambda th: jnp.exp(th[0]),
    lambda x: jnp.asarray(x, float),
    lambda x: -jax.scipy.special.gammaln(jnp.asarray(x, float) + 1.0),
    dim=1,
)
BERNOULLI_A = ExponentialFamily(lambda th: jnp.logaddexp(0.0, th[0]), dim=1)
CAT3_A = ExponentialFamily(
    _cat3_a,
    lambda x: (jnp.arange(2) == x).astype(float),
    dim=2,
    in_mean_domain=lambda eta: jnp.all(eta > 0) & (jnp.sum(eta) < 1),
)
NORMAL_A = ExponentialFamily(
    _normal_a,
    lambda x: jnp.stack([x, x**2]),
    lambda x: -0.5 * jnp.log(2.0 * jnp.pi) * jnp.ones_like(x),
    in_domain=lambda th: th[1] < 0,
    dim=2,
    in_mean_domain=lambda eta: eta[1] > eta[0] ** 2,
    initial_theta=jnp.array([0.0, -0.5]),
)

# Product families: A(theta) = sum of component log-partitions on consecutive blocks. Their
# Fisher metric and skewness are block-diagonal assemblies of the catalogue components'.
# (name, A, catalogue family, dim, map u in [-1, 1]^dim -> theta in the domain)
COMPONENTS = {
    "poisson": (lambda th: jnp.exp(th[0]), Poisson(), 1, lambda u: 2.0 * u),
    "bernoulli": (lambda th: jnp.logaddexp(0.0, th[0]), Bernoulli(), 1, lambda u: 3.0 * u),
    "normal": (
        _normal_a,
        Normal(),
        2,
        lambda u: jnp.stack([2 * u[0], -0.5]) * jnp.exp(jnp.stack([0.0, 1.4 * u[1]])),
    ),
    "exponential": (_exponential_a, Exponential(), 1, lambda u: -jnp.exp(u)),
    "cat3": (_cat3_a, Categorical(3), 2, lambda u: 2.0 * u),
}


def _product(names):
    sizes = [COMPONENTS[n][2] for n in names]
    starts = np.cumsum([0, *sizes])

    def log_partition(th):
        return sum(COMPONENTS[n][0](th[a:b]) for n, a, b in zip(names, starts[:-1], starts[1:]))

    def point(u):
        return jnp.concatenate(
            [COMPONENTS[n][3](u[a:b]) for n, a, b in zip(names, starts[:-1], starts[1:])]
        )

    family = ExponentialFamily(
        log_partition, dim=int(starts[-1]), initial_theta=point(jnp.zeros(int(starts[-1])))
    )
    return family, point, list(zip(names, starts))


# A "random" product family: its components drawn once with a fixed seed.
_RNG = np.random.default_rng(2024)
PRODUCT_NAMES = tuple(
    str(n) for n in _RNG.choice(["poisson", "bernoulli", "exponential", "cat3"], 3, replace=False)
)
PRODUCT, PRODUCT_POINT, PRODUCT_BLOCKS = _product(PRODUCT_NAMES)

# name -> (generic family, dim, point map, catalogue family or None)
CASES = {
    "poisson": (POISSON_A, 1, COMPONENTS["poisson"][3], Poisson()),
    "bernoulli": (BERNOULLI_A, 1, COMPONENTS["bernoulli"][3], Bernoulli()),
    "cat3": (CAT3_A, 2, COMPONENTS["cat3"][3], Categorical(3)),
    "normal": (NORMAL_A, 2, COMPONENTS["normal"][3], Normal()),
    "product": (PRODUCT, PRODUCT.dim, PRODUCT_POINT, None),
}
NAMES = list(CASES)


@functools.cache
def jitted(fam, method):
    return jax.jit(getattr(fam, method))


def point(name, u):
    _, dim, to_theta, _ = CASES[name]
    return to_theta(jnp.asarray(u[:dim]))


UNIT = hnp.arrays(np.float64, (6,), elements=hst.floats(-1.0, 1.0))
SETTINGS = settings(max_examples=8, deadline=None)


# ------------------------------------------------------------------------ closed forms
def test_normal_fisher_and_skewness_closed_form():
    # Fisher of N(mu, s^2) in theta = Cov[(x, x^2)] = [[s^2, 2 mu s^2], [2 mu s^2,
    # 4 mu^2 s^2 + 2 s^4]]; its third cumulants (Isserlis' theorem, x = mu + s z):
    # k111 = 0, k112 = 2 s^4, k122 = 8 mu s^4, k222 = 24 mu^2 s^4 + 8 s^6.
    mu, s = 0.7, 1.3
    theta = Normal().from_usual(jnp.array([mu, s]))
    fisher = np.array([[s**2, 2 * mu * s**2], [2 * mu * s**2, 4 * mu**2 * s**2 + 2 * s**4]])
    skew = np.zeros((2, 2, 2))
    for idx, value in [
        ((0, 0, 0), 0.0),
        ((0, 0, 1), 2 * s**4),
        ((0, 1, 1), 8 * mu * s**4),
        ((1, 1, 1), 24 * mu**2 * s**4 + 8 * s**6),
    ]:
        for perm in {idx, idx[::-1], (idx[1], idx[0], idx[2]), (idx[0], idx[2], idx[1])}:
            skew[perm] = value
    for fam in (NORMAL_A, Normal()):
        close(jitted(fam, "fisher_information")(theta), fisher)
        close(jitted(fam, "skewness_tensor")(theta), skew)
    # Second route: pulled back to (mu, s) the metric is diag(1, 2) / s^2 (Rao 1945).
    jac = jax.jacfwd(lambda ms: Normal().from_usual(jnp.array([ms[0], ms[1]])))(jnp.array([mu, s]))
    close(jac.T @ NORMAL_A.fisher_information(theta) @ jac, np.diag([1.0, 2.0]) / s**2)


def test_poisson_closed_forms():
    # Poisson: A = e^theta, so eta = g = T_111 = lambda (all cumulants equal lambda), and
    # theta = log(eta), A* = eta log eta - eta.
    lam = 3.7
    theta = jnp.array([np.log(lam)])
    close(POISSON_A.mean_parameters(theta), [lam])
    close(POISSON_A.fisher_information(theta), [[lam]])
    close(POISSON_A.skewness_tensor(theta), [[[lam]]])
    close(POISSON_A.natural_parameters(jnp.array([lam])), theta, NEWTON_RTOL, NEWTON_ATOL)
    close(POISSON_A.dual_potential(jnp.array([lam])), lam * np.log(lam) - lam, NEWTON_RTOL)


@pytest.mark.parametrize(
    "eta, theta",
    [
        # Regression: an absolute residual test stopped at theta = -23.85 for eta = 1e-11.
        (1e-11, np.log(1e-11)),
        (1e-6, np.log(1e-6)),
        (1e6, np.log(1e6)),
    ],
)
def test_newton_is_scale_free_poisson(eta, theta):
    # Closed form theta = log(eta) (Poisson); the decrement test is relative to the Fisher scale.
    close(jitted(POISSON_A, "natural_parameters")(jnp.array([eta])), [theta], 1e-12, 0.0)


@pytest.mark.parametrize("eta, atol", [(1e-12, 1e-12), (0.3, 1e-14), (1.0 - 1e-9, 1e-6)])
def test_newton_is_scale_free_bernoulli(eta, atol):
    # Closed form: the logit (Bernoulli). Near eta = 1 the gradient sigmoid(theta) of A only
    # resolves 1 - eta to eps / (1 - eta) = 2e-7 relative, the attainable accuracy in theta;
    # the old absolute residual test returned 20.7227 instead of 20.7233 (error 5e-4).
    got = jitted(BERNOULLI_A, "natural_parameters")(jnp.array([eta]))
    close(got, [np.log(eta) - np.log1p(-eta)], 0.0, atol)


def test_newton_ill_conditioned_normal():
    # N(1e4, 1): eta = (1e4, 1e8 + 1) fixes the variance only to ~1e-8 in float64; the solve
    # must still converge (to that rounding floor) and not raise.
    eta = jnp.array([1e4, 1e8 + 1.0])
    theta = jitted(NORMAL_A, "natural_parameters")(eta)
    close(theta, Normal().from_usual(jnp.array([1e4, 1.0])), 1e-7, 0.0)


# ------------------------------------------------------------------------ generic = catalogue
@pytest.mark.parametrize("name", ["poisson", "bernoulli", "cat3", "normal"])
@SETTINGS
@given(u=UNIT, v=UNIT)
def test_generic_family_matches_catalogue(name, u, v):
    # Second route: the catalogue families use closed-form overrides (logit, softmax, normal
    # moment formulas, closed-form inverse); the generic family only has A.
    fam, _, _, cat = CASES[name]
    theta, q = point(name, u), point(name, v)
    for method in ("fisher_information", "skewness_tensor", "mean_parameters"):
        close(jitted(fam, method)(theta), jitted(cat, method)(theta))
    close(jitted(fam, "kl_divergence")(theta, q), jitted(cat, "kl_divergence")(theta, q))
    eta = jitted(cat, "mean_parameters")(theta)
    close(jitted(fam, "natural_parameters")(eta), theta, NEWTON_RTOL, NEWTON_ATOL)


@SETTINGS
@given(u=UNIT)
def test_product_family_is_block_diagonal(u):
    # Second route: a product family's Fisher and skewness are the catalogue components' blocks.
    theta = PRODUCT_POINT(jnp.asarray(u[: PRODUCT.dim]))
    fisher = np.zeros((PRODUCT.dim,) * 2)
    skew = np.zeros((PRODUCT.dim,) * 3)
    for name, start in PRODUCT_BLOCKS:
        cat, size = COMPONENTS[name][1], COMPONENTS[name][2]
        block = slice(int(start), int(start) + size)
        fisher[block, block] = jitted(cat, "fisher_information")(theta[block])
        skew[block, block, block] = jitted(cat, "skewness_tensor")(theta[block])
    close(jitted(PRODUCT, "fisher_information")(theta), fisher)
    close(jitted(PRODUCT, "skewness_tensor")(theta), skew)
    eta = jitted(PRODUCT, "mean_parameters")(theta)
    close(jitted(PRODUCT, "natural_parameters")(eta), theta, NEWTON_RTOL, NEWTON_ATOL)


# ------------------------------------------------------------------------ Fisher = Cov[T]
@pytest.mark.parametrize("name", ["poisson", "bernoulli", "cat3"])
def test_fisher_and_skewness_are_cumulants_exact(name):
    # Second route: exact sums over the (truncated, for Poisson: tail < 1e-100) support give
    # the covariance and the third central moment of T(x) (Brown 1986, Thm. 2.2).
    fam, dim, to_theta, _ = CASES[name]
    theta = to_theta(jnp.linspace(-0.6, 0.8, dim))
    support = {"poisson": np.arange(150.0), "bernoulli": np.array([0.0, 1.0])}.get(
        name, np.arange(3.0)
    )
    if name == "bernoulli":
        stats = support[:, None]
        log_p = support * theta[0] - np.logaddexp(0.0, theta[0])
    else:
        stats = np.stack([np.asarray(fam.sufficient_statistic(x)) for x in support])
        log_p = np.array([float(jitted(fam, "log_prob")(theta, x)) for x in support])
    prob = np.exp(log_p)
    close(prob.sum(), 1.0)
    mean = prob @ stats
    centered = stats - mean
    cov = np.einsum("n,ni,nj->ij", prob, centered, centered)
    third = np.einsum("n,ni,nj,nk->ijk", prob, centered, centered, centered)
    close(jitted(fam, "mean_parameters")(theta), mean)
    close(jitted(fam, "fisher_information")(theta), cov)
    close(jitted(fam, "skewness_tensor")(theta), third)


def test_fisher_is_covariance_monte_carlo():
    # Second route: the sample covariance of T(x) = (x, x^2) for 200 000 normal draws (fixed
    # key); tolerance 5 standard errors of each entry, estimated from the same sample.
    theta = Normal().from_usual(jnp.array([0.4, 1.2]))
    x = Normal().sample(theta, jax.random.key(0), (200_000,))
    stats = np.asarray(jax.vmap(NORMAL_A.sufficient_statistic)(x))
    centered = stats - stats.mean(axis=0)
    products = centered[:, :, None] * centered[:, None, :]
    cov = products.mean(axis=0)
    stderr = products.std(axis=0) / np.sqrt(len(x))
    err = np.abs(cov - np.asarray(NORMAL_A.fisher_information(theta)))
    assert np.all(err < 5 * stderr), (err, stderr)


# ------------------------------------------------------------------------ KL expansion
@pytest.mark.parametrize("name", NAMES)
def test_kl_taylor_expansion_order(name):
    # KL(theta || theta + h v) = h^2/2 v'Fv + h^3/6 T[v,v,v] + O(h^4) (Amari & Nagaoka 2000,
    # Eq. (3.47) with A's Taylor series): the quadratic remainder shrinks like h^3 and its
    # h^3 coefficient converges (error O(h)) to the skewness term.
    fam, dim, to_theta, _ = CASES[name]
    theta = to_theta(jnp.linspace(-0.4, 0.5, dim))
    v = jnp.linspace(1.0, -0.7, dim)
    fisher = jitted(fam, "fisher_information")(theta)
    cubic = jnp.einsum("ijk,i,j,k->", jitted(fam, "skewness_tensor")(theta), v, v, v) / 6
    hs = np.array([0.04, 0.02, 0.01, 0.005])
    kl = np.array([float(jitted(fam, "kl_divergence")(theta, theta + h * v)) for h in hs])
    remainder = kl - 0.5 * hs**2 * float(v @ fisher @ v)
    ratios = remainder[:-1] / remainder[1:]
    np.testing.assert_allclose(ratios, 8.0, rtol=0.15)
    errors = np.abs(remainder / hs**3 - float(cubic))
    np.testing.assert_allclose(errors[:-1] / errors[1:], 2.0, rtol=0.2)


# ------------------------------------------------------------------------ duality identities
@functools.cache
def identities(fam):
    """Every quantity of the duality identities below, in one compiled function per family."""

    def compute(p, q, r, t):
        mean = fam.mean_parameters
        eta_p, eta_q = mean(p), mean(q)

        def grad_and_value(e):
            value, grad = jax.value_and_grad(fam.dual_potential)(e)
            return grad, (value, grad)

        dual_hess, (dual, dual_grad) = jax.jacfwd(grad_and_value, has_aux=True)(eta_p)
        m_geo = jax.vmap(lambda s: fam.m_geodesic(p, q, s))(jnp.stack([0.0, t, 1.0]))
        return {
            "theta": p,
            "eta": eta_p,
            "inverse_fisher": jnp.linalg.inv(fam.fisher_information(p)),
            "A": fam.log_partition(p),
            "dual": dual,
            "dual_grad": dual_grad,
            "dual_hess": dual_hess,
            "jac_fwd": jax.jacfwd(fam.natural_parameters)(eta_p),
            "jac_rev": jax.jacrev(fam.natural_parameters)(eta_p),
            "kl_pq": fam.kl_divergence(p, q),
            "bregman_a": bregman_divergence(fam.log_partition, q, p),
            "bregman_dual": bregman_divergence(fam.dual_potential, eta_p, eta_q),
            "kl_pr": fam.kl_divergence(p, r),
            "cosines": fam.kl_divergence(p, q)
            + fam.kl_divergence(q, r)
            + (q - r) @ (eta_p - eta_q),
            "e_geo": fam.e_geodesic(p, q, t),
            "e_line": (1 - t) * p + t * q,
            "m_geo_eta": mean(m_geo[1]),
            "m_line": (1 - t) * eta_p + t * eta_q,
            "m_start": m_geo[0],
            "m_end": m_geo[2],
            "q": q,
        }

    return jax.jit(compute)


# Families whose duality identities run in the default selection; the rest run with -m slow.
FAST = ["product"]


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]
)
@SETTINGS
@given(u=UNIT, v=UNIT, w=UNIT, t=hst.floats(0.0, 1.0))
def test_duality_identities(name, u, v, w, t):
    fam = CASES[name][0]
    out = identities(fam)(point(name, u), point(name, v), point(name, w), t)
    # Legendre duality (Amari & Nagaoka 2000, Eq. (3.36)): A*(eta) = <theta, eta> - A(theta),
    # grad A* = theta, Hess A* = g^{-1}.
    close(out["dual"], out["theta"] @ out["eta"] - out["A"], NEWTON_RTOL, NEWTON_ATOL)
    close(out["dual_grad"], out["theta"], NEWTON_RTOL, NEWTON_ATOL)
    close(out["dual_hess"], out["inverse_fisher"], 1e-9, 1e-10)
    # The Newton inverse: d theta / d eta = g^{-1} (inverse function theorem) by forward and
    # by reverse mode (the round trip is m_start below).
    close(out["jac_fwd"], out["inverse_fisher"], 1e-9, 1e-10)
    close(out["jac_rev"], out["inverse_fisher"], 1e-9, 1e-10)
    # KL(p || q) = B_A(theta_q, theta_p) = B_{A*}(eta_p, eta_q) (Banerjee et al., JMLR 6
    # (2005), Thm. 4; Amari & Nagaoka 2000, Eq. (3.45)); KL >= 0.
    close(out["kl_pq"], out["bregman_a"])
    close(out["kl_pq"], out["bregman_dual"], NEWTON_RTOL, NEWTON_ATOL)
    assert out["kl_pq"] >= -1e-14
    # Law of cosines: KL(P||R) = KL(P||Q) + KL(Q||R) + <theta_Q - theta_R, eta_P - eta_Q>
    # (Amari & Nagaoka 2000, Thm. 3.7; Amari 2016, Thm. 1.2).
    close(out["kl_pr"], out["cosines"], 1e-11, 1e-11)
    # e-geodesic straight in theta, m-geodesic straight in eta, with the right endpoints
    # (Amari & Nagaoka 2000, Thm. 3.4: dually flat).
    close(out["e_geo"], out["e_line"])
    close(out["m_geo_eta"], out["m_line"], 1e-11, 1e-11)
    close(out["m_start"], out["theta"], NEWTON_RTOL, NEWTON_ATOL)
    close(out["m_end"], out["q"], NEWTON_RTOL, NEWTON_ATOL)


def test_natural_parameters_second_derivatives_closed_forms():
    def second_derivatives(eta_poisson, eta_normal):
        return (
            jax.hessian(POISSON_A.natural_parameters)(eta_poisson),
            jax.hessian(NORMAL_A.natural_parameters)(eta_normal),
            jax.jacrev(jax.jacfwd(NORMAL_A.natural_parameters))(eta_normal),
            jax.hessian(Normal().natural_parameters)(eta_normal),
        )

    poisson, normal_fwd_rev, normal_rev_fwd, normal_closed = jax.jit(second_derivatives)(
        jnp.array([2.5]), jnp.array([0.6, 2.1])
    )
    # Poisson: theta = log(eta), d^2 theta / d eta^2 = -1 / eta^2.
    close(poisson, [[[-1 / 2.5**2]]], 1e-9, 1e-12)
    # Normal: the generic Newton inverse against the closed form of the catalogue (theta =
    # (eta1 / v, -1 / (2 v)), v = eta2 - eta1^2), all second derivatives, both AD orders.
    close(normal_fwd_rev, normal_closed, 1e-9, 1e-10)
    close(normal_rev_fwd, normal_closed, 1e-9, 1e-10)


@pytest.mark.slow
def test_natural_parameters_second_derivatives_finite_differences():
    # Dirichlet has no closed-form inverse: Newton's second derivatives against central finite
    # differences of its (implicit) Jacobian, step 1e-5 (truncation ~1e-10).
    fam = Dirichlet(3)
    eta = fam.mean_parameters(jnp.array([0.8, 1.5, 2.5]))
    jac = jax.jit(jax.jacfwd(fam.natural_parameters))
    hess = jax.jit(jax.hessian(fam.natural_parameters))(eta)
    h = 1e-5
    fd = jnp.stack([(jac(eta + h * e) - jac(eta - h * e)) / (2 * h) for e in jnp.eye(3)], -1)
    close(hess, fd, 1e-7, 1e-7)


def test_natural_parameters_differentiates_closed_over_arrays():
    # A(theta) = c e^theta (Poisson with exposure c): theta = log(eta / c), so
    # d theta / dc = -1/c and d^2 theta / dc^2 = 1/c^2 -- c is closed over by the lambda.
    def theta_of(c, eta):
        fam = ExponentialFamily(lambda th: c * jnp.exp(th[0]), dim=1)
        return fam.natural_parameters(jnp.array([eta]))[0]

    c, eta = 1.5, 2.0
    first, second, mixed = jax.jit(
        lambda c, eta: (
            jax.grad(theta_of)(c, eta),
            jax.grad(jax.grad(theta_of))(c, eta),
            jax.grad(jax.grad(theta_of), argnums=1)(c, eta),
        )
    )(c, eta)
    close(first, -1 / c)
    close(second, 1 / c**2, 1e-10)
    close(mixed, 0.0, 0.0, 1e-10)


# ------------------------------------------------------------------------ densities and MLE
def test_log_prob_matches_scipy():
    # Closed forms: scipy.stats normal logpdf and Poisson logpmf.
    theta = Normal().from_usual(jnp.array([0.4, 1.7]))
    for x in (-1.0, 0.3, 2.5):
        close(NORMAL_A.log_prob(theta, x), st.norm(0.4, 1.7).logpdf(x))
    for k in (0, 3, 11):
        close(POISSON_A.log_prob(jnp.array([np.log(3.2)]), k), st.poisson(3.2).logpmf(k))


def test_maximum_likelihood_normal_and_poisson():
    # Closed-form MLE: sample mean and (biased) sample variance for normal data; log of the
    # sample mean for Poisson data. eta_hat = mean T(x) (Barndorff-Nielsen 1978, Sec. 9.3).
    x = np.random.default_rng(1).normal(1.5, 0.8, size=500)
    expected = Normal().from_usual(jnp.array([x.mean(), x.std()]))
    close(NORMAL_A.maximum_likelihood(jnp.asarray(x)), expected, 1e-10, 1e-10)
    close(Normal().maximum_likelihood(jnp.asarray(x)), expected, 1e-10, 1e-10)
    counts = np.random.default_rng(2).poisson(4.0, size=300)
    close(POISSON_A.maximum_likelihood(jnp.asarray(counts)), [np.log(counts.mean())], 1e-10)
    close(POISSON_A.maximum_likelihood(list(counts[:5])), [np.log(counts[:5].mean())], 1e-10)


def test_sampler_and_base_measure_defaults():
    fam = ExponentialFamily(
        lambda th: jnp.exp(th[0]),
        lambda x: x,
        sampler=lambda th, key, shape: jax.random.poisson(key, jnp.exp(th[0]), shape),
        dim=1,
    )
    draws = fam.sample(jnp.array([np.log(5.0)]), jax.random.key(3), (4000,))
    assert draws.shape == (4000,)
    # Mean 5, standard error sqrt(5 / 4000) = 0.035: 5 standard errors.
    assert abs(float(draws.mean()) - 5.0) < 5 * np.sqrt(5.0 / 4000)
    assert float(fam.log_base_measure(2.0)) == 0.0


# ------------------------------------------------------------------------ jit / vmap / grad
# numpy constants: they take the dtype of the computation (float32 in the smoke test).
P0, Q0 = (
    np.asarray(Normal().from_usual(jnp.array([0.3, 1.2]))),
    np.asarray(Normal().from_usual(jnp.array([-0.4, 0.9]))),
)
ETA0 = np.asarray(Normal().mean_parameters(Normal().from_usual(jnp.array([0.5, 1.1]))))
DATA = np.array([0.3, -1.2, 2.0, 0.7, 1.1])
U_VEC, V_VEC = np.array([1.0, 0.5]), np.array([-0.3, 1.0])


def every_public_function(z):
    """Each public function of ExponentialFamily, as a smooth function of z in R^2."""
    fam = NORMAL_A
    th = P0 + 0.05 * z
    q = Q0 - 0.03 * z[::-1]
    eta = ETA0 + 0.04 * z
    a = 0.3 + 0.1 * z[0]
    return {
        "log_partition": fam.log_partition(th),
        "fisher_information": fam.fisher_information(th),
        "metric": fam.metric(th),
        "skewness_tensor": fam.skewness_tensor(th),
        "christoffel_first_kind": fam.christoffel_first_kind(th, a),
        "christoffel_symbols": fam.christoffel_symbols(th, a),
        "riemann_tensor": fam.riemann_tensor(th, a),
        "ricci_tensor": fam.ricci_tensor(th, a),
        "scalar_curvature": fam.scalar_curvature(th, a),
        "sectional_curvature": fam.sectional_curvature(th, U_VEC, V_VEC, a),
        "inner": fam.inner(th, U_VEC, V_VEC),
        "norm": fam.norm(th, V_VEC),
        "mean_parameters": fam.mean_parameters(th),
        "natural_parameters": fam.natural_parameters(eta),
        "dual_potential": fam.dual_potential(eta),
        "log_prob": fam.log_prob(th, 0.7 + z[1]),
        "sufficient_statistic": fam.sufficient_statistic(0.7 + z[1]),
        "log_base_measure": fam.log_base_measure(0.7 + z[1]),
        "maximum_likelihood": fam.maximum_likelihood(DATA * (1.0 + 0.1 * z[0]) + z[1]),
        "e_geodesic": fam.e_geodesic(th, q, 0.3 + 0.1 * z[1]),
        "m_geodesic": fam.m_geodesic(th, q, 0.3 + 0.1 * z[1]),
        "kl_divergence": fam.kl_divergence(th, q),
        "alpha_divergence": fam.alpha_divergence(th, q, a),
        "alpha_divergence_at_-1": fam.alpha_divergence(th, q, -1.0 + 0.0 * z[0]),
        "renyi_divergence": fam.renyi_divergence(th, q, 0.7 + 0.1 * z[1]),
        "renyi_divergence_at_1": fam.renyi_divergence(th, q, 1.0 + 0.0 * z[1]),
        "bhattacharyya_distance": fam.bhattacharyya_distance(th, q),
        "hellinger_distance": fam.hellinger_distance(th, q),
        "bregman_divergence": bregman_divergence(fam.log_partition, q, th),
    }


DIRECTION = np.array([0.6, -0.8])
Z0 = np.array([0.2, -0.3])


@pytest.fixture(scope="module")
def batched_jvp():
    # One compilation covers jit, vmap and forward-mode differentiation of every function.
    def tangent(z):
        return jax.jvp(every_public_function, (z,), (DIRECTION,))

    h = 1e-5
    batch = jnp.stack([Z0, Z0 + h * DIRECTION, Z0 - h * DIRECTION])
    return h, jax.jit(jax.vmap(tangent))(batch)


def test_jit_vmap_grad_through_every_public_function(batched_jvp):
    # Forward-mode derivatives of every function, under jit and vmap, agree with central
    # finite differences (step 1e-5) of the batched primal outputs.
    h, (primal, tangent) = batched_jvp
    for key, value in primal.items():
        close(tangent[key][0], (value[1] - value[2]) / (2 * h), 1e-6, 1e-7)
        assert np.all(np.isfinite(tangent[key])), key
    # Every output but these depends on z, so the comparison above is not vacuous.
    constant = {key for key in tangent if float(jnp.max(jnp.abs(tangent[key][0]))) == 0}
    assert constant <= {"alpha_divergence_at_-1", "renyi_divergence_at_1", "log_base_measure"}

    # Reverse mode through the Newton inverse (and its vmap) agrees with forward mode.
    def reverse_and_forward(e):
        reverse = jax.grad(lambda x: DIRECTION @ NORMAL_A.natural_parameters(x))(e)
        return reverse, jax.jacfwd(NORMAL_A.natural_parameters)(e).T @ DIRECTION

    reverse, forward = jax.jit(jax.vmap(reverse_and_forward))(ETA0 + 0.04 * jnp.stack([Z0, -Z0]))
    close(reverse, forward, 1e-12, 1e-12)


def test_float32_smoke_every_public_function(batched_jvp):
    # Float32 inputs give finite float32 outputs, close to the float64 values (precision as
    # documented in the _family module docstring: 2e-7 for g, 1e-5 for curvature, 1e-3 for
    # divergences). The float64 values come from the vmapped run, so this also checks that
    # vmap agrees with an unbatched jit.
    _, (primal, _) = batched_jvp
    with jax.enable_x64(False):
        out = jax.jit(every_public_function)(jnp.asarray(np.asarray(Z0), jnp.float32))
        for key, value in out.items():
            assert value.dtype == jnp.float32, key
            assert np.all(np.isfinite(np.asarray(value))), key
            tol = 3e-3 if "divergence" in key or "distance" in key else 1e-4
            close(value, primal[key][0], tol, tol)


# ------------------------------------------------------------------------ errors
BAD_THETA = jnp.array([0.0, 0.5])  # theta_2 > 0: outside the normal natural domain
GOOD_THETA = jnp.array([0.0, -0.5])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: NORMAL_A.fisher_information(t), "outside the parameter domain"),
        (lambda t: NORMAL_A.skewness_tensor(t), "outside the parameter domain"),
        (lambda t: NORMAL_A.mean_parameters(t), "outside the parameter domain"),
        (lambda t: NORMAL_A.riemann_tensor(t, 0.5), "outside the parameter domain"),
        (lambda t: NORMAL_A.log_prob(t, 0.3), "outside the parameter domain"),
        (lambda t: NORMAL_A.kl_divergence(t, GOOD_THETA), "p is outside the parameter domain"),
        (lambda t: NORMAL_A.alpha_divergence(GOOD_THETA, t, 0.5), "q is outside the parameter"),
        (lambda t: NORMAL_A.renyi_divergence(t, GOOD_THETA, 0.5), "p is outside the parameter"),
        (lambda t: NORMAL_A.hellinger_distance(t, GOOD_THETA), "p is outside the parameter"),
        (lambda t: NORMAL_A.e_geodesic(t, GOOD_THETA, 0.5), "theta_0 is outside the parameter"),
        (lambda t: NORMAL_A.m_geodesic(GOOD_THETA, t, 0.5), "theta_1 is outside the parameter"),
        # eta = (0, -1): eta_2 < eta_1^2, outside the mean domain.
        (lambda t: NORMAL_A.natural_parameters(t - jnp.array([0.0, 1.5])), "outside the mean"),
        (lambda t: NORMAL_A.dual_potential(t - jnp.array([0.0, 1.5])), "outside the mean"),
        # e-geodesic extrapolated past theta_2 = 0.
        (lambda t: NORMAL_A.e_geodesic(GOOD_THETA, t - 0.55, 2.0), "leaves the natural domain"),
        (lambda t: NORMAL_A.renyi_divergence(GOOD_THETA, GOOD_THETA, t[0] - 1), "non-negative"),
        # Newton started outside the domain, or stopped after one step.
        (
            lambda t: NORMAL_A.natural_parameters(jnp.array([0.5, 1.0]), initial_theta=t),
            "starting point is outside",
        ),
        (
            lambda t: NORMAL_A.natural_parameters(jnp.array([0.5, 1.0]) + t, max_steps=0),
            "did not converge",
        ),
        # No mean-domain predicate: eta = -1 is reported as a Newton failure.
        (lambda t: POISSON_A.natural_parameters(t[:1] - 1.0), "did not converge"),
    ],
)
def test_value_errors_eager_and_jit(call, message):
    # Eagerly: equinox.EquinoxRuntimeError; under jax.jit: jax.errors.JaxRuntimeError whose text
    # carries the message. Both are RuntimeErrors.
    for run in (call, jax.jit(call)):
        with pytest.raises(RuntimeError, match=message):
            jax.block_until_ready(run(BAD_THETA))


def test_value_error_type_under_filter_jit():
    # Under equinox.filter_jit the error is a clean EquinoxRuntimeError with the message.
    with pytest.raises(eqx.EquinoxRuntimeError, match="p is outside the parameter domain"):
        eqx.filter_jit(NORMAL_A.kl_divergence)(BAD_THETA, GOOD_THETA)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: NORMAL_A.fisher_information(jnp.zeros(3)), ValueError, r"shape \(2,\)"),
        (lambda: NORMAL_A.fisher_information(jnp.zeros((4, 2))), ValueError, "jax.vmap"),
        (lambda: NORMAL_A.kl_divergence(GOOD_THETA, jnp.zeros(3)), ValueError, "`q`"),
        (lambda: NORMAL_A.natural_parameters(jnp.zeros(3)), ValueError, "`eta`"),
        (
            lambda: NORMAL_A.natural_parameters(jnp.ones(2), initial_theta=jnp.ones(3)),
            ValueError,
            "initial_theta",
        ),
        (lambda: NORMAL_A.natural_parameters(jnp.ones(2), max_steps=-1), ValueError, "max_steps"),
        (
            lambda: NORMAL_A.alpha_divergence(GOOD_THETA, GOOD_THETA, jnp.ones(2)),
            ValueError,
            "`alpha` must be a scalar",
        ),
        (
            lambda: NORMAL_A.renyi_divergence(GOOD_THETA, GOOD_THETA, jnp.ones(2)),
            ValueError,
            "`order` must be a scalar",
        ),
        (lambda: NORMAL_A.e_geodesic(GOOD_THETA, GOOD_THETA, jnp.ones(3)), ValueError, "`t`"),
        (lambda: NORMAL_A.christoffel_first_kind(GOOD_THETA, jnp.ones(2)), ValueError, "alpha"),
        (lambda: NORMAL_A.log_prob(GOOD_THETA, jnp.ones(3)), ValueError, "one unbatched sample"),
        (lambda: NORMAL_A.maximum_likelihood(jnp.float64(1.0)), ValueError, "leading axis"),
        (lambda: NORMAL_A.maximum_likelihood(jnp.zeros(0)), ValueError, "at least one sample"),
        (
            lambda: BERNOULLI_A.log_prob(jnp.zeros(1), 1.0),
            NotImplementedError,
            "sufficient_statistic=",
        ),
        (
            lambda: BERNOULLI_A.sample(jnp.zeros(1), jax.random.key(0)),
            NotImplementedError,
            "sample",
        ),
        (
            lambda: ExponentialFamily(lambda th: th).fisher_information(jnp.zeros(2)),
            ValueError,
            "must return a scalar",
        ),
        (lambda: ExponentialFamily(3.0), TypeError, "log_partition"),
        (lambda: ExponentialFamily(jnp.sum, in_domain=1), TypeError, "in_domain"),
        (lambda: ExponentialFamily(jnp.sum, dim=0), ValueError, "dim"),
        (
            lambda: ExponentialFamily(jnp.sum, dim=2, initial_theta=[0.0]),
            ValueError,
            "initial_theta",
        ),
        (lambda: bregman_divergence(jnp.sum, jnp.ones(2), jnp.ones(3)), ValueError, "same shape"),
        (lambda: bregman_divergence(lambda x: x, jnp.ones(2), jnp.ones(2)), ValueError, "scalar"),
    ],
)
def test_static_errors(call, error, message):
    # Raised at trace time, so the same eagerly and under jit.
    for run in (call, jax.jit(call)):
        with pytest.raises(error, match=message):
            run()


def test_throw_false_returns_the_iterate():
    # Zero damped steps (and three polishing steps) from (0, -0.5) cannot reach eta: with
    # throw=False the iterate comes back for inspection instead of an error.
    eta = jnp.array([3.0, 9.5])
    theta = NORMAL_A.natural_parameters(eta, max_steps=0, throw=False)
    assert np.all(np.isfinite(theta))
    assert float(jnp.max(jnp.abs(NORMAL_A.mean_parameters(theta) - eta))) > 1e-3
