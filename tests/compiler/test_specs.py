"""Parameter and multiply-add totals of every shipped spec, against arithmetic written out per layer."""
from __future__ import annotations

from pathlib import Path

import pytest

from alexnetc.compiler import compile_spec
from alexnetc.compiler.report import rows

SPECS = Path(__file__).resolve().parents[2] / "specs"

# The paper's net (weights + biases; towers: conv2/4/5 read 48/192/192 maps of their own GPU).
ALEXNET_PARAMS = {
    "conv1": 3 * 11 * 11 * 96 + 96,
    "conv2": 2 * (48 * 5 * 5 * 128 + 128),
    "conv3": 256 * 3 * 3 * 384 + 384,
    "conv4": 2 * (192 * 3 * 3 * 192 + 192),
    "conv5": 2 * (192 * 3 * 3 * 128 + 128),
    "fc6": 256 * 6 * 6 * 4096 + 4096,
    "fc7": 4096 * 4096 + 4096,
    "fc8": 4096 * 1000 + 1000,
}
# Multiply-adds per image: output pixels x filters x (input channels per group x kernel area).
ALEXNET_MACS = {
    "conv1": 55 * 55 * 96 * (3 * 11 * 11),
    "conv2": 27 * 27 * 256 * (48 * 5 * 5),
    "conv3": 13 * 13 * 384 * (256 * 3 * 3),
    "conv4": 13 * 13 * 384 * (192 * 3 * 3),
    "conv5": 13 * 13 * 256 * (192 * 3 * 3),
    "fc6": 9216 * 4096,
    "fc7": 4096 * 4096,
    "fc8": 4096 * 1000,
}
# One GPU, half the kernels in each conv layer (conv5 and the fc layers keep their size).
HALF_PARAMS = {
    "conv1": 3 * 11 * 11 * 48 + 48,
    "conv2": 48 * 5 * 5 * 128 + 128,
    "conv3": 128 * 3 * 3 * 192 + 192,
    "conv4": 192 * 3 * 3 * 192 + 192,
    "conv5": 192 * 3 * 3 * 256 + 256,
    "fc6": 256 * 6 * 6 * 4096 + 4096,
    "fc7": 4096 * 4096 + 4096,
    "fc8": 4096 * 1000 + 1000,
}
HALF_MACS = {
    "conv1": 55 * 55 * 48 * (3 * 11 * 11),
    "conv2": 27 * 27 * 128 * (48 * 5 * 5),
    "conv3": 13 * 13 * 192 * (128 * 3 * 3),
    "conv4": 13 * 13 * 192 * (192 * 3 * 3),
    "conv5": 13 * 13 * 256 * (192 * 3 * 3),
    "fc6": 9216 * 4096,
    "fc7": 4096 * 4096,
    "fc8": 4096 * 1000,
}
# 28x28x1: conv1 5x5 pad 2 -> 28, pool -> 13, conv2 3x3 pad 1 -> 13, pool -> 6, conv3..5 -> 6, pool5 -> 2.
MINI_PARAMS = {
    "conv1": 1 * 5 * 5 * 32 + 32,
    "conv2": 2 * (16 * 3 * 3 * 32 + 32),
    "conv3": 64 * 3 * 3 * 96 + 96,
    "conv4": 2 * (48 * 3 * 3 * 48 + 48),
    "conv5": 2 * (48 * 3 * 3 * 32 + 32),
    "fc6": 64 * 2 * 2 * 256 + 256,
    "fc7": 256 * 256 + 256,
    "fc8": 256 * 10 + 10,
}
MINI_MACS = {
    "conv1": 28 * 28 * 32 * (1 * 5 * 5),
    "conv2": 13 * 13 * 64 * (16 * 3 * 3),
    "conv3": 6 * 6 * 96 * (64 * 3 * 3),
    "conv4": 6 * 6 * 96 * (48 * 3 * 3),
    "conv5": 6 * 6 * 64 * (48 * 3 * 3),
    "fc6": 256 * 256,
    "fc7": 256 * 256,
    "fc8": 256 * 10,
}
# torchvision.models.alexnet: one tower, 64-192-384-256-256 filters, no LRN; the same output sizes.
TORCHVISION_PARAMS = {
    "conv1": 3 * 11 * 11 * 64 + 64,
    "conv2": 64 * 5 * 5 * 192 + 192,
    "conv3": 192 * 3 * 3 * 384 + 384,
    "conv4": 384 * 3 * 3 * 256 + 256,
    "conv5": 256 * 3 * 3 * 256 + 256,
    "fc6": 256 * 6 * 6 * 4096 + 4096,
    "fc7": 4096 * 4096 + 4096,
    "fc8": 4096 * 1000 + 1000,
}
TORCHVISION_MACS = {
    "conv1": 55 * 55 * 64 * (3 * 11 * 11),
    "conv2": 27 * 27 * 192 * (64 * 5 * 5),
    "conv3": 13 * 13 * 384 * (192 * 3 * 3),
    "conv4": 13 * 13 * 256 * (384 * 3 * 3),
    "conv5": 13 * 13 * 256 * (256 * 3 * 3),
    "fc6": 9216 * 4096,
    "fc7": 4096 * 4096,
    "fc8": 4096 * 1000,
}
EXPECTED = {
    "alexnet.yaml": (ALEXNET_PARAMS, ALEXNET_MACS),
    "alexnet-1gpu.yaml": (ALEXNET_PARAMS, ALEXNET_MACS),
    "variants/no-dropout.yaml": (ALEXNET_PARAMS, ALEXNET_MACS),
    "variants/no-lrn.yaml": (ALEXNET_PARAMS, ALEXNET_MACS),
    "variants/tanh.yaml": (ALEXNET_PARAMS, ALEXNET_MACS),
    # 2x2/2 pools give 27, 13 and 6 from 55, 27 and 13, as the 3x3/2 ones do.
    "variants/pool-2x2.yaml": (ALEXNET_PARAMS, ALEXNET_MACS),
    "variants/one-gpu-half.yaml": (HALF_PARAMS, HALF_MACS),
    "variants/mini.yaml": (MINI_PARAMS, MINI_MACS),
    "variants/mini-tanh.yaml": (MINI_PARAMS, MINI_MACS),   # only the activation differs
    "variants/mini-1gpu.yaml": (MINI_PARAMS, MINI_MACS),   # only the placement differs
    "torchvision-alexnet.yaml": (TORCHVISION_PARAMS, TORCHVISION_MACS),
}


def test_every_shipped_spec_is_covered():
    shipped = sorted(str(p.relative_to(SPECS)) for p in SPECS.rglob("*.yaml"))
    assert shipped == sorted(EXPECTED)


def test_alexnet_headline_numbers():
    assert sum(ALEXNET_PARAMS.values()) == 60_965_224
    assert sum(ALEXNET_MACS.values()) == 724_406_816


@pytest.mark.parametrize("spec", sorted(EXPECTED))
def test_totals(spec):
    params, macs = EXPECTED[spec]
    layer_rows, totals = rows(compile_spec(SPECS / spec))
    assert {r.name: r.params for r in layer_rows if r.params} == params
    assert {r.name: r.macs for r in layer_rows if r.macs} == macs
    assert totals["params"] == sum(params.values())
    assert totals["macs_per_image"] == sum(macs.values())


def test_torchvision_alexnet_has_torchvisions_parameter_count():
    assert sum(TORCHVISION_PARAMS.values()) == 61_100_840   # sum(p.numel() for p in alexnet().parameters())


def test_totals_do_not_depend_on_batch():
    _, one = rows(compile_spec(SPECS / "alexnet.yaml", batch=1))
    _, many = rows(compile_spec(SPECS / "alexnet.yaml", batch=128))
    assert (one["params"], one["macs_per_image"]) == (many["params"], many["macs_per_image"])


def test_cross_device_traffic_of_alexnet():
    _, t = rows(compile_spec(SPECS / "alexnet.yaml"))
    assert t["copies"] == ["conv3", "fc6", "fc7", "fc8"]
    # Per image, fp32: 128x13x13 each way into conv3, 128x6x6 each way into fc6, 2048 each way into fc7,
    # 2048 from gpu1 into fc8.
    assert t["cross_device_bytes_per_image"] == 4 * (2 * 128 * 13 * 13 + 2 * 128 * 6 * 6 + 2 * 2048 + 2048)
