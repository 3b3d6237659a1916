"""Every example runs in quick mode, saves its figure, and shows the property it illustrates."""

import importlib.util
import inspect
import os

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

EXAMPLES_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "examples")
EXAMPLES = sorted(
    f[:-3] for f in os.listdir(EXAMPLES_DIR) if f.endswith(".py") and not f.startswith("_")
)


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", os.path.join(EXAMPLES_DIR, f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_png(path):
    assert os.path.exists(path) and os.path.getsize(path) > 10_000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def check_geodesics(summary):
    # The alpha = 0 curve found by shooting is the closed-form half-ellipse, and its length
    # (speed of a geodesic) is the closed-form Fisher-Rao distance.
    assert summary["max_deviation_from_half_ellipse"] < 1e-8
    np.testing.assert_allclose(summary["length"], summary["distance"], rtol=1e-9)
    np.testing.assert_allclose(summary["polyline_length"], summary["distance"], rtol=1e-2)


def check_em_gaussian_mixture(summary):
    assert summary["min_increment"] >= -1e-10
    assert summary["final_log_likelihood"] > summary["initial_log_likelihood"]
    stairs = np.asarray(summary["elbo_staircase"])  # E, M, E, M, ...: never decreasing
    assert np.all(np.diff(stairs) >= -1e-10)


def check_trust_region_policy(summary):
    assert np.all(np.asarray(summary["reward_increments_natural"]) >= -1e-12)
    assert max(summary["exact_kl_per_step"]) <= 0.05 + 1e-12
    finals = list(summary["final_reward"].values())  # natural, vanilla same KL, plain SGD
    assert finals[0] > finals[1] > finals[2] > summary["initial_reward"]


def check_mirror_descent_portfolio(summary):
    assert summary["max_regret_over_bound"] <= 0.0
    assert summary["regret"] <= summary["bound"]


def check_natural_gradient_digits(summary):
    for name, final in summary["final_loss"].items():
        assert final < 0.5 * summary["initial_loss"][name]
    after = summary["loss_after_equal_steps"]
    natural = next(v for k, v in after.items() if k.startswith("natural"))
    assert all(natural < v for k, v in after.items() if not k.startswith("natural"))


def check_kfac_cnn(summary):
    # Both convolutions and the dense layer are found as Kronecker blocks, and both optimizers
    # train the network (the speed comparison lives in benchmarks/bench_nn).
    assert [kind for _, kind in summary["blocks"]].count("conv") == 2
    assert "diagonal" not in [kind for _, kind in summary["blocks"]]
    for name, final in summary["final_loss"].items():
        assert final < 0.8 * summary["initial_loss"][name]


CHECKS = {name[len("check_") :]: fn for name, fn in globals().items() if name.startswith("check_")}


def test_every_example_has_a_check():
    missing = [e for e in EXAMPLES if e not in CHECKS and e != "tour"]
    assert not missing, f"examples without a property check: {missing}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_in_quick_mode(name, tmp_path):
    module = _load(name)
    parameters = inspect.signature(module.main).parameters
    if "quick" not in parameters:  # the README tour: prints only
        module.main()
        return
    output = str(tmp_path / f"{name}.png")
    summary = module.main(quick=True, output=output)
    _check_png(summary["output"])
    assert summary["output"] == output
    CHECKS[name](summary)
