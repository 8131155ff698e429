"""ONNX export checked in onnxruntime: every shipped spec's logits and probabilities against the executor's
(reference kernels, fp32) at batch 1 and 3, normwise relative error <= 1e-5; onnx.checker passes; the
settings where ONNX and we could disagree (LRN's alpha, LRN within towers, ceil rounding, padding in
pooling) each exercised strongly enough that a wrong translation fails; `alexnetc export` end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from alexnetc.compiler import SpecErrors, compile_spec
from alexnetc.compiler.onnx_export import ExportError, export_onnx, serialize_checked
from alexnetc.compiler.ops import get_op
from alexnetc.compiler.pipeline import compile_dict, plain
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.specs import shipped_dir, shipped_specs
from alexnetc.runtime.execution.executor import Executor
from alexnetc.runtime.execution.params import init_params
from alexnetc.runtime.training.checkpoint import PARAM_PREFIX, save_checkpoint

from ..runtime.execution.test_executor import GRAPH_SPEC
from ..test_op_completeness import EXAMPLES, _spec

SHIPPED = shipped_specs()
SMALL_SIDE = 67    # full-size specs at 67x67: every layer still has a spatial extent (pool5 -> 1x1)
LARGER_SIDES = (99, 131)   # for nets whose deep windows need more (GoogLeNet's auxiliary 5x5 pools)
SMALL_UNITS = 512  # and hidden fc layers of 512 units; test_full_size_* runs the real sizes


def _random_params(net, seed: int) -> dict[str, torch.Tensor]:
    """He-scaled weights and visible biases, so activations neither vanish nor saturate through the
    network (the spec's N(0, 0.01) leaves AlexNet's logits all but equal) and every op matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in net.graph.params():
        shape = n.shapes[0]
        std = math.sqrt(2.0 / math.prod(shape[1:])) if len(shape) > 1 else 0.1
        out[n.name] = torch.randn(shape, generator=g) * std
    return out


def _random_state(net, seed: int) -> dict[str, torch.Tensor]:
    """Running statistics far from the initial 0 / 1, so evaluation-mode batch norm matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in net.graph.variables():
        if n.role == "state":
            t = torch.rand(n.shapes[0], generator=g)
            out[n.name] = t + 0.5 if n.name.endswith("var") else (t - 0.5) * 0.4
    return out


def _scores_node(net) -> str:
    loss = next(e.node for e in net.graph.outputs if get_op(e.node.op).role == "loss")
    return loss.inputs[0].node.name


def _normwise(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def check_parity(net, params, batches=(1, 3), scale: float = 1.0, seed: int = 0, opset: int = 17) -> bytes:
    """Export, check, run in onnxruntime at each batch size; assert logits and probabilities match
    (with random running statistics where the net has batch norm)."""
    state = _random_state(net, seed)
    data = serialize_checked(export_onnx(net.graph, {k: v.numpy() for k, v in {**params, **state}.items()},
                                         opset=opset))
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    scores = _scores_node(net)
    for batch in batches:
        at = net.at_batch(batch)
        ex = Executor(at, {d: "cpu" for d in at.devices}, for_training=False, params=params, state=state)
        x = scale * torch.randn(batch, *net.input_shape, generator=torch.Generator().manual_seed(seed + batch))
        out = ex.forward(x, keep=(scores,))
        logits, prob = out[scores].double().numpy(), out["prob"].double().numpy()
        assert logits.std() > 1e-2, "degenerate test: the logits hardly depend on the input"
        o_prob, o_logits = sess.run(["prob", "logits"], {"data": x.numpy()})
        assert o_logits.shape == logits.shape == (batch, net.classes)
        err = _normwise(o_logits, logits)
        assert err <= 1e-5, f"{net.name} batch {batch}: logits normwise relative error {err:.2e}"
        assert _normwise(o_prob, prob) <= 1e-5
    return data


def _shrunk(path: str):
    net = compile_spec(path)
    if net.input_shape[1] <= SMALL_SIDE:
        return net
    spec = plain(net.spec)
    spec.pop("data", None)   # its crop sizes are the full-size input's
    for layer in spec["layers"]:
        if layer["op"] == "fc" and layer["units"] != spec["classes"]:
            layer["units"] = min(layer["units"], SMALL_UNITS)
    for side in (SMALL_SIDE, *LARGER_SIDES):
        spec["input"] = {**spec["input"], "height": side, "width": side}
        try:
            return compile_dict(spec, f"{path} at {side}x{side}")
        except SpecErrors:
            if side == LARGER_SIDES[-1]:
                raise


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_spec_runs_the_same_in_onnxruntime(name):
    net = _shrunk(f"{shipped_dir()}/{name}")
    check_parity(net, _random_params(net, 1))


def test_full_size_alexnet_runs_the_same_in_onnxruntime():
    net = compile_spec(f"{shipped_dir()}/alexnet.yaml")
    data = check_parity(net, _random_params(net, 2))
    model = onnx.load_from_string(data)
    assert model.opset_import[0].version >= 17
    ops = [n.op_type for n in model.graph.node]
    # two towers: one Conv per tower and layer, cross-tower copies as Identity, no Dropout left
    assert ops.count("Conv") == 10 and ops.count("Gemm") == 5 and "Dropout" not in ops
    assert [o.name for o in model.graph.output] == ["prob", "logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.slow
@pytest.mark.parametrize("name", [s for s in SHIPPED if "mini" not in s])
def test_every_full_size_spec_runs_the_same_in_onnxruntime(name):
    net = compile_spec(f"{shipped_dir()}/{name}")
    check_parity(net, _random_params(net, 3))


@pytest.mark.parametrize("opset", [17, 18, 21])   # Split's operands changed in 18
def test_merged_towers_become_a_grouped_conv_and_split_lrn(opset):
    net = _shrunk(f"{shipped_dir()}/alexnet-1gpu.yaml")
    model = onnx.load_from_string(check_parity(net, _random_params(net, 0), opset=opset))
    assert model.opset_import[0].version == opset and model.ir_version == {17: 8, 18: 8, 21: 10}[opset]
    groups = [next(a.i for a in n.attribute if a.name == "group") for n in model.graph.node if n.op_type == "Conv"]
    assert groups == [1, 2, 1, 2, 2]          # conv1 and conv3 read everything; conv2, 4, 5 their own tower
    assert [n.op_type for n in model.graph.node].count("Split") == 2   # norm1, norm2 within each tower


# The settings where a translation could silently differ, made loud: LRN with a large alpha (a wrong
# alpha/size convention or a window across towers moves the logits by far more than 1e-5), both alpha
# conventions, towers merged on one device, ceil rounding with padding in conv, max and average pooling.
LOUD_SPEC = """
name: loud
input: {channels: 3, height: 19, width: 19}
classes: 7
devices: [gpu0, gpu1]
layers:
  - {name: conv1, op: conv, filters: 8, kernel: 4, stride: 2, pad: 1, rounding: ceil, act: relu,
     groups: {count: 2, connect: all}}
  - {name: n1, op: lrn, size: 5, k: 1, alpha: 0.5, beta: 0.75, alpha_over_n: false}
  - {name: p1, op: maxpool, kernel: 3, stride: 2, pad: 1, rounding: ceil}
  - {name: c2, op: conv, filters: 8, kernel: 2, act: tanh, groups: {count: 2, devices: [gpu0, gpu1]}}
  - {name: n2, op: lrn, size: 3, k: 2, alpha: 2.0, beta: 0.6, alpha_over_n: true}
  - {name: ap, op: avgpool, kernel: 2, stride: 2, pad: 1, rounding: ceil}
  - {name: fc1, op: fc, units: 7}
  - {name: loss, op: softmax_loss}
"""


def test_lrn_conventions_towers_and_ceil_rounding_are_exact(tmp_path):
    p = tmp_path / "loud.yaml"
    p.write_text(LOUD_SPEC)
    net = compile_spec(p)
    assert net.graph.node("n1").attrs["num_group"] == 2      # two towers merged on gpu0, normalised apart
    assert net.graph.node("conv1").shapes[0][2] == 10 and net.graph.node("p1").shapes[0][2] == 6
    # ceil over 5 with pad 1: (5 + 2 - 2) / 2 -> 3 windows + 1, but the 4th would start in the padding
    assert net.graph.node("ap_g0").shapes[0][2] == 3
    check_parity(net, _random_params(net, 4), scale=3.0)


def test_graph_spec_with_copies_concat_and_unfused_activations(tmp_path):
    p = tmp_path / "graph.yaml"
    p.write_text(GRAPH_SPEC)
    net = compile_spec(p)
    check_parity(net, _random_params(net, 5), scale=2.0)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_spec_op_exports(name, tmp_path):
    """Each spec op's example case (tests/test_op_completeness.py): a new op needs its `onnx` hook."""
    net = compile_dict(_spec(name), f"one-{name}")
    check_parity(net, _random_params(net, 7), scale=2.0)


def test_an_op_without_onnx_form_is_named(specs_dir):
    net = compile_spec(specs_dir / "variants" / "mini.yaml")
    params = {k: v.numpy() for k, v in init_params(net, 0).items()}
    with pytest.raises(ExportError, match=r"node \S+_bwd\S* \(layer \w+\): op '\w+' has no ONNX form"):
        export_onnx(net.training().graph, params)
    with pytest.raises(ExportError, match="no value for parameter conv1_g0_weight"):
        export_onnx(net.graph, {k: v for k, v in params.items() if k != "conv1_g0_weight"})


def _checkpoint(net, params, directory) -> str:
    state = {"spec": plain(net.spec), "spec_hash": net.hash, "classes": [f"class{i}" for i in range(net.classes)]}
    return save_checkpoint(directory, {PARAM_PREFIX + k: v for k, v in params.items()}, state, tag="e0001")


def test_export_command_writes_a_checked_model(specs_dir, tmp_path, capsys):
    net = compile_spec(specs_dir / "variants" / "mini.yaml")
    params = _random_params(net, 6)
    run = tmp_path / "run"
    _checkpoint(net, params, run / "checkpoints")
    out = tmp_path / "mini.onnx"
    assert main(["export", str(run), "-o", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "ONNX opset 17" in text and "normwise relative error" in text
    onnx.checker.check_model(str(out))
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"])[:2] == ["class0", "class1"] and meta["alexnetc_spec"] == "alexnet-mini"
    # the file alone gives what the executor gives
    x = torch.randn(2, *net.input_shape, generator=torch.Generator().manual_seed(0))
    ex = Executor(net.at_batch(2), {d: "cpu" for d in net.devices}, for_training=False, params=params)
    prob = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["prob"], {"data": x.numpy()})[0]
    assert _normwise(prob, ex.forward(x)["prob"].double().numpy()) <= 1e-5


def test_export_command_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnetc: error:") and len(err.strip().splitlines()) == 1
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "m.onnx"), "--opset", "13"]) == 2
    assert "opset 17 or newer" in capsys.readouterr().err


BN_SPEC = """
name: loud-bn
input: {channels: 3, height: 11, width: 11}
classes: 5
devices: [gpu0, gpu1]
layers:
  - {name: conv1, op: conv, filters: 8, kernel: 3, bias: false, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: bn1, op: batchnorm, eps: 0.01}
  - {name: r1, op: relu}
  - {name: conv2, op: conv, filters: 6, kernel: 3, groups: {count: 2}}
  - {name: bn2, op: batchnorm, act: tanh}
  - {name: fc1, op: fc, units: 12}
  - {name: bn3, op: batchnorm, momentum: 0.3, act: sigmoid}
  - {name: fc2, op: fc, units: 5}
  - {name: loss, op: softmax_loss}
"""


def test_batchnorm_exports_with_its_running_statistics(tmp_path):
    """Batch norm per tower on two devices, over merged towers, on fc outputs, with fused activations:
    BatchNormalization with the running statistics as initializers (random ones: eval mode matters)."""
    p = tmp_path / "bn.yaml"
    p.write_text(BN_SPEC)
    net = compile_spec(p)
    model = onnx.load_from_string(check_parity(net, _random_params(net, 8), scale=2.0))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 4 and "Tanh" in ops and "Sigmoid" in ops   # bn1 per tower
    inits = {i.name for i in model.graph.initializer}
    assert {"bn1_g0_running_mean", "bn1_g1_running_var", "bn2_running_mean", "bn3_running_var"} <= inits
