"""Ctrl-C and SIGTERM as one thing: `StopSignals` turns both into `Interrupted` (a KeyboardInterrupt)
or only records them, for a loop that stops where stopping is safe. The CLI exits 128 + the signal."""
from __future__ import annotations

import signal
import threading


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM as an exception (a KeyboardInterrupt, so it stops what Ctrl-C stops).

    signum: the signal; the process exits with 128 + signum (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_number(interrupt: BaseException) -> int:
    """The signal a KeyboardInterrupt stands for: its own (Interrupted), else SIGINT."""
    return getattr(interrupt, "signum", signal.SIGINT)


class StopSignals:
    """While active, SIGINT and SIGTERM raise Interrupted, or with record_only are only recorded
    (the caller looks at ``received`` where stopping is safe). ``received``: the first signal, or
    None. Only the main thread can install handlers; elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, record_only: bool = False):
        self.record_only = record_only
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            if self.record_only and self.received is not None and isinstance(getattr(handler, "__self__", None),
                                                                               StopSignals):
                continue  # stopping already: later signals stay recorded until the enclosing one restores
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
        if not self.record_only:
            raise Interrupted(signum)
