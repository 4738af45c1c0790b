"""Keep freed memory in the process instead of handing it back to the operating system (Linux, glibc).

glibc's ``malloc`` serves every block over 32 MB (its largest mmap threshold) with a fresh ``mmap`` and returns it
with ``munmap`` when it is freed. A training step at the course's sizes allocates and frees activations of that size
dozens of times (the reward/end model's 304 frames of 64x64 at batch 16: 80 MB a feature map), so every one of them
comes back as fresh pages that the kernel must fault in and zero. On the 2-core AVX2 machine of docs/performance.md
("Keeping freed memory") 39% of a reward/end train step's CPU time went to the kernel: 2.40 s per step, 1.18 s
with freed memory kept; the world model's train step 1.53 s -> 1.36 s, 3-step sampling at batch 8 1.56x faster, the
actor-critic step with its imagination 13.2 s -> 10.7 s.

``keep_freed_memory`` turns mmap off for new blocks (``M_MMAP_MAX = 0``: they come from the heap) and lets the heap
keep up to 2 GB of free memory at its top (``M_TRIM_THRESHOLD``), so a freed block is reused as it is. The cost:
the process holds on to its memory until it exits, and its heap, fragmented at first by the aligned blocks torch asks
for, settles above the old peak (a course reward/end training loop: 1.5 GB peak before, 2.3 GB after). It is a choice
for a whole process, so it is made where a run starts, never on import: the commands (``train``, ``pretrain``,
``evaluate``, ``bench``) and every notebook's first cell call it. ``DIAMOND_MALLOC=default`` in the environment leaves
glibc's behaviour alone. Elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "DIAMOND_MALLOC"
# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
TRIM_THRESHOLD = 2**31 - 1  # the largest int mallopt takes: about 2 GB of free heap kept
TOP_PAD = 2**28  # grow the heap 256 MB at a time, not one block's worth

_kept = False


def keep_freed_memory() -> bool:
    """Apply the setting above once per process; whether it is in force (False where glibc is absent or
    ``DIAMOND_MALLOC=default``)."""
    global _kept
    if _kept:
        return True
    if os.environ.get(ENV_VAR, "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, version = libc.mallopt, libc.gnu_get_libc_version  # only glibc has both
    except (OSError, AttributeError):
        return False
    version.restype = ctypes.c_char_p
    gnu = version()
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(gnu) and all(mallopt(p, v) == 1 for p, v in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    return _kept


def is_kept() -> bool:
    """Whether ``keep_freed_memory`` is in force in this process."""
    return _kept
