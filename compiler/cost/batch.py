"""Costs at any batch size from the costs at two: every count the cost model keeps is affine in the batch.

A value's bytes are its shape's product times its dtype's size, and every activation's shape has the
batch as its first dimension (parameters, their gradients and per-channel statistics have none), so
bytes are ``a + b * batch``; every op's FLOPs are sums over its output (or input) elements, so they are
too. Two programs of the same graph at batch 1 and 2 therefore give the exact count at any batch:
``n(b) = n(1) + (b - 1) * (n(2) - n(1))``. The placement planner evaluates placements at the shard
size of every data-parallel width this way instead of compiling the network once per batch; a test
checks the rule against a direct compile at other batches for every shipped spec.
"""
from __future__ import annotations

from dataclasses import replace

from .node_cost import NodeCost


def affine(at1: int, at2: int, batch: int) -> int:
    """The count at `batch` of a count that is `at1` at batch 1 and `at2` at batch 2."""
    return at1 + (batch - 1) * (at2 - at1)


def cost_at_batch(at1: NodeCost, at2: NodeCost, batch: int) -> NodeCost:
    """`at1` (the node's cost at batch 1) with every count scaled to `batch` (`at2`: its cost at 2)."""
    if at1.node.name != at2.node.name:
        raise ValueError(f"costs of different nodes: {at1.node.name} and {at2.node.name}")
    return replace(at1, flops=affine(at1.flops, at2.flops, batch), read=affine(at1.read, at2.read, batch),
                   written=affine(at1.written, at2.written, batch), link=affine(at1.link, at2.link, batch),
                   kept=affine(at1.kept, at2.kept, batch))
