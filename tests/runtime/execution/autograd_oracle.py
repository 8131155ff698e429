"""The oracle for the executor's gradients: the compiled forward graph as plain ATen ops (the paper's
LRN formula written out), differentiated by torch.autograd. See alexnetc.runtime.execution.eager."""
from __future__ import annotations

import torch

from alexnetc.runtime.execution.eager import EagerNet


def forward(net, params: dict[str, torch.Tensor], data: torch.Tensor, label: torch.Tensor,
            training: bool = False, state: dict[str, torch.Tensor] | None = None):
    """(loss, prob) and the module whose `.param(name).grad` holds each gradient after backward().
    Evaluation mode by default (dropout the identity); `training` runs every op as in training (batch
    statistics, which also moves the running statistics in `model.state(name)`), so its specs must make
    dropout the identity themselves (p = 0): the masks here come from torch's RNG, not ours. `state`:
    batch norm's running statistics (default: their initial values)."""
    model = EagerNet(net, params, lrn="formula", state=state).train(training)
    loss, prob = model(data, label)
    return loss, prob, model
