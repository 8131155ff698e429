"""`alexnetc place`: how to split a network across N devices, proposed, compared and written as a spec.

    plan(Request("specs/alexnet.yaml", devices=2, device=device("gtx580"), link=link("pcie2"), batch=128))

1. Load the spec, compile it as written, find its units (`units.py`) and the shipped hand placements
   of the same network (`shipped.py`).
2. Search (`search.py`): for every data-parallel width, the best stages of units on disjoint devices,
   over references compiled once per tower width (`reference.py`, `stages.py`).
3. Compile and evaluate exactly (`evaluate.py`) the finalists: the search's best, one device, plain
   data parallelism, the spec as written and the shipped hand placements; the proposal is the fastest
   that fits every device's memory (ties: fewer bytes over links, then fewer devices), so it is never
   worse by the model than any hand placement in the table; one device is proposed when it fits and
   nothing is predicted more than `MIN_GAIN` faster (a roofline bound is no forecast to split for),
   plain data parallelism when no model-parallel split beats it.
4. When nothing fits: the least memory per device, and the fewest devices, that would.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from ..blocks import expand
from ..cost import DeviceSpec, LinkSpec, roofline_seconds
from ..cost.roofline import Seconds
from ..pipeline import CompiledNet, compile_loaded, plain, validate_spec
from ..program import TRAIN_DTYPES
from ..source import SpecMap
from ..variants import resolve
from .evaluate import Evaluation, evaluate
from .measured import MeasuredProfile, measured_seconds
from .reference import Reference, build_reference
from .search import Candidate, ReplicaSearch, SearchResult, allreduce_of, best_candidate, better, divisors, least_memory, search
from .shipped import shipped_placements
from .spec_edits import Placement, placed_spec, variant_text
from .stages import StageCosts
from .units import PlacementError, Unit, check_instances_movable, plan_units

MAX_DEVICES = 8           # what the search is sized for (and answers within a second)
MAX_SUGGESTED = 64        # how far "this many devices would fit" looks
MIN_GAIN = 0.05          # more than one device is proposed only when predicted this much faster than one
SECOND_WITHIN = 1.1       # the search's second best is compiled too when predicted within 10% of the best
GIB = 1 << 30


@dataclass(frozen=True)
class Request:
    spec: str
    devices: int
    device: DeviceSpec
    link: LinkSpec
    batch: int | None = None
    dtype: str | None = None
    profile: MeasuredProfile | None = None     # measured times (`measured.parse_profile`) instead of the roofline's
    min_gain: float = MIN_GAIN


@dataclass
class Plan:
    request: Request
    net: CompiledNet                      # the spec as written, at the batch
    batch: int
    dtype: str
    units: list[Unit]
    rows: list[Evaluation]                # ranked: best first (those that do not fit last)
    proposal: Evaluation | None
    verdict: str
    search: SearchResult
    compiled: int                         # placements compiled to evaluate them
    seconds: float                        # wall time of the whole plan
    measured: MeasuredProfile | None = None
    train: dict = field(default_factory=dict)   # train settings a variant must set (batch size, dtype)

    def variant(self, base: str, name: str, header: list[str]) -> str | None:
        """The proposal as a variant of the planned spec (None: the proposal is a shipped or the
        as-written spec itself, or there is none)."""
        p = self.proposal
        if p is None or p.placement is None:
            return None
        return variant_text(base, name, self.units, p.placement, header, self.train or None)


def _span(units: list[Unit], first: int, end: int) -> str:
    return units[first].name if end - first == 1 else f"{units[first].name}..{units[end - 1].name}"


def describe(c: Candidate, units: list[Unit]) -> str:
    """A search candidate in words: its stages, and the processes running it."""
    parts = []
    for s in c.stages:
        if s.towers:
            devs = "+".join(f"gpu{s.base + t}" for t in range(s.width))
            parts.append(f"{_span(units, s.first, s.end)} as towers on {devs}")
        else:
            parts.append(f"{_span(units, s.first, s.end)} on gpu{s.base}")
    what = "; ".join(parts)
    return f"{c.replicas} processes x ({what})" if c.replicas > 1 else what


def _one_device(units: list[Unit]) -> Placement:
    return Placement(("gpu0",), tuple(("gpu0",) for _ in units))


def _load(path: str):
    resolved = resolve(path)
    return resolved, validate_spec(expand(resolved))


def _used(net: CompiledNet) -> int:
    return len(net.training().memory.devices)


def plan(request: Request) -> Plan:
    t0 = time.perf_counter()
    n, dev, link = request.devices, request.device, request.link
    if not isinstance(n, int) or not 1 <= n <= MAX_DEVICES:
        raise PlacementError(f"--devices {n}: expected 1 to {MAX_DEVICES} devices")
    if not dev.memory > 0:
        raise PlacementError(f"device memory {dev.memory / GIB:g} GiB: must be positive")
    resolved, spec = _load(request.spec)
    settings = plain(spec.get("train") or {})
    batch = request.batch or int(settings.get("batch_size") or 128)
    dtype = request.dtype or settings.get("dtype") or TRAIN_DTYPES[0]
    if dtype not in TRAIN_DTYPES:
        raise PlacementError(f"--dtype {dtype[:40]}: expected one of {', '.join(TRAIN_DTYPES)}")
    if dtype == "float64":
        raise PlacementError("--dtype float64 runs on the CPU reference kernels only; plan float32 or bfloat16")
    dev.peak("bf16" if dtype == "bfloat16" else "fp32")    # a GPU without the precision's units: UnknownDevice
    written = compile_loaded(spec, request.spec, batch).with_dtype(dtype)
    units = plan_units(spec, [info.name for info in written.layers], n)
    check_instances_movable(resolved, spec, units)
    train = {}
    if batch != settings.get("batch_size"):
        train["batch_size"] = batch
    if dtype != (settings.get("dtype") or TRAIN_DTYPES[0]):
        train["dtype"] = dtype

    refs: dict[int, Reference] = {}

    def reference(m: int) -> Reference:
        if m not in refs:
            refs[m] = build_reference(spec, request.spec, units, m, dtype)
        return refs[m]

    roofline = roofline_seconds(dev, link)
    seconds, key, measured = roofline, "roofline", None
    if request.profile is not None:
        measured = request.profile
        seconds, key = measured_seconds(measured, reference(1), roofline), "measured"
    result = search(reference, units, n, batch, dev.memory, seconds, link, dtype, key)

    finals = _Finalists(request, spec, units, dtype, seconds)
    rows = finals.evaluate(written, batch, result, refs)
    proposal, order = _choose(rows, dev.memory, request.min_gain)
    p = Plan(request, written, batch, dtype, units, order, proposal, "", result, finals.compiled, 0.0, measured,
             train)
    p.verdict = _verdict(p, rows) if proposal is not None else _infeasible(p, reference, seconds, key)
    p.seconds = time.perf_counter() - t0
    return p


@dataclass
class _Finalists:
    """The placements the table shows, compiled and evaluated exactly: one device, plain data
    parallelism, the spec as written, the shipped hand placements, the search's best (and its second
    when predicted within SECOND_WITHIN of it)."""

    request: Request
    spec: SpecMap
    units: list[Unit]
    dtype: str
    seconds: Seconds
    compiled: int = 0

    def compile(self, placement: Placement, batch: int) -> CompiledNet:
        self.compiled += 1
        return compile_loaded(placed_spec(self.spec, self.units, placement), self.request.spec, batch).with_dtype(self.dtype)

    def row(self, label: str, kind: str, net: CompiledNet, replicas: int = 1, placement: Placement | None = None,
            source: str | None = None) -> Evaluation:
        r = self.request
        return evaluate(label, kind, net, r.device, r.link, self.dtype, replicas, self.seconds, placement, source)

    def evaluate(self, written: CompiledNet, batch: int, result: SearchResult, refs: dict[int, Reference]) -> list[Evaluation]:
        n, name = self.request.devices, os.path.basename(self.request.spec)
        one_p = _one_device(self.units)
        alone = _used(written) == 1     # the spec as written is the one-device placement already
        one = written if alone else self.compile(one_p, batch)
        rows = [self.row("one device" + (f" ({name} as written)" if alone else ""), "one device", one, 1, one_p)]
        dps = [c for c in result.candidates if c.devices == 1 and c.replicas > 1]
        if dps:
            c = min(dps, key=lambda c: (c.seconds, c.replicas))
            rows.append(self.row(f"data parallel, {c.replicas} processes", "data parallel", one.at_batch(c.batch),
                                 c.replicas, Placement(one_p.devices, one_p.towers, c.replicas)))
        if not alone and _used(written) <= n:
            rows.append(self.row(f"{name} (as written)", "as written", written, source=self.request.spec))
        for path, other in shipped_placements(self.request.spec, self.spec):
            net = compile_loaded(other, path, batch).with_dtype(self.dtype)
            self.compiled += 1
            if _used(net) <= n:
                rows.append(self.row(f"{os.path.basename(path)} (shipped)", "shipped", net, source=path))
        splits, seen = [], set()
        for c in sorted((c for c in result.candidates if c.devices > 1), key=lambda c: (c.seconds, c.link, c.devices)):
            p = c.placement(refs[c.m].towers)
            if p not in seen:       # references of two widths can propose the same placement
                seen.add(p)
                splits.append((c, p))
        for c, p in splits[:1] + [s for s in splits[1:2] if s[0].seconds <= SECOND_WITHIN * splits[0][0].seconds]:
            rows.append(self.row(describe(c, self.units), "search", self.compile(p, c.batch), c.replicas, p))
        return rows


def _choose(rows: list[Evaluation], memory: float, min_gain: float) -> tuple[Evaluation | None, list[Evaluation]]:
    """The proposal (the fastest that fits; one device unless something is `min_gain` faster; rows[0]
    is one device) and the rows in table order: the proposal, the others that fit, those that do not."""
    fitting = [r for r in rows if r.fits(memory)]
    proposal = None
    for r in fitting:
        if proposal is None or better(r.key(), proposal.key()):
            proposal = r
    one = rows[0]
    if proposal is not None and proposal is not one and one.fits(memory) and \
            proposal.seconds * (1 + min_gain) > one.seconds:
        proposal = one      # more devices for less than min_gain: not worth the copies and the processes
    order = sorted(fitting, key=lambda r: r.key()) + sorted((r for r in rows if not r.fits(memory)), key=lambda r: r.key())
    if proposal is not None:
        order.remove(proposal)
        order.insert(0, proposal)
    return proposal, order


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB"


def _verdict(p: Plan, rows: list[Evaluation]) -> str:
    prop, dev = p.proposal, p.request.device
    one = next(r for r in rows if r.kind == "one device")
    others = [r for r in rows if r.fits(dev.memory) and (r.key(), r.memory) != (prop.key(), prop.memory)]
    runner = min(others, key=lambda r: r.key()) if others else None
    vs = f" (next best: {runner.label}, {runner.seconds * 1e3:.4g} ms)" if runner else ""
    if prop.kind == "one device":
        faster = runner is not None and runner.seconds < prop.seconds
        why = (f"no other placement is predicted more than {p.request.min_gain:.0%} faster: the best, {runner.label}, "
               f"{prop.seconds / runner.seconds - 1:.1%} faster" if faster else
               "no split or data parallelism is faster by the model" + vs)
        return f"one device is the right answer: it holds the network ({_gib(prop.fullest)} of {_gib(dev.memory)}) and {why}"
    fits_one = "" if one.fits(dev.memory) else \
        f"; one device cannot hold it ({_gib(one.fullest)} needed, {_gib(dev.memory)} there)"
    gain = f"{one.seconds / prop.seconds:.2f}x as fast as one device by the model" if prop.seconds else ""
    if prop.kind == "data parallel":
        return (f"plain data parallelism is the right answer: {prop.replicas} processes, one device each "
                f"(torchrun --nproc_per_node={prop.replicas}), {gain}{fits_one}{vs}")
    if prop.kind in ("as written", "shipped"):
        return f"the hand placement {prop.label} is the best found: train it as it is ({gain}){fits_one}{vs}"
    return f"split: {prop.label}, {gain}{fits_one}{vs}"


def _infeasible(p: Plan, reference, seconds: Seconds, key: str) -> str:
    """Nothing fits: the least memory per device any placement of the search needs on these N
    devices, and the fewest devices (up to MAX_SUGGESTED) on which one fits."""
    req, dev = p.request, p.request.device
    least = math.inf
    for r, m in p.search.searched:
        ref = reference(m)
        b = math.ceil(p.batch / r)
        least = min(least, least_memory(ref, ref.at(b, seconds, key), seconds, req.devices // r))
    needs = f"the least any placement needs is about {_gib(least)} per device" if least < math.inf else ""
    for count in range(req.devices + 1, MAX_SUGGESTED + 1):
        for r in divisors(count):
            if r > p.batch:
                continue
            k, b = count // r, math.ceil(p.batch / r)
            for m in [1, *(w for w in p.search.widths_possible if w <= k)]:
                ref = reference(m)
                at = ref.at(b, seconds, key)
                found = best_candidate(ReplicaSearch(ref, at, StageCosts(ref, at, seconds, dev.memory)), k, dev.memory,
                                       r, allreduce_of(ref, p.dtype), req.link)
                if found is not None:
                    return (f"no placement fits {req.devices} x {dev.title} ({_gib(dev.memory)} each) at batch "
                            f"{p.batch}: {needs}; {count} devices would fit, e.g. {describe(found, p.units)}")
    return (f"no placement fits {req.devices} x {dev.title} ({_gib(dev.memory)} each) at batch {p.batch}: {needs}; "
            f"not even {MAX_SUGGESTED} devices would: lower the batch size")
