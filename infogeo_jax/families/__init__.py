"""Catalogue of exponential families, one per module, each with documented natural coordinates.

Every family is an :class:`infogeo_jax.AbstractExponentialFamily` whose geometry comes from its
log-partition by autodiff; closed forms override the defaults only where they are cheaper, and the
tests check each override against the autodiff default.
"""

from ._bernoulli import Bernoulli as Bernoulli
from ._normal import Normal as Normal
