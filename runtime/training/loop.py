"""Training as the paper did it: the spec's SGD, schedule, data and checkpoints, on the bound graph.

`Trainer(TrainOptions(...)).run()` compiles the spec, binds it (two GPUs, one GPU with a stream per
tower, or the CPU with the reference backend), draws the initial weights from the spec, and runs
epochs of forward / backward (the graph's own gradient nodes) / SGD step. After every epoch it
evaluates, appends metrics to ``metrics.jsonl``, redraws ``curves.png`` and writes a checkpoint
atomically; Ctrl-C writes one at the current step. ``resume=True`` continues exactly where the last
checkpoint stopped (mid-epoch included): same weights, momentum, learning-rate state, data order,
augmentation and dropout draws as an uninterrupted run. A non-finite loss stops training with the last
good checkpoint kept.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ...compiler import CompiledNet, compile_spec
from ...compiler.ops.weighted import param_multipliers
from ...compiler.pipeline import compile_dict, plain
from ..execution.executor import Executor, default_group2ctx, describe_binding
from ..execution.layout import LayoutError, logical_tensors, network_hash, placed_tensors
from ..execution.optim import SGD, LRSchedule
from ..execution.params import init_params
from . import checkpoint as ckpt
from .metrics import append_metrics, plot_curves, topk_errors


class TrainingError(Exception):
    """Training cannot go on (non-finite loss, mismatched checkpoint); the message says why."""


@dataclass
class TrainOptions:
    spec: str
    data: str | None = None
    out: str = "runs/alexnetc"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"                 # auto | cpu | cuda
    workers: int | None = None
    resume: bool = False
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    seed: int | None = None
    synthetic: int | None = None         # N random images per epoch instead of a dataset (benchmarks)
    progress: bool = True
    keep: int = 3
    log: Callable[[str], None] = field(default=lambda s: print(s, flush=True))


def _check_options(opts: TrainOptions) -> None:
    """Options out of range are errors (0 is not "use the spec's value")."""
    for name, lo in (("batch_size", 1), ("epochs", 1), ("workers", 0), ("limit_train_batches", 1),
                     ("limit_val_batches", 1), ("synthetic", 1)):
        v = getattr(opts, name)
        if v is not None and v < lo:
            raise TrainingError(f"{name} {v}: must be at least {lo}")
    if opts.lr is not None and not (0 < opts.lr < float("inf")):
        raise TrainingError(f"lr {opts.lr:g}: must be a positive number")


def _data_seed(seed: int) -> int:
    return seed % (2 ** 32)


class SyntheticDataset:
    """Deterministic random images (uint8 HWC) with random labels: for timing without a dataset."""

    def __init__(self, n: int, shape: tuple[int, int, int], classes: int, seed: int = 0):
        self.n, self.shape, self.classes, self.seed = n, shape, classes, seed
        self.channels = shape[0]
        self.class_names = [f"class{i}" for i in range(classes)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng((self.seed, i))
        c, h, w = self.shape
        return rng.integers(0, 256, (h, w, c), dtype=np.uint8), int(rng.integers(self.classes))


class Trainer:
    def __init__(self, opts: TrainOptions):
        self.opts = opts
        self.log = opts.log
        spec_net = compile_spec(opts.spec)
        tr = spec_net.settings("train")
        _check_options(opts)
        self.batch_size = opts.batch_size or tr.get("batch_size", 128)
        self.net: CompiledNet = spec_net.at_batch(self.batch_size)
        self.epochs = opts.epochs or tr.get("epochs", 90)
        self.seed = opts.seed if opts.seed is not None else tr.get("seed", 0)
        self.base_lr = opts.lr or tr.get("lr", 0.01)
        self.momentum = tr.get("momentum", 0.9)
        self.weight_decay = tr.get("weight_decay", 0.0005)
        self.schedule_cfg = tr.get("schedule", {"type": "constant"})
        self.limit_train = opts.limit_train_batches or tr.get("limit_train_batches")
        self.limit_val = opts.limit_val_batches or tr.get("limit_val_batches")
        self.out = opts.out
        os.makedirs(self.out, exist_ok=True)
        self.metrics_path = os.path.join(self.out, "metrics.jsonl")
        self.curves_path = os.path.join(self.out, "curves.png")
        self.ckpt_dir = os.path.join(self.out, "checkpoints")

    # -- setup -----------------------------------------------------------------------------------------
    def _datasets(self):
        from ..data.augment import build_transforms, dataset_stats
        from ..data.datasets import find_default_dataset, open_dataset

        c, h, w = self.net.input_shape
        if self.opts.synthetic:
            train = SyntheticDataset(self.opts.synthetic, (c, h, w), self.net.classes, 1)
            val = SyntheticDataset(max(self.batch_size, self.opts.synthetic // 10), (c, h, w), self.net.classes, 2)
            data_cfg = {k: v for k, v in self.net.settings("data").items() if k in ("mirror", "mean", "std")}
            data_cfg.setdefault("mean", [127.5] * c)
            data_cfg.setdefault("std", [64.0] * c)
            self.data_root = "synthetic"
        else:
            root = self.opts.data or find_default_dataset()
            self.data_root = root
            if not self.opts.data:
                self.log(f"no --data given: using {root}. To train on your own data pass --data DIR: "
                         "MNIST-style IDX files, or an ImageNet-style tree DIR/train/<class>/*.jpg and "
                         "DIR/val/<class>/* (with a spec whose input and classes fit it)")
            train = open_dataset(root, "train", channels=c)
            val = open_dataset(root, "val", channels=c, classes=getattr(train, "class_names", None))
            data_cfg = self.net.settings("data")
        names = list(getattr(train, "class_names", None) or [str(i) for i in range(self.net.classes)])
        if len(names) != self.net.classes:
            # IDX files carry no class list: their labels decide whether they fit the spec.
            labels = getattr(train, "labels", None)
            top = int(np.max(labels)) + 1 if labels is not None and len(labels) else len(names)
            if top > self.net.classes or len(names) < self.net.classes:
                raise TrainingError(f"the dataset at {self.data_root} has {max(top, len(names))} classes but "
                                    f"the spec {self.opts.spec} has classes: {self.net.classes}")
            names = names[:self.net.classes]
        self.class_names = names
        self.data_cfg = dict(data_cfg)
        self.stats = None
        if data_cfg.get("mean") is None or (data_cfg.get("pca_lighting", 0) > 0 and c == 3):
            self.stats = dataset_stats(train, cache_dir=os.path.join(self.out, "cache"))
        self.train_tf, self.eval_tf = build_transforms(data_cfg, train, input_shape=(c, h, w), stats=self.stats)
        self.train_set, self.val_set = train, val

    def _loader(self, dataset, transform, *, train: bool, epoch: int, start_batch: int = 0):
        from ..data.loader import make_loader

        workers = self.opts.workers if self.opts.workers is not None else min(4, os.cpu_count() or 1)
        return make_loader(dataset, transform, self.batch_size, shuffle=train,
                           seed=_data_seed(self.seed), epoch=epoch, num_workers=workers, drop_last=train,
                           start_batch=start_batch,
                           limit_batches=self.limit_train if train else self.limit_val,
                           pin_memory=self.real_device.type == "cuda")

    def _bind(self, params: dict[str, torch.Tensor] | None):
        prefer = "cpu" if self.opts.device == "cpu" else None
        if self.opts.device == "cuda" and not torch.cuda.is_available():
            raise TrainingError("--device cuda: no CUDA device is available")
        g2c = default_group2ctx(self.net, prefer)
        self.real_device = next(iter(g2c.values()))
        if params is None:
            params = init_params(self.net, self.seed)
        self.executor = Executor(self.net, g2c, for_training=True, params=params)
        # The inference executor shares the parameter tensors: evaluation always sees current weights.
        self.eval_executor = Executor(self.net, g2c, for_training=False, params=self.executor.params)
        mults = {n.name: param_multipliers(n)
                 for n in self.executor.param_nodes}
        self.opt = SGD(self.executor.params, mults, momentum=self.momentum, weight_decay=self.weight_decay)
        self.schedule = LRSchedule(self.base_lr, self.schedule_cfg)
        where = describe_binding(g2c)
        if self.real_device.type == "cpu":
            self.log(f"no GPU in use: running on the CPU with the ATen reference kernels ({where})")
        else:
            self.log(f"running on {where}")

    # -- checkpoints -----------------------------------------------------------------------------------
    def _state(self, epoch: int, batch: int, step: int, history: list, running: dict, rng: dict) -> dict:
        return {
            "epoch": epoch, "batch": batch, "step": step,
            "schedule": self.schedule.state(), "seed": self.seed, "batch_size": self.batch_size,
            "limit_train_batches": self.limit_train,
            "spec_hash": self.net.hash, "spec_name": self.net.name, "spec_path": os.path.abspath(self.opts.spec),
            "spec": plain(self.net.spec), "classes": self.class_names, "data": str(self.data_root),
            "history": history, "running": running, "epochs": self.epochs,
            "data_config": self.data_cfg, "data_stats": self.stats.to_json() if self.stats else None,
            "input_shape": list(self.net.input_shape),
            "rng": rng,
        }

    def _tensors(self, rng: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t = {ckpt.PARAM_PREFIX + k: v for k, v in self.executor.params.items()}
        t.update(self.opt.state_tensors())
        t.update(rng)
        return logical_tensors(t, self.net.graph)   # placement-independent names: conv1.weight, momentum/...

    def save(self, epoch: int, batch: int, step: int, history: list, running: dict, tag: str) -> str:
        rng_tensors, rng_state = ckpt.rng_state()
        return ckpt.save_checkpoint(self.ckpt_dir, self._tensors(rng_tensors),
                                    self._state(epoch, batch, step, history, running, rng_state),
                                    tag=tag, keep=self.opts.keep)

    # -- loop ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        start_epoch, start_batch, step, history, running = 0, 0, 0, [], _fresh_running()
        params = None
        resumed = None
        if self.opts.resume:
            path = ckpt.latest_checkpoint(self.ckpt_dir)
            if path is None:
                self.log(f"--resume: no checkpoint in {self.ckpt_dir}; starting from scratch")
            else:
                tensors, state = ckpt.load_checkpoint(path)
                # The same network, however placed (alexnet.yaml's run resumes as alexnet-1gpu.yaml)
                if state.get("spec_hash") != self.net.hash and (
                        not state.get("spec") or network_hash(state["spec"]) != network_hash(self.net.spec)):
                    raise TrainingError(f"{path}: this checkpoint was written for a different spec "
                                        f"({state.get('spec_name')}); refusing to resume {self.opts.spec}")
                self._continue_run(path, state)
                try:  # logical names (or an older checkpoint's placed ones) -> this placement's
                    saved = None if state.get("spec_hash") == self.net.hash else compile_dict(state["spec"], path)
                    tensors = placed_tensors(tensors, self.net.graph, saved_graph=saved and saved.graph,
                                             source=path, target=self.net.name)
                except LayoutError as exc:
                    raise TrainingError(str(exc)) from None
                params = ckpt.params_from(tensors)
                resumed = (path, tensors, state)
                start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
                history, running = state.get("history", []), state.get("running") or _fresh_running()
        self._datasets()
        if len(self.train_set) < self.batch_size:
            raise TrainingError(f"{len(self.train_set)} training images make no full batch of {self.batch_size}: "
                                f"lower the batch size (--batch) or give more data")
        self._bind(params)
        if resumed:
            path, tensors, state = resumed
            self.opt.load_state_tensors(tensors)
            self.schedule.load_state(state["schedule"])
            if state.get("rng"):
                ckpt.restore_rng_state(tensors, state["rng"])
            self.log(f"resumed from {path}: epoch {start_epoch + 1}, batch {start_batch}, step {step}")
        self.log(f"training {self.net.name} ({self.opts.spec}) on {self.data_root}: {len(self.train_set)} "
                 f"training / {len(self.val_set)} validation images, batch {self.batch_size}, "
                 f"{self.epochs} epochs, lr {self.schedule.lr:g}; writing to {self.out}")

        epoch = start_epoch
        batch_i = start_batch
        last_good = None
        try:
            for epoch in range(start_epoch, self.epochs):
                loader = self._loader(self.train_set, self.train_tf, train=True, epoch=epoch,
                                      start_batch=start_batch if epoch == start_epoch else 0)
                batch_i = start_batch if epoch == start_epoch else 0
                if epoch != start_epoch:
                    running = _fresh_running()
                bar = _progress(len(loader) + batch_i, batch_i, f"epoch {epoch + 1}/{self.epochs}",
                                enabled=self.opts.progress)
                t0, seen = time.perf_counter(), 0
                for images, labels in loader:
                    loss, probs = self.train_step(images, labels, step)
                    if not math.isfinite(loss):
                        raise TrainingError(
                            f"the loss became {loss} at epoch {epoch + 1}, batch {batch_i + 1} (step {step + 1}); "
                            f"stopping. Try a lower learning rate (--lr). The last good checkpoint is "
                            f"{ckpt.latest_checkpoint(self.ckpt_dir) or 'none (nothing was saved yet)'}")
                    e1, e5 = topk_errors(probs, labels, (1, min(5, self.net.classes)))
                    n = labels.shape[0]
                    running["loss"] += loss * n
                    running["top1"] += e1 * n
                    running["top5"] += e5 * n
                    running["n"] += n
                    step += 1
                    batch_i += 1
                    seen += n
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(loss=running["loss"] / running["n"], ips=rate)
                bar.close()
                train_time = time.perf_counter() - t0
                if loader.skipped:
                    self.log(loader.skipped_message())
                val = self.evaluate(epoch)
                record = {
                    "epoch": epoch + 1, "step": step, "lr": self.schedule.lr,
                    "train_loss": running["loss"] / max(running["n"], 1),
                    "train_top1_err": running["top1"] / max(running["n"], 1),
                    "train_top5_err": running["top5"] / max(running["n"], 1),
                    "val_loss": val["loss"], "val_top1_err": val["top1"], "val_top5_err": val["top5"],
                    "images_per_second": seen / max(train_time, 1e-9), "train_seconds": train_time,
                    "skipped_images": len(loader.skipped),
                }
                changed = self.schedule.end_epoch(epoch + 1, val["top1"])
                history.append(record)  # from here on the epoch counts as done (see the interrupt below)
                append_metrics(self.metrics_path, record)
                try:
                    plot_curves(self.metrics_path, self.curves_path)
                except Exception as exc:  # a plotting problem must never cost a training run
                    self.log(f"warning: could not draw {self.curves_path}: {exc}")
                self.log(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f} top-1 err "
                         f"{record['train_top1_err']:.2%} | val loss {val['loss']:.4f} top-1 err "
                         f"{val['top1']:.2%} top-5 err {val['top5']:.2%} | {record['images_per_second']:.0f} img/s"
                         + (f" | lr -> {self.schedule.lr:g}" if changed else ""))
                last_good = self.save(epoch + 1, 0, step, history, _fresh_running(), tag=f"epoch{epoch + 1:04d}")
                start_batch = 0
        except KeyboardInterrupt:
            if history and history[-1]["epoch"] == epoch + 1:
                # Stopped after the epoch was evaluated and its schedule step taken: resume at the next
                # epoch, or the resumed run would evaluate it and step the schedule a second time.
                if not _logged(self.metrics_path, epoch + 1):
                    append_metrics(self.metrics_path, history[-1])
                path = self.save(epoch + 1, 0, step, history, _fresh_running(),
                                 tag=f"interrupt-e{epoch + 2:04d}-b000000")
            else:
                path = self.save(epoch, batch_i, step, history, running,
                                 tag=f"interrupt-e{epoch + 1:04d}-b{batch_i:06d}")
            self.log(f"\ninterrupted: saved {path}; continue with --resume")
            raise
        final = history[-1] if history else {}
        self.log(f"done: {len(history)} epochs; checkpoint {last_good or ckpt.latest_checkpoint(self.ckpt_dir)}; "
                 f"metrics {self.metrics_path}; curves {self.curves_path}")
        return final

    def _continue_run(self, path: str, state: dict) -> None:
        """Resume with the seed, batch size and epoch count the run was started with, unless given; a
        different seed or batch size would not continue the run (other data order, other batches)."""
        for key, given in (("seed", self.opts.seed), ("batch_size", self.opts.batch_size)):
            saved = state.get(key)
            if saved is None:
                continue
            if given is not None and given != saved:
                raise TrainingError(f"{path}: this run was trained with {key} {saved}; cannot resume it with "
                                    f"{key} {given} (leave the option out to resume)")
            setattr(self, key, saved)
        self.net = self.net.at_batch(self.batch_size)
        if self.opts.limit_train_batches is None and state.get("limit_train_batches"):
            self.limit_train = state["limit_train_batches"]  # epochs must end where they ended before
        if self.opts.epochs is None and state.get("epochs"):
            self.epochs = state["epochs"]

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[float, torch.Tensor]:
        ex = self.executor
        ex.seed, ex.step_count = self.seed, step
        out = ex.forward(images, labels, is_train=True)
        loss = float(out["loss"])
        if not math.isfinite(loss):
            return loss, out["prob"]
        ex.backward()
        self.opt.step(ex.grads, self.schedule.lr)
        return loss, out["prob"].detach().float().cpu()

    @torch.no_grad()
    def evaluate(self, epoch: int) -> dict:
        loader = self._loader(self.val_set, self.eval_tf, train=False, epoch=0)
        return evaluate_loader(self.eval_executor, loader, self.net.classes)


def evaluate_loader(executor: Executor, loader: Iterable, classes: int) -> dict:
    """Loss and top-1/top-5 error over a loader; (N, crops, C, H, W) batches average the softmax."""
    tot = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0}
    for images, labels in loader:
        probs = predict_probs(executor, images)
        n = labels.shape[0]
        p = probs.clamp_min(1e-12)
        tot["loss"] += float(-p[torch.arange(n), labels].log().sum())
        e1, e5 = topk_errors(probs, labels, (1, min(5, classes)))
        tot["top1"] += e1 * n
        tot["top5"] += e5 * n
        tot["n"] += n
    n = max(tot["n"], 1)
    return {"loss": tot["loss"] / n, "top1": tot["top1"] / n, "top5": tot["top5"] / n, "n": tot["n"]}


def predict_probs(executor: Executor, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes); a crops axis (N, K, C, H, W) is averaged as the paper's 10-crop."""
    if images.dim() == 5:
        n, k = images.shape[:2]
        probs = executor.forward(images.reshape(n * k, *images.shape[2:]), is_train=False)["prob"]
        return probs.float().cpu().reshape(n, k, -1).mean(1)
    return executor.forward(images, is_train=False)["prob"].float().cpu()


def _logged(metrics_path: str, epoch: int) -> bool:
    """Whether metrics.jsonl already has the record of `epoch`."""
    from .metrics import MetricsError, read_metrics

    try:
        return any(r.get("epoch") == epoch for r in read_metrics(metrics_path))
    except MetricsError:
        return False


def _fresh_running() -> dict:
    return {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0}


class _progress:
    """A tqdm bar with loss and images/s (ETA from tqdm); silent when disabled or not a terminal."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI), only the per-epoch lines
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, disable=None,
                            file=sys.stderr, leave=False, mininterval=0.5)

    def update(self, loss: float, ips: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}, {ips:.0f} img/s", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
