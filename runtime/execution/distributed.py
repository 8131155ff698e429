"""Data parallelism over torch.distributed, combined with the spec's model parallelism.

Launched by ``torchrun`` (which sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT), each process trains one replica of the network:

- :func:`from_env` joins the process group (NCCL with GPUs, gloo on the CPU; a timeout on every
  collective, so a lost process ends the others with a message instead of a hang);
- :func:`bind_local` maps the spec's logical devices onto this process's real ones: the towers on GPUs
  ``L*local_rank .. L*local_rank+L-1`` (L logical devices) when the machine has enough, one GPU per
  process with a CUDA stream per tower when it has one per process, the CPU where there is none;
- every global batch is cut into contiguous shards by global sample index (:func:`shard`); a process
  computes the mean loss of its shard, and :class:`GradReducer` sums the gradients weighted by
  ``shard size / global batch size`` — the gradient of the mean over the global batch, for any number of
  processes and uneven shards (averaging the shard means with equal weight is not: with 3 processes on
  a batch of 8 it is off by 0.29);
- :class:`GradReducer` all-reduces in buckets of bounded size (25 MB by default), each started
  asynchronously by the executor's ``on_grad_ready`` hook as soon as the backward pass has produced
  every gradient in it (fc8's first), so communication overlaps the rest of the backward pass;
- batch norm normalises each shard with the shard's own statistics (as PyTorch's DDP without
  SyncBatchNorm: N processes equal one process only for nets without batch norm); after every step
  the running statistics are replaced by their shard-size-weighted mean over the processes
  (:meth:`DataParallel.average_state`), so every rank holds, saves and evaluates with the same ones.
  With ``train.sync_batchnorm`` the kernels' sync entry points normalise with the global batch's
  statistics through :class:`StatsSync` (collectives inside batch norm's forward and backward), the
  running statistics come out the same everywhere, and N processes equal one for those nets too.

:class:`DataParallel` is one training step of all that; the training loop calls it instead of its own.
"""
from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist

from ...compiler.cost.allreduce import DEFAULT_BUCKET_MB, bucket_bytes, bucket_layout
from .executor import Executor

DEFAULT_TIMEOUT_S = 300.0
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A collective failed or timed out (another process failed, was killed, or is stuck)."""


def shard(n: int, rank: int, world: int) -> range:
    """The indices of a global batch of `n` that process `rank` of `world` computes (contiguous; the
    first ``n % world`` processes get one more; a process gets none when ``n < world``)."""
    per, extra = divmod(n, world)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether the process environment names a rank, a world and a rendezvous (torchrun sets them)."""
    env = os.environ if env is None else env
    return all(k in env for k in _TORCHRUN_VARS)


def bind_local(logical: Sequence[str], local_rank: int, local_world: int, cuda_devices: int,
               prefer: str | None = None) -> dict[str, torch.device]:
    """Real devices of one process's replica (see the module docstring)."""
    if prefer == "cpu" or cuda_devices == 0:
        return {d: torch.device("cpu") for d in logical}
    if cuda_devices >= len(logical) * local_world:
        return {d: torch.device("cuda", len(logical) * local_rank + i) for i, d in enumerate(logical)}
    if cuda_devices >= local_world:
        return {d: torch.device("cuda", local_rank) for d in logical}
    raise DistributedError(f"{local_world} processes on this machine but only {cuda_devices} GPU(s): start at "
                           f"most {cuda_devices} (torchrun --nproc_per_node={cuda_devices}), or train on "
                           "the CPU (--device cpu)")


@dataclass
class DistContext:
    """This process's place in the job and the collectives the training loop needs."""
    rank: int
    world: int
    local_rank: int
    local_world: int
    backend: str
    timeout_s: float
    owns_group: bool = False
    group: Any = None

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes checkpoints, metrics and plots."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def shard(self, n: int) -> range:
        return shard(n, self.rank, self.world)

    def bind(self, logical: Sequence[str], prefer: str | None = None) -> dict[str, torch.device]:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        g2c = bind_local(logical, self.local_rank, self.local_world, n, prefer)
        if self.backend == "nccl" and g2c[logical[0]].type == "cpu":
            raise DistributedError("the process group uses NCCL but this replica is bound to the CPU: "
                                   "use --device cpu on every process (gloo) or none")
        return g2c

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over all processes (float64)."""
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.comm_device)
        with _collective("summing statistics", self):
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return t.cpu().tolist()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """`obj` of process `src`, on every process (pickled)."""
        box = [obj if self.rank == src else None]
        with _collective("broadcasting from rank 0", self):
            dist.broadcast_object_list(box, src=src, group=self.group,
                                       device=self.comm_device if self.backend == "nccl" else None)
        return box[0]

    def barrier(self, what: str = "waiting for the other processes") -> None:
        with _collective(what, self):
            if self.backend == "nccl":
                dist.barrier(group=self.group, device_ids=[torch.cuda.current_device()])
            else:
                dist.barrier(group=self.group)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    def abort(self) -> None:
        """After another process failed: take our process group down now, while this process can
        still join its threads; left to the interpreter's exit, gloo's threads could still be
        running and the process would abort ('terminate called without an active exception')
        after having reported the failure."""
        try:
            self.close()
        except (RuntimeError, ValueError):
            self.owns_group = False


class _collective:
    """Turns a failed or timed-out collective into a DistributedError that says what to do."""

    def __init__(self, what: str, ctx: DistContext):
        self.what, self.ctx = what, ctx

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, RuntimeError) or isinstance(exc, DistributedError):
            return False
        raise DistributedError(
            f"rank {self.ctx.rank} of {self.ctx.world}: {self.what} failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'}). Another process has probably failed, "
            f"was killed, or is stuck for more than the {self.ctx.timeout_s:g} s timeout; see its messages. "
            "Restart the job with --resume to continue from the last checkpoint.") from exc


def from_env(prefer: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
             env: Mapping[str, str] | None = None) -> DistContext | None:
    """Join the job torchrun started (None when not launched by torchrun: one process, as before).

    The backend is NCCL when this process trains on GPUs, gloo otherwise. A process group that is
    already initialised (tests, an embedding program) is used as it is and not destroyed by close().
    """
    env = os.environ if env is None else env
    if not launched_by_torchrun(env):
        return None
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env["LOCAL_RANK"])
    local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    cuda = prefer != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() > 0
    backend = "nccl" if cuda else "gloo"
    ctx = DistContext(rank, world, local_rank, local_world, backend, float(timeout_s))
    if dist.is_initialized():
        ctx.backend = dist.get_backend()
        return ctx
    if cuda:
        n = torch.cuda.device_count()
        per = 2 if n >= 2 * local_world else 1
        torch.cuda.set_device(per * local_rank if n >= local_world else 0)
    with _collective("joining the process group (rendezvous)", ctx):
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=float(timeout_s)))
    ctx.owns_group = True
    return ctx


@dataclass
class _Bucket:
    names: list[str]
    device: torch.device
    flat: torch.Tensor | None          # a view of the executor's gradient buffer, when contiguous there
    pending: int = 0
    packed: torch.Tensor | None = None
    work: Any = None


@dataclass
class GradReducer:
    """Sums the executor's gradients over the processes, each weighted by its shard's share of the batch.

    Buckets hold consecutive gradients in the order the backward pass produces them (the executor's
    ``grad_names``), on one device, at most ``bucket_mb`` MB each (a larger gradient is a bucket alone).
    With ``overlap`` a bucket's all-reduce starts from the executor's ``on_grad_ready`` hook when its
    last gradient is ready; without, all start after the backward pass (for comparison).
    """
    ctx: DistContext
    executor: Executor
    bucket_mb: float = DEFAULT_BUCKET_MB
    overlap: bool = True
    buckets: list[_Bucket] = field(init=False)

    def __post_init__(self) -> None:
        ex = self.executor
        grads = ((n, ex.grads[n].device, ex.grads[n].numel() * ex.grads[n].element_size()) for n in ex.grad_names)
        self.buckets = [_Bucket(names, dev, None) for dev, names in bucket_layout(grads, bucket_bytes(self.bucket_mb))]
        self._of = {}
        for b in self.buckets:
            b.flat = _contiguous_view([ex.grads[n] for n in b.names], ex.buckets.get(b.device))
            for n in b.names:
                self._of[n] = b
        self.weight = 1.0
        self._armed = False
        ex.on_grad_ready = self._ready

    def begin(self, weight: float) -> None:
        """Arm for one backward pass; this process's gradients will count with `weight`."""
        self.weight = float(weight)
        for b in self.buckets:
            b.pending, b.work, b.packed = len(b.names), None, None
        self._armed = True

    def _ready(self, name: str) -> None:
        if not self._armed:
            return
        b = self._of[name]
        b.pending -= 1
        if b.pending == 0 and self.overlap:
            self._launch(b)

    def _launch(self, b: _Bucket) -> None:
        grads = self.executor.grads
        if b.flat is not None:
            t = b.flat
        else:
            t = b.packed = torch.cat([grads[n].reshape(-1) for n in b.names])
        if self.weight != 1.0:
            t.mul_(self.weight)
        with _collective(f"all-reducing gradients ({', '.join(b.names[:2])}{', ...' if len(b.names) > 2 else ''})",
                         self.ctx):
            b.work = dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.ctx.group, async_op=True)

    def finish(self) -> None:
        """Start what has not started, wait for every bucket; the executor's grads are then the sums."""
        if not self._armed:
            raise RuntimeError("GradReducer.finish() without begin()")
        for b in self.buckets:
            if b.work is None:
                self._launch(b)
        grads = self.executor.grads
        for b in self.buckets:
            try:
                with _collective("waiting for a gradient all-reduce", self.ctx):
                    b.work.wait()
            except DistributedError:
                self.abandon()
                raise
            if b.packed is not None:
                off = 0
                for n in b.names:
                    g = grads[n]
                    g.copy_(b.packed[off:off + g.numel()].view_as(g))
                    off += g.numel()
        self._armed = False

    def abandon(self) -> None:
        """After a failed collective: wait out every all-reduce still in flight (each ends with the
        same lost connection or timeout), so no gloo work is pending when the process exits (the
        process otherwise aborts in its destructors: 'terminate called without an active exception')."""
        for b in self.buckets:
            if b.work is not None:
                try:
                    b.work.wait()
                except RuntimeError:
                    pass
                b.work = None
        self._armed = False

    def describe(self) -> str:
        mb = [sum(self.executor.grads[n].numel() * 4 for n in b.names) / 2 ** 20 for b in self.buckets]
        return (f"{len(self.buckets)} gradient bucket(s) of at most {self.bucket_mb:g} MB "
                f"({', '.join(f'{m:.2f}' for m in mb)} MB), all-reduce {'overlapping' if self.overlap else 'after'} "
                "the backward pass")


def _contiguous_view(grads: list[torch.Tensor], base: torch.Tensor | None) -> torch.Tensor | None:
    """One flat view covering exactly `grads` when they are adjacent in `base` (in any order)."""
    if base is None:
        return None
    spans = []
    for g in grads:
        if g.untyped_storage().data_ptr() != base.untyped_storage().data_ptr() or not g.is_contiguous():
            return None
        spans.append((g.storage_offset(), g.numel()))
    spans.sort()
    lo = spans[0][0]
    pos = lo
    for off, n in spans:
        if off != pos:
            return None
        pos += n
    return base.view(-1)[lo - base.storage_offset(): pos - base.storage_offset()]


class DataParallel:
    """One data-parallel training step: forward on this shard, agree on the global sample count and
    on whether the loss is finite, backward with the bucketed weighted all-reduce, then `update`."""

    def __init__(self, ctx: DistContext, executor: Executor, bucket_mb: float = DEFAULT_BUCKET_MB,
                 overlap: bool = True, sync_batchnorm: bool = False):
        self.ctx, self.executor = ctx, executor
        self.reducer = GradReducer(ctx, executor, bucket_mb, overlap)
        # Synchronised batch norm: the global batch's statistics, through the kernels' sync entry points
        # (a collective inside each batch norm's forward and backward); otherwise each process
        # normalises its shard and the running statistics are averaged after the step.
        executor.sync = StatsSync(ctx) if sync_batchnorm and executor.state else None

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, global_batch: int,
                   update: Callable[[Mapping[str, torch.Tensor]], None]) -> tuple[float, torch.Tensor] | None:
        """This shard's mean loss (NaN on every process when any process's loss is not finite) and its
        probabilities; None when no process had a sample (nothing was updated)."""
        ex = self.executor
        n = int(labels.shape[0])
        ex.sample_base = self.ctx.shard(global_batch).start
        loss, probs = 0.0, torch.empty(0)
        if ex.sync is not None and self.ctx.all_sum([0.0 if n else 1.0])[0]:
            # A process without a readable sample cannot take part in the statistics' collectives
            # inside the forward: every process skips this batch (rare: a whole shard unreadable).
            return None
        if n:
            out = ex.forward(images, labels, is_train=True)
            loss, probs = float(out["loss"]), out["prob"]
        total, bad = self.ctx.all_sum([n, 0.0 if math.isfinite(loss) else 1.0])
        if bad:
            return float("nan"), probs
        if total == 0:
            return None
        if ex.sync is None:
            self.average_state(n / total)
        else:
            ex.sync.weight = n / total   # the statistics are the global batch's already
        self.reducer.begin(n / total)
        if n:
            ex.backward()
        else:
            for b in ex.grad_buckets():
                b.zero_()
            for name in ex.grad_names:
                self.reducer._ready(name)
        self.reducer.finish()
        update(ex.grads)
        return loss, probs.detach().float().cpu()


    def average_state(self, weight: float) -> None:
        """Make every process's state (batch norm's running statistics, just updated from its own
        shard) the shard-size-weighted mean of all of them: one flat all-reduce, so every rank holds
        bit-identical statistics, as if one process had seen the global batch's shard statistics."""
        ex = self.executor
        if not ex.state:
            return
        names = list(ex.state)
        comm = self.ctx.comm_device
        flat = torch.cat([ex.state[k].reshape(-1).to(comm, torch.float32) for k in names]).mul_(weight)
        with _collective("averaging batch norm running statistics", self.ctx):
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.ctx.group)
        off = 0
        for k in names:
            t = ex.state[k]
            t.copy_(flat[off:off + t.numel()].view(t.shape))
            off += t.numel()


class StatsSync:
    """What the kernels' sync entry points get: `all_sum` adds a tensor up over the processes in place
    (through the communication device), `rank` and `world` say which row of a gathered table is this
    process's, `weight` is this process's share of the global batch."""

    def __init__(self, ctx: DistContext):
        self.ctx, self.weight = ctx, 1.0
        self.rank, self.world = ctx.rank, ctx.world

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        buf = t.to(self.ctx.comm_device)
        with _collective("synchronising batch norm statistics", self.ctx):
            dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.ctx.group)
        if buf is not t:
            t.copy_(buf)
        return t


def allreduce_gradients(executor: Executor, n_local: int, ctx: DistContext) -> None:
    """Replace every gradient (of this process's `n_local` samples' mean loss) with the gradient of the
    mean loss over all processes' samples: a synchronous, unbucketed :class:`GradReducer`."""
    reducer = GradReducer(ctx, executor, bucket_mb=float("inf"), overlap=False)
    try:
        total = ctx.all_sum([n_local])[0]
        reducer.begin(n_local / total if total else 0.0)
        reducer.finish()
    finally:
        executor.on_grad_ready = None
