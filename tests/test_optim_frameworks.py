"""The optimizers in ordinary training loops: equinox, flax nnx, flax linen, haiku, optax wrappers.

Each test is written as a user writes the loop; each checks that the loss goes down and, where
an exact answer exists, that the update equals the one of a second, hand-written route (a plain
function, the dense Fisher with the frozen rows and columns dropped, one large batch).
"""

import re
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from infogeo_jax.families import Poisson
from infogeo_jax.optim import (
    apply_gradients,
    empirical_fisher,
    manifold_fisher,
    mirror_descent,
    multi_steps,
    natural_gradient,
    not_a_schedule,
    predictive_fisher,
)

TOL = dict(rtol=1e-12, atol=1e-12)
KEYS = jax.random.split(jax.random.key(0), 8)
X = jax.random.normal(KEYS[0], (32, 3))
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(jnp.int32) + (X[:, 2] > 0.5).astype(jnp.int32)
N_CLASSES = 3


def xent(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def tree_allclose(a, b, **tol):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


def fisher_matrix(fisher, params, **extra_args):
    """The Fisher operator at ``params`` as a dense matrix (jitted: eager lineax is slow)."""
    return jax.jit(lambda p, e: fisher(p, **e).as_matrix())(params, extra_args)


def first_update(opt, grads, params, **extra_args):
    """One jitted update from a fresh state."""
    step = lambda g, p, e: opt.update(g, opt.init(p), p, **e)[0]
    return jax.jit(step)(grads, params, extra_args)


# --- plain functions --------------------------------------------------------------------------


def mlp_apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


P0 = {
    "w1": 0.5 * jax.random.normal(KEYS[1], (3, 6)),
    "b1": jnp.zeros(6),
    "w2": 0.5 * jax.random.normal(KEYS[2], (6, N_CLASSES)),
    "b2": jnp.zeros(N_CLASSES),
}


def plain_loss(p, x, y):
    return xent(mlp_apply(p, x), y)


# --- equinox ----------------------------------------------------------------------------------


class EqxNet(eqx.Module):
    mlp: eqx.nn.MLP
    calls: jax.Array  # an integer buffer: not trainable

    def __call__(self, x):
        return self.mlp(x) + 0.0 * self.calls


def eqx_net():
    mlp = eqx.nn.MLP(3, N_CLASSES, 6, 1, activation=jnp.tanh, key=KEYS[3])
    return EqxNet(mlp, jnp.array(0, jnp.int32))


def eqx_loss(model, x, y):
    return xent(jax.vmap(model)(x), y)


@pytest.mark.parametrize("filter_spec", [eqx.is_array, eqx.is_inexact_array])
def test_equinox_module_as_it_is(filter_spec):
    model = eqx_net()
    opt = natural_gradient(0.5, predictive_fisher(model, "categorical"), damping=1e-2)
    opt_state = opt.init(eqx.filter(model, filter_spec))

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(eqx_loss)(model, x, y)
        params = eqx.filter(model, filter_spec)
        updates, opt_state = opt.update(grads, opt_state, params, batch=(x, y))
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for _ in range(6):
        model, opt_state, loss = step(model, opt_state, X, Y)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert model.calls.dtype == jnp.int32

    # Second route: the closure over the static part that users had to write by hand.
    model0 = eqx_net()
    params, static = eqx.partition(model0, eqx.is_inexact_array)
    by_hand = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
    grads = eqx.filter_grad(eqx_loss)(model0, X, Y)
    fisher_a = predictive_fisher(model0, "categorical")
    fisher_b = predictive_fisher(by_hand, "categorical")
    mat_a = fisher_matrix(fisher_a, eqx.filter(model0, filter_spec), batch=(X, Y))
    mat_b = fisher_matrix(fisher_b, params, batch=(X, Y))
    np.testing.assert_allclose(mat_a, mat_b, **TOL)
    opt_a = natural_gradient(1.0, fisher_a, damping=1e-3, solver="dense")
    opt_b = natural_gradient(1.0, fisher_b, damping=1e-3, solver="dense")
    pa = eqx.filter(model0, filter_spec)
    ua = first_update(opt_a, grads, pa, batch=(X, Y))
    ub = first_update(opt_b, grads, params, batch=(X, Y))
    tree_allclose(ua, ub)


def test_empirical_fisher_with_a_model():
    model = eqx_net()
    params = eqx.filter(model, eqx.is_array)
    loglik = lambda logits, example: jax.nn.log_softmax(logits)[example[1]]
    mat = fisher_matrix(empirical_fisher(loglik, model=model), params, batch=(X, Y))
    # Second route: G^T G / n from the explicit per-example score Jacobian.
    diff, static = eqx.partition(model, eqx.is_inexact_array)
    per_example = lambda p: jax.vmap(lambda x, y: jax.nn.log_softmax(eqx.combine(p, static)(x))[y])(
        X, Y
    )
    jac = jax.jit(jax.jacrev(per_example))(diff)
    g = jnp.concatenate([j.reshape(X.shape[0], -1) for j in jax.tree.leaves(jac)], axis=1)
    np.testing.assert_allclose(mat, g.T @ g / X.shape[0], **TOL)


# --- flax nnx ---------------------------------------------------------------------------------


def nnx_net():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, dropout, rngs):
            f64 = dict(param_dtype=jnp.float64, rngs=rngs)
            self.l1 = nnx.Linear(3, 8, **f64)
            self.bn = nnx.BatchNorm(8, **f64)
            self.dropout = nnx.Dropout(0.3, rngs=rngs) if dropout else None
            self.l2 = nnx.Linear(8, N_CLASSES, **f64)

        def __call__(self, x):
            h = jax.nn.relu(self.bn(self.l1(x)))
            if self.dropout is not None:
                h = self.dropout(h)
            return self.l2(h)

    return Net


def _snapshot(state):
    from flax import nnx

    def copy(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.array(a)

    return jax.tree.map(copy, nnx.to_pure_dict(state))


# nnx.BatchNorm keeps float32 statistics whatever the param dtype: updating them from a float64
# batch warns (in the user's forward as in ours).
@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types")
def test_flax_nnx_optimizer_batchnorm_dropout():
    from flax import nnx

    net = nnx_net()
    model = net(True, nnx.Rngs(0))
    # Dropout is off in the curvature, which so underestimates the curvature of the noisy
    # training loss: a moderate step and damping keep the steps in the trusted region.
    tx = natural_gradient(0.2, predictive_fisher(model, "categorical"), damping=1e-1)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss_fn = lambda model: xent(model(x), y)
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads, batch=(x, y))
        return loss

    eval_loss = lambda: float(xent(model(X), Y))
    model.eval()
    start = eval_loss()
    model.train()
    losses = [float(train_step(model, optimizer, X, Y)) for _ in range(8)]
    model.eval()
    assert eval_loss() < 0.7 * start
    assert losses[-1] < losses[0]
    model.train()

    # The curvature computation never touches the model's batch statistics or RNG state.
    fisher = predictive_fisher(model, "categorical")
    before = _snapshot(nnx.state(model, nnx.Not(nnx.Param)))
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    mat = jax.jit(lambda p: fisher(p, batch=(X, Y)).as_matrix())(params)
    after = _snapshot(nnx.state(model, nnx.Not(nnx.Param)))
    jax.tree.map(np.testing.assert_array_equal, before, after)

    # Second route: the same network without the dropout layer (dropout is off in the
    # curvature), through an explicit Jacobian of a functional train-mode forward.
    twin = net(False, nnx.Rngs(1))
    nnx.update(twin, nnx.state(model, nnx.Param))
    twin.train()  # batch normalization on the batch statistics
    graphdef, _, rest = nnx.split(twin, nnx.Param, ...)
    forward = lambda p: nnx.merge(graphdef, p, nnx.as_pure(rest))(X)
    logits = forward(params)
    jac = jax.jit(jax.jacrev(forward))(params)
    j = jnp.concatenate([a.reshape(*logits.shape, -1) for a in jax.tree.leaves(jac)], -1)
    prob = jax.nn.softmax(logits)
    m = jax.vmap(lambda q: jnp.diag(q) - jnp.outer(q, q))(prob)
    expected = jnp.einsum("nkp,nkl,nlq->pq", j, m, j) / X.shape[0]
    np.testing.assert_allclose(mat, expected, rtol=1e-10, atol=1e-12)


# --- flax linen -------------------------------------------------------------------------------


def test_flax_linen_train_state():
    from flax import linen as nn
    from flax.training.train_state import TrainState

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(N_CLASSES)(jnp.tanh(nn.Dense(6)(x)))

    module = Net()
    variables = module.init(KEYS[4], X)
    tx = natural_gradient(0.5, predictive_fisher(module, "categorical"), damping=1e-2)
    state = TrainState.create(apply_fn=module.apply, params=variables["params"], tx=tx)

    @jax.jit
    def train_step(state, x, y):
        loss_fn = lambda p: xent(state.apply_fn({"params": p}, x), y)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return apply_gradients(state, grads=grads, batch=(x, y)), loss

    losses = []
    for _ in range(6):
        state, loss = train_step(state, X, Y)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 6

    # Second route: the same update through a plain function and plain optax.
    params = variables["params"]
    plain = lambda p, x: module.apply({"params": p}, x)
    grads = jax.grad(lambda p: xent(plain(p, X), Y))(params)
    ref = natural_gradient(0.5, predictive_fisher(plain, "categorical"), damping=1e-2)
    updates = first_update(ref, grads, params, batch=(X, Y))
    state0 = TrainState.create(apply_fn=module.apply, params=params, tx=tx)
    new_state = jax.jit(lambda s, g: apply_gradients(s, grads=g, batch=(X, Y)))(state0, grads)
    tree_allclose(new_state.params, optax.apply_updates(params, updates))


# --- haiku ------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_rng", [True, False])
def test_haiku_transform(with_rng):
    import haiku as hk

    def forward(x):
        return hk.nets.MLP([6, N_CLASSES], activation=jnp.tanh)(x)

    transformed = hk.transform(forward)
    params = transformed.init(KEYS[5], X)
    if not with_rng:
        transformed = hk.without_apply_rng(transformed)
    apply = (lambda p, x: transformed.apply(p, None, x)) if with_rng else transformed.apply
    opt = natural_gradient(0.5, predictive_fisher(transformed, "categorical"), damping=1e-2)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: xent(apply(p, x), y))(params)
        updates, opt_state = opt.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state, loss

    p, losses = params, []
    for _ in range(6):
        p, opt_state, loss = step(p, opt_state, X, Y)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    # Second route: the plain function.
    mat = fisher_matrix(predictive_fisher(transformed, "categorical"), params, batch=(X, Y))
    ref = fisher_matrix(predictive_fisher(apply, "categorical"), params, batch=(X, Y))
    np.testing.assert_allclose(mat, ref, **TOL)


# --- missing batch: the error says what to write ----------------------------------------------


def test_missing_batch_error_names_each_framework():
    opt = natural_gradient(1.0, predictive_fisher(mlp_apply, "categorical"))
    with pytest.raises(ValueError) as info:
        opt.update(P0, opt.init(P0), P0)
    message = str(info.value)
    for snippet in (
        "opt.update(grads, opt_state, params, batch=batch)",
        "optimizer.update(model, grads, batch=batch)",
        "apply_gradients(state, grads=grads, batch=batch)",
        "equinox",
        "haiku",
    ):
        assert snippet in message


def test_not_a_model_is_a_type_error():
    with pytest.raises(TypeError, match="equinox module"):
        predictive_fisher(3, "categorical")  # type: ignore[arg-type]


# --- optax.masked and optax.multi_transform ---------------------------------------------------

MASK = {"w1": False, "b1": True, "w2": True, "b2": False}
FISHER = predictive_fisher(mlp_apply, "categorical")


def _reference_direction(params, grads, damping):
    """Dense route: the full Fisher with the frozen rows and columns dropped, then Cholesky."""
    full = fisher_matrix(FISHER, params, batch=(X, Y))
    chosen = ravel_pytree(jax.tree.map(lambda a, m: jnp.full(a.shape, m), params, MASK))[0]
    idx = np.flatnonzero(np.asarray(chosen))
    block = full[idx][:, idx] + damping * jnp.eye(idx.size)
    rhs = ravel_pytree(grads)[0][idx]
    return idx, jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(block), rhs)


@jax.jit
def _masked_update(params):
    grads = jax.grad(plain_loss)(params, X, Y)
    opt = optax.masked(natural_gradient(1.0, FISHER, 1e-2, solver="dense"), MASK)
    updates, _ = opt.update(grads, opt.init(params), params, batch=(X, Y), full_params=params)
    return grads, updates


def test_masked_natural_gradient_equals_the_fisher_block():
    grads, updates = _masked_update(P0)
    idx, direction = _reference_direction(P0, grads, 1e-2)
    flat = ravel_pytree(updates)[0]
    np.testing.assert_allclose(flat[idx], -direction, rtol=1e-12, atol=1e-14)
    # Leaves outside the mask are passed through unchanged, as optax.masked does.
    for name, chosen in MASK.items():
        if not chosen:
            np.testing.assert_array_equal(updates[name], grads[name])


def test_masked_needs_the_full_params():
    grads = jax.grad(plain_loss)(P0, X, Y)
    opt = optax.masked(natural_gradient(1.0, FISHER, 1e-2), MASK)
    with pytest.raises(ValueError, match="full_params=params"):
        opt.update(grads, opt.init(P0), P0, batch=(X, Y))


def test_multi_transform_natural_gradient_and_adam():
    labels = {k: ("natural" if v else "adam") for k, v in MASK.items()}
    opt = optax.multi_transform(
        {"natural": natural_gradient(1.0, FISHER, 1e-2, solver="dense"), "adam": optax.adam(0.05)},
        labels,
    )

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(plain_loss)(params, X, Y)
        updates, opt_state = opt.update(grads, opt_state, params, batch=(X, Y), full_params=params)
        return optax.apply_updates(params, updates), opt_state, loss, grads, updates

    params, opt_state = P0, opt.init(P0)
    params, opt_state, loss0, grads, updates = step(params, opt_state)
    idx, direction = _reference_direction(P0, grads, 1e-2)
    np.testing.assert_allclose(ravel_pytree(updates)[0][idx], -direction, rtol=1e-12, atol=1e-14)
    adam = optax.adam(0.05)
    adam_part = {k: grads[k] for k in ("w1", "b2")}
    adam_updates, _ = adam.update(adam_part, adam.init(adam_part))
    tree_allclose({k: updates[k] for k in ("w1", "b2")}, adam_updates)
    for _ in range(5):
        params, opt_state, loss, *_ = step(params, opt_state)
    assert loss < 0.7 * loss0


def test_masked_manifold_fisher_is_the_metric_block():
    family = Poisson()
    fisher = manifold_fisher(family)
    params = {"a": jnp.array([0.3]), "b": jnp.array([-0.2, 0.4])}
    masked = {"a": optax.MaskedNode(), "b": params["b"]}
    # A 3-dimensional "family": three independent Poisson coordinates.
    from infogeo_jax import StatisticalManifold

    three = StatisticalManifold(lambda t: jnp.diag(jnp.exp(t)))
    block = manifold_fisher(three)(masked, full_params=params)
    np.testing.assert_allclose(block, jnp.diag(jnp.exp(params["b"])), **TOL)
    np.testing.assert_allclose(fisher(jnp.array([0.0])), [[1.0]], **TOL)


# --- inject_hyperparams -----------------------------------------------------------------------


def test_inject_hyperparams_natural_gradient_without_static_args():
    opt = optax.inject_hyperparams(natural_gradient)(
        learning_rate=0.5, fisher=FISHER, damping=1e-2, solver="dense"
    )

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(plain_loss)(params, X, Y)
        updates, opt_state = opt.update(grads, opt_state, params, batch=(X, Y))
        return optax.apply_updates(params, updates), opt_state, loss, updates

    params, opt_state = P0, opt.init(P0)
    losses = []
    for i in range(6):
        if i == 3:  # change the learning rate: no retrace
            opt_state.hyperparams["learning_rate"] = jnp.asarray(0.1, jnp.float64)
        params, opt_state, loss, updates = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]
    # The injected update equals the plain optimizer's with the same hyperparameters.
    plain = natural_gradient(0.1, FISHER, 1e-2, solver="dense")
    prev = optax.apply_updates(params, jax.tree.map(jnp.negative, updates))
    ref = first_update(plain, jax.grad(plain_loss)(prev, X, Y), prev, batch=(X, Y))
    tree_allclose(updates, ref, rtol=1e-10, atol=1e-12)


def test_fisher_builders_are_pytrees_of_arrays():
    # Under inject_hyperparams the Fisher sits in the optimizer state, which jit returns: its
    # leaves must be arrays (functions and other static parts live in the treedef).
    from flax import nnx

    from infogeo_jax import ExponentialFamily

    family = ExponentialFamily(lambda t: jnp.exp(t[0]))  # Poisson, as a bare log-partition
    builders = [
        manifold_fisher(family),
        predictive_fisher(eqx_net(), "categorical"),
        predictive_fisher(nnx_net()(True, nnx.Rngs(0)), "categorical"),
        empirical_fisher(lambda p, ex: -jnp.sum((ex - p) ** 2)),
        not_a_schedule(lambda p: p),
    ]
    for fisher in builders:
        assert all(eqx.is_array(leaf) for leaf in jax.tree.leaves(fisher)), fisher
        assert fisher(jnp.zeros((), jnp.int32)) is fisher  # a schedule call returns itself
    opt = optax.inject_hyperparams(natural_gradient)(
        1.0, manifold_fisher(family), damping=0.0, solver="dense"
    )
    step = jax.jit(lambda t, s: opt.update(jnp.exp(t) - 3.0, s, t))  # mean count 3
    theta, state = jnp.array([0.0]), opt.init(jnp.array([0.0]))
    for _ in range(8):  # Newton on the Poisson likelihood
        updates, state = step(theta, state)
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_allclose(theta, jnp.log(jnp.array([3.0])), **TOL)


def test_inject_hyperparams_mirror_descent_potential():
    potential = lambda x: jnp.sum(x * jnp.log(x) - x)  # exponential mirror map
    target = jnp.array([0.5, 2.0, 1.5])
    loss = lambda x: 0.5 * jnp.sum((x - target) ** 2)
    opt = optax.inject_hyperparams(mirror_descent)(0.5, not_a_schedule(potential))

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(x, opt_state):
        updates, opt_state = opt.update(jax.grad(loss)(x), opt_state, x)
        return optax.apply_updates(x, updates), opt_state

    x, opt_state = jnp.ones(3), opt.init(jnp.ones(3))
    x1, opt_state = step(x, opt_state)
    # Closed form of the exponential mirror step: x+ = x exp(-lr g).
    np.testing.assert_allclose(x1, x * jnp.exp(-0.5 * jax.grad(loss)(x)), **TOL)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(0.25, jnp.float64)
    x2, opt_state = step(x1, opt_state)
    np.testing.assert_allclose(x2, x1 * jnp.exp(-0.25 * jax.grad(loss)(x1)), **TOL)
    assert loss(x2) < loss(x)


def test_inject_hyperparams_plain_callable_error_names_the_fix():
    with pytest.raises(TypeError, match=r"static_args=\('potential',\).*not_a_schedule"):
        optax.inject_hyperparams(mirror_descent)(0.1, lambda x: 0.5 * jnp.sum(x**2)).init(
            jnp.ones(2)
        )
    with pytest.raises(TypeError, match=r"static_args=\('fisher',\)"):
        optax.inject_hyperparams(natural_gradient)(0.1, lambda p: jnp.eye(2)).init(jnp.ones(2))
    # The documented fixes work.
    opt = optax.inject_hyperparams(natural_gradient, static_args=("fisher",))(
        0.1, lambda p: jnp.eye(2), solver="dense"
    )
    updates, _ = opt.update(jnp.ones(2), opt.init(jnp.ones(2)), jnp.ones(2))
    np.testing.assert_allclose(updates, -0.1 / (1 + 1e-4) * jnp.ones(2), **TOL)


# --- gradient accumulation --------------------------------------------------------------------


def _counting(fisher, counter):
    def counted(params, **extra_args):
        jax.debug.callback(lambda: counter.append(1))
        return fisher(params, **extra_args)

    return counted


def test_multi_steps_one_solve_per_update_with_all_micro_batches():
    k, m = 4, X.shape[0] // 4
    calls = []
    inner = natural_gradient(0.5, _counting(FISHER, calls), 1e-2, solver="dense")
    opt = multi_steps(inner, k, batch_like=(X[:m], Y[:m]))

    @jax.jit
    def micro_step(params, opt_state, x, y):
        grads = jax.grad(plain_loss)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params, batch=(x, y))
        return optax.apply_updates(params, updates), opt_state, updates

    params, opt_state = P0, opt.init(P0)
    emitted = []
    for _ in range(3):  # three updates of four micro-batches each
        for j in range(k):
            params, opt_state, updates = micro_step(
                params, opt_state, X[j * m : (j + 1) * m], Y[j * m : (j + 1) * m]
            )
            emitted.append(bool(any(jnp.any(u != 0) for u in jax.tree.leaves(updates))))
        jax.effects_barrier()
    assert len(calls) == 3  # one Fisher (and one solve) per emitted update
    assert emitted == [False, False, False, True] * 3
    assert int(opt_state.gradient_step) == 3
    assert plain_loss(params, X, Y) < 0.8 * plain_loss(P0, X, Y)

    # Exact answer: the first emitted update is one step on the whole batch.
    at_p0 = jax.jit(lambda s, b: opt.update(jax.grad(plain_loss)(P0, *b), s, P0, batch=b))
    state = opt.init(P0)
    for j in range(k):
        updates, state = at_p0(state, (X[j * m : (j + 1) * m], Y[j * m : (j + 1) * m]))
    whole = natural_gradient(0.5, FISHER, 1e-2, solver="dense")
    ref = first_update(whole, jax.grad(plain_loss)(P0, X, Y), P0, batch=(X, Y))
    tree_allclose(updates, ref, rtol=1e-10, atol=1e-13)

    # optax.MultiSteps, for comparison, runs the wrapped update on every micro-step.
    calls.clear()
    wrapped = optax.MultiSteps(inner, k)
    step = jax.jit(
        lambda p, s, x, y: wrapped.update(jax.grad(plain_loss)(p, x, y), s, p, batch=(x, y))
    )
    s = wrapped.init(P0)
    for j in range(k):
        _, s = step(P0, s, X[j * m : (j + 1) * m], Y[j * m : (j + 1) * m])
    jax.effects_barrier()
    assert len(calls) == k


# --- warm start -------------------------------------------------------------------------------


def test_warm_start_is_used_in_a_training_loop():
    # Along one training trajectory, compare at each step the warm-started truncated CG
    # direction with the cold one and with the exact dense solve of the same system. With small
    # steps consecutive systems are close, and the warm start (the previous solution) is kept
    # and lands closer to the exact solution than two CG steps from zero.
    damping, LR = 1e-2, 0.05
    warm = natural_gradient(LR, FISHER, damping, cg_max_steps=2, cg_rtol=0.0, cg_atol=0.0)
    cold = natural_gradient(
        LR, FISHER, damping, cg_max_steps=2, cg_rtol=0.0, cg_atol=0.0, warm_start=False
    )
    exact = natural_gradient(LR, FISHER, damping, solver="dense")

    @jax.jit
    def step(params, state):
        grads = jax.grad(plain_loss)(params, X, Y)
        u_warm, state = warm.update(grads, state, params, batch=(X, Y))
        u_cold, _ = cold.update(grads, cold.init(params), params, batch=(X, Y))
        u_exact, _ = exact.update(grads, exact.init(params), params, batch=(X, Y))
        err = lambda u: jnp.linalg.norm(ravel_pytree(u)[0] - ravel_pytree(u_exact)[0])
        return optax.apply_updates(params, u_warm), state, err(u_warm), err(u_cold)

    params, state = P0, warm.init(P0)
    errors = []
    for _ in range(12):
        params, state, e_warm, e_cold = step(params, state)
        errors.append((float(e_warm), float(e_cold)))
    assert errors[0][0] == errors[0][1]  # nothing to warm-start from
    assert all(w < 0.9 * c for w, c in errors[1:]), errors
    assert plain_loss(params, X, Y) < 0.9 * plain_loss(P0, X, Y)


# --- the guide --------------------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "training_loop.md"


@pytest.mark.filterwarnings("ignore:scatter inputs have incompatible types")
def test_training_loop_guide_runs():
    # Every python block of the guide, in order, in one namespace (later blocks reuse the data).
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 8
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name}[block {i}]", "exec"), namespace)
