"""Geometry engine against geomstats: curvature on batches of points, Fisher-Rao distances.

1. Christoffel symbols and scalar curvature of Beta, Dirichlet(3) and Dirichlet(10) on a batch
   of points (1000; 100 with ``--quick``), ours jitted and vmapped (the exponential-family closed
   form: A''' and the inverse metric only), geomstats 2.8 (autograd backend) on the same points
   (its scalar curvature of Dirichlet(3) and Dirichlet(10) takes minutes on 1000 points, so it is
   timed on the first 200 and 10 of them and scaled linearly; the table says how many).
2. Fisher-Rao distances of Beta and Dirichlet(3) pairs, including the hard pairs of the
   geodesic tests, ours (multiple shooting with diffrax, float64) against geomstats'
   ``metric.dist`` (a collocation BVP with scipy), with the error of each against a reference
   solve made with a different integrator (Tsit5), tighter tolerances and more shooting
   segments.
3. Compile times, reported separately (compile + first call, fresh jitted functions).
4. Batched distances: random Beta pairs (log-normal parameters) in batches of 1, 64 and 1024
   (1, 16, 64 with ``--quick``): ``jax.jit(jax.vmap(Beta().geodesic_distance))`` against a
   Python loop over the jitted single call and against geomstats' ``dist`` (timed on the
   first 8 pairs and scaled), with the compile times of both (``lower(...).compile()``, CPU
   seconds of this process, which a shared machine inflates less than wall time); and a
   100 x 100 Dirichlet(3) distance matrix by ``infogeo_jax.pairwise_distances`` (30 x 30 with
   ``--quick``).
5. First calls in a new process (a Beta distance, a 12 x 12 Dirichlet(3) matrix), twice over one
   temporary folder of JAX's persistent compilation cache: empty, then filled by the first run
   (the same numbers are checked to come back).

Correctness is checked before anything is timed: our curvature against geomstats' values, our
distances against the reference (1e-8) and exp(log) against the target (1e-8).

Run alone with ``python -m benchmarks.bench_geometry [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import infogeo_jax as ig  # noqa: E402
from infogeo_jax.families import Beta, Dirichlet  # noqa: E402
from infogeo_jax.geometry import RESULTS, GeodesicSolver  # noqa: E402

from ._common import import_geomstats, print_tables, time_call, time_jitted  # noqa: E402

REFERENCE = GeodesicSolver(
    ode_solver=diffrax.Tsit5(),
    rtol=1e-13,
    atol=1e-13,
    newton_rtol=1e-12,
    newton_atol=1e-12,
    num_segments=8,
    max_steps=16384,
)
# Points on which geomstats is timed (then scaled to the batch) where it takes minutes.
GEOMSTATS_POINTS = {
    ("dirichlet3", "scalar curvature"): 200,
    ("dirichlet10", "scalar curvature"): 10,
}
PAIRS = {
    "beta": [((0.2, 0.3), (20.0, 10.0)), ((1.0, 1.0), (2.0, 5.0)), ((0.5, 3.0), (4.0, 0.7))],
    "dirichlet3": [
        ((0.5, 1.0, 4.0), (6.0, 0.7, 2.0)),
        ((1.0, 1.0, 1.0), (2.0, 3.0, 4.0)),
        ((0.3, 2.0, 1.0), (1.5, 0.4, 5.0)),
    ],
}


def _fmt_point(x) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in np.asarray(x)) + ")"


def _family(name: str):
    return {"beta": Beta(), "dirichlet3": Dirichlet(3), "dirichlet10": Dirichlet(10)}[name]


def _geomstats_space(name: str):
    if import_geomstats() is None:
        return None
    from geomstats.information_geometry.beta import BetaDistributions
    from geomstats.information_geometry.dirichlet import DirichletDistributions

    if name == "beta":
        return BetaDistributions()
    return DirichletDistributions(3 if name == "dirichlet3" else 10)


def _points(name: str, n: int) -> np.ndarray:
    dim = {"beta": 2, "dirichlet3": 3, "dirichlet10": 10}[name]
    rng = np.random.default_rng(0)
    return np.exp(rng.uniform(np.log(0.3), np.log(10.0), size=(n, dim)))


def _curvature_rows(quick: bool) -> list[dict]:
    n = 100 if quick else 1000
    rows, compile_rows = [], []
    for name in ("beta", "dirichlet3", "dirichlet10"):
        fam = _family(name)
        points = _points(name, n)
        x = jnp.asarray(points)
        ours = {
            "christoffel": jax.jit(jax.vmap(lambda a, fam=fam: fam.christoffel_symbols(a))),
            "scalar curvature": jax.jit(jax.vmap(lambda a, fam=fam: fam.scalar_curvature(a))),
        }
        space = _geomstats_space(name)
        theirs = {}
        if space is not None:
            theirs = {
                "christoffel": space.metric.christoffels,
                "scalar curvature": space.metric.scalar_curvature,
            }
        for quantity, fn in ours.items():
            first, best = time_jitted(fn, x, repeats=5)
            value = np.asarray(fn(x))
            row: dict = {
                "table": f"curvature on {n} points (ms per batch)",
                "family": name,
                "quantity": quantity,
                "ours_ms": best * 1e3,
            }
            if quantity in theirs:
                # geomstats' scalar curvature differentiates its Christoffel symbols with
                # autograd point by point (seconds per point for Dirichlet(10)): time it on the
                # first m of the same points and scale to the batch (its cost is linear in m).
                m = min(n, GEOMSTATS_POINTS.get((name, quantity), n))
                start = time.perf_counter()
                ref = np.asarray(theirs[quantity](points[:m])).reshape(value[:m].shape)
                gs_time = (time.perf_counter() - start) * n / m  # one run
                # Correctness first: the two implementations agree at every point.
                np.testing.assert_allclose(value[:m], ref, rtol=1e-8, atol=1e-9)
                row.update(
                    geomstats_ms=gs_time * 1e3,
                    geomstats_points=m,
                    speedup=gs_time / best,
                    max_abs_diff=float(np.max(np.abs(value[:m] - ref))),
                )
            else:
                row.update(
                    geomstats_ms=None, geomstats_points=None, speedup=None, max_abs_diff=None
                )
            rows.append(row)
            compile_rows.append(
                {
                    "table": "compile + first call (s)",
                    "function": f"{name} {quantity} (vmap)",
                    "seconds": first,
                }
            )
    return rows + compile_rows


def _distance_rows(quick: bool) -> list[dict]:
    rows, compile_rows = [], []
    for name, pairs in PAIRS.items():
        fam = _family(name)
        space = _geomstats_space(name)
        # A fresh jitted distance per family: its first call is the compile time of the
        # distance (tracing + XLA compilation + one solve).
        distance = jax.jit(lambda a, b, fam=fam: fam.geodesic_distance(a, b))
        solve = jax.jit(lambda a, b, fam=fam: fam.solve_log_map(a, b))
        exp = jax.jit(lambda a, v, fam=fam: fam.exp_map(a, v))
        reference = jax.jit(lambda a, b, fam=fam: fam.geodesic_distance(a, b, solver=REFERENCE))
        for i, (a, b) in enumerate(pairs[: 2 if quick else None]):
            a, b = jnp.asarray(a), jnp.asarray(b)
            first, best = time_jitted(distance, a, b, repeats=3 if quick else 5)
            if i == 0:
                compile_rows.append(
                    {
                        "table": "compile + first call (s)",
                        "function": f"{name} distance",
                        "seconds": first,
                    }
                )
            d = float(distance(a, b))
            ref = float(reference(a, b))
            sol = solve(a, b)
            # Correctness first: converged, exp(log) hits the target, agrees with the reference.
            assert sol.result == RESULTS.successful
            np.testing.assert_allclose(exp(a, sol.velocity), b, rtol=1e-8, atol=1e-8)
            np.testing.assert_allclose(d, ref, rtol=1e-8, atol=1e-8)
            row: dict = {
                "table": "Fisher-Rao distance per pair",
                "family": name,
                "pair": f"{_fmt_point(a)} -> {_fmt_point(b)}",
                "distance": d,
                "ours_ms": best * 1e3,
                "ours_error": abs(d - ref),
                "newton_shots": int(sol.num_steps),
            }
            if space is not None:
                gs_d = float(space.metric.dist(np.asarray(a), np.asarray(b)))
                gs_time = time_call(space.metric.dist, np.asarray(a), np.asarray(b), repeats=1)
                row.update(
                    geomstats_ms=gs_time * 1e3,
                    speedup=gs_time / best,
                    geomstats_error=abs(gs_d - ref),
                )
            else:
                row.update(geomstats_ms=None, speedup=None, geomstats_error=None)
            rows.append(row)
    return rows + compile_rows


def _compile_seconds(fn, *args):
    """CPU seconds of this process to trace and compile ``jax.jit(fn)`` (no call)."""
    start = time.process_time()
    compiled = jax.jit(fn).lower(*args).compile()
    return time.process_time() - start, compiled


def _random_beta_pairs(n: int):
    rng = np.random.default_rng(0)
    return tuple(jnp.asarray(np.exp(rng.normal(0.0, 1.0, size=(n, 2)))) for _ in range(2))


def _batched_rows(quick: bool) -> list[dict]:
    fam = Beta()
    sizes = (1, 16, 64) if quick else (1, 64, 1024)
    space = _geomstats_space("beta")
    a, b = _random_beta_pairs(1)
    single_compile, single = _compile_seconds(fam.geodesic_distance, a[0], b[0])
    rows = []
    for n in sizes:
        a, b = _random_beta_pairs(n)
        batch_compile, batched = _compile_seconds(jax.vmap(fam.geodesic_distance), a, b)
        # Correctness first: every lane converged and equals the single call (1e-10).
        sols = jax.jit(jax.vmap(fam.solve_log_map))(a, b)
        assert bool(jnp.all(sols.result == RESULTS.successful))
        start = time.perf_counter()
        looped = np.array([float(single(x, y)) for x, y in zip(a, b)])
        loop_time = time.perf_counter() - start
        start = time.perf_counter()
        together = np.asarray(jax.block_until_ready(batched(a, b)))
        batch_time = time.perf_counter() - start
        np.testing.assert_allclose(together, looped, rtol=1e-10, atol=1e-10)
        row: dict = {
            "table": "batched Fisher-Rao distances, random Beta pairs (ms per pair)",
            "pairs": n,
            "batched_ms": batch_time / n * 1e3,
            "looped_ms": loop_time / n * 1e3,
            "batched/looped": batch_time / loop_time,
            "max_shots": int(jnp.max(sols.num_steps)),
            "mean_shots": float(jnp.mean(sols.num_steps)),
            "compile_single_s": single_compile,
            "compile_batched_s": batch_compile,
        }
        if space is not None:
            m = min(n, 8)
            start = time.perf_counter()
            ref = [
                float(space.metric.dist(np.asarray(x), np.asarray(y))) for x, y in zip(a[:m], b[:m])
            ]
            gs_time = (time.perf_counter() - start) / m
            row.update(
                geomstats_ms=gs_time * 1e3,
                geomstats_pairs=m,
                geomstats_max_error=float(np.max(np.abs(np.array(ref) - looped[:m]))),
            )
        rows.append(row)
    # A distance matrix of Dirichlet(3) points (upper triangle solved, mirrored).
    k = 30 if quick else 100
    rng = np.random.default_rng(1)
    points = jnp.asarray(np.exp(rng.uniform(np.log(0.3), np.log(10.0), size=(k, 3))))
    dirichlet = Dirichlet(3)
    start = time.perf_counter()
    matrix, results = ig.pairwise_distances(dirichlet, points, return_results=True)
    matrix = jax.block_until_ready(matrix)
    first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(ig.pairwise_distances(dirichlet, points))
    steady = time.perf_counter() - start
    assert bool(jnp.all(results == RESULTS.successful))
    np.testing.assert_array_equal(matrix, matrix.T)
    single3 = jax.jit(dirichlet.geodesic_distance)
    for i, j in ((0, 1), (3, k - 1), (k // 2, k // 3)):
        np.testing.assert_allclose(matrix[i, j], single3(points[i], points[j]), rtol=1e-10)
    rows.append(
        {
            "table": "distance matrix, Dirichlet(3)",
            "points": k,
            "pairs_solved": k * (k - 1) // 2,
            "first_call_s": first,
            "steady_s": steady,
            "ms_per_pair": steady / (k * (k - 1) // 2) * 1e3,
        }
    )
    return rows


_FIRST_CALLS = """
import json, sys, time
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import jax.numpy as jnp
import infogeo_jax as ig
from infogeo_jax.families import Beta, Dirichlet
a, b = jnp.array([0.2, 0.3]), jnp.array([20.0, 10.0])
(a + b).block_until_ready()
out = {}
start = time.perf_counter()
out["distance"] = float(Beta().geodesic_distance(a, b))
out["beta distance, first call (s)"] = time.perf_counter() - start
points = jnp.exp(jax.random.normal(jax.random.key(0), (12, 3)))
start = time.perf_counter()
out["matrix"] = float(ig.pairwise_distances(Dirichlet(3), points).block_until_ready()[0, 1])
out["12 x 12 Dirichlet(3) pairwise_distances, first call (s)"] = time.perf_counter() - start
print(json.dumps(out))
"""


def _cache_rows() -> list[dict]:
    """First calls in a fresh process, without and then with JAX's persistent cache filled."""
    with tempfile.TemporaryDirectory() as cache:
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", _FIRST_CALLS, cache],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    # Correctness first: the cached solve returns the same numbers.
    assert cold["distance"] == warm["distance"] and cold["matrix"] == warm["matrix"]
    return [
        {
            "table": "first call in a new process, JAX's persistent compilation cache (s)",
            "function": key,
            "empty_cache": cold[key],
            "filled_cache": warm[key],
        }
        for key in cold
        if key.endswith("(s)")
    ]


def run(quick: bool = False) -> list[dict]:
    """Run the geometry benchmarks; returns table rows (dicts with a ``table`` key)."""
    distance = _distance_rows(quick)
    curvature = _curvature_rows(quick)
    batched = _batched_rows(quick) + _cache_rows()
    compile_rows = [r for r in curvature + distance if r["table"].startswith("compile")]
    others = [r for r in curvature + distance if not r["table"].startswith("compile")]
    return others + batched + compile_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer points and pairs")
    parser.add_argument(
        "--batched", action="store_true", help="only the batched distances and the matrix"
    )
    args = parser.parse_args()
    rows = _batched_rows(args.quick) + _cache_rows() if args.batched else run(quick=args.quick)
    print_tables(rows)


if __name__ == "__main__":
    main()
