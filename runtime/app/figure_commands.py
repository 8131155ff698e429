"""The figure subcommands of `alexnetc`: filters (Figure 3) and neighbors (Figure 4, right); compare
(Figure 1) is `compare_command`, `predict --gallery` (Figure 4, left) lives with predict in `commands.py`.

The drawing is in `figures.py`; here: loading checkpoints and datasets, extracting and caching
features. Heavy imports happen inside each command.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Any

from .errors import UserError, say

# Part of the neighbors feature-cache key: bumped when the same checkpoint and layer name yield other
# features (2: a relu after an add is folded into it, so an add layer's features are after the relu).
FEATURES_VERSION = 2

EPILOG_FILTERS = """example:
  alexnetc filters runs/alexnet-mini -o filters.png

Draws the first convolution layer's kernels (each min-max normalised; RGB for colour input, grey
for one channel), one block per device: with the two-tower AlexNet, the paper's Figure 3 (one GPU's
kernels mostly colour-agnostic, the other's mostly colour-specific)."""

EPILOG_NEIGHBORS = """examples:
  alexnetc neighbors runs/alexnet-mini --data /usr/share/datasets/fashion-mnist --query shoe.png shirt.png -o nn.png
  alexnetc neighbors runs/alexnet --data /data/imagenet --query q.jpg --k 8 --limit 20000 -o nn.png

The training images whose last-hidden-layer features (what the class scores are computed from: fc7 in
alexnet.yaml, the global pooling in resnet18.yaml; --layer to choose) are
nearest in Euclidean distance to each query's (the paper's Figure 4, right). The dataset's features
are computed once (centre crop) and cached beside the checkpoint (RUN/cache/, or $ALEXNETC_CACHE),
keyed by checkpoint, dataset, split, size, layer and transform; later queries reuse them."""


def _load_model(path: str, device: str, batch: int = 64):
    from ..training.checkpoint import CheckpointError
    from .model import load_model

    try:
        return load_model(path, device, batch)
    except CheckpointError as exc:
        raise UserError(str(exc)) from None


def _check_output(path: str, option: str = "-o") -> None:
    if not path.lower().endswith(".png"):
        raise UserError(f"{option} {path}: the figure is a PNG; give a file name ending in .png")
    if os.path.isdir(path):
        raise UserError(f"{option} {path}: is a directory; give a file name ending in .png")
    from ..atomic import WriteTargetError, check_write_target

    try:   # before anything is computed: a device or FIFO is never written through
        check_write_target(path)
    except WriteTargetError as exc:
        raise UserError(f"{option} {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- filters

def first_conv_kernels(model: Any, layer: str | None = None) -> tuple[str, list[tuple[str, "object"]]]:
    """``(layer, [(device, weights (K, C, kh, kw) numpy), ...])`` for the first conv layer (or
    ``layer``): the layer's kernels grouped by the device each group runs on, devices in the net's
    order, groups in group order within a device."""
    import numpy as np

    convs = [i.name for i in model.net.layers if i.op == "conv"]
    if not convs:
        raise UserError(f"{model.path}: the network {model.net.name} has no convolution layer")
    name = layer or convs[0]
    if name not in convs:
        raise UserError(f"--layer {name}: not a convolution layer of {model.net.name} "
                          f"(convolutions: {', '.join(convs)})")
    params = [n for n in model.net.graph.params() if n.layer == name and len(n.shapes[0]) == 4]

    def group_no(node) -> int:
        return node.group or 0

    order = list(model.net.devices or [])
    by_dev: dict[str, list] = {}
    for n in sorted(params, key=group_no):
        dev = n.device or (order[0] if order else "cpu")
        by_dev.setdefault(dev, []).append(model.executor.params[n.name].detach().float().cpu().numpy())
    devs = [d for d in order if d in by_dev] + [d for d in by_dev if d not in order]
    return name, [(d, np.concatenate(by_dev[d], 0)) for d in devs]


def _filters(args) -> int:
    from .figures import draw_filters

    _check_output(args.output)
    model = _load_model(args.checkpoint, "cpu")
    layer, blocks = first_conv_kernels(model, args.layer)
    titled = []
    for dev, w in blocks:
        k, c, kh, kw = w.shape
        kind = "RGB" if c == 3 else ("grey" if c == 1 else f"mean of {c} channels")
        titled.append((f"{dev}: {layer}, {k} kernels {kh}x{kw} ({kind})", w))
    draw_filters(titled, args.output)
    say(f"{layer} kernels of {model.net.name} ({', '.join(f'{d}: {len(w)}' for d, w in blocks)}) "
          f"written to {args.output}")
    return 0


# --------------------------------------------------------------------------- neighbours

class _Indexed:
    """``dataset`` restricted to ``indices``, labelled by dataset index (so dropped bad images keep
    every feature row tied to its image)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        return self.dataset[i][0], i


def subset_indices(n: int, limit: int | None) -> list[int]:
    """Indices of the images used: all, or ``limit`` evenly spaced ones (every class of a folder tree)."""
    import numpy as np

    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def resolve_checkpoint_file(path: str) -> str:
    """The checkpoint JSON a path means (a run directory, its checkpoints/, a .json or .safetensors);
    ``path`` unchanged when none is found (loading then says why)."""
    from ..training.checkpoint import CheckpointError, checkpoints_dir, newest_verified

    path = checkpoints_dir(path)
    if os.path.isdir(path):
        try:
            return newest_verified(path, lambda msg: say(msg, file=sys.stderr))
        except CheckpointError:
            return path
    if path.endswith(".safetensors"):
        return path[: -len(".safetensors")] + ".json"
    return path


def features_cache_dir(ckpt_json: str) -> str:
    """$ALEXNETC_CACHE, else RUN/cache beside the checkpoint's run, else the user cache directory."""
    from ..data.augment import CACHE_ENV, default_cache_dir

    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    d = os.path.dirname(os.path.abspath(ckpt_json))
    run = os.path.dirname(d) if os.path.basename(d) == "checkpoints" else d
    cache = os.path.join(run, "cache")
    try:
        os.makedirs(cache, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    return default_cache_dir()


def features_key(ckpt_json: str, model: Any, dataset: Any, split: str, indices: Any, layer: str) -> dict:
    from ..training.checkpoint import checkpoint_record

    try:
        ident = checkpoint_record(ckpt_json)["tensors_sha256"]
    except Exception:  # noqa: BLE001 - fall back to path and modification time
        st = os.stat(ckpt_json)
        ident = f"{os.path.abspath(ckpt_json)}@{st.st_mtime_ns}:{st.st_size}"
    idx_digest = hashlib.sha256(bytes(memoryview(indices))).hexdigest()[:16]
    return {"version": FEATURES_VERSION, "checkpoint": ident,
            "dataset": str(getattr(dataset, "root", "")), "split": split, "dataset_size": len(dataset),
            "images": int(len(indices)), "indices": idx_digest, "layer": layer,
            "transform": {"crops": "center", "data_config": model.state.get("data_config"),
                          "data_stats": model.state.get("data_stats"),
                          "input_shape": list(model.net.input_shape)}}


def dataset_features(model: Any, dataset: Any, indices: Any, layer: str, cache_path: str, key: dict, *,
                     batch: int = 64, workers: int = 0, log: Any = say) -> Any:
    """``(features (N, D) float32, indices (N,) int64)``: from ``cache_path`` when it holds ``key``,
    else extracted with the eval transform (centre crop) and written there atomically."""
    import numpy as np
    import torch

    from ..atomic import replacing
    from ..data.loader import make_loader

    key_json = json.dumps(key, sort_keys=True)
    width = feature_width(model, layer)
    cached = read_feature_cache(cache_path, key_json, width, len(dataset), log)
    if cached is not None:
        log(f"features of {len(cached[1])} images from the cache {cache_path}")
        return cached
    log(f"extracting {layer} features of {len(indices)} images (once: cached in {cache_path})")
    loader = make_loader(_Indexed(dataset, indices), model.eval_transform("center"), batch, num_workers=workers)
    feats, idx = [], []
    with torch.no_grad():
        for images, ids in loader:
            feats.append(model.features(images, layer).numpy().astype(np.float32, copy=False))
            idx.append(ids.numpy())
    if loader.skipped:
        log(loader.skipped_message())
    if not feats:
        raise UserError(f"{getattr(dataset, 'root', 'the dataset')}: no readable images to search")
    f, i = np.concatenate(feats), np.concatenate(idx).astype(np.int64)
    if not np.isfinite(f).all():
        raise UserError(f"{layer}: the features of {int((~np.isfinite(f).any(1)).sum()):,} images are not finite "
                        "(NaN or infinity); no distance between them means anything")
    try:
        with replacing(cache_path, ".npz") as tmp:  # .npz: np.savez would append it
            np.savez(tmp, features=f, indices=i, key=np.array(key_json))
    except OSError as exc:
        log(f"warning: could not cache features in {cache_path}: {exc.strerror or exc}")
    return f, i


def feature_width(model: Any, layer: str) -> int:
    """How many features one image has at ``layer`` (its outputs' channels x height x width, towers joined)."""
    import math

    info = next(i for i in model.net.layers if i.name == layer)
    return sum(math.prod(shape) for _, _, shape in info.outputs)   # shapes per sample


def read_feature_cache(path: str, key_json: str, width: int, dataset_size: int, log: Any) -> tuple[Any, Any] | None:
    """``(features, indices)`` from the cache file when it was written for ``key_json`` and holds what such a
    cache must (``width`` finite float32 features per image, one dataset index in range per row); None when
    it is missing or stale (recomputed), or, with a warning through ``log``, when it is not such a file."""
    import numpy as np

    from ..bounded_read import UnreadableFile, check_file

    if not os.path.lexists(path):
        return None
    try:
        check_file(path, "MAX_CACHE_BYTES", "feature cache")
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key_json:
                return None   # another checkpoint's, dataset's or layer's: recomputed and replaced
            f, i = z["features"], z["indices"]
    except UnreadableFile as exc:
        log(f"warning: ignoring the feature cache: {exc}")
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged zip or array: the cache is only ever a shortcut
        log(f"warning: ignoring the feature cache {path}: unreadable ({type(exc).__name__}); recomputing")
        return None
    problem = None
    if f.ndim != 2 or f.shape[1] != width or f.dtype != np.float32:
        problem = f"its features are {f.dtype} {tuple(f.shape)}, not {width} float32 values per image"
    elif i.ndim != 1 or len(i) != len(f) or i.dtype.kind not in "iu" or (len(i) and not 0 <= i.min() <= i.max()
                                                                         < dataset_size):
        problem = f"its image indices do not match its {len(f):,} rows of a {dataset_size:,}-image dataset"
    elif not np.isfinite(f).all():
        problem = f"it holds non-finite features (NaN or infinity) for {int((~np.isfinite(f).all(1)).sum()):,} images"
    if problem:
        log(f"warning: ignoring the feature cache {path}: {problem}; recomputing")
        return None
    return f, i.astype(np.int64, copy=False)


def nearest(query_feats: Any, feats: Any, k: int, chunk: int = 65536) -> tuple[Any, Any]:
    """``(distances, rows)`` (Q, k) of the ``k`` rows of ``feats`` nearest each query (Euclidean)."""
    import torch

    q = torch.as_tensor(query_feats, dtype=torch.float32)
    best_d = best_i = None
    for s in range(0, len(feats), chunk):
        f = torch.as_tensor(feats[s:s + chunk], dtype=torch.float32)
        d = torch.cdist(q, f)
        i = torch.arange(s, s + len(f)).expand_as(d)
        if best_d is not None:
            d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
        kk = min(k, d.shape[1])
        best_d, pos = torch.topk(d, kk, dim=1, largest=False)
        best_i = torch.gather(i, 1, pos)
    return best_d.numpy(), best_i.numpy()


def _image_name(dataset, split: str, i: int) -> str:
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return samples[i][0]
    return f"{split}[{i}]"


def _neighbors(args) -> int:
    import numpy as np
    import torch

    from ..bounded_read import UnreadableFile, check_file
    from ..data.datasets import DatasetError, open_dataset
    from .figures import draw_neighbors

    _check_output(args.output)
    if args.k < 1:
        raise UserError(f"--k {args.k}: must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit {args.limit}: must be at least 1")
    for q in args.query:   # before the model is loaded: a mistyped query fails at once
        try:
            check_file(q, None, "image file")
        except UnreadableFile as exc:
            raise UserError(str(exc)) from None
    ckpt_json = resolve_checkpoint_file(args.checkpoint)
    model = _load_model(ckpt_json, args.device, args.batch)
    try:
        layer = args.layer or model.last_hidden_layer()
        model.layer_nodes(layer)
    except KeyError as exc:
        raise UserError(f"--layer: {exc.args[0]}") from None
    c = model.net.input_shape[0]
    try:
        args.data = model.data_dir(args.data)
        ds = open_dataset(args.data, args.split, channels=c, classes=model.class_names)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    indices = subset_indices(len(ds), args.limit)
    key = features_key(ckpt_json, model, ds, args.split, indices, layer)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache_path = os.path.join(features_cache_dir(ckpt_json), f"features-{digest}.npz")
    feats, rows = dataset_features(model, ds, indices, layer, cache_path, key, batch=args.batch,
                                   workers=args.workers)

    tf = model.eval_transform("center")
    q_imgs = [model.read_image(q) for q in args.query]
    with torch.no_grad():
        q_feats = np.concatenate([model.features(torch.stack([tf(i) for i in q_imgs[s:s + args.batch]]), layer).numpy()
                                  for s in range(0, len(q_imgs), args.batch)])
    k = args.k
    if k > len(feats):
        say(f"note: only {len(feats)} images to search; showing {len(feats)} neighbours, not {k}")
        k = len(feats)
    dist, pos = nearest(q_feats, feats, k)
    targets = getattr(ds, "targets", None)
    names = model.class_names
    fig_rows = []
    for qi, q in enumerate(args.query):
        say(f"{q}: nearest {k} of {len(feats)} {args.split} images by {layer} features")
        neigh = []
        for d, p in zip(dist[qi], pos[qi]):
            i = int(rows[p])
            label = int(targets[i]) if targets is not None else int(ds[i][1])
            cls = names[label] if 0 <= label < len(names) else str(label)
            say(f"  {d:10.4f}  {cls:<16} {_image_name(ds, args.split, i)}")
            neigh.append((ds[i][0], f"{cls}\nd={d:.3g}"))
        fig_rows.append((q_imgs[qi], f"query\n{os.path.basename(q)}", neigh))
    title = (f"{model.net.name}: nearest {args.split} images by {layer} features "
             f"(Euclidean, {len(feats)} images)")
    draw_neighbors(fig_rows, args.output, title=title)
    say(f"neighbours written to {args.output}")
    return 0


# --------------------------------------------------------------------------- parser

def register(sub: Any) -> None:
    f = sub.add_parser("filters", help="draw the first convolution layer's kernels, one block per device "
                                       "(the paper's Figure 3)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_FILTERS)
    f.add_argument("checkpoint", help="a checkpoint (.json/.safetensors) or a run or checkpoints directory")
    f.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the picture to write")
    f.add_argument("--layer", help="another convolution layer (default: the first)")
    f.set_defaults(func=_filters)

    n = sub.add_parser("neighbors", help="training images nearest to query images in feature space "
                                         "(the paper's Figure 4, right)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_NEIGHBORS)
    n.add_argument("checkpoint", help="a checkpoint or run directory")
    n.add_argument("--data", metavar="DIR",
                   help="dataset directory to search (default: the one the checkpoint was trained on, else as "
                        "for train: $ALEXNETC_DATA or Fashion-MNIST)")
    n.add_argument("--query", required=True, nargs="+", metavar="IMAGE", help="query image files")
    n.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the picture to write")
    n.add_argument("--k", type=int, default=6, help="neighbours per query (default 6)")
    n.add_argument("--split", default="train", choices=("train", "val"), help="which split to search (default train)")
    n.add_argument("--layer", help="feature layer (default: the last hidden layer, fc7 in alexnet.yaml, pool5 in resnet18.yaml)")
    n.add_argument("--limit", type=int, metavar="N", help="search only N evenly spaced images of the split")
    n.add_argument("--batch", type=int, default=64, help="images per forward pass (default 64)")
    n.add_argument("--workers", type=int, default=2, help="data loading processes (default 2)")
    n.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run: auto (a GPU when there is one), cpu or cuda (default auto)")
    n.set_defaults(func=_neighbors)
