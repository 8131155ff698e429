"""An independent forward of a compiled graph on plain torch ops, differentiated by torch.autograd.

It is the oracle for the executor's gradient pass: nothing here shares code with the kernels or the
executor (LRN is written from the paper's formula, pooling uses ATen's own ops).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _act(x, act):
    return {"none": lambda t: t, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[act](x)


def _lrn(x, a):
    g = int(a.get("groups", 1))
    n, c, h, w = x.shape
    x = x.reshape(n * g, c // g, h, w)
    size = a["size"]
    alpha = a["alpha"] / size if a["alpha_over_n"] else a["alpha"]
    sq = F.pad(x.pow(2), (0, 0, 0, 0, size // 2, size // 2))
    win = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    y = x / (a["k"] + alpha * win).pow(a["beta"])
    return y.reshape(n, c, h, w)


def forward(graph, params: dict[str, torch.Tensor], data: torch.Tensor, label: torch.Tensor):
    """(loss, prob) of the forward graph; dropout is the identity (use specs without it for grads)."""
    env = {}
    for node in graph.nodes():
        if node.is_variable:
            kind = node.attrs.get("kind")
            env[(id(node), 0)] = data if node.name == "data" else label if node.name == "label" else params[node.name]
            continue
        x = [env[(id(e.node), e.index)] for e in node.inputs]
        a = node.attrs
        op = node.op
        if op == "conv":
            y = _act(F.conv2d(x[0], x[1], x[2] if len(x) > 2 else None, stride=tuple(a["stride"]),
                              padding=tuple(a["pad"]), groups=a["num_group"]), a["act"])
            outs = [y[:, :, :node.shapes[0][2], :node.shapes[0][3]]]
        elif op == "fc":
            outs = [_act(F.linear(x[0], x[1], x[2] if len(x) > 2 else None), a["act"])]
        elif op == "lrn":
            outs = [_lrn(x[0], a), None]
        elif op == "maxpool":
            outs = [F.max_pool2d(x[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                                 ceil_mode=a["rounding"] == "ceil"), None]
        elif op == "avgpool":
            outs = [F.avg_pool2d(x[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                                 ceil_mode=a["rounding"] == "ceil", count_include_pad=False)]
        elif op == "dropout" or op == "copy":
            outs = [x[0]]
        elif op in ("relu", "tanh", "sigmoid"):
            outs = [_act(x[0], op)]
        elif op == "flatten":
            outs = [x[0].reshape(x[0].shape[0], -1)]
        elif op == "concat":
            outs = [torch.cat(x, 1)]
        elif op == "slice":
            outs = [x[0][:, a["begin"]:a["end"]]]
        elif op == "softmax_loss":
            outs = [F.cross_entropy(x[0], x[1]), torch.softmax(x[0], 1)]
        else:
            raise NotImplementedError(op)
        for k, t in enumerate(outs):
            env[(id(node), k)] = t
    heads = graph.outputs
    return env[(id(heads[0].node), heads[0].index)], env[(id(heads[1].node), heads[1].index)]
