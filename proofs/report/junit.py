"""`ptspec verify --junit FILE`: results as JUnit XML, the test report format CI systems read.

There is no single JUnit XML standard; this writes the common subset that Jenkins, GitLab, GitHub
test reporters and pytest's own writer agree on:

    <testsuites name="ptspec" tests= failures= errors= skipped= time=>
      <testsuite name="ptspec" tests= failures= errors= skipped= time= timestamp=>
        <properties> ptspec version, profile, seed, shard, jobs </properties>
        <testcase classname="<engine>" name="<obligation id>" time="<seconds>">
          passed, proved: no child, or <system-out> with what was checked
          refuted:        <failure type="refuted" message="breaks S2-RC">counterexample</failure>
          error:          <error type="error" message="first line">full detail</error>
          unknown:        <skipped type="unknown" message="the reason"/>

Times are seconds with millisecond precision; a testcase's time is its check's time, the suite's the
wall-clock time of the run when it is known (with --jobs N it is less than the sum). An unknown result
is "skipped" for the CI's display only; `ptspec verify` still exits 2 for it.

Written with the standard library's xml.etree: the format needs no more, and a dependency would
only add a pin. Characters that XML 1.0 cannot carry (control characters in a counterexample) are
replaced by U+FFFD so the file always parses.
"""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from typing import Any

from ptspec import __version__
from ptspec.proofs.runner.registry import PASSING, Result
from ptspec.proofs.report.results import broken_invariants, render_counterexample, summary_counts

_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _testcase(r: Result) -> ET.Element:
    case = ET.Element("testcase", classname=_text(r.engine or "unknown"), name=_text(r.id),
                      time=f"{r.seconds:.3f}")
    if r.status in PASSING:
        out = ET.SubElement(case, "system-out")
        out.text = _text(f"{r.status}: {r.examples} checked" + (f"; {r.detail}" if r.detail else ""))
    elif r.status == "refuted":
        failure = ET.SubElement(case, "failure", type="refuted",
                                message=_text(f"counterexample: breaks {', '.join(broken_invariants(r))}"))
        failure.text = _text(render_counterexample(r))
    elif r.status == "error":
        error = ET.SubElement(case, "error", type="error", message=_text(_first_line(r.detail) or "error"))
        error.text = _text(r.detail)
    else:
        ET.SubElement(case, "skipped", type="unknown", message=_text(r.detail or "unknown"))
    return case


def build(results: list[Result], profile: str, seed: int, *, wall_seconds: float | None = None,
          shard: str | None = None, jobs: int = 1, timestamp: datetime.datetime | None = None) -> ET.Element:
    """The <testsuites> element for `results`."""
    counts = summary_counts(results)
    seconds = counts["seconds"] if wall_seconds is None else wall_seconds
    totals = {"tests": str(counts["total"]), "failures": str(counts["refuted"]),
              "errors": str(counts["error"]), "skipped": str(counts["unknown"]), "time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", name="ptspec", **totals)
    when = (timestamp or datetime.datetime.now()).replace(microsecond=0).isoformat()
    suite = ET.SubElement(root, "testsuite", name="ptspec", timestamp=when, **totals)
    props = ET.SubElement(suite, "properties")
    for name, value in (("ptspec", __version__), ("profile", profile), ("seed", seed),
                        ("shard", shard or "1/1"), ("jobs", jobs)):
        ET.SubElement(props, "property", name=name, value=_text(value))
    for r in results:
        suite.append(_testcase(r))
    return root


def dumps(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: list[Result], path: str, profile: str, seed: int, **kw: Any) -> None:
    from ptspec.proofs.report import atomic
    atomic.write_text(path, dumps(build(results, profile, seed, **kw)))
