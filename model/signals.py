"""Ctrl-C (SIGINT) and SIGTERM while training: stop soon, but never in the middle of a checkpoint.

    signals = StopSignals()
    with signals:                          # handlers in the main thread; the previous ones are restored after
        while not signals.received:
            with signals.interruptible():
                forward_and_backward()     # a signal here raises KeyboardInterrupt: this work is dropped
            optimizer_update()             # a signal here is only noted: the update ends, then the loop
        save()                             # never cut short: a half-written checkpoint is worse than a late stop

`docker stop` sends SIGTERM and kills 10 s later: what runs outside `interruptible()` must be short (one update,
one checkpoint). A signal ignored when training starts (SIG_IGN, e.g. SIGINT of a background job) stays ignored.
"""

import contextlib
import signal
import threading
from typing import Self

# What TrainResult.stopped says after each signal.
STOPPED_BY = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class StopSignals:
    def __init__(self):
        self.received: signal.Signals | None = None
        self._interruptible = False
        self._previous = {}

    @property
    def stopped(self) -> str | None:
        """'interrupted' (SIGINT, Ctrl-C) or 'terminated' (SIGTERM) once one came, else None."""
        return STOPPED_BY.get(self.received)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in STOPPED_BY:
                if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        self.received = signal.Signals(signum)
        if self._interruptible:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interruptible(self):
        """Work that a stop signal cuts short with KeyboardInterrupt (also one that came before it started)."""
        if self.received:
            raise KeyboardInterrupt
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
