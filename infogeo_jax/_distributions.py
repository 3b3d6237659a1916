r"""Adapters between infogeo_jax and the JAX probability libraries (numpyro, distrax, TFP).

Two directions:

- :func:`model_from_distribution` (public as :meth:`StatisticalModel.from_distribution`): a
  statistical model whose log-density is ``make_distribution(theta).log_prob(x)``, with an
  expectation rule read off the distribution (finite support, support bounds, moments, sampler).
- :func:`native_distribution`: a catalogue family's member as a distribution object of one of
  those libraries (used by ``AbstractExponentialFamily.to_distribution``).

The libraries are never imported by ``import infogeo_jax``: a distribution's library is read from
the module name of its type, and a library is imported only when a distribution of it is asked
for. numpyro distributions are read through their own metadata (``support``,
``arg_constraints``, ``enumerate_support``, ``is_discrete``); TFP-on-JAX and distrax share one
duck-typed path (``experimental_default_event_space_bijector`` and ``parameter_properties``
for TFP, a table of class names for distrax).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Array, Point, PointLike, PRNGKeyArray, Sample, Scalar
from ._expectation import AbstractExpectation, FiniteSupport, MonteCarlo, Quadrature

LIBRARIES = ("numpyro", "distrax", "tfp")
_MODULE_ROOTS = {"numpyro": "numpyro", "distrax": "distrax", "tensorflow_probability": "tfp"}

# distrax distributions carry no support metadata: the one-dimensional continuous ones by name.
_DISTRAX_REAL = {"Normal", "Laplace", "Logistic", "Gumbel", "LogStddevNormal"}
_DISTRAX_BOUNDS = {"Gamma": (0.0, math.inf), "Beta": (0.0, 1.0), "VonMises": (-math.pi, math.pi)}
_DISCRETE_NAMES = {"Bernoulli", "Categorical", "OneHotCategorical", "Binomial", "Multinomial"}


def library_of(distribution: Any) -> str:
    """The library of a distribution object (``"numpyro"``, ``"distrax"`` or ``"tfp"``).

    Read from the module name of its type, so no library is imported.

    Raises:
        TypeError: if the object is not a distribution of one of the three libraries.
    """
    root = type(distribution).__module__.split(".")[0]
    if root not in _MODULE_ROOTS:
        raise TypeError(
            "`make_distribution(theta)` must return a numpyro, distrax or TFP-on-JAX "
            f"distribution, got {type(distribution).__module__}.{type(distribution).__name__}."
        )
    return _MODULE_ROOTS[root]


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def _sample(
    distribution: Any, library: str, key: PRNGKeyArray, n: int, reparameterized: bool = False
) -> Array:
    if library == "numpyro":
        if reparameterized:
            return distribution.rsample(key, (n,))
        return distribution.sample(key, (n,))
    return distribution.sample(seed=key, sample_shape=(n,))


def has_reparameterized_sampler(distribution: Any) -> bool:
    """Whether the distribution's samples are a differentiable function of its parameters.

    numpyro: ``has_rsample``; distrax / TFP: ``reparameterization_type`` is
    ``FULLY_REPARAMETERIZED`` (read by name, so no library is imported).
    """
    library = library_of(distribution)
    if library == "numpyro":
        return bool(getattr(distribution, "has_rsample", False))
    kind = getattr(distribution, "reparameterization_type", None)
    name = getattr(kind, "_rep_type", None)
    if name is None:
        name = repr(kind)
    return "FULLY_REPARAMETERIZED" in str(name)


def _moments(distribution: Any, library: str) -> tuple[Array, Array]:
    if library == "numpyro":
        return distribution.mean, jnp.sqrt(distribution.variance)
    return distribution.mean(), distribution.stddev()


def _concrete(x: Any) -> float | None:
    """``float(x)`` when ``x`` does not depend on the traced theta, else None."""
    try:
        return float(x)
    except (jax.errors.ConcretizationTypeError, TypeError):
        return None


def _bounds(distribution: Any, library: str) -> tuple[Any, Any] | None:
    """(lower, upper) of a one-dimensional continuous support, None where unknown."""
    name = type(distribution).__name__
    if library == "numpyro":
        support = distribution.support
        if getattr(support, "event_dim", 0) != 0 or distribution.is_discrete:
            return None
        kind = type(support).__name__
        if kind in ("_Real", "_RealVector"):
            return -math.inf, math.inf
        lower = getattr(support, "lower_bound", -math.inf)
        upper = getattr(support, "upper_bound", math.inf)
        if kind in ("_Real", "_GreaterThan", "_Positive", "_LessThan") or kind.endswith(
            ("Interval", "Circular", "GreaterThan", "LessThan", "Positive", "Real")
        ):
            return lower, upper
        return None
    if library == "distrax":
        if name in _DISTRAX_REAL:
            return -math.inf, math.inf
        if name in _DISTRAX_BOUNDS:
            return _DISTRAX_BOUNDS[name]
        if name == "Uniform":
            return distribution.low, distribution.high
        return None
    try:
        bijector = distribution.experimental_default_event_space_bijector()
    except NotImplementedError:
        return None
    if bijector is None:  # discrete distributions have no event-space bijector
        return None
    ends = bijector.forward(jnp.array([-jnp.inf, jnp.inf], distribution.dtype))
    return ends[0], ends[1]


def _finite_points(distribution: Any, library: str) -> Array | None:
    """The outcomes of a finite sample space (leading axis = outcomes), None if not finite."""
    name = type(distribution).__name__
    if library == "numpyro":
        if not (distribution.is_discrete and distribution.has_enumerate_support):
            return None
        points = distribution.enumerate_support(expand=False)
        event = _shape(distribution.event_shape)
        return jnp.reshape(points, (points.shape[0],) + event)
    if name == "Bernoulli":
        return jnp.arange(2)
    if name in ("Categorical", "OneHotCategorical"):
        logits = distribution.logits if library == "distrax" else distribution.logits_parameter()
        k = int(logits.shape[-1])
        return jnp.arange(k) if name == "Categorical" else jnp.eye(k, dtype=jnp.int32)
    if name == "Binomial" and library == "tfp":
        n = _concrete(distribution.total_count)
        return None if n is None else jnp.arange(int(n) + 1)
    return None


def _is_discrete(distribution: Any, library: str) -> bool:
    if library == "numpyro":
        return bool(distribution.is_discrete)
    if type(distribution).__name__ in _DISCRETE_NAMES:
        return True
    return not jnp.issubdtype(jnp.dtype(distribution.dtype), jnp.inexact)


class DistributionLogDensity(eqx.Module):
    """``log_density(theta, x) = make_distribution(theta).log_prob(x)`` (a pytree).

    Attributes:
        make_distribution: the user's ``theta -> distribution``.
    """

    make_distribution: Callable[[Point], Any]

    def __call__(self, theta: Point, x: Sample) -> Scalar:
        distribution = self.make_distribution(theta)
        library_of(distribution)
        return jnp.asarray(distribution.log_prob(x))


class DistributionSampler(eqx.Module):
    """``sampler(theta, key, n)``: ``n`` samples of ``make_distribution(theta)``.

    With ``reparameterized=True`` the distribution's reparameterized sampler is used (numpyro's
    ``rsample``; distrax / TFP's ``sample`` of a fully reparameterized distribution), so the
    samples are differentiable in theta.
    """

    make_distribution: Callable[[Point], Any]
    reparameterized: bool = eqx.field(static=True, default=False)

    def __call__(self, theta: Point, key: PRNGKeyArray, num_samples: int) -> Array:
        distribution = self.make_distribution(theta)
        library = library_of(distribution)
        if self.reparameterized and not has_reparameterized_sampler(distribution):
            raise ValueError(
                f"{type(distribution).__name__} has no reparameterized sampler: use "
                "`reparameterized=False` (likelihood-ratio weights)."
            )
        return _sample(distribution, library, key, num_samples, self.reparameterized)


class DistributionCenter(eqx.Module):
    """``center(theta) -> (loc, scale)`` for :class:`~infogeo_jax.Quadrature`.

    The distribution's mean and standard deviation where they are finite, else (e.g. the
    Cauchy, a Student t with two or fewer degrees of freedom) its ``loc``/``scale`` attributes
    or the rule's default; ``loc`` is kept strictly inside the support.
    """

    make_distribution: Callable[[Point], Any]
    lower: float = eqx.field(static=True)
    upper: float = eqx.field(static=True)
    fallback: str = eqx.field(static=True)  # "attributes" or "default"

    def _default(self, dtype: Any) -> tuple[Array, Array]:
        a, b = self.lower, self.upper
        if math.isinf(a) and math.isinf(b):
            loc, scale = 0.0, 1.0
        elif math.isinf(b):
            loc, scale = a + 1.0, 1.0
        elif math.isinf(a):
            loc, scale = b - 1.0, 1.0
        else:
            loc, scale = 0.5 * (a + b), 0.25 * (b - a)
        return jnp.asarray(loc, dtype), jnp.asarray(scale, dtype)

    def __call__(self, theta: Point) -> tuple[Array, Array]:
        dtype = theta.dtype
        d = self.make_distribution(theta)
        mean, std = _moments(d, library_of(d))
        mean, std = jnp.asarray(mean, dtype), jnp.asarray(std, dtype)
        if self.fallback == "attributes":
            loc0, scale0 = jnp.asarray(d.loc, dtype), jnp.asarray(d.scale, dtype)
        else:
            loc0, scale0 = self._default(dtype)
        ok = jnp.isfinite(mean) & jnp.isfinite(std) & (std > 0)
        loc = jnp.where(ok, mean, loc0)
        scale = jnp.where(ok, std, scale0)
        a, b = self.lower, self.upper
        if not math.isinf(a) and not math.isinf(b):
            margin = 1e-3 * (b - a)
            loc = jnp.clip(loc, a + margin, b - margin)
            scale = jnp.minimum(scale, 0.25 * (b - a))
        elif not math.isinf(a):
            loc = jnp.maximum(loc, a + 1e-3 * scale)
        elif not math.isinf(b):
            loc = jnp.minimum(loc, b - 1e-3 * scale)
        return loc, scale


class DistributionDomain(eqx.Module):
    """Whether ``make_distribution(theta)``'s parameters satisfy their constraints.

    numpyro: every checkable entry of ``arg_constraints``; TFP: each parameter's default
    constraining bijector has a finite inverse there; distrax carries no constraint metadata,
    so only finiteness of the parameters is checked (its NaN log-densities are still caught by
    the expectation rules).
    """

    make_distribution: Callable[[Point], Any]

    def __call__(self, theta: Point) -> Scalar:
        d = self.make_distribution(theta)
        library = library_of(d)
        ok = jnp.all(jnp.isfinite(theta))
        if library == "numpyro":
            for name, constraint in d.arg_constraints.items():
                value = getattr(d, name, None)
                if value is None:
                    continue
                try:
                    ok = ok & jnp.all(constraint(value))
                except (NotImplementedError, ValueError):  # dependent: not checkable
                    continue
        elif library == "tfp":
            for name, prop in type(d).parameter_properties().items():
                value = d.parameters.get(name)
                if value is None:
                    continue
                try:
                    bijector = prop.default_constraining_bijector_fn()
                    inverse = bijector.inverse(jnp.asarray(value))
                except (NotImplementedError, TypeError, ValueError):
                    continue
                ok = ok & jnp.all(jnp.isfinite(inverse))
        return ok


def choose_expectation(
    make_distribution: Callable[[Point], Any],
    example: Point,
    *,
    num_nodes: int = 192,
    num_samples: int = 4096,
    key: PRNGKeyArray | None = None,
) -> AbstractExpectation:
    """The expectation rule that fits ``make_distribution`` (see ``from_distribution``)."""
    distribution = make_distribution(example)
    library = library_of(distribution)
    points = _finite_points(distribution, library)
    if points is not None:
        return FiniteSupport(points)
    event = _shape(distribution.event_shape)
    if event == () and not _is_discrete(distribution, library):
        bounds = _static_bounds(make_distribution, example, library)
        if bounds is not None:
            lower, upper = bounds
            try:
                _moments(distribution, library)
                fallback = "default"
                if _concrete_attr(distribution, "loc") and _concrete_attr(distribution, "scale"):
                    fallback = "attributes"
                center = DistributionCenter(make_distribution, lower, upper, fallback)
            except NotImplementedError:
                center = None
            return Quadrature(lower, upper, num_nodes, center=center)
    key = jax.random.key(0) if key is None else key
    pathwise = has_reparameterized_sampler(distribution)
    sampler = DistributionSampler(make_distribution, reparameterized=pathwise)
    return MonteCarlo(sampler, num_samples, key, reparameterized=pathwise)


def _static_bounds(
    make_distribution: Callable[[Point], Any], example: Point, library: str
) -> tuple[float, float] | None:
    """Support bounds as floats, or None if unknown or dependent on theta (a zero Jacobian)."""
    bounds = _bounds(make_distribution(example), library)
    if bounds is None:
        return None

    def ends(theta):
        found = _bounds(make_distribution(theta), library)
        assert found is not None
        return jnp.stack([jnp.asarray(b, theta.dtype) for b in found])

    jacobian = jax.jacfwd(ends)(example)
    if not bool(jnp.all(jacobian == 0)):
        return None
    lower, upper = (float(b) for b in bounds)
    return (lower, upper) if lower < upper else None


def _concrete_attr(distribution: Any, name: str) -> bool:
    try:
        value = getattr(distribution, name)
    except (AttributeError, NotImplementedError):
        return False
    return value is not None and jnp.shape(value) == ()


def distribution_model_parts(
    make_distribution: Callable[[Point], Any],
    expectation: AbstractExpectation | None = None,
    *,
    example: PointLike | None = None,
    dim: int | None = None,
    num_nodes: int = 192,
    num_samples: int = 4096,
    key: PRNGKeyArray | None = None,
) -> tuple[Callable[[Point, Sample], Scalar], AbstractExpectation, int | None, Any]:
    """The pieces of :meth:`StatisticalModel.from_distribution`.

    Returns:
        ``(log_density, expectation, dim, in_domain)``: the model's log-density
        ``(theta, x) -> log p``, its expectation rule, its dimension (or ``None``) and the
        domain predicate of the distribution's parameters.
    """
    if not callable(make_distribution):
        raise TypeError("`make_distribution` must be a callable theta -> distribution.")
    if example is None and expectation is None:
        raise ValueError(
            "Pass `example` (a point of the parameter domain, where `make_distribution` is "
            "called once to read the distribution's support and shapes) or an `expectation` "
            "rule."
        )
    if example is not None:
        example = jnp.asarray(example, dtype=jnp.result_type(float))
        if example.ndim != 1:
            raise ValueError(f"`example` must be a 1-D array, got shape {example.shape}.")
        dim = int(example.shape[0]) if dim is None else dim
        distribution = make_distribution(example)
        library_of(distribution)
        batch = _shape(distribution.batch_shape)
        if batch != ():
            raise ValueError(
                "`make_distribution(theta)` must return one distribution (batch_shape ()), got "
                f"batch_shape {batch}; for independent coordinates make them one event "
                "(numpyro: `.to_event(1)`, TFP / distrax: `Independent`)."
            )
        if expectation is None:
            expectation = choose_expectation(
                make_distribution, example, num_nodes=num_nodes, num_samples=num_samples, key=key
            )
    assert expectation is not None
    return (
        DistributionLogDensity(make_distribution),
        expectation,
        dim,
        DistributionDomain(make_distribution),
    )


# ---------------------------------------------------------------------------------------------
# The reverse direction: catalogue families as library distributions
# ---------------------------------------------------------------------------------------------
def _import(library: str) -> Any:
    """The distributions module of ``library``, imported now (with a clear error if absent)."""
    if library not in LIBRARIES:
        raise ValueError(f"`library` must be one of {LIBRARIES}, got {library!r}.")
    try:
        if library == "numpyro":
            import numpyro.distributions as module
        elif library == "distrax":
            import distrax as module
        else:
            import tensorflow_probability.substrates.jax.distributions as module
    except Exception as error:  # ImportError, or a library that fails on this jax version
        raise ImportError(
            f"`library={library!r}` needs the package to import on this installation "
            f"(pip install 'infogeo_jax[distributions]'); importing it failed with: {error!r}"
        ) from error
    return module


def native_distribution(library: str, name: str, **params: Any) -> Any:
    """The distribution class ``name`` of ``library``, built from keyword parameters.

    ``name`` and the keywords follow one vocabulary (numpyro's parameter names); the keywords
    are renamed where a library spells them differently.

    Raises:
        ValueError: on an unknown library.
        NotImplementedError: if the library has no such distribution.
        ImportError: if the library cannot be imported.
    """
    module = _import(library)
    renames: dict[str, dict[str, str]] = {}
    if library == "distrax":
        renames = {
            "Beta": {"concentration1": "alpha", "concentration0": "beta"},
            "MultivariateNormal": {"covariance_matrix": "covariance_matrix"},
        }
        if name == "MultivariateNormal":
            name = "MultivariateNormalFullCovariance"
    if library == "tfp" and name == "MultivariateNormal":
        name = "MultivariateNormalTriL"
        params = {
            "loc": params["loc"],
            "scale_tril": jnp.linalg.cholesky(params["covariance_matrix"]),
        }
    cls = getattr(module, name, None)
    if cls is None:
        raise NotImplementedError(f"{library} has no {name} distribution.")
    table = renames.get(name, {})
    return cls(**{table.get(k, k): v for k, v in params.items()})
