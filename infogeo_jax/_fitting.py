"""Data checks and moment matching, shared by maximum likelihood, the m-projections and EM."""

from __future__ import annotations

from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Point
from ._misc import check_real


def check_finite_data(data: Any) -> Any:
    """Raise (eagerly and under ``jit``) if a leaf of ``data`` holds NaN or inf."""
    leaves = jax.tree_util.tree_leaves(data)
    for leaf in leaves:
        check_real(leaf, "data")
    bad = jnp.zeros((), bool)
    for leaf in leaves:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad = bad | ~jnp.all(jnp.isfinite(leaf))
    return eqx.error_if(
        data, bad, "The data contain NaN or inf values; remove or impute them before fitting."
    )


def shifted_mean(stats: Array, weights: Array | None) -> Array:
    """Weighted mean of ``stats`` over the leading axis, accumulated around the first row."""
    shift = jax.lax.stop_gradient(stats[0])
    centered = stats - shift
    if weights is None:
        return shift + jnp.mean(centered, axis=0)
    return shift + weights @ centered


def degenerate_message(name: str) -> str:
    return (
        f"The data are degenerate for {name}: no member matches their moments (e.g. constant "
        "data, or data only on the boundary of the support such as all-zero Bernoulli data), "
        "so the maximum-likelihood estimate / m-projection does not exist."
    )


def fit_moments(family, data: Any, weights: Array | None, solve_kwargs: dict) -> Point:
    """Natural parameters matching the (weighted) moments of samples, or a clear error.

    ``weights`` are non-negative and sum to one (``None``: uniform).
    """
    name = type(family).__name__
    if isinstance(data, list):
        data = jnp.asarray(data)
    leaves = jax.tree_util.tree_leaves(data)
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) > 0 else None for leaf in leaves}
    if not leaves or None in sizes or len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "`data` must hold at least one sample stacked along a leading axis (shape "
            f"(n, ...), n >= 1), got {jax.tree_util.tree_map(jnp.shape, data)}."
        )
    data = check_finite_data(data)
    n = int(cast(int, sizes.pop()))
    if isinstance(data, jax.Array | np.ndarray):
        w = (
            jnp.full((n,), 1.0 / n, jnp.result_type(data.dtype, float))
            if weights is None
            else weights
        )
        closed = family._closed_form_fit(jnp.asarray(data), w)
        if closed is not None:
            theta, ok = closed
            return eqx.error_if(theta, ~ok, degenerate_message(name))
    stats = jax.vmap(family.sufficient_statistic)(data)
    if stats.ndim != 2 or (family.dim is not None and stats.shape[1] != family.dim):
        raise ValueError(
            f"`sufficient_statistic` gave shape {stats.shape[1:]} per sample, expected "
            f"({family.dim},)."
        )
    eta = shifted_mean(stats, weights)
    eta = eqx.error_if(eta, ~family.in_mean_domain(eta), degenerate_message(name))
    return family.natural_parameters(eta, **solve_kwargs)
