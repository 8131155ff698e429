"""Variants: base merge, modify/remove/insert (in that order), null deletes, missing and circular bases."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alexnetc.compiler import SpecErrors, compile_spec, load_spec
from alexnetc.compiler.pipeline import plain

SPECS = Path(__file__).resolve().parents[2] / "specs"
BASE = """\
name: base
input: {channels: 3, height: 16, width: 16}
classes: 4
devices: [gpu0, gpu1]
train: {batch_size: 8, lr: 0.1, schedule: {type: plateau, factor: 0.1, patience: 2}}
data: {resize: 20, crop: 16, mirror: true}
layers:
  - {name: c1, op: conv, filters: 8, kernel: 3, pad: 1, act: relu}
  - {name: p1, op: maxpool, kernel: 2}
  - {name: f1, op: fc, units: 4}
  - {name: loss, op: softmax_loss}
"""


def write(tmp_path, name, text):
    (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path / name


def names(spec):
    return [l["name"] for l in spec["layers"]]


def spec_errors(path):
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    return [str(e).replace(str(path.parent) + "/", "") for e in info.value.errors]


def test_mappings_merge_scalars_replace_null_deletes(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    v = write(tmp_path, "v.yaml", """\
        base: base.yaml
        name: v
        train: {lr: 0.5, schedule: {type: step, every: 3}}
        data: {resize: null, crop: null}
    """)
    spec = plain(load_spec(v))
    assert spec["name"] == "v" and "base" not in spec
    assert spec["train"] == {"batch_size": 8, "lr": 0.5,
                             "schedule": {"type": "step", "factor": 0.1, "patience": 2, "every": 3}}
    assert spec["data"] == {"mirror": True}
    assert names(spec) == ["c1", "p1", "f1", "loss"]


def test_modify_remove_insert(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    v = write(tmp_path, "v.yaml", """\
        base: base.yaml
        modify_layers:
          c1: {filters: 16, act: null, pad: null}
        remove_layers: [p1]
        insert_layers:
          - {after: c1, layers: [{name: n1, op: lrn, size: 3, k: 2, alpha: 1.0e-4, beta: 0.75, alpha_over_n: true}]}
          - {before: loss, layers: [{name: d1, op: dropout, p: 0.5}]}
    """)
    spec = load_spec(v)
    assert names(spec) == ["c1", "n1", "f1", "d1", "loss"]
    assert plain(spec["layers"][0]) == {"name": "c1", "op": "conv", "filters": 16, "kernel": 3}
    # Marks follow the file that holds each value.
    assert spec["layers"][0].value_mark("filters").file == str(v)
    assert spec["layers"][0].value_mark("kernel").file == str(tmp_path / "base.yaml")
    assert spec["layers"][1].mark.file == str(v)
    net = compile_spec(v)
    assert net.layers[0].shape == (16, 14, 14)  # pad deleted: 16 - 3 + 1


def test_edits_apply_modify_then_remove_then_insert(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    # insert after p1 fails because p1 was removed first; modify of p1 succeeded before the removal.
    v = write(tmp_path, "v.yaml", """\
        base: base.yaml
        modify_layers: {p1: {kernel: 4}}
        remove_layers: [p1]
        insert_layers: [{after: p1, layers: [{name: r, op: relu}]}]
    """)
    assert spec_errors(v) == ["v.yaml:4:25: layer p1: insert_layers: no layer named 'p1' to insert after"]


def test_layers_replace_the_base_list(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    v = write(tmp_path, "v.yaml", """\
        base: base.yaml
        layers:
          - {name: only, op: fc, units: 4}
          - {name: loss, op: softmax_loss}
        modify_layers: {only: {units: 4}}
    """)
    assert names(load_spec(v)) == ["only", "loss"]


def test_unknown_layer_in_edits(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    v = write(tmp_path, "v.yaml", """\
        base: base.yaml
        modify_layers: {cv1: {filters: 4}}
        remove_layers: [pool1, p2]
    """)
    assert spec_errors(v) == [
        "v.yaml:2:17: layer cv1: modify_layers: no layer named 'cv1' in the base spec (did you mean 'c1'?)",
        "v.yaml:3:17: layer pool1: remove_layers: no layer named 'pool1' in the base spec",
        "v.yaml:3:24: layer p2: remove_layers: no layer named 'p2' in the base spec"]


def test_missing_base(tmp_path):
    v = write(tmp_path, "v.yaml", "name: v\nbase: nowhere.yaml\n")
    assert spec_errors(v) == ["v.yaml:2:7: base spec 'nowhere.yaml' not found"]


def test_circular_base(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\nname: a\n")
    b = write(tmp_path, "b.yaml", "name: b\nbase: a.yaml\n")
    assert spec_errors(b) == ["a.yaml:1:7: circular base spec: b.yaml -> a.yaml -> b.yaml"]


def test_self_base(tmp_path):
    v = write(tmp_path, "v.yaml", "base: v.yaml\n")
    assert spec_errors(v) == ["v.yaml:1:7: circular base spec: v.yaml -> v.yaml"]


def test_errors_in_the_base_point_into_the_base(tmp_path):
    write(tmp_path, "base.yaml", BASE.replace("units: 4}", "unitz: 4}"))
    v = write(tmp_path, "v.yaml", "base: base.yaml\nname: v\n")
    assert spec_errors(v) == ["base.yaml:10:5: layer f1: missing required key 'units'",
                              "base.yaml:10:24: layer f1: unknown key 'unitz' in fc layer (did you mean 'units'?)"]


def test_variant_values_are_checked_after_merging(tmp_path):
    write(tmp_path, "base.yaml", BASE)
    v = write(tmp_path, "v.yaml", "base: base.yaml\nmodify_layers:\n  c1: {device: gpu5}\n")
    assert spec_errors(v) == ["v.yaml:3:16: layer c1: device 'gpu5' is not declared in devices ['gpu0', 'gpu1'] "
                              "(did you mean 'gpu1'?)"]


def test_shipped_mini_inherits_the_towers():
    spec = load_spec(SPECS / "variants" / "mini.yaml")
    assert spec["input"] == {"channels": 1, "height": 28, "width": 28}
    assert "resize" not in spec["data"] and "crop" not in spec["data"]
    conv2 = plain(spec["layers"][3])
    conv2.pop("bias_init", None)
    assert conv2 == {"name": "conv2", "op": "conv", "filters": 64, "kernel": 3, "pad": 1,
                     "groups": {"count": 2, "devices": ["gpu0", "gpu1"], "connect": "own"}}


def test_one_gpu_deletes_group_devices():
    spec = load_spec(SPECS / "alexnet-1gpu.yaml")
    assert plain(spec["layers"][0]["groups"]) == {"count": 2, "connect": "all"}
    assert spec["devices"] == ["gpu0"]
