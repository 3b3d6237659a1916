"""A short tour of infogeo_jax: the README's main demo.

Run with ``python examples/tour.py``. Every number printed is computed by the library from a
log-partition or a log-density alone; beside it stands the textbook value it must equal.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import infogeo_jax as ig  # noqa: E402
from infogeo_jax.families import Categorical, Normal  # noqa: E402


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def row(label: str, value, expected) -> None:
    print(f"{label:<34s} {float(value):+.12f}   (expected {float(expected):+.12f})")


def main() -> None:
    jnp.set_printoptions(precision=6, suppress=True)

    section("1. An exponential family from its log-partition alone")
    # The univariate normal, written only as A(theta) in natural coordinates.
    normal = ig.ExponentialFamily(
        lambda th: -(th[0] ** 2) / (4 * th[1]) - 0.5 * jnp.log(-2 * th[1])
    )
    theta = Normal().from_usual(jnp.array([1.0, 2.0]))  # N(mu=1, sigma=2)
    print("theta = (mu/s^2, -1/(2 s^2))      ", theta)
    print("Fisher = Hessian of A:\n", normal.fisher_information(theta))
    eta = normal.mean_parameters(theta)
    print("eta = grad A = (E x, E x^2)       ", eta, "  (expected [1, 5])")
    start = jnp.array([0.0, -1.0])
    print("Legendre inverse of eta (Newton)  ", normal.natural_parameters(eta, initial_theta=start))

    section("2. Curvature of the alpha-connections")
    for alpha in (0.0, 0.5, 1.0, -1.0):
        row(f"normal, alpha = {alpha:+.1f}", normal.scalar_curvature(theta, alpha), -(1 - alpha**2))
    simplex = Categorical(3)
    row(
        "categorical(3): sphere of radius 2",
        simplex.scalar_curvature(simplex.from_usual(jnp.array([0.2, 0.3, 0.5]))),
        2 * 1 / 2**2,
    )

    section("3. Divergences between N(0, 1) and N(1, 2^2)")
    p, q = Normal().from_usual(jnp.array([0.0, 1.0])), Normal().from_usual(jnp.array([1.0, 2.0]))
    kl_pq = jnp.log(2.0) + 2.0 / 8.0 - 0.5  # log(s2/s1) + (s1^2 + dmu^2) / (2 s2^2) - 1/2
    kl_qp = -jnp.log(2.0) + 5.0 / 2.0 - 0.5
    row("KL(p || q)", normal.kl_divergence(p, q), kl_pq)
    row("alpha-divergence, alpha = -1", normal.alpha_divergence(p, q, -1.0), kl_pq)
    row("alpha-divergence, alpha = +1", normal.alpha_divergence(p, q, 1.0), kl_qp)
    bc = jnp.sqrt(2 * 1 * 2 / (1 + 4)) * jnp.exp(-1 / (4 * (1 + 4)))  # Bhattacharyya coeff.
    row("Hellinger distance", normal.hellinger_distance(p, q), jnp.sqrt(1 - bc))

    section("4. Fisher-Rao geodesics")
    numerical = normal.geodesic_distance(p, q, method="numerical")
    row("distance, shooting on the ODE", numerical, Normal().geodesic_distance(p, q))
    v = normal.log_map(p, q)
    print("log_map(p, q) =", v, " exp_map back:", normal.exp_map(p, v), " q =", q)

    section("5. A model from its log-density alone: the Cauchy location-scale family")

    def cauchy(th, x):
        loc, scale = th
        return jnp.log(scale / jnp.pi) - jnp.log(scale**2 + (x - loc) ** 2)

    model = ig.StatisticalModel(cauchy, ig.Quadrature(-jnp.inf, jnp.inf, 64))
    point = jnp.array([0.5, 1.5])
    fisher = model.fisher_information(point)
    row("Fisher[0, 0] by quadrature", fisher[0, 0], 1 / (2 * 1.5**2))
    row("Fisher[0, 1]", fisher[0, 1], 0.0)
    row("scalar curvature (K = -2)", model.scalar_curvature(point), -4.0)

    section("6. Natural gradient in optax: fitting N(mu, sigma) to data")
    data = 3.0 + 0.5 * jax.random.normal(jax.random.PRNGKey(0), (1000,))
    family = Normal()

    def loss(th):
        return -jnp.mean(jax.vmap(lambda x: family.log_prob(th, x))(data))

    mle = family.maximum_likelihood(data)  # eta_hat = mean of T(x), then the Legendre inverse
    # With learning rate 1 on an exponential-family likelihood, natural gradient is Newton's
    # method in theta: quadratic convergence to the MLE from a nearby start.
    optimizer = ig.optim.natural_gradient(1.0, ig.optim.manifold_fisher(family))
    params = family.from_usual(jnp.array([2.8, 0.6]))
    state = optimizer.init(params)
    step = jax.jit(lambda g, s, p: optimizer.update(g, s, p))
    for k in range(4):
        updates, state = step(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        gap = float(loss(params) - loss(mle))
        print(f"natural-gradient step {k + 1}: NLL - NLL(MLE) = {gap:.3e}")
    # Mirror descent with A as the mirror map and learning rate 1 lands on the MLE in one step.
    mirror = ig.optim.mirror_descent(1.0, family.log_partition, in_domain=family.in_domain)
    params = family.from_usual(jnp.array([0.0, 1.0]))
    updates, _ = mirror.update(jax.grad(loss)(params), mirror.init(params), params)
    row("mirror descent, 1 step, NLL", loss(optax.apply_updates(params, updates)), loss(mle))


if __name__ == "__main__":
    main()
