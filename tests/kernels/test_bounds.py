"""Every Triton launcher reads and writes only the elements of the tensors it launches on.

Oracle: the launch's own tensor arguments (tests/kernels/interpreter_bounds.py): in Triton's interpreter
each address a load or store mask enables must be an element of one of them. A store one element past
a tensor's end writes into whatever follows it: on the CPU (the interpreter) malloc's bookkeeping when
the tensor lies in the heap, which is how a kernel bug would surface as glibc's "corrupted size vs.
prev_size" at exit under ALEXNETC_HOST_HEAP; on a GPU another allocation.

The check runs on every interpreted launch of the test suite (tests/conftest.py); this file makes sure
it can fail (a kernel with an off-by-one mask, a read before the start, a write into the neighbouring
view of the same storage) and drives each Triton entry point the op registry names through awkward
shapes: sizes no tile divides, channels-last and strided views into a larger buffer, ceil-rounded
windows, grouped and strided convolutions, and for the autotuned convolutions every tile the GPU
would try (the interpreter otherwise runs its one small tile).
"""
from __future__ import annotations

import math

import pytest
import torch

from alexnetc.kernels.backend import entry_points

from . import interpreter_bounds as ib
from .conftest import HAS_CUDA

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="the check instruments Triton's CPU interpreter")

if not HAS_CUDA:
    import triton
    import triton.language as tl

    @triton.jit
    def _copy_kernel(x_ptr, y_ptr, n, SLACK: tl.constexpr, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        v = tl.load(x_ptr + offs + SHIFT, mask=offs < n)
        tl.store(y_ptr + offs, v, mask=offs < n + SLACK)

    @triton.jit
    def _stride_copy_kernel(x_ptr, y_ptr, ROWS, ROW, YSN, BLOCK: tl.constexpr):
        # wrong on purpose: y's rows are YSN apart, but a row's second half goes one row further on
        i = tl.arange(0, BLOCK)
        r = i // ROW
        c = i % ROW
        v = tl.load(x_ptr + i, mask=i < ROWS * ROW)
        tl.store(y_ptr + r * YSN + c + ROW * (c >= ROW // 2), v, mask=i < ROWS * ROW)


@pytest.fixture(autouse=True)
def _installed():
    ib.install()


def _copy(x, y, slack=0, shift=0):
    _copy_kernel[(1,)](x, y, x.numel(), SLACK=slack, SHIFT=shift, BLOCK=triton.next_power_of_2(x.numel() + 1))


def test_the_check_passes_a_correct_kernel():
    x = torch.arange(10, dtype=torch.float32)
    y = torch.empty(10)
    _copy(x, y)
    assert torch.equal(x, y)
    assert ib.take_violations() == []


@pytest.mark.parametrize("slack,shift,access", [(1, 0, "store"), (0, -1, "load")])
def test_the_check_catches_an_access_outside_the_tensors(slack, shift, access):
    """An off-by-one store mask (one element past y's end) and a load one element before x's start are
    refused before they happen, naming the kernel, the access and the nearest argument."""
    buf = torch.full((30,), -7.0)
    x, y = buf[1:11], buf[15:25]           # in one buffer, so the stray access would land on real memory
    x.copy_(torch.arange(10.0))
    with pytest.raises(Exception, match="outside its tensor arguments"):
        _copy(x, y, slack, shift)
    found = ib.take_violations()
    assert len(found) == 1 and found[0].access == access and found[0].kernel == "_copy_kernel"
    assert ("past the end of argument 'y_ptr'" if access == "store" else "before the start of argument 'x_ptr'") \
        in str(found[0])
    assert buf[25].item() == -7.0 and buf[0].item() == -7.0   # nothing was written


def test_the_check_knows_a_strided_views_elements():
    """A write that stays inside a channel slice's extent but lands on a channel outside the slice (the
    neighbouring view of the same storage) is refused too."""
    base = torch.zeros(2, 4, 3)
    view = base[:, 1:3]                     # (2, 2, 3): rows 3..8 and 15..20 of the flat buffer
    flat = torch.arange(12.0)
    with pytest.raises(Exception, match="not an element"):
        _stride_copy_kernel[(1,)](flat, view, 2, 6, 12, BLOCK=16)
    assert len(ib.take_violations()) == 1



# -- every Triton entry point on awkward shapes ---------------------------------------------------------
def _rand(*shape, layout="nchw", seed=0):
    """A tensor of `shape`: NCHW, channels-last, or a channel slice of a wider buffer (a strided view
    with real memory on both sides)."""
    g = torch.Generator().manual_seed(seed)
    if layout == "slice":
        wide = torch.randn(shape[0], shape[1] + 3, *shape[2:], generator=g)
        return wide[:, 1:1 + shape[1]]
    t = torch.randn(*shape, generator=g)
    return t.contiguous(memory_format=torch.channels_last) if layout == "cl" else t


def _out(size, k, s, p):
    return math.ceil((size + 2 * p - k) / s) + 1        # ceil rounding: the last window hangs over


class _Sync:
    """One process's `sync`: the all-sum of one is the tensor itself."""
    world, rank, weight = 1, 0, 1.0

    def all_sum(self, t):
        return t


LAYOUTS = ["nchw", "cl", "slice"]
CONV_CASES = [  # (N, C, H, W, K, kernel, stride, pad, groups): flat (r, s, c) walk and the tap loop
    (2, 3, 13, 11, 10, 5, 4, 2, 1),
    (2, 6, 9, 7, 10, 3, 2, 1, 2),
    (1, 34, 6, 5, 18, 3, 1, 1, 2),
    (3, 17, 5, 6, 5, 1, 2, 0, 1),
]


def _conv_case(case, layout):
    N, C, H, W, K, k, s, p, G = case
    x = _rand(N, C, H, W, layout=layout)
    w = _rand(K, C // G, k, k, seed=1)
    b = _rand(K, seed=2)
    P, Q = _out(H, k, s, p), _out(W, k, s, p)
    dy = _rand(N, K, P, Q, layout=layout, seed=3)
    return x, w, b, dy, dict(stride=s, pad=p, num_group=G), (P, Q), k


def _conv_calls(mod, case, layout):
    x, w, b, dy, geo, out_size, k = _conv_case(case, layout)
    mod.conv(x, w, b, out_size=out_size, act="relu", **geo)
    mod.conv(x, w, None, out_size=out_size, act="none", **geo)
    mod.conv_backward_data(dy, w, in_hw=x.shape[2:], **geo)
    mod.conv_backward_weight(dy, x, kernel=k, **geo)


def _pool_calls(pool, layout):
    x = _rand(2, 5, 9, 8, layout=layout)
    for k, s, p in ((3, 2, 0), (3, 2, 1), (2, 2, 0)):
        out = (_out(9, k, s, p), _out(8, k, s, p))
        y, a = pool.maxpool(x, kernel=k, stride=s, pad=p, out_size=out)
        pool.maxpool_backward(_rand(*y.shape, layout=layout, seed=5), a,
                              in_hw=(9, 8), kernel=k, stride=s, pad=p)
        y = pool.avgpool(x, kernel=k, stride=s, pad=p, out_size=out)
        pool.avgpool_backward(_rand(*y.shape, layout=layout, seed=6), in_hw=(9, 8), kernel=k, stride=s, pad=p)
    y, a = pool.globalmaxpool(x)
    pool.globalmaxpool_backward(_rand(*y.shape, seed=7), a, in_hw=(9, 8))
    y = pool.globalavgpool(x)
    pool.globalavgpool_backward(_rand(*y.shape, seed=8), in_hw=(9, 8))


def _bn_calls(bn, layout, two_d=False):
    x = _rand(5, 19, seed=1) if two_d else _rand(3, 19, 5, 7, layout=layout)
    C = x.shape[1]
    scale, shift = _rand(C, seed=2), _rand(C, seed=3)
    rm, rv = torch.zeros(C), torch.ones(C)
    kw = dict(eps=1e-5, momentum=0.1, act="relu")
    y, mean, invstd, _, _ = bn.batchnorm(x, scale, shift, rm, rv, **kw)
    bn.batchnorm_eval(x, scale, shift, rm, rv, **kw)
    bn.batchnorm_sync(x, scale, shift, rm, rv, sync=_Sync(), **kw)
    dy = _rand(*x.shape, seed=4) if two_d else _rand(*x.shape, layout=layout, seed=4)
    bn.batchnorm_backward(dy, x, scale, mean, invstd)
    bn.batchnorm_backward_sync(dy, x, scale, mean, invstd, sync=_Sync())


def _activation_calls(layout):
    from alexnetc.kernels import activation

    x = _rand(3, 5, 7, 9, layout=layout)
    for act in ("relu", "tanh"):
        y = activation.act(x, act=act)
        activation.act_backward(_rand(*x.shape, layout=layout, seed=1), y, act=act)


def _lrn_calls(layout):
    from alexnetc.kernels import lrn

    x = _rand(2, 13, 5, 7, layout=layout)
    for size in (5, 3):
        y, scale = lrn.lrn(x, size=size, k=2.0, alpha=1e-4, beta=0.75)
        lrn.lrn_backward(_rand(*x.shape, layout=layout, seed=1), x, y, scale, size=size, k=2.0, alpha=1e-4, beta=0.75)


def _dropout_calls(layout):
    from alexnetc.kernels import dropout

    x = _rand(3, 5, 7, 9, layout=layout)
    dropout.dropout(x, p=0.5, seed=1, step=2, offset=7)
    dropout.dropout_backward(x, p=0.3, seed=1, step=2)


def _add_calls(layout):
    from alexnetc.kernels import elementwise

    xs = [_rand(3, 5, 7, 9, layout=layout, seed=i) for i in range(3)]
    elementwise.add(*xs[:2], act="relu")
    elementwise.add(*xs)
    elementwise.add(*[t.to(torch.bfloat16) for t in xs])


def _fc_calls(layout):
    from alexnetc.kernels import fc

    x = _rand(5, 23, seed=0) if layout == "nchw" else _rand(5, 30, seed=0)[:, 3:26]
    w, b, dy = _rand(7, 23, seed=1), _rand(7, seed=2), _rand(5, 7, seed=3)
    fc.fc(x, w, b, act="relu")
    fc.fc_backward_data(dy, w)
    fc.fc_backward_weight(dy, x)
    fc.bias_backward(dy)
    fc.bias_backward(_rand(2, 7, 3, 3, layout="cl" if layout == "cl" else "nchw"))


def _loss_calls(layout):
    from alexnetc.kernels import loss

    z = _rand(6, 11) if layout == "nchw" else _rand(6, 20)[:, 4:15]
    labels = torch.tensor([0, 10, 3, 5, 10, 1])
    _, prob = loss.softmax_loss(z, labels)
    loss.softmax_loss_backward(prob, labels, torch.tensor(0.5))


def _conv_all(layout):
    from alexnetc.kernels import conv

    for case in CONV_CASES:
        _conv_calls(conv, case, layout)


def _pool_all(layout):
    from alexnetc.kernels import pool

    _pool_calls(pool, layout)


def _bn_all(layout):
    from alexnetc.kernels import batchnorm

    _bn_calls(batchnorm, layout)
    if layout == "nchw":
        _bn_calls(batchnorm, layout, two_d=True)


# family -> the calls that drive its entry points (the registry's families; checked below)
FAMILY_CALLS = {"activation": _activation_calls, "conv": _conv_all, "fc": _fc_calls, "lrn": _lrn_calls,
                "batchnorm": _bn_all, "pool": _pool_all, "dropout": _dropout_calls, "elementwise": _add_calls,
                "loss": _loss_calls}


def _triton_families() -> set[str]:
    return {ep.family for ep in entry_points().values() if not ep.all_backends}


def test_every_triton_family_of_the_registry_is_driven():
    """oracle: the op registry's entry points with a Triton implementation, by family."""
    assert set(FAMILY_CALLS) == _triton_families()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", sorted(FAMILY_CALLS))
def test_entry_points_stay_inside_their_tensors(family, layout):
    """Every launch of the family's entry points on this layout: no violation recorded (each access is
    checked as it happens, and the autouse fixture fails the test on any record)."""
    launched = []
    real = ib._launch_extents

    def spy():
        got = real()
        if got is not None:
            launched.append(got[0])
        return got

    ib._launch_extents = spy
    try:
        FAMILY_CALLS[family](layout)
    finally:
        ib._launch_extents = real
    assert ib.take_violations() == []
    assert launched, f"no Triton launch was checked for {family}"


# -- the tiles a GPU would try ---------------------------------------------------------------------------
def _gpu_tiles() -> list[tuple[int, int, int]]:
    """(BLOCK_M, BLOCK_N, BLOCK_K) of every config the conv kernels carry on a GPU (kernels/conv.py)."""
    import ast
    from pathlib import Path

    src = (Path(__file__).resolve().parents[2] / "kernels" / "conv.py").read_text(encoding="utf-8")
    tiles = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_configs":
            for row in node.args[0].elts:
                bm, bn, bk = (ast.literal_eval(e) for e in row.elts[:3])
                tiles.add((bm, bn, bk))
    return sorted(tiles)


GPU_TILES = _gpu_tiles()


def test_gpu_tiles_were_found():
    assert len(GPU_TILES) >= 5 and all(min(t) >= 16 for t in GPU_TILES)


@pytest.mark.parametrize("tile", GPU_TILES, ids=lambda t: "x".join(map(str, t)))
def test_conv_kernels_stay_inside_their_tensors_at_every_gpu_tile(tile, monkeypatch):
    """The three autotuned conv kernels forced onto each GPU tile (one config, no pruning), on the
    shapes above: the masks must hold whatever the tile, not only at the interpreter's 32x16x16."""
    from alexnetc.kernels import conv

    cfg = triton.Config({"BLOCK_M": tile[0], "BLOCK_N": tile[1], "BLOCK_K": tile[2]}, num_warps=4, num_stages=1)
    for kernel in (conv._conv_fwd_kernel, conv._conv_bwd_data_kernel, conv._conv_bwd_weight_kernel):
        monkeypatch.setattr(kernel, "configs", [cfg])
        monkeypatch.setattr(kernel, "early_config_prune", None)
        monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(conv, "_CHUNK_ALIGN", max(t[2] for t in GPU_TILES))   # the GPU's split alignment
    for case in CONV_CASES:
        _conv_calls(conv, case, "cl")
    assert ib.take_violations() == []
