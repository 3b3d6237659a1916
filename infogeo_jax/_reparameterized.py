r"""An exponential family re-expressed in other coordinates, through its closed forms.

With :math:`\theta = t(\varphi)` and :math:`J = \partial t / \partial\varphi`, the Fisher metric
and the skewness tensor are tensors, so they pull back exactly:

.. math::
    \tilde g_{ab}(\varphi) = J_{ia} J_{jb}\, g_{ij}(t(\varphi)), \qquad
    \tilde T_{abc}(\varphi) = J_{ia} J_{jb} J_{kc}\, T_{ijk}(t(\varphi)),

with :math:`g` and :math:`T` the family's own (closed-form or autodiff-of-A) values; the
alpha-connections and curvature then follow from the shared base class. No expectation rule is
involved, so the result is as exact as the family's log-partition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import Metric, Point, PointLike, Scalar, Tensor3
from ._manifold import AbstractStatisticalManifold, Method, check_method
from ._misc import finite_and_in_domain
from .geometry import GeodesicSolver


class _Family(Protocol):
    """What a reparameterization needs of the exponential family it wraps."""

    def in_domain(self, theta: Point) -> Scalar: ...
    def fisher_information(self, theta: PointLike, *, method: Method = "auto") -> Metric: ...
    def skewness_tensor(self, theta: PointLike) -> Tensor3: ...
    def geodesic_distance(
        self,
        theta_0: PointLike,
        theta_1: PointLike,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
        method: Method = "auto",
    ) -> Scalar: ...
    def log_prob(self, theta: PointLike, x: Any) -> Scalar: ...
    def kl_divergence(self, p: PointLike, q: PointLike) -> Scalar: ...


class ReparameterizedFamily(AbstractStatisticalManifold):
    r"""An exponential family in coordinates :math:`\varphi` with :math:`\theta = t(\varphi)`.

    Built by :meth:`AbstractExponentialFamily.reparameterize`. Its :meth:`metric` (also named
    :meth:`fisher_information`) and :meth:`skewness_tensor` are the family's pulled back by the
    Jacobian of ``to_theta``; every other geometric quantity (Christoffel symbols, curvature,
    geodesics, distances) is derived from them in the new coordinates.

    ``method`` picks the route where two exist: ``"closed_form"`` (default) uses the family's
    own :meth:`fisher_information` (a closed form where the family has one) and its own
    :meth:`geodesic_distance` at :math:`t(\varphi)` (the Fisher-Rao distance does not depend
    on the chart, so a closed form carries over); ``"numerical"`` uses the Hessian of the
    log-partition by autodiff for the metric and geodesic shooting in the new coordinates
    for the distance.

    Attributes:
        family: the exponential family in natural coordinates.
        to_theta: the map :math:`\varphi \mapsto \theta`.
        method: ``"closed_form"`` or ``"numerical"``.
    """

    family: _Family
    to_theta: Callable[[Point], Point]
    in_domain_fn: Callable[[Point], Scalar] | None = None
    static_dim: int | None = eqx.field(static=True, default=None)
    method: str = eqx.field(static=True, default="closed_form")

    def __check_init__(self):
        if self.method not in ("closed_form", "numerical"):
            raise ValueError(f"`method` must be 'closed_form' or 'numerical', got {self.method!r}.")

    @property
    def dim(self) -> int | None:
        return self.static_dim

    def _theta(self, phi: Point) -> Point:
        theta = jnp.asarray(self.to_theta(phi))
        if theta.ndim != 1:
            raise ValueError(f"`to_theta(phi)` must return a 1-D array, got shape {theta.shape}.")
        return theta

    def in_domain(self, theta: Point) -> Scalar:
        """Whether ``to_theta(phi)`` is in the family's natural domain (and the extra predicate)."""
        inner = self._theta(theta)
        ok = finite_and_in_domain(theta, self.in_domain_fn)
        return ok & jnp.all(jnp.isfinite(inner)) & self.family.in_domain(inner)

    def jacobian(self, phi: PointLike) -> Metric:
        r"""The Jacobian :math:`J_{ia} = \partial\theta_i / \partial\varphi_a`, ``[i, a]``."""
        phi = self.check_point(phi)
        return jax.jacfwd(self._theta)(phi)

    def metric(self, theta: PointLike) -> Metric:
        r"""Pulled-back Fisher metric :math:`J^\top g(t(\varphi)) J`, index order ``[a, b]``."""
        phi = self.check_point(theta)
        jac = jax.jacfwd(self._theta)(phi)
        inner = self._theta(phi)
        if self.method == "closed_form":
            g = self.family.fisher_information(inner)
        else:
            g = self.family.fisher_information(inner, method="numerical")
        return jac.T @ g @ jac

    def fisher_information(self, theta: PointLike) -> Metric:
        """The Fisher information in these coordinates; same as :meth:`metric`."""
        return self.metric(theta)

    def skewness_tensor(self, theta: PointLike) -> Tensor3:
        r"""Pulled-back skewness :math:`J_{ia}J_{jb}J_{kc}T_{ijk}`, index order ``[a, b, c]``."""
        phi = self.check_point(theta)
        jac = jax.jacfwd(self._theta)(phi)
        t = self.family.skewness_tensor(self._theta(phi))
        return jnp.einsum("ijk,ia,jb,kc->abc", t, jac, jac, jac)

    def geodesic_distance(
        self,
        theta_0: PointLike,
        theta_1: PointLike,
        *,
        solver: GeodesicSolver | None = None,
        throw: bool = True,
        method: Method = "auto",
    ) -> Scalar:
        """Fisher-Rao distance: the family's at ``to_theta`` (or shooting in these coordinates).

        ``method="numerical"`` shoots in these coordinates; ``"closed_form"`` requires the
        family's closed form; ``"auto"`` follows the reparameterization's own ``method``
        (``"closed_form"``: the family's distance, closed form or not, at ``to_theta``).
        """
        check_method(method, "geodesic_distance")
        if method == "numerical" or (method == "auto" and self.method == "numerical"):
            return super().geodesic_distance(
                theta_0, theta_1, solver=solver, throw=throw, method="numerical"
            )
        phi_0, phi_1 = self._check_pair(theta_0, theta_1)
        return self.family.geodesic_distance(
            self._theta(phi_0), self._theta(phi_1), solver=solver, throw=throw, method=method
        )

    def log_prob(self, theta: PointLike, x) -> Scalar:
        r"""The log-density :math:`\log p(x \mid t(\varphi))`."""
        phi = self.check_point(theta)
        return self.family.log_prob(self._theta(phi), x)

    def kl_divergence(self, p: PointLike, q: PointLike) -> Scalar:
        r""":math:`\mathrm{KL}(p\|q)` by the family's closed form, p and q in these coordinates."""
        return self.family.kl_divergence(
            self._theta(self.check_point(p)), self._theta(self.check_point(q))
        )
