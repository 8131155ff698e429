"""Kernels behind the contract in docs/kernel-interface.md: Triton on CUDA, ATen reference elsewhere.

The runtime reaches them only through `get_backend(device, name)` (see `backend.py`). Importing this
package imports neither torch nor triton; the first `get_backend` call does what it needs.
"""
from __future__ import annotations

__all__ = ["get_backend"]


def __getattr__(attr):
    if attr == "get_backend":
        from .backend import get_backend
        return get_backend
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
