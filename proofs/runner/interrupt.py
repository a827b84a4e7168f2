"""Ctrl-C and SIGTERM for a `ptspec verify` run: stop promptly, never report a finished run.

Models: the run's signal handling. While ``handling()`` is active, SIGINT and SIGTERM set a flag
(the first signal received) and raise ``Interrupted``, a KeyboardInterrupt, in the main thread, so
the runner's interrupt paths (registry.run_all, parallel.run_parallel) stop the run and mark the
current and remaining checks "unknown: interrupted". A check that swallows the exception (a tool
catching BaseException, or the raise landing in a callback whose exceptions Python only reports,
such as hypothesis's gc callback) cannot turn the interrupt into a verdict or keep running: the
runner asks ``check()`` after every check returns, ``Checking`` asks it at every progress report of
a check, and the flag stays set until the run ends. Such a swallowed raise is not printed (the
unraisable hook drops ``Interrupted``). The command exits 128 + the signal
number (130 for SIGINT, 143 for SIGTERM), never 0.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any, Iterator

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


class Checking:
    """A registry.Listener (by its three methods; registry imports this module) wrapping another:
    raises Interrupted at a check's next progress report once a signal came."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def started(self, *args: Any) -> None:
        self.inner.started(*args)

    def progressed(self, *args: Any) -> None:
        check()
        self.inner.progressed(*args)

    def finished(self, *args: Any) -> None:
        self.inner.finished(*args)


def _unraisable(hook: Any) -> Any:
    def quiet(info: Any) -> None:
        if not isinstance(info.exc_value, Interrupted):
            hook(info)
    return quiet


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the handlers (main thread only); the flag is clear before and after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    old = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    old_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sys.unraisablehook = old_hook
        _received.clear()
