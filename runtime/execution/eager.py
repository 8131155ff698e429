"""The same network as plain PyTorch eager: a torch.nn.Module that interprets the compiled forward
graph with each op's eager rule (`OpDef.eager`: ATen ops, cuDNN convolutions on a GPU) and lets
torch.autograd differentiate it.

It is the baseline the runtime benchmark compares against (eager and under torch.compile) and, with
`lrn="formula"` in float64, the oracle for the executor's gradient pass in the tests. It shares no
code with the kernels or the executor. Dropout uses torch's own RNG here (masks differ from ours);
tests that compare gradients use specs without dropout.
"""
from __future__ import annotations

import torch
from torch import nn

from ...compiler import CompiledNet
from ...compiler.ops import get_op
from ...compiler.ops.loss import total_loss
from ...compiler.ops.registry import EagerContext
from .params import init_state


class EagerNet(nn.Module):
    def __init__(self, net: CompiledNet, params: dict[str, torch.Tensor] | None = None, lrn: str = "torch",
                 state: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.graph = net.graph
        self.formula = lrn == "formula"   # LRN written out (the float64 oracle) rather than ATen's
        self.names: dict[str, str] = {}
        self.weights = nn.ParameterDict()
        for n in self.graph.params():
            key = n.name.replace(".", "_")
            self.names[n.name] = key
            init = params[n.name] if params is not None else torch.zeros(n.shapes[0])
            self.weights[key] = nn.Parameter(init.detach().clone())
        # State (running statistics) as buffers: .double()/.to() convert them with the parameters.
        initial = state if state is not None else init_state(net)
        self.state_keys: dict[str, str] = {}
        for n in self.graph.variables():
            if n.role == "state":
                key = "state_" + n.name.replace(".", "_")
                self.state_keys[n.name] = key
                self.register_buffer(key, initial[n.name].detach().clone())

    def state(self, name: str) -> torch.Tensor:
        return getattr(self, self.state_keys[name])

    def param(self, name: str) -> torch.Tensor:
        return self.weights[self.names[name]]

    def forward(self, data: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx = EagerContext(training=self.training, formula=self.formula)
        env = {}
        for node in self.graph.nodes():
            if node.is_variable:
                env[(id(node), 0)] = (self.param(node.name) if node.is_param else self.state(node.name)
                                      if node.role == "state" else {"data": data, "label": label}.get(node.role))
                continue
            xs = [env[(id(e.node), e.index)] for e in node.inputs]
            op = get_op(node.op)
            outs = op.eager(node, xs, ctx)
            for k, t in enumerate(outs):
                env[(id(node), k)] = t
            if self.training:   # new state (running statistics) written back, as the executor does
                args = op.arguments_for(node.attrs) if op.arguments is not None else ()
                with torch.no_grad():
                    for arg, k in op.state_outputs.items():
                        if arg in args:
                            xs[args.index(arg)].copy_(outs[k])
        heads = self.graph.outputs   # (loss, prob) per loss head, the main head first
        losses = [(heads[i].node, env[(id(heads[i].node), heads[i].index)]) for i in range(0, len(heads), 2)]
        return total_loss(losses), env[(id(heads[1].node), heads[1].index)]
