"""The runtime subcommands of `alexnetc`: train, eval, predict (and the figures, in `figures`).

Heavy imports (torch, the kernels) happen inside each command, never at parser construction.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..training.progress import LOG_EVERY_S
from .errors import UserError, say

EPILOG_TRAIN = """examples:
  alexnetc train                                   # embedded default: two-tower mini AlexNet, Fashion-MNIST
  alexnetc train specs/alexnet.yaml --data /data/imagenet --out runs/alexnet
  alexnetc train specs/alexnet.yaml --synthetic 2560 --epochs 1   # timing without a dataset
  alexnetc train --optimizer adamw --lr 0.001 --weight-decay 0.05 --schedule cosine --warmup-epochs 1
  alexnetc train --resume                          # continue the newest run of the spec where it stopped
  alexnetc train --resume --out runs/alexnet-mini/version_0   # ... or a given run
  alexnetc train --overwrite --out runs/mini       # replace the run in runs/mini (one run per directory)
  torchrun --nproc_per_node=2 -m alexnetc train    # data parallel: one replica per process
  alexnetc train my-resnet18-flowers.yaml --data /data/flowers --init-from runs/tv-resnet18   # fine-tune

Runs: without --out each run gets its own directory, runs/<spec name>/version_N (printed at the start);
eval, predict, the figures and --init-from accept runs/<spec name> for its newest run.

Data: --data DIR takes MNIST-style IDX files or an ImageNet-style tree (DIR/train/<class>/*.jpg,
DIR/val/<class>/*). Without --data: $ALEXNETC_DATA, else Fashion-MNIST from Debian's
dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist)."""


def _train(args) -> int:
    from ..data.augment import AugmentError
    from ..data.datasets import DatasetError
    from ..execution.distributed import DistributedError
    from ..training.checkpoint import CheckpointError
    from ..training.errors import StoppedByRank0, Terminated, TrainingEnvironmentError, TrainingError
    from ..training.loop import Trainer
    from ..training.options import TrainOptions
    from .errors import EnvironmentFailure
    from .specs import resolve_spec_path

    spec = resolve_spec_path(args.spec)
    opts = TrainOptions(spec=spec, data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch,
                        lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay, schedule=args.schedule,
                        warmup_epochs=args.warmup_epochs, device=args.device, workers=args.workers, resume=args.resume,
                        overwrite=args.overwrite,
                        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
                        seed=args.seed, dtype=args.dtype, init_from=args.init_from,
                        sync_batchnorm=True if args.sync_bn else None,
                        synthetic=args.synthetic, progress=not args.no_progress, log_every=args.log_every,
                        allow_empty_classes=args.allow_empty_classes, fresh_optimizer=args.fresh_optimizer,
                        log=lambda s: say(s, flush=True),
                        bucket_mb=args.bucket_mb, overlap=not args.no_overlap, dist_timeout=args.dist_timeout)
    if args.spec is None and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 only
        say(f"alexnetc train: no spec given, using the embedded default {spec}")
    try:
        Trainer(opts).run()
    except StoppedByRank0 as exc:   # under torchrun: rank 0 said why, once
        return exc.status
    except TrainingEnvironmentError as exc:
        raise EnvironmentFailure(str(exc)) from None
    except (AugmentError, DatasetError, CheckpointError, TrainingError, DistributedError) as exc:
        raise UserError(str(exc)) from None
    except Terminated:
        return 143
    except KeyboardInterrupt:
        return 130
    return 0


def _eval(args) -> int:
    import torch

    from ..data.augment import AugmentError
    from ..data.datasets import DatasetError, channel_mapping, detect_layout, open_dataset
    from ..data.loader import make_loader
    from ..training.checkpoint import CheckpointError
    from ..training.errors import TrainingError
    from ..training.evaluate import evaluate_loader
    from ..training.inputs import fit_class_names
    from ..training.progress import Progress
    from .model import load_model

    try:
        model = load_model(args.checkpoint, args.device, args.batch, spec=args.spec)
        c = model.net.input_shape[0]
        args.data = model.data_dir(args.data)
        # IDX files label by index: open them with their own classes, so a count unlike the model's shows
        by_index = detect_layout(args.data) == "idx" and not args.allow_class_mismatch
        ds = open_dataset(args.data, args.split, channels=c, classes=None if by_index else model.class_names)
        if not args.allow_class_mismatch:
            fit_class_names(ds, model.net.classes, args.data,
                            f"the model {model.path} ({model.net.name}) has {model.net.classes}: evaluate it on "
                            "data of its classes (--data), or pass --allow-class-mismatch to score it anyway")
        note = channel_mapping(ds, c)
        if note:
            say(note)
        tf = model.eval_transform(args.crops)
        loader = make_loader(ds, tf, args.batch, num_workers=args.workers, limit_batches=args.limit_batches)
        bar = Progress(len(loader), 0, "evaluating", enabled=True, log=say)
        with torch.no_grad():
            try:
                r = evaluate_loader(model.executor, loader, model.net.classes, progress=bar)
            finally:
                bar.close()
    except (AugmentError, DatasetError, CheckpointError, TrainingError) as exc:
        raise UserError(str(exc)) from None
    crops = args.crops or (model.state.get("data_config") or {}).get("test_crops", "center")
    say(f"{model.net.name} on {args.data} ({args.split}, {r['n']} images, {crops} crop"
          f"{'s' if crops == 'ten' else ''}): loss {r['loss']:.4f}  top-1 error {r['top1']:.2%}  "
          f"top-5 error {r['top5']:.2%}  (accuracy {1 - r['top1']:.2%})")
    if loader.skipped:
        say(loader.skipped_message())
    return 0


def _predict(args) -> int:
    import torch

    from ..data.augment import AugmentError
    from ..training.checkpoint import CheckpointError
    from .model import load_model

    try:
        model = load_model(args.checkpoint, args.device, spec=args.spec)
        tf = model.eval_transform(args.crops)
    except (AugmentError, CheckpointError) as exc:
        raise UserError(str(exc)) from None
    mode = "L" if model.net.input_shape[0] == 1 else "RGB"
    if args.truth is not None:
        if len(args.truth) != len(args.images):
            raise UserError(f"--truth: {len(args.truth)} label{'s' if len(args.truth) != 1 else ''} for "
                              f"{len(args.images)} image{'s' if len(args.images) != 1 else ''}; give one per image")
        unknown = [t for t in args.truth if t not in model.class_names]
        if unknown:
            from ...compiler.errors import did_you_mean

            raise UserError(f"--truth: '{unknown[0][:40]}' is not a class of this model"
                              f"{did_you_mean(unknown[0], model.class_names)} (classes: "
                              f"{', '.join(model.class_names[:12])}{', ...' if len(model.class_names) > 12 else ''})")
    images, names = [], []
    for path in args.images:
        images.append(tf(model.read_image(path)))
        names.append(path)
    with torch.no_grad():
        probs = model.probs(torch.stack(images))
    k = min(5, model.net.classes)
    results = []
    for path, p in zip(names, probs):
        top = torch.topk(p, k)
        say(path)
        rows = []
        for prob, idx in zip(top.values.tolist(), top.indices.tolist()):
            say(f"  {prob:7.2%}  {model.class_names[idx]}")
            rows.append((model.class_names[idx], prob))
        results.append((path, rows))
    if getattr(args, "gallery", None):
        from .figures import draw_gallery

        draw_gallery(results, args.gallery, truth=args.truth, image_mode=mode)
        say(f"gallery written to {args.gallery}")
    return 0


def register(sub: Any) -> None:
    t = sub.add_parser("train", help="train a spec (default: the embedded two-tower net on Fashion-MNIST)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_TRAIN)
    t.add_argument("spec", nargs="?", default=None, help="spec file or shipped name (default: variants/mini)")
    t.add_argument("--data", metavar="DIR", help="dataset directory (IDX files or train/ and val/ folders)")
    t.add_argument("--out", metavar="DIR",
                   help="run directory (default: a new runs/<spec name>/version_N for each run; with --resume, the "
                        "newest run of the spec)")
    t.add_argument("--epochs", type=int, help="override train.epochs")
    t.add_argument("--batch", type=int, help="override train.batch_size")
    t.add_argument("--lr", type=float, help="override train.lr (cosine: the peak, after any warm-up)")
    # Checked by the trainer, not argparse choices: a bad value is one line naming the option.
    t.add_argument("--optimizer", metavar="NAME",
                   help="override train.optimizer.type: sgd (the paper's, default) or adamw (decoupled weight decay)")
    t.add_argument("--weight-decay", type=float, metavar="WD", help="override train.weight_decay")
    t.add_argument("--schedule", metavar="TYPE",
                   help="override train.schedule.type: constant, step, plateau or cosine (decay to "
                        "train.schedule.min_lr at every update)")
    t.add_argument("--warmup-epochs", type=float, metavar="E",
                   help="override train.schedule.warmup_epochs: linear learning-rate warm-up over the first E epochs' "
                        "updates (fractions allowed)")
    t.add_argument("--seed", type=int, help="override train.seed")
    # Checked by the trainer, not argparse choices: a bad value is one line naming --dtype.
    t.add_argument("--dtype", metavar="DTYPE",
                   help="override train.dtype: float32 (default), float64 (CPU reference kernels: exact "
                        "checks) or bfloat16 (mixed precision: bf16 compute, fp32 weights, SGD state, loss)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto (a GPU when there is one), cpu or cuda (default auto)")
    t.add_argument("--workers", type=int, help="data loading processes (default: min(4, cores))")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out (without --out: the spec's newest run in runs/<spec name>) from "
                        "its newest checkpoint that verifies (--lr, --epochs, --weight-decay ... apply from there)")
    t.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT",
                   help="start from another run's weights (fine-tuning): every layer it holds with the same name "
                        "and shape is loaded, the others (e.g. a classifier for other classes) start fresh")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its checkpoints, metrics and curves are deleted)")
    t.add_argument("--fresh-optimizer", action="store_true",
                   help="with --resume: continue from a checkpoint that has no optimizer state (momentum buffers), "
                        "SGD's momentum starting at zero (without it such a checkpoint is refused)")
    t.add_argument("--allow-empty-classes", action="store_true",
                   help="train although a class folder of the training split holds no image (a warning; without it "
                        "that is an error: the network would have a class it can never learn)")
    t.add_argument("--limit-train-batches", type=int, help="at most this many batches per epoch")
    t.add_argument("--limit-val-batches", type=int, help="at most this many validation batches")
    t.add_argument("--synthetic", type=int, metavar="N", help="N random images per epoch instead of data")
    t.add_argument("--no-progress", action="store_true", help="no progress bar, and no progress lines in a log")
    t.add_argument("--log-every", type=float, default=LOG_EVERY_S, metavar="S",
                   help="when stdout is not a terminal (a log file), a progress line (batch, loss, images/s, time "
                        f"left) every S seconds (default {LOG_EVERY_S:g})")
    d = t.add_argument_group("more than one process (under torchrun; ignored otherwise)")
    d.add_argument("--bucket-mb", type=float, default=25.0, metavar="MB",
                   help="gradient all-reduce bucket size (default 25)")
    d.add_argument("--sync-bn", action="store_true",
                   help="batch norm over the global batch's statistics (train.sync_batchnorm), not each shard's")
    d.add_argument("--no-overlap", action="store_true",
                   help="all-reduce after the backward pass instead of during it (for comparison)")
    d.add_argument("--dist-timeout", type=float, default=300.0, metavar="S",
                   help="seconds a process waits for the others before giving up (default 300)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="top-1/top-5 error of a checkpoint on a dataset split",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  alexnetc eval runs/alexnet-mini --data /usr/share/datasets/fashion-mnist")
    e.add_argument("checkpoint", help="a checkpoint (.json/.safetensors) or a run or checkpoints directory")
    e.add_argument("--data", metavar="DIR",
                   help="dataset directory (default: the one the checkpoint was trained on, else as for train: "
                        "$ALEXNETC_DATA or Fashion-MNIST)")
    e.add_argument("--split", default="val", choices=("train", "val"), help="which split (default val)")
    e.add_argument("--crops", choices=("center", "ten"), help="centre crop or the paper's 10 patches")
    e.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    e.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    e.add_argument("--limit-batches", type=int, metavar="N", help="evaluate only the first N batches")
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto (a GPU when there is one), cpu or cuda (default auto)")
    e.add_argument("--spec", help="run it as this spec: the same network placed otherwise (e.g. one device)")
    e.add_argument("--allow-class-mismatch", action="store_true",
                   help="evaluate on a dataset whose class count differs from the model's (IDX labels taken as the "
                        "model's first classes); without it that is an error naming both counts")
    e.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="top-5 classes with probabilities for images",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  alexnetc predict runs/alexnet-mini shoe.png shirt.png --gallery top5.png")
    p.add_argument("checkpoint", help="a checkpoint or run directory")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--crops", choices=("center", "ten"),
                   help="centre crop or the paper's 10 patches (default: the spec's data.test_crops)")
    p.add_argument("--gallery", metavar="FILE.png", help="also draw each image with its top-5 bars")
    p.add_argument("--truth", nargs="*", metavar="LABEL", help="true labels, one per image (marked)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto (a GPU when there is one), cpu or cuda (default auto)")
    p.add_argument("--spec", help="run it as this spec: the same network placed otherwise (e.g. one device)")
    p.set_defaults(func=_predict)
    from . import figure_commands  # filters, neighbors

    figure_commands.register(sub)
    from . import ablate_command, compare_command, runs_command  # compare (Figure 1, seeds), ablate, runs

    compare_command.register(sub)
    ablate_command.register(sub)
    runs_command.register(sub)
    from . import transfer_commands  # export, import

    transfer_commands.register(sub)
    from . import profile_command  # profile

    profile_command.register(sub)
    from . import place_command  # place

    place_command.register(sub)
    from . import pack_commands  # pack

    pack_commands.register(sub)
