"""Frontend, step 2b: expand blocks, named templates of layers, into plain layers (after `variants.resolve`,
before validation), keeping every value's source mark.

    blocks:
      inception:
        args: {c1: integer, c3r: integer, c3: integer, c5r: integer, c5: integer, cp: integer}
        layers:
          - {name: b1, op: conv, input: in, filters: $c1, kernel: 1}
          - {name: b2r, op: conv, input: in, filters: $c3r, kernel: 1}
          - {name: b2, op: conv, filters: $c3, kernel: 3, pad: 1}
          ...
          - {name: out, op: concat, inputs: [b1, b2, b3, b4]}
    layers:
      - {name: inception_3a, block: inception, args: {c1: 64, c3r: 96, ...}}

* An **instance** is a layer with `block:` (and `args:`, optional `repeat:`, `input:`, `device:`,
  `doc:`). Its layers are named `INSTANCE.LAYER` (`inception_3a.b2`); with `repeat: n` the copies are
  `INSTANCE.1` ... `INSTANCE.n`, each reading the previous one (`stage.2.conv1`).
* Inside a template, `in` is the instance's input (its `input:`, else the layer before the instance,
  else `data`); the first template layer reads it when it names no input. Other references are to
  the template's own layers, or to outer layers by name (a `layer` argument makes that explicit).
* Outside, the instance's name refers to its output, the last layer of its (last) copy.
* **Arguments** are declared with a type (`integer`, `number`, `boolean`, `string`, `pair` (n or
  [h, w]), `layer` (a layer name), `any`), or as `{type: T, default: V}`. A template value that is
  exactly `$NAME` is replaced by the argument's value, whole: no expressions, no `$` inside strings.
* Blocks may use other blocks, never themselves (directly or through others).
* An instance's `device:` is given to each of its layers that can take one and names none itself.

Every problem is a located `SpecError`: a missing, unknown or ill-typed argument at the instance, an
unknown `$NAME` or reference at the template, a recursive block at the instance that closes the
circle, a name that two expanded layers share at the second one, an instance named like a reserved
name (`data`, `label`).

Expansion is bounded as it goes (`limits.MAX_LAYERS` layers, `limits.MAX_YAML_NODES` values created):
every layer and value made is counted, and after an instance's first copy the cost of its other
`repeat - 1` copies is projected, so an instance that would cross a limit is refused, at its own
file:line:col, before the rest is made (nesting 1,000-fold repeats three deep costs one copy of each
level, not 10^9 layers). Errors found later in an expanded
layer (schema, shapes) are located at the template's line and name the instance and its line:
`origin_note` / `locate_errors` add ``(in instance inception_3a at FILE:LINE:COL, block inception)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import Mark, SpecError, SpecErrors, did_you_mean
from .limits import limit, raise_hint
from .ops.weighted import DEVICE, GROUPS
from .source import SpecList, SpecMap
from .validate import RESERVED

BLOCKS = "blocks"
BLOCK = "block"
ARGS = "args"
REPEAT = "repeat"
INPUT_REF = "in"          # inside a template: the instance's input
ARG_TYPES = ("integer", "number", "boolean", "string", "pair", "layer", "any")
INSTANCE_KEYS = ("name", BLOCK, ARGS, REPEAT, "input", DEVICE.name, "doc")
MAX_DEPTH = 16


@dataclass(frozen=True)
class Origin:
    """Where an expanded layer comes from: the outermost instance and the block it instantiates."""

    instance: str
    instance_mark: Mark | None
    block: str
    template_mark: Mark | None = None

    def note(self) -> str:
        where = f" at {self.instance_mark}" if self.instance_mark else ""
        line = f" line {self.template_mark.line}" if self.template_mark else ""
        return f" (in instance {self.instance}{where} of block {self.block},{line})" if line else \
            f" (in instance {self.instance}{where} of block {self.block})"


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("string", "layer"):
        return isinstance(value, str)
    if kind == "pair":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in value))
    return True


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Overflow(Exception):
    """Expansion would cross a limit: the located error, reported alone (nothing else is expanded)."""

    def __init__(self, error: SpecError):
        super().__init__(str(error))
        self.error = error


class _Budget:
    """What expansion has made so far (layers in the flat spec, values created) against the limits,
    and the instances being expanded (innermost last), so a limit crossed names the instance at fault."""

    def __init__(self) -> None:
        self.max_layers, self.max_values = limit("MAX_LAYERS"), limit("MAX_YAML_NODES")
        self.layers = self.values = 0
        self.open: list[tuple[str, Mark | None, str]] = []   # (instance name, mark, origin note or "")

    def _refuse(self, message: str, mark: Mark | None = None) -> _Overflow:
        name, at, note = self.open[-1] if self.open else (None, None, "")
        return _Overflow(SpecError(at or mark or Mark("<spec>", 1, 1), message + note, name))

    def _subject(self) -> str:
        return f"block instance '{self.open[-1][0]}'" if self.open else "block expansion"

    def layer(self, mark: Mark | None) -> None:
        self.layers += 1
        if self.layers > self.max_layers:
            raise self._refuse(f"{self._subject()} makes the spec more than {self.max_layers:,} layers long"
                               f"{raise_hint('MAX_LAYERS')}", mark)

    def value(self) -> None:
        self.values += 1
        if self.values > self.max_values:
            raise self._refuse(f"{self._subject()} creates more than {self.max_values:,} values (an argument's "
                               f"value is copied into every copy of a block){raise_hint('MAX_YAML_NODES')}")

    def project(self, copies: int, layers: int, values: int) -> None:
        """After the first of the innermost open instance's `copies` copies (`layers` layers, `values`
        values): refuse before making the others when they would cross a limit."""
        for made, per_copy, key in ((self.layers, layers, "MAX_LAYERS"), (self.values, values, "MAX_YAML_NODES")):
            total = made + per_copy * (copies - 1)
            if total > limit(key):
                what = "expands to" if key == "MAX_LAYERS" else "creates"
                unit = "layers" if key == "MAX_LAYERS" else "values"
                before = f", {total:,} with those before it" if total != per_copy * copies else ""
                raise self._refuse(f"{self._subject()} {what} {per_copy * copies:,} {unit} ({copies:,} copies of "
                                   f"{per_copy:,}{before}), more than a spec may have{raise_hint(key)}")


def _arg_ref(value: Any) -> str | None:
    """`NAME` of a whole-value reference `$NAME`, else None."""
    if isinstance(value, str) and value.startswith("$") and len(value) > 1:
        return value[1:]
    return None


class _Expander:
    def __init__(self, spec: SpecMap):
        self.spec = spec
        raw = spec.get(BLOCKS)
        self.blocks: dict[str, SpecMap] = dict(raw) if isinstance(raw, SpecMap) else {}
        self.errors: list[SpecError] = []
        self.origins: dict[str, Origin] = {}
        self.aliases: dict[str, str] = {}      # instance (or copy) name -> its output layer's name
        self.outer_names: set[str] = set()
        self.alias_marks: dict[str, Mark | None] = {}
        self.budget = _Budget()
        self.check_blocks()

    def check_blocks(self) -> None:
        """The `blocks:` section's own structure: a mapping of mappings with layers and typed args."""
        raw = self.spec.get(BLOCKS)
        if raw is None:
            return
        if not isinstance(raw, SpecMap):
            self.errors.append(SpecError(self.spec.value_mark(BLOCKS), "blocks: expected a mapping of block names "
                                         "to {args, layers}"))
            self.blocks = {}
            return
        for name, block in list(raw.items()):
            mark = raw.value_mark(name)
            if not isinstance(block, SpecMap):
                self.errors.append(SpecError(mark, f"block {name}: expected a mapping with 'layers' (and 'args')"))
                del self.blocks[name]
                continue
            for key in block:
                if key not in ("args", "layers", "doc"):
                    self.errors.append(SpecError(block.key_mark(key), f"block {name}: unknown key '{key}'"
                                                 f"{did_you_mean(key, ['args', 'layers', 'doc'])}"))
            layers = block.get("layers")
            if not isinstance(layers, SpecList) or not layers or not all(isinstance(l, SpecMap) for l in layers):
                self.errors.append(SpecError(block.value_mark("layers") if "layers" in block else mark,
                                             f"block {name}: 'layers' must be a non-empty list of layers"))
                del self.blocks[name]
                continue
            args = block.get(ARGS, SpecMap())
            if not isinstance(args, SpecMap):
                self.errors.append(SpecError(block.value_mark(ARGS), f"block {name}: 'args' must map argument names "
                                             f"to types ({', '.join(ARG_TYPES)})"))
                del self.blocks[name]
                continue
            for arg, kind in args.items():
                t = kind.get("type") if isinstance(kind, SpecMap) else kind
                extra = [k for k in kind if k not in ("type", "default")] if isinstance(kind, SpecMap) else []
                if t not in ARG_TYPES or extra:
                    self.errors.append(SpecError(args.value_mark(arg), f"block {name}: argument '{arg}' needs a type "
                                                 f"({', '.join(ARG_TYPES)}) or {{type: T, default: V}}"))
                elif isinstance(kind, SpecMap) and "default" in kind and not _type_ok(t, kind["default"]):
                    self.errors.append(SpecError(kind.value_mark("default"), f"block {name}: the default of '{arg}' "
                                                 f"is not {'an' if t[0] in 'aeiou' else 'a'} {t}"))

    # -- declarations --------------------------------------------------------------------------------------
    def params(self, block: str) -> dict[str, tuple[str, Any, Mark | None]]:
        """Declared arguments: name -> (type, default or REQUIRED, mark of the declaration)."""
        decl = self.blocks[block].get(ARGS)
        out: dict[str, tuple[str, Any, Mark | None]] = {}
        if not isinstance(decl, SpecMap):
            return out
        for name, kind in decl.items():
            if isinstance(kind, SpecMap):
                out[name] = (kind.get("type", "any"), kind.get("default", _REQUIRED), decl.value_mark(name))
            else:
                out[name] = (kind, _REQUIRED, decl.value_mark(name))
        return out

    # -- expansion -----------------------------------------------------------------------------------------
    def expand_list(self, layers: SpecList, prefix: str, input_ref: str | None, env: dict[str, Any] | None,
                    local: set[str] | None, stack: tuple[str, ...], origin: Origin | None) -> tuple[SpecList, str | None]:
        """Expand `layers` (the spec's list when `env` is None, else a template's); returns the flat
        layers and the name of the last one."""
        out = SpecList(mark=layers.mark)
        prev = input_ref
        for i, layer in enumerate(layers):
            mark = layers.value_mark(i)
            if not isinstance(layer, SpecMap):
                out.append(layer)
                out.item_marks.append(mark)
                continue
            if env is not None:
                layer = self.substitute(layer, env, stack[-1])
                layer = self.rename(layer, prefix, local or set(), input_ref, stack[-1], first=(i == 0))
            if BLOCK in layer:
                flat, last = self.instance(layer, prev, stack, origin, prefix)
                out.extend(flat)
                out.item_marks.extend(flat.item_marks)
                prev = last
                continue
            if origin is not None and isinstance(layer.get("name"), str):
                self.origins[layer["name"]] = Origin(origin.instance, origin.instance_mark, origin.block, mark)
            self.budget.layer(mark)
            out.append(layer)
            out.item_marks.append(mark)
            prev = layer.get("name") if isinstance(layer.get("name"), str) else prev
        return out, prev

    def instance(self, layer: SpecMap, prev: str | None, stack: tuple[str, ...], origin: Origin | None,
                 prefix: str) -> tuple[SpecList, str | None]:
        name, block = layer.get("name"), layer.get(BLOCK)
        empty = SpecList()
        for key in layer:
            if key not in INSTANCE_KEYS:
                self.errors.append(SpecError(layer.key_mark(key), f"unknown key '{key}' in a block instance"
                                             f"{did_you_mean(key, INSTANCE_KEYS)}; an instance takes "
                                             f"{', '.join(INSTANCE_KEYS)}", name if isinstance(name, str) else None))
                return empty, prev
        if not isinstance(name, str) or not isinstance(block, str):
            self.errors.append(SpecError(layer.mark, "a block instance needs a 'name' and a 'block' (strings)"))
            return empty, prev
        if name in RESERVED:
            self.errors.append(SpecError(layer.value_mark("name"), f"'{name}' is reserved for the network's "
                                         f"{'input' if name == 'data' else 'labels'}; a block instance may not "
                                         "be named so", name))
            return empty, prev
        if ARGS in layer and not isinstance(layer[ARGS], SpecMap):
            self.errors.append(SpecError(layer.value_mark(ARGS), "args: expected a mapping {argument: value}", name))
            return empty, prev
        if block not in self.blocks:
            self.errors.append(SpecError(layer.value_mark(BLOCK), f"unknown block '{block}'"
                                         f"{did_you_mean(block, list(self.blocks))}"
                                         + (f"; blocks: {', '.join(self.blocks)}" if self.blocks else
                                            " (the spec has no blocks:)"), name))
            return empty, prev
        if block in stack:
            chain = " -> ".join((*stack[stack.index(block):], block))
            self.errors.append(SpecError(layer.value_mark(BLOCK), f"recursive block: {chain}", name))
            return empty, prev
        if len(stack) >= MAX_DEPTH:
            self.errors.append(SpecError(layer.value_mark(BLOCK), f"blocks nested deeper than {MAX_DEPTH}", name))
            return empty, prev
        env = self.bind_args(layer, block, name)
        if env is None:
            return empty, prev
        template = self.blocks[block]["layers"]
        local = {l["name"] for l in template if isinstance(l, SpecMap) and isinstance(l.get("name"), str)}
        if INPUT_REF in local:
            self.errors.append(SpecError(self.blocks[block].mark, f"block {block}: a layer may not be named "
                                         f"'{INPUT_REF}' (it means the instance's input)", name))
            return empty, prev
        origin = origin or Origin(name, layer.value_mark("name"), block)
        entry = layer.get("input", prev or "data")
        repeat = layer.get(REPEAT, 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 1000:
            self.errors.append(SpecError(layer.value_mark(REPEAT), f"repeat: expected an integer from 1 to 1000, got "
                                         f"{_describe(repeat)}", name))
            return empty, prev
        out = SpecList(mark=layer.mark)
        last = entry
        where = layer.value_mark(REPEAT) if REPEAT in layer else layer.value_mark("name")
        self.budget.open.append((name, where, origin.note() if origin.instance != name else ""))
        for k in range(repeat):
            copy_name = name if repeat == 1 else f"{name}.{k + 1}"
            made = (self.budget.layers, self.budget.values)
            flat, last_layer = self.expand_list(template, copy_name + ".", last, env, local, (*stack, block), origin)
            if k == 0 and repeat > 1:
                self.budget.project(repeat, self.budget.layers - made[0], self.budget.values - made[1])
            device = layer.get(DEVICE.name)
            if device is not None:
                flat = self.place(flat, device, layer.value_mark(DEVICE.name))
            out.extend(flat)
            out.item_marks.extend(flat.item_marks)
            if last_layer is not None:
                self.aliases[copy_name] = last_layer
                self.alias_marks[copy_name] = layer.value_mark("name")
                last = last_layer
        if repeat > 1 and last is not None:
            self.aliases[name] = last
            self.alias_marks[name] = layer.value_mark("name")
        self.budget.open.pop()
        return out, last

    def bind_args(self, layer: SpecMap, block: str, name: str) -> dict[str, Any] | None:
        params = self.params(block)
        given = layer.get(ARGS)
        given = given if isinstance(given, SpecMap) else SpecMap(mark=layer.mark)
        env: dict[str, Any] = {}
        ok = True
        for key, value in given.items():
            if key not in params:
                self.errors.append(SpecError(given.key_mark(key), f"block {block} has no argument '{key}'"
                                             f"{did_you_mean(key, list(params))}; its arguments: "
                                             f"{', '.join(params) or 'none'}", name))
                ok = False
                continue
            kind = params[key][0]
            if not _type_ok(kind, value):
                self.errors.append(SpecError(given.value_mark(key), f"argument '{key}' of block {block} must be "
                                             f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}, got {_describe(value)}",
                                             name))
                ok = False
                continue
            env[key] = (value, given.value_mark(key))
        missing = [k for k, (_, default, _) in params.items() if k not in given and default is _REQUIRED]
        if missing:
            where = layer.value_mark(ARGS) if ARGS in layer else layer.value_mark("name")
            self.errors.append(SpecError(where, f"instance of block {block} is missing argument"
                                         f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}", name))
            ok = False
        for k, (_, default, mark) in params.items():
            if k not in given and default is not _REQUIRED:
                env[k] = (default, mark)
        return env if ok else None

    def substitute(self, value: Any, env: dict[str, Any], block: str, mark: Mark | None = None) -> Any:
        """A copy of a template value with every `$NAME` replaced by the argument's value (and mark)."""
        self.budget.value()
        if isinstance(value, SpecMap):
            out = SpecMap(mark=value.mark)
            for k, v in value.items():
                ref = _arg_ref(v)
                out[k] = self.substitute(v, env, block, value.value_mark(k))
                out.key_marks[k] = value.key_mark(k)
                out.value_marks[k] = env[ref][1] if ref in env and env[ref][1] is not None else value.value_mark(k)
            return out
        if isinstance(value, SpecList):
            out_l = SpecList(mark=value.mark)
            for i, v in enumerate(value):
                ref = _arg_ref(v)
                out_l.append(self.substitute(v, env, block, value.value_mark(i)))
                out_l.item_marks.append(env[ref][1] if ref in env and env[ref][1] is not None else value.value_mark(i))
            return out_l
        ref = _arg_ref(value)
        if ref is None:
            return value
        if ref not in env:
            self.errors.append(SpecError(mark or self.blocks[block].mark, f"block {block} has no argument "
                                         f"'{ref}'{did_you_mean(ref, list(env))} (declare it in args:)"))
            return value
        return self.copy_value(env[ref][0])

    def copy_value(self, value: Any) -> Any:
        """A deep copy of an argument's value (marks kept), every value counted against the budget."""
        self.budget.value()
        if isinstance(value, SpecMap):
            out = SpecMap(mark=value.mark)
            out.key_marks, out.value_marks = dict(value.key_marks), dict(value.value_marks)
            for k, v in value.items():
                out[k] = self.copy_value(v)
            return out
        if isinstance(value, SpecList):
            out_l = SpecList(mark=value.mark)
            out_l.extend(self.copy_value(v) for v in value)
            out_l.item_marks = list(value.item_marks)
            return out_l
        if isinstance(value, (dict, list)):
            return copy.deepcopy(value)
        return value

    def rename(self, layer: SpecMap, prefix: str, local: set[str], input_ref: str | None, block: str,
               first: bool) -> SpecMap:
        """A template layer with its name and references made hierarchical (`in` -> the instance's input)."""
        out = copy.copy(layer)
        out.key_marks, out.value_marks = dict(layer.key_marks), dict(layer.value_marks)
        if isinstance(layer.get("name"), str):
            out["name"] = prefix + layer["name"]

        def ref(r: Any, mark: Mark | None) -> Any:
            if not isinstance(r, str):
                return r
            if r == INPUT_REF:
                return input_ref or "data"
            if r in local:
                return prefix + r
            if r in self.outer_names or r == "data" or r in self.aliases:
                return r   # an outer layer, reached through a `layer` argument
            self.errors.append(SpecError(mark or layer.mark, f"block {block} has no layer '{r}'"
                                         f"{did_you_mean(r, sorted(local | {INPUT_REF}))} (inside a block, "
                                         f"inputs are its own layers, '{INPUT_REF}', or layers outside it)",
                                         out.get("name") if isinstance(out.get("name"), str) else None))
            return r

        if "input" in layer:
            out["input"] = ref(layer["input"], layer.value_mark("input"))
        elif "inputs" in layer and isinstance(layer["inputs"], SpecList):
            refs = SpecList(mark=layer["inputs"].mark)
            for i, r in enumerate(layer["inputs"]):
                refs.append(ref(r, layer["inputs"].value_mark(i)))
                refs.item_marks.append(layer["inputs"].value_mark(i))
            out["inputs"] = refs
        elif first:   # the template's first layer reads the instance's input
            out["input"] = input_ref or "data"
            out.key_marks["input"] = out.value_marks["input"] = layer.mark
        return out

    def place(self, layers: SpecList, device: str, mark: Mark | None) -> SpecList:
        """The instance's device on each layer that takes one and names no placement itself."""
        from .ops import OPS

        for layer in layers:
            if not isinstance(layer, SpecMap) or DEVICE.name in layer or GROUPS.name in layer:
                continue
            op = OPS.get(layer.get("op")) if isinstance(layer.get("op"), str) else None
            if op is not None and any(a.name == DEVICE.name for a in op.attrs):
                layer[DEVICE.name] = device
                layer.key_marks[DEVICE.name] = layer.value_marks[DEVICE.name] = mark
        return layers


_REQUIRED = object()


def expand(spec: SpecMap) -> SpecMap:
    """The spec with every block instance replaced by its layers and `blocks:` removed. A spec without
    blocks or instances is returned as is. Raises SpecErrors with every block problem found."""
    layers = spec.get("layers")
    has_instances = isinstance(layers, SpecList) and any(isinstance(l, SpecMap) and BLOCK in l for l in layers)
    if BLOCKS not in spec and not has_instances:
        return spec
    ex = _Expander(spec)
    if not isinstance(layers, SpecList):
        return spec   # the schema reports it
    ex.outer_names = {l["name"] for l in layers if isinstance(l, SpecMap) and isinstance(l.get("name"), str)}
    try:
        flat, _ = ex.expand_list(layers, "", None, None, None, (), None)
    except _Overflow as exc:   # alone: what was expanded before it is incomplete
        raise SpecErrors(locate_errors([exc.error], ex.origins)) from None
    flat = _resolve_aliases(flat, ex.aliases)
    ex.errors += _clashes(flat, ex.origins, ex.aliases, ex.alias_marks)
    if ex.errors:
        raise SpecErrors(locate_errors(ex.errors, ex.origins))
    out = SpecMap(mark=spec.mark)
    for k, v in spec.items():
        if k == BLOCKS:
            continue
        out[k] = flat if k == "layers" else v
        out.key_marks[k] = spec.key_mark(k)
        out.value_marks[k] = spec.value_mark(k)
    out.origins = ex.origins
    return out


def _resolve_aliases(layers: SpecList, aliases: dict[str, str]) -> SpecList:
    """References to an instance name become references to its output layer."""
    def follow(r: Any) -> Any:
        seen = 0
        while isinstance(r, str) and r in aliases and seen < 64:
            r, seen = aliases[r], seen + 1
        return r

    names = {l["name"] for l in layers if isinstance(l, SpecMap) and isinstance(l.get("name"), str)}
    for layer in layers:
        if not isinstance(layer, SpecMap):
            continue
        if isinstance(layer.get("input"), str) and layer["input"] not in names:
            layer["input"] = follow(layer["input"])
        if isinstance(layer.get("inputs"), SpecList):
            for i, r in enumerate(layer["inputs"]):
                if isinstance(r, str) and r not in names:
                    layer["inputs"][i] = follow(r)
    return layers


def _clashes(layers: SpecList, origins: dict[str, Origin], aliases: dict[str, str],
             alias_marks: dict[str, Mark | None]) -> list[SpecError]:
    """A name two layers share after expansion (one of them expanded), or an instance named like a layer:
    an error at the second, naming where the first is. (Duplicates among plain layers are validation's.)"""
    seen: dict[str, Mark | None] = {}
    out = []
    for layer in layers:
        if not isinstance(layer, SpecMap) or not isinstance(layer.get("name"), str):
            continue
        name = layer["name"]
        if name in seen and name in origins:
            out.append(SpecError(layer.value_mark("name"), f"name clash after block expansion: '{name}' is also "
                                 f"the name of the layer at {seen[name]}", name))
        if name in aliases:
            out.append(SpecError(layer.value_mark("name"), f"name clash after block expansion: '{name}' is also the "
                                 f"name of the block instance at {alias_marks.get(name)}", name))
        seen.setdefault(name, layer.value_mark("name"))
    return out


def origin_note(layer: str | None, origins: dict[str, Origin]) -> str:
    """' (in instance X at FILE:LINE:COL, block B)' for an expanded layer, else ''."""
    o = origins.get(layer) if layer else None
    return o.note() if o else ""


def locate_errors(errors: Iterable[SpecError], origins: dict[str, Origin]) -> list[SpecError]:
    """Errors in expanded layers (located at the template) also name the instance and its line."""
    out = []
    for e in errors:
        note = origin_note(e.layer, origins)
        out.append(SpecError(e.mark, e.message + note, e.layer) if note and note not in e.message else e)
    return out
