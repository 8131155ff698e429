"""The run directory (``--out``): one run per directory, owned by one training at a time.

``OUT/.alexnetc.lock`` holds the owner's pid and keeps a second training out (a lock whose process is
gone is taken over, with a message). A directory that already holds a run's checkpoints or metrics is
refused unless the run is resumed, or cleared with ``overwrite`` (its checkpoints, metrics, curves and
`run_log` files deleted). On resume, ``metrics.jsonl`` is rewritten from the checkpoint's history, so a crash never
leaves an epoch logged twice. Under torchrun only rank 0 owns the directory.
"""
from __future__ import annotations

import json
import os
from typing import Callable

from . import checkpoint as ckpt
from .errors import TrainingEnvironmentError, TrainingError
from .metrics import MetricsError, read_metrics
from .run_contents import refuse_new_run, run_contents

LOCK_NAME = ".alexnetc.lock"


class RunDir:
    """The files of one run in `out`: checkpoints/, metrics.jsonl, curves.png, cache/ and the lock."""

    def __init__(self, out: str, log: Callable[[str], None]):
        self.out = out
        self.log = log
        self.metrics_path = os.path.join(out, "metrics.jsonl")
        self.curves_path = os.path.join(out, "curves.png")
        self.ckpt_dir = os.path.join(out, "checkpoints")
        self.cache_dir = os.path.join(out, "cache")
        self.lock_path = os.path.join(out, LOCK_NAME)
        self._locked = False

    def lock(self) -> None:
        """Take ``OUT/.alexnetc.lock`` (pid inside); a live owner is an error, a dead one's lock is taken over."""
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise TrainingError(f"--out {self.out}: not a directory")
        try:
            os.makedirs(self.out, exist_ok=True)
        except OSError as exc:
            raise TrainingEnvironmentError(f"{self.out}: cannot create the run directory: {exc.strerror or exc}") from None
        mine = f"{os.getpid()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.lock_path)
                if owner is not None and owner != os.getpid() and ckpt.pid_alive(owner):
                    raise TrainingError(f"{self.out} is in use by another training (pid {owner}, lock file "
                                        f"{self.lock_path}); wait for it to finish or train into another --out (if no "
                                        f"training is running, pid {owner} belongs to another program: remove the lock file)"
                                        ) from None
                self.log(f"taking over the stale lock {self.lock_path} (pid {owner if owner is not None else '?'} "
                         "is no longer running)")
                try:
                    os.unlink(self.lock_path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise TrainingEnvironmentError(f"{self.lock_path}: cannot remove the stale lock: "
                                                   f"{exc.strerror or exc}") from None
                continue
            except OSError as exc:
                raise TrainingEnvironmentError(f"{self.lock_path}: cannot create the lock file: "
                                               f"{exc.strerror or exc}") from None
            try:
                os.write(fd, mine.encode())
            finally:
                os.close(fd)
            self._locked = True
            return
        raise TrainingError(f"{self.lock_path}: another process keeps taking this run's lock")

    def unlock(self) -> None:
        if self._locked and _lock_owner(self.lock_path) == os.getpid():
            try:
                os.unlink(self.lock_path)
            except OSError:
                pass
        self._locked = False

    def claim(self, resuming: bool, overwrite: bool) -> None:
        """One run per directory: refuse to mix a new run into another's files, or clear them (overwrite)."""
        refusal = refuse_new_run(run_contents(self.out))
        if resuming or refusal is None:
            return
        if not overwrite:
            raise TrainingError(refusal)
        removed = 0
        try:
            removed += ckpt.remove_checkpoints(self.ckpt_dir)
            from .run_log import run_log_files

            for p in (self.metrics_path, self.curves_path, *run_log_files(self.out)):
                if os.path.isfile(p):
                    os.unlink(p)
                    removed += 1
        except OSError as exc:
            raise TrainingEnvironmentError(f"{self.out}: cannot clear the previous run: {exc.strerror or exc}") from None
        self.log(f"--overwrite: removed the previous run's checkpoints, metrics and curves from {self.out} "
                 f"({removed} files)")

    def rewrite_metrics(self, history: list) -> None:
        """metrics.jsonl := the checkpoint's history (epochs logged after it, by a run that then crashed,
        are dropped: they will be trained and logged again, never twice)."""
        from ..atomic import replacing

        text = "".join(json.dumps(r, allow_nan=True, separators=(",", ":")) + "\n" for r in history)
        try:
            with replacing(self.metrics_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise TrainingEnvironmentError(f"{self.metrics_path}: cannot rewrite: {exc.strerror or exc}") from None

    def logged(self, epoch: int) -> bool:
        """Whether metrics.jsonl already has the record of `epoch`."""
        try:
            return any(r.get("epoch") == epoch for r in read_metrics(self.metrics_path))
        except MetricsError:
            return False


def _lock_owner(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(32).strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
