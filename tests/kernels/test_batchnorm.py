"""Batch norm kernels: the reference (kernels/reference/batchnorm.py) against ATen's own batch norm and
torch.autograd in float64, and the Triton kernels (kernels/batchnorm.py) against the reference in
float64 -- in the interpreter on small shapes without CUDA, compiled on real shapes with one. The fused
residual add (y = act(bn(x) + r), dz the residual's gradient) against torch's own float64 formula
(F.batch_norm) and autograd through it, the reference's residual entries not being the oracle here.

Tolerances: fp32 kernels vs the float64 oracle rtol 1e-5 / atol 1e-5 (reductions of up to a few
hundred thousand fp32 terms on the GPU: atol 1e-4 there); the reference in float64 vs ATen in float64
1e-10; fp16/bf16 inputs on the GPU 2e-2 (16-bit outputs).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.compiler.ops.activation import ACTIVATIONS, apply_act
from alexnetc.kernels import batchnorm as T
from alexnetc.kernels.reference import batchnorm as R

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ACTS = ACTIVATIONS   # every activation of the registry


def _layout(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "channels_last" and x.dim() == 4:
        return x.to(memory_format=torch.channels_last)
    if kind == "sliced":   # non-contiguous: every other channel (and a cropped width for maps)
        shape = list(x.shape)
        shape[1] *= 2
        if x.dim() == 4:
            shape[3] += 1
        big = torch.zeros(shape, dtype=x.dtype, device=x.device)
        if x.dim() == 4:
            big[:, ::2, :, 1:] = x
            return big[:, ::2, :, 1:]
        big[:, ::2] = x
        return big[:, ::2]
    return x


def _params(c: int, device=DEVICE, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [t.to(device, dtype) for t in (torch.randn(c, generator=g), torch.randn(c, generator=g),
                                          torch.randn(c, generator=g), torch.rand(c, generator=g) + 0.5)]


def _d(ts):
    return [t.double() for t in ts]


def test_reference_matches_aten_and_autograd_in_float64():
    """oracle: F.batch_norm (training and eval, running statistics updated by ATen) and torch.autograd."""
    for shape in [(4, 3, 5, 6), (9, 7), (1, 2, 3, 1)]:
        x = torch.randn(shape, dtype=torch.float64) * 3 + 1
        scale, shift, rm, rv = _d(_params(shape[1]))
        y, mean, invstd, nrm, nrv = R.batchnorm(x, scale, shift, rm, rv, eps=1e-3, momentum=0.3, act="none")
        rm2, rv2 = rm.clone(), rv.clone()
        xa, sa, ba = (t.clone().requires_grad_() for t in (x, scale, shift))
        ya = F.batch_norm(xa, rm2, rv2, sa, ba, True, 0.3, 1e-3)
        torch.testing.assert_close(y, ya, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(nrm, rm2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(nrv, rv2, rtol=1e-12, atol=1e-12)
        assert torch.equal(rm, _d(_params(shape[1]))[2])           # inputs untouched
        dy = torch.randn(shape, dtype=torch.float64)
        ya.backward(dy)
        dx, dscale, dshift = R.batchnorm_backward(dy, x, scale, mean, invstd)
        for a, b in ((dx, xa.grad), (dscale, sa.grad), (dshift, ba.grad)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        ye = R.batchnorm_eval(x, scale, shift, rm, rv, eps=1e-3, momentum=0.3, act="tanh")
        torch.testing.assert_close(ye, torch.tanh(F.batch_norm(x, rm, rv, scale, shift, False, 0.3, 1e-3)))


@pytest.mark.parametrize("act", ACTS[1:])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reference_backward_takes_the_fused_activation(act, layout):
    """oracle: torch.autograd through act(F.batch_norm(x)) in float64; the fp32 path (the C kernel for relu
    on channels-last maps, else act_backward then ATen's) against the float64 one, rtol/atol 1e-5."""
    x = _layout(torch.randn(6, 5, 7, 4, dtype=torch.float64) * 2 + 1, layout)
    scale, shift, rm, rv = _d(_params(5))
    y, mean, invstd, _, _ = R.batchnorm(x, scale, shift, rm, rv, eps=1e-3, momentum=0.3, act=act)
    xa, sa, ba = (t.clone().requires_grad_() for t in (x, scale, shift))
    ya = apply_act(F.batch_norm(xa, rm.clone(), rv.clone(), sa, ba, True, 0.3, 1e-3), act)
    dy = _layout(torch.randn(x.shape, dtype=torch.float64), layout)
    ya.backward(dy)
    got = R.batchnorm_backward(dy, x, scale, mean, invstd, y, act=act)
    for a, b in zip(got, (xa.grad, sa.grad, ba.grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    f32 = R.batchnorm_backward(dy.float(), x.float(), scale.float(), mean.float(), invstd.float(), y.float(), act=act)
    for a, b in zip(f32, got):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ACTS[1:])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (9, 7)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_applies_every_activation(act, shape, dtype):
    """oracle: the descriptor's eager rule on the reference's own output without an activation, training
    and evaluation, on the float64 formulas and (float32, maps) ATen's fused kernels."""
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).to(dtype)
    p = [t.to(dtype) for t in _d(_params(shape[1]))]
    for fn in (R.batchnorm, R.batchnorm_eval):
        plain = fn(x, *p, eps=1e-3, momentum=0.3, act="none")
        fused = fn(x, *p, eps=1e-3, momentum=0.3, act=act)
        plain, fused = (plain, fused) if fn is R.batchnorm_eval else (plain[0], fused[0])
        torch.testing.assert_close(fused, apply_act(plain, act), rtol=1e-6, atol=1e-7)


def _check(x, act, eps=1e-5, momentum=0.1, rtol=1e-5, atol=1e-5):
    c = x.shape[1]
    scale, shift, rm, rv = _params(c, x.device)
    before = rm.clone()
    out = T.batchnorm(x, scale, shift, rm, rv, eps=eps, momentum=momentum, act=act)
    ref = R.batchnorm(x.double(), *_d((scale, shift, rm, rv)), eps=eps, momentum=momentum, act=act)
    assert out[0].shape == x.shape and out[0].dtype == x.dtype
    assert all(t.dtype == torch.float32 and t.shape == (c,) for t in out[1:])
    assert torch.equal(rm, before)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol)
    ye = T.batchnorm_eval(x, scale, shift, rm, rv, eps=eps, momentum=momentum, act=act)
    torch.testing.assert_close(ye.double(), R.batchnorm_eval(x.double(), *_d((scale, shift, rm, rv)), eps=eps,
                                                             momentum=momentum, act=act), rtol=rtol, atol=atol)
    dy = _layout(torch.randn(x.shape, device=x.device).to(x.dtype), "contiguous")
    mean, invstd = ref[1].float(), ref[2].float()
    dx, dscale, dshift = T.batchnorm_backward(dy, x, scale, mean, invstd)
    rdx, rdscale, rdshift = R.batchnorm_backward(dy.double(), x.double(), scale.double(), mean.double(),
                                                 invstd.double())
    assert dx.shape == x.shape and dx.dtype == x.dtype
    for a, b in ((dx, rdx), (dscale, rdscale), (dshift, rdshift)):
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol * max(1.0, float(b.abs().max())))
    if act != "none":   # the backward with the activation fused in, from the forward's output
        got = T.batchnorm_backward(dy, x, scale, mean, invstd, out[0], act=act)
        want = R.batchnorm_backward(dy.double(), x.double(), scale.double(), mean.double(), invstd.double(),
                                    out[0].double(), act=act)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol * max(1.0, float(b.abs().max())))
    return out[0]


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 20), h=st.integers(1, 5), w=st.integers(1, 5),
       act=st.sampled_from(ACTS), layout=st.sampled_from(["contiguous", "channels_last", "sliced"]))
def test_maps_match_reference(n, c, h, w, act, layout):
    """oracle: reference batchnorm / batchnorm_eval / batchnorm_backward in float64, (N, C, H, W)."""
    if n * h * w == 1:
        n = 2
    _check(_layout(torch.randn(n, c, h, w, device=DEVICE) * 3 + 1, layout), act)


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 40), c=st.integers(1, 40), act=st.sampled_from(ACTS),
       layout=st.sampled_from(["contiguous", "sliced"]))
def test_features_match_reference(n, c, act, layout):
    """oracle: the same, on (N, C) fc outputs (statistics per unit over the batch)."""
    _check(_layout(torch.randn(n, c, device=DEVICE) * 2 - 1, layout), act)


@pytest.mark.parametrize("programs", [T.PROGRAMS, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_reduction_spans_several_chunks_and_layout_is_kept(layout, programs, monkeypatch):
    """oracle: reference in float64; 3*24*24 = 1728 values per channel in several chunks (one tile
    each, or with few programs several tiles per chunk and a ragged last one), with a large mean (the
    two-pass variance must not cancel)."""
    monkeypatch.setattr(T, "PROGRAMS", programs)
    x = _layout(torch.randn(3, 5, 24, 24, device=DEVICE) + 50, layout)
    br, _, chunk, s, _ = T._split(x)
    assert s > 1 and (chunk > br) == (programs == 3)
    y = _check(x, "relu")
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)


def test_one_value_per_channel_uses_the_biased_variance():
    """oracle: the contract (M = 1: running_var moves towards 0, the biased variance, not NaN)."""
    x = torch.randn(1, 3, 1, 1, device=DEVICE)
    scale, shift, rm, rv = _params(3, x.device)
    y, mean, invstd, nrm, nrv = T.batchnorm(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act="none")
    torch.testing.assert_close(nrv, 0.9 * rv)
    torch.testing.assert_close(y, shift.reshape(1, 3, 1, 1).expand_as(y))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(128, 64, 56, 56), (128, 256, 14, 14), (256, 4096)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_real_shapes_on_the_gpu(shape, layout):
    """oracle: reference in float64 on ResNet-like shapes (compiled kernels)."""
    _check(_layout(torch.randn(shape, device="cuda") * 2 + 0.5, layout), "relu", rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_the_gpu(dtype):
    """oracle: reference in float64 on the same 16-bit inputs; tolerance 2e-2 (16-bit outputs)."""
    _check((torch.randn(32, 64, 28, 28, device="cuda") * 2).to(dtype), "relu", rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("shape", [(8, 5, 7, 6), (16, 9), (3, 4, 1, 1)])
def test_reference_fp32_fused_path_matches_its_float64_formula(shape):
    """oracle: the reference's own float64 path (every step written out, itself checked against ATen and
    autograd above): its fp32 path (ATen's fused kernels) agrees to fp32 rounding, both modes and the
    backward, running statistics included."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g) * 2 + 0.5
    dy = torch.randn(shape, generator=g)
    scale, shift, rm, rv = _params(shape[1], device="cpu")
    for act in ("none", "relu"):
        out = R.batchnorm(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act=act)
        ref = R.batchnorm(x.double(), *_d((scale, shift, rm, rv)), eps=1e-5, momentum=0.1, act=act)
        for a, b in zip(out, ref):
            assert a.dtype == torch.float32
            torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
        ye = R.batchnorm_eval(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act=act)
        torch.testing.assert_close(ye.double(), R.batchnorm_eval(x.double(), *_d((scale, shift, rm, rv)), eps=1e-5,
                                                                 momentum=0.1, act=act), rtol=1e-5, atol=1e-5)
    mean, invstd = ref[1], ref[2]
    got = R.batchnorm_backward(dy, x, scale, mean.float(), invstd.float())
    want = R.batchnorm_backward(dy.double(), x.double(), scale.double(), mean, invstd)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def test_reference_fp32_does_not_depend_on_the_thread_count():
    """Data-parallel runs give each process its own thread count; the statistics must not change with it
    (oracle: the same call on one thread). NCHW maps (ATen's kernels), channels-last maps and (N, C)
    features (the native C kernels: fixed row blocks summed apart and added in order)."""
    g = torch.Generator().manual_seed(4)
    threads = torch.get_num_threads()
    for shape, layout in [((32, 16, 14, 14), "contiguous"), ((8, 16, 30, 30), "channels_last"), ((64, 24), "contiguous")]:
        x, dy = (_layout(torch.randn(shape, generator=g), layout) for _ in range(2))
        scale, shift, rm, rv = _params(shape[1], device="cpu")
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            try:
                y, mean, invstd, nrm, nrv = R.batchnorm(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act="relu")
                runs.append((y, mean, invstd, nrm, nrv, *R.batchnorm_backward(dy, x, scale, mean, invstd)))
            finally:
                torch.set_num_threads(threads)
        for other in runs[1:]:
            assert all(torch.equal(a, b) for a, b in zip(runs[0], other)), (shape, layout)


# -- synchronised across processes -----------------------------------------------------------------------
class _Replay:
    """A shard's `sync` in one process: each all_sum returns the global total every process would get
    (worked out from the whole batch in float64 by the test), in the order the kernels ask for them."""

    def __init__(self, totals, weight: float, rank: int, world: int):
        self.totals, self.weight, self.calls = list(totals), weight, 0
        self.rank, self.world = rank, world

    def all_sum(self, t):
        want = self.totals[self.calls]
        assert t.shape == want.shape, (self.calls, t.shape, want.shape)
        self.calls += 1
        return t.copy_(want)


@pytest.mark.parametrize("mod", [R, T], ids=["reference", "triton"])
@pytest.mark.parametrize("shape,offset", [((6, 5, 4, 3), 1.0), ((7, 9), 1.0), ((6, 5, 4, 3), 1000.0)])
def test_sync_across_shards_equals_one_batch(mod, shape, offset):
    """oracle: the reference's unsynchronised kernels on the whole batch in float64, and what the
    all_sums of all processes return (the table of every shard's mean, sum of squared deviations and
    count; the sums of dz and dz·x̂ of the whole batch's gradient and the count), fed to each shard.
    The batch is cut into shards of 4 and the rest (weights n/N); each shard's
    synchronised forward gives the whole batch's output rows, statistics and running statistics; its
    backward, given its own mean loss's gradient (the whole batch's times N/n), gives the whole batch's
    dx rows times N/n, and the shards' dscale/dshift weighted by n/N add up to the whole batch's.
    Each shard's kernels put their own contribution in before every all_sum (checked: the local sums
    each all_sum receives add up to the totals). fp32: 1e-5; with the data 1000 standard deviations
    away from the running mean (offset 1000: the first steps of a layer whose inputs are not centred)
    1e-4, which the inputs' own fp32 rounding needs, while fp32 sums of x and x² around a running mean
    of 0 get this batch's variance 2.2e-2 wrong (measured) from cancellation."""
    g = torch.Generator().manual_seed(5)
    f64 = dict(generator=g, dtype=torch.float64)
    x = torch.randn(shape, **f64) * 3 + offset
    c = shape[1]
    scale, shift = torch.rand(c, **f64) + 0.5, torch.randn(c, **f64)
    rm, rv = torch.randn(c, **f64) * 0.1, torch.rand(c, **f64) + 0.5
    dz = torch.randn(shape, **f64)
    kw = dict(eps=1e-5, momentum=0.1, act="none")
    y, mean, invstd, new_rm, new_rv = R.batchnorm(x, scale, shift, rm, rv, **kw)
    dx, dscale, dshift = R.batchnorm_backward(dz, x, scale, mean, invstd)
    dims = [0, *range(2, x.dim())]

    def bc(t):
        return t.reshape(1, -1, *([1] * (x.dim() - 2)))
    count = torch.tensor([float(x.numel() // c)], dtype=torch.float64)
    xhat = (x - bc(mean)) * bc(invstd)
    N, dt, dev = shape[0], torch.float32, DEVICE
    cuts = [(0, 4), (4, N)]

    def row(part):   # a shard's mean, sum of squared deviations and count, per channel
        m = part.mean(dims)
        return torch.cat([m, ((part - bc(m)) ** 2).sum(dims), torch.tensor([float(part.numel() // c)],
                                                                            dtype=torch.float64)])
    totals = [torch.stack([row(x[lo:hi]) for lo, hi in cuts]),
              torch.cat([dz.sum(dims), (dz * xhat).sum(dims), count])]
    close = dict(rtol=1e-5, atol=1e-5) if offset == 1.0 else dict(rtol=1e-4, atol=1e-4)
    sent = []
    for rank, (lo, hi) in enumerate(cuts):
        w = (hi - lo) / N
        sync = _Replay([t.to(dev, dt) for t in totals], w, rank, len(cuts))
        real = sync.all_sum
        sync.all_sum = lambda t, real=real: (sent.append(t.detach().double().cpu().clone()), real(t))[1]
        ins = [t.to(dev, dt) for t in (x[lo:hi], scale, shift, rm, rv)]
        out = mod.batchnorm_sync(*ins, sync=sync, **kw)
        back = mod.batchnorm_backward_sync((dz[lo:hi] / w).to(dev, dt), ins[0], ins[1], out[1], out[2], sync=sync)
        assert sync.calls == 2
        torch.testing.assert_close(out[0].double().cpu(), y[lo:hi], **close)
        for got, want in zip(out[1:], (mean, invstd, new_rm, new_rv)):
            torch.testing.assert_close(got.double().cpu(), want, **close)
        torch.testing.assert_close(back[0].double().cpu() * w, dx[lo:hi], **close)
        sent.append((w, back[1].double().cpu(), back[2].double().cpu()))
    contributions = [t for t in sent if isinstance(t, torch.Tensor)]
    (w0, dsc0, dsh0), (w1, dsc1, dsh1) = [t for t in sent if isinstance(t, tuple)]
    torch.testing.assert_close(w0 * dsc0 + w1 * dsc1, dscale, **close)
    torch.testing.assert_close(w0 * dsh0 + w1 * dsh1, dshift, **close)
    # what each shard put in: the first all_sum its local sums, the second its weighted ones
    torch.testing.assert_close(contributions[0] + contributions[2], totals[0], **close)
    torch.testing.assert_close(contributions[1] + contributions[3], totals[1], **close)


class _Alone:
    """`sync` of a single process: all_sum leaves the tensor as it is."""

    weight, rank, world = 1.0, 0, 1

    def all_sum(self, t):
        return t


@pytest.mark.parametrize("mod", [R, T], ids=["reference", "triton"])
@pytest.mark.parametrize("act", ACTS[1:])
def test_sync_backward_takes_the_fused_activation(mod, act):
    """oracle: the same entry given dz = act'(dy, y) (the reference's act_backward in float64) and no
    activation; one process, so the sums are its own."""
    from alexnetc.kernels.reference.activation import act_backward

    x = torch.randn(4, 3, 5, 5, device=DEVICE) * 2 + 1
    scale, shift, rm, rv = _params(3, x.device)
    y, mean, invstd, _, _ = mod.batchnorm_sync(x, scale, shift, rm, rv, eps=1e-5, momentum=0.1, act=act, sync=_Alone())
    dy = torch.randn(x.shape, device=DEVICE)
    got = mod.batchnorm_backward_sync(dy, x, scale, mean, invstd, y, act=act, sync=_Alone())
    dz = act_backward(dy.double().cpu(), y.double().cpu(), act=act).to(DEVICE, torch.float32)
    want = mod.batchnorm_backward_sync(dz, x, scale, mean, invstd, sync=_Alone())
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# -- a fused residual add: y = act(bn(x) + residual), ResNet's bn -> add(shortcut) -> act as one node --------
RES_ACTS = ("none", "relu", "tanh")
# (shape, x's layout, the residual's layout): the residual need not share x's layout
RES_CASES = [((3, 5, 4, 6), "contiguous", "contiguous"), ((3, 5, 4, 6), "channels_last", "channels_last"),
             ((3, 5, 4, 6), "channels_last", "contiguous"), ((3, 5, 4, 6), "contiguous", "sliced"),
             ((9, 7), "contiguous", "contiguous"), ((9, 7), "sliced", "sliced")]
RES_IDS = [f"{len(s)}d-{a}-{b}" for s, a, b in RES_CASES]


def _res_inputs(shape, layout, res_layout, dtype=torch.float32, seed=6):
    g = torch.Generator().manual_seed(seed)
    x = _layout((torch.randn(shape, generator=g) * 2 + 1).to(DEVICE, dtype), layout)
    r = _layout((torch.randn(shape, generator=g) * 1.5).to(DEVICE, dtype), res_layout)
    dy = _layout(torch.randn(shape, generator=g).to(DEVICE, dtype), layout)
    return x, r, dy


def _res_oracle(x, r, p, act, training, dy=None, eps=1e-5, momentum=0.1):
    """float64: act(F.batch_norm(x) + r), the running statistics ATen updates, and with dy the gradients
    of x, scale, shift and r by autograd."""
    x, r = x.double().cpu().requires_grad_(), r.double().cpu().requires_grad_()
    scale, shift, rm, rv = (t.double().cpu() for t in p)
    scale, shift = scale.requires_grad_(), shift.requires_grad_()
    y = apply_act(F.batch_norm(x, rm, rv, scale, shift, training, momentum, eps) + r, act)
    if dy is None:
        return y.detach(), rm, rv
    y.backward(dy.double().cpu())
    return x.grad, scale.grad, shift.grad, r.grad


def _close(a, b, rtol=1e-5, atol=1e-5):
    """fp32 against the float64 oracle: rtol/atol 1e-5, atol relative to the oracle's largest value."""
    b = b.double().cpu()
    torch.testing.assert_close(a.double().cpu(), b, rtol=rtol, atol=atol * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("act", RES_ACTS)
@pytest.mark.parametrize("shape,layout,res_layout", RES_CASES, ids=RES_IDS)
def test_residual_forward_matches_float64(shape, layout, res_layout, act):
    """oracle: act(F.batch_norm(x) + r) in float64, training (statistics and running statistics from
    ATen's update) and evaluation; fp32 rtol/atol 1e-5. The statistics are x's alone: bit-identical to
    the call without a residual; y keeps x's layout whatever the residual's."""
    x, r, _ = _res_inputs(shape, layout, res_layout)
    p = _params(shape[1])
    out = T.batchnorm(x, *p, r, eps=1e-5, momentum=0.1, act=act)
    y64, rm64, rv64 = _res_oracle(x, r, p, act, True)
    _close(out[0], y64)
    _close(out[3], rm64)
    _close(out[4], rv64)
    assert out[0].dtype == x.dtype and out[0].stride() == T.batchnorm(x, *p, eps=1e-5, momentum=0.1, act=act)[0].stride()
    plain = T.batchnorm(x, *p, eps=1e-5, momentum=0.1, act=act)
    assert all(torch.equal(a, b) for a, b in zip(out[1:], plain[1:]))
    ye = T.batchnorm_eval(x, *p, r, eps=1e-5, momentum=0.1, act=act)
    _close(ye, _res_oracle(x, r, p, act, False)[0])


@pytest.mark.parametrize("act", RES_ACTS)
@pytest.mark.parametrize("shape,layout,res_layout", RES_CASES, ids=RES_IDS)
def test_residual_backward_matches_float64_autograd(shape, layout, res_layout, act):
    """oracle: torch.autograd through act(F.batch_norm(x) + r) in float64: dx, dscale, dshift and
    dz = the gradient of r; fp32 rtol 1e-5, atol 1e-5 times the oracle's largest value. dx, dscale,
    dshift agree with residual=False's (which returns three outputs) to fp32 rounding (the dx pass
    reads the dz the reduction wrote instead of taking act' again); without an activation dz is the
    dy tensor itself; dz keeps dy's layout and dtype."""
    x, r, dy = _res_inputs(shape, layout, res_layout)
    p = _params(shape[1])
    y, mean, invstd, _, _ = T.batchnorm(x, *p, r, eps=1e-5, momentum=0.1, act=act)
    got = T.batchnorm_backward(dy, x, p[0], mean, invstd, y, act=act, residual=True)
    assert len(got) == 4
    for a, b in zip(got, _res_oracle(x, r, p, act, True, dy)):
        _close(a, b)
    dz = got[3]
    assert dz.dtype == dy.dtype and dz.shape == dy.shape
    if act == "none":
        assert dz is dy
    else:
        assert dz.stride() == T._out_like(T._ncp(dy)).stride()
    plain = T.batchnorm_backward(dy, x, p[0], mean, invstd, y, act=act)
    assert len(plain) == 3
    for a, b in zip(got, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", RES_ACTS)
@pytest.mark.parametrize("shape,layout,res_layout", [RES_CASES[2], RES_CASES[4]], ids=[RES_IDS[2], RES_IDS[4]])
def test_residual_sync_entries_equal_the_plain_ones_in_one_process(shape, layout, res_layout, act):
    """oracle: batchnorm / batchnorm_backward (checked against float64 above) on the same inputs; one
    process (`_Alone`), so the global statistics and sums are this shard's: rtol/atol 1e-6."""
    x, r, dy = _res_inputs(shape, layout, res_layout)
    p = _params(shape[1])
    kw = dict(eps=1e-5, momentum=0.1, act=act)
    want = T.batchnorm(x, *p, r, **kw)
    got = T.batchnorm_sync(x, *p, r, sync=_Alone(), **kw)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    y, mean, invstd = want[:3]
    want_b = T.batchnorm_backward(dy, x, p[0], mean, invstd, y, act=act, residual=True)
    got_b = T.batchnorm_backward_sync(dy, x, p[0], mean, invstd, y, act=act, residual=True, sync=_Alone())
    assert len(got_b) == 4 and (got_b[3] is dy) == (act == "none")
    for a, b in zip(got_b, want_b):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert len(T.batchnorm_backward_sync(dy, x, p[0], mean, invstd, y, act=act, sync=_Alone())) == 3


def test_residual_of_another_shape_is_a_clear_error():
    x, r, _ = _res_inputs((2, 3, 4, 4), "contiguous", "contiguous")
    with pytest.raises(ValueError, match=r"residual of shape \(2, 3, 4, 3\) does not match the input's \(2, 3, 4, 4\)"):
        T.batchnorm(x, *_params(3), r[..., :3], eps=1e-5, momentum=0.1, act="relu")
    with pytest.raises(ValueError, match="act='relu' needs the forward's output y"):
        T.batchnorm_backward(x, x, *_params(3)[:3], act="relu", residual=True)


@pytest.mark.parametrize("act", RES_ACTS[1:])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_residual_in_bfloat16(layout, act):
    """oracle: the float64 formulas and autograd above on the same bf16 values; y, dx and dz are bf16
    (the sum is taken in fp32 and rounded once, after the activation), so rtol/atol 2e-2 (atol times
    the oracle's largest value), as the 16-bit GPU tests."""
    x, r, dy = _res_inputs((4, 6, 5, 3), layout, layout, dtype=torch.bfloat16)
    p = _params(6)
    y, mean, invstd, _, _ = T.batchnorm(x, *p, r, eps=1e-5, momentum=0.1, act=act)
    assert y.dtype == torch.bfloat16
    _close(y, _res_oracle(x, r, p, act, True)[0], rtol=2e-2, atol=2e-2)
    got = T.batchnorm_backward(dy, x, p[0], mean, invstd, y, act=act, residual=True)
    assert [t.dtype for t in got] == [torch.bfloat16, torch.float32, torch.float32, torch.bfloat16]
    for a, b in zip(got, _res_oracle(x, r, p, act, True, dy)):
        _close(a, b, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_residual_on_real_shapes_on_the_gpu(layout, dtype):
    """oracle: the float64 formulas and autograd above (compiled kernels, a ResNet stage's shape); fp32
    rtol/atol 1e-4 (sums of 50K fp32 terms), bf16 2e-2."""
    x, r, dy = _res_inputs((64, 64, 28, 28), layout, layout, dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    p = _params(64)
    y, mean, invstd, _, _ = T.batchnorm(x, *p, r, eps=1e-5, momentum=0.1, act="relu")
    _close(y, _res_oracle(x, r, p, "relu", True)[0], **tol)
    got = T.batchnorm_backward(dy, x, p[0], mean, invstd, y, act="relu", residual=True)
    for a, b in zip(got, _res_oracle(x, r, p, "relu", True, dy)):
        _close(a, b, **tol)
