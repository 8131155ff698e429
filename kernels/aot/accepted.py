"""Register spills accepted on the training step's hot path, each with its reason: the one table
tests/kernels/test_aot_compile.py and benchmarks/aot_compile.py read. Every launch the AOT matrix
compiles comes from a training step (forward and backward), so every spill is on the hot path; a
spill not listed here fails the test. An entry names the kernel, dtype ('fp32', 'bf16', 'fp16'),
architecture, config label (launches.config_label) and, where it matters, constexprs the launch must
have; the fewer entries the better: a spilling config is a slow config, fix it in the kernel's
autotune list first.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AcceptedSpill:
    kernel: str                   # conv._conv_bwd_data_kernel
    dtype: str
    arch: str
    config: str                   # 'BLOCK_M=128 BLOCK_N=64 BLOCK_K=64 w8 s3'
    reason: str
    constexprs: dict = field(default_factory=dict, hash=False)   # launch constexprs that must match

    def matches(self, row: dict) -> bool:
        return (row["kernel"], row["dtype"], row["arch"], row["config"]) == (self.kernel, self.dtype, self.arch,
                                                                              self.config) and \
            all(row["constexprs"].get(k) == v for k, v in self.constexprs.items())


ACCEPTED: tuple[AcceptedSpill, ...] = ()


def accepted_reason(row: dict) -> str | None:
    """The reason a compile result's spill is accepted, or None."""
    return next((a.reason for a in ACCEPTED if a.matches(row)), None)
