"""Training as the paper did it: the spec's SGD (or AdamW), schedule, data and checkpoints, on the bound graph.

`Trainer(TrainOptions(...)).run()` compiles the spec, binds it (two GPUs, one GPU with a stream per
tower, or the CPU with the reference backend), draws the initial weights from the spec, and runs
epochs of forward / backward (the graph's own gradient nodes) / SGD step. After every epoch it
evaluates, appends metrics to ``metrics.jsonl``, redraws ``curves.png`` and writes a checkpoint
atomically; Ctrl-C writes one at the current step. ``resume=True`` continues exactly where the last
checkpoint stopped (mid-epoch included): same weights, momentum, learning-rate state, data order,
augmentation and dropout draws as an uninterrupted run.

This module is the epoch loop; the rest of a run has a module each: `options` (what was asked,
`TrainOptions`, and what the run trains with, `RunConfig`), `run_dir` (one run per directory, its lock,
the metrics rewritten on resume), `run_log` (metrics.csv, hparams.yaml, TensorBoard events), `versions`
(runs/<spec name>/version_N without --out), `rank0` (what rank 0 decides under torchrun), `resume` and
`warm_start` (the checkpoint a run continues or starts from), `inputs` (datasets, transforms),
`evaluate`, `progress`, `signals` (SIGTERM saved like Ctrl-C) and `errors`; the optimiser and schedule
are `execution.optim` and `execution.schedule`.

Nothing is lost and nothing wrong is saved: divergence (a non-finite loss, gradient norm or parameter
after any step, or validation loss) stops before a checkpoint, naming the step and the last good one;
a split with no usable image is an error; an interrupt after an epoch was evaluated resumes at the next
epoch (the schedule never steps twice).

Under torchrun (see `execution/distributed.py`) every process trains one replica on its slice of each
global batch (`train.batch_size` stays the global batch) and the gradients are all-reduced before
the update; only rank 0 takes the lock, writes checkpoints, metrics and plots; evaluation is split
across the processes and its counts summed; `resume` restores every process from rank 0's checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import torch

from ...compiler import CompiledNet, compile_spec
from ...compiler.ops.weighted import param_multipliers
from ...compiler.pipeline import plain
from ..data.data_wait import DataWait
from ..execution import distributed as dp
from ..execution.executor import Executor, default_group2ctx, describe_binding
from ..execution.layout import logical_tensors
from ..execution.optim import OPTIMIZERS, build_optimizer
from ..execution.params import init_params
from ..execution.precision import PrecisionError, check_supported, precision
from ..execution.schedule import LRSchedule
from . import checkpoint as ckpt
from . import resume
from .errors import Diverged, NoUsableImages, Terminated, TrainingEnvironmentError, TrainingError
from .evaluate import evaluate_loader
from .inputs import open_inputs
from .metrics import MetricsWriteError, append_metrics, plot_curves, topk_errors
from .options import RunConfig, TrainOptions, check_options, cpu_only, remembered, resolve, train_settings
from .progress import Progress
from .rank0 import on_rank0
from .run_dir import RunDir
from .run_log import open_run_log
from .signals import SignalGuard
from .versions import choose


def _data_seed(seed: int) -> int:
    return seed % (2 ** 32)


@dataclass
class Position:
    """Where a run stands, all that a checkpoint saves of its progress: the epoch being trained
    (0-based), the next batch in it, the steps taken, the finished epochs' records and the current
    epoch's running sums (loss, top-1 and top-5 errors times images, images)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    running: dict = field(default_factory=lambda: _fresh_running())

    def next_epoch(self) -> "Position":
        """The start of the next epoch: its first batch, fresh sums."""
        return replace(self, epoch=self.epoch + 1, batch=0, running=_fresh_running())


class Trainer:
    """One training run of `opts`: `run()` takes the run directory, starts the run (fresh, resumed or
    from another run's weights), binds the network and trains it epoch by epoch."""

    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.log = opts.log
        self.spec_net: CompiledNet = compile_spec(opts.spec)   # `net` is this at the run's batch size
        self.spec_train = train_settings(self.spec_net)   # its train section, defaults filled
        check_options(opts)
        # Under torchrun: this process's place in the job (None in one process). Only rank 0 talks. The
        # process group is set up before a resumed checkpoint can be read: for the dtype asked for.
        asked_dtype = opts.dtype or self.spec_train["dtype"]
        self.dist = dp.from_env("cpu" if cpu_only(opts.device, asked_dtype) else None, opts.dist_timeout)
        self.writes = self.dist is None or self.dist.is_writer
        if not self.writes:
            self.log = lambda s: None
        # --out, or chosen when the run starts (`_choose_run_dir`): a new runs/<spec name>/version_N
        self.run_dir: RunDir | None = RunDir(opts.out, self.log) if opts.out else None
        self._created: str | None = None    # the version directory this run made (removed if left empty)
        self.cfg: RunConfig | None = None   # resolved when the run starts (`_start`): spec, options, checkpoint
        self.init_from: str | None = None   # the checkpoint this run's weights started from (--init-from)
        self.dp: dp.DataParallel | None = None
        self.run_log = None                 # metrics.csv, hparams.yaml, TensorBoard events (rank 0)

    # -- setup -----------------------------------------------------------------------------------------
    def _loader(self, dataset, transform, *, train: bool, epoch: int, start_batch: int = 0):
        from ..data.loader import make_loader

        per_machine = self.dist.local_world if self.dist else 1
        workers = self.opts.workers if self.opts.workers is not None else min(4, (os.cpu_count() or 1) // per_machine)
        return make_loader(dataset, transform, self.cfg.batch_size, shuffle=train,
                           seed=_data_seed(self.cfg.seed), epoch=epoch, num_workers=workers, drop_last=train,
                           start_batch=start_batch, shard=(self.dist.rank, self.dist.world) if self.dist else None,
                           limit_batches=self.cfg.limit_train_batches if train else self.cfg.limit_val_batches,
                           pin_memory=self.real_device.type == "cuda", device=self.real_device)

    def _bind(self, params: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor] | None = None):
        prefer = "cpu" if cpu_only(self.opts.device, self.cfg.dtype) else None
        if self.opts.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available")
        g2c = self.dist.bind(self.net.devices, prefer) if self.dist else default_group2ctx(self.net, prefer)
        self.real_device = next(iter(g2c.values()))
        from ..execution.memory import MemoryLimitError, check_fits

        cfg = self.cfg
        problems = self.net.training_problems(cfg.batch_size if not self.dist or cfg.sync_batchnorm
                                              else max(1, cfg.batch_size // self.dist.world))
        if problems:
            raise TrainingError(f"{self.opts.spec}: {problems[0]}")
        try:
            check_supported(precision(self.cfg.dtype), g2c)
            check_fits(self.net, g2c, for_training=True, dtype=self.cfg.dtype,   # before a parameter is allocated
                       optimizer_buffers=len(OPTIMIZERS[self.cfg.optimizer["type"]].state_prefixes))
        except (MemoryLimitError, PrecisionError) as exc:
            raise TrainingError(str(exc)) from None
        if params is None:
            params = init_params(self.net, self.cfg.seed)
        self.executor = Executor(self.net, g2c, for_training=True, params=params, state=state or None,
                                 dtype=self.cfg.dtype)
        # The inference executor shares the parameter and state tensors: evaluation always sees the
        # current weights and running statistics.
        self.eval_executor = Executor(self.net, g2c, for_training=False, params=self.executor.params,
                                      state=self.executor.state, dtype=self.cfg.dtype)
        mults = {n.name: param_multipliers(n)
                 for n in self.executor.param_nodes}
        self.opt = build_optimizer(self.cfg.optimizer, self.executor.params, mults, momentum=self.cfg.momentum,
                                   weight_decay=self.cfg.weight_decay)
        self.schedule = LRSchedule(self.cfg.lr, self.cfg.schedule, steps_per_epoch=self._steps_per_epoch(),
                                   epochs=self.cfg.epochs)
        where = describe_binding(g2c)
        if self.dist:
            self.dp = dp.DataParallel(self.dist, self.executor, self.opts.bucket_mb, self.opts.overlap,
                                      sync_batchnorm=self.cfg.sync_batchnorm)
            bn = ("; batch norm statistics over the global batch (synchronised)" if self.executor.sync is not None
                  else "; batch norm statistics per process" if self.executor.state else "")
            self.log(f"data parallel: {self.dist.world} processes ({self.dist.backend}), each a shard of every "
                     f"global batch of {self.cfg.batch_size}; {self.dp.reducer.describe()}{bn}; rank 0 binds {where}")
        if self.real_device.type == "cpu":
            self.log(f"no GPU in use: running on the CPU with the ATen reference kernels ({where})")
        else:
            self.log(f"running on {where}")
        if not self.executor.precision.default:
            p = self.executor.precision
            self.log(f"precision {p.name}: " + ("bf16 compute, fp32 master weights, SGD state and loss"
                                                if p.mixed else "parameters, values and gradients in float64"))

    def _steps_per_epoch(self) -> int:
        """The updates in one epoch: full global batches of the training set, at most the batch limit."""
        full = len(self.inputs.train_set) // self.cfg.batch_size
        return min(full, self.cfg.limit_train_batches) if self.cfg.limit_train_batches else full

    # -- checkpoints -----------------------------------------------------------------------------------
    def _state(self, pos: Position, rng: dict) -> dict:
        cfg = self.cfg
        return {
            "epoch": pos.epoch, "batch": pos.batch, "step": pos.step,
            "schedule": self.schedule.state(), "optimizer": self.opt.state(), "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "dtype": cfg.dtype,
            "limit_train_batches": cfg.limit_train_batches,
            "spec_hash": self.net.hash, "spec_name": self.net.name, "spec_path": os.path.abspath(self.opts.spec),
            "spec": plain(self.net.spec), "classes": self.inputs.class_names, "data": self.inputs.root,
            "history": pos.history, "running": pos.running, "epochs": cfg.epochs,
            "data_config": self.inputs.data_config,
            "data_stats": self.inputs.stats.to_json() if self.inputs.stats else None,
            "input_shape": list(self.net.input_shape),
            "rng": rng,
            "init_from": self.init_from,   # provenance: the run this one was started from
            "options": self.remembered,    # --optimizer, --schedule ... a plain --resume continues with
        }

    def _tensors(self, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t = {ckpt.PARAM_PREFIX + k: v for k, v in self.executor.params.items()}
        t.update({ckpt.STATE_PREFIX + k: v for k, v in self.executor.state.items()})
        t.update(self.opt.state_tensors())
        t.update(rng)
        return logical_tensors(t, self.net.graph)   # placement-independent names: conv1.weight, momentum/...

    def save(self, pos: Position, tag: str) -> str | None:
        """Write a checkpoint of the run at `pos` (rank 0 only; None elsewhere)."""
        if not self.writes:
            return None
        rng_tensors, rng_state = ckpt.rng_state()
        return ckpt.save_checkpoint(self.run_dir.ckpt_dir, self._tensors(rng_tensors), self._state(pos, rng_state),
                                    tag=tag, keep=self.opts.keep)

    # -- loop ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            with SignalGuard() as self._signals:
                return self._run()
        except OSError as exc:  # the machine failed us mid-run: one line naming the path
            raise TrainingEnvironmentError(f"{exc.filename or self.opts.out}: {exc.strerror or exc}") from None
        except (ckpt.CheckpointWriteError, MetricsWriteError) as exc:
            raise TrainingEnvironmentError(str(exc)) from None
        except dp.DistributedError:
            if self.dist:
                self.dist.abort()
            raise
        finally:
            if self.run_log is not None:  # the event file's last events
                self.run_log.close()
            if self.run_dir is not None:
                self.run_dir.unlock()
            if self._created is not None:
                with contextlib.suppress(OSError):   # only if the run left nothing in it
                    os.rmdir(self._created)

    def _run(self) -> dict:
        pos, params, state, resumed = self._start()
        self.inputs = open_inputs(self.opts.data, self.opts.synthetic, self.net, self.cfg.batch_size,
                                  self.opts.spec, self.dist, self.run_dir.cache_dir, self.log,
                                  self.opts.allow_empty_classes)
        self._bind(params, state)
        self.run_log = open_run_log(self, pos.step) if self.writes and pos.epoch < self.cfg.epochs else None  # finished: none
        if resumed:
            resume.restore(resumed, self.opt, self.schedule, self.opts.lr, self.log)
            self.log(f"resumed from {resumed.path}: epoch {pos.epoch + 1}, batch {pos.batch}, step {pos.step}")
        self.log(f"training {self.net.name} ({self.opts.spec}) on {self.inputs.root}: {len(self.inputs.train_set)} "
                 f"training / {len(self.inputs.val_set)} validation images, batch {self.cfg.batch_size}, "
                 f"{_plural(self.cfg.epochs, 'epoch')}, {self.schedule.describe()}"
                 f"{', ' + self.opt.kind if self.opt.kind != 'sgd' else ''}; writing to {self.opts.out}")
        last_good = None
        try:
            while pos.epoch < self.cfg.epochs:
                loader, seen, seconds = self._train_epoch(pos)
                pos, last_good = self._end_epoch(pos, loader, seen, seconds)
        except KeyboardInterrupt as stop:
            self._save_interrupted(pos, stop)
            raise
        if self.dist:
            self.dist.close()
        self.log(f"done: {_plural(len(pos.history), 'epoch')}; checkpoint "
                 f"{last_good or ckpt.latest_checkpoint(self.run_dir.ckpt_dir)}; metrics {self.run_dir.metrics_path}; "
                 f"curves {self.run_dir.curves_path}")
        return pos.history[-1] if pos.history else {}

    def _start(self) -> tuple[Position, dict | None, dict | None, resume.Resumed | None]:
        """Claim the run directory, read the checkpoint a resumed run continues, resolve the run's
        configuration (`self.cfg`) and shapes (`self.net`) once, and say where the run starts: its
        position and starting parameters and state (None: the spec's initialisers)."""
        if self.run_dir is None:
            self._choose_run_dir()
        resuming = resume.resuming(self.opts.resume, self.run_dir, self.dist, self.log)
        on_rank0(lambda: self._claim(resuming), self.dist)   # under torchrun only rank 0 owns the run directory
        fresh = self.opts.fresh_optimizer
        resumed = (resume.read_resume(self.run_dir, self.spec_net, self.opts.spec, self.dist, self.log, fresh)
                   if resuming else None)
        self.cfg = resolve(self.opts, self.spec_train, resumed and resumed.state, resumed and resumed.path)
        self.remembered = remembered(self.opts, resumed and resumed.state)
        self.net = self.spec_net.at_batch(self.cfg.batch_size)
        if resumed is None:
            if not self.opts.init_from:
                return Position(), None, None, None
            params, state, self.init_from = resume.warm_start_from(self.opts.init_from, self.net, self.cfg.seed,
                                                                   self.dist, self.log)
            return Position(), params, state, None
        resumed = resume.placed(resumed, self.net, self.cfg.dtype, fresh, self.log, self.cfg.optimizer["type"])
        saved = resumed.state
        self.init_from = saved.get("init_from")
        pos = Position(saved["epoch"], saved["batch"], saved["step"], saved.get("history", []),
                       # rank 0 carries the saved partial sums; the others add their own
                       (saved.get("running") if self.writes else None) or _fresh_running())
        if self.cfg.epochs < pos.epoch or (self.cfg.epochs == pos.epoch and pos.batch):
            raise TrainingError(f"--epochs {self.cfg.epochs}: the run in {self.opts.out} is already at epoch "
                                f"{pos.epoch + (1 if pos.batch else 0)}; ask for more epochs to continue it")
        if self.writes:
            self.run_dir.rewrite_metrics(pos.history)
        return pos, ckpt.params_from(resumed.tensors), ckpt.state_from(resumed.tensors), resumed

    def _choose_run_dir(self) -> None:
        """No --out: rank 0 chooses (and creates) the run's directory for every process (`versions.choose`)."""
        name = self.spec_net.name
        out, created = on_rank0(lambda: choose(name, resume=self.opts.resume, restarted=resume.restarted(),
                                               overwrite=self.opts.overwrite), self.dist)
        if created and self.writes:
            self._created = out
        self.opts = replace(self.opts, out=out)
        self.run_dir = RunDir(out, self.log)
        self.log(f"run directory: {out} (" + ("a new one for this run; --out DIR to choose" if created else
                                              f"the newest run of {name}") + ")")

    def _claim(self, resuming: bool) -> None:
        """Take the run directory's lock and check it may hold this run (rank 0 only)."""
        self.run_dir.lock()
        self.run_dir.claim(resuming, self.opts.overwrite)
        ckpt.remove_stale_temporaries(self.run_dir.ckpt_dir)   # a killed checkpoint write's half file

    def _train_epoch(self, pos: Position) -> tuple[Any, int, float]:
        """Train the rest of epoch `pos.epoch` from batch `pos.batch`, advancing `pos` batch by batch;
        (the loader, images seen, seconds)."""
        loader = DataWait(self._loader(self.inputs.train_set, self.inputs.train_tf, train=True, epoch=pos.epoch,
                                       start_batch=pos.batch))   # the loader, its waits for batches timed
        bar = Progress(len(loader) + pos.batch, pos.batch, f"epoch {pos.epoch + 1}/{self.cfg.epochs}",
                       enabled=self.opts.progress and self.writes, log=self.log, every=self.opts.log_every)
        t0, seen = time.perf_counter(), 0
        for images, labels in loader:
            try:
                self._signals.raise_pending()
                result = self.train_step(images, labels, pos.step)
                if result is None:  # no process had a readable sample: nothing trained
                    pos.batch += 1
                    continue
                loss, probs = result
                if not math.isfinite(loss):
                    raise Diverged(f"the loss became {loss}")
            except Diverged as exc:
                bar.close()
                raise self._diverged(exc.what, f"at epoch {pos.epoch + 1}, batch {pos.batch + 1} (step {pos.step + 1})"
                                     ) from None
            n = labels.shape[0]
            if n:
                e1, e5 = topk_errors(probs, labels, (1, min(5, self.net.classes)))
                for key, value in (("loss", loss), ("top1", e1), ("top5", e5)):
                    pos.running[key] += value * n
                pos.running["n"] += n
                if self.run_log is not None:
                    self.run_log.batch(pos.step + 1, pos.epoch, loss, e1, e5, n, self._lr)
            pos.step += 1
            pos.batch += 1
            seen += n
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.update(loss=pos.running["loss"] / max(pos.running["n"], 1), ips=rate)
        bar.close()
        return loader, seen, time.perf_counter() - t0

    def _end_epoch(self, pos: Position, loader: Any, seen: int, train_time: float) -> tuple[Position, str | None]:
        """The epoch's sums over every process, validation, the schedule's step, the record (metrics.jsonl,
        curves, the epoch's line) and the checkpoint: (the next epoch's position, the checkpoint)."""
        skipped = len(loader.skipped)
        if self.dist:  # the epoch's sums over every process's shards
            r = self.dist.all_sum([pos.running["loss"], pos.running["top1"], pos.running["top5"], pos.running["n"],
                                   seen, skipped])
            pos.running = {"loss": r[0], "top1": r[1], "top5": r[2], "n": int(r[3])}
            seen, skipped = int(r[4]), int(r[5])
        if loader.skipped:
            self.log(loader.skipped_message())
        running, epoch = pos.running, pos.epoch
        if running["n"] == 0:
            raise TrainingError(f"epoch {epoch + 1}: no usable training image in {self.inputs.root}"
                                + (f" ({loader.skipped_message()})" if loader.skipped else ""))
        val = self.evaluate(epoch)
        if not math.isfinite(val["loss"]):
            raise self._diverged(f"the validation loss became {val['loss']}", f"after epoch {epoch + 1} "
                                 f"(step {pos.step})")
        record = {
            "epoch": epoch + 1, "step": pos.step, "lr": self.schedule.lr_at(max(pos.step - 1, 0)),
            "train_loss": running["loss"] / max(running["n"], 1),
            "train_top1_err": running["top1"] / max(running["n"], 1),
            "train_top5_err": running["top5"] / max(running["n"], 1),
            "val_loss": val["loss"], "val_top1_err": val["top1"], "val_top5_err": val["top5"],
            "images_per_second": seen / max(train_time, 1e-9), "train_seconds": train_time,
            "skipped_images": skipped, "data_wait_share": loader.share,
        }
        changed = self.schedule.end_epoch(epoch + 1, val["top1"])
        pos.history.append(record)  # from here on the epoch counts as done (see `_save_interrupted`)
        if self.writes:
            append_metrics(self.run_dir.metrics_path, record)
            self.run_log.epoch(record)
            try:
                plot_curves(self.run_dir.metrics_path, self.run_dir.curves_path)
            except Exception as exc:  # a plotting problem must never cost a training run
                self.log(f"warning: could not draw {self.run_dir.curves_path}: {exc}")
        self.log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} accuracy "
                 f"{1 - record['train_top1_err']:.2%} (top-1 err {record['train_top1_err']:.2%}) | val loss "
                 f"{val['loss']:.4f} accuracy {1 - val['top1']:.2%} (top-1 err {val['top1']:.2%}, top-5 err "
                 f"{val['top5']:.2%}) | {record['images_per_second']:.0f} img/s | {loader.describe()}"
                 + (f" | lr -> {self.schedule.lr:g}" if changed else ""))
        if loader.warning():
            self.log(loader.warning())
        after = pos.next_epoch()
        return after, self.save(after, tag=f"epoch{epoch + 1:04d}")

    def _save_interrupted(self, pos: Position, stop: KeyboardInterrupt) -> None:
        """Ctrl-C or SIGTERM: save the run where it stands, so --resume continues it exactly."""
        what = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        if pos.history and pos.history[-1]["epoch"] == pos.epoch + 1:
            # Stopped after the epoch was evaluated and its schedule step taken: resume at the next
            # epoch, or the resumed run would evaluate it and step the schedule a second time.
            if self.writes and not self.run_dir.logged(pos.epoch + 1):
                append_metrics(self.run_dir.metrics_path, pos.history[-1])
            after = pos.next_epoch()
            path = self.save(after, tag=f"interrupt-e{after.epoch + 1:04d}-b000000")
        else:
            path = self.save(pos, tag=f"interrupt-e{pos.epoch + 1:04d}-b{pos.batch:06d}")
        self.log(f"\n{what}: saved {path}; continue with --resume")

    def _diverged(self, what: str, where: str) -> TrainingError:
        last = ckpt.latest_checkpoint(self.run_dir.ckpt_dir)
        lr = self.schedule.lr
        advice = (f"continue from it with a lower learning rate: alexnetc train --resume --out {self.opts.out} "
                  f"--lr {lr / 10:g}") if last else f"start again with a lower learning rate (--lr {lr / 10:g})"
        if self.run_log is not None:
            self.run_log.diverged(f"{where}: {what}")
        return TrainingError(f"training diverged {where}: {what}; stopped without saving. The last good checkpoint "
                             f"is {last or 'none (nothing was saved yet)'}; {advice}")

    def train_step(self, images: torch.Tensor, labels: torch.Tensor,
                   step: int) -> tuple[float, torch.Tensor] | None:
        ex = self.executor
        ex.seed, ex.step_count = self.cfg.seed, step
        self._lr = self.schedule.lr_at(step)   # this update's learning rate (warm-up, cosine)
        if self.dp is not None:
            return self.dp.train_step(images, labels, self.cfg.batch_size, self._update)
        out = ex.forward(images, labels, is_train=True)
        loss = float(out["loss"])
        if not math.isfinite(loss):
            return loss, out["prob"]
        ex.backward()
        self._update(ex.grads)
        return loss, out["prob"].detach().float().cpu()

    def _update(self, grads: Mapping[str, torch.Tensor]) -> None:
        """One optimizer step, refused (Diverged) before it when the gradient norm is not finite and reported
        after it when a parameter became non-finite. Under data parallelism `grads` are the all-reduced
        ones and every process applies the same update, so every process reaches the same verdict."""
        norm = _global_norm(grads.values())
        if not math.isfinite(norm):
            raise Diverged(f"the gradient norm became {norm}")
        self.opt.step(grads, self._lr)
        bad = _first_non_finite(self.executor.params)
        if bad is not None:
            raise Diverged(f"parameter {bad} became non-finite after the update")

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict:
        loader = self._loader(self.inputs.val_set, self.inputs.eval_tf, train=False, epoch=0)
        bar = Progress(len(loader), 0, f"validating {epoch + 1}/{self.cfg.epochs}",
                       enabled=self.opts.progress and self.writes, log=self.log, every=self.opts.log_every)
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
