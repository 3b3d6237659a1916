"""A KL trust-region (natural) policy step on a three-armed bandit.

A softmax policy over three arms is a member of the categorical family, its logits the natural
parameters. Maximizing the expected reward J(pi) = sum_i pi_i r_i within a KL ball
KL(pi_old || pi) <= delta gives, to second order, the natural-gradient step rescaled to the
ball's boundary (TRPO): ``natural_gradient(..., max_kl=delta)`` with the Fisher metric of the
categorical family, followed by TRPO's backtracking on the exact KL. Started from a policy that
almost always pulls the worst arm, the plain gradient step (whose size vanishes near the corner
of the simplex) crawls; given the same KL budget per step the vanilla direction moves, but
detours towards the middle arm, while the natural direction heads for the best arm.

Run ``python examples/trust_region_policy.py [--quick] [--output PATH]``; the figure is saved to
``examples/output/trust_region_policy.png`` by default.
"""

from __future__ import annotations

import argparse
import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from infogeo_jax.families import Categorical  # noqa: E402
from infogeo_jax.optim import manifold_fisher, natural_gradient  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "output", "trust_region_policy.png")
POLICY = Categorical(3)
REWARDS = jnp.array([1.0, 0.6, 0.1])  # arm 0 is best, arm 2 worst
START = POLICY.from_usual(jnp.array([0.01, 0.02, 0.97]))
DELTA = 0.05  # KL radius of the trust region


def objective(theta):
    """Negative expected reward (optax minimizes)."""
    return -POLICY.probabilities(theta) @ REWARDS


def to_plane(p):
    """Barycentric coordinates on the simplex to the plane of an equilateral triangle."""
    p = np.asarray(p)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    return p @ corners


@jax.jit
def backtrack(theta, step):
    """TRPO's line search: halve the step until the exact KL(pi_old || pi_new) <= delta."""

    def too_far(carry):
        step, count = carry
        return (POLICY.kl_divergence(theta, theta + step) > DELTA) & (count < 30)

    step, _ = jax.lax.while_loop(too_far, lambda c: (0.5 * c[0], c[1] + 1), (step, 0))
    return theta + step


def run_optimizer(opt, num_steps, line_search):
    @jax.jit
    def step(theta, state):
        updates, state = opt.update(jax.grad(objective)(theta), state, theta)
        new = backtrack(theta, updates) if line_search else optax.apply_updates(theta, updates)
        return new, state

    theta = START
    state = opt.init(theta)
    path = [theta]
    for _ in range(num_steps):
        theta, state = step(theta, state)
        path.append(theta)
    return jnp.stack(path)


def euclidean_same_kl(num_steps):
    """The vanilla gradient direction, scaled to the same quadratic KL delta, same line search."""

    @jax.jit
    def step(theta):
        d = -jax.grad(objective)(theta)
        quad = 0.5 * d @ POLICY.fisher_information(theta) @ d
        # At a corner the gradient vanishes (quad = 0): stay there.
        scale = jnp.where(quad > 1e-30, jnp.sqrt(DELTA / jnp.maximum(quad, 1e-30)), 0.0)
        return backtrack(theta, scale * d)

    theta, path = START, [START]
    for _ in range(num_steps):
        theta = step(theta)
        path.append(theta)
    return jnp.stack(path)


def main(quick: bool = False, output: str | None = None) -> dict:
    num_steps = 12 if quick else 30
    trpo = natural_gradient(
        1.0, manifold_fisher(POLICY), damping=1e-10, solver="dense", max_kl=DELTA
    )
    paths = {
        f"natural gradient, KL <= {DELTA} per step (TRPO)": run_optimizer(trpo, num_steps, True),
        f"vanilla gradient, KL <= {DELTA} per step": euclidean_same_kl(num_steps),
        "vanilla gradient, learning rate 1": run_optimizer(optax.sgd(1.0), num_steps, False),
    }
    colors = ["tab:red", "tab:blue", "0.4"]
    rewards = {k: np.asarray(-jax.vmap(objective)(p)) for k, p in paths.items()}
    ng = paths[next(iter(paths))]
    exact_kl = np.asarray(jax.vmap(POLICY.kl_divergence)(ng[:-1], ng[1:]))

    fig, axes = plt.subplots(1, 2, figsize=(14, 6.2), gridspec_kw={"width_ratios": [1.15, 1]})
    ax = axes[0]
    # Grid over the simplex for the reward (linear: straight contours) and the KL ball.
    u = np.linspace(1e-3, 1 - 1e-3, 220)
    p0, p1 = np.meshgrid(u, u)
    inside = p0 + p1 < 1 - 1e-3
    grid = np.stack([p0, p1, 1 - p0 - p1], axis=-1)
    xy = to_plane(grid.reshape(-1, 3)).reshape(p0.shape + (2,))
    reward = np.where(inside, grid @ np.asarray(REWARDS), np.nan)
    filled = ax.contourf(xy[..., 0], xy[..., 1], reward, levels=20, cmap="Greens", alpha=0.55)
    fig.colorbar(filled, ax=ax, shrink=0.8, label="expected reward J(pi)")
    start_p = np.asarray(POLICY.probabilities(START))
    safe = np.clip(grid, 1e-12, None)
    theta_grid = np.log(safe[..., :2]) - np.log(safe[..., 2:])
    flat_theta = jnp.asarray(theta_grid.reshape(-1, 2))
    for j, i in enumerate(sorted({0, num_steps // 6, num_steps // 3})):
        center = ng[i]
        kl = np.asarray(jax.vmap(lambda t, c=center: POLICY.kl_divergence(c, t))(flat_theta))
        ax.contour(
            xy[..., 0],
            xy[..., 1],
            np.where(inside, kl.reshape(p0.shape), np.nan),
            levels=[DELTA],
            colors="tab:purple",
            linewidths=1.5,
            linestyles="--",
        )
    ax.plot(
        [],
        [],
        "--",
        color="tab:purple",
        label=f"trust regions KL(pi_t || pi) = {DELTA} (round in Fisher geometry)",
    )
    for (name, path), c in zip(paths.items(), colors):
        pts = to_plane(jax.vmap(POLICY.probabilities)(path))
        ax.plot(pts[:, 0], pts[:, 1], "o-", color=c, ms=3.5, lw=1.5, label=name)
    ax.plot(*to_plane(start_p), "k*", ms=14, label="start pi_0")
    corners = to_plane(np.eye(3))
    ax.plot(*np.vstack([corners, corners[:1]]).T, "k-", lw=1)
    for i, (x, y) in enumerate(corners):
        ax.annotate(
            f"arm {i}\nr = {float(REWARDS[i]):.1f}",
            (x, y),
            ha="center",
            fontsize=9,
            xytext=(0, -28 if y == 0 else 8),
            textcoords="offset points",
        )
    ax.set(
        aspect="equal",
        xlim=(-0.1, 1.1),
        ylim=(-0.42, 0.98),
        title="Policies on the probability simplex",
    )
    ax.axis("off")
    ax.legend(loc="lower center", fontsize=8.5, ncol=1, bbox_to_anchor=(0.5, -0.02))

    ax = axes[1]
    for (name, r), c in zip(rewards.items(), colors):
        ax.plot(np.arange(len(r)), r, "o-", color=c, ms=3.5, label=name)
    ax.axhline(float(REWARDS.max()), color="k", lw=0.8, ls=":", label="best arm")
    ax.set(
        xlabel="policy update",
        ylabel="expected reward J(pi)",
        title="Expected reward per update\n(exact KL of every natural step <= "
        f"{exact_kl.max():.4f}; radius {DELTA})",
    )
    ax.legend(loc="center right", fontsize=8.5)
    fig.tight_layout()

    output = output or DEFAULT_OUTPUT
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    names = list(rewards)
    summary = {
        "initial_reward": float(rewards[names[0]][0]),
        "final_reward": {n: float(r[-1]) for n, r in rewards.items()},
        "reward_increments_natural": np.diff(rewards[names[0]]).tolist(),
        "exact_kl_per_step": exact_kl.tolist(),
        "output": output,
    }
    print(
        f"J: start {summary['initial_reward']:.3f}; after {num_steps} updates: "
        + ", ".join(f"{n}: {r[-1]:.3f}" for n, r in rewards.items())
        + f"; exact KL per natural step at most {exact_kl.max():.4f} "
        f"(radius {DELTA}); figure: {output}"
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer updates")
    parser.add_argument("--output", help="path of the PNG (default examples/output/...)")
    args = parser.parse_args()
    main(quick=args.quick, output=args.output)
