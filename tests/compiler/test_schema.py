"""The shipped JSON Schema is what schema/build.py builds, every shipped spec names it for editors, and
docs/spec.md documents its training defaults and every op."""
from __future__ import annotations

import json
import re
from pathlib import Path

from alexnetc.compiler.ops import spec_ops
from alexnetc.compiler.ops.activation import ACTIVATIONS
from alexnetc.compiler.schema import spec_schema, with_defaults
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


def _documented_train_keys() -> dict[str, str]:
    """{key: default cell} of docs/spec.md's `train` table (`schedule.factor` for nested keys)."""
    text = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    section = text[text.index("## Training and data sections"):]
    section = section[:section.index("| `dtype` | parameters")]
    return dict(re.findall(r"^\| `([\w.]+)` \| (.+?) \|", section, re.M))


def test_training_defaults_are_the_schemas_and_documented():
    """oracle: the schema's declared defaults (what the runtime reads) against docs/spec.md's table."""
    defaults = with_defaults({}, "train")
    nested = ("schedule", "optimizer")     # documented as `key` (its type) and `key.sub` rows
    flat = {k: v for k, v in defaults.items() if k not in nested}
    for section in nested:
        flat[section] = {"type": defaults[section]["type"]}
        flat.update({f"{section}.{k}": v for k, v in defaults[section].items() if k != "type"})
    documented = _documented_train_keys()
    train = spec_schema()["properties"]["train"]["properties"]
    assert set(documented) == set(train) | {f"{s}.{k}" for s in nested for k in train[s]["properties"] if k != "type"}
    for key, cell in documented.items():
        if key not in flat:
            assert cell == "none", key
        elif isinstance(flat[key], dict):
            assert cell == "`{" + ", ".join(f"{k}: {v}" for k, v in flat[key].items()) + "}`", key
        else:
            value = flat[key] if isinstance(flat[key], str) else json.dumps(flat[key])   # YAML spelling
            assert cell == f"`{value}`", key
    assert defaults["batch_size"] == 128 and defaults["lr"] == 0.01 and defaults["momentum"] == 0.9   # the paper's


def test_docs_name_every_spec_op_and_activation():
    """oracle: the registry's spec ops against docs/spec.md's `op` row and its activations table."""
    text = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `op` | One of "))
    section = text[text.index("### activations"):]
    table = re.findall(r"^\| `(\w+)` \|", section[:section.index("\n\n", section.index("| op |"))], re.M)
    assert table == list(ACTIVATIONS[1:])
    assert set(re.findall(r"`(\w+)`", row)) - {"op"} == set(spec_ops()) - set(table)
