"""The paper's figures, drawn: pictures only, from plain arrays and lists (no model, no torch).

- :func:`draw_filters` — Figure 3: the first convolution layer's kernels as a colour grid, one block
  per device with a title naming it (which tower learned which kind of filter).
- :func:`draw_gallery` — Figure 4, left: each image with its five most probable labels and a bar per
  probability; the true label's bar in red when it is known.
- :func:`draw_neighbors` — Figure 4, right: one row per query image, the query first, then the
  training images nearest to it in feature space.
- :func:`draw_compare` — Figure 1: training error against epoch for several variants on one plot (a mean
  over seeds with its band); :func:`draw_effects` — ablation effects with their intervals beside the paper's.

The grids (filters, gallery, neighbours) are drawn with Pillow and numpy on an exact pixel layout
(the ``*Layout`` classes say where every cell is), so tests can check the picture's structure pixel
by pixel; the comparison curves use matplotlib (Agg, no pyplot). Every PNG is written atomically
(temporary file, then rename); a path that cannot be written raises :class:`FigureError`, which the
command line prints as one ``alexnetc: error: ...`` line.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..atomic import replacing
from .errors import UserError, write_failure

BG = (255, 255, 255)             # page background (gaps between cells are exactly this)
PANEL_BG = (238, 238, 238)       # a gallery panel's fill
TEXT = (20, 20, 20)
BAR = (70, 110, 190)             # a top-5 probability bar
BAR_TRUE = (210, 40, 40)         # the true label's bar
BAR_TRACK = (215, 215, 215)      # the 0..100 % track behind each bar
MARGIN = 8                       # around every figure


class FigureError(UserError):
    """A figure cannot be drawn or written (bad arguments, unwritable path); the message says why."""


# --------------------------------------------------------------------------- helpers

def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(font, text: str) -> int:
    box = font.getbbox(text)
    return int(box[2] - box[0])


def _fit_text(font, text: str, width: int) -> str:
    """``text``, cut with '...' so it fits in ``width`` pixels."""
    if _text_width(font, text) <= width:
        return text
    while text and _text_width(font, text + "...") > width:
        text = text[:-1]
    return text + "..."


def _as_rgb(image) -> np.ndarray:
    """An (H, W, C) / (H, W) uint8 array (or PIL image) as (H, W, 3) uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise FigureError(f"cannot draw an image of shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    elif a.shape[2] != 3:
        raise FigureError(f"cannot draw an image with {a.shape[2]} channels")
    return a


def fit_image(image: Any, box: int) -> np.ndarray:
    """``image`` scaled (aspect kept) so its longer side is ``box`` px, centred on a box x box
    background square; nearest-neighbour when enlarging (small images stay crisp). (box, box, 3) uint8."""
    from PIL import Image

    a = _as_rgb(image)
    h, w = a.shape[:2]
    s = box / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    im = Image.fromarray(a, "RGB")
    if (nh, nw) != (h, w):
        im = im.resize((nw, nh), Image.NEAREST if s > 1 else Image.LANCZOS)
    out = np.empty((box, box, 3), np.uint8)
    out[:] = BG
    top, left = (box - nh) // 2, (box - nw) // 2
    out[top:top + nh, left:left + nw] = np.asarray(im)
    return out


def save_png(image: Any, path: str | os.PathLike) -> str:
    """Write a PIL image or (H, W, 3) uint8 array to ``path`` atomically; return the path."""
    from PIL import Image

    path = str(path)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image, "RGB")
    try:
        with replacing(path, ".png") as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise write_failure(path, exc) from None
    return path


# --------------------------------------------------------------------------- Figure 3: filters

@dataclass
class FilterLayout:
    """Where each kernel goes in :func:`draw_filters`' picture.

    Blocks (one per device) are stacked top to bottom; each is a title strip of ``TITLE_H`` px and
    then a grid of ``cols`` columns of ``cell_w`` x ``cell_h`` cells (each kernel enlarged by the
    integer ``scale``, nearest neighbour), ``CELL_GAP`` px of background between cells and
    ``BLOCK_GAP`` px between blocks. Cells fill row by row; ``counts[b]`` cells in block b.
    """
    TITLE_H = 22
    CELL_GAP = 2
    BLOCK_GAP = 14
    MIN_KERNEL_PX = 32      # kernels are enlarged to at least this many pixels on their longer side
    MAX_COLS = 16           # the paper's Figure 3: 48 kernels per GPU as 3 rows of 16

    counts: Sequence[int]
    kh: int
    kw: int
    min_width: int = 0

    def __post_init__(self):
        self.counts = [int(c) for c in self.counts]
        self.scale = max(1, math.ceil(self.MIN_KERNEL_PX / max(self.kh, self.kw)))
        self.cell_h, self.cell_w = self.kh * self.scale, self.kw * self.scale
        self.cols = max(1, min(self.MAX_COLS, max(self.counts or [1])))
        self.rows = [max(1, math.ceil(c / self.cols)) for c in self.counts]
        self.grid_w = self.cols * self.cell_w + (self.cols - 1) * self.CELL_GAP
        self.width = 2 * MARGIN + max(self.grid_w, self.min_width)
        tops, y = [], MARGIN
        for r in self.rows:
            tops.append(y)
            y += self.TITLE_H + r * self.cell_h + (r - 1) * self.CELL_GAP + self.BLOCK_GAP
        self.block_tops = tops
        self.height = y - self.BLOCK_GAP + MARGIN

    def title_box(self, block: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive ends, of block ``block``'s title strip."""
        y = self.block_tops[block]
        return MARGIN, y, self.width - MARGIN, y + self.TITLE_H

    def grid_box(self, block: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of block ``block``'s grid (all its rows, full column count)."""
        y = self.block_tops[block] + self.TITLE_H
        r = self.rows[block]
        return MARGIN, y, MARGIN + self.grid_w, y + r * self.cell_h + (r - 1) * self.CELL_GAP

    def cell_box(self, block: int, index: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of kernel ``index`` of block ``block``."""
        r, c = divmod(index, self.cols)
        x0 = MARGIN + c * (self.cell_w + self.CELL_GAP)
        y0 = self.block_tops[block] + self.TITLE_H + r * (self.cell_h + self.CELL_GAP)
        return x0, y0, x0 + self.cell_w, y0 + self.cell_h


def kernel_images(weights: np.ndarray) -> np.ndarray:
    """Kernels (K, C, kh, kw) as images (K, kh, kw, 3) uint8: each kernel min-max normalised to [0, 1]
    over all its values; C = 3 is shown as RGB, any other C as grey (the mean over channels)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4:
        raise FigureError(f"expected convolution kernels of shape (K, C, kh, kw), got {w.shape}")
    if w.shape[1] != 3:
        w = w.mean(axis=1, keepdims=True)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    span = hi - lo
    norm = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 0.5)
    img = np.round(norm * 255).astype(np.uint8).transpose(0, 2, 3, 1)   # K, kh, kw, C
    if img.shape[3] == 1:
        img = np.repeat(img, 3, axis=3)
    return img


def draw_filters(blocks: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike) -> FilterLayout:
    """Draw each ``(title, kernels (K, C, kh, kw))`` block as a grid of kernel images; write ``path``.

    All blocks must have kernels of one size (they are one layer's groups). Returns the layout.
    """
    from PIL import Image, ImageDraw

    if not blocks:
        raise FigureError("no kernels to draw")
    imgs = [kernel_images(w) for _, w in blocks]
    kh, kw = imgs[0].shape[1:3]
    if any(i.shape[1:3] != (kh, kw) for i in imgs):
        raise FigureError("kernels of different sizes cannot share one grid")
    font = _font(13)
    titles = [t for t, _ in blocks]
    layout = FilterLayout([len(i) for i in imgs], kh, kw,
                          min_width=max(_text_width(font, t) for t in titles) + 4)
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BG
    s = layout.scale
    for b, kimgs in enumerate(imgs):
        for i, k in enumerate(kimgs):
            x0, y0, x1, y1 = layout.cell_box(b, i)
            canvas[y0:y1, x0:x1] = np.repeat(np.repeat(k, s, axis=0), s, axis=1)
    im = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(im)
    for b, title in enumerate(titles):
        x0, y0, _, _ = layout.title_box(b)
        draw.text((x0, y0 + 3), title, fill=TEXT, font=font)
    save_png(im, path)
    return layout


# --------------------------------------------------------------------------- Figure 4, left: gallery

@dataclass
class GalleryLayout:
    """Panels of :func:`draw_gallery`, ``COLS`` to a row, ``GAP`` px of background between them.

    A panel (filled with ``PANEL_BG``) holds, top to bottom: the image fitted in an ``IMG`` px square
    (centred), a caption line of ``CAPTION_H`` px (the true label, else the file name), and one row
    of ``ROW_H`` px per top-5 label: its name in the first ``LABEL_W`` px, then its probability as a
    bar of ``round(p * BAR_W)`` px over a ``BAR_W`` px track.
    """
    PAD = 8
    IMG = 128
    CAPTION_H = 18
    ROW_H = 16
    LABEL_W = 104
    BAR_W = 100
    BAR_INSET = 3           # the bar leaves this many px above and below inside its row
    GAP = 8
    COLS = 4

    n: int
    rows_per_panel: int = 5

    def __post_init__(self):
        self.panel_w = 2 * self.PAD + self.LABEL_W + self.BAR_W
        self.panel_h = 2 * self.PAD + self.IMG + self.CAPTION_H + self.rows_per_panel * self.ROW_H
        self.cols = max(1, min(self.COLS, self.n))
        self.rows = max(1, math.ceil(self.n / self.cols))
        self.width = 2 * MARGIN + self.cols * self.panel_w + (self.cols - 1) * self.GAP
        self.height = 2 * MARGIN + self.rows * self.panel_h + (self.rows - 1) * self.GAP

    def panel_box(self, i: int) -> tuple[int, int, int, int]:
        r, c = divmod(i, self.cols)
        x0 = MARGIN + c * (self.panel_w + self.GAP)
        y0 = MARGIN + r * (self.panel_h + self.GAP)
        return x0, y0, x0 + self.panel_w, y0 + self.panel_h

    def image_box(self, i: int) -> tuple[int, int, int, int]:
        x0, y0, x1, _ = self.panel_box(i)
        left = x0 + (self.panel_w - self.IMG) // 2
        return left, y0 + self.PAD, left + self.IMG, y0 + self.PAD + self.IMG

    def caption_box(self, i: int) -> tuple[int, int, int, int]:
        x0, y0, x1, _ = self.panel_box(i)
        top = y0 + self.PAD + self.IMG
        return x0 + self.PAD, top, x1 - self.PAD, top + self.CAPTION_H

    def row_box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Row j (0 = most probable) of panel i: label and bar."""
        x0, _, x1, _ = self.panel_box(i)
        top = self.caption_box(i)[3] + j * self.ROW_H
        return x0 + self.PAD, top, x1 - self.PAD, top + self.ROW_H

    def bar_track(self, i: int, j: int) -> tuple[int, int, int, int]:
        """The full 0..100 % track of row j's bar in panel i; the bar starts at its left edge."""
        x0, y0, _, y1 = self.row_box(i, j)
        left = x0 + self.LABEL_W
        return left, y0 + self.BAR_INSET, left + self.BAR_W, y1 - self.BAR_INSET


def draw_gallery(results: Sequence[Any], path: str | os.PathLike, truth: Sequence[str] | None = None,
                 image_mode: str = "RGB") -> GalleryLayout:
    """Figure 4 (left): one panel per image with its top-5 labels and probability bars; write ``path``.

    ``results``: ``[(image_path, [(class_name, prob), ...]), ...]``, labels most probable first (up to
    five are drawn). ``truth``: the true label of each image, or None; the bar of a label equal to
    the truth is drawn in red (``BAR_TRUE``), and the truth is written under the image (in red when it
    is not among the labels shown). ``image_mode``: "RGB" or "L", how the images are read.
    """
    from PIL import Image, ImageDraw

    from ..data.datasets import load_image

    results = list(results)
    if not results:
        raise FigureError("--gallery: no images to draw")
    if truth is not None and len(truth) != len(results):
        raise FigureError(f"--truth: {len(truth)} label{'s' if len(truth) != 1 else ''} for "
                          f"{len(results)} image{'s' if len(results) != 1 else ''} (give one per image)")
    layout = GalleryLayout(len(results), max(1, min(5, max(len(r) for _, r in results))))
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BG
    for i, (img_path, _) in enumerate(results):
        x0, y0, x1, y1 = layout.panel_box(i)
        canvas[y0:y1, x0:x1] = PANEL_BG
        img = load_image(str(img_path), image_mode)
        if not hasattr(img, "shape"):
            raise FigureError(f"{img_path}: cannot read this image ({getattr(img, 'reason', 'unreadable')})")
        ix0, iy0, ix1, iy1 = layout.image_box(i)
        canvas[iy0:iy1, ix0:ix1] = fit_image(img, layout.IMG)
    for i, (_, rows) in enumerate(results):
        true = truth[i] if truth is not None else None
        for j, (_, prob) in enumerate(list(rows)[:layout.rows_per_panel]):
            tx0, ty0, tx1, ty1 = layout.bar_track(i, j)
            canvas[ty0:ty1, tx0:tx1] = BAR_TRACK
            length = int(round(min(max(float(prob), 0.0), 1.0) * layout.BAR_W))
            colour = BAR_TRUE if true is not None and rows[j][0] == true else BAR
            canvas[ty0:ty1, tx0:tx0 + length] = colour
    im = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(im)
    font = _font(11)
    for i, (img_path, rows) in enumerate(results):
        true = truth[i] if truth is not None else None
        cx0, cy0, cx1, _ = layout.caption_box(i)
        shown = [name for name, _ in list(rows)[:layout.rows_per_panel]]
        if true is not None:
            caption, colour = f"truth: {true}", TEXT if true in shown else BAR_TRUE
        else:
            caption, colour = os.path.basename(str(img_path)), TEXT
        draw.text((cx0, cy0 + 3), _fit_text(font, caption, cx1 - cx0), fill=colour, font=font)
        for j, (name, prob) in enumerate(list(rows)[:layout.rows_per_panel]):
            rx0, ry0, _, _ = layout.row_box(i, j)
            label = f"{float(prob):4.0%} {name}"
            draw.text((rx0, ry0 + 2), _fit_text(font, label, layout.LABEL_W - 4),
                      fill=BAR_TRUE if name == true else TEXT, font=font)
    save_png(im, path)
    return layout


# --------------------------------------------------------------------------- Figure 4, right: neighbours

@dataclass
class NeighborLayout:
    """Rows of :func:`draw_neighbors`: a header line of ``HEADER_H`` px, then per query one row of
    ``1 + k`` cells of ``CELL`` x ``CELL`` px (the query, a ``QUERY_GAP`` px gap, then its neighbours
    ``GAP`` px apart), each with a caption strip of ``CAPTION_H`` px below it; ``ROW_GAP`` px between rows.
    """
    HEADER_H = 20
    CELL = 96
    GAP = 4
    QUERY_GAP = 18
    CAPTION_H = 28
    ROW_GAP = 10

    queries: int
    k: int

    def __post_init__(self):
        self.row_h = self.CELL + self.CAPTION_H
        self.width = 2 * MARGIN + (self.k + 1) * self.CELL + (self.k - 1) * self.GAP + self.QUERY_GAP
        self.height = (2 * MARGIN + self.HEADER_H + self.queries * self.row_h
                       + (self.queries - 1) * self.ROW_GAP)

    def cell_box(self, row: int, j: int) -> tuple[int, int, int, int]:
        """Cell j of query row ``row``: j = 0 the query, j = 1..k its neighbours, nearest first."""
        x0 = MARGIN + j * (self.CELL + self.GAP) + (self.QUERY_GAP - self.GAP if j >= 1 else 0)
        y0 = MARGIN + self.HEADER_H + row * (self.row_h + self.ROW_GAP)
        return x0, y0, x0 + self.CELL, y0 + self.CELL

    def caption_box(self, row: int, j: int) -> tuple[int, int, int, int]:
        x0, _, x1, y1 = self.cell_box(row, j)
        return x0, y1, x1, y1 + self.CAPTION_H


def draw_neighbors(rows: Sequence[Any], path: str | os.PathLike, title: str = "") -> NeighborLayout:
    """Figure 4 (right): write ``path`` with one row per query.

    ``rows``: ``[(query_image, query_caption, [(image, caption), ...]), ...]`` where images are
    (H, W, C) uint8 arrays and captions short strings (``\\n`` splits a caption over two lines); all
    rows must have the same number of neighbours. ``title``: the header line.
    """
    from PIL import Image, ImageDraw

    rows = list(rows)
    if not rows:
        raise FigureError("no queries to draw")
    k = len(rows[0][2])
    if k < 1 or any(len(r[2]) != k for r in rows):
        raise FigureError("every query needs the same number (at least 1) of neighbours")
    layout = NeighborLayout(len(rows), k)
    canvas = np.empty((layout.height, layout.width, 3), np.uint8)
    canvas[:] = BG
    captions = []
    for r, (q_img, q_cap, neigh) in enumerate(rows):
        for j, (img, cap) in enumerate([(q_img, q_cap)] + list(neigh)):
            x0, y0, x1, y1 = layout.cell_box(r, j)
            canvas[y0:y1, x0:x1] = fit_image(img, layout.CELL)
            captions.append((layout.caption_box(r, j), cap, j == 0))
    im = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(im)
    font = _font(11)
    if title:
        draw.text((MARGIN, MARGIN + 2), _fit_text(font, title, layout.width - 2 * MARGIN), fill=TEXT, font=font)
    for (x0, y0, x1, _), cap, is_query in captions:
        for n, line in enumerate(str(cap).split("\n")[:2]):
            draw.text((x0, y0 + 1 + 13 * n), _fit_text(font, line, x1 - x0),
                      fill=BAR_TRUE if is_query else TEXT, font=font)
    save_png(im, path)
    return layout


# --------------------------------------------------------------------------- Figure 1: compare

COMPARE_SIZE_PX = (900, 540)
_COMPARE_DPI = 100


def _chart() -> tuple[Any, Any]:
    """A ``COMPARE_SIZE_PX`` figure (no pyplot: no GUI, no global state) and its one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(COMPARE_SIZE_PX[0] / _COMPARE_DPI, COMPARE_SIZE_PX[1] / _COMPARE_DPI), dpi=_COMPARE_DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save_chart(fig: Any, ax: Any, path: str | os.PathLike) -> str:
    """The legend (when anything is labelled), then the PNG written atomically at ``path``."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = str(path)
    try:
        with replacing(path, ".png") as tmp:
            fig.savefig(tmp, dpi=_COMPARE_DPI, format="png")
    except OSError as exc:
        raise write_failure(path, exc) from None
    return path


def draw_compare(curves: Sequence[tuple], path: str | os.PathLike, target: float | None = None,
                 title: str | None = None, band: str | None = None) -> str:
    """Figure 1: training top-1 error (%) against epoch, one line per ``(label, epochs, errors)`` (errors
    as fractions; epochs may be fractional), or per ``(label, epochs, mean, low, high)`` with the range
    shaded (`band` names it in the title: 'min–max over seeds'), and a dashed line at ``target``; a
    ``COMPARE_SIZE_PX`` PNG at ``path``."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _chart()
    for i, (label, xs, ys, *lohi) in enumerate(curves):
        if not len(xs):
            continue
        color = f"C{i % 10}"
        ax.plot(list(xs), [100 * y for y in ys], "-", marker="o" if len(xs) <= 30 else None, markersize=3,
                color=color, label=label)
        if lohi and band:
            ax.fill_between(list(xs), [100 * y for y in lohi[0]], [100 * y for y in lohi[1]], color=color, alpha=0.2,
                            linewidth=0)
    if target is not None:
        ax.axhline(100 * target, color="0.4", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training top-1 error (%)")
    ax.set_title((title or "training error per epoch") + (f" (bands: {band})" if band else ""))
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save_chart(fig, ax, path)


def draw_effects(rows: Sequence[tuple[str, Any, float | None]], path: str | os.PathLike, title: str = "") -> str:
    """Ablation effects: per ``(label, {"delta", "half"} in points or None, the paper's effect or None)`` a
    dot at the measured difference with its interval as a bar, the paper's effect as a red cross, and
    zero as a line; a ``COMPARE_SIZE_PX`` PNG at ``path``."""
    fig, ax = _chart()
    labels = [r[0] for r in rows]
    for i, (_, measured, paper) in enumerate(rows):
        y = len(rows) - 1 - i
        if measured is not None:
            first = not any(r[1] is not None for r in rows[:i])
            ax.errorbar([measured["delta"]], [y], xerr=[[measured["half"] or 0]], fmt="o", color="C0", capsize=4,
                        label="measured (95% interval)" if first else None)
        if paper is not None:
            ax.plot([paper], [y], "x", color="C3", markersize=9, mew=2,
                    label="the paper (ILSVRC)" if not any(r[2] is not None for r in rows[:i]) else None)
    ax.axvline(0, color="0.4", linewidth=1)
    ax.set_yticks(range(len(rows)), labels[::-1])
    ax.set_xlabel("variant − base, validation top-1 error (points)")
    ax.set_title(title or "ablation effects")
    ax.grid(True, axis="x", alpha=0.3)
    return _save_chart(fig, ax, path)
