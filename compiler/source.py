"""Frontend, step 1: read one YAML file into plain dicts/lists that remember where each value came from.

Safety: we only *compose* the YAML (no object construction) and build the tree ourselves, so a tag such
as ``!!python/object`` is reported as an error instead of running anything. Duplicate keys, which
PyYAML silently overwrites, are errors too. Every mapping (`SpecMap`) and sequence (`SpecList`) carries
the mark of itself and of each key and value, so later stages can point at ``file:line:col``.

Bounded (see `limits`): a spec file must be a regular file no larger than ``MAX_SPEC_BYTES`` (checked
before reading, so a FIFO or ``/dev/zero`` is refused instead of hanging); nesting deeper than
``MAX_YAML_DEPTH`` and trees of more than ``MAX_YAML_NODES`` values (aliases expanded: the "billion
laughs") are errors, as are number literals longer than ``MAX_NUMBER_DIGITS`` characters.

Numbers are read as YAML 1.2 reads them: `1e2` and `1.0e300` are floats (PyYAML's YAML 1.1 rules would
make them strings).
"""
from __future__ import annotations

import os
import re
import stat
from typing import Any

import yaml

from .errors import Mark, SpecError, SpecErrors
from .limits import excerpt, limit, raise_hint

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


class _TooBig(Exception):
    """A limit was hit while composing or building; carries the located error."""

    def __init__(self, error: SpecError):
        super().__init__(str(error))
        self.error = error


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer with a nesting bound (its composer recurses once per level), reading
    numbers as YAML 1.2 does (below)."""

    def __init__(self, stream: str, file: str, max_depth: int):
        super().__init__(stream)
        self._file, self._max_depth, self._depth = file, max_depth, 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                m = self.peek_event().start_mark
                raise _TooBig(SpecError(Mark(self._file, m.line + 1, m.column + 1),
                                        f"nesting deeper than {self._max_depth} levels"
                                        f"{raise_hint('MAX_YAML_DEPTH')}"))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# YAML 1.1 (PyYAML) reads `1e2` and `1.0e300` as strings: its floats need a dot and a signed exponent.
# YAML 1.2's core schema reads them as numbers, as JSON and every YAML 1.2 parser do; so do we. (The
# 1.1 forms still resolve as before: this adds a resolver, it replaces none.)
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[SpecError] = []
        self._constructor = yaml.SafeLoader("")  # used only to resolve plain scalars (ints, bools...)
        self._max_nodes, self._max_depth = limit("MAX_YAML_NODES"), limit("MAX_YAML_DEPTH")
        self._max_digits = limit("MAX_NUMBER_DIGITS")
        self._nodes = 0
        self._depth = 0

    def build(self, node: yaml.Node) -> Any:
        mark = _mark(node, self.file)
        self._nodes += 1
        if self._nodes > self._max_nodes:
            raise _TooBig(SpecError(mark, f"more than {self._max_nodes:,} values once aliases are expanded"
                                          f"{raise_hint('MAX_YAML_NODES')}"))
        self._depth += 1
        try:
            if self._depth > self._max_depth:  # aliases can nest (or refer to themselves) past the text's depth
                raise _TooBig(SpecError(mark, f"nesting deeper than {self._max_depth} levels once aliases are "
                                              f"expanded (a recursive alias?){raise_hint('MAX_YAML_DEPTH')}"))
            return self._build(node, mark)
        finally:
            self._depth -= 1

    def _build(self, node: yaml.Node, mark: Mark) -> Any:
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self.errors.append(SpecError(mark, f"YAML tag '{excerpt(node.tag)}' is not allowed in a spec"))
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
                    self.errors.append(SpecError(key_mark, f"duplicate key '{excerpt(key)}' (first given at "
                                                           f"line {first.line})"))
                    continue
                out[key] = self.build(value_node)
                out.key_marks[key] = key_mark
                out.value_marks[key] = _mark(value_node, self.file)
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.errors.append(SpecError(mark, f"YAML tag '{excerpt(node.tag)}' is not allowed in a spec"))
            out = SpecList(mark=mark)
            for item in node.value:
                out.append(self.build(item))
                out.item_marks.append(_mark(item, self.file))
            return out
        # Scalar: only the core schema's types; anything else would be object construction.
        if node.tag not in _SCALAR_TAGS:
            self.errors.append(SpecError(mark, f"YAML tag '{excerpt(node.tag)}' is not allowed in a spec"))
            return node.value
        if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and len(node.value) > self._max_digits:
            self.errors.append(SpecError(mark, f"number literal of {len(node.value):,} characters is too long "
                                               f"({excerpt(node.value, 12)}){raise_hint('MAX_NUMBER_DIGITS')}"))
            return 0
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            self.errors.append(SpecError(mark, f"cannot read this value ({excerpt(node.value, 20)}): "
                                               f"{excerpt(exc, 60)}"))
            return None


def parse_yaml(text: str, file: str) -> Any:
    """Parse YAML text into SpecMap/SpecList/scalars; raise SpecErrors with positions on any problem."""
    loader = None
    try:
        loader = _BoundedLoader(text, file, limit("MAX_YAML_DEPTH"))  # the reader checks characters here
        root = loader.get_single_node()
    except _TooBig as exc:
        raise SpecErrors([exc.error]) from None
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
        raise SpecErrors([SpecError(mark, f"YAML syntax error: {excerpt(problem, 120)}")]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ESC, ...)
        before = text[:exc.position]
        line, col = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        ch = exc.character if isinstance(exc.character, str) else chr(exc.character or 0)
        raise SpecErrors([SpecError(Mark(file, line, col), f"character {excerpt(ch)} (U+{ord(ch):04X}) is not "
                                                           "allowed in a spec")]) from None
    except yaml.YAMLError as exc:  # other non-positional errors
        raise SpecErrors([SpecError(Mark(file, 1, 1), f"YAML error: {excerpt(exc, 120)}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if root is None:
        raise SpecErrors([SpecError(Mark(file, 1, 1), "the spec is empty")])
    builder = _Builder(file)
    try:
        tree = builder.build(root)
    except _TooBig as exc:
        raise SpecErrors([exc.error]) from None
    if builder.errors:
        raise SpecErrors(builder.errors)
    return tree


def read_yaml(path: str, display: str | None = None) -> Any:
    """Read and parse a YAML spec file; errors name `display` (default: the path as given)."""
    display = display or str(path)
    return parse_yaml(read_spec_text(path, display), display)


def read_spec_text(path: str, display: str | None = None, ref: Mark | None = None) -> str:
    """The text of a spec file, after checking that it is a regular file within ``MAX_SPEC_BYTES``
    (before reading it: a FIFO, a device or a directory is refused, never opened). Errors are located
    at ``ref`` (the ``base:`` that named the file) when given, else at the file itself."""
    display = display or str(path)
    where = ref or Mark(display, 1, 1)
    who = f"base spec '{excerpt(display, 80)}'" if ref else "spec"
    cap = limit("MAX_SPEC_BYTES")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SpecErrors([SpecError(where, f"{who} not found" if ref else "spec file not found")]) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise SpecErrors([SpecError(where, f"cannot read {who}: {excerpt(getattr(exc, 'strerror', None) or exc)}")]) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise SpecErrors([SpecError(where, f"{who} is {kind}; a spec must be a regular file")])
    if st.st_size > cap:
        raise SpecErrors([SpecError(where, f"{who} is {st.st_size:,} bytes, too large for a spec"
                                           f"{raise_hint('MAX_SPEC_BYTES')}")])
    try:
        with open(path, "rb") as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise SpecErrors([SpecError(where, f"cannot read {who}: {excerpt(exc.strerror or exc)}")]) from None
    if len(data) > cap:  # it grew between the stat and the read
        raise SpecErrors([SpecError(where, f"{who} is more than {cap:,} bytes, too large for a spec"
                                           f"{raise_hint('MAX_SPEC_BYTES')}")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line, col = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        at = Mark(display, line, col) if not ref else where
        raise SpecErrors([SpecError(at, f"{who} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
                                        f"column {col})")]) from None
