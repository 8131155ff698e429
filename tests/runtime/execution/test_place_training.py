"""The spec `alexnetc place` writes trains: on the CPU, every logical device bound to it, a few SGD steps
of the proposal end at the same weights as the hand placement's (the spec as written: the paper's two
towers) within float summation tolerance (towers reading all channels sum their partial input
gradients in another order). Dropout is left out: its masks are keyed by node name, so a placement
that splits a dropout layer's input otherwise draws other (equally distributed) masks."""
from __future__ import annotations

import torch

from alexnetc.compiler import compile_spec
from alexnetc.compiler.cost import DeviceSpec, LinkSpec
from alexnetc.compiler.placement import Request, plan
from alexnetc.runtime.execution.executor import bind
from alexnetc.runtime.execution.layout import to_logical
from alexnetc.runtime.execution.optim import SGD
from alexnetc.runtime.execution.params import init_params

from ...conftest import SPECS

BATCH = 8
# arithmetic slow and the link fast: towers everywhere pay, fc8 included (the hand placement keeps it whole)
SLOW = DeviceSpec("slow", "a slow device", {"fp32": 1e11, "tf32": 1e11}, 1e15, 8 << 30, "test")
FAST = LinkSpec("fast", "a fast link", 1e13, "test")


def _train(net, params, x, y, steps: int = 3) -> dict[str, torch.Tensor]:
    # binding splits the logical tensors into views: each run trains its own copy
    ex = bind(net, {d: "cpu" for d in net.devices}, params={k: v.clone() for k, v in params.items()})
    opt = SGD(ex.params, {}, momentum=0.9, weight_decay=0.0005)
    for _ in range(steps):
        ex.forward(x, y, is_train=True)
        opt.step(ex.backward(), lr=0.05)
    return to_logical(ex.params, net.graph)


def test_the_proposal_trains_to_the_hand_placements_weights(tmp_path):
    base = tmp_path / "mini-nodrop.yaml"
    base.write_text(f"base: {SPECS / 'variants' / 'mini.yaml'}\nname: mini-nodrop\nremove_layers: [drop6, drop7]\n")
    p = plan(Request(str(base), 2, SLOW, FAST, batch=BATCH))
    assert p.proposal.kind == "search" and "as towers on gpu0+gpu1" in p.proposal.label
    out = tmp_path / "placed.yaml"
    out.write_text(p.variant("mini-nodrop.yaml", "placed", ["test"]))
    placed, hand = compile_spec(out, batch=BATCH), compile_spec(base, batch=BATCH)
    fc8 = {n.device for n in placed.graph.nodes() if n.layer == "fc8" and n.op == "fc"}
    assert fc8 == {"gpu0", "gpu1"}                      # not the hand placement: fc8 split too
    params = to_logical(init_params(hand, 0), hand.graph)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    a, b = _train(hand, params, x, y), _train(placed, params, x, y)
    assert set(a) == set(b) == set(params)
    for name in a:
        assert not torch.equal(a[name], params[name]), name       # it trained
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
