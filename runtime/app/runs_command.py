"""`alexnetc runs [DIR]`: a table of the training runs under a folder, one line per run directory.

A run directory is one that holds ``metrics.jsonl``, ``checkpoints/``, ``hparams.yaml`` or a training's lock
(`training.run_dir`). Per run: the spec and dataset (``hparams.yaml``, else the newest checkpoint's
record), epochs done of the total, the best and last validation top-1 error (``metrics.jsonl``), the
wall time (``metrics.csv``'s ``wall_seconds``; for runs from before it, the training seconds summed,
marked ``~``) and the state:

* ``running (pid N)``: the lock's process is alive;
* ``diverged``: the last thing ``metrics.jsonl`` records is the divergence (`run_log.RunLog.diverged`);
* ``finished``: every epoch asked for is logged;
* ``weights only``: a checkpoint and no epoch (``alexnetc import``, a saved module);
* ``interrupted``: fewer epochs, and no live owner (Ctrl-C or SIGTERM saved it; a killed run left a
  stale lock; both resume with ``alexnetc train --resume --out RUN``).

A run directory that cannot be read as one (unreadable or malformed files, no epoch and no checkpoint)
is listed with its problem in the state column: never a traceback. The walk is bounded (`MAX_DEPTH`
levels, `MAX_DIRS` directories, symbolic links not followed).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any

from .errors import UserError, say

MAX_DEPTH = 8
MAX_DIRS = 20000
MARKERS = ("metrics.jsonl", "checkpoints", "hparams.yaml", ".alexnetc.lock")
SKIP = {"checkpoints", "cache", "specs", "__pycache__"}
COLUMNS = ("run", "spec", "dataset", "epochs", "best", "last", "time", "state")
HEADINGS = ("run", "spec", "dataset", "epochs", "best val top-1", "last val top-1", "wall time", "state")
EPILOG = """examples:
  alexnetc runs                          # every run under runs/
  alexnetc runs runs/ablate --sort best  # the best validation top-1 error first

Columns: the run's directory, spec, dataset, epochs done/total, the best and last validation top-1
error, the wall time (~: training time only, for runs from before metrics.csv recorded it), and the
state: finished, interrupted, diverged or running (pid). A directory whose files cannot be read is
listed with its problem."""


@dataclass
class RunRow:
    run: str
    spec: str = "?"
    dataset: str = "?"
    done: int | None = None
    total: int | None = None
    best: float | None = None
    last: float | None = None
    seconds: float | None = None
    estimated: bool = False      # seconds are training time only
    state: str = "?"

    def cells(self) -> list[str]:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.2f}%"

        epochs = f"{'-' if self.done is None else self.done}/{self.total if self.total else '?'}"
        return [self.run, self.spec, self.dataset, epochs, pct(self.best), pct(self.last),
                _duration(self.seconds, self.estimated), self.state]

    def key(self, column: str) -> tuple:
        """(missing, value): the value to sort by, and whether it is missing."""
        value = {"run": self.run, "spec": self.spec, "dataset": self.dataset, "epochs": self.done,
                 "best": self.best, "last": self.last, "time": self.seconds, "state": self.state}[column]
        return (value is None, value if value is not None else 0)


def _duration(seconds: float | None, estimated: bool) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{'~' if estimated else ''}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def find_runs(root: str) -> list[str]:
    """The run directories under `root` (itself included), not descending into a run's own folders."""
    found, seen = [], 0
    stack = [(root, 0)]
    while stack and seen < MAX_DIRS:
        path, depth = stack.pop()
        seen += 1
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        names = {e.name for e in entries}
        if any(m in names for m in MARKERS):
            found.append(path)
            continue
        if depth < MAX_DEPTH:
            stack.extend((e.path, depth + 1) for e in entries
                         if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name not in SKIP)
    return sorted(found)


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _hparams(run: str) -> dict:
    import yaml

    path = os.path.join(run, "hparams.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh.read(1 << 20))
    if not isinstance(data, dict):
        raise ValueError("hparams.yaml is not a mapping")
    return data


def _newest_state(run: str) -> tuple[dict, str | None]:
    """The newest checkpoint's state (unverified) and its tag ({} and None: no checkpoint)."""
    from ..training.checkpoint import checkpoint_record, list_checkpoints

    infos = list_checkpoints(os.path.join(run, "checkpoints"), verify=False)
    if not infos:
        return {}, None
    state = checkpoint_record(infos[-1].path)["state"]
    return state, infos[-1].tag


def _wall(run: str) -> float | None:
    from ..training.run_log import CSV_NAME, read_csv_rows

    path = os.path.join(run, CSV_NAME)
    if not os.path.isfile(path):
        return None
    walls = [r.get("wall_seconds") for r in read_csv_rows(path)]
    walls = [float(w) for w in walls if w]
    return walls[-1] if walls else None


def _lock_pid(run: str) -> int | None:
    from ..training.checkpoint import pid_alive

    try:
        with open(os.path.join(run, ".alexnetc.lock"), encoding="ascii", errors="replace") as fh:
            text = fh.read(32).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and pid_alive(int(text)) else None


def read_run(run: str, shown: str) -> RunRow:
    """The row of the run in `run` (named `shown`); what cannot be read goes into its state."""
    from ..training.checkpoint import CheckpointError
    from ..training.metrics import MetricsError, read_metrics

    row = RunRow(shown)
    try:
        hp = _hparams(run)
        state, tag = _newest_state(run)
        metrics = os.path.join(run, "metrics.jsonl")
        records = read_metrics(metrics) if os.path.isfile(metrics) else []
        wall = _wall(run)
    except (OSError, ValueError, MetricsError, CheckpointError, UnicodeDecodeError) as exc:
        row.state = f"damaged: {str(exc).replace(run + os.sep, '')[:160]}"
        return row
    except Exception as exc:   # yaml's errors and anything else a damaged file can raise: still one row
        row.state = f"damaged: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        return row
    spec = hp.get("spec") if isinstance(hp.get("spec"), dict) else {}
    row.spec = str(spec.get("name") or state.get("spec_name") or "?")
    data = hp.get("data") or state.get("data")
    row.dataset = os.path.basename(str(data).rstrip("/")) if data else "?"
    train = hp.get("train") if isinstance(hp.get("train"), dict) else {}
    total = train.get("epochs") or state.get("epochs")
    row.total = total if isinstance(total, int) else None
    last: dict[int, dict] = {}
    for r in records:
        e = r.get("epoch")
        if isinstance(e, int) and not isinstance(e, bool):
            last[e] = r
    epochs = [last[e] for e in sorted(last)]
    row.done = len(epochs)
    vals = [v for v in (_finite(r.get("val_top1_err")) for r in epochs) if v is not None]
    row.best, row.last = (min(vals), vals[-1]) if vals else (None, None)
    if wall is not None:
        row.seconds = wall
    elif epochs:
        row.seconds = sum(_finite(r.get("train_seconds")) or 0.0 for r in epochs)
        row.estimated = True
    pid = _lock_pid(run)
    diverged = next((r for r in reversed(records) if r.get("event") == "diverged" or "epoch" in r), None)
    if pid is not None:
        row.state = f"running (pid {pid})"
    elif diverged is not None and diverged.get("event") == "diverged":
        row.state = "diverged"
    elif not epochs and tag is None:
        row.state = "damaged: no epoch logged and no checkpoint (a run killed before its first epoch?)"
    elif not epochs and not tag.startswith("interrupt"):   # imported weights, a module's checkpoint
        row.state = f"weights only ('{tag}' checkpoint, no epoch trained)"
    elif row.total is not None and row.done >= row.total:
        row.state = "finished"
    else:
        row.state = "interrupted"
    return row


def _runs(args: argparse.Namespace) -> int:
    root = args.dir
    if not os.path.isdir(root):
        raise UserError(f"{root}: no such directory" if not os.path.exists(root) else f"{root}: not a directory")
    rows = [read_run(d, os.path.relpath(d, root) if d != root else os.path.basename(os.path.abspath(d)))
            for d in find_runs(root)]
    if not rows:
        say(f"no runs under {root} (a run directory holds metrics.jsonl or checkpoints/)")
        return 0
    rows.sort(key=lambda r: r.key(args.sort)[1], reverse=args.reverse)
    rows.sort(key=lambda r: r.key(args.sort)[0])      # missing values last, whichever the direction
    cells = [list(HEADINGS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADINGS))]
    for c in cells:
        say("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("runs", help="a table of the training runs under a folder (epochs, errors, time, state)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    c.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="the folder to look in (default runs)")
    c.add_argument("--sort", choices=COLUMNS, default="run", help="the column to sort by (default run)")
    c.add_argument("--reverse", action="store_true", help="sort descending")
    c.set_defaults(func=_runs)
