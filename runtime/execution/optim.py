"""The paper's SGD and learning-rate schedules.

Update (section 5 of the paper), per parameter with the spec's multipliers:
    v <- momentum * v - weight_decay * decay_mult * lr * lr_mult * w - lr * lr_mult * dL/dw
    w <- w + v
Schedules: constant; step (multiply by `factor` every `every` epochs); plateau (multiply by `factor`
when the validation top-1 error has not improved for `patience` epochs, at most `max_drops` times —
"divided by 10 when the validation error rate stopped improving ... reduced three times").
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch

from ...compiler.schema import with_defaults


class SGD:
    def __init__(self, params: Mapping[str, torch.Tensor], mults: Mapping[str, tuple[float, float]], *,
                 momentum: float | None = None, weight_decay: float | None = None):
        """`momentum`, `weight_decay`: None takes train.momentum's and train.weight_decay's schema defaults."""
        defaults = with_defaults(None, "train")
        self.params = params
        self.momentum = defaults["momentum"] if momentum is None else momentum
        self.weight_decay = defaults["weight_decay"] if weight_decay is None else weight_decay
        self.mults = dict(mults)                       # name -> (lr_mult, decay_mult)
        self.velocity = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def step(self, grads: Mapping[str, torch.Tensor], lr: float) -> None:
        # Group by (device, multipliers) so each group is a handful of fused foreach kernels.
        groups: dict[tuple, list[str]] = defaultdict(list)
        for name in grads:
            groups[(self.params[name].device, *self.mults.get(name, (1.0, 1.0)))].append(name)
        for (_, lr_mult, decay_mult), names in groups.items():
            w = [self.params[n] for n in names]
            v = [self.velocity[n] for n in names]
            g = [grads[n] for n in names]
            eps = lr * lr_mult
            torch._foreach_mul_(v, self.momentum)
            if self.weight_decay * decay_mult:
                torch._foreach_add_(v, w, alpha=-self.weight_decay * decay_mult * eps)
            torch._foreach_add_(v, g, alpha=-eps)
            torch._foreach_add_(w, v)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"momentum/{n}": v for n, v in self.velocity.items()}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        for n, v in self.velocity.items():
            key = f"momentum/{n}"
            if key in tensors:
                v.copy_(tensors[key].to(v.device, v.dtype))


class LRSchedule:
    def __init__(self, base_lr: float, cfg: Mapping | None):
        """`cfg`: a train.schedule section (None: the default); keys it leaves out take the schema's defaults."""
        cfg = with_defaults(cfg or with_defaults(None, "train")["schedule"], "train", "schedule")
        self.kind = cfg["type"]
        self.factor = float(cfg["factor"])
        self.every = int(cfg["every"])
        self.patience = int(cfg["patience"])
        self.max_drops = int(cfg["max_drops"])
        self.lr = float(base_lr)
        self.base_lr = float(base_lr)
        self.best: float | None = None
        self.bad_epochs = 0
        self.drops = 0

    def end_epoch(self, epoch: int, val_top1_error: float | None) -> bool:
        """Update after `epoch` (1-based) finished; True when the learning rate changed."""
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
