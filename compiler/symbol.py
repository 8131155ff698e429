"""MXNet-style symbols: compose a network from Python (`var`, op constructors), inspect and serialise it.

    from alexnetc.compiler import sym
    data = sym.var("data")
    x = sym.conv(data, filters=96, kernel=11, stride=4, pad=2, act="relu", name="conv1")
    net = sym.softmax_loss(sym.fc(sym.flatten(x), units=10, name="fc"), sym.var("label"), name="loss")
    net.list_arguments()      # ['data', 'conv1_weight', 'conv1_bias', 'fc_weight', 'fc_bias', 'label']
    net.infer_shape(data=(8, 3, 224, 224))

Op constructors create the parameter variables they need (``NAME_weight``, ``NAME_bias``) unless given.
The YAML lowering (`lower.py`) builds graphs through the same constructors.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

from .errors import Mark
from .graph import Entry, Graph, Node, Shape, make_node, topo_order
from .ops import get_op

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


def var(name: str, shape: Shape | None = None, *, device: str | None = None, kind: str = "input",
        layer: str | None = None, mark: Mark | None = None, **attrs: Any) -> Symbol:
    """A variable: a network input (``kind="input"``/``"label"``) or a parameter (``kind="param"``)."""
    a = {"kind": kind, **attrs}
    if shape is not None:
        a["shape"] = tuple(shape)
    return Symbol([Entry(make_node("null", name, a, (), device, layer, mark))])


def _entry(x: Symbol) -> Entry:
    if not isinstance(x, Symbol) or len(x.outputs) != 1:
        raise TypeError(f"expected a single-output Symbol, got {x!r}")
    return x.outputs[0]


def apply(op_name: str, inputs: Sequence[Symbol], *, name: str | None = None, device: str | None = None,
          layer: str | None = None, mark: Mark | None = None, params: dict[str, Symbol] | None = None,
          param_attrs: dict[str, dict] | None = None, **attrs: Any) -> Symbol:
    """Apply a registered op. Missing learnable parameters become variables named NAME_PARAM."""
    op = get_op(op_name)
    name = name or f"{op_name}{next(_counter)}"
    entries = [_entry(x) for x in inputs]
    params = dict(params or {})
    for pname in op.params:
        if pname not in op.arguments_for(attrs):
            continue
        if pname not in params:
            params[pname] = var(f"{name}_{pname}", device=device, kind="param", layer=layer, mark=mark,
                                **(param_attrs or {}).get(pname, {}))
        entries.append(_entry(params[pname]))
    node = make_node(op_name, name, attrs, entries, device, layer, mark)
    return Symbol([Entry(node, i) for i in range(op.visible)])


def _op_constructor(op_name: str, n_inputs: int | None = 1):
    def construct(*inputs: Symbol, name: str | None = None, device: str | None = None, **attrs) -> Symbol:
        if n_inputs is not None and len(inputs) != n_inputs:
            raise TypeError(f"{op_name}() takes {n_inputs} input symbol(s), got {len(inputs)}")
        return apply(op_name, inputs, name=name, device=device, **attrs)
    construct.__name__ = op_name
    construct.__doc__ = f"Apply the '{op_name}' op (see alexnetc.compiler.ops)."
    return construct


def conv(data: Symbol, *, filters: int, kernel, stride=1, pad=0, num_group: int = 1, act: str = "none",
         no_bias: bool = False, rounding: str = "floor", name: str | None = None, device: str | None = None,
         **kw) -> Symbol:
    """Grouped 2-d convolution with bias and a fused activation."""
    return apply("conv", [data], name=name, device=device, filters=filters, kernel=kernel, stride=stride,
                 pad=pad, num_group=num_group, act=act, no_bias=no_bias, rounding=rounding, **kw)


def fc(data: Symbol, *, units: int, act: str = "none", no_bias: bool = False, name: str | None = None,
       device: str | None = None, **kw) -> Symbol:
    """Fully connected layer with bias and a fused activation; input (N, features)."""
    return apply("fc", [data], name=name, device=device, units=units, act=act, no_bias=no_bias, **kw)


def lrn(data: Symbol, *, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75,
        alpha_over_n: bool = False, name: str | None = None, device: str | None = None, **kw) -> Symbol:
    """Local response normalisation across channels (defaults: the paper's values, alpha as written)."""
    return apply("lrn", [data], name=name, device=device, size=size, k=k, alpha=alpha, beta=beta,
                 alpha_over_n=alpha_over_n, **kw)


def maxpool(data: Symbol, *, kernel, stride=None, pad=0, rounding: str = "floor", name=None, device=None,
            **kw) -> Symbol:
    return apply("maxpool", [data], name=name, device=device, kernel=kernel,
                 stride=kernel if stride is None else stride, pad=pad, rounding=rounding, **kw)


def avgpool(data: Symbol, *, kernel, stride=None, pad=0, rounding: str = "floor", name=None, device=None,
            **kw) -> Symbol:
    return apply("avgpool", [data], name=name, device=device, kernel=kernel,
                 stride=kernel if stride is None else stride, pad=pad, rounding=rounding, **kw)


def dropout(data: Symbol, *, p: float = 0.5, name=None, device=None, **kw) -> Symbol:
    return apply("dropout", [data], name=name, device=device, p=p, **kw)


def concat(*inputs: Symbol, name=None, device=None, **kw) -> Symbol:
    return apply("concat", inputs, name=name, device=device, **kw)


def softmax_loss(data: Symbol, label: Symbol, *, name=None, device=None, **kw) -> Symbol:
    """Softmax over classes with mean cross-entropy; outputs (loss, prob)."""
    return apply("softmax_loss", [data, label], name=name, device=device, **kw)


flatten = _op_constructor("flatten")
relu = _op_constructor("relu")
tanh = _op_constructor("tanh")
sigmoid = _op_constructor("sigmoid")
copy = _op_constructor("copy")
slice = _op_constructor("slice")  # noqa: A001  (MXNet's name)
add_n = _op_constructor("add_n", None)
