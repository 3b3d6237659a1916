"""Neural-network training: K-FAC and the subsampled natural gradient against Adam and kfac-jax.

Correctness first: on every network the K-FAC blocks found by tracing are checked (kinds and
shapes), and one K-FAC Fisher-vector product of each block against the dense Kronecker product;
the Woodbury solve against the dense damped solve on a subsample (float64). Then, for each
problem, steps and wall time to each of two target training losses (the loss on the whole
training set, checked every ``CHUNK`` steps; a loose target reached by tuned Adam in a few
dozen steps and a low-loss one), median over seeds (initialization and minibatch order), each
peer's hyperparameters tuned for each target on a small grid on the first seed; wall time the
best of ``TIMED_REPEATS`` timed runs of the same steps; compile time apart (the first chunk of
steps minus a timed one of the same jitted ``lax.scan``):

(a) equinox MLP 64-32-10 (tanh) on digits, full batch, cross-entropy;
(b) deep autoencoder 64-256-128-32-128-256-64 (tanh) on digits, minibatches of 256, squared
    error (Martens & Grosse 2015, Sec. 13);
(c) flax nnx CNN on digits as 8x8 images (two 3x3 convolutions, 16 channels, the second with
    stride 2, and a dense layer), minibatches of 128, cross-entropy;
(d) time per step against parameter count (teacher-student MLP, batch 256); ``--kfac-breakdown``:
    where K-FAC's step goes at 1.1M parameters.

Peers: optax Adam (learning rate tuned), kfac-jax 0.0.8 (through the compatibility shim of
``bench_optim``; its standard adaptive learning rate, momentum and damping), natural gradient
with the predictive Fisher and CG(10), our K-FAC, and our exact Woodbury solve on a curvature
subsample. The CPU is shared: compare ratios within one run, not absolute times across runs.
OpenBLAS (the LAPACK behind the Cholesky and eigen solves on CPU) runs single-threaded, as set
below before numpy is imported: its own thread pool, spinning next to XLA's, made each LAPACK
call on the 2 shared cores up to 10x slower and the timings of every LAPACK user erratic.

Run: ``python -m benchmarks.bench_nn`` (``--quick``: fewer seeds and grid points;
``--problems=abc``: only those benchmarks). Training is in float32 for every optimizer.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from benchmarks._common import print_tables  # noqa: E402
from benchmarks.bench_optim import (  # noqa: E402
    _kfac_jax_with_shim,
    kfac_jax_standard_optimizer,
    load_digits,
)
from infogeo_jax.optim import (  # noqa: E402
    kfac,
    kfac_blocks,
    natural_gradient,
    predictive_fisher,
)

CHUNK = 5
TIMED_REPEATS = 3


# ---------------------------------------------------------------------------------------------
# Problems


class Problem(eqx.Module):
    """A training problem: model per seed, its params and apply, data, target losses."""

    name: str = eqx.field(static=True)
    model_of: Callable[[int], Any] = eqx.field(static=True)  # seed -> model (eqx or nnx)
    params_of: Callable[[Any], Any] = eqx.field(static=True)
    apply_of: Callable[[Any], Callable] = eqx.field(static=True)  # model -> apply(params, x)
    output: str = eqx.field(static=True)
    data: tuple[jax.Array, jax.Array]
    batch_size: int | None = eqx.field(static=True)
    targets: tuple[float, ...] = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def loss(self, apply, params, batch):
        x, y = batch
        out = apply(params, x)
        if self.output == "categorical":
            return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))


def _eqx_parts(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return params, (lambda p, x: jax.vmap(eqx.combine(p, static))(x))


def digits_mlp(dtype: Any = jnp.float32) -> Problem:
    x, y = load_digits()
    x = x.astype(dtype)
    make = lambda seed: eqx.nn.MLP(
        64, 10, 32, 1, activation=jnp.tanh, key=jax.random.PRNGKey(seed), dtype=dtype
    )
    return Problem(
        "(a) MLP 64-32-10, full batch",
        make,
        lambda m: _eqx_parts(m)[0],
        lambda m: _eqx_parts(m)[1],
        "categorical",
        (x, y),
        None,
        (0.05, 0.005),
        600,
    )


class Autoencoder(eqx.Module):
    """64-256-128-32-128-256-64, tanh, linear code and output layers."""

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, key, dtype: Any = jnp.float32):
        sizes = [64, 256, 128, 32, 128, 256, 64]
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            eqx.nn.Linear(a, b, key=k, dtype=dtype) for a, b, k in zip(sizes[:-1], sizes[1:], keys)
        )

    def __call__(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 and i != 2:  # linear code layer
                x = jnp.tanh(x)
        return x


def digits_autoencoder(dtype: Any = jnp.float32) -> Problem:
    x, _ = load_digits()
    x = x.astype(dtype)
    return Problem(
        "(b) autoencoder 64-256-128-32-128-256-64, batch 256",
        lambda seed: Autoencoder(jax.random.PRNGKey(seed), dtype),
        lambda m: _eqx_parts(m)[0],
        lambda m: _eqx_parts(m)[1],
        "gaussian",
        (x, x),
        256,
        (1.5, 0.3),
        1500,
    )


def _nnx_cnn(seed: int, dtype: Any = jnp.float32):
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            kw = dict(rngs=rngs, param_dtype=dtype, dtype=dtype)
            self.conv1 = nnx.Conv(1, 16, (3, 3), **kw)
            self.conv2 = nnx.Conv(16, 16, (3, 3), strides=(2, 2), **kw)
            self.head = nnx.Linear(16 * 16, 10, **kw)

        def __call__(self, x):
            h = nnx.relu(self.conv1(x))
            h = nnx.relu(self.conv2(h))
            return self.head(h.reshape(h.shape[0], -1))

    return CNN(nnx.Rngs(seed))


def _nnx_params(model):
    from flax import nnx

    return nnx.state(model, nnx.Param)


def _nnx_apply(model):
    from flax import nnx

    graphdef, _ = nnx.split(model, nnx.Param)
    return lambda p, x: nnx.merge(graphdef, p)(x)


def digits_cnn(dtype: Any = jnp.float32) -> Problem:
    x, y = load_digits()
    x = x.astype(dtype)
    return Problem(
        "(c) flax nnx CNN conv3x3(16)-conv3x3/2(16)-dense, batch 128",
        lambda seed: _nnx_cnn(seed, dtype),
        _nnx_params,
        _nnx_apply,
        "categorical",
        (x.reshape(-1, 8, 8, 1), y),
        128,
        (0.05,),
        600,
    )


# ---------------------------------------------------------------------------------------------
# Running an optimizer: one jitted lax.scan of steps, minibatches by a fixed permutation.


def _minibatch(prob: Problem, perm: jax.Array, i: jax.Array):
    if prob.batch_size is None:
        return prob.data
    n = prob.data[0].shape[0]
    num = n // prob.batch_size
    idx = jax.lax.dynamic_slice(perm, ((i % num) * prob.batch_size,), (prob.batch_size,))
    return jax.tree.map(lambda a: a[idx], prob.data)


def _make_step(prob, apply, opt, perm, curvature):
    def step(carry, i):
        params, state = carry
        batch = _minibatch(prob, perm, i)
        grads = jax.grad(lambda p: prob.loss(apply, p, batch))(params)
        cbatch = batch if curvature is None else curvature(batch)
        updates, state = opt.update(grads, state, params, batch=cbatch)
        return (optax.apply_updates(params, updates), state), None

    return step


def run_to_target(
    prob, seed, make_opt, curvature, targets=None
) -> tuple[list[int | None], list[float], float]:
    """Steps to each target (None if not reached), wall s of that many steps, compile s."""
    targets = prob.targets if targets is None else targets
    model = prob.model_of(seed)
    params0, apply = prob.params_of(model), prob.apply_of(model)
    opt = optax.with_extra_args_support(make_opt(prob, model, apply))
    perm = jax.random.permutation(jax.random.PRNGKey(100 + seed), prob.data[0].shape[0])
    step = _make_step(prob, apply, opt, perm, curvature)
    full_loss = jax.jit(lambda p: prob.loss(apply, p, prob.data))

    @jax.jit
    def chunk(carry, start):
        carry, _ = jax.lax.scan(step, carry, start + jnp.arange(CHUNK))
        return carry

    ks: list[int | None] = [None] * len(targets)
    carry = (params0, opt.init(params0))
    start = time.perf_counter()
    carry = jax.block_until_ready(chunk(carry, 0))
    first = time.perf_counter() - start
    done = CHUNK
    while True:
        value = float(full_loss(carry[0]))
        if not np.isfinite(value):
            break
        ks = [done if k is None and value <= t else k for k, t in zip(ks, targets)]
        if all(k is not None for k in ks) or done >= prob.max_steps:
            break
        carry = chunk(carry, done)
        done += CHUNK
    reached = [k for k in ks if k is not None]
    if not reached:
        return ks, [float("nan")] * len(ks), float("nan")
    # Timed: the steps from a fresh state by the compiled chunk (no loss evaluations), the
    # elapsed time read at each target's step count; the best of TIMED_REPEATS runs (the
    # cores are shared: the best run is the one least disturbed by other processes).
    elapsed: dict[int, float] = {}
    for _ in range(TIMED_REPEATS):
        carry = (params0, opt.init(params0))
        jax.block_until_ready(carry)
        start = time.perf_counter()
        for i in range(max(reached) // CHUNK):
            carry = chunk(carry, i * CHUNK)
            if (i + 1) * CHUNK in reached:
                jax.block_until_ready(carry)
                k = (i + 1) * CHUNK
                elapsed[k] = min(elapsed.get(k, float("inf")), time.perf_counter() - start)
    chunk_s = elapsed[max(reached)] * CHUNK / max(reached)
    walls = [float("nan") if k is None else elapsed[k] for k in ks]
    return ks, walls, max(first - chunk_s, 0.0)


def kfac_jax_to_target(prob, seed) -> tuple[list[int | None], list[float], float, str]:
    """kfac-jax to the target, with 64-bit mode off.

    Under x64 its float32 state mixes in float64 and fails an internal dtype assertion.
    """
    with jax.enable_x64(False):
        return _kfac_jax_to_target(prob, seed)


def _kfac_jax_to_target(prob, seed) -> tuple[list[int | None], list[float], float, str]:
    """kfac-jax 0.0.8 (adaptive lr/momentum/damping) to the targets, or why it failed."""
    nan = [float("nan")] * len(prob.targets)
    try:
        kfac_jax = _kfac_jax_with_shim()
        model = prob.model_of(seed)
        params0, apply = prob.params_of(model), prob.apply_of(model)

        def loss(params, batch):
            x, y = batch
            out = apply(params, x)
            if prob.output == "categorical":
                kfac_jax.register_softmax_cross_entropy_loss(out, y)
                return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
            kfac_jax.register_squared_error_loss(out, y)
            return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))

        opt = kfac_jax_standard_optimizer(kfac_jax, loss)
        perm = jax.random.permutation(jax.random.PRNGKey(100 + seed), prob.data[0].shape[0])
        batches = jax.jit(lambda i: _minibatch(prob, perm, i))
        full_loss = jax.jit(lambda p: prob.loss(apply, p, prob.data))
        key = jax.random.PRNGKey(seed)

        def run(num_steps, ks=None):
            params = jax.tree.map(jnp.copy, params0)
            state = opt.init(jax.tree.map(jnp.copy, params0), key, batches(0))
            k, found = 0, [None] * len(prob.targets)
            elapsed: dict[int, float] = {}
            start = time.perf_counter()
            while k < (num_steps or prob.max_steps):
                params, state, _ = opt.step(
                    params, state, key, batch=batches(k), global_step_int=k + 1
                )
                k += 1
                if ks is not None and k in ks:
                    jax.block_until_ready(params)
                    elapsed[k] = time.perf_counter() - start
                if num_steps is None and k % CHUNK == 0:
                    value = float(full_loss(params))
                    if not np.isfinite(value):
                        break
                    found = [
                        k if f is None and value <= t else f for f, t in zip(found, prob.targets)
                    ]
                    if all(f is not None for f in found):
                        break
            return jax.block_until_ready(params), k, found, elapsed

        start = time.perf_counter()
        _, k, ks, _ = run(None)
        first = time.perf_counter() - start
        reached = [f for f in ks if f is not None]
        if not reached:
            return ks, nan, float("nan"), "target not reached"
        elapsed: dict[int, float] = {}
        for _ in range(TIMED_REPEATS):
            for f, t in run(max(reached), ks=set(reached))[3].items():
                elapsed[f] = min(elapsed.get(f, float("inf")), t)
        walls = [float("nan") if f is None else elapsed[f] for f in ks]
        compile_s = max(first - elapsed[max(reached)] * k / max(reached), 0.0)
        return ks, walls, compile_s, "shim; Python loop of its jitted step"
    except Exception as error:  # record why it does not run
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return (
            [None] * len(prob.targets),
            nan,
            float("nan"),
            (f"failed: {type(error).__name__}: {message}"[:120]),
        )


# ---------------------------------------------------------------------------------------------
# Peers


def _adam(lr):
    return lambda prob, model, apply: optax.adam(lr)


def _kfac(lr, damping, decay, curvature_every=1, inverse_every=10, max_kl=1e-2, momentum=None):
    def make(prob, model, apply):
        example = jax.tree.map(lambda a: a[: prob.batch_size or a.shape[0]], prob.data[0])
        return kfac(
            lr,
            apply,
            prob.output,
            example_inputs=example,
            damping=damping,
            decay=decay,
            curvature_every=curvature_every,
            inverse_every=inverse_every,
            max_kl=max_kl,
            momentum=momentum,
        )

    return make


def _cg(damping):
    def make(prob, model, apply):
        return natural_gradient(
            1.0, predictive_fisher(apply, prob.output), damping, cg_max_steps=10
        )

    return make


def _woodbury(lr, damping):
    def make(prob, model, apply):
        return natural_gradient(
            lr, predictive_fisher(apply, prob.output), damping, solver="woodbury"
        )

    return make


def _subsample(m):
    return lambda batch: jax.tree.map(lambda a: a[:m], batch)


def peers(prob: Problem, quick: bool) -> list[tuple[str, str, Callable, Any, int]]:
    """(group, setting, make, curvature subsample, how many of the targets to chase)."""
    adam_lrs = [3e-3, 1e-2, 3e-2, 1e-1] if quick else [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    every = len(prob.targets)
    out = [("adam (tuned lr)", f"lr={lr}", _adam(lr), None, every) for lr in adam_lrs]
    # One grid for every problem, no larger than Adam's: (damping, decay, curvature_every,
    # inverse_every, max_kl, momentum), learning rate 1.
    kfac_grid = [
        (1e-2, 0.9, 1, 10, 1e-2, None),  # the defaults
        (1e-2, 0.9, 10, 10, 1e-2, None),
        (1e-2, 0.5, 5, 5, 1e-2, None),
        (1e-3, 0.9, 5, 5, 1e-1, 0.5),
    ]
    if not quick:
        kfac_grid += [(1e-3, 0.9, 5, 5, 1e-1, None)]
    out += [
        (
            "kfac (ours, tuned)",
            f"damping={d}, decay={decay}, curvature_every={ce}, inverse_every={ie}, max_kl={kl}"
            + ("" if mom is None else f", momentum={mom}"),
            _kfac(1.0, d, decay, ce, ie, kl, mom),
            None,
            every,
        )
        for d, decay, ce, ie, kl, mom in kfac_grid
    ]
    # The slow peers chase the first (loose) target only.
    out += [("natural_gradient CG(10)", "lr=1, damping=1e-2", _cg(1e-2), None, 1)]
    m = 32 if prob.output == "categorical" else 8
    wood = [(1.0, 1e-1)] if quick else [(0.3, 1e-1), (1.0, 1e-1), (1.0, 1.0)]
    out += [
        (
            f"natural_gradient woodbury (curvature on {m})",
            f"lr={lr}, damping={d}",
            _woodbury(lr, d),
            _subsample(m),
            1,
        )
        for lr, d in wood
    ]
    return out


# ---------------------------------------------------------------------------------------------
# Correctness checks


def check_correctness(prob: Problem) -> str:
    """Blocks found (kinds), one Kronecker product per block against the dense one."""
    from infogeo_jax.optim._kfac import kfac_matvec
    from infogeo_jax.optim._kfac_blocks import block_matrix, build_plan

    model = prob.model_of(0)
    params, apply = prob.params_of(model), prob.apply_of(model)
    x = jax.tree.map(lambda a: a[:64], prob.data[0])
    blocks = kfac_blocks(apply, params, x)
    kinds = [b.kind for b in blocks]
    if "diagonal" in kinds:
        raise AssertionError(f"{prob.name}: unexpected diagonal blocks: {blocks}")
    opt = kfac(1.0, apply, prob.output, example_inputs=x)
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = jax.jit(opt.update)(grads, state, params, batch=(x, None))
    inner = state[0]
    plan = build_plan(apply, params, x)
    v = jax.tree.map(lambda t: jnp.sin(jnp.arange(t.size).reshape(t.shape) + 1.0), params)
    fv = jax.tree.leaves(kfac_matvec(plan, inner, v))
    for b, block in enumerate(plan.blocks):
        a, g = inner.factors_a[b], inner.factors_g[b]
        vm = block_matrix(block, jax.tree.leaves(v))
        np.testing.assert_allclose(block_matrix(block, fv), a @ vm @ g, rtol=1e-9, atol=1e-12)
    return f"{len(blocks)} blocks: " + ", ".join(
        f"{b.kind} {b.factor_shapes[0][0]}x{b.factor_shapes[1][0]}" for b in blocks
    )


def check_woodbury() -> None:
    prob = digits_mlp(jnp.float64)
    model = prob.model_of(0)
    params, apply = prob.params_of(model), prob.apply_of(model)
    batch = jax.tree.map(lambda a: a[:16], prob.data)
    fisher = predictive_fisher(apply, "categorical")
    grads = jax.grad(lambda p: prob.loss(apply, p, batch))(params)
    flat_g, _ = ravel_pytree(grads)
    f = jax.jit(lambda p: fisher(p, batch=batch).as_matrix())(params)
    want = np.linalg.solve(np.asarray(f) + 1e-2 * np.eye(f.shape[0]), np.asarray(flat_g))
    opt = natural_gradient(1.0, fisher, 1e-2, solver="woodbury")
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params, batch=batch)
    np.testing.assert_allclose(-ravel_pytree(updates)[0], want, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------------------------


def bench_problem(make_problem: Callable[..., Problem], quick: bool) -> list[dict[str, Any]]:
    seeds = [0, 1, 2]
    note = check_correctness(make_problem(jnp.float64))  # correctness in float64
    prob = make_problem(jnp.float32)  # the race in float32, every optimizer alike
    print(f"{prob.name}: {note}", file=sys.stderr)
    candidates = peers(prob, quick)
    nan = float("nan")
    results: dict[tuple[int, int], Any] = {}  # (candidate, seed) -> run_to_target result

    def result(c: int, seed: int):
        if (c, seed) not in results:
            group, setting, make, curvature, n = candidates[c]
            try:
                results[c, seed] = run_to_target(prob, seed, make, curvature, prob.targets[:n])
            except Exception as err:  # e.g. a float32 solve reported singular: record, go on
                print(
                    prob.name,
                    group,
                    setting,
                    "failed:",
                    str(err).splitlines()[-1][:200],
                    file=sys.stderr,
                    flush=True,
                )
                results[c, seed] = ([None] * n, [nan] * n, nan)
            print(
                prob.name, group, setting, seed, results[c, seed][:2], file=sys.stderr, flush=True
            )
        return results[c, seed]

    rows = []
    kj = [kfac_jax_to_target(prob, s) for s in (seeds[:1] if quick else seeds)]
    for t, target in enumerate(prob.targets):
        table = f"{prob.name}, to loss {target}"
        group_rows: list[dict[str, Any]] = []
        groups = dict.fromkeys(g for g, *_, n in candidates if n > t)
        for group in groups:
            # Tuned on seed 0: the fewest steps to this target, then the least wall time.
            tried = [c for c, cand in enumerate(candidates) if cand[0] == group]
            scored = [(result(c, 0)[0][t], result(c, 0)[1][t], c) for c in tried]
            scored = [x for x in scored if x[0] is not None]
            if not scored:
                group_rows.append(
                    dict(
                        table=table,
                        optimizer=group,
                        setting="grid",
                        steps=None,
                        wall_s=None,
                        compile_s=None,
                        time_vs_adam=None,
                        note=f"not reached in {prob.max_steps} steps",
                    )
                )
                continue
            c = min(scored)[2]
            runs = [result(c, s) for s in seeds]
            ok = [r for r in runs if r[0][t] is not None]
            group_rows.append(
                dict(
                    table=table,
                    optimizer=group,
                    setting=candidates[c][1],
                    steps=statistics.median(r[0][t] for r in ok),
                    wall_s=statistics.median(r[1][t] for r in ok),
                    compile_s=statistics.median(r[2] for r in ok),
                    time_vs_adam=None,
                    note=f"{len(ok)}/{len(seeds)} seeds",
                )
            )
        ok = [r for r in kj if r[0][t] is not None]
        group_rows.append(
            dict(
                table=table,
                optimizer="kfac-jax 0.0.8 (adaptive)",
                setting="defaults",
                steps=statistics.median(r[0][t] for r in ok) if ok else None,
                wall_s=statistics.median(r[1][t] for r in ok) if ok else None,
                compile_s=statistics.median(r[2] for r in ok) if ok else None,
                time_vs_adam=None,
                note=kj[0][3] + (f"; {len(ok)}/{len(kj)} seeds" if ok else ""),
            )
        )
        adam = group_rows[0]["wall_s"]
        for r in group_rows:
            if adam and r["wall_s"] is not None:
                r["time_vs_adam"] = r["wall_s"] / adam
        rows += group_rows
    return rows


# ---------------------------------------------------------------------------------------------
# (d) Time per step against parameter count: teacher-student MLP 64-h-h-10, batch 256.

SCALING_BATCH = 256
SCALING_CURVATURE = 4  # Woodbury's curvature subsample: 4 examples x 10 outputs = 40 Gram rows


def _teacher_student(h: int, dtype: Any) -> tuple[Any, Callable, Callable, tuple]:
    """(params, apply, loss, batch): student MLP 64-h-h-10 (tanh), teacher MLP 64-32-10."""
    x = jax.random.normal(jax.random.PRNGKey(0), (SCALING_BATCH, 64), dtype)
    student = eqx.nn.MLP(64, 10, h, 2, activation=jnp.tanh, key=jax.random.PRNGKey(1), dtype=dtype)
    teacher = eqx.nn.MLP(64, 10, 32, 1, activation=jnp.tanh, key=jax.random.PRNGKey(2), dtype=dtype)
    y = jax.vmap(teacher)(x)
    params, apply = _eqx_parts(student)
    loss = lambda p, batch: 0.5 * jnp.mean(jnp.sum((apply(p, batch[0]) - batch[1]) ** 2, axis=-1))
    return params, apply, loss, (x, y)


def _scaling_peers(apply: Callable, x: jax.Array) -> list[tuple[str, Any, Any]]:
    """(name, optimizer, curvature batch map) of the peers of (d), each with its defaults."""
    fisher = predictive_fisher(apply, "gaussian")
    return [
        ("adam", optax.adam(1e-3), None),
        ("kfac", kfac(0.1, apply, "gaussian", example_inputs=x), None),
        # The statistics pass amortized too (not a default): what K-FAC's step costs without it.
        (
            "kfac_stats10",
            kfac(0.1, apply, "gaussian", example_inputs=x, curvature_every=10),
            None,
        ),
        ("cg", natural_gradient(1.0, fisher, 1e-2, cg_max_steps=10), None),
        (
            "woodbury",
            # The Fisher of 4 examples has rank 40: off its range the step is g / damping.
            natural_gradient(0.1, fisher, 1.0, solver="woodbury"),
            _subsample(SCALING_CURVATURE),
        ),
    ]


def _scan_steps(loss: Callable, batch: tuple, opt: Any, curvature: Any, steps: int) -> Callable:
    """Jitted ``params -> (params after steps, per-step <g, u>, final loss)`` by ``lax.scan``."""
    from infogeo_jax.optim._common import tree_vdot

    opt = optax.with_extra_args_support(opt)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p, batch)
        cb = batch if curvature is None else curvature(batch)
        u, s = opt.update(g, s, p, batch=cb)
        return (optax.apply_updates(p, u), s), tree_vdot(g, u)

    def run_steps(p):
        (p, _), slopes = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p, slopes, loss(p, batch)

    return jax.jit(run_steps)


def check_scaling() -> str:
    """(d) correctness, float64, h = 16: blocks found; Woodbury = CG to convergence = dense."""
    params, apply, loss, batch = _teacher_student(16, jnp.float64)
    blocks = kfac_blocks(apply, params, batch[0])
    kinds = [b.kind for b in blocks]
    if len(blocks) != 3 or "diagonal" in kinds:
        raise AssertionError(f"(d): expected 3 Kronecker blocks, found {blocks}")
    fisher = predictive_fisher(apply, "gaussian")
    cbatch = _subsample(SCALING_CURVATURE)(batch)
    grads = jax.grad(loss)(params, batch)
    flat_g = ravel_pytree(grads)[0]
    f = jax.jit(lambda p: fisher(p, batch=cbatch).as_matrix())(params)
    dense = jnp.linalg.solve(f + 1e-1 * jnp.eye(f.shape[0]), flat_g)
    directions = {}
    for name, opt in [
        ("woodbury", natural_gradient(1.0, fisher, 1e-1, solver="woodbury")),
        ("cg", natural_gradient(1.0, fisher, 1e-1, cg_max_steps=2000, cg_rtol=1e-13)),
    ]:
        u, _ = jax.jit(opt.update)(grads, opt.init(params), params, batch=cbatch)
        directions[name] = -ravel_pytree(u)[0]
    np.testing.assert_allclose(directions["woodbury"], dense, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(directions["cg"], directions["woodbury"], rtol=1e-6, atol=1e-8)
    return (
        f"{len(blocks)} blocks ({', '.join(kinds)}); Woodbury = dense damped solve (1e-9) = "
        "CG to convergence (1e-6), float64, h=16"
    )


def scaling(quick: bool) -> list[dict[str, Any]]:
    """(d) seconds per step against parameter count, float32, median of repeated timed runs.

    Correctness first: :func:`check_scaling` in float64; then, in every timed run, every
    step of every peer must be a descent direction on its own gradient (``<g, u> < 0``, finite)
    and the final loss finite. K-FAC is amortized: a run of 20 steps (two inverse refreshes at
    its default ``inverse_every=10``) divided by 20; the others are timed over 10 or 20 steps.
    The peers are timed in turn within each repetition (so a change of the machine's load hits
    them alike), median over repetitions; compile time (first call minus a timed call) apart.
    """
    print(f"(d): {check_scaling()}", file=sys.stderr, flush=True)
    widths = [64, 256, 1024] if quick else [64, 256, 512, 1024, 1400]
    reps = 3 if quick else 5
    rows = []
    for h in widths:
        params, apply, loss, batch = _teacher_student(h, jnp.float32)
        num = ravel_pytree(params)[0].size
        row: dict[str, Any] = dict(table="(d) seconds per step vs parameter count", params=num)
        runs = {}
        for name, opt, curvature in _scaling_peers(apply, batch[0]):
            steps = 20 if name.startswith(("adam", "kfac")) else 10
            run_steps = _scan_steps(loss, batch, opt, curvature, steps)
            start = time.perf_counter()
            _, slopes, final = jax.block_until_ready(run_steps(params))
            first = time.perf_counter() - start
            if not (np.all(np.asarray(slopes) < 0) and np.isfinite(float(final))):
                raise AssertionError(f"(d) h={h} {name}: not a descent direction: {slopes}")
            runs[name] = (run_steps, steps, first)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(reps):
            for name, (run_steps, steps, _) in runs.items():
                start = time.perf_counter()
                jax.block_until_ready(run_steps(params))
                times[name].append((time.perf_counter() - start) / steps)
        for name, (_, steps, first) in runs.items():
            per_step = statistics.median(times[name])
            row[f"{name}_s"] = per_step
            row[f"{name}_best_s"] = min(times[name])
            row[f"{name}_compile_s"] = max(first - per_step * steps, 0.0)
            print(f"(d) h={h} P={num} {name}: {per_step:.4g} s/step", file=sys.stderr, flush=True)
        for name in runs:
            if name != "adam":
                row[f"{name}/adam"] = row[f"{name}_s"] / row["adam_s"]
                # Best of the repetitions: the least disturbed by other jobs on the machine.
                row[f"{name}/adam best"] = row[f"{name}_best_s"] / row["adam_best_s"]
        rows.append(row)
    return rows


def kfac_breakdown(h: int = 1024, reps: int = 5) -> list[dict[str, Any]]:
    """Where K-FAC's step goes at width ``h`` (batch 256): one jitted step per variant.

    Each variant's ``update`` (with the gradient) is timed from a state past step 0, so a
    "cached" step neither refreshes the inverses nor (with ``curvature_every`` huge) gathers
    statistics; "with refresh" uses ``inverse_every=1``. Timed in turn, best of ``reps`` (the
    least disturbed by other jobs on a shared machine). Amortized with the defaults:
    cached + (refresh - cached) / inverse_every. Run with ``--kfac-breakdown``.
    """
    params, apply, loss, batch = _teacher_student(h, jnp.float32)
    num = ravel_pytree(params)[0].size
    x, never = batch[0], 10**9
    adam = optax.adam(1e-3)
    steps = {
        "adam step": (
            jax.jit(lambda p, s: adam.update(jax.grad(loss)(p, batch), s, p)),
            adam.init(params),
        )
    }
    for name, kw in [
        ("kfac step, cached inverses", dict(inverse_every=never)),
        (
            "kfac step, cached inverses, no statistics",
            dict(inverse_every=never, curvature_every=never),
        ),
        ("kfac step with a refresh", dict(inverse_every=1)),
    ]:
        opt = kfac(0.1, apply, "gaussian", example_inputs=x, **kw)
        step = jax.jit(
            lambda p, s, opt=opt: opt.update(jax.grad(loss)(p, batch), s, p, batch=batch)
        )
        _, state = step(params, opt.init(params))  # past step 0 (first statistics, inverses)
        steps[name] = (step, state)
    for step, state in steps.values():
        jax.block_until_ready(step(params, state))
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(reps):
        for name, (step, state) in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(params, state))
            best[name] = min(best[name], time.perf_counter() - start)
    cached = best["kfac step, cached inverses"]
    best["kfac amortized (inverse_every=10)"] = (
        cached + (best["kfac step with a refresh"] - cached) / 10
    )
    return [
        dict(
            table=f"(d) K-FAC step breakdown, MLP 64-{h}-{h}-10 ({num} parameters), batch 256",
            variant=name,
            seconds=seconds,
            vs_adam_step=seconds / best["adam step"],
        )
        for name, seconds in best.items()
    ]


def run(quick: bool = False, problems: str = "abcd") -> list[dict[str, Any]]:
    """The benchmarks named in ``problems`` (letters a-d); rows are dicts (wall times in s).

    Training runs in float32 for every optimizer; the correctness checks run in float64.
    """
    check_woodbury()
    rows = []
    for letter, make in zip("abc", (digits_mlp, digits_autoencoder, digits_cnn)):
        if letter in problems:
            rows += bench_problem(make, quick)
    return rows + (scaling(quick) if "d" in problems else [])


if __name__ == "__main__":
    only = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--problems=")]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, training in float32")
    if "--kfac-breakdown" in sys.argv:
        print_tables(kfac_breakdown())
    else:
        print_tables(run(quick="--quick" in sys.argv, problems=only[0] if only else "abcd"))
