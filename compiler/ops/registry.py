"""The op registry and `OpDef`, the one descriptor each operator is written as (MXNet's NNVM_REGISTER_OP).

Every stage reads an op's descriptor and nothing else about it:

==========================  =====================================================================
stage                       what it reads
==========================  =====================================================================
schema (`schema/build.py`)  `attrs` (typed; spec attributes), `inputs` (arity), `in_spec`
validation                  `check` (semantic checks that need no shapes), `role`
lowering (`lower.py`)       `lower` (which lowering strategy), `node_attrs`
symbol constructors         `attrs` (node attributes, defaults), `arguments`, `params`, `state`,
                            `variable_attrs`, `outputs`
shape inference, report     `infer` (shape rule), `macs` (cost), `output_dtypes`
cost model (`cost/`)        `flops`, `traffic`, `math` (which peak bounds the arithmetic), `transfers`
gradient pass               `gradient` / `input_grad` (backward nodes, themselves registered ops)
fusion pass                 `activation` (can be folded into a producer), `fuse_activation`
executor, backends          `kernel` (entry-point name + adapter data), `kernel_args`, `family`,
                            `state_outputs` (state written back after a training forward)
eager oracle                `eager` (the same op on ATen, differentiated by torch.autograd)
ONNX export                 `onnx` (the node as ONNX operators, through `onnx_export.OnnxBuilder`)
weights import              `torch_names`, `torch_extra` (PyTorch's state-dict suffixes)
==========================  =====================================================================

An op defined in ``compiler/ops/F.py`` has family ``F``: its Triton kernels are in ``kernels/F.py``
and its reference kernels in ``kernels/reference/F.py`` (docs/adding-an-op.md walks through one).
Nothing here imports torch; `eager` imports it when called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node, Shape, make_node
from .attrs import Attr

if TYPE_CHECKING:  # the lowering machinery and the exporter call back into descriptors; only for annotations
    from ..lower import Lowerer, Value
    from ..onnx_export import OnnxBuilder

OPS: dict[str, "OpDef"] = {}
FAMILIES: list[str] = []   # filled by the package __init__: the family modules, in spec order


def register(cls: type["OpDef"]) -> type["OpDef"]:
    """Class decorator: instantiate the descriptor and register it under its `name`."""
    if not cls.name or cls.name in OPS:
        raise ValueError(f"op name {cls.name!r} is empty or registered twice")
    OPS[cls.name] = cls()
    return cls


def get_op(name: str) -> "OpDef":
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown op '{name}'") from None


def spec_ops() -> list[str]:
    """The ops a spec layer may use: by family (`FAMILIES` order), then in registration order."""
    ops = [op for op in OPS.values() if op.in_spec]
    order = {name: i for i, name in enumerate(OPS)}
    return [op.name for op in sorted(ops, key=lambda op: (FAMILIES.index(op.family) if op.family in FAMILIES
                                                           else len(FAMILIES), order[op.name]))]


# -- kernel binding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    """How the executor calls an op's kernel: ``backend.<entry>(*inputs, **op.kernel_args(node))``.

    `grouped`: the op's channel groups (`OpDef.channel_groups`) are independent, so the one generic
    adapter runs them as batch entries, (N, C, ...) -> (N*g, C/g, ...), and reshapes back (LRN
    within towers merged onto one device). `train_only`: outside training the op is the identity on
    its first input (dropout). `all_backends`: one implementation, ``alexnetc.kernels.<family>.<entry>``,
    serves every backend (data movement: views and concatenation, nothing to compute). `eval_entry`:
    outside training the executor calls this entry point (same arguments) and reads only output 0.
    `sync_entry`: in training under data parallelism with synchronised statistics
    (``train.sync_batchnorm``), this entry point instead, with the keyword ``sync`` (the processes'
    ``all_sum`` and this shard's ``weight``; docs/kernel-interface.md). `requires`: functions the
    op's family module must define beside the entry point in every backend, because the entry
    dispatches to them by the op's name (an activation's forward and backward); a backend without
    them is an import error, as a missing entry point is.
    """

    entry: str
    grouped: bool = False
    train_only: bool = False
    all_backends: bool = False     # one implementation serves every backend (data movement)
    eval_entry: str | None = None   # outside training, this entry point instead (batch norm: running stats)
    sync_entry: str | None = None   # data parallel with synchronised statistics: this entry point instead
    requires: tuple[str, ...] = ()  # functions of the family module the entry dispatches to

    def entries(self) -> tuple[str, ...]:
        return tuple(e for e in (self.entry, self.eval_entry, self.sync_entry) if e is not None)


@dataclass(frozen=True)
class RunState:
    """What a run gives its kernels besides tensors: the run seed, the step, and the index of this
    process's first sample in the global batch (data parallelism; 0 in one process)."""

    seed: int
    step: int
    sample_base: int = 0


class RunValue:
    """A `kernel_args` value known only when the step runs (`resolve` is called once per kernel call)."""

    def resolve(self, run: RunState) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class RunSeed(RunValue):
    """The run's seed mixed with this node's stream `offset`."""

    offset: int

    def resolve(self, run: RunState) -> int:
        return (run.seed * 1_000_003 + self.offset) % (2 ** 31 - 1)


@dataclass(frozen=True)
class RunStep(RunValue):
    """The training step counter."""

    def resolve(self, run: RunState) -> int:
        return run.step


@dataclass(frozen=True)
class RunSampleOffset(RunValue):
    """The flat index of this process's first element in the global batch: `sample_base` times the
    elements per sample (so a data-parallel shard draws what the whole batch would)."""

    per_sample: int

    def resolve(self, run: RunState) -> int:
        return run.sample_base * self.per_sample


class NoOnnxForm(NotImplementedError):
    """An op (or one of its settings) that has no ONNX equivalent; the exporter names the node."""


@dataclass(frozen=True)
class EagerContext:
    """What an eager rule may depend on: training or not, and whether to prefer formulas written out
    (the float64 oracle) over ATen's composite ops (the benchmark baseline)."""

    training: bool = False
    formula: bool = False


# -- the descriptor ------------------------------------------------------------------------------------
class OpDef:
    """How every stage sees one operator (see the module docstring for who reads what).

    Graph shape: `arguments` names the inputs (None: any number, e.g. concat); `params` the subset
    that are learnable parameters, created as variables by the symbol constructors when not given;
    `state` the subset that are state variables (role "state": not learned, updated by the op itself,
    batch norm's running statistics), created the same way after the parameters; `outputs` names the
    outputs, of which the first `visible` are the op's results and the rest are saved for the backward
    pass (LRN's scale, max-pool's argmax) or hold new state values: `state_outputs` maps a state
    argument to the output the executor writes back into it after each training forward.
    """

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    attrs: ClassVar[tuple[Attr, ...]] = ()
    in_spec: ClassVar[bool] = False          # spec layers may use it (internal ops: backward, copy...)
    inputs: ClassVar[tuple[int, int | None]] = (1, 1)   # spec layers it reads: (min, max or None)
    role: ClassVar[str] = "layer"            # "loss": a head the gradient pass seeds
    arguments: ClassVar[tuple[str, ...] | None] = ("data",)
    params: ClassVar[tuple[str, ...]] = ()
    state: ClassVar[tuple[str, ...]] = ()
    state_outputs: ClassVar[Mapping[str, int]] = {}
    outputs: ClassVar[tuple[str, ...]] = ("output",)
    visible: ClassVar[int] = 1
    output_dtypes: ClassVar[Mapping[int, str]] = {}   # dtype of an output when not the compute dtype
    activation: ClassVar[bool] = False       # a standalone activation the fusion pass may fold away
    maps_only: ClassVar[bool] = False        # spec layers need (C, H, W) feature maps as input
    # The cost model (compiler/cost): which peak bounds the op's arithmetic, "vector" (the fp32 CUDA
    # cores, or the CPU's vector units) or "matmul" (tensor cores in the compute dtype, see
    # `math_precision`); `transfers`: the op moves its input between devices (its bytes cross a link).
    math: ClassVar[str] = "vector"
    transfers: ClassVar[bool] = False
    kernel: ClassVar[Kernel | None] = None
    # PyTorch's state-dict suffix of a parameter or state argument where it is not the argument's own
    # name (batch norm's scale is torch's `weight`), and the buffers torch's module keeps that we have
    # no use for (accepted and dropped by `alexnetc import`).
    torch_names: ClassVar[Mapping[str, str]] = {}
    torch_extra: ClassVar[tuple[str, ...]] = ()

    # -- identity ------------------------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The op family: the module this descriptor is defined in, and the kernels' module name."""
        return type(self).__module__.rsplit(".", 1)[-1]

    def attr(self, name: str) -> Attr:
        for a in self.attrs:
            if a.name == name:
                return a
        raise KeyError(f"op '{self.name}' has no attribute '{name}'")

    def spec_attrs(self) -> list[Attr]:
        return [a for a in self.attrs if a.spec]

    def node_attr_names(self) -> list[str]:
        return [a.name for a in self.attrs if a.node]

    # -- spec ----------------------------------------------------------------------------------------
    def check(self, layer: Mapping[str, Any]) -> list[tuple[str | None, str]]:
        """Semantic problems of a schema-valid layer that need no shapes: (key or None, message)."""
        return []

    def node_attrs(self, layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The node attributes of a spec layer: its spec-and-node attributes, defaults filled in."""
        out = {}
        for a in self.attrs:
            if a.spec and a.node:
                given = layer.get(a.name)
                out[a.name] = a.value(given if given is not None else a.default_for(layer, spec_defaults))
        return out

    def lower(self, lw: "Lowerer", layer: Mapping[str, Any], inputs: Sequence["Value"]) -> "Value":
        """Lower one spec layer. The default: run per part (tower) on the part's device."""
        return lw.per_part(self, layer, inputs[0], self.node_attrs(layer, lw.defaults))

    def variable_attrs(self, layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> dict[str, dict]:
        """Attributes of the parameter and state variables a spec layer's per-part nodes create
        (initialiser, multipliers), by argument name; also the symbol constructors' defaults."""
        return {}

    def part_attrs(self, name: str, groups: int) -> dict[str, Any]:
        """Node attributes that depend on the part (tower) a per-part node computes: its name and how
        many of the producing layer's groups it holds (LRN keeps them apart, dropout keys its RNG)."""
        return {}

    def construct_attrs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """A symbol constructor's keyword arguments checked against `attrs`, defaults filled in."""
        from ..errors import did_you_mean

        known = self.node_attr_names()
        for k in given:
            if k not in known:
                raise TypeError(f"{self.name}() got an unknown attribute '{k}'{did_you_mean(k, known)}; "
                                f"attributes: {', '.join(known) or 'none'}")
        out = {}
        for a in self.attrs:
            if not a.node:
                continue
            if a.name in given and given[a.name] is not None:
                out[a.name] = a.value(given[a.name])
            elif a.required:
                raise TypeError(f"{self.name}() needs the attribute '{a.name}'")
            else:
                out[a.name] = a.value(a.default_for(given, {}))
        return out

    # -- graph ---------------------------------------------------------------------------------------
    def arguments_for(self, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        """Argument names for these attrs (no bias -> no 'bias' argument)."""
        return self.arguments or ()

    def infer(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape | None]
              ) -> tuple[list[Shape], list[Shape]]:
        """Complete the input shapes (parameters from attrs) and return (input shapes, output shapes)."""
        raise NotImplementedError

    def macs(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
        """Multiply-adds of one application (the report counts those of conv and fc weights)."""
        return 0

    # -- cost ----------------------------------------------------------------------------------------
    def flops(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
        """Floating-point operations of one application at the node's batch size: two per multiply-add
        of `macs` by default; ops whose arithmetic is elementwise (or a GEMM with an epilogue) count
        their own, per element, in their descriptor."""
        return 2 * self.macs(attrs, in_shapes, out_shapes)

    def traffic(self, attrs: Mapping[str, Any], in_bytes: Sequence[int], out_bytes: Sequence[int]) -> tuple[int, int]:
        """(bytes read, bytes written) by one application, given each input's and each output's size
        in bytes: the compulsory traffic, every input read once and every output written once (what a
        roofline bounds by; a kernel that reads its input twice moves more). Views override it (0, 0)."""
        return sum(in_bytes), sum(out_bytes)

    def math_precision(self, dtype: str) -> str:
        """The column of a device's peak table that bounds this op's FLOPs when its values are in
        `dtype` (a train dtype): "fp32", "tf32", "bf16", "fp16" or "fp64". Vector ops run on the
        CUDA cores in fp32 (fp64 in float64); "matmul" ops on tensor cores in their compute dtype, fp32
        as TF32 (ops whose kernels keep IEEE fp32 override this)."""
        if dtype == "float64":
            return "fp64"
        if self.math == "matmul":
            return {"float32": "tf32", "bfloat16": "bf16", "float16": "fp16"}[dtype]
        return "fp32"

    def gradient(self, node: Node, ograds: Sequence[Entry | None]) -> list[Entry | None]:
        """Input gradients as new backward nodes, given the gradient of each visible output.

        The default serves ops with one differentiable input and one visible output: no gradient in,
        none out; otherwise `input_grad` builds it. Ops with several inputs or outputs override this."""
        dy = ograds[0] if ograds else None
        if dy is None:
            return [None] * len(node.inputs)
        return [self.input_grad(node, dy)]

    def input_grad(self, node: Node, dy: Entry) -> Entry:
        """The gradient of the one input, given that of the output (see `gradient`)."""
        raise NotImplementedError(f"op '{self.name}' has no gradient")

    def training_problem(self, attrs: Mapping[str, Any], in_shapes: Sequence[Shape]) -> str | None:
        """Why a training forward at these input shapes (batch = one process's batch) cannot learn
        anything in this op, or None: batch norm with one value per channel outputs its shift whatever
        its input. Training refuses such a spec (`CompiledNet.training_problems`)."""
        return None

    # -- passes --------------------------------------------------------------------------------------
    def fuse_activation(self, node: Node, act: str) -> Node | None:
        """This node with activation `act` applied to its output in its epilogue, or None if it can't."""
        return None

    # -- kernels -------------------------------------------------------------------------------------
    def kernel_args(self, node: Node) -> dict[str, Any]:
        """Keyword arguments of the kernel call, from the node's attributes and shapes (batch-free)."""
        return {}

    def channel_groups(self, node: Node) -> int:
        """Independent channel groups of a `Kernel(grouped=True)` op."""
        return 1

    # -- oracle --------------------------------------------------------------------------------------
    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        """The op on ATen tensors, differentiable by torch.autograd: one value per output (None for a
        saved output nobody reads in eager mode)."""
        raise NotImplementedError(f"op '{self.name}' has no eager rule")

    # -- export --------------------------------------------------------------------------------------
    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        """Emit this (inference-graph) node as ONNX operators through `b`: read its inputs as
        ``b.x(node, i)``, write each output ``b.y(node, k)`` that a consumer reads. The default: the op
        has no ONNX form (backward ops, ops that only exist while training)."""
        raise NoOnnxForm(f"op '{self.name}' has no ONNX form")


# -- helpers the descriptors share ---------------------------------------------------------------------
def backward_node(op: str, forward: Node, suffix: str, inputs: Sequence[Entry],
                  attrs: Mapping[str, Any] | None = None, device: str | None = None) -> Entry:
    """A backward node placed and attributed like its forward node."""
    return Entry(make_node(op, f"{forward.name}_{suffix}", attrs or {}, inputs,
                           device if device is not None else forward.device, forward.layer, forward.mark,
                           group=forward.group))


def need(in_shapes: Sequence[Shape | None], i: int, what: str) -> Shape:
    s = in_shapes[i] if i < len(in_shapes) else None
    if s is None:
        raise ShapeError(f"the shape of input '{what}' is unknown")
    return tuple(s)


def check_param(given: Shape | None, expected: Shape, what: str) -> Shape:
    if given is not None and tuple(given) != tuple(expected):
        raise ShapeError(f"{what} has shape {tuple(given)}, expected {tuple(expected)}")
    return tuple(expected)


def need_maps(op: str, x: Shape) -> Shape:
    if len(x) != 4:
        raise ShapeError(f"{op} expects a 4-d input (N, C, H, W), got {x}")
    return x


class SameShape(OpDef):
    """An op whose one output has the shape of its first input (activations, dropout, copies...)."""

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, (self.arguments or ("data",))[0])
        return [x] + [tuple(s) if s is not None else x for s in in_shapes[1:]], [x]


def numel(shape: Shape) -> int:
    """Elements of a shape (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= d
    return n


def out_hw(node: Node, k: int = 0) -> tuple[int, int]:
    """Spatial size (H, W) of a node's output `k`."""
    s = node.shapes[k]
    return (s[2], s[3])
