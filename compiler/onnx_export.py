"""ONNX export: an inference graph plus its parameters (numpy arrays) as an ONNX model.

    model = export_onnx(net.inference().graph, {name: array, ...})     # an onnx.ModelProto
    onnx.save(model, "model.onnx")

The exporter knows no op: it walks the graph in topological order and asks each node's descriptor
(`OpDef.onnx`) to emit ONNX operators through an `OnnxBuilder`. Variables become the model's input
(``data``, batch dimension symbolic) and initializers (parameters, under their graph names); the loss
head becomes two outputs, ``prob`` (softmax probabilities, what the loss's `prob` output is) and
``logits`` (the scores the loss reads). Nothing runs here: parity with the executor is checked by the
tests and `alexnetc export --verify` in onnxruntime. Needs the optional `onnx` package (imported
when called; the rest of the compiler never imports it) and numpy; no torch.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .graph import Graph, Node
from .ops import get_op
from .ops.registry import NoOnnxForm

OPSET = 17          # Split with equal parts by output count, LRN, Gemm, Softmax over one axis: all in 17
INPUT = "data"
PROB, LOGITS = "prob", "logits"


class ExportError(Exception):
    """The graph cannot be exported (an op without ONNX form, a missing parameter): names the node."""


class OnnxBuilder:
    """What an op's `onnx` hook writes through: value names of its inputs and outputs, new operators,
    integer constants. Values are named after graph nodes (``conv1_g0``, ``pool1:1`` for a second
    output), parameters after their variables."""

    def __init__(self, onnx: Any, model: Any, opset: int):
        self._helper, self._numpy_helper = onnx.helper, onnx.numpy_helper
        self._big, self._float = model.graph.initializer, onnx.TensorProto.FLOAT   # parameters go in place
        self.opset = opset
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names: dict[tuple[int, int], str] = {}
        self._taken: set[str] = set()
        self._count = 0

    # -- value names ---------------------------------------------------------------------------------
    def name_output(self, node: Node, k: int, name: str) -> None:
        """Give output `k` of `node` a chosen name (the model's outputs)."""
        self._names[(id(node), k)] = name
        self._taken.add(name)

    def y(self, node: Node, k: int = 0) -> str:
        """The value name of output `k` of `node` (the name a consumer's `x` will find)."""
        key = (id(node), k)
        if key not in self._names:
            self._names[key] = self.fresh(node.name if k == 0 else f"{node.name}:{k}")
        return self._names[key]

    def x(self, node: Node, i: int = 0) -> str:
        """The value name of input `i` of `node` (an earlier node's output, a parameter or ``data``)."""
        e = node.inputs[i]
        key = (id(e.node), e.index)
        if key not in self._names:
            raise ExportError(f"node {node.name} reads output {e.index} of {e.node.name}, which the "
                              f"exported graph does not compute (op '{e.node.op}' emits no such output)")
        return self._names[key]

    def alias(self, node: Node, k: int, value: str) -> None:
        """Output `k` of `node` is the existing value `value`: no operator (dropout at inference)."""
        self._names[(id(node), k)] = value

    def fresh(self, hint: str) -> str:
        """A value name not used yet, derived from `hint`."""
        name = hint
        while name in self._taken:
            self._count += 1
            name = f"{hint}_{self._count}"
        self._taken.add(name)
        return name

    # -- operators and constants ---------------------------------------------------------------------
    def emit(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> None:
        """Append one ONNX operator (attributes as keyword arguments, as onnx.helper.make_node)."""
        self.nodes.append(self._helper.make_node(op_type, list(inputs), list(outputs),
                                                 name=self.fresh(f"{op_type}_{len(self.nodes)}"), **attrs))

    def ints(self, hint: str, values: Sequence[int]) -> str:
        """An int64 1-d constant (Slice bounds, Reshape shapes) as an initializer; returns its name."""
        import numpy as np

        name = self.fresh(hint)
        self.initializers.append(self._numpy_helper.from_array(np.asarray(list(values), dtype=np.int64), name))
        return name

    def tensor(self, name: str, array: Any) -> str:
        """A float32 initializer under `name` (the parameters), its bytes copied once."""
        import numpy as np

        a = np.ascontiguousarray(array, dtype="<f4")
        t = self._big.add()
        t.name, t.data_type = name, self._float
        t.dims.extend(a.shape)
        t.raw_data = a.tobytes()
        self._taken.add(name)
        return name


def _loss_node(graph: Graph) -> Node:
    heads = [e.node for e in graph.outputs if get_op(e.node.op).role == "loss"]
    if not heads:
        raise ExportError("the graph has no loss head (softmax_loss) to take the outputs from")
    return heads[0]


def export_onnx(graph: Graph, params: Mapping[str, Any], *, opset: int = OPSET, name: str = "alexnetc",
                metadata: Mapping[str, str] | None = None) -> Any:
    """The inference `graph` (forward only, shapes inferred) with `params` (graph parameter and state
    variable name -> array-like, cast to float32: batch norm's running statistics are initializers
    like the weights) as an `onnx.ModelProto` (check it with `serialize_checked`).

    Inputs: ``data`` (N, C, H, W), N symbolic. Outputs: ``prob`` and ``logits`` (N, classes).
    Raises ExportError naming the node when an op has no ONNX form or a parameter is missing."""
    try:
        import onnx
        from onnx import ModelProto, TensorProto, helper
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'alexnetc[onnx]'") from None
    if opset < OPSET:
        raise ExportError(f"opset {opset}: alexnetc exports opset {OPSET} or newer")
    # Built in place: the parameters (244 MB for AlexNet) are copied once, not by make_graph/make_model.
    model = ModelProto()
    opset_id = helper.make_opsetid("", opset)
    # the oldest IR version that knows this opset (8 for 17): older runtimes refuse newer IR versions
    model.ir_version, model.producer_name = helper.find_min_ir_version_for([opset_id]), "alexnetc"
    model.opset_import.add().CopyFrom(opset_id)
    b = OnnxBuilder(onnx, model, opset)
    loss = _loss_node(graph)
    b.name_output(loss, 1, PROB)
    b.fresh(LOGITS)
    data_shape = None
    for node in graph.nodes():
        if node.is_variable:
            if node.role == "data":
                data_shape = node.shapes[0] if node.shapes else None
                b.name_output(node, 0, INPUT)
            elif node.is_param or node.role == "state":
                if node.name not in params:
                    raise ExportError(f"no value for parameter {node.name}")
                value = params[node.name]
                shape = tuple(getattr(value, "shape", ()))
                if node.shapes and shape != tuple(node.shapes[0]):
                    raise ExportError(f"parameter {node.name} has shape {shape}, the graph needs "
                                      f"{tuple(node.shapes[0])}")
                b.name_output(node, 0, b.tensor(node.name, value))
            continue   # the label feeds only the loss value, which has no place in an inference model
        try:
            get_op(node.op).onnx(node, b)
        except NoOnnxForm as exc:
            where = f" (layer {node.layer})" if node.layer else ""
            raise ExportError(f"node {node.name}{where}: {exc}") from None
    if data_shape is None:
        raise ExportError("the graph has no data input with a known shape")
    b.emit("Identity", [b.x(loss, 0)], [LOGITS])
    classes = loss.shapes[1][1] if loss.shapes else None
    g = model.graph
    g.name = name
    g.node.extend(b.nodes)
    g.initializer.extend(b.initializers)
    g.input.append(helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *data_shape[1:]]))
    g.output.extend([helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", classes]) for out in (PROB, LOGITS)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return model


def serialize_checked(model: Any) -> bytes:
    """The model's bytes, after `onnx.checker.check_model` passed on them (serialised once)."""
    import onnx

    data = model.SerializeToString()
    try:
        onnx.checker.check_model(data)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return data
