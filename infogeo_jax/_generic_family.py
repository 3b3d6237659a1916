r"""The generic exponential family: a user's log-partition (and, optionally, statistics)."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._custom_types import Array, Metric, Point, PointLike, PRNGKeyArray, Sample, Scalar
from ._family import AbstractExponentialFamily
from ._manifold import Method
from ._misc import check_metric


class ExponentialFamily(AbstractExponentialFamily):
    r"""An exponential family given by its log-partition function (and optionally T, h).

    Every quantity of :class:`AbstractExponentialFamily` then comes from ``log_partition`` by
    automatic differentiation: the Fisher metric (Hessian), the skewness tensor (third
    derivative), the expectation parameters (gradient), their Newton inverse, the dual
    potential, the curvature, and the closed-form divergences.

    Args:
        log_partition: ``A(theta) -> scalar``, convex, smooth on the natural domain. Write it
            stably (``logsumexp``, ``log1p``, ``gammaln``) and return ``inf``/``nan`` outside the
            domain (or supply ``in_domain``). It may close over arrays; derivatives with
            respect to them flow through every method, :meth:`natural_parameters` included.
        sufficient_statistic: optional ``T(x) -> (dim,)``, for densities, MLE and the model view.
        log_base_measure: optional ``log h(x) -> scalar`` (default 0 when T is given).
        in_domain: optional ``in_domain(theta) -> bool`` for the natural domain (default:
            ``A(theta)`` is finite).
        dim: optional static dimension, for shape checks (recommended).
        sampler: optional ``sampler(theta, key, shape) -> samples``.
        in_mean_domain: optional ``in_mean_domain(eta) -> bool`` for the interior of the mean
            domain (default: ``eta`` is finite; then an ``eta`` outside the mean domain is
            reported as a Newton failure, and one on its boundary may not be detected).
        initial_theta: optional default starting point of :meth:`natural_parameters` (concrete
            values, inside the natural domain; default: zeros, or when zeros are outside the
            domain the best point of a fixed stencil of probes around them, see
            :meth:`natural_parameters`).

    Raises:
        TypeError: if a function argument is not callable.
        ValueError: if ``dim`` is not a positive int or ``initial_theta`` has the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> bernoulli = ExponentialFamily(lambda th: jnp.logaddexp(0.0, th[0]), dim=1)
        >>> float(bernoulli.fisher_information(jnp.array([0.0]))[0, 0])
        0.25
    """

    log_partition_fn: Callable[[Point], Scalar]
    sufficient_statistic_fn: Callable[[Sample], Point] | None = None
    log_base_measure_fn: Callable[[Sample], Scalar] | None = None
    in_domain_fn: Callable[[Point], Scalar] | None = None
    sampler_fn: Callable[..., Array] | None = None
    in_mean_domain_fn: Callable[[Point], Scalar] | None = None
    initial_theta: tuple[float, ...] | None = eqx.field(static=True, default=None)
    static_dim: int | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        log_partition: Callable[[Point], Scalar],
        sufficient_statistic: Callable[[Sample], Point] | None = None,
        log_base_measure: Callable[[Sample], Scalar] | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
        *,
        dim: int | None = None,
        sampler: Callable[..., Array] | None = None,
        in_mean_domain: Callable[[Point], Scalar] | None = None,
        initial_theta: PointLike | None = None,
    ):
        if not callable(log_partition):
            raise TypeError(
                f"`log_partition` must be a callable theta -> scalar, got "
                f"{type(log_partition).__name__}."
            )
        for name, fn in [
            ("sufficient_statistic", sufficient_statistic),
            ("log_base_measure", log_base_measure),
            ("in_domain", in_domain),
            ("sampler", sampler),
            ("in_mean_domain", in_mean_domain),
        ]:
            if fn is not None and not callable(fn):
                raise TypeError(f"`{name}` must be callable (or None), got {type(fn).__name__}.")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ValueError(f"`dim` must be a positive int or None, got {dim!r}.")
        self.log_partition_fn = log_partition
        self.sufficient_statistic_fn = sufficient_statistic
        self.log_base_measure_fn = log_base_measure
        self.in_domain_fn = in_domain
        self.sampler_fn = sampler
        self.in_mean_domain_fn = in_mean_domain
        start = None
        if initial_theta is not None:
            # Static (a tuple of floats), so that `jax.jit(family.method)` keeps working.
            start = tuple(float(v) for v in np.asarray(initial_theta).reshape(-1))
            if dim is not None and len(start) != dim:
                raise ValueError(f"`initial_theta` must have shape ({dim},), got ({len(start)},).")
        self.initial_theta = start
        self.static_dim = dim

    @property
    def dim(self) -> int | None:
        return self.static_dim

    def _raw_log_partition(self, theta: Point) -> Scalar:
        value = jnp.asarray(self.log_partition_fn(theta))
        if value.shape != ():
            raise ValueError(
                f"`log_partition(theta)` must return a scalar, got shape {value.shape}."
            )
        return value

    def log_partition(self, theta: PointLike) -> Scalar:
        r"""The user's log-partition :math:`A(\theta)`."""
        return self._raw_log_partition(self.check_point(theta))

    def fisher_information(self, theta: PointLike, *, method: Method = "auto") -> Metric:
        r"""Fisher information :math:`\nabla^2 A(\theta)`, checked to be positive definite.

        A user's log-partition may fail to be strictly convex at ``theta`` (a coordinate A
        ignores, e.g. a ``theta`` longer than the family when no ``dim`` was given); the
        Hessian is then singular and every derived quantity would be NaN, so this raises
        (also under ``jit``) instead.

        Raises:
            ValueError: if ``theta`` does not have shape ``(dim,)``.
            RuntimeError: if ``theta`` is outside the natural domain, or the Hessian of A is
                not finite and positive definite there.
        """
        g = super().fisher_information(theta, method=method)
        hint = (
            "" if self.dim is not None else " (is theta of the right length? pass `dim=` to check)"
        )
        return check_metric(g, f"The Hessian of log_partition{hint}")

    def in_domain(self, theta: Point) -> Scalar:
        ok = super().in_domain(theta)
        if self.in_domain_fn is not None:
            ok = jnp.logical_and(ok, jnp.all(jnp.asarray(self.in_domain_fn(theta))))
        return ok

    def in_mean_domain(self, eta: Point) -> Scalar:
        ok = super().in_mean_domain(eta)
        if self.in_mean_domain_fn is not None:
            ok = jnp.logical_and(ok, jnp.all(jnp.asarray(self.in_mean_domain_fn(eta))))
        return ok

    def _initial_natural_parameters(self, eta: Point) -> Point:
        if self.initial_theta is None:
            return super()._initial_natural_parameters(eta)
        theta0 = jnp.asarray(self.initial_theta, eta.dtype)
        if theta0.shape != eta.shape:
            raise ValueError(
                f"The family's `initial_theta` has shape {theta0.shape}, but eta has shape "
                f"{eta.shape}."
            )
        return theta0

    def sufficient_statistic(self, x: Sample) -> Point:
        if self.sufficient_statistic_fn is None:
            return super().sufficient_statistic(x)
        return jnp.atleast_1d(jnp.asarray(self.sufficient_statistic_fn(x)))

    def log_base_measure(self, x: Sample) -> Scalar:
        if self.log_base_measure_fn is None:
            if self.sufficient_statistic_fn is None:
                return super().log_base_measure(x)
            return jnp.zeros(())
        return jnp.asarray(self.log_base_measure_fn(x))

    def sample(self, theta: PointLike, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Array:
        if self.sampler_fn is None:
            return super().sample(theta, key, shape)
        return self.sampler_fn(self.check_point(theta), key, shape)
