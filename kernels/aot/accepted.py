"""Register spills accepted on the training step's hot path, each with its reason: the one table
tests/kernels/test_aot_compile.py and benchmarks/aot_compile.py read.

Every launch the AOT matrix compiles comes from a training step (forward and backward), so every
spill is on the hot path; a spill no entry matches fails the test. An entry names the kernel and dtype
and, to narrow it, the launch's constexprs that must match (the layer shape: kernel size, stride,
precision), the config label (launches.config_label) and the architecture (None: any). A spilling
config is a slow config: fix it in the kernel's autotune list first, list it here only when no
config of that launch avoids it or the fix is a kernel change, and say which.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AcceptedSpill:
    kernel: str                                  # conv._conv_fwd_kernel
    dtype: str                                   # fp32, bf16, fp16
    reason: str
    where: tuple[tuple[str, Any], ...] = ()      # launch constexprs that must match, e.g. (("R", 5), ("SH", 1))
    config: str | None = None                    # 'BLOCK_M=128 BLOCK_N=64 BLOCK_K=64 w8 s3'; None: any
    arch: str | None = None                      # sm_80, sm_90a; None: any
    specs: tuple[str, ...] = ()                  # the launch is made only by these specs (); (): any

    def matches(self, row: dict) -> bool:
        return (row["kernel"] == self.kernel and row["dtype"] == self.dtype
                and self.config in (None, row["config"]) and self.arch in (None, row["arch"])
                and all(row["constexprs"].get(k) == v for k, v in self.where)
                and (not self.specs or set(row["specs"]) <= set(self.specs)))


_IEEE = (("PREC", "ieee"),)
_TF32 = (("PREC", "tf32"),)
_NIN_CLASSIFIER = ("The NIN mini's last 1x1 convolution (mlpconv3.cccp2: 10 output channels, the class count). "
                   "10 is no multiple of 16, so its output's strides are not 16-aligned and the epilogue stores "
                   "one element per 64-bit address: the 128-wide and 256-tall tiles spill; 64x128x32, 64x64x64 "
                   "and 128x64x64 of the same launch compile clean and the autotuner measures them too. A few "
                   "MFLOPs per image.")
_SMALL = ("4-8 bytes spilled at 255 registers in one tile of a launch whose other tiles compile clean; the "
          "autotuner measures them all, and a tile that still wins with 4 bytes of spill is the right one.")

ACCEPTED: tuple[AcceptedSpill, ...] = (
    AcceptedSpill("conv._conv_bwd_data_kernel", "fp32", where=_IEEE, reason=(
        "IEEE-precision fp32 (TF32 switched off) on the FMA units: every tile tried, 32x64 to 64x128 at 4 and 8 "
        "warps and 2 to 4 stages, spills 4-68 bytes on the stride-1 shapes (ptxas keeps 96-168 registers for a "
        "second block per SM, or runs out at 255). The per-tap phase arithmetic, not the tile, holds the registers: "
        "the fix is in the kernel. IEEE fp32 is opt-in; TF32 and the half types do not spill here.")),
    AcceptedSpill("conv._conv_fwd_kernel", "fp32", where=(("R", 7), ("FLAT_K", True), *_IEEE),
                  config="BLOCK_M=64 BLOCK_N=64 BLOCK_K=32 w4 s2", reason=(
                      "ResNet's 7x7 conv1 in IEEE fp32 through the flat (r, s, c) walk: 8-12 bytes at this one "
                      "tile; the other two IEEE tiles of the launch compile clean.")),
    AcceptedSpill("conv._conv_fwd_kernel", "bf16", where=(("R", 1), ("S", 1)), specs=("variants/nin-mini",),
                  reason=_NIN_CLASSIFIER),
    AcceptedSpill("conv._conv_fwd_kernel", "fp16", where=(("R", 1), ("S", 1)), specs=("variants/nin-mini",),
                  reason=_NIN_CLASSIFIER),
    AcceptedSpill("conv._conv_fwd_kernel", "fp32", where=(("R", 1), ("S", 1), *_TF32), specs=("variants/nin-mini",),
                  reason=_NIN_CLASSIFIER),
    AcceptedSpill("conv._conv_bwd_data_kernel", "fp32", where=_TF32, arch="sm_90a",
                  config="BLOCK_M=128 BLOCK_N=128 BLOCK_K=64 w8 s3", reason=_SMALL),
    AcceptedSpill("conv._conv_bwd_data_kernel", "fp32", where=_TF32, arch="sm_90a",
                  config="BLOCK_M=64 BLOCK_N=64 BLOCK_K=64 w4 s3", reason=_SMALL),
    AcceptedSpill("conv._conv_bwd_weight_kernel", "fp32", where=(("S", 7), *_TF32), arch="sm_80",
                  config="BLOCK_M=128 BLOCK_N=64 BLOCK_K=32 w8 s3", reason=_SMALL),
    AcceptedSpill("conv._conv_bwd_weight_kernel", "fp32", where=(("S", 11), *_TF32), arch="sm_90a",
                  config="BLOCK_M=128 BLOCK_N=128 BLOCK_K=32 w8 s3", reason=(
                      "AlexNet's conv1 weight gradient (363 = 3x11x11 columns, gathered from the image per "
                      "11x11 tap) at its largest tile on sm_90a in TF32: 148 bytes; the launch's three other "
                      "tiles compile clean, and it is one launch of a step's dozens.")),
)


def accepted_reason(row: dict) -> str | None:
    """The reason a compile result's spill is accepted, or None."""
    return next((a.reason for a in ACCEPTED if a.matches(row)), None)


def stale(rows: list[dict]) -> list[AcceptedSpill]:
    """Entries that match no spilling compile in `rows` (the spill is gone: remove the entry)."""
    return [a for a in ACCEPTED if not any(r.get("spill_stores") and a.matches(r) for r in rows)]
