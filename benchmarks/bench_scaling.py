"""How cost grows with dimension.

1. Fisher metric, Christoffel symbols and scalar curvature of Dirichlet(k) for k up to 50, with
   geomstats' ``DirichletDistributions`` measured in the same run where it finishes in seconds
   (its scalar curvature takes about a minute at k = 20, so it stops at k = 10).
2. One natural-gradient step (dense Cholesky and matrix-free CG) against one Adam step, as the
   parameter count of a softmax regression grows.

Correctness is checked first at every size: the Fisher metric against its closed form, the
Christoffel symbols and scalar curvature against geomstats (and against the generic metric-only
engine for small k), the natural-gradient direction against an explicit solve.

Run alone with ``python -m benchmarks.bench_scaling [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import infogeo_jax as ig  # noqa: E402
from infogeo_jax.families import Dirichlet  # noqa: E402
from infogeo_jax.optim import natural_gradient, predictive_fisher  # noqa: E402

from ._common import import_geomstats, print_tables, time_call, time_jitted  # noqa: E402

DIRICHLET_K = (2, 5, 10, 20, 30, 50)
DIRICHLET_K_QUICK = (2, 5, 10)
GEOMSTATS_MAX_K = 10
NG_SIZES = ((10, 10), (20, 15), (40, 25), (80, 40), (100, 100))  # (features, classes)
NG_SIZES_QUICK = ((10, 10), (20, 15))
DENSE_MAX_PARAMS = 1000
BATCH = 256


def _alpha(k: int) -> jnp.ndarray:
    return jnp.linspace(0.7, 3.0, k)


def _dirichlet_fisher_closed_form(alpha: np.ndarray) -> np.ndarray:
    # g = diag(psi'(alpha_i)) - psi'(alpha_0) 1 1^T (e.g. Le Brigant et al., *Fisher-Rao geometry
    # of Dirichlet distributions*, Differential Geom. Appl. 74 (2021), Eq. (3)).
    from scipy.special import polygamma

    return np.diag(polygamma(1, alpha)) - polygamma(1, alpha.sum())


def _check_dirichlet(k: int, fisher, christoffel, curvature, gs_space) -> None:
    alpha = _alpha(k)
    np.testing.assert_allclose(
        fisher(alpha), _dirichlet_fisher_closed_form(np.asarray(alpha)), rtol=1e-10, atol=1e-12
    )
    if k <= 5:
        # Second route: the metric-only engine, differentiating the Fisher metric by autodiff.
        generic = ig.StatisticalManifold(Dirichlet(k).fisher_information)
        np.testing.assert_allclose(
            christoffel(alpha), generic.christoffel_symbols(alpha), rtol=1e-9, atol=1e-11
        )
        np.testing.assert_allclose(
            curvature(alpha), generic.scalar_curvature(alpha), rtol=1e-8, atol=1e-10
        )
    if gs_space is not None and k <= GEOMSTATS_MAX_K:
        x = np.asarray(alpha)
        np.testing.assert_allclose(
            christoffel(alpha), np.asarray(gs_space.metric.christoffels(x)), rtol=1e-8, atol=1e-10
        )
        np.testing.assert_allclose(
            curvature(alpha), float(gs_space.metric.scalar_curvature(x)), rtol=1e-7, atol=1e-9
        )


def _slope(sizes, times) -> float:
    """Least-squares exponent p in time ~ size^p (log-log fit)."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(times, float))
    return float(np.polyfit(x, y, 1)[0])


def _dirichlet_rows(quick: bool) -> list[dict]:
    gs = import_geomstats()
    dirichlet_cls = None
    if gs is not None:
        from geomstats.information_geometry.dirichlet import DirichletDistributions

        dirichlet_cls = DirichletDistributions
    rows, compile_rows = [], []
    ks = DIRICHLET_K_QUICK if quick else DIRICHLET_K
    times: dict[str, list[float]] = {"fisher": [], "christoffel": [], "curvature": []}
    for k in ks:
        fam = Dirichlet(k)
        fisher = jax.jit(fam.fisher_information)
        christoffel = jax.jit(lambda a, fam=fam: fam.christoffel_symbols(a, 0.0))
        curvature = jax.jit(lambda a, fam=fam: fam.scalar_curvature(a, 0.0))
        gs_space = dirichlet_cls(k) if dirichlet_cls is not None else None
        _check_dirichlet(k, fisher, christoffel, curvature, gs_space)
        alpha = _alpha(k)
        # Fresh jitted functions for honest compile timings (the check above compiled the others).
        fresh = {
            "fisher": jax.jit(lambda a, fam=fam: fam.fisher_information(a)),
            "christoffel": jax.jit(lambda a, fam=fam: fam.christoffel_symbols(a, 0.0)),
            "curvature": jax.jit(lambda a, fam=fam: fam.scalar_curvature(a, 0.0)),
        }
        row: dict = {"table": "Dirichlet(k): steady-state time per call (us)", "k": k}
        crow: dict = {"table": "Dirichlet(k): compile + first call (s)", "k": k}
        for name, fn in fresh.items():
            first, best = time_jitted(fn, alpha, repeats=20)
            times[name].append(best)
            row[f"{name}_us"] = best * 1e6
            crow[name] = first
        if gs_space is not None and k <= GEOMSTATS_MAX_K:
            x = np.asarray(alpha)
            gs_f = time_call(gs_space.metric.metric_matrix, x, repeats=5)
            gs_c = time_call(gs_space.metric.christoffels, x, repeats=5)
            gs_r = time_call(gs_space.metric.scalar_curvature, x, repeats=1)
            row["geomstats_fisher/ours"] = gs_f / row["fisher_us"] * 1e6
            row["geomstats_christoffel/ours"] = gs_c / row["christoffel_us"] * 1e6
            row["geomstats_curvature/ours"] = gs_r / row["curvature_us"] * 1e6
        else:
            row["geomstats_fisher/ours"] = None
            row["geomstats_christoffel/ours"] = None
            row["geomstats_curvature/ours"] = None
        rows.append(row)
        compile_rows.append(crow)
    large = [i for i, k in enumerate(ks) if k >= 10]
    growth = []
    if len(large) >= 2:
        sizes = [ks[i] for i in large]
        for name, expected in [
            ("fisher", "O(k^2)"),
            ("christoffel", "O(k^3)"),
            ("curvature", "O(k^4)"),
        ]:
            growth.append(
                {
                    "table": "Dirichlet(k): fitted growth exponent of the time (k >= 10)",
                    "quantity": name,
                    "exponent": _slope(sizes, [times[name][i] for i in large]),
                    "arithmetic": expected,
                }
            )
    return rows + compile_rows + growth


def _softmax_regression(num_features: int, num_classes: int, key):
    kx, ky, kw = jax.random.split(key, 3)
    x = jax.random.normal(kx, (BATCH, num_features))
    w_true = jax.random.normal(kw, (num_features, num_classes))
    y = jax.random.categorical(ky, x @ w_true)

    def apply(w, inputs):
        return inputs @ w

    def loss(w, batch):
        inputs, labels = batch
        logits = apply(w, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return apply, loss, (x, y)


def _make_step(opt, loss):
    def step(params, state, batch):
        grads = jax.grad(loss)(params, batch)
        updates, state = opt.update(grads, state, params, batch=batch)
        return optax.apply_updates(params, updates), state

    return jax.jit(step)


def _check_natural_gradient(apply, loss, batch, damping) -> None:
    w = jnp.zeros((batch[0].shape[1], 3)) + 0.01 * jnp.arange(3.0)
    inputs = batch[0]
    labels = jnp.mod(batch[1], 3)
    small_batch = (inputs, labels)
    grads = jax.grad(loss)(w, small_batch)
    opt = natural_gradient(1.0, predictive_fisher(apply, "categorical"), damping, solver="dense")
    updates, _ = opt.update(grads, opt.init(w), w, batch=small_batch)
    # Explicit Fisher of softmax regression: (1/n) sum_i (diag p_i - p_i p_i^T) (x) x_i x_i^T,
    # in the row-major order of w (feature-major), plus damping.
    p = jax.nn.softmax(inputs @ w)
    out = jax.vmap(lambda pi: jnp.diag(pi) - jnp.outer(pi, pi))(p)
    fisher = jnp.einsum("nab,ni,nj->iajb", out, inputs, inputs) / inputs.shape[0]
    n = w.size
    fisher = fisher.reshape(n, n) + damping * jnp.eye(n)
    expected = -jnp.linalg.solve(fisher, grads.reshape(-1)).reshape(w.shape)
    np.testing.assert_allclose(updates, expected, rtol=1e-8, atol=1e-10)


def _natural_gradient_rows(quick: bool) -> list[dict]:
    rows = []
    sizes = NG_SIZES_QUICK if quick else NG_SIZES
    damping = 1e-3
    counts, cg_times = [], []
    for i, (features, classes) in enumerate(sizes):
        apply, loss, batch = _softmax_regression(features, classes, jax.random.key(i))
        if i == 0:
            _check_natural_gradient(apply, loss, batch, damping)
        params = jnp.zeros((features, classes))
        fisher = predictive_fisher(apply, "categorical")
        optimizers = {
            "adam": optax.adam(1e-2),
            "ng_cg": natural_gradient(1.0, fisher, damping, solver="cg", cg_max_steps=20),
        }
        if params.size <= DENSE_MAX_PARAMS:
            optimizers["ng_dense"] = natural_gradient(1.0, fisher, damping, solver="dense")
        row: dict = {
            "table": "natural-gradient step vs parameter count (softmax regression, "
            f"batch {BATCH})",
            "params": int(params.size),
        }
        compile_row: dict = {
            "table": "natural-gradient step: compile + first call (s)",
            "params": int(params.size),
        }
        results = {}
        for name, opt in optimizers.items():
            step = _make_step(opt, loss)
            state = opt.init(params)
            first, best = time_jitted(step, params, state, batch, repeats=10)
            results[name] = best
            row[f"{name}_us"] = best * 1e6
            compile_row[name] = first
        if "ng_dense" in results:
            # The CG step must agree with the dense step (same damped system, 20 CG steps).
            step_d = _make_step(optimizers["ng_dense"], loss)
            step_c = _make_step(optimizers["ng_cg"], loss)
            w_d, _ = step_d(params, optimizers["ng_dense"].init(params), batch)
            w_c, _ = step_c(params, optimizers["ng_cg"].init(params), batch)
            rel = float(jnp.linalg.norm(w_c - w_d) / jnp.linalg.norm(w_d))
            row["cg_vs_dense_rel_diff"] = rel
        else:
            row["ng_dense_us"] = None
            compile_row["ng_dense"] = None
            row["cg_vs_dense_rel_diff"] = None
        row["ng_cg/adam"] = results["ng_cg"] / results["adam"]
        row["ng_dense/adam"] = (
            results["ng_dense"] / results["adam"] if "ng_dense" in results else None
        )
        counts.append(params.size)
        cg_times.append(results["ng_cg"])
        rows.append(row)
        rows.append(compile_row)
    if len(counts) >= 3:
        rows.append(
            {
                "table": "natural-gradient step: fitted growth exponent of the time",
                "quantity": "ng_cg step",
                "exponent": _slope(counts[1:], cg_times[1:]),
                "note": "matrix-free: O(P) per Fisher-vector product, 20 CG steps",
            }
        )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Run the scaling benchmarks; every size is checked for correctness before it is timed."""
    return _dirichlet_rows(quick) + _natural_gradient_rows(quick)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    print_tables(run(args.quick))
    print(f"\n(total {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    _main()
