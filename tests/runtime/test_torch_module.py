"""The network as a torch.nn.Module (runtime/torch_module.py): trained a few steps with
torch.optim.AdamW on a loss of its scores, it ends where the same network in plain torch (the eager
oracle, torch.autograd) ends; its state_dict is a checkpoint's tensors both ways."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alexnetc.compiler import compile_spec
from alexnetc.runtime.execution.eager import EagerNet
from alexnetc.runtime.execution.layout import to_logical
from alexnetc.runtime.execution.params import init_params
from alexnetc.runtime.torch_module import Network
from alexnetc.runtime.training import checkpoint as ckpt

# Two towers (conv split over two devices, an fc reading both), LRN, pooling, batch norm; no dropout
# (the eager oracle draws its masks from torch's RNG).
SPEC = """
name: towers
input: {channels: 3, height: 12, width: 12}
classes: 5
devices: [gpu0, gpu1]
defaults: {act: relu, weight_init: {type: kaiming}, bias_init: 0.1}
layers:
  - {name: conv1, op: conv, filters: 8, kernel: 3, pad: 1, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: norm1, op: lrn, size: 3, k: 2, alpha: 1.0e-3, beta: 0.75, alpha_over_n: false}
  - {name: pool1, op: maxpool, kernel: 3, stride: 2}
  - {name: conv2, op: conv, filters: 8, kernel: 3, pad: 1, act: none, bias: false,
     groups: {count: 2, devices: [gpu0, gpu1], connect: own}}
  - {name: bn2, op: batchnorm, act: relu}
  - {name: fc3, op: fc, units: 16, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: fc4, op: fc, units: 5, act: none, device: gpu0}
  - {name: loss, op: softmax_loss}
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "towers.yaml"
    path.write_text(SPEC)
    return compile_spec(path)


def _batches(n: int, batch: int = 6):
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(batch, 3, 12, 12, generator=g, dtype=torch.float64), torch.randint(0, 5, (batch,), generator=g))
            for _ in range(n)]


def test_adamw_steps_match_the_network_in_plain_torch(net):
    """oracle: EagerNet (each op's ATen rule, differentiated by torch.autograd; LRN written out) with the
    same initial weights, both in float64, both trained 4 steps by torch.optim.AdamW on cross-entropy of
    the scores. Parameters (joined to logical names) within 1e-10, running statistics too."""
    model = Network(net, seed=3).double()
    assert [n for n, _ in model.named_parameters()] == ["conv1.weight", "conv1.bias", "conv2.weight", "bn2.scale",
                                                        "bn2.shift", "fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias"]
    assert tuple(model.conv1.weight.shape) == (8, 3, 3, 3)        # whole, both towers
    placed = {n: t.double() for n, t in init_params(net, 3).items()}
    oracle = EagerNet(net, placed, lrn="formula").double()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    ref = torch.optim.AdamW(oracle.parameters(), lr=3e-3, weight_decay=0.05)
    model.train()
    oracle.train()
    for images, labels in _batches(4):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _, prob = oracle(images, labels)
        ref_loss = F.nll_loss(prob.clamp_min(1e-300).log(), labels)
        ref.zero_grad()
        ref_loss.backward()
        ref.step()
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-10)
    theirs = to_logical({n: oracle.param(n).detach() for n in oracle.names}, net.graph)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), theirs[name], rtol=1e-10, atol=1e-10, msg=name)
    stats = to_logical({n: oracle.state(n) for n in oracle.state_keys}, net.graph, role="state")
    for name in ("bn2.running_mean", "bn2.running_var"):
        torch.testing.assert_close(model.state_dict()[name], stats[name], rtol=1e-10, atol=1e-12)
    model.eval()                                       # the inference graph, running statistics, no gradient
    with torch.no_grad():
        oracle.eval()
        _, prob = oracle(*_batches(1)[0])
    out = model(_batches(1)[0][0])
    assert not out.requires_grad
    torch.testing.assert_close(torch.softmax(out, 1), prob, rtol=1e-9, atol=1e-12)


def test_a_backward_of_an_earlier_forward_is_refused(net):
    model = Network(net, seed=0)
    (x, _), (y, _) = _batches(2)
    first = model(x.float()).sum()
    model(y.float())
    with pytest.raises(RuntimeError, match="backward of an earlier forward"):
        first.backward()


def test_state_dict_round_trips_with_checkpoints(net, tmp_path):
    """save_checkpoint writes an ordinary checkpoint whose param/ and state/ tensors are the state_dict;
    from_run reads it back into the same scores; load_state_dict takes a checkpoint's tensors."""
    model = Network(net, seed=1)
    images, labels = _batches(1)[0]
    loss = F.cross_entropy(model(images.float()), labels)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    path = model.save_checkpoint(tmp_path / "run", classes=list("abcde"))
    tensors, record = ckpt.load_checkpoint(path)
    sd = model.state_dict()
    assert set(sd) == {k.split("/", 1)[1] for k in tensors}
    for k, t in tensors.items():
        assert torch.equal(t, sd[k.split("/", 1)[1]]), k
    again = Network.from_run(tmp_path / "run").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(images.float()), model(images.float()), rtol=0, atol=0)
    fresh = Network(net, seed=9)
    fresh.load_state_dict({k.split("/", 1)[1]: t for k, t in tensors.items()})
    fresh.eval()
    torch.testing.assert_close(fresh(images.float()), model(images.float()), rtol=0, atol=0)
    assert record["classes"] == list("abcde")


def test_the_cli_reads_a_module_checkpoint(net, tmp_path, capsys):
    from alexnetc.runtime.app.cli import main

    Network(net, seed=1).save_checkpoint(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "m.onnx")]) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_a_gpu_the_module_runs_the_triton_kernels_like_the_cpu(net):
    """.to("cuda") binds the executor again on the GPU (Triton kernels); scores and gradients against
    the CPU reference kernels within 2e-2 of their scale (the GPU convolutions may use TF32)."""
    cpu, gpu = Network(net, seed=2), Network(net, seed=2).to("cuda")
    images, labels = _batches(1)[0]
    for model, x in ((cpu, images.float()), (gpu, images.float().cuda())):
        F.cross_entropy(model(x), labels.to(x.device)).backward()
    assert gpu._ac_train_ex.group2ctx["gpu0"].type == "cuda"
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters()):
        scale = a.grad.abs().max().item() + 1e-12
        assert (b.grad.cpu() - a.grad).abs().max().item() <= 2e-2 * scale, name
