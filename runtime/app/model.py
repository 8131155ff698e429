"""A trained model from a checkpoint: the compiled spec it carries, bound for inference, with the
class names and the evaluation transform it was trained with. Used by eval, predict and the figures.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ...compiler import CompiledNet
from ...compiler.pipeline import compile_dict
from ..execution.executor import Executor, default_group2ctx
from ..execution.layout import LayoutError, placed_tensors
from ..training.checkpoint import CheckpointError, load_checkpoint, params_from, state_from
from .errors import say

# predict/neighbors: an image whose size differs from the network's input, with no data.resize in the
# spec, is resized (shorter side to the input size, centre crop) only when its aspect ratio is at most
# this far from the input's; beyond it the image is refused (set ALEXNETC_MAX_IMAGE_ASPECT to change).
MAX_IMAGE_ASPECT = 2.0
MAX_IMAGE_ASPECT_ENV = "ALEXNETC_MAX_IMAGE_ASPECT"


def max_image_aspect() -> float:
    raw = os.environ.get(MAX_IMAGE_ASPECT_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_ASPECT
    try:
        v = float(raw)
    except ValueError:
        v = 0.0
    if not (v >= 1.0 and v < float("inf")):
        raise CheckpointError(f"{MAX_IMAGE_ASPECT_ENV}={raw[:40]!r}: expected a number of at least 1 "
                              f"(default {MAX_IMAGE_ASPECT})")
    return v


@dataclass
class Model:
    path: str
    net: CompiledNet
    executor: Executor
    class_names: list[str]
    state: dict

    def eval_transform(self, test_crops: str | None = None) -> Any:
        from ..data.augment import DataStats, build_transforms

        cfg = dict(self.state.get("data_config") or {})
        if test_crops:
            cfg["test_crops"] = test_crops
        stats = DataStats.from_json(self.state["data_stats"]) if self.state.get("data_stats") else None

        class _Shape:
            channels = self.net.input_shape[0]

        if stats is None and cfg.get("mean") is None:
            cfg["mean"], cfg["std"] = [127.5] * _Shape.channels, [64.0] * _Shape.channels
        cfg["pca_lighting"] = 0
        return build_transforms(cfg, _Shape(), input_shape=self.net.input_shape, stats=stats)[1]

    def data_dir(self, given: str | None) -> str:
        """The dataset to evaluate on: ``given``, else the directory the checkpoint was trained on (when
        it still exists), else train's default ($ALEXNETC_DATA, then Fashion-MNIST)."""
        if given:
            return given
        recorded = self.state.get("data")
        if isinstance(recorded, str) and recorded != "synthetic" and os.path.isdir(recorded):
            return recorded
        from ..data.datasets import find_default_dataset

        default = find_default_dataset()
        say(f"no --data given and {self.path} records no dataset that still exists"
            f"{' (it was trained on synthetic images)' if recorded == 'synthetic' else ''}: using {default}")
        return default

    def read_image(self, path: str) -> Any:
        """An image file decoded in the network's channel mode and mapped onto its input (`fit_image`,
        whose note is printed); a UserError naming the file when it cannot be read or mapped."""
        from ..bounded_read import UnreadableFile, check_file
        from ..data.datasets import load_image
        from .errors import UserError

        try:
            check_file(path, None, "image file")   # a FIFO would block the decoder, a directory is no image
        except UnreadableFile as exc:
            raise UserError(str(exc)) from None
        img = load_image(path, "L" if self.net.input_shape[0] == 1 else "RGB")
        if not hasattr(img, "shape"):
            raise UserError(f"{path}: cannot read this image ({getattr(img, 'reason', 'unreadable')})")
        try:
            img, note = self.fit_image(img, path)
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
        if note:
            say(note)
        return img

    def fit_image(self, img: Any, path: str) -> Any:
        """An (H, W, C) image mapped onto the network's input as the spec's data section prescribes.

        With ``data.resize`` the evaluation transform already resizes and crops any image. Without it,
        an image of the input's size (or the crop's) passes as is; another size is resized (shorter side
        to the input size, then centre-cropped) when its aspect ratio is within ``MAX_IMAGE_ASPECT`` of
        the input's, else refused. Returns ``(image, note)``; ``note`` says what was done (or None)."""
        cfg = self.state.get("data_config") or {}
        if cfg.get("resize") is not None:
            return img, None
        _, h, w = self.net.input_shape
        ih, iw = img.shape[:2]
        if (ih, iw) == (h, w):
            return img, None
        crop = cfg.get("crop")
        if crop is not None and min(ih, iw) >= crop and h == w == crop and max(ih, iw) <= 2 * crop:
            return img, None  # the transform centre-crops it, as it did with the validation images
        ratio = (iw / ih) / (w / h)
        limit = max_image_aspect()
        if max(ratio, 1 / ratio) > limit:
            raise CheckpointError(f"{path}: a {iw}x{ih} image cannot be mapped onto the network's {w}x{h} input: "
                                  f"its aspect ratio differs by more than {limit:g}x and the spec's data section "
                                  f"has no resize (crop or resize the image; {MAX_IMAGE_ASPECT_ENV} changes the limit)")
        scale = max(h / ih, w / iw)  # cover the input, then centre-crop the overhang
        nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
        out = _resize_exact(img, nh, nw)
        top, left = (nh - h) // 2, (nw - w) // 2
        out = out[top:top + h, left:left + w]
        return out, f"{path}: {iw}x{ih} resized and centre-cropped to the network's {w}x{h} input"

    def layer_nodes(self, layer: str) -> list[str]:
        """The graph nodes holding a spec layer's output, one per group run, in channel order."""
        for info in self.net.layers:
            if info.name == layer:
                return [name for name, _, _ in info.outputs]
        raise KeyError(f"no layer named '{layer}' in {self.net.name} "
                       f"(layers: {', '.join(i.name for i in self.net.layers)})")

    def last_hidden_layer(self) -> str:
        """The layer whose output the class scores are computed from: fc7 in alexnet.yaml, the global
        pooling in the ResNets and GoogLeNet. Walks back from the (first, main) loss head through the
        layer producing the scores to the first other layer that is not a dropout."""
        from ...compiler.ops import get_op

        loss = next((e.node for e in self.net.graph.outputs if get_op(e.node.op).role == "loss"), None)
        if loss is None:
            raise KeyError(f"{self.net.name} has no loss head to find its class scores from")
        skip, node = {loss.layer}, loss
        while True:
            data = [e.node for e in node.inputs if not e.node.is_variable]
            if not data:
                raise KeyError(f"{self.net.name}: no layer feeds its class scores")
            node = data[0]
            if node.layer in skip or node.op == "dropout":
                continue
            if len(skip) == 1:     # the layer computing the scores (fc8): its input is what we want
                op = next((i.op for i in self.net.layers if i.name == node.layer), node.op)
                if not get_op(op).params:
                    # NiN: the scores are a global pooling of class maps, which are scores themselves
                    raise KeyError(f"{self.net.name} computes its class scores by {op} ({node.layer}), "
                                   "with no hidden layer before them")
                skip.add(node.layer)
                continue
            return node.layer

    @torch.no_grad()
    def features(self, images: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """A layer's output (N, features), towers concatenated in channel order, on the CPU."""
        names = self.layer_nodes(layer or self.last_hidden_layer())
        out = self.executor.forward(images, is_train=False, keep=tuple(names))
        return torch.cat([out[n].reshape(out[n].shape[0], -1).float().cpu() for n in names], 1)

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        from ..training.evaluate import predict_probs

        return predict_probs(self.executor, images)


def _resize_exact(img, h: int, w: int):
    """(H, W, C) uint8 -> (h, w, C), bilinear (Pillow), as the datasets' own resizing does."""
    import numpy as np
    from PIL import Image

    pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
    out = np.asarray(pil.resize((w, h), Image.BILINEAR, reducing_gap=None))
    return out[:, :, None] if out.ndim == 2 else out


def load_model(path: str, device: str = "auto", batch: int = 64, warn: Any = None, spec: str | None = None) -> Model:
    """Load a checkpoint (file or run/checkpoint directory), check it against the spec it carries and
    bind it for inference: with that spec, or with `spec` (a file or shipped name: the same network
    placed otherwise, e.g. one device for a two-tower run; parameters that do not fit raise
    CheckpointError naming the layer). For a directory: its newest checkpoint that verifies; a warning
    (through ``warn``, default: stderr) names each newer one that was passed over and why."""
    import sys

    from ...compiler.program import TRAIN_DTYPES
    from ..execution.memory import MemoryLimitError, check_fits
    from ..execution.precision import PrecisionError, check_supported, precision
    from ..training.checkpoint import checkpoints_dir, newest_verified
    from ..training.verify import check_classes, check_finite, check_state, check_tensors

    warn = warn or (lambda msg: say(msg, file=sys.stderr))
    path = checkpoints_dir(path)
    if os.path.isdir(path):
        path = newest_verified(path, warn)
    tensors, state = load_checkpoint(path)
    check_finite(str(path), tensors, with_momentum=False)   # eval, predict, export, figures: never NaN out
    if "spec" not in state or "classes" not in state:
        raise CheckpointError(f"{path}: not an alexnetc training checkpoint (no spec or class names in it)")
    check_state(str(path), state, for_training=False)
    net = saved = compile_dict(state["spec"], f"<spec in {os.path.basename(str(path))}>", batch)
    if spec is not None:
        from ...compiler import compile_spec
        from .specs import resolve_spec_path

        net = compile_spec(resolve_spec_path(spec), batch)
    try:  # logical names (or an old checkpoint's placed ones) -> this placement's
        tensors = placed_tensors(tensors, net.graph, saved_graph=saved.graph, source=str(path), target=net.name)
    except LayoutError as exc:
        raise CheckpointError(str(exc)) from None
    check_classes(str(path), state, net.classes)
    # Evaluate in the precision the run trained in (its validation numbers are reproduced); a float64
    # run, which only the CPU can run, goes to the CPU unless a device is asked for.
    dtype = state.get("dtype") or TRAIN_DTYPES[0]
    check_tensors(str(path), tensors, net, for_training=False, dtype=dtype)
    params = params_from(tensors)
    bn_state = state_from(tensors)
    g2c = default_group2ctx(net, "cpu" if device == "cpu" or (device == "auto" and dtype == "float64") else None)
    try:
        check_supported(precision(dtype), g2c)
        check_fits(net, g2c, for_training=False, dtype=dtype)
    except (MemoryLimitError, PrecisionError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    ex = Executor(net, g2c, for_training=False, params=params, state=bn_state or None, dtype=dtype)
    return Model(str(path), net, ex, list(state["classes"]), state)
