"""A compiled spec as a ``torch.nn.Module``, for a training loop of one's own.

    from alexnetc.runtime.torch_module import Network
    model = Network.from_spec("variants/mini", seed=0)        # or Network.from_run("runs/alexnet-mini")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for images, labels in loader:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad(); loss.backward(); opt.step()
    model.save_checkpoint("runs/mine")                         # alexnetc eval / predict / export read it

`model(images)` returns the main loss head's class scores (N, classes: what its softmax reads, the
logits). Forward and backward run through alexnetc's graph, executor and kernels (the Triton ones on a
GPU, the ATen reference ones on the CPU), not through torch.autograd's ops: the module is one
``torch.autograd.Function`` whose backward runs the graph's gradient pass seeded with the scores'
gradient (`Executor.backward(scores_grad=...)`), so any loss of the scores and any torch optimizer work.
Auxiliary loss heads (GoogLeNet's) are not part of the output and get no gradient.

Parameters are ``nn.Parameter`` under their logical names, as checkpoints name them (``conv1.weight``
whole, whatever the towers; ``inception_3a.b2.weight``), and batch norm's running statistics are
buffers (``bn1.running_mean``): ``state_dict()`` is a checkpoint's ``param/`` and ``state/`` tensors,
``load_state_dict`` takes them back. The executor reads them as they are at every forward (each tower
a slice of its layer's tensor, no copy) and writes the running statistics into them in training.

The module runs on one device: every logical device of the spec is bound to where the parameters are
(`.to(device)` moves it; the executor is bound again). ``.train()`` applies dropout and updates running
statistics; only in training mode do the scores carry a gradient (``.eval()`` runs the inference graph).
One forward, then its backward: the executor keeps the values of the latest forward only, so a backward
of an earlier forward is an error. Precision: the parameters' dtype (float32; ``.double()`` for the
float64 reference kernels); ``dtype="bfloat16"`` for mixed precision with fp32 parameters.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from ..compiler import CompiledNet
from .execution.layout import param_layout, to_logical, to_placed

_PRIVATE = "_ac_"   # this class's own attributes: a prefix no layer name is likely to have


class Network(nn.Module):
    def __init__(self, net: CompiledNet, params: Mapping[str, torch.Tensor] | None = None,
                 state: Mapping[str, torch.Tensor] | None = None, *, seed: int = 0, dtype: str | None = None):
        """`net` at any batch size; `params` and `state` under logical or placed names (None: the spec's
        initialisers drawn from `seed`, and the initial running statistics); `dtype`: float32,
        float64 or bfloat16 (None: the spec's train.dtype)."""
        from .execution.params import init_params, init_state
        from .execution.precision import precision

        super().__init__()
        self._ac_net = net
        self._ac_dtype = dtype or net.dtype
        master = precision(self._ac_dtype).master
        placed = to_placed(dict(params) if params is not None else init_params(net, seed), net.graph,
                           source="the parameters", target=net.name)
        self._ac_params = []
        for name, t in to_logical(placed, net.graph).items():
            p = nn.Parameter(t.detach().to(master).clone().contiguous())
            _register(self, name, p)
            self._ac_params.append((name, p))
        placed_state = to_placed(dict(state) if state is not None else init_state(net), net.graph, role="state",
                                 source="the state", target=net.name) if param_layout(net.graph, "state") else {}
        self._ac_state = []
        for name, t in to_logical(placed_state, net.graph, role="state").items():
            buf = t.detach().to(master).clone().contiguous()
            _register(self, name, buf, buffer=True)
            self._ac_state.append(name)
        self._ac_bound: tuple | None = None      # (device, dtype) the executors were bound for
        self._ac_forwards = 0                     # counts training forwards: a backward must be of the last

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str | os.PathLike, *, seed: int = 0, dtype: str | None = None) -> "Network":
        """A spec file or a shipped spec name, with its initial weights drawn from `seed`."""
        from ..compiler import compile_spec
        from .app.specs import resolve_spec_path

        return cls(compile_spec(resolve_spec_path(str(spec))), seed=seed, dtype=dtype)

    @classmethod
    def from_run(cls, path: str | os.PathLike, *, dtype: str | None = None) -> "Network":
        """A trained run (its newest checkpoint that verifies; ``runs/<spec name>`` for the newest run),
        a checkpoints directory or one checkpoint: the network it carries, with its weights and state."""
        from ..compiler.pipeline import compile_dict
        from .execution.layout import placed_tensors
        from .training.checkpoint import checkpoints_dir, load_checkpoint, newest_verified, params_from, state_from
        from .training.verify import check_finite, check_state

        path = checkpoints_dir(str(path))
        if os.path.isdir(path):
            path = newest_verified(path)
        tensors, record = load_checkpoint(path)
        check_finite(path, tensors, with_momentum=False)
        check_state(path, record, for_training=False)
        net = compile_dict(record["spec"], f"<spec in {os.path.basename(path)}>")
        tensors = placed_tensors(tensors, net.graph, saved_graph=net.graph, source=path, target=net.name)
        model = cls(net, params_from(tensors), state_from(tensors) or None, dtype=dtype or record.get("dtype"))
        model._ac_classes = list(record["classes"])
        return model

    @property
    def net(self) -> CompiledNet:
        """The compiled spec."""
        return self._ac_net

    # -- running ---------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The main head's class scores (N, classes) for a batch of normalised (N, C, H, W) images."""
        params = [p for _, p in self._ac_params]
        if self.training and torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return _Run.apply(self, images, *params)
        with torch.no_grad():
            return self._scores(images, train=self.training).detach()

    def _executor(self, train: bool):
        """The training or inference executor, bound (again) where the parameters are, in their dtype."""
        from .execution.executor import Executor

        first = self._ac_params[0][1] if self._ac_params else next(iter(self.buffers()), torch.zeros(0))
        dtype = "float64" if first.dtype == torch.float64 else self._ac_dtype
        key = (first.device, dtype)
        if self._ac_bound != key:
            net = self._ac_net
            g2c = {d: first.device for d in net.devices}
            params, state = self._placed()
            self._ac_train_ex = Executor(net, g2c, for_training=True, params=params, state=state or None, dtype=dtype)
            self._ac_eval_ex = Executor(net, g2c, for_training=False, params=self._ac_train_ex.params,
                                        state=self._ac_train_ex.state, dtype=dtype)
            self._ac_bound = key
        return self._ac_train_ex if train else self._ac_eval_ex

    def _placed(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The current parameters and running statistics under the graph's placed names: each tower a
        slice of its logical tensor (a view: the executor reads and writes the module's own storage)."""
        graph = self._ac_net.graph
        params = to_placed({n: p.detach() for n, p in self._ac_params}, graph)
        state = (to_placed({n: _lookup(self, n) for n in self._ac_state}, graph, role="state")
                 if self._ac_state else {})
        return params, state

    def _scores(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        ex = self._executor(train)
        params, state = self._placed()
        for ex_ in (self._ac_train_ex, self._ac_eval_ex):   # they share tensors: point both at the module's
            ex_.params.update(params)
            ex_.state.update(state)
        out = ex.forward(images, is_train=train, scores=True)
        if train:
            self._ac_forwards += 1
        return out["scores"]

    def _backward(self, scores_grad: torch.Tensor) -> list[torch.Tensor]:
        """The gradients of the logical parameters, in `parameters()` order, for `scores_grad`."""
        ex = self._ac_train_ex
        grads = to_logical(ex.backward(scores_grad=scores_grad), self._ac_net.graph)
        return [grads[n].to(p.device, p.dtype).clone() for n, p in self._ac_params]

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str | os.PathLike, classes: list[str] | None = None) -> str:
        """Write the weights and running statistics as an ordinary alexnetc checkpoint in
        ``directory/checkpoints`` (a run directory `eval`, `predict`, `export`, the figures and
        `--init-from` read), with the spec and class names (default: those it was loaded with, else
        "0" ... "N-1"); returns its path. The data section is the spec's: `eval` and `predict` normalise
        images as it says."""
        from .training.checkpoint import PARAM_PREFIX, STATE_PREFIX, save_checkpoint, weights_record

        net = self._ac_net
        names = classes or getattr(self, "_ac_classes", None) or [str(i) for i in range(net.classes)]
        if len(names) != net.classes:
            raise ValueError(f"{len(names)} class names for a network of {net.classes} classes")
        tensors = {PARAM_PREFIX + n: p.detach() for n, p in self._ac_params}
        tensors.update({STATE_PREFIX + n: _lookup(self, n) for n in self._ac_state})
        record = weights_record(net, list(names), dtype=self._ac_dtype)
        return save_checkpoint(os.path.join(str(directory), "checkpoints"), tensors, record, tag="module")


class _Run(torch.autograd.Function):
    """The network as one autograd node: forward and backward by the executor."""

    @staticmethod
    def forward(ctx: Any, module: Network, images: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        scores = module._scores(images, train=True)
        ctx.module, ctx.forward_number = module, module._ac_forwards
        return scores.detach()

    @staticmethod
    def backward(ctx: Any, scores_grad: torch.Tensor) -> tuple:
        module = ctx.module
        if ctx.forward_number != module._ac_forwards:
            raise RuntimeError("alexnetc Network: backward of an earlier forward; the executor keeps the values "
                               "of the latest forward only (call backward after each forward)")
        return (None, None, *module._backward(scores_grad))


def _register(root: nn.Module, dotted: str, value: torch.Tensor, buffer: bool = False) -> None:
    """Put `value` at `dotted` (``conv1.weight``, ``inception_3a.b2.weight``), making plain container
    modules for the layers on the way."""
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            if hasattr(module, part):
                raise ValueError(f"layer name {part!r} ({dotted}) clashes with an attribute of torch.nn.Module; "
                                 "rename the layer to use the network as a module")
            child = nn.Module()
            module.add_module(part, child)
        module = child
    if buffer:
        module.register_buffer(leaf, value)
    else:
        module.register_parameter(leaf, value)


def _lookup(root: nn.Module, dotted: str) -> torch.Tensor:
    *path, leaf = dotted.split(".")
    module = root
    for part in path:
        module = module._modules[part]
    return module._buffers[leaf] if leaf in module._buffers else module._parameters[leaf]
