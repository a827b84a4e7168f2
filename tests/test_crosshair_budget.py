"""CrossHair verdicts are bought with iterations and z3 resource units, not seconds.

The same s2.crosshair.* check on a machine that looks many times slower to CrossHair's clocks
(process time) and to the runner's (monotonic time) ends with the same status and the same
iteration count; the iteration budget and the rlimit decide the verdict, and an unknown says which
of them (or the hang guard) stopped it. Two runs try the same paths (CrossHair's search is seeded).
"""

from __future__ import annotations

import time

import crosshair.core as ch_core
import crosshair.statespace as ch_statespace
import pytest

from ptspec.proofs.engines import crosshair as R
from ptspec.proofs.runner import budgets, registry
from ptspec.proofs.stage2 import crosshair_targets as T

registry.load_all()
T.build_tables()

CHECKS = ["s2.crosshair.prot-attr", "s2.crosshair.diff.translate"]
ENOUGH = R.Budget(max_iterations=500, smt_rlimit=5_000_000, guard_seconds=300)
SLOWDOWN = 20.0


@pytest.fixture
def slow_machine(monkeypatch):
    """Every clock CrossHair and the runner read runs SLOWDOWN times fast from now on."""
    for clock, owners in (("process_time", (time, ch_core, ch_statespace)),
                          ("monotonic", (time,))):
        real = getattr(time, clock)
        base = real()
        fast = (lambda real, base: lambda: base + SLOWDOWN * (real() - base))(real, base)
        for owner in owners:
            monkeypatch.setattr(owner, clock, fast)
    yield


def _run(ids):
    return {i: registry.run_obligation(registry.get(i), "default", 0) for i in ids}


@pytest.fixture(scope="module")
def normal():
    return _run(CHECKS)


def test_same_verdicts_and_iterations_on_a_much_slower_machine(normal, slow_machine):
    slow = _run(CHECKS)
    for i in CHECKS:
        assert normal[i].status == "passed", (i, normal[i].detail)
        assert (slow[i].status, slow[i].examples) == (normal[i].status, normal[i].examples), \
            (i, slow[i].detail)
        assert slow[i].detail == normal[i].detail      # details hold no clock readings


def test_default_hang_guard_is_far_beyond_a_five_times_slower_machine(normal):
    guard = budgets.hang_guard(budgets.budget("default"))
    for i in CHECKS:
        assert 5 * normal[i].seconds < guard / 10, (i, normal[i].seconds, guard)


def test_the_same_paths_in_two_runs():
    a = R.diff(T.impl_translate_64k, T.spec_translate_64k, ENOUGH)
    b = R.diff(T.impl_translate_64k, T.spec_translate_64k, ENOUGH)
    assert a.status == b.status == "passed"
    assert a.paths == b.paths and a.detail == b.detail, (a.detail, b.detail)


def test_iterations_decide_the_verdict_not_the_clock(slow_machine):
    # translate needs 32 iterations (16 per argument order): 20 is too few, on any machine
    short = R.Budget(max_iterations=20, smt_rlimit=5_000_000, guard_seconds=300)
    out = R.diff(T.impl_translate_64k, T.spec_translate_64k, short)
    assert out.status == "unknown" and out.paths == 20, out
    assert "iteration budget exhausted: 20 iterations" in out.detail
    out = R.diff(T.impl_translate_64k, T.spec_translate_64k, ENOUGH)
    assert out.status == "passed" and out.paths == 32, out
    out = R.check_contract(T.stage2_prot_attr, short)
    assert out.status == "unknown" and "iteration budget exhausted" in out.detail, out


def test_a_clock_budget_would_depend_on_the_machine(slow_machine):
    # the old default (2 s a path) on this slowed clock stops before exhaustion: what the
    # iteration budget avoids; a stop at the clock is unknown, never a pass
    seconds = R.Budget(max_iterations=500, smt_rlimit=5_000_000, guard_seconds=2)
    out = R.diff(T.impl_translate_64k, T.spec_translate_64k, seconds)
    assert out.status == "unknown" and "hang guard" in out.detail, out


def test_a_hang_guard_stop_is_unknown_and_says_so():
    tiny = R.Budget(max_iterations=500, smt_rlimit=5_000_000, guard_seconds=0.01)
    out = R.diff(T.impl_memslot_block_4k, T.spec_memslot_block_4k, tiny)
    assert out.status == "unknown", out
    assert "hang guard" in out.detail


def test_paths_ended_unknown_are_no_pass_and_name_the_rlimit():
    # every z3 query stops at the rlimit: CrossHair still counts both explorations exhausted
    # (its "exhaustion" statistic), with unknown paths; that is no pass
    starved = R.Budget(max_iterations=500, smt_rlimit=1_000, guard_seconds=300)
    out = R.diff(T.impl_translate_64k, T.spec_translate_64k, starved)
    assert out.status == "unknown", out
    assert "some ended unknown" in out.detail
    assert "z3 rlimit exhausted: 1000 units per query" in out.detail
    out = R.check_contract(T.walk_last_level, starved)
    assert out.status == "unknown" and "z3 rlimit exhausted" in out.detail, out


def test_budget_keys_replace_the_seconds():
    for name in budgets.PROFILE_NAMES:
        b = budgets.budget(name)
        assert "crosshair_per_condition_timeout" not in b and "crosshair_per_path_timeout" not in b
        assert b["crosshair_max_iterations"] >= 100 and b["crosshair_smt_rlimit"] >= 1_000_000
