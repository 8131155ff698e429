"""Signals while training: SIGTERM is handled as Ctrl-C (the trainer saves a checkpoint at the current
step, then the CLI exits 143), and a second signal during that save exits at once.
"""
from __future__ import annotations

import os
import sys

from .errors import Terminated


class SignalGuard:
    """While training: SIGTERM raises :class:`Terminated` (saved like Ctrl-C); a second SIGTERM or SIGINT
    during the save exits at once (status 128 + signal). Only in the main thread; restored on exit."""

    def __enter__(self):
        import signal
        import threading

        self.old = {}
        self.hits = 0
        self.pending: BaseException | None = None
        if threading.current_thread() is not threading.main_thread():
            return self
        self.old_hook = sys.unraisablehook

        def quiet(unraisable):   # the swallowed signal is raised again between steps: no traceback for it
            if unraisable.exc_value is None or unraisable.exc_value is not self.pending:
                self.old_hook(unraisable)

        sys.unraisablehook = quiet

        def handler(signum, frame):
            self.hits += 1
            if self.hits > 1:
                os._exit(128 + signum)
            # Kept as well as raised: a signal that lands in a garbage-collector or weakref callback has
            # its exception swallowed there ("Exception ignored in ..."), and would otherwise be lost.
            self.pending = Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt()
            raise self.pending

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
        return self

    def raise_pending(self) -> None:
        """Raise a signal's exception that a callback swallowed (called between training steps)."""
        if self.pending is not None:
            raise self.pending

    def __exit__(self, *exc):
        import signal

        if hasattr(self, "old_hook"):
            sys.unraisablehook = self.old_hook
        for sig, old in self.old.items():
            signal.signal(sig, old)
        return False
