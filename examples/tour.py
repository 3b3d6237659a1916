"""A short tour of infogeo_jax: the README's main demo.

Run with ``python examples/tour.py``. Every number printed is computed by the library, from a
log-partition or a log-density alone; the comment beside each states the textbook value.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import infogeo_jax as ig  # noqa: E402
from infogeo_jax.families import Normal  # noqa: E402


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 66 - len(title)))


def main() -> None:
    jnp.set_printoptions(precision=6, suppress=True)

    section("1. An exponential family from its log-partition alone")
    # The univariate normal, written only as A(theta) in natural coordinates.
    normal_a = ig.ExponentialFamily(lambda th: -th[0] ** 2 / (4 * th[1]) - 0.5 * jnp.log(-2 * th[1]))
    catalogue = Normal()
    theta = catalogue.from_usual(1.0, 2.0)  # N(mu=1, sigma=2)
    print("theta (natural)            :", theta)
    print("Fisher = Hessian of A      :\n", normal_a.fisher_information(theta))
    print("eta = grad A (mean, E[x^2]):", normal_a.mean_parameters(theta), " expected [1, 5]")
    eta = normal_a.mean_parameters(theta)
    print("Legendre inverse of eta    :", normal_a.natural_parameters(eta, initial_theta=jnp.array([0.0, -1.0])))

    section("2. Curvature of the alpha-connections")
    for alpha in (0.0, 0.5, 1.0, -1.0):
        r = normal_a.scalar_curvature(theta, alpha)
        print(f"scalar curvature, alpha={alpha:+.1f}: {float(r):+.10f}   expected {-(1 - alpha**2):+.1f}")

    section("3. Divergences between N(0, 1) and N(1, 2^2)")
    p, q = catalogue.from_usual(0.0, 1.0), catalogue.from_usual(1.0, 2.0)
    print(f"KL(p||q)          : {float(normal_a.kl_divergence(p, q)):.12f}   closed form {float(jnp.log(2) + 2 / 8 - 0.5):.12f}")
    for alpha in (-1.0, 0.0, 0.5, 1.0):
        print(f"alpha-div a={alpha:+.1f}: {float(normal_a.alpha_divergence(p, q, alpha)):.12f}")
    print(f"Hellinger         : {float(normal_a.hellinger_distance(p, q)):.12f}")


if __name__ == "__main__":
    main()
