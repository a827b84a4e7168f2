"""Verdicts do not depend on the machine's speed: the same checks on a clock that runs 3x fast.

A clock that advances three times as fast as the real one is what a machine three times slower
looks like to the runner and to every check that reads the time (the hang guard, `ctx.expired()`,
z3 case loops, exploration loops). Budgets are examples, steps, states, replays and solver
resources, so every representative check must end with the same status *and the same number of
things checked*, and a planted bug with the same counterexample.
"""

from __future__ import annotations

import time

import pytest

from ptspec.proofs.runner import registry
from ptspec.proofs.stage2.planted import planted

# one of each engine and area whose budget is counted (quick profile: a few seconds each)
REPRESENTATIVE = ["s2.lockstep.4k-39", "s2.exhaustive.4k-39", "s2.errorpaths", "s2.z3.walk-index",
                  "s2.hyp.lockstep.4k-48", "mmu.hypothesis.layouts", "lg.lockstep.2level-coop"]


@pytest.fixture
def slow_machine(monkeypatch):
    """time.monotonic() runs 3x fast from now on (everything that reads it sees a slow machine)."""
    real = time.monotonic
    base = real()
    monkeypatch.setattr(time, "monotonic", lambda: base + 3.0 * (real() - base))
    yield


def _run(ids, profile="quick"):
    registry.load_all()
    return {i: registry.run_obligation(registry.get(i), profile, 0) for i in ids}


@pytest.fixture(scope="module")
def normal():
    return _run(REPRESENTATIVE)


def test_same_statuses_and_budgets_on_a_three_times_slower_clock(normal, slow_machine):
    slow = _run(REPRESENTATIVE)
    for i in REPRESENTATIVE:
        assert normal[i].status in registry.PASSING, (i, normal[i].status, normal[i].detail)
        assert (slow[i].status, slow[i].examples) == (normal[i].status, normal[i].examples), \
            (i, slow[i].status, slow[i].detail)


@pytest.fixture(scope="module")
def found_normally():
    with planted("eagain-abort"):
        return _run(["s2.lockstep.4k-39"], "default")["s2.lockstep.4k-39"]


def test_a_found_bug_is_the_same_finding_on_a_slow_clock(found_normally, slow_machine):
    with planted("eagain-abort"):
        slow = _run(["s2.lockstep.4k-39"], "default")["s2.lockstep.4k-39"]
    assert found_normally.status == slow.status == "refuted"
    assert "replayed and minimised" in slow.counterexample["replay"]
    assert slow.counterexample["ops"] == found_normally.counterexample["ops"]


def test_the_hang_guard_is_far_beyond_a_three_times_slower_machine():
    from ptspec.proofs.runner import budgets
    for name in budgets.PROFILE_NAMES:
        b = budgets.budget(name)
        assert budgets.hang_guard(b) >= 3 * b["check_seconds"], name
