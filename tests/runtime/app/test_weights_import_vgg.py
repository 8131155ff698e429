"""`alexnetc import torchvision-vgg16`: torchvision's VGG-16 written here in plain torch.nn, module for
module (so its state-dict keys), against specs/vgg16.yaml. The key mapping is checked on the meta device
(no memory: every key and shape, fast); the outputs with real random weights are a slow test (138 M
parameters: 0.55 GB of weights written and read, about 2.5 GB of memory; about 10 s here)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnetc.compiler import compile_spec
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.model import load_model
from alexnetc.runtime.app.specs import resolve_spec_path
from alexnetc.runtime.app.weights_import import ARCHITECTURES, TORCHVISION_DATA, map_state_dict


class TorchvisionVGG16(nn.Module):
    """torchvision.models.vgg16 (configuration D, no batch norm)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_every_vgg16_key_maps_onto_a_layer_of_the_spec():
    """oracle: torchvision's module tree (on the meta device: shapes without memory); every key used,
    every shape the layer's."""
    with torch.device("meta"):
        sd = TorchvisionVGG16().state_dict()
    assert sum(t.numel() for t in sd.values()) == 138_357_544
    net = compile_spec(resolve_spec_path("vgg16"))
    params, state = map_state_dict(net, ARCHITECTURES["torchvision-vgg16"], sd, "meta")
    assert len(params) == len(sd) == 32 and not state
    assert params["stage5.conv3.weight"].shape == (512, 512, 3, 3) and params["fc6.weight"].shape == (4096, 25088)


@pytest.mark.slow
def test_imported_vgg16_gives_torchvisions_outputs(tmp_path):
    """oracle: the plain-torch VGG-16 in float64 on the same random weights; ours in float32: logits
    within 1e-5 normwise relative. The run's data section gets ImageNet's mean/std (the spec subtracts
    the training set's mean, as the paper, so it names none)."""
    torch.manual_seed(0)
    net = TorchvisionVGG16().eval()
    weights = tmp_path / "vgg16.pth"
    torch.save(net.state_dict(), weights)
    run = tmp_path / "run"
    assert main(["import", "torchvision-vgg16", str(weights), "-o", str(run)]) == 0
    model = load_model(str(run), "cpu", batch=2)
    assert {k: model.state["data_config"][k] for k in TORCHVISION_DATA} == TORCHVISION_DATA
    assert model.state["data_config"]["crop"] == 224
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net.double()(x.double())
    scores = next(e.node for e in model.net.graph.outputs if e.node.op == "softmax_loss").inputs[0].node.name
    ours = model.executor.forward(x, keep=(scores,))[scores].double()
    assert ref.std() > 1e-4, "degenerate test: logits hardly depend on the input"
    err = float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref))
    assert err <= 1e-5, f"normwise relative error {err:.2e}"
