"""MXNet-style symbols: compose a network from Python (`var`, op constructors), inspect and serialise it.

    from alexnetc.compiler import sym
    data = sym.var("data")
    x = sym.conv(data, filters=96, kernel=11, stride=4, pad=2, act="relu", name="conv1")
    net = sym.softmax_loss(sym.fc(sym.flatten(x), units=10, name="fc"), sym.var("label"), name="loss")
    net.list_arguments()      # ['data', 'conv1_weight', 'conv1_bias', 'fc_weight', 'fc_bias', 'label']
    net.infer_shape(data=(8, 3, 224, 224))

There is one constructor per registered op (``sym.conv``, ``sym.lrn``, ``sym.softmax_loss`` ...), made from
its descriptor: keyword attributes are checked against the op's declared attributes and defaults filled
in (`OpDef.construct_attrs`). Constructors create the parameter and state variables they need
(``NAME_weight``, ``NAME_bias``; batch norm's ``NAME_running_mean``) unless given. The YAML lowering
(`lower.py`) builds graphs through the same `apply`.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

from .errors import Mark
from .graph import Entry, Graph, Node, Shape, make_node, topo_order
from .ops import OPS, get_op

_counter = itertools.count()


class Symbol:
    """An immutable handle on one or more outputs of a graph."""

    def __init__(self, outputs: Iterable[Entry]):
        self._outputs = tuple(outputs)

    # -- structure -------------------------------------------------------------------------------------
    @property
    def outputs(self) -> tuple[Entry, ...]:
        return self._outputs

    @property
    def name(self) -> str | None:
        return self._outputs[0].node.name if len(self._outputs) == 1 else None

    @property
    def node(self) -> Node:
        return self._outputs[0].node

    def graph(self) -> Graph:
        return Graph(self._outputs)

    def __iter__(self):
        return (Symbol([e]) for e in self._outputs)

    def __len__(self):
        return len(self._outputs)

    def __getitem__(self, key: int | str) -> "Symbol":
        if isinstance(key, int):
            return Symbol([self._outputs[key]])
        names = self.list_outputs()
        if key not in names:
            raise KeyError(f"no output named '{key}'; outputs: {names}")
        return Symbol([self._outputs[names.index(key)]])

    def get_internals(self) -> "Symbol":
        """Every visible output of every node, like MXNet's get_internals()."""
        entries = []
        for n in topo_order(self._outputs):
            count = 1 if n.is_variable else get_op(n.op).visible
            entries.extend(Entry(n, i) for i in range(count))
        return Symbol(entries)

    def list_arguments(self) -> list[str]:
        return [n.name for n in topo_order(self._outputs) if n.is_variable]

    def list_outputs(self) -> list[str]:
        out = []
        for e in self._outputs:
            if e.node.is_variable:
                out.append(e.node.name)
            else:
                out.append(f"{e.node.name}_{get_op(e.node.op).outputs[e.index]}")
        return out

    def infer_shape(self, **shapes: Shape) -> tuple[list[Shape], list[Shape], list[Shape]]:
        """(argument shapes, output shapes, auxiliary shapes) given some argument shapes."""
        from .passes import infer_shapes

        g = infer_shapes(self.graph(), **shapes)
        args = [n.shapes[0] for n in g.nodes() if n.is_variable]
        return args, [e.shape for e in g.outputs], []

    def infer_shape_dict(self, **shapes: Shape) -> dict[str, Shape]:
        """Every argument's and every node output's shape by name."""
        from .passes import infer_shapes

        g = infer_shapes(self.graph(), **shapes)
        out = {}
        for n in g.nodes():
            names = [n.name] if n.is_variable else [f"{n.name}_{o}" for o in get_op(n.op).outputs]
            out.update(zip(names, n.shapes))
        return out

    def tojson(self) -> str:
        return self.graph().tojson()

    def __repr__(self) -> str:
        return f"<Symbol {self.list_outputs()}>"


def load_json(text: str) -> Symbol:
    return Symbol(Graph.load_json(text).outputs)


def Group(symbols: Sequence[Symbol]) -> Symbol:
    return Symbol([e for s in symbols for e in s.outputs])


def var(name: str, shape: Shape | None = None, *, device: str | None = None, role: str = "data",
        layer: str | None = None, mark: Mark | None = None, group: int | None = None, **attrs: Any) -> Symbol:
    """A variable: a network input (``role="data"``/``"label"``), a learned parameter (``"param"``) or
    state an op updates itself (``"state"``)."""
    a = dict(attrs)
    if shape is not None:
        a["shape"] = tuple(shape)
    return Symbol([Entry(make_node("null", name, a, (), device, layer, mark, role=role, group=group))])


def _entry(x: Symbol) -> Entry:
    if not isinstance(x, Symbol) or len(x.outputs) != 1:
        raise TypeError(f"expected a single-output Symbol, got {x!r}")
    return x.outputs[0]


def apply(op_name: str, inputs: Sequence[Symbol], *, name: str | None = None, device: str | None = None,
          layer: str | None = None, mark: Mark | None = None, group: int | None = None,
          params: dict[str, Symbol] | None = None, param_attrs: dict[str, dict] | None = None,
          **attrs: Any) -> Symbol:
    """Apply a registered op with these node attributes as given (the lowering fills them from the
    spec; the op constructors check and complete them first). Missing learnable parameters and state
    variables (`OpDef.params`, `OpDef.state`) become variables named NAME_ARG, with `param_attrs`
    (default: the op's `variable_attrs`)."""
    op = get_op(op_name)
    name = name or f"{op_name}{next(_counter)}"
    entries = [_entry(x) for x in inputs]
    params = dict(params or {})
    if param_attrs is None:
        param_attrs = op.variable_attrs({}, {})
    wanted = op.arguments_for(attrs)
    for pname, role in [*((p, "param") for p in op.params), *((s, "state") for s in op.state)]:
        if pname not in wanted:
            continue
        if pname not in params:
            params[pname] = var(f"{name}_{pname}", device=device, role=role, layer=layer, mark=mark,
                                group=group, **param_attrs.get(pname, {}))
        entries.append(_entry(params[pname]))
    node = make_node(op_name, name, attrs, entries, device, layer, mark, group=group)
    return Symbol([Entry(node, i) for i in range(op.visible)])


def _constructor(op_name: str):
    op = get_op(op_name)
    fixed = None if op.arguments is None else len([a for a in op.arguments if a not in (*op.params, *op.state)])

    def construct(*inputs: Symbol, name: str | None = None, device: str | None = None,
                  params: dict[str, Symbol] | None = None, param_attrs: dict[str, dict] | None = None,
                  layer: str | None = None, mark: Mark | None = None, **attrs: Any) -> Symbol:
        if fixed is not None and len(inputs) != fixed:
            raise TypeError(f"{op_name}() takes {fixed} input symbol(s), got {len(inputs)}")
        if fixed is None and not inputs:
            raise TypeError(f"{op_name}() needs at least one input symbol")
        return apply(op_name, inputs, name=name, device=device, layer=layer, mark=mark, params=params,
                     param_attrs=param_attrs, **op.construct_attrs(attrs))

    node_attrs = [a for a in op.attrs if a.node]
    described = "; ".join(f"{a.name}" + ("" if a.required else f"={a.default!r}" if not callable(a.default)
                                          else " (default: from the spec or layer)") for a in node_attrs)
    construct.__name__ = construct.__qualname__ = op_name
    construct.__doc__ = (f"{op.doc or 'Apply the ' + repr(op_name) + ' op.'}\n\nAttributes: {described or 'none'}. "
                         f"Descriptor: alexnetc.compiler.ops.{op.family}.")
    return construct


# One constructor per registered op: sym.conv, sym.fc, sym.lrn, sym.maxpool, sym.softmax_loss ...
for _name in OPS:
    globals()[_name] = _constructor(_name)
