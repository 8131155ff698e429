"""Training as the paper did it: the spec's SGD, schedule, data and checkpoints, on the bound graph.

`Trainer(TrainOptions(...)).run()` compiles the spec, binds it (two GPUs, one GPU with a stream per
tower, or the CPU with the reference backend), draws the initial weights from the spec, and runs
epochs of forward / backward (the graph's own gradient nodes) / SGD step. After every epoch it
evaluates, appends metrics to ``metrics.jsonl``, redraws ``curves.png`` and writes a checkpoint
atomically; Ctrl-C writes one at the current step. ``resume=True`` continues exactly where the last
checkpoint stopped (mid-epoch included): same weights, momentum, learning-rate state, data order,
augmentation and dropout draws as an uninterrupted run.

Nothing is lost and nothing wrong is saved:

* one run, one directory: a directory that already holds a run's checkpoints or metrics is refused
  unless ``resume`` (continue it) or ``overwrite`` (delete its checkpoints, metrics and curves) is set;
  ``OUT/.alexnetc.lock`` holds the owner's pid and keeps a second training out (a lock whose process is
  gone is taken over, with a message);
* ``resume`` uses the newest checkpoint that verifies and is checked against the spec (fields, spec hash,
  every tensor's name, dtype and shape); newer ones that fail are named with their problem; with none
  that verifies it refuses instead of starting over. ``metrics.jsonl`` is rewritten from the
  checkpoint's history, so a crash never leaves duplicated epochs. ``lr`` and ``epochs`` apply from the
  resume point; a different seed, batch size, batch limit or dtype is refused;
* divergence is caught before it is saved: a non-finite loss, gradient norm or parameter after any step
  (the last of an epoch included), or a non-finite validation loss, stops with the step and the last
  good checkpoint named. An epoch or validation split with no usable image is an error;
* SIGTERM saves like Ctrl-C (then the CLI exits 143); a second signal exits at once.

Under torchrun (see `execution/distributed.py`) every process trains one replica on its slice of each
global batch (`train.batch_size` stays the global batch) and the gradients are all-reduced before
the update; only rank 0 takes the lock, writes checkpoints, metrics and plots; evaluation is split
across the processes and its counts summed, and `resume` restores every process from the checkpoint
rank 0 picked and verified.
"""
from __future__ import annotations

import math
import os
import time
from typing import Iterable, Mapping

import torch

from ...compiler import CompiledNet, compile_spec
from ...compiler.ops.weighted import param_multipliers
from ...compiler.pipeline import plain
from ...compiler.program import TRAIN_DTYPES
from ..execution import distributed as dp
from ..execution.executor import Executor, default_group2ctx, describe_binding
from ..execution.layout import logical_tensors
from ..execution.optim import SGD, LRSchedule
from ..execution.params import init_params
from ..execution.precision import PrecisionError, check_supported, precision
from . import checkpoint as ckpt
from . import resume
from .errors import Diverged, NoUsableImages, Terminated, TrainingEnvironmentError, TrainingError
from .evaluate import Progress, evaluate_loader
from .inputs import open_inputs
from .metrics import MetricsWriteError, append_metrics, plot_curves, topk_errors
from .options import TrainOptions, check_options
from .run_dir import RunDir
from .signals import SignalGuard


def _data_seed(seed: int) -> int:
    return seed % (2 ** 32)


class Trainer:
    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.log = opts.log
        self.init_from: str | None = None   # the checkpoint this run's weights started from (--init-from)
        spec_net = compile_spec(opts.spec)
        tr = spec_net.settings("train")
        check_options(opts)
        self.dtype = opts.dtype or tr.get("dtype", TRAIN_DTYPES[0])
        # Under torchrun: this process's place in the job (None in one process). Only rank 0 talks.
        self.dist = dp.from_env("cpu" if self._cpu_only() else None, opts.dist_timeout)
        self.writes = self.dist is None or self.dist.is_writer
        if not self.writes:
            self.log = lambda s: None
        self.dp: dp.DataParallel | None = None
        self.batch_size = opts.batch_size or tr.get("batch_size", 128)
        self.net: CompiledNet = spec_net.at_batch(self.batch_size)
        self.epochs = opts.epochs or tr.get("epochs", 90)
        self.seed = opts.seed if opts.seed is not None else tr.get("seed", 0)
        self.base_lr = opts.lr or tr.get("lr", 0.01)
        self.momentum = tr.get("momentum", 0.9)
        self.sync_batchnorm = bool(opts.sync_batchnorm if opts.sync_batchnorm is not None
                                   else tr.get("sync_batchnorm", False))
        self.weight_decay = tr.get("weight_decay", 0.0005)
        self.schedule_cfg = tr.get("schedule", {"type": "constant"})
        self.limit_train = opts.limit_train_batches or tr.get("limit_train_batches")
        self.limit_val = opts.limit_val_batches or tr.get("limit_val_batches")
        self.out = opts.out
        if opts.resume and opts.overwrite:
            raise TrainingError("--resume continues the run in --out, --overwrite replaces it: give one of them")
        self.run_dir = RunDir(self.out, self.log)
        self.metrics_path, self.curves_path, self.ckpt_dir = (self.run_dir.metrics_path, self.run_dir.curves_path,
                                                              self.run_dir.ckpt_dir)

    # -- setup -----------------------------------------------------------------------------------------
    def _cpu_only(self) -> bool:
        """--device cpu; or float64 with --device auto (float64 runs only on the CPU reference kernels)."""
        return self.opts.device == "cpu" or (self.opts.device == "auto" and self.dtype == "float64")

    def _loader(self, dataset, transform, *, train: bool, epoch: int, start_batch: int = 0):
        from ..data.loader import make_loader

        per_machine = self.dist.local_world if self.dist else 1
        workers = self.opts.workers if self.opts.workers is not None else min(4, (os.cpu_count() or 1) // per_machine)
        return make_loader(dataset, transform, self.batch_size, shuffle=train,
                           seed=_data_seed(self.seed), epoch=epoch, num_workers=workers, drop_last=train,
                           start_batch=start_batch, shard=(self.dist.rank, self.dist.world) if self.dist else None,
                           limit_batches=self.limit_train if train else self.limit_val,
                           pin_memory=self.real_device.type == "cuda")

    def _bind(self, params: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor] | None = None):
        prefer = "cpu" if self._cpu_only() else None
        if self.opts.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available")
        g2c = self.dist.bind(self.net.devices, prefer) if self.dist else default_group2ctx(self.net, prefer)
        self.real_device = next(iter(g2c.values()))
        from ..execution.memory import MemoryLimitError, check_fits

        try:
            check_supported(precision(self.dtype), g2c)
            check_fits(self.net, g2c, for_training=True, dtype=self.dtype)  # before a parameter is allocated
        except (MemoryLimitError, PrecisionError) as exc:
            raise TrainingError(str(exc)) from None
        if params is None:
            params = init_params(self.net, self.seed)
        self.executor = Executor(self.net, g2c, for_training=True, params=params, state=state or None,
                                 dtype=self.dtype)
        # The inference executor shares the parameter and state tensors: evaluation always sees the
        # current weights and running statistics.
        self.eval_executor = Executor(self.net, g2c, for_training=False, params=self.executor.params,
                                      state=self.executor.state, dtype=self.dtype)
        mults = {n.name: param_multipliers(n)
                 for n in self.executor.param_nodes}
        self.opt = SGD(self.executor.params, mults, momentum=self.momentum, weight_decay=self.weight_decay)
        self.schedule = LRSchedule(self.base_lr, self.schedule_cfg)
        where = describe_binding(g2c)
        if self.dist:
            self.dp = dp.DataParallel(self.dist, self.executor, self.opts.bucket_mb, self.opts.overlap,
                                      sync_batchnorm=self.sync_batchnorm)
            bn = ("; batch norm statistics over the global batch (synchronised)" if self.executor.sync is not None
                  else "; batch norm statistics per process" if self.executor.state else "")
            self.log(f"data parallel: {self.dist.world} processes ({self.dist.backend}), each a shard of every "
                     f"global batch of {self.batch_size}; {self.dp.reducer.describe()}{bn}; rank 0 binds {where}")
        if self.real_device.type == "cpu":
            self.log(f"no GPU in use: running on the CPU with the ATen reference kernels ({where})")
        else:
            self.log(f"running on {where}")
        if not self.executor.precision.default:
            p = self.executor.precision
            self.log(f"precision {p.name}: " + ("bf16 compute, fp32 master weights, SGD state and loss"
                                                if p.mixed else "parameters, values and gradients in float64"))

    # -- checkpoints -----------------------------------------------------------------------------------
    def _state(self, epoch: int, batch: int, step: int, history: list, running: dict, rng: dict) -> dict:
        return {
            "epoch": epoch, "batch": batch, "step": step,
            "schedule": self.schedule.state(), "seed": self.seed, "batch_size": self.batch_size,
            "dtype": self.dtype,
            "limit_train_batches": self.limit_train,
            "spec_hash": self.net.hash, "spec_name": self.net.name, "spec_path": os.path.abspath(self.opts.spec),
            "spec": plain(self.net.spec), "classes": self.inputs.class_names, "data": self.inputs.root,
            "history": history, "running": running, "epochs": self.epochs,
            "data_config": self.inputs.data_config,
            "data_stats": self.inputs.stats.to_json() if self.inputs.stats else None,
            "input_shape": list(self.net.input_shape),
            "rng": rng,
            "init_from": self.init_from,   # provenance: the run this one was started from
        }

    def _tensors(self, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t = {ckpt.PARAM_PREFIX + k: v for k, v in self.executor.params.items()}
        t.update({ckpt.STATE_PREFIX + k: v for k, v in self.executor.state.items()})
        t.update(self.opt.state_tensors())
        t.update(rng)
        return logical_tensors(t, self.net.graph)   # placement-independent names: conv1.weight, momentum/...

    def save(self, epoch: int, batch: int, step: int, history: list, running: dict, tag: str) -> str | None:
        if not self.writes:
            return None
        rng_tensors, rng_state = ckpt.rng_state()
        return ckpt.save_checkpoint(self.ckpt_dir, self._tensors(rng_tensors),
                                    self._state(epoch, batch, step, history, running, rng_state),
                                    tag=tag, keep=self.opts.keep)

    def _load_resume(self) -> tuple[str, dict, dict]:
        """The checkpoint to resume from, verified and placed for this run (see resume.py)."""
        r = resume.read_resume(self.ckpt_dir, self.net, self.opts.spec, self.dist, self.log)
        self._continue_run(r.path, r.state)
        self._resumed = r
        return r.path, resume.placed(r, self.net, self.dtype), r.state

    def _warm_start(self) -> tuple[dict, dict]:
        """--init-from: the starting parameters and state (see resume.warm_start_from)."""
        params, state, self.init_from = resume.warm_start_from(self.opts.init_from, self.net, self.seed, self.dist,
                                                               self.log)
        return params, state

    # -- loop ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        if self.writes:  # under torchrun only rank 0 owns the run directory
            self.run_dir.lock()
        try:
            with SignalGuard() as self._signals:
                return self._run()
        except OSError as exc:  # the machine failed us mid-run: one line naming the path
            raise TrainingEnvironmentError(f"{exc.filename or self.out}: {exc.strerror or exc}") from None
        except (ckpt.CheckpointWriteError, MetricsWriteError) as exc:
            raise TrainingEnvironmentError(str(exc)) from None
        except dp.DistributedError:
            if self.dist:
                self.dist.abort()
            raise
        finally:
            self.run_dir.unlock()

    def _run(self) -> dict:
        self.resuming = resume.resuming(self.opts.resume, self.run_dir, self.dist, self.log)
        if self.writes:
            self.run_dir.claim(self.resuming, self.opts.overwrite)
        start_epoch, start_batch, step, history, running = 0, 0, 0, [], _fresh_running()
        params = bn_state = None
        resumed = None
        if self.resuming:
            path, tensors, state = self._load_resume()
            params = ckpt.params_from(tensors)
            bn_state = ckpt.state_from(tensors)
            resumed = (path, tensors, state)
            self.init_from = state.get("init_from")
            start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
            history, running = state.get("history", []), state.get("running") or _fresh_running()
            if not self.writes:  # rank 0 carries the saved partial sums; the others add their own
                running = _fresh_running()
            if self.epochs < start_epoch or (self.epochs == start_epoch and start_batch):
                raise TrainingError(f"--epochs {self.epochs}: the run in {self.out} is already at epoch "
                                    f"{start_epoch + (1 if start_batch else 0)}; ask for more epochs to continue it")
            if self.writes:
                self.run_dir.rewrite_metrics(history)
        elif self.opts.init_from:
            params, bn_state = self._warm_start()
        self.inputs = open_inputs(self.opts.data, self.opts.synthetic, self.net, self.batch_size, self.opts.spec,
                                  self.dist, self.run_dir.cache_dir, self.log)
        if len(self.inputs.train_set) < self.batch_size:
            raise TrainingError(f"{len(self.inputs.train_set)} training images make no full batch of {self.batch_size}: "
                                f"lower the batch size (--batch) or give more data")
        self._bind(params, bn_state)
        if resumed:
            path, tensors, state = resumed
            resume.restore(self._resumed, tensors, self.opt, self.schedule, self.opts.lr, self.log)
            self.log(f"resumed from {path}: epoch {start_epoch + 1}, batch {start_batch}, step {step}")
        self.log(f"training {self.net.name} ({self.opts.spec}) on {self.inputs.root}: {len(self.inputs.train_set)} "
                 f"training / {len(self.inputs.val_set)} validation images, batch {self.batch_size}, "
                 f"{_plural(self.epochs, 'epoch')}, lr {self.schedule.lr:g}; writing to {self.out}")

        epoch = start_epoch
        batch_i = start_batch
        last_good = None
        try:
            for epoch in range(start_epoch, self.epochs):
                loader = self._loader(self.inputs.train_set, self.inputs.train_tf, train=True, epoch=epoch,
                                      start_batch=start_batch if epoch == start_epoch else 0)
                batch_i = start_batch if epoch == start_epoch else 0
                if epoch != start_epoch:
                    running = _fresh_running()
                bar = Progress(len(loader) + batch_i, batch_i, f"epoch {epoch + 1}/{self.epochs}",
                                enabled=self.opts.progress and self.writes)
                t0, seen = time.perf_counter(), 0
                for images, labels in loader:
                    try:
                        self._signals.raise_pending()
                        result = self.train_step(images, labels, step)
                        if result is None:  # no process had a readable sample: nothing trained
                            batch_i += 1
                            continue
                        loss, probs = result
                        if not math.isfinite(loss):
                            raise Diverged(f"the loss became {loss}")
                    except Diverged as exc:
                        bar.close()
                        raise self._diverged(exc.what, f"at epoch {epoch + 1}, batch {batch_i + 1} (step {step + 1})"
                                             ) from None
                    n = labels.shape[0]
                    if n:
                        e1, e5 = topk_errors(probs, labels, (1, min(5, self.net.classes)))
                        running["loss"] += loss * n
                        running["top1"] += e1 * n
                        running["top5"] += e5 * n
                        running["n"] += n
                    step += 1
                    batch_i += 1
                    seen += n
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(loss=running["loss"] / max(running["n"], 1), ips=rate)
                bar.close()
                train_time = time.perf_counter() - t0
                skipped = len(loader.skipped)
                if self.dist:  # the epoch's sums over every process's shards
                    r = self.dist.all_sum([running["loss"], running["top1"], running["top5"], running["n"],
                                           seen, skipped])
                    running = {"loss": r[0], "top1": r[1], "top5": r[2], "n": int(r[3])}
                    seen, skipped = int(r[4]), int(r[5])
                if loader.skipped:
                    self.log(loader.skipped_message())
                if running["n"] == 0:
                    raise TrainingError(f"epoch {epoch + 1}: no usable training image in {self.inputs.root}"
                                        + (f" ({loader.skipped_message()})" if loader.skipped else ""))
                val = self.evaluate(epoch)
                if not math.isfinite(val["loss"]):
                    raise self._diverged(f"the validation loss became {val['loss']}", f"after epoch {epoch + 1} "
                                         f"(step {step})")
                record = {
                    "epoch": epoch + 1, "step": step, "lr": self.schedule.lr,
                    "train_loss": running["loss"] / max(running["n"], 1),
                    "train_top1_err": running["top1"] / max(running["n"], 1),
                    "train_top5_err": running["top5"] / max(running["n"], 1),
                    "val_loss": val["loss"], "val_top1_err": val["top1"], "val_top5_err": val["top5"],
                    "images_per_second": seen / max(train_time, 1e-9), "train_seconds": train_time,
                    "skipped_images": skipped,
                }
                changed = self.schedule.end_epoch(epoch + 1, val["top1"])
                history.append(record)  # from here on the epoch counts as done (see the interrupt below)
                if self.writes:
                    append_metrics(self.metrics_path, record)
                    try:
                        plot_curves(self.metrics_path, self.curves_path)
                    except Exception as exc:  # a plotting problem must never cost a training run
                        self.log(f"warning: could not draw {self.curves_path}: {exc}")
                self.log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} accuracy "
                         f"{1 - record['train_top1_err']:.2%} (top-1 err {record['train_top1_err']:.2%}) | val loss "
                         f"{val['loss']:.4f} accuracy {1 - val['top1']:.2%} (top-1 err {val['top1']:.2%}, top-5 err "
                         f"{val['top5']:.2%}) | {record['images_per_second']:.0f} img/s"
                         + (f" | lr -> {self.schedule.lr:g}" if changed else ""))
                last_good = self.save(epoch + 1, 0, step, history, _fresh_running(), tag=f"epoch{epoch + 1:04d}")
                start_batch = 0
        except KeyboardInterrupt as stop:
            what = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
            if history and history[-1]["epoch"] == epoch + 1:
                # Stopped after the epoch was evaluated and its schedule step taken: resume at the next
                # epoch, or the resumed run would evaluate it and step the schedule a second time.
                if self.writes and not self.run_dir.logged(epoch + 1):
                    append_metrics(self.metrics_path, history[-1])
                path = self.save(epoch + 1, 0, step, history, _fresh_running(),
                                 tag=f"interrupt-e{epoch + 2:04d}-b000000")
            else:
                path = self.save(epoch, batch_i, step, history, running,
                                 tag=f"interrupt-e{epoch + 1:04d}-b{batch_i:06d}")
            self.log(f"\n{what}: saved {path}; continue with --resume")
            raise
        if self.dist:
            self.dist.close()
        final = history[-1] if history else {}
        self.log(f"done: {_plural(len(history), 'epoch')}; checkpoint {last_good or ckpt.latest_checkpoint(self.ckpt_dir)}; "
                 f"metrics {self.metrics_path}; curves {self.curves_path}")
        return final

    def _diverged(self, what: str, where: str) -> TrainingError:
        last = ckpt.latest_checkpoint(self.ckpt_dir)
        lr = self.schedule.lr
        advice = (f"continue from it with a lower learning rate: alexnetc train --resume --out {self.out} "
                  f"--lr {lr / 10:g}") if last else f"start again with a lower learning rate (--lr {lr / 10:g})"
        return TrainingError(f"training diverged {where}: {what}; stopped without saving. The last good checkpoint "
                             f"is {last or 'none (nothing was saved yet)'}; {advice}")

    def _continue_run(self, path: str, state: dict) -> None:
        """Resume with the seed, batch size, dtype and epoch count the run was started with, unless given;
        a different seed, batch size or dtype would not continue the run (other data order, other
        batches, other arithmetic)."""
        # A checkpoint from before train.dtype existed was trained in float32.
        saved_state = {**state, "dtype": state.get("dtype") or TRAIN_DTYPES[0]}
        for key, given in (("seed", self.opts.seed), ("batch_size", self.opts.batch_size),
                           ("dtype", self.opts.dtype)):
            saved = saved_state.get(key)
            if saved is None:
                continue
            if given is not None and given != saved:
                raise TrainingError(f"{path}: this run was trained with {key} {saved}; cannot resume it with "
                                    f"{key} {given} (leave the option out to resume)")
            setattr(self, key, saved)
        self.net = self.net.at_batch(self.batch_size)
        saved_limit = state.get("limit_train_batches")
        given = self.opts.limit_train_batches
        if given is not None and given != saved_limit:
            raise TrainingError(f"{path}: this run was trained with {saved_limit or 'no'} limit on training batches "
                                f"per epoch; cannot resume it with --limit-train-batches {given} (its epochs would "
                                "end elsewhere; leave the option out to resume)")
        if saved_limit:
            self.limit_train = saved_limit  # epochs must end where they ended before
        if self.opts.epochs is None and state.get("epochs"):
            self.epochs = state["epochs"]

    def train_step(self, images: torch.Tensor, labels: torch.Tensor,
                   step: int) -> tuple[float, torch.Tensor] | None:
        ex = self.executor
        ex.seed, ex.step_count = self.seed, step
        if self.dp is not None:
            return self.dp.train_step(images, labels, self.batch_size, self._update)
        out = ex.forward(images, labels, is_train=True)
        loss = float(out["loss"])
        if not math.isfinite(loss):
            return loss, out["prob"]
        ex.backward()
        self._update(ex.grads)
        return loss, out["prob"].detach().float().cpu()

    def _update(self, grads: Mapping[str, torch.Tensor]) -> None:
        """One SGD step, refused (Diverged) before it when the gradient norm is not finite and reported
        after it when a parameter became non-finite. Under data parallelism `grads` are the all-reduced
        ones and every process applies the same update, so every process reaches the same verdict."""
        norm = _global_norm(grads.values())
        if not math.isfinite(norm):
            raise Diverged(f"the gradient norm became {norm}")
        self.opt.step(grads, self.schedule.lr)
        bad = _first_non_finite(self.executor.params)
        if bad is not None:
            raise Diverged(f"parameter {bad} became non-finite after the update")

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict:
        loader = self._loader(self.inputs.val_set, self.inputs.eval_tf, train=False, epoch=0)
        bar = Progress(len(loader), 0, f"validating {epoch + 1}/{self.epochs}",
                        enabled=self.opts.progress and self.writes)
        try:
            res = evaluate_loader(self.eval_executor, loader, self.net.classes, progress=bar,
                                  allow_empty=self.dist is not None)
        finally:
            bar.close()
        if self.dist:  # each process evaluated its slices: sum the loss and the top-1/top-5 counts
            n = res["n"]
            t = self.dist.all_sum([res["loss"] * n, round(res["top1"] * n), round(res["top5"] * n), n])
            if not t[3]:
                raise NoUsableImages("the validation split yielded no readable image")
            res = {"loss": t[0] / t[3], "top1": t[1] / t[3], "top5": t[2] / t[3], "n": int(t[3])}
        return res


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _global_norm(tensors: Iterable[torch.Tensor]) -> float:
    """The L2 norm of all tensors together (inf/nan when any element is): one host sync per device."""
    per_device: dict = {}
    for t in tensors:
        per_device.setdefault(t.device, []).append(torch.linalg.vector_norm(t.detach().float()))
    total = 0.0
    for norms in per_device.values():
        total += float(torch.linalg.vector_norm(torch.stack(norms)).cpu()) ** 2
    return math.sqrt(total) if math.isfinite(total) else total


def _first_non_finite(params) -> str | None:
    """The name of the first parameter holding a NaN or infinity (None: all finite); one host sync per
    device when all are finite."""
    per_device: dict = {}
    for name, t in params.items():
        per_device.setdefault(t.device, []).append((name, t))
    for items in per_device.values():
        if bool(torch.stack([torch.isfinite(t).all() for _, t in items]).all()):
            continue
        for name, t in items:
            if not bool(torch.isfinite(t).all()):
                return name
    return None


def _fresh_running() -> dict:
    return {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0}
