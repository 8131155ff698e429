"""The oracle for the executor's gradients: the compiled forward graph as plain ATen ops (the paper's
LRN formula written out), differentiated by torch.autograd. See alexnetc.runtime.execution.eager."""
from __future__ import annotations

import torch

from alexnetc.runtime.execution.eager import EagerNet


def forward(net, params: dict[str, torch.Tensor], data: torch.Tensor, label: torch.Tensor):
    """(loss, prob) and the module whose `.param(name).grad` holds each gradient after backward()."""
    model = EagerNet(net, params, lrn="formula").eval()  # eval: dropout is the identity
    loss, prob = model(data, label)
    return loss, prob, model
