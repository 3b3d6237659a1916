"""infogeo_jax: information geometry in JAX.

Fisher metrics, alpha-connections, curvature, geodesics and divergences of any statistical model
(an exponential family from its log-partition, or any log-density), and natural-gradient /
mirror-descent optimizers as optax transformations.
"""

# --- core -----------------------------------------------------------------------------------------
from . import families as families, geometry as geometry
from ._divergence import bregman_divergence as bregman_divergence
from ._family import AbstractExponentialFamily as AbstractExponentialFamily
from ._generic_family import ExponentialFamily as ExponentialFamily
from ._manifold import AbstractStatisticalManifold as AbstractStatisticalManifold
from ._metric_manifold import StatisticalManifold as StatisticalManifold
from ._pairwise import pairwise_distances as pairwise_distances

# --- statistical models ---------------------------------------------------------------------------
# isort: split
from ._expectation import (
    AbstractExpectation as AbstractExpectation,
    AbstractQuadratureRule as AbstractQuadratureRule,
    FiniteSupport as FiniteSupport,
    MonteCarlo as MonteCarlo,
    Quadrature as Quadrature,
    TensorProduct as TensorProduct,
)
from ._model import StatisticalModel as StatisticalModel
from ._reparameterized import ReparameterizedFamily as ReparameterizedFamily
from ._results import RESULTS as RESULTS

# --- optimizers -----------------------------------------------------------------------------------
# isort: split
from . import optim as optim

# --- projections and EM ---------------------------------------------------------------------------
# isort: split
from ._em import (
    EMResult as EMResult,
    Mixture as Mixture,
    em as em,
    init_mixture as init_mixture,
)
from ._projection import (
    ProjectionResult as ProjectionResult,
    e_projection as e_projection,
    e_projection_affine as e_projection_affine,
    m_projection as m_projection,
    m_projection_affine as m_projection_affine,
)

__version__ = "0.1.0"
