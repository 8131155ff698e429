"""What a run leaves for other tools: ``metrics.csv`` and ``hparams.yaml`` as PyTorch Lightning's
CSVLogger writes them, and TensorBoard event files when the optional ``tensorboard`` package is installed
(``pip install 'alexnetc[tensorboard]'``).

* ``metrics.csv``: one header, then rows of two kinds. A *step row* every `STEP_EVERY` updates holds the
  training loss and top-1/top-5 error over the updates since the previous step row (``*_step``
  columns) and the learning rate; an *epoch row* holds the epoch's record (the keys of
  ``metrics.jsonl``). Both carry ``epoch`` (1-based; the epoch the step belongs to) and ``step`` (updates
  done). Under torchrun the step rows are rank 0's shard of each batch, the epoch rows every process's.
  Epoch rows also carry ``wall_seconds``: the run's wall time so far, across resumes (not counting the time
  it was stopped). A divergence is recorded in ``metrics.jsonl`` (``{"event": "diverged", ...}``).
* ``hparams.yaml``: the spec (name, path, hash), the dataset, the resolved training options and the
  versions of Python, torch, triton and alexnetc.
* ``events.out.tfevents.*``: the epoch rows' scalars (losses, top-1/top-5 error, learning rate,
  images/s, data-wait share) at their step, the step rows' training loss and error, and the
  hyperparameters (TensorBoard's HPARAMS tab), so ``tensorboard --logdir runs`` shows every run.

A resumed run continues the same files: rows past the checkpoint's step are dropped from the CSV, and
the event writer is opened with ``purge_step`` so TensorBoard hides the events a crashed run wrote
past it; no step is logged twice. Only the process that writes the run (rank 0) creates a `RunLog`.
"""
from __future__ import annotations

import csv
import io
import math
import os
import platform
import time
from typing import Any, Callable, Mapping

from ..atomic import replacing

CSV_NAME = "metrics.csv"
HPARAMS_NAME = "hparams.yaml"
EVENTS_PREFIX = "events.out.tfevents."
STEP_EVERY = 10          # updates per step row (Lightning's log_every_n_steps; ours is smaller: tiny runs)
STEP_KEYS = ("train_loss_step", "train_top1_err_step", "train_top5_err_step")
EPOCH_KEYS = ("train_loss", "train_top1_err", "train_top5_err", "val_loss", "val_top1_err", "val_top5_err",
              "images_per_second", "data_wait_share", "train_seconds", "skipped_images", "wall_seconds")
COLUMNS = ("epoch", "step", "lr", *STEP_KEYS, *EPOCH_KEYS)
# The TensorBoard tag of each scalar (grouped as Lightning's users see them: loss/, error/, ...).
TB_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_top1_err": "top1_err/train",
           "val_top1_err": "top1_err/val", "train_top5_err": "top5_err/train", "val_top5_err": "top5_err/val",
           "lr": "lr", "images_per_second": "speed/images_per_second", "data_wait_share": "speed/data_wait_share",
           "train_loss_step": "loss/train_step", "train_top1_err_step": "top1_err/train_step",
           "train_top5_err_step": "top5_err/train_step"}


def tensorboard_writer() -> Any:
    """TensorBoard's SummaryWriter class, or None when the ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


def versions() -> dict:
    """The versions a run records in hparams.yaml."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("alexnetc", "torch", "triton", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def run_log_files(out: str) -> list[str]:
    """The files a `RunLog` wrote in `out` (metrics.csv, hparams.yaml, event files): what --overwrite deletes."""
    try:
        names = os.listdir(out)
    except OSError:
        return []
    return [os.path.join(out, n) for n in sorted(names) if n in (CSV_NAME, HPARAMS_NAME) or n.startswith(EVENTS_PREFIX)]


def read_csv_rows(path: str) -> list[dict]:
    """The rows of a metrics.csv (values as strings; '' where a row has no value)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _flat(prefix: str, value: Any, out: dict) -> None:
    """TensorBoard hparams take only scalars: nested mappings become ``a/b`` keys, lists strings."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    elif value is not None:
        out[prefix] = str(value)


class RunLog:
    """The CSV, hparams and TensorBoard files of one run in `out` (rank 0 only). `start` once the run's
    position is known, `batch` after every update, `epoch` after each epoch's record, `close` at the end."""

    def __init__(self, out: str, log: Callable[[str], None], every: int = STEP_EVERY):
        self.out = out
        self.log = log
        self.every = every
        self.csv_path = os.path.join(out, CSV_NAME)
        self.hparams_path = os.path.join(out, HPARAMS_NAME)
        self.writer: Any = None
        self._t0 = time.monotonic()
        self._wall_before = 0.0     # the wall time of the run before this process continued it
        self._window = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0}

    # -- start -----------------------------------------------------------------------------------------
    def start(self, step: int, hparams: Mapping[str, Any]) -> None:
        """Write hparams.yaml, keep the CSV's rows up to `step` (the resumed checkpoint's; 0 for a new run)
        and open the event writer (purging events past `step`)."""
        import json

        import yaml

        hparams = json.loads(json.dumps(dict(hparams), default=str))   # tuples, paths: plain YAML
        text = yaml.safe_dump(hparams, sort_keys=False, default_flow_style=False, width=120)
        with replacing(self.hparams_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        self._truncate(step)
        writer_class = tensorboard_writer()
        if writer_class is None:
            return
        self.writer = writer_class(log_dir=self.out, purge_step=step + 1 if step else None)
        self._write_hparams(hparams)

    def _truncate(self, step: int) -> None:
        """metrics.csv := its header and the rows at or before `step` (a new run: just the header)."""
        kept: list[dict] = []
        if step and os.path.isfile(self.csv_path):
            try:
                rows = read_csv_rows(self.csv_path)
            except (OSError, csv.Error, UnicodeDecodeError) as exc:
                self.log(f"warning: {self.csv_path} is unreadable ({exc}); starting it again")
                rows = []
            for r in rows:
                try:
                    if int(r.get("step") or 0) <= step:
                        kept.append(r)
                        self._wall_before = float(r.get("wall_seconds") or self._wall_before)
                except ValueError:     # a row cut short by a crash
                    continue
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(kept)
        with replacing(self.csv_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(buf.getvalue())

    def _write_hparams(self, hparams: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        flat: dict = {}
        _flat("", hparams, flat)
        metrics = {TB_TAGS[k]: float("nan") for k in ("val_top1_err", "val_top5_err", "val_loss")}
        file_writer = self.writer._get_file_writer()
        for summary in hparams_summary(flat, metrics):
            file_writer.add_summary(summary)

    # -- rows ------------------------------------------------------------------------------------------
    def _append(self, row: Mapping[str, Any]) -> None:
        line = ",".join(_cell(row.get(c)) for c in COLUMNS) + "\n"
        with open(self.csv_path, "a", encoding="utf-8", newline="") as fh:
            fh.write(line)

    def _scalars(self, row: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, tag in TB_TAGS.items():
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def batch(self, step: int, epoch: int, loss: float, top1: float, top5: float, n: int, lr: float) -> None:
        """One update done (`step` counts it; `epoch` 0-based): every `every` steps, a step row."""
        w = self._window
        for key, value in (("loss", loss), ("top1", top1), ("top5", top5)):
            w[key] += value * n
        w["n"] += n
        if step % self.every or not w["n"]:
            return
        row = {"epoch": epoch + 1, "step": step, "lr": lr, "train_loss_step": w["loss"] / w["n"],
               "train_top1_err_step": w["top1"] / w["n"], "train_top5_err_step": w["top5"] / w["n"]}
        self._window = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0}
        self._append(row)
        if self.writer is not None:   # the learning rate goes with the epoch's scalars
            for key in STEP_KEYS:
                self.writer.add_scalar(TB_TAGS[key], row[key], step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """The epoch's record (as appended to metrics.jsonl): an epoch row and its scalars."""
        self._append(dict(record, wall_seconds=self._wall_before + time.monotonic() - self._t0))
        self._scalars({k: v for k, v in record.items() if k not in STEP_KEYS}, int(record["step"]))

    def diverged(self, message: str) -> None:
        """Record in metrics.jsonl that the run diverged (so `alexnetc runs` can say so; a resume rewrites
        metrics.jsonl from its checkpoint's history, and the record goes)."""
        from .metrics import append_metrics

        append_metrics(os.path.join(self.out, "metrics.jsonl"), {"event": "diverged", "message": message})

    def close(self) -> None:
        """Flush and close the event file (the CSV is written row by row)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def open_run_log(trainer: Any, step: int) -> RunLog:
    """The `RunLog` of a `loop.Trainer` whose run is bound, started at `step` with the run's hparams."""
    from dataclasses import fields

    cfg, net = trainer.cfg, trainer.net
    hparams = {
        "spec": {"name": net.name, "path": os.path.abspath(trainer.opts.spec), "hash": net.hash},
        "data": trainer.inputs.root,
        "train": {f.name: (dict(v) if isinstance(v := getattr(cfg, f.name), Mapping) else v) for f in fields(cfg)},
        "options": dict(trainer.remembered),
        "world_size": trainer.dist.world if trainer.dist else 1,
        "runs_on": str(trainer.real_device),
        "init_from": trainer.init_from,
        "versions": versions(),
    }
    run_log = RunLog(trainer.run_dir.out, trainer.log)
    run_log.start(step, hparams)
    return run_log
