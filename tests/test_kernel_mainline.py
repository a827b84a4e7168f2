"""check-kernel on the reworked walker (Linux 6.2 and later): shape detection, the 6.x C judged by
the spec, the catalogued 6.12 finding, and 7.1 judged through its renumbered prot enum and
kvm_pgtable_stage2_annotate. Each test needs a cached tree
(~/.cache/ptspec/trees/linux-<version>) and skips, saying so, when it is absent (CI has only
the Debian 6.1 source)."""

from pathlib import Path

import pytest

from ptspec.proofs.kernel import check
from ptspec.proofs.kernel import subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.kernel import tree_mainline as TM
from ptspec.proofs.kernel import planted_mainline as PM
from ptspec.proofs.runner import budgets
from kdiff_support import need_tree

HEADER_6_1 = "struct kvm_pgtable_walker { kvm_pgtable_visitor_fn_t cb; };"


def test_old_walker_is_not_mainline():
    assert TM.detect("int __kvm_pgtable_stage2_init(void);", HEADER_6_1) is None


def test_shapes_of_the_cached_trees():
    want = {"6.3": dict(free="free_removed", mkold=True, split=False, level_s8=False),
            "6.6": dict(free="free_unlinked", mkold=False, split=True, level_s8=False),
            "6.12": dict(free="free_unlinked", mkold=False, split=True, level_s8=True)}
    seen = 0
    for prefix, fields in want.items():
        tree, _ = T.cached_tree(prefix)
        if tree is None:
            continue
        seen += 1
        ml = tree.shape.mainline
        assert ml is not None and T.unsupported(tree.shape) is None
        assert {k: getattr(ml, k) for k in fields} == fields
        assert ml.lock == ("bit", 10)
        assert "KDIFF_MAINLINE" in T.shim_defines(tree.shape)
    if not seen:
        pytest.skip("kdiff: no linux-6.3/6.6/6.12 tree cached")


def test_7_1_shape_prot_table_and_annotation_type():
    tree, why = T.cached_tree("7.1")
    if tree is None:
        pytest.skip(f"kdiff: {why}")
    ml = tree.shape.mainline
    assert ml.annotate and ml.lock == ("type", 63, 60, 1)
    # read from the tree's enums: X is PX | UX (bits 0, 1), W 2, R 3, DEVICE 4; DONATION follows LOCKED
    assert ml.prot_masks == (0x3, 0x4, 0x8, 0x10) and ml.donation_type == 2
    assert T.unsupported(tree.shape) is None
    assert tree.shape.owner_field == TM.ANNOTATE_OWNER_FIELD and tree.shape.max_owner_id == 1
    assert ml.prot_to_tree(0x4 | 0x2 | 0x1 | 1 << 55) == 0x8 | 0x4 | 0x3 | 1 << 55
    with pytest.raises(ValueError, match="does not name"):
        ml.prot_to_tree(1 << 7)       # bits 4-6: NORMAL_NC, PX, UX


def test_6_x_prot_is_passed_as_is():
    tree = need_tree("6.12")
    ml = tree.shape.mainline
    assert ml.prot_masks == (1, 2, 4, 8) and ml.donation_type is None
    assert ml.prot_to_tree(0xe | 1 << 58) == 0xe | 1 << 58


def test_what_cannot_be_translated_is_still_refused_in_one_line():
    from dataclasses import replace
    tree = need_tree("7.1")
    ml = tree.shape.mainline
    why = TM.unsupported(replace(ml, donation_type=None))
    assert why and "kvm_pgtable_stage2_annotate" in why and "\n" not in why
    why = TM.unsupported(replace(ml, prot_masks=(None, 4, 8, 16)))
    assert why and why.startswith("enum kvm_pgtable_prot is renumbered")


def test_7_1_set_owner_is_an_annotation_judged_by_the_spec():
    from dataclasses import replace
    tree = need_tree("7.1")
    h = _harness(tree)
    assert h.step("set_owner", addr=0x200000, size=0x2000, owner_id=1) == (0, [])
    assert h.pgt.get_leaf(0x201000)[1] == 2 << 60 | 1 << 1
    assert h.step("set_owner", addr=0x200000, size=0x1000, owner_id=0) == (None, [])  # no annotate call
    # planted: the poisoned type (3) where the donation type belongs is caught
    h.pgt.shape = replace(h.pgt.shape, donation_type=3)
    _, found = h.step("set_owner", addr=0x400000, size=0x1000, owner_id=1)
    assert "C-SET-OWNER" in {str(v).split()[0] for v in found}


def test_7_1_map_needs_the_prot_translation():
    from dataclasses import replace
    tree = need_tree("7.1")
    h = _harness(tree)
    assert h.step("map", addr=0x200000, size=0x1000, phys=0x4000200000, prot=0x7) == (0, [])
    # planted: the spec's prot passed untranslated (R reads as W, W as UX, X as PX) is caught
    h.pgt.shape = replace(h.pgt.shape, prot_masks=(1, 2, 4, 8))
    ret, found = h.step("map", addr=0x400000, size=0x1000, phys=0x4000400000, prot=0x6)
    assert found and "C-MAP" in {str(v).split()[0] for v in found}


@pytest.mark.parametrize("prefix", ["6.3", "6.6", "6.8", "6.12", "6.13", "6.18", "6.19", "7.0", "7.1"])
def test_quick_run_has_no_uncatalogued_violation(prefix):
    tree = need_tree(prefix)
    r = check.check_geometry(tree, "4k-39", budgets.budget("quick"), 0)
    assert r.status == "passed", check.format_result(r)
    assert r.examples > 50


def _harness(tree, **kw):
    return subject.subject_factory(tree)(12, 39, arena_pages=512, **kw)


def test_6_12_relax_perms_eagain_level_is_the_catalogued_finding():
    tree = need_tree("6.12")
    h = _harness(tree)
    ret, found = h.step("relax_perms", addr=0x100800, prot=3)
    assert ret == -11 and found == []
    assert h.findings == {"relax-perms-eagain-level": 1}


def test_6_6_relax_perms_hole_is_clean_and_6_12_is_not():
    """The same call: 6.6 returns -EAGAIN without a TLBI; 6.12 issues one with a level the walk
    never set (only the catalogue keeps it from failing)."""
    tree = need_tree("6.6")
    h = _harness(tree)
    assert h.step("relax_perms", addr=0x100800, prot=3) == (-11, [])
    assert h.findings == {}


def test_split_and_test_clear_young_are_judged():
    tree = need_tree("6.6")
    h = _harness(tree)
    assert h.step("map", addr=0x200000, size=0x200000, phys=0x4000200000, prot=6)[1] == []
    ret, found = h.step("split", addr=0x200000, size=0x1000)
    assert (ret, found) == (0, [])
    assert h.pgt.get_leaf(0x3ff000)[2] == 3           # the whole block is pages now
    assert h.step("test_clear_young", addr=0x200000, size=0x200000, mkold=1) == (1, [])
    assert h.step("test_clear_young", addr=0x200000, size=0x200000, mkold=0) == (0, [])
    # the generator's mkold becomes test_clear_young on a tree without mkold
    h.step("mkold", addr=0x200000)
    assert h.trace[-1][1] == "test_clear_young"


def test_6_6_create_unlinked_double_put_is_the_catalogued_finding():
    tree = need_tree("6.6")
    h = subject.subject_factory(tree)(12, 39, arena_pages=2048, mc_capacity=600)
    assert h.step("map", addr=0x40000000, size=0x40000000, phys=0x4040000000, prot=6)[1] == []
    h.fail_allocation(5)
    ret, found = h.step("split", addr=0x40000000, size=0x1000)
    assert ret == -12 and found == []
    assert h.findings == {"create-unlinked-double-put": 1}
    assert "h.fail_allocation(5)" in h.program()


@pytest.mark.parametrize("rid", [r.id for r in PM.REVERTS + PM.PLANTS if r.sequence])
def test_reverted_upstream_fix_is_caught_and_the_fixed_tree_is_clean(rid, tmp_path):
    rv = PM.BY_ID[rid]
    tree = need_tree(rv.tree)
    got, _ = PM.run_sequence(rv, PM.scratch_tree(rv, tree, tmp_path / "t"))
    assert {str(v).split()[0] for v in got} & set(rv.expect), [str(v) for v in got]
    clean, h = PM.run_sequence(rv, tree)
    # 6.12.19's own -EAGAIN invalidation carries the catalogued uninitialised hint
    known = {"relax-perms-eagain-level": 1} if rid == "relax-perms-retry-untlbied" else {}
    assert clean == [] and h.findings == known


def test_split_double_put_is_unreachable_single_threaded(tmp_path):
    """The split walker's lost-race path cannot run here: the revert builds, and its program is
    empty (reported as not caught in docs/kernel-mainline.md, not as a pass)."""
    rv = PM.BY_ID["split-double-put"]
    tree = need_tree(rv.tree)
    scratch = PM.scratch_tree(rv, tree, tmp_path / "t")
    assert "put_page(childp)" in (scratch.root / T.FILES[0]).read_text()
    assert rv.sequence == ()


@pytest.mark.parametrize("prefix", ["6.6", "6.12"])
def test_split_of_a_device_block_is_the_catalogued_memtype_finding(prefix):
    tree = need_tree(prefix)
    h = _harness(tree)
    assert h.step("map", addr=0x200000, size=0x200000, phys=0x100200000, prot=0xe)[1] == []
    assert h.step("split", addr=0x200000, size=0x1000) == (0, [])
    assert h.findings == {"split-drops-memtype": 1, "split-drops-memtype-cmo": 1}
    # a normal block splits clean
    assert h.step("map", addr=0x400000, size=0x200000, phys=0x100400000, prot=6)[1] == []
    assert h.step("split", addr=0x400000, size=0x1000) == (0, [])
    assert h.findings == {"split-drops-memtype": 1, "split-drops-memtype-cmo": 1}   # unchanged


def test_with_impl_is_refused_for_the_reworked_walker(capsys):
    tree = need_tree("6.6")
    code = check.main(["--tree", str(tree.root), "--with-impl", "6.1", "--geometry", "4k-39"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 2 and len(out) == 2
    assert out[-1].startswith("check-kernel: not checked: --with-impl compares with impl's")


def test_fault_path_geometry_stops_on_eagain_and_others_go_on():
    """4k-40 maps as user_mem_abort does (shared, HANDLE_FAULT): a re-map whose first leaf only
    differs in permissions returns -EAGAIN and stops (the catalogued eagain-abort); 4k-39 maps
    as the non-fault callers: the walk goes on and returns 0."""
    tree = need_tree("6.6")
    for ia, want in ((40, -11), (39, 0)):
        h = subject.subject_factory(tree)(12, ia, arena_pages=512)
        h.step("map", addr=0, size=0x1000, phys=0x4000000000, prot=4)
        ret, found = h.step("map", addr=0, size=0x2000, phys=0x4000000000, prot=6)
        assert ret == want and found == []
        assert h.findings == ({"eagain-abort": 1} if want else {})


def test_a_compiler_without_the_pattern_option_still_builds(tmp_path, monkeypatch):
    """-ftrivial-auto-var-init=pattern is dropped, not fatal, where the compiler lacks it."""
    tree = need_tree("6.6")
    import shutil
    from ptspec.proofs.kernel import build
    real = build.compiler()
    fake = tmp_path / "oldcc"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in -ftrivial-auto-var-init*) "
                    "echo \"cc: error: unrecognized command-line option '$a'\" >&2; exit 1;; "
                    f"esac; done\nexec {real} \"$@\"\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("PTSPEC_CACHE", str(tmp_path / "cache"))
    assert shutil.which(str(fake))
    lib = build.library(12, tree)
    assert lib.exists() and str(tmp_path) in str(lib)


@pytest.mark.parametrize("prefix", ["6.6", "6.12"])
def test_unmap_whose_page_aligned_end_wraps_is_the_catalogued_deferred_tlbi(prefix):
    """The walk of [0, PAGE_ALIGN(2**64 - 0xfff)) is empty (the aligned end wraps to 0) and returns
    0, yet the deferred range TLBI still runs over the raw size: the catalogued finding, not an
    uncatalogued C-UNMAP violation (found by verify's 4k-48 share before the predicate knew it)."""
    tree = need_tree(prefix)
    h = subject.subject_factory(tree)(12, 48, fwb=True, arena_pages=64)
    ret, found = h.step("unmap", addr=0, size=0xfffffffffffff001)
    assert ret == 0 and found == [] and h.findings == {"unmap-deferred-tlbi-refused": 1}


# -- hyp stage 1 on the reworked walker (proofs/kernel/hyp.py) --------------------------------------

def _hyp(tree):
    from ptspec.proofs.kernel import hyp
    return hyp.hyp_harness(tree)(12, 48, 128)


@pytest.mark.parametrize("prefix", ["6.3", "6.6", "6.12"])
def test_hyp_engine_runs_on_the_reworked_walker_with_only_catalogued_findings(prefix):
    from ptspec.proofs.kernel import engines as E
    tree = need_tree(prefix)
    r = E.run_engine(tree, "hyp", budgets.budget("quick"), geometry="4k-48")
    assert r.status == "passed", check.format_result(r)
    assert r.examples > 20 and "with kvm_pgtable_hyp_unmap" in r.detail
    assert "hyp-refcount x" in r.detail          # the per-descriptor rule is the one judged


@pytest.mark.parametrize("prefix", ["6.3", "6.6", "6.12"])
def test_hyp_split_of_a_block_is_silent_on_6_x_and_its_reference_catalogued(prefix):
    """6.2 on: a page mapped inside a hyp block replaces the block by a table without
    kvm_set_table_pte's WARN (hyp-split-silent); the harness reads the split from the state, so
    the extra reference is hyp-split-ref and destroy's leak hyp-split-leak, as on 6.1."""
    h = _hyp(need_tree(prefix))
    assert h.step("map", addr=0x40000000, size=0x200000, phys=0x140000000, prot=5) == (0, [])
    assert not h.split
    ret, found = h.step("map", addr=0x40100000, size=0x1000, phys=0x240103000, prot=0xe)
    assert (ret, found) == (0, []) and h.pgt.warnings == [] and h.split
    assert {"hyp-split-silent", "hyp-split-ref"} <= set(h.seen)
    assert h.step("destroy") == (0, [])
    assert {"hyp-split-leak", "hyp-split-leak-destroy"} <= set(h.seen)


def test_hyp_split_silent_is_not_a_6_1_finding():
    """hyp-split-silent applies from 6.2 only (6.1 WARNs in kvm_set_table_pte), and the
    conflict's extra kvm_set_table_pte WARN is catalogued up to 6.2 only."""
    from ptspec.proofs.kernel import findings
    by_id = {f.id: f for f in findings.FINDINGS}
    assert not by_id["hyp-split-silent"].applies_to((6, 1, 176))
    assert by_id["hyp-split-silent"].applies_to((6, 3, 8))
    assert by_id["hyp-conflict-split-warn"].applies_to((6, 1, 176))
    assert not by_id["hyp-conflict-split-warn"].applies_to((6, 6, 63))


@pytest.mark.parametrize("prefix", ["6.3", "6.12"])
def test_hyp_conflicting_page_remap_stops_with_einval_as_catalogued(prefix):
    h = _hyp(need_tree(prefix))
    assert h.step("map", addr=0x40202000, size=0x2000, phys=0x140202000, prot=0xc) == (0, [])
    ret, found = h.step("map", addr=0x40200000, size=0x200000, phys=0x140200000, prot=4)
    assert ret == -22 and found == []
    assert [w.split(":")[0] for w in h.pgt.warnings] == ["hyp_pte_needs_update", "hyp_map_walker"]
    assert {"hyp-conflict-page-einval", "hyp-conflict-page-einval-warn"} <= set(h.seen)


@pytest.mark.parametrize("prefix", ["6.3", "6.6", "6.12"])
def test_hyp_unmap_overreach_is_seen_on_6_x(prefix):
    h = _hyp(need_tree(prefix))
    assert h.step("map", addr=0x200000, size=0x400000, phys=0x100200000, prot=4) == (0, [])
    ret, found = h.step("unmap", addr=0x201000, size=0x200000)
    assert ret == 0x200000 and found == [] and h.seen.get("hyp-unmap-overreach")
    assert h.step("unmap", addr=0x400000, size=0x200000) == (0x200000, [])


@pytest.mark.parametrize("rv", PM.HYP_PLANTS, ids=lambda r: f"{r.id}-{r.tree}")
def test_hyp_plant_on_a_mainline_tree_is_caught_and_the_tree_is_clean(rv, tmp_path):
    tree = need_tree(rv.tree)
    got, _ = PM.run_hyp_sequence(rv, PM.scratch_tree(rv, tree, tmp_path / "t"))
    assert {str(v).split()[0] for v in got} == set(rv.expect), [str(v) for v in got]
    clean, h = PM.run_hyp_sequence(rv, tree)
    assert clean == [] and set(h.seen) <= {"hyp-refcount"}


def test_hyp_engine_refutes_a_planted_hyp_bug_on_6_6(tmp_path):
    from ptspec.proofs.kernel import engines as E
    rv = next(r for r in PM.HYP_PLANTS if r.id == "hyp-unmap-uncounted" and r.tree == "6.6")
    scratch = PM.scratch_tree(rv, need_tree("6.6"), tmp_path / "t")
    r = E.run_engine(scratch, "hyp", budgets.budget("default"), geometry="4k-48")
    assert r.status == "refuted", r.detail
    assert any(v.startswith("C-HYP-UNMAP") for v in r.counterexample["violations"])


def test_mainline_checks_are_left_out_by_verify_exactly_where_their_tree_is_missing():
    from ptspec.proofs.cli import verify_args
    from ptspec.proofs.kernel import checks_mainline as CM
    from ptspec.proofs.runner import registry
    registry.load_all()
    obs = registry.select("kernel.mainline.*")
    assert {ob.id for ob in obs} >= {f"kernel.mainline.{k}.{p}" for p in CM.TREES
                                     for k in ("lockstep", "hyp")}
    keep, left_out = verify_args.split_skipped(obs, [])
    absent = {p for p in CM.TREES if not CM._present(p)}
    assert {ob.id for ob in keep if ob.id.rsplit(".", 1)[0] != "kernel.mainline"} == {
        f"kernel.mainline.{k}.{p}" for p in set(CM.TREES) - absent for k in ("lockstep", "hyp")}
    for s in left_out:
        assert s["why"].startswith("optional input absent: no linux-"), s


def test_7_1_counterexample_c_text_speaks_the_tree_s_enum():
    tree = need_tree("7.1")
    trace = [("op", "map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=0x6)),
             ("op", "set_owner", dict(addr=0x400000, size=0x1000, owner_id=1))]
    text = check.c_test_body(trace, shape=tree.shape)
    assert "kvm_pgtable_stage2_map(pgt, 0x200000, 0x1000, 0x4000200000, 0xc, mc);" in text
    assert ("kvm_pgtable_stage2_annotate(pgt, 0x400000, 0x1000, mc, "
            "KVM_HOST_INVALID_PTE_TYPE_DONATION, 2);") in text
    assert "0x4000200000, 6, mc);" in check.c_test_body(trace)   # the spec's encoding, no tree


def test_7_1_init_flags_are_translated(monkeypatch):
    from ptspec.proofs.kernel import replay
    tree = need_tree("7.1")
    ml = tree.shape.mainline
    assert ml.flags_to_tree(2) == 1                    # KVM_PGTABLE_S2_IDMAP is BIT(0) in 7.1
    with pytest.raises(ValueError, match="NOFWB"):
        ml.flags_to_tree(1)                            # 7.1 has no KVM_PGTABLE_S2_NOFWB
    h = replay.harness(tree, flags=2)
    assert h.step("map", addr=0x400000, size=0x1000, phys=0x500000, prot=6) == (-22, [])
    # planted: the spec's IDMAP passed as is (BIT(1) is KVM_PGTABLE_S2_AS_S1 in 7.1) is caught
    monkeypatch.setattr(TM.Mainline, "flags_to_tree", lambda self, flags: flags)
    h = replay.harness(tree, flags=2)
    ret, found = h.step("map", addr=0x400000, size=0x1000, phys=0x500000, prot=6)
    assert ret == 0 and "C-MAP" in {str(v).split()[0] for v in found}


def test_7_1_hyp_counterexample_c_text_speaks_the_tree_s_enum():
    from ptspec.proofs.kernel import hyp
    tree = need_tree("7.1")
    trace = [("op", "map", dict(addr=0x200000, size=0x1000, phys=0x300000, prot=0x5))]
    assert "0x300000, 0xb);" in hyp.c_test_body(trace, shape=tree.shape)   # R|X -> R|PX|UX
    assert "0x300000, 5);" in hyp.c_test_body(trace)


def test_shared_scratch_copies_are_named_by_content_and_never_rewritten(tmp_path, monkeypatch):
    """Two runs at once once compiled a scratch copy the other was rewriting (verify twice in
    parallel: BuildError). A shared copy is now filled privately and renamed into place under a
    name holding its content's hash; a second call reuses it as it is."""
    from concurrent.futures import ThreadPoolExecutor
    tree = need_tree("6.6")
    monkeypatch.setattr(PM, "scratch_dir", lambda: tmp_path)
    rv = next(r for r in PM.REVERTS if r.tree == "6.6" and r.sequence)
    with ThreadPoolExecutor(4) as pool:
        roots = {str(t.root) for t in pool.map(lambda _: PM.scratch_tree(rv, tree), range(8))}
    assert len(roots) == 1 and [p.name for p in tmp_path.iterdir()] == [Path(roots.pop()).name]
    (c,) = [tmp_path / p / "arch/arm64/kvm/hyp/pgtable.c" for p in tmp_path.iterdir()]
    assert c.read_text() != (Path(tree.root) / "arch/arm64/kvm/hyp/pgtable.c").read_text()


def test_hypothesis_driver_runs_a_mainline_subject_and_its_own_operations():
    """The lock-step's hypothesis driver on a 6.6 tree: the program's draws include the tree's
    own operations (split, test_clear_young, by program_rules) and the run is judged clean."""
    from ptspec.proofs.stage2 import lockstep
    base = subject.subject_factory(need_tree("6.6"))
    ops = []

    class Counting(base):
        def step(self, op, **args):
            ops.append(op)
            return super().step(op, **args)
    out = lockstep.run_lockstep("4k-39", examples=20, steps=30, seed=0, harness_factory=Counting,
                                geometries=subject.GEOMETRIES, options=subject.OPTIONS,
                                driver="hypothesis")
    assert out.status == "passed", out.failure
    assert out.steps > 100 and {"split", "test_clear_young"} <= set(ops)


def test_mkyoung_and_walk_flags_are_read_apart():
    """6.13 made kvm_pgtable_stage2_mkyoung void; 6.18 gave it and relax_perms walk flags. A tree
    between them (6.13-6.17) has the first change only: the shim must call mkyoung with two
    arguments there (it did not build 6.13.7 when one regex stood for both)."""
    ctx = "struct kvm_pgtable_visit_ctx { int x; };\n"
    h613 = ctx + ("void kvm_pgtable_stage2_mkyoung(struct kvm_pgtable *pgt, u64 addr);\n"
                  "int kvm_pgtable_stage2_relax_perms(struct kvm_pgtable *pgt, u64 addr,\n"
                  "\t\t\t\t   enum kvm_pgtable_prot prot);\n")
    h618 = ctx + ("enum kvm_pgtable_walk_flags { KVM_PGTABLE_WALK_HANDLE_FAULT = BIT(4), };\n"
                  "void kvm_pgtable_stage2_mkyoung(struct kvm_pgtable *pgt, u64 addr,\n"
                  "\t\t\t\tenum kvm_pgtable_walk_flags flags);\n"
                  "int kvm_pgtable_stage2_relax_perms(struct kvm_pgtable *pgt, u64 addr,\n"
                  "\t\t\t\t   enum kvm_pgtable_prot prot, enum kvm_pgtable_walk_flags flags);\n")
    h612 = ctx + "kvm_pte_t kvm_pgtable_stage2_mkyoung(struct kvm_pgtable *pgt, u64 addr);\n"
    shapes = {name: TM.detect("", h) for name, h in (("6.12", h612), ("6.13", h613), ("6.18", h618))}
    assert {n: (s.mkyoung_void, s.walk_flags_api) for n, s in shapes.items()} == {
        "6.12": (False, False), "6.13": (True, False), "6.18": (True, True)}
    assert "KDIFF_ML_MKYOUNG_VOID" in shapes["6.13"].defines()
    assert "KDIFF_ML_WALK_FLAGS_API" not in shapes["6.13"].defines()
    # 6.18's fault path passes KVM_PGTABLE_WALK_HANDLE_FAULT (a visitor's -EAGAIN is returned);
    # 6.19 replaced it with IGNORE_EAGAIN, and passing nothing is the fault path's there
    assert {"KDIFF_ML_WALK_FLAGS_API", "KDIFF_ML_HANDLE_FAULT"} <= set(shapes["6.18"].defines())
    h619 = h618.replace("KVM_PGTABLE_WALK_HANDLE_FAULT", "KVM_PGTABLE_WALK_IGNORE_EAGAIN")
    assert "KDIFF_ML_HANDLE_FAULT" not in TM.detect("", h619).defines()
    for prefix in ("6.13", "6.18"):
        tree, _ = T.cached_tree(prefix)
        if tree is not None:
            assert tree.shape.mainline.mkyoung_void
            assert tree.shape.mainline.walk_flags_api == (prefix == "6.18")


@pytest.mark.parametrize("prefix", ["6.19", "7.0"])
def test_xnx_trees_before_the_icache_fix_show_only_the_catalogued_finding(prefix):
    """6.19 and 7.0 (FEAT_XNX, stage2_pte_executable testing the whole XN field) on the XNX table
    of 4k-40: the lock-step passes with xnx-icache-executable catalogued, and 7.1.5 (fixed) has
    none of it."""
    tree = need_tree(prefix)
    r = check.check_geometry(tree, "4k-40", budgets.budget("quick"), 0)
    assert r.status == "passed", check.format_result(r)
    assert "xnx-icache-executable x" in r.detail
    fixed = check.check_geometry(need_tree("7.1"), "4k-40", budgets.budget("quick"), 0)
    assert fixed.status == "passed" and "xnx-icache" not in fixed.detail


@pytest.mark.parametrize("rid", ["table-tlbi-zero", "hyp-table-tlbi-zero"])
def test_hint_0_for_a_table_on_6_8_on_is_caught_only_by_the_level_0_reading(rid, tmp_path,
                                                                             monkeypatch):
    """6.6.y's no-hint 0 for a zapped table, put into 6.12 (stage 2 and hyp): refuted because from
    6.8 a hint of 0 names level 0 (walkcache.leaf_hints); read as before 6.8 it would pass."""
    from ptspec.spec.hyp import tlbi
    from ptspec.spec.stage2 import bbm, walkcache
    rv = PM.BY_ID.get(rid) or next(r for r in PM.HYP_PLANTS if r.id == rid)
    run = PM.run_hyp_sequence if rid.startswith("hyp") else PM.run_sequence
    scratch = PM.scratch_tree(rv, need_tree("6.12"), tmp_path / "t")
    got, _ = run(rv, scratch)
    assert {str(v).split()[0] for v in got} == set(rv.expect), [str(v) for v in got]
    assert all("table descriptor" in str(v) for v in got)
    for mod in (walkcache, bbm, tlbi):
        monkeypatch.setattr(mod, "leaf_hints", lambda state: walkcache.LEAF_HINTS)
    assert run(rv, scratch)[0] == []
