"""`classes:` means the classifier (compiler/classifier.py): a variant that changes `classes` resizes
each loss head's classifier that is still sized for a base's classes, wherever it is written (a
block, a conv classifier), and leaves alone one the variant sized itself."""
from __future__ import annotations

import textwrap

import pytest

from alexnetc.compiler import SpecErrors, compile_spec, load_spec
from alexnetc.compiler.classifier import classifiers


def _variant(tmp_path, text: str, name: str = "v.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _sizes(spec) -> dict:
    return {l["name"]: l.get("units", l.get("filters")) for l in classifiers(spec["layers"])}


@pytest.mark.parametrize("base, heads", [
    ("resnet18", {"fc": 10}),                                # fc after a global pool
    ("alexnet", {"fc8": 10}),                                # fc after dropout, towers gathered
    ("variants/googlenet-mini", {"aux.fc2": 10, "fc": 10}),  # an auxiliary head written in a block
    ("variants/nin-mini", {"mlpconv3.cccp2": 10}),           # a conv classifier, in a block, before a global pool
])
def test_a_variant_with_other_classes_resizes_each_heads_classifier(tmp_path, base, heads):
    path = _variant(tmp_path, f"base: {base}\nclasses: {7 if '-mini' in base else 10}\n")
    want = {k: (7 if "-mini" in base else 10) for k in heads}
    net = compile_spec(path)
    assert _sizes(net.spec) == want
    assert net.graph.outputs[1].node.shapes[1][1] == net.classes   # the main head's probabilities


def test_the_resized_size_is_marked_at_the_variants_classes(tmp_path):
    """An error about the new size points at the variant's classes: line, where the value came from."""
    path = _variant(tmp_path, "base: alexnet\nclasses: 10\n")
    fc8 = next(l for l in load_spec(path)["layers"] if l["name"] == "fc8")
    mark = fc8.value_mark("units")
    assert (mark.file, mark.line, mark.col) == (str(path), 2, 10)


def test_a_classifier_the_variant_sized_itself_is_kept(tmp_path):
    """fc8: {units: 12} with classes: 10 is the user's choice, not the base's: the loss head refuses it."""
    path = _variant(tmp_path, """\
        base: alexnet
        classes: 10
        modify_layers:
          fc8: {units: 12}
        """)
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    assert "the scores reaching the loss have 12 features but the spec has classes: 10" in str(info.value)


@pytest.mark.parametrize("units", ["[1, 2, 3]", "{a: 1}"])
def test_a_classifier_size_that_is_not_a_number_is_a_located_error(tmp_path, units):
    """A list or mapping where the size goes is validation's to name (file:line:col), not a crash of the
    classes rewrite (found by test_mutations' hypothesis run: 'unhashable type: SpecList')."""
    path = _variant(tmp_path, f"""\
        base: variants/mini
        classes: 7
        modify_layers:
          fc8:
            units: {units}
        """)
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    assert f"{path}:5:" in str(info.value) and "expected an integer" in str(info.value)


def test_a_chain_of_variants_follows_every_earlier_classes(tmp_path):
    """alexnet (1000) <- ten (classes 10, fc8 inherited) <- five (classes 5): fc8 follows to 5; and a
    middle variant that sized fc8 for its own classes is followed as well."""
    _variant(tmp_path, "base: alexnet\nclasses: 10\n", "ten.yaml")
    five = _variant(tmp_path, "base: ten.yaml\nclasses: 5\n", "five.yaml")
    assert _sizes(compile_spec(five).spec) == {"fc8": 5}
    _variant(tmp_path, "base: alexnet\nclasses: 10\nmodify_layers: {fc8: {units: 10}}\n", "ten2.yaml")
    three = _variant(tmp_path, "base: ten2.yaml\nclasses: 3\n", "three.yaml")
    assert _sizes(compile_spec(three).spec) == {"fc8": 3}
    same = _variant(tmp_path, "base: ten.yaml\nname: other\n", "same.yaml")   # classes inherited: 10
    assert _sizes(compile_spec(same).spec) == {"fc8": 10}


def test_a_spec_without_base_is_never_rewritten(tmp_path):
    path = _variant(tmp_path, """\
        input: {channels: 1, height: 8, width: 8}
        classes: 3
        layers:
          - {name: f, op: fc, units: 4}
          - {name: loss, op: softmax_loss}
        """)
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    assert "have 4 features but the spec has classes: 3" in str(info.value)


def test_a_head_reading_a_concat_has_no_single_classifier(tmp_path):
    base = _variant(tmp_path, """\
        input: {channels: 1, height: 8, width: 8}
        classes: 4
        layers:
          - {name: a, op: fc, units: 2, input: data}
          - {name: b, op: fc, units: 2, input: data}
          - {name: cat, op: concat, inputs: [a, b]}
          - {name: loss, op: softmax_loss}
        """, "base.yaml")
    assert classifiers(load_spec(base)["layers"]) == []
    path = _variant(tmp_path, "base: base.yaml\nclasses: 6\n")
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    assert "have 4 features but the spec has classes: 6" in str(info.value)
