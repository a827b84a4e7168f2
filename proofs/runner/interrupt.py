"""Ctrl-C and SIGTERM for a `ptspec verify` run: stop promptly, never report a finished run.

Models: the run's signal handling. While ``handling()`` is active, SIGINT and SIGTERM set a flag
(the first signal received) and raise ``Interrupted``, a KeyboardInterrupt, in the main thread, so
the runner's interrupt paths (registry.run_all, parallel.run_parallel) stop the run and mark the
current and remaining checks "unknown: interrupted". A check that swallows the exception (a tool
catching BaseException) cannot turn the interrupt into a verdict: the runner asks ``check()`` after
every check returns, and the flag stays set until the run ends. The command exits 128 + the signal
number (130 for SIGINT, 143 for SIGTERM), never 0.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """The run was interrupted by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    if not _received:
        _received.append(signum)
    raise Interrupted(signum)


def received() -> int | None:
    """The first signal received while handling, or None."""
    return _received[0] if _received else None


def name() -> str:
    signum = received()
    return signal.Signals(signum).name if signum else ""


def exit_code() -> int:
    """128 + the signal number (130 SIGINT, 143 SIGTERM); 130 when none was recorded."""
    return 128 + (received() or signal.SIGINT)


def check() -> None:
    """Raise Interrupted if a signal arrived (even if a check swallowed the first raise)."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the handlers (main thread only); the flag is clear before and after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    old = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _received.clear()
