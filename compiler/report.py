"""`alexnetc compile`'s per-layer table and totals (Darknet-style), as rows or as formatted text.

Per layer: name, op, output shape per group, device per group, parameters, multiply-adds per image
(conv and fc weights only; biases, LRN and pooling are not counted, as in the paper's 724 M), and the
activation memory of its outputs (saved values such as LRN's scale included) at the batch size, in the
spec's train.dtype (float32 unless it says otherwise).
Totals add cross-device bytes per image (forward; the backward sends as many back) and the memory
plan's peak per device for a training step.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from .graph import Graph
from .ops import get_op
from .passes.memory_plan import DTYPE_BYTES
from .pipeline import CompiledNet


@dataclass
class Row:
    name: str
    op: str
    shapes: list[str]
    devices: list[str]
    params: int
    macs: int
    act_bytes: int


def _shape(s) -> str:
    return "x".join(str(d) for d in s)


# How the report's memory line names a train.dtype: what values between ops and parameters are in.
_PRECISION_LABEL = {"float32": "fp32", "float64": "fp64", "bfloat16": "bf16 values, fp32 master parameters"}


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def rows(net: CompiledNet) -> tuple[list[Row], dict]:
    one = net.at_batch(1).graph
    by_layer_params: dict[str, int] = defaultdict(int)
    by_layer_macs: dict[str, int] = defaultdict(int)
    by_layer_act: dict[str, int] = defaultdict(int)
    copy_bytes = 0
    for n in one.nodes():
        if n.is_variable:
            if n.is_param:
                by_layer_params[n.layer] += math.prod(n.shapes[0])
            continue
        op = get_op(n.op)
        by_layer_macs[n.layer] += op.macs(n.attrs, [e.shape for e in n.inputs], n.shapes)
        for k, s in enumerate(n.shapes):
            dt = op.output_dtypes.get(k, net.dtype)
            by_layer_act[n.layer] += math.prod(s) * DTYPE_BYTES[dt]
        if n.op == "copy":
            copy_bytes += math.prod(n.shapes[0]) * DTYPE_BYTES[net.dtype]
    out = []
    for info in net.layers:
        # One node may hold several groups (merged onto one device): show each group's shape, g times.
        shapes = [_shape(s) if g == 1 else f"{g}×{_shape((s[0] // g, *s[1:]))}"
                  for (_, _, s), g in zip(info.outputs, info.groups or [1] * len(info.outputs))]
        out.append(Row(info.name, info.op, shapes,
                       [d or "host" for _, d, _ in info.outputs], by_layer_params[info.name],
                       by_layer_macs[info.name], by_layer_act[info.name] * net.batch))
    plan = net.training().memory
    totals = {
        "params": sum(r.params for r in out),
        "macs_per_image": sum(r.macs for r in out),
        "cross_device_bytes_per_image": copy_bytes,
        "copies": sorted({n.layer for n in one.nodes() if n.op == "copy"}),
        "batch": net.batch,
        "dtype": net.dtype,
        "memory_plan": {d: m.as_dict() for d, m in plan.devices.items()},
    }
    return out, totals


def as_dict(net: CompiledNet) -> dict:
    rs, totals = rows(net)
    return {"name": net.name, "spec": net.source, "spec_hash": net.hash,
            "layers": [r.__dict__ for r in rs], "totals": totals}


def format_table(net: CompiledNet) -> str:
    rs, t = rows(net)
    head = ("layer", "op", "output (per group)", "device", "params", "mult-adds", f"act @{net.batch}")
    body = [(r.name, r.op, " | ".join(r.shapes), " | ".join(dict.fromkeys(r.devices)) if len(set(r.devices)) == 1
             else " | ".join(r.devices), f"{r.params:,}", f"{r.macs:,}", _bytes(r.act_bytes)) for r in rs]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    right = {4, 5, 6}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [f"{net.name}  ({net.source})  input {_shape(net.input_shape)}, {net.classes} classes, "
           f"devices {', '.join(net.devices)}", line(head), line(["-" * w for w in widths])]
    out += [line(b) for b in body]
    out.append(line(["-" * w for w in widths]))
    out.append(f"parameters            {t['params']:,}")
    out.append(f"multiply-adds/image   {t['macs_per_image']:,}  ({t['macs_per_image'] / 1e6:.0f} M)")
    copies = ", ".join(t["copies"]) or "none"
    out.append(f"cross-device/image    {_bytes(t['cross_device_bytes_per_image'])} forward "
               f"(copies into: {copies})")
    for dev, m in t["memory_plan"].items():
        out.append(f"planned peak {dev:<8} {_bytes(m['peak_activation_bytes'])} activations+gradients, "
                   f"{_bytes(m['param_bytes'])} parameters (training step at batch {net.batch}, "
                   f"{_PRECISION_LABEL[net.dtype]})")
    return "\n".join(out)


def to_dot(graph: Graph, title: str = "alexnetc") -> str:
    """Graphviz text: one cluster per device, host inputs outside, copies drawn bold red."""
    nodes = graph.nodes()
    ids = {id(n): f"n{i}" for i, n in enumerate(nodes)}
    clusters: dict[str, list[str]] = defaultdict(list)
    lines = [f'digraph "{title}" {{', "  rankdir=TB;", '  node [shape=box, fontname="Helvetica", fontsize=10];']
    for n in nodes:
        if n.is_param or n.role == "state":
            continue
        shape = f"\\n{_shape(n.shapes[0][1:])}" if n.shapes and n.shapes[0] else ""
        style = ', color=red, penwidth=2' if n.op == "copy" else (', shape=ellipse' if n.is_variable else "")
        label = f"{n.name}\\n{n.op}{shape}" if not n.is_variable else n.name
        clusters[n.device or "host"].append(f'    {ids[id(n)]} [label="{label}"{style}];')
    for i, (dev, items) in enumerate(sorted(clusters.items())):
        if dev == "host":
            lines += [s[2:] for s in items]
            continue
        lines += [f"  subgraph cluster_{i} {{", f'    label="{dev}"; style=rounded; color=gray40;', *items, "  }"]
    for n in nodes:
        for e in n.inputs:
            if n.is_variable or e.node.is_param or e.node.role == "state":
                continue
            lines.append(f"  {ids[id(e.node)]} -> {ids[id(n)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"
