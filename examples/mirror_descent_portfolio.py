"""Online portfolio selection by exponentiated gradient (mirror descent on the simplex).

Each day the investor splits its wealth over n assets by weights w on the simplex, then the
market reveals the price relatives x_t (tomorrow's price / today's) and the wealth is multiplied
by w . x_t. Exponentiated gradient (mirror descent with the negative entropy) on the loss
-log(w . x_t) rebalances multiplicatively, w <- w exp(eta x_t / w . x_t) / Z, and its regret
against the best constant-rebalanced portfolio chosen in hindsight is at most
log(n) / eta + (eta / 2) sum_t ||g_t||_inf^2 (the mirror-descent bound for the entropy, which is
1-strongly convex in the l1 norm). The market here is synthetic: cash, two trending stocks and
Cover's volatile stock that doubles or halves every day (worthless to hold, lucrative to
rebalance against). Euclidean online gradient descent with projection onto the simplex is drawn
for comparison.

Run ``python examples/mirror_descent_portfolio.py [--quick] [--output PATH]``; the figure is
saved to ``examples/output/mirror_descent_portfolio.png`` by default.

References:
    Helmbold, Schapire, Singer & Warmuth, *On-line portfolio selection using multiplicative
    updates*, Mathematical Finance 8 (1998); Cover, *Universal portfolios*, Math. Finance 1
    (1991); Shalev-Shwartz, *Online learning and online convex optimization*, Foundations and
    Trends in ML 4 (2012), Theorem 2.15 and Example 2.5.
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
import scipy.optimize  # noqa: E402

from infogeo_jax.optim import exponentiated_gradient  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "output", "mirror_descent_portfolio.png")
ASSETS = ["cash", "steady stock", "noisy stock", "volatile stock (x2 or x1/2)"]


def make_market(key, num_days):
    k1, k2, k3 = jax.random.split(key, 3)
    steady = jnp.exp(0.0004 + 0.01 * jax.random.normal(k1, (num_days,)))
    noisy = jnp.exp(0.0002 + 0.03 * jax.random.normal(k2, (num_days,)))
    volatile = jnp.where(jax.random.bernoulli(k3, 0.5, (num_days,)), 2.0, 0.5)
    return jnp.stack([jnp.ones(num_days), steady, noisy, volatile], axis=1)


def loss(w, x):
    return -jnp.log(w @ x)


def project_simplex(v):
    """Euclidean projection onto the probability simplex (Duchi et al., ICML 2008, Fig. 1)."""
    u = jnp.sort(v)[::-1]
    css = jnp.cumsum(u)
    k = jnp.arange(1, v.shape[0] + 1)
    rho = jnp.max(jnp.where(u - (css - 1) / k > 0, k, 0))
    tau = (css[rho - 1] - 1) / rho
    return jnp.maximum(v - tau, 0.0)


def online(update, w0, market):
    """Play the market day by day: returns the weights used each day and the gradient norms."""

    def step(w, x):
        g = jax.grad(loss)(w, x)
        return update(w, g), (w, jnp.max(jnp.abs(g)))

    _, (weights, grad_norms) = jax.lax.scan(step, w0, market)
    return weights, grad_norms


def best_crp(market):
    """The best constant-rebalanced portfolio in hindsight: maximize sum_t log(w . x_t)."""
    x = np.asarray(market)
    n = x.shape[1]
    result = scipy.optimize.minimize(
        lambda w: -np.sum(np.log(x @ w)),
        np.full(n, 1.0 / n),
        jac=lambda w: -(x / (x @ w)[:, None]).sum(0),
        bounds=[(0.0, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return np.clip(result.x, 0, None) / np.clip(result.x, 0, None).sum()


def main(quick: bool = False, output: str | None = None) -> dict:
    num_days = 250 if quick else 1000
    market = make_market(jax.random.key(0), num_days)
    n = market.shape[1]
    w0 = jnp.full(n, 1.0 / n)
    # ||g_t||_inf = max_i x_ti / (w . x_t) <= max_i x_ti / min_i x_ti (known range of the market).
    g_max = float(jnp.max(jnp.max(market, 1) / jnp.min(market, 1)))
    eta = float(np.sqrt(2 * np.log(n) / (num_days * g_max**2)))  # minimizes the bound

    eg = exponentiated_gradient(eta)

    def eg_update(w, g):
        updates, _ = eg.update(g, eg.init(w), w)
        return optax.apply_updates(w, updates)

    eg_weights, eg_grads = jax.jit(lambda m: online(eg_update, w0, m))(market)
    ogd_rate = float(np.sqrt(2.0) / (g_max * np.sqrt(num_days)))  # sqrt(2) = simplex diameter
    ogd_weights, _ = jax.jit(
        lambda m: online(lambda w, g: project_simplex(w - ogd_rate * g), w0, m)
    )(market)

    def log_wealth(weights):
        return np.cumsum(np.log(np.einsum("ti,ti->t", np.asarray(weights), np.asarray(market))))

    crp = best_crp(market)
    curves = {
        "exponentiated gradient (mirror descent)": log_wealth(eg_weights),
        "online gradient descent + projection": log_wealth(ogd_weights),
        "best constant rebalancing in hindsight": log_wealth(np.tile(crp, (num_days, 1))),
        "uniform constant rebalancing": log_wealth(np.tile(np.asarray(w0), (num_days, 1))),
    }
    for i, name in enumerate(ASSETS):
        curves[f"hold only: {name}"] = np.cumsum(np.log(np.asarray(market[:, i])))
    regret = (
        curves["best constant rebalancing in hindsight"]
        - curves["exponentiated gradient (mirror descent)"]
    )
    bound = np.log(n) / eta + 0.5 * eta * np.cumsum(np.asarray(eg_grads) ** 2)
    assert np.all(np.abs(np.asarray(eg_weights).sum(1) - 1) < 1e-12)
    assert np.all(np.asarray(eg_weights) >= 0)

    fig, axes = plt.subplots(1, 3, figsize=(18, 5.6))
    ax = axes[0]
    days = np.arange(1, num_days + 1)
    styles = {
        "exponentiated gradient (mirror descent)": dict(color="tab:red", lw=2.2),
        "online gradient descent + projection": dict(color="tab:blue", lw=1.6),
        "best constant rebalancing in hindsight": dict(color="k", lw=1.6, ls="--"),
        "uniform constant rebalancing": dict(color="tab:green", lw=1.2),
    }
    asset_colors = plt.get_cmap("tab10")(np.arange(n))
    for name, curve in curves.items():
        if name.startswith("hold only"):
            i = ASSETS.index(name.removeprefix("hold only: "))
            style = dict(color=asset_colors[i], lw=0.9, ls=":", alpha=0.9)
        else:
            style = styles[name]
        ax.plot(days, curve, label=name, **style)
    ax.set(xlabel="day", ylabel="log wealth", title="Wealth (log scale): rebalancing beats holding")
    ax.legend(fontsize=7.5, loc="upper left")

    ax = axes[1]
    ax.stackplot(days, np.asarray(eg_weights).T, labels=ASSETS, alpha=0.85, colors=asset_colors)
    # The best constant portfolio in hindsight, as a stacked bar to the right of the last day.
    bar_x, bar_w = num_days * 1.04, num_days * 0.05
    ax.bar(
        bar_x,
        crp,
        bottom=np.concatenate([[0.0], np.cumsum(crp)[:-1]]),
        width=bar_w,
        color=asset_colors,
        edgecolor="k",
        alpha=0.85,
    )
    ax.annotate(
        "best constant\nportfolio",
        (bar_x, 1.0),
        xytext=(-4, 4),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.set(
        xlabel="day",
        ylabel="portfolio weights",
        ylim=(0, 1.27),
        xlim=(1, num_days * 1.08),
        title=f"Exponentiated-gradient weights, eta = {eta:.3f}\n"
        "(drifting towards the best constant portfolio)",
    )
    ax.legend(fontsize=7.5, loc="upper left", ncol=2)

    ax = axes[2]
    ax.plot(days, regret, color="tab:red", lw=2, label="regret vs best constant rebalancing")
    ax.plot(days, bound, color="k", ls="--", label="bound log(n)/eta + (eta/2) sum ||g_t||_inf^2")
    ax.plot(
        days,
        curves["best constant rebalancing in hindsight"]
        - curves["online gradient descent + projection"],
        color="tab:blue",
        lw=1.2,
        label="regret of online gradient descent",
    )
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set(
        xlabel="day",
        ylabel="log-wealth regret (symmetric log scale)",
        title="Regret stays below the mirror-descent bound",
        ylim=(None, 1e3),
    )
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()

    output = output or DEFAULT_OUTPUT
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    summary = {
        "final_log_wealth": {k: float(v[-1]) for k, v in curves.items()},
        "regret": float(regret[-1]),
        "bound": float(bound[-1]),
        "max_regret_over_bound": float(np.max(regret - bound)),
        "output": output,
    }
    print(
        f"after {num_days} days: log wealth EG {curves[next(iter(curves))][-1]:.3f}, best CRP "
        f"{curves['best constant rebalancing in hindsight'][-1]:.3f}, uniform CRP "
        f"{curves['uniform constant rebalancing'][-1]:.3f}; regret {regret[-1]:.3f} <= bound "
        f"{bound[-1]:.3f}; figure: {output}"
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer days")
    parser.add_argument("--output", help="path of the PNG (default examples/output/...)")
    args = parser.parse_args()
    main(quick=args.quick, output=args.output)
