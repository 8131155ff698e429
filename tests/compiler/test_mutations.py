"""Property test: mutated shipped specs compile or fail with located SpecErrors, never anything else."""
from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexnetc.compiler import SpecErrors, compile_spec
from alexnetc.compiler.report import format_table

SPECS = Path(__file__).resolve().parents[2] / "specs"
ALEXNET = yaml.safe_load((SPECS / "alexnet.yaml").read_text())
MINI = yaml.safe_load((SPECS / "variants" / "mini.yaml").read_text())
MINI["base"] = str(SPECS / "alexnet.yaml")  # the mutated copy lives in a tmp dir
MINI_TEXT = (SPECS / "variants" / "mini.yaml").read_text().replace(
    "base: ../alexnet.yaml", f"base: {SPECS / 'alexnet.yaml'}")
ALEXNET_TEXT = (SPECS / "alexnet.yaml").read_text()

# Keys that must be positive integers wherever they appear in a layer or section.
POSITIVE_INT = {"filters", "units", "kernel", "stride", "count", "channels", "height", "width", "classes",
                "size", "batch_size", "epochs"}
REQUIRED_LAYER_KEYS = {"name", "op", "filters", "units", "kernel", "size", "alpha", "beta", "k",
                       "alpha_over_n", "p", "count"}
_counter = itertools.count()


def paths(tree, prefix=()):
    """Every (path, value) in the tree, containers included."""
    yield prefix, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from paths(v, (*prefix, i))


def get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def layer_lists(tree):
    """Paths of lists of layer mappings (alexnet: layers; mini: none, its layers are edits)."""
    return [p for p, v in paths(tree) if p and p[-1] == "layers" and isinstance(v, list)]


@st.composite
def mutated(draw):
    """(kind, yaml text) for one mutation of alexnet.yaml or mini.yaml."""
    which = draw(st.sampled_from(["alexnet", "mini"]))
    tree = copy.deepcopy(ALEXNET if which == "alexnet" else MINI)
    kind = draw(st.sampled_from(["delete", "wrong_type", "negative", "zero", "huge", "rename_ref",
                                 "bad_device", "text_line", "text_char"]))
    if kind in ("text_line", "text_char"):
        text = ALEXNET_TEXT if which == "alexnet" else MINI_TEXT
        lines = text.splitlines(keepends=True)
        if kind == "text_line":
            i = draw(st.integers(0, len(lines) - 1))
            return kind, False, "".join(lines[:i] + lines[i + 1:])
        i = draw(st.integers(0, len(text) - 1))
        ch = draw(st.sampled_from(list("{}[]:,-!&*#'\"|> \t\nx0")))
        return kind, False, text[:i] + ch + text[i:]
    all_paths = [p for p, _ in paths(tree) if p and p != ("base",)]
    must_fail = False
    if kind == "delete":
        path = draw(st.sampled_from(all_paths))
        parent = get(tree, path[:-1])
        if isinstance(parent, dict):
            must_fail = path[-1] in REQUIRED_LAYER_KEYS and len(path) >= 3 and path[0] == "layers" \
                and not (path[-1] == "count")
            must_fail = must_fail or (which == "alexnet" and len(path) == 1 and path[0] in ("input", "classes",
                                                                                           "layers"))
            del parent[path[-1]]
        else:
            del parent[path[-1]]
    elif kind == "wrong_type":
        path = draw(st.sampled_from(all_paths))
        new = draw(st.sampled_from(["abc", [1, 2, 3], {"x": 1}, True, None, 2.5, -7]))
        old = get(tree, path[:-1])[path[-1]]
        must_fail = path[-1] in POSITIVE_INT and isinstance(new, str)
        if isinstance(old, int) and not isinstance(old, bool) and new == 2.5 and path[-1] in POSITIVE_INT:
            must_fail = True
        get(tree, path[:-1])[path[-1]] = new
    elif kind in ("negative", "zero", "huge"):
        nums = [p for p, v in paths(tree) if p and isinstance(v, (int, float)) and not isinstance(v, bool)]
        path = draw(st.sampled_from(nums))
        old = get(tree, path)
        new = {"negative": -abs(old) - 1, "zero": 0,
               "huge": draw(st.sampled_from([10 ** 9, 2 ** 63, 10 ** 30, 1e300]))}[kind]
        named = [p for p in path if isinstance(p, str)]
        key = named[-1]
        must_fail = key in POSITIVE_INT and kind in ("negative", "zero")
        must_fail = must_fail or (key == "pad" and kind == "negative")
        get(tree, path[:-1])[path[-1]] = new
    elif kind == "rename_ref":
        refs = [p for p, v in paths(tree) if p and p[-1] in ("name", "input") and isinstance(v, str)
                and len(p) >= 3]
        layers = [p for p in layer_lists(tree)]
        if refs and draw(st.booleans()):
            path = draw(st.sampled_from(refs))
            get(tree, path[:-1])[path[-1]] = get(tree, path) + "_renamed"
            # Renaming the last layer (the loss) breaks nothing; any other rename orphans an implicit input.
        elif layers:
            lp = draw(st.sampled_from(layers))
            i = draw(st.integers(0, len(get(tree, lp)) - 1))
            get(tree, lp)[i]["input"] = "no_such_layer"
            must_fail = True
        else:  # mini: modify a layer to read a layer that does not exist
            name = draw(st.sampled_from(sorted(tree["modify_layers"])))
            tree["modify_layers"][name]["input"] = "no_such_layer"
            must_fail = True
    elif kind == "bad_device":
        if which == "alexnet":
            layer = draw(st.sampled_from(tree["layers"]))
            if "groups" in layer and "devices" in layer["groups"]:
                layer["groups"]["devices"][draw(st.integers(0, 1))] = "gpu7"
            else:
                layer["device"] = "gpu7"
        else:
            name = draw(st.sampled_from(sorted(tree["modify_layers"])))
            tree["modify_layers"][name]["device"] = "gpu7"
        must_fail = True
    return kind, must_fail, yaml.safe_dump(tree, sort_keys=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_specs_fail_only_with_located_spec_errors(case, tmp_path):
    check_mutant(case, tmp_path)


def check_mutant(case, tmp_path):
    kind, must_fail, text = case
    path = tmp_path / f"mutant{next(_counter)}.yaml"
    path.write_text(text)
    # A variant's errors may point into its base (an inherited layer); every mark names a real position.
    n_lines = {str(path): max(1, len(text.splitlines())), str(SPECS / "alexnet.yaml"): len(ALEXNET_TEXT.splitlines())}
    try:
        net = compile_spec(path, batch=2)
        format_table(net)  # what `alexnetc compile` prints: runs the gradient and memory passes too
    except SpecErrors as exc:
        assert exc.errors
        for e in exc.errors:
            assert e.mark.file in n_lines, str(e)
            assert 1 <= e.mark.line <= n_lines[e.mark.file] and e.mark.col >= 1, (str(e), n_lines)
            assert str(e).startswith(f"{e.mark.file}:{e.mark.line}:{e.mark.col}: ")
        return
    assert not must_fail, f"{kind} mutation compiled without an error:\n{text}"


@pytest.mark.parametrize("text", [
    "name: !!python/object/apply:os.system ['true']\n",
    "layers: !!python/name:os.system\n",
    "input: !custom {channels: 3}\n",
])
def test_tags_never_construct_objects(tmp_path, text):
    path = tmp_path / "tag.yaml"
    path.write_text(text)
    with pytest.raises(SpecErrors) as info:
        compile_spec(path)
    assert [str(e) for e in info.value.errors][0].startswith(f"{path}:1:")
    assert "is not allowed in a spec" in str(info.value)
