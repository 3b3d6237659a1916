"""Data parallelism: natural gradient and geometry on 8 host devices and across 2 processes.

The device count is fixed when JAX starts, so the checks run in fresh processes
(tests/parallel_worker.py, with ``--xla_force_host_platform_device_count``); each returns
maximal differences against the single-device computation on the whole batch. The truth is the
single-device update: every parallel route (``jax.jit`` on a batch sharded with
``NamedSharding``; ``jax.shard_map`` with the Fisher's ``axis_name``, with and without the
manual-axis type checks; ``jax.pmap``; a two-process run through
``jax.distributed.initialize``) must match it to rounding, float64.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("parallel_worker.py")
ROOT = WORKER.parent.parent
# Rounding of float64 reductions in another order, through a CG solve (condition ~1e2).
UPDATE_TOL = 1e-12


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    return env


def _result(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def _run_devices(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(WORKER), mode],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return _result(proc.stdout)


def _check_updates(results: dict, prefix: str) -> int:
    checked = 0
    scale = results["scale"]
    assert scale > 0.1  # the updates are not trivially zero
    for key, diffs in results.items():
        if key.startswith(prefix):
            for config, diff in diffs.items():
                assert diff <= UPDATE_TOL * max(scale, 1.0), (key, config, diff)
                checked += 1
    return checked


def _check_devices(results: dict) -> None:
    assert results["devices"] == 8
    # jit with a NamedSharding-sharded batch, and shard_map with axis_name: the same update.
    assert _check_updates(results, "jit_") >= 3
    assert _check_updates(results, "shard_map_") >= 4  # with and without check_vma
    assert _check_updates(results, "pmap") == 1
    # Inside shard_map without axis_name, the error says what to pass.
    assert "axis_name='data'" in results["missing_axis_name"]
    # A training loop inside shard_map follows the single-device one; the loss goes down.
    single, mapped = results["losses_single"], results["losses_shard_map"]
    assert single[-1] < 0.7 * single[0]
    for a, b in zip(single, mapped):
        assert abs(a - b) <= 1e-12 * abs(a)
    assert results["train_params_diff"] <= 1e-10
    # Geometry vmapped over a batch of points sharded over the devices.
    geometry = {k: v for k, v in results.items() if k.startswith("geometry_")}
    assert len(geometry) >= 2
    for key, (diff, scale) in geometry.items():
        assert diff <= 1e-13 * max(scale, 1.0), (key, diff)


def test_data_parallel_on_8_devices():
    _check_devices(_run_devices("devices"))


@pytest.mark.slow
def test_data_parallel_on_8_devices_all_configurations():
    # Auto and explicit mesh axes, max_kl, the dense empirical Fisher, more geometry.
    results = _run_devices("devices-full")
    _check_devices(results)
    assert "jit_auto" in results and "predictive-cg-max-kl" in results["shard_map_auto"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_data_parallel_two_processes():
    # Two processes with 2 CPU devices each (gloo collectives, localhost coordinator).
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "distributed", str(i), "2", str(port)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-5000:]
            outputs.append(_result(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for result in outputs:
        assert result["devices"] == 4 and result["local_devices"] == 2
        for route in ("jit", "shard_map"):
            assert len(result[route]) >= 4
            for config, diff in result[route].items():
                assert diff <= UPDATE_TOL * 10, (result["process"], route, config, diff)
