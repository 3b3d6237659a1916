"""Fisher metric and Christoffel symbols from a density: infogeo_jax vs geomstats.

Both libraries get only the density of the model and integrate over the sample space:
``StatisticalModel`` with double-exponential ``Quadrature`` (jitted), geomstats'
``FisherRaoMetric`` with ``scipy.integrate.quad_vec`` (autograd backend). Same coordinates
((mean, std) for the normal, (a, b) for the beta), same points, and for each the largest error
against the closed form (normal: g = diag(1, 2) / sigma^2; beta: trigamma / tetragamma). The
timings are per point; the JAX compile time is reported separately.

Run: ``python -m benchmarks.bench_model`` (add ``--quick`` for one point per family).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special as sps

from benchmarks._common import import_geomstats, print_table, time_call, time_jitted

jax.config.update("jax_enable_x64", True)

from infogeo_jax import Quadrature, StatisticalModel  # noqa: E402


# ---------------------------------------------------------------- densities (usual coordinates)
def normal_log_density(theta, x):
    z = (x - theta[0]) / theta[1]
    return -0.5 * z**2 - jnp.log(theta[1]) - 0.5 * math.log(2 * math.pi)


def beta_log_density(theta, x):
    a, b = theta[0], theta[1]
    gammaln = jax.scipy.special.gammaln
    return (a - 1) * jnp.log(x) + (b - 1) * jnp.log1p(-x) - gammaln(a) - gammaln(b) + gammaln(a + b)


# ---------------------------------------------------------------- closed forms
def _christoffel_from(g: np.ndarray, dg: np.ndarray) -> np.ndarray:
    """Gamma^k_ij = g^{kl} (d_i g_jl + d_j g_il - d_l g_ij) / 2, with dg[a, b, c] = d_c g_ab."""
    first = 0.5 * (
        np.einsum("jli->ijl", dg) + np.einsum("ilj->ijl", dg) - np.einsum("ijl->ijl", dg)
    )
    return np.einsum("kl,ijl->kij", np.linalg.inv(g), first)


def normal_closed_form(point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std): g = diag(1, 2) / sigma^2 (e.g. Costa, Santos & Strapasson 2015)."""
    sigma = point[1]
    g = np.diag([1.0, 2.0]) / sigma**2
    dg = np.zeros((2, 2, 2))
    dg[:, :, 1] = -2.0 * np.diag([1.0, 2.0]) / sigma**3
    return g, _christoffel_from(g, dg)


def beta_closed_form(point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): g = [[psi1(a) - psi1(a+b), -psi1(a+b)], [-psi1(a+b), psi1(b) - psi1(a+b)]]."""
    a, b = point
    p1, p2 = (lambda v: sps.polygamma(1, v)), (lambda v: sps.polygamma(2, v))
    g = np.array([[p1(a) - p1(a + b), -p1(a + b)], [-p1(a + b), p1(b) - p1(a + b)]])
    dg = np.empty((2, 2, 2))
    dg[:, :, 0] = [[p2(a) - p2(a + b), -p2(a + b)], [-p2(a + b), -p2(a + b)]]
    dg[:, :, 1] = [[-p2(a + b), -p2(a + b)], [-p2(a + b), p2(b) - p2(a + b)]]
    return g, _christoffel_from(g, dg)


# ---------------------------------------------------------------- the two implementations
def _ours(name: str):
    if name == "normal":
        rule = Quadrature(-math.inf, math.inf, 256, center=lambda th: (th[0], th[1]))
        model = StatisticalModel(normal_log_density, rule, dim=2)
    else:
        model = StatisticalModel(beta_log_density, Quadrature(0.0, 1.0, 96), dim=2)
    return jax.jit(model.fisher_information), jax.jit(model.christoffel_symbols)


def _geomstats(name: str):
    geomstats = import_geomstats("autograd")
    if geomstats is None:
        return None
    import geomstats.backend as gs
    from geomstats.information_geometry.beta import BetaDistributions
    from geomstats.information_geometry.fisher_rao_metric import FisherRaoMetric
    from geomstats.information_geometry.normal import UnivariateNormalDistributions

    if name == "normal":
        # quad_vec returns NaN on (-inf, inf) (0/0 in the far tails): a finite window is needed
        metric = FisherRaoMetric(UnivariateNormalDistributions(equip=False), (-20.0, 20.0))
    else:
        metric = FisherRaoMetric(BetaDistributions(equip=False), (0.0, 1.0))
    return (
        lambda p: np.asarray(metric.metric_matrix(gs.array(p))),
        lambda p: np.asarray(metric.christoffels(gs.array(p))),
    )


CASES: dict[str, tuple[Any, list[list[float]]]] = {
    "normal": (normal_closed_form, [[0.4, 1.3], [-1.0, 0.5], [2.0, 3.0]]),
    "beta(2,3)": (beta_closed_form, [[2.0, 3.0], [2.5, 3.5], [1.5, 2.5]]),
}


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Correctness first (errors against the closed forms), then timings; returns table rows."""
    rows = []
    for name, (closed_form, points) in CASES.items():
        points = points[:1] if quick else points
        key = "normal" if name == "normal" else "beta"
        fisher, christoffel = _ours(key)
        theirs = _geomstats(key)
        for quantity, ours_fn, index in [("fisher", fisher, 0), ("christoffel", christoffel, 1)]:
            errors, their_errors, compile_s, ours_s, their_s = [], [], 0.0, 0.0, 0.0
            for p in points:
                exact = closed_form(np.asarray(p))[index]
                point = jnp.asarray(p)
                # correctness first: compile (timed), check against the closed form, then time
                first, _ = time_jitted(ours_fn, point, repeats=0, min_seconds=0.0)
                compile_s = max(compile_s, first)
                errors.append(float(np.max(np.abs(np.asarray(ours_fn(point)) - exact))))
                if not errors[-1] < 1e-9 * max(1.0, float(np.max(np.abs(exact)))):
                    raise AssertionError(f"{name} {quantity} at {p}: error {errors[-1]:.2e}")
                _, best = time_jitted(ours_fn, point, repeats=3 if quick else 20)
                ours_s += best / len(points)
                if theirs is not None:
                    their_fn = theirs[index]
                    value = their_fn(np.asarray(p, float))
                    their_errors.append(float(np.max(np.abs(value - exact))))
                    their_s += time_call(their_fn, np.asarray(p, float), repeats=1) / len(points)
            rows.append(
                {
                    "model": name,
                    "quantity": quantity,
                    "points": len(points),
                    "ours_max_err": max(errors),
                    "geomstats_max_err": max(their_errors) if their_errors else None,
                    "ours_compile_s": compile_s,
                    "ours_s": ours_s,
                    "geomstats_s": their_s if theirs is not None else None,
                    "speedup": their_s / ours_s if theirs is not None else None,
                }
            )
    return rows


if __name__ == "__main__":
    print_table(
        "Fisher metric and Christoffel symbols from a density (per point): "
        "infogeo_jax StatisticalModel + Quadrature vs geomstats FisherRaoMetric",
        run(quick="--quick" in sys.argv),
    )
