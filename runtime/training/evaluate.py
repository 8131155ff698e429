"""Evaluation and prediction on a bound executor, for the trainer's validation and the app's `eval`,
`predict` and figures: loss and top-1/top-5 error over a loader (the paper's 10-crop averaged) and
class probabilities.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from ..execution.executor import Executor
from .errors import NoUsableImages
from .metrics import topk_errors


def evaluate_loader(executor: Executor, loader: Iterable, classes: int, progress: Any = None,
                    allow_empty: bool = False) -> dict:
    """Loss and top-1/top-5 error over a loader; (N, crops, C, H, W) batches average the softmax.

    Raises :class:`NoUsableImages` when the loader yields no image (every file unreadable), unless
    `allow_empty` (one process's slice under data parallelism: the caller checks the summed count)."""
    tot = {"loss": 0.0, "top1": 0.0, "top5": 0.0, "n": 0}
    for images, labels in loader:
        n = labels.shape[0]
        if not n:
            continue
        probs = predict_probs(executor, images)
        p = probs.clamp_min(1e-12)
        tot["loss"] += float(-p[torch.arange(n), labels].log().sum())
        e1, e5 = topk_errors(probs, labels, (1, min(5, classes)))
        tot["top1"] += e1 * n
        tot["top5"] += e5 * n
        tot["n"] += n
        if progress is not None:
            progress.update(loss=tot["loss"] / tot["n"], ips=0.0, unit="val")
    if tot["n"] == 0:
        if allow_empty:
            return dict(tot)
        skipped = getattr(loader, "skipped_message", lambda: None)()
        raise NoUsableImages("no usable image in this split" + (f" ({skipped})" if skipped else ""))
    n = tot["n"]
    return {"loss": tot["loss"] / n, "top1": tot["top1"] / n, "top5": tot["top5"] / n, "n": tot["n"]}


def predict_probs(executor: Executor, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes); a crops axis (N, K, C, H, W) is averaged as the paper's 10-crop."""
    if images.dim() == 5:
        n, k = images.shape[:2]
        probs = executor.forward(images.reshape(n * k, *images.shape[2:]), is_train=False)["prob"]
        return probs.float().cpu().reshape(n, k, -1).mean(1)
    return executor.forward(images, is_train=False)["prob"].float().cpu()
