"""Backend dispatch (kernels/backend.py): which backend a device gets, overrides, and coverage of the
entry points the op registry names.

Oracle: the rules in backend.py's docstring and docs/kernel-interface.md's function table; the
end-to-end check runs one small layer stack through both backends and compares (rtol/atol 1e-5 on
the CPU, 2e-2 on a GPU where the conv may use TF32).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnetc.kernels import backend as B
from alexnetc.kernels import get_backend

DOC = Path(__file__).resolve().parents[2] / "docs" / "kernel-interface.md"


def test_registry_entry_points_match_the_document():
    """oracle: the function names in the contract's table."""
    names = set(re.findall(r"^\| `(\w+)\(", DOC.read_text(), flags=re.M))
    assert names == set(B.entry_points())


def test_cpu_defaults_to_reference(monkeypatch):
    monkeypatch.delenv("ALEXNETC_BACKEND", raising=False)
    for dev in ("cpu", torch.device("cpu"), torch.zeros(1)):
        be = get_backend(dev)
        assert be.name == "reference" and "reference" in be.describe()
    assert all(callable(getattr(get_backend("cpu"), f)) for f in B.entry_points())


def test_cuda_device_defaults_to_triton(monkeypatch):
    """A CUDA device picks triton (the choice is made before any CUDA call)."""
    monkeypatch.delenv("ALEXNETC_BACKEND", raising=False)
    assert B.default_name(torch.device("cuda", 0)) == "triton"
    assert B.default_name("cpu") == "reference"


def test_name_and_environment_overrides(monkeypatch):
    monkeypatch.setenv("ALEXNETC_BACKEND", "reference")
    assert B.default_name("cuda") == "reference"
    monkeypatch.setenv("ALEXNETC_BACKEND", "bogus")
    with pytest.raises(ValueError, match="ALEXNETC_BACKEND"):
        get_backend("cpu")
    assert get_backend("cpu", "reference").name == "reference"  # the argument wins over the environment
    with pytest.raises(ValueError, match="unknown kernel backend"):
        get_backend("cpu", "cudnn")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="CUDA"):
        get_backend("cpu", "triton")


def test_triton_backend_assembles_every_function():
    """Here (no CUDA) via the interpreter, which conftest enables; on a GPU, compiled."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    be = get_backend(dev, "triton")
    assert be.name == "triton" and "triton" in be.describe()
    assert set(be.functions) == set(B.entry_points())
    from alexnetc.kernels import lrn, pool, tensor
    assert be.lrn is lrn.lrn and be.maxpool_backward is pool.maxpool_backward
    assert get_backend("cpu", "reference").concat is be.concat is tensor.concat  # one data-movement implementation


def test_backends_agree_on_a_small_layer_stack():
    """oracle: the reference backend on the same inputs; conv + relu + lrn + pool + fc + dropout + loss."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 11, device=dev)
    w = torch.randn(8, 3, 3, 3, device=dev) * 0.3
    fw = torch.randn(5, 8 * 3 * 3, device=dev) * 0.1
    lab = torch.tensor([1, 4], device=dev)
    outs = []
    for name in ("reference", "triton"):
        be = get_backend(dev, name)
        h = be.conv(x, w, None, stride=(2, 2), pad=(1, 1), num_group=1, out_size=(6, 6), act="relu")
        h, _ = be.lrn(h, size=5, k=2.0, alpha=1e-2 / 5, beta=0.75)
        h, _ = be.maxpool(h, kernel=(3, 3), stride=(2, 2), pad=(0, 0), out_size=(3, 3))
        h = be.dropout(be.flatten(h), p=0.5, seed=4, step=2)
        z = be.fc(h, fw, None, act="none")
        loss, probs = be.softmax_loss(z, lab)
        outs.append((h, z, loss, probs))
    # on a GPU the Triton conv may multiply in TF32 (tl.dot's default for fp32): 10-bit mantissas
    tol = 1e-5 if dev == "cpu" else 2e-2
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_package_import_is_light():
    """`import alexnetc.kernels` must not import triton (nor torch); get_backend('cpu') must not import triton
    (backend.py's import-time check of the Triton modules reads their source, it does not import them)."""
    code = ("import sys, alexnetc.kernels as k; assert 'triton' not in sys.modules and 'torch' not in sys.modules;"
            "k.get_backend('cpu'); assert 'triton' not in sys.modules, 'triton imported'")
    env = {k: v for k, v in __import__("os").environ.items() if k != "ALEXNETC_BACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_describe_line():
    assert B.describe("cpu", "reference").startswith("running on cpu with the reference backend")
