"""The optimisers a run trains with: the paper's SGD (the default) and AdamW (`adamw.py`), chosen
by train.optimizer (`build_optimizer`). The learning-rate schedules are `schedule.py`'s.

SGD's update (section 5 of the paper), per parameter with the spec's multipliers:
    v <- momentum * v - weight_decay * decay_mult * lr * lr_mult * w - lr * lr_mult * dL/dw
    w <- w + v
Its velocity is checkpointed as ``momentum/<name>``.

Every optimiser has `kind`, `state_prefixes` (its checkpoint tensors' prefixes), `step(grads, lr)`,
`state_tensors()`, `state()` (its record in a checkpoint) and `load_state(tensors, record)`.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ...compiler.schema import with_defaults
from .adamw import AdamW
from .update_groups import update_groups


class SGD:
    kind = "sgd"
    state_prefixes = ("momentum/",)
    state_what, state_restart = "momentum buffers", "SGD's momentum"   # for messages

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
        for (lr_mult, decay_mult), groups in update_groups(grads, self.params, self.mults).items():
            eps = lr * lr_mult
            for names in groups:
                w = [self.params[n] for n in names]
                v = [self.velocity[n] for n in names]
                g = [grads[n] for n in names]
                torch._foreach_mul_(v, self.momentum)
                if self.weight_decay * decay_mult:
                    torch._foreach_add_(v, w, alpha=-self.weight_decay * decay_mult * eps)
                torch._foreach_add_(v, g, alpha=-eps)
                torch._foreach_add_(w, v)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"momentum/{n}": v for n, v in self.velocity.items()}

    def state(self) -> dict:
        return {"type": self.kind}

    def load_state(self, tensors: Mapping[str, torch.Tensor], record: Mapping | None = None) -> None:
        """The velocity in `tensors` (absent buffers stay zero: --fresh-optimizer)."""
        for n, v in self.velocity.items():
            key = f"momentum/{n}"
            if key in tensors:
                v.copy_(tensors[key].to(v.device, v.dtype))



# train.optimizer's types and the prefixes of their checkpoint tensors (every optimiser's, so a
# checkpoint's optimizer state is recognised whichever optimiser wrote it).
OPTIMIZERS = {"sgd": SGD, "adamw": AdamW}
STATE_PREFIXES = tuple(p for cls in OPTIMIZERS.values() for p in cls.state_prefixes)


def build_optimizer(cfg: Mapping, params: Mapping[str, torch.Tensor], mults: Mapping[str, tuple[float, float]], *,
                    momentum: float, weight_decay: float) -> "SGD | AdamW":
    """The optimiser a train.optimizer section (`{type, betas, eps}`, defaults filled) asks for."""
    if cfg["type"] == "adamw":
        return AdamW(params, mults, weight_decay=weight_decay, betas=tuple(cfg["betas"]), eps=cfg["eps"])
    return SGD(params, mults, momentum=momentum, weight_decay=weight_decay)
