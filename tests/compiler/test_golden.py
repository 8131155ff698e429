"""`alexnetc compile specs/alexnet.yaml` prints the same table and the same JSON graph as before the op
registry was introduced (goldens captured from the earlier compiler, tests/compiler/golden/).

The graph golden predates three documented renames (docs/spec.md, "Words"): a variable's role moved
from its ``kind`` attribute to the node's `role` field (``input`` became ``data``), every node gained
a `group` field, and LRN's channel-group attribute ``groups`` became ``num_group``; and one addition:
the softmax_loss node carries its ``loss_weight`` (1.0) and ``aux`` (false) since a network may have
several loss heads. `_renamed` applies exactly these to the old golden; everything else must be equal.
Since `compile --dtype` the report's totals also say the precision they count bytes in (``dtype``:
float32 here, checked and removed before the comparison).

One later, deliberate change is in the table golden: the gradient pass lists parameter gradients last
layer first (data parallelism all-reduces fc gradients while the convolutions' backward runs), which
reorders the training graph's backward nodes and so moves the memory plan's planned peaks (gpu0 589.5 ->
585.8 MiB, gpu1 565.4 -> 590.8 MiB); every other line is the table from before the op registry.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
ROOT = Path(__file__).resolve().parents[2]


def _compile(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", "compile", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _renamed(old: dict) -> dict:
    for n in old["nodes"]:
        a = n["attrs"]
        n["role"] = {"input": "data"}.get(a.get("kind"), a.get("kind")) if n["op"] == "null" else None
        a.pop("kind", None)
        if n["op"] == "lrn":
            a["num_group"] = a.pop("groups")
        if n["op"] == "softmax_loss":
            a.update({"loss_weight": 1.0, "aux": False})
    return old


def test_table_is_unchanged():
    printed = _compile("specs/alexnet.yaml", "--batch", "128")
    table = "\n".join(l for l in printed.splitlines() if not l.startswith("compiled in")) + "\n"
    assert table == (GOLDEN / "alexnet-table.txt").read_text()


def test_json_graph_is_unchanged_up_to_the_documented_renames(tmp_path):
    _compile("specs/alexnet.yaml", "--batch", "128", "--json", str(tmp_path / "g.json"), "-q")
    new = json.loads((tmp_path / "g.json").read_text())
    groups = {n["name"]: n.pop("group") for n in new["nodes"]}
    old = _renamed(json.loads((GOLDEN / "alexnet-graph.json").read_text()))
    # the planned peaks moved with the backward order (see the module docstring; the table pins them)
    plans = [d["attrs"]["report"]["totals"].pop("memory_plan") for d in (old, new)]
    assert new["attrs"]["report"]["totals"].pop("dtype") == "float32"
    assert old == new
    assert {d: m["param_bytes"] for d, m in plans[0].items()} == {d: m["param_bytes"] for d, m in plans[1].items()}
    # the new field: the tower of every node of a grouped layer, None elsewhere
    assert groups["conv1_g1_weight"] == groups["conv2_g1"] == groups["norm2_g1"] == 1
    assert groups["conv5_g0_weight"] == 0 and groups["fc8_weight"] is None and groups["data"] is None
