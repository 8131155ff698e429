"""The same network as plain PyTorch eager: a torch.nn.Module that interprets the compiled forward
graph with ATen ops (cuDNN convolutions on a GPU) and lets torch.autograd differentiate it.

It is the baseline the runtime benchmark compares against (eager and under torch.compile) and, with
`lrn="formula"` in float64, the oracle for the executor's gradient pass in the tests. It shares no
code with the kernels or the executor. Dropout uses torch's own RNG here (masks differ from ours);
tests that compare gradients use specs without dropout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...compiler import CompiledNet


def _act(x, act):
    if act == "relu":
        return torch.relu(x)
    if act == "tanh":
        return torch.tanh(x)
    if act == "sigmoid":
        return torch.sigmoid(x)
    return x


def lrn_formula(x: torch.Tensor, a) -> torch.Tensor:
    """The paper's LRN written out: b = a / (k + alpha' * sum over the window of a^2)^beta, per group."""
    g = int(a.get("groups", 1))
    n, c, h, w = x.shape
    x = x.reshape(n * g, c // g, h, w)
    size = a["size"]
    alpha = a["alpha"] / size if a["alpha_over_n"] else a["alpha"]
    sq = F.pad(x.pow(2), (0, 0, 0, 0, size // 2, size // 2))
    win = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    return (x / (a["k"] + alpha * win).pow(a["beta"])).reshape(n, c, h, w)


def lrn_torch(x: torch.Tensor, a) -> torch.Tensor:
    """The same LRN through F.local_response_norm (which always divides alpha by n)."""
    g = int(a.get("groups", 1))
    n, c, h, w = x.shape
    alpha = a["alpha"] if a["alpha_over_n"] else a["alpha"] * a["size"]
    y = F.local_response_norm(x.reshape(n * g, c // g, h, w), a["size"], alpha=alpha, beta=a["beta"], k=a["k"])
    return y.reshape(n, c, h, w)


class EagerNet(nn.Module):
    def __init__(self, net: CompiledNet, params: dict[str, torch.Tensor] | None = None, lrn: str = "torch"):
        super().__init__()
        self.graph = net.graph
        self.lrn = lrn_formula if lrn == "formula" else lrn_torch
        self.names = {}
        self.weights = nn.ParameterDict()
        for n in self.graph.variables():
            if n.attrs.get("kind") == "param":
                key = n.name.replace(".", "_")
                self.names[n.name] = key
                init = params[n.name] if params is not None else torch.zeros(n.shapes[0])
                self.weights[key] = nn.Parameter(init.detach().clone())

    def param(self, name: str) -> torch.Tensor:
        return self.weights[self.names[name]]

    def forward(self, data: torch.Tensor, label: torch.Tensor):
        env = {}
        for node in self.graph.nodes():
            if node.is_variable:
                env[(id(node), 0)] = data if node.name == "data" else label if node.name == "label" \
                    else self.param(node.name)
                continue
            x = [env[(id(e.node), e.index)] for e in node.inputs]
            a, op = node.attrs, node.op
            if op == "conv":
                (sh, sw), (ph, pw) = tuple(a["stride"]), tuple(a["pad"])
                (P, Q), (R, S) = node.shapes[0][2:], x[1].shape[2:]
                # rounding: ceil can ask for a last window reaching past the padding: more zeros there
                eh = max(0, (P - 1) * sh + R - (x[0].shape[2] + 2 * ph))
                ew = max(0, (Q - 1) * sw + S - (x[0].shape[3] + 2 * pw))
                xin = F.pad(x[0], (0, ew, 0, eh)) if eh or ew else x[0]
                y = F.conv2d(xin, x[1], x[2] if len(x) > 2 else None, stride=(sh, sw),
                             padding=(ph, pw), groups=a["num_group"])
                outs = [_act(y[:, :, :P, :Q], a["act"])]
            elif op == "fc":
                outs = [_act(F.linear(x[0], x[1], x[2] if len(x) > 2 else None), a["act"])]
            elif op == "lrn":
                outs = [self.lrn(x[0], a), None]
            elif op == "maxpool":
                outs = [F.max_pool2d(x[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                                     ceil_mode=a["rounding"] == "ceil"), None]
            elif op == "avgpool":
                outs = [F.avg_pool2d(x[0], tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                                     ceil_mode=a["rounding"] == "ceil", count_include_pad=False)]
            elif op == "dropout":
                outs = [F.dropout(x[0], a["p"], self.training)]
            elif op == "copy":
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
                raise NotImplementedError(f"EagerNet has no rule for op '{op}'")
            for k, t in enumerate(outs):
                env[(id(node), k)] = t
        heads = self.graph.outputs
        return env[(id(heads[0].node), heads[0].index)], env[(id(heads[1].node), heads[1].index)]
