"""Will a compiled net fit where it is about to be bound? An estimate from the graph's shapes, checked
before anything is allocated, so a spec asking for quadrillions of parameters or a 22 GB activation is
refused with a message instead of an allocator traceback.

The estimate reads only the compiled forward graph: every node's output ``shapes`` (at the bound batch
size) and dtype (the run's compute dtype, `train.dtype`, unless the node says otherwise), grouped by
the real device its logical device is bound to. Training counts each parameter as the weight, its
gradient and the optimizer's state per parameter (one buffer for SGD's momentum, two for AdamW's
moments: ``optimizer_buffers``), in the master dtype, and each activation twice (the output kept for backward and
its gradient); inference counts each once. Mixed precision adds the per-step compute copy of every
parameter. It is
deliberately simple and somewhat pessimistic: the memory plan reuses buffers, this does not.

``MEMORY_FRACTION`` of the memory the device reports available may be claimed
(``/proc/meminfo``'s MemAvailable for the CPU, ``torch.cuda.mem_get_info`` for a GPU);
``$ALEXNETC_MAX_BIND_GIB`` replaces that with a fixed budget in GiB per device.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ...compiler import CompiledNet

MEMORY_FRACTION = 0.9
MAX_BIND_ENV = "ALEXNETC_MAX_BIND_GIB"
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int8": 1,
               "uint8": 1, "bool": 1}
GIB = 1 << 30


class MemoryLimitError(Exception):
    """A net would not fit on its device; the message gives the estimate, the budget and the override."""


def estimate_bytes(net: CompiledNet, for_training: bool = True, dtype: str = "float32",
                   optimizer_buffers: int = 1) -> dict[str, int]:
    """Estimated bytes per logical device for binding ``net`` (a CompiledNet) at its batch size, training
    (with ``optimizer_buffers`` tensors of optimizer state per parameter) or evaluating in precision
    ``dtype`` (a `train.dtype` value)."""
    from ...compiler.program import TRAIN_DTYPES, master_dtype

    if dtype not in TRAIN_DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {TRAIN_DTYPES}")
    compute, master = DTYPE_BYTES[dtype], DTYPE_BYTES[master_dtype(dtype)]
    out: dict[str, int] = {}
    for node in net.graph.nodes():
        dev = node.device or (net.devices[0] if net.devices else "gpu0")
        shapes = node.shapes or ()
        each = DTYPE_BYTES.get(str(node.attrs["dtype"]), 4) if "dtype" in node.attrs else compute
        if node.is_variable and not node.is_param:
            copies = 1  # data, labels
        elif node.is_variable:
            # weight, gradient, optimizer state in the master dtype; under mixed precision also the compute copy
            copies = 2 + optimizer_buffers if for_training else 1
            each = master * copies + (compute if compute != master else 0)
            copies = 1
        else:
            copies = 2 if for_training else 1
        for shape in shapes:
            out[dev] = out.get(dev, 0) + math.prod(int(d) for d in shape) * each * copies
    return out


def available_bytes(device: Any) -> tuple[int | None, str]:
    """(bytes this process may claim on ``device``, how that was decided); None when unknown."""
    raw = os.environ.get(MAX_BIND_ENV, "").strip()
    if raw:
        try:
            gib = float(raw)
        except ValueError:
            gib = -1.0
        if not (gib > 0 and math.isfinite(gib)):
            raise MemoryLimitError(f"{MAX_BIND_ENV}={raw[:40]!r}: expected a positive number of GiB")
        return int(gib * GIB), f"{MAX_BIND_ENV}={raw}"
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of the GPU's free memory"
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    kib = int(line.split()[1])
                    return int(kib * 1024 * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of available RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(avail * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of available RAM"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def check_fits(net: CompiledNet, group2ctx: Mapping[str, object], for_training: bool = True,
               dtype: str = "float32", optimizer_buffers: int = 1) -> dict[str, int]:
    """Raise :class:`MemoryLimitError` when ``net`` would not fit on the devices it is bound to.

    Returns the estimate per real device (bytes)."""
    per_real: dict[str, int] = {}
    real_of: dict[str, object] = {}
    for logical, n in estimate_bytes(net, for_training, dtype, optimizer_buffers).items():
        dev = group2ctx.get(logical, next(iter(group2ctx.values())) if group2ctx else "cpu")
        per_real[str(dev)] = per_real.get(str(dev), 0) + n
        real_of[str(dev)] = dev
    for name, need in per_real.items():
        budget, how = available_bytes(real_of[name])
        if budget is not None and need > budget:
            raise MemoryLimitError(
                f"this spec needs about {need / GIB:,.1f} GiB for batch {net.batch} on {name}"
                f"{' to train' if for_training else ''}, more than the {budget / GIB:,.1f} GiB allowed ({how}); "
                f"lower the batch size or the layer sizes, or set {MAX_BIND_ENV} to change the budget")
    return per_real
