"""Ctrl-C and SIGTERM for a `ptspec verify` run: stop promptly, never report a finished run.

Models: the run's signal handling. While ``handling()`` is active, SIGINT and SIGTERM set a flag
(the first signal received) and raise ``Interrupted``, a KeyboardInterrupt, in the main thread, so
the runner's interrupt paths (registry.run_all, parallel.run_parallel) stop the run and mark the
current and remaining checks "unknown: interrupted".

A raise can be swallowed: by a tool catching BaseException, or by landing in a callback whose
exceptions Python only reports (hypothesis's gc callback does this: the lock-step check then ran
on for 20 s). The signal itself can be swallowed too: z3 takes SIGINT while it solves and answers
"unknown"; ``handling()`` turns that off (z3's ``ctrl_c`` parameter), and ptspec's own queries
(ptspec.proofs.engines.z3.explore.solver_check) raise the signal again should z3 still take it. So until the runner acknowledges the interrupt (``acknowledge()``: the CLI does it when
the runner reports the interrupted check finished, and when verify returns), a helper thread sends
the same signal to the main thread again every NAG_SECONDS, and the handler raises again; the
runner also asks ``check()`` after every check returns, and ``Checking`` at every progress report.
A swallowed raise is not printed (the unraisable hook drops ``Interrupted``). The command exits
128 + the signal number (130 for SIGINT, 143 for SIGTERM), never 0.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAG_SECONDS = 0.25
_received: list[int] = []
_state = {"active": False, "acknowledged": False, "run": 0}     # run: which handling() session
_lock = threading.Lock()


class Interrupted(KeyboardInterrupt):
    """The run was interrupted by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _nag(signum: int, run: int) -> None:
    """Re-send the signal to the main thread until the runner acknowledges it (this run only)."""
    main = threading.main_thread().ident
    while True:
        time.sleep(NAG_SECONDS)
        with _lock:
            if not _state["active"] or _state["acknowledged"] or _state["run"] != run:
                return
            signal.pthread_kill(main, signum)


def _on_signal(signum: int, frame: object) -> None:
    if not _received:
        _received.append(signum)
        threading.Thread(target=_nag, args=(signum, _state["run"]), daemon=True,
                         name="ptspec-interrupt").start()
    if not _state["acknowledged"]:
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
    if _received and not _state["acknowledged"]:
        raise Interrupted(_received[0])


def acknowledge() -> None:
    """The runner has stopped the run: no more raises (the flag stays set until handling ends)."""
    if _received:
        _state["acknowledged"] = True


class Checking:
    """A registry.Listener (by its three methods; registry imports this module) wrapping another:
    raises Interrupted at a check's next progress report once a signal came, and acknowledges the
    interrupt when the runner reports a check finished after it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def started(self, *args: Any) -> None:
        self.inner.started(*args)

    def progressed(self, *args: Any) -> None:
        check()
        self.inner.progressed(*args)

    def finished(self, *args: Any) -> None:
        acknowledge()
        self.inner.finished(*args)


def _unraisable(hook: Any) -> Any:
    def quiet(info: Any) -> None:
        # once a signal came, what objects half built by the interrupted code raise when they
        # are freed (z3's AstRef.__del__ on an object whose constructor was cut) is not news
        if not isinstance(info.exc_value, Interrupted) and not _received:
            hook(info)
    return quiet


def _z3_leaves_sigint_to_python() -> None:
    """z3 takes SIGINT itself while it solves and answers "unknown" (interrupted from keyboard):
    the run would never see the signal (CrossHair's queries too). With its ``ctrl_c`` parameter
    off, the signal reaches the run's handler, which raises once the query returns (queries are
    bounded by their rlimit or timeout). A process without z3 has nothing to do."""
    try:
        import z3
        z3.set_param("ctrl_c", False)
    except Exception:           # noqa: BLE001 - no z3, or one without the parameter
        pass


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the handlers (main thread only); the flag is clear before and after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    _z3_leaves_sigint_to_python()
    with _lock:
        _state.update(active=True, acknowledged=False, run=_state["run"] + 1)
    old = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    old_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    try:
        yield
    finally:
        with _lock:                       # the nag thread sends nothing from here on
            _state.update(active=False, acknowledged=True)
        time.sleep(0.01)                  # a signal already sent runs the handler now: it only records
        for s, h in old.items():
            signal.signal(s, h)
        sys.unraisablehook = old_hook
        _received.clear()
