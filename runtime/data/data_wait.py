"""Whether the loader is the bottleneck: the share of an epoch's time spent waiting for batches.

:class:`DataWait` wraps a loader; iterating it times each wait for the next batch (everything the
training loop does not do itself: reading, decoding, augmenting, or blocking on the worker queue).
The epoch line reports the share (:meth:`DataWait.describe`); above :data:`WARN_SHARE`
:meth:`DataWait.warning` says so and names the remedy that fits the loader.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

WARN_SHARE = 0.25
WARN_ENV = "ALEXNETC_DATA_WAIT_WARN"   # another threshold (a fraction in (0, 1]); 1 turns the warning off


def warn_share() -> float:
    raw = os.environ.get(WARN_ENV, "").strip()
    try:
        value = float(raw) if raw else WARN_SHARE
    except ValueError:
        value = WARN_SHARE
    return value if 0 < value <= 1 else WARN_SHARE


class DataWait:
    """``loader`` as is (its length and attributes too: ``skipped``, ``skipped_message``...), with the
    waits for its batches timed while it is iterated."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.waited = 0.0
        self.elapsed = 0.0
        self.batches = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":   # not set yet (copying, unpickling): no recursion through the lookup below
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        start = time.perf_counter()
        it = iter(self.loader)
        try:
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    now = time.perf_counter()
                    self.waited += now - t
                    self.elapsed = now - start
                self.batches += 1
                yield item
        finally:
            self.elapsed = time.perf_counter() - start

    @property
    def share(self) -> float:
        """Waiting time over the whole epoch's time (0 before any)."""
        return self.waited / self.elapsed if self.elapsed > 0 else 0.0

    def describe(self) -> str:
        return f"data wait {self.share:.0%}"

    def warning(self) -> str | None:
        """A one-line warning with the remedy when the share passes the threshold (None otherwise)."""
        limit = warn_share()
        if self.share <= limit or limit >= 1:
            return None
        return (f"warning: {self.share:.0%} of this epoch's time went to waiting for data (over {limit:.0%}): "
                f"the loader, not the network, sets the speed; {remedy(self.loader)}")


def remedy(loader: Any) -> str:
    """What would feed the network faster, for this kind of loader."""
    from .pack_loader import PackLoader

    if isinstance(loader, PackLoader):
        fmt = loader.pack.format
        more = f"raise --workers (now {loader.workers})"
        return more + ("; a raw pack reads several times faster than a JPEG one (alexnetc pack --format raw)"
                       if fmt == "jpeg" else "")
    workers = getattr(getattr(loader, "dataloader", None), "num_workers", None)
    now = f" (now {workers})" if workers is not None else ""
    return (f"pack the dataset once (alexnetc pack DATA -o PACK, then --data PACK: decoded, resized and "
            f"augmented a batch at a time) or raise --workers{now}")
