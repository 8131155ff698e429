"""The shipped JSON Schema is what schema/build.py builds, and every shipped spec names it for editors."""
from __future__ import annotations

import json
from pathlib import Path

from alexnetc.compiler.ops import spec_ops
from alexnetc.compiler.schema import spec_schema
from alexnetc.compiler.schema.build import build, render

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_equals_build():
    assert (ROOT / "compiler" / "schema" / "alexnetc.schema.json").read_text() == render()
    assert spec_schema() == json.loads(render()) == json.loads(json.dumps(build()))


def test_every_op_has_a_definition():
    defs = spec_schema()["$defs"]
    assert sorted(k[3:] for k in defs if k.startswith("op_")) == sorted(spec_ops())


def test_shipped_specs_name_the_schema():
    for path in sorted((ROOT / "specs").rglob("*.yaml")):
        first = path.read_text().splitlines()[0]
        rel = "../" * len(path.relative_to(ROOT / "specs").parts) + "compiler/schema/alexnetc.schema.json"
        assert first == f"# yaml-language-server: $schema={rel}", path
