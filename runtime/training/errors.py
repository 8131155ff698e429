"""The errors of training, in one module every other training module may import (none imports back).

`TrainingError`: bad input or a run that cannot go on (exit 2); `TrainingEnvironmentError`: the machine
failed the run (exit 1); `Terminated`: SIGTERM, handled as Ctrl-C (exit 143); `Diverged`: raised inside
a step, turned by the trainer into a TrainingError naming the step; `NoUsableImages`: a split with no
readable image; `StoppedByRank0`: under torchrun, what the other processes raise when rank 0 refused.
"""
from __future__ import annotations


class TrainingError(Exception):
    """Training cannot go on (non-finite loss, mismatched checkpoint); the message says why."""


class TrainingEnvironmentError(Exception):
    """The machine failed the run (disk full, read-only directory); the message names the path."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled exactly like Ctrl-C (a checkpoint is saved), then exit status 143."""

    def __init__(self, signum: int = 15):
        super().__init__(f"signal {signum}")
        self.signum = signum


class Diverged(Exception):
    """A step made the loss, the gradient norm or a parameter non-finite; `what` says which (the trainer
    turns it into a TrainingError naming the step and the last good checkpoint)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class NoUsableImages(TrainingError):
    """A split yielded no image that could be read: an error, never a score."""


class StoppedByRank0(Exception):
    """Under torchrun: rank 0 refused or failed the run and said why; this process stops without a word
    of its own (one clear line from rank 0, no second-hand advice), with rank 0's exit `status`."""

    def __init__(self, status: int):
        super().__init__(f"stopped: rank 0 refused or failed the run (exit status {status})")
        self.status = status
