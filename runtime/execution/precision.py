"""What a run's `train.dtype` means for the executor: the dtype of the values between ops (compute) and
of the parameters, gradient buckets and SGD state (master), and where each precision can run.

* ``float32``: both fp32 (the default; the executor's float32 path is exactly what it was before
  precisions existed).
* ``float64``: both float64, on the CPU reference backend only (exact checks: gradients agree with an
  autograd oracle to ~1e-12). The Triton kernels have no float64 path, so a CUDA device or the
  Triton backend is refused with :class:`PrecisionError`, never a crash inside a kernel.
* ``bfloat16``: mixed precision. Master parameters, gradient buckets and SGD state stay fp32; each
  forward casts the parameters to bf16 once and feeds bf16 data; every kernel reads and writes bf16
  (accumulating in fp32 inside); the loss and the probabilities are fp32 (the loss op's own
  `output_dtypes`), and the weight and bias gradients come out of their kernels in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ...compiler.program import TRAIN_DTYPES, master_dtype


class PrecisionError(ValueError):
    """A precision asked for where it cannot run (float64 on a GPU or the Triton kernels), or unknown."""


@dataclass(frozen=True)
class Precision:
    name: str
    compute: torch.dtype     # data and every value between ops
    master: torch.dtype      # parameters, gradient buckets, SGD velocity

    @property
    def mixed(self) -> bool:
        return self.compute != self.master

    @property
    def default(self) -> bool:
        return self.name == TRAIN_DTYPES[0]


# The compiler names the dtypes (the schema's enum, the memory plan's bytes); torch has the same names.
_PRECISIONS = {d: Precision(d, getattr(torch, d), getattr(torch, master_dtype(d))) for d in TRAIN_DTYPES}


def precision(name: str | None) -> Precision:
    """The precision called `name` (None: float32); PrecisionError naming the choices otherwise."""
    p = _PRECISIONS.get(name or TRAIN_DTYPES[0])
    if p is None:
        raise PrecisionError(f"dtype {str(name)[:40]!r}: expected one of {', '.join(TRAIN_DTYPES)}")
    return p


def check_supported(p: Precision, group2ctx: Mapping[str, Any], backend: str | None = None) -> None:
    """Raise PrecisionError when `p` cannot run on these devices with this kernel backend."""
    if p.compute != torch.float64:
        return
    from ...kernels.backend import default_name

    for logical, dev in group2ctx.items():
        dev = torch.device(dev)
        chosen = (backend.strip().lower() if backend else None) or default_name(dev)
        if dev.type != "cpu" or chosen != "reference":
            raise PrecisionError(
                f"dtype float64 runs only on the CPU with the reference kernels; {logical} is bound to "
                f"{dev} with the {chosen} kernels (use --device cpu, or dtype float32 / bfloat16)")
