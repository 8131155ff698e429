"""The IR: immutable nodes, entries (node, output index) and a Graph of output entries plus attributes.

A `Node` is an operator application (or a variable when ``op == "null"``) tagged with the logical
device it runs on, the spec layer that produced it, that layer's source mark, the index of the layer's
first group it computes (`group`), and for a variable its `role`: ``data`` or ``label`` (fed by the
caller), ``param`` (learned) or ``state`` (not learned, updated by the op itself). Nodes never change:
a pass that rewrites the graph builds new nodes (`Graph.rewrite`). `Graph.attrs` carries whole-graph
results of passes (e.g. the memory plan). JSON (de)serialisation lives here so a graph round-trips
exactly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .errors import Mark

Shape = tuple[int, ...]


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


@dataclass(frozen=True, eq=False)
class Node:
    op: str
    name: str
    attrs_items: tuple = ()
    inputs: tuple["Entry", ...] = ()
    device: str | None = None
    layer: str | None = None
    mark: Mark | None = None
    shapes: tuple[Shape, ...] | None = None  # output shapes, set by infer_shapes
    role: str | None = None    # variables only: data | label | param | state
    group: int | None = None   # the first of its layer's groups this node computes (None: not grouped)

    @property
    def attrs(self) -> Mapping[str, Any]:
        return MappingProxyType(dict(self.attrs_items))

    @property
    def is_variable(self) -> bool:
        return self.op == "null"

    @property
    def is_param(self) -> bool:
        return self.role == "param"

    def with_(self, **changes: Any) -> "Node":
        if "attrs" in changes:
            changes["attrs_items"] = _freeze(changes.pop("attrs"))
        return replace(self, **changes)

    def __repr__(self) -> str:
        return f"Node({self.op}, {self.name!r}, device={self.device})"


ROLES = ("data", "label", "param", "state")


def make_node(op: str, name: str, attrs: Mapping[str, Any] | None = None, inputs: Iterable["Entry"] = (),
              device: str | None = None, layer: str | None = None, mark: Mark | None = None, *,
              role: str | None = None, group: int | None = None) -> Node:
    if role is not None and role not in ROLES:
        raise ValueError(f"variable role {role!r}: expected one of {ROLES}")
    return Node(op, name, _freeze(dict(attrs or {})), tuple(inputs), device, layer, mark, None, role, group)


class Entry(NamedTuple):
    node: Node
    index: int = 0

    @property
    def shape(self) -> Shape | None:
        return self.node.shapes[self.index] if self.node.shapes else None


def topo_order(heads: Iterable[Entry]) -> list[Node]:
    """Nodes reachable from `heads`, inputs before users, in a deterministic (DFS post-)order."""
    order: list[Node] = []
    seen: set[int] = set()
    for head in heads:
        stack: list[tuple[Node, int]] = [(head.node, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0 and id(node) in seen:
                continue
            if i < len(node.inputs):
                stack.append((node, i + 1))
                child = node.inputs[i].node
                if id(child) not in seen:
                    stack.append((child, 0))
            else:
                if id(node) not in seen:
                    seen.add(id(node))
                    order.append(node)
    return order


@dataclass(frozen=True)
class Graph:
    outputs: tuple[Entry, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def nodes(self) -> list[Node]:
        return topo_order(self.outputs)

    def variables(self) -> list[Node]:
        return [n for n in self.nodes() if n.is_variable]

    def params(self) -> list[Node]:
        return [n for n in self.nodes() if n.is_param]

    def node(self, name: str) -> Node:
        for n in self.nodes():
            if n.name == name:
                return n
        raise KeyError(name)

    def with_attrs(self, **attrs: Any) -> "Graph":
        return Graph(self.outputs, {**self.attrs, **attrs})

    def rewrite(self, fn: Callable[[Node, tuple[Entry, ...]], Node | None]) -> "Graph":
        """Rebuild every node bottom-up: `fn(node, new_inputs)` returns the new node (None: keep as is)."""
        mapping: dict[int, Node] = {}
        for node in self.nodes():
            inputs = tuple(Entry(mapping[id(e.node)], e.index) for e in node.inputs)
            new = fn(node, inputs)
            if new is None:
                new = node if inputs == node.inputs else node.with_(inputs=inputs)
            mapping[id(node)] = new
        return Graph(tuple(Entry(mapping[id(e.node)], e.index) for e in self.outputs), dict(self.attrs))

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        nodes = self.nodes()
        index = {id(n): i for i, n in enumerate(nodes)}
        return {
            "format": "alexnetc-graph/1",
            "nodes": [{
                "op": n.op, "name": n.name, "attrs": _jsonable(dict(n.attrs_items)),
                "inputs": [[index[id(e.node)], e.index] for e in n.inputs],
                "device": n.device, "layer": n.layer,
                "mark": str(n.mark) if n.mark else None,
                "shapes": [list(s) for s in n.shapes] if n.shapes is not None else None,
                "role": n.role, "group": n.group,
            } for n in nodes],
            "heads": [[index[id(e.node)], e.index] for e in self.outputs],
            "attrs": _jsonable(dict(self.attrs)),
        }

    def tojson(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "Graph":
        if d.get("format") != "alexnetc-graph/1":
            raise ValueError(f"not an alexnetc graph (format {d.get('format')!r})")
        built: list[Node] = []
        for nd in d["nodes"]:
            mark = None
            if nd.get("mark"):
                file, line, col = nd["mark"].rsplit(":", 2)
                mark = Mark(file, int(line), int(col))
            built.append(Node(nd["op"], nd["name"], _freeze(nd.get("attrs") or {}),
                              tuple(Entry(built[i], k) for i, k in nd["inputs"]), nd.get("device"),
                              nd.get("layer"), mark,
                              tuple(tuple(s) for s in nd["shapes"]) if nd.get("shapes") is not None else None,
                              nd.get("role"), nd.get("group")))
        return Graph(tuple(Entry(built[i], k) for i, k in d["heads"]), dict(d.get("attrs") or {}))

    @staticmethod
    def load_json(text: str) -> "Graph":
        return Graph.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
