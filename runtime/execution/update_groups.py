"""What every optimiser's step shares: the parameters with a gradient, grouped by device and by the
spec's (lr_mult, decay_mult), so each group is updated by a handful of fused ``torch._foreach_*``
kernels instead of one small kernel per tensor."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch


def update_groups(grads: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor],
                  mults: Mapping[str, tuple[float, float]]) -> dict[tuple[float, float], list[list[str]]]:
    """``{(lr_mult, decay_mult): [names on one device, ...]}`` for the parameters in `grads` (a missing
    multiplier is 1)."""
    by_device: dict[tuple, list[str]] = defaultdict(list)
    for name in grads:
        by_device[(params[name].device, *mults.get(name, (1.0, 1.0)))].append(name)
    out: dict[tuple[float, float], list[list[str]]] = defaultdict(list)
    for (_, lr_mult, decay_mult), names in by_device.items():
        out[(lr_mult, decay_mult)].append(names)
    return out
