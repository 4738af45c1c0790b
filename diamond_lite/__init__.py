"""diamond-lite: DIAMOND (Alonso et al., NeurIPS 2024), built piece by piece in a notebook course.

The modules follow the notebooks' order: ``atari`` and ``data`` (notebook 00), ``edm`` and ``sampler``
(notebook 01), and so on. ``profile()`` tells every notebook which sizes and budgets to use.
"""

from . import memory
from .profiles import COURSE_GAME, COURSE_RUN_GAME, PROFILES, Profile, profile

# Before the first large tensor: freed memory stays in the process (diamond_lite.memory; DIAMOND_MALLOC=default opts out)
memory.keep_freed_memory()

__all__ = ["COURSE_GAME", "COURSE_RUN_GAME", "PROFILES", "Profile", "profile"]
__version__ = "0.1.0"
