"""The symbolic executor and prover behind the z3 lemmas (values in ``proofs/engines/z3/bv.py``).

* ``Explorer.run(body)`` runs ``body()`` again and again, replaying the branch decisions of a prefix
  and, at each new symbolic branch (a ``SymBool`` or ``SymInt`` asked for its truth value), taking
  the side the current path's z3 model already satisfies and asking z3 whether the other side is
  feasible too; feasible sides are queued. Each path yields its path condition, the side conditions
  met on it (no overflow of the int model) and the value ``body`` returned (or the exception it
  raised).
* ``prove(...)`` asks z3, in a fresh context, under the profile's ``rlimit`` and timeout, whether
  some path violates the property (the value ``body`` returned: a Boolean, or a dict of named
  Booleans) or a side condition, or raised. ``unknown`` from z3, contradictory assumptions (nothing
  checked) or more paths than allowed are reported as unknown, never as proved. Counterexamples are
  the model's values of the named inputs in hex, the violated statements and the path taken.
"""

from __future__ import annotations

import dataclasses
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


def _solver(rlimit: int, timeout_ms: int) -> z3.Solver:
    s = z3.Solver()
    s.set("rlimit", int(rlimit))
    s.set("timeout", int(timeout_ms))
    return s


class Explorer:
    """Run a Python callable over every feasible path of its symbolic branches."""

    def __init__(self, assume=(), *, rlimit: int, timeout_ms: int, max_paths: int = 512):
        self.assume = [as_bool(a) for a in assume]
        self.rlimit = rlimit
        self.timeout_ms = timeout_ms
        self.max_paths = max_paths
        self.solver_calls = 0
        self.unknown_forks = 0
        self._solver = None

    def _check(self, conds):
        """(feasible, model or None) of the path conditions `conds` under the assumptions."""
        if self._solver is None:
            self._solver = _solver(self.rlimit, self.timeout_ms)
            self._solver.add(*self.assume)
        s = self._solver
        self.solver_calls += 1
        r = s.check(*conds)
        if r == z3.sat:
            return True, s.model()
        if r == z3.unknown:
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


def _named_terms(value) -> list:
    """A body's value as (name, z3 Boolean) pairs: a dict names its parts, anything else is one."""
    if isinstance(value, dict):
        return [(str(k), as_bool(v)) for k, v in value.items()]
    return [("property", as_bool(value))]


def hexmodel(model: z3.ModelRef, inputs: dict) -> dict:
    """The model's values of the named inputs, as hex strings."""
    out = {}
    for name, var in inputs.items():
        v = model.eval(var, model_completion=True)
        out[name] = hex(v.as_long()) if z3.is_bv_value(v) or z3.is_int_value(v) else str(v)
    return out


def prove(body: Callable[[], Any], inputs: dict, *, assume=(), rlimit: int, timeout_ms: int,
          max_paths: int = 512, what: str = "", show: Callable[[dict], dict] | None = None
          ) -> Outcome:
    """Prove that on every path of `body` (under `assume`) it returns a true value (or a dict of
    named true values: the names of the false ones are reported), raises nothing and meets every
    side condition. `inputs` name the symbolic inputs for counterexamples; `show`
    may add derived values (computed concretely from the hex inputs) to a counterexample."""
    t0 = time.monotonic()
    assume = list(assume) + list(getattr(inputs, "ranges", []))
    ex = Explorer(assume, rlimit=rlimit, timeout_ms=timeout_ms, max_paths=max_paths)
    try:
        paths = ex.run(body)
    except TooManyPaths as e:
        return Outcome("unknown", detail=f"{what}: {e}", seconds=time.monotonic() - t0)
    if not paths:
        return Outcome("unknown", detail=f"{what}: the assumptions are contradictory, nothing was "
                                         "checked", seconds=time.monotonic() - t0)
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
    s.set("timeout", int(timeout_ms))
    s.add(query.translate(fresh))
    r = s.check()
    queries = ex.solver_calls + 1
    if r == z3.unsat:
        return Outcome("proved", len(paths), queries, seconds=time.monotonic() - t0)
    if r == z3.unknown:
        return Outcome("unknown", len(paths), queries,
                       detail=f"{what}: z3 unknown ({s.reason_unknown()}) at rlimit {rlimit}",
                       seconds=time.monotonic() - t0)
    m = s.model().translate(z3.main_ctx())
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
    return Outcome("refuted", len(paths), queries, detail=what, counterexample=cex,
                   seconds=time.monotonic() - t0)
