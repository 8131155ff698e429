"""What a run reads: its training and validation datasets (a directory given, the default one, or
synthetic images), the class names it learns, the dataset statistics normalisation and PCA lighting
need, and the transforms of the spec's data section. All of it goes into every checkpoint, so
evaluation and prediction later see the data the way training saw it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...compiler import CompiledNet
from ..data.augment import DataStats
from ..execution import distributed as dp
from .errors import TrainingError


@dataclass
class Inputs:
    """A run's data: datasets, their transforms, the class names, the data section as used and the
    statistics (None when the spec gives mean and std and no PCA lighting)."""

    root: str                    # the dataset directory, or "synthetic"
    train_set: Any
    val_set: Any
    train_tf: Any
    eval_tf: Any
    class_names: list[str]
    data_config: dict
    stats: DataStats | None


def open_inputs(data: str | None, synthetic: int | None, net: CompiledNet, batch_size: int, spec_path: str,
                dist: dp.DistContext | None, cache_dir: str, log: Callable[[str], None],
                allow_empty_classes: bool = False) -> Inputs:
    """Open the datasets (`synthetic` random images, else `data` or the default dataset), check their
    classes fit `net` (a class folder with no image is an error unless `allow_empty_classes`, then a
    warning), compute or read the statistics (rank 0 computes and caches them, the other
    processes then read its cache), build the transforms and check there is a full batch to train."""
    from ..data.augment import build_transforms, dataset_stats
    from ..data.datasets import channel_mapping, check_class_images, find_default_dataset, open_dataset
    from ..data.synthetic import SyntheticDataset

    c, h, w = net.input_shape
    if synthetic:
        train = SyntheticDataset(synthetic, (c, h, w), net.classes, 1)
        val = SyntheticDataset(max(batch_size, synthetic // 10), (c, h, w), net.classes, 2)
        data_cfg = {k: v for k, v in net.settings("data").items() if k in ("mirror", "mean", "std")}
        data_cfg.setdefault("mean", [127.5] * c)
        data_cfg.setdefault("std", [64.0] * c)
        data_root = "synthetic"
    else:
        root = data or find_default_dataset()
        data_root = root
        if not data:
            log(f"no --data given: using {root}. To train on your own data pass --data DIR: "
                "MNIST-style IDX files, or an ImageNet-style tree DIR/train/<class>/*.jpg and "
                "DIR/val/<class>/* (with a spec whose input and classes fit it)")
        train = open_dataset(root, "train", channels=c)
        check_class_images(train, allow_empty_classes, log)
        val = open_dataset(root, "val", channels=c, classes=getattr(train, "class_names", None))
        data_cfg = net.settings("data")
    names = fit_class_names(train, net.classes, data_root, f"the spec {spec_path} has classes: {net.classes}")
    if not synthetic:
        note = channel_mapping(train, c)
        if note:
            log(note)
    stats = None
    writes = dist is None or dist.is_writer
    if data_cfg.get("mean") is None or (data_cfg.get("pca_lighting", 0) > 0 and c == 3):
        if not writes:  # rank 0 computes and caches the statistics, the others read its cache
            dist.barrier("waiting for rank 0's dataset statistics")
        stats = dataset_stats(train, cache_dir=cache_dir)
        if dist and writes:
            dist.barrier("waiting for the other processes after the dataset statistics")
    train_tf, eval_tf = build_transforms(data_cfg, train, input_shape=(c, h, w), stats=stats)
    if len(train) < batch_size:
        raise TrainingError(f"{len(train)} training images make no full batch of {batch_size}: "
                            f"lower the batch size (--batch) or give more data")
    return Inputs(str(data_root), train, val, train_tf, eval_tf, names, dict(data_cfg), stats)


def fit_class_names(train: Any, classes: int, data_root: str, who: str) -> list[str]:
    """The class names of a network of `classes` classes on the split `train`, or TrainingError saying
    "the dataset at ROOT has N classes but `who`". An image tree's folders are its classes; IDX files
    carry no class list, so their labels decide (a subset of the first classes fits)."""
    names = list(getattr(train, "class_names", None) or [str(i) for i in range(classes)])
    if len(names) != classes:
        labels = getattr(train, "labels", None)
        top = int(np.max(labels)) + 1 if labels is not None and len(labels) else len(names)
        if top > classes or len(names) < classes:
            raise TrainingError(f"the dataset at {data_root} has {max(top, len(names))} classes but {who}")
        names = names[:classes]
    return names


def check_data(net: CompiledNet, data: str | None, spec_path: str, opened: dict | None = None) -> None:
    """`net` fits the training split of `data` (or the default dataset): its channels decode and its
    class count is the spec's, as `open_inputs` would check after the other runs (`compare` checks every
    spec first). `opened` caches the splits by (root, channels) across calls."""
    from ..data.datasets import find_default_dataset, open_dataset

    root = data or find_default_dataset()
    key = (root, net.input_shape[0])
    if opened is None or key not in opened:
        train = open_dataset(root, "train", channels=net.input_shape[0])
        if opened is not None:
            opened[key] = train
    train = opened[key] if opened is not None else train
    fit_class_names(train, net.classes, root, f"the spec {spec_path} has classes: {net.classes}")
