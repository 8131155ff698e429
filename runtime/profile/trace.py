"""A profile as a Chrome trace (the Trace Event format that Perfetto and chrome://tracing load).

One process ("pid") per logical device, so the towers sit side by side, plus one for the optimizer;
one thread ("tid") per CUDA stream within it ("main" on the CPU). Every timed node is a complete
event ("ph": "X") in every instrumented iteration, named after the node, with its layer, phase and
op as arguments; a cross-device copy is drawn on its destination device, with both devices named.
Iterations follow one another on the time axis (each starts where the previous one ended).
"""
from __future__ import annotations

import json
from typing import Any

from .profiler import Profile

TRACE_VERSION = 1


def trace_events(p: Profile) -> dict[str, Any]:
    lanes: dict[str, int] = {}
    threads: dict[tuple[str, str], int] = {}
    nodes = {id(c.node): (c, m.row) for m in p.rows for cs in m.row.nodes.values() for c in cs}
    events: list[dict[str, Any]] = []
    offset = 0.0
    for i, it in enumerate(p.iterations):
        for span in it.spans:
            pid = lanes.setdefault(span.lane, len(lanes) + 1)
            tid = threads.setdefault((span.lane, span.stream), len(threads) + 1)
            if isinstance(span.key, int):
                cost, row = nodes[span.key]
                name = p.node_names[span.key]
                args = {"layer": row.label, "phase": cost.phase, "op": cost.node.op, "device": row.device,
                        "flops": cost.flops, "bytes": cost.bytes, "iteration": i}
                cat = cost.phase
            else:
                name = "gradient buckets" if span.key[0] == "buckets" else "sgd update"
                args, cat = {"iteration": i}, "backward"
            events.append({"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid,
                           "ts": round((offset + span.start) * 1e6, 3), "dur": round(span.seconds * 1e6, 3),
                           "args": args})
        offset += it.step_s
    meta = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": lane}} for lane, pid in lanes.items()]
    meta += [{"name": "thread_name", "ph": "M", "pid": lanes[lane], "tid": tid, "args": {"name": stream}}
             for (lane, stream), tid in threads.items()]
    return {"traceEvents": meta + events, "displayTimeUnit": "ms",
            "otherData": {"spec": p.net.name, "batch": p.net.batch, "dtype": p.dtype, "backend": p.backend,
                          "iterations": len(p.iterations), "alexnetc_trace_version": TRACE_VERSION}}


def write_trace(p: Profile, path: str) -> None:
    from ..atomic import replacing

    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(trace_events(p), fh)
