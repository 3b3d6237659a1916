r"""Free-standing divergence functions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._custom_types import Array, Scalar


def bregman_divergence(potential: Callable[[Array], Scalar], x: Array, y: Array) -> Scalar:
    r"""Bregman divergence of a convex potential F.

    .. math::
        B_F(x, y) = F(x) - F(y) - \langle \nabla F(y), x - y \rangle \ \ge 0.

    For an exponential family with log-partition A,
    :math:`\mathrm{KL}(p_{\theta_p} \| p_{\theta_q}) = B_A(\theta_q, \theta_p)` (arguments swapped),
    and with the dual potential :math:`A^*` it is :math:`B_{A^*}(\eta_p, \eta_q)`.

    Args:
        potential: a convex differentiable function ``F(x) -> scalar``.
        x: first point, shape ``(dim,)``.
        y: second point (where the linearization is taken), shape ``(dim,)``.

    Returns:
        The scalar :math:`B_F(x, y)`.

    Raises:
        ValueError: if ``x`` and ``y`` have different shapes.

    Example:
        >>> import jax.numpy as jnp
        >>> float(bregman_divergence(lambda z: 0.5 * z @ z, jnp.ones(2), jnp.zeros(2)))
        1.0

    References:
        Bregman (1967); Banerjee et al., *Clustering with Bregman divergences*, JMLR 2005, Def. 1.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape, got {x.shape} and {y.shape}.")
    f_y, grad_y = jax.value_and_grad(potential)(y)
    return potential(x) - f_y - jnp.vdot(grad_y, x - y)
