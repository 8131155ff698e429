"""The reference backend's native CPU kernels (kernels/reference/csrc/*.c through native.py): batch norm
forward and backward against the float64 formulas of kernels/reference/batchnorm.py, its running
statistics against the ATen formula (`_running`) bit for bit, the add against ATen bit for bit, and the
ATen fallback when there is no library (the same bits on any thread count: tests/kernels/test_batchnorm.py).

Tolerances: fp32 outputs vs the float64 oracle rtol 1e-5 / atol 1e-5 (per-channel sums of up to
100,352 terms kept in double); the add is exact (the same roundings in the same order as ATen's).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from alexnetc.kernels.reference import batchnorm as R
from alexnetc.kernels.reference import elementwise as E
from alexnetc.kernels.reference import native

pytestmark = pytest.mark.skipif(native.library() is None, reason="no native CPU kernels on this machine")

SHAPES = [(4, 3, 5, 7), (2, 1, 3, 3), (7, 64, 1, 1), (3, 16, 19, 23), (40, 24)]


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.contiguous()


def _inputs(shape, seed, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = _cl(torch.randn(shape, generator=g) * 3 + offset)
    dy = _cl(torch.randn(shape, generator=g))
    scale, shift = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    return x, dy, scale, shift, torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["none", "relu", "tanh"])
def test_batchnorm_forward_matches_the_float64_formulas(shape, act):
    x, _, scale, shift, rm, rv = _inputs(shape, 1)
    assert native.takes(x)
    got = R.batchnorm(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act=act)
    want = R.batchnorm(*(t.double() for t in (x, scale, shift, rm, rv)), eps=1e-5, momentum=0.1, act=act)
    for a, b in zip(got, want):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    assert got[0].stride() == x.stride()   # the output keeps the map's layout


def test_batchnorm_statistics_hold_when_the_mean_is_far_from_zero():
    """The shifted-data variance: a mean 10^4 times the spread, where E[x^2] - E[x]^2 in float loses it."""
    g = torch.Generator().manual_seed(3)
    x = _cl(torch.randn(16, 8, 12, 12, generator=g) * 0.01 + 100.0)
    ones, zeros = torch.ones(8), torch.zeros(8)
    _, mean, invstd, _, new_var = R.batchnorm(x, ones, zeros, zeros, ones, eps=1e-5, momentum=1.0, act="none")
    var = x.double().var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(invstd.double(), 1 / (var + 1e-5).sqrt(), rtol=1e-4, atol=0)
    torch.testing.assert_close(new_var.double(), x.double().var(dim=(0, 2, 3)), rtol=1e-4, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_backward_matches_the_float64_formulas(shape):
    x, dy, scale, shift, rm, rv = _inputs(shape, 2)
    _, mean, invstd, _, _ = R.batchnorm(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act="none")
    got = R.batchnorm_backward(dy, x, scale, mean, invstd)
    want = R.batchnorm_backward(dy.double(), x.double(), scale.double(), mean.double(), invstd.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    assert got[0].stride() == x.stride()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.01, 0.9, 1.0])
def test_batchnorm_running_statistics_are_atens_bit_for_bit(shape, momentum):
    """oracle: `_running`, the ATen expression the other paths use, on the kernel's own batch mean and
    variance: every product and sum rounded to fp32 in the same order (the running statistics are
    checkpointed and pinned by the training-step goldens)."""
    g = torch.Generator().manual_seed(3)
    c = shape[1]
    x = _cl(torch.randn(shape, generator=g) * 2 + 3)
    scale, shift = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)
    rm, rv = torch.randn(c, generator=g) * 7, torch.rand(c, generator=g) * 3 + 0.1
    count = x.numel() // c
    if count < 2:
        pytest.skip("one value per channel: the ATen path")
    _, mean, invstd, new_rm, new_rv = R.batchnorm(x, scale, shift, rm, rv, eps=1e-5, momentum=momentum, act="none")
    _, _, var, _ = _stats(x)
    want_rm, want_rv = R._running(rm, rv, mean, var, count, momentum)
    assert torch.equal(new_rm, want_rm) and torch.equal(new_rv, want_rv)


def _stats(x):
    """The native kernel's mean, var and invstd (what alx_bn_forward writes), through ctypes."""
    c = x.shape[1]
    m = x.numel() // c
    y = torch.empty_like(x)
    mean, var, invstd = (torch.empty(c) for _ in range(3))
    ones, zeros = torch.ones(c), torch.zeros(c)
    native.library().alx_bn_forward(x.data_ptr(), None, m, c, ones.data_ptr(), zeros.data_ptr(), 1e-5, 0, 1,
                                    y.data_ptr(), mean.data_ptr(), var.data_ptr(), invstd.data_ptr(), None, None,
                                    0.0, None, None)
    return y, mean, var, invstd


@pytest.mark.parametrize("act", ["none", "relu"])
@pytest.mark.parametrize("n", [2, 3])
def test_add_is_atens_sum_bit_for_bit(act, n):
    g = torch.Generator().manual_seed(6)
    xs = [_cl(torch.randn(5, 7, 9, 11, generator=g)) for _ in range(n)]
    xs[0][0, :4, 0, 0] = torch.tensor([float("nan"), -0.0, float("inf"), 0.0])   # NaN and -0.0 pass relu
    xs[1][0, 1, 0, 0] = -0.0
    want = xs[0] + xs[1]
    for t in xs[2:]:
        want += t
    want = torch.relu_(want) if act == "relu" else want
    got = E.add(*xs, act=act)
    assert torch.equal(got.nan_to_num(), want.nan_to_num()) and got.isnan().equal(want.isnan())
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    assert got.stride() == xs[0].stride()


def test_inputs_the_kernels_do_not_take_go_to_aten():
    x = torch.randn(2, 3, 4, 5)   # NCHW
    assert not native.takes(x)
    assert not native.takes(_cl(x).double())
    assert not native.takes(_cl(x)[:, :2])
    a, b = _cl(x), x.clone()      # two layouts: summed by ATen, still correct
    torch.testing.assert_close(E.add(a, b, act="none"), a + b, rtol=0, atol=0)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_off_switch_and_a_failed_build_fall_back_to_aten(tmp_path):
    """ALEXNETC_NATIVE=off, and a compiler that fails: the backend says so and runs on ATen (one warning
    for the failed build), with the same results as the float64 formulas."""
    code = ("import warnings, torch; warnings.simplefilter('always')\n"
            "from alexnetc.kernels import reference\n"
            "from alexnetc.kernels.reference import batchnorm as R, native\n"
            "x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)\n"
            "y = R.batchnorm(x, torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3), eps=1e-5,"
            " momentum=0.1, act='relu')[0]\n"
            "w = R.batchnorm(x.double(), torch.ones(3).double(), torch.zeros(3).double(), torch.zeros(3).double(),"
            " torch.ones(3).double(), eps=1e-5, momentum=0.1, act='relu')[0]\n"
            "assert native.library() is None and (y.double() - w).abs().max() < 1e-5\n"
            "print(reference.describe())\n")
    off = _run_python(code, ALEXNETC_NATIVE="off")
    assert off.returncode == 0, off.stderr
    assert "no native CPU kernels (ALEXNETC_NATIVE=off)" in off.stdout
    bad_cc = tmp_path / "cc"
    bad_cc.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo broken-cc 1.0 && exit 0\necho 'no, not today' >&2\nexit 1\n")
    bad_cc.chmod(0o755)
    broken = _run_python(code, CC=str(bad_cc), ALEXNETC_CACHE=str(tmp_path / "cache"))
    assert broken.returncode == 0, broken.stderr
    assert "build or load failed" in broken.stdout and "no, not today" in broken.stdout
    assert "RuntimeWarning" in broken.stderr


def test_the_library_is_cached_per_machine_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNETC_CACHE", str(tmp_path))
    path = native.library_path()
    assert path is not None and path.parent == tmp_path / "native"
    assert path.name.startswith("alexnetc-cpu-") and path.suffix == ".so"
