"""Curvature values beyond the core tests: published closed forms, geomstats, Bianchi identities.

Each curvature is computed by two routes of the library (the exponential-family closed form from
A''' alone, and the generic route that differentiates a metric given as a plain function) and
compared with a published value or with geomstats' closed forms (Le Brigant, Preston & Puechmorel
for Beta and Dirichlet). geomstats is in the ``test`` extra (those tests skip where it is missing).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as hst
from jax.scipy.special import polygamma

from infogeo_jax import AbstractStatisticalManifold as ASM, StatisticalManifold
from infogeo_jax.families import Beta, Categorical, Dirichlet, Gamma
from infogeo_jax.geometry import _curvature

TOL = dict(rtol=1e-10, atol=1e-10)


def _geomstats():
    from benchmarks._common import import_geomstats

    gs = import_geomstats()
    if gs is None:
        pytest.skip('geomstats is not installed (pip install -e ".[test]")')
    return gs


def riemann_from_christoffels(gamma, dgamma):
    """DESIGN.md convention from Gamma[l, i, j] = G^l_ij and dgamma[l, i, j, m] = d_m G^l_ij."""
    return (
        np.einsum("lkij->lijk", dgamma)
        - np.einsum("ljik->lijk", dgamma)
        + np.einsum("ljm,mki->lijk", gamma, gamma)
        - np.einsum("lkm,mji->lijk", gamma, gamma)
    )


# --------------------------------------------------------------------------- categorical sphere
CATEGORICAL = Categorical(4)


def sphere_metric(theta):
    """Pull-back of the Euclidean metric by theta -> 2 sqrt(p(theta)): the radius-2 sphere
    (Amari & Nagaoka 2000, Sec. 2.5; Kass & Vos 1997, Sec. 2.3). Independent of A."""
    jac = jax.jacfwd(lambda th: 2.0 * jnp.sqrt(jax.nn.softmax(jnp.append(th, 0.0))))(theta)
    return jac.T @ jac


SPHERE = StatisticalManifold(sphere_metric, dim=3)
categorical_curvatures = jax.jit(
    jax.vmap(
        lambda th, u, v: (
            CATEGORICAL.scalar_curvature(th),
            SPHERE.scalar_curvature(th),
            CATEGORICAL.sectional_curvature(th, u, v),
            SPHERE.sectional_curvature(th, u, v),
            CATEGORICAL.riemann_tensor(th),
            SPHERE.riemann_tensor(th),
        )
    )
)


def test_categorical_simplex_is_a_sphere_of_radius_two():
    key1, key2, key3 = jax.random.split(jax.random.key(0), 3)
    theta = jax.random.normal(key1, (5, 3))
    u, v = jax.random.normal(key2, (5, 3)), jax.random.normal(key3, (5, 3))
    s_ef, s_sphere, k_ef, k_sphere, r_ef, r_sphere = categorical_curvatures(theta, u, v)
    # A 3-sphere of radius r: sectional curvature 1 / r^2, scalar curvature n (n - 1) / r^2.
    np.testing.assert_allclose(s_ef, 6 / 4, **TOL)
    np.testing.assert_allclose(s_sphere, 6 / 4, **TOL)
    np.testing.assert_allclose(k_ef, 1 / 4, **TOL)
    np.testing.assert_allclose(k_sphere, 1 / 4, **TOL)
    np.testing.assert_allclose(r_ef, r_sphere, rtol=1e-9, atol=1e-9)
    # The metrics agree too (Fisher = Hessian of A = pulled-back sphere metric).
    np.testing.assert_allclose(
        jax.vmap(CATEGORICAL.metric)(theta), jax.vmap(sphere_metric)(theta), **TOL
    )


# --------------------------------------------------------------------------- gamma
GAMMA = Gamma()


def gamma_gaussian_curvature(k):
    """Gaussian curvature of the gamma manifold (psi1 + k psi2) / (4 (k psi1 - 1)^2); the scalar
    curvature is twice it (Arwini & Dodson, *Information Geometry: Near Randomness and Near
    Independence*, Springer 2008, Ch. 3, the gamma manifold)."""
    p1, p2 = polygamma(1, k), polygamma(2, k)
    return (p1 + k * p2) / (4 * (k * p1 - 1) ** 2)


def gamma_usual_metric(phi):
    """Fisher metric of Gamma(shape k, rate b) in (k, b): [[psi1(k), -1/b], [-1/b, k/b^2]]."""
    k, b = phi[0], phi[1]
    return jnp.array([[polygamma(1, k), -1 / b], [-1 / b, k / b**2]])


GAMMA_USUAL = StatisticalManifold(gamma_usual_metric, dim=2)
gamma_curvatures = jax.jit(
    jax.vmap(
        lambda th: (
            GAMMA.scalar_curvature(th),
            GAMMA.sectional_curvature(th, jnp.array([1.0, 0.0]), jnp.array([0.3, 1.0])),
            GAMMA_USUAL.scalar_curvature(jnp.array([th[0], -th[1]])),
        )
    )
)


def test_gamma_curvature_formula():
    k = jnp.array([0.3, 1.0, 2.5, 10.0, 60.0])
    rate = jnp.array([2.0, 0.1, 1.0, 5.0, 0.7])
    theta = jax.vmap(GAMMA.from_usual)(jnp.stack([k, rate], axis=1))
    scalar, sectional, scalar_usual = gamma_curvatures(theta)
    expected = gamma_gaussian_curvature(k)
    np.testing.assert_allclose(sectional, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scalar, 2 * expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scalar_usual, 2 * expected, rtol=1e-9, atol=1e-12)


def test_gamma_curvature_is_differentiable():
    # d S / d theta: S depends on the shape k = theta[0] alone.
    theta = GAMMA.from_usual(jnp.array([2.5, 3.0]))
    grad = jax.jit(jax.grad(GAMMA.scalar_curvature))(theta)
    expected = 2 * jax.grad(gamma_gaussian_curvature)(2.5)
    np.testing.assert_allclose(grad, [expected, 0.0], rtol=1e-9, atol=1e-12)


def test_gamma_against_geomstats_pulled_back():
    _geomstats()
    from geomstats.information_geometry.gamma import GammaDistributions

    gs_gamma = GammaDistributions()
    # geomstats' standard coordinates: (kappa, gamma) = (k, k / b) = (theta_0, -theta_0/theta_1).
    to_standard = lambda th: jnp.array([th[0], -th[0] / th[1]])  # noqa: E731
    for k, b in [(0.7, 2.0), (3.0, 0.5)]:
        theta = GAMMA.from_usual(jnp.array([k, b]))
        phi = np.asarray(to_standard(theta))
        jac = jax.jacfwd(to_standard)(theta)
        pulled_back = jac.T @ np.asarray(gs_gamma.metric.metric_matrix(phi)) @ jac
        np.testing.assert_allclose(GAMMA.metric(theta), pulled_back, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            GAMMA.scalar_curvature(theta), gs_gamma.metric.scalar_curvature(phi), rtol=1e-7
        )


# --------------------------------------------------------------------------- Beta and Dirichlet
@pytest.mark.parametrize("k", [2, 3])
def test_beta_dirichlet_against_geomstats_closed_forms(k):
    _geomstats()
    from geomstats.information_geometry.beta import BetaDistributions
    from geomstats.information_geometry.dirichlet import DirichletDistributions

    family = Beta() if k == 2 else Dirichlet(k)
    space = BetaDistributions() if k == 2 else DirichletDistributions(k)
    rng = np.random.default_rng(k)
    points = np.exp(rng.normal(size=(4, k)))
    ours = jax.jit(
        jax.vmap(
            lambda th: (
                family.metric(th),
                family.christoffel_symbols(th),
                family.riemann_tensor(th),
                family.scalar_curvature(th),
            )
        )
    )(jnp.asarray(points))
    for n, point in enumerate(points):
        # Same coordinates (the concentrations), so no pull-back is needed. geomstats' metric,
        # Christoffel symbols and their Jacobian are closed forms (Le Brigant, Preston &
        # Puechmorel, Differ. Geom. Appl. 74 (2021), Sec. 3); its scalar curvature is autodiff.
        np.testing.assert_allclose(ours[0][n], space.metric.metric_matrix(point), **TOL)
        np.testing.assert_allclose(ours[1][n], space.metric.christoffels(point), **TOL)
        gamma = np.asarray(space.metric.christoffels(point))
        dgamma = np.asarray(space.metric.jacobian_christoffels(point))
        np.testing.assert_allclose(
            ours[2][n], riemann_from_christoffels(gamma, dgamma), rtol=1e-9, atol=1e-9
        )
        np.testing.assert_allclose(
            ours[3][n], space.metric.scalar_curvature(point), rtol=1e-9, atol=1e-9
        )


# --------------------------------------------------------------------------- Bianchi identities
DIRICHLET = Dirichlet(3)
GENERIC_DIRICHLET = StatisticalManifold(
    DIRICHLET.fisher_information, DIRICHLET.skewness_tensor, dim=3
)


def _bianchi_defects(theta, alpha):
    """First and second Bianchi identities of the alpha-connection (torsion-free for every alpha,
    Amari & Nagaoka 2000, Sec. 2.3):
    R^l_{ijk} + R^l_{jki} + R^l_{kij} = 0 and nabla_m R^l_{ijk} + nabla_j R^l_{ikm}
    + nabla_k R^l_{imj} = 0, with R^l_{ijk} = dx^l(R(d_j, d_k) d_i)."""
    riemann = DIRICHLET.riemann_tensor(theta, alpha)
    generic = GENERIC_DIRICHLET.riemann_tensor(theta, alpha)
    first = riemann + jnp.einsum("ljki->lijk", riemann) + jnp.einsum("lkij->lijk", riemann)
    gamma = DIRICHLET.christoffel_symbols(theta, alpha)  # [l, m, p] = G^l_mp
    d_riemann = jax.jacfwd(lambda th: DIRICHLET.riemann_tensor(th, alpha))(theta)
    # nabla_m R^l_{ijk}, index order [m, l, i, j, k]
    cov = (
        jnp.einsum("lijkm->mlijk", d_riemann)
        + jnp.einsum("lmp,pijk->mlijk", gamma, riemann)
        - jnp.einsum("pmi,lpjk->mlijk", gamma, riemann)
        - jnp.einsum("pmj,lipk->mlijk", gamma, riemann)
        - jnp.einsum("pmk,lijp->mlijk", gamma, riemann)
    )
    second = cov + jnp.einsum("jlikm->mlijk", cov) + jnp.einsum("klimj->mlijk", cov)
    return first, second, riemann - generic, jnp.max(jnp.abs(riemann))


bianchi = jax.jit(_bianchi_defects)


@settings(max_examples=6, deadline=None)
@given(
    theta=hst.lists(hst.floats(0.3, 8.0), min_size=3, max_size=3),
    # alpha = +-1 are flat (R = 0), where the identities hold trivially: stay away from them.
    alpha=hst.floats(-2.0, 2.0).filter(lambda a: abs(abs(a) - 1.0) > 0.05),
)
def test_bianchi_identities(theta, alpha):
    first, second, route_gap, scale = bianchi(jnp.asarray(theta), jnp.asarray(alpha))
    assert scale > 1e-3  # the identities are not trivially satisfied by a zero tensor
    np.testing.assert_allclose(first, 0.0, atol=1e-10 * (1 + scale))
    np.testing.assert_allclose(second, 0.0, atol=1e-9 * (1 + scale))
    # The closed form (A''' only) and the generic route (derivatives of g and T) agree.
    np.testing.assert_allclose(route_gap, 0.0, atol=1e-10 * (1 + scale))


@pytest.mark.slow
def test_riemann_routes_agree_on_a_user_manifold():
    # A metric with skewness that is not an exponential family: the two generic routes (derivative
    # of g^-1 Gamma, and derivatives of g and T only) must agree.
    def metric(th):
        return jnp.array([[1 + th[1] ** 2, 0.3 * th[0]], [0.3 * th[0], 2 + jnp.sin(th[0])]])

    def skewness(th):
        t = jnp.zeros((2, 2, 2)).at[0, 0, 0].set(th[1]).at[1, 1, 1].set(th[0] ** 2)
        return t.at[0, 0, 1].set(0.5).at[0, 1, 0].set(0.5).at[1, 0, 0].set(0.5)

    space = StatisticalManifold(metric, skewness, dim=2)
    theta, alpha = jnp.array([0.4, -0.7]), 0.6
    old = _curvature.riemann_from_christoffel(
        lambda th: space.christoffel_symbols(th, alpha), theta
    )
    np.testing.assert_allclose(space.riemann_tensor(theta, alpha), old, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- log-density route
def test_cauchy_curvature_through_the_log_density():
    from infogeo_jax import Quadrature, StatisticalModel

    def cauchy(theta, x):
        z = (x - theta[0]) / theta[1]
        return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)

    rule = Quadrature(-jnp.inf, jnp.inf, 64, center=lambda th: (th[0], th[1]))
    model = StatisticalModel(cauchy, rule, dim=2, in_domain=lambda th: th[1] > 0)
    curv = jax.jit(
        lambda th, a: (
            model.scalar_curvature(th, a),
            model.sectional_curvature(th, jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), a),
        )
    )
    for theta in (jnp.array([0.0, 1.0]), jnp.array([-3.0, 0.2])):
        # Cauchy location-scale: hyperbolic with Gaussian curvature -2 (Mitchell 1988); its
        # skewness tensor vanishes, so every alpha-connection has the same curvature.
        for alpha in (0.0, 0.7):
            scalar, sectional = curv(theta, jnp.asarray(alpha))
            np.testing.assert_allclose(scalar, -4.0, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(sectional, -2.0, rtol=1e-9, atol=1e-9)


def test_float32_smoke_curvature():
    theta = jnp.array([0.7, 2.0], jnp.float32)
    beta = Beta()
    u, v = jnp.ones(2, jnp.float32), jnp.eye(2, dtype=jnp.float32)[0]
    closed, generic, sectional = jax.jit(
        lambda th: (
            beta.riemann_tensor(th, 0.5),  # exponential-family closed form
            ASM.riemann_tensor(beta, th),  # generic route, derivatives of g
            beta.sectional_curvature(th, u, v),
        )
    )(theta)
    for x in (closed, generic, sectional):
        assert x.dtype == jnp.float32
    np.testing.assert_allclose(closed, 0.75 * generic, rtol=1e-3, atol=1e-4)  # 1 - alpha^2
