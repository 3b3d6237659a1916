r"""Expectation rules: how a :class:`~infogeo_jax.StatisticalModel` computes :math:`E_\theta[f(x)]`.

A rule turns an integral over the sample space into a finite weighted sum that stays
differentiable in :math:`\theta` to every order, so that the Fisher metric, its derivatives
(Christoffel symbols) and second derivatives (curvature) come out of ``jax.jacfwd``.

- Deterministic rules (:class:`FiniteSupport`, :class:`Quadrature`, :class:`TensorProduct`)
  use nodes :math:`x_k` and base weights :math:`c_k` (counting measure or a quadrature weight):

  .. math::
      E_\theta[f(x)] \approx \sum_k c_k\, p(x_k \mid \theta)\, f(x_k).

  They also give the mass :math:`\sum_k c_k p(x_k \mid \theta)`, which must be 1 up to
  ``normalization_tolerance``: a density that does not normalize (or a rule that misses part of
  its mass) raises instead of returning a silently wrong Fisher metric.
- :class:`MonteCarlo` draws samples from :math:`p(\cdot \mid \theta)` with a key held in the rule
  (common random numbers) and weights them by :math:`\exp(\ell - \mathrm{stop\_gradient}(\ell))`,
  which equals 1 in value but whose derivatives of every order are the likelihood-ratio (score
  function) terms, so derivatives of the estimate are unbiased estimates of derivatives of the
  expectation.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Point, PRNGKeyArray, PyTree, Sample, Scalar

LogDensity = Callable[[Point, Sample], Scalar]
"""``log_density(theta, x) -> scalar``: a normalized log-density of one outcome ``x``."""

# Range of the double-exponential maps, relative to the rule's scale: the real line is covered
# out to |x| = 1e16 scale, a half-line from 1e-30 to 1e16 scales from its endpoint, an interval
# to within 1e-30 of its width from either endpoint (nodes that round onto an endpoint are
# dropped). The truncated mass is below 1e-15 for tails decaying like |x|^-2 and for endpoint
# singularities (x - a)^beta with beta >= -1/2.
_LOG_TINY = math.log(1e-30)
_LOG_HUGE = math.log(1e16)


def _default_tolerance(dtype: Any) -> float:
    """Default normalization tolerance: sqrt(eps) of the dtype (1.5e-8 in float64)."""
    return float(np.sqrt(np.finfo(dtype).eps))


def _as_tolerance(tol: Any) -> float | None:
    """A static float tolerance (or None), validated."""
    if tol is None:
        return None
    tol = float(tol)
    if not tol > 0:
        raise ValueError(f"`normalization_tolerance` must be positive (or None), got {tol}.")
    return tol


def _float_dtype(theta: Array) -> Any:
    dtype = jnp.asarray(theta).dtype
    return dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.result_type(float)


def _scalar_log_density(log_density: LogDensity, theta: Point, x: Sample) -> Scalar:
    value = jnp.asarray(log_density(theta, x))
    if value.shape != ():
        raise ValueError(
            "`log_density(theta, x)` must return a scalar for one outcome `x` (the rule maps "
            f"over outcomes itself), got shape {value.shape} for x of shape {jnp.shape(x)}."
        )
    return value


def _concrete_float(x: Array) -> float | None:
    """``float(x)`` when ``x`` is a concrete value, ``None`` under a JAX transformation."""
    try:
        return float(x)
    except (jax.errors.ConcretizationTypeError, TypeError):
        return None


def _weighted_sum(values: PyTree, weights: Array, positive: Array) -> PyTree:
    """``sum_k weights[k] * values[k]`` over the leading axis, skipping zero-weight nodes.

    Nodes where the weight is zero (density underflow) may carry non-finite values (a score of
    the form inf/inf far in a tail); they are masked out with ``where`` so that neither the value
    nor its forward-mode derivatives see them.
    """

    def one(v):
        v = jnp.asarray(v)
        mask = jnp.reshape(positive, positive.shape + (1,) * (v.ndim - 1))
        w = jnp.reshape(weights, mask.shape)
        return jnp.sum(jnp.where(mask, w * v, jnp.zeros((), v.dtype)), axis=0)

    return jax.tree_util.tree_map(one, values)


def _any_nonfinite(values: PyTree, where: Array) -> Array:
    """Whether any leaf of ``values`` is non-finite at a node where ``where`` holds."""
    bad = jnp.zeros((), bool)
    for v in jax.tree_util.tree_leaves(values):
        v = jnp.asarray(v)
        if not jnp.issubdtype(v.dtype, jnp.inexact):
            continue
        finite = jnp.all(jnp.isfinite(jnp.reshape(v, (v.shape[0], -1))), axis=1)
        bad = bad | jnp.any(where & ~finite)
    return bad


_NONFINITE_MESSAGE = (
    "the integrand (e.g. the score, the gradient of log_density in theta) is not finite at a "
    "node or sample where the density is positive. Check log_density and its derivatives in "
    "theta on the whole support (write it stably: log1p, logsumexp, gammaln), and the rule's "
    "bounds."
)


class AbstractExpectation(eqx.Module):
    r"""Abstract base of expectation rules: :math:`E_\theta[f(x)]` under :math:`p(x\mid\theta)`.

    A rule is an equinox Module (a pytree): it passes through ``jit``, ``vmap`` and ``grad``.
    Subclasses implement :meth:`expect`, differentiable in ``theta`` to every order.
    """

    @abc.abstractmethod
    def expect(
        self,
        fn: Callable[[Sample], PyTree],
        theta: Point,
        log_density: LogDensity,
        *,
        check_finite: bool = True,
    ) -> PyTree:
        r"""Estimate :math:`E_{x\sim p(\cdot\mid\theta)}[\mathrm{fn}(x)]`.

        Args:
            fn: ``fn(x) -> pytree of arrays`` for one outcome ``x``; it may close over
                ``theta`` (the score does), and derivatives flow through it.
            theta: the parameters passed to ``log_density`` (and to a rule's ``center`` or
                ``sampler``), shape ``(dim,)``.
            log_density: ``log_density(theta, x) -> scalar``, normalized.
            check_finite: raise if ``fn`` is not finite where the density is positive (turn off
                for quantities that may legitimately be infinite, such as a divergence).

        Returns:
            A pytree like ``fn(x)``.
        """

    def _tail_share(self, fn, theta: Point, log_density: LogDensity) -> Array:
        """How much of ``E[fn]`` the rule's outermost nodes carry (0 to 1); zero by default.

        A rule with a truncated grid overrides it, so that a diverging moment is caught.
        """
        del fn, log_density
        return jnp.zeros((), _float_dtype(theta))


class AbstractQuadratureRule(AbstractExpectation):
    r"""Abstract base of deterministic rules: nodes :math:`x_k` and base weights :math:`c_k`.

    .. math::
        E_\theta[f(x)] = \sum_k c_k\, p(x_k\mid\theta)\, f(x_k),
        \qquad \text{mass}(\theta) = \sum_k c_k\, p(x_k\mid\theta).

    Subclasses implement :meth:`nodes`. :meth:`expect` raises (also under ``jit``) when the mass
    differs from 1 by more than ``normalization_tolerance`` (``None``: the square root of the
    machine epsilon of ``theta``'s dtype, 1.5e-8 in float64), when ``log_density`` is NaN or
    ``+inf`` at a node, or when ``fn`` is not finite at a node of positive density. Nodes where
    the density underflows to zero contribute nothing.
    """

    normalization_tolerance: eqx.AbstractVar[float | None]

    @abc.abstractmethod
    def nodes(self, theta: Point) -> tuple[Array, Array, Array]:
        r"""Nodes, log base weights and validity mask at ``theta``.

        Returns:
            ``(x, log_c, valid)``: ``x`` with a leading axis of length n (invalid nodes replaced
            by a safe interior point), ``log_c`` of shape ``(n,)`` (:math:`\log c_k`) and a
            boolean ``valid`` of shape ``(n,)`` (False where a node rounded onto a bound).
        """

    def _tolerance(self, dtype: Any) -> float:
        tol = self.normalization_tolerance
        return _default_tolerance(dtype) if tol is None else float(tol)

    def _weights(self, theta: Point, log_density: LogDensity) -> tuple[Array, Array, Array, Array]:
        x, log_c, valid = self.nodes(theta)
        log_p = jax.vmap(lambda xi: _scalar_log_density(log_density, theta, xi))(x)
        log_w = jnp.where(valid, log_c + log_p, -jnp.inf)
        bad_density = jnp.any(valid & (jnp.isnan(log_p) | (log_p == jnp.inf)))
        return x, jnp.exp(log_w), valid, bad_density

    def total_mass(self, theta: Point, log_density: LogDensity) -> Scalar:
        r"""The mass :math:`\sum_k c_k p(x_k\mid\theta)` that the rule assigns to the density.

        One for a normalized density that the rule resolves; for a truncated support (e.g. a
        Poisson on 0..K) one minus the mass is the truncation error.
        """
        _, w, _, _ = self._weights(theta, log_density)
        return jnp.sum(w)

    def expect(
        self,
        fn: Callable[[Sample], PyTree],
        theta: Point,
        log_density: LogDensity,
        *,
        check_finite: bool = True,
    ) -> PyTree:
        x, w, _, bad_density = self._weights(theta, log_density)
        values = jax.vmap(fn)(x)
        positive = w > 0
        result = _weighted_sum(values, w, positive)
        name = type(self).__name__
        mass = jnp.sum(w)
        tol = self._tolerance(mass.dtype)
        concrete_mass = _concrete_float(mass)
        if concrete_mass is not None:
            shown = f"mass = {concrete_mass!r}"
        else:
            shown = "call `StatisticalModel.total_mass(theta)` to see the mass"
        messages = [
            f"{name}: log_density(theta, x) is NaN or +inf at a node of the rule. The density "
            "must be finite inside the rule's bounds (an integrable singularity at a bound is "
            "fine: nodes never sit on a bound).",
            f"{name}: " + _NONFINITE_MESSAGE,
            f"{name}: log_density does not normalize under this rule: "
            f"|sum of weights * density - 1| > normalization_tolerance = {tol:g} ({shown}). "
            "Check that log_density is normalized (log-partition included) and that the rule "
            "covers its support (bounds, `center`, num_nodes); for a deliberately truncated "
            "support set normalization_tolerance to the truncation error.",
        ]
        bad_values = _any_nonfinite(values, positive) if check_finite else jnp.zeros((), bool)
        bad_mass = jnp.abs(mass - 1.0) > tol
        # One check with the first failing reason (fewer callbacks to trace and differentiate).
        index = jnp.where(bad_density, 0, jnp.where(bad_values, 1, 2))
        return eqx.branched_error_if(result, bad_density | bad_values | bad_mass, index, messages)


class FiniteSupport(AbstractQuadratureRule):
    r"""Exact sums over a finite sample space: :math:`E_\theta[f] = \sum_k p(x_k\mid\theta) f(x_k)`.

    Args:
        points: the outcomes, leading axis = outcomes (shape ``(K,)`` for scalar outcomes,
            ``(K, m)`` for vectors). Integer points are kept as integers (usable as indices);
            float points are cast to the dtype of ``theta``.
        normalization_tolerance: largest accepted :math:`|\sum_k p(x_k) - 1|`; ``None`` means
            the square root of the machine epsilon. For a truncated infinite support (a Poisson
            on 0..K) pass the truncation error you accept: one minus the mass is exactly the
            probability of the outcomes left out.

    Raises:
        ValueError: if ``points`` is a scalar or empty.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from infogeo_jax import StatisticalModel
        >>> log_density = lambda th, x: jnp.where(x == 1, 1.0, 0.0) * th[0] - jnp.logaddexp(
        ...     0.0, th[0])
        >>> model = StatisticalModel(log_density, FiniteSupport(jnp.array([0, 1])))
        >>> model.fisher_information(jnp.array([0.0])).round(6).tolist()  # p(1-p) = 0.25
        [[0.25]]
    """

    points: Array
    normalization_tolerance: float | None = eqx.field(static=True, default=None)

    def __init__(self, points: Any, normalization_tolerance: float | None = None):
        points = jnp.asarray(points)
        if points.ndim == 0 or points.shape[0] == 0:
            raise ValueError(
                "`points` must have a leading axis of outcomes with at least one outcome, got "
                f"shape {points.shape}."
            )
        self.points = points
        self.normalization_tolerance = _as_tolerance(normalization_tolerance)

    def nodes(self, theta: Point) -> tuple[Array, Array, Array]:
        n = self.points.shape[0]
        dtype = _float_dtype(theta)
        points = self.points
        if jnp.issubdtype(points.dtype, jnp.inexact):
            points = points.astype(dtype)  # float points follow theta's precision
        return points, jnp.zeros((n,), dtype), jnp.ones((n,), bool)


@functools.lru_cache(maxsize=64)
def _de_grid(kind: str, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Trapezoid grid of a double-exponential map, in float64.

    Returns ``(u, du)`` with :math:`u_k = c\sinh t_k` on an equispaced ``t`` grid and
    :math:`du_k = h\,c\cosh t_k` (the trapezoid weight times the map's derivative).
    """
    if kind == "real":  # x = sinh(u), u = pi/2 sinh t
        c = 0.5 * np.pi
        t_hi = np.arcsinh(np.arcsinh(1e16) / c)
        t_lo = -t_hi
    elif kind == "half":  # x - a = exp(u), u = pi/2 sinh t
        c = 0.5 * np.pi
        t_lo = np.arcsinh(_LOG_TINY / c)
        t_hi = np.arcsinh(_LOG_HUGE / c)
    else:  # interval: (x - a) / (b - a) = sigmoid(u), u = pi sinh t
        c = np.pi
        t_hi = np.arcsinh(-_LOG_TINY / c)
        t_lo = -t_hi
    t = np.linspace(t_lo, t_hi, num_nodes)
    h = t[1] - t[0]
    return c * np.sinh(t), h * c * np.cosh(t)


class Quadrature(AbstractQuadratureRule):
    r"""Double-exponential (tanh-sinh family) quadrature for one-dimensional ``x``.

    The range is mapped to the real line and integrated with the trapezoid rule on an
    equispaced grid in ``t``, which converges exponentially in ``num_nodes`` for integrands
    analytic inside the range, including heavy (algebraic) tails and integrable endpoint
    singularities, with no truncation of the range by hand (Takahasi & Mori 1974):

    - whole line :math:`(-\infty, \infty)`: :math:`x = \ell + s\sinh(\tfrac\pi2\sinh t)`;
    - half-line :math:`[a, \infty)`: :math:`x = a + e^{\lambda + \sigma\frac\pi2\sinh t}`
      with :math:`\lambda = \log(\ell - a)`, :math:`\sigma = s / (\ell - a)`
      (and :math:`x = b - e^{\dots}` for :math:`(-\infty, b]`);
    - interval :math:`(a, b)`: :math:`x = a + (b - a)\,\mathrm{sigmoid}(\lambda + \sigma\pi\sinh t)`
      with :math:`\lambda = \mathrm{logit}\frac{\ell-a}{b-a}`,
      :math:`\sigma = s(b-a) / ((\ell-a)(b-\ell))` (the tanh-sinh rule when
      :math:`\lambda = 0, \sigma = 1`).

    ``(loc, scale) = (\ell, s)`` come from ``center(theta)`` when given (the nodes then follow
    the density; derivatives in theta include the moving nodes, which is exact for the
    integral), else the defaults ``(0, 1)`` on the line, ``(a + 1, 1)`` / ``(b - 1, 1)`` on a
    half-line, the midpoint on an interval. The maps reach :math:`|x - \ell| = 10^{16} s` on the
    line, :math:`10^{-30}` to :math:`10^{16}` scales from a half-line's endpoint, and
    :math:`10^{-30}(b - a)` from an interval's endpoints. An integrand decaying only like
    :math:`|x|^{-1-a}` loses about :math:`10^{-16a}/a` beyond that (e.g. 1e-8 for the second
    moment of a Student t with 2.5 degrees of freedom); Fisher integrands of heavy-tailed
    location-scale models decay like :math:`|x|^{-2}` or faster.

    Accuracy (float64, measured): the Cauchy and Student t (heavy tails) Fisher metrics to
    1e-15 with 64 nodes; Beta(0.5, 0.7) (endpoint singularities) to 1e-9 with 96; the normal
    to 3e-9 with 128 and 1e-13 with 192 nodes (light tails waste the far nodes; a good
    ``center`` matters more than the count). A singularity at an endpoint other than 0 is
    resolved only down to the floating-point spacing of ``x`` there (x = 1 - 1e-17 rounds to 1),
    which limits e.g. the Beta skewness tensor with b < 1 to about 1e-7; put the stronger
    singularity at 0 where possible.

    Args:
        lower: lower bound (a float, may be ``-inf``).
        upper: upper bound (a float, may be ``inf``), greater than ``lower``.
        num_nodes: number of nodes (>= 3); about 64 for heavy tails, 128-192 for Gaussian tails
            in float64, 64 is plenty in float32.
        center: optional ``center(theta) -> (loc, scale)`` placing the nodes where the density
            lives (``lower < loc < upper``, ``scale > 0``), e.g. the mean and standard
            deviation.
        normalization_tolerance: largest accepted :math:`|\text{mass} - 1|` (``None``: the
            square root of the machine epsilon, 1.5e-8 in float64).

    Raises:
        ValueError: on bounds that are not ordered floats or a ``num_nodes`` below 3.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax import StatisticalModel
        >>> def cauchy(theta, x):  # location mu, scale gamma
        ...     z = (x - theta[0]) / theta[1]
        ...     return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)
        >>> rule = Quadrature(-jnp.inf, jnp.inf, 64, center=lambda th: (th[0], th[1]))
        >>> fisher = StatisticalModel(cauchy, rule).fisher_information(jnp.array([0.0, 2.0]))
        >>> (fisher.round(4) + 0.0).tolist()  # I / (2 gamma^2)
        [[0.125, 0.0], [0.0, 0.125]]

    References:
        Takahasi & Mori, *Double exponential formulas for numerical integration*, Publ. RIMS 9
        (1974) 721-741; Mori & Sugihara, *The double-exponential transformation in numerical
        analysis*, J. Comput. Appl. Math. 127 (2001) 287-296.
    """

    lower: float = eqx.field(static=True)
    upper: float = eqx.field(static=True)
    num_nodes: int = eqx.field(static=True)
    center: Callable[[Point], tuple[Any, Any]] | None
    normalization_tolerance: float | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        lower: float,
        upper: float,
        num_nodes: int = 128,
        center: Callable[[Point], tuple[Any, Any]] | None = None,
        *,
        normalization_tolerance: float | None = None,
    ):
        try:
            lower_f, upper_f = float(lower), float(upper)
        except (TypeError, ValueError):
            raise ValueError(
                f"`lower` and `upper` must be floats (or +-inf), got {lower!r} and {upper!r}."
            ) from None
        if math.isnan(lower_f) or math.isnan(upper_f) or not lower_f < upper_f:
            raise ValueError(f"Need lower < upper, got lower={lower_f} and upper={upper_f}.")
        if int(num_nodes) != num_nodes or num_nodes < 3:
            raise ValueError(f"`num_nodes` must be an integer >= 3, got {num_nodes}.")
        if center is not None and not callable(center):
            raise TypeError("`center` must be None or a callable theta -> (loc, scale).")
        self.lower = lower_f
        self.upper = upper_f
        self.num_nodes = int(num_nodes)
        self.center = center
        self.normalization_tolerance = _as_tolerance(normalization_tolerance)

    @property
    def _kind(self) -> str:
        lo_inf, hi_inf = math.isinf(self.lower), math.isinf(self.upper)
        if lo_inf and hi_inf:
            return "real"
        if lo_inf or hi_inf:
            return "half"
        return "interval"

    def _loc_scale(self, theta: Point, dtype: Any) -> tuple[Array, Array]:
        a, b = self.lower, self.upper
        if self.center is None:
            if self._kind == "real":
                loc = 0.0
            elif self._kind == "half":
                loc = a + 1.0 if math.isinf(b) else b - 1.0
            else:
                loc = 0.5 * (a + b)
            scale = 1.0 if self._kind != "interval" else 0.25 * (b - a)
            return jnp.asarray(loc, dtype), jnp.asarray(scale, dtype)
        loc, scale = self.center(theta)
        loc, scale = jnp.asarray(loc, dtype), jnp.asarray(scale, dtype)
        if loc.shape != () or scale.shape != ():
            raise ValueError(
                "`center(theta)` must return two scalars (loc, scale), got shapes "
                f"{loc.shape} and {scale.shape}."
            )
        ok = jnp.isfinite(loc) & jnp.isfinite(scale) & (scale > 0) & (loc > a) & (loc < b)
        loc, scale = eqx.error_if(
            (loc, scale),
            ~ok,
            f"Quadrature: center(theta) must return a finite loc with {a} < loc < {b} and a "
            "finite scale > 0.",
        )
        return loc, scale

    def nodes(self, theta: Point) -> tuple[Array, Array, Array]:
        dtype = _float_dtype(theta)
        u_np, du_np = _de_grid(self._kind, self.num_nodes)
        u = jnp.asarray(u_np, dtype)
        log_du = jnp.asarray(np.log(du_np), dtype)
        loc, scale = self._loc_scale(theta, dtype)
        a, b = self.lower, self.upper
        kind = self._kind
        if kind == "real":
            x = loc + scale * jnp.sinh(u)
            log_c = jnp.log(scale) + jnp.logaddexp(u, -u) - math.log(2.0) + log_du
            x_ref = loc
        elif kind == "half":
            end = a if math.isinf(b) else b
            sign = 1.0 if math.isinf(b) else -1.0
            offset = sign * (loc - end)  # > 0
            sigma = scale / offset
            y = jnp.log(offset) + sigma * u
            x = end + sign * jnp.exp(y)
            log_c = y + jnp.log(sigma) + log_du
            x_ref = loc
        else:
            width = b - a
            frac = (loc - a) / width
            lam = jnp.log(frac) - jnp.log1p(-frac)
            sigma = scale * width / ((loc - a) * (b - loc))
            y = lam + sigma * u
            x = a + width * jax.nn.sigmoid(y)
            log_c = (
                math.log(width)
                + jax.nn.log_sigmoid(y)
                + jax.nn.log_sigmoid(-y)
                + jnp.log(sigma)
                + log_du
            )
            x_ref = loc
        valid = jnp.isfinite(x) & (x > a) & (x < b) & jnp.isfinite(log_c)
        x = jnp.where(valid, x, x_ref)
        return x, log_c, valid

    def _tail_share(self, fn, theta: Point, log_density: LogDensity) -> Array:
        r"""Share of :math:`E[\mathrm{fn}]` carried by the outermost nodes of a :class:`Quadrature`.

        The double-exponential terms :math:`c_k p(x_k) f(x_k)` of a convergent integral decay
        towards both ends of the grid; a moment that diverges (or converges too slowly to be
        resolved within the rule's range) keeps terms of the size of the sum there. Returns the
        largest ratio, over the components of ``fn`` (a 1-D array), of the three outermost terms at
        either end to the sum of the absolute terms.
        """
        x, w, _, _ = self._weights(theta, log_density)
        values = jnp.reshape(jax.vmap(fn)(x), (x.shape[0], -1))
        positive = (w > 0)[:, None]
        terms = jnp.where(positive, jnp.abs(w[:, None] * values), 0.0)
        terms = jnp.where(jnp.isfinite(terms), terms, 0.0)
        total = jnp.sum(terms, axis=0)
        ends = jnp.concatenate([terms[:3], terms[-3:]], axis=0)
        share = jnp.max(ends, axis=0) / jnp.where(total > 0, total, 1.0)
        return jnp.max(share)


class TensorProduct(AbstractQuadratureRule):
    r"""Tensor product of deterministic rules for small multivariate sample spaces.

    The outcome is the concatenation of the factors' outcomes, a vector of shape ``(m,)``
    (scalar factors contribute one coordinate), and the base weights multiply:
    :math:`E[f] = \sum_{k_1,\dots,k_r} c^{(1)}_{k_1}\cdots c^{(r)}_{k_r}
    p(x_{k_1},\dots,x_{k_r}\mid\theta) f(\dots)`. The node count is the product of the
    factors' counts, so keep the dimension small (2-3 continuous coordinates). Each factor's
    ``center`` sees the full ``theta``. Integer and float factors promote to float.

    Args:
        rules: the factors (:class:`Quadrature`, :class:`FiniteSupport` or another
            :class:`TensorProduct`), at least one.
        normalization_tolerance: as for :class:`Quadrature` (the factors' tolerances are not
            used).

    Raises:
        TypeError: if a factor is not a deterministic rule (Monte Carlo has no product form).

    Example:
        >>> import jax.numpy as jnp
        >>> bit = FiniteSupport(jnp.array([0.0, 1.0]))
        >>> three_bits = TensorProduct([bit, bit, bit])  # 8 outcomes, x of shape (3,)
    """

    rules: tuple[AbstractQuadratureRule, ...]
    normalization_tolerance: float | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        rules: Sequence[AbstractQuadratureRule],
        *,
        normalization_tolerance: float | None = None,
    ):
        rules = tuple(rules)
        if not rules:
            raise ValueError("`rules` must contain at least one rule.")
        for rule in rules:
            if not isinstance(rule, AbstractQuadratureRule):
                raise TypeError(
                    "TensorProduct factors must be deterministic rules (Quadrature, "
                    f"FiniteSupport, TensorProduct), got {type(rule).__name__}."
                )
        self.rules = rules
        self.normalization_tolerance = _as_tolerance(normalization_tolerance)

    def nodes(self, theta: Point) -> tuple[Array, Array, Array]:
        parts = [rule.nodes(theta) for rule in self.rules]
        counts = tuple(int(p[1].shape[0]) for p in parts)
        index = np.indices(counts).reshape(len(counts), -1)
        xs, log_c, valid = [], 0.0, True
        for (x, lc, ok), idx in zip(parts, index):
            x = jnp.reshape(x, (x.shape[0], -1))
            xs.append(x[idx])
            log_c = log_c + lc[idx]
            valid = valid & ok[idx]
        dtype = jnp.result_type(*xs)
        x = jnp.concatenate([v.astype(dtype) for v in xs], axis=1)
        return x, jnp.asarray(log_c), jnp.asarray(valid)


class MonteCarlo(AbstractExpectation):
    r"""Monte Carlo expectations, unbiased under differentiation (likelihood-ratio or pathwise).

    Likelihood-ratio mode (``reparameterized=False``, the default):

    .. math::
        E_\theta[f(x)] \approx \frac1n\sum_{k=1}^n w_k(\theta) f(x_k), \qquad
        w_k = \exp\big(\ell(\theta, x_k) - \bot\,\ell(\theta, x_k)\big),

    with samples :math:`x_k \sim p(\cdot\mid\bot\theta)` drawn with the held key (the same
    samples at every theta: common random numbers) and :math:`\bot` the stop-gradient. The
    weights equal 1, but their derivatives of every order are the score-function terms
    (:math:`\partial w = w\,\partial\ell`, ...), so the estimate's derivatives are unbiased for
    the derivatives of the expectation (DiCE). Quantities linear in expectations (the Fisher
    metric, the skewness tensor, Christoffel symbols of the first kind) are therefore unbiased;
    nonlinear ones (Christoffel symbols of the second kind, curvature) carry an O(1/n) bias.
    There is no normalization check: the weights average to one by construction.

    Reparameterized (pathwise) mode (``reparameterized=True``), for a sampler that is a
    differentiable function :math:`x = x(\theta, \varepsilon)` of theta and noise
    :math:`\varepsilon` fixed by the held key:

    .. math::
        E_\theta[h(\theta, x)] = E_\varepsilon\big[h(\theta, x(\theta, \varepsilon))\big]
        \approx \frac1n\sum_{k=1}^n h(\theta, x(\theta, \varepsilon_k)),

    with no weights; gradients flow through the samples, so a derivative is the average of the
    total derivatives :math:`\frac{d}{d\theta} h(\theta, x(\theta, \varepsilon_k)) =
    \partial_\theta h + \partial_x h\,\partial_\theta x`, again unbiased at every order
    (the expectation over the fixed noise law commutes with differentiation). The integrands
    the library forms (scores, their outer products, log-density differences) close over the
    same theta, so every derived quantity (Fisher metric, skewness, divergences, Christoffel
    symbols, curvature) is differentiated correctly in both modes. The pathwise estimate of a
    gradient often has a much lower variance than the likelihood-ratio one; it needs
    ``log_density`` and the integrand to be differentiable in ``x``.

    Args:
        sampler: ``sampler(theta, key, num_samples)`` returning samples with a leading axis of
            length ``num_samples``, distributed as :math:`p(\cdot\mid\theta)`; with
            ``reparameterized=True`` it must be differentiable in ``theta``.
        num_samples: n >= 1 (static).
        key: a JAX PRNG key, held in the rule.
        reparameterized: differentiate through the samples (pathwise) instead of through
            likelihood-ratio weights (static; default False).

    Raises:
        ValueError: on a non-positive ``num_samples``; at trace time if the sampler returns the
            wrong leading axis.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from infogeo_jax import StatisticalModel
        >>> sampler = lambda th, key, n: th[0] + jax.random.normal(key, (n,))
        >>> rule = MonteCarlo(sampler, 10_000, jax.random.key(0))
        >>> model = StatisticalModel(lambda th, x: -0.5 * (x - th[0]) ** 2 - 0.9189385, rule)
        >>> round(float(model.fisher_information(jnp.array([0.3]))[0, 0]), 1)  # about 1
        1.0
        >>> pathwise = MonteCarlo(sampler, 10_000, jax.random.key(0), reparameterized=True)
        >>> mean = lambda th: pathwise.expect(lambda x: x, th, model.log_density_fn)
        >>> round(float(jax.grad(mean)(jnp.array([0.3]))[0]), 6)  # x = theta + eps: 1
        1.0

    References:
        Foerster et al., *DiCE: The infinitely differentiable Monte Carlo estimator*, ICML 2018;
        Mohamed et al., *Monte Carlo gradient estimation in machine learning*, JMLR 21 (2020).
    """

    sampler: Callable[[Point, PRNGKeyArray, int], Array]
    num_samples: int = eqx.field(static=True)
    key: PRNGKeyArray
    reparameterized: bool = eqx.field(static=True)

    def __init__(
        self,
        sampler: Callable[[Point, PRNGKeyArray, int], Array],
        num_samples: int,
        key: PRNGKeyArray,
        reparameterized: bool = False,
    ):
        if not callable(sampler):
            raise TypeError("`sampler` must be a callable (theta, key, num_samples) -> samples.")
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive integer, got {num_samples}.")
        self.sampler = sampler
        self.num_samples = int(num_samples)
        self.key = key
        if not isinstance(reparameterized, bool):
            raise TypeError(f"`reparameterized` must be a bool, got {reparameterized!r}.")
        self.reparameterized = reparameterized

    def samples(self, theta: Point) -> Array:
        """The samples used at ``theta`` (gradients flow through them only if reparameterized)."""
        if self.reparameterized:
            x = jnp.asarray(self.sampler(theta, self.key, self.num_samples))
        else:
            theta = jax.lax.stop_gradient(theta)
            x = jax.lax.stop_gradient(jnp.asarray(self.sampler(theta, self.key, self.num_samples)))
        if x.ndim == 0 or x.shape[0] != self.num_samples:
            raise ValueError(
                f"`sampler(theta, key, {self.num_samples})` must return samples with a leading "
                f"axis of length {self.num_samples}, got shape {x.shape}."
            )
        return x

    def _terms(
        self, fn: Callable[[Sample], PyTree], theta: Point, log_density: LogDensity
    ) -> tuple[PyTree, Array, Array]:
        x = self.samples(theta)
        log_p = jax.vmap(lambda xi: _scalar_log_density(log_density, theta, xi))(x)
        if self.reparameterized:
            weights = jnp.ones_like(log_p)
        else:
            weights = jnp.exp(log_p - jax.lax.stop_gradient(log_p))
        bad_density = ~jnp.all(jnp.isfinite(log_p))
        return jax.vmap(fn)(x), weights, bad_density

    def expect(
        self,
        fn: Callable[[Sample], PyTree],
        theta: Point,
        log_density: LogDensity,
        *,
        check_finite: bool = True,
    ) -> PyTree:
        values, weights, bad_density = self._terms(fn, theta, log_density)
        n = self.num_samples
        result = _weighted_sum(values, weights / n, jnp.ones((n,), bool))
        result = eqx.error_if(
            result,
            bad_density,
            "MonteCarlo: log_density(theta, x) is not finite at a sample drawn by `sampler`: "
            "the sampler and log_density disagree (wrong support or parameterization).",
        )
        if check_finite:
            result = eqx.error_if(
                result,
                _any_nonfinite(values, jnp.ones((n,), bool)),
                "MonteCarlo: " + _NONFINITE_MESSAGE,
            )
        return result

    def standard_error(
        self, fn: Callable[[Sample], PyTree], theta: Point, log_density: LogDensity
    ) -> PyTree:
        r"""Standard error of :meth:`expect` (values only): sample std / :math:`\sqrt n`."""
        values, _, _ = self._terms(fn, theta, log_density)
        n = self.num_samples
        return jax.tree_util.tree_map(
            lambda v: jnp.std(v, axis=0, ddof=1 if n > 1 else 0) / math.sqrt(n), values
        )
