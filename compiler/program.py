"""The typed contract between compiler and runtime: a graph ready to execute and what the runtime must
know about it, as fields rather than string keys in `Graph.attrs`.

A `Program` is a graph whose first `forward_outputs` outputs are the forward heads (loss, then
probabilities, of the main head first and then of each auxiliary head) and whose remaining outputs
are the gradients of the parameters named in `grad_of`, in that order, plus the `MemoryPlan` the
executor frees values by. `CompiledNet.training()` and `CompiledNet.inference()` build them; the
runtime runs no pass itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .graph import Entry, Graph

# train.dtype: the precisions a run trains in, the default first (the schema's enum; the runtime's
# execution/precision.py says what each means for parameters, values between ops and the loss).
TRAIN_DTYPES = ("float32", "float64", "bfloat16")


def master_dtype(dtype: str | None) -> str:
    """The dtype of the parameters, gradients and SGD state of a run whose values between ops are in
    `dtype` (None: float32): float64 for float64; fp32 master weights for float32 and bfloat16."""
    return "float64" if dtype == "float64" else "float32"

# The main loss head's outputs (loss, prob) come first among a graph's outputs; auxiliary heads follow.
MAIN_HEAD_OUTPUTS = 2


@dataclass(frozen=True)
class DeviceMemory:
    """Planned bytes on one logical device."""

    peak_activation_bytes: int
    pooled_bytes: int
    param_bytes: int

    def as_dict(self) -> dict[str, int]:
        return {"peak_activation_bytes": self.peak_activation_bytes, "pooled_bytes": self.pooled_bytes,
                "param_bytes": self.param_bytes}


@dataclass(frozen=True)
class MemoryPlan:
    """The memory plan of one graph (see `passes.memory_plan`).

    `release_after[i]`: the values whose last use is step i (the i-th node of `Graph.nodes()`), as
    (step of the producing node, output index) pairs."""

    dtype: str
    devices: Mapping[str, DeviceMemory]
    buffers_reused: int
    release_after: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def steps(self) -> int:
        return len(self.release_after)


@dataclass(frozen=True)
class Program:
    """A graph the executor can run: forward heads first, then one gradient per entry of `grad_of`."""

    graph: Graph
    forward_outputs: int
    grad_of: tuple[str, ...] = ()
    memory: MemoryPlan | None = field(default=None, compare=False)

    @property
    def forward_heads(self) -> tuple[Entry, ...]:
        return self.graph.outputs[:self.forward_outputs]

    @property
    def loss_heads(self) -> tuple[tuple[Entry, Entry], ...]:
        """(loss, prob) of each loss head, the main head first."""
        heads = self.forward_heads
        return tuple((heads[i], heads[i + 1]) for i in range(0, len(heads) - 1, MAIN_HEAD_OUTPUTS))

    @property
    def grad_heads(self) -> dict[str, Entry]:
        """Parameter name -> the graph output holding its gradient."""
        return dict(zip(self.grad_of, self.graph.outputs[self.forward_outputs:]))
