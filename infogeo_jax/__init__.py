"""infogeo_jax: information geometry in JAX.

Fisher metrics, alpha-connections, curvature, geodesics and divergences of any statistical model
(an exponential family from its log-partition, or any log-density), and natural-gradient /
mirror-descent optimizers as optax transformations.
"""

# --- core (issue 2) ----------------------------------------------------------------------------
from . import families as families, geometry as geometry
from ._divergence import bregman_divergence as bregman_divergence
from ._family import (
    AbstractExponentialFamily as AbstractExponentialFamily,
    ExponentialFamily as ExponentialFamily,
)
from ._manifold import (
    AbstractStatisticalManifold as AbstractStatisticalManifold,
    StatisticalManifold as StatisticalManifold,
)

# --- statistical models (issue 3) --------------------------------------------------------------

# --- optimizers (issue 5) ----------------------------------------------------------------------

# --- projections and EM (issue 6) --------------------------------------------------------------

__version__ = "0.1.0"
