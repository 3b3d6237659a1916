r"""Finite mixtures of an exponential family, and EM as alternating information projections.

A finite mixture :math:`p(x) = \sum_k \pi_k\,p(x \mid \theta_k)` of members of an exponential
family is the marginal of the complete-data model :math:`p(x, z) = \pi_z\,p(x \mid \theta_z)`,
itself an exponential family in :math:`(x, z)`. EM alternates two projections between the *data
manifold* :math:`D` (joint distributions whose x-marginal is the empirical one) and the *model
manifold* :math:`M` (the complete-data models):

- **E-step**: the e-projection of the current model onto D, which is the posterior
  :math:`q(z \mid x_i) = r_{ik} \propto \pi_k\,p(x_i\mid\theta_k)` (the responsibilities);
- **M-step**: the m-projection of :math:`q(x, z)` onto M, which is moment matching component by
  component, :math:`\pi_k = \frac1n\sum_i r_{ik}` and
  :math:`\eta_k = \nabla A(\theta_k) = \sum_i r_{ik} T(x_i) / \sum_i r_{ik}`.

Each projection decreases :math:`\mathrm{KL}(q \| p)` between the two manifolds, so the
log-likelihood never decreases.

References:
    Csiszar & Tusnady, *Information geometry and alternating minimization procedures*,
    Statistics & Decisions, Suppl. 1 (1984); Amari, *Information geometry of the EM and em
    algorithms for neural networks*, Neural Networks 8 (1995), Sec. 4; Dempster, Laird & Rubin,
    J. R. Stat. Soc. B 39 (1977); Bishop (2006), Sec. 9.2-9.4.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Int

from ._custom_types import Array, Float, PRNGKeyArray, Sample, Scalar
from ._family import AbstractExponentialFamily, _default_tolerance
from ._fitting import check_finite_data, degenerate_message
from ._results import RESULTS


def _check_component(component: Any) -> None:
    if not isinstance(component, AbstractExponentialFamily):
        raise TypeError(
            "The mixture component must be an exponential family (an "
            "AbstractExponentialFamily such as `infogeo_jax.families.Normal()`), got "
            f"{type(component).__name__}."
        )


def _check_parameters(component, weights, theta) -> tuple[Array, Array]:
    weights = jnp.asarray(weights)
    theta = jnp.asarray(theta)
    dtype = jnp.result_type(weights.dtype, theta.dtype, float)
    weights, theta = weights.astype(dtype), theta.astype(dtype)
    if weights.ndim != 1 or theta.ndim != 2 or theta.shape[0] != weights.shape[0]:
        raise ValueError(
            "Mixture parameters must be `weights` of shape (num_components,) and `theta` of "
            "shape (num_components, dim) (one row of natural parameters per component); got "
            f"{weights.shape} and {theta.shape}. Batch restarts with `jax.vmap`."
        )
    if component.dim is not None and theta.shape[1] != component.dim:
        raise ValueError(
            f"`theta` must have {component.dim} columns (the dimension of "
            f"{type(component).__name__}), got shape {theta.shape}."
        )
    return weights, theta


class Mixture(eqx.Module):
    r"""A finite mixture :math:`p(x) = \sum_k \pi_k\,p(x\mid\theta_k)` of one exponential family.

    Args:
        component: the component family (needs ``sufficient_statistic`` and
            ``log_base_measure``; ``sample`` for :meth:`sample`).
        weights: mixing weights :math:`\pi`, shape ``(num_components,)``, non-negative, summing
            to one.
        theta: natural parameters of the components, shape ``(num_components, dim)``.

    Raises:
        ValueError: on inconsistent shapes (at trace time).
        equinox.EquinoxRuntimeError: if the weights are not a probability vector or a
            component is outside the natural domain (also under ``jit``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from infogeo_jax.families import Normal
        >>> theta = jax.vmap(Normal().from_usual)(jnp.array([[-2.0, 1.0], [2.0, 1.0]]))
        >>> mix = Mixture(Normal(), jnp.array([0.5, 0.5]), theta)
        >>> mix.responsibilities(0.0).round(6).tolist()  # equidistant: equal posterior
        [0.5, 0.5]
    """

    component: AbstractExponentialFamily
    weights: Float[Array, " k"]
    theta: Float[Array, "k dim"]

    def __init__(self, component: AbstractExponentialFamily, weights: Array, theta: Array):
        _check_component(component)
        weights, theta = _check_parameters(component, weights, theta)
        tol = 1e3 * jnp.finfo(weights.dtype).eps
        weights = eqx.error_if(
            weights,
            jnp.any(weights < 0) | (jnp.abs(jnp.sum(weights) - 1) > tol * weights.shape[0]),
            "Mixture `weights` must be non-negative and sum to one.",
        )
        theta = eqx.error_if(
            theta,
            ~jnp.all(jax.vmap(component.in_domain)(theta)),
            f"A mixture component is outside the natural domain of {type(component).__name__}.",
        )
        self.component = component
        self.weights = weights
        self.theta = theta

    @property
    def num_components(self) -> int:
        """The number of components k (static)."""
        return self.weights.shape[0]

    def component_log_prob(self, x: Sample) -> Float[Array, " k"]:
        r"""Log-densities :math:`\log p(x \mid \theta_k)` of one sample under every component."""
        return _component_log_prob(
            self.component,
            self.theta,
            self.component.sufficient_statistic(x),
            self.component.log_base_measure(x),
        )

    def log_prob(self, x: Sample) -> Scalar:
        r"""Mixture log-density :math:`\log\sum_k \pi_k\,p(x\mid\theta_k)` of one sample."""
        return jax.nn.logsumexp(self.component_log_prob(x), b=self.weights)

    def responsibilities(self, x: Sample) -> Float[Array, " k"]:
        r"""Posterior :math:`p(z = k \mid x) \propto \pi_k\,p(x\mid\theta_k)` of one sample."""
        return jax.nn.softmax(self.component_log_prob(x) + jnp.log(self.weights))

    def mean_log_likelihood(self, data: Array, sample_weights: Array | None = None) -> Scalar:
        r"""Average log-likelihood :math:`\frac1n\sum_i \log p(x_i)` (leading axis = samples)."""
        log_p = jax.vmap(self.log_prob)(data)
        if sample_weights is None:
            return jnp.mean(log_p)
        sample_weights = jnp.asarray(sample_weights, log_p.dtype)
        return sample_weights @ log_p / jnp.sum(sample_weights)

    def sample(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> tuple[Array, Array]:
        """Draw ``(x, z)``: samples with leading axes ``shape`` and their component labels."""
        key_z, key_x = jax.random.split(key)
        z = jax.random.categorical(key_z, jnp.log(self.weights), shape=shape)
        keys = jax.random.split(key_x, self.num_components)
        draws = jax.vmap(lambda th, k: self.component.sample(th, k, shape))(self.theta, keys)
        x = jnp.take_along_axis(
            draws, z.reshape((1,) + z.shape + (1,) * (draws.ndim - 1 - z.ndim)), axis=0
        )[0]
        return x, z


def _component_log_prob(component, theta, stat, log_h):
    """Compute log p(x | theta_k) for every k from precomputed T(x) and log h(x), unchecked."""
    log_a = jax.vmap(component._raw_log_partition)(theta)
    return stat @ theta.T - log_a + jnp.expand_dims(log_h, -1)


class EMResult(eqx.Module):
    r"""The outcome of :func:`em`.

    Attributes:
        component: the component family.
        weights: fitted mixing weights, shape ``(num_components,)``.
        theta: fitted natural parameters, shape ``(num_components, dim)``.
        mean_log_likelihood: trace of the average log-likelihood per observation, shape
            ``(num_steps + 1,)``: entry t is at the parameters after t EM steps (entry 0 at
            the initialization). After early stopping the last value repeats.
        num_steps: number of EM steps taken.
        result: a :class:`RESULTS` code.
    """

    component: AbstractExponentialFamily
    weights: Float[Array, " k"]
    theta: Float[Array, "k dim"]
    mean_log_likelihood: Float[Array, " steps"]
    num_steps: Int[Array, ""]
    result: RESULTS

    @property
    def mixture(self) -> Mixture:
        """The fitted :class:`Mixture`."""
        return Mixture(self.component, self.weights, self.theta)

    @property
    def successful(self) -> Array:
        """Whether EM finished without a degenerate component or a non-finite value."""
        return self.result == RESULTS.successful


def _statistics(component, data) -> tuple[Array, Array]:
    data = jnp.asarray(data)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(
            f"`data` must have a leading sample axis with at least one sample, got {data.shape}."
        )
    data = check_finite_data(data)
    stat = jax.vmap(component.sufficient_statistic)(data)
    log_h = jax.vmap(component.log_base_measure)(data)
    return stat, jnp.broadcast_to(log_h, stat.shape[:1]).astype(stat.dtype)


def _e_step(component, weights, theta, stat, log_h, sample_weights):
    """Responsibilities (the e-projection onto the data manifold) and the mean log-likelihood."""
    log_joint = _component_log_prob(component, theta, stat, log_h) + jnp.log(weights)
    log_marginal = jax.nn.logsumexp(log_joint, axis=1)
    resp = jnp.exp(log_joint - log_marginal[:, None])
    return resp, sample_weights @ log_marginal


def _m_step(component, theta_old, stat, resp, sample_weights, data=None):
    """Moment matching (the m-projection onto the model manifold), with a degeneracy guard.

    Families with a centered closed form (the normal families) fit each component from the
    data with its responsibilities as weights; the others average T(x) and invert grad A.
    """
    weighted = resp * sample_weights[:, None]
    mass = jnp.sum(weighted, axis=0)
    tiny = jnp.finfo(stat.dtype).tiny ** 0.5
    safe_mass = jnp.where(mass > tiny, mass, 1.0)
    weights = mass / jnp.sum(mass)
    if data is not None:
        closed = jax.vmap(lambda w: component._closed_form_fit(data, w))(
            (weighted / safe_mass[None, :]).T
        )
        if closed is not None:
            theta, ok = closed
            ok = ok & (mass > tiny) & jnp.all(jnp.isfinite(theta), axis=1)
            theta = jnp.where(ok[:, None], theta.astype(theta_old.dtype), theta_old)
            return weights, theta, jnp.all(ok)
    shift = jax.lax.stop_gradient(stat[0])
    eta = shift + (weighted.T @ (stat - shift)) / safe_mass[:, None]
    eta_old = jax.vmap(jax.grad(component._raw_log_partition))(theta_old)
    ok = (mass > tiny) & jax.vmap(component.in_mean_domain)(eta)
    ok = ok & jnp.all(jnp.isfinite(eta), axis=1)
    eta = jnp.where(ok[:, None], eta, eta_old)

    def solve(e, t0):
        return component.natural_parameters(e, initial_theta=t0, throw=False)

    theta = jax.vmap(solve)(eta, theta_old)
    # Generic families invert grad A by Newton: accept only a converged, finite inverse.
    residual = jax.vmap(jax.grad(component._raw_log_partition))(theta) - eta
    tol = 1e3 * _default_tolerance(stat.dtype)
    solved = jnp.all(jnp.abs(residual) <= tol * (1 + jnp.abs(eta)), axis=1)
    ok = ok & solved & jnp.all(jnp.isfinite(theta), axis=1)
    theta = jnp.where(ok[:, None], theta, theta_old)
    return weights, theta, jnp.all(ok)


@eqx.filter_jit
def em(
    component: AbstractExponentialFamily,
    data: Array,
    init_weights: Float[Array, " k"],
    init_theta: Float[Array, "k dim"],
    *,
    num_steps: int = 100,
    tol: float | None = None,
    sample_weights: Array | None = None,
    throw: bool = True,
) -> EMResult:
    r"""Fit a finite mixture of an exponential family by EM (alternating projections).

    Each step is an e-projection (E-step: responsibilities
    :math:`r_{ik} \propto \pi_k p(x_i\mid\theta_k)`) followed by an m-projection (M-step:
    :math:`\pi_k = \sum_i w_i r_{ik}`, :math:`\nabla A(\theta_k) = \sum_i w_i r_{ik} T(x_i) /
    \sum_i w_i r_{ik}`), with sample weights :math:`w_i` summing to one. The average
    log-likelihood never decreases. Jit-compiled; batch restarts with ``jax.vmap`` (see the
    example).

    Args:
        component: the component family, any :class:`AbstractExponentialFamily` with a
            sufficient statistic (Normal, MultivariateNormal, Poisson, Categorical, ...).
        data: observations with a leading sample axis.
        init_weights: initial mixing weights, shape ``(k,)``.
        init_theta: initial natural parameters, shape ``(k, dim)``; see :func:`init_mixture`.
        num_steps: number of EM steps (static).
        tol: optional early stop once the average log-likelihood rises by less than ``tol``
            in one step (as scikit-learn's ``tol``); then ``result`` says whether that
            happened within ``num_steps``. Default: run all ``num_steps`` steps.
        sample_weights: optional non-negative weights of the observations, shape ``(n,)``.
        throw: raise (also under ``jit``) if a component degenerates, a value becomes
            non-finite, or ``tol`` was not reached; with ``throw=False`` inspect ``result``.

    Returns:
        An :class:`EMResult` with the fitted parameters and the log-likelihood trace.

    Raises:
        TypeError: if ``component`` is not an exponential family.
        ValueError: on inconsistent shapes or a non-positive ``num_steps``.
        equinox.EquinoxRuntimeError: on failure when ``throw=True``.

    Example:
        >>> import functools, jax, jax.numpy as jnp
        >>> from infogeo_jax.families import Normal
        >>> x = jnp.concatenate([jnp.linspace(-3, -1, 50), jnp.linspace(1, 3, 50)])
        >>> keys = jax.random.split(jax.random.key(0), 8)  # 8 restarts
        >>> w0, th0 = jax.vmap(lambda k: init_mixture(Normal(), x, 2, k))(keys)
        >>> fits = jax.vmap(functools.partial(em, Normal(), x, num_steps=50))(w0, th0)
        >>> best = jnp.argmax(fits.mean_log_likelihood[:, -1])

    References:
        Amari (1995), Sec. 4 (the em algorithm); Csiszar & Tusnady (1984); Bishop (2006),
        Sec. 9.2.2 (EM for Gaussian mixtures) and Sec. 9.4.
    """
    _check_component(component)
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"`num_steps` must be a positive Python int, got {num_steps!r}.")
    if tol is not None and not tol >= 0:
        raise ValueError(f"`tol` must be a non-negative float or None, got {tol!r}.")
    weights, theta = _check_parameters(component, init_weights, init_theta)
    init = Mixture(component, weights, theta)  # validates values
    weights, theta = init.weights, init.theta
    stat, log_h = _statistics(component, data)
    dtype = jnp.result_type(stat.dtype, theta.dtype)
    stat, log_h, weights, theta = (a.astype(dtype) for a in (stat, log_h, weights, theta))
    fit_data = check_finite_data(jnp.asarray(data))
    n = stat.shape[0]
    if sample_weights is None:
        sw = jnp.full((n,), 1.0 / n, dtype)
    else:
        sw = jnp.asarray(sample_weights, dtype)
        if sw.shape != (n,):
            raise ValueError(f"`sample_weights` must have shape ({n},), got {sw.shape}.")
        sw = eqx.error_if(
            sw,
            jnp.any(sw < 0) | ~(jnp.sum(sw) > 0),
            "`sample_weights` must be non-negative with a positive sum.",
        )
        sw = sw / jnp.sum(sw)

    def step(carry, _):
        weights, theta, done, healthy, steps, previous = carry
        resp, ll = _e_step(component, weights, theta, stat, log_h, sw)
        if tol is None:
            converged = jnp.asarray(False)
        else:
            converged = jnp.abs(ll - previous) < tol
        done = done | converged | ~jnp.isfinite(ll)
        new_weights, new_theta, ok = _m_step(component, theta, stat, resp, sw, fit_data)
        keep = done | ~ok
        weights = jnp.where(keep, weights, new_weights)
        theta = jnp.where(keep, theta, new_theta)
        healthy = healthy & (ok | done)
        done = done | ~ok
        steps = steps + jnp.where(keep, 0, 1)
        return (weights, theta, done, healthy, steps, ll), ll

    carry0 = (
        weights,
        theta,
        jnp.asarray(False),
        jnp.asarray(True),
        jnp.asarray(0),
        jnp.asarray(jnp.inf, dtype),
    )
    (weights, theta, done, healthy, steps, _), trace = jax.lax.scan(
        step, carry0, None, length=num_steps
    )
    _, final_ll = _e_step(component, weights, theta, stat, log_h, sw)
    trace = jnp.concatenate([trace, final_ll[None]])
    finite = jnp.all(jnp.isfinite(trace))
    if tol is None:
        reached = jnp.asarray(True)
    else:
        reached = done | (jnp.abs(trace[-1] - trace[-2]) < tol)
    result = RESULTS.where(
        ~finite,
        RESULTS.nonfinite,
        RESULTS.where(
            ~healthy,
            RESULTS.degenerate,
            RESULTS.where(reached, RESULTS.successful, RESULTS.max_steps_reached),
        ),
    )
    if throw:
        weights, theta = result.error_if((weights, theta), result != RESULTS.successful)
    return EMResult(
        component=component,
        weights=weights,
        theta=theta,
        mean_log_likelihood=trace,
        num_steps=steps,
        result=result,
    )


@eqx.filter_jit
def init_mixture(
    component: AbstractExponentialFamily,
    data: Array,
    num_components: int,
    key: PRNGKeyArray,
    *,
    smoothing: float = 0.1,
) -> tuple[Float[Array, " k"], Float[Array, "k dim"]]:
    r"""A random starting point for :func:`em`, for any exponential family.

    Picks ``num_components`` observations as seeds by k-means++ (D^2) sampling in the space of
    standardized sufficient statistics, assigns every observation to its nearest seed there,
    smooths these hard assignments towards uniform (``smoothing``) so that every component sees
    all the data, and takes one M-step (moment matching). Vmap over keys for restarts.

    Args:
        component: the component family.
        data: observations with a leading sample axis (at least ``num_components``).
        num_components: k (static).
        key: a JAX PRNG key.
        smoothing: weight in (0, 1] of the uniform part of the initial responsibilities.

    Returns:
        ``(weights, theta)`` of shapes ``(k,)`` and ``(k, dim)``.

    Raises:
        ValueError: if there are fewer observations than components or ``smoothing`` is not
            in (0, 1].
        equinox.EquinoxRuntimeError: if the data contain NaN or inf, or are degenerate for
            the family (no member matches the moments of a component, e.g. constant data for a
            normal family); also under ``jit``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from infogeo_jax.families import Poisson
        >>> counts = jnp.array([0.0, 1.0, 2.0, 8.0, 9.0, 11.0])
        >>> weights, theta = init_mixture(Poisson(), counts, 2, jax.random.key(0))
        >>> theta.shape
        (2, 1)
    """
    _check_component(component)
    if not (isinstance(num_components, int) and num_components >= 1):
        raise ValueError(f"`num_components` must be a positive int, got {num_components!r}.")
    if not 0 < smoothing <= 1:
        raise ValueError(f"`smoothing` must lie in (0, 1], got {smoothing!r}.")
    stat, _ = _statistics(component, data)
    n = stat.shape[0]
    if n < num_components:
        raise ValueError(f"Need at least {num_components} observations, got {n}.")
    scale = jnp.std(stat, axis=0)
    z = (stat - jnp.mean(stat, axis=0)) / jnp.where(scale > 0, scale, 1.0)
    # k-means++ seeding (D^2 sampling) in the standardized statistic space.
    keys = jax.random.split(key, num_components)
    first = jax.random.randint(keys[0], (), 0, n)
    nearest = jnp.sum((z - z[first]) ** 2, axis=-1)
    seeds = [first]
    for j in range(1, num_components):
        total = jnp.sum(nearest)
        probs = jnp.where(total > 0, nearest / jnp.where(total > 0, total, 1.0), 1.0 / n)
        seeds.append(jax.random.choice(keys[j], n, p=probs))
        nearest = jnp.minimum(nearest, jnp.sum((z - z[seeds[-1]]) ** 2, axis=-1))
    seeds = jnp.stack(seeds)
    distance = jnp.sum((z[:, None, :] - z[seeds][None, :, :]) ** 2, axis=-1)
    hard = jax.nn.one_hot(jnp.argmin(distance, axis=1), num_components, dtype=stat.dtype)
    resp = (1 - smoothing) * hard + smoothing / num_components
    weighted = resp / n
    mass = jnp.sum(weighted, axis=0)
    data = jnp.asarray(data)
    closed = jax.vmap(lambda w: component._closed_form_fit(data, w))((weighted / mass).T)
    name = type(component).__name__
    if closed is not None:
        theta, ok = closed
        theta = eqx.error_if(theta, ~jnp.all(ok), degenerate_message(name))
    else:
        shift = jax.lax.stop_gradient(stat[0])
        eta = shift + (weighted.T @ (stat - shift)) / mass[:, None]
        eta = eqx.error_if(
            eta, ~jnp.all(jax.vmap(component.in_mean_domain)(eta)), degenerate_message(name)
        )
        theta = jax.vmap(component.natural_parameters)(eta)
    return mass / jnp.sum(mass), theta
