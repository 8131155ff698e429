"""The `add` layer: its shape error, and its placement across devices (the MXNet elemwise_add +
group2ctx case): a two-device spec runs on the CPU exactly like the one-device spec, outputs and
gradients, and each input's gradient is computed on the device its input lives on."""
from __future__ import annotations

import textwrap

import pytest
import yaml

from alexnetc.compiler import compile_spec
from alexnetc.compiler.errors import SpecErrors


def _spec(two_devices: bool) -> dict:
    dev = {"device": "gpu1"} if two_devices else {}
    return {"input": {"channels": 3, "height": 8, "width": 8}, "classes": 4,
            "devices": ["gpu0", "gpu1"] if two_devices else ["gpu0"],
            "layers": [
                {"name": "a", "op": "conv", "filters": 6, "kernel": 3, "pad": 1, "act": "relu"},
                {"name": "b", "op": "conv", "filters": 6, "kernel": 1, "input": "data", **dev},
                {"name": "b2", "op": "conv", "filters": 6, "kernel": 3, "pad": 1, **dev},
                {"name": "sum", "op": "add", "inputs": ["a", "b2", "b"]},
                {"name": "pool", "op": "maxpool", "kernel": 2},
                {"name": "out", "op": "fc", "units": 4, **dev},
                {"name": "loss", "op": "softmax_loss"}]}


def _write(tmp_path, name, spec):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_shape_mismatch_names_both_shapes_and_suggests_a_projection(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        input: {channels: 3, height: 8, width: 8}
        classes: 4
        layers:
          - {name: a, op: conv, filters: 6, kernel: 3, pad: 1}
          - {name: b, op: conv, filters: 4, kernel: 3, stride: 2, input: data}
          - {name: sum, op: add, inputs: [a, b]}
          - {name: loss, op: softmax_loss}
        """))
    with pytest.raises(SpecErrors) as exc:
        compile_spec(path)
    (err,) = exc.value.errors
    assert (err.mark.line, err.mark.col, err.layer) == (6, 34, "sum")
    assert "a is (6, 8, 8) but b is (4, 3, 3)" in err.message
    assert "1x1 conv projection of b (op: conv, filters: 6, kernel: 1" in err.message


def test_add_needs_two_inputs(tmp_path):
    spec = _spec(False)
    spec["layers"][3]["inputs"] = ["a"]
    with pytest.raises(SpecErrors, match="add needs at least two inputs"):
        compile_spec(_write(tmp_path, "one.yaml", spec))


def test_inputs_from_another_device_are_copied_and_gradients_come_back(tmp_path):
    net = compile_spec(_write(tmp_path, "two.yaml", _spec(True)), batch=2)
    nodes = {n.name: n for n in net.graph.nodes()}
    add = nodes["sum"]
    assert add.device == "gpu0"
    # b2 and b live on gpu1: each reaches the add through a copy onto gpu0
    assert [e.node.op for e in add.inputs] == ["conv", "copy", "copy"]
    assert {e.node.inputs[0].node.name for e in add.inputs[1:]} == {"b2", "b"}
    program = net.training()
    grads = program.grad_heads
    for pname in ("b_weight", "b2_weight", "a_weight"):
        param = next(n for n in program.graph.nodes() if n.name == pname)
        assert grads[pname].node.device == param.device, pname


def test_two_devices_on_the_cpu_equal_one_device(tmp_path):
    """oracle: the one-device spec (same parameter names) and torch.autograd on the eager rules."""
    torch = pytest.importorskip("torch")
    from alexnetc.runtime.execution.eager import EagerNet
    from alexnetc.runtime.execution.executor import bind
    from alexnetc.runtime.execution.params import init_params

    one = compile_spec(_write(tmp_path, "one.yaml", _spec(False)), batch=3)
    two = compile_spec(_write(tmp_path, "two.yaml", _spec(True)), batch=3)
    params = init_params(one, 0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 3, 8, 8, generator=g), torch.randint(0, 4, (3,), generator=g)
    results = []
    for net, g2c in ((one, {"gpu0": "cpu"}), (two, {"gpu0": "cpu", "gpu1": "cpu"})):
        ex = bind(net, g2c, params=params, backend="reference")
        out = ex.forward(x, y, is_train=True)
        results.append((out["loss"].clone(), out["prob"].clone(), {k: v.clone() for k, v in ex.backward().items()}))
    (l1, p1, g1), (l2, p2, g2) = results
    assert sorted(g1) == sorted(g2)
    assert torch.equal(l1, l2) and torch.equal(p1, p2)
    for k in g1:
        assert torch.equal(g1[k], g2[k]), k
    eager = EagerNet(two, {k: v.double() for k, v in params.items()}, lrn="formula").double()
    loss, _ = eager(x.double(), y)
    loss.backward()
    torch.testing.assert_close(l2.double(), loss, rtol=1e-5, atol=1e-6)
    for k in g2:
        torch.testing.assert_close(g2[k].double(), eager.param(k).grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("how", ["relu layer", "act attribute"])
def test_a_relu_after_an_add_is_one_node_and_defaults_act_does_not_reach_the_add(tmp_path, how):
    """The fusion pass folds a relu layer into the add that feeds it (or the layer says `act: relu`);
    `defaults: {act: tanh}` (for conv and fc) leaves a plain add alone. oracle: the unfused network
    written out in plain torch (F.conv2d, relu(a + b2 + b), F.max_pool2d, F.linear) in float64, with
    torch.autograd: loss 1e-5, gradients 1e-4 relative."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from alexnetc.runtime.execution.executor import bind
    from alexnetc.runtime.execution.params import init_params

    spec = _spec(False)
    spec["defaults"] = {"act": "tanh"}
    if how == "relu layer":
        spec["layers"].insert(4, {"name": "sum_relu", "op": "relu"})
    else:
        spec["layers"][3]["act"] = "relu"
    net = compile_spec(_write(tmp_path, "s.yaml", spec), batch=3)
    adds = [n for n in net.graph.nodes() if n.op == "add"]
    assert [a.attrs["act"] for a in adds] == ["relu"] and not [n for n in net.graph.nodes() if n.op == "relu"]
    plain = _spec(False)
    plain["defaults"] = {"act": "tanh"}
    assert [n.attrs["act"] for n in compile_spec(_write(tmp_path, "p.yaml", plain)).graph.nodes()
            if n.op == "add"] == ["none"]
    params = init_params(net, 1)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 3, 8, 8, generator=g), torch.randint(0, 4, (3,), generator=g)
    ex = bind(net, {"gpu0": "cpu"}, params=params, backend="reference")
    out = ex.forward(x, y, is_train=True)
    grads = ex.backward()

    P = {k: v.double().requires_grad_() for k, v in params.items()}
    xd = x.double()
    a = torch.relu(F.conv2d(xd, P["a_weight"], P["a_bias"], padding=1))
    b = torch.tanh(F.conv2d(xd, P["b_weight"], P["b_bias"]))
    b2 = torch.tanh(F.conv2d(b, P["b2_weight"], P["b2_bias"], padding=1))
    pooled = F.max_pool2d(torch.relu(a + b2 + b), 2)
    loss = F.cross_entropy(torch.tanh(F.linear(pooled.flatten(1), P["out_weight"], P["out_bias"])), y)
    loss.backward()
    torch.testing.assert_close(out["loss"].double(), loss.detach(), rtol=1e-5, atol=1e-6)
    assert sorted(grads) == sorted(P)
    for k in grads:
        torch.testing.assert_close(grads[k].double(), P[k].grad, rtol=1e-4, atol=1e-6)
