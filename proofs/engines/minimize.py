"""Shortest failing operation sequence: delta debugging over a recorded lock-step trace.

A ``Stage2Harness`` records what it ran as a trace (``("op", name, args)`` and ``("fail", k)`` for an
injected allocation failure). ``minimize`` replays sub-sequences of a failing trace on fresh
harnesses and keeps removing steps (first large chunks, then single steps: Zeller's ddmin) while
the replay still breaks one of the same invariants or contracts. Replaying costs one harness run per
try, much less than a search engine's own shrinking, so the counterexample a reviewer reads is as
short as the time budget allows and always a real, re-run failure.
"""

from __future__ import annotations

import time
from typing import Callable

from ptspec.proofs.stage2.harness import Stage2Harness


def ids(violations) -> set[str]:
    return {str(v).split()[0] for v in violations}


def replay(trace: list, make: Callable[[], Stage2Harness]):
    """Run `trace` on a fresh harness; stop at the first step with a violation.

    Returns (harness, violations, used): violations is [] when the whole trace ran clean, and
    `used` is how many entries of the trace ran (up to and including the failing one).
    """
    h = make()
    if h.violations:
        return h, list(h.violations), 0
    for i, entry in enumerate(trace):
        if entry[0] == "fail":
            h.fail_allocation(entry[1])
            continue
        _, op, args = entry
        if op == "destroy" and h.destroyed:
            continue
        _, found = h.step(op, **args)
        if found:
            return h, found, i + 1
    return h, [], len(trace)


def minimize(trace: list, make: Callable[[], Stage2Harness], target: set[str],
             seconds: float = 10.0):
    """The shortest sub-trace found (within `seconds`) whose replay breaks one of `target`.

    Returns (trace, harness, violations) of the final replay. If even the full trace does not fail
    on replay (a failure that depends on more than the trace), the full trace is returned with
    the violations of its replay (possibly none): callers must look at them.
    """
    deadline = time.monotonic() + seconds
    h, found, used = replay(trace, make)
    if not ids(found) & target:
        return trace, h, found
    best, best_h, best_found = trace[:used], h, found
    n = 2
    while len(best) >= 2 and time.monotonic() < deadline:
        chunk = max(1, len(best) // n)
        reduced = False
        for start in range(0, len(best), chunk):
            if time.monotonic() >= deadline:
                break
            cand = best[:start] + best[start + chunk:]
            h, found, used = replay(cand, make)
            if ids(found) & target:
                best, best_h, best_found = cand[:used], h, found
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(n * 2, len(best))
    return best, best_h, best_found
