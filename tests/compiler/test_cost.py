"""The cost model (compiler/cost): FLOPs and bytes per node from the op descriptors, the device table,
roofline bounds and the per-layer rows, each checked against numbers worked out here by hand from
the shapes."""
from __future__ import annotations

import math

import pytest

from alexnetc.compiler import compile_spec, sym
from alexnetc.compiler.cost import (
    DEVICES,
    Bound,
    UnknownDevice,
    cost_rows,
    device,
    device_for_cuda_name,
    link,
    node_bound,
    predict,
    program_costs,
    step_bound,
    update_costs,
)
from alexnetc.compiler.ops import OPS
from alexnetc.compiler.pipeline import compile_dict
from alexnetc.compiler.report import rows as report_rows

SPEC = {
    "input": {"channels": 3, "height": 16, "width": 16}, "classes": 10,
    "layers": [
        {"name": "conv1", "op": "conv", "filters": 8, "kernel": 3, "pad": 1, "act": "relu"},
        {"name": "norm1", "op": "lrn", "size": 5, "k": 2, "alpha": 1.0e-4, "beta": 0.75, "alpha_over_n": False},
        {"name": "pool1", "op": "maxpool", "kernel": 2, "stride": 2},
        {"name": "fc", "op": "fc", "units": 10},
        {"name": "loss", "op": "softmax_loss"},
    ],
}
N = 4


def _net(dtype: str = "float32"):
    spec = dict(SPEC, train={"dtype": dtype})
    return compile_dict(spec, "<test>", batch=N)


def _by_name(costs):
    return {c.node.name: c for c in costs}


def test_flops_and_bytes_of_each_node_by_hand():
    net = _net()
    c = _by_name(program_costs(net.training(), "float32"))
    conv_out = N * 8 * 16 * 16
    # conv: 2 per multiply-add (3 input channels x 3x3 taps per output), + bias, + relu (1 each)
    assert c["conv1"].flops == 2 * conv_out * 3 * 9 + conv_out + conv_out
    assert c["conv1"].read == 4 * (N * 3 * 16 * 16 + 8 * 3 * 3 * 3 + 8)
    assert c["conv1"].written == 4 * conv_out
    assert c["conv1"].precision == "tf32" and c["conv1"].phase == "forward"
    # LRN: 2n + 6 per element forward; n + 9 backward; reads x, writes y and the saved scale
    assert c["norm1"].flops == conv_out * (2 * 5 + 6)
    assert c["norm1"].written == 2 * 4 * conv_out
    assert c["norm1_bwd"].flops == conv_out * (5 + 9)
    assert c["norm1_bwd"].read == 4 * 4 * conv_out and c["norm1_bwd"].phase == "backward"
    # max pool 2x2: 4 compares per output; its int8 argmax is one byte a value
    pooled = N * 8 * 8 * 8
    assert c["pool1"].flops == 4 * pooled
    assert c["pool1"].written == 4 * pooled + 1 * pooled
    # fc: 512 features in, 10 out
    assert c["fc"].flops == 2 * N * 512 * 10 + N * 10
    assert c["fc"].precision == "fp32"   # cuBLAS keeps IEEE fp32 by default
    assert c["fc_bwd_weight"].flops == 2 * N * 512 * 10
    assert c["fc_flatten"].read == c["fc_flatten"].written == 0   # a view moves nothing
    # the loss reads the scores (fp32) and the int64 labels
    assert c["loss"].read == 4 * N * 10 + 8 * N


def test_kept_for_backward_is_what_backward_nodes_read():
    """conv1's output is read by LRN's backward (x) and by relu's gradient (y); LRN's y and scale by its
    backward; the pool's argmax (int8) by its backward but not its output; the loss's probabilities."""
    net = _net()
    c = _by_name(program_costs(net.training(), "float32"))
    conv_out = N * 8 * 16 * 16
    assert c["conv1"].kept == 4 * conv_out
    assert c["norm1"].kept == 2 * 4 * conv_out
    assert c["pool1"].kept == N * 8 * 8 * 8          # argmax only
    assert c["loss"].kept == 4 * N * 10               # the probabilities
    assert all(x.kept == 0 for x in c.values() if x.phase == "backward")


def test_bfloat16_halves_the_values_and_keeps_fp32_weight_gradients_of_fc():
    c32 = _by_name(program_costs(_net().training(), "float32"))
    c16 = _by_name(program_costs(_net("bfloat16").with_dtype("bfloat16").training(), "bfloat16"))
    assert c16["norm1"].written * 2 == c32["norm1"].written
    assert c16["conv1"].precision == "bf16"
    assert c16["fc_bwd_weight"].precision == "fp32"   # both operands upcast to fp32 (kernels/fc.py)
    assert c16["loss"].written == c32["loss"].written  # loss and probabilities stay fp32


def test_forward_gemm_flops_are_twice_the_reports_multiply_adds():
    """The report's multiply-adds (conv and fc weights, the paper's 724 M for AlexNet) and the cost
    model's FLOPs are one count: forward conv/fc FLOPs = 2 x macs + one add per output (bias) + the
    fused activation's count."""
    net = compile_spec("specs/alexnet.yaml")
    macs = report_rows(net)[1]["macs_per_image"]
    assert macs == 724_406_816
    costs = program_costs(net.training(), "float32")
    epilogue = 0
    gemm = 0
    for c in costs:
        if c.phase == "forward" and c.node.op in ("conv", "fc"):
            out = math.prod(c.node.shapes[0])
            act = OPS[c.node.attrs["act"]].flops_per_element if c.node.attrs["act"] != "none" else 0
            epilogue += out * (1 + act)
            gemm += c.flops
    assert gemm == 2 * macs + epilogue


def test_every_node_of_every_shipped_spec_has_a_cost():
    import glob

    for path in sorted(glob.glob("specs/*.yaml")):
        net = compile_spec(path)
        for c in program_costs(net.training(), net.dtype):
            assert isinstance(c.flops, int) and c.flops >= 0, (path, c.node.name)
            assert c.read >= 0 and c.written >= 0
            if c.node.op in ("conv", "fc", "conv_backward_data", "conv_backward_weight", "fc_backward_data",
                             "fc_backward_weight", "lrn", "lrn_backward", "batchnorm", "batchnorm_backward"):
                assert c.flops > 0, (path, c.node.name)


def test_copies_carry_their_bytes_across_the_link():
    net = compile_spec("specs/alexnet.yaml", batch=2)
    costs = program_costs(net.training(), "float32")
    copies = [c for c in costs if c.node.op == "copy"]
    assert copies and all(c.link == c.written > 0 and c.flops == 0 for c in copies)
    forward_link = sum(c.link for c in copies if c.phase == "forward")
    # the report's cross-device bytes per image, at batch 2
    assert forward_link == 2 * report_rows(net.at_batch(1))[1]["cross_device_bytes_per_image"]


def test_update_cost_reads_three_and_writes_two_master_copies():
    net = _net()
    (u,) = update_costs(net.training(), "float32")
    params = sum(math.prod(p.shapes[0]) for p in net.training().graph.params())
    assert u.params == params and u.read == 3 * 4 * params and u.written == 2 * 4 * params and u.flops == 6 * params


def test_device_table_lookups():
    assert device("H100").name == "h100" and device("h100-sxm").name == "h100"
    assert device("a100-40gb").bandwidth == 1.555e12
    assert device("h200").memory == 141 * 10**9
    with pytest.raises(UnknownDevice, match="did you mean 'h100'"):
        device("h10")
    with pytest.raises(UnknownDevice, match="unknown link"):
        link("infiniband")
    assert device("v100").peak("tf32") == device("v100").peak("fp32")   # no TF32 units: CUDA cores
    with pytest.raises(UnknownDevice, match="no bf16 units"):
        device("gtx580").peak("bf16")
    assert device_for_cuda_name("NVIDIA H100 80GB HBM3").name == "h100"
    assert device_for_cuda_name("NVIDIA H100 PCIe").name == "h100-pcie"
    assert device_for_cuda_name("NVIDIA A100-SXM4-40GB").name == "a100-40gb"
    assert device_for_cuda_name("Some Other GPU") is None
    for d in DEVICES.values():   # every figure has its source and the required columns
        assert d.source and d.peaks["fp32"] > 0 and d.bandwidth > 0 and d.memory > 0
    for name in ("h100", "h100-pcie", "h200", "a100", "a100-40gb", "l40s", "rtx4090"):
        assert {"fp32", "tf32", "bf16", "fp16"} <= set(DEVICES[name].peaks)


def test_node_bound_is_the_larger_of_compute_and_memory():
    net = _net()
    c = _by_name(program_costs(net.training(), "float32"))
    h100, nv = device("h100"), link("nvlink4")
    b = node_bound(c["norm1"], h100, nv)
    assert b.memory == pytest.approx(c["norm1"].bytes / 3.35e12)
    assert b.compute == pytest.approx(c["norm1"].flops / 67e12)
    assert b.seconds == max(b.compute, b.memory) and b.limit == "memory"
    conv = node_bound(c["conv1"], h100, nv)
    assert conv.compute == pytest.approx(c["conv1"].flops / 494.5e12)


def test_step_bound_of_a_chain_is_its_sum():
    """One device, a chain of nodes: the busiest device and the longest chain are the same number."""
    net = _net()
    program = net.training()
    costs, ups = program_costs(program, "float32"), update_costs(program, "float32")
    h100, nv = device("h100"), link("nvlink4")
    sb = step_bound(program, costs, ups, h100, nv)
    total = sum(node_bound(c, h100, nv).seconds for c in costs) + node_bound(ups[0], h100, nv).seconds
    assert sb.per_device == {"gpu0": pytest.approx(total)}
    assert sb.critical_path <= total + 1e-15
    assert sb.seconds == pytest.approx(total)


def test_two_towers_bound_is_at_least_each_device_and_the_chain():
    net = compile_spec("specs/variants/mini.yaml", batch=32)
    p = predict(net, device("gtx580"), link("pcie2"))
    assert set(p.step.per_device) == {"gpu0", "gpu1"}
    assert p.step.seconds >= max(p.step.per_device.values()) and p.step.seconds >= p.step.critical_path
    assert p.step.link > 0
    # the rows hold every node once
    costs = program_costs(net.training(), "float32")
    assert sum(len(n) for r in p.rows for n in r.row.nodes.values()) == len(costs)
    assert sum(r.row.flops["forward"] + r.row.flops["backward"] for r in p.rows if r.row.kind != "update") == \
        sum(c.flops for c in costs)


def test_prediction_memory_is_the_compile_reports_plan():
    net = compile_spec("specs/alexnet.yaml", batch=128)
    p = predict(net, device("gtx580"), link("pcie2"))
    plan = report_rows(net)[1]["memory_plan"]
    assert p.memory == {d: m["peak_activation_bytes"] + m["param_bytes"] for d, m in plan.items()}


def test_prediction_refuses_float64():
    with pytest.raises(ValueError, match="CPU reference kernels only"):
        predict(_net(), device("h100"), link("nvlink4"), "float64")


def test_rows_fold_block_instances_unless_expanded():
    net = compile_spec("specs/variants/resnet-mini.yaml", batch=2)
    costs = program_costs(net.training(), "float32")
    ops = {i.name: i.op for i in net.layers}
    folded = cost_rows(costs, ops)
    labels = [r.label for r in folded]
    assert "layer1" in labels and not any("." in l for l in labels)
    assert [r.op for r in folded if r.label == "layer1"] == ["block"]
    expanded = cost_rows(costs, ops, expand={"layer1"})
    assert any(r.label.startswith("layer1.") for r in expanded) and "layer2" in [r.label for r in expanded]
    every = cost_rows(costs, ops, expand=True)
    assert not any(r.kind == "block" for r in every)
    for rows in (folded, expanded, every):   # regrouping loses no FLOPs
        assert sum(r.flops["forward"] + r.flops["backward"] for r in rows) == sum(c.flops for c in costs)


def test_bound_addition_and_limits():
    assert (Bound(1, 2, 0) + Bound(3, 0, 1)) == Bound(4, 2, 1)
    assert Bound().limit == "-" and Bound(link=1).limit == "link"


def test_symbol_graphs_have_costs_too():
    """A hand-composed graph (no spec) is costed the same way."""
    from alexnetc.compiler.passes import gradient, infer_shapes
    from alexnetc.compiler.passes.memory_plan import plan_memory

    data = sym.var("data")
    x = sym.conv(data, filters=4, kernel=3, act="relu", name="c")
    net = sym.softmax_loss(sym.fc(sym.flatten(x), units=3, name="f"), sym.var("label"), name="loss")
    g = infer_shapes(net.graph(), data=(2, 1, 5, 5), label=(2,))
    program = gradient(g)
    program = type(program)(program.graph, program.forward_outputs, program.grad_of, plan_memory(program.graph))
    costs = _by_name(program_costs(program, "float32"))
    assert costs["c"].flops == 2 * (2 * 4 * 3 * 3) * 9 + 2 * (2 * 4 * 3 * 3)
