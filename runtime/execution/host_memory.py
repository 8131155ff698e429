"""Host memory for maps on the CPU: freed blocks stay in the process's heap instead of going back to
the operating system, so the next step's maps reuse pages that are already mapped.

glibc's malloc serves every block above its mmap threshold (128 KiB at start, adjusted upwards to at
most 32 MiB) with a fresh `mmap`, and `free` hands it back with `munmap` (and trims the heap's top past
128 KiB). A training step on the CPU allocates and frees every activation and gradient map once, so each
of those pages is faulted in anew every step (on the Fashion-MNIST mini at batch 128, 15,679 minor
faults a step against 1,900 with the heap kept). Raising both thresholds keeps those blocks in the heap and
the step does no page faults after the first (see docs/performance.md for the measured effect).

The setting is the process's (glibc has one heap per arena for everything): it also speeds up other
CPU work in the same process, and it keeps the peak of freed host memory reserved. It is the default,
applied once when an executor is bound to the CPU, on glibc only; ``ALEXNETC_HOST_HEAP=off`` leaves
malloc alone (``keep`` asks for the default explicitly; anything else is an error).

It was opt-in for a while: one full test run with it on ended, after every test had passed, in glibc's
"corrupted size vs. prev_size" abort at exit. The cause was not this setting but torch's bundled
oneDNN: its strided 1x1 convolution weight gradient writes past its workspace on channels-last maps
with fewer channels per group than its channel block (oneDNN issue 6035), which the random specs of
tests/runtime/execution/test_executor_properties.py drew now and then; it corrupts the heap with
malloc's default thresholds too (a plain torch reproducer crashes 4 runs in 5). The reference backend
no longer takes that path (kernels/reference/conv.py `_weight_grad`; tests/kernels/test_reference_heap.py
checks it under glibc's malloc checking, and tests/kernels/test_bounds.py checks every Triton kernel's
loads and stores). With large blocks in the heap instead of in their own mappings, a stray write past a
buffer's end lands on malloc's bookkeeping rather than in a page's slack, so a bug like that one shows
up sooner and louder under this setting; it does not cause one.
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
    """Unless ALEXNETC_HOST_HEAP=off, set malloc's thresholds once per process (glibc on Linux); True if
    it is in effect. ValueError for a value other than keep, off or empty."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


CHOICES = ("keep", "off")


def requested() -> bool:
    """Whether ALEXNETC_HOST_HEAP asks for freed maps to be kept (the default, or ``keep``)."""
    value = os.environ.get("ALEXNETC_HOST_HEAP", "").strip().lower()
    if value not in ("", *CHOICES):
        raise ValueError(f"ALEXNETC_HOST_HEAP={value!r}: expected one of {', '.join(CHOICES)} (default keep)")
    return value != "off"


def _apply() -> bool:
    if not requested():
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
