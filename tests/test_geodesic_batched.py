"""Batched geodesics and Fisher-Rao distance matrices.

Under ``jax.vmap`` the shooting solver advances a window of pairs by vectorized Runge-Kutta
steps, refilled from a queue as pairs converge, and finishes the last hard pairs one at a time;
each pair must follow the iterates of the unbatched call,
so batched and single results agree entry by entry (1e-10), for easy, hard and near-boundary
pairs mixed in one batch. Distances are also checked against published closed forms.
Each jitted function is built once (module-scoped fixtures) and called with fixed shapes.
"""

import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import infogeo_jax as ig
from infogeo_jax import StatisticalManifold
from infogeo_jax.families import Beta, Categorical, Dirichlet, Normal
from infogeo_jax.geometry import RESULTS

TOL = dict(rtol=1e-10, atol=1e-10)
NORMAL = Normal()


def normal_distance(m0, s0, m1, s1):
    """Costa, Santos & Strapasson, Discrete Appl. Math. 197 (2015), Eq. (7)."""
    return np.sqrt(2) * np.arccosh(1 + ((m0 - m1) ** 2 / 2 + (s0 - s1) ** 2) / (2 * s0 * s1))


def cauchy_distance(m0, s0, m1, s1):
    """Cauchy location-scale: the Poincare half-plane scaled by 1 / sqrt 2 (Mitchell 1988)."""
    return np.arccosh(1 + ((m0 - m1) ** 2 + (s0 - s1) ** 2) / (2 * s0 * s1)) / np.sqrt(2)


CAUCHY = StatisticalManifold(
    lambda th: jnp.eye(2, dtype=th.dtype) / (2 * th[1] ** 2), dim=2, in_domain=lambda th: th[1] > 0
)


def _quadratic_model():
    """A model given only by its log-density on {0, 1, 2, 3}: p(x) ~ exp(a x + b x^2)."""
    support = jnp.arange(4.0)

    def log_density(theta, x):
        logits = theta[0] * support + theta[1] * support**2
        return theta[0] * x + theta[1] * x**2 - jax.nn.logsumexp(logits)

    return ig.StatisticalModel(log_density, ig.FiniteSupport(support), dim=2)


# Each case: the space and a batch of pairs mixing easy, hard and near-boundary ones.
CASES = {
    "beta": (
        Beta(),
        [
            ((0.2, 0.3), (20.0, 10.0)),  # the hard pair of the geometry tests
            ((1.0, 1.0), (2.0, 5.0)),
            ((0.5, 3.0), (4.0, 0.7)),
            ((0.02, 5.0), (4.0, 0.03)),  # near the boundary
            ((0.01, 0.01), (1.0, 1.0)),
            ((2.0, 3.0), (2.0, 3.0)),  # coinciding points
        ],
    ),
    "dirichlet3": (
        Dirichlet(3),
        [
            ((0.5, 1.0, 4.0), (6.0, 0.7, 2.0)),  # the hard pair of the geometry tests
            ((1.0, 1.0, 1.0), (2.0, 3.0, 4.0)),
            ((0.3, 2.0, 1.0), (1.5, 0.4, 5.0)),
        ],
    ),
    "normal": (
        NORMAL,
        [
            (
                tuple(NORMAL.from_usual(jnp.array([0.0, 1.0]))),
                tuple(NORMAL.from_usual(jnp.array([3.0, 0.5]))),
            ),
            (
                tuple(NORMAL.from_usual(jnp.array([-1.0, 2.0]))),
                tuple(NORMAL.from_usual(jnp.array([4.0, 7.0]))),
            ),
            (
                tuple(NORMAL.from_usual(jnp.array([0.3, 0.02]))),
                tuple(NORMAL.from_usual(jnp.array([0.3, 0.2]))),
            ),
        ],
    ),
    "model": (_quadratic_model(), [((0.5, -0.3), (-1.0, 0.2)), ((0.0, 0.0), (2.0, -0.8))]),
    "user_metric": (
        CAUCHY,
        [((0.0, 1.0), (5.0, 0.2)), ((-2.0, 3.0), (1.0, 3.0)), ((0.0, 0.01), (1.0, 0.02))],
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    space, pairs = CASES[request.param]
    a = jnp.asarray([p for p, _ in pairs], dtype=jnp.float64)
    b = jnp.asarray([q for _, q in pairs], dtype=jnp.float64)
    # method="numerical" bypasses the closed forms: always the shooting route.
    distance = lambda x, y: space.geodesic_distance(x, y, method="numerical")  # noqa: E731
    return request.param, space, a, b, jax.jit(distance), jax.jit(jax.vmap(distance))


def test_batched_distance_equals_single_calls(case):
    name, space, a, b, single, batched = case
    together = batched(a, b)
    alone = np.array([float(single(x, y)) for x, y in zip(a, b)])
    np.testing.assert_allclose(together, alone, **TOL)
    if name == "normal":  # a second, independent route: the published closed form
        usual = [(*NORMAL.to_usual(x), *NORMAL.to_usual(y)) for x, y in zip(a, b)]
        np.testing.assert_allclose(together, [normal_distance(*u) for u in usual], **TOL)
    if name == "user_metric":
        expected = [cauchy_distance(*x, *y) for x, y in zip(np.asarray(a), np.asarray(b))]
        np.testing.assert_allclose(together, expected, **TOL)
    if name == "beta":
        np.testing.assert_array_equal(together[-1], 0.0)


@pytest.fixture(scope="module")
def beta_batch():
    _, pairs = CASES["beta"]
    a = jnp.asarray([p for p, _ in pairs[:-1]])
    b = jnp.asarray([q for _, q in pairs[:-1]])
    fam = Beta()
    return fam, a, b, jax.jit(fam.solve_log_map), jax.jit(jax.vmap(fam.solve_log_map))


def test_batched_log_map_follows_the_single_iterates(beta_batch):
    fam, a, b, single, batched = beta_batch
    together = batched(a, b)
    assert bool(jnp.all(together.result == RESULTS.successful))
    for k in range(a.shape[0]):
        alone = single(a[k], b[k])
        np.testing.assert_allclose(together.velocity[k], alone.velocity, **TOL)
        np.testing.assert_allclose(together.end_velocity[k], alone.end_velocity, **TOL)
        # The same Newton iterates: the same number of shots.
        assert int(together.num_steps[k]) == int(alone.num_steps)
    # Lanes of very different difficulty were mixed.
    assert int(jnp.max(together.num_steps)) > 2 * int(jnp.min(together.num_steps))


def test_batch_larger_than_the_window_follows_the_single_iterates(beta_batch):
    # More pairs than the vectorized window holds: pairs leave the window as they converge,
    # queued pairs take their places, and the last hard pairs finish one at a time.
    from infogeo_jax.geometry._log_map import _WINDOW

    _, pairs = CASES["beta"]
    rng = np.random.default_rng(3)
    extra = np.exp(rng.normal(0.0, 1.0, size=(_WINDOW + 4 - len(pairs), 2, 2)))
    a = jnp.asarray(np.concatenate([[p for p, _ in pairs], extra[:, 0]]))
    b = jnp.asarray(np.concatenate([[q for _, q in pairs], extra[:, 1]]))
    fam, _, _, single, _ = beta_batch
    together = jax.jit(jax.vmap(fam.solve_log_map))(a, b)
    assert bool(jnp.all(together.result == RESULTS.successful))
    for k in range(a.shape[0]):
        alone = single(a[k], b[k])
        np.testing.assert_allclose(together.velocity[k], alone.velocity, **TOL)
        assert int(together.num_steps[k]) == int(alone.num_steps)
    # A second route for one easy pair: the endpoint of the geodesic with that velocity.
    end = fam.exp_map(a[1], together.velocity[1])
    np.testing.assert_allclose(end, b[1], rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_batched_exp_geodesic_and_transport_equal_single_calls(beta_batch):
    fam, a, b, _, batched = beta_batch
    v = batched(a, b).velocity
    w = jnp.array([1.0, -0.5])
    ts = jnp.array([0.5, 1.0])
    ends = jax.jit(jax.vmap(fam.exp_map))(a, v)
    np.testing.assert_allclose(ends, b, rtol=1e-9, atol=1e-9)
    paths = jax.jit(jax.vmap(lambda x, u: fam.geodesic(x, u, ts)))(a, v)
    moved = jax.jit(jax.vmap(lambda x, u: fam.parallel_transport(x, w, u)))(a, v)
    exp_1 = jax.jit(fam.exp_map)
    path_1 = jax.jit(lambda x, u: fam.geodesic(x, u, ts))
    move_1 = jax.jit(lambda x, u: fam.parallel_transport(x, w, u))
    for k in range(a.shape[0]):
        np.testing.assert_allclose(ends[k], exp_1(a[k], v[k]), **TOL)
        np.testing.assert_allclose(paths[k], path_1(a[k], v[k]), **TOL)
        np.testing.assert_allclose(moved[k], move_1(a[k], v[k]), **TOL)
        # Levi-Civita transport is an isometry.
        np.testing.assert_allclose(fam.norm(b[k], moved[k]), fam.norm(a[k], w), rtol=1e-9)


def test_geodesic_at_intermediate_times_is_a_step_end_batched_or_not():
    # Points inside [0, 1] are step ends of the ODE solve, not values of its dense output
    # (about 1e-9 off at rtol 1e-12 for these pairs), so that they are as accurate as the end
    # point and a batched call returns what the single calls do.
    import diffrax

    from infogeo_jax.geometry import GeodesicSolver

    fam = Beta()
    a = jnp.array([[4.2974451, 7.10116118], [0.68552967, 0.33583137], [1.0, 1.0]])
    b = jnp.array([[1.84631005, 0.85882255], [1.14537344, 10.07808724], [2.0, 5.0]])
    ts = jnp.array([0.25, 0.5, 1.0])
    v = jax.jit(jax.vmap(fam.log_map))(a, b)
    together = jax.jit(jax.vmap(lambda x, u: fam.geodesic(x, u, ts)))(a, v)
    single = jax.jit(lambda x, u: fam.geodesic(x, u, ts))
    # Second route: a Tsit5 solve at tolerance 1e-14.
    tight = GeodesicSolver(ode_solver=diffrax.Tsit5(), rtol=1e-14, atol=1e-14, max_steps=100000)
    for k in range(a.shape[0]):
        alone = single(a[k], v[k])
        np.testing.assert_allclose(together[k], alone, **TOL)
        reference = fam.geodesic(a[k], v[k], ts, solver=tight)
        np.testing.assert_allclose(alone, reference, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(together[:, -1], b, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------- distance matrices
def test_pairwise_matrix_is_symmetric_with_zero_diagonal_and_matches_single_calls(case):
    name, space, a, b, single, _ = case
    if name != "beta":
        pytest.skip("one numerical family suffices here (the solver is shared)")
    points = jnp.concatenate([a[:3], b[:3]])
    matrix, results = ig.pairwise_distances(space, points, return_results=True)
    assert matrix.shape == (6, 6)
    np.testing.assert_array_equal(matrix, matrix.T)
    np.testing.assert_array_equal(jnp.diagonal(matrix), 0.0)
    assert bool(jnp.all(results == RESULTS.successful))
    for i in range(6):
        for j in range(i + 1, 6):
            np.testing.assert_allclose(matrix[i, j], single(points[i], points[j]), **TOL)
    # Two batches: the rows of the square matrix.
    rect = ig.pairwise_distances(space, points[:2], points)
    np.testing.assert_allclose(rect, matrix[:2], **TOL)


def test_pairwise_closed_forms():
    usual = np.array([[0.0, 1.0], [3.0, 0.5], [-1.0, 2.0], [4.0, 7.0]])
    points = jnp.stack([NORMAL.from_usual(jnp.array([m, s])) for m, s in usual])
    matrix = ig.pairwise_distances(NORMAL, points)
    expected = np.array(
        [
            [normal_distance(*p, *q) if i != j else 0.0 for j, q in enumerate(usual)]
            for i, p in enumerate(usual)
        ]
    )
    np.testing.assert_allclose(matrix, expected, **TOL)
    # Rao (1945): the simplex is a sphere of radius 2.
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.01, 0.01, 0.98]])
    cat = Categorical(3)
    theta = jnp.stack([cat.from_usual(p) for p in probs])
    rect = ig.pairwise_distances(cat, theta[:1], theta)
    expected = 2 * np.arccos(np.clip(np.sqrt(probs[:1] * probs).sum(-1), -1, 1))
    np.testing.assert_allclose(rect[0], expected, rtol=1e-10, atol=1e-7)  # arccos near 1
    np.testing.assert_allclose(
        rect[0], jax.vmap(cat.geodesic_distance, (None, 0))(theta[0], theta), **TOL
    )


def test_pairwise_result_codes_and_errors():
    # A flat plane with a hole: the geodesic to (0, 3) would cross the hole.
    holed = StatisticalManifold(
        lambda th: jnp.eye(2, dtype=th.dtype),
        dim=2,
        in_domain=lambda th: jnp.sum((th - jnp.array([0.0, 2.0])) ** 2) > 0.25,
    )
    start = jnp.array([[0.0, 1.0]])
    targets = jnp.array([[0.0, 3.0], [2.0, 1.0]])
    matrix, results = ig.pairwise_distances(holed, start, targets, throw=False, return_results=True)
    entry = lambda i, j: jax.tree_util.tree_map(lambda v: v[i, j], results)  # noqa: E731
    assert bool(entry(0, 0) == RESULTS.continuation_failed)
    assert bool(entry(0, 1) == RESULTS.successful)
    np.testing.assert_allclose(matrix[0, 1], 2.0, **TOL)
    with pytest.raises(eqx.EquinoxRuntimeError, match="continuation step"):
        jax.block_until_ready(ig.pairwise_distances(holed, start, targets))
    with pytest.raises(ValueError, match="2-D array of points"):
        ig.pairwise_distances(holed, jnp.ones(2))
    with pytest.raises(ValueError, match="points of length 2"):
        ig.pairwise_distances(holed, start, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="statistical manifold"):
        ig.pairwise_distances(lambda x: x, start)  # type: ignore[arg-type]


_SHARDED = """
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
import infogeo_jax as ig
from infogeo_jax.families import Beta, Poisson
assert len(jax.devices()) == 2
rates = jnp.array([1.0, 4.0, 9.0, 16.0, 25.0])
d = ig.pairwise_distances(Poisson(), jnp.log(rates)[:, None])
ref = 2 * np.abs(np.sqrt(rates)[:, None] - np.sqrt(rates)[None])
np.testing.assert_allclose(d, ref, rtol=1e-12, atol=1e-12)
pts = jnp.array([[0.2, 0.3], [20.0, 10.0], [1.0, 1.0]])
d = ig.pairwise_distances(Beta(), pts)
single = jax.jit(Beta().geodesic_distance)
for i in range(3):
    for j in range(3):
        expected = 0.0 if i == j else float(single(pts[i], pts[j]))
        np.testing.assert_allclose(d[i, j], expected, rtol=1e-10, atol=1e-10)
print("ok")
"""


@pytest.mark.slow
def test_pairwise_sharded_over_two_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


_CACHED = """
import os, sys
import jax
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import jax.numpy as jnp
import infogeo_jax as ig
from infogeo_jax.families import Beta, Dirichlet
a, b = jnp.array([0.2, 0.3]), jnp.array([20.0, 10.0])
print(float(Beta().geodesic_distance(a, b)), float(Beta().log_map(a, b)[0]))
points = jnp.array([[0.5, 1.0, 4.0], [6.0, 0.7, 2.0]])
print(float(ig.pairwise_distances(Dirichlet(3), points)[0, 1]))
print(" ".join(sorted(name.split("-")[0] for name in os.listdir(sys.argv[1]))))
"""


def test_eager_solves_are_kept_by_the_persistent_compilation_cache(tmp_path):
    # JAX's persistent cache does not store programs with host callbacks, so the eager calls
    # check convergence and the points' domain outside their jitted solves. A second process
    # then loads the solves instead of compiling them, with the same results.
    def run():
        out = subprocess.run(
            [sys.executable, "-c", _CACHED, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.split("\n")

    first = run()
    for name in ("jit__distance_and_result", "jit_solve_log_map", "jit__pairwise_impl"):
        assert name in first[2].split(), first[2]
    second = run()
    assert second[:2] == first[:2]
    np.testing.assert_allclose(float(first[0].split()[0]), 3.4481561380570587, rtol=1e-10)


# ------------------------------------------------------------------------- scale robustness
normal_solve = jax.jit(lambda a, b: NORMAL.solve_log_map(a, b))


def test_log_map_tolerance_is_relative_to_each_coordinate():
    # N(0, 1e-3^2) to N(0, 1e3^2): natural coordinates from -5e5 to -5e-7. The geodesic keeps
    # the mean at 0 and log sigma(t) = log sigma_0 + t log(1e6), so theta_2(t) =
    # theta_2(0) exp(-2 c t) with c = log(1e6): v = -2 c theta_0, end velocity -2 c theta_1.
    a, b = NORMAL.from_usual(jnp.array([0.0, 1e-3])), NORMAL.from_usual(jnp.array([0.0, 1e3]))
    sol = normal_solve(a, b)
    assert sol.result == RESULTS.successful
    c = np.log(1e6)
    np.testing.assert_allclose(sol.velocity[1], -2 * c * a[1], rtol=1e-10, atol=0)
    np.testing.assert_allclose(sol.end_velocity[1], -2 * c * b[1], rtol=1e-10, atol=0)
    np.testing.assert_allclose(
        NORMAL.norm(a, sol.velocity), normal_distance(0.0, 1e-3, 0.0, 1e3), rtol=1e-11, atol=0
    )


@pytest.mark.slow
def test_log_map_blames_an_ill_conditioned_chart():
    # At mean 1e4 the normal's metric in natural coordinates has condition number ~1e17
    # (~1e9 after equilibration): the geodesic equation cannot be solved to 1e-11 there. The
    # failure must name that cause, not "far apart or near the boundary".
    a, b = NORMAL.from_usual(jnp.array([1e4, 1.0])), NORMAL.from_usual(jnp.array([1e4 + 1.0, 1.0]))
    sol = normal_solve(a, b)
    assert sol.result == RESULTS.ill_conditioned_metric
    with pytest.raises(Exception, match="ill-conditioned"):
        jax.block_until_ready(jax.jit(NORMAL.log_map)(a, b))
    # Where the chart is fine (mean 100) the same kind of pair converges to the closed form.
    a, b = NORMAL.from_usual(jnp.array([100.0, 1.0])), NORMAL.from_usual(jnp.array([101.0, 2.0]))
    sol = normal_solve(a, b)
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(
        NORMAL.norm(a, sol.velocity), normal_distance(100.0, 1.0, 101.0, 2.0), **TOL
    )
