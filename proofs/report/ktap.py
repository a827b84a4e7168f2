"""`ptspec verify --ktap`: results as KTAP version 1, the kernel's test output format (KUnit, kselftest).

The format is the one Documentation/dev-tools/ktap.rst defines: a version line "KTAP version 1", a
plan line "1..N", then one result line per test, "ok <n> <description>" or "not ok <n> <description>",
optionally followed by " # <directive> <diagnostic data>", numbered from 1 without gaps; any other
information goes on diagnostic lines "# ...", placed right before the result line of the test they
are about. ptspec writes one flat level (no subtests): one test per obligation, the obligation id as
its description, in registry order:

    passed, proved   ok N id               (diagnostic: status, examples checked, seconds, engine)
    refuted          not ok N id           (diagnostics: the counterexample, line by line)
    unknown          not ok N id # SKIP <reason>
    error            not ok N id # ERROR <first line of the error>

An unknown result carries the SKIP directive on a "not ok" line (the specification allows either
result with SKIP): a reader that knows the directive reports it as skipped, one that does not counts
it as a failure, never as a pass. The run ends with "# Totals: pass:P fail:F skip:S error:E".

What this leaves out: nested subtests (obligations are not grouped), the TODO/XFAIL/TIMEOUT
directives (a time-out is an unknown, so SKIP with its reason).
"""

from __future__ import annotations

from typing import IO, Iterable

from ptspec.proofs.runner.registry import PASSING, Listener, Obligation, Result
from ptspec.proofs.report.results import render_counterexample, summary_counts

VERSION_LINE = "KTAP version 1"


def header(count: int, note: str = "") -> list[str]:
    """The version line, the plan for `count` tests, and an optional diagnostic about the run."""
    lines = [VERSION_LINE, f"1..{count}"]
    if note:
        lines += diagnostics(note)
    return lines


def diagnostics(text: str) -> list[str]:
    """Every non-blank line of `text` as a diagnostic line '# ...'."""
    return [f"# {line.rstrip()}" for line in str(text).splitlines() if line.strip()]


def _description(ob_id: str) -> str:
    return ob_id.replace("#", "_").strip() or "unnamed"  # a description cannot hold '#'


def _one_line(text: str) -> str:
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return first or "no reason given"


def result_lines(r: Result, number: int) -> list[str]:
    """Diagnostic lines, then the result line, for result `r` as test `number`."""
    name = _description(r.id)
    if r.status in PASSING:
        lines = diagnostics(f"{r.id}: {r.status}, {r.examples} checked in {r.seconds:.2f}s ({r.engine})"
                            + (f": {r.detail}" if r.detail else ""))
        return lines + [f"ok {number} {name}"]
    if r.status == "refuted":
        return diagnostics(render_counterexample(r)) + [f"not ok {number} {name}"]
    directive = "SKIP" if r.status == "unknown" else "ERROR"
    lines = diagnostics(f"{r.id}: {r.status} after {r.seconds:.2f}s ({r.engine}): {r.detail}")
    return lines + [f"not ok {number} {name} # {directive} {_one_line(r.detail)}"]


def totals(results: Iterable[Result]) -> str:
    counts = summary_counts(results)
    return (f"# Totals: pass:{counts['passed']} fail:{counts['refuted']} skip:{counts['unknown']} "
            f"error:{counts['error']}")


def render(results: list[Result], note: str = "") -> str:
    """A whole KTAP document for `results` (what the streamed output adds up to)."""
    lines = header(len(results), note)
    for number, r in enumerate(results, start=1):
        lines += result_lines(r, number)
    return "\n".join(lines + [totals(results)]) + "\n"


class KtapStream:
    """Writes KTAP to `out` as results arrive, in test-number order whatever the completion order."""

    def __init__(self, out: IO[str], count: int, note: str = "") -> None:
        self.out, self.count = out, count
        self.pending: dict[int, Result] = {}
        self.written: list[Result] = []
        self._write(header(count, note))

    def _write(self, lines: list[str]) -> None:
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()

    def add(self, position: int, r: Result) -> None:
        """Result of test `position` (0-based); written once every earlier one has been."""
        self.pending[position] = r
        while len(self.written) in self.pending:
            nxt = self.pending.pop(len(self.written))
            self.written.append(nxt)
            self._write(result_lines(nxt, len(self.written)))

    def close(self, note: str = "") -> None:
        """Write the totals (and a note); results still missing are reported as errors, not dropped."""
        for position in range(len(self.written), self.count):
            if position not in self.pending:
                self.pending[position] = Result("error", "no result was recorded for this test",
                                                id=f"missing-{position + 1}")
            self.add(position, self.pending[position])
        self._write(diagnostics(note) + [totals(self.written)])


class KtapListener(Listener):
    """Feeds a KtapStream from the runner; `offset` is the number of tests written before the run."""

    def __init__(self, stream: KtapStream, offset: int = 0) -> None:
        self.stream, self.offset = stream, offset

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None:
        self.stream.add(self.offset + index, result)
