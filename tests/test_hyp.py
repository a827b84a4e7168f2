"""Hyp stage-1: the contract on hand-made steps, the lock-step clean, and every planted bug caught."""

import pytest

from ptspec import spec
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_X
from ptspec.proofs.hyp import lockstep as hyp_lockstep
from ptspec.proofs.runner import budgets as profiles
from ptspec.proofs.hyp.checks import hyp_examples
from ptspec.proofs.hyp.lockstep import HypHarness
from ptspec.proofs.hyp.planted import BUGS, planted_hyp

M2, K4 = 0x200000, 0x1000


def ids(found):
    return {str(v).split()[0] for v in found}


def test_block_then_page_inside_splits_with_the_rest_unmapped():
    h = HypHarness(12, 48)
    assert h.step("map", addr=M2, size=M2, phys=0x8020_0000, prot=KVM_PGTABLE_PROT_RW) == (0, [])
    ret, found = h.step("map", addr=M2 + K4, size=K4, phys=0x9000_0000, prot=KVM_PGTABLE_PROT_R)
    assert ret == 0 and found == []
    st = spec.load_state(h.raw_state())
    assert spec.translate(st, M2 + K4).oa == 0x9000_0000
    assert not spec.translate(st, M2).valid                 # the rest of the split block is gone


def test_conflicting_remap_is_left_alone_and_refused_prots_change_nothing():
    h = HypHarness(12, 48)
    h.step("map", addr=0, size=K4, phys=0x8000_0000, prot=KVM_PGTABLE_PROT_RW)
    assert h.step("map", addr=0, size=K4, phys=0x9000_0000, prot=KVM_PGTABLE_PROT_RW) == (0, [])
    assert spec.translate(spec.load_state(h.raw_state()), 0).oa == 0x8000_0000
    for prot in (0, KVM_PGTABLE_PROT_RW | KVM_PGTABLE_PROT_X):
        ret, found = h.step("map", addr=K4, size=K4, phys=0x8000_1000, prot=prot)
        assert ret == -22 and found == []


def test_contract_rejects_a_wrong_output_address():
    h = HypHarness(12, 48)
    pre = h.raw_state()
    h.pgt.map(0, K4, 0x8000_1000, KVM_PGTABLE_PROT_R)       # not what the step below claims
    post = h.raw_state()
    found = spec.check_hyp_step(pre, {"op": "map", "args": dict(addr=0, size=K4, phys=0x8000_0000,
                                                                prot=KVM_PGTABLE_PROT_R),
                                      "ret": 0, "out": {}}, post)
    assert ids(found) == {"C-HYP-MAP"}


@pytest.mark.parametrize("geometry", sorted(hyp_lockstep.HYP_GEOMETRIES))
def test_lockstep_is_clean(geometry):
    out = hyp_lockstep.run_hyp_lockstep(geometry, examples=10, steps=15, seed=0)
    assert out.status == "passed" and out.steps > 0


@pytest.mark.parametrize("bug_id", sorted(BUGS))
def test_planted_bug_is_caught(bug_id):
    budget = profiles.budget("default")
    with planted_hyp(bug_id):
        out = hyp_lockstep.run_hyp_lockstep("4k-48", examples=hyp_examples("4k-48", budget),
                                            steps=budget["steps"], seed=0)
    assert out.status == "refuted", bug_id
    assert ids(out.failure.violations) & set(BUGS[bug_id].caught_by), out.failure.violations


def _warn_step(h, **args):
    """One map through the harness: (ret, the WARNs it raised, the violations found)."""
    before = len(h.pgt.warnings)
    ret, found = h.step("map", **args)
    return ret, h.pgt.warnings[before:], found


def test_c_hyp_warn_due_only_for_a_conflict_or_a_table_over_a_block():
    h = HypHarness(12, 48)
    m = dict(addr=M2, size=M2, phys=0x8020_0000, prot=KVM_PGTABLE_PROT_R)
    assert _warn_step(h, **m) == (0, [], [])
    assert _warn_step(h, **m) == (0, [], [])                               # same mapping
    assert _warn_step(h, **{**m, "prot": KVM_PGTABLE_PROT_R | (1 << 55)}) == (0, [], [])  # SW bit
    ret, warns, found = _warn_step(h, **{**m, "phys": 0x8040_0000})        # conflicting
    assert (ret, len(warns), found) == (0, 1, []) and warns[0].startswith("hyp_pte_needs_update")
    ret, warns, found = _warn_step(h, addr=M2 + K4, size=K4, phys=0x9000_0000,
                                   prot=KVM_PGTABLE_PROT_R)                # split: table over block
    assert (ret, len(warns), found) == (0, 1, []) and warns[0].startswith("kvm_set_table_pte")


def test_c_hyp_warn_rejects_a_missing_a_spurious_and_a_wrong_warn():
    h = HypHarness(12, 48)
    h.step("map", addr=0, size=K4, phys=0x8000_0000, prot=KVM_PGTABLE_PROT_R)
    pre = h.raw_state()
    args = dict(addr=0, size=K4, phys=0x9000_0000, prot=KVM_PGTABLE_PROT_R)   # a conflict
    h.pgt.map(**args)
    post = h.raw_state()
    conflict = "hyp_pte_needs_update: conflicting valid mapping"

    def judge(warnings, a=args, ret=0):
        step = {"op": "map", "args": a, "ret": ret, "out": {"warnings": warnings}}
        return [v for v in spec.check_hyp_step(pre, step, post)]
    assert judge([conflict]) == []
    assert ids(judge([])) == {"C-HYP-WARN"}                                   # missing
    assert ids(judge([conflict, conflict])) == {"C-HYP-WARN"}                # one too many
    assert ids(judge(["kvm_set_table_pte: overwriting a valid entry"])) == {"C-HYP-WARN"}
    assert judge([], ret=-12) == []                                          # -ENOMEM: a prefix
    same = dict(args, phys=0x8000_0000)                                      # same mapping: none due
    assert ids(judge([conflict], a=same)) >= {"C-HYP-WARN"}
    refused = dict(args, prot=0)
    assert ids(judge([conflict], a=refused, ret=-22)) >= {"C-HYP-WARN"}
    # a record without out.warnings says nothing about WARNs
    assert spec.check_hyp_step(pre, {"op": "map", "args": args, "ret": 0, "out": {}}, post) == []


@pytest.mark.parametrize("bug_id", sorted(b for b in BUGS if BUGS[b].caught_by == ("C-HYP-WARN",)))
def test_warn_bugs_are_caught_by_c_hyp_warn_alone(bug_id):
    budget = profiles.budget("quick")
    with planted_hyp(bug_id):
        out = hyp_lockstep.run_hyp_lockstep("4k-48", examples=hyp_examples("4k-48", budget),
                                            steps=budget["steps"], seed=0)
    assert out.status == "refuted", bug_id
    assert ids(out.failure.violations) == {"C-HYP-WARN"}, out.failure.violations
