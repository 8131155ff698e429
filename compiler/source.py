"""Frontend, step 1: read one YAML file into plain dicts/lists that remember where each value came from.

Safety: we only *compose* the YAML (no object construction) and build the tree ourselves, so a tag such
as ``!!python/object`` is reported as an error instead of running anything. Duplicate keys, which
PyYAML silently overwrites, are errors too. Every mapping (`SpecMap`) and sequence (`SpecList`) carries
the mark of itself and of each key and value, so later stages can point at ``file:line:col``.
"""
from __future__ import annotations

from typing import Any

import yaml

from .errors import Mark, SpecError, SpecErrors

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


class SpecMap(dict):
    """A dict that remembers the source mark of itself, of each key and of each value."""

    def __init__(self, *args: Any, mark: Mark | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.mark = mark
        self.key_marks: dict[str, Mark] = {}
        self.value_marks: dict[str, Mark] = {}

    def key_mark(self, key: str) -> Mark | None:
        return self.key_marks.get(key, self.mark)

    def value_mark(self, key: str) -> Mark | None:
        return self.value_marks.get(key, self.key_marks.get(key, self.mark))


class SpecList(list):
    """A list that remembers the source mark of itself and of each item."""

    def __init__(self, *args: Any, mark: Mark | None = None):
        super().__init__(*args)
        self.mark = mark
        self.item_marks: list[Mark | None] = [None] * len(self)

    def value_mark(self, index: int) -> Mark | None:
        if 0 <= index < len(self.item_marks) and self.item_marks[index] is not None:
            return self.item_marks[index]
        return self.mark


def _mark(node: yaml.Node, file: str) -> Mark:
    return Mark(file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[SpecError] = []
        self._constructor = yaml.SafeLoader("")  # used only to resolve plain scalars (ints, bools...)

    def build(self, node: yaml.Node) -> Any:
        mark = _mark(node, self.file)
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self.errors.append(SpecError(mark, f"YAML tag '{node.tag}' is not allowed in a spec"))
            out = SpecMap(mark=mark)
            for key_node, value_node in node.value:
                key_mark = _mark(key_node, self.file)
                if not isinstance(key_node, yaml.ScalarNode):
                    self.errors.append(SpecError(key_mark, "mapping keys must be plain names"))
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(SpecError(key_mark, "YAML merge keys ('<<') are not supported; "
                                                           "use 'base:' to build on another spec"))
                    continue
                key = self.build(key_node)
                if not isinstance(key, str):
                    key = str(key)
                if key in out:
                    first = out.key_marks[key]
                    self.errors.append(SpecError(key_mark, f"duplicate key '{key}' (first given at "
                                                           f"line {first.line})"))
                    continue
                out[key] = self.build(value_node)
                out.key_marks[key] = key_mark
                out.value_marks[key] = _mark(value_node, self.file)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.errors.append(SpecError(mark, f"YAML tag '{node.tag}' is not allowed in a spec"))
            out = SpecList(mark=mark)
            for item in node.value:
                out.append(self.build(item))
                out.item_marks.append(_mark(item, self.file))
            return out
        # Scalar: only the core schema's types; anything else would be object construction.
        if node.tag not in _SCALAR_TAGS:
            self.errors.append(SpecError(mark, f"YAML tag '{node.tag}' is not allowed in a spec"))
            return node.value
        return self._constructor.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> Any:
    """Parse YAML text into SpecMap/SpecList/scalars; raise SpecErrors with positions on any problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context_mark is not None and m is not None and m.index >= len(text):
            # "unexpected end of stream": point at what was left open (a quote, a bracket), not past the end.
            m = exc.context_mark
            problem = f"{problem} {exc.context}" if exc.context and exc.context != problem else problem
        mark = Mark(file, m.line + 1, m.column + 1) if m else Mark(file, 1, 1)
        lines = text.splitlines() or [""]
        if mark.line > len(lines):  # still at the end: the end of the last line
            mark = Mark(file, len(lines), len(lines[-1]) + 1)
        raise SpecErrors([SpecError(mark, f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:  # non-positional reader errors (e.g. bad characters)
        raise SpecErrors([SpecError(Mark(file, 1, 1), f"YAML error: {exc}")]) from None
    if root is None:
        raise SpecErrors([SpecError(Mark(file, 1, 1), "the spec is empty")])
    builder = _Builder(file)
    tree = builder.build(root)
    if builder.errors:
        raise SpecErrors(builder.errors)
    return tree


def read_yaml(path: str, display: str | None = None) -> Any:
    """Read and parse a YAML spec file; errors name `display` (default: the path as given)."""
    display = display or str(path)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise SpecErrors([SpecError(Mark(display, 1, 1), "spec file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecErrors([SpecError(Mark(display, 1, 1), f"cannot read spec: {exc}")]) from None
    return parse_yaml(text, display)
