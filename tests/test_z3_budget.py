"""z3 verdicts are bought with resource units (rlimit); z3's clock is only the check's hang guard.

A query that runs out of its rlimit is unknown and says "rlimit exhausted: N units"; one stopped by
the clock says "hang guard"; the same s2.z3.* / mmu.z3.* checks on a clock twenty times fast end
with the same status and the same counts. No budget key holds a z3 timeout any more.
"""

from __future__ import annotations

import time

import pytest
import z3

from ptspec.proofs.engines.z3 import bv as B
from ptspec.proofs.engines.z3 import explore as E
from ptspec.proofs.runner import budgets, registry

registry.load_all()

CHECKS = ["s2.z3.walk-index", "s2.z3.mmu.hyp-va", "s2.z3.lguest.gpte", "mmu.z3.hyp-va"]


def _hard():
    """A property z3 needs far more than a few thousand units for (factoring a 64-bit product)."""
    inputs = {}
    x, y = B.sym("x", 64, inputs), B.sym("y", 64, inputs)
    return (lambda: B.SymBool(z3.Not(z3.And(x.e * y.e == 0x123456789abcdef1, x.e > 1, y.e > 1)))
            ), inputs


def test_an_rlimit_stop_says_rlimit_exhausted():
    body, inputs = _hard()
    out = E.prove(body, inputs, rlimit=20_000, deadline=time.monotonic() + 600)
    assert out.status == "unknown", out
    assert "rlimit exhausted: 20000 units" in out.detail and "hang guard" not in out.detail
    assert out.max_query_rlimit >= 20_000


def test_a_clock_stop_says_hang_guard():
    body, inputs = _hard()
    out = E.prove(body, inputs, rlimit=10**12, timeout_ms=50)   # the clock binds, not the units
    assert out.status == "unknown", out
    assert "hang guard" in out.detail and "rlimit exhausted" not in out.detail


def test_a_passed_deadline_stops_before_querying():
    inputs = {}
    x = B.sym("x", 64, inputs)
    out = E.prove(lambda: (x & 0xfff) < 0x1000, inputs, rlimit=10**7,
                  deadline=time.monotonic() - 1)
    assert out.status == "unknown" and "hang guard" in out.detail, out


def test_the_hang_guard_in_a_branch_query_is_unknown_not_a_path():
    # impl code that catches Exception must not turn the stop into a path that raised
    inputs = {}
    x = B.sym("x", 64, inputs)
    ex = E.Explorer(rlimit=10**7, deadline=time.monotonic() + 600)

    def body():
        ex.deadline = time.monotonic() - 1     # the guard passes while the path runs
        try:
            return bool(x > 5) or True         # the branch query meets the hang guard
        except Exception:
            return "swallowed"

    with pytest.raises(E.HangGuard):
        ex.run(body)


def test_guard_ms_is_what_is_left_of_the_deadline():
    assert E.guard_ms(None) is None and E.guard_ms(float("inf")) is None
    assert E.guard_ms(None, 5000) == 5000
    left = E.guard_ms(time.monotonic() + 100)
    assert 95_000 < left <= 100_000
    assert E.guard_ms(time.monotonic() + 100, 5000) == 5000
    with pytest.raises(E.HangGuard):
        E.guard_ms(time.monotonic() - 0.1)


def test_no_z3_timeout_budget_key():
    for name in budgets.PROFILE_NAMES:
        assert "z3_timeout_ms" not in budgets.budget(name) and budgets.budget(name)["z3_rlimit"] > 0


@pytest.fixture
def slow_machine(monkeypatch):
    """time.monotonic() runs 20x fast from now on: the runner, the z3 clock and the case loops
    all see a machine twenty times slower."""
    real = time.monotonic
    base = real()
    monkeypatch.setattr(time, "monotonic", lambda: base + 20.0 * (real() - base))
    yield


@pytest.fixture(scope="module")
def normal():
    return {i: registry.run_obligation(registry.get(i), "default", 0) for i in CHECKS}


def test_same_verdicts_on_a_twenty_times_slower_clock(normal, slow_machine):
    for i in CHECKS:
        slow = registry.run_obligation(registry.get(i), "default", 0)
        assert normal[i].status == "proved", (i, normal[i].detail)
        assert (slow.status, slow.examples) == (normal[i].status, normal[i].examples), \
            (i, slow.detail)


# The slowest z3 rate measured on the 2-core reference machine: a bit-blasted cubic over 96-bit
# vectors spent 5,000,000 units in 6.4 CPU seconds (lemma queries run at 2-4 M units/s).
SLOWEST_UNITS_PER_SECOND = 750_000


def test_a_query_at_the_rlimit_ends_inside_the_hang_guard_on_a_five_times_slower_machine():
    # so the rlimit, not the clock, stops a hard query: a slower machine gets the same verdict
    for name in budgets.PROFILE_NAMES:
        b = budgets.budget(name)
        for key in ("z3_rlimit", "crosshair_smt_rlimit"):
            worst = 5 * b[key] / SLOWEST_UNITS_PER_SECOND
            assert worst < budgets.hang_guard(b), (name, key, worst, budgets.hang_guard(b))
