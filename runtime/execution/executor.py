"""Bind a compiled graph to real devices and execute it: MXNet's Executor, on our kernels.

    ex = bind(net, {"gpu0": "cuda:0", "gpu1": "cuda:1"})      # or default_group2ctx(net)
    ex.forward(data, label, is_train=True); ex.backward()
    ex.outputs["loss"], ex.grads["conv1_g0_weight"]

The executor runs a compiled `Program` (`CompiledNet.training()`: forward + the gradient pass's
backward nodes; or `inference()`) in its topological order. Each node calls its op's kernel entry point
through the backend of the device it runs on (`alexnetc.kernels.backend.get_backend`), through one
generic adapter: ``backend.<entry>(*inputs, **op.kernel_args(node))``, with the descriptor's
`Kernel` data saying what else to do (channel groups as batch entries, identity outside training).
torch.autograd is not involved. Cross-device traffic happens only in the graph's `copy` nodes (run by
the executor itself); a copy between two logical devices bound to the same real one is free. Logical
devices sharing one CUDA device run on separate CUDA streams. Values are freed after their
last use as the memory plan says. Gradients are written into one flat buffer per device, in parameter
order, so data parallelism can all-reduce whole buckets (`grad_buckets()`).

State variables (`state`: batch norm's running statistics) are bound like parameters but have no
gradient and no place in the buckets. The mode is explicit: a forward with ``is_train=True`` calls
each op's training entry point and writes the outputs its descriptor names (`OpDef.state_outputs`)
back into the state tensors, once per forward; ``is_train=False`` calls `Kernel.eval_entry` where
there is one (normalising with the running statistics) and changes no state.

Data parallelism hooks: `on_grad_ready(name)`, when set, is called during `backward()` as soon as
parameter `name`'s gradient is final (written into `grads[name]`), in the order the backward pass
produces them, so a bucket's all-reduce can start while the rest of the backward runs (on CUDA it is
called inside the producing stream's context). `sample_base` is the index, in the global batch, of
this process's first sample: dropout masks are keyed by the global element index, so a shard drops
what the whole batch would (0, the default, is one process's masks).

Precision (`dtype`, see `precision.py`): float32 by default. float64 keeps parameters, values and
gradients in float64 (CPU reference backend only). bfloat16 is mixed precision: `params`, `grads` and
the buckets stay fp32; each forward casts the parameters to bf16 once and the data to bf16; a kernel
output the op's descriptor does not declare with its own dtype (`OpDef.output_dtypes`: the loss and
probabilities are fp32) and that is not a parameter's gradient is kept in the compute dtype, so every
value between ops is bf16 (the loss backward's fp32 logit gradient is cast once, at its source).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import torch

from ...compiler import CompiledNet
from ...compiler.graph import Node, topo_order
from ...compiler.ops import get_op
from ...compiler.ops.loss import total_loss
from ...compiler.ops.registry import Kernel, RunState, RunValue
from ...compiler.ops.tensor import copy_source
from ...compiler.program import Program
from ...kernels.backend import get_backend
from .host_memory import keep_freed_maps
from .layout import bind_params
from .params import init_state
from .precision import check_supported, precision


def default_group2ctx(net: CompiledNet, prefer: str | None = None) -> dict[str, torch.device]:
    """Logical devices onto real ones: one CUDA device each when there are enough, all on cuda:0
    (separate streams) when there are fewer, the CPU when there is none (or prefer == 'cpu')."""
    logical = net.devices
    if prefer == "cpu" or not torch.cuda.is_available():
        return {d: torch.device("cpu") for d in logical}
    n = torch.cuda.device_count()
    if n >= len(logical):
        return {d: torch.device("cuda", i) for i, d in enumerate(logical)}
    return {d: torch.device("cuda", 0) for d in logical}


def describe_binding(group2ctx: Mapping[str, torch.device]) -> str:
    real = {}
    for logical, dev in group2ctx.items():
        real.setdefault(str(dev), []).append(logical)
    parts = []
    for dev, logicals in real.items():
        backend = get_backend(torch.device(dev)).name
        streams = " (one CUDA stream each)" if dev.startswith("cuda") and len(logicals) > 1 else ""
        parts.append(f"{'+'.join(logicals)} -> {dev}{streams} [{backend} kernels]")
    return "; ".join(parts)


@dataclass
class _Step:
    node: Node
    fn: Callable                      # the backend's entry point (or the executor's own copy)
    backend: Any                      # the backend it comes from (None for a copy)
    run: Callable                     # _call_kernel or _copy
    kernel: Kernel | None
    kwargs: dict[str, Any]            # op.kernel_args(node), per-run values left unresolved
    run_values: bool                  # kwargs holds RunValues to resolve at each call (dropout)
    groups: int                       # independent channel groups (Kernel.grouped)
    absent: int                       # trailing optional arguments the node leaves out (no bias): None
    eval_fn: Callable | None          # the entry point outside training (Kernel.eval_entry)
    sync_fn: Callable | None          # ... in training with statistics synchronised across processes
    writes: tuple[tuple[int, int], ...]   # (input position, output index): state written back in training
    device: torch.device
    stream: Any
    inputs: list[tuple[int, int]]
    release: list[tuple[int, int]]
    cast: tuple[int, ...] = ()       # outputs kept in the compute dtype (a precision other than float32)


class Executor:
    def __init__(self, net: CompiledNet, group2ctx: Mapping[str, Any], *, for_training: bool = True,
                 params: Mapping[str, torch.Tensor] | None = None, backend: str | None = None,
                 state: Mapping[str, torch.Tensor] | None = None, dtype: str = "float32"):
        self.net = net
        self.group2ctx = {k: torch.device(v) for k, v in group2ctx.items()}
        missing = [d for d in net.devices if d not in self.group2ctx]
        if missing:
            raise ValueError(f"group2ctx has no real device for logical device(s) {missing}")
        self.precision = precision(dtype)
        check_supported(self.precision, self.group2ctx, backend)
        if any(d.type == "cpu" for d in self.group2ctx.values()):
            keep_freed_maps()
        self.for_training = for_training
        # Inference runs the forward graph with its own memory plan, so activations are freed there too.
        self.program: Program = net.training() if for_training else net.inference()
        self.graph = self.program.graph
        self.backend_name = backend
        self.seed, self.step_count = 0, 0
        self.sample_base = 0                                   # global index of this shard's first sample
        self.on_grad_ready: Callable[[str], None] | None = None  # called when a gradient is final
        # Data parallelism with synchronised statistics: the processes' all_sum and this shard's weight,
        # given to the kernels' sync entry points in training (None: every process normalises its shard).
        self.sync: Any = None
        self._streams = self._make_streams()
        nodes = self.graph.nodes()
        self.param_nodes = [n for n in nodes if n.is_param]
        self.params: dict[str, torch.Tensor] = {}
        params = bind_params(params, net.graph) if params is not None else None   # logical names: split
        for p in self.param_nodes:
            dev = self.device_of(p)
            if params is not None and p.name in params:
                self.params[p.name] = params[p.name].detach().to(dev, self.precision.master).contiguous()
            else:
                self.params[p.name] = torch.zeros(p.shapes[0], device=dev, dtype=self.precision.master)
        # State (batch norm's running statistics): bound like parameters, in the master dtype, never
        # differentiated; given tensors that already live on the right device in that dtype are shared,
        # not copied (an inference executor then reads what the training one writes).
        self.state_nodes = [n for n in nodes if n.is_variable and n.role == "state"]
        given = bind_params(state, net.graph, role="state") if state is not None else {}
        initial = init_state(net) if any(n.name not in given for n in self.state_nodes) else {}
        self.state: dict[str, torch.Tensor] = {}
        for n in self.state_nodes:
            t = given[n.name] if n.name in given else initial[n.name]
            self.state[n.name] = t.detach().to(self.device_of(n), self.precision.master).contiguous()
        self._compile_steps(nodes)
        self.grad_names: list[str] = list(self.program.grad_of)
        self._make_grad_buckets()
        self.outputs: dict[str, torch.Tensor] = {}
        self._env: dict[tuple[int, int], torch.Tensor] = {}

    # -- binding ---------------------------------------------------------------------------------------
    def device_of(self, node: Node) -> torch.device:
        if node.device is None:
            return next(iter(self.group2ctx.values()))
        return self.group2ctx[node.device]

    def _make_streams(self) -> dict[str, Any]:
        streams: dict[str, Any] = {}
        by_real: dict[torch.device, list[str]] = {}
        for logical, dev in self.group2ctx.items():
            by_real.setdefault(dev, []).append(logical)
        for dev, logicals in by_real.items():
            for logical in logicals:
                streams[logical] = (torch.cuda.Stream(device=dev)
                                    if dev.type == "cuda" and len(logicals) > 1 else None)
        return streams

    def _compile_steps(self, nodes: list[Node]) -> None:
        self._n_fwd = self.program.forward_outputs
        forward_ids = {id(n) for n in topo_order(self.program.forward_heads)}
        plan = self.program.memory
        release_after = plan.release_after if plan is not None else [() for _ in nodes]
        self._forward: list[_Step] = []
        self._backward: list[_Step] = []
        for i, node in enumerate(nodes):
            if node.is_variable:
                continue
            dev = self.device_of(node)
            release = [(id(nodes[j]), k) for j, k in release_after[i]]
            op = get_op(node.op)
            if op.kernel is None:
                if node.op != "copy":
                    raise TypeError(f"op '{node.op}' (node {node.name}) has no kernel entry point")
                fn, backend, run, kwargs, groups = _copy, None, _copy, {}, 1
            else:
                backend = get_backend(dev, self.backend_name)
                fn = getattr(backend, op.kernel.entry)
                run, kwargs = _call_kernel, op.kernel_args(node)
                groups = op.channel_groups(node) if op.kernel.grouped else 1
            absent = max(0, len(op.arguments) - len(node.inputs)) if op.arguments is not None else 0
            run_values = any(isinstance(v, RunValue) for v in kwargs.values())
            eval_fn = getattr(backend, op.kernel.eval_entry) if op.kernel is not None and op.kernel.eval_entry else None
            sync_fn = getattr(backend, op.kernel.sync_entry) if op.kernel is not None and op.kernel.sync_entry else None
            args = op.arguments_for(node.attrs) if op.arguments is not None else ()
            writes = tuple((args.index(a), k) for a, k in op.state_outputs.items() if a in args)
            step = _Step(node, fn, backend, run, op.kernel, kwargs, run_values, groups, absent, eval_fn, sync_fn, writes,
                         dev, self._streams.get(node.device), [(id(e.node), e.index) for e in node.inputs],
                         release)
            (self._forward if id(node) in forward_ids else self._backward).append(step)
        self._var_ids = {n.name: id(n) for n in nodes if n.is_variable}
        self._grad_heads = {(id(h.node), h.index): name for name, h in self.program.grad_heads.items()}
        # The main head's class scores (what its loss reads), and the backward steps that seed each loss
        # head's gradient (those reading a loss node's output): what `forward(scores=True)` returns and
        # `backward(scores_grad=...)` replaces.
        main_loss = self.program.loss_heads[0][0].node
        scores = main_loss.inputs[0]
        self._scores_key = (id(scores.node), scores.index)
        loss_ids = {id(loss.node) for loss, _ in self.program.loss_heads}
        self._seed_steps = {id(s.node): any(key[0] == id(main_loss) for key in s.inputs)
                            for s in self._backward if any(key[0] in loss_ids for key in s.inputs)}
        self._node_ids = defaultdict(lambda: None, {n.name: id(n) for n in nodes})
        self._heads = list(self.graph.outputs)
        if not self.precision.default:
            for s in self._forward + self._backward:
                self._keep_compute_dtype(s)

    def _keep_compute_dtype(self, s: _Step) -> None:
        """Outputs of `s` that must be in the compute dtype: not declared otherwise by the op, not a
        parameter's gradient (those go to the master-dtype buckets as the kernels made them)."""
        if s.run is _copy:
            return  # a copy moves its input as it is
        declared = get_op(s.node.op).output_dtypes
        s.cast = tuple(k for k in range(len(s.node.shapes or ()))
                       if k not in declared and (id(s.node), k) not in self._grad_heads)
        if s.cast:
            s.run = _call_kernel_cast

    def _make_grad_buckets(self) -> None:
        """One flat gradient buffer per real device, in the master dtype (fp32 under bfloat16 too, so
        data parallelism all-reduces the same buckets); each parameter's gradient is a view into it."""
        self.grads: dict[str, torch.Tensor] = {}
        self.buckets: dict[torch.device, torch.Tensor] = {}
        sizes: dict[torch.device, int] = {}
        layout = []
        for name in self.grad_names:
            t = self.params[name]
            off = sizes.get(t.device, 0)
            layout.append((name, t.device, off, t.numel(), t.shape))
            sizes[t.device] = off + t.numel()
        for dev, size in sizes.items():
            self.buckets[dev] = torch.zeros(size, device=dev, dtype=self.precision.master)
        for name, dev, off, numel, shape in layout:
            self.grads[name] = self.buckets[dev][off:off + numel].view(shape)

    def grad_buckets(self) -> list[torch.Tensor]:
        """The flat gradient buffers (one per real device), ready for torch.distributed.all_reduce."""
        return list(self.buckets.values())

    # -- running ---------------------------------------------------------------------------------------
    def _feed(self, name: str, value: torch.Tensor) -> None:
        if name in self._var_ids:
            self._env[(self._var_ids[name], 0)] = value

    def _run(self, steps: list[_Step], is_train: bool, keep: dict | None = None,
             grads: dict | None = None) -> None:
        self._kept = {}
        step = self._exec_step   # an instance attribute when a profiler times each step (runtime/profile)
        for s in steps:
            step(s, is_train, keep, grads)

    def _exec_step(self, s: _Step, is_train: bool, keep: dict | None, grads: dict | None) -> None:
        """One node: gather its inputs, run its kernel (on its stream), file its outputs, write the
        parameter gradients among them into their buckets, free what the memory plan says."""
        env = self._env
        args = []
        for key in s.inputs:
            t = env[key]
            if t.device != s.device and s.run is not _copy:
                # Host-fed inputs (data, label) are uploaded once per real device and step.
                up = (key, s.device)
                if up not in self._uploads:
                    self._uploads[up] = t.to(s.device, non_blocking=True)
                t = self._uploads[up]
            args.append(t)
        if s.stream is not None:
            with torch.cuda.stream(s.stream):
                if s.run is _copy:
                    s.stream.wait_stream(self._streams.get(copy_source(s.node))
                                         or torch.cuda.current_stream(s.device))
                outs = s.run(s, args, self, is_train)
                if grads:
                    self._grads_done(s, outs, grads)
        else:
            outs = s.run(s, args, self, is_train)
            if grads:
                self._grads_done(s, outs, grads)
        for k, t in enumerate(outs):
            env[(id(s.node), k)] = t
        if keep:
            for k, t in enumerate(outs):
                name = keep.get((id(s.node), k))
                if name is not None:
                    self._kept[name] = t
        for key in s.release:
            env.pop(key, None)

    def _grads_done(self, s: _Step, outs, pending: dict) -> None:
        """Write the parameter gradients among a step's outputs into their buckets; tell on_grad_ready."""
        for k, t in enumerate(outs):
            name = pending.pop((id(s.node), k), None)
            if name is not None:
                self.grads[name].copy_(t)
                if self.on_grad_ready is not None:
                    self.on_grad_ready(name)

    def _seeded(self, s: _Step, scores_grad: torch.Tensor) -> _Step:
        """Step `s` (a loss head's gradient, whose output has its probabilities' shape) giving
        `scores_grad` (the main head) or zeros (an auxiliary head) instead."""
        dtype = self.precision.compute
        main = self._seed_steps[id(s.node)]

        def run(step: _Step, args: list[torch.Tensor], ex: "Executor", is_train: bool) -> tuple[torch.Tensor]:
            prob = args[0]
            if not main:
                return (torch.zeros(prob.shape, device=step.device, dtype=dtype),)
            if tuple(scores_grad.shape) != tuple(prob.shape):
                raise ValueError(f"the gradient of the scores has shape {tuple(scores_grad.shape)}, the scores "
                                 f"{tuple(prob.shape)}")
            return (scores_grad.detach().to(step.device, dtype).contiguous(),)

        return replace(s, run=run)

    def _sync_streams(self) -> None:
        for logical, stream in self._streams.items():
            if stream is not None:
                torch.cuda.current_stream(self.group2ctx[logical]).wait_stream(stream)

    def _start_streams(self) -> None:
        for logical, stream in self._streams.items():
            if stream is not None:
                stream.wait_stream(torch.cuda.current_stream(self.group2ctx[logical]))

    def forward(self, data: torch.Tensor, label: torch.Tensor | None = None, *, is_train: bool = False,
                keep: tuple[str, ...] = (), scores: bool = False) -> dict[str, torch.Tensor]:
        """Run the forward nodes. Outputs: ``loss`` (scalar: the sum of the loss heads weighted by their
        loss_weight; one head's loss as is) and ``prob`` (N, classes: the main head's), plus the first
        output of every node named in `keep` (internal activations, e.g. features for retrieval), and
        with `scores` the main head's class scores (N, classes: what its softmax reads) as ``scores``."""
        if is_train and not self.for_training:
            raise RuntimeError("this executor was bound for inference; bind with for_training=True to train")
        if label is None:
            label = torch.zeros(data.shape[0], dtype=torch.long)
        elif label.device.type == "cpu" and label.numel() and (int(label.min()) < 0 or
                                                               int(label.max()) >= self.net.classes):
            # A GPU kernel would read out of bounds on such a label; say what is wrong instead.
            raise ValueError(f"labels must be in [0, {self.net.classes}), got {int(label.min())}..{int(label.max())}")
        self._env = {}
        self._uploads = {}
        if self.precision.mixed:   # the compute copy of every parameter: one cast per step, not per use
            for name, t in self.params.items():
                self._feed(name, t.to(self.precision.compute))
        else:
            for name, t in self.params.items():
                self._feed(name, t)
        if not self.precision.default and data.is_floating_point():
            data = data.to(self.precision.compute)
        for name, t in self.state.items():
            self._feed(name, t)
        self._feed("data", data)
        self._feed("label", label.long())
        self._is_train = is_train
        self._start_streams()
        kept = {name: self._node_ids[name] for name in keep}
        unknown = [n for n, i in kept.items() if i is None]
        if unknown:
            raise KeyError(f"no node named {unknown[0]!r} in the graph")
        wanted = {(i, 0): n for n, i in kept.items()}
        if scores:
            wanted[self._scores_key] = "scores"
        self._run(self._forward, is_train, wanted)
        self._sync_streams()
        # loss: the weighted sum of every loss head's loss; prob: the main head's (the first pair).
        losses = [(loss.node, self._env[(id(loss.node), loss.index)]) for loss, _ in self.program.loss_heads]
        prob = self.program.loss_heads[0][1]
        self.outputs = {"loss": total_loss(losses), "prob": self._env[(id(prob.node), prob.index)]}
        self.outputs.update(self._kept)
        return self.outputs

    def backward(self, scores_grad: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Run the gradient nodes; fills `grads` (views into the per-device buckets). By default the
        gradient is the total loss's; with `scores_grad` (N, classes) it is the vector-Jacobian product
        of the main head's scores with it (any loss of the scores: torch.autograd's backward through the
        graph), the loss heads' own gradients replaced by it (the main head) and zero (auxiliary ones)."""
        if not self.for_training:
            raise RuntimeError("this executor was bound for inference")
        if not getattr(self, "_is_train", False) or not self._env:
            raise RuntimeError("call forward(..., is_train=True) before each backward()")
        steps = self._backward
        if scores_grad is not None:
            steps = [self._seeded(s, scores_grad) if id(s.node) in self._seed_steps else s for s in steps]
        self._start_streams()
        pending = dict(self._grad_heads)
        self._run(steps, True, grads=pending)
        self._sync_streams()
        for key, name in pending.items():  # gradients no backward step produced (none in practice)
            self.grads[name].copy_(self._env[key])
            if self.on_grad_ready is not None:
                self.on_grad_ready(name)
        self._env = {}
        self._uploads = {}
        return self.grads


def bind(net: CompiledNet, group2ctx: Mapping[str, Any] | None = None, **kw: Any) -> Executor:
    return Executor(net, group2ctx or default_group2ctx(net), **kw)


# -- the one adapter from a graph node to its kernel ----------------------------------------------------
def _resolve(kwargs: Mapping[str, Any], ex: "Executor") -> dict[str, Any]:
    run = RunState(ex.seed, ex.step_count, ex.sample_base)
    return {k: v.resolve(run) if isinstance(v, RunValue) else v for k, v in kwargs.items()}


def _grouped(t: torch.Tensor, g: int) -> torch.Tensor:
    """(N, C, ...) -> (N*g, C/g, ...): independent channel groups become batch entries."""
    return t.reshape(t.shape[0] * g, t.shape[1] // g, *t.shape[2:])


def _call_kernel(s: _Step, args: list[torch.Tensor], ex: "Executor", is_train: bool) -> tuple[torch.Tensor, ...]:
    """``backend.<entry>(*inputs, **op.kernel_args(node))``, with the descriptor's adapter data applied."""
    kernel = s.kernel
    if kernel.train_only and not is_train:
        return (args[0],)
    kw = _resolve(s.kwargs, ex) if s.run_values else s.kwargs
    if s.absent:
        args = [*args, *([None] * s.absent)]
    if s.eval_fn is not None and not is_train:   # evaluation's own entry point: reads state, writes none
        out = s.eval_fn(*args, **kw)
        return out if isinstance(out, tuple) else (out,)
    if s.sync_fn is not None and ex.sync is not None and is_train:
        out = s.sync_fn(*args, **kw, sync=ex.sync)
    elif s.groups > 1:
        shape = args[0].shape
        out = s.fn(*(_grouped(t, s.groups) for t in args), **kw)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(t.reshape(shape) for t in outs)  # a grouped op's outputs have its first input's shape
    else:
        out = s.fn(*args, **kw)
    outs = out if isinstance(out, tuple) else (out,)
    if is_train:
        # The op's new state (running statistics) into the bound state tensors, in place, once per
        # training forward; an inference forward only reads them.
        for pos, k in s.writes:
            args[pos].copy_(outs[k])
    return outs


def _call_kernel_cast(s: _Step, args: list[torch.Tensor], ex: "Executor",
                      is_train: bool) -> tuple[torch.Tensor, ...]:
    """_call_kernel, with the outputs in `s.cast` brought to the compute dtype where a kernel made
    another (the loss backward's fp32 logit gradient under bfloat16)."""
    outs = _call_kernel(s, args, ex, is_train)
    dt = ex.precision.compute
    if any(outs[k].dtype != dt and outs[k].is_floating_point() for k in s.cast if k < len(outs)):
        outs = tuple(t.to(dt) if k in s.cast and t.dtype != dt and t.is_floating_point() else t
                     for k, t in enumerate(outs))
    return outs


def _copy(s: _Step, args: list[torch.Tensor], ex: "Executor", is_train: bool) -> tuple[torch.Tensor, ...]:
    """The executor's own op: a cross-device copy (it owns the devices and their streams)."""
    x = args[0]
    if x.device == s.device:
        # Two logical devices on one real device: nothing moves. The value now also lives on this
        # logical device's stream, so the allocator must not recycle it before that stream is done.
        if s.stream is not None:
            x.record_stream(s.stream)
        return (x,)
    return (x.to(s.device, non_blocking=True),)
