"""Random images for timing without a dataset (`alexnetc train --synthetic N`, the benchmarks): the
same (image, label) interface as `datasets`, each sample a pure function of (seed, index).
"""
from __future__ import annotations

import numpy as np


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
