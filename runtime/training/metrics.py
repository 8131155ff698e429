"""Training metrics: top-k error, ten-crop averaging, a JSON-lines log per run and its curves.

The log holds one JSON object per line, usually one per epoch. The keys :func:`plot_curves` draws:
``epoch``, ``train_loss``, ``val_loss``, ``train_top1_err``, ``train_top5_err``, ``val_top1_err``,
``val_top5_err`` (errors as fractions in [0, 1]); any other keys (``lr``, ``time_s``,
``images_per_s``, ``skipped``…) are kept and ignored by the plot. A run resumed from a checkpoint
appends again: the plot uses the last record of each epoch.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping

from ..atomic import check_write_target, replacing

PLOT_SIZE_PX = (1200, 450)   # width, height of the PNG plot_curves writes
_PLOT_DPI = 100


class MetricsError(Exception):
    """A metrics file cannot be written or read; the message names it."""


class MetricsWriteError(MetricsError):
    """The machine refused to store metrics (disk full, read-only directory)."""


# --------------------------------------------------------------------------- top-k

def topk_correct(scores: Any, labels: Any, ks: Iterable[int] = (1, 5)) -> tuple[int, ...]:
    """How many rows of ``scores`` (N, K) (logits or probabilities) have their label in the top k,
    one count per k in ``ks`` order (``c1, c5 = topk_correct(...)``).

    k larger than K counts every row as correct. Use this to accumulate over batches.
    """
    import torch

    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels).reshape(-1).to(scores.device)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"topk: expected scores (N, K) and labels (N,), got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"topk: ks must be positive, got {ks}")
    n, classes = scores.shape
    if n == 0:
        return tuple(0 for _ in ks)
    kmax = min(max(ks), classes)
    top = scores.float().topk(kmax, dim=1).indices              # (N, kmax), best first
    hit = top.eq(labels.long().unsqueeze(1))                    # (N, kmax)
    cum = hit.cumsum(dim=1).clamp_(max=1)                       # hit within the first j+1
    return tuple(int(cum[:, min(k, classes) - 1].sum().item()) for k in ks)


def topk_errors(scores: Any, labels: Any, ks: Iterable[int] = (1, 5)) -> tuple[float, ...]:
    """Top-k error rates (fractions in [0, 1]) of ``scores`` (N, K) against ``labels`` (N,), one per k
    in ``ks`` order: ``top1, top5 = topk_errors(logits, labels)``. NaN for an empty batch."""
    import torch

    n = int(torch.as_tensor(labels).numel())
    return tuple((1.0 - c / n) if n else float("nan") for c in topk_correct(scores, labels, ks))


def crop_average_probs(logits: Any, ncrops: int) -> Any:
    """Softmax of each crop's logits averaged over its ``ncrops`` crops: (N*ncrops, K) or
    (N, ncrops, K) -> (N, K) probabilities (the paper's ten-patch prediction)."""
    import torch

    logits = torch.as_tensor(logits)
    if logits.ndim == 2:
        if logits.shape[0] % ncrops:
            raise ValueError(f"crop_average_probs: {logits.shape[0]} rows is not a multiple of {ncrops} crops")
        logits = logits.reshape(-1, ncrops, logits.shape[1])
    if logits.ndim != 3 or logits.shape[1] != ncrops:
        raise ValueError(f"crop_average_probs: expected (N, {ncrops}, K) logits, got {tuple(logits.shape)}")
    return torch.softmax(logits.float(), dim=2).mean(dim=1)


# --------------------------------------------------------------------------- JSON lines

def append_metrics(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created with its directory), flushed and fsync'ed.

    The line is written with a single ``write`` on an ``O_APPEND`` descriptor, so a crash leaves at
    most one partial last line, which :func:`read_metrics` skips.
    """
    path = str(path)
    try:
        line = json.dumps(dict(record), default=_json_default, allow_nan=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"{path}: metrics record is not JSON-serialisable: {exc}") from None
    data = (line + "\n").encode()
    try:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        check_write_target(path)   # a FIFO would block the open, a device would swallow the line
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # a previous crash may have left a partial line: start ours on a fresh line
            if os.fstat(fd).st_size > 0:
                with open(path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        data = b"\n" + data
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise MetricsWriteError(f"{path}: cannot append metrics: {exc.strerror or exc}") from None


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "item") and callable(o.item):  # 0-d torch tensors
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines metrics file; blank and partial (unparsable) lines are skipped."""
    path = str(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise MetricsError(f"{path}: cannot read metrics: {exc.strerror or exc}") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# --------------------------------------------------------------------------- plot

def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(r["epoch"]))
            ys.append(float(v))
    return xs, ys


def plot_curves(jsonl_path: str | os.PathLike, png_path: str | os.PathLike, title: str | None = None) -> str:
    """Draw loss and top-1/top-5 error against epoch from a metrics log into a PNG; return its path.

    Left: training and validation loss. Right: training/validation top-1 (solid) and top-5 (dashed)
    error in %. The image is :data:`PLOT_SIZE_PX` pixels. Raises :class:`MetricsError` when the log
    has no record with an ``epoch``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no GUI, no global state
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    records = [r for r in read_metrics(jsonl_path)
               if isinstance(r.get("epoch"), (int, float)) and not isinstance(r.get("epoch"), bool)]
    if not records:
        raise MetricsError(f"{jsonl_path}: no per-epoch records (lines with an \"epoch\") to plot")
    last: dict[float, dict] = {}
    for r in records:
        last[float(r["epoch"])] = r
    records = [last[e] for e in sorted(last)]

    fig = Figure(figsize=(PLOT_SIZE_PX[0] / _PLOT_DPI, PLOT_SIZE_PX[1] / _PLOT_DPI), dpi=_PLOT_DPI)
    FigureCanvasAgg(fig)
    ax_loss, ax_err = fig.subplots(1, 2)
    for key, label, style in (("train_loss", "training", "-"), ("val_loss", "validation", "-")):
        xs, ys = _series(records, key)
        if xs:
            ax_loss.plot(xs, ys, style, marker="o", markersize=3, label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.set_title("loss")
    for key, label, color, style in (("train_top1_err", "training top-1", "C0", "-"),
                                     ("train_top5_err", "training top-5", "C0", "--"),
                                     ("val_top1_err", "validation top-1", "C1", "-"),
                                     ("val_top5_err", "validation top-5", "C1", "--")):
        xs, ys = _series(records, key)
        if xs:
            ax_err.plot(xs, [100 * y for y in ys], style, color=color, marker="o", markersize=3, label=label)
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("error (%)")
    ax_err.set_title("top-1 / top-5 error")
    for ax in (ax_loss, ax_err):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = str(png_path)
    try:
        with replacing(png_path, ".png") as tmp:
            fig.savefig(tmp, dpi=_PLOT_DPI, format="png")
    except OSError as exc:
        raise MetricsError(f"{png_path}: cannot write plot: {exc.strerror or exc}") from None
    return png_path
