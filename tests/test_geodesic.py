"""Geodesics: exp/log maps, Fisher-Rao distances, parallel transport, their derivatives, errors.

Every numerical route (diffrax ODE + Newton shooting) is checked against a published closed form
and, where a closed-form override exists in a family, against that override called the normal way
(the numerical route is reached with ``fam.geodesic_distance(..., method="numerical")``).
JAX compile time dominates: every jitted function below is built once at module level and reused
with fixed shapes.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as hst

from infogeo_jax import StatisticalManifold
from infogeo_jax.families import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Dirichlet,
    Exponential,
    Normal,
    Poisson,
)
from infogeo_jax.geometry import RESULTS, GeodesicSolver, LogMapSolution

TOL = dict(rtol=1e-10, atol=1e-10)
NORMAL = Normal()


# ------------------------------------------------------------------------- published closed forms
def normal_distance(m0, s0, m1, s1):
    """Fisher-Rao distance of N(m0, s0^2), N(m1, s1^2): the normal half-plane is the Poincare
    half-plane in (mu / sqrt 2, sigma) scaled by sqrt 2 (Costa, Santos & Strapasson, Discrete
    Appl. Math. 197 (2015), Eq. (7); Atkinson & Mitchell, Sankhya A 43 (1981))."""
    return np.sqrt(2) * np.arccosh(1 + ((m0 - m1) ** 2 / 2 + (s0 - s1) ** 2) / (2 * s0 * s1))


def cauchy_distance(m0, s0, m1, s1):
    """Cauchy location-scale: Fisher metric (dm^2 + ds^2) / (2 s^2) (Mitchell, Int. Stat. Rev.
    56 (1988), Sec. 3), i.e. the Poincare half-plane scaled by 1 / sqrt 2."""
    return np.arccosh(1 + ((m0 - m1) ** 2 + (s0 - s1) ** 2) / (2 * s0 * s1)) / np.sqrt(2)


def categorical_distance(p, q):
    """Rao (1945); Amari & Nagaoka (2000) Sec. 2.5: the simplex is a sphere of radius 2."""
    return 2 * np.arccos(np.clip(np.sum(np.sqrt(p * q)), -1, 1))


def cauchy_metric(theta):
    return jnp.eye(2, dtype=theta.dtype) / (2 * theta[1] ** 2)


CAUCHY = StatisticalManifold(cauchy_metric, dim=2, in_domain=lambda th: th[1] > 0)


# ------------------------------------------------------------------------- shared jitted functions
def _numeric_distance(space):
    return jax.jit(jax.vmap(lambda a, b: space.geodesic_distance(a, b, method="numerical")))


normal_numeric_distance = _numeric_distance(NORMAL)
normal_exp = jax.jit(lambda a, v, alpha: NORMAL.exp_map(a, v, alpha))
normal_solve = jax.jit(lambda a, b, alpha: NORMAL.solve_log_map(a, b, alpha))


def normal_log(a, b, alpha):
    sol = normal_solve(a, b, alpha)
    assert sol.result == RESULTS.successful
    return sol.velocity


def normal_points(pairs):
    a = jnp.stack([NORMAL.from_usual(jnp.array([m, s])) for m, s, _, _ in pairs])
    b = jnp.stack([NORMAL.from_usual(jnp.array([m, s])) for _, _, m, s in pairs])
    return a, b


NORMAL_PAIRS = [(0.0, 1.0, 3.0, 0.5), (-1.0, 2.0, 4.0, 7.0), (0.3, 0.1, 0.3, 0.2)]


# ------------------------------------------------------------------------- distances
def test_normal_distance_matches_closed_forms():
    a, b = normal_points(NORMAL_PAIRS)
    numeric = normal_numeric_distance(a, b)
    published = np.array([normal_distance(*p) for p in NORMAL_PAIRS])
    override = jax.vmap(NORMAL.geodesic_distance)(a, b)
    np.testing.assert_allclose(numeric, published, **TOL)
    np.testing.assert_allclose(numeric, override, **TOL)


@pytest.mark.parametrize(
    "family, usual_pairs, published",
    [
        (
            Categorical(3),
            [
                (np.array([0.2, 0.3, 0.5]), np.array([0.6, 0.1, 0.3])),
                (np.array([0.01, 0.01, 0.98]), np.array([0.7, 0.2, 0.1])),
            ],
            categorical_distance,
        ),
        # Atkinson & Mitchell (1981): Poisson 2 |sqrt(l1) - sqrt(l0)|, exponential |log(l1/l0)|.
        (Poisson(), [(0.3, 20.0), (4.0, 1.0)], lambda a, b: 2 * abs(np.sqrt(b) - np.sqrt(a))),
        (Exponential(), [(0.5, 40.0), (2.0, 1.0)], lambda a, b: abs(np.log(b / a))),
    ],
    ids=["categorical", "poisson", "exponential"],
)
def test_distance_matches_closed_form_and_override(family, usual_pairs, published):
    a = jnp.stack([family.from_usual(jnp.atleast_1d(jnp.asarray(p))) for p, _ in usual_pairs])
    b = jnp.stack([family.from_usual(jnp.atleast_1d(jnp.asarray(q))) for _, q in usual_pairs])
    numeric = _numeric_distance(family)(a, b)
    expected = np.array([published(p, q) for p, q in usual_pairs])
    np.testing.assert_allclose(numeric, expected, **TOL)
    np.testing.assert_allclose(numeric, jax.vmap(family.geodesic_distance)(a, b), **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("family", [Bernoulli(), Binomial(7)], ids=["bernoulli", "binomial"])
def test_binary_distance_matches_override(family):
    # Rao (1945): 2 sqrt(n) arccos(sqrt(p0 p1) + sqrt((1 - p0)(1 - p1))).
    p = np.array([0.05, 0.5, 0.9])
    q = np.array([0.95, 0.6, 0.2])
    a = jnp.stack([family.from_usual(jnp.array([x])) for x in p])
    b = jnp.stack([family.from_usual(jnp.array([x])) for x in q])
    n = getattr(family, "num_trials", 1)
    expected = 2 * np.sqrt(n) * np.arccos(np.sqrt(p * q) + np.sqrt((1 - p) * (1 - q)))
    numeric = _numeric_distance(family)(a, b)
    np.testing.assert_allclose(numeric, expected, **TOL)
    np.testing.assert_allclose(numeric, jax.vmap(family.geodesic_distance)(a, b), **TOL)


def test_cauchy_distance_user_metric():
    pairs = [(0.0, 1.0, 5.0, 0.2), (-2.0, 3.0, 1.0, 3.0)]
    a = jnp.array([[m, s] for m, s, _, _ in pairs])
    b = jnp.array([[m, s] for _, _, m, s in pairs])
    numeric = _numeric_distance(CAUCHY)(a, b)
    np.testing.assert_allclose(numeric, [cauchy_distance(*p) for p in pairs], **TOL)


@pytest.mark.slow
def test_cauchy_distance_log_density_route():
    from infogeo_jax import Quadrature, StatisticalModel

    def cauchy(theta, x):
        z = (x - theta[0]) / theta[1]
        return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)

    rule = Quadrature(-jnp.inf, jnp.inf, 64, center=lambda th: (th[0], th[1]))
    model = StatisticalModel(cauchy, rule, dim=2, in_domain=lambda th: th[1] > 0)
    a, b = jnp.array([0.0, 1.0]), jnp.array([3.0, 0.5])
    numeric = jax.jit(model.geodesic_distance)(a, b)
    # The quadrature metric is good to ~1e-15, the distance to ~1e-10 (ODE and Newton tolerance).
    np.testing.assert_allclose(numeric, cauchy_distance(0.0, 1.0, 3.0, 0.5), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------- hard pairs
beta = Beta()
beta_solve = jax.jit(lambda a, b: beta.solve_log_map(a, b))
beta_exp = jax.jit(lambda a, v: beta.exp_map(a, v))


def test_beta_hard_pair_exp_log_and_symmetry():
    a, b = jnp.array([0.2, 0.3]), jnp.array([20.0, 10.0])
    forward = beta_solve(a, b)
    backward = beta_solve(b, a)
    assert forward.result == RESULTS.successful and backward.result == RESULTS.successful
    # exp(log) returns the target to 1e-8.
    np.testing.assert_allclose(beta_exp(a, forward.velocity), b, **TOL)
    np.testing.assert_allclose(beta_exp(b, backward.velocity), a, **TOL)
    # The reversed geodesic: its initial velocity is minus the forward end velocity.
    np.testing.assert_allclose(backward.velocity, -forward.end_velocity, rtol=1e-8, atol=1e-8)
    # Constant speed along a Levi-Civita geodesic, and a symmetric distance.
    d_ab = beta.norm(a, forward.velocity)
    np.testing.assert_allclose(beta.norm(b, forward.end_velocity), d_ab, **TOL)
    np.testing.assert_allclose(beta.norm(b, backward.velocity), d_ab, **TOL)
    # The geodesic is shorter than the straight segment (Gauss-Legendre length, 64 nodes).
    nodes, weights = np.polynomial.legendre.leggauss(64)
    seg = a + 0.5 * (nodes[:, None] + 1) * (b - a)
    seg_len = 0.5 * weights @ jax.vmap(lambda x: beta.norm(x, b - a))(seg)
    assert d_ab < seg_len


@pytest.mark.slow
def test_dirichlet_hard_pair_exp_log():
    fam = Dirichlet(3)
    a, b = jnp.array([0.5, 1.0, 4.0]), jnp.array([6.0, 0.7, 2.0])
    sol = jax.jit(fam.solve_log_map)(a, b)
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(jax.jit(fam.exp_map)(a, sol.velocity), b, **TOL)
    back = jax.jit(fam.solve_log_map)(b, a)
    np.testing.assert_allclose(fam.norm(a, sol.velocity), fam.norm(b, back.velocity), **TOL)
    # geomstats' BVP solver (when installed) agrees to its own ~1e-3 accuracy.
    geomstats = pytest.importorskip("benchmarks._common").import_geomstats()
    if geomstats is not None:
        from geomstats.information_geometry.dirichlet import DirichletDistributions

        ref = DirichletDistributions(3).metric.dist(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(fam.norm(a, sol.velocity), ref, rtol=1e-3)


# ------------------------------------------------------------------------- derivatives
normal_distance_grad = jax.jit(
    jax.grad(lambda a, b: NORMAL.geodesic_distance(a, b, method="numerical"), argnums=(0, 1))
)


def test_distance_gradient_envelope_theorem():
    a, b = NORMAL.from_usual(jnp.array([0.0, 1.0])), NORMAL.from_usual(jnp.array([3.0, 0.5]))
    g0, g1 = normal_distance_grad(a, b)
    # Second route: autodiff through the closed-form override.
    c0, c1 = jax.grad(NORMAL.geodesic_distance, argnums=(0, 1))(a, b)
    np.testing.assert_allclose(g0, c0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(g1, c1, rtol=1e-9, atol=1e-9)
    # The gradient in theta_1 is the lowered unit tangent at the end: its dual norm is 1.
    ginv = jnp.linalg.inv(NORMAL.metric(b))
    np.testing.assert_allclose(g1 @ ginv @ g1, 1.0, **TOL)
    # Zero (a subgradient) at coinciding points, not NaN.
    z0, z1 = normal_distance_grad(a, a)
    np.testing.assert_array_equal(np.concatenate([z0, z1]), 0.0)


def test_log_map_and_exp_map_jacobians_are_inverse():
    a, b = NORMAL.from_usual(jnp.array([0.0, 1.0])), NORMAL.from_usual(jnp.array([3.0, 0.5]))
    v = normal_log(a, b, 0.0)
    # Reverse mode through log_map (implicit function theorem), forward mode through exp_map.
    jac_0, jac_1 = jax.jit(jax.jacrev(lambda x, y: NORMAL.log_map(x, y), argnums=(0, 1)))(a, b)
    jac_exp = jax.jacfwd(lambda w: NORMAL.exp_map(a, w))(v)
    np.testing.assert_allclose(jac_1 @ jac_exp, np.eye(2), rtol=1e-9, atol=1e-9)
    # d log / d theta_0 against central differences of the solve itself.
    h = 1e-5
    fd = np.stack(
        [
            (normal_log(a + h * e, b, 0.0) - normal_log(a - h * e, b, 0.0)) / (2 * h)
            for e in np.eye(2)
        ],
        axis=1,
    )
    np.testing.assert_allclose(jac_0, fd, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------- alpha-geodesics
@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_e_and_m_geodesics_closed_form_vs_ode(alpha):
    a, b = NORMAL.from_usual(jnp.array([0.0, 1.0])), NORMAL.from_usual(jnp.array([2.0, 3.0]))
    traced = jnp.asarray(alpha)  # an array alpha forces the ODE route
    closed = NORMAL.log_map(a, b, alpha)
    numeric = normal_log(a, b, traced)
    np.testing.assert_allclose(numeric, closed, rtol=1e-9, atol=1e-9)
    if alpha == 1.0:  # e-geodesic: straight line in natural parameters (Amari 2016, Sec. 2.4)
        np.testing.assert_allclose(closed, b - a, rtol=0, atol=0)
    else:  # m-geodesic: straight line in expectation parameters
        eta = NORMAL.mean_parameters
        np.testing.assert_allclose(NORMAL.metric(a) @ closed, eta(b) - eta(a), **TOL)
    np.testing.assert_allclose(normal_exp(a, closed, traced), b, rtol=1e-9, atol=1e-9)
    path = NORMAL.geodesic(a, closed, jnp.array([0.25, 0.5]), alpha)
    if alpha == 1.0:
        np.testing.assert_allclose(path, [a + 0.25 * (b - a), a + 0.5 * (b - a)], **TOL)
    else:
        eta_path = jax.vmap(NORMAL.mean_parameters)(path)
        np.testing.assert_allclose(
            eta_path, [eta(a) + t * (eta(b) - eta(a)) for t in (0.25, 0.5)], **TOL
        )


def test_alpha_geodesic_solves_its_equation():
    # For alpha = 0.5 there is no closed form: check exp(log) and the geodesic equation itself
    # (finite differences of the path against -Gamma^(alpha)(v, v)).
    a, b = NORMAL.from_usual(jnp.array([0.0, 1.0])), NORMAL.from_usual(jnp.array([1.5, 2.0]))
    alpha = jnp.asarray(0.5)
    v = normal_log(a, b, alpha)
    np.testing.assert_allclose(normal_exp(a, v, alpha), b, **TOL)
    h = 1e-3
    x_m, x_0, x_p = NORMAL.geodesic(a, v, jnp.array([-h, 0.0, h]), alpha)
    acceleration = (x_p - 2 * x_0 + x_m) / h**2
    gamma = NORMAL.christoffel_symbols(a, alpha)
    np.testing.assert_allclose(
        acceleration, -jnp.einsum("kij,i,j->k", gamma, v, v), rtol=1e-6, atol=1e-6
    )


# ------------------------------------------------------------------------- geodesic()
def test_geodesic_points_match_exp_map_at_every_time():
    a = NORMAL.from_usual(jnp.array([0.5, 1.5]))
    v = jnp.array([0.4, 0.3])
    ts = jnp.array([0.7, -0.4, 0.0, 1.3, 0.2])
    path = jax.jit(lambda t: NORMAL.geodesic(a, v, t))(ts)
    assert path.shape == (5, 2)
    singles = jnp.stack([normal_exp(a, t * v, 0.0) for t in ts])
    np.testing.assert_allclose(path, singles, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(NORMAL.geodesic(a, v, 0.0), a, rtol=0, atol=0)


@pytest.mark.slow
def test_geodesic_time_derivative_is_the_velocity():
    a = NORMAL.from_usual(jnp.array([0.5, 1.5]))
    v = jnp.array([0.4, 0.3])
    velocity = jax.jacfwd(lambda t: NORMAL.geodesic(a, v, t))(jnp.asarray(0.0))
    np.testing.assert_allclose(velocity, v, rtol=1e-12, atol=1e-12)
    # At t = 1 it is the end velocity of the geodesic (the log map's end velocity).
    b = normal_exp(a, v, 0.0)
    sol = normal_solve(a, b, 0.0)
    end = jax.jacfwd(lambda t: NORMAL.geodesic(a, v, t))(jnp.asarray(1.0))
    np.testing.assert_allclose(end, sol.end_velocity, rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------------- parallel transport
normal_transport = jax.jit(
    lambda a, w, b, alpha, talpha: NORMAL.parallel_transport(
        a, w, end_point=b, alpha=alpha, transport_alpha=talpha
    )
)


def test_levi_civita_transport_is_an_isometry_and_carries_the_velocity():
    a, b = NORMAL.from_usual(jnp.array([0.0, 1.0])), NORMAL.from_usual(jnp.array([2.0, 0.4]))
    u, w = jnp.array([1.0, 2.0]), jnp.array([-0.5, 0.3])
    zero = jnp.asarray(0.0)
    tu = normal_transport(a, u, b, zero, zero)
    tw = normal_transport(a, w, b, zero, zero)
    np.testing.assert_allclose(NORMAL.inner(b, tu, tw), NORMAL.inner(a, u, w), **TOL)
    np.testing.assert_allclose(NORMAL.inner(b, tu, tu), NORMAL.inner(a, u, u), **TOL)
    # The velocity of a geodesic is parallel along it (for every alpha).
    for alpha in (0.0, 0.6):
        alpha = jnp.asarray(alpha)
        sol = normal_solve(a, b, alpha)
        carried = normal_transport(a, sol.velocity, b, alpha, alpha)
        np.testing.assert_allclose(carried, sol.end_velocity, rtol=1e-8, atol=1e-8)


@settings(max_examples=8, deadline=None)
@given(
    alpha=hst.floats(-1.5, 1.5),
    u=hst.lists(hst.floats(-2, 2), min_size=2, max_size=2),
    w=hst.lists(hst.floats(-2, 2), min_size=2, max_size=2),
)
def test_dual_transports_preserve_the_pairing(alpha, u, w):
    # Amari & Nagaoka (2000), Theorem 3.1: g(Pi^(a) u, Pi^(-a) w) = g(u, w) along any curve.
    a, b = NORMAL.from_usual(jnp.array([-0.5, 0.8])), NORMAL.from_usual(jnp.array([1.0, 2.5]))
    u, w = jnp.asarray(u), jnp.asarray(w)
    zero = jnp.asarray(0.0)
    pu = normal_transport(a, u, b, zero, jnp.asarray(alpha))
    pw = normal_transport(a, w, b, zero, jnp.asarray(-alpha))
    np.testing.assert_allclose(NORMAL.inner(b, pu, pw), NORMAL.inner(a, u, w), rtol=1e-9, atol=1e-9)


def test_flat_transports_closed_form_vs_ode():
    a, b = NORMAL.from_usual(jnp.array([0.0, 1.0])), NORMAL.from_usual(jnp.array([2.0, 0.4]))
    w = jnp.array([1.0, -2.0])
    zero = jnp.asarray(0.0)
    # e-transport is the identity in natural (affine) coordinates ...
    np.testing.assert_array_equal(
        NORMAL.parallel_transport(a, w, end_point=b, transport_alpha=1.0), w
    )
    np.testing.assert_allclose(normal_transport(a, w, b, zero, jnp.asarray(1.0)), w, **TOL)
    # ... and m-transport the identity in expectation coordinates: g(b) W = g(a) w.
    closed = NORMAL.parallel_transport(a, w, end_point=b, transport_alpha=-1.0)
    np.testing.assert_allclose(NORMAL.metric(b) @ closed, NORMAL.metric(a) @ w, **TOL)
    np.testing.assert_allclose(
        normal_transport(a, w, b, zero, jnp.asarray(-1.0)), closed, rtol=1e-8, atol=1e-8
    )


def _beta_transport(theta, v, w):
    return Beta().parallel_transport(theta, w, v, alpha=0.5, transport_alpha=-0.5)


_beta_transport_jacfwd = jax.jit(jax.jacfwd(_beta_transport, argnums=(0, 1, 2)))
_beta_transport_jacrev = jax.jit(jax.jacrev(_beta_transport, argnums=(0, 1, 2)))


def test_transport_derivatives_forward_reverse_and_finite_differences():
    theta, v, w = jnp.array([1.0, 2.0]), jnp.array([0.3, -0.2]), jnp.array([1.0, 0.5])
    forward = _beta_transport_jacfwd(theta, v, w)
    reverse = _beta_transport_jacrev(theta, v, w)
    for f, r in zip(forward, reverse):
        np.testing.assert_allclose(f, r, rtol=1e-12, atol=1e-12)
    # Transport is linear in w, so its w-Jacobian applied to w is the transported vector.
    np.testing.assert_allclose(forward[2] @ w, _beta_transport(theta, v, w), **TOL)
    # Central differences in theta and v (step 1e-5: error ~1e-10 plus the ODE tolerance).
    h = 1e-5
    for arg, jac in ((0, forward[0]), (1, forward[1])):
        columns = []
        for e in jnp.eye(2):
            plus = [theta, v, w]
            minus = [theta, v, w]
            plus[arg], minus[arg] = plus[arg] + h * e, minus[arg] - h * e
            columns.append((_beta_transport(*plus) - _beta_transport(*minus)) / (2 * h))
        np.testing.assert_allclose(jnp.stack(columns, axis=1), jac, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------- properties
@settings(max_examples=5, deadline=None)
@given(m0=hst.floats(-3, 3), s0=hst.floats(0.2, 5), m1=hst.floats(-3, 3), s1=hst.floats(0.2, 5))
def test_normal_exp_log_inverse_and_symmetric_distance(m0, s0, m1, s1):
    a, b = NORMAL.from_usual(jnp.array([m0, s0])), NORMAL.from_usual(jnp.array([m1, s1]))
    sol = normal_solve(a, b, 0.0)
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(normal_exp(a, sol.velocity, 0.0), b, rtol=1e-9, atol=1e-9)
    d = normal_numeric_distance(jnp.stack([a, b]), jnp.stack([b, a]))
    np.testing.assert_allclose(d[0], d[1], **TOL)
    np.testing.assert_allclose(d[0], normal_distance(m0, s0, m1, s1), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------- vmap, result codes
@pytest.mark.slow
def test_vmap_every_public_function():
    a, b = normal_points(NORMAL_PAIRS)
    sols = jax.vmap(normal_solve, in_axes=(0, 0, None))(a, b, 0.0)
    assert isinstance(sols, LogMapSolution)
    assert sols.velocity.shape == (3, 2) and sols.num_steps.shape == (3,)
    assert np.all(sols.residual <= 1)
    logs = jax.vmap(NORMAL.log_map)(a, b)
    np.testing.assert_allclose(logs, sols.velocity, **TOL)
    ends = jax.vmap(lambda x, v: normal_exp(x, v, 0.0))(a, sols.velocity)
    np.testing.assert_allclose(ends, b, rtol=1e-9, atol=1e-9)
    paths = jax.vmap(lambda x, v: NORMAL.geodesic(x, v, jnp.array([0.0, 1.0])))(a, logs)
    np.testing.assert_allclose(paths[:, 1], b, rtol=1e-9, atol=1e-9)
    w = jnp.array([1.0, -1.0])
    moved = jax.vmap(lambda x, y: NORMAL.parallel_transport(x, w, end_point=y))(a, b)
    norms = jax.vmap(lambda y, m: NORMAL.norm(y, m))(b, moved)
    np.testing.assert_allclose(norms, jax.vmap(lambda x: NORMAL.norm(x, w))(a), rtol=1e-9)
    # Reverse mode through the transport ODE (and the log map behind end_point) vs differences.
    first = lambda y: NORMAL.parallel_transport(a[0], w, end_point=y)[0]  # noqa: E731
    h = 1e-6
    fd = [(first(b[0] + h * e) - first(b[0] - h * e)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(jax.grad(first)(b[0]), fd, rtol=1e-5, atol=1e-6)


def test_float32_smoke():
    a = jnp.array([0.0, 1.0], jnp.float32)
    b = jnp.array([1.0, 0.5], jnp.float32)
    v = CAUCHY.log_map(a, b)
    d = CAUCHY.geodesic_distance(a, b)
    x = CAUCHY.exp_map(a, v)
    path = CAUCHY.geodesic(a, v, jnp.array([0.0, 0.5, 1.0], jnp.float32))
    w = CAUCHY.parallel_transport(a, jnp.array([1.0, 0.0], jnp.float32), v)
    for out in (v, d, x, path, w):
        assert out.dtype == jnp.float32
    np.testing.assert_allclose(d, cauchy_distance(0.0, 1.0, 1.0, 0.5), rtol=1e-4)
    np.testing.assert_allclose(x, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(CAUCHY.norm(b, w), CAUCHY.norm(a, jnp.array([1.0, 0.0])), rtol=1e-4)


# ------------------------------------------------------------------------- errors
FLAT = StatisticalManifold(
    lambda th: jnp.eye(2, dtype=th.dtype), dim=2, in_domain=lambda th: th[1] > 0
)


def test_bad_input_raises_clear_errors():
    a = NORMAL.from_usual(jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        NORMAL.exp_map(a, jnp.ones(3))
    with pytest.raises(ValueError, match="exactly one of `v` and `end_point`"):
        NORMAL.parallel_transport(a, jnp.ones(2))
    with pytest.raises(ValueError, match="1-D array of times"):
        NORMAL.geodesic(a, jnp.ones(2), jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="GeodesicSolver"):
        NORMAL.log_map(a, a, solver=diffrax.Tsit5())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="adaptive diffrax solver"):
        GeodesicSolver(ode_solver=diffrax.Euler())  # type: ignore[arg-type]
    with pytest.raises(eqx.EquinoxRuntimeError, match="outside the parameter domain"):
        NORMAL.log_map(a, jnp.array([0.0, 1.0]))


flat_exp = jax.jit(lambda a, v, throw: FLAT.exp_map(a, v, throw=throw), static_argnums=2)


def test_geodesic_leaving_the_domain_raises_or_returns_nan():
    a = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(flat_exp(a, jnp.array([1.0, -0.5]), True), [1.0, 0.5], **TOL)
    with pytest.raises(Exception, match="left the domain"):
        jax.block_until_ready(flat_exp(a, jnp.array([0.0, -2.0]), True))
    assert np.all(np.isnan(flat_exp(a, jnp.array([0.0, -2.0]), False)))
    with pytest.raises(Exception, match="leaves the natural domain"):
        NORMAL.exp_map(NORMAL.from_usual(jnp.array([0.0, 1.0])), jnp.array([0.0, 1.0]), 1.0)


def test_log_map_failures_give_result_codes_and_errors():
    # A flat plane with a hole: the straight geodesic to the target crosses the hole, so no
    # geodesic reaches it; the solve must end with a failure code, not a wrong answer.
    holed = StatisticalManifold(
        lambda th: jnp.eye(2, dtype=th.dtype),
        dim=2,
        in_domain=lambda th: jnp.sum((th - jnp.array([0.0, 2.0])) ** 2) > 0.25,
    )
    holed_solve = jax.jit(holed.solve_log_map)
    start = jnp.array([0.0, 1.0])
    sol = holed_solve(start, jnp.array([0.0, 3.0]))
    assert sol.result == RESULTS.continuation_failed
    sol = holed_solve(start, jnp.array([2.0, 1.0]))
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(sol.velocity, [2.0, 0.0], **TOL)
    # Too few Newton steps: its own code, and an error (also under jit) with throw=True.
    stingy = GeodesicSolver(max_newton_steps=1)
    far = jnp.array([5.0, 1.0])
    assert CAUCHY.solve_log_map(start, far, solver=stingy).result == (
        RESULTS.max_newton_steps_reached
    )
    with pytest.raises(Exception, match="did not converge within `max_newton_steps`"):
        jax.block_until_ready(jax.jit(lambda x, y: CAUCHY.log_map(x, y, solver=stingy))(start, far))
