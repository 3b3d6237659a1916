"""Geodesics and alpha-geodesics of the normal family, drawn in the (mu, sigma) half-plane.

The univariate normals N(mu, sigma^2) form a hyperbolic plane under the Fisher metric
ds^2 = (dmu^2 + 2 dsigma^2) / sigma^2. Its Fisher-Rao geodesics (alpha = 0) are half-ellipses
centred on the mu-axis; the e-geodesic (alpha = +1) is a straight line in natural parameters
and the m-geodesic (alpha = -1) a straight line in expectation parameters; the other alphas
interpolate. The library computes every curve by shooting (log map) and integrating the
geodesic equation of the alpha-connection; the dashed curve is the textbook half-ellipse.

Run ``python examples/geodesics.py [--quick] [--output PATH]``; the figure is saved to
``examples/output/geodesics.png`` by default.
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

from infogeo_jax.families import Normal  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(__file__), "output", "geodesics.png")
FAMILY = Normal()


def half_ellipse(m0, s0, m1, s1, mu):
    """Closed-form Fisher-Rao geodesic through two normals: a semicircle in (mu / sqrt 2, s).

    Costa, Santos & Strapasson, *Fisher information distance*, Discrete Appl. Math. 197 (2015),
    Sec. 3 (the normal half-plane as the Poincare half-plane after mu -> mu / sqrt 2).
    """
    u0, u1, u = m0 / np.sqrt(2), m1 / np.sqrt(2), mu / np.sqrt(2)
    center = ((u1**2 + s1**2) - (u0**2 + s0**2)) / (2 * (u1 - u0))
    radius2 = (u0 - center) ** 2 + s0**2
    return np.sqrt(np.maximum(radius2 - (u - center) ** 2, 0.0))


def curve_length(path):
    """Fisher-Rao length of a discretized curve of natural parameters (midpoint rule)."""
    mid = 0.5 * (path[1:] + path[:-1])
    step = path[1:] - path[:-1]
    g = jax.vmap(FAMILY.fisher_information)(mid)
    return float(jnp.sum(jnp.sqrt(jnp.einsum("ni,nij,nj->n", step, g, step))))


def main(quick: bool = False, output: str | None = None) -> dict:
    num_times = 41 if quick else 121  # odd: t = 1/2 is a node
    alphas = (
        (-1.0, -0.5, 0.0, 0.5, 1.0)
        if quick
        else (-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0)
    )
    num_rays = 8 if quick else 16
    times = jnp.linspace(0.0, 1.0, num_times)
    start, end = FAMILY.from_usual(jnp.array([-2.0, 0.5])), FAMILY.from_usual(jnp.array([2.0, 0.5]))

    @jax.jit
    def alpha_geodesic(alpha):
        velocity = FAMILY.log_map(start, end, alpha)
        return FAMILY.geodesic(start, velocity, times, alpha), velocity

    solved = {a: alpha_geodesic(jnp.asarray(a)) for a in alphas}
    paths = {a: path for a, (path, _) in solved.items()}
    usual = {a: jax.vmap(FAMILY.to_usual)(p).T for a, p in paths.items()}  # (mu, sigma) rows

    # Check the alpha = 0 curve against the closed form and its length against the distance.
    mu0, sigma0 = (np.asarray(x) for x in usual[0.0])
    deviation = float(np.max(np.abs(sigma0 - half_ellipse(-2.0, 0.5, 2.0, 0.5, mu0))))
    # A geodesic has constant speed: its length is the Fisher norm of the initial velocity.
    velocity = solved[0.0][1]
    length = float(jnp.sqrt(velocity @ FAMILY.fisher_information(start) @ velocity))
    polyline = curve_length(paths[0.0])  # a cruder third route, O(h^2)
    distance = float(FAMILY.geodesic_distance(start, end))

    # A spray of unit-speed Fisher-Rao geodesics from N(0, 1).
    center = FAMILY.from_usual(jnp.array([0.0, 1.0]))
    g = FAMILY.fisher_information(center)
    angles = jnp.linspace(0.0, 2 * jnp.pi, num_rays, endpoint=False)
    # Unit vectors in (mu, sigma) mapped to natural coordinates by the Jacobian of from_usual.
    jac = jax.jacfwd(FAMILY.from_usual)(jnp.array([0.0, 1.0]))
    dirs = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1) @ jac.T
    dirs = dirs / jnp.sqrt(jnp.einsum("ni,ij,nj->n", dirs, g, dirs))[:, None]
    radius = 2.0
    ray_times = jnp.linspace(0.0, radius, num_times)
    rays = jax.jit(jax.vmap(lambda v: FAMILY.geodesic(center, v, ray_times, jnp.asarray(0.0))))(
        dirs
    )
    ray_usual = jnp.moveaxis(jax.vmap(jax.vmap(FAMILY.to_usual))(rays), -1, 0)

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6), gridspec_kw={"width_ratios": [1.25, 1, 0.9]})

    # (a) alpha-geodesics between two normals, over Fisher-Rao distance contours.
    ax = axes[0]
    mu_grid, sigma_grid = np.meshgrid(np.linspace(-3.2, 3.2, 160), np.linspace(0.15, 3.2, 120))
    thetas = jax.vmap(FAMILY.from_usual)(jnp.stack([mu_grid.ravel(), sigma_grid.ravel()], axis=1))
    dist = jax.vmap(lambda t: FAMILY.geodesic_distance(start, t))(thetas).reshape(mu_grid.shape)
    contour = ax.contour(
        mu_grid,
        sigma_grid,
        np.asarray(dist),
        levels=np.arange(0.5, 6.1, 0.5),
        colors="0.82",
        linewidths=0.8,
    )
    ax.clabel(contour, fmt="%.1f", fontsize=7)

    def color(a):  # blue (m, alpha = -1) to red (e, alpha = +1), black for Fisher-Rao
        if a == 0:
            return "k"
        return plt.get_cmap("coolwarm")(0.5 + 0.5 * np.sign(a) * (0.35 + 0.65 * abs(a)))

    for a in alphas:
        mu, sigma = (np.asarray(x) for x in usual[a])
        name = {1.0: " (e-geodesic)", -1.0: " (m-geodesic)", 0.0: " (Fisher-Rao)"}.get(a, "")
        ax.plot(
            mu,
            sigma,
            color=color(a),
            lw=2.4 if a in (-1, 0, 1) else 1.3,
            label=f"alpha = {a:+.2f}{name}",
        )
    mu_line = np.linspace(-2.0, 2.0, 200)
    ax.plot(
        mu_line,
        half_ellipse(-2.0, 0.5, 2.0, 0.5, mu_line),
        "--",
        color="gold",
        lw=1.2,
        label="closed-form half-ellipse",
    )
    ax.plot([-2, 2], [0.5, 0.5], "ko", ms=6)
    ax.annotate("N(-2, 0.5^2)", (-2, 0.5), (-2.9, 0.2), fontsize=9)
    ax.annotate("N(2, 0.5^2)", (2, 0.5), (1.4, 0.2), fontsize=9)
    ax.set(
        xlabel="mean mu",
        ylabel="standard deviation sigma",
        xlim=(-3.2, 3.2),
        ylim=(0, 3.2),
        title="alpha-geodesics between two normals\n(grey: Fisher-Rao distance from the left end)",
    )
    ax.legend(fontsize=7.5, loc="upper left", ncol=2)

    # (b) the spray: geodesic circles of the hyperbolic plane.
    ax = axes[1]
    for i in range(num_rays):
        ax.plot(np.asarray(ray_usual[0][i]), np.asarray(ray_usual[1][i]), color="tab:blue", lw=1)
    d_center = jax.vmap(lambda t: FAMILY.geodesic_distance(center, t))(thetas)
    circles = ax.contour(
        mu_grid,
        sigma_grid,
        np.asarray(d_center.reshape(mu_grid.shape)),
        levels=[0.5, 1.0, 1.5, 2.0],
        colors="tab:orange",
        linewidths=1.2,
    )
    ax.clabel(circles, fmt="d = %.1f", fontsize=7)
    ax.plot(0, 1, "ko")
    ax.set(
        xlabel="mean mu",
        ylabel="standard deviation sigma",
        xlim=(-3.2, 3.2),
        ylim=(0, 3.2),
        title="Fisher-Rao geodesics of length 2 from N(0, 1)\n"
        "(orange: geodesic circles of radius 0.5, 1, 1.5, 2)",
    )

    # (c) the midpoints as densities: mixing in eta spreads mass, in theta keeps sigma.
    ax = axes[2]
    x = np.linspace(-5, 5, 400)
    mid = num_times // 2
    for a, style in [(-1.0, "-"), (0.0, "-"), (1.0, "-")]:
        mu, sigma = round(float(usual[a][0][mid]), 2) + 0.0, float(usual[a][1][mid])
        pdf = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        ax.plot(
            x,
            pdf,
            style,
            color=color(a),
            lw=2,
            label=f"alpha = {a:+.0f}: N({mu:.2f}, {sigma:.2f}^2)",
        )
    for m in (-2, 2):
        ax.plot(
            x,
            np.exp(-0.5 * ((x - m) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi)),
            color="0.6",
            lw=1,
            ls=":",
        )
    ax.set(
        xlabel="x",
        ylabel="density",
        title="Midpoints (t = 1/2) of three geodesics\n(dotted: the two end points)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()

    output = output or DEFAULT_OUTPUT
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    summary = {
        "max_deviation_from_half_ellipse": deviation,
        "length": length,
        "polyline_length": polyline,
        "distance": distance,
        "output": output,
    }
    print(
        f"alpha = 0 path: max |sigma - half-ellipse| = {deviation:.2e}; length {length:.10f} "
        f"(polyline {polyline:.6f}) vs closed-form distance {distance:.10f}; figure: {output}"
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer curves and points")
    parser.add_argument("--output", help="path of the PNG (default examples/output/...)")
    args = parser.parse_args()
    main(quick=args.quick, output=args.output)
