"""The reference backend's CPU convolutions write only inside their buffers, by glibc's own heap check.

Oracle: glibc's malloc checking (libc_malloc_debug.so with MALLOC_CHECK_=3: each heap block gets check
bytes past its end, and free() aborts the process when they were overwritten), in a fresh process that
runs the reference convolution entry points on the shapes where torch's bundled oneDNN writes past its
workspace: the weight gradient of a strided 1x1 convolution of channels-last maps with fewer channels
per group than oneDNN's channel block (16 with AVX-512, 8 with AVX2; oneDNN issue 6035, its "reduce to
unit stride" copy). Before kernels/reference/conv.py handed such kernels the strided cells at stride 1,
this process aborted or crashed on every run on the development machine; the corruption it leaves in the
heap is what ended one full test run under ALEXNETC_HOST_HEAP=keep in glibc's "corrupted size vs.
prev_size" at exit (the random specs of tests/runtime/execution/test_executor_properties.py draw such
layers). A control run overwrites one element past a tensor on purpose and must abort, so the check is
known to be on. And the stride-1 rewrite gives the strided weight gradient (float64 oracle).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnetc.kernels.reference import conv as rc

ROOT = Path(__file__).resolve().parents[2]
MALLOC_DEBUG = next((p for p in ("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0", "/usr/lib64/libc_malloc_debug.so.0",
                                 "/lib/aarch64-linux-gnu/libc_malloc_debug.so.0") if os.path.exists(p)), None)
needs_malloc_debug = pytest.mark.skipif(MALLOC_DEBUG is None, reason="needs glibc's libc_malloc_debug.so (glibc >= 2.34)")

# Every strided 1x1 layer the check covers: channels 2..15 (below either block), batch 3, even and odd maps.
STRIDED_1X1 = r"""
import torch
from alexnetc.kernels.reference import conv as rc
torch.set_num_threads(2)
torch.manual_seed(0)
for C in range(2, 16):
    for K, G, pad, H in ((3, 1, 0, 12), (8, 1, 0, 10), (4, 2, 0, 16), (8, 1, 1, 12)):
        if C % G:
            continue
        x = torch.randn(3, C, H, H).contiguous(memory_format=torch.channels_last)
        P = (H + 2 * pad - 1) // 2 + 1
        dy = torch.randn(3, K, P, P).contiguous(memory_format=torch.channels_last)
        for _ in range(3):
            rc.conv_backward_weight(dy, x, kernel=1, stride=2, pad=pad, num_group=G)
import gc; gc.collect()
print("done")
"""

# Random convolutions through all three reference entry points (channels-last, 2 threads): oneDNN picks
# its implementation by shape, so a future torch could bring another path that writes past its buffers.
RANDOM_CONVS = r"""
import math, random, sys, torch
from alexnetc.kernels.reference import conv as rc
torch.set_num_threads(2)
rnd = random.Random(int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    G = rnd.choice([1, 1, 2, 3]); C = G * rnd.randint(1, 20); K = G * rnd.randint(1, 20)
    R = rnd.choice([1, 1, 2, 3, 5]); s = rnd.choice([1, 2, 2, 3, 4]); p = rnd.randint(0, R // 2 + (R == 1))
    N, H, W = rnd.randint(1, 5), rnd.randint(R, 20), rnd.randint(R, 20)
    size = (lambda L: math.ceil((L + 2 * p - R) / s) + 1) if rnd.random() < 0.3 else (lambda L: (L + 2 * p - R) // s + 1)
    P, Q = size(H), size(W)
    if (P - 1) * s >= H + p or (Q - 1) * s >= W + p:   # no window may start past the map and its padding
        P, Q = (H + 2 * p - R) // s + 1, (W + 2 * p - R) // s + 1
    x = torch.randn(N, C, H, W).contiguous(memory_format=torch.channels_last)
    w = torch.randn(K, C // G, R, R)
    dy = torch.randn(N, K, P, Q).contiguous(memory_format=torch.channels_last)
    rc.conv(x, w, torch.randn(K), stride=s, pad=p, num_group=G, out_size=(P, Q), act="relu")
    rc.conv_backward_data(dy, w, in_hw=(H, W), stride=s, pad=p, num_group=G)
    rc.conv_backward_weight(dy, x, kernel=R, stride=s, pad=p, num_group=G)
print("done")
"""

# One float of zero bytes past the end of each of three tensors. glibc checks a block at free() by
# walking a chain of length bytes back to a magic byte after the requested size (the magic depends on
# the block's address); a zero length byte stops the walk as corrupt, unless the magic itself is zero
# (about one block in 256), hence three blocks. Writing 0x41 instead let the walk run on into the
# block's uninitialised data, where a byte equal to the magic passes it: 6 runs in 60 survived.
OVERFLOW = r"""
import ctypes, torch
for n in (1000, 1537, 4099):
    t = torch.empty(n)
    ctypes.memset(t.data_ptr() + 4 * n, 0, 4)
    del t
print("done")
"""


def _checked(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_PRELOAD": MALLOC_DEBUG, "MALLOC_CHECK_": "3"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


@needs_malloc_debug
def test_the_heap_check_catches_a_write_past_a_tensor():
    r = _checked(OVERFLOW)
    assert r.returncode != 0 and "done" not in r.stdout, (r.returncode, r.stderr[-500:])


@needs_malloc_debug
def test_strided_1x1_weight_gradients_leave_the_heap_intact():
    r = _checked(STRIDED_1X1)
    assert r.returncode == 0 and "done" in r.stdout, (
        f"exit {r.returncode}: a convolution wrote outside its heap blocks\n{r.stderr[-1500:]}")


@pytest.mark.slow
@needs_malloc_debug
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_convolutions_leave_the_heap_intact(seed):
    r = _checked(RANDOM_CONVS, str(seed), "300")
    assert r.returncode == 0 and "done" in r.stdout, (
        f"exit {r.returncode}: a convolution wrote outside its heap blocks\n{r.stderr[-1500:]}")


@pytest.mark.parametrize("C,K,G,stride,pad,H,W,P,Q", [
    (6, 3, 1, 2, 0, 12, 12, 6, 6),      # the even map: its last row and column are read by no window
    (4, 8, 2, 2, 1, 11, 9, 7, 6),       # padding, grouped, odd maps
    (3, 5, 1, 3, 0, 10, 7, 4, 3),       # stride 3
    (5, 4, 1, (2, 1), 0, 9, 6, 5, 6),   # a different stride per axis
    (2, 3, 1, 2, 0, 10, 10, 6, 6),      # ceil rounding: the last window reads only padding
])
def test_strided_1x1_weight_gradient_is_the_convolutions(C, K, G, stride, pad, H, W, P, Q):
    """oracle: torch.nn.grad.conv2d_weight in float64 on NCHW maps, with the strided kernel as given (a
    ceil-rounded window reads zeros past the map)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, C, H, W, generator=g)
    dy = torch.randn(3, K, P, Q, generator=g)
    got = rc.conv_backward_weight(dy.contiguous(memory_format=torch.channels_last),
                                  x.contiguous(memory_format=torch.channels_last),
                                  kernel=1, stride=stride, pad=pad, num_group=G)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    eh, ew = max(0, (P - 1) * sh + 1 - H - 2 * pad), max(0, (Q - 1) * sw + 1 - W - 2 * pad)
    xp = torch.nn.functional.pad(x.double(), (pad, pad + ew, pad, pad + eh))
    want = torch.nn.grad.conv2d_weight(xp, (K, C // G, 1, 1), dy.double(), stride=stride, groups=G)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
