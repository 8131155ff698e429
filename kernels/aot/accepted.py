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

    def matches(self, row: dict) -> bool:
        return (row["kernel"] == self.kernel and row["dtype"] == self.dtype
                and self.config in (None, row["config"]) and self.arch in (None, row["arch"])
                and all(row["constexprs"].get(k) == v for k, v in self.where))


ACCEPTED: tuple[AcceptedSpill, ...] = ()


def accepted_reason(row: dict) -> str | None:
    """The reason a compile result's spill is accepted, or None."""
    return next((a.reason for a in ACCEPTED if a.matches(row)), None)


def stale(rows: list[dict]) -> list[AcceptedSpill]:
    """Entries that match no spilling compile in `rows` (the spill is gone: remove the entry)."""
    return [a for a in ACCEPTED if not any(r.get("spill_stores") and a.matches(r) for r in rows)]
