"""What a run directory holds, and the refusals that keep one run per directory: `train` (without
--resume or --overwrite) and `import` refuse a directory that holds another run's files; `--resume`
refuses one with nothing to resume, pointing at the one command that works.

A run whose first checkpoint never completed (killed while writing it: ``metrics.jsonl`` and perhaps a
temporary or orphaned tensor file, but no checkpoint record) has nothing to resume: both messages then
say ``--overwrite`` starts it again, instead of sending the user from --resume to train and back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import checkpoint as ckpt

METRICS_NAME = "metrics.jsonl"
CHECKPOINTS_NAME = "checkpoints"


@dataclass(frozen=True)
class RunContents:
    """A run directory's files: checkpoint records (verified or not), metrics, and the leftovers of a
    checkpoint whose write was interrupted (temporary files, tensor files without a record)."""

    out: str
    checkpoints: int
    metrics: bool
    leftovers: int

    def __bool__(self) -> bool:
        return bool(self.checkpoints or self.metrics)

    def describe(self) -> str:
        """'2 checkpoints, metrics.jsonl' (what makes it a run)."""
        parts = [f"{self.checkpoints} checkpoint{'s' if self.checkpoints != 1 else ''}"] if self.checkpoints else []
        return ", ".join(parts + ([METRICS_NAME] if self.metrics else []))

    @property
    def unfinished(self) -> bool:
        """Started but stopped before its first checkpoint was complete: nothing to resume."""
        return not self.checkpoints and (self.metrics or self.leftovers > 0)


def run_contents(out: str | os.PathLike) -> RunContents:
    out = str(out)
    directory = os.path.join(out, CHECKPOINTS_NAME)
    records = ckpt.list_checkpoints(directory, verify=False)
    leftovers = 0
    try:
        for e in os.scandir(directory):
            if e.name.startswith(ckpt._TMP_PREFIX) or (e.name.startswith("ckpt-") and e.name.endswith(".safetensors")
                                                      and not os.path.exists(e.path[:-len(".safetensors")] + ".json")):
                leftovers += 1
    except OSError:
        pass
    return RunContents(out, len(records), os.path.isfile(os.path.join(out, METRICS_NAME)), leftovers)


def unfinished_advice(contents: RunContents) -> str:
    return (f"the run in {contents.out} stopped before its first checkpoint was complete, so there is nothing to "
            f"resume; start it again with --overwrite (or train into a new --out)")


def refuse_new_run(contents: RunContents, command: str = "train") -> str | None:
    """Why `command` may not start a new run in ``contents.out`` (None: it may)."""
    if not contents:
        return None
    if command == "import":
        return f"{contents.out} already holds a run ({contents.describe()}); import into a new directory"
    if contents.unfinished:
        return f"{contents.out} holds a run with no complete checkpoint ({contents.describe()}): {unfinished_advice(contents)}"
    return (f"{contents.out} already holds a training run ({contents.describe()}): pass --resume to continue it, "
            "--overwrite to replace it, or --out DIR to train into a new directory")


def refuse_resume(contents: RunContents) -> str:
    """Why --resume cannot continue from ``contents.out`` when it holds no checkpoint record."""
    if contents.unfinished:
        return f"--resume: {unfinished_advice(contents)}"
    return (f"--resume: no checkpoint in {os.path.join(contents.out, CHECKPOINTS_NAME)} to continue from; train "
            "without --resume to start a new run")
