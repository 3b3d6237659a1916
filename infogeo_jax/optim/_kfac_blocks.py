r"""Kronecker-factored curvature blocks, found by tracing the model once (no layer tags).

The model ``apply(params, inputs)`` is traced with ``jax.make_jaxpr``. Every equation is
followed back to the parameter leaves: a value that is a parameter leaf moved only by
``transpose`` / ``reshape`` / ``squeeze`` / ``broadcast_in_dim`` (without replication) /
``convert_element_type`` is a *re-layout* of that leaf. A ``dot_general`` with one re-laid-out
leaf as an operand and an activation as the other, or a ``conv_general_dilated`` with a
re-laid-out leaf as its kernel, is a *site*: its output is
:math:`s = a W` row by row, with :math:`a` the (patch of the) input and :math:`W` the leaf
arranged as a ``(d_in, d_out)`` matrix. A leaf added (after broadcasting) to a site's output is
that site's bias, carried as the homogeneous coordinate of :math:`a`. Calls (``jit``,
``custom_jvp`` / ``custom_vjp``, ``checkpoint``) are looked into when parameters enter them,
and so is the body of a ``scan`` (a scanned or recurrent layer, ``fori_loop`` with a static trip
count) that parameters enter as constants: a site in the body is a site used at each of the
``length`` steps, :math:`s_t = a_t W`. A leaf entering a ``scan`` as carry or as scanned input
is unmatched, and so is a leaf used in ``while_loop`` or ``cond`` (not looked into). A leaf
whose every use is a site gets a Kronecker block that sums its uses: several sites (weight
tying) and the :math:`T` steps of a scanned site alike, every use contributing its rows
:math:`a_t` to :math:`A` and its pre-activation gradients :math:`g_t` to :math:`G`; every other
inexact leaf gets a diagonal block.

The same jaxpr is then re-evaluated by a small interpreter that records each site's input and
adds a zero perturbation to its output, so that one forward and one backward pass give the
layer inputs and the back-propagated pre-activation gradients of every site. A ``scan`` holding
sites is re-evaluated as a ``scan`` whose body runs through the same interpreter: the per-step
perturbations enter as extra scanned inputs and the per-step site inputs leave as extra
stacked outputs, both with the leading axes ``steps`` (the lengths of the enclosing scans).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from .._custom_types import PyTree

_SHAPE_OPS = frozenset(
    {"transpose", "reshape", "squeeze", "broadcast_in_dim", "convert_element_type", "copy"}
)
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


class KFACBlockInfo(NamedTuple):
    """One curvature block found in a model (see :func:`kfac_blocks`).

    Attributes:
        path: the parameter leaf (``jax.tree_util.keystr`` of its path in ``params``).
        kind: ``"dense"`` (matrix products), ``"conv"`` (convolution kernel) or ``"diagonal"``.
        bias_path: the leaf joined as the homogeneous coordinate, or ``None``.
        factor_shapes: ``((d_in, d_in), (d_out, d_out))`` for a Kronecker block (``d_in``
            counts the bias row; for a convolution it is ``in_channels * window size``), the
            leaf's shape ``(shape,)`` for a diagonal block.
        uses: how many uses the block sums: its sites, a site inside ``lax.scan`` counted once
            per step (more than one for a tied, scanned or recurrent weight).
    """

    path: str
    kind: str
    bias_path: str | None
    factor_shapes: tuple[tuple[int, ...], ...]
    uses: int


@dataclasses.dataclass(frozen=True)
class _Prov:
    """A value that is parameter leaf ``leaf`` moved by ``chain`` (shape ops only)."""

    leaf: int
    chain: tuple[tuple[str, Any], ...]
    replicates: bool


@dataclasses.dataclass
class _Site:
    key: tuple[int, ...]
    kind: str  # "dense" | "conv"
    leaf: int
    x_pos: int  # operand index of the activation
    index: np.ndarray  # (d_in, d_out): flat index into the leaf of each matrix entry
    out_shape: tuple[int, ...]
    out_dtype: Any
    row_perm: tuple[int, ...]  # transposes the output to (rows..., features...)
    x_perm: tuple[int, ...] = ()  # dense: transposes the input to (rows..., contracted...)
    conv: dict[str, Any] | None = None
    bias: int | None = None  # leaf index of the joined bias
    steps: tuple[int, ...] = ()  # lengths of the enclosing scans (outermost first)


@dataclasses.dataclass
class _KronBlock:
    kind: str
    leaf: int
    sites: list[int]
    index: np.ndarray
    bias: int | None = None
    bias_index: np.ndarray | None = None  # (d_out,): flat index into the bias leaf

    @property
    def layout(self) -> str:
        """How the leaf is laid out as the ``(d_in, d_out)`` matrix.

        ``"rows"``: the leaf reshaped; ``"columns"``: the leaf reshaped to ``(d_out, d_in)``
        and transposed (equinox's ``W @ x``); ``"gather"``: any other permutation.
        """
        d_in, d_out = self.index.shape
        flat = np.arange(d_in * d_out)
        if np.array_equal(self.index, flat.reshape(d_in, d_out)):
            return "rows"
        if np.array_equal(self.index, flat.reshape(d_out, d_in).T):
            return "columns"
        return "gather"

    @property
    def d_in(self) -> int:
        return self.index.shape[0] + (self.bias is not None)

    @property
    def d_out(self) -> int:
        return self.index.shape[1]


@dataclasses.dataclass
class Plan:
    """The blocks of a model and how to re-evaluate it with site perturbations."""

    paths: list[str]
    sites: list[_Site]
    blocks: list[_KronBlock]
    diagonal: list[int]
    inlined: frozenset[tuple[int, ...]]
    site_of_key: dict[tuple[int, ...], int]
    closed: Any  # the ClosedJaxpr of apply
    params_treedef: Any
    num_param_leaves: int
    inputs_treedef: Any
    out_treedef: Any

    def info(self, params_leaves: Sequence[Any]) -> tuple[KFACBlockInfo, ...]:
        rows: list[tuple[int, KFACBlockInfo]] = []
        for b in self.blocks:
            bias = None if b.bias is None else self.paths[b.bias]
            shapes = ((b.d_in, b.d_in), (b.d_out, b.d_out))
            n_uses = sum(_size_of(self.sites[s].steps) for s in b.sites)
            rows.append((b.leaf, KFACBlockInfo(self.paths[b.leaf], b.kind, bias, shapes, n_uses)))
        for i in self.diagonal:
            shape = tuple(np.shape(params_leaves[i]))
            rows.append((i, KFACBlockInfo(self.paths[i], "diagonal", None, (shape,), 0)))
        return tuple(r for _, r in sorted(rows, key=lambda t: t[0]))


def _sub_jaxpr(eqn) -> tuple[Any, Sequence[Any]] | None:
    name = _CALLS.get(eqn.primitive.name)
    if name is None or name not in eqn.params:
        return None
    sub = eqn.params[name]
    if isinstance(sub, jex.core.ClosedJaxpr):
        return sub.jaxpr, sub.consts
    return sub, ()


def _np_shape_op(name: str, params: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Replay a shape op on an integer array (the layout bookkeeping of the leaves)."""
    if name == "transpose":
        return np.transpose(x, params["permutation"])
    if name == "reshape":
        if params.get("dimensions") is not None:
            x = np.transpose(x, params["dimensions"])
        return np.reshape(x, params["new_sizes"])
    if name == "squeeze":
        return np.squeeze(x, axis=tuple(params["dimensions"]))
    if name == "broadcast_in_dim":
        shape = tuple(params["shape"])
        expanded = [1] * len(shape)
        for i, d in enumerate(params["broadcast_dimensions"]):
            expanded[d] = x.shape[i]
        return np.broadcast_to(np.reshape(x, expanded), shape)
    return x  # convert_element_type, copy: the layout is unchanged


def _replay(chain: tuple[tuple[str, Any], ...], x: np.ndarray) -> np.ndarray:
    for name, params in chain:
        x = _np_shape_op(name, params, x)
    return x


def _shape(aval) -> tuple[int, ...]:
    return tuple(aval.shape)


def _size(aval) -> int:
    return int(np.prod(aval.shape, dtype=np.int64))


@dataclasses.dataclass
class _Ctx:
    leaf_shapes: list[tuple[int, ...]]
    sites: list[_Site] = dataclasses.field(default_factory=list)
    other_uses: set[int] = dataclasses.field(default_factory=set)
    # (bias leaf, bias chain, site index, output chain, add output shape)
    bias_candidates: list[tuple[int, Any, int, Any, tuple[int, ...]]] = dataclasses.field(
        default_factory=list
    )
    inlined: set[tuple[int, ...]] = dataclasses.field(default_factory=set)


def _dense_site(eqn, key, ins, ctx: _Ctx) -> _Site | None:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if lb or rb:
        return None
    w_pos = 0 if ins[0] is not None else 1
    x_pos = 1 - w_pos
    prov = ins[w_pos]
    w_aval, x_aval = eqn.invars[w_pos].aval, eqn.invars[x_pos].aval
    w_contract, x_contract = (lc, rc) if w_pos == 0 else (rc, lc)
    w_free = [d for d in range(len(w_aval.shape)) if d not in w_contract]
    x_free = [d for d in range(len(x_aval.shape)) if d not in x_contract]
    codes = _replay(
        prov.chain,
        np.arange(_size_of(ctx.leaf_shapes[prov.leaf])).reshape(ctx.leaf_shapes[prov.leaf]),
    )
    d_in = int(np.prod([w_aval.shape[d] for d in w_contract], dtype=np.int64))
    d_out = int(np.prod([w_aval.shape[d] for d in w_free], dtype=np.int64))
    index = np.transpose(codes, (*w_contract, *w_free)).reshape(d_in, d_out)
    out_aval = eqn.outvars[0].aval
    n_out = len(out_aval.shape)
    # dot_general output dims: (lhs free..., rhs free...); the weight's free dims are features.
    if w_pos == 1:
        feat = list(range(len(x_free), n_out))
        rows = list(range(len(x_free)))
    else:
        feat = list(range(len(w_free)))
        rows = list(range(len(w_free), n_out))
    return _Site(
        key=key,
        kind="dense",
        leaf=prov.leaf,
        x_pos=x_pos,
        index=index,
        out_shape=tuple(out_aval.shape),
        out_dtype=out_aval.dtype,
        row_perm=(*rows, *feat),
        x_perm=(*x_free, *x_contract),
    )


def _size_of(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _conv_site(eqn, key, ins, ctx: _Ctx) -> _Site | None:
    p = eqn.params
    if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        return None
    prov = ins[1]
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    k_aval = eqn.invars[1].aval
    shape = ctx.leaf_shapes[prov.leaf]
    codes = _replay(prov.chain, np.arange(_size_of(shape)).reshape(shape))
    # Patches are ordered (in-channel, window...) on the feature axis.
    codes = np.transpose(codes, (rhs_spec[1], *rhs_spec[2:], rhs_spec[0]))
    index = codes.reshape(-1, k_aval.shape[rhs_spec[0]])
    out_aval = eqn.outvars[0].aval
    conv = dict(
        filter_shape=tuple(k_aval.shape[d] for d in rhs_spec[2:]),
        window_strides=p["window_strides"],
        padding=p["padding"],
        lhs_dilation=p["lhs_dilation"],
        rhs_dilation=p["rhs_dilation"],
        dimension_numbers=dn,
    )
    del lhs_spec
    return _Site(
        key=key,
        kind="conv",
        leaf=prov.leaf,
        x_pos=0,
        index=index,
        out_shape=tuple(out_aval.shape),
        out_dtype=out_aval.dtype,
        row_perm=(out_spec[0], *out_spec[2:], out_spec[1]),
        conv=conv,
    )


def _analyze(
    jaxpr,
    prov_in: Sequence[_Prov | None],
    path: tuple[int, ...],
    ctx: _Ctx,
    steps: tuple[int, ...] = (),
) -> None:
    prov: dict[Any, _Prov] = {}
    site_out: dict[Any, tuple[int, tuple]] = {}  # var -> (site, output chain)
    uses: dict[Any, int] = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if isinstance(v, jex.core.Var):
                uses[v] = uses.get(v, 0) + 1
    for v in jaxpr.outvars:
        if isinstance(v, jex.core.Var):
            uses[v] = uses.get(v, 0) + 1
    for v, p in zip(jaxpr.invars, prov_in):
        if p is not None:
            prov[v] = p

    def get(v):
        return prov.get(v) if isinstance(v, jex.core.Var) else None

    for i, eqn in enumerate(jaxpr.eqns):
        key = (*path, i)
        ins = [get(v) for v in eqn.invars]
        name = eqn.primitive.name
        single = len(eqn.invars) == 1 and len(eqn.outvars) == 1
        if not any(ins):
            v = eqn.invars[0] if eqn.invars else None
            if (
                name in _SHAPE_OPS
                and single
                and isinstance(v, jex.core.Var)
                and v in site_out
                and uses.get(v) == 1
                and _size(eqn.outvars[0].aval) == _size(v.aval)
            ):
                s, chain = site_out[v]
                site_out[eqn.outvars[0]] = (s, (*chain, (name, eqn.params)))
            elif name == "add":
                # A sum of activations passes its cotangent unchanged to a site output among
                # them (``h @ W + x @ U``): a bias added to the sum joins that (first) site.
                for v in eqn.invars:
                    if (
                        isinstance(v, jex.core.Var)
                        and v in site_out
                        and uses.get(v) == 1
                        and _shape(v.aval) == _shape(eqn.outvars[0].aval)
                    ):
                        site_out[eqn.outvars[0]] = site_out[v]
                        break
            continue
        if name in _SHAPE_OPS and single:
            p = ins[0]
            assert p is not None
            grows = _size(eqn.outvars[0].aval) != _size(eqn.invars[0].aval)
            prov[eqn.outvars[0]] = _Prov(
                p.leaf, (*p.chain, (name, eqn.params)), p.replicates or grows
            )
            continue
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            sub_jaxpr, _ = sub
            ctx.inlined.add(key)
            _analyze(sub_jaxpr, ins, key, ctx, steps)
            continue
        if name == "scan":
            # Leaves entering as constants are the same at every step: look into the body.
            # A leaf entering as carry or scanned input changes or is sliced: unmatched.
            n_consts = eqn.params["num_consts"]
            for p in ins[n_consts:]:
                if p is not None:
                    ctx.other_uses.add(p.leaf)
            ctx.inlined.add(key)
            body_in = [*ins[:n_consts], *([None] * (len(ins) - n_consts))]
            _analyze(eqn.params["jaxpr"].jaxpr, body_in, key, ctx, (*steps, eqn.params["length"]))
            continue
        n_prov = sum(p is not None for p in ins)
        site = None
        if name == "dot_general" and n_prov == 1 and not any(p.replicates for p in ins if p):
            site = _dense_site(eqn, key, ins, ctx)
        elif (
            name == "conv_general_dilated"
            and ins[0] is None
            and ins[1] is not None
            and not ins[1].replicates
        ):
            site = _conv_site(eqn, key, ins, ctx)
        if site is not None:
            site.steps = steps
            ctx.sites.append(site)
            site_out[eqn.outvars[0]] = (len(ctx.sites) - 1, ())
            continue
        if name == "add" and n_prov == 1:
            b_pos = 0 if ins[0] is not None else 1
            other = eqn.invars[1 - b_pos]
            if isinstance(other, jex.core.Var) and other in site_out and uses.get(other) == 1:
                s, chain = site_out[other]
                p = ins[b_pos]
                assert p is not None
                ctx.bias_candidates.append(
                    (p.leaf, p.chain, s, chain, tuple(eqn.outvars[0].aval.shape))
                )
                continue
        for p in ins:
            if p is not None:
                ctx.other_uses.add(p.leaf)


def _bias_index(ctx: _Ctx, cand, site: _Site) -> np.ndarray | None:
    """The flat bias index of each output feature, or None if the add is not a bias."""
    b_leaf, b_chain, _, out_chain, add_shape = cand
    b_shape = ctx.leaf_shapes[b_leaf]
    b_codes = _replay(b_chain, np.arange(_size_of(b_shape)).reshape(b_shape))
    try:
        b_codes = np.broadcast_to(b_codes, add_shape)
    except ValueError:
        return None
    out_codes = _replay(out_chain, np.arange(_size_of(site.out_shape)).reshape(site.out_shape))
    if out_codes.shape != add_shape:
        return None
    in_site_layout = np.empty(_size_of(site.out_shape), np.int64)
    in_site_layout[out_codes.ravel()] = b_codes.ravel()
    rows = np.transpose(in_site_layout.reshape(site.out_shape), site.row_perm)
    d_out = site.index.shape[1]
    rows = rows.reshape(-1, d_out)
    first = rows[0]
    if _size_of(b_shape) != d_out or not np.all(rows == first[None, :]):
        return None
    if not np.array_equal(np.sort(first), np.arange(d_out)):
        return None
    return first


def build_plan(apply: Callable[[PyTree, Any], Any], params: PyTree, inputs: Any) -> Plan:
    """Trace ``apply(params, inputs)`` once and find its curvature blocks.

    Args:
        apply: ``apply(params, inputs) -> outputs`` (batch-leading outputs).
        params: the parameter pytree (arrays, tracers or ``jax.ShapeDtypeStruct``).
        inputs: a batch of inputs (arrays or ``jax.ShapeDtypeStruct``; only shapes matter).

    Returns:
        The plan: sites, Kronecker and diagonal blocks, and the traced jaxpr.
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves = [leaf for _, leaf in with_path]
    paths = [jax.tree_util.keystr(p) for p, _ in with_path]
    closed, out_shape = jax.make_jaxpr(apply, return_shape=True)(params, inputs)
    in_leaves, in_treedef = jax.tree.flatten(inputs)
    shapes = [tuple(np.shape(leaf)) for leaf in leaves]
    inexact = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]
    ctx = _Ctx(leaf_shapes=shapes)
    prov_in: list[_Prov | None] = [
        _Prov(i, (), False) if inexact[i] else None for i in range(len(leaves))
    ]
    prov_in += [None] * len(in_leaves)
    _analyze(closed.jaxpr, prov_in, (), ctx)

    # Kronecker blocks: leaves used only as site weights, with one layout for all their uses.
    by_leaf: dict[int, list[int]] = {}
    for s, site in enumerate(ctx.sites):
        by_leaf.setdefault(site.leaf, []).append(s)
    bias_leaves = {c[0] for c in ctx.bias_candidates}
    blocks: dict[int, _KronBlock] = {}
    for leaf, site_ids in by_leaf.items():
        first = ctx.sites[site_ids[0]]
        same = all(
            ctx.sites[s].kind == first.kind and np.array_equal(ctx.sites[s].index, first.index)
            for s in site_ids
        )
        if leaf in ctx.other_uses or leaf in bias_leaves or not same:
            continue
        if not np.array_equal(np.sort(first.index.ravel()), np.arange(_size_of(shapes[leaf]))):
            continue
        blocks[leaf] = _KronBlock(first.kind, leaf, list(site_ids), first.index)
    # Biases: every use of the leaf is an add to a site of the same Kronecker block.
    by_bias: dict[int, list[Any]] = {}
    for cand in ctx.bias_candidates:
        by_bias.setdefault(cand[0], []).append(cand)
    for b_leaf, cands in by_bias.items():
        if b_leaf in ctx.other_uses or b_leaf in by_leaf:
            continue
        owners = {ctx.sites[c[2]].leaf for c in cands}
        if len(owners) != 1 or next(iter(owners)) not in blocks:
            continue
        block = blocks[next(iter(owners))]
        if block.bias is not None:
            continue
        found = [_bias_index(ctx, c, ctx.sites[c[2]]) for c in cands]
        indices = [ix for ix in found if ix is not None]
        sites_with = [c[2] for c in cands]
        if len(indices) != len(found) or len(set(sites_with)) != len(sites_with):
            continue
        if not all(np.array_equal(ix, indices[0]) for ix in indices):
            continue
        block.bias, block.bias_index = b_leaf, indices[0]
        for s in sites_with:
            ctx.sites[s].bias = b_leaf
    matched = set(blocks) | {b.bias for b in blocks.values() if b.bias is not None}
    diagonal = [i for i in range(len(leaves)) if inexact[i] and i not in matched]
    # Only the sites of Kronecker blocks are perturbed and recorded.
    kept = [s for s, site in enumerate(ctx.sites) if site.leaf in blocks]
    renumber = {s: j for j, s in enumerate(kept)}
    sites = [ctx.sites[s] for s in kept]
    block_list = [blocks[k] for k in sorted(blocks)]
    for b in block_list:
        b.sites = [renumber[s] for s in b.sites]
    return Plan(
        paths=paths,
        sites=sites,
        blocks=block_list,
        diagonal=diagonal,
        inlined=frozenset(ctx.inlined),
        site_of_key={site.key: j for j, site in enumerate(sites)},
        closed=closed,
        params_treedef=treedef,
        num_param_leaves=len(leaves),
        inputs_treedef=in_treedef,
        out_treedef=jax.tree.structure(out_shape),
    )


def restrict_plan(plan: Plan, selected: set[int]) -> Plan:
    """The plan of the leaves in ``selected`` only (``optax.masked``: the others are frozen).

    A block whose weight is not selected is dropped (its selected bias becomes diagonal); a
    selected weight whose bias is not selected keeps its block without the homogeneous row.
    Only the kept blocks' sites are perturbed and recorded.
    """
    blocks: list[_KronBlock] = []
    diagonal = [i for i in plan.diagonal if i in selected]
    kept_sites: list[int] = []
    for b in plan.blocks:
        if b.leaf not in selected:
            if b.bias is not None and b.bias in selected:
                diagonal.append(b.bias)
            continue
        if b.bias is not None and b.bias not in selected:
            b = dataclasses.replace(b, bias=None, bias_index=None)
        blocks.append(dataclasses.replace(b, sites=list(b.sites)))
        kept_sites += b.sites
    renumber = {s: j for j, s in enumerate(kept_sites)}
    sites = []
    for s in kept_sites:
        site = plan.sites[s]
        if site.bias is not None and site.bias not in selected:
            site = dataclasses.replace(site, bias=None)
        sites.append(site)
    for b in blocks:
        b.sites = [renumber[s] for s in b.sites]
    return dataclasses.replace(
        plan,
        sites=sites,
        blocks=blocks,
        diagonal=sorted(diagonal),
        site_of_key={site.key: j for j, site in enumerate(sites)},
    )


def _bind(eqn, invals: list[Any]) -> list[Any]:
    bind_params = eqn.primitive.get_bind_params(eqn.params)
    subfuns: list[Any] = []
    if isinstance(bind_params, tuple):  # older JAX: (subfuns, params)
        subfuns, bind_params = bind_params
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **bind_params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _evaluate_scan(eqn, invals, key, plan: Plan, perts, acts: dict[int, Any]) -> list[Any]:
    """A ``scan`` holding sites, as a ``scan`` whose body runs through :func:`_evaluate`.

    The per-step perturbations of the body's sites are extra scanned inputs and their per-step
    inputs extra stacked outputs (``reverse`` and ``unroll`` pass through unchanged).
    """
    p = eqn.params
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    body = p["jaxpr"]
    inner = [j for j, s in enumerate(plan.sites) if s.key[: len(key)] == key]
    if not inner:
        return _bind(eqn, invals)
    consts, init, xs = (
        invals[:n_consts],
        invals[n_consts : n_consts + n_carry],
        invals[n_consts + n_carry :],
    )

    def step(carry, x):
        xs_t, perts_t = x
        view = list(perts)
        for j, pt in zip(inner, perts_t):
            view[j] = pt
        step_acts: dict[int, Any] = {}
        outs = _evaluate(
            body.jaxpr, body.consts, [*consts, *carry, *xs_t], key, plan, view, step_acts
        )
        return outs[:n_carry], (outs[n_carry:], [step_acts[j] for j in inner])

    carry, (ys, inner_acts) = jax.lax.scan(
        step,
        init,
        (xs, [perts[j] for j in inner]),
        length=p["length"],
        reverse=p["reverse"],
        unroll=p["unroll"],
    )
    for j, a in zip(inner, inner_acts):
        acts[j] = a
    return [*carry, *ys]


def _evaluate(jaxpr, consts, args, path, plan: Plan, perts, acts: dict[int, Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex.core.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for i, eqn in enumerate(jaxpr.eqns):
        key = (*path, i)
        invals = [read(v) for v in eqn.invars]
        if key in plan.inlined and eqn.primitive.name == "scan":
            outs = _evaluate_scan(eqn, invals, key, plan, perts, acts)
        elif key in plan.inlined:
            sub = _sub_jaxpr(eqn)
            assert sub is not None
            outs = _evaluate(sub[0], sub[1], invals, key, plan, perts, acts)
        else:
            outs = _bind(eqn, invals)
            j = plan.site_of_key.get(key)
            if j is not None:
                acts[j] = invals[plan.sites[j].x_pos]
                outs = [outs[0] + perts[j].astype(outs[0].dtype)]
        for v, x in zip(eqn.outvars, outs):
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def perturbed_apply(
    plan: Plan, params: PyTree, inputs: Any, perts: Sequence[Any]
) -> tuple[Any, list[Any]]:
    """Evaluate the model with ``perts[j]`` added to site ``j``'s output.

    A site inside ``lax.scan`` takes ``perts[j]`` stacked over the steps, of shape
    ``(*site.steps, *site.out_shape)``, and its input is returned stacked likewise.

    Returns:
        ``(outputs, site_inputs)``: the model's outputs and the activation operand of each site.
    """
    args = [*jax.tree.leaves(params), *jax.tree.leaves(inputs)]
    acts: dict[int, Any] = {}
    outs = _evaluate(plan.closed.jaxpr, plan.closed.consts, args, (), plan, perts, acts)
    return jax.tree.unflatten(plan.out_treedef, outs), [acts[j] for j in range(len(plan.sites))]


def zero_perturbations(plan: Plan) -> list[jax.Array]:
    return [jnp.zeros((*s.steps, *s.out_shape), s.out_dtype) for s in plan.sites]


def _per_step(site: _Site, x: jax.Array, rows: Callable[[_Site, jax.Array], jax.Array], d: int):
    """``rows`` of each step of a scanned site, stacked as ``(steps * rows, d)``."""
    inner = dataclasses.replace(site, steps=())
    flat = x.reshape(-1, *x.shape[len(site.steps) :])
    return jax.vmap(lambda t: rows(inner, t))(flat).reshape(-1, d)


def input_rows(site: _Site, x: jax.Array) -> jax.Array:
    """The site's inputs as rows ``(rows, d_in)`` (patches for a convolution), no bias column.

    A scanned site's stacked inputs give the rows of every step (each step is one use).
    """
    if site.steps:
        return _per_step(site, x, input_rows, site.index.shape[0])
    if site.kind == "conv":
        assert site.conv is not None
        c = site.conv
        patches = jax.lax.conv_general_dilated_patches(
            x,
            c["filter_shape"],
            c["window_strides"],
            c["padding"],
            lhs_dilation=c["lhs_dilation"],
            rhs_dilation=c["rhs_dilation"],
            dimension_numbers=c["dimension_numbers"],
        )
        out = jnp.transpose(patches, site.row_perm)
    else:
        out = jnp.transpose(x, site.x_perm)
    return out.reshape(-1, site.index.shape[0])


def output_rows(site: _Site, g: jax.Array) -> jax.Array:
    """The site's output (or its cotangent) as rows ``(rows, d_out)`` (every step if scanned)."""
    if site.steps:
        return _per_step(site, g, output_rows, site.index.shape[1])
    return jnp.transpose(g, site.row_perm).reshape(-1, site.index.shape[1])


def block_matrix(block: _KronBlock, leaves: Sequence[Any]) -> jax.Array:
    """The leaf (and bias) of a Kronecker block as one ``(d_in, d_out)`` matrix.

    Reshapes and transposes where the layout allows (no gathers on the common layouts).
    """
    d_in, d_out = block.index.shape
    leaf = jnp.asarray(leaves[block.leaf])
    layout = block.layout
    if layout == "rows":
        w = leaf.reshape(d_in, d_out)
    elif layout == "columns":
        w = leaf.reshape(d_out, d_in).T
    else:
        w = jnp.ravel(leaf)[block.index]
    if block.bias is None:
        return w
    assert block.bias_index is not None
    b = jnp.ravel(leaves[block.bias])
    if not np.array_equal(block.bias_index, np.arange(d_out)):
        b = b[block.bias_index]
    return jnp.concatenate([w, b[None, :].astype(w.dtype)], axis=0)


def unblock_matrix(block: _KronBlock, matrix: jax.Array, leaves: Sequence[Any]) -> dict[int, Any]:
    """Inverse of :func:`block_matrix`: ``{leaf index: leaf-shaped array}``.

    The index of a block is a permutation of the leaf's entries (checked when the plan is
    built), so the inverse is a reshape, a transpose or a gather by the inverse permutation.
    """
    d_in, d_out = block.index.shape
    shape = np.shape(leaves[block.leaf])
    w = matrix[:d_in]
    layout = block.layout
    if layout == "rows":
        w_leaf = w.reshape(shape)
    elif layout == "columns":
        w_leaf = w.T.reshape(shape)
    else:
        w_leaf = jnp.ravel(w)[np.argsort(block.index.ravel())].reshape(shape)
    out = {block.leaf: w_leaf}
    if block.bias is not None:
        assert block.bias_index is not None
        b = matrix[-1]
        if not np.array_equal(block.bias_index, np.arange(d_out)):
            b = b[np.argsort(block.bias_index)]
        out[block.bias] = b.reshape(np.shape(leaves[block.bias]))
    return out


def kfac_blocks(
    apply: Callable[[PyTree, Any], Any], params: PyTree, inputs: Any
) -> tuple[KFACBlockInfo, ...]:
    r"""The curvature blocks that :func:`scale_by_kfac` finds in a model.

    ``apply`` is traced once; a parameter leaf that enters matrix products (``dot_general``,
    through transposes, reshapes, dtype casts, under ``vmap`` or not) or is a convolution kernel
    gets a Kronecker block :math:`A \otimes G` of shapes ``(d_in, d_in)`` and
    ``(d_out, d_out)``; a leaf added to such a product's output is its bias (one more row of
    ``A``, the homogeneous coordinate); a weight used in several products sums its uses. A
    weight used inside a ``lax.scan`` body (a scanned or recurrent layer, entering the scan as a
    constant, as a closure does) is used once per step: its :math:`T` steps are summed as
    :math:`T` uses, the rows :math:`a_t` of every step averaged into :math:`A` and the
    pre-activation gradients :math:`g_t` summed into :math:`G`, as for a tied weight. Every
    other inexact leaf gets a diagonal block, among them a leaf entering a ``scan`` as carry or
    scanned input and a leaf used in ``while_loop`` or ``cond`` (not looked into).

    Args:
        apply: the model, in any form :func:`predictive_fisher` takes (a function
            ``apply(params, inputs)`` with batch-leading outputs, an equinox module, a flax
            nnx or linen module, a haiku transform).
        params: the parameter pytree.
        inputs: a batch of inputs (or ``jax.ShapeDtypeStruct`` s of one); only shapes matter.

    Returns:
        One :class:`KFACBlockInfo` per block, in the order of ``jax.tree.leaves(params)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from infogeo_jax.optim import kfac_blocks
        >>> params = {"W": jnp.zeros((3, 2)), "b": jnp.zeros(2), "s": jnp.ones(())}
        >>> apply = lambda p, x: p["s"] * jnp.tanh(x @ p["W"] + p["b"])
        >>> for block in kfac_blocks(apply, params, jnp.zeros((5, 3))):
        ...     print(block.path, block.kind, block.bias_path, block.factor_shapes)
        ['W'] dense ['b'] ((4, 4), (2, 2))
        ['s'] diagonal None ((),)

        A recurrent layer scanned over 7 steps: each weight's block sums its 7 uses.

        >>> params = {"U": jnp.zeros((3, 2)), "W": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
        >>> def rnn(p, xs):  # xs: (batch, time, 3)
        ...     cell = lambda h, x: (jnp.tanh(h @ p["W"] + x @ p["U"] + p["b"]), None)
        ...     h0 = jnp.zeros((xs.shape[0], 2), xs.dtype)
        ...     return jax.lax.scan(cell, h0, jnp.swapaxes(xs, 0, 1))[0]
        >>> for block in kfac_blocks(rnn, params, jnp.zeros((5, 7, 3))):
        ...     print(block.path, block.kind, block.bias_path, block.factor_shapes, block.uses)
        ['U'] dense None ((3, 3), (2, 2)) 7
        ['W'] dense ['b'] ((3, 3), (2, 2)) 7

    References:
        Martens & Grosse, *Optimizing neural networks with Kronecker-factored approximate
        curvature*, ICML 2015, Sec. 3; Grosse & Martens, *A Kronecker-factored approximate
        Fisher matrix for convolution layers*, ICML 2016, Sec. 3.
    """
    from ._apply import as_apply

    plan = build_plan(as_apply(apply), params, inputs)
    return plan.info(jax.tree.leaves(params))
