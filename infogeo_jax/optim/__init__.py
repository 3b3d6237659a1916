"""Natural-gradient, mirror-descent and exponentiated-gradient optimizers as optax transforms.

Each optimizer is a ``scale_by_*`` building block (an ``optax.GradientTransformationExtraArgs``
that needs ``params``) and a short alias that chains it with ``optax.scale_by_learning_rate``.
The mirror steps are not linear in the learning rate, so the mirror-descent and
exponentiated-gradient blocks also take the learning rate and return
``(theta - theta_next) / learning_rate``: after the chained ``scale_by_learning_rate`` the
update is exactly the mirror step ``theta_next - theta`` (up to rounding). The Fisher
builders return the ``fisher(params, **extra_args)`` callables that :func:`natural_gradient`
takes; the batch reaches them as an extra argument of ``update``. They take the model as it is:
a function ``apply(params, inputs)``, an equinox module, a flax nnx or linen module, or a haiku
transform; :func:`apply_gradients` is flax's ``TrainState.apply_gradients`` with the batch
forwarded to the optimizer, and :func:`multi_steps` accumulates micro-batches (gradients and
curvature) for one solve per update.
"""

from ._apply import (
    apply_gradients as apply_gradients,
    not_a_schedule as not_a_schedule,
)
from ._fisher import (
    empirical_fisher as empirical_fisher,
    manifold_fisher as manifold_fisher,
    predictive_fisher as predictive_fisher,
)
from ._kfac import (
    ScaleByKFACState as ScaleByKFACState,
    kfac as kfac,
    scale_by_kfac as scale_by_kfac,
)
from ._kfac_blocks import KFACBlockInfo as KFACBlockInfo, kfac_blocks as kfac_blocks
from ._mirror_descent import (
    ScaleByExponentiatedGradientState as ScaleByExponentiatedGradientState,
    ScaleByMirrorDescentState as ScaleByMirrorDescentState,
    exponentiated_gradient as exponentiated_gradient,
    mirror_descent as mirror_descent,
    scale_by_exponentiated_gradient as scale_by_exponentiated_gradient,
    scale_by_mirror_descent as scale_by_mirror_descent,
)
from ._multi_steps import (
    MultiStepsBatchState as MultiStepsBatchState,
    multi_steps as multi_steps,
)
from ._natural_gradient import (
    ScaleByNaturalGradientState as ScaleByNaturalGradientState,
    natural_gradient as natural_gradient,
    scale_by_natural_gradient as scale_by_natural_gradient,
)
