"""Operators: one descriptor (`OpDef`) per op, one file per op family; importing this package registers
every op.

Where to look for an op ``X`` of family ``F``: ``compiler/ops/F.py`` holds its attributes (with the JSON
Schema of each), shape rule `infer`, cost `macs`, gradient rule (`gradient`, or `input_grad` for one-input
ops), lowering, fusion eligibility, kernel entry point and eager rule; ``kernels/F.py`` its Triton
kernels and ``kernels/reference/F.py`` their ATen reference. `registry.py` says which stage reads what;
docs/adding-an-op.md walks through adding one.
"""
from __future__ import annotations

import importlib

from .registry import FAMILIES, OPS, OpDef, get_op, register, spec_ops  # noqa: F401

# The op families, in the order specs list their ops ("known ops: ..."); importing one registers its ops.
FAMILIES.extend(("conv", "fc", "lrn", "batchnorm", "pool", "dropout", "activation", "elementwise", "tensor", "loss"))
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")
