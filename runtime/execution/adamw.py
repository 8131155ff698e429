"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW computes
it, with the spec's per-parameter multipliers.

Per parameter w with gradient g, at update t (1-based), lr' = lr x lr_mult and wd' = weight_decay x
decay_mult:
    w <- w (1 - lr' wd')                      (decoupled: the decay never enters the moments)
    m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
    w <- w - lr' / (1 - b1^t) x m / (sqrt(v) / sqrt(1 - b2^t) + eps)
The moments are checkpointed as ``exp_avg/<name>`` and ``exp_avg_sq/<name>`` (torch's names) and the
update count t in the checkpoint's record, so a resumed run continues exactly.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from .update_groups import update_groups

STATE_PREFIXES = ("exp_avg/", "exp_avg_sq/")


class AdamW:
    kind = "adamw"
    state_prefixes = STATE_PREFIXES
    state_what, state_restart = "AdamW's moments", "AdamW (moments and update count)"   # for messages

    def __init__(self, params: Mapping[str, torch.Tensor], mults: Mapping[str, tuple[float, float]], *,
                 weight_decay: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.weight_decay = float(weight_decay)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.mults = dict(mults)                       # name -> (lr_mult, decay_mult)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Mapping[str, torch.Tensor], lr: float) -> None:
        self.steps += 1
        bias1 = 1 - self.beta1 ** self.steps
        bias2_sqrt = math.sqrt(1 - self.beta2 ** self.steps)
        for (lr_mult, decay_mult), groups in update_groups(grads, self.params, self.mults).items():
            eps = lr * lr_mult
            for names in groups:
                w = [self.params[n] for n in names]
                m = [self.exp_avg[n] for n in names]
                v = [self.exp_avg_sq[n] for n in names]
                g = [grads[n] for n in names]
                if self.weight_decay * decay_mult:
                    torch._foreach_mul_(w, 1 - eps * self.weight_decay * decay_mult)
                torch._foreach_lerp_(m, g, 1 - self.beta1)
                torch._foreach_mul_(v, self.beta2)
                torch._foreach_addcmul_(v, g, g, value=1 - self.beta2)
                denom = torch._foreach_sqrt(v)
                torch._foreach_div_(denom, bias2_sqrt)
                torch._foreach_add_(denom, self.eps)
                torch._foreach_addcdiv_(w, m, denom, value=-eps / bias1)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"exp_avg/{n}": t for n, t in self.exp_avg.items()}
        out.update({f"exp_avg_sq/{n}": t for n, t in self.exp_avg_sq.items()})
        return out

    def state(self) -> dict:
        return {"type": self.kind, "steps": self.steps}

    def load_state(self, tensors: Mapping[str, torch.Tensor], record: Mapping | None) -> None:
        """The moments in `tensors` and the update count in `record` (a checkpoint's "optimizer");
        without moments (--fresh-optimizer) AdamW starts over at update 1."""
        found = False
        for prefix, bufs in (("exp_avg/", self.exp_avg), ("exp_avg_sq/", self.exp_avg_sq)):
            for n, t in bufs.items():
                if prefix + n in tensors:
                    t.copy_(tensors[prefix + n].to(t.device, t.dtype))
                    found = True
        self.steps = int((record or {}).get("steps", 0)) if found else 0
