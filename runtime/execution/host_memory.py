"""Host memory for maps on the CPU: freed blocks stay in the process's heap instead of going back to
the operating system, so the next step's maps reuse pages that are already mapped.

glibc's malloc serves every block above its mmap threshold (128 KiB at start, adjusted upwards to at
most 32 MiB) with a fresh `mmap`, and `free` hands it back with `munmap` (and trims the heap's top past
128 KiB). A training step on the CPU allocates and frees every activation and gradient map once, so each
of those pages is faulted in anew every step (on the Fashion-MNIST mini at batch 128, 15,679 minor
faults a step against 1,900 with the heap kept). Raising both thresholds keeps those blocks in the heap and
the step does no page faults after the first (see docs/performance.md for the measured effect).

The setting is the process's (glibc has one heap per arena for everything): it also speeds up other
CPU work in the same process, and it keeps the peak of freed host memory reserved. It is opt-in,
``ALEXNETC_HOST_HEAP=keep``, applied once when an executor is bound to the CPU, on glibc only. Not the
default because one full test run with it on (of five) ended, after every test had passed, in glibc's
"corrupted size vs. prev_size" abort at interpreter exit, which we could not reproduce or explain
yet: with large blocks in the heap instead of in their own mappings, a stray write past a buffer's
end lands on malloc's bookkeeping instead of in a page's slack, so the setting may expose a latent
overflow somewhere in the process (ours or a library's) rather than cause one.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1     # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 << 20       # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
_TRIM = 1 << 30            # keep up to 1 GiB of freed memory at the heap's top

_applied: bool | None = None


def keep_freed_maps() -> bool:
    """With ALEXNETC_HOST_HEAP=keep, set malloc's thresholds once per process (glibc on Linux); True if
    it is in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get("ALEXNETC_HOST_HEAP", "") != "keep":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        if not hasattr(libc, "gnu_get_libc_version"):   # mallopt's numbers above are glibc's
            return False
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM))
