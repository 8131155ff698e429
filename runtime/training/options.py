"""The options of a training run: what was asked (`TrainOptions`, the command line or a caller) and
its checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ...compiler.program import TRAIN_DTYPES
from ..execution import distributed as dp
from .errors import TrainingError


@dataclass
class TrainOptions:
    """What `alexnetc train` (or a caller) asks for; None: as the spec's train section says."""

    spec: str
    data: str | None = None
    out: str = "runs/alexnetc"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"                 # auto | cpu | cuda
    workers: int | None = None
    resume: bool = False
    overwrite: bool = False
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    seed: int | None = None
    dtype: str | None = None             # float32 | float64 | bfloat16 (None: train.dtype, else float32)
    init_from: str | None = None         # a run or checkpoint whose matching layers start this run
    sync_batchnorm: bool | None = None   # data parallel: global-batch statistics (None: train.sync_batchnorm)
    synthetic: int | None = None         # N random images per epoch instead of a dataset (benchmarks)
    progress: bool = True
    keep: int = 3
    bucket_mb: float = dp.DEFAULT_BUCKET_MB        # data parallel: gradient all-reduce bucket size
    overlap: bool = True                           # data parallel: all-reduce during the backward pass
    dist_timeout: float = dp.DEFAULT_TIMEOUT_S     # data parallel: seconds before a collective gives up
    log: Callable[[str], None] = field(default=lambda s: print(s, flush=True))


def check_options(opts: TrainOptions) -> None:
    """Options out of range are errors (0 is not "use the spec's value")."""
    for name, lo in (("batch_size", 1), ("epochs", 1), ("workers", 0), ("limit_train_batches", 1),
                     ("limit_val_batches", 1), ("synthetic", 1)):
        v = getattr(opts, name)
        if v is not None and v < lo:
            raise TrainingError(f"{name} {v}: must be at least {lo}")
    if opts.lr is not None and not (0 < opts.lr < float("inf")):
        raise TrainingError(f"lr {opts.lr:g}: must be a positive number")
    if opts.resume and opts.init_from:
        raise TrainingError("--init-from starts a new run from another run's weights; --resume continues the run "
                            "in --out: give one of them")
    if opts.dtype is not None and opts.dtype not in TRAIN_DTYPES:
        raise TrainingError(f"--dtype {str(opts.dtype)[:40]}: expected one of {', '.join(TRAIN_DTYPES)}")
    for name in ("bucket_mb", "dist_timeout"):
        if not 0 < getattr(opts, name) < float("inf"):
            raise TrainingError(f"{name} {getattr(opts, name):g}: must be a positive number")
