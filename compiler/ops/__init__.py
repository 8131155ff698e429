"""Operator definitions: one file per op family, each op's shape rule, cost and gradient rule together.

Where to look for an op ``X``: its `OpDef` in this package (shape rule `infer`, multiply-adds `macs`,
gradient rule `gradient`, or `input_grad` for one-input ops), its kernels in ``alexnetc.kernels`` (the
contract: docs/kernel-interface.md), and the runtime's call in ``alexnetc.runtime.execution.executor`` (one
dispatch table). Importing this package
registers every op.
"""
from __future__ import annotations

from .registry import OPS, OpDef, get_op, register  # noqa: F401
from . import conv, fc, lrn, pool, elementwise, tensor, loss  # noqa: F401,E402  (registration)
