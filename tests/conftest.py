import os

import jax
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

# Property tests draw the same examples on every run by default, so CI is reproducible; set
# HYPOTHESIS_PROFILE=explore to search fresh examples (and keep what fails in .hypothesis/).
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
