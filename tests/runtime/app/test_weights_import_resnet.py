"""`alexnetc import torchvision-resnet18 / -resnet50`: torchvision's ResNets written here in plain
torch.nn, module for module (torchvision is not a dependency), so their state-dict keys, random weights
and random batch-norm running statistics saved under those keys, imported into specs/resnet18.yaml and
resnet50.yaml, and the run's evaluation outputs compared with the torch forward in float64."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnetc.compiler.ops import get_op
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.model import load_model
from alexnetc.runtime.app.weights_import import torchvision_resnet_prefixes


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, width, 3, stride)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.downsample = (nn.Sequential(*_conv_bn(cin, width, 1, stride))
                           if stride != 1 or cin != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride on the 3x3 convolution."""
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        out = width * 4
        self.conv1, self.bn1 = _conv_bn(cin, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, out, 1)
        self.downsample = nn.Sequential(*_conv_bn(cin, out, 1, stride)) if stride != 1 or cin != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet(nn.Module):
    def __init__(self, block: type, counts: tuple[int, ...], classes: int = 1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (n, width) in enumerate(zip(counts, (64, 128, 256, 512))):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


NETS = {"resnet18": (BasicBlock, (2, 2, 2, 2), 11_689_512), "resnet50": (Bottleneck, (3, 4, 6, 3), 25_557_032)}


def _random_net(name: str) -> nn.Module:
    block, counts, n_params = NETS[name]
    torch.manual_seed(0)
    net = TorchvisionResNet(block, counts)
    assert sum(p.numel() for p in net.parameters()) == n_params
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics and affine terms far from 0/1, so a swapped or dropped one shows
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.num_batches_tracked.fill_(1234)
    return net.eval()


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    loss = next(e.node for e in model.net.graph.outputs if get_op(e.node.op).role == "loss")
    scores = loss.inputs[0].node.name
    return model.executor.forward(x, keep=(scores,))[scores]


@pytest.mark.parametrize("name,fmt", [("resnet18", "safetensors"), ("resnet50", "pth")])
def test_imported_resnet_gives_torchvisions_outputs(name, fmt, tmp_path, capsys):
    """oracle: the plain-torch ResNet in float64 (eval mode: running statistics). Ours in float32:
    logits within 1e-5 normwise relative."""
    net = _random_net(name)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    weights = tmp_path / f"{name}.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(weights))
    else:
        torch.save(sd, weights)
    run = tmp_path / "run"
    assert main(["import", f"torchvision-{name}", str(weights), "-o", str(run)]) == 0
    assert "imported" in capsys.readouterr().out
    model = load_model(str(run), "cpu", batch=2)
    assert sum(t.numel() for t in model.executor.params.values()) == NETS[name][2]
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = net.double()(x.double())
    ours = _logits(model, x).double()
    assert ref.std() > 1e-3, "degenerate test: logits hardly depend on the input"
    err = float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref))
    assert err <= 1e-5, f"normwise relative error {err:.2e}"
    feats = model.features(x)   # neighbors' default: the globally pooled 512/2048 features fc reads
    assert feats.shape == (2, net.fc.in_features)
    if name == "resnet18":  # a photo of another size goes through the spec's data section (256, crop 224)
        import numpy as np
        from PIL import Image

        photo = tmp_path / "photo.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
        capsys.readouterr()
        assert main(["predict", str(run), str(photo), "--device", "cpu"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 6


def test_resnet_key_names():
    """Spot checks of the layer -> torchvision prefix rule against torchvision's documented keys; both
    networks' full key sets are checked by the import test above (every key used, none missing)."""
    r18 = torchvision_resnet_prefixes(["conv1", "bn1", "pool1", "layer1.1.conv1", "layer1.2.bn2", "layer2_down.proj",
                                       "layer2.conv1", "pool5", "fc"])
    assert r18 == {"conv1": "conv1", "bn1": "bn1", "fc": "fc", "layer1.1.conv1": "layer1.0.conv1",
                   "layer1.2.bn2": "layer1.1.bn2", "layer2_down.proj": "layer2.0.downsample.0",
                   "layer2.conv1": "layer2.1.conv1"}
    r50 = torchvision_resnet_prefixes(["layer1_proj.conv3", "layer1_proj.proj_bn", "layer1.1.conv1", "layer3_proj.conv1",
                                      "layer3.5.bn3"])
    assert r50 == {"layer1_proj.conv3": "layer1.0.conv3", "layer1_proj.proj_bn": "layer1.0.downsample.1",
                   "layer1.1.conv1": "layer1.1.conv1", "layer3_proj.conv1": "layer3.0.conv1",
                   "layer3.5.bn3": "layer3.5.bn3"}


def test_a_resnet_state_dict_with_a_missing_statistic_or_an_alexnet_is_refused(tmp_path, capsys):
    sd = _random_net("resnet18").state_dict()
    del sd["layer3.1.bn2.running_var"]
    torch.save(sd, tmp_path / "short.pth")
    assert main(["import", "torchvision-resnet18", str(tmp_path / "short.pth"), "-o", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "missing layer3.1.bn2.running_var" in err and len(err.strip().splitlines()) == 1, err
    sd = _random_net("resnet18").state_dict()
    sd["layer1.0.bn1.running_mean"] = torch.zeros(65)
    torch.save(sd, tmp_path / "wide.pth")
    assert main(["import", "torchvision-resnet18", str(tmp_path / "wide.pth"), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "layer1.0.bn1.running_mean has shape (65,)" in err and "needs (64,)" in err, err
    torch.save(_random_net("resnet18").state_dict(), tmp_path / "r18.pth")
    assert main(["import", "torchvision-resnet50", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "c")]) == 2
    assert "has shape" in capsys.readouterr().err
    assert not any((tmp_path / d / "checkpoints").exists() for d in "abc")


def test_import_into_a_variant_with_another_data_section(tmp_path, capsys):
    """--spec: ResNet-50's V2 weights are evaluated at resize 232; a variant saying so is the same
    network, so the import takes it and the run reads images that way; a variant whose layers differ
    is refused in one line, before anything is written."""
    from alexnetc.runtime.training import checkpoint as ckpt

    torch.save(_random_net("resnet18").state_dict(), tmp_path / "r18.pth")
    v2 = tmp_path / "resnet18-232.yaml"
    v2.write_text("base: resnet18\nname: resnet18-232\ndevices: [gpu1]\ndata: {resize: 232}\n")
    run = tmp_path / "run"
    assert main(["import", "torchvision-resnet18", str(tmp_path / "r18.pth"), "-o", str(run), "--spec", str(v2)]) == 0
    state = ckpt.load_checkpoint(str(run / "checkpoints"))[1]
    assert state["data_config"]["resize"] == 232 and state["data_config"]["crop"] == 224
    assert state["spec_name"] == "resnet18-232"
    capsys.readouterr()
    wide = tmp_path / "resnet18-wide.yaml"
    wide.write_text("base: resnet18\nmodify_layers: {fc: {units: 10}}\nclasses: 10\n")
    assert main(["import", "torchvision-resnet18", str(tmp_path / "r18.pth"), "-o", str(tmp_path / "w"),
                 "--spec", str(wide)]) == 2
    err = capsys.readouterr().err
    assert "not the network of specs/resnet18.yaml" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_weights_holding_nan_or_infinity_are_refused(tmp_path, capsys):
    """An import of a state dict holding NaN exited 0, and predict then printed "nan%" (issue 25, item 4)."""
    sd = _random_net("resnet18").state_dict()
    sd["layer2.0.conv1.weight"].view(-1)[:5] = float("nan")
    sd["fc.bias"][0] = float("inf")
    torch.save(sd, tmp_path / "nan.pth")
    assert main(["import", "torchvision-resnet18", str(tmp_path / "nan.pth"), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"alexnetc: error: {tmp_path}/nan.pth: layer2.0.conv1.weight holds 5 non-finite values (NaN or " \
                  "infinity) of 73,728; refusing to import them\n", err
    assert not (tmp_path / "run" / "checkpoints").exists()
