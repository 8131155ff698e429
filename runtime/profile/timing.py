"""Timing every node an executor runs, without touching the executor's code path when not in use.

`NodeTimer.install()` shadows the executor's `_exec_step` and `_grads_done` methods with timed
wrappers on the instance (`remove()` deletes them again, so training never pays for the profiler).
On the CPU each node's time is the wall time around its step (input gathering, the kernel calls, the
release of dead values); on CUDA a pair of events on the node's stream brackets the same work and is
read after the iteration synchronises. The copy of a parameter's gradient into its flat bucket
(`Executor._grads_done`) is timed apart and subtracted from its node, so the buckets' cost shows as
rows of their own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Span:
    """One timed piece of work in an iteration: seconds from the iteration's start, and long."""

    key: Any          # id(node) for a node, ("buckets", device) for bucket copies, ("update", None)...
    start: float
    seconds: float
    lane: str         # the logical device (a Chrome trace process)
    stream: str       # "main", or the CUDA stream's id (a Chrome trace thread)


@dataclass
class Iteration:
    spans: list[Span] = field(default_factory=list)
    forward_s: float = 0.0
    backward_s: float = 0.0
    update_s: float = 0.0
    step_s: float = 0.0


class NodeTimer:
    def __init__(self, ex: Any):
        self.ex = ex
        self.cuda = any(d.type == "cuda" for d in ex.group2ctx.values())
        # key, start mark, end mark, lane, stream, and for a node the positions of the bucket copies inside it
        self._pending: list[tuple[Any, Any, Any, str, str, range]] = []
        self._t0: float = 0.0
        self._base: dict[torch.device, Any] = {}

    # -- wrappers -------------------------------------------------------------------------------------
    def install(self) -> None:
        ex, exec_step, grads_done = self.ex, self.ex._exec_step, self.ex._grads_done

        def timed_step(s, is_train, keep, grads):
            first = len(self._pending)
            start = self._mark(s)
            exec_step(s, is_train, keep, grads)
            self._pending.append((id(s.node), start, self._mark(s), s.node.device or "host", self._stream(s),
                                  range(first, len(self._pending))))

        def timed_grads(s, outs, pending):
            start = self._mark(s)
            grads_done(s, outs, pending)
            self._pending.append((("buckets", s.node.device or "host"), start, self._mark(s), s.node.device or "host",
                                  self._stream(s), range(0)))

        ex._exec_step, ex._grads_done = timed_step, timed_grads

    def remove(self) -> None:
        for attr in ("_exec_step", "_grads_done"):
            self.ex.__dict__.pop(attr, None)

    def _stream(self, s: Any) -> str:
        if s.device.type != "cuda":
            return "main"
        stream = s.stream or torch.cuda.current_stream(s.device)
        return f"stream {stream.stream_id}"

    def _mark(self, s: Any) -> Any:
        if s.device.type != "cuda":
            return time.perf_counter()
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(s.stream or torch.cuda.current_stream(s.device))
        return ev

    # -- an iteration ---------------------------------------------------------------------------------
    def begin(self) -> None:
        self._pending = []
        self._base = {}
        if self.cuda:
            for dev in set(self.ex.group2ctx.values()):
                if dev.type == "cuda":
                    ev = torch.cuda.Event(enable_timing=True)
                    ev.record(torch.cuda.current_stream(dev))
                    self._base[dev] = ev
        self._t0 = time.perf_counter()

    def span_since(self, start: Any, end: Any, device: torch.device | None = None) -> tuple[float, float]:
        """(offset from the iteration's start, duration) of a mark pair, both in seconds."""
        if isinstance(start, float):
            return start - self._t0, end - start
        base = self._base[device]
        return base.elapsed_time(start) / 1e3, start.elapsed_time(end) / 1e3

    def end(self) -> list[Span]:
        """Synchronise and turn this iteration's marks into spans; a node's own time excludes the bucket
        copies made inside it."""
        if self.cuda:
            torch.cuda.synchronize()
        spans: list[Span] = []
        for key, start, end, lane, stream, inner in self._pending:
            off, dur = self.span_since(start, end, self.ex.group2ctx.get(lane))
            spans.append(Span(key, off, dur - sum(spans[i].seconds for i in inner), lane, stream))
        return spans
