r"""Free-standing divergence functions."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from ._custom_types import Array, Scalar
from ._misc import bregman_gap, check_real


def bregman_divergence(potential: Callable[[Array], Scalar], x: Array, y: Array) -> Scalar:
    r"""Bregman divergence of a convex potential F.

    .. math::
        B_F(x, y) = F(x) - F(y) - \langle \nabla F(y), x - y \rangle \ \ge 0.

    For an exponential family with log-partition A,
    :math:`\mathrm{KL}(p_{\theta_p} \| p_{\theta_q}) = B_A(\theta_q, \theta_p)` (arguments swapped),
    and with the dual potential :math:`A^*` it is :math:`B_{A^*}(\eta_p, \eta_q)`.

    Nearby points make the three terms cancel; there the equal Taylor remainder
    :math:`\int_0^1 (1-t)(x-y)^\top\nabla^2F(y + t(x-y))(x-y)\,dt` (Gauss-Legendre) is used
    instead, whichever has the smaller error estimate.

    Args:
        potential: a convex differentiable function ``F(x) -> scalar``.
        x: first point (any array shape; integers are promoted to the default float).
        y: second point (where the linearization is taken), same shape as ``x``.

    Returns:
        The scalar :math:`B_F(x, y)`.

    Raises:
        ValueError: if ``x`` and ``y`` have different shapes, or ``potential`` is not
            scalar-valued.

    Example:
        >>> import jax.numpy as jnp
        >>> float(bregman_divergence(lambda z: 0.5 * z @ z, jnp.ones(2), jnp.zeros(2)))
        1.0

    References:
        Bregman (1967); Banerjee et al., *Clustering with Bregman divergences*, JMLR 2005, Def. 1.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_real(x, "x")
    check_real(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape, got {x.shape} and {y.shape}.")
    dtype = jnp.result_type(x, y)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    x, y = x.astype(dtype), y.astype(dtype)
    f_x = jnp.asarray(potential(x))
    if f_x.shape != ():
        raise ValueError(f"`potential` must return a scalar, got shape {f_x.shape}.")
    return bregman_gap(potential, x, y)
