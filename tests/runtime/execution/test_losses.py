"""Several softmax_loss heads (GoogLeNet's auxiliary classifiers): the total loss is their sum weighted
by `loss_weight`, every head's gradient is seeded with its weight, `prob` and the reported error come
from the main head (the one without `aux: true`), and the inference graph drops the auxiliary heads.

Oracle: torch.autograd on the eager rules in float64 (the total written out as l_main + 0.3 * l_aux
here, not through the compiler's helper), 1e-4 relative to each tensor's scale."""
from __future__ import annotations

import textwrap

import pytest
import torch
import yaml

from alexnetc.compiler import compile_spec
from alexnetc.compiler.errors import SpecErrors
from alexnetc.runtime.execution.eager import EagerNet
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.params import init_params

SPEC = {"input": {"channels": 2, "height": 6, "width": 6}, "classes": 3, "devices": ["gpu0", "gpu1"],
        "layers": [
            {"name": "c1", "op": "conv", "filters": 4, "kernel": 3, "pad": 1, "act": "relu"},
            {"name": "aux_fc", "op": "fc", "units": 3, "device": "gpu1"},
            {"name": "aux_loss", "op": "softmax_loss", "loss_weight": 0.3, "aux": True},
            {"name": "c2", "op": "conv", "filters": 4, "kernel": 3, "input": "c1", "act": "tanh"},
            {"name": "fc", "op": "fc", "units": 3},
            {"name": "loss", "op": "softmax_loss"}]}


def _compile(tmp_path, spec, batch=4):
    path = tmp_path / "heads.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return compile_spec(path, batch=batch)


def _close(a, b, rel=1e-4):
    scale = max(float(b.detach().abs().max()), 1e-6)
    torch.testing.assert_close(a.double(), b.double(), rtol=0, atol=rel * scale)


def test_weighted_total_main_prob_and_gradients(tmp_path):
    net = _compile(tmp_path, SPEC)
    heads = net.training().loss_heads
    assert [h[0].node.name for h in heads] == ["loss", "aux_loss"]   # the main head first
    params = init_params(net, 0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 2, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)
    ex = bind(net, {"gpu0": "cpu", "gpu1": "cpu"}, params=params, backend="reference")
    out = ex.forward(x, y, is_train=True)
    grads = ex.backward()

    eager = EagerNet(net, {k: v.double() for k, v in params.items()}, lrn="formula").double()
    env_p = {k: eager.param(k) for k in params}
    import torch.nn.functional as F
    h = F.relu(F.conv2d(x.double(), env_p["c1_weight"], env_p["c1_bias"], padding=1))
    aux = F.linear(h.flatten(1), env_p["aux_fc_weight"], env_p["aux_fc_bias"])
    main = F.linear(torch.tanh(F.conv2d(h, env_p["c2_weight"], env_p["c2_bias"])).flatten(1),
                    env_p["fc_weight"], env_p["fc_bias"])
    total = F.cross_entropy(main, y) + 0.3 * F.cross_entropy(aux, y)
    total.backward()
    _close(out["loss"], total)
    _close(out["prob"], torch.softmax(main, 1))
    for k in params:
        _close(grads[k], env_p[k].grad)
    # The eager net agrees too (it is the oracle of the other tests).
    loss, prob = EagerNet(net, {k: v.double() for k, v in params.items()}).double()(x.double(), y)
    _close(loss, total)
    _close(prob, torch.softmax(main, 1))


def test_single_head_loss_is_the_head_itself(tmp_path):
    spec = {**SPEC, "layers": [l for l in SPEC["layers"] if not l["name"].startswith("aux")]}
    net = _compile(tmp_path, spec)
    ex = bind(net, {"gpu0": "cpu", "gpu1": "cpu"}, params=init_params(net, 0), backend="reference")
    out = ex.forward(torch.randn(4, 2, 6, 6), torch.tensor([0, 1, 2, 0]), is_train=True)
    # the head's loss tensor itself, not multiplied by its weight 1.0: one-loss training stays bit-identical
    head = net.training().loss_heads[0][0]
    assert out["loss"] is ex._env[(id(head.node), head.index)]


def test_inference_drops_the_auxiliary_heads(tmp_path):
    net = _compile(tmp_path, SPEC)
    layers = {n.layer for n in net.inference().graph.nodes() if n.layer}
    assert "aux_fc" not in layers and "aux_loss" not in layers and {"c1", "c2", "fc", "loss"} <= layers
    assert "aux_fc" in {n.layer for n in net.training().graph.nodes()}
    params = init_params(net, 0)
    x = torch.randn(4, 2, 6, 6)
    train = bind(net, {"gpu0": "cpu", "gpu1": "cpu"}, params=params, backend="reference")
    infer = bind(net, {"gpu0": "cpu", "gpu1": "cpu"}, params=params, backend="reference", for_training=False)
    assert torch.equal(train.forward(x)["prob"], infer.forward(x)["prob"])


@pytest.mark.parametrize("layers, message", [
    ([{"name": "l1", "op": "softmax_loss", "input": "f"}, {"name": "l2", "op": "softmax_loss", "input": "f"}],
     "F:9:20: layer l2: a second main softmax_loss (the first is l1); mark auxiliary heads 'aux: true'"),
    ([{"name": "l1", "op": "softmax_loss", "input": "f", "aux": True, "loss_weight": 0.3}],
     "F:8:49: layer l1: every softmax_loss is 'aux: true': one must be the main head (the network's output)"),
])
def test_head_errors_are_located(tmp_path, layers, message):
    text = textwrap.dedent("""\
        input: {channels: 1, height: 4, width: 4}
        classes: 2
        layers:
          - {name: f, op: fc, units: 2}
        """)
    text = text.replace("layers:\n", "layers:\n\n\n\n")
    for l in layers:
        text += "  - " + yaml.safe_dump(l, default_flow_style=True, sort_keys=False).strip() + "\n"
    path = tmp_path / "F"
    path.write_text(text)
    with pytest.raises(SpecErrors) as exc:
        compile_spec(path)
    assert [str(e).replace(str(path), "F") for e in exc.value.errors] == [message]
