r"""Statistical models from a log-density alone.

A :class:`StatisticalModel` is a family :math:`p(x \mid \theta)` given only by
``log_density(theta, x)`` and an expectation rule (:class:`~infogeo_jax.FiniteSupport`,
:class:`~infogeo_jax.Quadrature`, :class:`~infogeo_jax.TensorProduct` or
:class:`~infogeo_jax.MonteCarlo`). Its geometry comes from expectations of the score
:math:`s(x) = \nabla_\theta \log p(x \mid \theta)`:

.. math::
    g_{ij}(\theta) = E_\theta[s_i s_j] = -E_\theta[\partial_i\partial_j \log p], \qquad
    T_{ijk}(\theta) = E_\theta[s_i s_j s_k],

and everything else (alpha-connections, curvature, geodesics) follows from the shared base class
by differentiating these expectations in theta, which every rule supports to all orders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import (
    Array,
    Metric,
    Point,
    PointLike,
    PRNGKeyArray,
    PyTree,
    Sample,
    Scalar,
    ScalarLike,
)
from ._distributions import distribution_model_parts
from ._expectation import AbstractExpectation, AbstractQuadratureRule, _scalar_log_density
from ._manifold import AbstractStatisticalManifold
from ._misc import as_point, finite_and_in_domain, inverse_metric, safe_sqrt


class _Composed(eqx.Module):
    """``outer(inner(theta))`` as a pytree (so jit caches hit and arrays stay leaves)."""

    outer: Callable[[Any], Any]
    inner: Callable[[Any], Any]

    def __call__(self, theta: Any) -> Any:
        return self.outer(self.inner(theta))


class _PulledBackDomain(eqx.Module):
    """``in_domain(to_theta(phi))``, checking the shape of ``to_theta(phi)`` first."""

    in_domain: Callable[[Point], Scalar]
    to_theta: Callable[[Point], Point]

    def __call__(self, phi: Point) -> Scalar:
        theta = jnp.asarray(self.to_theta(phi))
        if theta.ndim != 1:
            raise ValueError(f"`to_theta(theta)` must return a 1-D array, got shape {theta.shape}.")
        return self.in_domain(theta)


class _BothDomains(eqx.Module):
    first: Callable[[Point], Scalar]
    second: Callable[[Point], Scalar]

    def __call__(self, theta: Point) -> Scalar:
        return jnp.logical_and(self.first(theta), self.second(theta))


def _exprel_times(r: Array, b: Array) -> Array:
    r"""``expm1(b r) / b``, smooth in b at 0 (where it is r) and correct for r = -inf."""
    z = b * r
    small = jnp.abs(z) < 1e-3
    z_safe = jnp.where(small, 0.0, z)
    b_safe = jnp.where(small, 1.0, b)
    series = r * (1.0 + z / 2.0 + z**2 / 6.0 + z**3 / 24.0)
    return jnp.where(small, series, jnp.expm1(z_safe) / b_safe)


def _log1p_over(z: Array) -> Array:
    r"""``log1p(z) / z``, smooth at 0."""
    small = jnp.abs(z) < 1e-3
    z_safe = jnp.where(small, 1.0, z)
    series = 1.0 - z / 2.0 + z**2 / 3.0 - z**3 / 4.0
    return jnp.where(small, series, jnp.log1p(z_safe) / z_safe)


class StatisticalModel(AbstractStatisticalManifold):
    r"""A statistical model given by its log-density and an expectation rule.

    .. math::
        g_{ij}(\theta) = E_\theta[\partial_i \ell\, \partial_j \ell], \qquad
        T_{ijk}(\theta) = E_\theta[\partial_i \ell\, \partial_j \ell\, \partial_k \ell], \qquad
        \ell = \log p(x \mid \theta),

    with :math:`E_\theta` computed by ``expectation``. No exponential-family structure is
    assumed: the Cauchy, Student t and mixture models work as well as the catalogue families.
    The alpha-connections, curvature and geodesics of the base class differentiate the metric
    with ``jax.jacfwd``, through the rule's weights (and moving nodes, or likelihood-ratio
    weights for Monte Carlo).

    Args:
        log_density: ``log_density(theta, x) -> scalar``, a normalized log-density of one
            outcome ``x`` (batching over outcomes is done by the rule), smooth in theta.
        expectation: the rule for :math:`E_\theta` (an
            :class:`~infogeo_jax.AbstractExpectation`).
        dim: optional static dimension of theta, for shape checks.
        in_domain: optional ``in_domain(theta) -> bool`` for the parameter domain (checked with
            ``equinox.error_if`` at every public method), e.g. ``lambda th: th[1] > 0``.
        to_theta: optional map from this model's coordinates to the coordinates in which
            ``log_density`` and the rule's ``center``/``sampler`` are written; this is what
            :meth:`reparameterize` sets. Default: the identity.

    Raises:
        TypeError: if ``log_density`` (or ``in_domain``, ``to_theta``) is not callable, or
            ``expectation`` is not an expectation rule.

    Example:
        >>> import jax.numpy as jnp
        >>> from infogeo_jax import Quadrature, StatisticalModel
        >>> def cauchy(theta, x):  # location mu, scale gamma > 0
        ...     z = (x - theta[0]) / theta[1]
        ...     return -jnp.log(jnp.pi * theta[1]) - jnp.log1p(z**2)
        >>> rule = Quadrature(-jnp.inf, jnp.inf, 64, center=lambda th: (th[0], th[1]))
        >>> model = StatisticalModel(cauchy, rule, dim=2, in_domain=lambda th: th[1] > 0)
        >>> (model.fisher_information(jnp.array([0.0, 1.0])).round(4) + 0.0).tolist()  # I/(2 g^2)
        [[0.5, 0.0], [0.0, 0.5]]
        >>> round(float(model.scalar_curvature(jnp.array([0.0, 1.0]))), 2)  # hyperbolic, K = -2
        -4.0

    References:
        Amari & Nagaoka, *Methods of Information Geometry* (2000), Sec. 2.2 (Fisher metric) and
        Sec. 2.3 (alpha-connections and the skewness tensor).
    """

    log_density_fn: Callable[[Point, Sample], Scalar]
    expectation: AbstractExpectation
    in_domain_fn: Callable[[Point], Scalar] | None = None
    to_theta_fn: Callable[[Point], Point] | None = None
    static_dim: int | None = eqx.field(static=True, default=None)

    def __init__(
        self,
        log_density: Callable[[Point, Sample], Scalar],
        expectation: AbstractExpectation,
        *,
        dim: int | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
        to_theta: Callable[[Point], Point] | None = None,
    ):
        if not callable(log_density):
            raise TypeError("`log_density` must be a callable (theta, x) -> scalar.")
        if not isinstance(expectation, AbstractExpectation):
            raise TypeError(
                "`expectation` must be an expectation rule (FiniteSupport, Quadrature, "
                f"TensorProduct, MonteCarlo), got {type(expectation).__name__}."
            )
        for name, fn in [("in_domain", in_domain), ("to_theta", to_theta)]:
            if fn is not None and not callable(fn):
                raise TypeError(f"`{name}` must be None or a callable, got {type(fn).__name__}.")
        if dim is not None and (int(dim) != dim or dim < 1):
            raise ValueError(f"`dim` must be None or a positive integer, got {dim}.")
        self.log_density_fn = log_density
        self.expectation = expectation
        self.in_domain_fn = in_domain
        self.to_theta_fn = to_theta
        self.static_dim = None if dim is None else int(dim)

    @classmethod
    def from_distribution(
        cls,
        make_distribution: Callable[[Point], Any],
        expectation: AbstractExpectation | None = None,
        *,
        example: PointLike | None = None,
        dim: int | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
        num_nodes: int = 192,
        num_samples: int = 4096,
        key: PRNGKeyArray | None = None,
    ) -> StatisticalModel:
        r"""A model from a numpyro, distrax or TFP-on-JAX distribution.

        The log-density is ``make_distribution(theta).log_prob(x)``. With ``expectation=None``
        the rule is read off the distribution at ``example`` (only its type, support and
        shapes, not its values), in this order:

        1. an enumerable finite support (Bernoulli, Categorical, Binomial, one-hot
           categorical): :class:`~infogeo_jax.FiniteSupport` on its outcomes (exact);
        2. a one-dimensional continuous distribution whose support bounds do not depend on
           theta: :class:`~infogeo_jax.Quadrature` on the support with ``num_nodes`` nodes,
           centered at the mean and standard deviation where both are finite (else at the
           ``loc`` / ``scale`` attributes, else the rule's default);
        3. otherwise (countable supports such as the Poisson, multivariate events):
           :class:`~infogeo_jax.MonteCarlo` with ``num_samples`` draws of the distribution's own
           sampler: reparameterized (``reparameterized=True``, derivatives through the
           samples) where the distribution has a reparameterized sampler (numpyro's
           ``has_rsample``, a fully reparameterized distrax / TFP distribution), else with
           derivatives through likelihood-ratio weights; in both modes the estimates of the
           metric and skewness are unbiased.

        The chosen rule is the model's ``expectation`` attribute (and shows in its repr). The
        domain check (raised by every public method, also under ``jit``) is that the
        parameters satisfy the distribution's constraints: numpyro's ``arg_constraints``,
        TFP's constraining bijectors, and finiteness (distrax has no constraint metadata; its
        NaN log-densities are caught by the rules). The library is read from the module name
        of the distribution's type, never imported by this library.

        Args:
            make_distribution: ``theta -> distribution`` with ``batch_shape == ()``.
            expectation: an explicit rule, or ``None`` to choose one (needs ``example``).
            example: a point of the parameter domain, shape ``(dim,)``, where
                ``make_distribution`` is called once to read the distribution's structure.
            dim: static dimension of theta (default: the length of ``example``).
            in_domain: optional extra predicate on theta.
            num_nodes: nodes of a chosen :class:`~infogeo_jax.Quadrature`.
            num_samples: draws of a chosen :class:`~infogeo_jax.MonteCarlo`.
            key: PRNG key of a chosen :class:`~infogeo_jax.MonteCarlo` (default ``key(0)``).

        Returns:
            A :class:`StatisticalModel`.

        Raises:
            TypeError: if ``make_distribution`` does not return a numpyro, distrax or TFP
                distribution.
            ValueError: if neither ``example`` nor ``expectation`` is given, or the
                distribution has a batch shape.

        Example:
            >>> import jax.numpy as jnp
            >>> import numpyro.distributions as dist
            >>> from infogeo_jax import StatisticalModel
            >>> model = StatisticalModel.from_distribution(
            ...     lambda th: dist.Normal(th[0], th[1]), example=jnp.array([0.0, 1.0]))
            >>> type(model.expectation).__name__
            'Quadrature'
            >>> bool(jnp.allclose(model.fisher_information(jnp.array([0.0, 2.0])),
            ...                   jnp.diag(jnp.array([0.25, 0.5])), rtol=1e-5, atol=1e-6))
            True
        """
        log_density, expectation, dim, domain = distribution_model_parts(
            make_distribution,
            expectation,
            example=example,
            dim=dim,
            num_nodes=num_nodes,
            num_samples=num_samples,
            key=key,
        )
        if in_domain is not None:
            domain = _BothDomains(domain, in_domain)
        return cls(log_density, expectation, dim=dim, in_domain=domain)

    # ------------------------------------------------------------------ basic pieces
    @property
    def dim(self) -> int | None:
        return self.static_dim

    def in_domain(self, theta: Point) -> Scalar:
        """Whether ``theta`` is finite and satisfies the user's ``in_domain`` (if any)."""
        return finite_and_in_domain(theta, self.in_domain_fn)

    def _base(self, theta: Point) -> Point:
        """The coordinates of ``log_density`` (``to_theta(theta)``)."""
        if self.to_theta_fn is None:
            return theta
        base = jnp.asarray(self.to_theta_fn(theta))
        if base.ndim != 1:
            raise ValueError(f"`to_theta(theta)` must return a 1-D array, got shape {base.shape}.")
        return base

    def _log_density(self, theta: Point, x: Sample) -> Scalar:
        return _scalar_log_density(self.log_density_fn, self._base(theta), x)

    def _expect(self, fn: Callable[[Sample], PyTree], theta: Point, **kwargs: Any) -> PyTree:
        return self.expectation.expect(fn, self._base(theta), self.log_density_fn, **kwargs)

    def log_density(self, theta: PointLike, x: Sample) -> Scalar:
        r"""The log-density :math:`\log p(x \mid \theta)` of one outcome ``x``."""
        return self._log_density(self.check_point(theta), x)

    def score(self, theta: PointLike, x: Sample) -> Point:
        r"""The score :math:`s(x) = \nabla_\theta \log p(x \mid \theta)`, shape ``(dim,)``."""
        theta = self.check_point(theta)
        return jax.grad(self._log_density)(theta, x)

    def expect(self, fn: Callable[[Sample], PyTree], theta: PointLike) -> PyTree:
        r"""The expectation :math:`E_\theta[\mathrm{fn}(x)]` under the model's rule.

        Args:
            fn: ``fn(x) -> pytree of arrays`` for one outcome (it may close over theta).
            theta: parameters, shape ``(dim,)``.

        Returns:
            A pytree like ``fn(x)``.

        Raises:
            equinox.EquinoxRuntimeError: if ``theta`` is outside the domain, the density does
                not normalize under a deterministic rule, or ``fn`` is not finite where the
                density is positive.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax import Quadrature, StatisticalModel
            >>> def normal(th, x):  # N(mu, sigma^2) in (mu, sigma)
            ...     return -0.5 * ((x - th[0]) / th[1]) ** 2 - jnp.log(th[1]) - 0.9189385332046727
            >>> rule = Quadrature(-jnp.inf, jnp.inf, 128, center=lambda th: (th[0], th[1]))
            >>> model = StatisticalModel(normal, rule)
            >>> round(float(model.expect(lambda x: x**2, jnp.array([1.0, 2.0]))), 4)  # mu^2 + s^2
            5.0
        """
        theta = self.check_point(theta)
        return self._expect(fn, theta)

    def total_mass(self, theta: PointLike) -> Scalar:
        r"""The mass :math:`\sum_k c_k p(x_k\mid\theta)` of a deterministic rule (ideally 1).

        Use it to see by how much a density fails to normalize, or the truncation error of a
        truncated support (one minus the mass).

        Raises:
            TypeError: for a Monte Carlo rule, whose weights average to one by construction.
        """
        if not isinstance(self.expectation, AbstractQuadratureRule):
            raise TypeError(
                "total_mass needs a deterministic rule (FiniteSupport, Quadrature, "
                "TensorProduct); Monte Carlo weights average to one by construction."
            )
        theta = self.check_point(theta)
        return self.expectation.total_mass(self._base(theta), self.log_density_fn)

    # ------------------------------------------------------------------ Fisher geometry
    def fisher_information(
        self, theta: PointLike, *, method: Literal["score", "hessian"] = "score"
    ) -> Metric:
        r"""Fisher information :math:`g_{ij}(\theta) = E_\theta[s_i s_j]`, index order ``[i, j]``.

        .. math::
            g_{ij}(\theta) = E_\theta[\partial_i\ell\,\partial_j\ell]
            = -E_\theta[\partial_i\partial_j\ell], \qquad \ell = \log p(x\mid\theta).

        The two routes agree for a normalized, regular model; ``method="hessian"`` is offered as
        a check (its symmetry and positive-definiteness are not guaranteed by construction).

        Args:
            theta: parameters, shape ``(dim,)``.
            method: ``"score"`` (outer product of scores, default) or ``"hessian"``
                (negative expected Hessian).

        Returns:
            Array of shape ``(dim, dim)``.

        Raises:
            ValueError: on a wrong shape of ``theta`` or an unknown ``method``.
            equinox.EquinoxRuntimeError: if ``theta`` is outside the domain, the density does not
                normalize under the rule, or the score is not finite where the density is
                positive.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax import Quadrature, StatisticalModel
            >>> def normal(th, x):  # N(mu, sigma^2) in (mu, sigma)
            ...     return -0.5 * ((x - th[0]) / th[1]) ** 2 - jnp.log(th[1]) - 0.9189385332046727
            >>> rule = Quadrature(-jnp.inf, jnp.inf, 128, center=lambda th: (th[0], th[1]))
            >>> model = StatisticalModel(normal, rule)
            >>> (model.fisher_information(jnp.array([0.0, 2.0])).round(4) + 0.0).tolist()
            [[0.25, 0.0], [0.0, 0.5]]

        References:
            Amari & Nagaoka (2000), Sec. 2.2; Lehmann & Casella, *Theory of Point Estimation*
            (1998), Sec. 2.5.
        """
        theta = self.check_point(theta)
        if method == "score":
            score = jax.grad(self._log_density)

            def outer(x):
                s = score(theta, x)
                return jnp.outer(s, s)

            return self._expect(outer, theta)
        if method == "hessian":
            hessian = jax.hessian(self._log_density)
            return -self._expect(lambda x: hessian(theta, x), theta)
        raise ValueError(f"`method` must be 'score' or 'hessian', got {method!r}.")

    def metric(self, theta: PointLike) -> Metric:
        """The Fisher metric; same as :meth:`fisher_information`."""
        return self.fisher_information(theta)

    def skewness_tensor(self, theta: PointLike) -> Array:
        r"""Amari-Chentsov tensor :math:`T_{ijk} = E_\theta[s_i s_j s_k]`, ``[i, j, k]``.

        Totally symmetric. For an exponential family it equals the third derivative of the
        log-partition; for the Cauchy location-scale family it vanishes (all its
        alpha-connections coincide).

        References:
            Amari & Nagaoka (2000), Sec. 2.3; Chentsov, *Statistical Decision Rules and Optimal
            Inference* (1972/1982).
        """
        theta = self.check_point(theta)
        score = jax.grad(self._log_density)

        def cube(x):
            s = score(theta, x)
            return s[:, None, None] * s[None, :, None] * s[None, None, :]

        return self._expect(cube, theta)

    def empirical_fisher(self, theta: PointLike, data: Array) -> Metric:
        r"""The empirical Fisher :math:`\frac1n\sum_{k=1}^n s(x_k)s(x_k)^\top` of data.

        This is *not* the Fisher information: it averages score outer products over the data
        instead of over the model at theta. The two agree (as n grows) only when the data come
        from :math:`p(\cdot\mid\theta)` itself; away from the data-generating parameter, or for
        a misspecified model, they differ (for a normal location model with unit variance,
        the empirical Fisher at :math:`\mu` tends to :math:`1 + (\mu - \mu_0)^2` while the
        Fisher is 1), so a natural gradient built on it is not the Fisher-Rao gradient.

        Args:
            theta: parameters, shape ``(dim,)``.
            data: outcomes with a leading axis of samples (``(n,)`` for scalar outcomes).

        Returns:
            Array of shape ``(dim, dim)``.

        Raises:
            ValueError: if ``data`` has no leading sample axis or no samples.
            equinox.EquinoxRuntimeError: if a score is not finite.

        References:
            Kunstner, Balles & Hennig, *Limitations of the empirical Fisher approximation for
            natural gradient descent*, NeurIPS 2019.
        """
        theta = self.check_point(theta)
        data = jnp.asarray(data)
        if data.ndim == 0 or data.shape[0] == 0:
            raise ValueError(
                f"`data` must have a leading axis of at least one sample, got shape {data.shape}."
            )
        scores = jax.vmap(lambda x: jax.grad(self._log_density)(theta, x))(data)
        result = scores.T @ scores / data.shape[0]
        return eqx.error_if(
            result,
            ~jnp.all(jnp.isfinite(scores)),
            "empirical_fisher: the score is not finite at some data point (is it inside the "
            "support of the model?).",
        )

    def cramer_rao_bound(
        self,
        theta: PointLike,
        num_samples: int | ScalarLike,
        jacobian: Callable[[Point], Array] | Array | None = None,
    ) -> Array:
        r"""Cramer-Rao lower bound on the covariance of unbiased estimators from n samples.

        .. math::
            \mathrm{Cov}(\hat\theta) \succeq \frac{g(\theta)^{-1}}{n}, \qquad
            \mathrm{Cov}(\widehat{\psi(\theta)}) \succeq \frac{J g(\theta)^{-1} J^\top}{n},
            \quad J = \frac{\partial\psi}{\partial\theta},

        the second form (delta method) for a derived quantity :math:`\psi`; the maximum
        likelihood estimator attains the bound asymptotically.

        Args:
            theta: parameters, shape ``(dim,)``.
            num_samples: the number n of i.i.d. observations (> 0).
            jacobian: ``None`` (bound for theta itself), a function ``psi(theta)`` returning a
                scalar or a 1-D array (its Jacobian is taken with ``jax.jacfwd``), or the
                Jacobian itself, shape ``(dim,)`` or ``(m, dim)``.

        Returns:
            ``(dim, dim)`` for theta; for psi, a scalar (scalar psi, or a ``(dim,)``
            Jacobian) or an ``(m, m)`` matrix.

        Raises:
            ValueError: on a non-positive ``num_samples`` (static) or a Jacobian of the wrong
                shape.

        References:
            Lehmann & Casella, *Theory of Point Estimation* (1998), Thm. 2.5.15 and Sec. 6.2;
            van der Vaart, *Asymptotic Statistics* (1998), Ch. 3 (delta method).
        """
        theta = self.check_point(theta)
        if isinstance(num_samples, (int, float)) and num_samples <= 0:
            raise ValueError(f"`num_samples` must be positive, got {num_samples}.")
        n = jnp.asarray(num_samples, theta.dtype)
        d = theta.shape[0]
        jac = None
        if jacobian is not None:
            if callable(jacobian):
                jac = jnp.asarray(jax.jacfwd(jacobian)(theta))
            else:
                jac = jnp.asarray(jacobian, theta.dtype)
            if not (jac.ndim in (1, 2) and jac.shape[-1] == d):
                raise ValueError(
                    f"The Jacobian of the derived quantity must have shape ({d},) or (m, {d}), "
                    f"got {jac.shape}; a `jacobian` function must return a scalar or a 1-D array."
                )
        bound = inverse_metric(self.fisher_information(theta)) / n
        if jac is None:
            return bound
        return jac @ bound @ jac.T if jac.ndim == 2 else jac @ bound @ jac

    def reparameterize(
        self,
        to_theta: Callable[[Point], Point],
        *,
        dim: int | None = None,
        in_domain: Callable[[Point], Scalar] | None = None,
    ) -> StatisticalModel:
        r"""The same model in new coordinates :math:`\varphi`, with :math:`\theta = t(\varphi)`.

        The new model's log-density is :math:`\log p(x \mid t(\varphi))` and its rule is
        evaluated at :math:`t(\varphi)`, so the geometry pulls back:
        :math:`\tilde g(\varphi) = J^\top g(t(\varphi)) J` and
        :math:`\tilde T_{abc} = J_{ia}J_{jb}J_{kc}T_{ijk}` with
        :math:`J = \partial t/\partial\varphi` (and the scalar curvature is unchanged).

        Args:
            to_theta: ``to_theta(phi) -> theta``, a smooth injective map from the new
                coordinates to this model's coordinates.
            dim: static dimension of phi (default: this model's).
            in_domain: optional extra predicate on phi; the new domain is always
                ``self.in_domain(to_theta(phi))`` and this.

        Returns:
            A :class:`StatisticalModel` in the coordinates phi.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax import Quadrature, StatisticalModel
            >>> def normal(th, x):  # N(mu, sigma^2) in (mu, sigma)
            ...     return -0.5 * ((x - th[0]) / th[1]) ** 2 - jnp.log(th[1]) - 0.9189385332046727
            >>> rule = Quadrature(-jnp.inf, jnp.inf, 128, center=lambda th: (th[0], th[1]))
            >>> model = StatisticalModel(normal, rule)
            >>> # The same normal in (mu, log sigma): J^T g J = diag(1 / sigma^2, 2).
            >>> log_model = model.reparameterize(lambda p: jnp.stack([p[0], jnp.exp(p[1])]))
            >>> fisher = log_model.fisher_information(jnp.array([0.0, jnp.log(2.0)]))
            >>> (fisher.round(4) + 0.0).tolist()
            [[0.25, 0.0], [0.0, 2.0]]
        """
        if not callable(to_theta):
            raise TypeError("`to_theta` must be a callable phi -> theta.")
        base = to_theta if self.to_theta_fn is None else _Composed(self.to_theta_fn, to_theta)
        domain: Callable[[Point], Scalar] = _PulledBackDomain(self.in_domain, to_theta)
        if in_domain is not None:
            domain = _BothDomains(domain, in_domain)
        return StatisticalModel(
            self.log_density_fn,
            self.expectation,
            dim=self.static_dim if dim is None else dim,
            in_domain=domain,
            to_theta=base,
        )

    # ------------------------------------------------------------------ divergences
    def _pair(self, p: PointLike, q: PointLike) -> tuple[Point, Point]:
        p = self.check_point(p)
        q = self.check_point(as_point(q, p.shape[0], "q"))
        return p, q

    def _log_ratio_mean(self, base: Point, other: Point, weight: Array) -> Scalar:
        r"""``E_base[expm1(w r) / w]`` with :math:`r = \ell_{other} - \ell_{base}` (-KL at w=0)."""

        def term(x):
            r = self._log_density(other, x) - self._log_density(base, x)
            return _exprel_times(r, weight)

        return self._expect(term, base, check_finite=False)

    def kl_divergence(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Kullback-Leibler divergence :math:`\mathrm{KL}(p\|q) = E_p[\log p/q]`.

        The expectation is under the first argument p (with the rule at p). ``inf`` when q
        vanishes where p does not.

        Args:
            p: parameters of the first argument.
            q: parameters of the second argument.

        Example:
            >>> import jax.numpy as jnp
            >>> from infogeo_jax import Quadrature, StatisticalModel
            >>> def normal(th, x):  # N(mu, sigma^2) in (mu, sigma)
            ...     return -0.5 * ((x - th[0]) / th[1]) ** 2 - jnp.log(th[1]) - 0.9189385332046727
            >>> rule = Quadrature(-jnp.inf, jnp.inf, 128, center=lambda th: (th[0], th[1]))
            >>> model = StatisticalModel(normal, rule)
            >>> p, q = jnp.array([0.0, 1.0]), jnp.array([1.0, 1.0])
            >>> round(float(model.kl_divergence(p, q)), 4)  # (mu_p - mu_q)^2 / (2 sigma^2)
            0.5

        References:
            Kullback & Leibler, Ann. Math. Statist. 22 (1951).
        """
        p, q = self._pair(p, q)
        return self._expect(
            lambda x: self._log_density(p, x) - self._log_density(q, x), p, check_finite=False
        )

    def alpha_divergence(self, p: PointLike, q: PointLike, alpha: ScalarLike) -> Scalar:
        r"""Amari alpha-divergence by expectation.

        .. math::
            D_\alpha(p\|q) = \frac{4}{1-\alpha^2}\Big(1 - \int p^{\frac{1-\alpha}{2}}
            q^{\frac{1+\alpha}{2}}\Big),

        with :math:`D_{-1}(p\|q) = \mathrm{KL}(p\|q)` and :math:`D_{+1}(p\|q) =
        \mathrm{KL}(q\|p)`. For :math:`\alpha \le 0` it is computed as
        :math:`-\frac{2}{1-\alpha}E_p[\mathrm{expm1}(b r)/b]`, :math:`r = \log q/p`,
        :math:`b = \frac{1+\alpha}{2}`, which is smooth through :math:`\alpha = -1`; for
        :math:`\alpha > 0` through the duality :math:`D_\alpha(p\|q) = D_{-\alpha}(q\|p)`, with
        the expectation under q.

        References:
            Amari, *Information Geometry and Its Applications* (2016), Eq. (3.58).
        """
        p, q = self._pair(p, q)
        alpha = jnp.asarray(alpha, p.dtype)
        b = 0.5 * (1.0 + alpha)  # weight on q
        a = 0.5 * (1.0 - alpha)  # weight on p
        under_p = -self._log_ratio_mean(p, q, jnp.minimum(b, 0.5)) / jnp.maximum(a, 0.5)
        under_q = -self._log_ratio_mean(q, p, jnp.minimum(a, 0.5)) / jnp.maximum(b, 0.5)
        return jnp.where(alpha <= 0, under_p, under_q)

    def renyi_divergence(self, p: PointLike, q: PointLike, order: ScalarLike) -> Scalar:
        r"""Renyi divergence of the given order :math:`\lambda > 0` by expectation under p.

        .. math::
            D_\lambda(p\|q) = \frac{1}{\lambda-1}\log\int p^\lambda q^{1-\lambda}
            = \frac{1}{\lambda-1}\log E_p\big[(q/p)^{1-\lambda}\big],

        smooth through :math:`\lambda = 1`, where it is :math:`\mathrm{KL}(p\|q)`.

        References:
            Renyi (1961); van Erven & Harremoes, IEEE Trans. Inf. Theory 60 (2014).
        """
        p, q = self._pair(p, q)
        b = 1.0 - jnp.asarray(order, p.dtype)
        m = self._log_ratio_mean(p, q, b)  # E_p[(q/p)^b] = 1 + b m
        return -m * _log1p_over(b * m)

    def bhattacharyya_distance(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Bhattacharyya distance :math:`-\log\int\sqrt{pq} = -\log E_p[\sqrt{q/p}]`."""
        p, q = self._pair(p, q)
        half = jnp.asarray(0.5, p.dtype)
        return -jnp.log1p(half * self._log_ratio_mean(p, q, half))

    def hellinger_distance(self, p: PointLike, q: PointLike) -> Scalar:
        r"""Hellinger distance :math:`\sqrt{1 - \int\sqrt{pq}}` (in [0, 1]), by expectation under p.

        Computed as :math:`\sqrt{-E_p[\mathrm{expm1}(r/2)]}`, without cancellation near p = q.
        """
        p, q = self._pair(p, q)
        half = jnp.asarray(0.5, p.dtype)
        return safe_sqrt(-half * self._log_ratio_mean(p, q, half))
