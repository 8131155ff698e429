"""Safe positional YAML loading: marks for keys, values and items; unsafe and ambiguous YAML is an error."""
from __future__ import annotations

import pytest

from alexnetc.compiler import Mark, SpecErrors
from alexnetc.compiler.source import SpecList, SpecMap, parse_yaml, read_yaml


def errors(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        parse_yaml(text, "f.yaml")
    return [str(e) for e in info.value.errors]


def test_marks_of_keys_values_and_items():
    tree = parse_yaml("a: 1\nlayers:\n  - {name: x, k: [3, 4]}\n  - name: y\n", "f.yaml")
    assert isinstance(tree, SpecMap) and tree.mark == Mark("f.yaml", 1, 1)
    assert tree.key_mark("layers") == Mark("f.yaml", 2, 1)
    assert tree.value_mark("a") == Mark("f.yaml", 1, 4)
    layers = tree["layers"]
    assert isinstance(layers, SpecList) and layers.value_mark(1) == Mark("f.yaml", 4, 5)
    first = layers[0]
    assert first.value_mark("name") == Mark("f.yaml", 3, 12) and first["k"].value_mark(1) == Mark("f.yaml", 3, 22)
    assert first.value_mark("missing") == first.mark == Mark("f.yaml", 3, 5)


def test_scalars_follow_the_core_schema():
    tree = parse_yaml("a: 1\nb: 1.0e-4\nc: true\nd: null\ne: text\nf: '7'\n", "f.yaml")
    assert tree == {"a": 1, "b": 1e-4, "c": True, "d": None, "e": "text", "f": "7"}


@pytest.mark.parametrize("text,where", [
    ("a: !!python/object/apply:os.system ['true']\n", "f.yaml:1:4"),
    ("a: !!python/name:os.system\n", "f.yaml:1:4"),
    ("a: !!binary aGk=\n", "f.yaml:1:4"),
    ("a: !custom {x: 1}\n", "f.yaml:1:4"),
    ("a: !!set {x}\n", "f.yaml:1:4"),
])
def test_tags_are_errors_not_objects(text, where):
    errs = errors(text)
    assert len(errs) == 1 and errs[0].startswith(where + ": YAML tag ") and "is not allowed in a spec" in errs[0]


def test_duplicate_keys_are_errors():
    assert errors("a: 1\nb: 2\na: 3\n") == ["f.yaml:3:1: duplicate key 'a' (first given at line 1)"]


def test_merge_keys_are_errors():
    errs = errors("x: &x {a: 1}\ny:\n  <<: *x\n")
    assert errs == ["f.yaml:3:3: YAML merge keys ('<<') are not supported; use 'base:' to build on another spec"]


def test_non_scalar_keys_are_errors():
    assert errors("? [1, 2]\n: 3\n") == ["f.yaml:1:3: mapping keys must be plain names"]


def test_syntax_errors_are_located():
    assert errors("a: [1, 2\nb: 3\n")[0].startswith("f.yaml:2:2: YAML syntax error:")
    # An unterminated quote points at where it opened, not past the end of the file.
    assert errors('a: "abc\nb: 1\n') == ["f.yaml:1:4: YAML syntax error: found unexpected end of stream "
                                        "while scanning a quoted scalar"]


def test_empty_and_missing_files(tmp_path):
    assert errors("# only a comment\n") == ["f.yaml:1:1: the spec is empty"]
    with pytest.raises(SpecErrors) as info:
        read_yaml(str(tmp_path / "nope.yaml"), "nope.yaml")
    assert str(info.value) == "nope.yaml:1:1: spec file not found"


def test_all_errors_of_a_file_together():
    errs = errors("a: 1\na: 2\nb: !!python/none ''\n")
    assert errs == ["f.yaml:2:1: duplicate key 'a' (first given at line 1)",
                    "f.yaml:3:4: YAML tag 'tag:yaml.org,2002:python/none' is not allowed in a spec"]
