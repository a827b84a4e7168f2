"""The symbolic executor and prover behind the z3 lemmas (values in ``proofs/engines/z3/bv.py``).

* ``Explorer.run(body)`` runs ``body()`` again and again, replaying the branch decisions of a prefix
  and, at each new symbolic branch (a ``SymBool`` or ``SymInt`` asked for its truth value), taking
  the side the current path's z3 model already satisfies and asking z3 whether the other side is
  feasible too; feasible sides are queued. Each path yields its path condition, the side conditions
  met on it (no overflow of the int model) and the value ``body`` returned (or the exception it
  raised).
* ``prove(...)`` asks z3, in a fresh context, under the profile's ``rlimit``, whether some path
  violates the property (the value ``body`` returned: a Boolean, or a dict of named Booleans) or a
  side condition, or raised. ``unknown`` from z3, contradictory assumptions (nothing checked) or
  more paths than allowed are reported as unknown, never as proved. Counterexamples are the model's
  values of the named inputs in hex, the violated statements and the path taken.

The budget of every query is its ``rlimit`` (z3 resource units: the same stopping point on any
machine). The z3 wall-clock ``timeout`` is only the hang guard: each query gets what is left until
the check's ``deadline`` (``guard_ms``; an optional ``timeout_ms`` caps it further, for tests), so a
slow machine reaches the same verdicts later and only a hung run is stopped by the clock. An
unknown says which limit stopped it (``why_unknown``): "rlimit exhausted: N units" or "hang guard".
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any, Callable

import z3

from ptspec.proofs.engines.z3.bv import _ACTIVE, SymbolicError, as_bool

# -------------------------------------------------------------------------------------- executor

@dataclasses.dataclass
class Path:
    cond: z3.BoolRef
    side: z3.BoolRef
    value: Any
    exc: BaseException | None
    decisions: tuple


class TooManyPaths(Exception):
    pass


class HangGuard(BaseException):
    """The check's hang guard stopped a query (a BaseException: impl code must not swallow it)."""


def guard_ms(deadline: float | None, timeout_ms: int | None = None) -> int | None:
    """The z3 'timeout' (ms) for a query started now: what is left until `deadline`
    (time.monotonic()), capped by `timeout_ms`; None for no clock at all. HangGuard when the
    deadline has passed."""
    left = None
    if deadline is not None and deadline != float("inf"):
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0:
            raise HangGuard("the hang guard was reached before the query")
    if timeout_ms is not None:
        left = int(timeout_ms) if left is None else min(left, int(timeout_ms))
    return left


def rlimit_count(solver: z3.Solver) -> int:
    """z3's resource counter of the solver's context (it only grows: a query's use is a difference)."""
    stats = solver.statistics()
    return int(stats.get_key_value("rlimit count")) if "rlimit count" in stats.keys() else 0


def why_unknown(solver: z3.Solver, rlimit: int, used: int) -> str:
    """Which limit made a query that used `used` resource units unknown: the budget or the clock."""
    reason = solver.reason_unknown()
    if rlimit and used >= rlimit:
        return f"rlimit exhausted: {rlimit} units"
    if reason in ("timeout", "canceled"):
        return f"hang guard: z3 stopped by the clock after {used} of {rlimit} rlimit units"
    return f"z3 unknown ({reason}) after {used} of {rlimit} rlimit units"


def solver_check(solver: z3.Solver, *conds):
    """solver.check(*conds), with Ctrl-C passed on. z3 catches SIGINT itself while it solves and
    answers unknown ("interrupted from keyboard"): Python's handler never runs, so the run's
    interrupt (proofs/runner/interrupt.py) would be lost and the run would go on with the check
    merely unknown. The signal is raised again here, for Python's handler to act on."""
    r = solver.check(*conds)
    if r == z3.unknown and solver.reason_unknown() == "interrupted from keyboard":
        signal.raise_signal(signal.SIGINT)
    return r


def _check(solver: z3.Solver, rlimit: int, deadline, timeout_ms, *conds):
    """solver.check(*conds) with the hang guard as its clock: (result, rlimit units used, seconds)."""
    ms = guard_ms(deadline, timeout_ms)
    if ms is not None:
        solver.set("timeout", max(ms, 1))
    before, t0 = rlimit_count(solver), time.monotonic()
    r = solver_check(solver, *conds)
    return r, rlimit_count(solver) - before, time.monotonic() - t0


class Explorer:
    """Run a Python callable over every feasible path of its symbolic branches."""

    def __init__(self, assume=(), *, rlimit: int, timeout_ms: int | None = None,
                 deadline: float | None = None, max_paths: int = 512):
        self.assume = [as_bool(a) for a in assume]
        self.rlimit = rlimit
        self.timeout_ms = timeout_ms
        self.deadline = deadline
        self.max_paths = max_paths
        self.solver_calls = 0
        self.unknown_forks = 0
        self.max_query_rlimit = 0        # the largest resource use of one query
        self.max_query_seconds = 0.0
        self._solver = None

    def _check(self, conds):
        """(feasible, model or None) of the path conditions `conds` under the assumptions."""
        if self._solver is None:
            self._solver = z3.Solver()
            self._solver.set("rlimit", int(self.rlimit))
            self._solver.add(*self.assume)
        s = self._solver
        self.solver_calls += 1
        r, used, seconds = _check(s, self.rlimit, self.deadline, self.timeout_ms, *conds)
        self.max_query_rlimit = max(self.max_query_rlimit, used)
        self.max_query_seconds = max(self.max_query_seconds, seconds)
        if r == z3.sat:
            return True, s.model()
        if r == z3.unknown:
            why = why_unknown(s, self.rlimit, used)
            if why.startswith("hang guard"):
                raise HangGuard(why)
            self.unknown_forks += 1       # explore it: an infeasible path only costs time
            return True, None
        return False, None

    def decide(self, b: z3.BoolRef) -> bool:
        b = z3.simplify(b)
        if z3.is_true(b):
            return True
        if z3.is_false(b):
            return False
        known = self.known.get(b.get_id())
        if known is not None:           # the same condition was decided earlier on this path
            return known
        if self.pos < len(self.prefix):
            d = self.prefix[self.pos]
        else:
            if self.model is not None:
                # the model of this path already shows one side feasible: one query for the other
                d = z3.is_true(self.model.eval(b, model_completion=True))
                other = z3.Not(b) if d else b
                feasible, model = self._check(self.conds + [other])
                if feasible:
                    self.pending.append((tuple(self.prefix) + (not d,), model))
            else:
                t, mt = self._check(self.conds + [b])
                f, mf = self._check(self.conds + [z3.Not(b)])
                if t and f:
                    self.pending.append((tuple(self.prefix) + (False,), mf))
                d = t
                self.model = mt if t else mf
            self.prefix.append(d)
        self.pos += 1
        self.conds.append(b if d else z3.Not(b))
        self.known[b.get_id()] = d
        return d

    def run(self, body: Callable[[], Any]) -> list[Path]:
        """Every path of body(); [] when the assumptions themselves are contradictory."""
        paths: list[Path] = []
        feasible, model = self._check([])
        if not feasible:
            return paths
        self.pending = [((), model)]
        while self.pending:
            if len(paths) >= self.max_paths:
                raise TooManyPaths(f"more than {self.max_paths} paths")
            prefix, self.model = self.pending.pop()
            self.prefix = list(prefix)
            self.pos = 0
            self.conds: list = []
            self.side: list = []
            self.known: dict = {}
            _ACTIVE.append(self)
            exc = None
            value = None
            try:
                value = body()
            except SymbolicError:
                raise
            except Exception as e:      # a path that raises is a path too; the lemma judges it
                exc = e
            finally:
                _ACTIVE.pop()
            paths.append(Path(z3.And(*self.conds) if self.conds else z3.BoolVal(True),
                              z3.And(*self.side) if self.side else z3.BoolVal(True),
                              value, exc, tuple(self.prefix)))
        return paths


# -------------------------------------------------------------------------------------- proving

@dataclasses.dataclass
class Outcome:
    status: str                   # "proved" | "refuted" | "unknown"
    paths: int = 0
    queries: int = 0
    detail: str = ""
    counterexample: dict | None = None
    seconds: float = 0.0
    max_query_rlimit: int = 0        # the largest resource use of one z3 query (of `rlimit` allowed)
    max_query_seconds: float = 0.0   # the longest z3 query (information, not a verdict input)


def _named_terms(value) -> list:
    """A body's value as (name, z3 Boolean) pairs: a dict names its parts, anything else is one."""
    if isinstance(value, dict):
        return [(str(k), as_bool(v)) for k, v in value.items()]
    return [("property", as_bool(value))]


def _statement_names(terms) -> list:
    """The named statements of every path, in the order the body declares them (first seen)."""
    return list(dict.fromkeys(name for named in terms for name, _ in named))


def _first_statement_model(solver, ctx, assume, paths, terms, rlimit, deadline, timeout_ms):
    """A model of the refutation that breaks the first statement (in declaration order) any path
    can break. z3 builds its terms with argument orders that depend on what the process created
    before (simplification orders by term id), so the plain model of the refutation, and with it
    the statements it happens to break, could change with the tests or checks run earlier; asking
    statement by statement makes the first one named the same in every run. The refuting model
    itself when no single statement is refutable within the budget (a raise, a side condition).
    Returns (model, queries asked)."""
    asked = 0
    for name in _statement_names(terms):
        broken = [z3.And(p.cond, z3.Not(t)) for p, named in zip(paths, terms)
                  for k, t in named if k == name]
        q = z3.Solver(ctx=ctx)
        q.set("rlimit", int(rlimit))
        q.add(z3.And(*[as_bool(a) for a in assume], z3.Or(*broken)).translate(ctx))
        asked += 1
        try:
            r, _, _ = _check(q, rlimit, deadline, timeout_ms)
        except HangGuard:
            break
        if r == z3.sat:
            return q.model(), asked
    return solver.model(), asked


def hexmodel(model: z3.ModelRef, inputs: dict) -> dict:
    """The model's values of the named inputs, as hex strings."""
    out = {}
    for name, var in inputs.items():
        v = model.eval(var, model_completion=True)
        out[name] = hex(v.as_long()) if z3.is_bv_value(v) or z3.is_int_value(v) else str(v)
    return out


def prove(body: Callable[[], Any], inputs: dict, *, assume=(), rlimit: int,
          timeout_ms: int | None = None, deadline: float | None = None, max_paths: int = 512,
          what: str = "", show: Callable[[dict], dict] | None = None) -> Outcome:
    """Prove that on every path of `body` (under `assume`) it returns a true value (or a dict of
    named true values: the names of the false ones are reported), raises nothing and meets every
    side condition. `inputs` name the symbolic inputs for counterexamples; `show`
    may add derived values (computed concretely from the hex inputs) to a counterexample.
    `rlimit` is the budget of each query; `deadline` (time.monotonic()) the hang guard."""
    t0 = time.monotonic()
    assume = list(assume) + list(getattr(inputs, "ranges", []))
    ex = Explorer(assume, rlimit=rlimit, timeout_ms=timeout_ms, deadline=deadline,
                  max_paths=max_paths)

    def outcome(status, paths=0, queries=0, detail="", cex=None):
        return Outcome(status, paths, queries, detail, cex, time.monotonic() - t0,
                       ex.max_query_rlimit, ex.max_query_seconds)

    try:
        paths = ex.run(body)
    except TooManyPaths as e:
        return outcome("unknown", detail=f"{what}: {e}")
    except HangGuard as e:
        return outcome("unknown", 0, ex.solver_calls, f"{what}: {e} (budget not completed)")
    if not paths:
        return outcome("unknown", detail=f"{what}: the assumptions are contradictory, nothing was "
                                         "checked")
    bad = []
    terms = []
    for p in paths:
        named = _named_terms(p.value) if p.exc is None else [("raised", z3.BoolVal(False))]
        terms.append(named)
        ok = z3.And(*[t for _, t in named], p.side)
        bad.append(z3.And(p.cond, z3.Not(ok)))
    # The deciding query runs in a fresh z3 context: its answer (and the rlimit it needs) depends
    # on this formula only, not on what else this process built before.
    query = z3.And(*[as_bool(a) for a in assume], z3.Or(*bad))
    fresh = z3.Context()
    s = z3.Solver(ctx=fresh)
    s.set("rlimit", int(rlimit))
    s.add(query.translate(fresh))
    queries = ex.solver_calls + 1
    try:
        r, used, seconds = _check(s, rlimit, deadline, timeout_ms)
    except HangGuard as e:
        return outcome("unknown", len(paths), queries, f"{what}: {e} (budget not completed)")
    ex.max_query_rlimit = max(ex.max_query_rlimit, used)
    ex.max_query_seconds = max(ex.max_query_seconds, seconds)
    if r == z3.unsat:
        return outcome("proved", len(paths), queries)
    if r == z3.unknown:
        return outcome("unknown", len(paths), queries,
                       f"{what}: z3 unknown, {why_unknown(s, rlimit, used)}")
    m, asked = _first_statement_model(s, fresh, assume, paths, terms, rlimit, deadline, timeout_ms)
    queries += asked
    m = m.translate(z3.main_ctx())
    cex = hexmodel(m, inputs)
    for i, p in enumerate(paths):
        if z3.is_true(m.eval(bad[i], model_completion=True)):
            if p.exc is not None:
                cex["raised"] = f"{type(p.exc).__name__}: {p.exc}"
            broken = [k for k, t in terms[i] if z3.is_false(m.eval(t, model_completion=True))]
            if z3.is_false(m.eval(p.side, model_completion=True)):
                broken.append("side condition: a Python int beyond the 128-bit model")
            cex["violated"] = broken
            cex["path"] = "".join("T" if d else "F" for d in p.decisions) or "(no branch)"
            break
    if show is not None:
        try:
            cex.update(show({k: int(v, 16) for k, v in cex.items()
                             if isinstance(v, str) and v.startswith("0x")}))
        except Exception as e:     # a display problem must not hide the refutation
            cex["show_error"] = repr(e)
    return outcome("refuted", len(paths), queries, what, cex)
