"""`alexnetc profile`'s tables: the measured profile (per layer and device) and the `--predict` roofline
table, as text and as JSON. Formatting only: the numbers come from `profiler.py` and
`compiler/cost`.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ...compiler.cost import CostRow
from .format import gflop, mib, ms, row_label, table
from .profiler import MeasuredRow, Profile


def _sorter(key: str) -> Callable[[Any], Any] | None:
    return {
        "order": None,
        "total": lambda m: -m.total,
        "forward": lambda m: -m.seconds["forward"],
        "backward": lambda m: -m.seconds["backward"],
        "flops": lambda m: -(m.row.flops["forward"] + m.row.flops["backward"]),
        "bytes": lambda m: -(m.row.bytes["forward"] + m.row.bytes["backward"]),
        "kept": lambda m: -m.row.kept,
        "name": lambda m: (m.row.label, m.row.device),
    }[key]


def peak_seconds(p: Profile, r: CostRow) -> float | None:
    """The row's FLOPs at its device's peak, node by node in each node's precision (None: no peak known)."""
    peaks = p.peaks.get(r.device)
    if r.kind in ("copy", "buckets") or peaks is None:
        return None
    if r.kind == "update":
        fp32 = peaks.peak("fp32")
        return r.flops["backward"] / fp32 if fp32 else None
    total = 0.0
    for nodes in r.nodes.values():
        for c in nodes:
            if c.flops:
                peak = peaks.peak(c.precision)
                if not peak:
                    return None
                total += c.flops / peak
    return total


def measured_rows(p: Profile, sort: str = "order") -> list[MeasuredRow]:
    key = _sorter(sort)
    return sorted(p.rows, key=key) if key else list(p.rows)


def format_profile(p: Profile, sort: str = "order") -> str:
    step = p.step_s
    head = ("layer", "op", "device", "fwd ms", "bwd ms", "% step", "fwd GFLOP", "bwd GFLOP", "MiB moved",
            "GFLOP/s", "% peak", "kept MiB", "link MiB")
    body = []
    for m in measured_rows(p, sort):
        r = m.row
        flops = r.flops["forward"] + r.flops["backward"]
        rate = flops / m.total if m.total > 0 and flops else 0.0
        ideal = peak_seconds(p, r)
        body.append((row_label(r), r.op, r.device, ms(m.seconds["forward"]), ms(m.seconds["backward"]),
                     f"{100 * m.total / step:.1f}" if step else "-", gflop(r.flops["forward"]),
                     gflop(r.flops["backward"]), mib(r.bytes["forward"] + r.bytes["backward"]),
                     f"{rate / 1e9:,.1f}" if rate else "-",
                     f"{100 * ideal / m.total:.1f}" if ideal and m.total > 0 else "-", mib(r.kept), mib(r.link)))
    binding = "; ".join(f"{k} -> {v}" for k, v in p.binding.items())
    out = [f"{p.net.name}  ({p.net.source})  batch {p.net.batch}, {p.dtype}, {p.backend} kernels, {binding}",
           f"{len(p.plain_steps)} iterations after warm-up; times are means; "
           f"FLOPs and bytes from the op descriptors (compulsory traffic)", ""]
    out += table(head, body, right=set(range(3, len(head))))
    fwd, bwd = p.phase_s("forward"), p.phase_s("backward")
    rows_s = p.rows_s
    out += ["",
            f"step (uninstrumented)  {ms(step)} ms  ({p.net.batch / step:,.1f} images/s; "
            f"min {ms(min(p.plain_steps))}, max {ms(max(p.plain_steps))})",
            f"sum of the rows        {ms(rows_s)} ms  = {100 * rows_s / step:.1f}% of the step "
            f"(forward {ms(fwd)}, backward and update {ms(bwd)})",
            f"instrumented step      {ms(p.instrumented_s)} ms  (instrumentation costs "
            f"{ms(p.instrumented_s - step)} ms a step)"]
    peaks = {str(v.source) for v in p.peaks.values() if v is not None}
    out.append("peak                   " + ("; ".join(sorted(peaks)) if peaks else "unknown for this device"))
    return "\n".join(out)


def environment(p: Profile) -> dict:
    """Versions, date, threads, devices and the machine's load while it ran (times skew under load)."""
    import datetime
    import platform

    import torch

    try:
        import triton

        triton_version = triton.__version__
    except Exception:   # no triton, or one that fails to import: a field, not a crash
        triton_version = None
    cpu = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    devices = sorted({torch.cuda.get_device_name(d) if d.type == "cuda" else cpu for d in p.binding.values()})
    return {"torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
            "devices": devices, "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_average_before": list(p.load[0]), "load_average_after": list(p.load[1])}


def profile_json(p: Profile) -> dict:
    rows = []
    for m in p.rows:
        r = m.row
        ideal = peak_seconds(p, r)
        rows.append({"label": r.label, "kind": r.kind, "op": r.op, "device": r.device,
                     "forward_ms": m.seconds["forward"] * 1e3, "backward_ms": m.seconds["backward"] * 1e3,
                     "flops": dict(r.flops), "bytes": dict(r.bytes), "kept_bytes": r.kept, "link_bytes": r.link,
                     "peak_fraction": ideal / m.total if ideal and m.total > 0 else None,
                     "nodes": {ph: [c.node.name for c in cs] for ph, cs in r.nodes.items()}})
    return {
        "environment": environment(p),
        "spec": p.net.name, "source": p.net.source, "spec_hash": p.net.hash, "batch": p.net.batch,
        "dtype": p.dtype, "backend": p.backend, "binding": {k: str(v) for k, v in p.binding.items()},
        "iterations": len(p.plain_steps),
        "peaks": {k: (None if v is None else {"flops": v.flops, "bandwidth": v.bandwidth, "source": v.source})
                  for k, v in p.peaks.items()},
        "rows": rows,
        "totals": {"step_ms": p.step_s * 1e3, "steps_ms": [s * 1e3 for s in p.plain_steps],
                   "images_per_second": p.net.batch / p.step_s, "rows_ms": p.rows_s * 1e3,
                   "forward_ms": p.phase_s("forward") * 1e3, "backward_ms": p.phase_s("backward") * 1e3,
                   "instrumented_step_ms": p.instrumented_s * 1e3,
                   "instrumentation_ms": (p.instrumented_s - p.step_s) * 1e3},
    }
