"""Run CrossHair (0.0.112) in-process, budgeted in iterations, and read its verdict honestly.

Two entry points, both under a ``Budget``:

* ``check_contract(fn, budget)``: CrossHair's ``analyze_function`` on a function with PEP 316
  contracts (``pre:`` / ``post:`` lines in its docstring). A pass is only CrossHair's own
  ``MessageType.CONFIRMED`` ("Confirmed over all paths.": the path tree was exhausted with every
  path confirmed) for every postcondition. ``POST_FAIL`` / ``EXEC_ERR`` / ``POST_ERR`` are
  refutations (with CrossHair's concrete counterexample call); ``CANNOT_CONFIRM``, ``PRE_UNSAT``
  (no input meets the preconditions: nothing checked), syntax or import errors, or no message at all
  are "unknown".
* ``diff(fn1, fn2, budget)``: CrossHair's ``diff_behavior``. A pass is no difference **and** every
  exploration (CrossHair runs one per argument order) exhausted with every path run to its end; no
  difference otherwise is "unknown" (CrossHair's own "exhaustion" counter is not enough: a path
  whose solver query was unknown or that hit the per-path guard still counts as exhausted, with an
  unknown result); a difference is a refutation with the arguments and both results; an error
  string from CrossHair is "unknown".

The budget is counted in things that do not depend on the machine's speed: ``max_iterations``
(paths tried per contract or diff pair; a diff splits them between its two argument orders) and
``smt_rlimit`` (z3 resource units per solver query inside CrossHair, its ``CROSSHAIR_SMT_RLIMIT``).
CrossHair's clocks (``per_condition_timeout`` and ``per_path_timeout``, process CPU seconds, and
the z3 wall-clock ``timeout`` of half the per-path value it derives from them) are set to the
check's hang guard only. ``max_uninteresting_iterations`` is off, so exploration stops at
exhaustion, a refutation, the iteration budget or the hang guard, nothing else.

CrossHair's exploration is deterministic for a given budget: its search tree draws from a
``random.Random`` with a fixed seed (``crosshair.statespace.newrandom``) and its solvers are made
with fixed z3 seeds (``make_default_solver``), so two runs try the same paths in the same order and
report the same iteration counts (tests/test_crosshair_budget.py shows it).

Every unknown says why: the iteration budget ("iteration budget exhausted: N iterations"), a z3
query stopped at the rlimit ("z3 rlimit exhausted: N units per query"), the hang guard, or a path
CrossHair could not follow. To tell, ``_observing`` wraps, for the duration of one call only, the
two CrossHair functions every exploration and every solver query go through
(``crosshair.core.explore_loop`` and ``crosshair.statespace.solver_is_sat``) and records what they
return; it changes nothing they do.

The functions analysed are ordinary module-level functions (``proofs/stage2/crosshair_targets.py``)
whose source CrossHair can read.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import time

import crosshair.core as ch_core
import crosshair.statespace as ch_statespace
from crosshair.core_and_libs import analyze_function, run_checkables  # registers the patches
from crosshair.diff_behavior import diff_behavior
from crosshair.fnutil import FunctionInfo
from crosshair.options import DEFAULT_OPTIONS, AnalysisKind, AnalysisOptionSet
from crosshair.statespace import AnalysisMessage, MessageType
from crosshair.util import UnknownSatisfiability

REFUTING = (MessageType.POST_FAIL, MessageType.EXEC_ERR, MessageType.POST_ERR)
RLIMIT = "rlimit"                   # a query that stopped at smt_rlimit
RLIMIT_REASON = "max. resource limit exceeded"      # one of z3's words for it ("canceled" the other)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one contract or diff pair may spend: the verdict inputs, and the hang guard."""

    max_iterations: int                # paths tried (CrossHair "iterations")
    smt_rlimit: int                    # z3 resource units per solver query (0: no limit)
    guard_seconds: float = math.inf    # hang guard only: CrossHair's per-condition / per-path clock


@dataclasses.dataclass
class ChOutcome:
    status: str                      # "passed" | "refuted" | "unknown"
    detail: str = ""
    paths: int = 0                   # iterations CrossHair ran (paths tried)
    counterexample: dict | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class _Exploration:
    iterations: int
    exhausted: bool
    status: str                      # CrossHair's VerificationStatus name of the whole tree
    cpu_seconds: float
    guard_seconds: float


@dataclasses.dataclass
class _Observed:
    explorations: list = dataclasses.field(default_factory=list)
    queries: int = 0
    unknown: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    max_seconds: float = 0.0         # longest wall-clock time of one query

    @property
    def iterations(self) -> int:
        return sum(e.iterations for e in self.explorations)


@contextlib.contextmanager
def _observing(smt_rlimit: int, guard_seconds: float):
    """Record every exploration and solver query of the CrossHair calls inside, with z3's rlimit
    per query set to `smt_rlimit`; everything is restored on exit. (A query's resource use is not
    read: z3's statistics of CrossHair's solvers cost about 15% of the run.)"""
    seen = _Observed()
    explore_loop = ch_core.explore_loop
    solver_is_sat = ch_statespace.solver_is_sat
    rlimit = ch_statespace.CROSSHAIR_SMT_RLIMIT

    def recorded_loop(options, *args, **kw):
        t0 = time.process_time()
        result = explore_loop(options, *args, **kw)
        top = result.top_analysis.verification_status if result.top_analysis else None
        seen.explorations.append(_Exploration(
            result.iterations, bool(result.exhausted), top.name if top else "UNKNOWN",
            time.process_time() - t0, float(options.per_condition_timeout)))
        return result

    def recorded_query(solver, *exprs):
        t0 = time.monotonic()
        try:
            return solver_is_sat(solver, *exprs)
        except UnknownSatisfiability:
            # z3 says "canceled" or "max. resource limit exceeded" at the rlimit, "timeout" (or
            # "canceled") at its clock, which CrossHair sets to a quarter of the guard or more
            reason = solver.reason_unknown()
            clock = reason == "timeout" or time.monotonic() - t0 >= guard_seconds / 4
            if smt_rlimit > 0 and not clock and reason in ("canceled", RLIMIT_REASON):
                reason = RLIMIT
            seen.unknown[reason] += 1
            raise
        finally:
            seen.queries += 1
            seen.max_seconds = max(seen.max_seconds, time.monotonic() - t0)

    ch_core.explore_loop = recorded_loop
    ch_statespace.solver_is_sat = recorded_query
    ch_statespace.CROSSHAIR_SMT_RLIMIT = int(smt_rlimit)
    try:
        yield seen
    finally:
        ch_core.explore_loop = explore_loop
        ch_statespace.solver_is_sat = solver_is_sat
        ch_statespace.CROSSHAIR_SMT_RLIMIT = rlimit


def _options(budget: Budget) -> AnalysisOptionSet:
    guard = max(float(budget.guard_seconds), 0.001)
    return AnalysisOptionSet(max_iterations=int(budget.max_iterations),
                             max_uninteresting_iterations=0,      # 0: never stop for that
                             per_condition_timeout=guard, per_path_timeout=guard,
                             analysis_kind=[AnalysisKind.PEP316])


def _spent(seen: _Observed) -> str:
    return f"{seen.iterations} iterations, {seen.queries} z3 queries"


def _why(seen: _Observed, budget: Budget) -> str:
    """Why the explorations of one call gave no pass: budget, hang guard, or paths not followed."""
    reasons = []
    for e in seen.explorations:
        if not e.exhausted:
            if e.cpu_seconds >= e.guard_seconds:
                reasons.append(f"hang guard: stopped after {e.cpu_seconds:.3g}s CPU (guard "
                               f"{e.guard_seconds:.3g}s) at iteration {e.iterations}, paths not "
                               "exhausted")
            else:
                reasons.append(f"iteration budget exhausted: {budget.max_iterations} iterations "
                               "did not exhaust the paths")
        elif e.status != "CONFIRMED":
            reasons.append(f"paths exhausted in {e.iterations} iterations, but some ended "
                           "unknown")
    for reason, n in sorted(seen.unknown.items()):
        if reason == RLIMIT:
            reasons.append(f"z3 rlimit exhausted: {budget.smt_rlimit} units per query "
                           f"({n} queries)")
        elif reason == "timeout":
            reasons.append(f"hang guard: {n} z3 queries stopped at their wall-clock guard")
        else:
            reasons.append(f"z3 unknown ({reason}) on {n} queries")
    if any(e.exhausted and e.status != "CONFIRMED" for e in seen.explorations) \
            and not seen.unknown:
        reasons.append("a path CrossHair could not follow (per-path hang guard, or an operation "
                       "it does not model)")
    return "; ".join(dict.fromkeys(reasons)) or "no exploration ran"


def _describe(m: AnalysisMessage) -> str:
    return f"{m.state.name}: {m.message}"


def check_contract(fn, budget: Budget) -> ChOutcome:
    """CrossHair's verdict on the PEP 316 contracts of fn."""
    t0 = time.monotonic()
    with _observing(budget.smt_rlimit, budget.guard_seconds) as seen:
        messages = run_checkables(analyze_function(fn, _options(budget)))
    seconds = time.monotonic() - t0
    name = fn.__name__
    iterations = seen.iterations
    if not messages:
        return ChOutcome("unknown", f"{name}: CrossHair reported nothing (no contract checked)",
                         seconds=seconds)
    bad = [m for m in messages if m.state in REFUTING]
    if bad:
        m = bad[0]
        return ChOutcome("refuted", f"{name}: {_describe(m)}", max(iterations, 1),
                         {"call": m.message, "condition": m.condition_src or "",
                          "line": m.line, "crosshair_status": m.state.name},
                         seconds)
    others = [m for m in messages if m.state != MessageType.CONFIRMED]
    explored = all(e.exhausted and e.status == "CONFIRMED" for e in seen.explorations)
    if others or not explored:
        return ChOutcome("unknown", f"{name}: " + "; ".join(_describe(m) for m in others)
                         + f" ({_why(seen, budget)}; {_spent(seen)})", iterations,
                         seconds=seconds)
    return ChOutcome("passed", f"{name}: {len(messages)} postcondition(s) confirmed over all "
                               f"paths (exhausted; {_spent(seen)})", iterations, seconds=seconds)


def diff(fn1, fn2, budget: Budget) -> ChOutcome:
    """CrossHair's diff_behavior of fn1 and fn2 (same signature), with exhaustion required."""
    t0 = time.monotonic()
    options = DEFAULT_OPTIONS.overlay(_options(budget))
    with _observing(budget.smt_rlimit, budget.guard_seconds) as seen:
        found = diff_behavior(FunctionInfo.from_fn(fn1), FunctionInfo.from_fn(fn2), options)
    seconds = time.monotonic() - t0
    label = f"{fn1.__name__} vs {fn2.__name__}"
    paths = seen.iterations
    if isinstance(found, str):
        return ChOutcome("unknown", f"{label}: CrossHair could not compare them: {found}",
                         paths, seconds=seconds)
    if found:
        d = found[0]
        return ChOutcome("refuted", f"{label}: behaviours differ", max(paths, 1), {
            "args": d.args,
            fn1.__name__: {"returns": d.result1.return_repr, "raises": d.result1.error},
            fn2.__name__: {"returns": d.result2.return_repr, "raises": d.result2.error}},
            seconds)
    # One argument order explored to the end with every path run through is every input.
    if any(e.exhausted and e.status == "CONFIRMED" for e in seen.explorations):
        return ChOutcome("passed", f"{label}: no difference, all paths exhausted "
                                   f"({_spent(seen)})", max(paths, 1), seconds=seconds)
    return ChOutcome("unknown", f"{label}: no difference found, but not every path was "
                                f"explored ({_why(seen, budget)}; {_spent(seen)})", paths,
                     seconds=seconds)
