"""Triton convolution: `conv`, `conv_backward_data` and `conv_backward_weight`, each an implicit GEMM.

All three read and write channels-last (NHWC) memory, channels innermost, so a tile's loads coalesce
along channels; the launchers accept NCHW tensors of any strides, convert them to channels-last when
they are not already, and return tensors of the logical NCHW shape in channels-last memory format.
Channel groups (`num_group`: the groups of one op, not a spec's towers) are a grid axis
(program_id(2)); every GEMM below is per group.

  forward          y[m, k]  = sum_{(r,s,c)} x[n, oh*sh-ph+r, ow*sw-pw+s, c] * w[k, c, r, s]
                   M = N*P*Q rows, K_out/G columns, C_in/G*R*S reduction (G = num_group). Bias
                   and the activation run in the epilogue on the fp32 accumulator. `out_size` is
                   given: any tap outside the input reads zero, which covers floor, ceil and exact
                   rounding.
  backward data    dx[n, h, w, c] = sum over the (r, s, k) whose output position (h+ph-r)/sh is an
                   integer inside [0, P) (same along w). Input pixels are split into sh*sw phases by
                   (h mod sh, w mod sw): within a phase the valid r are r0, r0+sh, ... and the output
                   row is a plain affine function of the pixel row, so each phase is a dense GEMM with
                   no wasted taps (stride 4 would otherwise waste 15/16 of the work).
  backward weight  dw[k, (r,s,c)] = sum_m dy[m, k] * x_col[m, (r,s,c)], a reduction over N*P*Q.
                   It is split ("split-K") across program_id(1) into fp32 partials that are summed
                   afterwards in a fixed order: deterministic (no atomics) and enough programs to
                   fill the GPU even for conv1, whose output is only 96 x 363.

Precision: operands are loaded in the input dtype (fp32, fp16, bf16) and tl.dot accumulates in fp32.
For fp32 inputs tl.dot runs in TF32 when `torch.backends.cudnn.allow_tf32` is set (PyTorch's default
for convolutions, so this matches what cuDNN would do); clear that flag for IEEE fp32 products.
Outputs have the input's dtype, except the weight gradient, which is fp32.

Tiles: `@triton.autotune` over a handful of H100-sized configs; under TRITON_INTERPRET=1 one small
fixed config (every tl.dot dimension >= 16, as a GPU requires) so CPU tests do not benchmark.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .activation import act_code, apply_act
from .shared import pair

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Forward only: below this many channels per group the (r, s, c) reduction is walked as one flat
# index (div/mod per column) instead of "for each tap, for each channel block"; otherwise conv1's 3
# channels would fill 3/16 of every BLOCK_K.
FLAT_K_MAX_CHANNELS = 16

# Backward weight: aim for this many programs (tiles x splits) per SM, with at least MIN_SPLIT_ROWS
# rows of N*P*Q per split so the partial buffers and their sum stay cheap next to the GEMM itself.
SPLIT_PROGRAMS_PER_SM = 4
MIN_SPLIT_ROWS = 16 if _INTERPRET else 1024
MAX_PARTIAL_BYTES = 256 << 20


def _configs(gpu_configs):
    if _INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=wp, num_stages=st)
            for bm, bn, bk, wp, st in gpu_configs]


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages). Forward/backward-data: M = N*P*Q is large (21632 to
# 387200 at batch 128) and the column count small (48..384), so tall tiles; fp32 128x128x32 at 3
# stages is 96 KiB of shared memory, well inside an H100's 227 KiB.
# Every config here compiles for sm_80 and sm_90a without spilling a register at the shipped specs'
# shapes but those listed in kernels/aot/accepted.py (benchmarks/results/aot-compile-*.json,
# tests/kernels/test_aot_compile.py): 128-row tiles get 8 warps, as at 4 the gathered operand's
# addresses and the accumulator do not fit in 255 registers.
_GEMM_CONFIGS = _configs([
    (128, 128, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (128, 128, 64, 8, 3),
    (64, 64, 64, 4, 3),
    (256, 64, 32, 8, 3),
    (128, 64, 64, 8, 3),
    (128, 128, 16, 8, 4),  # conv2: 48 channels per group are exactly 3 x 16
])
# fp32 products in IEEE precision (TF32 switched off) run on the FMA units, not the tensor cores: the
# accumulator and both operand fragments live in registers, and the tensor-core tiles above spill
# (255 registers at 128x128, hundreds of bytes at BLOCK_K=64). At most 32 accumulators per thread.
_GEMM_IEEE_CONFIGS = _configs([
    (64, 64, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (64, 64, 32, 4, 2),
])
# The forward's flat (r, s, c) walk (FLAT_K: at most 16 channels per group, the first layers) decomposes
# every column and keeps a BLOCK_M x BLOCK_K grid of addresses and masks in registers: its tiles are
# smaller (the larger ones above spill there, at every precision). Those layers are a few % of the FLOPs.
_FLAT_K_CONFIGS = _configs([
    (64, 128, 32, 8, 3),
    (128, 64, 32, 8, 3),
    (64, 64, 32, 4, 3),
    (64, 64, 16, 4, 4),
])
# Backward weight: BLOCK_M over output channels, BLOCK_N over C*R*S, BLOCK_K over the N*P*Q reduction.
_WGRAD_CONFIGS = _configs([
    (64, 64, 64, 8, 3),
    (128, 64, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (128, 128, 32, 8, 3),
])
_WGRAD_IEEE_CONFIGS = _configs([
    (64, 64, 32, 4, 3),
    (128, 64, 32, 8, 3),
])


def _by_precision(ieee_configs, flat_configs=None):
    """`prune_configs_by` of an autotuned conv kernel: the IEEE-precision tiles when PREC is "ieee", else
    (forward) the flat walk's tiles when FLAT_K."""
    def prune(configs, named_args, **kwargs):
        def arg(name):
            return kwargs.get(name, named_args.get(name))
        if arg("PREC") == "ieee":
            return ieee_configs
        return flat_configs if flat_configs is not None and arg("FLAT_K") else configs
    return {"early_config_prune": prune}


_CHUNK_ALIGN = max(cfg.kwargs["BLOCK_K"] for cfg in _WGRAD_CONFIGS + _WGRAD_IEEE_CONFIGS)


# --------------------------------------------------------------------------------------------------
# forward
@triton.autotune(configs=_GEMM_CONFIGS, prune_configs_by=_by_precision(_GEMM_IEEE_CONFIGS, _FLAT_K_CONFIGS),
                 key=["M", "CG", "KG", "R", "S", "SH", "SW", "FLAT_K", "HAS_BIAS", "ACT", "PREC"])
@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr,
                     M, H, W, P, Q, CG, KG,
                     xsn, xsc, xsh, xsw, ysn, ysc, ysh, ysw,
                     SH, SW, PH, PW,
                     R: tl.constexpr, S: tl.constexpr,
                     HAS_BIAS: tl.constexpr, ACT: tl.constexpr, FLAT_K: tl.constexpr,
                     PREC: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < KG
    PQ = P * Q
    n_img = (offs_m // PQ).to(tl.int64)
    pq = offs_m % PQ
    oh = pq // Q
    ow = pq % Q
    ih0 = oh * SH - PH
    iw0 = ow * SW - PW
    # int64 image offset: N*H*W*C may pass 2^31 for large batches; per-image offsets stay int32.
    x_rows = x_ptr + n_img * xsn + (g * CG).to(tl.int64) * xsc
    # weight prepared as (G, R, S, CG, KG): a BLOCK_K x BLOCK_N tile is contiguous along KG.
    w_g = w_ptr + g.to(tl.int64) * (R * S * CG * KG)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:
        KTOT = R * S * CG
        for k0 in range(0, KTOT, BLOCK_K):
            kk = k0 + offs_k
            k_ok = kk < KTOT
            c = kk % CG
            rs = kk // CG
            ih = ih0[:, None] + (rs // S)[None, :]
            iw = iw0[:, None] + (rs % S)[None, :]
            a_mask = (m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
            a = tl.load(x_rows[:, None] + ih * xsh + iw * xsw + c[None, :] * xsc, mask=a_mask, other=0.0)
            b = tl.load(w_g + kk[:, None] * KG + offs_n[None, :], mask=k_ok[:, None] & n_ok[None, :],
                        other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PREC)
    else:
        for rs in range(R * S):
            ih = ih0 + rs // S
            iw = iw0 + rs % S
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_rows = x_rows + ih * xsh + iw * xsw
            w_rs = w_g + rs * CG * KG
            for c0 in range(0, CG, BLOCK_K):
                c = c0 + offs_k
                c_ok = c < CG
                a = tl.load(a_rows[:, None] + c[None, :] * xsc, mask=row_ok[:, None] & c_ok[None, :],
                            other=0.0)
                b = tl.load(w_rs + c[:, None] * KG + offs_n[None, :], mask=c_ok[:, None] & n_ok[None, :],
                            other=0.0)
                acc = tl.dot(a, b, acc, input_precision=PREC)

    if HAS_BIAS:
        bias = tl.load(b_ptr + g * KG + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]
    acc = apply_act(acc, ACT)
    y_rows = y_ptr + n_img * ysn + oh * ysh + ow * ysw
    y_ptrs = y_rows[:, None] + (g * KG + offs_n)[None, :] * ysc
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


# --------------------------------------------------------------------------------------------------
# backward data
@triton.autotune(configs=_GEMM_CONFIGS, prune_configs_by=_by_precision(_GEMM_IEEE_CONFIGS),
                 key=["M", "CG", "KG", "R", "S", "SH", "SW", "PREC"])
@triton.jit
def _conv_bwd_data_kernel(dy_ptr, w_ptr, dx_ptr,
                          M, HQ, WQ, H, W, P, Q, CG, KG,
                          dysn, dysc, dysh, dysw, dxsn, dxsc, dxsh, dxsw,
                          SH, SW, PH, PW,
                          R: tl.constexpr, S: tl.constexpr, PREC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    z = tl.program_id(2)
    g = z // (SH * SW)
    phase = z % (SH * SW)
    fh = phase // SW
    fw = phase % SW
    # This phase owns input pixels (fh + i*SH, fw + j*SW), i < HQ = cdiv(H, SH), j < WQ.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    HWQ = HQ * WQ
    n_img = (offs_m // HWQ).to(tl.int64)
    ij = offs_m % HWQ
    i = ij // WQ
    j = ij % WQ
    h = fh + i * SH
    w = fw + j * SW
    m_ok = (offs_m < M) & (h < H) & (w < W)
    n_ok = offs_n < CG
    # Taps reaching this phase: r = r0 + t*SH, whose output row is bh + i - t (exact division).
    r0 = (fh + PH) % SH
    s0 = (fw + PW) % SW
    bh = (fh + PH - r0) // SH
    bw = (fw + PW - s0) // SW
    TR = (R - r0 + SH - 1) // SH
    TS = (S - s0 + SW - 1) // SW
    dy_img = dy_ptr + n_img * dysn + (g * KG).to(tl.int64) * dysc
    # weight prepared as (G, R, S, KG, CG): a BLOCK_K x BLOCK_N tile is contiguous along CG.
    w_g = w_ptr + g.to(tl.int64) * (R * S * KG * CG)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(TR):
        oh = bh + i - t
        for u in range(TS):
            ow = bw + j - u
            row_ok = m_ok & (oh >= 0) & (oh < P) & (ow >= 0) & (ow < Q)
            a_rows = dy_img + oh * dysh + ow * dysw
            w_rs = w_g + ((r0 + t * SH) * S + (s0 + u * SW)) * KG * CG
            for k0 in range(0, KG, BLOCK_K):
                k = k0 + offs_k
                k_ok = k < KG
                a = tl.load(a_rows[:, None] + k[None, :] * dysc, mask=row_ok[:, None] & k_ok[None, :],
                            other=0.0)
                b = tl.load(w_rs + k[:, None] * CG + offs_n[None, :], mask=k_ok[:, None] & n_ok[None, :],
                            other=0.0)
                acc = tl.dot(a, b, acc, input_precision=PREC)

    dx_rows = dx_ptr + n_img * dxsn + h * dxsh + w * dxsw
    dx_ptrs = dx_rows[:, None] + (g * CG + offs_n)[None, :] * dxsc
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


# --------------------------------------------------------------------------------------------------
# backward weight
@triton.autotune(configs=_WGRAD_CONFIGS, prune_configs_by=_by_precision(_WGRAD_IEEE_CONFIGS),
                 key=["M", "CG", "KG", "CRS", "S", "SH", "SW", "CHUNK", "PREC"])
@triton.jit
def _conv_bwd_weight_kernel(dy_ptr, x_ptr, part_ptr,
                            M, CHUNK, H, W, P, Q, CG, KG, CRS, G,
                            dysn, dysc, dysh, dysw, xsn, xsc, xsh, xsw,
                            SH, SW, PH, PW,
                            S: tl.constexpr, PREC: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_t = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.program_id(2)
    n_tiles_n = tl.cdiv(CRS, BLOCK_N)
    pid_m = pid_t // n_tiles_n
    pid_n = pid_t % n_tiles_n
    offs_ko = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ko_ok = offs_ko < KG
    j_ok = offs_j < CRS
    # Columns are (r, s, c) with c innermost, fixed for the program: decompose them once.
    c = offs_j % CG
    rs = offs_j // CG
    r = rs // S
    s = rs % S
    x_col = (g * CG + c) * xsc
    dy_col = (g * KG + offs_ko) * dysc
    PQ = P * Q
    m_start = split * CHUNK
    m_end = tl.minimum(m_start + CHUNK, M)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for m0 in range(m_start, m_end, BLOCK_K):
        mm = m0 + tl.arange(0, BLOCK_K)
        mm_ok = mm < m_end
        n_img = (mm // PQ).to(tl.int64)
        pq = mm % PQ
        oh = pq // Q
        ow = pq % Q
        # dy^T tile: channels (contiguous in NHWC) along the first axis.
        dy_rows = n_img * dysn + oh * dysh + ow * dysw
        a = tl.load(dy_ptr + dy_rows[None, :] + dy_col[:, None], mask=ko_ok[:, None] & mm_ok[None, :],
                    other=0.0)
        ih = (oh * SH - PH)[:, None] + r[None, :]
        iw = (ow * SW - PW)[:, None] + s[None, :]
        b_mask = mm_ok[:, None] & j_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        b = tl.load(x_ptr + (n_img * xsn)[:, None] + ih * xsh + iw * xsw + x_col[None, :], mask=b_mask,
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PREC)

    # partials laid out (split, G*KG, CRS); int64 since split*K*CRS is only bounded by MAX_PARTIAL_BYTES.
    row = (split * G + g).to(tl.int64) * KG + offs_ko
    p_ptrs = part_ptr + row[:, None] * CRS + offs_j[None, :]
    tl.store(p_ptrs, acc, mask=ko_ok[:, None] & j_ok[None, :])


# --------------------------------------------------------------------------------------------------
# launchers
def _channels_last(t: torch.Tensor) -> torch.Tensor:
    if t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t.contiguous(memory_format=torch.channels_last)


def _check_dtype(t: torch.Tensor, what: str) -> None:
    if t.dtype not in _DTYPES:
        raise TypeError(f"{what}: dtype {t.dtype} not supported (fp32, fp16 or bf16)")


def _precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: TF32 for fp32 operands unless cuDNN-style TF32 is switched off."""
    if dtype == torch.float32 and not _cudnn_conv_tf32():
        return "ieee"
    return "tf32"  # ignored by tl.dot for fp16/bf16 operands; it is the compiler default there


def _cudnn_conv_tf32() -> bool:
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        # torch >= 2.9 refuses to read the legacy flag once the new per-backend API has set conv and
        # rnn apart; resolve the conv setting itself (the first level that is not "none" decides).
        for prec in (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.fp32_precision,
                     torch.backends.fp32_precision):
            if prec != "none":
                return prec == "tf32"
        return False


def _per_group(what: str, C: int, K: int, G: int) -> tuple[int, int]:
    """(C/G, K/G), or an error when num_group G does not split both channel counts."""
    if G < 1 or C % G or K % G:
        raise ValueError(f"{what}: {C} input and {K} output channels do not split into num_group={G}")
    return C // G, K // G


def conv(x, w, b, *, stride, pad, num_group, out_size, act):
    """y = act(conv(x, w) + b) of shape (N, K, P, Q) with (P, Q) = out_size; taps outside x read 0.

    x (N, C, H, W) any strides; w (K, C/num_group, R, S); b (K,) or None. fp32 inputs use TF32
    products when torch.backends.cudnn.allow_tf32 is set; fp16/bf16 accumulate in fp32. y has x's
    dtype and channels-last memory format.
    """
    _check_dtype(x, "conv")
    (sh, sw), (ph, pw), (P, Q) = pair(stride), pair(pad), pair(out_size)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    G = num_group
    Cg_x, Kg = _per_group("conv", C, K, G)
    if Cg_x != Cg:
        raise ValueError(f"conv: {C} input channels, weight ({K}, {Cg}, ...) and num_group={G} disagree")
    y = torch.empty((N, K, P, Q), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    M = N * P * Q
    if M == 0 or K == 0:
        return y
    xc = _channels_last(x)
    wt = w.to(x.dtype).reshape(G, Kg, Cg, R, S).permute(0, 3, 4, 2, 1).contiguous()
    bias = b.contiguous() if b is not None else wt  # dummy pointer when HAS_BIAS is False

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(Kg, meta["BLOCK_N"]), G)

    _conv_fwd_kernel[grid](
        xc, wt, bias, y, M, H, W, P, Q, Cg, Kg,
        *xc.stride(), *y.stride(), sh, sw, ph, pw,
        R=R, S=S, HAS_BIAS=b is not None, ACT=act_code(act), FLAT_K=Cg < FLAT_K_MAX_CHANNELS,
        PREC=_precision(x.dtype))
    return y


def conv_backward_data(dy, w, *, in_hw, stride, pad, num_group):
    """dx (N, C, *in_hw) in dy's dtype, channels-last; N from dy, C = w.shape[1] * num_group.

    dy is the gradient after the activation's backward. Gradient that landed on positions outside
    the input (padding, ceil-extended windows) is dropped.
    """
    _check_dtype(dy, "conv_backward_data")
    (sh, sw), (ph, pw), (H, W) = pair(stride), pair(pad), pair(in_hw)
    K, Cg, R, S = w.shape
    G = num_group
    C = Cg * G
    Kg = _per_group("conv_backward_data", C, K, G)[1]
    N, P, Q = dy.shape[0], dy.shape[2], dy.shape[3]
    if dy.shape[1] != K:
        raise ValueError(f"conv_backward_data: dy {tuple(dy.shape)} does not match w {tuple(w.shape)}")
    dx = torch.empty((N, C, H, W), device=dy.device, dtype=dy.dtype, memory_format=torch.channels_last)
    if dx.numel() == 0:
        return dx
    if P * Q == 0 or K == 0:
        return dx.zero_()
    HQ, WQ = triton.cdiv(H, sh), triton.cdiv(W, sw)
    M = N * HQ * WQ
    dyc = _channels_last(dy)
    wt = w.to(dy.dtype).reshape(G, Kg, Cg, R, S).permute(0, 3, 4, 1, 2).contiguous()

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(Cg, meta["BLOCK_N"]), G * sh * sw)

    _conv_bwd_data_kernel[grid](
        dyc, wt, dx, M, HQ, WQ, H, W, P, Q, Cg, Kg,
        *dyc.stride(), *dx.stride(), sh, sw, ph, pw,
        R=R, S=S, PREC=_precision(dy.dtype))
    return dx


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _split_count(M: int, tiles: int, bytes_per_split: int, device: torch.device) -> int:
    """How many slices of the N*P*Q reduction: enough programs to fill the GPU, bounded by memory."""
    want = triton.cdiv(SPLIT_PROGRAMS_PER_SM * _num_sms(device), max(tiles, 1))
    most = max(1, min(M // MIN_SPLIT_ROWS, MAX_PARTIAL_BYTES // max(bytes_per_split, 1)))
    return max(1, min(want, most))


def conv_backward_weight(dy, x, *, kernel, stride, pad, num_group):
    """dw (K, C/num_group, *kernel) in fp32, K = dy.shape[1]: sum over N*P*Q of dy x im2col(x).

    Deterministic: the reduction is split across programs, each writing its own fp32 partial, and
    the partials are summed in a fixed order. Returned in channels-last memory format (the kernel's
    (K, R, S, C/num_group) order).
    """
    _check_dtype(dy, "conv_backward_weight")
    (sh, sw), (ph, pw), (R, S) = pair(stride), pair(pad), pair(kernel)
    N, C, H, W = x.shape
    K = dy.shape[1]
    G = num_group
    Cg, Kg = _per_group("conv_backward_weight", C, K, G)
    P, Q = dy.shape[2], dy.shape[3]
    if dy.shape[0] != N:
        raise ValueError(f"conv_backward_weight: dy {tuple(dy.shape)} does not match x {tuple(x.shape)}")
    M = N * P * Q
    CRS = Cg * R * S
    if M == 0 or K * CRS == 0:
        return torch.zeros((K, Cg, R, S), device=dy.device, dtype=torch.float32)
    dyc = _channels_last(dy)
    xc = _channels_last(x.to(dy.dtype))
    # Tile count estimated at 64x64 (the autotuned tile may differ; only the split count depends on it).
    tiles = triton.cdiv(Kg, 64) * triton.cdiv(CRS, 64) * G
    split = _split_count(M, tiles, K * CRS * 4, dy.device)
    # Chunks are whole multiples of every configured BLOCK_K: only the last block of the last split
    # is partly masked.
    chunk = triton.cdiv(triton.cdiv(M, split), _CHUNK_ALIGN) * _CHUNK_ALIGN
    split = triton.cdiv(M, chunk)
    part = torch.empty((split, K, CRS), device=dy.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(Kg, meta["BLOCK_M"]) * triton.cdiv(CRS, meta["BLOCK_N"]), split, G)

    _conv_bwd_weight_kernel[grid](
        dyc, xc, part, M, chunk, H, W, P, Q, Cg, Kg, CRS, G,
        *dyc.stride(), *xc.stride(), sh, sw, ph, pw,
        S=S, PREC=_precision(dy.dtype))
    dw = part[0] if split == 1 else part.sum(dim=0)
    return dw.view(K, R, S, Cg).permute(0, 3, 1, 2)
