"""Learning-rate schedules: the paper's (constant, step, plateau) and cosine decay, each with an
optional linear warm-up.

Between epochs (`end_epoch`): constant; step (multiply by `factor` every `every` epochs); plateau
(multiply by `factor` when the validation top-1 error has not improved for `patience` epochs, at most
`max_drops` times: "divided by 10 when the validation error rate stopped improving ... reduced three
times"). Within epochs (`lr_at(step)`, the learning rate of update number `step`, 0-based):

* warm-up: over the first W = round(warmup_epochs x steps per epoch) updates the rate climbs
  linearly, update s using rate x (s + 1) / W;
* cosine: after the warm-up, from the base rate down to `min_lr` over the rest of the run's T =
  epochs x steps per epoch updates: min_lr + (lr - min_lr) x (1 + cos(pi (s - W) / (T - W))) / 2.

`lr` is the epoch-level rate (the base rate for cosine, the peak of its curve): what `end_epoch`
changes, what a checkpoint saves and what `--lr` on resume replaces. A resumed run continues exactly
because `lr_at` depends only on the update number and that state; a resumed cosine run given another
`--epochs` decays over the new length from where it stands.
"""
from __future__ import annotations

import math
from typing import Mapping

from ...compiler.schema import with_defaults


class LRSchedule:
    def __init__(self, base_lr: float, cfg: Mapping | None, *, steps_per_epoch: int | None = None,
                 epochs: int | None = None):
        """`cfg`: a train.schedule section (None: the default); keys it leaves out take the schema's
        defaults. `steps_per_epoch` and `epochs` set the length of a warm-up and of a cosine decay."""
        cfg = with_defaults(cfg or with_defaults(None, "train")["schedule"], "train", "schedule")
        self.kind = cfg["type"]
        self.factor = float(cfg["factor"])
        self.every = int(cfg["every"])
        self.patience = int(cfg["patience"])
        self.max_drops = int(cfg["max_drops"])
        self.min_lr = float(cfg["min_lr"])
        self.lr = float(base_lr)
        self.base_lr = float(base_lr)
        self.best: float | None = None
        self.bad_epochs = 0
        self.drops = 0
        per_epoch = max(int(steps_per_epoch or 0), 0)
        self.warmup_steps = round(float(cfg["warmup_epochs"]) * per_epoch)
        self.total_steps = per_epoch * int(epochs or 0)
        if self.kind == "cosine" and self.total_steps <= 0:
            raise ValueError("a cosine schedule needs the run's steps per epoch and epochs")

    def lr_at(self, step: int) -> float:
        """The learning rate of update `step` (0-based, counted over the whole run)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind != "cosine":
            return self.lr
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def describe(self) -> str:
        """'lr 0.01' for a constant rate; the schedule and warm-up otherwise (the start of a run's log)."""
        text = f"lr {self.lr:g}"
        if self.kind != "constant":
            text += f", {self.kind} schedule" + (f" to {self.min_lr:g}" if self.kind == "cosine" else "")
        if self.warmup_steps:
            text += f", warm-up over {self.warmup_steps} update{'s' if self.warmup_steps != 1 else ''}"
        return text

    def end_epoch(self, epoch: int, val_top1_error: float | None) -> bool:
        """Update after `epoch` (1-based) finished; True when the epoch-level learning rate changed."""
        if self.kind == "step":
            if epoch % self.every == 0:
                self.lr *= self.factor
                self.drops += 1
                return True
            return False
        if self.kind != "plateau" or val_top1_error is None:
            return False
        if self.best is None or val_top1_error < self.best - 1e-12:
            self.best, self.bad_epochs = val_top1_error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            self.lr *= self.factor
            self.drops += 1
            self.bad_epochs = 0
            return True
        return False

    def state(self) -> dict:
        return {"kind": self.kind, "lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs,
                "drops": self.drops}

    def load_state(self, s: Mapping) -> None:
        self.lr, self.best = float(s["lr"]), s.get("best")
        self.bad_epochs, self.drops = int(s.get("bad_epochs", 0)), int(s.get("drops", 0))
