"""One replay-and-minimise path for every area: a found bug is refuted with a short counterexample
that, pasted, reproduces.

For each area's random engine (stage-2 and hyp stage-1 lock-step, the mmu VM machine, the lguest
guest machine) a planted bug is run through its obligation as `ptspec verify` runs it (default
profile, seed 0). The result must be "refuted" (never an error), the counterexample's program must
be the replayed, delta-debugged trace (at most MAX_CALLS harness calls), and that program, executed
with `exec` in a fresh namespace, must raise AssertionError under the bug and nothing without it.
"""

from __future__ import annotations

import pytest

from ptspec.proofs.hyp.planted import planted_hyp
from ptspec.proofs.lguest.planted import planted_lguest
from ptspec.proofs.mmu.planted import planted_mmu
from ptspec.proofs.runner import registry
from ptspec.proofs.stage2.planted import planted

# Measured (default profile, seed 0): stage 2 "eagain-abort" 7 -> 2 entries (2 calls), hyp
# "hyp-conflict-overwrite" 28 -> 2 (2 calls), mmu "commit-no-wp" 14 -> 2 steps (2 calls), lguest
# "shadow-release" 6 -> 4 entries after the boot (boot, begin, guest_write, set_pte: 4 calls; the
# replay stops at the failing set_pte, before the transaction's end). The bound is that maximum.
MAX_CALLS = 4

CASES = {
    # obligation: (plant, bug, profile)
    "s2.lockstep.4k-39": (planted, "eagain-abort", "default"),
    "s2.hyp.lockstep.4k-48": (planted_hyp, "hyp-conflict-overwrite", "default"),
    "mmu.hypothesis.layouts": (planted_mmu, "commit-no-wp", "default"),
    "lg.lockstep.pae-coop": (planted_lguest, "shadow-release", "default"),
}


def calls(program: str) -> int:
    """Harness calls in a program (the boot of a guest counts as one)."""
    return sum(ln.startswith(("h.step(", "h.fail", "h.force", "h.clear", "h.begin", "h.end",
                              "h.recheck", "boot(")) for ln in program.splitlines())


@pytest.fixture(scope="module")
def found():
    registry.load_all()
    out = {}
    for oid, (plant, bug, profile) in CASES.items():
        with plant(bug):
            out[oid] = registry.run_obligation(registry.get(oid), profile, 0)
    return out


@pytest.mark.parametrize("oid", sorted(CASES))
def test_planted_bug_is_refuted_with_a_short_replayed_counterexample(found, oid):
    r = found[oid]
    assert r.status == "refuted", (oid, r.status, r.detail)
    cx = r.counterexample
    assert "replayed and minimised" in cx["replay"], cx.get("replay")
    program = cx["ops"]
    assert program.startswith("from ptspec."), program
    assert program.rstrip().splitlines()[-1].startswith("assert not h.violations"), program
    assert calls(program) <= MAX_CALLS, program


@pytest.mark.parametrize("oid", sorted(CASES))
def test_printed_counterexample_reproduces_as_pasted(found, oid):
    plant, bug, _ = CASES[oid]
    program = found[oid].counterexample["ops"]
    with plant(bug), pytest.raises(AssertionError) as err:
        exec(program, {})
    # it fails the same way: one of the invariants the check reported
    reported = {v.split()[0] for v in found[oid].counterexample["violations"]}
    assert reported & {ln.split()[0] for ln in str(err.value).splitlines() if ln.strip()}
    exec(program, {})          # the unplanted impl: the same program runs clean


def test_a_trace_that_does_not_replay_is_reported_not_lost():
    """A finding whose trace does not reproduce (here: the bug is gone by the time of the replay)
    stays refuted with its original program and says it could not be replayed."""
    from ptspec.proofs.stage2 import lockstep
    from ptspec.proofs.stage2.harness import Stage2Harness
    from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW

    with planted("eagain-abort"):
        h = Stage2Harness(12, 39, arena_pages=128)
        h.step("map", addr=0x1000, size=0x1000, phys=0x8000_1000, prot=KVM_PGTABLE_PROT_R)
        _, found = h.step("map", addr=0x1000, size=0x2000, phys=0x8000_1000, prot=KVM_PGTABLE_PROT_RW)
        assert found
        exc = lockstep.StepViolation(h, found)
    make = lambda: Stage2Harness(12, 39, arena_pages=128)  # noqa: E731
    kept = lockstep.shortest_failure(exc, make, 50)
    assert kept is exc and kept.note.startswith("not replayable")
    assert kept.violations and kept.trace == exc.trace



def test_a_flaky_failure_from_hypothesis_still_gives_the_finding():
    """Hypothesis raises FlakyFailure when its re-run of a failing example passes ("failed on the
    first run but now succeeds"); the finding inside it is returned, not an error."""
    from hypothesis import Phase, settings
    from hypothesis.stateful import RuleBasedStateMachine, rule
    from ptspec.proofs.engines.minimize import run_hypothesis

    class Finding(AssertionError):
        pass

    seen = {"n": 0}

    class OnceOnly(RuleBasedStateMachine):
        @rule()
        def step(self):
            seen["n"] += 1
            if seen["n"] == 1:
                raise Finding("S2-RC only the first time")

    cfg = settings(max_examples=5, stateful_step_count=2, database=None, deadline=None,
                   phases=[Phase.generate, Phase.shrink])
    got = run_hypothesis(OnceOnly, cfg, Finding)
    assert isinstance(got, Finding) and "S2-RC" in str(got)


# unit cases: (obligation, how to plant, what): the counterexample is the case's real calls ending
# in an assert, not a reference to a file
UNIT_CASES = [
    ("s2.units.hyp", "mutant", "pgtable.hyp:HypPgtable.map:const1"),
    ("s2.units.stage2", "mutant", "pgtable.stage2:KvmPgtable.set_owner:const0"),
    ("s2.pool", "mutant", "pgtable.pool:PagePool.get_page:drop1"),
    ("s2.geometry.all", "mutant", "pgtable.geometry:all_stage2_geometries:arith0"),
    ("mmu.units.fault.routing", "mutant", "mmu.fault:kvm_handle_guest_abort:arith4"),
    ("lg.units.scenarios", "lguest", "pa-faults-in"),
    ("s2.errorpaths", "stage2", "enomem-put"),
    ("mmu.units.host.mm", "mutant", "mmu.host:HostMM.zap:swap6"),
    ("mmu.units.hyp.layout", "mutant", "mmu.hyp:kvm_mmu_init:const1"),
]


def _plant(how, what):
    if how == "lguest":
        return planted_lguest(what)
    if how == "stage2":
        return planted(what)
    from ptspec.proofs.mutation import mutate
    module = "ptspec.impl." + what.split(":")[0]
    [m] = [m for m in mutate.enumerate_mutants([module]) if m.id == what]
    return mutate.applied(m)


@pytest.mark.parametrize("oid,how,what", UNIT_CASES, ids=[c[0] for c in UNIT_CASES])
def test_unit_counterexample_is_real_calls_that_reproduce(oid, how, what):
    registry.load_all()
    with _plant(how, what):
        r = registry.run_obligation(registry.get(oid), "quick", 0)
        assert r.status == "refuted", (oid, r.status, r.detail)
        program = r.counterexample["ops"]
        assert program.startswith(("from ptspec.", "import ")) and "# see" not in program, program
        with pytest.raises(AssertionError):
            exec(program, {})
    exec(program, {})
