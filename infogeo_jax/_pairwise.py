r"""Fisher-Rao distance matrices: closed forms where there is one, batched solves otherwise."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Float, PointLike
from ._geodesic_methods import settings as _settings
from ._manifold import AbstractStatisticalManifold
from ._results import RESULTS
from .geometry import _geodesic
from .geometry._geodesic import GeodesicSolver


def _has_closed_form(manifold: AbstractStatisticalManifold) -> bool:
    """Whether the class has a closed-form distance (or its own ``geodesic_distance``)."""
    cls = type(manifold)
    base = AbstractStatisticalManifold
    return (
        cls._geodesic_distance_closed_form is not base._geodesic_distance_closed_form
        or cls.geodesic_distance is not base.geodesic_distance
    )


def _as_points(points, name: str, dim: int | None) -> Array:
    points = jnp.asarray(points)
    if points.ndim != 2:
        raise ValueError(
            f"`{name}` must be a 2-D array of points (batch, dim), got shape {points.shape}."
        )
    if not jnp.issubdtype(points.dtype, jnp.floating):
        points = points.astype(jnp.result_type(float))
    if dim is not None and points.shape[1] != dim:
        raise ValueError(f"`{name}` must have points of length {dim}, got shape {points.shape}.")
    return points


def _pair_distances(manifold, theta_0, theta_1, cfg, closed: bool):
    """Distances and result codes of the pairs ``(theta_0[k], theta_1[k])``."""
    if closed:
        dist = jax.vmap(manifold.geodesic_distance)(theta_0, theta_1)
        code = lambda d: RESULTS.where(  # noqa: E731
            jnp.isfinite(d), RESULTS.successful, RESULTS.max_newton_steps_reached
        )
        return dist, jax.vmap(code)(dist)

    def one(a, b):
        # The points were checked by `pairwise_distances`, before the jitted solve.
        dist, raw = _geodesic.distance_core(manifold, a, b, cfg)
        return dist, _geodesic.solution_from_status(*raw[:5]).result

    return jax.vmap(one)(theta_0, theta_1)


def _sharded(fn, theta_0, theta_1):
    """Run ``fn`` on the pair batch split over every device (one shard of pairs each)."""
    devices = jax.devices()
    count = len(devices)
    if count == 1 or theta_0.shape[0] < count:
        return fn(theta_0, theta_1)
    size = theta_0.shape[0]
    padded = -(-size // count) * count
    # Pad with copies of the first pair (a valid, solvable pair), dropped afterwards.
    pad = lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (padded - size,) + x.shape[1:])])
    mesh = jax.sharding.Mesh(np.asarray(devices), ("pairs",))
    spec = jax.sharding.PartitionSpec("pairs")
    # check_vma=False: the domain checks (equinox.error_if) inside are per-shard conditionals.
    out = jax.shard_map(fn, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False)(
        pad(theta_0), pad(theta_1)
    )
    return jax.tree_util.tree_map(lambda x: x[:size], out)


@eqx.filter_jit
def _pairwise_impl(manifold, points_a, points_b, cfg, closed: bool, symmetric: bool):
    n = points_a.shape[0]
    m = n if symmetric else points_b.shape[0]
    if symmetric:
        rows, cols = np.triu_indices(n, 1)
    else:
        rows, cols = (a.reshape(-1) for a in np.indices((n, m)))
    rows, cols = jnp.asarray(rows), jnp.asarray(cols)
    other = points_a if symmetric else points_b
    fn = lambda a, b: _pair_distances(manifold, a, b, cfg, closed)  # noqa: E731
    dist, result = _sharded(fn, points_a[rows], other[cols])
    dtype = points_a.dtype

    def assemble(values, fill):
        out = jnp.full((n, m), fill, values.dtype).at[rows, cols].set(values)
        return out.at[cols, rows].set(values) if symmetric else out

    matrix = assemble(dist.astype(dtype), jnp.zeros((), dtype))
    results = jax.tree_util.tree_map(assemble, result, RESULTS.successful)
    return matrix, results


def pairwise_distances(
    manifold: AbstractStatisticalManifold,
    points_a: Float[PointLike, "n dim"],
    points_b: Float[PointLike, "m dim"] | None = None,
    *,
    solver: GeodesicSolver | None = None,
    throw: bool = True,
    return_results: bool = False,
) -> Float[Array, "n m"] | tuple[Float[Array, "n m"], RESULTS]:
    r"""Fisher-Rao distance matrix :math:`D_{ij} = d(a_i, b_j)` of two batches of points.

    :math:`d` is :meth:`~infogeo_jax.AbstractStatisticalManifold.geodesic_distance`, the
    length of the Levi-Civita geodesic. Where the family overrides it with a closed form
    (Bernoulli, Binomial, Categorical, Poisson, Exponential, Normal) that is used, vectorized;
    otherwise every pair is solved by the batched shooting solver (under ``jax.vmap`` easy
    pairs leave a work-queue window as soon as they converge). With ``points_b=None`` the
    matrix of ``points_a`` against itself is built from its upper triangle alone:
    :math:`D_{ij} = D_{ji}`, :math:`D_{ii} = 0`. When several devices are present the pairs
    are split evenly over all of them (``jax.shard_map`` over a one-axis mesh).

    Args:
        manifold: any statistical manifold (family, model or user metric).
        points_a: points, shape ``(n, dim)``.
        points_b: points, shape ``(m, dim)``, or ``None`` for ``points_a`` against itself.
        solver: numerical settings of the shooting solves
            (:class:`infogeo_jax.geometry.GeodesicSolver`).
        throw: raise (also under ``jit``) if the solve of any pair did not converge. With
            ``throw=False`` such entries hold the solver's last iterate; inspect the result
            codes.
        return_results: also return the result codes, a :class:`infogeo_jax.geometry.RESULTS`
            item of shape ``(n, m)`` (``RESULTS.successful`` where converged).

    Returns:
        The distance matrix, shape ``(n, m)`` (and the result codes with
        ``return_results=True``).

    Raises:
        ValueError: if the points are not 2-D arrays of matching dimension.
        equinox.EquinoxRuntimeError: if a point is outside the domain, or a solve did not
            converge and ``throw=True``.

    Example:
        >>> import jax.numpy as jnp
        >>> import infogeo_jax as ig
        >>> from infogeo_jax.families import Poisson
        >>> theta = jnp.log(jnp.array([[1.0], [4.0], [9.0]]))  # 2 |sqrt(l) - sqrt(l')|
        >>> d = ig.pairwise_distances(Poisson(), theta)
        >>> bool(jnp.allclose(d, jnp.array([[0.0, 2, 4], [2, 0, 2], [4, 2, 0]])))
        True

    References:
        Rao, *Information and the accuracy attainable in the estimation of statistical
        parameters*, Bull. Calcutta Math. Soc. 37 (1945).
    """
    if not isinstance(manifold, AbstractStatisticalManifold):
        raise TypeError(
            "`manifold` must be an infogeo_jax statistical manifold (a family, a "
            f"StatisticalModel or a StatisticalManifold), got {type(manifold).__name__}."
        )
    a = _as_points(points_a, "points_a", manifold.dim)
    dim = a.shape[1]
    b = None if points_b is None else _as_points(points_b, "points_b", dim)
    if b is not None and b.dtype != a.dtype:
        dtype = jnp.result_type(a.dtype, b.dtype)
        a, b = a.astype(dtype), b.astype(dtype)
    # Domain checks of the points here, not pair by pair inside the jitted solve: called
    # eagerly, the compiled solve then holds no host callback, so that JAX's persistent
    # compilation cache can keep it.
    a = jax.vmap(manifold.check_point)(a) if a.shape[0] else a
    if b is not None and b.shape[0]:
        b = jax.vmap(manifold.check_point)(b)
    cfg = _settings(solver, a[0] if a.shape[0] else jnp.zeros((dim,), a.dtype))
    matrix, results = _pairwise_impl(
        manifold, a, b, cfg, _has_closed_form(manifold), points_b is None
    )
    if throw and matrix.size:
        failed = results != RESULTS.successful
        first = jnp.argmax(failed.reshape(-1))
        code = jax.tree_util.tree_map(lambda v: v.reshape(-1)[first], results)
        matrix = code.error_if(matrix, jnp.any(failed))
    return (matrix, results) if return_results else matrix
