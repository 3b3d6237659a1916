r"""Alpha-connections and curvature of a statistical manifold, from (g, T) by autodiff.

Index conventions (fixed by DESIGN.md):

- ``christoffel_first_kind[i, j, k]``
  :math:`= \Gamma^{(\alpha)}_{ij,k} = g(\nabla_i \partial_j, \partial_k)`
- ``christoffel_symbols[k, i, j]`` :math:`= \Gamma^{(\alpha)k}_{ij}` (upper index first)
- ``riemann_tensor[l, i, j, k]``
  :math:`= R^l{}_{ijk} = \partial_j \Gamma^l_{ki} - \partial_k \Gamma^l_{ji}
  + \Gamma^l_{jm}\Gamma^m_{ki} - \Gamma^l_{km}\Gamma^m_{ji}`
- ``ricci_tensor[i, k]`` :math:`= R^l{}_{ilk}`, ``scalar_curvature`` :math:`= g^{ik} R_{ik}`.

With these signs a sphere of radius r has scalar curvature :math:`2/r^2`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Metric, Point, Scalar, ScalarLike, Tangent, Tensor3, Tensor4
from .._misc import inverse_metric, solve_metric

MetricFn = Callable[[Point], Metric]
SkewnessFn = Callable[[Point], Tensor3]


def levi_civita_first_kind(metric: MetricFn, theta: Point) -> Tensor3:
    r"""Levi-Civita symbols of the first kind, ``[i, j, k]`` :math:`= \Gamma^{(0)}_{ij,k}`.

    .. math::
        \Gamma^{(0)}_{ij,k} = \tfrac12(\partial_i g_{jk} + \partial_j g_{ik} - \partial_k g_{ij}).
    """
    dg = jax.jacfwd(metric)(theta)  # dg[a, b, c] = d_c g_ab
    return 0.5 * (jnp.einsum("jki->ijk", dg) + jnp.einsum("ikj->ijk", dg) - dg)


def christoffel_first_kind(
    metric: MetricFn, skewness: SkewnessFn | None, theta: Point, alpha: ScalarLike
) -> Tensor3:
    r"""Amari alpha-connection symbols of the first kind, ``[i, j, k]``.

    .. math::
        \Gamma^{(\alpha)}_{ij,k} = \Gamma^{(0)}_{ij,k} - \tfrac{\alpha}{2} T_{ijk}.
    """
    gamma0 = levi_civita_first_kind(metric, theta)
    if skewness is None or (isinstance(alpha, (int, float)) and alpha == 0):
        return gamma0
    return gamma0 - 0.5 * alpha * skewness(theta)


def raise_first_kind(g: Metric, gamma_first: Tensor3) -> Tensor3:
    r"""Raise the last index: ``out[k, i, j]`` :math:`= g^{kl} \Gamma_{ij,l}`."""
    d = g.shape[0]
    rhs = jnp.moveaxis(gamma_first, -1, 0).reshape(d, d * d)
    return solve_metric(g, rhs).reshape(d, d, d)


def riemann_from_christoffel(christoffel: Callable[[Point], Tensor3], theta: Point) -> Tensor4:
    r"""Riemann tensor ``[l, i, j, k]`` from a Christoffel-symbol function ``[k, i, j]``.

    .. math::
        R^l{}_{ijk} = \partial_j \Gamma^l_{ki} - \partial_k \Gamma^l_{ji}
        + \Gamma^l_{jm}\Gamma^m_{ki} - \Gamma^l_{km}\Gamma^m_{ji}.
    """
    gamma, dgamma = _value_and_jacfwd(christoffel, theta)  # dgamma[l, i, j, m] = d_m G^l_ij
    return (
        jnp.einsum("lkij->lijk", dgamma)
        - jnp.einsum("ljik->lijk", dgamma)
        + jnp.einsum("ljm,mki->lijk", gamma, gamma)
        - jnp.einsum("lkm,mji->lijk", gamma, gamma)
    )


def riemann_from_metric(
    metric: MetricFn, skewness: SkewnessFn | None, theta: Point, alpha: ScalarLike
) -> Tensor4:
    r"""Riemann tensor ``[l, i, j, k]`` of the alpha-connection, differentiating only g and T.

    Writing :math:`\Gamma^l_{ki} = g^{ln}\Gamma_{ki,n}` and
    :math:`\partial_j g^{ln} = -g^{la}\partial_j g_{ab} g^{bn}`,

    .. math::
        R^l{}_{ijk} = g^{ln}\left(B_{nkij} - B_{njik}\right)
        + \Gamma^l_{jm}\Gamma^m_{ki} - \Gamma^l_{km}\Gamma^m_{ji},\qquad
        B_{nkij} = \partial_j\Gamma_{ki,n} - \partial_j g_{np}\Gamma^p_{ki}.

    One forward-mode Jacobian of :math:`(g, \Gamma_{\cdot\cdot,\cdot})` and one Cholesky
    factorization; no derivative passes through the linear solve (the older route,
    :func:`riemann_from_christoffel`, differentiates :math:`g^{-1}\Gamma`).
    """

    def metric_and_first_kind(th):
        return metric(th), christoffel_first_kind(metric, skewness, th, alpha)

    (g, first), (dg, dfirst) = _value_and_jacfwd(metric_and_first_kind, theta)
    d = theta.shape[0]
    factor = jax.scipy.linalg.cho_factor(g)
    # gamma[p, k, i] = G^p_ki
    gamma = jax.scipy.linalg.cho_solve(
        factor, jnp.moveaxis(first, -1, 0).reshape(d, d * d)
    ).reshape(d, d, d)
    # b[n, k, i, j] = d_j G_{ki,n} - d_j g_{np} G^p_{ki}
    b = jnp.einsum("kinj->nkij", dfirst) - jnp.einsum("npj,pki->nkij", dg, gamma)
    lowered = b - jnp.einsum("njik->nkij", b)  # [n, k, i, j] -> B_nkij - B_njik
    raised = jax.scipy.linalg.cho_solve(factor, lowered.reshape(d, d**3)).reshape(d, d, d, d)
    return (
        jnp.einsum("lkij->lijk", raised)
        + jnp.einsum("ljm,mki->lijk", gamma, gamma)
        - jnp.einsum("lkm,mji->lijk", gamma, gamma)
    )


def _value_and_jacfwd(fn, x):
    """Value and forward-mode Jacobian in one pass (Jacobian axis appended last)."""

    def pushfwd(v):
        return jax.jvp(fn, (x,), (v,))

    basis = jnp.eye(x.shape[0], dtype=x.dtype)
    values, columns = jax.vmap(pushfwd, out_axes=(None, -1))(basis)
    return values, columns


def ricci_from_riemann(riemann: Tensor4) -> Metric:
    r"""Ricci tensor ``[i, k]`` :math:`= R^l{}_{ilk}`."""
    return jnp.einsum("lilk->ik", riemann)


def scalar_from_ricci(g: Metric, ricci: Metric) -> Scalar:
    r"""Scalar curvature :math:`g^{ik} R_{ik}`."""
    return jnp.trace(solve_metric(g, ricci))


def sectional_from_riemann(g: Metric, riemann: Tensor4, u: Tangent, v: Tangent) -> Scalar:
    r"""Sectional curvature of the plane spanned by ``u`` and ``v``.

    .. math::
        K(u, v) = \frac{g_{la} u^a R^l{}_{ijk} v^i u^j v^k}{g(u,u) g(v,v) - g(u,v)^2}.
    """
    numerator = jnp.einsum("la,a,lijk,i,j,k->", g, u, riemann, v, u, v)
    guu = u @ g @ u
    gvv = v @ g @ v
    guv = u @ g @ v
    area2 = guu * gvv - guv**2
    eps = jnp.finfo(area2.dtype).eps
    degenerate = ~(area2 > 64 * eps * jnp.abs(guu * gvv))
    area2 = eqx.error_if(
        area2,
        degenerate,
        "sectional_curvature: u and v do not span a plane (one is zero, or they are parallel "
        "to within rounding); pass two linearly independent tangent vectors.",
    )
    return numerator / area2


def exponential_family_riemann(g: Metric, t: Tensor3, alpha: ScalarLike) -> Tensor4:
    r"""Closed-form alpha-curvature of an exponential family in natural coordinates.

    With :math:`\Gamma^{(\alpha)}_{ij,k} = \frac{1-\alpha}{2} T_{ijk}` the fourth derivatives of
    the log-partition cancel, leaving (Amari & Nagaoka 2000, Sec. 2.3; Amari 2016, Sec. 6.2)

    .. math::
        R_{nijk} = \frac{1-\alpha^2}{4}\left(T_{nkm} g^{mb} T_{jib} - T_{njm} g^{mb} T_{kib}\right),
        \qquad R^l{}_{ijk} = g^{ln} R_{nijk}.

    It vanishes for alpha = +1 and alpha = -1 (the manifold is dually flat).
    """
    ginv = inverse_metric(g)
    p = jnp.einsum("xym,mb,zwb->xyzw", t, ginv, t)  # p[x, y, z, w] = T_xym g^mb T_zwb
    lowered = jnp.einsum("nkji->nijk", p) - jnp.einsum("njki->nijk", p)
    alpha = jnp.asarray(alpha, g.dtype)
    return 0.25 * (1.0 - alpha**2) * jnp.einsum("ln,nijk->lijk", ginv, lowered)


def exponential_family_ricci(g: Metric, t: Tensor3, alpha: ScalarLike) -> Metric:
    r"""Ricci tensor ``[i, k]`` of the alpha-connection of an exponential family, in O(d^4).

    Contracting :func:`exponential_family_riemann` over ``l = j`` without forming the d^4
    Riemann tensor (whose contraction costs O(d^5)):

    .. math::
        \mathrm{Ric}_{ik} = \frac{1-\alpha^2}{4}\left(T^{l}{}_{km} T_{li}{}^{m}
        - \tau_m T_{ki}{}^{m}\right), \qquad \tau_m = g^{ln} T_{lnm},

    with indices raised by :math:`g^{-1}`. The memory is O(d^3).
    """
    ginv = inverse_metric(g)
    t_up_last = jnp.einsum("lib,bm->lim", t, ginv)  # T_li^m
    t_up_first = jnp.einsum("ln,nkm->lkm", ginv, t)  # T^l_km
    tau = jnp.einsum("ln,lnm->m", ginv, t)
    first = jnp.einsum("lkm,lim->ik", t_up_first, t_up_last)
    second = jnp.einsum("m,kim->ik", tau, t_up_last)
    alpha = jnp.asarray(alpha, g.dtype)
    return 0.25 * (1.0 - alpha**2) * (first - second)
