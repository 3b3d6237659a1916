"""Natural gradient vs Adam vs SGD on the digits data (a small neural network).

A one-hidden-layer tanh network classifies scikit-learn's 8x8 digits. All three optimizers
minimize the same full-batch cross-entropy. The natural gradient preconditions each step by the
network's Fisher information (the predictive Fisher of the categorical output, applied
matrix-free by conjugate gradient), so one step costs more than an Adam step: the figure shows
the loss both against steps and against wall-clock seconds (compile time excluded).

Run ``python examples/natural_gradient_digits.py [--quick] [--output PATH]``; the figure is
saved to ``examples/output/natural_gradient_digits.png`` by default.
"""

from __future__ import annotations

import argparse
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from infogeo_jax.optim import natural_gradient, predictive_fisher  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "output", "natural_gradient_digits.png")
HIDDEN = 32


def load(quick):
    digits = load_digits()
    x = digits.data / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-3)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    n_train = 600 if quick else 1400
    return (jnp.asarray(x[:n_train]), jnp.asarray(y[:n_train])), (
        jnp.asarray(x[n_train:]),
        jnp.asarray(y[n_train:]),
    )


def init_params(key, num_features):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (num_features, HIDDEN)) / np.sqrt(num_features),
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, 10)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(10),
    }


def apply(params, x):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def loss(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(apply(params, x), y).mean()


def accuracy(params, batch):
    x, y = batch
    return float(jnp.mean(jnp.argmax(apply(params, x), axis=1) == y))


def train(opt, params, batch, num_steps):
    """Full-batch training; returns the loss trace and the cumulative seconds per step."""

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, state = opt.update(grads, state, params, batch=batch)
        return optax.apply_updates(params, updates), state, value

    state = opt.init(params)
    jax.block_until_ready(step(params, state))  # compile outside the clock
    losses, seconds, elapsed = [], [], 0.0
    for _ in range(num_steps):
        start = time.perf_counter()
        params, state, value = jax.block_until_ready(step(params, state))
        elapsed += time.perf_counter() - start
        losses.append(float(value))
        seconds.append(elapsed)
    losses.append(float(loss(params, batch)))
    seconds.append(elapsed)
    return params, np.asarray(losses), np.asarray(seconds)


def main(quick: bool = False, output: str | None = None) -> dict:
    num_steps = 30 if quick else 200
    train_batch, test_batch = load(quick)
    params0 = init_params(jax.random.key(0), train_batch[0].shape[1])
    fisher = predictive_fisher(apply, "categorical")
    optimizers = {
        "natural gradient (CG, 10 steps)": natural_gradient(
            0.5, fisher, damping=1e-2, cg_max_steps=10
        ),
        "Adam (lr 1e-2)": optax.adam(1e-2),
        "SGD (lr 0.5)": optax.sgd(0.5),
    }
    # The first-order methods take cheaper steps: give them ten times as many, so that the
    # per-second panel compares them at (at least) the natural gradient's wall-clock budget.
    steps = {
        name: num_steps if name.startswith("natural") else 10 * num_steps for name in optimizers
    }
    results = {
        name: train(opt, params0, train_batch, steps[name]) for name, opt in optimizers.items()
    }

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    colors = ["tab:red", "tab:blue", "0.35"]
    for (name, (params, losses, seconds)), c in zip(results.items(), colors):
        axes[0].semilogy(
            np.arange(num_steps + 1), losses[: num_steps + 1], color=c, lw=2, label=name
        )
        label = f"{name}: {steps[name]} steps, test accuracy {accuracy(params, test_batch):.3f}"
        axes[1].semilogy(np.concatenate([[0.0], seconds[:-1]]), losses, color=c, lw=2, label=label)
    num_params = sum(p.size for p in jax.tree.leaves(params0))
    axes[0].set(
        xlabel="step",
        ylabel="training cross-entropy (full batch)",
        title=f"Loss per step ({num_params} parameters, {len(train_batch[1])} images)",
    )
    axes[1].set(
        xlabel="wall-clock seconds (compile excluded)",
        ylabel="training cross-entropy (full batch)",
        title="Loss per second (first-order methods run 10x more steps)",
        xlim=(0, 1.05 * results[next(iter(results))][2][-1]),
    )
    axes[0].legend()
    axes[1].legend()
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()

    output = output or DEFAULT_OUTPUT
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    summary = {
        "initial_loss": {n: float(r[1][0]) for n, r in results.items()},
        "final_loss": {n: float(r[1][-1]) for n, r in results.items()},
        "loss_after_equal_steps": {n: float(r[1][num_steps]) for n, r in results.items()},
        "seconds": {n: float(r[2][-1]) for n, r in results.items()},
        "test_accuracy": {n: accuracy(r[0], test_batch) for n, r in results.items()},
        "output": output,
    }
    for n in results:
        print(
            f"{n:34s} loss {summary['initial_loss'][n]:.4f} -> {summary['final_loss'][n]:.2e} "
            f"in {steps[n]} steps, {summary['seconds'][n]:.2f} s, test accuracy "
            f"{summary['test_accuracy'][n]:.3f}"
        )
    print(f"figure: {output}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer images and steps")
    parser.add_argument("--output", help="path of the PNG (default examples/output/...)")
    args = parser.parse_args()
    main(quick=args.quick, output=args.output)
