"""A ResNet cut in two (issue 9): its first half on gpu0, its second half on gpu1, with the cut inside a
residual block, so one add reads a value from each side. The compiled graph copies exactly the values
that cross the cut (oracle: the crossing edges worked out from the spec's layers and their devices,
independently of the placement pass), each gradient comes back the same way, and its run on the CPU
(both logical devices bound to it) equals the one-device spec's: loss, probabilities, every gradient,
the running statistics, and the evaluation outputs."""
from __future__ import annotations

import copy

import torch

from alexnetc.compiler.ops import OPS, spec_ops
from alexnetc.compiler.ops.weighted import DEVICE
from alexnetc.compiler.pipeline import compile_dict, load_spec, plain
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.params import init_params

from ...conftest import SPECS

CUT = "layer2.proj"     # from here on gpu1: layer2's shortcut branch, its add, and all after it
# Ops that take a device (the registry's, with a `device` attribute); the others run where their input is.
PLACEABLE = {name for name in spec_ops() if any(a.name == DEVICE.name for a in OPS[name].attrs)}


def _flat() -> dict:
    return copy.deepcopy(plain(load_spec(SPECS / "variants" / "resnet-mini.yaml")))


def _split() -> dict:
    spec = _flat()
    spec["devices"] = ["gpu0", "gpu1"]
    names = [l["name"] for l in spec["layers"]]
    for layer in spec["layers"][names.index(CUT):]:
        if layer.get("op") in PLACEABLE:
            layer["device"] = "gpu1"
    return spec


def _crossings(spec: dict) -> set[str]:
    """Layers whose output is read on the other device: each layer reads `input`, `inputs` or the
    previous layer; it runs on its `device`, else where its first input is (data: the first device)."""
    device, prev, crossing = {"data": spec["devices"][0]}, "data", set()
    for layer in spec["layers"]:
        ins = layer.get("inputs") or [layer.get("input") or prev]
        device[layer["name"]] = layer.get("device") or device[ins[0]]
        crossing |= {i for i in ins if device[i] != device[layer["name"]]}
        prev = layer["name"]
    return crossing


def test_copies_exactly_at_the_cut_and_same_results_as_one_device():
    split_spec = _split()
    expected = _crossings(split_spec)
    assert expected == {"layer1.out", "layer2.bn2"}   # the block's input (shortcut) and its main branch
    two = compile_dict(split_spec, "resnet-split", batch=4)
    one = compile_dict(_flat(), "resnet-one", batch=4)
    assert not [n for n in one.graph.nodes() if n.op == "copy"]
    copies = [n for n in two.graph.nodes() if n.op == "copy"]
    # the nodes holding those layers' values (a block's `out` relu is folded into its add, and the add
    # into the batch norm before it: layer1's output is its bn2's)
    holding = {node for info in two.layers if info.name in expected for node, _, _ in info.outputs}
    assert holding == {"layer1.bn2", "layer2.bn2"}
    assert {c.inputs[0].node.name for c in copies} == holding and len(copies) == len(expected)
    assert all(c.device == "gpu1" and c.inputs[0].node.device == "gpu0" for c in copies)
    # layer2's add runs on gpu1, so the batch norm on its side (proj_bn) takes it, reading layer2.bn2
    # from gpu0 as its residual through a copy
    summing = two.graph.node("layer2.proj_bn")
    assert summing.attrs["residual"] and summing.device == "gpu1"
    assert summing.inputs[-1].node.op == "copy" and summing.inputs[-1].node.inputs[0].node.name == "layer2.bn2"
    # the gradient pass sends each crossing value's gradient back: one copy the other way each
    back = [n for n in two.training().graph.nodes() if n.op == "copy" and n.device == "gpu0"]
    assert len(back) == len(expected)

    params = init_params(one, seed=3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 28, 28, generator=g), torch.randint(0, 10, (4,), generator=g)
    ex1 = bind(one, {"gpu0": "cpu"}, params=params)
    ex2 = bind(two, {"gpu0": "cpu", "gpu1": "cpu"}, params=params)
    o1, o2 = ex1.forward(x, y, is_train=True), ex2.forward(x, y, is_train=True)
    g1, g2 = ex1.backward(), ex2.backward()
    assert torch.equal(o1["loss"], o2["loss"]) and torch.equal(o1["prob"], o2["prob"])
    assert set(g1) == set(g2) == set(params)
    for name in g1:
        assert torch.equal(g1[name], g2[name]), name
    assert g1["layer2.proj_weight"].abs().max() > 0 and g1["conv1_weight"].abs().max() > 0
    assert set(ex1.state) == set(ex2.state)
    assert all(torch.equal(ex1.state[k], ex2.state[k]) for k in ex1.state)
    # each gradient is computed where its parameter lives
    program = two.training()
    for name, head in program.grad_heads.items():
        assert head.node.device == program.graph.node(name).device, name
    assert program.graph.node("layer2.proj_weight").device == "gpu1"
    assert program.graph.node("layer2.conv1_weight").device == "gpu0"
    e1, e2 = ex1.forward(x, y, is_train=False), ex2.forward(x, y, is_train=False)
    assert torch.equal(e1["loss"], e2["loss"]) and torch.equal(e1["prob"], e2["prob"])
