r"""Information projections onto exponential families and their flat subfamilies.

Two projections come from the two arguments of the Kullback-Leibler divergence:

- the **m-projection** of a distribution :math:`p` onto a set :math:`S` of distributions is
  :math:`\arg\min_{q \in S} \mathrm{KL}(p \| q)` (the target in the first argument: maximum
  likelihood, moment matching);
- the **e-projection** is :math:`\arg\min_{q \in S} \mathrm{KL}(q \| p)` (the target in the second
  argument: variational inference, maximum entropy).

For an exponential family :math:`p_\theta(x) = h(x)\exp(\langle\theta, T(x)\rangle - A(\theta))`
the m-projection onto the whole family, or onto an e-flat subfamily (natural parameters in an
affine subspace), depends on :math:`p` only through its expected sufficient statistics
:math:`E_p[T(x)]`, and satisfies the Pythagorean relation exactly:
:math:`\mathrm{KL}(p \| q) = \mathrm{KL}(p \| p^*) + \mathrm{KL}(p^* \| q)` for every :math:`q` in
the subfamily. Dually, the e-projection of a member onto an m-flat subfamily (expectation
parameters satisfying linear constraints) is an exponential tilting, with
:math:`\mathrm{KL}(q \| p) = \mathrm{KL}(q \| p^*) + \mathrm{KL}(p^* \| p)`. Both are solved by
the same Newton iteration on a convex function of the subfamily coordinates.

Every solution is differentiable: derivatives with respect to the target, the subfamily and any
array inside the family come from the implicit function theorem at the optimum (not from
unrolling the iterations).

References:
    Amari & Nagaoka, *Methods of Information Geometry* (2000), Sec. 3.4 (Theorem 3.8, the
    projection theorem) and Sec. 3.6; Csiszar, *I-divergence geometry of probability
    distributions and minimization problems*, Ann. Probab. 3 (1975), Theorem 2.2; Amari,
    *Information Geometry and Its Applications* (2016), Sec. 1.6 and Theorem 1.4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, Float, Point, PointLike, Sample, Scalar
from ._expectation import AbstractExpectation, AbstractQuadratureRule
from ._family import AbstractExponentialFamily
from ._fitting import check_finite_data, fit_moments, shifted_mean
from ._misc import as_point, check_real
from ._model import StatisticalModel
from ._projection_solver import (
    ProjectionResult,
    _AbstractProblem,
    _ReverseKLDensity,
    _ReverseKLMember,
    _TiltedPartition,
    run,
)

# ---------------------------------------------------------------------------------- targets


def _expected_statistic(
    family: AbstractExponentialFamily,
    eta: PointLike | None,
    samples: Array | None,
    weights: Array | None,
    model: StatisticalModel | None,
    params: PointLike | None,
    expectation: Callable[[Callable[[Sample], Array]], Array] | None,
) -> Point:
    r"""``E_p[T(x)]`` for a target given by exactly one of eta, samples, model or expectation."""
    given = [
        name
        for name, v in [
            ("eta", eta),
            ("samples", samples),
            ("model", model),
            ("expectation", expectation),
        ]
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "Give the target distribution p in exactly one way: `eta` (its expected sufficient "
            "statistics E_p[T(x)]), `samples` (with optional `weights`), `model` with `params` "
            "(a StatisticalModel, whose expectation rule computes E_p[T(x)]), or `expectation` "
            f"(a callable fn -> E_p[fn(x)]); got {given or 'none'}."
        )
    if weights is not None and samples is None:
        raise ValueError("`weights` goes with `samples`.")
    if (params is None) != (model is None):
        raise ValueError("`model` and `params` go together.")
    if eta is not None:
        return as_point(eta, family.dim, "eta")
    if samples is not None:
        samples, w = _samples_and_weights(samples, weights)
        stats = jax.vmap(family.sufficient_statistic)(samples)
        return shifted_mean(stats, w)
    if model is not None:
        assert params is not None
        if not isinstance(model, StatisticalModel):
            raise TypeError(f"`model` must be a StatisticalModel, got {type(model).__name__}.")
        eta = jnp.atleast_1d(jnp.asarray(model.expect(family.sufficient_statistic, params)))
        eta = as_point(eta, family.dim, "E_p[T(x)]")
        rule = model.expectation
        share = rule._tail_share(
            family.sufficient_statistic,
            model._base(model.check_point(params)),
            model.log_density_fn,
        )
        tol = rule._tolerance(eta.dtype) if isinstance(rule, AbstractQuadratureRule) else 1.0
        return eqx.error_if(
            eta,
            ~(share <= tol),
            "E_p[T(x)] does not converge under the model's Quadrature rule: its outermost "
            "nodes carry more than normalization_tolerance of the integral, so a moment that "
            f"{type(family).__name__} matches is infinite under p (e.g. the variance of a "
            "Student t with df <= 2) or too heavy-tailed to be resolved; the m-projection "
            "does not exist (or cannot be computed accurately).",
        )
    assert expectation is not None
    if not callable(expectation):
        raise TypeError("`expectation` must be a callable fn -> E_p[fn(x)].")
    eta = jnp.atleast_1d(jnp.asarray(expectation(family.sufficient_statistic)))
    return as_point(eta, family.dim, "E_p[T(x)]")


def _samples_and_weights(samples: Any, weights: Any) -> tuple[Array, Array | None]:
    """Validated samples (finite, at least one) and weights normalized to sum to one."""
    samples = jnp.asarray(samples)
    if samples.ndim < 1 or samples.shape[0] < 1:
        raise ValueError(
            "`samples` must have a leading sample axis with at least one sample, got shape "
            f"{samples.shape}."
        )
    samples = check_finite_data(samples)
    if weights is None:
        return samples, None
    w = jnp.asarray(weights)
    check_real(w, "weights")
    w = w.astype(jnp.result_type(w.dtype, samples.dtype, float))
    if w.shape != samples.shape[:1]:
        raise ValueError(
            f"`weights` must have shape ({samples.shape[0]},) (one per sample), got {w.shape}."
        )
    w = eqx.error_if(
        w,
        jnp.any(w < 0) | ~(jnp.sum(w) > 0) | ~jnp.all(jnp.isfinite(w)),
        "`weights` must be finite and non-negative with a positive sum.",
    )
    return samples, w / jnp.sum(w)


def _check_family(family: Any) -> None:
    if not isinstance(family, AbstractExponentialFamily):
        raise TypeError(
            "Projections need an exponential family (an AbstractExponentialFamily, e.g. "
            f"`infogeo_jax.families.Normal()`), got {type(family).__name__}."
        )


def _as_basis(family: AbstractExponentialFamily, basis: Any, name: str, dtype) -> Array:
    basis = jnp.asarray(basis)
    basis = basis.astype(jnp.result_type(basis.dtype, dtype, float))
    if basis.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array, got shape {basis.shape}.")
    return basis


_QExpectation = Callable[[Callable[[Sample], Any], Point], Any]


class _ModelTarget(eqx.Module):
    """``x -> model.log_density(params, x)`` as a pytree (derivatives reach ``params``)."""

    model: StatisticalModel
    params: Point

    def __call__(self, x: Sample) -> Scalar:
        return self.model.log_density(self.params, x)


class _RuleForFamily(eqx.Module):
    """``(fn, theta) -> E_{q_theta}[fn(x)]`` from an expectation rule and the family's density."""

    rule: AbstractExpectation
    family: AbstractExponentialFamily

    def log_density(self, theta: Point, x: Sample) -> Scalar:
        stat = self.family.sufficient_statistic(x)
        return (
            theta @ stat - self.family._raw_log_partition(theta) + (self.family.log_base_measure(x))
        )

    def __call__(self, fn: Callable[[Sample], Any], theta: Point) -> Any:
        return self.rule.expect(fn, theta, self.log_density)


# ---------------------------------------------------------------------------------- public API


@eqx.filter_jit
def m_projection(
    family: AbstractExponentialFamily,
    eta: PointLike | None = None,
    *,
    samples: Array | None = None,
    weights: Array | None = None,
    model: StatisticalModel | None = None,
    params: PointLike | None = None,
    expectation: Callable[[Callable[[Sample], Array]], Array] | None = None,
    **solve_kwargs: Any,
) -> Point:
    r"""m-projection of a distribution p onto an exponential family (moment matching).

    .. math::
        p^* = \arg\min_{q \in \mathcal{E}} \mathrm{KL}(p \| q), \qquad
        \eta(p^*) = \nabla A(\theta^*) = E_p[T(x)],

    and for every member q of the family the Pythagorean relation holds exactly:
    :math:`\mathrm{KL}(p\|q) = \mathrm{KL}(p\|p^*) + \mathrm{KL}(p^*\|q)`.

    Give p in exactly one way: its expected sufficient statistics ``eta`` :math:`= E_p[T(x)]`;
    ``samples`` (the empirical distribution, optionally weighted: then this is maximum
    likelihood); a :class:`StatisticalModel` ``model`` at ``params`` (its expectation rule
    computes :math:`E_p[T(x)]`, e.g. a Student t onto the normals); or ``expectation``, any
    callable ``fn -> E_p[fn(x)]``.

    Args:
        family: the exponential family to project onto.
        eta: :math:`E_p[T(x)]`, shape ``(dim,)``.
        samples: samples of p with a leading sample axis.
        weights: optional non-negative sample weights, shape ``(num_samples,)``.
        model: a :class:`StatisticalModel` on the same sample space as the family.
        params: the model's parameters (with ``model``).
        expectation: callable returning :math:`E_p[f(x)]` for a function f of one sample.
        **solve_kwargs: passed to :meth:`AbstractExponentialFamily.natural_parameters`.

    Returns:
        Natural parameters :math:`\theta^*` of the projection, shape ``(dim,)``.

    Raises:
        ValueError: if the target is not given in exactly one way, or shapes do not match.
        equinox.EquinoxRuntimeError: if :math:`E_p[T]` is outside the mean domain (e.g. data
            with zero variance for a normal family: the projection does not exist), if the
            samples or weights contain NaN or inf, or if a moment of a ``model`` target does
            not converge under its :class:`Quadrature` rule (an infinite variance).

    Samples are fitted with centered moments where the family allows (the normal families
    fit the mean and the two-pass covariance, with no :math:`E[x^2] - E[x]^2` cancellation).

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.families import Normal
        >>> x = jnp.array([0.0, 1.0, 2.0, 3.0])
        >>> [round(float(u), 4) for u in Normal().to_usual(m_projection(Normal(), samples=x))]
        [1.5, 1.118]

    References:
        Amari & Nagaoka (2000), Theorem 3.8; Amari (2016), Theorem 1.4 (projection theorem).
    """
    _check_family(family)
    if samples is not None and eta is None and model is None and expectation is None:
        data, w = _samples_and_weights(samples, weights)
        return fit_moments(family, data, w, solve_kwargs)
    eta = _expected_statistic(family, eta, samples, weights, model, params, expectation)
    return family.natural_parameters(eta, **solve_kwargs)


@eqx.filter_jit
def m_projection_affine(
    family: AbstractExponentialFamily,
    eta: PointLike | None = None,
    *,
    basis: Float[Array, "dim m"],
    offset: PointLike | None = None,
    samples: Array | None = None,
    weights: Array | None = None,
    model: StatisticalModel | None = None,
    params: PointLike | None = None,
    expectation: Callable[[Callable[[Sample], Array]], Array] | None = None,
    initial_coordinates: Array | None = None,
    max_steps: int = 50,
    rtol: float | None = None,
    atol: float | None = None,
    throw: bool = True,
) -> ProjectionResult:
    r"""m-projection of p onto the e-flat subfamily :math:`\{\theta = o + B w\}`.

    .. math::
        w^* = \arg\min_w \mathrm{KL}(p \| p_{o + Bw})
            = \arg\min_w A(o + Bw) - \langle w, B^\top E_p[T(x)] \rangle,

    a convex problem solved by damped Newton (Hessian :math:`B^\top g(\theta) B`); at the optimum
    :math:`B^\top \eta(\theta^*) = B^\top E_p[T]` (matching of the moments the subfamily can
    see). The Pythagorean relation :math:`\mathrm{KL}(p\|q) = \mathrm{KL}(p\|p^*) +
    \mathrm{KL}(p^*\|q)` holds exactly for every q in the subfamily. The target is given as in
    :func:`m_projection`.

    Args:
        family: the ambient exponential family.
        eta: :math:`E_p[T(x)]`, shape ``(dim,)`` (or give ``samples``, ``model`` or
            ``expectation``).
        basis: B, shape ``(dim, m)``, full column rank.
        offset: o, shape ``(dim,)`` (default zero).
        samples: samples of p with a leading sample axis.
        weights: optional sample weights.
        model: a :class:`StatisticalModel` on the same sample space as the family.
        params: the model's parameters (with ``model``).
        expectation: callable returning :math:`E_p[f(x)]`.
        initial_coordinates: starting w, shape ``(m,)``, with :math:`o + Bw` in the natural
            domain (default zero, which needs the offset in the domain).
        max_steps: maximum number of Newton steps.
        rtol: relative tolerance on the Newton step (default 1e-10 in float64, 1e-5 in
            float32).
        atol: absolute tolerance on the Newton step (same default).
        throw: raise (also under ``jit``) unless the solve converged; with ``throw=False``
            inspect ``result``.

    Returns:
        A :class:`ProjectionResult` with ``theta`` :math:`= o + Bw^*` and ``coordinates``
        :math:`= w^*`.

    Raises:
        ValueError: on inconsistent shapes or a target not given in exactly one way.
        equinox.EquinoxRuntimeError: if the start is outside the domain or the solve failed
            (``throw=True``).

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.families import Normal
        >>> # N(mu, 1) is the e-flat line theta = (0, -1/2) + (1, 0) w.
        >>> res = m_projection_affine(Normal(), jnp.array([2.0, 9.0]),
        ...                           basis=jnp.array([[1.0], [0.0]]),
        ...                           offset=jnp.array([0.0, -0.5]))
        >>> float(res.coordinates[0])  # the mean of p
        2.0

    References:
        Amari & Nagaoka (2000), Theorem 3.8 and Sec. 3.6 (e-flat submanifolds); Csiszar & Matus,
        *Information projections revisited*, IEEE Trans. Inf. Theory 49 (2003).
    """
    _check_family(family)
    eta = _expected_statistic(family, eta, samples, weights, model, params, expectation)
    basis = _as_basis(family, basis, "basis", eta.dtype)
    dim = eta.shape[0]
    if basis.shape[0] != dim or basis.shape[1] > dim or basis.shape[1] < 1:
        raise ValueError(
            f"`basis` must have shape ({dim}, m) with 1 <= m <= {dim}, got {basis.shape}."
        )
    offset = (
        jnp.zeros(dim, basis.dtype) if offset is None else as_point(offset, dim, "offset")
    ).astype(basis.dtype)
    m = basis.shape[1]
    if initial_coordinates is None:
        w0 = jnp.zeros(m, basis.dtype)
    else:
        w0 = as_point(initial_coordinates, m, "initial_coordinates").astype(basis.dtype)
    w0 = eqx.error_if(
        w0,
        ~family.in_domain(offset + basis @ w0),
        "m_projection_affine: the starting point offset + basis @ initial_coordinates is "
        "outside the natural domain; pass `initial_coordinates` (or an offset) inside it.",
    )
    problem = _TiltedPartition(family, offset, basis, basis.T @ eta.astype(basis.dtype))
    return run(problem, w0, max_steps, rtol, atol, throw)


@eqx.filter_jit
def e_projection_affine(
    family: AbstractExponentialFamily,
    theta: PointLike,
    *,
    constraint_matrix: Float[Array, "m dim"],
    constraint_value: Float[Array, " m"],
    max_steps: int = 50,
    rtol: float | None = None,
    atol: float | None = None,
    throw: bool = True,
) -> ProjectionResult:
    r"""e-projection of a member p onto the m-flat subfamily :math:`\{q : C\,\eta(q) = c\}`.

    The subfamily of members whose expectations satisfy linear constraints
    :math:`E_q[C\,T(x)] = c` is m-flat (affine in expectation parameters). The e-projection

    .. math::
        p^* = \arg\min_{C\eta(q) = c} \mathrm{KL}(q \| p_\theta),
        \qquad \theta^* = \theta + C^\top\lambda^*,
        \qquad \lambda^* = \arg\min_\lambda A(\theta + C^\top\lambda) - \langle\lambda,
        c\rangle,

    is the exponential tilting :math:`p^*(x) \propto p(x)\,e^{\langle\lambda^*, C T(x)\rangle}`
    (minimum discrimination information, maximum entropy relative to p). The dual Pythagorean
    relation :math:`\mathrm{KL}(q\|p) = \mathrm{KL}(q\|p^*) + \mathrm{KL}(p^*\|p)` holds
    exactly for every q in the subfamily.

    Args:
        family: the exponential family.
        theta: natural parameters of p, shape ``(dim,)``.
        constraint_matrix: C, shape ``(m, dim)``, full row rank.
        constraint_value: c, shape ``(m,)``; :math:`\{C\eta = c\}` must meet the mean domain.
        max_steps: maximum number of Newton steps.
        rtol: relative tolerance on the Newton step.
        atol: absolute tolerance on the Newton step.
        throw: raise (also under ``jit``) unless the solve converged.

    Returns:
        A :class:`ProjectionResult` with ``theta`` :math:`=\theta^*` and ``coordinates`` the
        multipliers :math:`\lambda^*`.

    Raises:
        ValueError: on inconsistent shapes.
        equinox.EquinoxRuntimeError: if ``theta`` is outside the domain or the solve failed
            (``throw=True``): for instance when no member satisfies the constraints.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.families import Normal
        >>> p = Normal().from_usual(jnp.array([0.0, 2.0]))
        >>> res = e_projection_affine(Normal(), p, constraint_matrix=jnp.array([[1.0, 0.0]]),
        ...                           constraint_value=jnp.array([1.0]))
        >>> [round(float(u), 4) for u in Normal().to_usual(res.theta)]  # the mean shifts
        [1.0, 2.0]

    References:
        Csiszar (1975), Theorem 3.1 (I-projection onto linear families) and Eq. (3.2);
        Kullback, *Information Theory and Statistics* (1959), Ch. 3 (minimum discrimination
        information); Amari & Nagaoka (2000), Sec. 3.4.
    """
    _check_family(family)
    theta = family.check_point(theta)
    c_matrix = _as_basis(family, constraint_matrix, "constraint_matrix", theta.dtype)
    dim = theta.shape[0]
    if c_matrix.shape[1] != dim or c_matrix.shape[0] > dim or c_matrix.shape[0] < 1:
        raise ValueError(
            f"`constraint_matrix` must have shape (m, {dim}) with 1 <= m <= {dim}, got "
            f"{c_matrix.shape}."
        )
    m = c_matrix.shape[0]
    value = jnp.asarray(constraint_value, c_matrix.dtype)
    if value.shape != (m,):
        raise ValueError(f"`constraint_value` must have shape ({m},), got {value.shape}.")
    theta = theta.astype(c_matrix.dtype)
    problem = _TiltedPartition(family, theta, c_matrix.T, value)
    return run(problem, jnp.zeros(m, c_matrix.dtype), max_steps, rtol, atol, throw)


@eqx.filter_jit
def e_projection(
    family: AbstractExponentialFamily,
    target: PointLike | Callable[[Sample], Scalar] | StatisticalModel,
    *,
    params: PointLike | None = None,
    expectation: AbstractExpectation | _QExpectation | None = None,
    basis: Float[Array, "dim m"] | None = None,
    offset: PointLike | None = None,
    initial_coordinates: Array | None = None,
    max_steps: int = 200,
    rtol: float | None = None,
    atol: float | None = None,
    throw: bool = True,
) -> ProjectionResult:
    r"""e-projection :math:`\arg\min_q \mathrm{KL}(q \| p)` over a family, by natural gradient.

    Minimizes the reverse divergence over the family (or over the e-flat subfamily
    :math:`\theta = o + Bw` when ``basis`` is given) by natural-gradient iterations with an
    Armijo line search,

    .. math::
        w \leftarrow w - t\,(B^\top g B)^{-1} B^\top \nabla_\theta \mathrm{KL}(q_\theta\|p),
        \qquad
        \nabla_\theta \mathrm{KL}(q_\theta \| p) = g(\theta)\,\theta
            - \mathrm{Cov}_{q_\theta}[T(x), \log \tilde p(x) - \log h(x)].

    With the whole family and t = 1 one step reads
    :math:`\theta \leftarrow g^{-1}\mathrm{Cov}_q[T, \log\tilde p - \log h]` (conjugate
    computation variational inference), and it lands on p in a single step when p belongs to
    the family. The target is either

    - a callable ``log_density(x)``: the log-density of p up to an additive constant (p need
      not be normalized), or a :class:`StatisticalModel` with its ``params``; then
      ``expectation`` computes expectations under the members :math:`q_\theta` of the family:
      an expectation rule (:class:`FiniteSupport`, :class:`Quadrature` with a ``center`` that
      follows :math:`q_\theta`, :class:`MonteCarlo` with a sampler of the family), or a
      callable ``(fn, theta) -> E_{q_theta}[fn(x)]``, differentiable in theta; or
    - natural parameters of a member of the same family (then ``basis`` is needed for a
      non-trivial problem, e.g. a mean-field approximation of a correlated Gaussian), with
      the divergence in closed form.

    Args:
        family: the exponential family.
        target: the log-density of p (callable), a :class:`StatisticalModel`, or natural
            parameters ``(dim,)`` of a member.
        params: the model's parameters (with a :class:`StatisticalModel` target).
        expectation: the expectation rule for members of the family (density targets only):
            its ``center``/``sampler`` receive the family's natural parameters.
        basis: B, shape ``(dim, m)`` (default: the identity, the whole family).
        offset: o, shape ``(dim,)`` (default zero).
        initial_coordinates: starting w (theta for the whole family); default zero for a
            subfamily, and the family's standard starting point for the whole family.
        max_steps: maximum number of natural-gradient steps.
        rtol: relative tolerance on the natural-gradient step.
        atol: absolute tolerance on the natural-gradient step.
        throw: raise (also under ``jit``) unless the iteration converged.

    Returns:
        A :class:`ProjectionResult`.

    Raises:
        ValueError: on inconsistent shapes, or a callable target without ``expectation``.
        equinox.EquinoxRuntimeError: if the start is outside the domain or the iteration did
            not converge (``throw=True``).

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax.families import Normal
        >>> from infogeo_jax import Quadrature
        >>> rule = Quadrature(-jnp.inf, jnp.inf, 128, center=lambda th: Normal().to_usual(th))
        >>> cauchy = lambda x: -jnp.log1p(x**2)  # unnormalized log-density
        >>> res = e_projection(Normal(), cauchy, expectation=rule)
        >>> [round(float(u), 3) + 0.0 for u in Normal().to_usual(res.theta)]
        [0.0, 1.634]

    References:
        Amari (1998), *Natural gradient works efficiently in learning*, Neural Comput. 10;
        Khan & Lin, *Conjugate-computation variational inference*, AISTATS 2017, Eq. (9);
        Bishop, *Pattern Recognition and Machine Learning* (2006), Sec. 10.1.2 (reverse-KL
        mean-field approximation of a Gaussian, Eqs. (10.12)-(10.17)).
    """
    _check_family(family)
    dtype = jnp.result_type(float)
    if isinstance(target, StatisticalModel):
        if params is None:
            raise ValueError("A StatisticalModel target needs its `params=`.")
        target = _ModelTarget(target, target.check_point(params))
    elif params is not None:
        raise ValueError("`params` goes with a StatisticalModel target.")
    if isinstance(expectation, AbstractExpectation):
        expectation = _RuleForFamily(expectation, family)
    if callable(target):
        if expectation is None:
            raise ValueError(
                "A callable target (a log-density) needs `expectation=`, a rule "
                "(fn, theta) -> E_{q_theta}[fn(x)] for members of the family."
            )
        if not callable(expectation):
            raise TypeError(
                "`expectation` must be an expectation rule or a callable (fn, theta) -> E_q[fn(x)]."
            )
        target_theta = None
    else:
        if expectation is not None:
            raise ValueError("`expectation` is only used with a callable target.")
        target_theta = family.check_point(target)
        dtype = target_theta.dtype
    dim = family.dim if target_theta is None else target_theta.shape[0]
    if dim is None:
        if basis is not None:
            dim = jnp.shape(basis)[0]
        elif initial_coordinates is not None:
            dim = jnp.shape(initial_coordinates)[0]
        else:
            raise ValueError(
                "The family has no static dimension: pass `initial_coordinates` or `basis`."
            )
    if basis is None:
        basis_arr = jnp.eye(dim, dtype=dtype)
        whole = True
    else:
        basis_arr = _as_basis(family, basis, "basis", dtype)
        whole = False
        if basis_arr.shape[0] != dim or not 1 <= basis_arr.shape[1] <= dim:
            raise ValueError(
                f"`basis` must have shape ({dim}, m) with 1 <= m <= {dim}, got {basis_arr.shape}."
            )
    dtype = basis_arr.dtype
    offset_arr = (
        jnp.zeros(dim, dtype) if offset is None else as_point(offset, dim, "offset")
    ).astype(dtype)
    m = basis_arr.shape[1]
    if initial_coordinates is not None:
        w0 = as_point(initial_coordinates, m, "initial_coordinates").astype(dtype)
    elif whole:
        w0 = family._initial_natural_parameters(jnp.zeros(dim, dtype)) - offset_arr
    else:
        w0 = jnp.zeros(m, dtype)
    w0 = eqx.error_if(
        w0,
        ~family.in_domain(offset_arr + basis_arr @ w0),
        "e_projection: the starting point is outside the natural domain; pass "
        "`initial_coordinates` inside it.",
    )
    if target_theta is None:
        assert expectation is not None
        problem: _AbstractProblem = _ReverseKLDensity(
            family,
            offset_arr,
            basis_arr,
            target,  # pyright: ignore[reportArgumentType]
            expectation,
        )
    else:
        problem = _ReverseKLMember(family, offset_arr, basis_arr, target_theta.astype(dtype))
    return run(problem, w0, max_steps, rtol, atol, throw)
