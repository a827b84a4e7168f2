"""Reports of a `ptspec verify` run: the JSON report of DESIGN.md, counterexamples, the summary table.

The JSON keys and meanings are those of DESIGN.md ("Report"); other tools and CI read them. Additions
(kept optional for readers): per check "examples" and "rlimit" (z3 resource use, or null), top-level
"shard" ("i/n" or null) and "jobs", "summary.total" and "summary.wall_seconds" (the run's wall-clock
time; "summary.seconds" stays the sum of the checks' times), per check and in the summary
"cpu_seconds" (CPU time: what a check costs whatever else the machine runs). A "proved" check
keeps "proved" as its status and counts under "passed" in the summary. JUnit XML and KTAP are in
report_junit.py and report_ktap.py; docs/reports.md describes all three.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from rich.table import Table
from rich.text import Text

from ptspec import __version__
from ptspec.proofs.runner.registry import PASSING, Result

_STYLE = {"passed": "green", "proved": "bold green", "refuted": "bold red", "unknown": "yellow",
          "error": "bold magenta"}
_INVARIANT_ID = re.compile(r"^([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*)\b")


def summary_counts(results: Iterable[Result]) -> dict[str, Any]:
    """{"passed", "refuted", "unknown", "error", "seconds", "cpu_seconds", "total"}; proved counts
    as passed."""
    counts: dict[str, Any] = {"passed": 0, "refuted": 0, "unknown": 0, "error": 0}
    seconds, cpu, total = 0.0, 0.0, 0
    for r in results:
        counts["passed" if r.status in PASSING else r.status] += 1
        seconds += r.seconds
        cpu += r.cpu_seconds
        total += 1
    counts["seconds"] = round(seconds, 3)
    counts["cpu_seconds"] = round(cpu, 3)
    counts["total"] = total
    return counts


def exit_code(results: list[Result]) -> int:
    """0 all passed/proved; 1 any refuted; else 2 on unknown, error, or nothing checked."""
    if any(r.status == "refuted" for r in results):
        return 1
    if not results or any(r.status not in PASSING for r in results):
        return 2
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def check_entry(r: Result) -> dict[str, Any]:
    return {"id": r.id, "engine": r.engine, "invariants": list(r.invariants), "status": r.status,
            "seconds": round(r.seconds, 3), "cpu_seconds": round(r.cpu_seconds, 3), "detail": r.detail,
            "counterexample": r.counterexample,
            "examples": r.examples, "rlimit": r.rlimit}


def build_report(results: list[Result], profile: str, seed: int, *, shard: str | None = None,
                 jobs: int = 1, wall_seconds: float | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict (`shard` as "i/n" or None for the whole selection)."""
    summary = summary_counts(results)
    if wall_seconds is not None:
        summary["wall_seconds"] = round(wall_seconds, 3)
    return {"ptspec": __version__, "profile": profile, "seed": seed, "shard": shard, "jobs": jobs,
            "checks": [check_entry(r) for r in results], "summary": summary}


def dumps(report: dict[str, Any]) -> str:
    """The report as JSON text (non-JSON values in counterexamples become strings, sets lists)."""
    return json.dumps(report, indent=2, default=_jsonable) + "\n"


def write_json(report: dict[str, Any], path: str) -> None:
    """Write the report atomically (proofs/report/atomic.py)."""
    from ptspec.proofs.report import atomic
    atomic.write_text(path, dumps(report))


def named_invariants(r: Result) -> list[str]:
    """Invariant ids the counterexample's violations name (their leading id), in order."""
    cx = r.counterexample or {}
    found: list[str] = []
    for v in cx.get("violations") or []:
        m = _INVARIANT_ID.match(str(v))
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return found


def broken_invariants(r: Result) -> list[str]:
    """Invariant ids the violations name, else (for display) the obligation's invariants."""
    return named_invariants(r) or list(r.invariants)


def render_counterexample(r: Result) -> str:
    """A counterexample as plain text a reviewer can paste into a mail or a test."""
    cx = r.counterexample or {}
    lines = [f"=== counterexample: {r.id} breaks {', '.join(broken_invariants(r)) or '(no invariant named)'}"]
    if r.detail:
        lines.append(r.detail)
    if cx.get("kernel_function"):
        lines.append(f"kernel function: {cx['kernel_function']}")
    violations = cx.get("violations") or []
    if violations:
        lines.append("violations:")
        lines += [f"  {v}" for v in violations]
    if cx.get("ops"):
        lines += ["operations:", "```python", str(cx["ops"]).rstrip("\n"), "```"]
    if cx.get("tables"):
        lines += ["tables:", "```", str(cx["tables"]).rstrip("\n"), "```"]
    rest = {k: v for k, v in cx.items() if k not in ("ops", "tables", "violations", "kernel_function")}
    for key, value in rest.items():
        lines.append(f"{key}: {value}")
    if not cx:
        lines.append("(the check gave no counterexample)")
    return "\n".join(lines)


def status_text(status: str) -> Text:
    return Text(status, style=_STYLE.get(status, ""))


def result_line(r: Result, index: int, count: int) -> str:
    """One plain line per finished check (used when output is not a terminal)."""
    width = len(str(count))
    line = (f"[{index + 1:>{width}}/{count}] {r.status:<8} {r.id} ({r.engine}, {r.seconds:.2f}s, "
            f"{r.cpu_seconds:.2f}s CPU, {r.examples} checked)")
    if r.status not in PASSING and r.detail:
        line += f": {r.detail.splitlines()[0]}"
    return line


def result_text(r: Result, index: int, count: int) -> Text:
    """`result_line` with the status coloured (for a terminal)."""
    text = Text(result_line(r, index, count))
    start = text.plain.index("] ") + 2
    text.stylize(_STYLE.get(r.status, ""), start, start + len(r.status))
    return text


def summary_table(results: list[Result]) -> Table:
    """The rich table: check, engine, status, time, CPU time, examples/states."""
    table = Table(title="ptspec verify")
    table.add_column("check", no_wrap=True)
    table.add_column("engine")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("CPU", justify="right")
    table.add_column("examples/states", justify="right")
    for r in results:
        table.add_row(r.id, r.engine, status_text(r.status), f"{r.seconds:.2f}s", f"{r.cpu_seconds:.2f}s",
                      str(r.examples))
    return table


def summary_line(results: list[Result], wall: float | None = None) -> str:
    """The one-line summary; `seconds` is the sum of the checks' times, and with `wall` (a run in
    worker processes) the run's own duration comes first; then the checks' CPU time."""
    counts = summary_counts(results)
    proved = sum(r.status == "proved" for r in results)
    cpu = f"{counts['cpu_seconds']:.2f}s CPU"
    took = (f"{counts['seconds']:.2f}s ({cpu})" if wall is None else
            f"{wall:.2f}s ({counts['seconds']:.2f}s of checks in worker processes, {cpu})")
    return (f"{counts['passed']} passed ({proved} proved), {counts['refuted']} refuted, "
            f"{counts['unknown']} unknown, {counts['error']} error in {took}")


def problems(results: list[Result]) -> list[str]:
    """'id: status: detail' for every unknown or error result (the reasons a run is not a pass)."""
    return [f"{r.id}: {r.status}: {r.detail}" for r in results if r.status in ("unknown", "error")]
