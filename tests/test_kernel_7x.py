"""Kernels after 7.1 (docs/kernel-mainline.md "7.2").

No consistent 7.2 or 7.3 tree has been found, so the tests here are of two kinds:

* a cached ``linux-7.2*`` / ``linux-7.3*`` tree, when one is put in the tree cache, is opened,
  driven and judged like 7.1.5 (they skip, saying so, when it is absent);
* what is known of 7.2's pgtable.c is judged now, on scratch copies of the cached 7.1.5: its
  relax_perms TLBI-level fix (8d187d4b33c2, backported in 7.1.5; ``relax-perms-tlbi-level`` puts
  it back out, which gives 7.1.3's code), its relax_perms XN change (f35c08c09250;
  ``planted_mainline.V72_EDITS``), and the version plumbing past 7.1. They test how ptspec reads
  a version and what the spec says of 7.2's code, not a real 7.2 tree.
"""

import re
from pathlib import Path

import pytest

from ptspec.proofs.kernel import check
from ptspec.proofs.kernel import findings
from ptspec.proofs.kernel import checks_mainline as CM
from ptspec.proofs.kernel import planted_mainline as PM
from ptspec.proofs.kernel import subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner import budgets
from kdiff_support import need_tree

HOLE = dict(addr=0x100800, prot=3)      # relax_perms where no leaf is mapped: the walk's -EAGAIN


def _relabel(tree, dest: Path, version: str):
    """The tree's four files under ``dest`` with the Makefile's version lines set to
    ``version`` ("7.2.0"); the opened tree."""
    v, p, s = version.split(".")
    for rel in T.FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes((Path(tree.root) / rel).read_bytes())
    mk = dest / "Makefile"
    text = mk.read_text()
    for key, val in (("VERSION", v), ("PATCHLEVEL", p), ("SUBLEVEL", s)):
        text, n = re.subn(rf"^{key} = \d+$", f"{key} = {val}", text, count=1, flags=re.M)
        assert n == 1, key
    mk.write_text(text)
    return T.open_tree(dest)


def _relax_hole(tree):
    h = subject.subject_factory(tree)(12, 39, arena_pages=512)
    ret, found = h.step("relax_perms", **HOLE)
    return ret, sorted({str(v).split()[0] for v in found}), h.findings


# -- a real tree, when cached ----------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["7.2", "7.3"])
def test_cached_7x_tree_is_driven_and_passes_a_quick_lockstep(prefix):
    tree, why = T.cached_tree(prefix)
    if tree is None:
        pytest.skip(f"kdiff: {why}")
    bad = T.unsupported(tree.shape)
    assert bad is None, f"Linux {tree.version}: {bad}"
    assert tree.shape.mainline is not None and tree.version_tuple() >= (7, 2, 0)
    r = check.check_geometry(tree, "4k-39", budgets.budget("quick"), 0)
    assert r.status == "passed", check.format_result(r)
    assert r.examples > 50


def test_verify_names_the_7x_lockstep_obligations():
    assert {"7.2", "7.3"} <= set(CM.TREES)


# -- the 7.2 fix and the catalogue's range ---------------------------------------------------------

def test_the_7_2_fix_put_back_is_catalogued_only_where_the_kernel_had_it(tmp_path):
    """The relax_perms TLBI-level fix reverted out of 7.1.5 is 7.1.3's code: labelled 7.1.3 it is
    the catalogued relax-perms-eagain-level (no violation); labelled 7.1.5 or 7.2.0 (which have the
    fix) the same step is a C-RELAX-PERMS violation. The catalogue's old range ([6.12, 7.1.0))
    failed the first half: a 7.1.3 tree was refuted."""
    tree = need_tree("7.1")
    reverted = PM.scratch_tree(PM.BY_ID["relax-perms-tlbi-level"], tree, tmp_path / "rv")
    as_713 = _relabel(reverted, tmp_path / "713", "7.1.3")
    assert _relax_hole(as_713) == (-11, [], {"relax-perms-eagain-level": 1})
    for label in ("7.1.5", "7.2.0"):
        as_v = _relabel(reverted, tmp_path / label, label)
        ret, found, findings = _relax_hole(as_v)
        assert ret == -11 and found == ["C-RELAX-PERMS"] and findings == {}, label


def test_relax_perms_finding_range_follows_the_backport():
    f = next(k for k in findings.FINDINGS if k.id == "relax-perms-eagain-level")
    assert f.applies_to((6, 12, 19)) and f.applies_to((7, 0, 9)) and f.applies_to((7, 1, 4))
    assert not f.applies_to((6, 12, 98)) and not f.applies_to((7, 1, 5))
    assert not f.applies_to((7, 2, 0)) and not f.applies_to((6, 6, 63))
    assert "8d187d4b33c2" in f.why and "ab2afe109266" in f.why


# -- 7.2's pgtable.c, rebuilt from 7.1.5, and the version plumbing past 7.1 ----------------------

XSTEP = (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=7)),   # R|W|X
         ("relax_perms", dict(addr=0x200000, prot=2)))                           # W, no X


def _xn_run(tree, xnx=False):
    h = subject.subject_factory(tree)(12, 39, arena_pages=512, **({"xnx": True} if xnx else {}))
    found = []
    for op, args in XSTEP:
        found += [str(v).split()[0] for v in h.step(op, **args)[1]]
    return found


def test_7_2_relax_perms_leaves_xn_and_the_spec_knows_it_by_version(tmp_path):
    """7.2's relax_perms touches XN only for a prot with X; 7.1 sets XN for one without. Each
    code is clean under its own version line and a C-RELAX-PERMS violation under the other's."""
    tree = need_tree("7.1")
    v72 = PM.v72_scratch_tree(tree, tmp_path / "72", "7.2.0")
    v72_as_715 = PM.v72_scratch_tree(tree, tmp_path / "72as715", "7.1.5")
    t715_as_72 = _relabel(tree, tmp_path / "715as72", "7.2.0")
    for xnx in (False, True):                      # with FEAT_XNX too (the xnx table option)
        assert _xn_run(v72, xnx) == [], xnx
        assert _xn_run(v72_as_715, xnx) == ["C-RELAX-PERMS"], xnx
        assert _xn_run(t715_as_72, xnx) == ["C-RELAX-PERMS"], xnx
        assert _xn_run(tree, xnx) == [], xnx


def test_7_2_code_under_a_7_2_version_line_passes_a_quick_lockstep(tmp_path):
    """Every other version gate of the spec is "from X on": 7.2's code (7.1.5 with V72_EDITS)
    under a 7.2.0 line is judged by the 7.1 statements too (typed owner annotations and locked-PTE
    marker, PX/UX, void mkyoung) and passes, with and without FEAT_XNX. A gate written for 7.1
    alone (planted: PX/UX only for 7.1.x, an owner tag that stops at 7.2) makes the same run
    refute."""
    tree = need_tree("7.1")
    t72 = PM.v72_scratch_tree(tree, tmp_path / "72")
    assert t72.version == "7.2.0" and T.unsupported(t72.shape) is None
    assert t72.shape.mainline == tree.shape.mainline          # the shape is read, not the version
    for geometry in ("4k-39", "4k-40"):           # 4k-40: FEAT_XNX's table (the xnx option)
        r = check.check_geometry(t72, geometry, budgets.budget("quick"), 0)
        assert r.status == "passed", check.format_result(r)
        assert "relax-perms-eagain-level" not in r.detail
    assert _relax_hole(t72) == (-11, [], {})


def test_c_relax_perms_xn_by_version_on_built_states():
    """The statement alone (no tree): W added to an executable page; 6.12-6.18 and 7.2 keep it
    executable, 6.19-7.1 set XN (stage2_set_xn_attr came with 6.19's PX/UX split). Each of the other two outcomes is C-RELAX-PERMS."""
    from ptspec import spec
    from test_spec_builder import S2, RW, step, ids
    pre = S2(field=(3, 1))
    pre.memcache = []
    pre.page(0x4000_0000, 0x8000_0000, w=False, x=True)
    st = step("relax_perms", addr=0x4000_0000, prot=RW)
    tlb = [("tlbi_ipa_nsh", 0x4000_0000, 3)]
    keeps_x = pre.copy().page(0x4000_0000, 0x8000_0000, x=True)
    sets_xn = pre.copy().page(0x4000_0000, 0x8000_0000, x=False)

    def judge(post, version):
        a, b = pre.raw(), post.raw(tlb=tlb)
        a["kernel_version"] = b["kernel_version"] = version
        return ids(spec.check_step(a, st, b))
    for version, good, bad in (("6.12.19", keeps_x, sets_xn), ("6.18.35", keeps_x, sets_xn),
                               ("6.19.0", sets_xn, keeps_x), ("7.1.5", sets_xn, keeps_x),
                               ("7.2.0", keeps_x, sets_xn)):
        assert judge(good, version) == [], version
        assert "C-RELAX-PERMS" in judge(bad, version), version


def test_planted_tlbi_level_bug_in_the_7_2_scratch_is_caught(tmp_path):
    """relax-perms-tlbi-level planted in 7.2's code (7.1.5 with V72_EDITS, 7.2.0 line): the
    relax_perms step where nothing is mapped is a C-RELAX-PERMS violation, not a catalogued finding
    (7.2 is past the range); the unplanted copy runs it clean."""
    tree = need_tree("7.1")
    v72 = PM.v72_scratch_tree(tree, tmp_path / "72")
    planted = PM.scratch_tree(PM.BY_ID["relax-perms-tlbi-level"], v72, tmp_path / "72p")
    assert planted.version == "7.2.0"
    assert _relax_hole(planted) == (-11, ["C-RELAX-PERMS"], {})
    assert _relax_hole(v72) == (-11, [], {})


def test_version_gates_sit_where_the_sources_change():
    """Each gate at the release whose source first has the change (checked against the cached
    6.12.19, 6.13.7, 6.18.35, 6.19.9, 7.0.0 and 7.1.5 sources): mkyoung returns void from 6.13;
    PX/UX and the 2-bit XN field from 6.19; KVM_PGTABLE_S2_AS_S1 from 7.0; typed annotations
    (annotate, the typed locked marker) from 7.1. The statements judge by these, so a gate one
    release off refutes every tree in between."""
    from ptspec import spec
    from ptspec.spec.arch import descriptor as D
    from ptspec.spec.stage2 import contracts_attr as CA
    from ptspec.spec.stage2 import mainline as ML
    from test_spec_builder import S2, leaf, step, ids
    assert CA.MKYOUNG_VOID_SINCE == (6, 13, 0)
    assert D.PX_UX_SINCE == (6, 19, 0) and not D.has_px_ux((6, 18, 35)) and D.has_px_ux((6, 19, 0))
    assert D.perms_mask((6, 18, 35)) == D.PERMS and D.perms_mask((6, 19, 0)) == D.PERMS | D.XN_PXN
    assert D.AS_S1_SINCE == (7, 0, 0)
    assert D.ANNOTATE_SINCE == (7, 1, 0) and not D.has_annotate((7, 0, 0))
    assert [since for since, _ in ML.LOCK_MARKERS] == [(6, 2, 0), (7, 1, 0)]
    # C-MKYOUNG: 6.12 returns the old leaf, 6.13 nothing
    pre = S2(field=(3, 1))
    pre.memcache = []
    pre.page(0x4000_0000, 0x8000_0000, af=False)
    post = pre.copy().page(0x4000_0000, 0x8000_0000)
    old = leaf(0x8000_0000, 3, af=False)

    def judge(ret, version):
        a, b = pre.raw(), post.raw()
        a["kernel_version"] = b["kernel_version"] = version
        return ids(spec.check_step(a, step("mkyoung", ret, {"pte": ret}, addr=0x4000_0000), b))
    assert judge(old, "6.12.19") == [] and judge(0, "6.12.19") == ["C-MKYOUNG"]
    assert judge(0, "6.13.0") == [] and judge(old, "6.13.0") == ["C-MKYOUNG"]
    # C-MAP: a prot with UX alone is ignored on 6.18 (bit 6 means nothing) and -EINVAL on 6.19
    empty = S2(field=(3, 1))
    empty.memcache = []
    mapped = empty.copy().page(0x4000_0000, 0x8000_0000)
    R = D.PROT_R | D.PROT_W

    def judge_map(post, ret, version):
        a, b = empty.raw(), post.raw()
        a["kernel_version"] = b["kernel_version"] = version
        return ids(spec.check_step(a, step("map", ret, addr=0x4000_0000, size=0x1000,
                                           phys=0x8000_0000, prot=R | D.PROT_UX, force_pte=False), b))
    assert judge_map(mapped, 0, "6.18.35") == [] and "C-MAP" in judge_map(empty.copy(), -22, "6.18.35")
    assert judge_map(empty.copy(), -22, "6.19.0") == [] and "C-MAP" in judge_map(mapped, 0, "6.19.0")


def test_xnx_icache_finding_is_one_el_leaves_of_6_19_and_7_0_only():
    """The catalogued xnx-icache-executable (the real bug 17f073f78fc4 fixed for 7.1): a C-CMO or
    CMO-POU violation of a map over a leaf executable at one EL (XN 0b01 / 0b11) on 6.19 or 7.0; not
    on 7.1.5 (fixed: the same violation is a refutation there), not for a leaf with XN 0b00 or
    0b10, not for another operation."""
    from ptspec.proofs.kernel import findings as C
    from ptspec.spec.violation import Violation
    from test_spec_builder import leaf
    px_only = leaf(0x8000_0000, 3, x=True) | 0b11 << 53
    both = leaf(0x8000_0000, 3, x=True)
    cmo = lambda d: Violation("C-CMO", f"map: new executable leaf {d:#x} at ipa 0x40000000 level 3 "  # noqa: E731
                                       "has no [\"icache\", ...] covering its output", {"desc": d})
    pou = lambda d: Violation("CMO-POU", f"map: executable leaf at ipa 0x40000000 level 3 ({d:#x}) "  # noqa: E731
                                         "made [...] visible, but at 0x80000000 its I-cache was not "
                                         "invalidated since the host last wrote it", {"desc": d})
    m = {"op": "map", "args": {}, "ret": 0}
    for v, fid in ((cmo(px_only), "xnx-icache-executable"), (pou(px_only), "xnx-icache-executable-pou")):
        for version in ((6, 19, 9), (7, 0, 0)):
            assert C.finding_for(v, m, version).id == fid, (fid, version)
        assert C.finding_for(v, m, (7, 1, 5)) is None and C.finding_for(v, m, (6, 18, 35)) is None
        assert C.finding_for(v, {"op": "unmap", "args": {}, "ret": 0}, (6, 19, 9)) is None
    assert C.finding_for(cmo(both), m, (6, 19, 9)) is None
    assert C.finding_for(cmo(leaf(0x8000_0000, 3, x=True) | 0b01 << 53), m, (7, 0, 0)) is not None


def test_a_summed_up_step_is_catalogued_only_when_every_violation_it_holds_is():
    """A contract keeps 16 findings of a step and sums up the rest ("... and N more"); the
    catalogue judges the summary by the violations it holds: all the same catalogued finding ->
    that finding; one that is not (here a leaf with XN 0b00) -> a refutation."""
    from ptspec.proofs.kernel import findings as C
    from ptspec.spec.stage2.contract_common import MAX_REPORTS, Report
    from ptspec.spec.stage2.step import load_step
    from test_spec_builder import leaf
    m = {"op": "map", "args": {"addr": 0, "size": 0x1000, "phys": 0, "prot": 0, "force_pte": False},
         "ret": 0}

    def summary(descs):
        rep = Report("C-CMO", load_step(m))
        for d in descs:
            rep.add(f"new executable leaf {d:#x} at ipa 0x0 level 3 has no [\"icache\", ...] "
                    "covering its output", {"desc": d})
        out = rep.result()
        assert len(out) == MAX_REPORTS + 1 and "more finding(s)" in str(out[-1])
        return out[-1]
    one_el = leaf(0x8000_0000, 3, x=True) | 0b11 << 53
    both = leaf(0x8000_0000, 3, x=True)
    assert C.finding_for(summary([one_el] * 40), m, (6, 19, 9)).id == "xnx-icache-executable"
    assert C.finding_for(summary([one_el] * 39 + [both]), m, (6, 19, 9)) is None
    # two catalogued findings behind one summary (each is one): catalogued
    import dataclasses
    other = dataclasses.replace(next(f for f in C.FINDINGS if f.id == "xnx-icache-executable"),
                                id="twin", where=lambda v, step: v.where["desc"] == both)
    saved, C.FINDINGS = C.FINDINGS, C.FINDINGS + (other,)
    try:
        assert C.finding_for(summary([one_el] * 39 + [both]), m, (6, 19, 9)).id == "xnx-icache-executable"
        assert C.finding_for(summary([both] * 40), m, (6, 19, 9)).id == "twin"
    finally:
        C.FINDINGS = saved
    assert C.finding_for(summary([one_el] * 40), m, (7, 1, 5)) is None
    # past MAX_DROPPED a summary keeps none of them: not each was judged, so it is no finding
    import ptspec.spec.stage2.contract_common as CC
    many = summary([one_el] * (MAX_REPORTS + CC.MAX_DROPPED + 1))
    assert many.where["dropped"] is None and f"... and {CC.MAX_DROPPED + 1} more" in str(many)
    assert C.finding_for(many, m, (6, 19, 9)) is None
