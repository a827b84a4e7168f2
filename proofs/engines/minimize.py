"""Shortest failing operation sequence: delta debugging over a recorded trace, for every area.

Every random engine (stage-2 and hyp stage-1 lock-step, the mmu VM machine, the lguest guest
machine) records what it ran as a trace of plain entries. ``shortest`` replays sub-sequences of a
failing trace on fresh harnesses and keeps removing entries (first large chunks, then single
ones: Zeller's ddmin) while the replay still fails the same way. Two things come from the area:

- ``replay(trace) -> (outcome, used)``: run the trace on a fresh harness, stop at the first
  failing step; ``used`` is how many entries ran (the failing one included), or ``len(trace)``;
- ``same(outcome) -> bool``: the outcome fails the same way as the finding (breaks one of the
  same invariants or contracts).

``same_statement(violations)`` is the usual ``same``: the replay still breaks the statement the
failure reported first (not merely one of its ids, which would let the cut drift to a secondary
finding). The rest of the module writes counterexamples as programs a reviewer pastes: ``program``
(a harness replay ending in ``assert not h.violations``), ``unit_program``, and ``judged_program``
(a solver's model as hex assignments, the real calls, an exception counted as a failed check,
then the ``assert`` of the property).

The budget is a number of replays (the profile's ``shrink_replays``), never wall-clock time, so
the counterexample a reviewer reads is the same on a fast and on a slow machine. The first replay
is of the whole trace: when it does not fail the same way the finding is *not replayable* from its
trace (``reproduced`` is False) and the caller must say so rather than lose it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence


def ids(violations) -> set[str]:
    """The invariant / contract ids of violations (the first word of each)."""
    return {str(v).split()[0] for v in violations}


def first_id(violations) -> str | None:
    """The id of the first violation a failure reported: the statement it is a finding of."""
    return str(violations[0]).split()[0] if violations else None


def same_statement(violations) -> Callable[[Any], bool]:
    """The ``same`` predicate of ``shortest`` for a failure whose violations are ``violations``:
    a replayed outcome (anything with a ``violations`` list) fails the same way when it breaks
    the statement the failure reported first. Keeping that one id (rather than any of the
    failure's ids) stops delta debugging from drifting to a shorter trace that only breaks a
    secondary statement, say PROGRESS, where the finding was MS."""
    target = first_id(violations)
    return lambda outcome: target is not None and target in ids(outcome.violations)


@dataclass
class Shortest:
    """The result of ``shortest``: the trace, the outcome of its replay, and what it cost."""

    trace: list
    outcome: Any
    reproduced: bool        # the whole trace, replayed, failed the same way
    replays: int            # replays spent (at most the budget)
    original: int           # length of the trace given


def shortest(trace: Sequence, replay: Callable[[list], tuple[Any, int]],
             same: Callable[[Any], bool], max_replays: int = 200) -> Shortest:
    """The shortest sub-trace found within ``max_replays`` replays that still fails the same way."""
    trace = list(trace)
    outcome, used = replay(trace)
    spent = 1
    if not same(outcome):
        return Shortest(trace, outcome, False, spent, len(trace))
    best, best_out = trace[:used], outcome
    n = 2
    while len(best) >= 2 and spent < max_replays:
        chunk = max(1, len(best) // n)
        reduced = False
        for start in range(0, len(best), chunk):
            if spent >= max_replays:
                break
            cand = best[:start] + best[start + chunk:]
            outcome, used = replay(cand)
            spent += 1
            if same(outcome):
                best, best_out = cand[:used], outcome
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(n * 2, len(best))
    if len(best) == 1 and spent < max_replays:       # the failure may need no step at all
        outcome, used = replay([])
        spent += 1
        if same(outcome):
            best, best_out = [], outcome
    return Shortest(best, best_out, True, spent, len(trace))


def run_hypothesis(machine, cfg, kind: type):
    """Run a hypothesis state machine; return the ``kind`` finding it raised (also from inside a
    hypothesis FlakyFailure or any exception group), or None when every run passed. Anything
    else raises (the runner reports it as an error)."""
    from hypothesis.stateful import run_state_machine_as_test
    try:
        run_state_machine_as_test(machine, settings=cfg)
    except Exception as exc:            # FlakyFailure is an ExceptionGroup, not a `kind`
        found = found_in(exc, kind)
        if found is None:
            raise
        return found
    return None


def found_in(exc: BaseException, kind: type) -> BaseException | None:
    """The ``kind`` exception inside ``exc``: itself, or one of the exceptions a hypothesis
    ``FlakyFailure`` (an exception group: "failed on the first run but now succeeds") or an
    explicit ``__cause__`` / ``__context__`` chain carries. The finding is in there; the flakiness
    is hypothesis's own re-run disagreeing, which the deterministic replay settles."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        todo += list(getattr(e, "exceptions", ()) or ())
        todo += [e.__cause__, e.__context__]
    return None


def source(v, hex_ints: bool = True) -> str:
    """A value as Python a reviewer can paste: integers above 9 in hex (addresses, sizes, words;
    ``hex_ints=False``: decimal, for shift counts and sizes of things), containers recursively."""
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, int):
        return hex(v) if hex_ints and v > 9 else repr(v)
    if isinstance(v, tuple):
        inner = ", ".join(source(x, hex_ints) for x in v)
        return f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, list):
        return "[" + ", ".join(source(x, hex_ints) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {source(x, hex_ints)}" for k, x in v.items()) + "}"
    if callable(v) and hasattr(v, "__qualname__"):
        return f"{v.__module__}.{v.__qualname__}"
    return repr(v)


def call(name: str, args: dict | None = None, *positional, hex_ints: bool = True) -> str:
    """``name(positional..., key=value, ...)`` as pasteable Python."""
    parts = [source(p, hex_ints) for p in positional] + \
        [f"{k}={source(x, hex_ints)}" for k, x in (args or {}).items()]
    return f"{name}({', '.join(parts)})"


def unit_program(imports: list[str], body: list[str], judge: str) -> str:
    """A unit case's counterexample as a program: the real calls of the case, then the check that
    fails (an ``assert``), runnable as pasted."""
    return "\n".join(list(imports) + list(body) + [judge])


JUDGE = "assert not h.violations, '\\n'.join(map(str, h.violations))"


def program(imports: list[str], make: str, calls: list[tuple[str, str]]) -> str:
    """A replay program a reviewer can paste: the imports, the harness, every recorded call (with
    the kernel-level call it made as a comment), then the judge that fails."""
    lines = list(imports) + [f"h = {make}"]
    for src, note in calls:
        lines.append(f"{src}  # {note}" if note else src)
    lines.append(JUDGE)
    return "\n".join(lines)


def assigns(values: dict, names=None, hex_ints: bool = True) -> list[str]:
    """``name = value`` lines for a counterexample's concrete inputs (a solver's model), in the
    order of ``names`` (default: the dict's), integers above 9 in hex."""
    return [f"{k} = {source(values[k], hex_ints)}" for k in (names or values)]


def guarded(lines: list[str], what: str) -> list[str]:
    """``lines`` run so that an exception is a failed check too: the program still ends in an
    ``assert`` (a property of the form "returns, raising nothing")."""
    return (["try:"] + [f"    {ln}" for ln in lines]
            + ["except Exception as exc:",
               f"    assert False, f{('%s raised {exc!r}' % what)!r}"])


def judged_program(imports: list[str], values: dict, body: list[str], judge: str,
                   names=None, what: str = "the call") -> str:
    """A refuted lemma as a program: the imports, the model's values as assignments, the real
    calls (``body``; an exception fails the check), then ``judge``, the ``assert`` of the property
    that is false for these values."""
    return "\n".join(list(imports) + assigns(values, names) + guarded(body, what) + [judge])
