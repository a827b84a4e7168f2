"""The live output of `ptspec verify` for humans: a line per check without a terminal, bars with one.

`Lines` (CI logs) prints one line per finished check, the counterexample of a refuted one, and a
heartbeat line while a check runs longer than `heartbeat` seconds. `Bars` (a terminal) shows an
overall bar and one bar per running check. Both keep their state per check, since with --jobs N
several run at once. `Fanout` passes the runner's events to several listeners (the human display
and the KTAP stream of report_ktap.py).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ptspec.proofs.report import results as report
from ptspec.proofs.runner.registry import Listener, Obligation, Result

HEARTBEAT_SECONDS = 60.0  # without a terminal: a line while a check runs longer than this


def print_plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


class Lines(Listener):
    """No terminal (CI): one line per finished check, a heartbeat for long ones, no bars.

    With --jobs several checks run at once, so the counters are kept per check.
    """

    def __init__(self, console: Console, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.console, self.heartbeat = console, heartbeat
        self.running: dict[str, list[Any]] = {}  # id -> [done, total, time of the last line]

    def started(self, ob: Obligation, index: int, count: int) -> None:
        self.running[ob.id] = [0, None, time.monotonic()]

    def progressed(self, ob: Obligation, advance: int, total: int | None, note: str | None) -> None:
        state = self.running.setdefault(ob.id, [0, None, time.monotonic()])
        state[0] += advance
        state[1] = total if total is not None else state[1]
        now = time.monotonic()
        if now - state[2] >= self.heartbeat and advance:
            state[2] = now
            of = f"/{state[1]}" if state[1] else ""
            print_plain(self.console, f"      ... {ob.id}: {state[0]}{of}" + (f" {note}" if note else ""))

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None:
        self.running.pop(ob.id, None)
        self.console.print(report.result_text(result, index, count))
        if result.status == "refuted":
            print_plain(self.console, report.render_counterexample(result))


class Bars(Listener):
    """A terminal: an overall bar and one per running check, throttled to ~10 updates a second each."""

    def __init__(self, console: Console, count: int) -> None:
        self.console = console
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.overall = self.progress.add_task("checks", total=count)
        self.tasks: dict[str, list[Any]] = {}  # id -> [task, pending advance, time of the last update]

    def started(self, ob: Obligation, index: int, count: int) -> None:
        self.tasks[ob.id] = [self.progress.add_task(ob.id, total=None), 0, 0.0]

    def progressed(self, ob: Obligation, advance: int, total: int | None, note: str | None) -> None:
        state = self.tasks.get(ob.id)
        if state is None:
            return
        state[1] += advance
        now = time.monotonic()
        if now - state[2] < 0.1 and total is None and note is None:
            return
        state[2] = now
        kw: dict[str, Any] = {"advance": state[1]}
        if total is not None:
            kw["total"] = total
        if note is not None:
            kw["description"] = f"{ob.id} {note}"
        self.progress.update(state[0], **kw)
        state[1] = 0

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None:
        state = self.tasks.pop(ob.id, None)
        if state is not None:
            self.progress.remove_task(state[0])
        self.progress.advance(self.overall)
        self.console.print(report.result_text(result, index, count))
        if result.status == "refuted":
            print_plain(self.console, report.render_counterexample(result))


class Fanout(Listener):
    """Passes every event to each of `listeners` (the human display and the KTAP stream)."""

    def __init__(self, *listeners: Listener) -> None:
        self.listeners = listeners

    def started(self, ob: Obligation, index: int, count: int) -> None:
        for listener in self.listeners:
            listener.started(ob, index, count)

    def progressed(self, ob: Obligation, advance: int, total: int | None, note: str | None) -> None:
        for listener in self.listeners:
            listener.progressed(ob, advance, total, note)

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None:
        for listener in self.listeners:
            listener.finished(ob, result, index, count)
