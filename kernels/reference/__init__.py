"""The reference kernels: every entry of docs/kernel-interface.md on ATen ops, one module per family.

`reference/F.py` mirrors `kernels/F.py` entry for entry (same names, same arguments), so the backend
finds an op's reference as ``alexnetc.kernels.reference.<family>.<entry>``. The data-movement family
(`kernels/tensor.py`) has no copy here: one implementation serves both backends.

Two jobs. The reference is the CPU backend, so each entry is a handful of fused ATen calls with no
Python loop over elements (the only loops run over the n offsets of an LRN window). And it is the
oracle the Triton kernels are tested against, so the semantics the contract leaves to a backend are
fixed here once: `out_size` larger than the floor size means the missing bottom/right cells are
zeros (conv) or never win (max pool); max-pool ties go to the first cell in row-major window order
(as ATen's own kernels do); the dropout mask is the hash of `kernels/shared.py`, which the Triton
kernel reproduces bit for bit. An oracle must not share code with what it checks: these modules
import nothing from the Triton side, and the Triton modules nothing from here.

Half-precision inputs on the CPU are computed in fp32 and cast back (ATen's CPU half kernels are
slow or missing, and the contract asks for fp32 accumulation anyway).
"""
from __future__ import annotations

import torch


def describe() -> str:
    from . import native

    return f"reference backend (ATen ops, torch {torch.__version__}; {native.status()})"
