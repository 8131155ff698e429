"""Lowering: device groups become nodes, cross-device copies exactly where Figure 2 crosses GPUs."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from alexnetc.compiler import compile_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"


def copies(spec):
    g = compile_spec(SPECS / spec).graph
    return [n for n in g.nodes() if n.op == "copy"]


def test_alexnet_copies_exactly_into_conv3_fc6_fc7_fc8():
    found = Counter((n.layer, n.attrs["src"], n.device) for n in copies("alexnet.yaml"))
    assert found == Counter({
        ("conv3", "gpu0", "gpu1"): 1, ("conv3", "gpu1", "gpu0"): 1,
        ("fc6", "gpu0", "gpu1"): 1, ("fc6", "gpu1", "gpu0"): 1,
        ("fc7", "gpu0", "gpu1"): 1, ("fc7", "gpu1", "gpu0"): 1,
        ("fc8", "gpu1", "gpu0"): 1,  # fc8 runs on gpu0 only: one copy, from gpu1
    })


def test_copy_sources_are_the_other_towers_outputs():
    by_name = {n.name: (n.inputs[0].node.name, n.inputs[0].node.device) for n in copies("alexnet.yaml")}
    assert by_name == {
        "pool2_g0_to_gpu1": ("pool2_g0", "gpu0"), "pool2_g1_to_gpu0": ("pool2_g1", "gpu1"),
        "fc6_flatten_g0_to_gpu1": ("fc6_flatten_g0", "gpu0"), "fc6_flatten_g1_to_gpu0": ("fc6_flatten_g1", "gpu1"),
        "drop6_g0_to_gpu1": ("drop6_g0", "gpu0"), "drop6_g1_to_gpu0": ("drop6_g1", "gpu1"),
        "drop7_g1_to_gpu0": ("drop7_g1", "gpu1"),
    }


@pytest.mark.parametrize("spec", ["alexnet-1gpu.yaml", "variants/one-gpu-half.yaml"])
def test_one_gpu_specs_have_no_copies(spec):
    assert copies(spec) == []
    assert {n.device for n in compile_spec(SPECS / spec).graph.nodes() if not n.is_variable} == {"gpu0"}


def test_two_towers_one_node_per_group():
    g = compile_spec(SPECS / "alexnet.yaml").graph
    convs = {n.name: (n.device, n.attrs["filters"], n.attrs["num_group"], n.shapes[0][1:])
             for n in g.nodes() if n.op == "conv"}
    assert convs == {
        "conv1_g0": ("gpu0", 48, 1, (48, 55, 55)), "conv1_g1": ("gpu1", 48, 1, (48, 55, 55)),
        "conv2_g0": ("gpu0", 128, 1, (128, 27, 27)), "conv2_g1": ("gpu1", 128, 1, (128, 27, 27)),
        "conv3_g0": ("gpu0", 192, 1, (192, 13, 13)), "conv3_g1": ("gpu1", 192, 1, (192, 13, 13)),
        "conv4_g0": ("gpu0", 192, 1, (192, 13, 13)), "conv4_g1": ("gpu1", 192, 1, (192, 13, 13)),
        "conv5_g0": ("gpu0", 128, 1, (128, 13, 13)), "conv5_g1": ("gpu1", 128, 1, (128, 13, 13)),
    }
    # conv2 (connect: own) reads its own tower's 48 pooled maps: weights 128 x 48 x 5 x 5.
    w = {n.name: n.shapes[0] for n in g.nodes() if n.is_variable}
    assert w["conv2_g0_weight"] == (128, 48, 5, 5) and w["conv3_g1_weight"] == (192, 256, 3, 3)
    assert w["fc6_g0_weight"] == (2048, 9216) and w["fc8_weight"] == (1000, 4096)


def test_groups_on_one_device_become_one_grouped_conv():
    g = compile_spec(SPECS / "alexnet-1gpu.yaml").graph
    convs = {n.name: (n.attrs["filters"], n.attrs["num_group"]) for n in g.nodes() if n.op == "conv"}
    # connect: own -> a grouped conv (Caffe's group: 2); connect: all -> one ordinary conv.
    assert convs == {"conv1": (96, 1), "conv2": (256, 2), "conv3": (384, 1), "conv4": (384, 2), "conv5": (256, 2)}
    w = {n.name: n.shapes[0] for n in g.nodes() if n.is_variable}
    assert w["conv2_weight"] == (256, 48, 5, 5) and w["conv4_weight"] == (384, 192, 3, 3)
    # LRN keeps normalising within each tower's maps.
    assert {n.name: n.attrs["num_group"] for n in g.nodes() if n.op == "lrn"} == {"norm1": 2, "norm2": 2}


def test_one_gpu_half_has_no_groups():
    g = compile_spec(SPECS / "variants" / "one-gpu-half.yaml").graph
    assert {n.attrs["num_group"] for n in g.nodes() if n.op == "conv"} == {1}
    assert {n.attrs["num_group"] for n in g.nodes() if n.op == "lrn"} == {1}


def test_layer_infos_and_marks():
    net = compile_spec(SPECS / "alexnet.yaml")
    info = {i.name: i for i in net.layers}
    assert info["pool5"].shape == (256, 6, 6)
    assert info["conv1"].mark.line == 22 and info["loss"].mark.line == 44
    assert [(n, d) for n, d, _ in info["fc8"].outputs] == [("fc8", "gpu0")]
    assert {n.mark.line for n in net.graph.nodes() if n.layer == "conv3"} == {30}
