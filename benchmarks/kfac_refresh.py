"""Cost of one K-FAC inverse refresh and of one cached step on the autoencoder of bench_nn (b).

``python3 -m benchmarks.kfac_refresh``: for float64 and float32 parameters and each inverse
route (``"eigh"``, ``"cholesky"``), the jitted ``update`` is timed (compile apart, median of
repeats, ``block_until_ready``) once with a refresh at every step (``inverse_every=1``) and once
on a cached step; the refresh cost is their difference. An Adam step is timed alongside.
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.bench_nn import Autoencoder, _eqx_parts  # noqa: E402
from benchmarks.bench_optim import load_digits  # noqa: E402
from infogeo_jax.optim import kfac  # noqa: E402


def _median_time(f, *args, repeats=7):
    jax.block_until_ready(f(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    x, _ = load_digits()
    for dtype in (jnp.float64, jnp.float32):
        model = jax.tree.map(
            lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a,
            Autoencoder(jax.random.PRNGKey(0)),
        )
        params, apply = _eqx_parts(model)
        batch = jnp.asarray(x[:256], dtype)
        loss = lambda p: 0.5 * jnp.mean(jnp.sum((apply(p, batch) - batch) ** 2, axis=-1))
        grads = jax.grad(loss)(params)
        adam = optax.adam(1e-3)
        adam_state = adam.init(params)
        t_adam = _median_time(jax.jit(adam.update), grads, adam_state, params)
        for inverse in ("eigh", "cholesky"):
            costs = {}
            for every in (1, 10**6):
                opt = kfac(
                    0.1,
                    apply,
                    "gaussian",
                    example_inputs=batch,
                    inverse=inverse,
                    inverse_every=every,
                )
                state = opt.init(params)
                update = jax.jit(lambda g, s, p, opt=opt: opt.update(g, s, p, batch=batch))
                _, state = update(grads, state, params)  # count 1: later steps cached if 10**6
                costs[every] = _median_time(update, grads, state, params)
            print(
                f"{jnp.dtype(dtype).name:8s} {inverse:8s} refresh+step {costs[1] * 1e3:8.1f} ms"
                f"  cached step {costs[10**6] * 1e3:7.2f} ms"
                f"  refresh {(costs[1] - costs[10**6]) * 1e3:8.1f} ms"
                f"  (adam update {t_adam * 1e3:.3f} ms)"
            )


if __name__ == "__main__":
    main()
