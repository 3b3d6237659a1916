"""The README's tour is real code: run its Python block and check what it computes."""

import pathlib
import re

import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _tour_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    tours = [b for b in blocks if "import infogeo_jax as ig" in b]
    assert len(tours) == 1, "the README should have exactly one tour block"
    return tours[0]


def test_readme_tour_runs_and_its_comments_are_true():
    namespace: dict = {}
    exec(compile(_tour_block(), str(README), "exec"), namespace)
    normal, theta = namespace["normal"], namespace["theta"]
    np.testing.assert_allclose(normal.mean_parameters(theta), [1.0, 5.0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        normal.scalar_curvature(theta, alpha=0.5), -0.75, rtol=1e-10, atol=1e-12
    )
    # KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    # (Kullback, Information Theory and Statistics, 1959): log(1/2) + 5/2 - 1/2 here.
    kl = normal.kl_divergence(theta, namespace["Normal"]().from_usual(jnp.array([0.0, 1.0])))
    np.testing.assert_allclose(kl, np.log(0.5) + 2.5 - 0.5, rtol=1e-12, atol=1e-12)
    dirichlet, a, b, v = namespace["dirichlet"], namespace["a"], namespace["b"], namespace["v"]
    np.testing.assert_allclose(dirichlet.exp_map(a, v), b, rtol=1e-8, atol=1e-8)
    model = namespace["model"]
    point = jnp.array([0.0, 1.5])
    np.testing.assert_allclose(
        model.fisher_information(point), jnp.eye(2) / (2 * 1.5**2), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(model.scalar_curvature(point), -4.0, rtol=1e-6, atol=1e-8)
    # Natural gradient with lr 1 on an exponential-family NLL is the Newton step.
    fisher = normal.fisher_information(theta)
    grad = normal.mean_parameters(theta) - jnp.array([0.5, 1.25])
    np.testing.assert_allclose(
        namespace["theta_next"], theta - jnp.linalg.solve(fisher, grad), rtol=1e-9, atol=1e-10
    )
