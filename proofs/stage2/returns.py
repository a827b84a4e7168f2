"""C-RETURNS for impl: a Python operation that must come back within a budget of CPU time.

Models nothing of the kernel; it is how the lock-step harnesses see that one of impl's operations
(a faithful copy of a kernel function, possibly a mutant of it) does not return. The kernel's C
code has its own guard (ptspec.proofs.kernel.guard: ITIMER_PROF, fault signals); Python code
cannot fault, but it can loop, and before this a loop in impl was only stopped by the check's
wall-clock hang guard: an "unknown" (or a mutant "hung") whose verdict depended on how busy the
machine was, and with no operation sequence to show.

``within(what)`` arms ITIMER_VIRTUAL (this process's user CPU time, so a loaded machine does
not shorten it) around the call; when it expires, SIGVTALRM's handler raises ``_Overrun``, a
BaseException so that no ``except Exception`` in the code under test can swallow it, and the
context turns it into ``SubjectFault``, which the harness reports as a C-RETURNS violation with
the shortened sequence that led there. SIGPROF is left to the C guard (its handler is installed
from C; Python could not restore it). Outside the main thread (where Python runs no signal
handlers) the call runs unguarded.
"""

from __future__ import annotations

import _signal      # getsignal without the enum conversion of signal.getsignal (per operation)
import contextlib
import signal
import threading

from ptspec.proofs.runner.budgets import IMPL_CALL_CPU_SECONDS


class SubjectFault(RuntimeError):
    """The subject's call did not come back: it ran past its budget of CPU time or faulted
    (raised here for impl's Python code, by ptspec.proofs.kernel.guard for the kernel's C code;
    the message names the call). A harness reports it as a C-RETURNS violation of the step and
    calls that table no more."""


def overrun(what: str, seconds: float) -> str:
    """The verdict's text for a call still running after its budget (impl's here, the kernel's C
    in ptspec.proofs.kernel.guard)."""
    return (f"{what} did not return within {seconds:g} s of CPU time (the operations return in "
            "microseconds to milliseconds): a loop that does not end")


def guard(what: str, python_subject: bool = True):
    """``within(what)`` around an operation of impl's Python; nothing for a subject whose calls
    are guarded elsewhere (the kernel's C, ptspec.proofs.kernel.guard)."""
    return within(what) if python_subject else contextlib.nullcontext()


class _Overrun(BaseException):
    """Raised in the operation by SIGVTALRM's handler (never escapes ``within``)."""


def _overrun(signum, frame):
    if within.armed:
        raise _Overrun


class within:
    """``with within(what):`` runs the block under a budget of ``seconds`` (default
    IMPL_CALL_CPU_SECONDS) of CPU time and raises SubjectFault naming ``what`` when the block is still
    running after it. The handler is installed at the first use and stays (it does nothing while
    no block is armed, and a handler someone else installed since is replaced at the next use)."""

    __slots__ = ("what", "seconds", "guarded")
    armed = False                   # a block is running under the timer

    def __init__(self, what: str, seconds: float | None = None):
        self.what = what
        self.seconds = IMPL_CALL_CPU_SECONDS if seconds is None else seconds

    def __enter__(self):
        # a block inside an armed one runs under the outer budget (its exit must not disarm it)
        self.guarded = not within.armed and threading.get_ident() == threading.main_thread().ident
        if self.guarded:
            if _signal.getsignal(signal.SIGVTALRM) is not _overrun:
                signal.signal(signal.SIGVTALRM, _overrun)
            within.armed = True
            signal.setitimer(signal.ITIMER_VIRTUAL, self.seconds)
        return self

    def __exit__(self, kind, exc, tb):
        if not self.guarded:
            return False
        within.armed = False
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        if kind is _Overrun:
            raise SubjectFault(overrun(self.what, self.seconds)) from None
        return False


def unit_call(statement: str, what: str, fn, *args):
    """``fn(*args)`` for a unit check that calls impl directly, with no harness to report a step:
    the whole call under one operation's budget (``within``; an operation the call makes through
    a harness runs under this outer budget). (fn's value, None), or (None, the failure: the
    statement's id, e.g. C-MMU-RETURNS, then what did not return) when the budget ran out."""
    try:
        with within(what):
            return fn(*args), None
    except SubjectFault as exc:
        return None, f"{statement} {exc}"
