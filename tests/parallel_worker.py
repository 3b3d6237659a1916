"""Data-parallel checks of the optimizers, run in a fresh process by tests/test_optim_parallel.py.

The number of (CPU) devices is fixed when JAX starts, so these checks cannot run in the test
process itself. ``python parallel_worker.py devices`` (or ``devices-full``: more
configurations) uses 8 host devices in one process;
``python parallel_worker.py distributed PROCESS_ID NUM_PROCESSES PORT`` is one process of a
multi-process run (``jax.distributed.initialize``, CPU collectives, 2 devices per process).
Each prints one JSON line of results: maximal differences against the single-device
computation on the whole batch, and loss traces.
"""

from __future__ import annotations

import json
import os
import sys


def _setup(local_devices: int) -> None:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={local_devices}"
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)


def _problem():
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), 4)
    params = {"a": jax.random.normal(keys[0], (3, 5)), "b": jax.random.normal(keys[1], (5, 3))}
    x = jax.random.normal(keys[2], (32, 3))
    labels = jax.random.randint(keys[3], (32,), 0, 3)

    def apply(w, inputs):
        return jnp.tanh(inputs @ w["a"]) @ w["b"]

    def loss(w, inputs, y):  # mean cross-entropy over the (local) batch
        logits = apply(w, inputs)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def loglik(w, example):
        inputs, y = example
        return jax.nn.log_softmax(apply(w, inputs))[y]

    return params, x, labels, apply, loss, loglik


def _configs(apply, loglik, axis_name, full=True):
    from infogeo_jax.optim import empirical_fisher, natural_gradient, predictive_fisher

    tight = dict(cg_rtol=1e-13, cg_atol=0.0, cg_max_steps=60)
    pf = predictive_fisher(apply, "categorical", axis_name=axis_name)
    ef = empirical_fisher(loglik, axis_name=axis_name)
    configs = {
        "predictive-cg": natural_gradient(1.0, pf, 1e-2, **tight),
        "predictive-dense": natural_gradient(1.0, pf, 1e-2, solver="dense"),
        "empirical-cg": natural_gradient(1.0, ef, 1e-2, **tight),
    }
    if full:
        configs["predictive-cg-max-kl"] = natural_gradient(1.0, pf, 1e-2, max_kl=0.01, **tight)
        configs["empirical-dense"] = natural_gradient(1.0, ef, 1e-2, solver="dense")
    return configs


def _max_diff(a, b) -> float:
    import jax
    import jax.numpy as jnp

    return max(
        float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _reference_updates(params, x, labels, apply, loss, loglik, full=True):
    """Single-device updates on the whole batch (the truth the parallel runs must match)."""
    import jax

    out = {}
    for name, opt in _configs(apply, loglik, None, full).items():

        @jax.jit
        def step(w, inputs, y, opt=opt):
            g = jax.grad(loss)(w, inputs, y)
            updates, _ = opt.update(g, opt.init(w), w, batch=(inputs, y))
            return updates

        out[name] = step(params, x, labels)
    return out


def _shard_map_updates(mesh, params, x, labels, apply, loss, loglik, check_vma=True, full=True):
    import jax
    from jax.sharding import PartitionSpec as P

    out = {}
    configs = _configs(apply, loglik, "data", full)
    if not check_vma and not full:
        configs = {"predictive-cg": configs["predictive-cg"]}
    for name, opt in configs.items():

        def local(w, state, inputs, y, opt=opt):
            # The gradient of the device-averaged loss, the Fisher averaged by `axis_name`.
            g = jax.grad(lambda p: jax.lax.pmean(loss(p, inputs, y), "data"))(w)
            if not check_vma:  # without the type system, the mean is taken by hand
                g = jax.lax.pmean(jax.grad(loss)(w, inputs, y), "data")
            updates, _ = opt.update(g, state, w, batch=(inputs, y))
            return updates

        fn = jax.jit(
            jax.shard_map(
                local,
                mesh=mesh,
                in_specs=(P(), P(), P("data"), P("data")),
                out_specs=P(),
                check_vma=check_vma,
            )
        )
        out[name] = fn(params, opt.init(params), x, labels)
    return out


def _pmap_updates(params, x, labels, apply, loss, loglik, devices: int):
    """The same data parallelism through ``jax.pmap`` and the Fisher's ``axis_name``."""
    import jax

    opt = _configs(apply, loglik, "data", full=False)["predictive-cg"]

    def local(w, inputs, y):
        g = jax.lax.pmean(jax.grad(loss)(w, inputs, y), "data")
        return opt.update(g, opt.init(w), w, batch=(inputs, y))[0]

    split = lambda a: a.reshape(devices, a.shape[0] // devices, *a.shape[1:])
    out = jax.pmap(local, axis_name="data", in_axes=(None, 0, 0))(params, split(x), split(labels))
    return {"predictive-cg": jax.tree.map(lambda a: a[0], out)}


def _jit_sharded_updates(params, x, labels, apply, loss, loglik, full=True):
    import jax

    out = {}
    for name, opt in _configs(apply, loglik, None, full).items():

        @jax.jit
        def step(w, state, inputs, y, opt=opt):
            g = jax.grad(loss)(w, inputs, y)
            updates, _ = opt.update(g, state, w, batch=(inputs, y))
            return updates

        out[name] = step(params, opt.init(params), x, labels)
    return out


def _missing_axis_name_message(mesh, params, x, labels, apply, loss, loglik) -> str:
    import jax
    from jax.sharding import PartitionSpec as P

    opt = _configs(apply, loglik, None)["predictive-cg"]

    def local(w, state, inputs, y):
        g = jax.grad(lambda p: jax.lax.pmean(loss(p, inputs, y), "data"))(w)
        return opt.update(g, state, w, batch=(inputs, y))[0]

    fn = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")), out_specs=P())
    try:
        jax.jit(fn)(params, opt.init(params), x, labels)
    except ValueError as error:
        return str(error)
    return ""


def _training_losses(mesh, params, x, labels, apply, loss, loglik, sharded: bool):
    """Five natural-gradient steps, on one device or inside shard_map; the loss trace."""
    import jax
    import optax
    from jax.sharding import PartitionSpec as P

    from infogeo_jax.optim import natural_gradient, predictive_fisher

    axis = "data" if sharded else None
    fisher = predictive_fisher(apply, "categorical", axis_name=axis)
    opt = natural_gradient(1.0, fisher, 1e-2, cg_rtol=1e-13, cg_atol=0.0, cg_max_steps=60)

    def step(w, state, inputs, y):
        if sharded:
            value, g = jax.value_and_grad(lambda p: jax.lax.pmean(loss(p, inputs, y), "data"))(w)
        else:
            value, g = jax.value_and_grad(loss)(w, inputs, y)
        updates, state = opt.update(g, state, w, batch=(inputs, y))
        return optax.apply_updates(w, updates), state, value

    if sharded:
        spec = (P(), P(), P("data"), P("data"))
        step = jax.shard_map(step, mesh=mesh, in_specs=spec, out_specs=(P(), P(), P()))
    step = jax.jit(step)
    state, losses = opt.init(params), []
    for _ in range(4):
        params, state, value = step(params, state, x, labels)
        losses.append(float(value))
    return losses, params


def run_devices(full: bool) -> dict:
    _setup(8)
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from infogeo_jax.families import Beta, Normal

    params, x, labels, apply, loss, loglik = _problem()
    reference = _reference_updates(params, x, labels, apply, loss, loglik, full)
    results: dict = {"devices": len(jax.devices())}
    for axis_type in ["explicit", "auto"] if full else ["explicit"]:
        kind = (
            jax.sharding.AxisType.Explicit
            if axis_type == "explicit"
            else jax.sharding.AxisType.Auto
        )
        mesh = jax.make_mesh((8,), ("data",), axis_types=(kind,))
        batch = NamedSharding(mesh, P("data"))
        replicated = NamedSharding(mesh, P())
        xs, ys = jax.device_put(x, batch), jax.device_put(labels, batch)
        ws = jax.device_put(params, replicated)
        with jax.set_mesh(mesh):
            jitted = _jit_sharded_updates(ws, xs, ys, apply, loss, loglik, full)
            mapped = _shard_map_updates(mesh, ws, xs, ys, apply, loss, loglik, full=full)
            unchecked = _shard_map_updates(mesh, ws, xs, ys, apply, loss, loglik, False, full)
            if axis_type == "explicit":
                results["missing_axis_name"] = _missing_axis_name_message(
                    mesh, ws, xs, ys, apply, loss, loglik
                )
                one, w_one = _training_losses(mesh, params, x, labels, apply, loss, loglik, False)
                par, w_par = _training_losses(mesh, ws, xs, ys, apply, loss, loglik, True)
                results["losses_single"], results["losses_shard_map"] = one, par
                results["train_params_diff"] = _max_diff(w_one, w_par)
        if axis_type == "explicit":
            pmapped = _pmap_updates(params, x, labels, apply, loss, loglik, 8)
            results["pmap"] = {k: _max_diff(v, reference[k]) for k, v in pmapped.items()}
        results[f"jit_{axis_type}"] = {k: _max_diff(v, reference[k]) for k, v in jitted.items()}
        results[f"shard_map_{axis_type}"] = {
            k: _max_diff(v, reference[k]) for k, v in mapped.items()
        }
        results[f"shard_map_unchecked_{axis_type}"] = {
            k: _max_diff(v, reference[k]) for k, v in unchecked.items()
        }
        results["scale"] = max(float(jnp.max(jnp.abs(v))) for v in jax.tree.leaves(reference))
        # Geometry vmapped over a batch of points sharded over the devices.
        alpha = jnp.exp(jnp.linspace(-1.0, 2.0, 16))
        beta_points = jnp.stack([alpha, alpha[::-1]], axis=1)  # natural coordinates (a, b)
        normal = Normal()
        normal_points = jax.vmap(normal.from_usual)(
            jnp.stack([jnp.linspace(-2.0, 2.0, 16), alpha], 1)
        )
        functions = {
            "beta_scalar_curvature": (Beta().scalar_curvature, beta_points),
            "normal_fisher": (normal.fisher_information, normal_points),
        }
        if full:
            functions["beta_christoffel"] = (
                lambda t: Beta().christoffel_symbols(t, 0.0),
                beta_points,
            )
            functions["normal_kl_to_first"] = (
                lambda t: normal.kl_divergence(t, normal_points[0]),
                normal_points,
            )
        for fname, (fn, points) in functions.items():
            mapped_fn = jax.jit(jax.vmap(fn))
            plain = mapped_fn(points)
            on_devices = mapped_fn(jax.device_put(points, batch))
            results[f"geometry_{axis_type}_{fname}"] = [
                float(jnp.max(jnp.abs(on_devices - plain))),
                float(jnp.max(jnp.abs(plain))),
            ]
    return results


def run_distributed(process_id: int, num_processes: int, port: int) -> dict:
    _setup(2)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=120,
    )
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    params, x, labels, apply, loss, loglik = _problem()
    # The single-process truth, on this process's first device (no collectives).
    local = jax.local_devices()[0]
    on_local = lambda tree: jax.device_put(tree, local)
    reference = _reference_updates(
        on_local(params), on_local(x), on_local(labels), apply, loss, loglik
    )
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    # Each process holds the rows of its devices' shards of the global batch.
    n_local = x.shape[0] // num_processes
    rows = slice(process_id * n_local, (process_id + 1) * n_local)
    xs = jax.make_array_from_process_local_data(batch, np.asarray(x[rows]), x.shape)
    ys = jax.make_array_from_process_local_data(batch, np.asarray(labels[rows]), labels.shape)
    ws = jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(replicated, np.asarray(a), a.shape),
        params,
    )
    with jax.set_mesh(mesh):
        jitted = _jit_sharded_updates(ws, xs, ys, apply, loss, loglik)
        mapped = _shard_map_updates(mesh, ws, xs, ys, apply, loss, loglik)

    def gathered(tree):  # replicated outputs: this process's copy
        return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)

    results = {
        "process": process_id,
        "devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
        "jit": {k: _max_diff(gathered(v), reference[k]) for k, v in jitted.items()},
        "shard_map": {k: _max_diff(gathered(v), reference[k]) for k, v in mapped.items()},
    }
    jax.distributed.shutdown()
    return results


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode in ("devices", "devices-full"):
        out = run_devices(full=mode == "devices-full")
    else:
        out = run_distributed(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    print("RESULT " + json.dumps(out), flush=True)
