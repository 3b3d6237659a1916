"""Information projections: closed forms, Pythagorean relations, stationarity, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
from hypothesis import given, settings, strategies as st

import infogeo_jax as ig
from infogeo_jax.families import Binomial, Categorical, MultivariateNormal, Normal

TOL = dict(rtol=1e-10, atol=1e-10)

# A discrete exponential family on six points with polynomial statistics: no closed form for the
# Legendre inverse (Newton), and every divergence also computable by a direct finite sum.
SUPPORT = jnp.linspace(0.0, 1.0, 6)


def _poly_family(m):
    feats = jnp.stack([SUPPORT ** (j + 1) for j in range(m)], axis=1)
    fam = ig.ExponentialFamily(
        lambda th: jax.nn.logsumexp(feats @ th),
        sufficient_statistic=lambda x: jnp.stack([x ** (j + 1) for j in range(m)]),
        dim=m,
    )
    return fam, feats


FAM2, FEATS2 = _poly_family(2)
FAM3, FEATS3 = _poly_family(3)


def _probs(feats, theta):
    return jax.nn.softmax(feats @ theta)


def _kl_direct(p, q):
    """KL(p || q) as a plain finite sum (independent of the log-partition formulas)."""
    return jnp.sum(p * (jnp.log(p) - jnp.log(q)))


prob_vectors = st.lists(st.floats(0.05, 1.0), min_size=6, max_size=6).map(
    lambda v: np.asarray(v) / np.sum(v)
)
points2 = st.lists(st.floats(-3.0, 3.0), min_size=2, max_size=2).map(np.asarray)
points3 = st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3).map(np.asarray)


# ------------------------------------------------------------------------ shared jitted solvers
BASIS3 = jnp.array([[1.0, 0.5], [-0.3, 1.0], [0.2, -0.7]])
OFFSET3 = jnp.array([0.4, -0.2, 0.1])
C3 = jnp.array([[0.3, -1.0, 0.6]])


_kl2 = jax.jit(FAM2.kl_divergence)
_kl3 = jax.jit(FAM3.kl_divergence)


@jax.jit
def _m_full(eta):
    return ig.m_projection(FAM2, eta)


@jax.jit
def _m_affine(eta):
    return ig.m_projection_affine(FAM3, eta, basis=BASIS3, offset=OFFSET3)


@jax.jit
def _e_affine(theta, value):
    return ig.e_projection_affine(FAM3, theta, constraint_matrix=C3, constraint_value=value)


# ------------------------------------------------------------------------ m-projection
def test_m_projection_of_samples_is_the_mle():
    # Closed form: the normal MLE is the sample mean and the biased sample variance.
    x = np.random.default_rng(0).normal(1.0, 2.0, 200)
    mean, std = Normal().to_usual(ig.m_projection(Normal(), samples=x))
    np.testing.assert_allclose(mean, x.mean(), **TOL)
    np.testing.assert_allclose(std, x.std(), **TOL)
    w = np.random.default_rng(1).uniform(0, 1, 200)
    mean, std = Normal().to_usual(ig.m_projection(Normal(), samples=x, weights=w))
    avg = np.average(x, weights=w)
    np.testing.assert_allclose(mean, avg, **TOL)
    np.testing.assert_allclose(std, np.sqrt(np.average((x - avg) ** 2, weights=w)), **TOL)
    # Multivariate: mean and np.cov(bias=True).
    y = np.random.default_rng(2).normal(size=(300, 3)) @ np.array(
        [[1.0, 0.3, 0.0], [0.0, 1.0, -0.4], [0.0, 0.0, 0.5]]
    )
    mvn = MultivariateNormal(3)
    mean, cov = mvn.mean_covariance(ig.m_projection(mvn, samples=y))
    np.testing.assert_allclose(mean, y.mean(0), **TOL)
    np.testing.assert_allclose(cov, np.cov(y.T, bias=True), **TOL)


def test_m_projection_three_target_forms_agree():
    p = np.random.default_rng(3).dirichlet(np.ones(6))
    eta = jnp.asarray(p) @ FEATS2
    by_eta = ig.m_projection(FAM2, eta)
    by_expectation = ig.m_projection(
        FAM2, expectation=lambda fn: jnp.tensordot(jnp.asarray(p), jax.vmap(fn)(SUPPORT), 1)
    )
    # Weighted samples: the support points weighted by p are the same distribution.
    by_samples = ig.m_projection(FAM2, samples=SUPPORT, weights=p)
    np.testing.assert_allclose(by_expectation, by_eta, **TOL)
    np.testing.assert_allclose(by_samples, by_eta, **TOL)
    # Moment matching: eta(p*) = E_p[T].
    np.testing.assert_allclose(_probs(FEATS2, by_eta) @ FEATS2, eta, **TOL)


@settings(max_examples=20, deadline=None)
@given(p=prob_vectors, q=points2)
def test_pythagorean_relation_m_projection(p, q):
    # KL(p||q) = KL(p||p*) + KL(p*||q) for every q in the family (Amari & Nagaoka 2000, Thm 3.8),
    # with p an arbitrary distribution on the support (outside the family).
    p = jnp.asarray(p)
    star = _m_full(p @ FEATS2)
    p_star, p_q = _probs(FEATS2, star), _probs(FEATS2, jnp.asarray(q))
    lhs = _kl_direct(p, p_q)
    rhs = _kl_direct(p, p_star) + _kl2(star, jnp.asarray(q))
    np.testing.assert_allclose(lhs, rhs, **TOL)
    np.testing.assert_allclose(_kl2(star, jnp.asarray(q)), _kl_direct(p_star, p_q), **TOL)


@settings(max_examples=20, deadline=None)
@given(p=prob_vectors, w=points2)
def test_pythagorean_relation_m_projection_onto_e_flat_subfamily(p, w):
    p = jnp.asarray(p)
    res = _m_affine(p @ FEATS3)
    assert res.result == ig.RESULTS.successful
    q = OFFSET3 + BASIS3 @ jnp.asarray(w)  # any member of the subfamily
    p_star, p_q = _probs(FEATS3, res.theta), _probs(FEATS3, q)
    lhs = _kl_direct(p, p_q)
    rhs = _kl_direct(p, p_star) + _kl_direct(p_star, p_q)
    np.testing.assert_allclose(lhs, rhs, **TOL)
    # Second route: the optimality condition B^T (eta(p*) - E_p[T]) = 0.
    np.testing.assert_allclose(BASIS3.T @ (p_star @ FEATS3), BASIS3.T @ (p @ FEATS3), **TOL)
    np.testing.assert_allclose(res.theta, OFFSET3 + BASIS3 @ res.coordinates, **TOL)


def test_m_projection_affine_closed_forms():
    normal = Normal()
    p = normal.from_usual(jnp.array([2.0, 3.0]))
    eta = normal.mean_parameters(p)
    # N(mu, 1), theta = (mu, -1/2): the m-projection keeps the mean (moment matching of x).
    res = ig.m_projection_affine(
        normal, eta, basis=jnp.array([[1.0], [0.0]]), offset=jnp.array([0.0, -0.5])
    )
    np.testing.assert_allclose(normal.to_usual(res.theta)[0], 2.0, **TOL)
    # N(0, s^2), theta = (0, t): matches E[x^2] = mu^2 + sigma^2 = 13.
    res = ig.m_projection_affine(
        normal, eta, basis=jnp.array([[0.0], [1.0]]), initial_coordinates=jnp.array([-1.0])
    )
    np.testing.assert_allclose(normal.to_usual(res.theta)[1] ** 2, 13.0, **TOL)
    # Identity basis: the same as the m-projection onto the whole family.
    eta2 = jnp.array([0.5, 0.4])
    full = ig.m_projection_affine(FAM2, eta2, basis=jnp.eye(2))
    np.testing.assert_allclose(full.theta, ig.m_projection(FAM2, eta2), **TOL)


def _gaussian2_log_partition(th):
    # theta = (h1, h2, P11', P12', P22') with <theta, T(x)> = h.x - (P11 x1^2 + 2 P12 x1 x2 +
    # P22 x2^2) / 2, i.e. theta[2:] = (-P11/2, -P12, -P22/2): A = h^T P^{-1} h / 2 - log det P / 2,
    # with the 2x2 inverse written out (a second route to MultivariateNormal(2)).
    p11, p12, p22 = -2.0 * th[2], -th[3], -2.0 * th[4]
    det = p11 * p22 - p12**2
    h1, h2 = th[0], th[1]
    return 0.5 * (p22 * h1**2 - 2 * p12 * h1 * h2 + p11 * h2**2) / det - 0.5 * jnp.log(det)


GAUSS2 = ig.ExponentialFamily(
    _gaussian2_log_partition,
    in_domain=lambda th: (th[2] < 0) & (4 * th[2] * th[4] - th[3] ** 2 > 0),
    dim=5,
)
# The diagonal (mean-field) subfamily sets the cross term theta[3] to zero.
DIAGONAL_BASIS = jnp.array(
    [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)


MF_MEAN = jnp.array([1.0, -1.0])
MF_COV = jnp.array([[1.0, 0.8], [0.8, 2.0]])
MF_START = jnp.array([0.0, 0.0, -0.5, -0.5])


def _gauss2_theta(mean, cov):
    p = jnp.linalg.inv(cov)
    return jnp.concatenate([p @ mean, jnp.array([-0.5 * p[0, 0], -p[0, 1], -0.5 * p[1, 1]])])


def _gauss2_usual(theta):
    p = jnp.array([[-2 * theta[2], -theta[3]], [-theta[3], -2 * theta[4]]])
    cov = jnp.linalg.inv(p)
    return cov @ theta[:2], cov


def test_mean_field_forward_and_reverse_kl_closed_forms():
    # Bishop (2006), Sec. 10.1.2: for a correlated Gaussian p, the factorized q minimizing
    # KL(p||q) keeps the marginal variances Sigma_ii (Eq. 10.17, m-projection), while the one
    # minimizing KL(q||p) has variances 1 / Lambda_ii (Eqs. 10.12-10.15, e-projection); both
    # keep the mean.
    target = _gauss2_theta(MF_MEAN, MF_COV)
    # The family's moments against the catalogue's MultivariateNormal(2) (same coordinates).
    mvn = MultivariateNormal(2)
    np.testing.assert_allclose(target, mvn.from_mean_covariance(MF_MEAN, MF_COV), **TOL)
    eta = jax.grad(_gaussian2_log_partition)(target)
    np.testing.assert_allclose(eta, mvn.mean_parameters(target), **TOL)
    m_res = ig.m_projection_affine(GAUSS2, eta, basis=DIAGONAL_BASIS, initial_coordinates=MF_START)
    e_res = ig.e_projection(GAUSS2, target, basis=DIAGONAL_BASIS, initial_coordinates=MF_START)
    m_mean, m_cov = _gauss2_usual(m_res.theta)
    e_mean, e_cov = _gauss2_usual(e_res.theta)
    np.testing.assert_allclose(m_mean, MF_MEAN, **TOL)
    np.testing.assert_allclose(e_mean, MF_MEAN, **TOL)
    np.testing.assert_allclose(m_cov, jnp.diag(jnp.diag(MF_COV)), **TOL)
    precision = jnp.linalg.inv(MF_COV)
    np.testing.assert_allclose(e_cov, jnp.diag(1.0 / jnp.diag(precision)), **TOL)


# ------------------------------------------------------------------------ e-projections
@settings(max_examples=20, deadline=None)
@given(p=points3, r=points3, s=points3)
def test_dual_pythagorean_relation_e_projection_onto_m_flat_subfamily(p, r, s):
    # M = {q : C eta(q) = c} is m-flat; p* = argmin_{q in M} KL(q||p) satisfies
    # KL(q||p) = KL(q||p*) + KL(p*||p) for every q in M (Csiszar 1975, Theorem 2.2).
    p, r, s = (jnp.asarray(v) for v in (p, r, s))
    value = C3 @ (_probs(FEATS3, r) @ FEATS3)  # c reached by r: M is not empty
    star = _e_affine(p, value)
    q = _e_affine(s, value).theta  # another member of M (a tilt of s)
    np.testing.assert_allclose(C3 @ (_probs(FEATS3, q) @ FEATS3), value, **TOL)
    np.testing.assert_allclose(C3 @ (_probs(FEATS3, star.theta) @ FEATS3), value, **TOL)
    p_p, p_star, p_q = (_probs(FEATS3, t) for t in (p, star.theta, q))
    lhs = _kl_direct(p_q, p_p)
    rhs = _kl_direct(p_q, p_star) + _kl_direct(p_star, p_p)
    np.testing.assert_allclose(lhs, rhs, **TOL)
    np.testing.assert_allclose(_kl3(q, p), lhs, **TOL)
    # The projection is the tilt theta* = theta_p + C^T lambda.
    np.testing.assert_allclose(star.theta, p + C3.T @ star.coordinates, **TOL)


def test_e_projection_affine_closed_forms():
    normal = Normal()
    # Tilting N(m, s^2) by exp(lambda x) shifts the mean and keeps the variance
    # (Kullback 1959, Ch. 3; the normal cumulant generating function).
    p = normal.from_usual(jnp.array([-1.0, 2.0]))
    res = ig.e_projection_affine(
        normal, p, constraint_matrix=jnp.array([[1.0, 0.0]]), constraint_value=jnp.array([3.0])
    )
    mean, std = normal.to_usual(res.theta)
    np.testing.assert_allclose(mean, 3.0, **TOL)
    np.testing.assert_allclose(std, 2.0, **TOL)
    np.testing.assert_allclose(res.coordinates, [4.0 / 4.0], **TOL)  # lambda = (c - m) / s^2
    # Categorical tilt: p*_i ~ p_i exp(lambda f_i) with sum p*_i f_i = c; lambda by brentq.
    cat = Categorical(4)
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    f = np.array([0.0, 1.0, 2.0, 3.0])
    c_mat = jnp.asarray(f[:-1] - f[-1])[None, :]  # E[f] - f_last = sum_{i<k} eta_i (f_i - f_k)
    res = ig.e_projection_affine(
        cat, cat.from_usual(probs), constraint_matrix=c_mat, constraint_value=jnp.array([1.2 - 3])
    )

    def tilted(lam):
        w = probs * np.exp(lam * f)
        return w / w.sum()

    lam = scipy.optimize.brentq(lambda t: tilted(t) @ f - 1.2, -20, 20, xtol=1e-15, rtol=1e-15)
    np.testing.assert_allclose(cat.probabilities(res.theta), tilted(lam), **TOL)
    np.testing.assert_allclose(res.coordinates, [lam], **TOL)


def _gauss_hermite(num_nodes):
    nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)
    nodes, weights = jnp.asarray(nodes), jnp.asarray(weights / weights.sum())

    def expectation(fn, theta):
        mean, std = Normal().to_usual(theta)
        return jnp.tensordot(weights, jax.vmap(fn)(mean + std * nodes), axes=1)

    return expectation


GH20 = _gauss_hermite(20)
P_NORMAL = Normal().from_usual(jnp.array([1.5, 0.7]))


def _log_normal_target(x):  # unnormalized: the constant is irrelevant for the e-projection
    return Normal().log_prob(P_NORMAL, x) + 3.0


def _log_cauchy(x):
    return -jnp.log1p(x**2)


def test_e_projection_of_a_member_lands_in_one_natural_gradient_step():
    # Khan & Lin (2017), Eq. (9): with unit steps the natural gradient iteration reaches a target
    # in the family at once (Gauss-Hermite with 20 nodes is exact for these polynomials); the
    # second step only certifies convergence.
    res = ig.e_projection(Normal(), _log_normal_target, expectation=GH20)
    np.testing.assert_allclose(res.theta, P_NORMAL, **TOL)
    assert int(res.num_steps) <= 2


def test_e_projection_is_stationary_for_a_discrete_target():
    # Binomial(6) against an arbitrary p on {0..6}: the gradient of KL(q_theta || p), written as
    # a direct sum over the support, vanishes at the projection, and scipy finds the same point.
    fam = Binomial(6)
    xs = jnp.arange(7.0)
    p = jnp.asarray(np.random.default_rng(4).dirichlet(np.ones(7) * 2))

    def expectation(fn, theta):
        q = jnp.exp(jax.vmap(lambda x: fam.log_prob(theta, x))(xs))
        return jnp.tensordot(q, jax.vmap(fn)(xs), axes=1)

    res = ig.e_projection(fam, lambda x: jnp.log(p[x.astype(int)]), expectation=expectation)

    def kl_direct(logit):
        q = jax.scipy.stats.binom.pmf(xs, 6, jax.nn.sigmoid(logit))
        return jnp.sum(q * (jnp.log(q) - jnp.log(p)))

    np.testing.assert_allclose(jax.grad(kl_direct)(res.theta[0]), 0.0, atol=1e-11)
    # Reverse KL is mode-seeking: this p gives two local minima; the iteration found the
    # global one (grid search, then scipy's bounded Brent refinement around the best node).
    grid = np.linspace(-4.0, 4.0, 81)
    t0 = grid[np.argmin([float(kl_direct(t)) for t in grid])]
    best = scipy.optimize.minimize_scalar(
        lambda t: float(kl_direct(t)),
        bounds=(t0 - 0.1, t0 + 0.1),
        method="bounded",
        options={"xatol": 1e-12},
    )
    np.testing.assert_allclose(res.theta[0], best.x, rtol=1e-6, atol=1e-6)


def _cauchy(theta, x):  # location, scale
    z = (x - theta[0]) / theta[1]
    return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)


CAUCHY = ig.StatisticalModel(_cauchy, ig.Quadrature(-jnp.inf, jnp.inf, 64), dim=2)
# Double-exponential nodes that follow each normal q_theta (192 nodes: Gaussian tails to 1e-13).
Q_RULE = ig.Quadrature(-jnp.inf, jnp.inf, 192, center=lambda th: Normal().to_usual(th))


def test_e_projection_of_a_cauchy_model_onto_normals_is_stationary_by_scipy_quadrature():
    # The gradient of KL(q || p) = g theta - Cov_q[T, log p] (Amari 2016, Sec. 1.6) computed by
    # adaptive quadrature (scipy) vanishes at the natural-gradient fixed point.
    res = ig.e_projection(
        Normal(), CAUCHY, params=jnp.array([0.0, 1.0]), expectation=Q_RULE, rtol=1e-13, atol=1e-13
    )
    mean, std = (float(v) for v in Normal().to_usual(res.theta))
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)

    def cov(j):
        density = lambda x: np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
        eta = [mean, mean**2 + std**2][j]

        def f(x):
            return density(x) * ([x, x * x][j] - eta) * (-np.log1p(x * x) + 0.5 * np.log(2 * np.pi))

        return scipy.integrate.quad(f, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-13)[0]

    grad = np.asarray(Normal().fisher_information(res.theta) @ res.theta) - np.array(
        [cov(0), cov(1)]
    )
    np.testing.assert_allclose(grad, 0.0, atol=1e-10)


def test_m_projection_of_a_student_t_model_matches_its_moments():
    # Student t with nu = 5, location 1, scale 2: mean 1, variance nu / (nu - 2) * 4
    # (Johnson, Kotz & Balakrishnan, Continuous Univariate Distributions 2, Ch. 28).
    def student(theta, x):
        nu = 5.0
        z = (x - theta[0]) / theta[1]
        gammaln = jax.scipy.special.gammaln
        return (
            gammaln(3.0)
            - gammaln(2.5)
            - 0.5 * jnp.log(nu * jnp.pi)
            - jnp.log(theta[1])
            - 3.0 * jnp.log1p(z**2 / nu)
        )

    rule = ig.Quadrature(-jnp.inf, jnp.inf, 96, center=lambda th: (th[0], th[1]))
    model = ig.StatisticalModel(student, rule, dim=2)
    mean, std = Normal().to_usual(ig.m_projection(Normal(), model=model, params=[1.0, 2.0]))
    np.testing.assert_allclose(mean, 1.0, **TOL)
    np.testing.assert_allclose(std**2, 5.0 / 3.0 * 4.0, **TOL)


# ------------------------------------------------------------------------ transformations
def test_jit_vmap_grad_m_projection_affine_against_the_implicit_function_theorem():
    etas = jnp.stack([FEATS3.mean(0), jnp.asarray([0.1, 0.1, 0.2, 0.2, 0.2, 0.2]) @ FEATS3])
    batched = jax.vmap(_m_affine)(etas)
    for i in range(2):
        np.testing.assert_allclose(batched.theta[i], _m_affine(etas[i]).theta, **TOL)
    # dw/deta = (B^T g B)^{-1} B^T at the optimum.
    jac = jax.jacrev(lambda e: _m_affine(e).coordinates)(etas[0])
    g = FAM3.fisher_information(_m_affine(etas[0]).theta)
    expected = jnp.linalg.solve(BASIS3.T @ g @ BASIS3, BASIS3.T)
    np.testing.assert_allclose(jac, expected, **TOL)


def test_grad_e_projections_match_finite_differences():
    def f(theta):
        res = ig.e_projection(FAM3, theta, basis=BASIS3, offset=OFFSET3)
        return jnp.sum(jnp.sin(res.theta))

    def h(theta):
        res = _e_affine(theta, jnp.array([-0.02]))
        return jnp.sum(res.theta**2)

    for fn, x in [(f, jnp.array([1.0, -2.0, 0.5])), (h, jnp.array([0.3, -0.4, 0.5]))]:
        grad = jax.grad(fn)(x)
        eps = 1e-5
        fd = jnp.stack(
            [(fn(x + eps * e) - fn(x - eps * e)) / (2 * eps) for e in jnp.eye(x.shape[0])]
        )
        np.testing.assert_allclose(grad, fd, rtol=1e-7, atol=1e-7)


@pytest.mark.slow
def test_vmap_e_projection_affine_over_targets():
    thetas = jnp.array([[0.3, -0.4, 0.5], [-1.0, 0.2, 0.0]])
    batched = jax.vmap(lambda t: _e_affine(t, jnp.array([-0.02])).theta)(thetas)
    for i in range(2):
        single = _e_affine(thetas[i], jnp.array([-0.02])).theta
        np.testing.assert_allclose(batched[i], single, **TOL)


@pytest.mark.slow
def test_float32_smoke():
    f32 = jnp.float32
    x = jnp.asarray(np.random.default_rng(5).normal(1.0, 2.0, (50, 2)), f32)
    theta = ig.m_projection(MultivariateNormal(2), samples=x)
    assert theta.dtype == f32
    np.testing.assert_allclose(
        MultivariateNormal(2).mean_covariance(theta)[0], x.mean(0), rtol=1e-5
    )
    eta = jnp.asarray(Normal().mean_parameters(jnp.asarray(P_NORMAL, f32)), f32)
    results = [
        ig.m_projection_affine(
            Normal(),
            eta,
            basis=jnp.array([[1.0], [0.0]], f32),
            offset=jnp.array([0.0, -0.5], f32),
        ),
        ig.e_projection_affine(
            Normal(),
            jnp.asarray(P_NORMAL, f32),
            constraint_matrix=jnp.array([[1.0, 0.0]], f32),
            constraint_value=jnp.array([0.5], f32),
        ),
    ]
    for res in results:
        assert res.theta.dtype == f32 and bool(res.successful)
    np.testing.assert_allclose(results[0].coordinates, [1.5], rtol=1e-5)
    np.testing.assert_allclose(Normal().to_usual(results[1].theta)[0], 0.5, rtol=1e-5)
    # e-projection of N(1.5, 0.7^2) onto the line {N(mu, 1)}: the mean is kept.
    res = ig.e_projection(
        Normal(),
        jnp.asarray(P_NORMAL, f32),
        basis=jnp.array([[1.0], [0.0]], f32),
        offset=jnp.array([0.0, -0.5], f32),
    )
    assert res.theta.dtype == f32
    np.testing.assert_allclose(res.coordinates, [1.5], rtol=1e-5)


# ------------------------------------------------------------------------ errors
def test_target_must_be_given_exactly_once():
    with pytest.raises(ValueError, match="exactly one way"):
        ig.m_projection(Normal(), jnp.array([0.0, 1.0]), samples=jnp.zeros(3))
    with pytest.raises(ValueError, match="exactly one way"):
        ig.m_projection_affine(Normal(), basis=jnp.eye(2))
    with pytest.raises(ValueError, match="`weights` must have shape"):
        ig.m_projection(Normal(), samples=jnp.zeros(3), weights=jnp.ones(4))
    with pytest.raises(TypeError, match="exponential family"):
        ig.m_projection(object(), jnp.zeros(2))  # type: ignore[arg-type]


def test_bad_shapes_raise_at_trace_time():
    with pytest.raises(ValueError, match="`basis` must have shape"):
        ig.m_projection_affine(FAM3, FEATS3.mean(0), basis=jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="`constraint_value` must have shape"):
        ig.e_projection_affine(
            FAM3, jnp.zeros(3), constraint_matrix=C3, constraint_value=jnp.zeros(2)
        )
    with pytest.raises(ValueError, match="needs `expectation=`"):
        ig.e_projection(Normal(), _log_cauchy)
    with pytest.raises(ValueError, match="only used with a callable"):
        ig.e_projection(Normal(), P_NORMAL, expectation=GH20)


def test_value_errors_raise():
    # A rank-deficient basis: the Newton metric B^T g B is singular.
    bad_basis = jnp.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(eqx.EquinoxRuntimeError, match="full rank"):
        ig.m_projection_affine(FAM3, FEATS3.mean(0), basis=bad_basis)
    # Infeasible constraint: a categorical probability cannot exceed one.
    with pytest.raises(eqx.EquinoxRuntimeError, match="non-finite|line search"):
        ig.e_projection_affine(
            Categorical(3),
            jnp.zeros(2),
            constraint_matrix=jnp.array([[1.0, 0.0]]),
            constraint_value=jnp.array([1.5]),
        )
    # Moments outside the mean domain (negative variance): the projection does not exist.
    with pytest.raises(eqx.EquinoxRuntimeError, match="mean domain"):
        ig.m_projection(Normal(), jnp.array([1.0, 0.5]))
    # Start outside the natural domain.
    with pytest.raises(eqx.EquinoxRuntimeError, match="starting point"):
        ig.m_projection_affine(Normal(), jnp.array([0.0, 2.0]), basis=jnp.array([[0.0], [1.0]]))


def test_value_errors_raise_under_jit():
    @eqx.filter_jit
    def run(eta, max_steps):
        return ig.m_projection_affine(
            FAM3, eta, basis=BASIS3, offset=OFFSET3, max_steps=max_steps
        ).theta

    with pytest.raises(eqx.EquinoxRuntimeError, match="step limit"):
        run(FEATS3.mean(0), 1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="mean domain"):
        eqx.filter_jit(lambda e: ig.m_projection(Normal(), e))(jnp.array([1.0, 0.5]))


def test_throw_false_reports_the_result_code():
    res = ig.e_projection(Normal(), _log_cauchy, expectation=GH20, max_steps=2, throw=False)
    assert res.result == ig.RESULTS.max_steps_reached
    assert not bool(res.successful)
    assert int(res.num_steps) == 2
