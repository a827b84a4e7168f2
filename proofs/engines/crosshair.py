"""Run CrossHair (0.0.112) in-process and read its verdict honestly.

Two entry points, both with explicit per-condition and per-path timeouts:

* ``check_contract(fn)``: CrossHair's ``analyze_function`` on a function with PEP 316 contracts
  (``pre:`` / ``post:`` lines in its docstring). A pass is only CrossHair's own
  ``MessageType.CONFIRMED`` ("Confirmed over all paths.": the path tree was exhausted with every
  path confirmed) for every postcondition. ``POST_FAIL`` / ``EXEC_ERR`` / ``POST_ERR`` are
  refutations (with CrossHair's concrete counterexample call); ``CANNOT_CONFIRM`` (time ran out before
  exhaustion), ``PRE_UNSAT`` (no input meets the preconditions: nothing checked), syntax or import
  errors, or no message at all are "unknown".
* ``diff(fn1, fn2)``: CrossHair's ``diff_behavior``. A pass is no difference **and** CrossHair's own
  ``exhaustion`` statistic set (the CLI prints "All paths exhausted" from the same counter); no
  difference without exhaustion is "unknown"; a difference is a refutation with the arguments and
  both results; an error string from CrossHair is "unknown".

The functions analysed are ordinary module-level functions (``proofs/stage2/crosshair_targets.py``)
whose source CrossHair can read.
"""

from __future__ import annotations

import collections
import dataclasses
import time

from crosshair.core_and_libs import analyze_function, run_checkables  # registers the patches
from crosshair.diff_behavior import diff_behavior
from crosshair.fnutil import FunctionInfo
from crosshair.options import DEFAULT_OPTIONS, AnalysisKind, AnalysisOptionSet
from crosshair.statespace import AnalysisMessage, MessageType

REFUTING = (MessageType.POST_FAIL, MessageType.EXEC_ERR, MessageType.POST_ERR)


@dataclasses.dataclass
class ChOutcome:
    status: str                      # "passed" | "refuted" | "unknown"
    detail: str = ""
    paths: int = 0
    counterexample: dict | None = None
    seconds: float = 0.0


def _options(per_condition: float, per_path: float) -> AnalysisOptionSet:
    return AnalysisOptionSet(per_condition_timeout=float(per_condition),
                             per_path_timeout=float(per_path),
                             analysis_kind=[AnalysisKind.PEP316])


def _describe(m: AnalysisMessage) -> str:
    return f"{m.state.name}: {m.message}"


def check_contract(fn, per_condition: float, per_path: float) -> ChOutcome:
    """CrossHair's verdict on the PEP 316 contracts of fn."""
    t0 = time.monotonic()
    messages = run_checkables(analyze_function(fn, _options(per_condition, per_path)))
    seconds = time.monotonic() - t0
    name = fn.__name__
    if not messages:
        return ChOutcome("unknown", f"{name}: CrossHair reported nothing (no contract checked)",
                         seconds=seconds)
    bad = [m for m in messages if m.state in REFUTING]
    if bad:
        m = bad[0]
        return ChOutcome("refuted", f"{name}: {_describe(m)}", len(messages),
                         {"call": m.message, "condition": m.condition_src or "",
                          "line": m.line, "crosshair_status": m.state.name},
                         seconds)
    others = [m for m in messages if m.state != MessageType.CONFIRMED]
    if others:
        return ChOutcome("unknown", f"{name}: " + "; ".join(_describe(m) for m in others),
                         seconds=seconds)
    return ChOutcome("passed", f"{name}: {len(messages)} postcondition(s) confirmed over all "
                               "paths (exhausted)", len(messages), seconds=seconds)


def diff(fn1, fn2, per_condition: float, per_path: float) -> ChOutcome:
    """CrossHair's diff_behavior of fn1 and fn2 (same signature), with exhaustion required."""
    t0 = time.monotonic()
    options = DEFAULT_OPTIONS.overlay(_options(per_condition, per_path))
    options.stats = collections.Counter()
    found = diff_behavior(FunctionInfo.from_fn(fn1), FunctionInfo.from_fn(fn2), options)
    seconds = time.monotonic() - t0
    stats = options.stats
    label = f"{fn1.__name__} vs {fn2.__name__}"
    paths = int(stats.get("num_paths", 0))
    if isinstance(found, str):
        return ChOutcome("unknown", f"{label}: CrossHair could not compare them: {found}",
                         paths, seconds=seconds)
    if found:
        d = found[0]
        return ChOutcome("refuted", f"{label}: behaviours differ", paths, {
            "args": d.args,
            fn1.__name__: {"returns": d.result1.return_repr, "raises": d.result1.error},
            fn2.__name__: {"returns": d.result2.return_repr, "raises": d.result2.error}},
            seconds)
    if stats.get("exhaustion", 0) > 0:
        return ChOutcome("passed", f"{label}: no difference, all paths exhausted "
                                   f"({paths} iterations)", max(paths, 1), seconds=seconds)
    return ChOutcome("unknown", f"{label}: no difference found in {paths} iterations, but the "
                                "paths were not exhausted", paths, seconds=seconds)
