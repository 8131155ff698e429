"""`alexnetc place`: the compiler proposes how to split a network across N devices, compares the proposal
with one device, data parallelism and the shipped hand placements, and writes it as a variant spec.

    alexnetc place alexnet --devices 2 --gpu gtx580 --link pcie2 --batch 128
    alexnetc place resnet50 --devices 2 --gpu v100-16gb --batch 256 --out resnet50-2gpu.yaml
    alexnetc place variants/mini --devices 4 --memory 2 --flops 10 --bandwidth 300 --link 12
    alexnetc place alexnet --devices 2 --gpu h100 --profile alexnet-profile.json

Pure Python (the planner is `compiler/placement`): no torch, no GPU.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import UserError, say, write_failure

if TYPE_CHECKING:
    from ...compiler.placement import Plan

EPILOG = """examples:
  alexnetc place alexnet --devices 2 --gpu gtx580 --link pcie2 --batch 128   # the paper's two GTX 580s
  alexnetc place resnet50 --devices 2 --gpu v100-16gb --batch 256 --out resnet50-2x16gb.yaml
  alexnetc place variants/mini --devices 4 --memory 2 --flops 10 --bandwidth 300 --link 12
  alexnetc place alexnet --devices 2 --gpu h100 --profile p.json   # measured times (alexnetc profile --json)

Devices for --gpu: {devices}. Links: {links}, nvlink (the GPU's own), or a number in GB/s.
The table's step is the cost model's bound (alexnetc profile --predict): predictions, not measurements."""

GIB = 1 << 30


def _positive(value: float | None, what: str) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UserError(f"{what} {value:g}: must be a positive number")


def _device(args) -> Any:
    from ...compiler.cost import DeviceSpec, UnknownDevice, device

    for value, what in ((args.memory, "--memory"), (args.flops, "--flops"), (args.bandwidth, "--bandwidth")):
        _positive(value, what)
    if args.gpu:
        try:
            dev = device(args.gpu)
        except UnknownDevice as exc:
            raise UserError(str(exc)) from None
    elif args.memory is None or args.flops is None:
        raise UserError("name the device: --gpu NAME, or --memory GIB and --flops TFLOPS (and --bandwidth GBps)")
    else:
        dev = DeviceSpec("custom", "a device", {}, math.inf, 0, "the command line", link="pcie4")
    if args.flops is not None:
        peak = args.flops * 1e12
        dev = replace(dev, peaks={p: peak for p in ("fp32", "tf32", "bf16", "fp16")})
    if args.bandwidth is not None:
        dev = replace(dev, bandwidth=args.bandwidth * 1e9)
    if args.memory is not None:
        dev = replace(dev, memory=int(args.memory * GIB))
    given = [f"{value:g} {unit}" for value, unit in ((args.memory, "GiB"), (args.flops, "TFLOP/s"), (args.bandwidth, "GB/s"))
             if value is not None]
    if math.isinf(dev.bandwidth):
        given.append("memory bandwidth unbounded")
    if given:
        dev = replace(dev, title=f"{dev.title if args.gpu else 'a device'} ({', '.join(given)})")
    return dev


def _link(args, dev) -> Any:
    from ...compiler.cost import LinkSpec, UnknownDevice, link

    name = args.link or dev.link
    try:
        gbps = float(name)
    except ValueError:
        gbps = None
    if gbps is not None:
        _positive(gbps, "--link")
        return LinkSpec("custom", "the link given", gbps * 1e9, "the command line")
    if name.strip().lower() == "nvlink":
        name = dev.link if dev.link.startswith("nvlink") else "nvlink4"
    try:
        return link(name)
    except UnknownDevice as exc:
        raise UserError(str(exc)) from None


def _shipped_name(path: str) -> str | None:
    from ...compiler.variants import shipped_root

    root = shipped_root()
    if root is None:
        return None
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    return None if rel.startswith("..") else rel[:-5] if rel.endswith(".yaml") else rel


def _base_for(spec_path: str, out: str | None) -> str:
    """How the variant names its base: a shipped spec by name; otherwise the path from where it is
    written (absolute when printed)."""
    shipped = _shipped_name(spec_path)
    if shipped is not None:
        return shipped
    if out is None:
        return os.path.abspath(spec_path)
    return os.path.relpath(os.path.abspath(spec_path), os.path.dirname(os.path.abspath(out)))


def _command_line(args, dev, ln, p) -> str:
    device = f"--gpu {args.gpu}" if args.gpu else ""
    for flag, value in (("--memory", args.memory), ("--flops", args.flops), ("--bandwidth", args.bandwidth)):
        if value is not None:
            device += f" {flag} {value:g}"
    extra = f" --profile {args.profile}" if args.profile else ""
    link = ln.name if ln.name != "custom" else args.link
    return (f"alexnetc place {args.spec} --devices {args.devices} {device.strip()} --link {link} "
            f"--batch {p.batch} --dtype {p.dtype}{extra}")


def _rows(p: Plan) -> list[str]:
    from ..profile.format import mib, table

    limit = p.request.device.memory
    head = ("", "placement", "procs x devs", "step ms", "images/s", "bound", "GiB fullest", "fits", "copies MiB",
            "all-reduce MiB")
    body = []
    for r in p.rows:
        mark = "*" if r is p.proposal else ""
        per = len(r.memory)
        body.append((mark, r.label, f"{r.replicas} x {per}", f"{r.seconds * 1e3:,.3f}",
                     f"{p.batch / r.seconds:,.0f}" if r.seconds else "-", r.bound.limit, f"{r.fullest / GIB:.2f}",
                     "yes" if r.fits(limit) else "NO", mib(r.link), mib(r.allreduce_bytes)))
    return table(head, body, right={2, 3, 4, 6, 9, 8})


def format_plan(p: Plan) -> str:
    req = p.request
    dev, ln = req.device, req.link
    timing = "measured times from " + p.measured.path + f" ({p.measured.where}, batch {p.measured.batch}) scaled " \
        "by the roofline" if p.measured else "roofline bounds (alexnetc profile --predict)"
    s = p.search
    out = [f"{p.net.name}  ({p.net.source})  batch {p.batch}, {p.dtype}, on {req.devices} x {dev.title}, "
           f"{dev.memory / GIB:.1f} GiB each, joined by {ln.title} ({ln.bandwidth / 1e9:g} GB/s)",
           f"step times: {timing}; memory: the memory plan plus SGD momentum, per device",
           f"searched {len(s.searched)} (processes, tower width) pairs by dynamic programming over {len(p.units)} units"
           f"{f', {len(s.pruned)} pruned by a lower bound' if s.pruned else ''}; {p.compiled} placements compiled; "
           f"{p.seconds:.2f} s", ""]
    out += _rows(p)
    if p.proposal is not None:
        out += ["", p.verdict]
        prop = p.proposal
        mem = ", ".join(f"{d} {prop.memory[d] / GIB:.2f} + {prop.momentum.get(d, 0) / GIB:.2f}" for d in prop.devices)
        out.append(f"proposal: {prop.label}; memory plan + momentum per device (GiB): {mem}")
    return "\n".join(out)


def _variant_name(net_name: str, n: int, dev) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{net_name}-place-{n}x{dev.name}")[:64]


def _place(args) -> int:
    from ...compiler.cost import UnknownDevice
    from ...compiler.placement import PlacementError, Request, plan
    from .specs import resolve_spec_path

    if args.devices is None:
        raise UserError("--devices N: how many devices to place on (1 to 8)")
    dev = _device(args)
    ln = _link(args, dev)
    profile = None
    if args.profile:
        from ...compiler.placement.measured import parse_profile
        from ..bounded_read import UnreadableFile, read_bounded

        try:
            profile = parse_profile(read_bounded(args.profile, "MAX_RECORD_BYTES", "profile"), args.profile)
        except (UnreadableFile, PlacementError) as exc:
            raise UserError(f"--profile {exc}") from None
    if not (args.min_gain >= 0 and math.isfinite(args.min_gain)):
        raise UserError(f"--min-gain {args.min_gain:g}: must be a percentage, 0 or more")
    spec = resolve_spec_path(args.spec)
    try:
        p = plan(Request(spec, args.devices, dev, ln, args.batch, args.dtype, profile, args.min_gain / 100))
    except (PlacementError, UnknownDevice) as exc:
        raise UserError(str(exc)) from None
    say(format_plan(p))
    if p.proposal is None:
        raise UserError(p.verdict)
    prop = p.proposal
    train = f"torchrun --nproc_per_node={prop.replicas} -m alexnetc train" if prop.replicas > 1 else "alexnetc train"
    header = [f"Proposed by: {_command_line(args, dev, ln, p)}",
              f"{prop.label}: predicted step {prop.seconds * 1e3:,.3f} ms ({prop.bound.limit}), fullest device "
              f"{prop.fullest / GIB:.2f} of {dev.memory / GIB:.2f} GiB, {prop.link / 2**20:,.1f} MiB copied between "
              "devices per step",
              f"Train: {train} {args.out or 'THIS.yaml'}" + (f" (global batch {p.batch})" if prop.replicas > 1 else "")]
    text = p.variant(_base_for(spec, args.out), _variant_name(p.net.name, args.devices, dev), header)
    if text is None:
        say(f"(the proposal is {prop.source}: no variant to write)")
        return 0
    if args.out:
        from ..atomic import replacing

        try:
            with replacing(args.out) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise write_failure(args.out, exc) from None
        say(f"variant written to {args.out}")
    else:
        say("\n" + text.rstrip("\n"))
    return 0


def register(sub: Any) -> None:
    from ...compiler.cost import DEVICES, LINKS
    from ...compiler.program import TRAIN_DTYPES

    p = sub.add_parser("place", help="propose how to split a network across devices (and compare with hand placements)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=EPILOG.format(devices=", ".join(DEVICES), links=", ".join(LINKS)))
    p.add_argument("spec", metavar="SPEC", help="a spec file or shipped name (alexnet, resnet50, variants/mini...)")
    p.add_argument("--devices", type=int, metavar="N", help="devices to place on, 1 to 8")
    p.add_argument("--gpu", metavar="NAME", help="the device, by name (memory, peak FLOP/s and bandwidth from the table)")
    p.add_argument("--memory", type=float, metavar="GIB", help="memory per device in GiB (overrides --gpu's)")
    p.add_argument("--flops", type=float, metavar="TFLOPS", help="peak TFLOP/s of the device (overrides --gpu's)")
    p.add_argument("--bandwidth", type=float, metavar="GBPS",
                   help="memory bandwidth in GB/s (overrides --gpu's; without --gpu: unbounded)")
    p.add_argument("--link", metavar="LINK", help="the link between devices: a name, nvlink, or GB/s (default: the GPU's usual)")
    p.add_argument("--batch", type=int, help="global batch size (default: the spec's train.batch_size)")
    p.add_argument("--dtype", metavar="DTYPE", help="training precision: "
                   f"{', '.join(d for d in TRAIN_DTYPES if d != 'float64')} (default: the spec's train.dtype)")
    p.add_argument("--profile", metavar="PROFILE.json", help="measured per-layer times (alexnetc profile --json) "
                   "instead of the roofline's")
    p.add_argument("--min-gain", type=float, default=5.0, metavar="PERCENT",
                   help="propose more than one device only when predicted this much faster than one (default 5)")
    p.add_argument("--out", "-o", metavar="FILE.yaml", help="write the proposed variant spec here (default: print it)")
    p.set_defaults(func=_place)
