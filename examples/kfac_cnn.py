"""Train a small CNN on the digits with K-FAC next to Adam; plot training loss against seconds.

K-FAC finds the network's Kronecker blocks itself (two convolutions and a dense layer, each
with its bias) from the equinox module as it is: no layer tags, no changes to the model. Both
optimizers see the same minibatches (128 images of 8x8); the figure shows the training loss on
the whole set against wall-clock seconds (compilation excluded).

Run: ``python examples/kfac_cnn.py`` (writes ``kfac_cnn.png``).
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from infogeo_jax.optim import kfac, kfac_blocks


class CNN(eqx.Module):
    """Two 3x3 convolutions (16 channels, the second with stride 2) and a dense layer."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, 16, 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(16, 16, 3, stride=2, padding=1, key=k2)
        self.head = eqx.nn.Linear(16 * 4 * 4, 10, key=k3)

    def __call__(self, x):
        h = jax.nn.relu(self.conv1(x))
        h = jax.nn.relu(self.conv2(h))
        return self.head(h.reshape(-1))


def _data():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = jnp.asarray(data.data / 16.0, float).reshape(-1, 1, 8, 8)  # the default float dtype
    return x, jnp.asarray(data.target, jnp.int32)


def _train(model, opt, x, y, num_steps, batch_size, seed=0):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    apply = lambda p, xs: jax.vmap(eqx.combine(p, static))(xs)
    loss = lambda p, xs, ys: optax.softmax_cross_entropy_with_integer_labels(
        apply(p, xs), ys
    ).mean()
    opt = optax.with_extra_args_support(opt)
    perm = jax.random.permutation(jax.random.PRNGKey(seed), x.shape[0])
    num_batches = x.shape[0] // batch_size

    @jax.jit
    def step(params, state, i):
        idx = jax.lax.dynamic_slice(perm, ((i % num_batches) * batch_size,), (batch_size,))
        xs, ys = x[idx], y[idx]
        grads = jax.grad(loss)(params, xs, ys)
        updates, state = opt.update(grads, state, params, batch=(xs, ys))
        return optax.apply_updates(params, updates), state

    full = jax.jit(lambda p: loss(p, x, y))
    state = opt.init(params)
    jax.block_until_ready(step(params, state, 0))  # compile once, outside the clock
    losses, seconds, elapsed = [float(full(params))], [0.0], 0.0
    for i in range(num_steps):
        start = time.perf_counter()
        params, state = jax.block_until_ready(step(params, state, i))
        elapsed += time.perf_counter() - start
        if (i + 1) % 5 == 0:
            losses.append(float(full(params)))
            seconds.append(elapsed)
    return np.asarray(seconds), np.asarray(losses)


def main(quick: bool = False, output: str = "kfac_cnn.png") -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _data()
    if quick:  # a subset, few steps: the test suite runs this on two shared cores
        x, y = x[:384], y[:384]
    model = CNN(jax.random.PRNGKey(0))
    batch_size = 128
    num_steps = 30 if quick else 300
    params = eqx.filter(model, eqx.is_inexact_array)
    blocks = kfac_blocks(model, params, x[:batch_size])
    for block in blocks:
        print(f"{block.path:16s} {block.kind:8s} bias={block.bias_path} {block.factor_shapes}")
    runs = {
        "Adam (lr 1e-2)": optax.adam(1e-2),
        "K-FAC (lr 1, defaults)": kfac(1.0, model, "categorical", example_inputs=x[:batch_size]),
    }
    curves = {name: _train(model, opt, x, y, num_steps, batch_size) for name, opt in runs.items()}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (secs, losses) in curves.items():
        ax.plot(secs, losses, marker="o", markersize=2, label=name)
    ax.set_xlabel("seconds (compilation excluded)")
    ax.set_ylabel("training loss (whole set)")
    ax.set_yscale("log")
    ax.set_title("CNN on 8x8 digits, minibatches of 128")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return {
        "output": output,
        "blocks": [(b.path, b.kind) for b in blocks],
        "initial_loss": {k: float(v[1][0]) for k, v in curves.items()},
        "final_loss": {k: float(v[1][-1]) for k, v in curves.items()},
        "seconds": {k: float(v[0][-1]) for k, v in curves.items()},
    }


if __name__ == "__main__":
    print(main())
