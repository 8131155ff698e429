"""Batch normalisation (Ioffe & Szegedy 2015) per channel of feature maps or per unit of fc outputs,
with a fused activation, and its backward.

Convention (PyTorch's, so torchvision weights map directly): over the batch (N, H, W for maps; N for
(N, C) features) each channel's mean and *biased* variance normalise it,
    y = act(scale * (x - mean) / sqrt(var + eps) + shift),
and a training forward updates the running statistics with `momentum` m
    running_mean <- (1 - m) * running_mean + m * mean
    running_var  <- (1 - m) * running_var  + m * var * M / (M - 1)      (M values per channel; unbiased)
(M = 1 leaves the variance term as var, i.e. 0). Evaluation normalises with the running statistics
instead. Defaults m = 0.1, eps = 1e-5; `scale` starts at 1, `shift` at 0, running_mean at 0,
running_var at 1.

`scale` and `shift` are learned parameters (``bn1.scale``, ``bn1.shift``), with the layer's `lr_mult` /
`decay_mult` ({weight: for scale, bias: for shift}) or the spec's `defaults:`; weight decay applies to
them unless a spec says ``decay_mult: 0``. `running_mean` and `running_var` are *state*
(``bn1.running_mean``): never differentiated, never seen by SGD or weight decay, written by the
executor from the training forward's extra outputs (`state_outputs`), read by evaluation
(`Kernel.eval_entry`), checkpointed with the parameters. After a two-tower layer the lowering runs one
node per tower on the tower's device, each with its channels' parameters and statistics (joined along
the channel axis in the logical checkpoint names).

A residual sum after it (ResNet's ``add(bn2, shortcut)``, with the add's activation) is folded into
the node by the fusion pass (`compiler/passes/fusion.py`): the node then has a sixth input `residual`
(attribute ``residual: true``, never written in a spec) and computes
    y = act(scale * (x - mean) / sqrt(var + eps) + shift + residual),
the add done in the normalising pass instead of a pass of its own; its backward also returns
dz = act'(dy, y), the residual's gradient, which the same pass over dy computes anyway.

Kernels: ``kernels/batchnorm.py``, reference ``kernels/reference/batchnorm.py``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ShapeError
from ..graph import Entry, Node
from .activation import ACT, ACTIVATIONS, act_flops, apply_act, onnx_with_act
from .attrs import BOOLEAN, Attr, enum, number
from .registry import EagerContext, Kernel, OpDef, backward_node, check_param, need, numel, register
from .weighted import DECAY_MULT, LR_MULT, init_spec, multipliers

if TYPE_CHECKING:
    from ..onnx_export import OnnxBuilder

MOMENTUM = Attr("momentum", number(0, 1),
                "Running statistics: running = (1 - momentum) * running + momentum * batch (PyTorch's "
                "convention; default 0.1).", default=0.1)
EPS = Attr("eps", number(0, 1, lo_open=True), "Added to the variance before its square root (default 1e-5).",
           default=1e-5)
# Set by the fusion pass only: the node adds its sixth input (a residual) before the activation.
RESIDUAL = Attr("residual", BOOLEAN, "A residual added to the output before the activation (the fusion pass "
                "folds ResNet's add into the batch norm before it).", spec=False, default=False)
BN_ATTRS = (MOMENTUM, EPS, ACT, LR_MULT, DECAY_MULT, RESIDUAL)

# Initial values of the variables a batchnorm node creates.
_INITIAL = {"scale": 1.0, "shift": 0.0, "running_mean": 0.0, "running_var": 1.0}


def _kernel_args(node: Node) -> dict[str, Any]:
    a = node.attrs
    return {EPS.name: float(a[EPS.name]), MOMENTUM.name: float(a[MOMENTUM.name]), ACT.name: a[ACT.name]}


def has_residual(node: Node) -> bool:
    return bool(node.attrs.get(RESIDUAL.name, False))


def _features(op: str, x: tuple[int, ...]) -> int:
    if len(x) not in (2, 4):
        raise ShapeError(f"{op} expects a 4-d input (N, C, H, W) or a 2-d input (N, features), got {x}")
    return x[1]


def _per_channel(t: Any, x: Any) -> Any:
    """A (C,) tensor shaped to broadcast over x's channel axis."""
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


def batchnorm_formula(x: Any, scale: Any, shift: Any, mean: Any, var: Any, eps: float) -> Any:
    """scale * (x - mean) / sqrt(var + eps) + shift per channel, written out on ATen."""
    return (x - _per_channel(mean, x)) / (_per_channel(var, x) + eps).sqrt() * _per_channel(scale, x) \
        + _per_channel(shift, x)


@register
class BatchNorm(OpDef):
    name = "batchnorm"
    doc = ("Batch normalisation per channel (maps) or unit (fc outputs): batch statistics in training, "
           "running statistics in evaluation; learned scale and shift; optional fused activation.")
    in_spec = True
    attrs = BN_ATTRS
    arguments = ("data", "scale", "shift", "running_mean", "running_var")
    params = ("scale", "shift")
    state = ("running_mean", "running_var")
    # Saved for the backward (batch mean, 1/sqrt(var + eps)), then the new running statistics.
    outputs = ("output", "mean", "invstd", "new_running_mean", "new_running_var")
    visible = 1
    # Statistics stay fp32 under bfloat16 (a running average rounded to bf16 every step would drift).
    output_dtypes = {1: "float32", 2: "float32", 3: "float32", 4: "float32"}
    state_outputs = {"running_mean": 3, "running_var": 4}
    kernel = Kernel("batchnorm", eval_entry="batchnorm_eval", sync_entry="batchnorm_sync")
    torch_names = {"scale": "weight", "shift": "bias"}
    torch_extra = ("num_batches_tracked",)   # only counts steps when momentum is None; ours never is

    def variable_attrs(self, layer: Mapping[str, Any], spec_defaults: Mapping[str, Any]) -> dict[str, dict]:
        def pick(a: Attr) -> Any:
            return layer.get(a.name, spec_defaults.get(a.name, a.default))

        (sl, bl), (sd, bd) = multipliers(pick(LR_MULT)), multipliers(pick(DECAY_MULT))
        mults = {"scale": (sl, sd), "shift": (bl, bd)}
        out: dict[str, dict] = {}
        for arg, value in _INITIAL.items():
            out[arg] = {"init": init_spec(value)}
            if arg in mults:
                out[arg].update({LR_MULT.name: mults[arg][0], DECAY_MULT.name: mults[arg][1]})
        return out

    def arguments_for(self, attrs: Mapping[str, Any]) -> tuple[str, ...]:
        return (*self.arguments, "residual") if attrs.get(RESIDUAL.name) else self.arguments

    def infer(self, attrs, in_shapes):
        x = need(in_shapes, 0, "data")
        c = _features("batchnorm", x)
        given = list(in_shapes) + [None] * (5 - len(in_shapes))
        shapes = [x] + [check_param(given[i], (c,), arg) for i, arg in enumerate(self.arguments[1:], 1)]
        if attrs.get(RESIDUAL.name):
            r = need(in_shapes, 5, "residual")
            if tuple(r) != tuple(x):
                raise ShapeError(f"batchnorm's residual has shape {tuple(r)}, its input {tuple(x)}")
            shapes.append(r)
        elif len(in_shapes) > 5:
            raise ShapeError("batchnorm takes a sixth input (a residual) only with the attribute residual")
        return shapes, [x, (c,), (c,), (c,), (c,)]

    def macs(self, attrs, in_shapes, out_shapes):
        return 0   # elementwise: the report counts the GEMMs of conv and fc

    def flops(self, attrs, in_shapes, out_shapes):
        # Per element, training: the sum (1) and the sum of squared deviations (2) of the two-pass
        # statistics, y = x*a + b (2), then the fused activation's own count.
        n = numel(in_shapes[0])
        return (6 if attrs.get(RESIDUAL.name) else 5) * n + act_flops(attrs.get(ACT.name, "none"), n)

    def training_problem(self, attrs, in_shapes):
        # One value per channel: x - mean is 0, the output is the shift whatever the input (PyTorch refuses
        # it too: "Expected more than 1 value per channel when training").
        x = in_shapes[0]
        per_channel = numel(x) // x[1]
        if per_channel > 1:
            return None
        maps = f" of {'x'.join(map(str, x[2:]))} maps" if len(x) > 2 else ""
        return (f"batch norm in training needs more than one value per channel, it gets {per_channel} (batch "
                f"{x[0]}{maps}): its output would be its shift whatever its input; train with a larger batch")

    def gradient(self, node: Node, ograds: Sequence[Entry | None]) -> list[Entry | None]:
        dy = ograds[0] if ograds else None
        if dy is None:
            return [None] * len(node.inputs)
        # The activation's backward is the first step of batch norm's own (one node, one kernel: the
        # output gradient masked or scaled as it is read, where a separate act_backward would write it)
        # With a residual, the backward's fourth output is dz, the gradient of the sum (the residual's).
        act = node.attrs.get(ACT.name, "none")
        inputs = [dy, node.inputs[0], node.inputs[1], Entry(node, 1), Entry(node, 2)]
        if act != "none":
            inputs.append(Entry(node, 0))
        residual = has_residual(node)
        bwd = backward_node("batchnorm_backward", node, "bwd", inputs, {ACT.name: act, RESIDUAL.name: residual})
        grads: list[Entry | None] = [Entry(bwd.node, 0), Entry(bwd.node, 1), Entry(bwd.node, 2), None, None]
        return grads + [Entry(bwd.node, 3)] if residual else grads

    def fuse_activation(self, node: Node, act: str) -> Node | None:
        if node.attrs.get(ACT.name, "none") != "none":
            return None
        return node.with_(attrs={**node.attrs, ACT.name: act})

    def kernel_args(self, node):
        return _kernel_args(node)

    def eager(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        outs = self._eager_bn(node, xs[:5], ctx)
        if len(xs) > 5:   # the folded residual add: act(bn(x) + r), as the add it replaced wrote it
            outs[0] = apply_act(outs[0] + xs[5], node.attrs[ACT.name])
        else:
            outs[0] = apply_act(outs[0], node.attrs[ACT.name])
        return outs

    def _eager_bn(self, node: Node, xs: Sequence[Any], ctx: EagerContext) -> list[Any]:
        """The five outputs, the first before the activation."""
        import torch
        import torch.nn.functional as F

        x, scale, shift, rm, rv = xs
        a = node.attrs
        eps, m = float(a[EPS.name]), float(a[MOMENTUM.name])
        if not ctx.training:
            y = (batchnorm_formula(x, scale, shift, rm, rv, eps) if ctx.formula
                 else F.batch_norm(x, rm, rv, scale, shift, False, m, eps))
            return [y, None, None, None, None]
        dims = [0, *range(2, x.dim())]
        count = x.numel() // x.shape[1]
        if not ctx.formula and count > 1:
            # ATen's kernel alone, as a PyTorch user writes it (the baseline): it updates copies of the
            # running statistics in place; nothing in the forward graph reads the saved mean and invstd
            new_rm, new_rv = rm.detach().clone(), rv.detach().clone()
            y = F.batch_norm(x, new_rm, new_rv, scale, shift, True, m, eps)
            return [y, None, None, new_rm, new_rv]
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        if ctx.formula:
            y = batchnorm_formula(x, scale, shift, mean, var, eps)
        else:   # ATen's kernel, on copies of the running statistics (it updates them in place)
            y = F.batch_norm(x, rm.detach().clone(), rv.detach().clone(), scale, shift, True, m, eps)
        with torch.no_grad():
            unbiased = var.detach() * (count / max(count - 1, 1))
            new_rm = (1 - m) * rm + m * mean.detach()
            new_rv = (1 - m) * rv + m * unbiased
        return [y, mean, (var + eps).rsqrt(), new_rm, new_rv]

    def onnx(self, node: Node, b: "OnnxBuilder") -> None:
        # Inference form: ONNX's BatchNormalization with the running statistics (opset >= 15: one output),
        # then the folded residual's Add (and the activation).
        attrs = {"epsilon": float(node.attrs[EPS.name]), "momentum": 1.0 - float(node.attrs[MOMENTUM.name])}
        inputs = [b.x(node, i) for i in range(5)]
        if not has_residual(node):
            onnx_with_act(b, node, "BatchNormalization", inputs, **attrs)
            return
        normed = b.fresh(f"{node.name}_bn")
        b.emit("BatchNormalization", inputs, [normed], **attrs)
        onnx_with_act(b, node, "Add", [normed, b.x(node, 5)])


@register
class BatchNormBackward(OpDef):
    """dx, dscale, dshift from the output gradient dy, x, scale and the saved batch mean and invstd, and,
    with a fused activation `act`, the forward's output y (its last argument): dz = act'(dy, y) (dy
    itself without one), then with x^ = (x - mean) * invstd and M values per channel,
    dshift = sum dz, dscale = sum dz * x^, dx = scale * invstd / M * (M * dz - dshift - x^ * dscale).
    With `residual` (the forward added one) dz itself is a fourth output: the residual's gradient."""

    name = "batchnorm_backward"
    attrs = (Attr(ACT.name, enum(*ACTIVATIONS), spec=False, default="none"), RESIDUAL)
    arguments = ("grad", "data", "scale", "mean", "invstd", "output")
    outputs = ("grad_data", "grad_scale", "grad_shift", "grad_sum")   # grad_sum: with residual only
    visible = 3
    kernel = Kernel("batchnorm_backward", sync_entry="batchnorm_backward_sync")

    def infer(self, attrs, in_shapes):
        dy = need(in_shapes, 0, "grad")
        c = _features("batchnorm_backward", dy)
        fused = attrs.get(ACT.name, "none") != "none"
        if fused != (len(in_shapes) == 6):
            raise ShapeError("batchnorm_backward takes the forward's output (a sixth input) exactly when it "
                             "has an activation to undo")
        outs = [dy, (c,), (c,), *([dy] if attrs.get(RESIDUAL.name) else [])]
        return [dy, dy, (c,), (c,), (c,), *([dy] if fused else [])], outs

    def flops(self, attrs, in_shapes, out_shapes):
        # Per element: x^ (2), dz * x^ (1), the two sums (2), then dx from them (6: x^ again, the
        # product with dscale, two differences, the per-channel coefficient); and the activation's.
        n = numel(in_shapes[0])
        return 11 * n + act_flops(attrs.get(ACT.name, "none"), n, grad=True)

    def kernel_args(self, node: Node) -> dict[str, Any]:
        return {ACT.name: node.attrs.get(ACT.name, "none"), RESIDUAL.name: has_residual(node)}
