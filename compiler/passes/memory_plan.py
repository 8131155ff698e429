"""Pass: memory plan. Liveness over the execution order, buffer reuse per device, planned peak.

Values are computed in `Graph.nodes()` order (the order the executor runs). Each op output gets a
storage buffer on its node's device; a buffer returns to that device's free list after the value's
last use and is reused only on the same device (as MXNet's PlanMemory), best fit by size. Graph
outputs and variables (inputs, parameters) are never freed. An analysis, not a rewrite: the result is a
`program.MemoryPlan`: per device the planned peak of activation bytes, the pooled storage bytes and the
parameter bytes; and ``release_after``: for each step, the values whose last use it was, as ``(step of
the producing node, output index)`` pairs in `Graph.nodes()` order (indices, not names: names are the
user's and may clash). Output dtypes come from the op descriptors (`OpDef.output_dtypes`).
"""
from __future__ import annotations

import math
from collections import defaultdict

from ..graph import Graph, Node
from ..ops import get_op
from ..program import DeviceMemory, MemoryPlan, master_dtype

DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int8": 1, "int16": 2, "int32": 4, "int64": 8}


def _nbytes(shape, dtype: str) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]


def value_dtype(node: Node, k: int, dtype: str) -> str:
    """The dtype of output `k` of `node` in a run whose values between ops are in `dtype`: what the op's
    descriptor declares (`OpDef.output_dtypes`), else `dtype`. Variables: parameters as the kernels read
    them (the compute copy), state in the master dtype, labels int64. The one rule the memory plan and
    the cost model (compiler/cost) count bytes by."""
    if node.is_variable:
        if node.role == "state":
            return master_dtype(dtype)
        return "int64" if node.role == "label" else dtype
    return get_op(node.op).output_dtypes.get(k, dtype)


def plan_memory(graph: Graph, dtype: str = "float32") -> MemoryPlan:
    """`dtype`: the compute dtype of the values between ops (a `train.dtype`); parameters are counted
    in their master dtype, plus the compute copy a mixed-precision step makes of them."""
    master = master_dtype(dtype)
    nodes = graph.nodes()
    if any(n.shapes is None for n in nodes):
        raise ValueError("plan_memory() needs a shape-annotated graph: run infer_shapes first")
    last_use: dict[tuple[int, int], int] = {}
    for i, n in enumerate(nodes):
        for e in n.inputs:
            last_use[(id(e.node), e.index)] = i
    keep = {(id(e.node), e.index) for e in graph.outputs}

    free: dict[str, list[int]] = defaultdict(list)        # device -> sizes of free buffers
    pool: dict[str, int] = defaultdict(int)               # device -> bytes of all buffers made
    live: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    params: dict[str, int] = defaultdict(int)
    owned: dict[tuple[int, int], tuple[str, int, int]] = {}   # value -> (device, buffer size, live bytes)
    release_after: list[list[tuple[int, int]]] = [[] for _ in nodes]
    step_of = {id(n): i for i, n in enumerate(nodes)}
    reused = 0

    for i, n in enumerate(nodes):
        dev = n.device or "host"
        if n.is_variable:
            if n.is_param:   # the master copy, and the compute copy a mixed-precision step casts
                params[dev] += _nbytes(n.shapes[0], master) + (_nbytes(n.shapes[0], dtype)
                                                               if master != dtype else 0)
            elif n.role == "state":   # resident for the whole run, in the master dtype (running statistics)
                params[dev] += _nbytes(n.shapes[0], master)
            continue
        for k, shape in enumerate(n.shapes):
            size = _nbytes(shape, value_dtype(n, k, dtype))
            fits = [s for s in free[dev] if s >= size and s <= 2 * size]
            if fits:
                best = min(fits)
                free[dev].remove(best)
                reused += 1
            else:
                best = size
                pool[dev] += size
            owned[(id(n), k)] = (dev, best, size)
            live[dev] += size
            if (id(n), k) not in keep and (id(n), k) not in last_use:
                last_use[(id(n), k)] = i  # never read (e.g. a saved output nobody needs): free at once
        peak[dev] = max(peak[dev], live[dev])
        # Values whose last reader is this step (its inputs, or its own outputs nobody reads) are freed.
        touched = [(e.node, e.index) for e in n.inputs] + [(n, k) for k in range(len(n.shapes))]
        for src, k in touched:
            key = (id(src), k)
            if key in owned and key not in keep and last_use.get(key) == i:
                d, buf, size = owned.pop(key)
                free[d].append(buf)
                live[d] -= size
                release_after[i].append((step_of[id(src)], k))

    devices = sorted(set(pool) | set(params))
    return MemoryPlan(
        dtype=dtype,
        devices={d: DeviceMemory(peak.get(d, 0), pool.get(d, 0), params.get(d, 0)) for d in devices},
        buffers_reused=reused,
        release_after=tuple(tuple(step) for step in release_after),
    )
