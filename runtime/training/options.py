"""The options of a training run: what was asked (`TrainOptions`: the command line or a caller), and
what the run trains with (`RunConfig`), resolved once by `resolve` from three sources in order of
precedence:

1. a resumed checkpoint's seed, batch size, dtype, training batch limit (another value asked for is
   refused: the run would not continue, but become another) and epoch count (unless asked); the
   optimizer and schedule options the run was started with (`REMEMBERED`, unless asked again); its
   optimizer type must be the one resolved (else refused, unless --fresh-optimizer starts it over);
2. the options asked for;
3. the spec's train section, its absent keys filled with the schema's defaults (`train_settings`;
   the defaults live in the schema and docs/spec.md documents them).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping

from ...compiler import CompiledNet
from ...compiler.program import TRAIN_DTYPES
from ...compiler.schema import spec_schema, with_defaults
from ..execution import distributed as dp
from .errors import TrainingError
from .progress import LOG_EVERY_S


@dataclass(frozen=True)
class TrainOptions:
    """What `alexnetc train` (or a caller) asks for; None: as the spec's train section says."""

    spec: str
    data: str | None = None
    out: str | None = None              # None: a new runs/<spec name>/version_N (`versions`)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None         # sgd | adamw (None: train.optimizer.type)
    weight_decay: float | None = None
    schedule: str | None = None          # constant | step | plateau | cosine (None: train.schedule.type)
    warmup_epochs: float | None = None   # linear warm-up (None: train.schedule.warmup_epochs)
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
    allow_empty_classes: bool = False    # train although a class folder holds no image (a warning)
    fresh_optimizer: bool = False        # resume with zero momentum when the checkpoint has none
    progress: bool = True                # a bar on a terminal, progress lines in a log (`progress`)
    log_every: float = LOG_EVERY_S       # seconds between progress lines when stdout is not a terminal
    keep: int = 3
    bucket_mb: float = dp.DEFAULT_BUCKET_MB        # data parallel: gradient all-reduce bucket size
    overlap: bool = True                           # data parallel: all-reduce during the backward pass
    dist_timeout: float = dp.DEFAULT_TIMEOUT_S     # data parallel: seconds before a collective gives up
    log: Callable[[str], None] = field(default=lambda s: print(s, flush=True), compare=False)


def check_options(opts: TrainOptions) -> None:
    """Options out of range are errors (0 is not "use the spec's value")."""
    for name, lo in (("batch_size", 1), ("epochs", 1), ("workers", 0), ("limit_train_batches", 1),
                     ("limit_val_batches", 1), ("synthetic", 1)):
        v = getattr(opts, name)
        if v is not None and v < lo:
            raise TrainingError(f"{name} {v}: must be at least {lo}")
    if opts.lr is not None and not (0 < opts.lr < float("inf")):
        raise TrainingError(f"lr {opts.lr:g}: must be a positive number")
    if opts.weight_decay is not None and not 0 <= opts.weight_decay <= 1:
        raise TrainingError(f"--weight-decay {opts.weight_decay:g}: must be between 0 and 1")
    if opts.warmup_epochs is not None and not 0 <= opts.warmup_epochs < float("inf"):
        raise TrainingError(f"--warmup-epochs {opts.warmup_epochs:g}: must be a number of epochs, 0 or more")
    for option, value, allowed in (("--optimizer", opts.optimizer, OPTIMIZER_TYPES),
                                   ("--schedule", opts.schedule, SCHEDULE_TYPES)):
        if value is not None and value not in allowed:
            raise TrainingError(f"{option} {str(value)[:40]}: expected one of {', '.join(allowed)}")
    if opts.resume and opts.init_from:
        raise TrainingError("--init-from starts a new run from another run's weights; --resume continues the run "
                            "in --out: give one of them")
    if opts.dtype is not None and opts.dtype not in TRAIN_DTYPES:
        raise TrainingError(f"--dtype {str(opts.dtype)[:40]}: expected one of {', '.join(TRAIN_DTYPES)}")
    for name in ("bucket_mb", "dist_timeout", "log_every"):
        if not 0 < getattr(opts, name) < float("inf"):
            raise TrainingError(f"{name} {getattr(opts, name):g}: must be a positive number")
    if opts.resume and opts.overwrite:
        raise TrainingError("--resume continues the run in --out, --overwrite replaces it: give one of them")


def cpu_only(device: str, dtype: str) -> bool:
    """--device cpu; or float64 with --device auto (float64 runs only on the CPU reference kernels)."""
    return device == "cpu" or (device == "auto" and dtype == "float64")


def train_settings(net: CompiledNet) -> dict:
    """The spec's train section with the schema's defaults filled in (the schedule's too)."""
    return with_defaults(net.settings("train"), "train")


def _enum(*path: str) -> tuple[str, ...]:
    node = spec_schema()
    for key in path:
        node = node["properties"][key]
    return tuple(node["enum"])


# What --optimizer and --schedule accept: the schema's enums.
OPTIMIZER_TYPES = _enum("train", "optimizer", "type")
SCHEDULE_TYPES = _enum("train", "schedule", "type")


@dataclass(frozen=True)
class RunConfig:
    """What a run trains with, resolved once (`resolve`); the trainer reads nothing else of the kind."""

    batch_size: int                       # the global batch (all processes together)
    epochs: int
    seed: int
    lr: float                             # the base learning rate (a resumed schedule carries its own lr)
    optimizer: Mapping[str, Any]          # train.optimizer ({type, betas, eps}), its defaults filled in
    momentum: float
    weight_decay: float
    schedule: Mapping[str, Any]           # train.schedule, its defaults filled in
    limit_train_batches: int | None
    limit_val_batches: int | None
    dtype: str
    sync_batchnorm: bool


# Options a run remembers (in its checkpoints' "options"): a resume that does not repeat them continues
# with them, as it continues with the seed; one that gives them again applies them from there on.
REMEMBERED = ("optimizer", "weight_decay", "schedule", "warmup_epochs")


def remembered(opts: TrainOptions, saved: Mapping[str, Any] | None = None) -> dict:
    """The REMEMBERED options in effect: those asked for now, else those a resumed run was started with."""
    before = (saved or {}).get("options") or {}
    out = {k: before[k] for k in REMEMBERED if isinstance(before, Mapping) and before.get(k) is not None}
    out.update({k: getattr(opts, k) for k in REMEMBERED if getattr(opts, k) is not None})
    return out


def resolve(opts: TrainOptions, train: Mapping[str, Any], saved: Mapping[str, Any] | None = None,
            source: str = "") -> RunConfig:
    """The run's configuration from `train` (`train_settings`), the options and, when resuming, the
    checkpoint's state `saved` (read from `source`)."""
    asked_optimizer = opts.optimizer
    if saved is not None:
        opts = replace(opts, **remembered(opts, saved))
    values = dict(
        batch_size=opts.batch_size or train["batch_size"],
        epochs=opts.epochs or train["epochs"],
        seed=opts.seed if opts.seed is not None else train["seed"],
        lr=opts.lr or train["lr"],
        optimizer=MappingProxyType({**train["optimizer"], **({"type": opts.optimizer} if opts.optimizer else {})}),
        momentum=train["momentum"],
        weight_decay=opts.weight_decay if opts.weight_decay is not None else train["weight_decay"],
        schedule=MappingProxyType({**train["schedule"], **({"type": opts.schedule} if opts.schedule else {}),
                                   **({"warmup_epochs": opts.warmup_epochs} if opts.warmup_epochs is not None
                                      else {})}),
        limit_train_batches=opts.limit_train_batches or train.get("limit_train_batches"),
        limit_val_batches=opts.limit_val_batches or train.get("limit_val_batches"),
        dtype=opts.dtype or train["dtype"],
        sync_batchnorm=bool(opts.sync_batchnorm if opts.sync_batchnorm is not None else train["sync_batchnorm"]))
    if saved is not None:
        values.update(_continued(opts, saved, source))
        _same_optimizer(opts, asked_optimizer, values["optimizer"]["type"], saved, source)
    return RunConfig(**values)


def _same_optimizer(opts: TrainOptions, asked: str | None, kind: str, state: Mapping[str, Any], path: str) -> None:
    """A run continues with the optimizer it was trained with (a checkpoint from before train.optimizer
    existed was SGD's); another one only starts over, with --fresh-optimizer."""
    saved = (state.get("optimizer") or {}).get("type", "sgd")
    if saved != kind and not opts.fresh_optimizer:
        where = "--optimizer" if asked else "the spec's train.optimizer"
        raise TrainingError(f"{path}: this run was trained with {saved}; cannot resume it with {kind} ({where}): "
                            f"pass --fresh-optimizer to continue with {kind} from zero state, or resume with {saved}")


def _continued(opts: TrainOptions, state: Mapping[str, Any], path: str) -> dict:
    """Resume with the seed, batch size, dtype and epoch count the run was started with, unless given;
    a different seed, batch size or dtype would not continue the run (other data order, other
    batches, other arithmetic)."""
    out = {}
    # A checkpoint from before train.dtype existed was trained in float32.
    saved_state = {**state, "dtype": state.get("dtype") or TRAIN_DTYPES[0]}
    for key, given in (("seed", opts.seed), ("batch_size", opts.batch_size), ("dtype", opts.dtype)):
        saved = saved_state.get(key)
        if saved is None:
            continue
        if given is not None and given != saved:
            raise TrainingError(f"{path}: this run was trained with {key} {saved}; cannot resume it with "
                                f"{key} {given} (leave the option out to resume)")
        out[key] = saved
    saved_limit = state.get("limit_train_batches")
    given = opts.limit_train_batches
    if given is not None and given != saved_limit:
        raise TrainingError(f"{path}: this run was trained with {saved_limit or 'no'} limit on training batches "
                            f"per epoch; cannot resume it with --limit-train-batches {given} (its epochs would "
                            "end elsewhere; leave the option out to resume)")
    if saved_limit:
        out["limit_train_batches"] = saved_limit  # epochs must end where they ended before
    if opts.epochs is None and state.get("epochs"):
        out["epochs"] = state["epochs"]
    return out
