"""Weights in and out of alexnetc: `alexnetc export` (a checkpoint as an ONNX model, optionally checked
in onnxruntime) and `alexnetc import` (published torchvision AlexNet weights as a checkpoint).

The ONNX graph itself is built by `compiler/onnx_export.py` from the op descriptors; here: loading the
checkpoint, the metadata, writing the file, the parity check. Heavy imports happen inside each command.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from .errors import UserError, say, write_failure

EPILOG_EXPORT = """examples:
  alexnetc export runs/alexnet-mini -o mini.onnx
  alexnetc export runs/alexnet/checkpoints/ckpt-000090-e0090.json -o alexnet.onnx --verify

The model's input is `data` (N, C, H, W) float32, already normalised as the run's evaluation transform
(the metadata property `preprocessing` records the run's data settings); its outputs are `prob`
(softmax) and `logits` (N, classes). Dropout is removed; two towers become one graph (grouped Conv,
tower-confined LRN as Split/LRN/Concat). --verify runs the file in onnxruntime against alexnetc's
executor on a random batch and prints the normwise relative error of the logits."""


EPILOG_IMPORT = """examples:
  alexnetc import torchvision-alexnet alexnet-owt-7be5be79.pth -o runs/tv-alexnet --classes imagenet_classes.txt
  alexnetc import torchvision-alexnet alexnet.safetensors -o runs/tv-alexnet --classes /data/imagenet/train
  alexnetc import torchvision-resnet50 resnet50-0676ba61.pth -o runs/tv-resnet50 --classes imagenet_classes.txt

WEIGHTS: the torchvision model's state dict (alexnet into specs/torchvision-alexnet.yaml, resnet18,
resnet50 and vgg16 into specs/resnet18.yaml, resnet50.yaml and vgg16.yaml, batch norm's running
statistics included; the run normalises images with ImageNet's mean/std as torchvision does), as
.safetensors or a plain PyTorch pickle (read with torch.load(weights_only=True): a file holding
anything but tensors is refused). The run then works with eval, predict, filters, neighbors and export
(and train --init-from, to fine-tune it). --classes: class names in label order, one per line, or a
dataset's train folder (its sorted subfolders, torchvision's label order; use this to eval on that
dataset). Without it the classes are named class0 .. class999. --spec: a variant of the shipped spec
with other train or data sections (the evaluation transform the weights were published with), checked
to be the same network."""


def _load_model(path: str):
    from ..training.checkpoint import CheckpointError
    from .model import load_model

    try:
        return load_model(path, "cpu", 1)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def _metadata(model: Any) -> dict[str, str]:
    state = model.state
    pre = {"data_config": state.get("data_config")}
    stats = state.get("data_stats")
    if stats:
        pre["mean"], pre["std"] = stats.get("mean"), stats.get("std")
    return {"alexnetc_spec": model.net.name, "alexnetc_spec_sha256": model.net.hash,
            "classes": json.dumps(model.class_names), "preprocessing": json.dumps(pre)}


def verify_onnx(data: bytes, model: Any, batch: int = 2, seed: int = 0) -> float:
    """Normwise relative error ||onnx - ours|| / ||ours|| of the logits on a random batch, running the
    serialised model `data` in onnxruntime and `model` (runtime.app.model.Model) on alexnetc's executor."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from ...compiler.onnx_export import INPUT, LOGITS
    from ...compiler.ops import get_op
    from ..execution.executor import Executor

    net = model.net.at_batch(batch)
    ex = Executor(net, {d: "cpu" for d in net.devices}, for_training=False, params=model.executor.params,
                  state=model.executor.state)
    loss = next(e.node for e in net.graph.outputs if get_op(e.node.op).role == "loss")
    scores = loss.inputs[0].node.name
    x = torch.randn(batch, *net.input_shape, generator=torch.Generator().manual_seed(seed))
    ours = ex.forward(x, keep=(scores,))[scores].double().numpy()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    theirs = sess.run([LOGITS], {INPUT: x.numpy()})[0].astype(np.float64)
    return float(np.linalg.norm(theirs - ours) / max(np.linalg.norm(ours), 1e-30))


def _export(args) -> int:
    from ...compiler.onnx_export import OPSET, ExportError, export_onnx, serialize_checked
    from ..atomic import replacing

    if args.opset < OPSET:
        raise UserError(f"--opset {args.opset}: alexnetc exports opset {OPSET} or newer")
    if args.verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError("--verify needs onnxruntime: pip install 'alexnetc[onnx]'") from None
    model = _load_model(args.checkpoint)
    params = {k: v.detach().float().cpu().numpy() for k, v in model.executor.params.items()}
    state = {k: v.detach().float().cpu().numpy() for k, v in model.executor.state.items()}   # running stats
    try:
        proto = export_onnx(model.net.inference().graph, {**params, **state}, opset=args.opset, name=model.net.name,
                            metadata=_metadata(model))
        data = serialize_checked(proto)
    except ExportError as exc:
        raise UserError(str(exc)) from None
    try:
        with replacing(args.output) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise write_failure(args.output, exc) from None
    c, h, w = model.net.input_shape
    n_params = sum(int(p.size) for p in params.values())
    say(f"{args.output}: ONNX opset {args.opset}, {len(proto.graph.node)} operators, {n_params:,} parameters, "
          f"{len(data) / 2 ** 20:.1f} MiB; input data (N, {c}, {h}, {w}), outputs prob and logits "
          f"(N, {model.net.classes})")
    if args.verify:
        err = verify_onnx(data, model)
        say(f"onnxruntime vs alexnetc logits (random batch of 2): normwise relative error {err:.2e}")
        if not err <= 1e-5:
            raise UserError(f"{args.output}: onnxruntime's logits differ from alexnetc's by {err:.2e} (> 1e-5)")
    return 0


def _import(args) -> int:
    from ..training.checkpoint import CheckpointError, CheckpointWriteError
    from .errors import EnvironmentFailure
    from .weights_import import WeightsError, import_weights

    try:
        path = import_weights(args.architecture, args.weights, args.output, args.classes, args.spec)
    except CheckpointWriteError as exc:   # the disk, not the weights: full, read-only
        raise EnvironmentFailure(str(exc)) from None
    except (WeightsError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    say(f"imported {args.weights} as {args.architecture}: {path}")
    return 0


def register(sub: Any) -> None:
    x = sub.add_parser("export", help="write a checkpoint as an ONNX model (opset 17+)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_EXPORT)
    x.add_argument("checkpoint", help="a checkpoint (.json/.safetensors) or a run or checkpoints directory")
    x.add_argument("-o", "--output", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    x.add_argument("--verify", action="store_true", help="also run it in onnxruntime and compare the logits")
    x.set_defaults(func=_export)

    from .weights_import import ARCHITECTURES

    i = sub.add_parser("import", help="published weights (torchvision's AlexNet, ResNet-18/50, VGG-16) as an alexnetc run",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_IMPORT)
    i.add_argument("architecture", choices=sorted(ARCHITECTURES), help="which published network")
    i.add_argument("weights", help="its state dict: .safetensors, or .pth/.pt (plain tensors only)")
    i.add_argument("-o", "--output", required=True, metavar="RUN", help="the run directory to create")
    i.add_argument("--classes", metavar="FILE_OR_DIR", help="class names (one per line) or a train folder")
    i.add_argument("--spec", help="import into this spec instead: the same network with other train/data "
                                  "sections (e.g. ResNet-50's V2 weights are evaluated at resize 232)")
    i.set_defaults(func=_import)
