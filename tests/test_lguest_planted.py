"""Every lguest checker fails on planted bugs; every lguest invariant and contract catches one.

Each bug of proofs/lguest/planted.py is put into impl.lguest for one test; the checker must come
back refuted with a violation whose id is one of the bug's expected ids. The seed's own findings
(the seed-as-written variant) go through the same checkers.
"""

import pytest

from ptspec.impl.lguest import SEED_FINDINGS
from ptspec.proofs.lguest import exhaustive as lguest_exhaustive
from ptspec.proofs.lguest import findings as lguest_findings
from ptspec.proofs.lguest import lockstep as lguest_lockstep
from ptspec.proofs.lguest.planted import BUGS, planted_lguest
from ptspec.proofs.stage2 import returns
from ptspec.spec.lguest.check import LG_IDS

# bug -> (format, depth, ops left out of the alphabet)
EXHAUSTIVE = {
    "clear-all-skips-current": ("2level", 1, ()), "demand-ignores-write": ("pae", 2, ()),
    "demand-no-accessed": ("2level", 2, ()), "flush-noop": ("2level", 1, ()),
    "free-keeps-pgdirs": ("2level", 1, ()), "global-kept": ("2level", 1, ()),
    "gpgd-flags-unchecked": ("2level", 2, ()), "init-no-switcher": ("2level", 1, ()),
    "new-pgdir-keeps-user": ("2level", 1, ()), "no-pfn-limit": ("2level", 1, ()),
    "pa-faults-in": ("pae", 1, ()), "percpu-stale": ("2level", 2, ()),
    "release-pgd-leak": ("pae", 1, ()), "run-forgets-cpu": ("2level", 1, ()),
    "set-pgd-keeps": ("2level", 1, ()), "set-pgd-unbounded": ("pae", 1, ()),
    "set-pmd-noop": ("pae", 1, ()), "set-pte-every-slot": ("pae", 1, ()),
    "set-pte-switcher": ("pae", 1, ()), "shadow-release": ("pae", 1, ()),
    "switcher-rw": ("2level", 1, ()), "stack-not-pinned": ("pae", 1, ()),
    "new-pgdir-spins": ("2level", 1, ()),
}
# bug -> (format, mode): the lock-step machines must catch these too
LOCKSTEP = {
    "shadow-release": ("pae", "coop"), "set-pgd-unbounded": ("pae", "hostile"),
    "switcher-rw": ("pae", "coop"),
}


@pytest.fixture(autouse=True)
def _shorter_call_budget(monkeypatch):
    """new-pgdir-spins loops: each run that reaches it costs the budget of CPU time; 2 s instead
    of 10 keeps these tests short, still far above any legitimate lguest operation."""
    monkeypatch.setattr(returns, "IMPL_CALL_CPU_SECONDS", 2.0)


def ids(violations):
    return {str(v).split()[0] for v in violations}


@pytest.mark.parametrize("bug_id", sorted(EXHAUSTIVE))
def test_exhaustive_catches(bug_id):
    fmt, depth, exclude = EXHAUSTIVE[bug_id]
    with planted_lguest(bug_id):
        out = lguest_exhaustive.explore(depth, fmt, exclude=exclude)
    assert out.status == "refuted", (bug_id, out.status)
    assert ids(out.violations) & set(BUGS[bug_id].caught_by), (bug_id, out.violations)
    assert "boot(h, GuestLayout(" in out.program and out.tables
    with planted_lguest(bug_id), pytest.raises(AssertionError):     # pasted, it reproduces
        exec(out.program, {})
    exec(out.program, {})


@pytest.mark.parametrize("bug_id", sorted(LOCKSTEP))
def test_lockstep_catches(bug_id):
    fmt, mode = LOCKSTEP[bug_id]
    with planted_lguest(bug_id):
        out = lguest_lockstep.run_lockstep(fmt, mode, examples=40, steps=25, seed=3)
    assert out.status == "refuted", bug_id
    assert ids(out.failure.violations) & set(BUGS[bug_id].caught_by), out.failure.violations
    assert out.failure.program.count("\n") < 45          # shrunk to the boot plus a few steps


def test_planted_bugs_are_restored():
    from ptspec.impl.lguest import Lguest
    before = dict(Lguest.__dict__)
    with planted_lguest("shadow-release"):
        assert Lguest.__dict__.get("demand_page") is not None
    assert dict(Lguest.__dict__) == before


def test_every_bug_is_exercised_and_every_id_has_one():
    assert set(EXHAUSTIVE) | set(LOCKSTEP) == set(BUGS)
    assert set(LOCKSTEP) <= set(EXHAUSTIVE)
    assert "shadow-release" in BUGS and BUGS["shadow-release"].caught_by == ("LG-RC",)
    targeted = {i for b in BUGS.values() for i in b.caught_by}
    assert set(LG_IDS) <= targeted, set(LG_IDS) - targeted


@pytest.mark.parametrize("fmt", ["2level", "pae"])
def test_clean_tree_passes_exhaustive_depth_2(fmt):
    out = lguest_exhaustive.explore(2, fmt)
    assert out.status == "passed", out.violations
    assert out.transitions > 200


@pytest.mark.parametrize("finding", SEED_FINDINGS)
@pytest.mark.parametrize("fmt", ["2level", "pae"])
def test_seed_findings_replay(finding, fmt):
    seed = lguest_findings.replay(finding, fmt, "seed-as-written")
    fixed = lguest_findings.replay(finding, fmt, "corrected")
    assert lguest_findings.EXPECTED[finding] in ids(seed.violations)
    assert fixed.violations == []


@pytest.mark.parametrize("finding,depth", [("set-pte-dirty", 1), ("set-pte-stale", 1),
                                           ("set-pte-nonpresent", 1), ("set-pgd-bound", 1),
                                           ("demand-upper", 3)])
def test_exhaustive_finds_each_seed_finding(finding, depth):
    out = lguest_exhaustive.explore(depth, "2level", seed_findings=(finding,))
    assert out.status == "refuted"
    assert lguest_findings.EXPECTED[finding] in ids(out.violations)


def test_seed_as_written_variant_is_refuted_by_lockstep():
    out = lguest_lockstep.run_lockstep("2level", "hostile", examples=60, steps=25, seed=0,
                                       variant="seed-as-written")
    assert out.status == "refuted"
    assert ids(out.failure.violations) & {"LG-SHADOW", "LG-RC", "LG-BND", "LG-SWITCHER",
                                          "LG-C-SET-PTE", "LG-C-DEMAND"}


def test_obligations_are_registered_and_the_unit_ones_pass():
    from ptspec.proofs.runner import registry
    registry.load_all()
    found = {o.id for o in registry.all_obligations() if o.id.startswith("lg.")}
    assert found == {"lg.lockstep.2level-coop", "lg.lockstep.2level-hostile", "lg.lockstep.pae-coop",
                     "lg.lockstep.pae-hostile", "lg.exhaustive.2level", "lg.exhaustive.pae",
                     "lg.seed-as-written", "lg.args", "lg.units.scenarios", "lg.units.model"}
    for oid in ("lg.args", "lg.seed-as-written", "lg.exhaustive.pae", "lg.units.scenarios",
                "lg.units.model"):
        r = registry.run_obligation(registry.get(oid), "quick", 0)
        assert r.status in ("passed", "proved"), (oid, r.detail)
        assert r.examples > 0


def test_lockstep_obligation_reports_a_planted_bug_as_refuted():
    from ptspec.proofs.runner import registry
    registry.load_all()
    with planted_lguest("switcher-rw"):
        r = registry.run_obligation(registry.get("lg.lockstep.pae-coop"), "quick", 0)
    assert r.status == "refuted"
    assert any(v.startswith("LG-SWITCHER") for v in r.counterexample["violations"])
    assert "boot(h, GuestLayout('pae'))" in r.counterexample["ops"] and r.counterexample["tables"]
