"""Initial values: each parameter drawn from its spec initialiser, reproducibly; state variables set to
their constant initial values."""
from __future__ import annotations

import math
import zlib

import torch

from ...compiler import CompiledNet


def init_params(net: CompiledNet, seed: int) -> dict[str, torch.Tensor]:
    """Parameters drawn from the spec's initialisers (CPU, fp32), reproducible from `seed`.

    Each parameter has its own generator seeded from (seed, name), so adding a layer does not change
    the others' initial values, and towers get different draws.
    """
    out = {}
    for n in net.graph.params():
        shape = n.shapes[0]
        init = dict(n.attrs.get("init") or {"type": "constant", "value": 0.0})
        g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(n.name.encode())) % (2 ** 63))
        kind = init.get("type")
        if kind == "gaussian":
            t = torch.randn(shape, generator=g) * float(init["std"]) + float(init.get("mean", 0.0))
        elif kind == "kaiming":
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            t = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif kind == "uniform":
            t = (torch.rand(shape, generator=g) * 2 - 1) * float(init["scale"])
        else:
            t = torch.full(shape, float(init.get("value", 0.0)))
        out[n.name] = t
    return out


def init_state(net: CompiledNet) -> dict[str, torch.Tensor]:
    """Initial state variables (batch norm's running mean 0 and variance 1: their constant `init`)."""
    out = {}
    for n in net.graph.variables():
        if n.role == "state":
            init = dict(n.attrs.get("init") or {"type": "constant", "value": 0.0})
            out[n.name] = torch.full(n.shapes[0], float(init.get("value", 0.0)))
    return out
