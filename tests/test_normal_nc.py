"""KVM_PGTABLE_PROT_NORMAL_NC (Linux 6.9 on) judged end to end: the spec's prot bit 4 and the
MemAttr it asks for, by kernel version; a normal non-cacheable leaf owes no D-cache clean; the
seeded program draws NC prots only for a subject whose enum has the bit (and is byte-identical
to the earlier one otherwise); the trees' enums translated; planted stage2_set_prot_attr bugs
that only this judgement catches. The tree tests skip without a cached tree (CI has none)."""

import hashlib

import pytest

from ptspec import spec
from ptspec.spec.arch import descriptor as D
from ptspec.spec.stage2.cache import CacheJudge
from ptspec.spec.stage2.state import load_state
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.harness import Stage2Harness
from ptspec.proofs.stage2.program import Stage2Program
from test_spec_builder import S2, R, W, X, DEVICE, EINVAL, leaf, step, ids
from kdiff_support import need_tree
from program_support import drawn_args

NC = D.PROT_NORMAL_NC
G1 = 0x4000_0000
V612 = "6.12.19"


def _nc(desc):
    """The leaf with MemAttr normal non-cacheable (0x5, the same with and without FWB)."""
    return desc & ~D.MEMATTR_MASK | 0x5 << D.MEMATTR_SHIFT


def _raw(s2, version=None, tlb=()):
    raw = s2.raw(tlb=tlb)
    if version is not None:
        raw["kernel_version"] = version
    return raw


def _map(pre, post, prot, version, ret=0, tlb=()):
    st = step("map", ret, addr=G1, size=0x1000, phys=0x8000_0000, prot=prot, force_pte=False)
    return spec.check_step(_raw(pre, version), st, _raw(post, version, tlb))


# -- the spec ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fwb", [False, True])
def test_prot_attrs_of_normal_nc(fwb):
    normal = D.prot_attrs(R | W, fwb)
    got = D.prot_attrs(R | W | NC, fwb, normal_nc=True)
    assert got == normal & ~D.MEMATTR_MASK | 0x5 << D.MEMATTR_SHIFT
    assert D.memattr_name(0x5, fwb) == "NORMAL_NC"
    assert not D.is_cacheable(got, fwb) and D.is_cacheable(normal, fwb)
    # refused: with X, and with DEVICE (stage2_set_prot_attr's -EINVAL cases)
    assert D.prot_attrs(R | X | NC, fwb, normal_nc=True) is None
    assert D.prot_attrs(R | DEVICE | NC, fwb, normal_nc=True) is None
    # before 6.9 the bit means nothing: normal memory, X allowed, DEVICE as before
    assert D.prot_attrs(R | W | NC, fwb) == normal
    assert D.prot_attrs(R | X | NC, fwb) == D.prot_attrs(R | X, fwb)
    assert D.prot_attrs(R | DEVICE | NC, fwb) == D.prot_attrs(R | DEVICE, fwb)


def test_normal_nc_since_6_9():
    assert not D.has_normal_nc(None) and not D.has_normal_nc((6, 8, 12))
    assert D.has_normal_nc((6, 9, 0)) and D.has_normal_nc((7, 1, 5))


@pytest.mark.parametrize("fwb", [False, True])
def test_c_map_judges_normal_nc_by_version(fwb):
    pre = S2(fwb=fwb)
    normal = pre.copy().page(G1, 0x8000_0000)
    nc = pre.copy().set(G1, 3, _nc(leaf(0x8000_0000, 3, fwb=fwb)))
    # 6.12: NC memory type, refusals with X and DEVICE
    assert _map(pre, nc, R | W | NC, V612) == []
    vs = _map(pre, normal, R | W | NC, V612)
    assert ids(vs) == ["C-MAP"] and "should be" in str(vs[0])
    assert _map(pre, pre.copy(), R | X | NC, V612, ret=EINVAL) == []
    assert ids(_map(pre, pre.copy().page(G1, 0x8000_0000, x=True), R | W | X | NC, V612)) == ["C-MAP"]
    assert _map(pre, pre.copy(), R | DEVICE | NC, V612, ret=EINVAL) == []
    assert ids(_map(pre, pre.copy().page(G1, 0x8000_0000, device=True, w=False), R | DEVICE | NC,
                    V612)) == ["C-MAP"]
    # 6.6 and the 5.x spec (no version): the bit is ignored, the leaf is normal memory
    for version in ("6.6.63", None):
        assert _map(pre, normal, R | W | NC, version) == []
        assert ids(_map(pre, nc, R | W | NC, version)) == ["C-MAP"]
        assert ids(_map(pre, pre.copy(), R | X | NC, version, ret=EINVAL)) == ["C-MAP"]


def test_a_normal_nc_leaf_owes_no_d_cache_clean():
    """C-CMO and CMO-POC classify MemAttr 0x5 as not cacheable: a new NC leaf needs no dcache
    event; the same map to normal memory without one is refuted by both."""
    pre = S2(cmo=True)
    nc = pre.copy().set(G1, 3, _nc(leaf(0x8000_0000, 3)))
    assert _map(pre, nc, R | W | NC, V612) == []
    normal = pre.copy().page(G1, 0x8000_0000)
    assert ids(_map(pre, normal, R | W, V612)) == ["C-CMO"]
    assert _map(pre, normal, R | W, V612, tlb=[("dcache", 0x8000_0000, 0x1000)]) == []
    st = step("map", 0, addr=G1, size=0x1000, phys=0x8000_0000, prot=R | W, force_pte=False)
    for post, want in ((nc, []), (normal, ["CMO-POC"])):
        judge = CacheJudge()
        got = judge.check(load_state(_raw(pre, V612)), st, load_state(_raw(post, V612)))
        assert ids(got) == want


def test_flush_of_a_normal_nc_leaf_cleans_nothing():
    """C-FLUSH judges the flush's events exactly: none for an NC leaf, one for a normal leaf."""
    nc = S2(cmo=True).set(G1, 3, _nc(leaf(0x8000_0000, 3)))
    normal = S2(cmo=True).page(G1, 0x8000_0000)
    st = step("flush", 0, addr=G1, size=0x1000)
    ev = [("dcache", 0x8000_0000, 0x1000)]

    def judge(s2, tlb):
        return ids(spec.check_step(_raw(s2, V612), st, _raw(s2, V612, tlb)))
    assert judge(nc, []) == [] and judge(normal, ev) == []
    assert judge(nc, ev) == ["C-FLUSH"] and judge(normal, []) == ["C-FLUSH"]


# -- the generator ------------------------------------------------------------------------------

# sha256 (first 16 hex digits) of the programs of seeds 0..19, 300 entries each, per geometry, as
# generated before NORMAL_NC existed (recorded at 09a7922): impl's and older trees' programs
DIGESTS = {"16k-47": "4333833235817da4", "4k-34": "13c57a02e1c9f8f1", "4k-39": "a2d5fd0e9db3cc0d",
           "4k-48": "0479ba452b37fec0", "64k-44": "0e89d766619f69c3"}


def _program_digest(name, **kw):
    ps, ia, _ = lockstep.GEOMETRIES[name]
    h = hashlib.sha256()
    for seed in range(20):
        prog = Stage2Program(S.geometry(ps, ia), **kw)
        ch = S.RandomChooser(seed)
        for i in range(300):
            e = prog.next(ch)
            h.update(repr(e).encode())
            prog.returned(e, 0 if i % 3 else -22)
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_program_without_normal_nc_is_the_recorded_one(name):
    assert _program_digest(name) == DIGESTS[name]
    assert _program_digest(name, normal_nc=False) == DIGESTS[name]
    assert _program_digest(name, normal_nc=True) != DIGESTS[name]


def _prots(harness_factory, n=2000):
    return [a["prot"] for a in drawn_args(harness_factory, n).get("map", [])]


def test_nc_prots_only_for_a_subject_that_has_them():
    class WithNC(Stage2Harness):
        @classmethod
        def program_normal_nc(cls):
            return True

    class WithoutNC(Stage2Harness):
        @classmethod
        def program_normal_nc(cls):
            return False

    assert not any(p & NC for p in _prots(Stage2Harness))        # impl: no hook
    assert not any(p & NC for p in _prots(WithoutNC))
    with_nc = _prots(WithNC)
    assert _prots(WithoutNC) == _prots(Stage2Harness)
    # valid NC maps and both refused combinations, re-maps with X flipped included
    assert {p & ~D.PROT_SW for p in with_nc if p & NC} >= {R | NC, R | W | NC, R | X | NC,
                                                           R | DEVICE | NC, R | W | X | NC}
    assert all(p & ~(R | W | X | DEVICE | NC | D.PROT_SW) == 0 for p in with_nc)


# -- the trees ----------------------------------------------------------------------------------

def test_the_trees_enums_and_the_program_capability():
    from ptspec.proofs.kernel import subject
    t612 = need_tree("6.12")
    ml = t612.shape.mainline
    assert ml.normal_nc == 0x10 and ml.identity_prot()
    assert ml.prot_to_tree(R | W | NC | 1 << 55) == R | W | NC | 1 << 55
    assert subject.subject_factory(t612).program_normal_nc()
    t71 = need_tree("7.1")
    ml = t71.shape.mainline
    assert ml.normal_nc == 0x20 and not ml.identity_prot()
    assert ml.prot_to_tree(R | W | NC) == 0x8 | 0x4 | 0x20
    assert "NORMAL_NC prot 0x20" in ml.describe()
    assert subject.subject_factory(t71).program_normal_nc()
    from dataclasses import replace
    with pytest.raises(ValueError, match="does not name or this tree's lacks"):
        replace(ml, normal_nc=None).prot_to_tree(R | NC)


def test_6_6_has_no_normal_nc():
    from ptspec.proofs.kernel import subject
    tree = need_tree("6.6")
    assert tree.shape.mainline.normal_nc is None
    assert not subject.subject_factory(tree).program_normal_nc()


@pytest.mark.parametrize("prefix", ["6.12", "7.1"])
def test_nc_map_on_the_tree_is_judged_clean(prefix):
    from ptspec.proofs.kernel import subject
    tree = need_tree(prefix)
    h = subject.subject_factory(tree)(12, 39, arena_pages=512, cmo=True)
    assert h.step("map", addr=0x200000, size=0x200000, phys=0x4000200000, prot=R | W | NC) == (0, [])
    desc = h.pgt.get_leaf(0x200000)[1]
    assert (desc & D.MEMATTR_MASK) >> D.MEMATTR_SHIFT == 0x5 and desc & D.XN
    assert not any(ev[0] == "dcache" for ev in h._last_raw["tlb_log"])
    assert h.step("map", addr=0x400000, size=0x1000, phys=0x4000400000, prot=R | X | NC) == (-22, [])
    assert h.step("map", addr=0x400000, size=0x1000, phys=0x4000400000,
                  prot=R | DEVICE | NC) == (-22, [])
    assert h.findings == {}


def test_planted_nc_bug_is_caught_only_by_the_new_judgement(tmp_path, monkeypatch):
    """nc-as-normal (NORMAL_NC given the normal cacheable MemAttr) on a scratch 6.12 tree: the
    lock-step refutes it with C-MAP; a generator that draws no NC prot, or a spec that does not
    know NORMAL_NC, does not."""
    from ptspec.proofs.kernel import check
    from ptspec.proofs.kernel import planted_mainline as PM
    from ptspec.proofs.kernel import subject
    from ptspec.proofs.runner import budgets
    rv = PM.BY_ID["nc-as-normal"]
    scratch = PM.scratch_tree(rv, need_tree("6.12"), tmp_path / "t")
    quick = budgets.budget("quick")
    r = check.check_geometry(scratch, "4k-39", quick, 0)
    assert r.status == "refuted" and r.detail.startswith("4k-39: C-MAP"), r.detail

    class Blind(subject.subject_factory(scratch)):
        @classmethod
        def program_normal_nc(cls):
            return False
    r = check.check_geometry(scratch, "4k-39", quick, 0, harness=Blind)
    assert r.status == "passed", r.detail
    # the spec without NORMAL_NC passes the planted tree and refutes the real one
    monkeypatch.setattr(D, "NORMAL_NC_SINCE", (99, 0, 0))
    got, _ = PM.run_sequence(rv, scratch)
    assert got == []
    got, _ = PM.run_sequence(rv, need_tree("6.12"))
    assert ids(got) == ["C-MAP"]


@pytest.mark.parametrize("prefix,prot", [("6.12", R | NC), ("7.1", R | NC), ("6.12", R | W | DEVICE)])
def test_split_block_then_exec_is_the_catalogued_memtype_pou(prefix, prot):
    """A non-cacheable (or device) block split into normal cacheable pages (split-drops-memtype),
    then relax_perms granting X to one of them: the I-cache is invalidated, but the D-cache of
    that memory was never cleaned (none was owed for the block): split-drops-memtype-pou, named
    by CMO-POU's message. A normal block split and made executable is clean."""
    from ptspec.proofs.kernel import subject
    h = subject.subject_factory(need_tree(prefix))(12, 39, arena_pages=512, cmo=True)
    assert h.step("map", addr=0x40200000, size=0x200000, phys=0x140200000, prot=prot) == (0, [])
    assert h.step("split", addr=0x401ff000, size=0x2000) == (0, [])
    assert h.step("relax_perms", addr=0x40300fff, prot=R | X) == (0, [])
    assert h.findings == {"split-drops-memtype": 1, "split-drops-memtype-cmo": 1,
                          "split-drops-memtype-pou": 1}
    assert h.step("map", addr=0x40400000, size=0x200000, phys=0x140400000, prot=R) == (0, [])
    assert h.step("split", addr=0x40400000, size=0x1000) == (0, [])
    assert h.step("relax_perms", addr=0x40500000, prot=R | X) == (0, [])
    assert h.findings["split-drops-memtype-pou"] == 1          # unchanged


def test_cmo_pou_names_a_d_cache_never_cleaned():
    """CMO-POU's message says which half of the maintenance is missing: the D-cache clean (an
    I-cache invalidation counts only after it), or the I-cache invalidation after a clean; the
    catalogue tells split-drops-memtype-pou by the first."""
    from ptspec.proofs.kernel import findings
    pre = S2(cmo=True)
    post = pre.copy().page(G1, 0x8000_0000, x=True)
    st = step("map", 0, addr=G1, size=0x1000, phys=0x8000_0000, prot=R | W | X, force_pte=False)
    icache = [("icache", 0x8000_0000, 0x1000)]
    dcache = [("dcache", 0x8000_0000, 0x1000)]
    seen = []
    for tlb, text in ((icache, "its D-cache was not cleaned"),
                      (dcache, "its I-cache was not invalidated after its D-cache was cleaned"),
                      (icache + dcache, "its I-cache was not invalidated after its D-cache")):
        got = [v for v in CacheJudge().check(load_state(_raw(pre)), st,
                                             load_state(_raw(post, tlb=tlb))) if v.inv == "CMO-POU"]
        assert len(got) == 1 and text in got[0].message, (tlb, got)
        seen.append(got[0])
    assert CacheJudge().check(load_state(_raw(pre)), st,
                              load_state(_raw(post, tlb=dcache + icache))) == []
    relax = {"op": "relax_perms", "ret": 0, "args": {}}
    assert findings.finding_for(seen[0], relax, (6, 12, 19)).id == "split-drops-memtype-pou"
    assert findings.finding_for(seen[0], relax, (6, 1, 176)) is None       # before split (6.5)
    assert findings.finding_for(seen[0], dict(relax, op="map"), (6, 12, 19)) is None
    assert findings.finding_for(seen[1], relax, (6, 12, 19)) is None       # the I-cache half
    assert findings.finding_for(seen[2], relax, (6, 12, 19)) is None


# -- found on the way: the 7.1.5 lock-step's new draws reached it (not NC-specific) --------------

@pytest.mark.parametrize("prefix", ["6.6", "6.12", "7.1"])
def test_unaligned_unmap_deferred_tlbi_is_the_catalogued_short_range(prefix):
    """With FWB and range TLBI the deferred invalidation covers size >> PAGE_SHIFT pages: an
    unmap of [0x3ff000, +0x1001) removes the 2M block at 0x400000 and invalidates only the page
    at 0x3ff000 (S2-BBM; unmap-deferred-tlbi-short). The same unmap with a page-multiple size
    invalidates the block and is clean."""
    from ptspec.proofs.kernel import subject
    make = subject.subject_factory(need_tree(prefix))
    h = make(12, 48, arena_pages=512, fwb=True, cmo=True)
    assert h.step("map", addr=0x200000, size=0x400000, phys=0x100200000, prot=R | X) == (0, [])
    assert h.step("unmap", addr=0x3ff000, size=0x1001) == (0, [])
    assert h.findings == {"unmap-deferred-tlbi-short": 1}
    assert ("tlbi_range", 0x3ff000, 0x1000) in h._last_raw["tlb_log"]
    h = make(12, 48, arena_pages=512, fwb=True, cmo=True)
    assert h.step("map", addr=0x200000, size=0x400000, phys=0x100200000, prot=R | X) == (0, [])
    assert h.step("unmap", addr=0x3ff000, size=0x2000) == (0, [])
    assert h.findings == {}
    # without FWB nothing is deferred: every removed leaf is invalidated at once
    h = make(12, 48, arena_pages=512, fwb=False, cmo=True)
    assert h.step("map", addr=0x200000, size=0x400000, phys=0x100200000, prot=R | X) == (0, [])
    assert h.step("unmap", addr=0x3ff000, size=0x1001) == (0, [])
    assert h.findings == {}


def test_the_short_range_finding_covers_only_leaves_past_the_invalidated_range():
    """unmap-deferred-tlbi-short sets aside an S2-BBM violation of an unaligned unmap only where
    the range TLBI cannot reach (at or after addr + (size >> PAGE_SHIFT pages)); a stale leaf
    inside the invalidated pages is another bug and stays a violation."""
    from ptspec.proofs.kernel import findings
    from ptspec.spec.violation import Violation
    step = {"op": "unmap", "ret": 0, "args": {"addr": 0x3ff000, "size": 0x1001}, "page_shift": 12}

    def bbm(changed_at):
        return Violation("S2-BBM", f"unmap: valid 2M leaf changed at {changed_at:#x} (now invalid "
                                   "(0x0)) with no tlbi", {"changed_at": changed_at})
    f = findings.finding_for(bbm(0x400000), step, (6, 12, 19))
    assert f is not None and f.id == "unmap-deferred-tlbi-short"
    assert findings.finding_for(bbm(0x3ff000), step, (6, 12, 19)) is None
    assert findings.finding_for(bbm(0x400000), step, (6, 1, 0)) is None     # before 6.6
    assert findings.finding_for(bbm(0x400000), dict(step, args={"addr": 0x3ff000,
                                                                  "size": 0x2000}),
                                 (6, 12, 19)) is None                         # page multiple
