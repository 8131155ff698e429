"""The Triton crop/mirror/noise/normalise kernel (kernels/augment.py) against its torch version.

Oracle: `runtime.data.device_augment.crop_normalise_torch` (itself checked bit for bit against the
per-sample augmentation in tests/runtime/data/test_device_augment.py). Tolerance: none — the kernel divides
with IEEE round-to-nearest and fuses nothing, so every float must be equal. Without a GPU the kernel
runs in Triton's interpreter (small shapes); a second test compiles it for sm_90 to PTX, which the
interpreter alone would not prove possible.
"""
from __future__ import annotations

import pytest
import torch

from alexnetc.kernels.augment import _crop_normalise_kernel, crop_normalise
from alexnetc.runtime.data.device_augment import crop_normalise_torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _case(stored, channels, seed=0, n=3, h=10, w=12, m=7, ch=6, cw=5):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, h, w, stored), dtype=torch.uint8, generator=g)
    which = torch.randint(0, n, (m,), generator=g)
    top = torch.randint(0, h - ch + 1, (m,), generator=g)
    left = torch.randint(0, w - cw + 1, (m,), generator=g)
    mirror = torch.rand(m, generator=g) < 0.5
    shift = torch.randn(m, channels, generator=g) * 20
    scale = torch.full((channels,), 255.0)
    mean = torch.rand(channels, generator=g)
    std = torch.rand(channels, generator=g) + 0.1
    return [t.to(DEV) for t in (images, which, top, left, mirror, shift, scale, mean, std)] + [ch, cw, channels]


@pytest.mark.parametrize("stored,channels", [(3, 3), (1, 3), (1, 1)])
@pytest.mark.parametrize("drop", [(), ("shift",), ("scale", "mean"), ("shift", "scale", "mean", "std")])
def test_kernel_equals_the_torch_version_bit_for_bit(stored, channels, drop):
    args = _case(stored, channels, seed=stored * 10 + len(drop))
    names = ("images", "which", "top", "left", "mirror", "shift", "scale", "mean", "std")
    for k in drop:
        args[names.index(k)] = None
    got = crop_normalise(*args)
    want = crop_normalise_torch(*args)
    assert got.shape == want.shape == (7, channels, 6, 5)
    assert torch.equal(got, want)


def test_no_patches_and_bad_input():
    args = _case(3, 3)
    for i in (1, 2, 3, 4, 5):
        args[i] = args[i][:0]
    assert crop_normalise(*args).shape == (0, 3, 6, 5)
    args = _case(3, 3)
    args[0] = args[0].float()
    with pytest.raises(ValueError, match="uint8"):
        crop_normalise(*args)


def test_kernel_compiles_for_sm90():
    """Real compilation (PTX for an H100/H200) of the training configuration; skipped where this Triton
    build has no CUDA backend to compile with."""
    triton = pytest.importorskip("triton")
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError:
        pytest.skip("this Triton has no ASTSource/GPUTarget")
    from triton.runtime.jit import JITFunction

    fn = getattr(_crop_normalise_kernel, "fn", _crop_normalise_kernel)   # the Python function under the interpreter
    fn = fn if isinstance(fn, JITFunction) else JITFunction(fn)
    sig = {"img_ptr": "*u8", "which_ptr": "*i64", "top_ptr": "*i64", "left_ptr": "*i64", "mirror_ptr": "*i8",
           "shift_ptr": "*fp32", "scale_ptr": "*fp32", "mean_ptr": "*fp32", "std_ptr": "*fp32", "out_ptr": "*fp32",
           "HW": "i32", "crop_w": "i32", "sn": "i32", "sh": "i32", "sw": "i32", "sc": "i32",
           "C": "constexpr", "REPEAT": "constexpr", "HAS_SHIFT": "constexpr", "HAS_SCALE": "constexpr",
           "HAS_MEAN": "constexpr", "HAS_STD": "constexpr", "BLOCK": "constexpr"}
    consts = {"C": 3, "REPEAT": False, "HAS_SHIFT": True, "HAS_SCALE": True, "HAS_MEAN": True, "HAS_STD": True,
              "BLOCK": 1024}
    try:
        compiled = triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget("cuda", 90, 32))
    except Exception as exc:  # noqa: BLE001 - no CUDA backend or ptxas in this install: nothing to check
        if "backend" in str(exc).lower() or "ptxas" in str(exc).lower():
            pytest.skip(f"cannot compile for CUDA here: {exc}")
        raise
    ptx = compiled.asm["ptx"]
    assert "div.rn.f32" in ptx and ".target sm_90" in ptx
    assert "fma" not in ptx and "div.full" not in ptx and "div.approx" not in ptx   # nothing rounds differently
