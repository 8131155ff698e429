"""Reference fully connected layer (F.linear) and its gradients, plus the bias gradient of conv and fc."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import activation
from ._common import f32, up


def fc(x, w, b, *, act):
    y = F.linear(up(x), up(w), None if b is None else up(b).to(up(x).dtype))
    return activation.act(y, act=act).to(x.dtype)


def fc_backward_data(dy, w):
    return (up(dy) @ up(w).to(up(dy).dtype)).to(dy.dtype)


def fc_backward_weight(dy, x):
    return f32(dy).t() @ f32(x)


def bias_backward(dy):
    """Sum over every dim but 1 (channels or units): fp32, or float64 for float64 dy."""
    dims = [d for d in range(dy.dim()) if d != 1]
    return dy.sum(dim=dims, dtype=torch.float64 if dy.dtype == torch.float64 else torch.float32)
