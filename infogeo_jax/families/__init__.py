"""Catalogue of exponential families, one per module, each with documented natural coordinates.

Every family is an :class:`infogeo_jax.AbstractExponentialFamily` whose geometry comes from its
log-partition by autodiff; closed forms override the defaults only where they are cheaper, and the
tests check each override against the autodiff default.
"""

from ._bernoulli import Bernoulli as Bernoulli
from ._binomial import Binomial as Binomial
from ._categorical import Categorical as Categorical
from ._diagonal_normal import DiagonalNormal as DiagonalNormal
from ._dirichlet import Beta as Beta, Dirichlet as Dirichlet
from ._exponential import Exponential as Exponential
from ._gamma import Gamma as Gamma
from ._geometric import Geometric as Geometric
from ._multinomial import Multinomial as Multinomial
from ._multivariate_normal import MultivariateNormal as MultivariateNormal
from ._negative_binomial import NegativeBinomial as NegativeBinomial
from ._normal import Normal as Normal
from ._poisson import Poisson as Poisson
