r"""Entry points of the geodesic solvers, as the manifolds call them.

- :mod:`._settings`: :class:`GeodesicSolver`, :class:`LogMapSolution` and the status codes;
- :mod:`._flow`: the geodesic flow, its Jacobian and parallel transport (diffrax ODE solves);
- :mod:`._shooting`: one shooting solve of the logarithm map (Runge-Kutta and Newton steps);
- :mod:`._log_map`: the logarithm map and the distance, their batching rule and derivatives.
"""

from ._flow import flow as flow, flow_jacobian as flow_jacobian, transport as transport
from ._log_map import (
    distance_core as distance_core,
    log_map_core as log_map_core,
    newton_shooting as newton_shooting,
)
from ._settings import (
    _SUCCESS as _SUCCESS,
    GeodesicSolver as GeodesicSolver,
    LogMapSolution as LogMapSolution,
    solution_from_status as solution_from_status,
)
