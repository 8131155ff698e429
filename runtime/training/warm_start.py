"""Start a new run from another run's weights (`alexnetc train SPEC --init-from RUN`): fine-tuning.

Parameters and state (batch norm's running statistics) are matched by logical name (``conv1.weight``,
``bn1.running_mean``) and shape, whatever either run's placement, layer by layer: a layer whose
tensors the checkpoint all holds with the same shapes starts from the checkpoint; a layer it holds
with another shape (the classifier of a network with another number of classes) or does not hold
starts from the spec's initialiser, whole. No layer in common is refused (that is not fine-tuning but
the wrong checkpoint). The optimizer,
schedule, epoch and data order start fresh: this is a new run, not a resumed one (`--resume` is that).
Layers a spec should not train take ``lr_mult: 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...compiler import CompiledNet
from ...compiler.pipeline import compile_dict
from ..execution.layout import LayoutError, as_logical, param_layout, to_logical, to_placed
from ..execution.params import init_params, init_state
from . import checkpoint as ckpt


class WarmStartError(ValueError):
    """The checkpoint cannot start this network (unreadable, or no layer in common); one line."""


@dataclass
class WarmStart:
    """What `--init-from` did: placed parameters and state to bind, and which names came from where."""

    params: dict[str, torch.Tensor]
    state: dict[str, torch.Tensor]
    loaded: list[str] = field(default_factory=list)           # logical names taken from the checkpoint
    reshaped: list[str] = field(default_factory=list)         # in a layer of another shape: initialised fresh
    fresh: list[str] = field(default_factory=list)            # not in the checkpoint: initialised fresh
    unused: list[str] = field(default_factory=list)           # in the checkpoint, not in this network

    def summary(self, source: str) -> str:
        def few(names: list[str]) -> str:
            return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

        parts = [f"--init-from {source}: {len(self.loaded)} tensors loaded"]
        if self.reshaped:
            parts.append(f"{len(self.reshaped)} in layers of another shape initialised fresh ({few(self.reshaped)})")
        if self.fresh:
            parts.append(f"{len(self.fresh)} not in the checkpoint initialised fresh ({few(self.fresh)})")
        if self.unused:
            parts.append(f"{len(self.unused)} of the checkpoint unused ({few(self.unused)})")
        return "; ".join(parts)


def _saved_graph(spec: Any, source: str) -> Any:
    """The graph of the spec a checkpoint carries, to read a checkpoint from before logical names by
    (None: no spec, or one this version cannot compile; its names are then all we have)."""
    if spec is None:
        return None
    try:
        return compile_dict(spec, f"<spec in {source}>").graph
    except Exception:   # noqa: BLE001 - an old or foreign spec: the names are taken as they are
        return None


def warm_start(net: CompiledNet, seed: int, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any],
               source: str) -> WarmStart:
    """`net`'s starting parameters and state: the checkpoint's for every layer whose tensors it all holds
    with this net's shapes, the spec's initialisers (drawn from `seed`) for the other layers, whole (a
    layer never mixes a loaded bias with a fresh weight)."""
    from .verify import check_finite

    try:   # a diverged run's NaN weights would start this one diverged
        check_finite(source, tensors, with_momentum=False)
    except ckpt.CheckpointError as exc:
        raise WarmStartError(str(exc)) from None
    graph = _saved_graph(state.get("spec"), source)
    saved = {"param": as_logical(ckpt.params_from(tensors), net.graph, saved_graph=graph, role="param"),
             "state": as_logical(ckpt.state_from(tensors), net.graph, saved_graph=graph, role="state")}
    initial = {"param": to_logical(init_params(net, seed), net.graph, "param"),
               "state": to_logical(init_state(net), net.graph, "state")}
    layer_of = {(role, lp.name): lp.layer for role in initial for lp in param_layout(net.graph, role)}

    def fits(role: str, name: str) -> bool:
        s, t = saved[role].get(name), initial[role][name]
        return s is not None and s.is_floating_point() and tuple(s.shape) == tuple(t.shape)

    fitting: dict[Any, bool] = {}
    for (role, name), layer in layer_of.items():
        fitting[layer] = fitting.get(layer, True) and fits(role, name)
    out = WarmStart({}, {})
    for role in ("param", "state"):
        logical = {}
        for name, t in initial[role].items():
            s = saved[role].get(name)
            if fitting[layer_of[(role, name)]]:
                logical[name] = s.detach().to(torch.float32).contiguous()
                out.loaded.append(name)
            else:
                logical[name] = t
                if s is None:
                    out.fresh.append(name)
                elif tuple(s.shape) != tuple(t.shape):
                    out.reshaped.append(f"{name} {tuple(s.shape)} -> {tuple(t.shape)}")
                else:  # its own shape matches, another tensor of its layer's does not
                    out.reshaped.append(f"{name} (with its layer)")
        out.unused += [n for n in saved[role] if n not in initial[role]]
        try:
            placed = to_placed(logical, net.graph, role=role)
        except LayoutError as exc:   # cannot happen for names taken from net's own layout; a guard
            raise WarmStartError(str(exc)) from None
        if role == "param":
            out.params = placed
        else:
            out.state = placed
    if not any(n in initial["param"] for n in out.loaded):
        raise WarmStartError(f"{source}: no layer of {net.name} is in this checkpoint with its shapes "
                             f"(it holds {', '.join(list(saved['param'])[:3]) or 'no parameters'}"
                             f"{' ...' if len(saved['param']) > 3 else ''}); nothing to start from")
    return out
