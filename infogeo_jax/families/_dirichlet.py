"""The Dirichlet family on the (k-1)-simplex, and its k = 2 case, the Beta family."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import (
    Array,
    Metric,
    Point,
    PointLike,
    PRNGKeyArray,
    Sample,
    Scalar,
    ScalarLike,
    Tangent,
)
from .._distributions import native_distribution
from .._family import AbstractExponentialFamily
from ._common import as_float, as_usual, dirichlet_initial, polygamma_remainders


def _log_beta(alpha: Array) -> Array:
    gammaln = jax.scipy.special.gammaln
    return jnp.sum(gammaln(alpha)) - gammaln(jnp.sum(alpha))


def _dirichlet_mean(alpha: Array) -> Array:
    digamma = jax.scipy.special.digamma
    return digamma(alpha) - digamma(jnp.sum(alpha))


def _dirichlet_polygammas(alpha: Array) -> tuple[Array, Array, Array]:
    r"""Trigamma and tetragamma values of :math:`(\alpha_1, \dots, \alpha_k, \alpha_0)`.

    Returns ``(e, psi1, psi2)`` with :math:`\psi_1(x) = (1 + e)/x`, from the scaled remainders
    of :func:`polygamma_remainders` (full relative accuracy for every x > 0; a short fused
    expression, where the generic ``polygamma`` is a zeta-function evaluation each).
    """
    both = jnp.append(alpha, jnp.sum(alpha))
    uh, vh = polygamma_remainders(both)
    inv = 1.0 / both
    e = uh * inv
    # One stacked output behind a barrier: otherwise XLA, which does not copy a division into
    # several consumers, computes each of the divisions above as a kernel of its own (about 3x
    # slower for the vectorized contraction of a shooting bundle).
    out = jnp.stack([e, (1.0 + e) * inv, (vh * inv - 1.0) * inv * inv])
    out = jax.lax.optimization_barrier(out)
    return out[0], out[1], out[2]


def _dirichlet_fisher(alpha: Array) -> Array:
    r""":math:`g = \mathrm{diag}(\psi_1(\alpha)) - \psi_1(\alpha_0)\mathbf 1\mathbf 1^\top`."""
    trigamma = _dirichlet_polygammas(alpha)[1]
    return jnp.diag(trigamma[:-1]) - trigamma[-1]


def _dirichlet_solve(alpha: Array, e: Array, b: Array) -> Array:
    r"""Solve :math:`g x = b` for the Dirichlet metric :math:`g = D - q\mathbf 1\mathbf 1^\top`.

    Sherman-Morrison: :math:`g^{-1}b = D^{-1}b + \frac{q\,\mathbf 1^\top D^{-1}b}
    {1 - q\,\mathbf 1^\top D^{-1}\mathbf 1}D^{-1}\mathbf 1`, with :math:`D_{ii} =
    \psi_1(\alpha_i) = (1 + e_i)/\alpha_i` and :math:`q = (1 + e_0)/\alpha_0`. The
    denominator, which tends to 0 as the concentrations grow, is taken in the cancellation-free
    form :math:`1 - q\,\mathbf 1^\top D^{-1}\mathbf 1 = \frac{1}{\alpha_0}\sum_i
    \alpha_i\frac{e_i - e_0}{1 + e_i}` (each term positive, as :math:`x\psi_1(x)` decreases).
    """
    d_inv = alpha / (1.0 + e[:-1])
    total = jnp.sum(alpha * (e[:-1] - e[-1]) / (1.0 + e[:-1]))
    y = d_inv * b
    return y + ((1.0 + e[-1]) / total * jnp.sum(y)) * d_inv


def _dirichlet_contract(alpha: Array, u: Array, w: Array, connection: Array) -> Array:
    r"""Contracted symbols :math:`\frac{1-a}{2}g^{-1}T(u, w, \cdot)` of the Dirichlet family.

    The third derivatives of :math:`A(\alpha) = \sum_i\log\Gamma(\alpha_i) - \log\Gamma(\alpha_0)`
    are :math:`T_{ijk} = \psi_2(\alpha_i)\delta_{ijk} - \psi_2(\alpha_0)`, so
    :math:`T(u, w, \cdot)_k = \psi_2(\alpha_k)u_kw_k - \psi_2(\alpha_0)(\sum u)(\sum w)`:
    polygamma values of k + 1 numbers and a rank-one solve (:func:`_dirichlet_solve`) instead
    of nested derivatives of ``gammaln`` and a factorization.
    """
    e, _, tetragamma = _dirichlet_polygammas(alpha)
    t_uw = tetragamma[:-1] * u * w - tetragamma[-1] * jnp.sum(u) * jnp.sum(w)
    return 0.5 * (1.0 - connection) * _dirichlet_solve(alpha, e, t_uw)


def _dirichlet_in_mean_domain(eta: Array) -> Array:
    # E[log x_i] < log E[x_i] (Jensen) and sum E[x_i] = 1  =>  sum exp(eta_i) < 1.
    return jnp.all(jnp.isfinite(eta) & (eta < 0)) & (jnp.sum(jnp.exp(eta)) < 1)


class _AbstractDirichlet(AbstractExponentialFamily):
    r"""What the Dirichlet and Beta families share: concentrations as natural parameters.

    :math:`A(\alpha) = \sum_i \log\Gamma(\alpha_i) - \log\Gamma(\alpha_0)` on
    :math:`\alpha_i > 0`, with its closed-form metric and contracted alpha-symbols; the
    subclasses give the sample space (a simplex point or a scalar in (0, 1)).
    """

    def log_partition(self, theta: PointLike) -> Scalar:
        return self._raw_log_partition(self.check_point(theta))

    def _raw_log_partition(self, theta: Point) -> Scalar:
        return _log_beta(theta)

    def in_domain(self, theta: Point) -> Scalar:
        return jnp.all(jnp.isfinite(theta) & (theta > 0))

    def in_mean_domain(self, eta: Point) -> Scalar:
        return _dirichlet_in_mean_domain(eta)

    def mean_parameters(self, theta: PointLike) -> Point:
        return _dirichlet_mean(self.check_point(theta))

    def _fisher_information_closed_form(self, theta: Point) -> Metric:
        r"""Closed form :math:`\psi_1(\alpha_i)\delta_{ij} - \psi_1(\alpha_0)`."""
        return _dirichlet_fisher(theta)

    def _christoffel_contract(
        self, theta: Point, u: Tangent, w: Tangent, alpha: ScalarLike
    ) -> Tangent:
        """The contracted alpha-symbols from the closed-form third derivatives of A."""
        return _dirichlet_contract(theta, u, w, jnp.asarray(alpha, theta.dtype))

    def _initial_natural_parameters(self, eta: Point) -> Point:
        return dirichlet_initial(eta)


class Dirichlet(_AbstractDirichlet):
    r"""Dirichlet distributions on the simplex, :math:`p(x) \propto \prod_i x_i^{\alpha_i - 1}`.

    Natural coordinates :math:`\theta = \alpha` (the concentrations), shape ``(k,)``;
    :math:`T(x) = (\log x_1, \dots, \log x_k)`, :math:`\log h(x) = -\sum_i \log x_i` (with
    respect to Lebesgue measure on the first k-1 coordinates), :math:`A(\alpha) = \sum_i
    \log\Gamma(\alpha_i) - \log\Gamma(\sum_i\alpha_i)`. Natural domain :math:`\alpha_i > 0`;
    expectation parameters :math:`\eta_i = \psi(\alpha_i) - \psi(\alpha_0)`; mean domain
    :math:`\sum_i e^{\eta_i} < 1`. The inverse of grad A has no closed form: Newton starts from
    Minka's fixed point (*Estimating a Dirichlet distribution*, 2000). These are also the
    coordinates of geomstats' ``DirichletDistributions``.

    Args:
        num_categories: k >= 2 (static).
    """

    num_categories: int = eqx.field(static=True)

    def __init__(self, num_categories: int):
        if int(num_categories) != num_categories or num_categories < 2:
            raise ValueError(f"`num_categories` must be an integer >= 2, got {num_categories}.")
        self.num_categories = int(num_categories)

    @property
    def dim(self) -> int:
        return self.num_categories

    def sufficient_statistic(self, x: Sample) -> Point:
        return jnp.log(as_float(x))

    def log_base_measure(self, x: Sample) -> Scalar:
        return -jnp.sum(jnp.log(as_float(x)))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        """Points of the simplex, shape ``shape + (k,)``."""
        theta = self.check_point(theta)
        return jax.random.dirichlet(key, theta, shape, dtype=theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from the k concentrations (they coincide)."""
        return as_usual(usual, self.num_categories)

    def to_usual(self, theta: PointLike) -> Point:
        """The k concentrations alpha, shape ``(k,)``."""
        return self.check_point(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(library, "Dirichlet", concentration=theta)


class Beta(_AbstractDirichlet):
    r"""Beta distributions :math:`p(x) = x^{a-1}(1-x)^{b-1} / B(a, b)`, 0 < x < 1.

    Natural coordinates :math:`\theta = (a, b)`, shape ``(2,)``;
    :math:`T(x) = (\log x, \log(1-x))`, :math:`\log h(x) = -\log x - \log(1-x)`,
    :math:`A(\theta) = \log\Gamma(a) + \log\Gamma(b) - \log\Gamma(a+b)`. Natural domain
    a, b > 0; :math:`\eta = (\psi(a) - \psi(a+b), \psi(b) - \psi(a+b))`, mean domain
    :math:`e^{\eta_1} + e^{\eta_2} < 1`. The Dirichlet family with k = 2 with x a scalar; the
    coordinates of geomstats' ``BetaDistributions``.
    """

    @property
    def dim(self) -> int:
        return 2

    def sufficient_statistic(self, x: Sample) -> Point:
        x = as_float(x)
        return jnp.stack([jnp.log(x), jnp.log1p(-x)])

    def log_base_measure(self, x: Sample) -> Scalar:
        x = as_float(x)
        return -jnp.log(x) - jnp.log1p(-x)

    def _sectional_curvature_closed_form(self, theta: Point) -> Scalar:
        r"""Gaussian curvature of the beta family, in closed form.

        :math:`K = -\frac{\psi_2(a)\psi_2(b)\psi_1(c) - \psi_2(c)
        (\psi_1(a)\psi_2(b) + \psi_2(a)\psi_1(b))}{4(\psi_1(a)\psi_1(b) -
        \psi_1(c)(\psi_1(a) + \psi_1(b)))^2}`, c = a + b.

        Le Brigant, Preston & Puechmorel, *Fisher-Rao geometry of Dirichlet distributions*,
        Differential Geom. Appl. 74 (2021), Prop. 4 (k = 2). Numerator and denominator are
        differences whose leading terms cancel exactly; both are expanded in the scaled
        polygamma remainders (:math:`\psi_1(x) = (1 + \epsilon_x)/x`,
        :math:`\psi_2(x) = -(1 + \delta_x)/x^2`) and the cancelled part dropped, so the
        result keeps its accuracy for large a and b (the direct formula is used when a shape
        is below 1, where nothing cancels).
        """
        a, b = theta[0], theta[1]
        c = a + b
        (ua, va), (ub, vb), (uc, vc) = (polygamma_remainders(x) for x in (a, b, c))
        # psi1(x) = (1 + ep_x) / x, psi2(x) = -(1 + dl_x) / x^2.
        ep_a, ep_b, ep_c = ua / a, ub / b, uc / c
        dl_a, dl_b, dl_c = -va / a, -vb / b, -vc / c
        wa, wb = a / c, b / c
        # det g * a b c (the leading 1/(ab) - (1/c)(1/a + 1/b) = 0 removed).
        det = ua + ub + ua * ub * (1.0 / a + 1.0 / b) - uc * (1.0 + wb * ep_a + wa * ep_b)
        # numerator * a^2 b^2 c, the leading 1 - (a + b) / c = 0 removed, and the terms of
        # order one that cancel through w_a + w_b = 1 grouped (by the smaller weight) so that
        # very unequal shapes keep their accuracy too.
        x_ab = ep_a + dl_b + ep_a * dl_b
        y_ab = ep_b + dl_a + ep_b * dl_a
        mixed = wa * x_ab + wb * y_ab
        tail = ep_c * (1.0 + dl_a) * (1.0 + dl_b) - dl_c * (1.0 + mixed)
        by_a = (dl_b - ep_b) * (1.0 + dl_a) - wa * (x_ab - y_ab)
        by_b = (dl_a - ep_a) * (1.0 + dl_b) - wb * (y_ab - x_ab)
        numerator = jnp.where(wa <= wb, by_a, by_b) + tail
        expanded = -c * numerator / (4.0 * det**2)
        # Below a shape of 1 the polygamma values of the smaller shape dominate and nothing
        # cancels: the direct formula is the accurate one there.
        # Small shapes: split psi1(x) = 1/x^2 + psi1(x + 1), psi2(x) = -2/x^3 + psi2(x + 1);
        # the products of the leading parts cancel exactly again, and are dropped by
        # telescoping XYZ - X0 Y0 Z0 = X1 Y Z + X0 Y1 Z + X0 Y0 Z1.
        polygamma = jax.scipy.special.polygamma
        p0, q0, r0 = 1.0 / a**2, 1.0 / b**2, 1.0 / c**2
        pp0, qq0, rr0 = -2.0 / a**3, -2.0 / b**3, -2.0 / c**3
        p1, q1, r1 = polygamma(1, a + 1.0), polygamma(1, b + 1.0), polygamma(1, c + 1.0)
        pp1, qq1, rr1 = polygamma(2, a + 1.0), polygamma(2, b + 1.0), polygamma(2, c + 1.0)
        p, q, r = p0 + p1, q0 + q1, r0 + r1
        pp, qq = pp0 + pp1, qq0 + qq1
        first = pp1 * qq * r + pp0 * qq1 * r + pp0 * qq0 * r1
        second = rr1 * p * qq + rr0 * p1 * qq + rr0 * p0 * qq1
        third = rr1 * q * pp + rr0 * q1 * pp + rr0 * q0 * pp1
        direct = -(first - second - third) / (4.0 * (p * q - r * (p + q)) ** 2)
        return jnp.where(jnp.minimum(a, b) < 1.0, direct, expanded)

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        theta = self.check_point(theta)
        return jax.random.beta(key, theta[0], theta[1], shape, dtype=theta.dtype)

    def from_usual(self, usual: PointLike) -> Point:
        """Natural parameters from ``usual = [a, b]``, the shapes a, b > 0 (they coincide)."""
        return as_usual(usual, 2)

    def to_usual(self, theta: PointLike) -> Point:
        """``[a, b]``, shape ``(2,)``."""
        return self.check_point(theta)

    def _native_distribution(self, theta: Point, library: str) -> Any:
        return native_distribution(
            library, "Beta", concentration1=theta[0], concentration0=theta[1]
        )
