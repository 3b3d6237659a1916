"""Shared pieces of the family catalogue: dtype helpers, mean-domain checks, digamma inverse."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Point, Scalar


def default_float() -> jnp.dtype:
    """The default float dtype (float64 when ``jax_enable_x64`` is on)."""
    return jnp.result_type(float)


def as_float(x) -> Array:
    """``x`` as an array of an inexact dtype (keeps float32/float64, promotes ints)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(default_float())
    return x


def as_usual(usual, size: int) -> Array:
    """``usual`` as an inexact 1-D array of length ``size`` (static shape check)."""
    from .._misc import as_point

    return as_point(usual, size, "usual")


def check_mean(eta: Point, ok: Scalar, family: str, domain: str) -> Point:
    """Raise via ``equinox.error_if`` when ``eta`` is outside the mean domain."""
    message = f"eta is outside the {family} mean domain ({domain})."
    return eqx.error_if(eta, jnp.logical_not(ok), message)


def sphere_distance(root_p: Array, root_q: Array) -> Array:
    r"""Fisher-Rao distance between finite distributions given :math:`\sqrt p` and :math:`\sqrt q`.

    :math:`2\arccos\sum_i\sqrt{p_i q_i} = 4\arcsin(\|\sqrt p - \sqrt q\| / 2)`: the chord form is
    accurate for nearby points (the arccos form loses all digits below ~1e-8) and has finite
    gradients at p = q.
    """
    from .._misc import safe_sqrt

    chord = safe_sqrt(jnp.sum((root_p - root_q) ** 2))
    return 4.0 * jnp.arcsin(jnp.minimum(0.5 * chord, 1.0))


def inverse_digamma(y: Array, num_steps: int = 6) -> Array:
    r"""Inverse of the digamma function :math:`\psi`, elementwise.

    Minka's initialization (*Estimating a Dirichlet distribution*, 2000, Appendix C) followed by
    Newton steps on :math:`\psi(x) = y`.
    """
    y = as_float(y)
    x = jnp.where(y >= -2.22, jnp.exp(y) + 0.5, -1.0 / (y + 0.5772156649015329))

    def step(x, _):
        return x - (jax.scipy.special.digamma(x) - y) / jax.scipy.special.polygamma(1, x), None

    x, _ = jax.lax.scan(step, x, None, length=num_steps)
    return x


def dirichlet_initial(eta: Array, num_steps: int = 50) -> Array:
    r"""Initial concentrations for :math:`\psi(\alpha_i) - \psi(\sum_j \alpha_j) = \eta_i`.

    Minka's fixed point :math:`\alpha_i \leftarrow \psi^{-1}(\psi(\sum_j\alpha_j) + \eta_i)`, which
    stays positive and converges from any positive start; Newton then polishes the result.
    """
    alpha = jnp.exp(eta) / jnp.sum(jnp.exp(eta)) + 0.5  # positive start

    def step(alpha, _):
        total = jax.scipy.special.digamma(jnp.sum(alpha))
        return inverse_digamma(total + eta), None

    alpha, _ = jax.lax.scan(step, alpha, None, length=num_steps)
    return alpha
