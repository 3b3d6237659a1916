"""Divergences of exponential families: closed forms, quadrature, limits, infinities, gradients.

References used below:
- [G] Gil, Alajaji & Linder, "Renyi divergence measures for commonly used univariate continuous
  distributions", Information Sciences 249 (2013), Table 2 (normal) and Sec. 2;
- [AN] Amari & Nagaoka, Methods of Information Geometry (2000), Eq. (3.80) (alpha-divergence);
- the Gaussian integral: int N(m1, s1^2)^a N(m2, s2^2)^b dx with a + b = 1 equals
  s1^b s2^a / sqrt(d) exp(-a b (m1 - m2)^2 / (2 d)), d = a s2^2 + b s1^2 > 0 (complete the
  square; infinite when d <= 0).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats as st
from hypothesis import given, settings, strategies as hst

from infogeo_jax import ExponentialFamily, bregman_divergence
from infogeo_jax.families import Normal, Poisson

NORMAL = Normal()
M1, S1, M2, S2 = 0.0, 1.0, 1.0, 2.0  # p = N(0, 1), q = N(1, 2^2)
P, Q = NORMAL.from_usual(jnp.array([M1, S1])), NORMAL.from_usual(jnp.array([M2, S2]))


def close(a, b, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ----------------------------------------------------------------- independent references
def normal_kl(m1, s1, m2, s2):
    # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2 [G].
    return np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5


def normal_log_affinity_over_a(a, m1, s1, m2, s2):
    """log(int p^a q^(1-a)) / a from the Gaussian integral, without cancellation as a -> 0."""
    b = 1.0 - a
    r = s2**2 / s1**2 - 1.0
    d = s1**2 * (1.0 + a * r)  # = a s2^2 + b s1^2
    log1p_term = np.log1p(a * r) / a if a != 0 else r
    return np.log(s2 / s1) - 0.5 * log1p_term - b * (m1 - m2) ** 2 / (2 * d)


def normal_alpha_divergence(alpha, m1, s1, m2, s2):
    """Amari's D_alpha [AN] from the Gaussian integral, stable through alpha = +-1."""
    a, b = (1 - alpha) / 2, (1 + alpha) / 2
    if a * s2**2 + b * s1**2 <= 0:
        return np.inf
    # Expand around the smaller weight: log I = w s, D = -s expm1(w s) / (w s) / (1 - w).
    if abs(a) <= abs(b):
        w, s = a, normal_log_affinity_over_a(a, m1, s1, m2, s2)
    else:
        w, s = b, normal_log_affinity_over_a(b, m2, s2, m1, s1)
    x = w * s
    return -s * (np.expm1(x) / x if x != 0 else 1.0) / (1 - w)


def normal_renyi(order, m1, s1, m2, s2):
    """Renyi divergence of two normals [G, Table 2], log1p form (stable near order 1)."""
    var = order * s2**2 + (1 - order) * s1**2
    if var <= 0:
        return np.inf
    if order == 1:
        return normal_kl(m1, s1, m2, s2)
    log_ratio_over = -np.log1p((1 - order) * (s1**2 / s2**2 - 1)) / (2 * (order - 1))
    return np.log(s2 / s1) + log_ratio_over + order * (m1 - m2) ** 2 / (2 * var)


def normal_bhattacharyya(m1, s1, m2, s2):
    # [G, Sec. 2]; also Bhattacharyya (1943): (m1-m2)^2 / (4 (s1^2 + s2^2))
    # + 1/2 log((s1^2 + s2^2) / (2 s1 s2)).
    v = s1**2 + s2**2
    return (m1 - m2) ** 2 / (4 * v) + 0.5 * np.log(v / (2 * s1 * s2))


def quad_affinity(a, m1, s1, m2, s2):
    """int p^a q^(1-a) by adaptive quadrature (scipy.integrate.quad), the second route."""

    def integrand(x):
        return np.exp(a * st.norm.logpdf(x, m1, s1) + (1 - a) * st.norm.logpdf(x, m2, s2))

    value, _ = scipy.integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-13)
    return value


@functools.cache
def jitted(fam, method):
    return jax.jit(getattr(fam, method))


# ----------------------------------------------------------------- closed forms for normals
ALPHAS = [-3.0, -1.0, -0.5, 0.0, 0.3, 0.5, 1.0, 1.5]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_alpha_divergence_of_normals(alpha):
    got = jitted(NORMAL, "alpha_divergence")(P, Q, alpha)
    expected = normal_alpha_divergence(alpha, M1, S1, M2, S2)
    close(got, expected)
    if abs(alpha) != 1:
        # Second route: quadrature of int p^a q^b.
        a = (1 - alpha) / 2
        by_quad = 4 / (1 - alpha**2) * (1 - quad_affinity(a, M1, S1, M2, S2))
        close(got, by_quad, 1e-10, 1e-12)


def test_alpha_limits_are_kl():
    # [AN]: D_{-1}(p||q) = KL(p||q), D_{+1}(p||q) = KL(q||p).
    alpha_div = jitted(NORMAL, "alpha_divergence")
    close(alpha_div(P, Q, -1.0), normal_kl(M1, S1, M2, S2))
    close(alpha_div(P, Q, 1.0), normal_kl(M2, S2, M1, S1))
    close(alpha_div(P, Q, -1.0), jitted(NORMAL, "kl_divergence")(P, Q))
    close(alpha_div(P, Q, 1.0), jitted(NORMAL, "kl_divergence")(Q, P))


@pytest.mark.parametrize("offset", [1e-1, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8, 1e-10, 1e-13])
@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_alpha_divergence_continuous_through_plus_minus_one(offset, side):
    # Approaching alpha = -1 and +1 from both sides: the value follows the stable closed form
    # to 1e-11 relative (no 0/0 form), so it tends continuously to the KL limits.
    alpha_div = jitted(NORMAL, "alpha_divergence")
    for alpha in (side - offset, side + offset):
        expected = normal_alpha_divergence(alpha, M1, S1, M2, S2)
        close(alpha_div(P, Q, alpha), expected, 1e-11, 0.0)


def test_alpha_divergence_is_infinite_where_the_integral_diverges():
    # alpha = 3: a = -1, b = 2, a s2^2 + b s1^2 = -2 < 0, the integral diverges; alpha = -3 is
    # finite (d = 7). Gradients of the infinite value are zero, not nan.
    assert jitted(NORMAL, "alpha_divergence")(P, Q, 3.0) == np.inf
    assert np.isfinite(jitted(NORMAL, "alpha_divergence")(P, Q, -3.0))
    grads = jax.jit(jax.grad(NORMAL.alpha_divergence, argnums=(0, 1, 2)))(P, Q, 3.0)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("order", [0.0, 0.25, 0.5, 0.9, 1.0, 1.5, 2.0, 3.0])
def test_renyi_divergence_of_normals(order):
    # [G, Table 2], and quadrature of int p^order q^(1 - order) as the second route.
    got = jitted(NORMAL, "renyi_divergence")(P, Q, order)
    close(got, normal_renyi(order, M1, S1, M2, S2))
    if order not in (0.0, 1.0):
        close(got, np.log(quad_affinity(order, M1, S1, M2, S2)) / (order - 1), 1e-10, 1e-12)


@pytest.mark.parametrize("offset", [1e-2, 1e-4, 1e-6, 1e-8, 1e-11, 0.0])
def test_renyi_order_one_is_kl_continuously(offset):
    renyi = jitted(NORMAL, "renyi_divergence")
    for order in (1 - offset, 1 + offset):
        close(renyi(P, Q, order), normal_renyi(order, M1, S1, M2, S2), 1e-11, 0.0)
    close(renyi(P, Q, 1.0), normal_kl(M1, S1, M2, S2))


def test_renyi_is_infinite_where_the_integral_diverges():
    # order 3, q = N(0, 0.5^2): 3 * 0.25 - 2 * 1 < 0 [G, Table 2 condition].
    q = NORMAL.from_usual(jnp.array([0.0, 0.5]))
    assert jitted(NORMAL, "renyi_divergence")(P, q, 3.0) == np.inf
    assert normal_renyi(3.0, M1, S1, 0.0, 0.5) == np.inf


def test_bhattacharyya_and_hellinger_of_normals():
    bhatt = normal_bhattacharyya(M1, S1, M2, S2)
    close(jitted(NORMAL, "bhattacharyya_distance")(P, Q), bhatt)
    # Hellinger^2 = 1 - int sqrt(pq) = 1 - exp(-B) [G, Sec. 2].
    close(jitted(NORMAL, "hellinger_distance")(P, Q), np.sqrt(-np.expm1(-bhatt)))
    # Second route: quadrature of int sqrt(p q).
    affinity = quad_affinity(0.5, M1, S1, M2, S2)
    close(jitted(NORMAL, "bhattacharyya_distance")(P, Q), -np.log(affinity), 1e-10)
    close(jitted(NORMAL, "hellinger_distance")(P, Q), np.sqrt(1 - affinity), 1e-10)


def test_poisson_divergences_closed_forms():
    # int p^a q^b = exp(l_p^a l_q^b - a l_p - b l_q) for Poisson rates (sum of the series);
    # natural domain R, so every order / alpha is finite.
    lp, lq = 2.0, 5.0
    p, q = Poisson().from_usual(jnp.array([lp])), Poisson().from_usual(jnp.array([lq]))
    for order in (0.5, 2.0, 6.0):
        log_aff = lp**order * lq ** (1 - order) - order * lp - (1 - order) * lq
        close(jitted(Poisson(), "renyi_divergence")(p, q, order), log_aff / (order - 1))
    for alpha in (-2.5, 0.4, 2.5):
        a = (1 - alpha) / 2
        log_aff = lp**a * lq ** (1 - a) - a * lp - (1 - a) * lq
        expected = 4 / (1 - alpha**2) * -np.expm1(log_aff)
        close(jitted(Poisson(), "alpha_divergence")(p, q, alpha), expected)


# ----------------------------------------------------------------- gradients
ALPHA_GRAD = jax.jit(jax.grad(NORMAL.alpha_divergence, argnums=2))


@pytest.mark.parametrize("alpha", [-1.0, -1.0 + 1e-7, -1.0 - 1e-4, 0.3, 1.0 - 1e-7, 1.0])
def test_alpha_gradient_is_finite_and_accurate(alpha):
    # d/d alpha against central differences (h = 1e-5) of the stable closed form.
    h = 1e-5
    fd = (
        normal_alpha_divergence(alpha + h, M1, S1, M2, S2)
        - normal_alpha_divergence(alpha - h, M1, S1, M2, S2)
    ) / (2 * h)
    got = ALPHA_GRAD(P, Q, alpha)
    close(got, fd, 1e-7, 0.0)


def test_gradients_at_the_limits_match_kl():
    # At alpha = -1 (order = 1) the gradients in p and q are those of KL(p || q); and
    # d/d order of the Renyi divergence at order 1 matches central differences (h = 1e-5) of
    # the closed form [G, Table 2].
    def grads(p, q):
        return (
            jax.grad(NORMAL.kl_divergence, argnums=(0, 1))(p, q),
            jax.grad(NORMAL.alpha_divergence, argnums=(0, 1))(p, q, -1.0),
            jax.grad(NORMAL.renyi_divergence, argnums=(0, 1))(p, q, 1.0),
            jax.grad(NORMAL.renyi_divergence, argnums=2)(p, q, 1.0),
        )

    kl_grad, alpha_grad, renyi_grad, order_grad = jax.jit(grads)(P, Q)
    for got in (alpha_grad, renyi_grad):
        for g, k in zip(got, kl_grad):
            close(g, k, 1e-10, 1e-12)
    h = 1e-5
    fd = (normal_renyi(1 + h, M1, S1, M2, S2) - normal_renyi(1 - h, M1, S1, M2, S2)) / (2 * h)
    close(order_grad, fd, 1e-7, 0.0)


def test_gradients_at_p_equals_q_are_zero():
    # Every divergence has a minimum at p = q: zero (finite) gradients, Hellinger included.
    for method in ("kl_divergence", "bhattacharyya_distance", "hellinger_distance"):
        grad = jax.grad(getattr(NORMAL, method), argnums=1)(P, P)
        close(grad, np.zeros(2), 0.0, 1e-14)
    for method, extra in (("alpha_divergence", 0.3), ("renyi_divergence", 0.7)):
        grad = jax.grad(getattr(NORMAL, method), argnums=1)(P, P, extra)
        close(grad, np.zeros(2), 0.0, 1e-14)


# ----------------------------------------------------------------- identities (hypothesis)
NORMAL_POINT = hst.tuples(hst.floats(-2.0, 2.0), hst.floats(0.3, 3.0))


@functools.cache
def _relations():
    def relations(p, q, alpha):
        order = 0.5 * (1 - alpha)
        return (
            NORMAL.alpha_divergence(p, q, alpha),
            NORMAL.alpha_divergence(q, p, -alpha),
            NORMAL.renyi_divergence(p, q, order),
            NORMAL.bhattacharyya_distance(p, q),
            NORMAL.renyi_divergence(p, q, 0.5),
        )

    return jax.jit(relations)


@settings(max_examples=25, deadline=None)
@given(p=NORMAL_POINT, q=NORMAL_POINT, alpha=hst.floats(-0.999, 0.999))
def test_alpha_duality_and_renyi_relation(p, q, alpha):
    theta_p, theta_q = NORMAL.from_usual(jnp.array(p)), NORMAL.from_usual(jnp.array(q))
    d_pq, d_qp, renyi, bhatt, renyi_half = _relations()(theta_p, theta_q, alpha)
    # Duality D_alpha(p||q) = D_{-alpha}(q||p) [AN, Eq. (3.80)].
    close(d_pq, d_qp, 1e-11, 1e-13)
    # With order = (1 - alpha)/2: D_alpha = 4/(1-alpha^2) (1 - exp((order - 1) R_order)) [G].
    close(d_pq, 4 / (1 - alpha**2) * -np.expm1((0.5 * (1 - alpha) - 1) * renyi), 1e-9, 1e-12)
    # Bhattacharyya = R_{1/2} / 2; and the independent closed forms.
    close(bhatt, 0.5 * renyi_half, 1e-12, 1e-14)
    close(d_pq, normal_alpha_divergence(alpha, *p, *q), 1e-10, 1e-13)


# ----------------------------------------------------------------- Bregman divergence
def test_bregman_closed_forms():
    # Banerjee et al., JMLR 6 (2005), Table 1: F = |x|^2 / 2 gives |x - y|^2 / 2; F = sum
    # x log x gives the generalized KL sum x log(x / y) - x + y.
    x, y = jnp.array([0.2, 1.5, 0.7]), jnp.array([1.0, 0.5, 0.9])
    close(bregman_divergence(lambda z: 0.5 * z @ z, x, y), 0.5 * np.sum((x - y) ** 2))
    expected = np.sum(x * np.log(x / y) - x + y)
    close(bregman_divergence(lambda z: jnp.sum(z * jnp.log(z)), x, y), expected)
    close(bregman_divergence(lambda z: 0.5 * z @ z, [1, 2], [0, 0]), 2.5)  # ints promoted


def test_bregman_of_log_partition_is_kl_of_generic_family():
    # Generic Poisson family from A alone: KL(p || q) = B_A(theta_q, theta_p)
    # = l_p log(l_p / l_q) - l_p + l_q (closed form).
    fam = ExponentialFamily(lambda th: jnp.exp(th[0]), dim=1)
    lp, lq = 2.0, 5.0
    p, q = jnp.log(jnp.array([lp])), jnp.log(jnp.array([lq]))
    expected = lp * np.log(lp / lq) - lp + lq
    close(fam.kl_divergence(p, q), expected)
    close(bregman_divergence(fam.log_partition, q, p), expected)
    grad = jax.jit(jax.grad(lambda y: bregman_divergence(fam.log_partition, q, y)))(p)
    close(grad, jax.grad(lambda y: fam.kl_divergence(y, q))(p))
