"""Standalone activations (relu, tanh, sigmoid) and dropout: shape-preserving ops and their gradients.

Activations fused onto conv/fc are attributes of those ops (see registry.py's `activation_grad`); these
are for specs that write the activation as its own layer. Dropout's mask comes from a counter-based
RNG keyed by (run seed, step, this node's `seed_offset`), so the backward regenerates it instead of
storing it. Kernels: ``alexnetc.kernels.activation``, ``alexnetc.kernels.dropout``.
"""
from __future__ import annotations

from ..graph import Entry
from .registry import SameShape, backward_node, register


class _Activation(SameShape):
    def input_grad(self, node, dy):
        return backward_node("act_backward", node, "bwd", [dy, Entry(node, 0)], {"act": self.name})


@register
class ReLU(_Activation):
    name = "relu"


@register
class Tanh(_Activation):
    name = "tanh"


@register
class Sigmoid(_Activation):
    name = "sigmoid"


@register
class Dropout(SameShape):
    name = "dropout"

    def input_grad(self, node, dy):
        return backward_node("dropout_backward", node, "bwd", [dy],
                             {"p": node.attrs["p"], "seed_offset": node.attrs.get("seed_offset", 0)})


@register
class DropoutBackward(SameShape):
    name = "dropout_backward"
    arguments = ("grad",)
