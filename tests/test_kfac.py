"""K-FAC: blocks found by tracing, exactness where K-FAC is exact, the optax contract."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from infogeo_jax.optim import kfac, kfac_blocks, predictive_fisher, scale_by_kfac
from infogeo_jax.optim._kfac import _statistics, kfac_matvec
from infogeo_jax.optim._kfac_blocks import (
    block_matrix,
    build_plan,
    input_rows,
    output_rows,
    perturbed_apply,
    zero_perturbations,
)

KEY = jax.random.PRNGKey(0)


def _summary(blocks):
    return [(b.path, b.kind, b.bias_path, b.factor_shapes, b.uses) for b in blocks]


def _eqx_apply(model):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return params, lambda p, x: jax.vmap(eqx.combine(p, static))(x)


# ---------------------------------------------------------------------------------------------
# Block detection: exactly the expected blocks.


def test_blocks_equinox_mlp():
    model = eqx.nn.MLP(4, 3, 5, 2, activation=jnp.tanh, key=KEY)
    params, apply = _eqx_apply(model)
    got = _summary(kfac_blocks(apply, params, jnp.zeros((7, 4))))
    assert got == [
        (".layers[0].weight", "dense", ".layers[0].bias", ((5, 5), (5, 5)), 1),
        (".layers[1].weight", "dense", ".layers[1].bias", ((6, 6), (5, 5)), 1),
        (".layers[2].weight", "dense", ".layers[2].bias", ((6, 6), (3, 3)), 1),
    ]


class _EqxCNN(eqx.Module):
    conv: eqx.nn.Conv2d
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)
        self.norm = eqx.nn.LayerNorm(4 * 6 * 6)
        self.head = eqx.nn.Linear(4 * 6 * 6, 3, use_bias=False, key=k2)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x)).reshape(-1)
        return self.head(self.norm(h))


def test_blocks_equinox_cnn():
    params, apply = _eqx_apply(_EqxCNN(KEY))
    got = _summary(kfac_blocks(apply, params, jnp.zeros((2, 1, 6, 6))))
    assert got == [
        (".conv.weight", "conv", ".conv.bias", ((10, 10), (4, 4)), 1),
        (".norm.weight", "diagonal", None, ((144,),), 0),
        (".norm.bias", "diagonal", None, ((144,),), 0),
        (".head.weight", "dense", None, ((144, 144), (3, 3)), 1),
    ]


def test_blocks_flax_linen_dense_conv():
    nn = pytest.importorskip("flax.linen")

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3))(x))
            x = x.reshape(x.shape[0], -1)
            return nn.Dense(3)(x)

    x = jnp.zeros((2, 5, 5, 2))
    variables = CNN().init(KEY, x)
    got = _summary(kfac_blocks(CNN().apply, variables, x))
    assert len(got) == 2
    assert {(g[0], g[1], g[2], g[3]) for g in got} == {
        (
            "['params']['Conv_0']['kernel']",
            "conv",
            "['params']['Conv_0']['bias']",
            ((19, 19), (4, 4)),
        ),
        (
            "['params']['Dense_0']['kernel']",
            "dense",
            "['params']['Dense_0']['bias']",
            ((101, 101), (3, 3)),
        ),
    }


def test_blocks_flax_nnx_linear_conv():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, 3, (3, 3), padding="VALID", rngs=rngs)
            self.linear = nnx.Linear(3 * 4 * 4, 2, rngs=rngs)

        def __call__(self, x):
            h = nnx.relu(self.conv(x))
            return self.linear(h.reshape(h.shape[0], -1))

    net = Net(nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    apply = lambda s, x: nnx.merge(graphdef, s)(x)
    got = {
        (g[0], g[1], g[2], g[3])
        for g in _summary(kfac_blocks(apply, state, jnp.zeros((2, 6, 6, 1))))
    }
    assert got == {
        ("['conv']['kernel'].value", "conv", "['conv']['bias'].value", ((10, 10), (3, 3))),
        ("['linear']['kernel'].value", "dense", "['linear']['bias'].value", ((49, 49), (2, 2))),
    }


def test_blocks_plain_jnp_layouts_and_tied_weight():
    params = {
        "W": jnp.zeros((3, 4)),  # x @ W
        "V": jnp.zeros((4, 4)),  # used twice: tied
        "U": jnp.zeros((2, 4)),  # U @ h under vmap (equinox layout), through a transpose
        "c": jnp.zeros((2,)),
        "s": jnp.ones(()),  # elementwise: diagonal
        "E": jnp.zeros((2, 2)),  # used in a dot and elementwise: diagonal
    }

    def apply(p, x):
        h = jnp.tanh(x @ p["W"])
        h = jnp.tanh(h @ p["V"])
        h = jnp.tanh(h @ p["V"])
        out = jax.vmap(lambda v: p["U"] @ v)(h) + p["c"]
        out = p["s"] * out
        return out @ p["E"] + jnp.sum(p["E"] ** 2)

    got = {
        (g[0], g[1], g[2], g[3], g[4])
        for g in _summary(kfac_blocks(apply, params, jnp.zeros((5, 3))))
    }
    assert got == {
        ("['E']", "diagonal", None, ((2, 2),), 0),
        ("['U']", "dense", "['c']", ((5, 5), (2, 2)), 1),
        ("['V']", "dense", None, ((4, 4), (4, 4)), 2),
        ("['W']", "dense", None, ((3, 3), (4, 4)), 1),
        ("['s']", "diagonal", None, ((),), 0),
    }


def _recurrent(reverse=False, unroll=1):
    """A tanh RNN under ``lax.scan`` (W, U, b inside the scan) with a dense read-out V, c."""
    k = jax.random.split(KEY, 5)
    params = {
        "U": 0.5 * jax.random.normal(k[0], (3, 4)),
        "W": 0.5 * jax.random.normal(k[1], (4, 4)),
        "b": 0.1 * jax.random.normal(k[2], (4,)),
        "V": 0.5 * jax.random.normal(k[3], (4, 2)),
        "c": jnp.zeros((2,)),
    }

    def apply(p, xs):  # xs: (batch, time, 3)
        def cell(h, x_t):
            return jnp.tanh(h @ p["W"] + x_t @ p["U"] + p["b"]), None

        h0 = jnp.zeros((xs.shape[0], 4), xs.dtype)
        h, _ = jax.lax.scan(cell, h0, jnp.swapaxes(xs, 0, 1), reverse=reverse, unroll=unroll)
        return h @ p["V"] + p["c"]

    return params, apply, jax.random.normal(k[4], (6, 5, 3))


class _EqxRNN(eqx.Module):
    wx: eqx.nn.Linear
    wh: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key):
        k = jax.random.split(key, 3)
        self.wx = eqx.nn.Linear(3, 4, key=k[0])
        self.wh = eqx.nn.Linear(4, 4, use_bias=False, key=k[1])
        self.out = eqx.nn.Linear(4, 2, key=k[2])

    def __call__(self, xs):  # xs: (batch, time, 3)
        def step(h, x_t):
            return jnp.tanh(jax.vmap(self.wx)(x_t) + jax.vmap(self.wh)(h)), None

        h, _ = jax.lax.scan(step, jnp.zeros((xs.shape[0], 4)), jnp.swapaxes(xs, 0, 1))
        return jax.vmap(self.out)(h)


def test_blocks_scanned_rnn_plain_and_equinox():
    # A weight closed over by a scan body is used once per step: one Kronecker block summing
    # the T = 5 uses; the bias added to the sum h @ W + x @ U joins the first site.
    params, apply, xs = _recurrent()
    assert set(_summary(kfac_blocks(apply, params, xs))) == {
        ("['U']", "dense", None, ((3, 3), (4, 4)), 5),
        ("['W']", "dense", "['b']", ((5, 5), (4, 4)), 5),
        ("['V']", "dense", "['c']", ((5, 5), (2, 2)), 1),
    }
    model = _EqxRNN(KEY)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    apply = lambda p, x: eqx.combine(p, static)(x)
    assert set(_summary(kfac_blocks(apply, params, xs))) == {
        (".wx.weight", "dense", ".wx.bias", ((4, 4), (4, 4)), 5),
        (".wh.weight", "dense", None, ((4, 4), (4, 4)), 5),
        (".out.weight", "dense", ".out.bias", ((5, 5), (2, 2)), 1),
    }


def test_blocks_flax_linen_scanned_cell():
    nn = pytest.importorskip("flax.linen")

    class RNN(nn.Module):
        @nn.compact
        def __call__(self, xs):
            scan = nn.scan(
                nn.SimpleCell,
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=1,
                out_axes=1,
            )
            h, _ = scan(features=4)(jnp.zeros((xs.shape[0], 4), xs.dtype), xs)
            return nn.Dense(2)(h)

    xs = jnp.zeros((6, 5, 3))
    variables = RNN().init(KEY, xs)
    cell = "['params']['ScanSimpleCell_0']"
    assert set(_summary(kfac_blocks(RNN().apply, variables, xs))) == {
        (f"{cell}['i']['kernel']", "dense", f"{cell}['i']['bias']", ((4, 4), (4, 4)), 5),
        (f"{cell}['h']['kernel']", "dense", None, ((4, 4), (4, 4)), 5),
        (
            "['params']['Dense_0']['kernel']",
            "dense",
            "['params']['Dense_0']['bias']",
            ((5, 5), (2, 2)),
            1,
        ),
    }


def test_leaves_in_carry_or_while_loop_stay_diagonal():
    params = {"W": jnp.zeros((3, 3)), "M": jnp.zeros((3, 3)), "V": jnp.zeros((3, 3))}

    def apply(p, x):
        def cell(carry, _):  # W is carried (and updated): not the same weight at each step
            h, w = carry
            return (jnp.tanh(h @ w), 0.9 * w), None

        (h, _), _ = jax.lax.scan(cell, (x, p["W"]), None, length=3)
        h = jax.lax.fori_loop(0, 2, lambda i, h: jnp.tanh(h @ p["M"]), h)  # static: a scan
        return jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] @ p["V"]), (0, h))[
            1
        ]

    assert set(_summary(kfac_blocks(apply, params, jnp.zeros((4, 3))))) == {
        ("['W']", "diagonal", None, ((3, 3),), 0),
        ("['M']", "dense", None, ((3, 3), (3, 3)), 2),
        ("['V']", "diagonal", None, ((3, 3),), 0),
    }


# ---------------------------------------------------------------------------------------------
# Captured statistics: sum over rows of a g^T is the gradient (checks layouts and patches).


@pytest.mark.parametrize(
    "which", ["eqx_cnn", "linen_cnn", "tied", "rnn", "rnn_reverse", "nested_scan"]
)
def test_captured_rows_reproduce_the_gradient(which):
    if which == "eqx_cnn":
        params, apply = _eqx_apply(_EqxCNN(KEY))
        x = jax.random.normal(KEY, (3, 1, 6, 6))
    elif which == "linen_cnn":
        nn = pytest.importorskip("flax.linen")

        class CNN(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.relu(nn.Conv(3, (3, 3), strides=(2, 1), padding="SAME")(x))
                return nn.Dense(2)(x.reshape(x.shape[0], -1))

        x = jax.random.normal(KEY, (3, 5, 6, 2))
        variables = jax.tree.map(lambda t: t.astype(jnp.float64), CNN().init(KEY, x))
        params, apply = variables, CNN().apply
    elif which == "tied":
        params = {"V": jax.random.normal(KEY, (3, 3)), "b": jnp.ones(3)}
        apply = lambda p, x: jnp.tanh(jnp.tanh(x @ p["V"] + p["b"]) @ p["V"])
        x = jax.random.normal(KEY, (4, 3))
    elif which == "nested_scan":  # a jitted scan in a reversed scan; W in and after the cell
        k = jax.random.split(KEY, 4)
        params = {
            "W": jax.random.normal(k[0], (3, 3)),
            "b": jax.random.normal(k[1], (3,)),
            "V": jax.random.normal(k[2], (3, 3)),
        }

        def apply(p, xs):
            def outer(h, x_t):
                inner = jax.jit(
                    lambda h: jax.lax.scan(
                        lambda g, _: (jnp.tanh(g @ p["V"]), None), h, None, length=2
                    )[0]
                )
                h = inner(jnp.tanh(h @ p["W"] + x_t + p["b"]))
                return h, h @ p["W"]

            h0 = jnp.zeros((xs.shape[0], 3))
            h, ys = jax.lax.scan(outer, h0, jnp.swapaxes(xs, 0, 1), reverse=True)
            return jnp.concatenate([h, ys.sum(0)], axis=1)

        x = jax.random.normal(k[3], (5, 4, 3))
        assert [b.uses for b in kfac_blocks(apply, params, x)] == [8, 8]
    else:  # per-step rows of a scanned site, forward and reversed (unrolled) scans
        params, apply, x = _recurrent(reverse=which == "rnn_reverse", unroll=2)
    plan = build_plan(apply, params, x)
    cot = jax.random.normal(jax.random.PRNGKey(1), jax.eval_shape(apply, params, x).shape)
    assert plan.blocks

    @jax.jit
    def compare(params):
        loss = lambda p: jnp.vdot(apply(p, x), cot)
        grads = jax.tree.leaves(jax.grad(loss)(params))
        out, vjp_fn, acts = jax.vjp(
            lambda perts: perturbed_apply(plan, params, x, perts),
            zero_perturbations(plan),
            has_aux=True,
        )
        (g_sites,) = vjp_fn(cot)
        pairs = []
        for block in plan.blocks:
            total = 0.0
            for j in block.sites:
                site = plan.sites[j]
                a = input_rows(site, acts[j])
                if block.bias is not None:
                    h = jnp.full((a.shape[0], 1), 1.0 if site.bias is not None else 0.0)
                    a = jnp.concatenate([a, h], axis=1)
                total = total + a.T @ output_rows(site, g_sites[j])
            pairs.append((total, block_matrix(block, grads)))
        return out, apply(params, x), pairs

    out, want, pairs = compare(params)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    for got, expected in pairs:
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Exactness: a deep linear-Gaussian network, where each K-FAC block is the Fisher's block.


def _deep_linear():
    k1, k2, k3 = jax.random.split(KEY, 3)
    params = {
        "W1": jax.random.normal(k1, (3, 4)),
        "b1": jnp.zeros(4),
        "W2": jax.random.normal(k2, (4, 2)),
        "b2": 0.1 * jnp.ones(2),
    }
    apply = lambda p, x: (x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    x = jax.random.normal(k3, (40, 3)) + 0.5
    return params, apply, x


def _kfac_matrix(plan, state, params):
    flat, unravel = ravel_pytree(params)
    eye = jnp.eye(flat.shape[0])
    return jax.vmap(lambda e: ravel_pytree(kfac_matvec(plan, state, unravel(e)))[0])(eye).T


def test_kfac_equals_exact_fisher_blocks_on_linear_gaussian():
    # For a linear network with Gaussian outputs the back-propagated output gradients do not
    # depend on x, so E[a a^T (x) g g^T] = E[a a^T] (x) E[g g^T] exactly: every diagonal block of
    # the Fisher (the predictive Fisher of Martens 2020, Sec. 9.2) is A (x) G (Martens & Grosse
    # 2015, Sec. 3; exact here, not an approximation).
    params, apply, x = _deep_linear()
    opt = scale_by_kfac(apply, "gaussian", example_inputs=x, estimator="exact", noise_variance=0.5)
    state = opt.init(params)
    _, state = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), state, params, batch=x)
    plan = build_plan(apply, params, x)
    kmat = jax.jit(lambda s: _kfac_matrix(plan, s, params))(state)
    fisher = predictive_fisher(apply, "gaussian", noise_variance=0.5)
    fmat = jax.jit(lambda p: fisher(p, batch=x).as_matrix())(params)
    # Block index of every flat coordinate (ravel order: W1, W2, b1, b2 sorted by key).
    sizes = {"W1": 12, "W2": 8, "b1": 4, "b2": 2}
    owner = {"W1": 0, "b1": 0, "W2": 1, "b2": 1}
    block_of = np.concatenate([np.full(sizes[k], owner[k]) for k in sorted(sizes)])
    same = block_of[:, None] == block_of[None, :]
    np.testing.assert_allclose(
        np.where(same, kmat, 0.0), np.where(same, fmat, 0.0), rtol=1e-10, atol=1e-12
    )
    assert np.all(np.where(same, 0.0, kmat) == 0.0)


def _linear_over_time(steps, scanned):
    """``y_t = x_t W + b`` for t < steps, under ``lax.scan`` or as ``steps`` explicit tied uses."""
    k1, k2, k3 = jax.random.split(KEY, 3)
    params = {"W": jax.random.normal(k1, (3, 2)), "b": 0.1 * jax.random.normal(k2, (2,))}

    def apply(p, x):  # x: (batch, steps, 3) -> (batch, steps * 2)
        if scanned:
            _, ys = jax.lax.scan(
                lambda c, x_t: (c, x_t @ p["W"] + p["b"]), 0.0, jnp.swapaxes(x, 0, 1)
            )
        else:
            ys = jnp.stack([x[:, t] @ p["W"] + p["b"] for t in range(steps)])
        return jnp.swapaxes(ys, 0, 1).reshape(x.shape[0], -1)

    return params, apply, jax.random.normal(k3, (7, steps, 3)) + 0.5


def _kfac_state(apply, params, x, **kw):
    opt = scale_by_kfac(apply, "gaussian", example_inputs=x, estimator="exact", **kw)
    state = opt.init(params)
    grads = jax.tree.map(lambda t: jnp.sin(jnp.arange(t.size).reshape(t.shape) + 1.0), params)
    updates, state = jax.jit(opt.update)(grads, state, params, batch=x)
    return updates, state


@pytest.mark.parametrize("steps", [1, 4])
def test_scanned_weight_sums_its_steps_as_tied_uses(steps):
    # Under lax.scan the T steps are T uses of one weight, as are T explicit tied uses:
    # A = mean over the T * n rows of [x_t; 1][x_t; 1]^T and, with unit-variance Gaussian
    # outputs and the exact estimator, G = sum_t E[g_t g_t^T] = T I (Martens & Grosse 2015,
    # Sec. 3, uses summed as for a shared weight). For T = 1 a linear-Gaussian layer's K-FAC
    # block is its exact Fisher (Martens 2020, Sec. 9.2).
    got = {}
    for scanned in (True, False):
        params, apply, x = _linear_over_time(steps, scanned)
        plan = build_plan(apply, params, x)
        assert len(plan.blocks) == 1 and plan.blocks[0].bias is not None and not plan.diagonal
        assert [b.uses for b in kfac_blocks(apply, params, x)] == [steps]
        updates, state = _kfac_state(apply, params, x, max_kl=None)
        kmat = jax.jit(lambda s, plan=plan, params=params: _kfac_matrix(plan, s, params))(state)
        got[scanned] = (updates, state, kmat)
    (u_s, st_s, k_s), (u_t, st_t, k_t) = got[True], got[False]
    np.testing.assert_allclose(k_s, k_t, rtol=1e-10, atol=1e-12)
    for f_s, f_t in zip(st_s.factors_a + st_s.factors_g, st_t.factors_a + st_t.factors_g):
        np.testing.assert_allclose(f_s, f_t, rtol=1e-10, atol=1e-12)
    for name in ("W", "b"):
        np.testing.assert_allclose(u_s[name], u_t[name], rtol=1e-10, atol=1e-12)
    rows = jnp.concatenate([x.reshape(-1, 3), jnp.ones((x.shape[0] * steps, 1))], axis=1)
    np.testing.assert_allclose(st_s.factors_a[0], rows.T @ rows / rows.shape[0], rtol=1e-10)
    np.testing.assert_allclose(st_s.factors_g[0], steps * jnp.eye(2), rtol=1e-10, atol=1e-12)
    if steps == 1:
        fisher = predictive_fisher(apply, "gaussian")
        fmat = jax.jit(lambda p: fisher(p, batch=x).as_matrix())(params)
        np.testing.assert_allclose(k_s, fmat, rtol=1e-10, atol=1e-12)


def test_kfac_step_on_a_scanned_rnn_descends_without_retracing():
    params, apply, xs = _recurrent()
    y = jnp.argmax(jnp.sum(xs, axis=1)[:, :2], axis=1)
    opt = kfac(0.1, apply, "categorical", example_inputs=xs, damping=1e-2)
    state = opt.init(params)
    loss_fn = lambda p: _ce(apply(p, xs), y)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, batch=(xs, y))
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(3):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    kstate = state[0]  # (rho is NaN until adaptive damping measures a step)
    finite = jax.tree.leaves((params, kstate.factors_a, kstate.factors_g, kstate.diagonals))
    assert all(np.all(np.isfinite(leaf)) for leaf in finite)
    assert float(loss_fn(params)) < losses[0]
    assert losses[2] < losses[1] < losses[0]


def test_matvec_is_the_dense_kronecker_product_and_update_the_damped_solve():
    params, apply, x = _deep_linear()
    apply2 = lambda p, x: jnp.tanh(apply(p, x))
    params = {**params, "s": jnp.array([0.5, 2.0])}
    apply3 = lambda p, x: p["s"] * apply2(p, x)
    # Both inverse routes of the pi split must give the same dense damped Kronecker solve.
    for split, inverse in (("exact", "eigh"), ("pi", "eigh"), ("pi", "cholesky")):
        opt = scale_by_kfac(
            apply3,
            "categorical",
            example_inputs=x,
            damping=0.3,
            damping_split=split,
            inverse=inverse,
            max_kl=None,
        )
        state = opt.init(params)
        grads = jax.tree.map(lambda t: jnp.cos(jnp.arange(t.size).reshape(t.shape) + 1.0), params)
        updates, state = jax.jit(opt.update)(grads, state, params, batch=x)
        plan = build_plan(apply3, params, x)
        v = jax.tree.map(lambda t: jnp.sin(jnp.arange(t.size).reshape(t.shape) + 2.0), params)
        v_leaves = jax.tree.leaves(v)
        fv = jax.tree.leaves(jax.jit(lambda s, v: kfac_matvec(plan, s, v))(state, v))
        g_leaves, u_leaves = jax.tree.leaves(grads), jax.tree.leaves(updates)
        for b, block in enumerate(plan.blocks):
            a, g = state.factors_a[b], state.factors_g[b]
            dense = np.kron(a, g)
            np.testing.assert_allclose(
                block_matrix(block, fv).ravel(),
                dense @ block_matrix(block, v_leaves).ravel(),
                rtol=1e-10,
                atol=1e-12,
            )
            lam = 0.3
            if split == "exact":
                damped = dense + lam * np.eye(dense.shape[0])
            else:
                pi = np.sqrt((np.trace(a) / a.shape[0]) / (np.trace(g) / g.shape[0]))
                damped = np.kron(
                    a + pi * np.sqrt(lam) * np.eye(a.shape[0]),
                    g + np.sqrt(lam) / pi * np.eye(g.shape[0]),
                )
            want = np.linalg.solve(damped, block_matrix(block, g_leaves).ravel())
            tol = 1e-10 if inverse == "cholesky" else 1e-8
            np.testing.assert_allclose(
                block_matrix(block, u_leaves).ravel(), want, rtol=tol, atol=tol
            )
        (diag,) = state.diagonals
        np.testing.assert_allclose(
            jax.tree.leaves(updates)[-1], grads["s"] / (diag + 0.3), rtol=1e-12
        )


def test_sampled_factors_match_exact_in_expectation():
    # Monte Carlo: G from one sampled label per example -> the exact E[diag p - p p^T]; with
    # n = 4000 examples the relative error of the entries is O(1/sqrt(n)) ~ 2%; tolerance 10%.
    k1, k2 = jax.random.split(KEY)
    params = {"W": jax.random.normal(k1, (3, 4))}
    apply = lambda p, x: x @ p["W"]
    x = jax.random.normal(k2, (4000, 3))
    plan = build_plan(apply, params, x)
    stats = jax.jit(
        lambda est: _statistics(plan, params, x, None, KEY, "categorical", est, 1.0),
        static_argnums=0,
    )
    _, g_exact, _ = stats("exact")
    _, g_sampled, _ = stats("sampled")
    p = jax.nn.softmax(apply(params, x))
    closed = jnp.mean(jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(p), axis=0)
    np.testing.assert_allclose(g_exact[0], closed, rtol=1e-10, atol=1e-12)
    scale = jnp.max(jnp.abs(closed))
    assert float(jnp.max(jnp.abs(g_sampled[0] - closed))) < 0.1 * scale


# ---------------------------------------------------------------------------------------------
# The optax contract: chain, no retrace, dtypes, training.


@pytest.fixture(scope="module")
def digits_mlp():
    x = jax.random.normal(jax.random.PRNGKey(3), (128, 8))
    y = jnp.argmax(x[:, :3] + 0.3 * x[:, 3:6], axis=1)
    model = eqx.nn.MLP(8, 3, 16, 1, activation=jnp.tanh, key=KEY)
    return model, x, y


def _ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_trains_an_equinox_module_given_as_is_in_a_chain_without_retracing(digits_mlp):
    model, x, y = digits_mlp
    params = eqx.filter(model, eqx.is_inexact_array)
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)
    opt = optax.chain(
        optax.clip_by_global_norm(10.0),
        kfac(0.5, model, "categorical", example_inputs=x, damping=1e-2, inverse_every=3),
    )
    state = opt.init(params)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(params, state):
        loss_fn = lambda p: _ce(jax.vmap(eqx.combine(p, static))(x), y)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params, batch=(x, y))
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(15):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]


def test_without_example_inputs_the_first_update_finds_the_blocks(digits_mlp):
    # kfac(lr, apply, output) with defaults: init knows no batch, so the first update finds the
    # blocks from its batch; afterwards every update equals the one of an optimizer whose init
    # saw example inputs, and the jitted step traces once per state layout (twice in all).
    model, x, y = digits_mlp
    params = eqx.filter(model, eqx.is_inexact_array)
    static = eqx.filter(model, eqx.is_inexact_array, inverse=True)
    lazy, eager = kfac(0.5, model, "categorical"), kfac(0.5, model, "categorical", example_inputs=x)
    blank = lazy.init(params)
    assert blank[0].factors_a == () and blank[0].diagonals == ()

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=2)
    def step(params, state):
        grads = jax.grad(lambda p: _ce(jax.vmap(eqx.combine(p, static))(x), y))(params)
        updates, state = lazy.update(grads, state, params, batch=(x, y))
        return optax.apply_updates(params, updates), state

    def eager_step(params, state):
        grads = jax.grad(lambda p: _ce(jax.vmap(eqx.combine(p, static))(x), y))(params)
        updates, state = eager.update(grads, state, params, batch=(x, y))
        return optax.apply_updates(params, updates), state

    p_lazy, s_lazy = params, blank
    p_eager, s_eager = params, eager.init(params)
    for _ in range(4):
        p_lazy, s_lazy = step(p_lazy, s_lazy)
        p_eager, s_eager = eager_step(p_eager, s_eager)
    for a, b in zip(jax.tree.leaves(p_lazy), jax.tree.leaves(p_eager)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert jax.tree.structure(s_lazy) == jax.tree.structure(s_eager)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_kept_and_factor_algebra_in_float32(dtype):
    params = {
        "W": jnp.ones((3, 2), dtype) * 0.1,
        "b": jnp.zeros(2, dtype),
        "s": jnp.ones((), dtype),
    }
    apply = lambda p, x: p["s"] * (x @ p["W"] + p["b"])
    x = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3).astype(dtype)
    opt = kfac(0.1, apply, "gaussian", example_inputs=x, max_kl=1e-2)
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(opt.update)(grads, state, params, batch=x)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        assert u.dtype == p.dtype and bool(jnp.all(jnp.isfinite(u.astype(jnp.float32))))
    assert state[0].factors_a[0].dtype == jnp.float32
    # Levenberg-Marquardt damping: the ratio is measured in float32 at least, and a step along
    # a direction that is not the loss's gradient (ones here) raises the damping.
    opt = kfac(0.1, apply, "gaussian", example_inputs=x, adapt_damping_every=1)
    y = jnp.ones((8, 2), dtype)
    updates, state = jax.jit(opt.update)(grads, opt.init(params), params, batch=(x, y))
    assert all(
        u.dtype == p.dtype for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params))
    )
    assert state[0].rho.dtype == jnp.float32 and float(state[0].rho) < 0.25
    assert float(state[0].damping) > 1e-2


@pytest.mark.parametrize("inverse", ["eigh", "cholesky"])
def test_damping_injectable_without_recompiling(inverse):
    # eigh: damping acts at every step; cholesky: at the next refresh (here every step).
    params, apply, x = _deep_linear()
    opt = optax.inject_hyperparams(
        scale_by_kfac,
        static_args=(
            "apply",
            "output",
            "example_inputs",
            "curvature_every",
            "inverse_every",
            "inverse",
        ),
    )(
        apply=apply,
        output="gaussian",
        example_inputs=jax.ShapeDtypeStruct(x.shape, x.dtype),
        damping=1.0,
        max_kl=None,
        inverse=inverse,
        inverse_every=5 if inverse == "eigh" else 1,
    )
    state = opt.init(params)
    update = jax.jit(eqx.debug.assert_max_traces(opt.update, max_traces=1))
    grads = jax.tree.map(jnp.ones_like, params)
    u1, state = update(grads, state, params, batch=x)
    state.hyperparams["damping"] = jnp.full_like(state.hyperparams["damping"], 1e3)
    u2, state = update(grads, state, params, batch=x)
    assert float(optax.tree.norm(u2)) < 0.1 * float(optax.tree.norm(u1))


def test_clear_errors():
    params, apply, x = _deep_linear()
    opt = scale_by_kfac(apply, "gaussian", example_inputs=x)
    state = opt.init(params)
    with pytest.raises(ValueError, match="batch"):
        opt.update(params, state, params)
    with pytest.raises(ValueError, match="params"):
        opt.update(params, state, batch=x)
    with pytest.raises(ValueError, match="output"):
        scale_by_kfac(apply, "poisson", example_inputs=x)
    with pytest.raises(ValueError, match="damping"):
        scale_by_kfac(apply, "gaussian", example_inputs=x, damping=0.0)
    with pytest.raises(ValueError, match="inverse"):
        scale_by_kfac(apply, "gaussian", example_inputs=x, inverse="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eigh"):
        scale_by_kfac(
            apply, "gaussian", example_inputs=x, damping_split="exact", inverse="cholesky"
        )


_PARALLEL_SCRIPT = r"""
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from jax.sharding import Mesh, PartitionSpec as P
from infogeo_jax.optim import scale_by_kfac

k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
params = {"W1": jax.random.normal(k1, (3, 5)), "b1": jnp.zeros(5)}
params["W2"] = jax.random.normal(k2, (5, 4))
apply = lambda p, x: jnp.tanh(x @ p["W1"] + p["b1"]) @ p["W2"]
x = jax.random.normal(k3, (16, 3))
grads = jax.tree.map(lambda t: jnp.cos(jnp.arange(t.size).reshape(t.shape) + 1.0), params)
kw = dict(estimator="exact", damping=0.1)
single = scale_by_kfac(apply, "categorical", example_inputs=x, **kw)
want, _ = jax.jit(single.update)(grads, single.init(params), params, batch=x)
par = scale_by_kfac(apply, "categorical", example_inputs=x[:4], axis_name="data", **kw)
mesh = Mesh(np.array(jax.devices()), ("data",))
state = par.init(params)
f = jax.shard_map(
    lambda g, s, p, xb: par.update(g, s, p, batch=xb)[0],
    mesh=mesh, in_specs=(P(), P(), P(), P("data")), out_specs=P(), check_vma=False,
)
got = jax.jit(f)(grads, state, params, x)
for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
print("OK", len(jax.devices()))
"""


@pytest.mark.slow
def test_data_parallel_statistics_equal_the_single_device_ones(tmp_path):
    # Four host devices, each with a quarter of the batch: with axis_name the averaged
    # statistics, hence the update, equal those of one device on the whole batch.
    import os
    import subprocess
    import sys

    script = tmp_path / "kfac_parallel.py"
    script.write_text(_PARALLEL_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 4" in proc.stdout


def test_masked_and_multi_transform_precondition_the_selected_leaves_with_the_full_model():
    params, apply, x = _deep_linear()
    apply2 = lambda p, x: jnp.tanh(apply(p, x))
    grads = jax.tree.map(lambda t: jnp.cos(jnp.arange(t.size).reshape(t.shape) + 1.0), params)
    kw = dict(example_inputs=x, estimator="exact", damping=0.3, max_kl=None)
    whole = scale_by_kfac(apply2, "categorical", **kw)
    full_updates, full_state = jax.jit(whole.update)(grads, whole.init(params), params, batch=x)

    # multi_transform: K-FAC on the second layer, Adam on the first. The second layer's block
    # and its statistics do not depend on the first layer being frozen for K-FAC.
    labels = {"W1": "adam", "b1": "adam", "W2": "kfac", "b2": "kfac"}
    inner = scale_by_kfac(apply2, "categorical", example_params=params, **kw)
    opt = optax.multi_transform({"kfac": inner, "adam": optax.scale_by_adam()}, labels)
    update = jax.jit(eqx.debug.assert_max_traces(opt.update, max_traces=1))
    state = opt.init(params)
    for _ in range(2):  # the same trace twice
        updates, state = update(grads, state, params, batch=x, full_params=params)
    adam_updates, _ = optax.scale_by_adam().update(grads, optax.scale_by_adam().init(params))
    for name in ("W2", "b2"):
        np.testing.assert_allclose(updates[name], full_updates[name], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(updates["W1"], adam_updates["W1"], rtol=1e-10, atol=1e-12)

    # masked, selecting W1 (its bias frozen) and b2 (its weight frozen), on one example: W1's
    # block loses the bias row of A (pi recomputed); b2 gets a diagonal block, whose "exact"
    # estimate on one example is diag(G) of the second layer's full block (bias input 1).
    x1 = x[:1]
    whole1 = scale_by_kfac(apply2, "categorical", **{**kw, "example_inputs": x1})
    _, s1 = jax.jit(whole1.update)(grads, whole1.init(params), params, batch=x1)
    mask = {"W1": True, "b1": False, "W2": False, "b2": True}
    masked = optax.masked(
        scale_by_kfac(apply2, "categorical", example_params=params, **{**kw, "example_inputs": x1}),
        mask,
    )
    mu, ms = jax.jit(masked.update)(
        grads, masked.init(params), params, batch=x1, full_params=params
    )
    a, g, lam = np.asarray(s1.factors_a[0])[:-1, :-1], np.asarray(s1.factors_g[0]), 0.3
    pi = np.sqrt((np.trace(a) / a.shape[0]) / (np.trace(g) / g.shape[0]))
    want = np.linalg.solve(
        np.kron(
            a + pi * np.sqrt(lam) * np.eye(a.shape[0]), g + np.sqrt(lam) / pi * np.eye(g.shape[0])
        ),
        np.asarray(grads["W1"]).ravel(),
    )
    np.testing.assert_allclose(np.asarray(mu["W1"]).ravel(), want, rtol=1e-10, atol=1e-12)
    (diag,) = ms.inner_state.diagonals
    np.testing.assert_allclose(diag, np.diag(s1.factors_g[1]), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(mu["b2"], grads["b2"] / (diag + lam), rtol=1e-10, atol=1e-14)
    for name in ("b1", "W2"):  # optax.masked passes the frozen leaves' gradients through
        np.testing.assert_array_equal(mu[name], grads[name])

    with pytest.raises(ValueError, match="full_params"):
        masked.update(grads, masked.init(params), params, batch=x1)
    with pytest.raises(ValueError, match="example_params"):
        optax.masked(scale_by_kfac(apply2, "categorical", example_inputs=x1), mask).init(params)


def test_levenberg_marquardt_damping_ratio_and_rule():
    # Linear model, Gaussian output, unit variance: h is exactly quadratic with Hessian F and
    # K-FAC ("exact") is F itself, so rho = (g.d + d'Fd/2) / (g.d + d'Fd/2 + lam |d|^2 / 2)
    # (Martens & Grosse 2015, Sec. 6.5), d = -update, computed here from the loss and the
    # dense Fisher.
    k1, k2, k3 = jax.random.split(KEY, 3)
    params = {"W": jax.random.normal(k1, (3, 2)), "b": jnp.zeros(2)}
    apply = lambda p, x: x @ p["W"] + p["b"]
    x = jax.random.normal(k2, (30, 3))
    y = x @ jnp.ones((3, 2)) + 0.1 * jax.random.normal(k3, (30, 2))
    loss = lambda p: 0.5 * jnp.mean(jnp.sum((apply(p, x) - y) ** 2, axis=-1))
    lam = 0.5
    opt = scale_by_kfac(
        apply,
        "gaussian",
        example_inputs=x,
        estimator="exact",
        damping=lam,
        max_kl=None,
        adapt_damping_every=1,
    )
    grads = jax.grad(loss)(params)
    state = opt.init(params)
    update = jax.jit(eqx.debug.assert_max_traces(opt.update, max_traces=1))
    updates, state = update(grads, state, params, batch=(x, y))
    delta = jax.tree.map(lambda u: -u, updates)
    dv, unravel = ravel_pytree(delta)
    fmat = predictive_fisher(apply, "gaussian")(params, batch=x).as_matrix()
    gd = jnp.vdot(ravel_pytree(grads)[0], dv)
    want = (loss(optax.apply_updates(params, delta)) - loss(params)) / (
        gd + 0.5 * dv @ fmat @ dv + 0.5 * lam * dv @ dv
    )
    np.testing.assert_allclose(state.rho, want, rtol=1e-10, atol=1e-12)
    omega = (19 / 20) ** 1
    assert float(state.rho) > 0.75  # a good step: the damping shrinks
    np.testing.assert_allclose(state.damping, lam * omega, rtol=1e-12)
    _, state = update(grads, state, params, batch=(x, y))  # same trace, damping adapted again
    np.testing.assert_allclose(state.damping, lam * omega**2, rtol=1e-12)

    from infogeo_jax.optim._kfac import _lm_damping

    rule = lambda r: float(_lm_damping(jnp.asarray(2.0), jnp.asarray(r), 0.5))
    assert [rule(0.9), rule(0.5), rule(0.1), rule(-3.0), rule(np.nan)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="damping_omega"):
        scale_by_kfac(apply, "gaussian", example_inputs=x, damping_omega=1.5)


def test_learning_rate_injectable_without_recompiling():
    params, apply, x = _deep_linear()
    opt = optax.inject_hyperparams(
        kfac, static_args=("apply", "output", "example_inputs", "curvature_every", "inverse_every")
    )(learning_rate=0.1, apply=apply, output="gaussian", example_inputs=x)
    update = jax.jit(eqx.debug.assert_max_traces(opt.update, max_traces=1))
    grads = jax.tree.map(jnp.ones_like, params)
    state = opt.init(params)
    u1, _ = update(grads, state, params, batch=x)
    state.hyperparams["learning_rate"] = jnp.full_like(state.hyperparams["learning_rate"], 0.3)
    u3, _ = update(grads, state, params, batch=x)  # same state otherwise: 3x the step
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u3)):
        np.testing.assert_allclose(b, 3.0 * a, rtol=1e-10, atol=1e-14)


def test_kfac_momentum_is_heavy_ball_on_the_preconditioned_direction():
    params, apply, x = _deep_linear()
    grads = jax.tree.map(lambda t: jnp.cos(jnp.arange(t.size).reshape(t.shape) + 1.0), params)
    opt = kfac(0.1, apply, "gaussian", example_inputs=x, momentum=0.5)
    inner = scale_by_kfac(apply, "gaussian", example_inputs=x)
    state, inner_state = opt.init(params), inner.init(params)
    update, inner_update = jax.jit(opt.update), jax.jit(inner.update)
    m = jax.tree.map(jnp.zeros_like, params)
    for _ in range(3):  # m <- 0.5 m + d, step -0.1 m
        updates, state = update(grads, state, params, batch=x)
        d, inner_state = inner_update(grads, inner_state, params, batch=x)
        m = jax.tree.map(lambda m, d: 0.5 * m + d, m, d)
        for u, mm in zip(jax.tree.leaves(updates), jax.tree.leaves(m)):
            np.testing.assert_allclose(u, -0.1 * mm, rtol=1e-10, atol=1e-14)
