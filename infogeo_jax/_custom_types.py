"""jaxtyping aliases used across infogeo_jax, so that signatures read as math."""

from typing import Any

import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, PyTree

Point = Float[Array, " dim"]
"""A point of a statistical manifold: unbatched parameters of shape ``(dim,)``."""

PointLike = Float[ArrayLike, " dim"] | np.ndarray
Tangent = Float[Array, " dim"]
Metric = Float[Array, "dim dim"]
Tensor3 = Float[Array, "dim dim dim"]
Tensor4 = Float[Array, "dim dim dim dim"]
Scalar = Float[Array, ""]
ScalarLike = float | Float[ArrayLike, ""]
BoolScalar = Bool[Array, ""]
Sample = Any
"""One outcome ``x`` of a model: a scalar or an array, as the model defines it."""

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Float",
    "PRNGKeyArray",
    "PyTree",
    "Point",
    "PointLike",
    "Tangent",
    "Metric",
    "Tensor3",
    "Tensor4",
    "Scalar",
    "ScalarLike",
    "BoolScalar",
    "Sample",
]
