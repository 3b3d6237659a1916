import os

import jax
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

# Property tests draw the same examples on every run by default, so CI is reproducible; set
# HYPOTHESIS_PROFILE=explore to search fresh examples (and keep what fails in .hypothesis/).
settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop JAX's caches of traced and compiled functions after each test module.

    The default selection compiles thousands of programs in one process; without this their
    executables stay resident until the process ends.
    """
    yield
    jax.clear_caches()
