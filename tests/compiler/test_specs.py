"""Parameter and multiply-add totals of every shipped spec, against arithmetic written out per layer."""
from __future__ import annotations

import math
import subprocess
import sys
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


def conv(name, cin, cout, k, hw, d_params, d_macs):
    """A k x k convolution cin -> cout with bias, its output hw x hw."""
    d_params[name] = cin * k * k * cout + cout
    d_macs[name] = hw * hw * cout * cin * k * k


def fc(name, cin, cout, d_params, d_macs):
    d_params[name] = cin * cout + cout
    d_macs[name] = cin * cout


def inception(name, cin, hw, c1, c3r, c3, c5r, c5, cp, p, m):
    """Szegedy et al. Figure 2(b); returns the output channels."""
    conv(f"{name}.b1", cin, c1, 1, hw, p, m)
    conv(f"{name}.b2r", cin, c3r, 1, hw, p, m)
    conv(f"{name}.b2", c3r, c3, 3, hw, p, m)
    conv(f"{name}.b3r", cin, c5r, 1, hw, p, m)
    conv(f"{name}.b3", c5r, c5, 5, hw, p, m)
    conv(f"{name}.b4", cin, cp, 1, hw, p, m)
    return c1 + c3 + c5 + cp


def vgg16():
    p, m = {}, {}
    cin = 3
    for stage, (filters, n, hw) in enumerate([(64, 2, 224), (128, 2, 112), (256, 3, 56), (512, 3, 28), (512, 3, 14)], 1):
        for k in range(1, n + 1):
            conv(f"stage{stage}.conv{k}", cin, filters, 3, hw, p, m)
            cin = filters
    fc("fc6", 512 * 7 * 7, 4096, p, m)
    fc("fc7", 4096, 4096, p, m)
    fc("fc8", 4096, 1000, p, m)
    return p, m


def nin():
    p, m = {}, {}
    cin = 3
    for i, (filters, k, hw, out) in enumerate([(96, 11, 54, 96), (256, 5, 27, 256), (384, 3, 13, 384),
                                               (1024, 3, 6, 1000)], 1):
        conv(f"mlpconv{i}.conv", cin, filters, k, hw, p, m)
        conv(f"mlpconv{i}.cccp1", filters, filters, 1, hw, p, m)
        conv(f"mlpconv{i}.cccp2", filters, out, 1, hw, p, m)
        cin = out
    return p, m


# Table 1 of Szegedy et al.: (name, map size, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)
GOOGLENET_TABLE = [("inception_3a", 28, 64, 96, 128, 16, 32, 32), ("inception_3b", 28, 128, 128, 192, 32, 96, 64),
                   ("inception_4a", 14, 192, 96, 208, 16, 48, 64), ("inception_4b", 14, 160, 112, 224, 24, 64, 64),
                   ("inception_4c", 14, 128, 128, 256, 24, 64, 64), ("inception_4d", 14, 112, 144, 288, 32, 64, 64),
                   ("inception_4e", 14, 256, 160, 320, 32, 128, 128), ("inception_5a", 7, 256, 160, 320, 32, 128, 128),
                   ("inception_5b", 7, 384, 192, 384, 48, 128, 128)]


def googlenet(aux: bool = True):
    p, m = {}, {}
    conv("conv1", 3, 64, 7, 112, p, m)
    conv("conv2_reduce", 64, 64, 1, 56, p, m)
    conv("conv2", 64, 192, 3, 56, p, m)
    cin = 192
    for name, hw, *cs in GOOGLENET_TABLE:
        out = inception(name, cin, hw, *cs, p, m)
        if aux and name in ("inception_4a", "inception_4d"):
            head = "aux1" if name == "inception_4a" else "aux2"
            conv(f"{head}.conv", out, 128, 1, 4, p, m)                 # after avg-pool 5x5/3: 4x4
            fc(f"{head}.fc1", 128 * 4 * 4, 1024, p, m)
            fc(f"{head}.fc2", 1024, 1000, p, m)
        cin = out
    fc("fc", 1024, 1000, p, m)
    return p, m


def vgg_mini():
    p, m = {}, {}
    conv("stage1.conv1", 1, 16, 3, 28, p, m)
    conv("stage1.conv2", 16, 16, 3, 28, p, m)
    conv("stage2.conv1", 16, 32, 3, 14, p, m)
    conv("stage2.conv2", 32, 32, 3, 14, p, m)
    fc("fc1", 32 * 7 * 7, 128, p, m)
    fc("fc2", 128, 10, p, m)
    return p, m


def nin_mini():
    p, m = {}, {}
    cin = 1
    for i, (filters, k, hw, out) in enumerate([(32, 5, 28, 32), (64, 3, 14, 64), (96, 3, 7, 10)], 1):
        conv_bn(f"mlpconv{i}.conv", f"mlpconv{i}.bn", cin, filters, k, hw, p, m)
        conv_bn(f"mlpconv{i}.cccp1", f"mlpconv{i}.bn1", filters, filters, 1, hw, p, m)
        conv(f"mlpconv{i}.cccp2", filters, out, 1, hw, p, m)
        cin = out
    return p, m


def googlenet_mini():
    p, m = {}, {}
    conv("conv1", 1, 32, 3, 28, p, m)
    cin = inception("inception_a", 32, 14, 16, 16, 32, 8, 8, 8, p, m)
    cin = inception("inception_b", cin, 14, 32, 32, 48, 8, 16, 16, p, m)
    conv("aux.conv", cin, 32, 1, 6, p, m)
    fc("aux.fc1", 32 * 6 * 6, 64, p, m)
    fc("aux.fc2", 64, 10, p, m)
    cin = inception("inception_c", cin, 7, 48, 32, 64, 8, 16, 16, p, m)
    cin = inception("inception_d", cin, 7, 64, 48, 80, 16, 24, 24, p, m)
    fc("fc", cin, 10, p, m)
    return p, m


def conv_bn(name, bn, cin, cout, k, hw, d_params, d_macs):
    """He et al. 2016: a k x k convolution without bias (output hw x hw) and its batch norm (scale and
    shift per channel; the running statistics are state, not parameters)."""
    d_params[name] = cin * k * k * cout
    d_macs[name] = hw * hw * cout * cin * k * k
    d_params[bn] = 2 * cout


def basic_blocks(stages, cin, hw, p, m):
    """ResNet basic blocks: stages of (filters, instance names, first one halves the map)."""
    for width, names, down in stages:
        for i, n in enumerate(names):
            if down and i == 0:
                hw //= 2
                conv_bn(f"{n}.proj", f"{n}.proj_bn", cin, width, 1, hw, p, m)
            conv_bn(f"{n}.conv1", f"{n}.bn1", cin, width, 3, hw, p, m)
            conv_bn(f"{n}.conv2", f"{n}.bn2", width, width, 3, hw, p, m)
            cin = width
    return cin


def resnet18():
    p, m = {}, {}
    conv_bn("conv1", "bn1", 3, 64, 7, 112, p, m)
    cin = basic_blocks([(64, ["layer1.1", "layer1.2"], False), (128, ["layer2_down", "layer2"], True),
                        (256, ["layer3_down", "layer3"], True), (512, ["layer4_down", "layer4"], True)], 64, 56, p, m)
    fc("fc", cin, 1000, p, m)
    return p, m


def resnet50():
    p, m = {}, {}
    conv_bn("conv1", "bn1", 3, 64, 7, 112, p, m)
    cin, hw = 64, 56
    for s, (width, out, n) in enumerate([(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)], 1):
        for j, name in enumerate([f"layer{s}_proj"] + [f"layer{s}.{i}" for i in range(1, n)]):
            conv_bn(f"{name}.conv1", f"{name}.bn1", cin, width, 1, hw, p, m)   # before the stride
            if j == 0 and s > 1:
                hw //= 2                                                    # the 3x3 strides (v1.5)
            conv_bn(f"{name}.conv2", f"{name}.bn2", width, width, 3, hw, p, m)
            conv_bn(f"{name}.conv3", f"{name}.bn3", width, out, 1, hw, p, m)
            if j == 0:
                conv_bn(f"{name}.proj", f"{name}.proj_bn", cin, out, 1, hw, p, m)
            cin = out
    fc("fc", cin, 1000, p, m)
    return p, m


def resnet_mini():
    p, m = {}, {}
    conv_bn("conv1", "bn1", 1, 16, 3, 28, p, m)
    cin = basic_blocks([(16, ["layer1"], False), (32, ["layer2"], True), (64, ["layer3"], True)], 16, 28, p, m)
    fc("fc", cin, 10, p, m)
    return p, m


EXPECTED = {
    "vgg16.yaml": vgg16(),
    "nin.yaml": nin(),
    "googlenet.yaml": googlenet(),
    "resnet18.yaml": resnet18(),
    "resnet50.yaml": resnet50(),
    "variants/resnet-mini.yaml": resnet_mini(),
    "variants/vgg-mini.yaml": vgg_mini(),
    "variants/nin-mini.yaml": nin_mini(),
    "variants/googlenet-mini.yaml": googlenet_mini(),
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
def test_headline_numbers_of_the_block_specs():
    """The published totals: VGG-16 138,357,544; GoogLeNet 6,998,552 without its auxiliary heads (the
    inference graph drops them); NiN's ImageNet model 7.6 M (the Caffe model zoo's 7,595,176)."""
    assert sum(vgg16()[0].values()) == 138_357_544
    assert sum(googlenet(aux=False)[0].values()) == 6_998_552
    assert sum(nin()[0].values()) == 7_595_176
    net = compile_spec(SPECS / "googlenet.yaml")
    inference_params = sum(math.prod(n.shapes[0]) for n in net.inference().graph.nodes() if n.is_param)
    assert inference_params == 6_998_552
    assert not any(n.layer and n.layer.startswith("aux") for n in net.inference().graph.nodes())


def _resnet_params(blocks: list[int], bottleneck: bool) -> int:
    """He et al. 2016, Table 1, counted independently of the spec: convolutions without bias, batch
    norm's scale and shift after each, 1x1 projections (with batch norm) where a stage's first block
    changes the shape, global pooling, fc 1000 with bias."""
    def conv(cin, cout, k):
        return cin * cout * k * k + 2 * cout          # the convolution and its batch norm

    total, cin = conv(3, 64, 7), 64
    for stage, n in enumerate(blocks):
        width = 64 * 2 ** stage
        cout = 4 * width if bottleneck else width
        for b in range(n):
            if bottleneck:
                total += conv(cin, width, 1) + conv(width, width, 3) + conv(width, cout, 1)
            else:
                total += conv(cin, width, 3) + conv(width, width, 3)
            if b == 0 and (cin != cout or stage > 0):
                total += conv(cin, cout, 1)
            cin = cout
    return total + cin * 1000 + 1000


@pytest.mark.parametrize("spec, blocks, bottleneck, published", [
    ("resnet18.yaml", [2, 2, 2, 2], False, 11_689_512),     # torchvision resnet18: sum(p.numel())
    ("resnet50.yaml", [3, 4, 6, 3], True, 25_557_032),      # torchvision resnet50
])
def test_resnets_have_the_published_parameter_counts(spec, blocks, bottleneck, published):
    assert _resnet_params(blocks, bottleneck) == published
    assert sum((resnet18 if spec == "resnet18.yaml" else resnet50)()[0].values()) == published
    net = compile_spec(SPECS / spec)
    _, totals = rows(net)
    assert totals["params"] == published
    # batch norm's running statistics are state, not parameters: one mean and one variance per scale
    bn = [n for n in net.graph.nodes() if n.op == "batchnorm"]
    state = [n for n in net.graph.variables() if n.role == "state"]
    projections = len(blocks) if bottleneck else len(blocks) - 1   # ResNet-18's first stage keeps 64 channels
    assert len(state) == 2 * len(bn) == 2 * (1 + sum(blocks) * (3 if bottleneck else 2) + projections)
    # every block's residual add is folded into the batch norm before it (compiler/passes/fusion.py)
    assert not [n for n in net.graph.nodes() if n.op == "add"]
    assert len([n for n in bn if n.attrs.get("residual")]) == sum(blocks)


@pytest.mark.parametrize("spec", ["vgg16.yaml", "nin.yaml", "googlenet.yaml", "resnet18.yaml", "resnet50.yaml"])
def test_block_specs_compile_in_under_a_second(spec, tmp_path):
    # a fresh process, so nothing is cached; CPU time, so that a busy machine does not fail it
    code = ("import time, sys; from alexnetc.compiler import compile_spec; t = time.process_time(); "
            f"compile_spec({str(SPECS / spec)!r}); print(time.process_time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1.0


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
