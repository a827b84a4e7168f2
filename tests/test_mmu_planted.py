"""Every mmu check fails on planted bugs, and each mmu invariant and contract catches one of its own.

Each bug of proofs/mmu/planted.py is put into impl for one test; the checker must come back refuted
with a violation whose id is one of the bug's expected ids (for the historical bugs of
docs/bugs.md: the invariant named there).
"""

import pytest

from ptspec.proofs.mmu import exhaustive as mmu_exhaustive
from ptspec.proofs.mmu import hyp_va as mmu_hypva
from ptspec.proofs.mmu import lockstep as mmu_machine
from ptspec.proofs.mmu import scenarios as mmu_scenarios
from ptspec.proofs.mmu.planted import BUGS, HISTORICAL, planted_mmu
from ptspec.proofs.stage2 import returns

STAGE2_BUGS = sorted(b for b in BUGS if not b.startswith("hyp-"))
HYP_BUGS = sorted(b for b in BUGS if b.startswith("hyp-"))

# historical bug -> (layout names, depth, the invariant docs/bugs.md names)
EXHAUSTIVE = {
    "memslot-bounds": (["thp-head-tail"], 1, "MS"),
    "force-pte-size": (["hugetlb-pmd-misaligned"], 1, "MS"),
    "ipa-limit": (["ipa-top-beyond"], 1, "MS"),
    "dirty-before": (["thp-aligned"], 2, "DIRTY"),
    "perm-level": (["thp-aligned"], 1, "PROGRESS"),
}
MACHINE = ["memslot-bounds", "force-pte-size", "ipa-limit", "perm-level", "thp-no-align",
           "no-mark-dirty", "cm-no-skip", "commit-no-wp", "flush-slot-short", "unmap-gfn-short",
           "unmap-vm-pfnmap", "exec-on-read", "ioremap-eagain-retry"]
PERM_BUGS = ["exec-on-read", "block-keeps-exec"]


@pytest.fixture(autouse=True)
def _shorter_call_budget(monkeypatch):
    """ioremap-eagain-retry loops: each time a run reaches it costs the budget of CPU time; 2 s
    instead of 10 keeps these tests short and is still several times the longest legitimate VM
    operation (0.3 s)."""
    monkeypatch.setattr(returns, "IMPL_CALL_CPU_SECONDS", 2.0)


def ids(violations):
    return {str(v).split()[0] for v in violations}


@pytest.mark.parametrize("bug_id", STAGE2_BUGS)
def test_scenarios_catch(bug_id):
    with planted_mmu(bug_id):
        found = set()
        for _, _, vs in mmu_scenarios.run_all():
            found |= ids(vs)
    assert found & set(BUGS[bug_id].caught_by), (bug_id, found)


@pytest.mark.parametrize("bug_id", sorted(EXHAUSTIVE))
def test_exhaustive_catches_historical_with_the_named_invariant(bug_id):
    layouts, depth, inv = EXHAUSTIVE[bug_id]
    with planted_mmu(bug_id):
        out = mmu_exhaustive.explore(depth, layouts)
    assert out.status == "refuted", bug_id
    assert inv in ids(out.counterexample["violations"]), out.counterexample["violations"]
    assert "h = VmHarness(" in out.counterexample["ops"]
    with planted_mmu(bug_id), pytest.raises(AssertionError):          # pasted, it reproduces
        exec(out.counterexample["ops"], {})
    exec(out.counterexample["ops"], {})


@pytest.mark.parametrize("bug_id", MACHINE)
def test_hypothesis_machine_catches(bug_id):
    with planted_mmu(bug_id):
        out = mmu_machine.run_machine(examples=60, steps=20, seed=0)
    assert out.status == "refuted", bug_id
    assert ids(out.failure.violations) & set(BUGS[bug_id].caught_by), out.failure.violations


@pytest.mark.parametrize("bug_id", HYP_BUGS)
def test_hyp_sequences_catch(bug_id):
    with planted_mmu(bug_id):
        n, cx = mmu_hypva.run_sequences(100)
    assert cx is not None and ids(cx["violations"]) == {"C-HYP-VA"}, (bug_id, cx)


def test_z3_refutes_the_allocator_without_xor():
    with planted_mmu("hyp-va-no-xor"):
        status, model = mmu_hypva.z3_allocator(48, 12, 20000, 50_000_000)
    assert status == "refuted" and model is not None


def test_z3_allocator_refutation_prints_the_failing_call():
    """mmu.z3.hyp-va's counterexample is the allocator called on the model's request, ending in
    the failing assert; without the defect the same program passes."""
    from ptspec.proofs.runner import registry
    registry.load_all()
    with planted_mmu("hyp-va-no-xor"):
        r = registry.run_obligation(registry.get("mmu.z3.hyp-va"), "quick", 0)
    assert r.status == "refuted", r.detail
    program = r.counterexample["ops"]
    assert "mmu_hyp.hyp_private_va(io_map_base, phys, size" in program
    assert program.splitlines()[-1].startswith("assert ")
    with planted_mmu("hyp-va-no-xor"), pytest.raises(AssertionError):
        exec(program, {})
    exec(program, {})


def test_clean_tree_passes_every_mmu_checker():
    assert all(not vs for _, _, vs in mmu_scenarios.run_all())
    assert mmu_exhaustive.explore(1).status == "passed"
    assert mmu_machine.run_machine(examples=10, steps=15, seed=3).status == "passed"
    assert mmu_hypva.run_sequences(50)[1] is None
    assert mmu_hypva.z3_allocator(48, 12, 20000, 50_000_000)[0] == "proved"


@pytest.mark.parametrize("bug_id", PERM_BUGS)
def test_permission_bugs_are_caught_by_ms_perm_alone(bug_id):
    """Each scenario that fails on these bugs fails on MS-PERM and on nothing else: MS, DIRTY and
    C-MMU-CMO (the planted variants still invalidate the I-cache) have nothing to say."""
    with planted_mmu(bug_id):
        found = [ids(vs) for _, _, vs in mmu_scenarios.run_all() if vs]
    assert found and all(f == {"MS-PERM"} for f in found), (bug_id, found)


def test_planted_bugs_restore_impl():
    from ptspec.impl.mmu import fault as mmu_fault
    before = mmu_fault.user_mem_abort
    with planted_mmu("perm-level"):
        assert mmu_fault.user_mem_abort is not before
    assert mmu_fault.user_mem_abort is before


def test_historical_ids_and_every_invariant_has_a_bug_of_its_own():
    assert set(HISTORICAL) <= set(BUGS)
    own = {i for b in BUGS.values() if b.id not in HISTORICAL for i in b.caught_by}
    wanted = {"MS", "MS-PERM", "DIRTY", "PROGRESS", "C-MMU-ABORT", "C-MMU-PREPARE", "C-MMU-COMMIT",
              "C-MMU-FLUSH-SLOT", "C-MMU-NOTIFIER", "C-MMU-WP", "C-MMU-IOREMAP",
              "C-MMU-UNMAP-VM", "C-HYP-VA"}
    assert wanted <= own
