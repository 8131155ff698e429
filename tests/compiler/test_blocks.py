"""Blocks (compiler/blocks.py): named layer templates expanded before validation.

Oracle: hand-written flat specs and hand-computed positions (FILE:LINE:COL of the offending value);
every bad use of a block is one located error and `alexnetc compile` exits with status 2.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alexnetc.compiler import compile_spec
from alexnetc.compiler.errors import SpecErrors
from alexnetc.compiler.pipeline import load_spec, plain

ROOT = Path(__file__).resolve().parents[2]

HEAD = """\
input: {channels: 3, height: 8, width: 8}
classes: 4
devices: [gpu0, gpu1]
blocks:
  res:
    args: {c: integer, k: {type: pair, default: 3}}
    layers:
      - {name: a, op: conv, filters: $c, kernel: $k, pad: 1, act: relu}
      - {name: b, op: conv, filters: $c, kernel: 3, pad: 1}
      - {name: sum, op: add, inputs: [in, b]}
  branch:
    args: {c: integer, src: layer}
    layers:
      - {name: p, op: conv, input: $src, filters: $c, kernel: 1}
"""


def _write(tmp_path, body: str) -> Path:
    path = tmp_path / "F.yaml"
    path.write_text(HEAD + textwrap.dedent(body))
    return path


def _errors(tmp_path, body: str) -> list[str]:
    path = _write(tmp_path, body)
    with pytest.raises(SpecErrors) as exc:
        compile_spec(path)
    return [str(e).replace(str(path), "F") for e in exc.value.errors]


def test_expansion_names_references_repeat_and_device(tmp_path):
    path = _write(tmp_path, """\
        layers:
          - {name: stem, op: conv, filters: 6, kernel: 3, pad: 1}
          - {name: r, block: res, repeat: 2, args: {c: 6}, device: gpu1}
          - {name: side, block: branch, args: {c: 6, src: stem}}
          - {name: join, op: add, inputs: [r, side]}
          - {name: fc, op: fc, units: 4, input: join}
          - {name: loss, op: softmax_loss}
        """)
    spec = load_spec(path)
    layers = plain(spec)["layers"]
    names = [l["name"] for l in layers]
    assert names == ["stem", "r.1.a", "r.1.b", "r.1.sum", "r.2.a", "r.2.b", "r.2.sum", "side.p", "join", "fc", "loss"]
    by = {l["name"]: l for l in layers}
    assert by["r.1.a"]["input"] == "stem" and by["r.1.sum"]["inputs"] == ["stem", "r.1.b"]
    assert by["r.2.a"]["input"] == "r.1.sum" and by["r.2.sum"]["inputs"] == ["r.1.sum", "r.2.b"]
    assert by["r.1.a"]["kernel"] == 3 and by["r.1.a"]["filters"] == 6         # the default, the argument
    assert by["side.p"]["input"] == "stem"                                     # a layer argument
    assert by["join"]["inputs"] == ["r.2.sum", "side.p"]                       # instance names -> outputs
    assert by["r.1.a"]["device"] == by["r.2.sum"]["device"] == "gpu1" and "device" not in by["side.p"]
    assert "blocks" not in spec
    net = compile_spec(path)
    assert {n.device for n in net.graph.nodes() if n.layer == "r.2.b"} == {"gpu1"}


def test_cli_expand_prints_a_flat_spec_that_compiles_the_same(tmp_path):
    out = subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", "compile", "specs/googlenet.yaml",
                          "--expand"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "blocks:" not in out.stdout and "block:" not in out.stdout
    assert "  - {name: inception_4e.b3, op: conv, filters: 128, kernel: 5, pad: 2}\n" in out.stdout
    assert "  - {name: aux1.pool, op: avgpool, kernel: 5, stride: 3, input: inception_4a.out}\n" in out.stdout
    flat = tmp_path / "flat.yaml"
    flat.write_text(out.stdout)
    a, b = compile_spec(flat), compile_spec(ROOT / "specs" / "googlenet.yaml")
    assert [(n.name, n.shapes) for n in a.graph.nodes()] == [(n.name, n.shapes) for n in b.graph.nodes()]


@pytest.mark.parametrize("body, expected", [
    ("""\
        layers:
          - {name: r, block: res, args: {}}
     """, "F:16:33: layer r: instance of block res is missing argument c"),
    ("""\
        layers:
          - {name: r, block: res, args: {c: 4, cc: 2}}
     """, "F:16:40: layer r: block res has no argument 'cc' (did you mean 'c'?); its arguments: c, k"),
    ("""\
        layers:
          - {name: r, block: res, args: {c: four}}
     """, "F:16:37: layer r: argument 'c' of block res must be an integer, got 'four'"),
    ("""\
        layers:
          - {name: r, block: rse, args: {c: 4}}
     """, "F:16:22: layer r: unknown block 'rse' (did you mean 'res'?); blocks: res, branch"),
    ("""\
        layers:
          - {name: r.a, op: conv, filters: 3, kernel: 1}
          - {name: r, block: res, args: {c: 3}}
     """, "F:8:16: layer r.a: name clash after block expansion: 'r.a' is also the name of the layer at F:16:12"
          " (in instance r at F:17:12 of block res, line 8)"),
    ("""\
        layers:
          - {name: r, block: res, args: {c: 3}, repeat: 0}
     """, "F:16:49: layer r: repeat: expected an integer from 1 to 1000, got 0"),
])
def test_bad_block_use_is_one_located_error(tmp_path, body, expected):
    assert _errors(tmp_path, body) == [expected]


def test_recursive_block_is_located_at_the_instance_closing_the_circle(tmp_path):
    path = tmp_path / "F.yaml"
    path.write_text(textwrap.dedent("""\
        input: {channels: 1, height: 4, width: 4}
        classes: 2
        blocks:
          x:
            layers:
              - {name: inner, block: y}
          y:
            layers:
              - {name: again, block: x}
        layers:
          - {name: top, block: x}
          - {name: loss, op: softmax_loss}
        """))
    with pytest.raises(SpecErrors) as exc:
        compile_spec(path)
    assert [str(e).replace(str(path), "F") for e in exc.value.errors] == [
        "F:9:30: layer top.inner.again: recursive block: x -> y -> x"]


def test_errors_inside_an_instance_name_the_instance_and_the_template_line(tmp_path):
    # a 5x5 kernel on a 2x2 map: the error is at the argument's value (the template's kernel: $k) and
    # names the instance and the template's line
    errs = _errors(tmp_path, """\
        layers:
          - {name: stem, op: maxpool, kernel: 4}
          - {name: r, block: res, args: {c: 3, k: 5}}
          - {name: loss, op: softmax_loss}
        """)
    assert len(errs) == 1
    assert errs[0].startswith("F:17:43: layer r.a: conv height: window 5 is larger than the padded input 2")
    assert errs[0].endswith("(in instance r at F:17:12 of block res, line 8)")


def test_unknown_template_reference_and_argument(tmp_path):
    path = tmp_path / "F.yaml"
    path.write_text(textwrap.dedent("""\
        input: {channels: 1, height: 4, width: 4}
        classes: 2
        blocks:
          x:
            args: {c: integer}
            layers:
              - {name: a, op: conv, filters: $d, kernel: 1, input: in}
              - {name: b, op: relu, input: nowhere}
        layers:
          - {name: top, block: x, args: {c: 2}}
          - {name: loss, op: softmax_loss}
        """))
    with pytest.raises(SpecErrors) as exc:
        compile_spec(path)
    assert [str(e).replace(str(path), "F") for e in exc.value.errors] == [
        "F:7:38: block x has no argument 'd' (declare it in args:)",
        "F:8:36: layer top.b: block x has no layer 'nowhere' (inside a block, inputs are its own layers, 'in', "
        "or layers outside it) (in instance top at F:10:12 of block x, line 8)"]


def test_cli_exits_2_on_a_block_error(tmp_path):
    path = _write(tmp_path, """\
        layers:
          - {name: r, block: res, args: {c: four}}
        """)
    out = subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", "compile", str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "argument 'c' of block res must be an integer, got 'four'" in out.stderr


def test_a_variant_edits_instances_and_errors_point_into_the_variant(tmp_path):
    base = ROOT / "specs" / "googlenet.yaml"
    ok = tmp_path / "v.yaml"
    ok.write_text(f"base: {base}\nremove_layers: [aux1, aux2]\nmodify_layers:\n  inception_3a: {{args: {{c1: 32}}}}\n")
    net = compile_spec(ok)
    layers = {n.layer for n in net.graph.nodes()}
    assert not any(l and l.startswith("aux") for l in layers)
    assert next(n for n in net.graph.nodes() if n.name == "inception_3a.b1").shapes[0][1] == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {base}\nmodify_layers:\n  inception_3a: {{args: {{c1: x}}}}\n")
    with pytest.raises(SpecErrors) as exc:
        compile_spec(bad)
    assert [str(e).replace(str(bad), "F") for e in exc.value.errors] == [
        "F:3:29: layer inception_3a: argument 'c1' of block inception must be an integer, got 'x'"]
