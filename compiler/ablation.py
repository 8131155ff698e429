"""The paper's ablations as edits of a base spec: each one a variant file (``base:`` and the spec language's
own ``defaults`` / ``modify_layers`` / ``remove_layers`` edits, see `variants`) generated from the base's
layers, with what the paper reported beside it.

Krizhevsky et al. (2012) report, against their network:

* ReLU vs tanh: a 4-layer net with ReLUs reaches 25 % training error on CIFAR-10 six times faster
  (Figure 1) — here: the base's ReLUs become tanh (``defaults: {act: tanh}``, and every layer that names
  ReLU itself);
* response normalisation lowers top-1/top-5 error by 1.4/1.2 points — every LRN layer removed;
* overlapping pooling (z = 3, s = 2) lowers them by 0.4/0.3 against z = s = 2 — every 3/2 max-pool made 2/2;
* two GPUs beat one GPU with half the kernels by 1.7/1.2 — every layer's groups removed, all on the first
  device, each convolution's filters halved except the last one's (the paper's footnote: the last
  convolution and the fully connected layers keep their size, so the nets have about as many parameters);
* dropout: without it, "substantial overfitting" (no number) — every dropout layer removed.

Effects are the variant's error minus the base's, in points (the paper's +1.4: removing LRN raises the
top-1 error by 1.4). A base without the feature (no LRN layer, one tower) skips that ablation, saying why.
Pure Python: no torch, so `alexnetc ablate --dry-run` writes and checks the variants anywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

from .ops import OPS
from .ops.activation import ACT
from .ops.conv import FILTERS, Conv
from .ops.dropout import Dropout
from .ops.lrn import LRN
from .ops.pool import MaxPool
from .ops.weighted import DEVICE, GROUPS
from .ops.window import KERNEL, POOL_STRIDE
from .variants import resolve

RELU, TANH = OPS["relu"].name, OPS["tanh"].name


@dataclass(frozen=True)
class Ablation:
    """One of the paper's comparisons: the base against the variant `edit` makes of it."""

    key: str                      # the variant's file stem: <base name>-<key>.yaml
    title: str
    paper: str                    # what the paper reported, in words
    metric: str                   # "steps_to_target" (ReLU vs tanh) or "val_top1_err"
    paper_top1: float | None      # the paper's effect in points (variant minus base); None: no number
    paper_top5: float | None
    paper_ratio: float | None     # ReLU vs tanh: the variant needs this many times the steps
    edit: Callable[[Mapping[str, Any]], "dict | str"]   # the variant's edits, or why it does not apply


def _layers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [l for l in spec.get("layers") or [] if isinstance(l, Mapping) and isinstance(l.get("name"), str)]


def _of_op(spec: Mapping[str, Any], op: str) -> list[Mapping[str, Any]]:
    return [l for l in _layers(spec) if l.get("op") == op]


def _tanh(spec: Mapping[str, Any]) -> dict | str:
    default = (spec.get("defaults") or {}).get(ACT.name)
    named = [l["name"] for l in _layers(spec) if l.get(ACT.name) == RELU]
    if default != RELU and not named:
        return "the base has no ReLU (defaults.act and every layer's act are something else)"
    edits: dict = {}
    if default == RELU:
        edits["defaults"] = {ACT.name: TANH}
    if named:
        edits["modify_layers"] = {n: {ACT.name: TANH} for n in named}
    return edits


def _remove(op: str, what: str) -> Callable[[Mapping[str, Any]], dict | str]:
    def edit(spec: Mapping[str, Any]) -> dict | str:
        names = [l["name"] for l in _of_op(spec, op)]
        return {"remove_layers": names} if names else f"the base has no {what} layer"
    return edit


def _pair(v: Any) -> tuple | None:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return tuple(v)
    return None


def _pool_2x2(spec: Mapping[str, Any]) -> dict | str:
    names = [l["name"] for l in _of_op(spec, MaxPool.name)
             if _pair(l.get(KERNEL.name)) == (3, 3) and _pair(l.get(POOL_STRIDE.name)) == (2, 2)]
    if not names:
        return "the base has no overlapping 3/2 max-pooling"
    return {"modify_layers": {n: {KERNEL.name: 2, POOL_STRIDE.name: 2} for n in names}}


def _one_tower_half(spec: Mapping[str, Any]) -> dict | str:
    devices = spec.get("devices") or []
    grouped = [l for l in _layers(spec) if isinstance(l.get(GROUPS.name), Mapping)]
    if len(devices) < 2 or not grouped:
        return "the base is not split across devices (fewer than two devices, or no layer with groups)"
    convs = [l["name"] for l in _of_op(spec, Conv.name)]
    modify: dict = {}
    for l in _layers(spec):
        change: dict = {}
        if isinstance(l.get(GROUPS.name), Mapping):
            change[GROUPS.name] = None
        if l.get(DEVICE.name) not in (None, devices[0]):
            change[DEVICE.name] = devices[0]
        filters = l.get(FILTERS.name)
        if l["name"] in convs[:-1] and isinstance(filters, int) and filters >= 2:
            change[FILTERS.name] = filters // 2
        if change:
            modify[l["name"]] = change
    return {"devices": [devices[0]], "modify_layers": modify}


ABLATIONS: tuple[Ablation, ...] = (
    Ablation("tanh", "ReLU vs tanh", "ReLU reaches 25% training error 6x faster (CIFAR-10, 4-layer net; Figure 1)",
             "steps_to_target", None, None, 6.0, _tanh),
    Ablation("no-lrn", "with vs without LRN", "LRN lowers top-1/top-5 error by 1.4/1.2 points (ILSVRC)",
             "val_top1_err", 1.4, 1.2, None, _remove(LRN.name, "response normalisation (lrn)")),
    Ablation("pool-2x2", "overlapping 3/2 vs 2/2 pooling", "overlapping pooling lowers top-1/top-5 error by "
             "0.4/0.3 points (ILSVRC)", "val_top1_err", 0.4, 0.3, None, _pool_2x2),
    Ablation("one-tower-half", "two towers vs one device, half the kernels", "two GPUs lower top-1/top-5 error by "
             "1.7/1.2 points against one GPU with half the kernels (ILSVRC)", "val_top1_err", 1.7, 1.2, None,
             _one_tower_half),
    Ablation("no-dropout", "with vs without dropout", "without dropout: substantial overfitting (no number given)",
             "val_top1_err", None, None, None, _remove(Dropout.name, "dropout")),
)
KEYS = tuple(a.key for a in ABLATIONS)


@dataclass(frozen=True)
class Variant:
    """A generated variant: its ablation, the file written (None: skipped) and why it was skipped."""

    ablation: Ablation
    path: str | None
    skipped: str | None = None


def variant_text(ablation: Ablation, base_ref: str, base_name: str, edits: Mapping[str, Any]) -> str:
    """The variant file: a comment saying what it tests, ``base:``, its name and description, the edits."""
    body = {"base": base_ref, "name": f"{base_name}-{ablation.key}",
            "description": f"Ablation of {base_name}: {ablation.title} (generated by alexnetc ablate)."}
    body.update(edits)
    head = (f"# Generated by `alexnetc ablate` from {base_ref}: {ablation.title}.\n"
            f"# The paper: {ablation.paper}.\n")
    return head + yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=110)


def write_variants(base_path: str, base_ref: str, out_dir: str, keys: tuple[str, ...] = KEYS,
                   write: Callable[[str, str], None] | None = None) -> list[Variant]:
    """Write ``out_dir/<base name>-<key>.yaml`` for each ablation in `keys` that applies to the spec at
    `base_path` (named ``base_ref`` in the files' ``base:``); the others come back skipped, with why."""
    spec = resolve(base_path)
    base_name = str(spec.get("name") or os.path.splitext(os.path.basename(base_path))[0])
    out = []
    for a in ABLATIONS:
        if a.key not in keys:
            continue
        edits = a.edit(spec)
        if isinstance(edits, str):
            out.append(Variant(a, None, edits))
            continue
        path = os.path.join(out_dir, f"{base_name}-{a.key}.yaml")
        text = variant_text(a, base_ref, base_name, edits)
        if write is None:
            os.makedirs(out_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            write(path, text)
        out.append(Variant(a, path))
    return out
