"""Kernel tests: run the Triton kernels in the interpreter when there is no GPU, and skip GPU-only tests.

TRITON_INTERPRET must be set before any `@triton.jit` is executed (the decorator reads it), so it is
set here, at conftest import, before the test modules import `alexnetc.kernels.*`.
"""
from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tensors live on the GPU when there is one (compiled kernels), else on the CPU (interpreter).
DEVICE = "cuda" if HAS_CUDA else "cpu"


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
