"""Every s2.crosshair.* obligation passes on the tree (with CrossHair's exhaustion evidence) and
refutes its planted bugs; CrossHair's "not confirmed" / "not exhausted" are unknown, never passed.
"""

import pytest

from program_support import assert_program_judges  # (tests/ is on sys.path)
from ptspec.proofs.engines import crosshair as R
from ptspec.proofs.runner import registry
from ptspec.proofs.stage2.planted_proofs import CAUGHT_BY, get, planted

registry.load_all()

CASES = [(bug, oid) for bug, oids in sorted(CAUGHT_BY.items()) for oid in oids
         if oid.startswith("s2.crosshair.")]


def crosshair_obligations():
    return [ob for ob in registry.all_obligations() if ob.id.startswith("s2.crosshair.")]


def test_every_crosshair_obligation_has_a_planted_bug():
    assert not [e for e in registry.load_errors() if "crosshair" in e[0]]
    assert {ob.id for ob in crosshair_obligations()} <= {oid for _, oid in CASES}
    assert len(crosshair_obligations()) >= 6


@pytest.mark.parametrize("oid", sorted(ob.id for ob in crosshair_obligations()))
def test_obligation_passes_on_the_tree(oid):
    r = registry.run_obligation(registry.get(oid), "default", 0)
    assert r.status == "passed", (oid, r.detail, r.counterexample)
    assert "exhausted" in r.detail


@pytest.mark.parametrize("bug,oid", CASES, ids=[f"{b}->{o}" for b, o in CASES])
def test_planted_bug_is_refuted(bug, oid):
    with planted(bug):
        r = registry.run_obligation(registry.get(oid), "default", 0)
    assert r.status == "refuted", (bug, oid, r.status, r.detail)
    named = {v.split(":")[0] for v in r.counterexample["violations"]}
    assert named & set(get(bug).caught_by), (bug, r.counterexample)
    # the refuting call as a program ending in the failing assert (postcondition or got == want)
    assert_program_judges(r.counterexample.get("ops"), lambda: planted(bug))


def _never_exhausted(x: int, y: int):
    # a mask that is not a low-bit mask: CrossHair concretises x, one path per value of 2**40
    return ((x & 0xF0F0_F0F0) >> 4) + y if 0 <= x < 2**40 and 0 <= y < 2**40 else None


def _never_exhausted_too(x: int, y: int):
    return ((x >> 4) & 0x0F0F_0F0F) + y if 0 <= x < 2**40 and 0 <= y < 2**40 else None


def _hard_contract(x: int, y: int) -> int:
    """
    pre: 0 <= x < 2**40 and 0 <= y < 2**40
    post: _ >= 0
    """
    return ((x & 0xF0F0_F0F0) >> 4) + y


SMALL = R.Budget(max_iterations=20, smt_rlimit=1_000_000, guard_seconds=60)


def test_no_exhaustion_is_unknown_not_passed():
    out = R.diff(_never_exhausted, _never_exhausted_too, SMALL)
    assert out.status == "unknown", out
    assert "iteration budget exhausted: 20 iterations" in out.detail
    out = R.check_contract(_hard_contract, SMALL)
    assert out.status == "unknown", out
    assert "Not confirmed" in out.detail and "iteration budget exhausted" in out.detail


def test_nothing_checked_is_unknown():
    def no_contract(x: int) -> int:
        return x
    out = R.check_contract(no_contract, SMALL)
    assert out.status == "unknown" and "nothing" in out.detail
