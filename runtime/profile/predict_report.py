"""`alexnetc profile --predict`'s table: per layer and device, the roofline bound forward and backward,
what limits it, its arithmetic intensity, FLOPs, bytes, memory held for the backward and link
bytes; then the step's bound, the busiest device and the dependency chain, and the memory plan against
the device's memory. Formatting only (the numbers: `compiler/cost/predict.py`)."""
from __future__ import annotations

from ...compiler.cost import PredictedRow, Prediction
from .format import gflop, mib, ms, row_label, table


def _sorted(pred: Prediction, sort: str) -> list[PredictedRow]:
    key = {
        "order": None,
        "total": lambda r: -r.seconds,
        "forward": lambda r: -r.bounds["forward"].seconds,
        "backward": lambda r: -r.bounds["backward"].seconds,
        "flops": lambda r: -(r.row.flops["forward"] + r.row.flops["backward"]),
        "bytes": lambda r: -(r.row.bytes["forward"] + r.row.bytes["backward"]),
        "kept": lambda r: -r.row.kept,
        "name": lambda r: (r.row.label, r.row.device),
    }[sort]
    return sorted(pred.rows, key=key) if key else list(pred.rows)


def format_prediction(pred: Prediction, sort: str = "order") -> str:
    step = pred.step.seconds
    head = ("layer", "op", "device", "fwd ms", "bwd ms", "% step", "bound", "FLOP/B", "fwd GFLOP", "bwd GFLOP",
            "MiB moved", "kept MiB", "link MiB")
    body = []
    for r in _sorted(pred, sort):
        row = r.row
        body.append((row_label(row), row.op, row.device, ms(r.bounds["forward"].seconds), ms(r.bounds["backward"].seconds),
                     f"{100 * r.seconds / step:.1f}" if step else "-", r.limit,
                     f"{r.intensity:,.1f}" if r.intensity else "-", gflop(row.flops["forward"]),
                     gflop(row.flops["backward"]), mib(row.bytes["forward"] + row.bytes["backward"]), mib(row.kept),
                     mib(row.link)))
    dev, net = pred.device, pred.net
    peaks = ", ".join(f"{k} {v / 1e12:g}" for k, v in dev.peaks.items())
    out = [f"{net.name}  ({net.source})  batch {net.batch}, {pred.dtype}: roofline lower bounds of a training step, "
           f"each of {', '.join(net.devices)} a {dev.title}",
           f"peaks {peaks} TFLOP/s, memory {dev.bandwidth / 1e12:g} TB/s, {pred.link.title} {pred.link.bandwidth / 1e9:g} GB/s "
           f"per direction ({dev.source}); FLOPs and bytes from the op descriptors (compulsory traffic)", ""]
    out += table(head, body, right={3, 4, 5, 7, 8, 9, 10, 11, 12})
    s = pred.step
    busy = ", ".join(f"{d} {ms(t)}" for d, t in s.per_device.items())
    out += ["",
            f"step lower bound       {ms(step)} ms ({s.limit}): at most {pred.images_per_second:,.0f} images/s",
            f"device busy time       {busy} ms; longest dependency chain {ms(s.critical_path)} ms; "
            f"copies {ms(s.link)} ms on the link"]
    for d, b in pred.memory.items():
        fits = "fits" if b <= dev.memory else "DOES NOT FIT"
        out.append(f"memory plan {d:<10} {b / 2**30:,.2f} GiB of the {dev.memory / 2**30:,.1f} GiB on a "
                   f"{dev.name} ({fits}; activations, gradients and parameters)")
    out.append("these are bounds: a measured time below one means the cost model is wrong; far above it, room left")
    return "\n".join(out)


def prediction_json(pred: Prediction) -> dict:
    rows = [{"label": r.row.label, "kind": r.row.kind, "op": r.row.op, "device": r.row.device,
             "forward_ms": r.bounds["forward"].seconds * 1e3, "backward_ms": r.bounds["backward"].seconds * 1e3,
             "bound": r.limit, "flops": dict(r.row.flops), "bytes": dict(r.row.bytes), "kept_bytes": r.row.kept,
             "link_bytes": r.row.link, "flops_per_byte": r.intensity} for r in pred.rows]
    s = pred.step
    return {"spec": pred.net.name, "source": pred.net.source, "spec_hash": pred.net.hash, "batch": pred.net.batch,
            "dtype": pred.dtype,
            "device": {"name": pred.device.name, "title": pred.device.title, "peaks": dict(pred.device.peaks),
                       "bandwidth": pred.device.bandwidth, "memory": pred.device.memory, "source": pred.device.source},
            "link": {"name": pred.link.name, "bandwidth": pred.link.bandwidth},
            "rows": rows,
            "step": {"lower_bound_ms": s.seconds * 1e3, "limit": s.limit, "critical_path_ms": s.critical_path * 1e3,
                     "device_busy_ms": {d: t * 1e3 for d, t in s.per_device.items()}, "link_ms": s.link * 1e3,
                     "images_per_second_at_most": pred.images_per_second},
            "memory_plan_bytes": pred.memory}
