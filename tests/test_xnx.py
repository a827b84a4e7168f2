"""FEAT_XNX on 7.1: with the CPU feature (a state's has_xnx, the shim's ARM64_HAS_XNX answered from
the table option ``xnx``, 4k-40), stage2_set_xn_attr maps PX alone and UX alone as the 2-bit XN
values 0b11 and 0b01. The spec's encoding and executability by EL, C-MAP / C-RELAX-PERMS / C-CMO
with and without it, the option on the C tables (dropped where pgtable.c never reads the
capability), and a planted exchange of the two values that only an XNX table catches. Tree tests
skip without a cached tree."""

import pytest

from ptspec import spec
from ptspec.spec.arch import descriptor as D
from ptspec.spec.stage2.state import StateError, load_state
from test_spec_builder import S2, R, W, X, DEVICE, EINVAL, leaf, step, ids
from kdiff_support import need_default_tree, need_tree

PX, UX, NC = D.PROT_PX, D.PROT_UX, D.PROT_NORMAL_NC
G1, OA = 0x4000_0000, 0x8000_0000
V71 = "7.1.5"
XN_UX, XN_NONE, XN_PX = D.XN_PXN, D.XN, D.XN_FIELD          # 0b01, 0b10, 0b11 in bits 54:53


def _raw(s2, version=V71, xnx=True, tlb=()):
    raw = s2.raw(tlb=tlb)
    raw["kernel_version"] = version
    if xnx:
        raw["has_xnx"] = True
    return raw


def _check(pre, op, post, ret=0, tlb=(), version=V71, xnx=True, **args):
    return spec.check_step(_raw(pre, version, xnx), step(op, ret, **args),
                           _raw(post, version, xnx, tlb))


def _with_xn(s2, xn, **kw):
    """s2 with a page at G1 -> OA whose XN field is ``xn`` (bits 54:53)."""
    return s2.copy().set(G1, 3, leaf(OA, 3, x=True, **kw) | xn)


def _map(pre, post, prot, ret=0, tlb=(), **kw):
    return _check(pre, "map", post, ret, tlb, addr=G1, size=0x1000, phys=OA, prot=prot,
                  force_pte=False, **kw)


def test_xn_field_and_executability():
    assert D.xn_field(True, True, True) == 0 and D.xn_field(False, False, True) == D.XN
    assert D.xn_field(False, True, True) == XN_UX and D.xn_field(True, False, True) == XN_PX
    assert D.xn_field(True, False) is None and D.xn_field(False, True) is None
    for xn, levels in ((0, (True, True)), (XN_UX, (False, True)), (XN_NONE, (False, False)),
                       (XN_PX, (True, False))):
        d = leaf(OA, 3, x=True) | xn
        assert D.exec_levels(d, True) == levels
        assert D.is_executable(d, True) == any(levels)
    # without FEAT_XNX bit 53 is RES0: bit 54 alone decides (as before 7.1)
    assert not D.is_executable(leaf(OA, 3) | XN_PX) and D.is_executable(leaf(OA, 3, x=True) | XN_UX)
    assert D.exec_levels(leaf(OA, 3) | XN_PX) == (False, False)
    assert D.perms_mask((6, 12, 19)) == D.PERMS and D.perms_mask((7, 1, 5)) == D.PERMS | D.XN_PXN
    assert D.uses_xnx((7, 1, 5), True) and not D.uses_xnx((6, 12, 19), True)
    assert not D.uses_xnx((7, 1, 5), False)


def test_prot_attrs_with_xnx():
    for fwb in (False, True):
        base = D.prot_attrs(R, fwb, px_ux=True, xnx=True) & ~D.XN_FIELD
        assert D.prot_attrs(R | PX, fwb, px_ux=True, xnx=True) == base | XN_PX
        assert D.prot_attrs(R | UX, fwb, px_ux=True, xnx=True) == base | XN_UX
        assert D.prot_attrs(R | PX | UX, fwb, px_ux=True, xnx=True) == base
        assert D.prot_attrs(R | X, fwb, px_ux=True, xnx=True) == D.prot_attrs(R | X, fwb)
        assert D.prot_attrs(R, fwb, px_ux=True, xnx=True) == D.prot_attrs(R, fwb)
        assert D.prot_attrs(R | DEVICE | UX, fwb, px_ux=True, xnx=True) is None
        assert D.prot_attrs(R | NC | PX, fwb, normal_nc=True, px_ux=True, xnx=True) is None
        # without FEAT_XNX one alone is -EINVAL; before 7.1 (no px_ux) xnx changes nothing
        assert D.prot_attrs(R | PX, fwb, px_ux=True) is None
        assert D.prot_attrs(R | PX, fwb, xnx=True) == D.prot_attrs(R, fwb)


def test_state_has_xnx():
    raw = S2().raw()
    assert load_state(raw).has_xnx is False
    assert load_state(dict(raw, has_xnx=True)).has_xnx is True
    with pytest.raises(StateError, match="has_xnx"):
        load_state(dict(raw, has_xnx="yes"))


def test_c_map_with_xnx():
    pre = S2()
    for prot, xn in ((R | W | PX, XN_PX), (R | W | UX, XN_UX), (R | W | PX | UX, 0)):
        assert _map(pre, _with_xn(pre, xn), prot) == []
    # the values exchanged, or one alone mapped as X or as nothing: C-MAP
    for prot, xn in ((R | W | PX, XN_UX), (R | W | UX, XN_PX), (R | W | PX, 0),
                     (R | W | UX, XN_NONE)):
        vs = _map(pre, _with_xn(pre, xn), prot)
        assert ids(vs) == ["C-MAP"], (hex(prot), hex(xn), vs)
    # -EINVAL is now wrong for one alone; without FEAT_XNX it is what is owed
    assert ids(_map(pre, pre.copy(), R | W | PX, EINVAL)) == ["C-MAP"]
    assert _map(pre, pre.copy(), R | W | PX, EINVAL, xnx=False) == []
    assert ids(_map(pre, _with_xn(pre, XN_PX), R | W | PX, xnx=False)) == ["C-MAP"]
    # before 7.1 the state's has_xnx means nothing: PX is ignored (non-executable normal memory)
    assert _map(pre, pre.copy().page(G1, OA), R | W | PX, version="6.12.19") == []


def test_c_map_keeps_a_leaf_differing_in_the_xn_field_only():
    """A re-map that changes only the 2-bit XN field is a permission change (-EAGAIN case,
    KVM_PTE_LEAF_ATTR_S2_PERMS has bits 54:53 from 7.1)."""
    pre = _with_xn(S2(), XN_UX)
    assert _map(pre, pre.copy(), R | W | PX, ret=-11) == []
    assert _map(pre, pre.copy(), R | W | PX | UX, ret=-11) == []
    # 6.12: bit 53 is no permission bit there, so the same leaf is no longer "the same mapping"
    vs = _map(pre, pre.copy(), R | W | X, ret=-11, version="6.12.19", xnx=False)
    assert ids(vs) == ["C-MAP"]


def test_c_relax_perms_with_xnx():
    nsh = [("tlbi_ipa_nsh", G1, 3)]
    pre = S2().page(G1, OA)                                 # R W, XN 0b10
    for prot, xn in ((R | W | PX, XN_PX), (R | W | UX, XN_UX), (R | W | PX | UX, 0),
                     (R | W, XN_NONE)):
        post = _with_xn(S2(), xn)
        assert _check(pre, "relax_perms", post, 0, nsh, addr=G1, prot=prot) == [], hex(prot)
    vs = _check(pre, "relax_perms", _with_xn(S2(), XN_UX), 0, nsh, addr=G1, prot=R | W | PX)
    assert ids(vs) == ["C-RELAX-PERMS"]
    # from UX alone to PX alone: the field is replaced, not ORed
    pre = _with_xn(S2(), XN_UX)
    assert _check(pre, "relax_perms", _with_xn(S2(), XN_PX), 0, nsh, addr=G1, prot=R | W | PX) == []
    assert ids(_check(pre, "relax_perms", _with_xn(S2(), XN_UX), 0, nsh, addr=G1,
                      prot=R | W | PX)) == ["C-RELAX-PERMS"]
    # without FEAT_XNX one alone is -EINVAL with nothing changed
    assert _check(pre, "relax_perms", pre.copy(), EINVAL, addr=G1, prot=R | PX, xnx=False) == []


def test_c_cmo_owes_an_icache_invalidation_to_a_leaf_executable_at_one_el():
    """UX alone (0b01) and PX alone (0b11) are executable at one EL: a new such leaf, or one made
    so, needs its I-cache invalidated (stage2_pte_executable reads PX | UX); 0b10 does not."""
    pre = S2(cmo=True)
    dc = ("dcache", OA, 0x1000)
    ic = ("icache", OA, 0x1000)
    for prot, xn in ((R | UX, XN_UX), (R | PX, XN_PX)):
        post = _with_xn(pre, xn, w=False)
        assert _map(pre, post, prot, tlb=[dc, ic]) == []
        assert "C-CMO" in ids(_map(pre, post, prot, tlb=[dc])), hex(prot)
    # judged without FEAT_XNX, a 0b11 leaf is bit 54 set: not executable, no I-cache owed
    post = _with_xn(pre, XN_PX, w=False)
    vs = spec.check_step(_raw(pre, xnx=False), step("map", 0, addr=G1, size=0x1000, phys=OA,
                                                    prot=R | PX, force_pte=False),
                         _raw(post, xnx=False, tlb=[dc]))
    assert "C-CMO" not in ids(vs) and "C-MAP" in ids(vs)
    # relax_perms from XN 0b10 to UX alone: "made executable"
    pre = S2(cmo=True).page(G1, OA, w=False)
    post = _with_xn(S2(cmo=True), XN_UX, w=False)
    nsh = ("tlbi_ipa_nsh", G1, 3)
    assert _check(pre, "relax_perms", post, 0, [ic, nsh], addr=G1, prot=R | UX) == []
    assert ids(_check(pre, "relax_perms", post, 0, [nsh], addr=G1, prot=R | UX)) == ["C-CMO"]


def test_cmo_pou_runs_judge_xnx_executability():
    """The CMO ghost's per-segment needs (cache_runs.needs): a cacheable leaf is owed an I-cache
    judgement when it is executable at some EL: with FEAT_XNX 0b11 is, without it bit 54 says no."""
    from ptspec.spec.stage2.cache_runs import needs as _needs
    attr = D.MEMATTR_NORMAL[False] << D.MEMATTR_SHIFT
    d = leaf(OA, 3) | XN_PX                                 # bits 54:53 = 0b11
    assert _needs(0, d, None, OA, True, attr, D.xn_exec_mask(True)) == (True, True)
    assert _needs(0, d, None, OA, True, attr, D.xn_exec_mask(False)) == (True, False)
    assert _needs(0, leaf(OA, 3), None, OA, True, attr, D.xn_exec_mask(True)) == (True, False)


# -- the C tables --------------------------------------------------------------------------------

def test_7_1_with_xnx_maps_one_of_px_and_ux():
    from ptspec.proofs.kernel import subject
    tree = need_tree("7.1")
    assert tree.shape.mainline.xnx
    cls = subject.subject_factory(tree)
    h = cls(12, 39, arena_pages=512, xnx=True)
    assert "xnx=True" in h.make_source and h.raw_state()["has_xnx"] is True
    for prot, xn in ((R | PX, XN_PX), (R | W | UX, XN_UX), (R | PX | UX, 0), (R, XN_NONE)):
        assert h.step("unmap", addr=0x200000, size=0x1000) == (0, [])
        assert h.step("map", addr=0x200000, size=0x1000, phys=0x4000200000, prot=prot) == (0, [])
        assert h.pgt.get_leaf(0x200000)[1] & D.XN_FIELD == xn, hex(prot)
    assert h.step("relax_perms", addr=0x200000, prot=R | UX) == (0, [])
    assert h.pgt.get_leaf(0x200000)[1] & D.XN_FIELD == XN_UX
    assert h.step("relax_perms", addr=0x200000, prot=R | PX) == (0, [])
    assert h.pgt.get_leaf(0x200000)[1] & D.XN_FIELD == XN_PX
    assert h.findings == {}
    # the same library, a table without the option: one alone is -EINVAL again
    h2 = cls(12, 39, arena_pages=512)
    assert "has_xnx" not in h2.raw_state() and "xnx" not in h2.make_source
    assert h2.step("map", addr=0x200000, size=0x1000, phys=0x4000200000, prot=R | PX) == (-22, [])
    assert subject.OPTIONS["4k-40"] == {"xnx": True}


def test_xnx_tables_meet_every_cache_maintenance_regime():
    """On 7.1 the FEAT_XNX option is on three geometries: alone (4k-40), with FWB (4k-48, so no
    D-cache clean is owed and PX/UX-only leaves still owe an I-cache invalidation) and without CMO
    hooks (16k-40): every C engine's table (replay.harness) reports has_xnx with that geometry's
    FWB and CMO; the Debian 6.1 table of the same geometries reports no XNX."""
    from ptspec.proofs.kernel import replay, subject
    tree = need_tree("7.1")
    want = {"4k-40": (False, True), "4k-48": (True, True), "16k-40": (False, False)}
    for name, (fwb, cmo) in want.items():
        raw = replay.harness(tree, geometry_name=name).raw_state()
        assert (raw.get("has_xnx"), raw["has_fwb"], raw["cmo"]) == (True, fwb, cmo), name
    assert {n for n, o in subject.OPTIONS.items() if o.get("xnx")} == set(want)
    raw = replay.harness(need_default_tree(), geometry_name="4k-48").raw_state()
    assert "has_xnx" not in raw and raw["has_fwb"]


def test_xnx_option_is_dropped_where_pgtable_c_never_reads_it():
    from ptspec.proofs.kernel import subject
    tree = need_tree("6.12")
    assert not tree.shape.mainline.xnx
    h = subject.subject_factory(tree)(12, 40, arena_pages=512, xnx=True)
    assert "has_xnx" not in h.raw_state() and "xnx" not in h.make_source
    assert "xnx" not in h.params


def test_planted_px_ux_swap_is_caught_only_with_xnx(tmp_path):
    """xnx-px-ux-swapped (7.1.5 scratch copy): caught by C-MAP with its sequence on an XNX table
    and by the lock-step of 4k-40 (the XNX geometry); the real tree runs the sequence clean, and
    the scratch tree without FEAT_XNX refuses the prot before the encoding (-EINVAL, clean)."""
    from ptspec.proofs.kernel import check
    from ptspec.proofs.kernel import planted_mainline as PM
    from ptspec.proofs.kernel import subject
    from ptspec.proofs.runner import budgets
    rv = PM.BY_ID["xnx-px-ux-swapped"]
    real = need_tree("7.1")
    scratch = PM.scratch_tree(rv, real, tmp_path / "t")
    found, _ = PM.run_sequence(rv, scratch)
    assert ids(found) == ["C-MAP"] and "0x6000400020077f" in str(found[0]), found
    assert PM.run_sequence(rv, real)[0] == []
    h = subject.subject_factory(scratch)(12, 39, arena_pages=512)
    assert h.step(*rv.sequence[0][:1], **rv.sequence[0][1]) == (-22, [])
    r = check.check_geometry(scratch, "4k-40", budgets.budget("quick"), 0)
    assert r.status == "refuted" and "C-MAP" in r.detail, r.detail
    # the counterexample says the table has FEAT_XNX, and its program fails as the run did
    cex = r.counterexample
    assert "xnx=True" in cex["ops"] and "FEAT_XNX" in cex["c_test"] and "FEAT_XNX" in cex["tables"]
    with pytest.raises(AssertionError, match="C-MAP"):
        exec(cex["ops"], {})


def test_ptdump_names_the_el_that_may_execute():
    from ptspec.proofs.stage2.ptdump import render as ptdump
    pre = S2()
    for xn, col in ((0, "RWX"), (XN_UX, "RWU"), (XN_PX, "RWP"), (XN_NONE, "RW-")):
        text = ptdump(_raw(_with_xn(pre, xn)))
        assert f" {col} " in text, (hex(xn), text)
    assert " RW- " in ptdump(_raw(_with_xn(pre, XN_PX), xnx=False))     # bit 54 set: no X
