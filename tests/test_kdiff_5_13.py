"""5.13 (pKVM's 5.13: kvm_pgtable_stage2_init_flags, owner ids in 63:56) has no cache-maintenance
hooks in kvm_pgtable_mm_ops: the tree shape says so (Shape.mm_cmo), the shim builds without them
(KDIFF_NO_MM_CMO, __flush_dcache_area logged as a clean) and the tables run without CMO."""

from ptspec.proofs.kernel import check, planted
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner import budgets
from kdiff_support import need_tree  # noqa: E402  (tests/ is on sys.path)
from test_kdiff_check import INIT_5_14, fake_tree


def test_a_5_13_style_tree_runs_without_the_mm_ops_cache_hooks(tmp_path):
    """5.13 (pKVM's init_flags, owner ids in 63:56) has no dcache_clean_inval_poc or
    icache_inval_pou in kvm_pgtable_mm_ops: the shim leaves the hooks out (KDIFF_NO_MM_CMO) and
    the tables run without CMO, which the description says."""
    t = T.open_tree(fake_tree(tmp_path, init=INIT_5_14, force_pte_cb=False, mm_cmo=False,
                              owner="#define KVM_INVALID_PTE_OWNER_MASK\tGENMASK(63, 56)\n"
                                    "#define KVM_MAX_OWNER_ID\t\t1\n",
                              makefile="VERSION = 5\nPATCHLEVEL = 13\nSUBLEVEL = 13\n"))
    assert not t.shape.mm_cmo and T.unsupported(t.shape) is None
    assert T.shim_defines(t.shape) == ("KDIFF_INIT_FLAGS", "KDIFF_NO_MM_CMO")
    assert "without cache-maintenance hooks" in t.shape.describe()


def test_a_real_5_13_tree_builds_without_cmo_hooks_and_refutes_planted_bugs(tmp_path):
    """A cached 5.13 tree (skipped without one): 5.14's shape without the mm_ops cache hooks;
    its tables run without CMO (cmo False in every state), clean under the spec but for its
    catalogued findings; a walk bug and an unmap that no longer cleans the data cache (5.13 calls
    __flush_dcache_area itself) are refuted."""
    from ptspec.proofs.kernel import subject
    t = need_tree("5.13")
    assert t.shape.init == "kvm_pgtable_stage2_init_flags" and not t.shape.mm_cmo
    h = subject.subject_factory(t)(12, 39, arena_pages=512)
    assert h.pgt.snapshot()["cmo"] is False
    r = check.check_geometry(t, "4k-39", budgets.budget("default"), 0)
    assert r.status == "passed", r.detail
    for bug in ("walk-align", "unmap-no-cmo"):
        bad = planted.scratch_tree(bug, t, tmp_path / bug)
        r = check.check_geometry(bad, "4k-39", budgets.budget("default"), 0)
        assert r.status == "refuted", (bug, r.detail)
