"""A trained model from a checkpoint: the compiled spec it carries, bound for inference, with the
class names and the evaluation transform it was trained with. Used by eval, predict and the figures.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ...compiler import CompiledNet
from ...compiler.pipeline import compile_dict
from ..execution.executor import Executor, default_group2ctx
from ..execution.layout import LayoutError, placed_tensors
from ..training.checkpoint import CheckpointError, load_checkpoint, params_from


@dataclass
class Model:
    path: str
    net: CompiledNet
    executor: Executor
    class_names: list[str]
    state: dict

    def eval_transform(self, test_crops: str | None = None):
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

    def layer_nodes(self, layer: str) -> list[str]:
        """The graph nodes holding a spec layer's output, one per group run, in channel order."""
        for info in self.net.layers:
            if info.name == layer:
                return [name for name, _, _ in info.outputs]
        raise KeyError(f"no layer named '{layer}' in {self.net.name} "
                       f"(layers: {', '.join(i.name for i in self.net.layers)})")

    def last_hidden_layer(self) -> str:
        """The last fc layer before the one that produces the class scores (fc7 in alexnet.yaml)."""
        fcs = [i.name for i in self.net.layers if i.op == "fc"]
        if len(fcs) < 2:
            raise KeyError(f"{self.net.name} has no hidden fully connected layer")
        return fcs[-2]

    @torch.no_grad()
    def features(self, images: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """A layer's output (N, features), towers concatenated in channel order, on the CPU."""
        names = self.layer_nodes(layer or self.last_hidden_layer())
        out = self.executor.forward(images, is_train=False, keep=tuple(names))
        return torch.cat([out[n].reshape(out[n].shape[0], -1).float().cpu() for n in names], 1)

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        from ..training.loop import predict_probs

        return predict_probs(self.executor, images)


def load_model(path: str, device: str = "auto", batch: int = 64, spec: str | None = None) -> Model:
    """Load a checkpoint (file or run/checkpoint directory) and bind it for inference: with the spec it
    carries, or with `spec` (a file or shipped name: the same network placed otherwise, e.g. one device
    for a two-tower run; parameters that do not fit raise CheckpointError naming the layer)."""
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    tensors, state = load_checkpoint(path)
    if "spec" not in state or "classes" not in state:
        raise CheckpointError(f"{path}: not an alexnetc training checkpoint (no spec or class names in it)")
    net = saved = compile_dict(state["spec"], f"<spec in {os.path.basename(str(path))}>", batch)
    if spec is not None:
        from ...compiler import compile_spec
        from .specs import resolve_spec_path

        net = compile_spec(resolve_spec_path(spec), batch)
    try:  # logical names (or an old checkpoint's placed ones) -> this placement's
        tensors = placed_tensors(tensors, net.graph, saved_graph=saved.graph, source=str(path), target=net.name)
    except LayoutError as exc:
        raise CheckpointError(str(exc)) from None
    params = params_from(tensors)
    missing = [n.name for n in net.graph.params() if n.name not in params]
    if missing:
        raise CheckpointError(f"{path}: missing parameters {missing[:5]}")
    g2c = default_group2ctx(net, "cpu" if device == "cpu" else None)
    ex = Executor(net, g2c, for_training=False, params=params)
    return Model(str(path), net, ex, list(state["classes"]), state)
