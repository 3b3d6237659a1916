"""Curvature core: the exponential-family closed form vs the generic autodiff engine, and the
classical curvatures (sphere, hyperbolic plane, normal family), symmetries, Codazzi, indices.

References:
- [AN] Amari & Nagaoka, Methods of Information Geometry (2000): Eq. (2.27) (alpha-connection),
  Thm. 3.3 and Sec. 3.3 (exponential families are +-1-flat), Eq. (3.49).
- [A85] Amari, Differential-Geometrical Methods in Statistics (1985), Example 4.3: the normal
  family has constant alpha-curvature; in our convention scalar curvature -(1 - alpha^2).
- [dC] do Carmo, Riemannian Geometry (1992), Ch. 4: sphere of radius r (sectional 1/r^2,
  scalar 2/r^2 in dimension 2), hyperbolic half-plane (sectional -1, scalar -2).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as hst
from hypothesis.extra import numpy as hnp

from infogeo_jax import AbstractStatisticalManifold, ExponentialFamily, StatisticalManifold
from infogeo_jax.families import Normal

RTOL, ATOL = 1e-10, 1e-12


def close(a, b, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _generic3_a(th):
    # A non-product family of dimension 3 (a sum of convex log-partitions with coupling
    # terms), so that T and the curvature are generic.
    return (
        jnp.logaddexp(0.0, th[0])
        + jnp.exp(th[1])
        + 0.5 * th[2] ** 2
        + 0.3 * jnp.exp(th[0] + th[2])
        + 0.2 * jnp.exp(th[1] - th[2])
    )


NORMAL = Normal()
GENERIC3 = ExponentialFamily(_generic3_a, dim=3)
FAMILIES = {"normal": NORMAL, "generic3": GENERIC3}


def normal_point(u):
    return NORMAL.from_usual(jnp.array([2.0 * u[0], jnp.exp(u[1])]))


POINTS = {"normal": normal_point, "generic3": lambda u: 1.5 * u[:3]}
UNIT = hnp.arrays(np.float64, (3,), elements=hst.floats(-1.0, 1.0))
ALPHA = hst.floats(-2.0, 2.0)


@functools.cache
def routes(name):
    """Curvature by three routes: closed form, the base class's engine on the family, and a
    StatisticalManifold that only knows g and T (no exponential-family structure)."""
    fam = FAMILIES[name]
    plain = StatisticalManifold(fam.fisher_information, fam.skewness_tensor, dim=fam.dim)

    def compute(theta, alpha):
        return {
            "closed": fam.riemann_tensor(theta, alpha),
            "engine": AbstractStatisticalManifold.riemann_tensor(fam, theta, alpha),
            "plain": plain.riemann_tensor(theta, alpha),
            "closed_dual": fam.riemann_tensor(theta, -alpha),
            "first_kind": fam.christoffel_first_kind(theta, alpha),
            "first_kind_engine": AbstractStatisticalManifold.christoffel_first_kind(
                fam, theta, alpha
            ),
            "first_kind_dual": fam.christoffel_first_kind(theta, -alpha),
            "symbols": fam.christoffel_symbols(theta, alpha),
            "metric": fam.metric(theta),
            "metric_derivative": jax.jacfwd(fam.metric)(theta),  # [i, j, k] = d_k g_ij
            "skewness": fam.skewness_tensor(theta),
            "scalar": fam.scalar_curvature(theta, alpha),
            "ricci": fam.ricci_tensor(theta, alpha),  # O(d^4) closed-form contraction
        }

    return jax.jit(compute)


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=10, deadline=None)
@given(u=UNIT, alpha=ALPHA)
def test_closed_form_riemann_equals_generic_engine(name, u, alpha):
    out = routes(name)(POINTS[name](u), alpha)
    scale = float(np.max(np.abs(out["plain"]))) + 1.0
    close(out["closed"], out["engine"], 1e-10, 1e-12 * scale)
    close(out["closed"], out["plain"], 1e-10, 1e-12 * scale)
    # scalar_curvature = g^{ik} R^l_{ilk} from the generic Riemann tensor.
    ricci = jnp.einsum("lilk->ik", out["plain"])
    close(out["ricci"], ricci, 1e-10, 1e-12 * scale)
    close(out["scalar"], jnp.trace(jnp.linalg.solve(out["metric"], ricci)), 1e-10, 1e-12 * scale)
    # Gamma^(alpha)_{ij,k} = (1 - alpha)/2 T_ijk in natural coordinates [AN, Eq. (3.49)] =
    # Levi-Civita from dg minus alpha/2 T [AN, Eq. (2.27)].
    close(out["first_kind"], 0.5 * (1 - alpha) * out["skewness"])
    close(out["first_kind"], out["first_kind_engine"])


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=10, deadline=None)
@given(u=UNIT, alpha=ALPHA)
def test_connection_identities(name, u, alpha):
    out = routes(name)(POINTS[name](u), alpha)
    g, dg = out["metric"], out["metric_derivative"]
    # Index order: christoffel_symbols[k, i, j] = g^{kl} Gamma_{ij,l} (DESIGN.md).
    close(out["symbols"], jnp.einsum("kl,ijl->kij", jnp.linalg.inv(g), out["first_kind"]))
    # Codazzi / duality [AN, Eq. (3.1)]: d_k g_ij = Gamma^(alpha)_{ki,j} + Gamma^(-alpha)_{kj,i}
    # with christoffel_first_kind[i, j, k] = Gamma_{ij,k}.
    codazzi = jnp.einsum("kij->ijk", out["first_kind"]) + jnp.einsum(
        "kji->ijk", out["first_kind_dual"]
    )
    close(dg, codazzi)
    # Riemann symmetries, lowered R_{lijk} = g_lm R^m_{ijk}: antisymmetric in (j, k), first
    # Bianchi identity (torsion-free), and the dual-connection identity
    # R^(alpha)_{lijk} = -R^(-alpha)_{iljk} [AN, Thm. 3.3 proof].
    riemann = jnp.einsum("lm,mijk->lijk", g, out["plain"])
    dual = jnp.einsum("lm,mijk->lijk", g, out["closed_dual"])
    tol = 1e-12 * (float(np.max(np.abs(riemann))) + 1.0)
    close(riemann, -jnp.einsum("lijk->likj", riemann), 0.0, tol)
    bianchi = riemann + jnp.einsum("lijk->ljki", riemann) + jnp.einsum("lijk->lkij", riemann)
    close(bianchi, np.zeros_like(bianchi), 0.0, tol)
    close(riemann, -jnp.einsum("lijk->iljk", dual), 1e-9, tol)


@settings(max_examples=10, deadline=None)
@given(u=UNIT, alpha=hst.floats(-1.0, 1.0))
def test_normal_family_alpha_curvature(u, alpha):
    # [A85]: the univariate normal family has scalar curvature -(1 - alpha^2) (-1 for the
    # Fisher metric: a hyperbolic plane of curvature -1/2); both the closed form and the engine.
    out = routes("normal")(normal_point(u), alpha)
    close(out["scalar"], -(1 - alpha**2))
    ricci = jnp.einsum("lilk->ik", out["plain"])
    close(out["ricci"], ricci)
    close(jnp.trace(jnp.linalg.solve(out["metric"], ricci)), -(1 - alpha**2))


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("alpha", [1.0, -1.0])
def test_exponential_families_are_dually_flat(name, alpha):
    # [AN, Thm. 3.3]: R^(+1) = R^(-1) = 0, through the generic engine (where it is not built
    # in, unlike the closed form's factor 1 - alpha^2).
    theta = POINTS[name](jnp.array([0.3, -0.4, 0.2]))
    out = routes(name)(theta, alpha)
    scale = float(np.max(np.abs(routes(name)(theta, 0.0)["plain"])))
    assert scale > 1e-3  # the Levi-Civita curvature is not zero
    close(out["plain"], np.zeros_like(out["plain"]), 0.0, 1e-12 * scale)
    close(out["engine"], np.zeros_like(out["engine"]), 0.0, 1e-12 * scale)


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.5])
def test_sphere_scalar_curvature(radius):
    # [dC]: round metric r^2 (d phi^2 + sin^2 phi d lambda^2), scalar curvature 2 / r^2,
    # sectional 1 / r^2, at any point away from the poles.
    sphere = StatisticalManifold(
        lambda th: radius**2 * jnp.diag(jnp.stack([1.0, jnp.sin(th[0]) ** 2])), dim=2
    )
    theta = jnp.array([0.9, -0.3])
    u, v = jnp.array([1.0, 0.2]), jnp.array([-0.3, 0.8])
    scalar, sectional, scalar_alpha = jax.jit(
        lambda th: (
            sphere.scalar_curvature(th),
            sphere.sectional_curvature(th, u, v),
            sphere.scalar_curvature(th, 0.7),  # no skewness: every alpha is Levi-Civita
        )
    )(theta)
    close(scalar, 2 / radius**2)
    close(sectional, 1 / radius**2)
    close(scalar_alpha, 2 / radius**2)


def test_poincare_half_plane():
    # [dC]: g = (dx^2 + dy^2) / y^2 has sectional curvature -1, scalar curvature -2.
    half_plane = StatisticalManifold(lambda th: jnp.eye(2) / th[1] ** 2, dim=2)
    u, v = jnp.array([1.0, 0.0]), jnp.array([0.3, 1.0])
    scalar, sectional = jax.jit(
        lambda th: (half_plane.scalar_curvature(th), half_plane.sectional_curvature(th, u, v))
    )(jnp.array([0.4, 1.7]))
    close(scalar, -2.0)
    close(sectional, -1.0)
