"""Passes: gradients on their parameter's device, placement check, memory plan per device, fusion
(activations into their producer, residual adds into the batch norm before them)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from alexnetc.compiler import Graph, compile_spec, sym
from alexnetc.compiler.passes import (
    absorbed_into,
    check_placement,
    fuse_activations,
    fuse_residual_adds,
    gradient,
    infer_shapes,
    plan_memory,
)

SPECS = Path(__file__).resolve().parents[2] / "specs"
ALL = ["alexnet.yaml", "alexnet-1gpu.yaml", "variants/mini.yaml", "variants/one-gpu-half.yaml",
       "variants/no-lrn.yaml", "variants/no-dropout.yaml", "variants/pool-2x2.yaml", "variants/tanh.yaml"]


@pytest.mark.parametrize("spec", ALL)
def test_every_parameter_has_one_gradient_on_its_device(spec):
    net = compile_spec(SPECS / spec, batch=2)
    program = net.training()
    train = program.graph
    params = {n.name: n for n in net.graph.params()}
    names = program.grad_of
    assert sorted(names) == sorted(params) and len(names) == len(set(names))
    k = program.forward_outputs
    assert k == 2 and len(train.outputs) == k + len(names)
    assert list(program.grad_heads.values()) == list(train.outputs[k:])
    for name, e in program.grad_heads.items():
        assert e.node.device == params[name].device, (name, e.node.device, params[name].device)
        assert e.shape == params[name].shapes[0]


def test_alexnet_gradient_devices_per_tower():
    program = compile_spec(SPECS / "alexnet.yaml", batch=2).training()
    devs = {name: e.node.device for name, e in program.grad_heads.items()}
    assert devs["conv3_g1_weight"] == "gpu1" and devs["fc8_weight"] == "gpu0"
    assert Counter(devs.values()) == Counter({"gpu0": 16, "gpu1": 14})  # fc8's two on gpu0


@pytest.mark.parametrize("spec", ["alexnet.yaml", "alexnet-1gpu.yaml", "variants/mini.yaml"])
def test_placement_is_clean_forward_and_training(spec):
    net = compile_spec(SPECS / spec, batch=2)
    assert check_placement(net.graph) == []
    assert check_placement(net.training().graph) == []


def test_check_placement_finds_a_missing_copy():
    x = sym.relu(sym.var("data"), name="a", device="gpu0")
    y = sym.relu(x, name="b", device="gpu1")
    assert check_placement(y.graph()) == ["b on gpu1 reads a on gpu0 without a copy"]


def test_backward_copies_go_back():
    train = compile_spec(SPECS / "alexnet.yaml", batch=2).training().graph
    back = Counter((n.layer, n.attrs["src"], n.device) for n in train.nodes()
                   if n.op == "copy" and n.name.endswith("_bwd"))
    assert back == Counter({("conv3", "gpu1", "gpu0"): 1, ("conv3", "gpu0", "gpu1"): 1,
                            ("fc6", "gpu1", "gpu0"): 1, ("fc6", "gpu0", "gpu1"): 1,
                            ("fc7", "gpu1", "gpu0"): 1, ("fc7", "gpu0", "gpu1"): 1,
                            ("fc8", "gpu0", "gpu1"): 1})


def test_memory_plan_per_device():
    net = compile_spec(SPECS / "alexnet.yaml", batch=128)
    tg = net.training().graph
    plan = net.training().memory
    assert sorted(plan.devices) == ["gpu0", "gpu1"]
    # Parameters as fp32 bytes: gpu1 holds one tower (half of conv1..fc7), gpu0 the other plus fc8.
    tower = (34944 + 307456 + 885120 + 663936 + 442624 + 37752832 + 16781312) // 2
    assert plan.devices["gpu1"].param_bytes == 4 * tower
    assert plan.devices["gpu0"].param_bytes == 4 * (tower + 4097000)
    for d in plan.devices.values():
        assert 0 < d.peak_activation_bytes <= d.pooled_bytes
    assert plan.buffers_reused > 0
    assert plan.steps == len(tg.nodes())
    freed = [tuple(v) for step in plan.release_after for v in step]
    nodes = tg.nodes()
    assert len(freed) == len(set(freed)) and (nodes.index(tg.node("conv1_g0")), 0) in freed
    for i, step in enumerate(plan.release_after):  # freed only after its producer ran
        assert all(j <= i for j, _ in step)


def test_memory_plan_reuses_only_on_the_same_device():
    a = sym.relu(sym.var("data", shape=(1, 1000)), name="a", device="gpu0")
    b = sym.relu(a, name="b", device="gpu0")
    c = sym.copy(b, name="c", device="gpu1", src="gpu0")
    d = sym.relu(c, name="d", device="gpu1")
    plan = plan_memory(infer_shapes(sym.relu(d, name="e", device="gpu1").graph()))
    devs = plan.devices
    # gpu0: a then b (a freed after b): pool 2 buffers; gpu1: c, d, then e reuses c's buffer.
    assert devs["gpu0"].pooled_bytes == 8000 and devs["gpu1"].pooled_bytes == 8000
    assert devs["gpu1"].peak_activation_bytes == 8000
    assert plan.buffers_reused == 1


def test_fusion_of_a_standalone_relu():
    x = sym.conv(sym.var("data"), filters=4, kernel=3, name="c")
    g = fuse_activations(sym.relu(x, name="r").graph())
    ops = [(n.op, n.name, n.attrs.get("act")) for n in g.nodes() if not n.is_variable]
    assert ops == [("conv", "c", "relu")]


def test_no_fusion_when_the_conv_output_has_another_reader():
    x = sym.conv(sym.var("data"), filters=4, kernel=3, name="c")
    g = fuse_activations(sym.Group([sym.relu(x, name="r"), x]).graph())
    assert sorted(n.op for n in g.nodes() if not n.is_variable) == ["conv", "relu"]
    assert g.node("c").attrs["act"] == "none"


def test_fusion_in_a_spec(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("input: {channels: 3, height: 8, width: 8}\nclasses: 2\nlayers:\n"
                    "  - {name: c, op: conv, filters: 4, kernel: 3}\n  - {name: r, op: relu}\n"
                    "  - {name: f, op: fc, units: 2}\n  - {name: loss, op: softmax_loss}\n")
    g = compile_spec(path).graph
    assert "relu" not in {n.op for n in g.nodes()} and g.node("c").attrs["act"] == "relu"


def test_fused_activation_layer_names_the_node_holding_its_output(tmp_path):
    # A fused standalone activation has no node of its own: its layer must name the conv/fc that now
    # produces its output (features of that layer, `neighbors --layer r`), never a node that is gone.
    path = tmp_path / "s.yaml"
    path.write_text("input: {channels: 3, height: 8, width: 8}\nclasses: 2\ndevices: [gpu0, gpu1]\nlayers:\n"
                    "  - {name: c, op: conv, filters: 4, kernel: 3, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}\n"
                    "  - {name: r, op: relu}\n  - {name: f, op: fc, units: 2}\n  - {name: loss, op: softmax_loss}\n")
    net = compile_spec(path)
    names = {n.name for n in net.graph.nodes()}
    for info in net.layers:
        for node, _, _ in info.outputs:
            assert node in names, (info.name, node)
    r = next(i for i in net.layers if i.name == "r")
    assert [(n, d) for n, d, _ in r.outputs] == [("c_g0", "gpu0"), ("c_g1", "gpu1")]
    assert all(net.graph.node(n).attrs["act"] == "relu" for n, _, _ in r.outputs)


def _fused(*heads):
    """The graph of `heads` after both fusion passes, as the pipeline runs them, and before them."""
    before = sym.Group(list(heads)).graph() if len(heads) > 1 else heads[0].graph()
    return before, fuse_residual_adds(fuse_activations(before))


def _bn(x, name, **attrs):
    return sym.batchnorm(sym.conv(x, filters=4, kernel=3, pad=1, name=f"{name}_conv"), name=name, **attrs)


def _ops(g):
    return [(n.op, n.name, n.attrs.get("act"), n.attrs.get("residual")) for n in g.nodes() if not n.is_variable]


@pytest.mark.parametrize("bn_first", [True, False])
def test_a_residual_add_and_its_relu_fold_into_the_batch_norm(bn_first):
    x = sym.var("data")
    bn = _bn(x, "bn")
    before, g = _fused(sym.relu(sym.add(*((bn, x) if bn_first else (x, bn)), name="sum"), name="out"))
    assert _ops(g) == [("conv", "bn_conv", "none", None), ("batchnorm", "bn", "relu", True)]
    fused = g.node("bn")
    assert fused.inputs[-1].node.name == "data" and len(fused.inputs) == 6
    # what the folded nodes became: the relu's output and the add's are the batch norm's now
    assert absorbed_into(before, g) == {"sum": "bn", "out": "bn"}


def test_residual_fusion_takes_the_first_batch_norm_of_two():
    x = sym.var("data")
    _, g = _fused(sym.add(_bn(x, "a"), _bn(x, "b"), name="sum"))
    assert g.node("a").attrs["residual"] and not g.node("b").attrs.get("residual")
    assert g.node("a").inputs[-1].node.name == "b" and g.node("a").attrs["act"] == "none"


@pytest.mark.parametrize("case", ["bn read twice", "bn has its act", "three inputs", "other device"])
def test_no_residual_fusion(case):
    x = sym.var("data")
    if case == "bn read twice":
        bn = _bn(x, "bn")
        heads = [sym.add(bn, x, name="sum"), bn]
    elif case == "bn has its act":
        heads = [sym.add(_bn(x, "bn", act="tanh"), x, name="sum")]
    elif case == "three inputs":
        heads = [sym.add(_bn(x, "bn"), x, x, name="sum")]
    else:
        bn = sym.batchnorm(sym.conv(x, filters=4, kernel=3, pad=1, name="c", device="gpu0"), name="bn",
                           device="gpu0")
        heads = [sym.add(bn, sym.copy(x, name="xc", device="gpu1", src="gpu0"), name="sum", device="gpu1")]
    _, g = _fused(*heads)
    assert "add" in {n.op for n in g.nodes()} and not g.node("bn").attrs.get("residual")


def test_residual_fusion_in_a_spec_keeps_the_layers_nodes_and_parameters(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("input: {channels: 3, height: 8, width: 8}\nclasses: 2\nlayers:\n"
                    "  - {name: c0, op: conv, filters: 4, kernel: 3, pad: 1}\n"
                    "  - {name: c1, op: conv, filters: 4, kernel: 3, pad: 1, bias: false}\n"
                    "  - {name: bn, op: batchnorm}\n"
                    "  - {name: sum, op: add, inputs: [c0, bn]}\n  - {name: r, op: relu}\n"
                    "  - {name: f, op: fc, units: 2}\n  - {name: loss, op: softmax_loss}\n")
    net = compile_spec(path)
    assert {n.op for n in net.graph.nodes()} >= {"batchnorm"} and "add" not in {n.op for n in net.graph.nodes()}
    outputs = {i.name: [n for n, _, _ in i.outputs] for i in net.layers}
    assert outputs["sum"] == outputs["r"] == ["bn"]
    assert {v.name for v in net.graph.variables() if v.role == "param"} >= {"bn_scale", "bn_shift"}


def test_gradient_needs_shapes():
    with pytest.raises(ValueError, match="shape-annotated"):
        gradient(Graph(sym.softmax_loss(sym.var("x"), sym.var("label")).outputs))
