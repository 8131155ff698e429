"""The executor's forward and gradient pass against torch.autograd (the oracle: tests/runtime/execution/
autograd_oracle.py, plain ATen ops differentiated by autograd, in float64), on the reference backend."""
from __future__ import annotations

import pytest
import torch

from alexnetc.compiler import compile_spec
from alexnetc.compiler.pipeline import compile_dict, plain
from alexnetc.runtime.execution.executor import Executor, bind
from alexnetc.runtime.execution.params import init_params

from .autograd_oracle import forward as oracle_forward

CPU2 = {"gpu0": "cpu", "gpu1": "cpu"}


def _mini(specs_dir, tmp_path, extra: str = "", batch: int = 3):
    """The mini two-tower spec without dropout (its masks are not the oracle's business)."""
    p = tmp_path / "mini-nodrop.yaml"
    p.write_text(f"base: {specs_dir / 'variants' / 'mini.yaml'}\nremove_layers: [drop6, drop7]\n{extra}")
    return compile_spec(p, batch=batch)


def _batch(net, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, h, w = net.input_shape
    return torch.randn(n, c, h, w, generator=g), torch.randint(0, net.classes, (n,), generator=g)


def test_whole_network_gradients_match_autograd(specs_dir, tmp_path):
    net = _mini(specs_dir, tmp_path)
    params = init_params(net, seed=1)
    x, y = _batch(net, 3)
    _check_against_autograd(net, params, x, y)


def _check_against_autograd(net, params, x, y):
    """Executor (fp32, reference kernels) vs autograd of the eager graph in float64: the loss to 1e-5
    relative, probabilities to 1e-4, each gradient to 1e-3 of its largest magnitude; plus 1e-6 absolute
    for the loss and the gradients, where fp32 sums that cancel to near zero keep that much error."""
    ex = bind(net, CPU2, params=params)
    out = ex.forward(x, y, is_train=True)
    grads = ex.backward()
    loss, prob, model = oracle_forward(net, {k: v.double() for k, v in params.items()}, x.double(), y)
    loss.backward()
    assert_matches_oracle(out, grads, params, loss, prob, model)


def assert_matches_oracle(out, grads, params, loss, prob, model, label: str = "") -> None:
    """The executor's loss, probabilities and gradients against the float64 autograd oracle's (after
    its loss.backward()), to the tolerances of _check_against_autograd."""
    assert abs(float(out["loss"]) - loss.item()) <= 1e-5 * abs(loss.item()) + 1e-6
    torch.testing.assert_close(out["prob"].double(), prob.detach(), rtol=1e-4, atol=1e-6)
    assert set(grads) == set(params)
    for name, g in grads.items():
        ref = model.param(name).grad
        scale = ref.abs().max().item() + 1e-12
        err = (g.double() - ref).abs().max().item()
        # 5e-6 absolute: an fp32 gradient near zero made of order-one terms that cancel carries their
        # rounding, not its own (hypothesis found c0_weight at scale 1e-4 off by 1.19e-6: a grouped
        # conv, towers crossing devices, batch 1).
        assert err <= 1e-3 * scale + 5e-6, f"{label}{name}: max error {err:.3g} vs scale {scale:.3g}"


# A graph spec off the paper's path: ceil-rounded conv and pooling, standalone activations (fused and
# not), a value read by three layers, a concat of branches on different devices, avgpool, no bias.
GRAPH_SPEC = """
name: graph
input: {channels: 3, height: 17, width: 17}
classes: 5
devices: [gpu0, gpu1]
layers:
  - {name: conv1, op: conv, filters: 8, kernel: 4, stride: 2, rounding: ceil, pad: 1,
     groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: t1, op: tanh}
  - {name: n1, op: lrn, size: 3, k: 2, alpha: 1.0e-2, beta: 0.75, alpha_over_n: true}
  - {name: p1, op: maxpool, kernel: 3, stride: 2, rounding: ceil, pad: 1}
  - {name: r1, op: relu}
  - {name: s1, op: sigmoid, input: p1}
  - {name: c2, op: conv, filters: 6, kernel: 3, pad: 1, input: r1, device: gpu1}
  - {name: c3, op: conv, filters: 6, kernel: 3, pad: 1, input: s1, groups: {count: 2, devices: [gpu1, gpu0]}}
  - {name: cat, op: concat, inputs: [c2, c3, r1]}
  - {name: ap, op: avgpool, kernel: 2, stride: 2, rounding: ceil}
  - {name: fc1, op: fc, units: 12, bias: false, act: sigmoid,
     groups: {count: 2, devices: [gpu0, gpu1], connect: own}}
  - {name: fc2, op: fc, units: 5}
  - {name: loss, op: softmax_loss}
"""


@pytest.mark.parametrize("batch", [1, 3])
def test_graph_spec_gradients_match_autograd(tmp_path, batch):
    p = tmp_path / "graph.yaml"
    p.write_text(GRAPH_SPEC)
    net = compile_spec(p, batch=batch)
    conv1 = net.graph.node("conv1_g0")
    assert conv1.shapes[0][2] == 9  # ceil: (17 + 2 - 4) / 2 + 1 = 8.5 -> 9, one window past the padding
    params = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(7))
              for k, v in init_params(net, seed=1).items()}
    x, y = _batch(net, batch)
    _check_against_autograd(net, params, x, y)


def test_every_gradient_lives_on_its_parameters_device(specs_dir, tmp_path):
    net = _mini(specs_dir, tmp_path)
    ex = bind(net, CPU2, params=init_params(net, 0))
    x, y = _batch(net, 2)
    ex.forward(x, y, is_train=True)
    grads = ex.backward()
    program = net.training()
    tg = program.graph
    for name, head in program.grad_heads.items():
        assert head.node.device == tg.node(name).device, name
        assert grads[name].device == ex.params[name].device


def _merge_towers(two: dict[str, torch.Tensor], one_names: list[str]) -> dict[str, torch.Tensor]:
    """Two-tower parameters (NAME_g0_weight, NAME_g1_weight) as one device's (NAME_weight): tower i's
    kernels are rows i*K/2 .. (i+1)*K/2 of the merged tensor, for grouped and full connections alike."""
    out = {}
    for name in one_names:
        if name in two:
            out[name] = two[name]
            continue
        layer, kind = name.rsplit("_", 1)
        out[name] = torch.cat([two[f"{layer}_g0_{kind}"], two[f"{layer}_g1_{kind}"]], 0)
    return out


def test_two_towers_on_two_devices_equal_one_device(specs_dir, tmp_path):
    two = _mini(specs_dir, tmp_path, batch=4)
    one_spec = plain(two.spec)
    one_spec["devices"] = ["gpu0"]
    for layer in one_spec["layers"]:
        if "groups" in layer:
            layer["groups"].pop("devices", None)
    one = compile_dict(one_spec, "one-device", batch=4)
    assert not [n for n in one.graph.nodes() if n.op == "copy"]

    p2 = init_params(two, 3)
    one_names = [n.name for n in one.graph.params()]
    p1 = _merge_towers(p2, one_names)
    x, y = _batch(two, 4, seed=5)
    ex2, ex1 = bind(two, CPU2, params=p2), bind(one, {"gpu0": "cpu"}, params=p1)
    o2, o1 = ex2.forward(x, y, is_train=True), ex1.forward(x, y, is_train=True)
    torch.testing.assert_close(o2["prob"], o1["prob"], rtol=1e-5, atol=1e-6)
    g2, g1 = ex2.backward(), ex1.backward()
    merged = _merge_towers(g2, one_names)
    for name in one_names:
        torch.testing.assert_close(merged[name], g1[name], rtol=1e-4, atol=1e-6)


def test_inference_executor_rejects_backward(specs_dir, tmp_path):
    net = _mini(specs_dir, tmp_path)
    ex = Executor(net, CPU2, for_training=False, params=init_params(net, 0))
    x, _ = _batch(net, 2)
    prob = ex.forward(x)["prob"]
    assert prob.shape == (2, 10)
    torch.testing.assert_close(prob.sum(1), torch.ones(2))
    with pytest.raises(RuntimeError, match="inference"):
        ex.backward()


def test_backward_needs_a_forward_each_time(specs_dir, tmp_path):
    net = _mini(specs_dir, tmp_path)
    ex = bind(net, CPU2, params=init_params(net, 0))
    x, y = _batch(net, 2)
    with pytest.raises(RuntimeError, match="before each backward"):
        ex.backward()
    ex.forward(x, y, is_train=True)
    ex.backward()
    with pytest.raises(RuntimeError, match="before each backward"):
        ex.backward()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        ex.forward(x, torch.tensor([3, 10]), is_train=True)


def test_grad_buckets_are_flat_views(specs_dir, tmp_path):
    net = _mini(specs_dir, tmp_path)
    ex = bind(net, CPU2, params=init_params(net, 0))
    buckets = ex.grad_buckets()
    assert len(buckets) == 1  # both logical devices on the one CPU
    total = sum(p.numel() for p in ex.params.values())
    assert buckets[0].numel() == total
    x, y = _batch(net, 2)
    ex.forward(x, y, is_train=True)
    ex.backward()
    flat = torch.cat([ex.grads[n].reshape(-1) for n in ex.grad_names])
    torch.testing.assert_close(flat, buckets[0])


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_triton_kernels_on_one_gpu_with_two_streams_match_reference(specs_dir, tmp_path):
    """Both towers on cuda:0 (a stream each) with the Triton kernels against the CPU reference backend.
    Tolerance 2e-2 of each gradient's scale: the GPU convolutions may use TF32."""
    net = _mini(specs_dir, tmp_path, batch=8)
    params = init_params(net, 4)
    x, y = _batch(net, 8, seed=2)
    cpu = bind(net, CPU2, params=params)
    gpu = bind(net, {"gpu0": "cuda:0", "gpu1": "cuda:0"}, params=params, backend="triton")
    assert all(s is not None for s in gpu._streams.values())
    oc, og = cpu.forward(x, y, is_train=True), gpu.forward(x, y, is_train=True)
    torch.testing.assert_close(og["prob"].cpu(), oc["prob"], rtol=2e-2, atol=2e-3)
    gc, gg = cpu.backward(), gpu.backward()
    for name in gc:
        assert gg[name].device.type == "cuda"
        scale = gc[name].abs().max().item() + 1e-12
        assert (gg[name].cpu() - gc[name]).abs().max().item() <= 2e-2 * scale, name


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_equal_one_gpu(specs_dir, tmp_path):
    net = _mini(specs_dir, tmp_path, batch=8)
    params = init_params(net, 4)
    x, y = _batch(net, 8, seed=2)
    one = bind(net, {"gpu0": "cuda:0", "gpu1": "cuda:0"}, params=params)
    two = bind(net, {"gpu0": "cuda:0", "gpu1": "cuda:1"}, params=params)
    torch.testing.assert_close(one.forward(x, y, is_train=True)["prob"], two.forward(x, y, is_train=True)["prob"])
    g1, g2 = one.backward(), two.backward()
    for name in g1:
        assert g2[name].device == two.params[name].device
        torch.testing.assert_close(g1[name], g2[name].to(g1[name].device))


TINY_ALL_OPS = """
name: tiny
input: {channels: 3, height: 19, width: 19}
classes: 5
devices: [gpu0, gpu1]
defaults: {act: relu, weight_init: {type: kaiming}}
layers:
  - {name: conv1, op: conv, filters: 16, kernel: 5, stride: 2, pad: 2,
     groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: norm1, op: lrn, size: 5, k: 2, alpha: 1.0e-2, beta: 0.75, alpha_over_n: false}
  - {name: pool1, op: maxpool, kernel: 3, stride: 2}
  - {name: conv2, op: conv, filters: 32, kernel: 3, pad: 1, groups: {count: 2, devices: [gpu0, gpu1], connect: own}}
  - {name: pool2, op: avgpool, kernel: 2, stride: 2, rounding: ceil}
  - {name: fc3, op: fc, units: 32, groups: {count: 2, devices: [gpu0, gpu1], connect: all}}
  - {name: drop3, op: dropout, p: 0.5}
  - {name: fc4, op: fc, units: 5, act: none, device: gpu0}
  - {name: loss, op: softmax_loss}
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the Triton path is the GPU tests' business")
def test_triton_backend_through_the_executor_matches_reference(tmp_path):
    """Every op of a training step (conv, LRN, max/avg pool, dropout, fc, softmax and all their
    backwards) through the Triton launchers in Triton's interpreter, against the reference backend:
    the same dropout masks, losses to 1e-6 and gradients to 1e-5 of their scale (fp32 both ways)."""
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_ALL_OPS)
    net = compile_spec(p, batch=3)
    params = init_params(net, 0)
    x, y = _batch(net, 3, seed=4)
    ref = bind(net, CPU2, params=params, backend="reference")
    tri = bind(net, CPU2, params=params, backend="triton")
    assert {s.backend.name for s in tri._forward + tri._backward if s.backend} == {"triton"}
    for ex in (ref, tri):
        ex.seed, ex.step_count = 5, 2
    o1, o2 = ref.forward(x, y, is_train=True), tri.forward(x, y, is_train=True)
    assert abs(float(o1["loss"]) - float(o2["loss"])) <= 1e-6 * abs(float(o1["loss"]))
    g1, g2 = ref.backward(), tri.backward()
    for name in g1:
        scale = g1[name].abs().max().item() + 1e-12
        assert (g2[name] - g1[name]).abs().max().item() <= 1e-5 * scale, name


def test_on_grad_ready_reports_each_final_gradient_once_fc_first(specs_dir, tmp_path):
    """oracle: the gradients backward() returns. The hook sees every parameter once, its gradient
    already final when called, and AlexNet's fc layers before its convolutions (backward order)."""
    net = _mini(specs_dir, tmp_path)
    ex = bind(net, CPU2, params=init_params(net, seed=2))
    x, y = _batch(net, 3)
    seen: list[tuple[str, torch.Tensor]] = []
    ex.on_grad_ready = lambda name: seen.append((name, ex.grads[name].clone()))
    ex.forward(x, y, is_train=True)
    grads = ex.backward()
    names = [n for n, _ in seen]
    assert sorted(names) == sorted(grads) and len(names) == len(set(names))
    for name, g in seen:
        assert torch.equal(g, grads[name]), name
    last_fc = max(i for i, n in enumerate(names) if n.startswith("fc"))
    first_conv = min(i for i, n in enumerate(names) if n.startswith("conv"))
    assert last_fc < first_conv
    assert names.index("conv1_g0_weight") > names.index("conv5_g0_weight")


def test_sample_base_gives_a_shard_the_dropout_masks_of_the_whole_batch(specs_dir, tmp_path):
    """oracle: one executor on the whole batch of 5 with dropout on. A shard of samples [2, 5) with
    sample_base 2 gets the same probabilities row for row (it drops what the whole batch drops);
    without sample_base it does not; the shard gradients weighted by 2/5 and 3/5 sum to the whole's."""
    p = tmp_path / "mini.yaml"
    p.write_text(f"base: {specs_dir / 'variants' / 'mini.yaml'}\n")
    net = compile_spec(p, batch=5)
    params = init_params(net, seed=3)
    x, y = _batch(net, 5)
    whole = bind(net, CPU2, params=params)
    whole.seed, whole.step_count = 7, 4
    prob = whole.forward(x, y, is_train=True)["prob"].clone()
    g_whole = {k: v.clone() for k, v in whole.backward().items()}
    total = {k: torch.zeros_like(v) for k, v in g_whole.items()}
    for lo, hi in ((0, 2), (2, 5)):
        ex = bind(net, CPU2, params=params)
        ex.seed, ex.step_count, ex.sample_base = 7, 4, lo
        torch.testing.assert_close(ex.forward(x[lo:hi], y[lo:hi], is_train=True)["prob"], prob[lo:hi],
                                   rtol=1e-5, atol=1e-6)
        for k, g in ex.backward().items():
            total[k] += g * ((hi - lo) / 5)
    for k, g in g_whole.items():
        torch.testing.assert_close(total[k], g, rtol=1e-4, atol=1e-6)
    ex = bind(net, CPU2, params=params)
    ex.seed, ex.step_count = 7, 4
    assert not torch.allclose(ex.forward(x[2:], y[2:], is_train=True)["prob"], prob[2:], rtol=1e-3, atol=1e-4)
