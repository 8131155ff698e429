"""`alexnetc import torchvision-alexnet`: torchvision's AlexNet written here in plain torch.nn (torchvision
is not a dependency) under torchvision's key names, random weights saved as .safetensors and .pth,
imported, and the run's outputs compared with the torch forward; files that are not plain state dicts
are refused in one line, and nothing in them runs."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from alexnetc.compiler.ops import get_op
from alexnetc.runtime.app.cli import main
from alexnetc.runtime.app.model import load_model


class TorchvisionAlexNet(nn.Module):
    """torchvision.models.alexnet's architecture, module for module (so its state-dict keys)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.fixture(scope="module")
def torch_net():
    torch.manual_seed(0)
    net = TorchvisionAlexNet().eval()
    assert sum(p.numel() for p in net.parameters()) == 61_100_840
    return net


@pytest.fixture(scope="module")
def weights(torch_net, tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tv")
    sd = {k: v.contiguous() for k, v in torch_net.state_dict().items()}
    save_file(sd, str(root / "alexnet.safetensors"))
    torch.save(sd, root / "alexnet.pth")
    return root


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    loss = next(e.node for e in model.net.graph.outputs if get_op(e.node.op).role == "loss")
    scores = loss.inputs[0].node.name
    return model.executor.forward(x, keep=(scores,))[scores]


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_imported_weights_give_torchvisions_outputs(torch_net, weights, tmp_path, fmt, capsys):
    run = tmp_path / "run"
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"thing {i}\n" for i in range(1000)))
    assert main(["import", "torchvision-alexnet", str(weights / f"alexnet.{fmt}"), "-o", str(run),
                 "--classes", str(classes)]) == 0
    assert "imported" in capsys.readouterr().out
    model = load_model(str(run), "cpu", batch=2)
    assert model.class_names[:2] == ["thing 0", "thing 1"]
    assert sum(t.numel() for t in model.executor.params.values()) == 61_100_840
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = torch_net(x).double()
    ours = _logits(model, x).double()
    assert ref.std() > 1e-3, "degenerate test: logits hardly depend on the input"
    err = float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref))
    assert err <= 1e-5, f"normwise relative error {err:.2e}"
    torch.testing.assert_close(model.probs(x).double(), torch.softmax(ref, 1), rtol=1e-4, atol=1e-7)


def test_an_imported_run_draws_filters_and_predicts(weights, tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    assert main(["import", "torchvision-alexnet", str(weights / "alexnet.safetensors"), "-o", str(run)]) == 0
    png = tmp_path / "filters.png"
    assert main(["filters", str(run), "-o", str(png)]) == 0
    assert Image.open(png).size[0] > 100
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    capsys.readouterr()
    assert main(["predict", str(run), str(photo), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(photo) and len(lines) == 6 and all("class" in line for line in lines[1:])
    # a second import into the same run is refused, not mixed in
    assert main(["import", "torchvision-alexnet", str(weights / "alexnet.safetensors"), "-o", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


class _Payload:
    """A pickle that would create a file if unpickling ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refused(path, tmp_path, capsys, *needles: str) -> None:
    assert main(["import", "torchvision-alexnet", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("alexnetc: error:") and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_non_plain_pickles_are_refused_and_never_run(weights, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"features.0.weight": _Payload(str(marker))}, fh, protocol=2)
    _refused(evil, tmp_path, capsys, "not a plain state dict of tensors", "weights_only")
    assert not marker.exists(), "unpickling ran code"

    wrapped = tmp_path / "wrapped.pth"   # a training checkpoint, not a state dict
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, wrapped)
    _refused(wrapped, tmp_path, capsys, "key 'epoch' holds a int")

    a_tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), a_tensor)
    _refused(a_tensor, tmp_path, capsys, "it holds a Tensor")


def test_wrong_keys_and_shapes_are_named(tmp_path, capsys):
    # Shapes are checked key by key before the key sets, so small dicts show each refusal.
    torch.save({"module.features.0.weight": torch.zeros(64, 3, 11, 11)}, tmp_path / "dp.pth")
    _refused(tmp_path / "dp.pth", tmp_path, capsys, "missing features.0.weight", "unexpected module.features.0.weight")
    torch.save({"classifier.6.weight": torch.zeros(10, 4096)}, tmp_path / "ten.pth")
    _refused(tmp_path / "ten.pth", tmp_path, capsys, "classifier.6.weight has shape (10, 4096)", "(1000, 4096)")
    torch.save({"features.0.bias": torch.zeros(64, dtype=torch.long)}, tmp_path / "int.pth")
    _refused(tmp_path / "int.pth", tmp_path, capsys, "features.0.bias holds torch.int64 values")
    (tmp_path / "junk.safetensors").write_bytes(b"not really")
    _refused(tmp_path / "junk.safetensors", tmp_path, capsys, "not a readable safetensors file")
    _refused(tmp_path / "nothing.pth", tmp_path, capsys, "no such weights file")


def test_a_refused_pickle_is_one_line_on_stderr(tmp_path):
    """A protocol-4 pickle made torch.load print its own UserWarning (with its file:line) before our
    error: three stderr lines (issue 25, item 6). In a real process, where warnings reach stderr."""
    import subprocess
    import sys

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"features.0.weight": _Payload(str(marker))}, fh, protocol=4)
    r = subprocess.run([sys.executable, "-m", "alexnetc.runtime.app.cli", "import", "torchvision-alexnet", str(evil),
                        "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr == f"alexnetc: error: {evil}: not a plain state dict of tensors (torch.load(weights_only=True) " \
                       "refused it: Unsupported operand 149)\n"
    assert not marker.exists()


def test_the_refusal_says_what_torch_objected_to(tmp_path, capsys):
    """torch's message is paragraphs of advice; the line keeps the part that names the global."""
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Payload(str(tmp_path / "ran"))}, evil)
    _refused(evil, tmp_path, capsys, "refused it: Trying to load unsupported GLOBAL posix.system whose module posix "
                                     "is blocked)")
    assert not (tmp_path / "ran").exists()
