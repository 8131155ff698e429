"""Progress of a pass over a loader (a training epoch, validation, `alexnetc eval`): a tqdm bar on a
terminal, and lines in a log.

The bar (loss, images/s, ETA) is drawn on stderr when stderr is a terminal. When stdout is not a
terminal (output redirected to a file, a job scheduler's log) a line is written through `log` at most
every `every` seconds (`--log-every`, default 30):

    epoch 2/8: batch 120/468 (26%), loss 0.5123, 812 img/s, 3m05s left in this pass

so a long epoch is never silent in a log, and a log never gets more than one line per `every` seconds.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

LOG_EVERY_S = 30.0


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class Progress:
    """A pass of `total` batches from batch `initial`: `update` after each batch, `close` at the end."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True,
                 log: Callable[[str], None] | None = None, every: float = LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, lines: bool | None = None):
        """`lines`: write progress lines through `log` (None: when stdout is not a terminal)."""
        self.bar = None
        self.total, self.done, self.desc = total, initial, desc
        if lines is None:
            lines = not _is_terminal(sys.stdout)
        self.log = log if enabled and lines else None
        self.every, self.clock = float(every), clock
        self.start = self.last = clock()
        self.first = initial
        if enabled:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI); the lines above report there
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True, disable=None,
                            file=sys.stderr, leave=False, mininterval=0.5)

    def update(self, loss: float, ips: float, unit: str = "") -> None:
        self.done += 1
        if self.bar is not None:
            rate = f", {ips:.0f} img/s" if ips else ""
            self.bar.set_postfix_str(f"{unit + ' ' if unit else ''}loss {loss:.4f}{rate}", refresh=False)
            self.bar.update(1)
        if self.log is not None:
            now = self.clock()
            if now - self.last >= self.every:
                self.last = now
                self.log(self.line(loss, ips, now))

    def line(self, loss: float, ips: float, now: float) -> str:
        """The progress line at `now`: batches done, running loss, images/s, time left in this pass."""
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        rate = f", {ips:.0f} img/s" if ips else ""
        per_batch = (now - self.start) / max(self.done - self.first, 1)
        left = f", {_duration(per_batch * max(self.total - self.done, 0))} left in this pass"
        return f"{self.desc}: batch {self.done}/{self.total}{pct}, loss {loss:.4f}{rate}{left}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
