"""5.14's version rules (before 5.15): the prot enum without software bits (D.known_prot),
set_owner without force_pte (SET_OWNER_PAGES_SINCE), unmap and flush cleaning without mm_ops
(DCACHE_VIA_MM_OPS_SINCE). On hand-built states: a 5.14 state is judged by 5.14's rule exactly (its
behaviour passes, a departure from it fails), a 5.15 state or one without a version by 5.15's.
Until stop 29 these were catalogued findings matched by statement and kind of step, which set
aside any other violation of that statement in such a step (test_kdiff_check shows one)."""

from ptspec import spec
from test_spec_builder import S2, R, W, RW, EINVAL, owner_desc, step, ids

G2, G1 = 0x20_0000, 0x4000_0000
SW0 = 1 << 55
OLD, NEW = "5.14.2", "5.15.0"


def judge(pre, op, post, version, tlb=(), ret=0, **args):
    a, b = pre.raw(), post.raw(tlb=tlb)
    if version:
        a["kernel_version"] = b["kernel_version"] = version
    return spec.check_step(a, step(op, ret, **args), b)


def test_set_owner_annotates_blocks_before_5_15():
    pre = S2()
    block = pre.copy().owner(G1, 2, 1)               # one level-2 annotation over [1G, 1G + 2M)
    pages = pre.copy()
    for i in range(512):
        pages.owner(G1 + i * 0x1000, 3, 1)
    args = dict(addr=G1, size=G2, owner_id=1)
    assert judge(pre, "set_owner", block, OLD, **args) == []
    for version in (NEW, None):
        assert ids(judge(pre, "set_owner", block, version, **args)) == ["C-SET-OWNER"]
        assert judge(pre, "set_owner", pages, version, **args) == []
    # 5.14's rule is the map walker's layout, not "any level": pages where a block fits, a
    # block reaching outside the range, or another owner are violations
    vs = judge(pre, "set_owner", pages, OLD, **args)
    assert ids(vs) == ["C-SET-OWNER"] and "at level 2" in vs[0].message
    wide = pre.copy().owner(G1, 2, 1)
    assert ids(judge(pre, "set_owner", wide, OLD, addr=G1, size=0x1000, owner_id=1)) == ["C-SET-OWNER"]
    assert ids(judge(pre, "set_owner", pre.copy().set(G1, 2, owner_desc(1) << 1), OLD, **args)) \
        == ["C-SET-OWNER"]
    # the unaligned head and tail of a range are pages, its aligned middle a block
    mixed = pre.copy().owner(G1 - 0x1000, 3, 1).owner(G1, 2, 1).owner(G1 + G2, 3, 1)
    assert judge(pre, "set_owner", mixed, OLD, addr=G1 - 0x1000, size=G2 + 0x2000, owner_id=1) == []


def test_software_prot_bits_are_ignored_before_5_15():
    pre = S2()
    plain = pre.copy().page(G1, 0x8000_0000)
    tagged = pre.copy().page(G1, 0x8000_0000, sw=1)
    args = dict(addr=G1, size=0x1000, phys=0x8000_0000, prot=RW | SW0, force_pte=False)
    assert judge(pre, "map", plain, OLD, **args) == []
    assert ids(judge(pre, "map", tagged, OLD, **args)) == ["C-MAP"]
    assert judge(pre, "map", tagged, NEW, **args) == []
    assert ids(judge(pre, "map", plain, NEW, **args)) == ["C-MAP"]
    # relax_perms: 5.15 refuses software bits before the walk; 5.14 relaxes as for R|W|X alone
    ro = S2().page(G1, 0x8000_0000, w=False)
    rw = ro.copy().page(G1, 0x8000_0000)
    tlb = [("tlbi_ipa", G1, 3)]
    assert judge(ro, "relax_perms", rw, OLD, tlb, addr=G1, prot=R | W | SW0) == []
    assert ids(judge(ro, "relax_perms", rw, NEW, tlb, addr=G1, prot=R | W | SW0)) == ["C-RELAX-PERMS"]
    assert judge(ro, "relax_perms", ro.copy(), NEW, ret=EINVAL, addr=G1, prot=R | W | SW0) == []
    vs = judge(ro, "relax_perms", ro.copy().page(G1, 0x8000_0000, x=True), OLD, tlb, addr=G1,
               prot=R | W | SW0)
    assert ids(vs) == ["C-RELAX-PERMS"]         # X was not asked for: 5.14 must not grant it


def test_hyp_map_ignores_software_bits_before_5_15():
    pre = S2(kind="arm64-hyp-s1", ia=48)
    post = pre.copy()
    post.set(G1, 3, 0x8000_0000 | (1 << 54) | (0b01 << 6) | (3 << 8) | (1 << 10) | 0b11)
    from ptspec.spec.hyp.contracts import contract_hyp_map
    st = step("map", addr=G1, size=0x1000, phys=0x8000_0000, prot=RW | SW0)

    def hyp_map(post, version):
        a, b = pre.raw(), post.raw()
        a["kernel_version"] = b["kernel_version"] = version
        return contract_hyp_map(a, st, b)
    tagged = pre.copy().set(G1, 3, post.get(G1, 3) | SW0)
    assert hyp_map(post, OLD) == [] and hyp_map(tagged, NEW) == []
    assert ids(hyp_map(post, NEW)) == ["C-HYP-MAP"] and ids(hyp_map(tagged, OLD)) == ["C-HYP-MAP"]


def test_unmap_and_flush_clean_without_mm_ops_before_5_15():
    pre = S2(cmo=False).block(G1, 2, 0x9000_0000)
    post = pre.copy().set(G1, 2, 0)
    tlb = [("tlbi_ipa", G1, 2)]
    clean = tlb + [("dcache", 0x9000_0000, G2)]
    args = dict(addr=G1, size=0x1000)
    assert judge(pre, "unmap", post, OLD, clean, **args) == []
    assert ids(judge(pre, "unmap", post, OLD, tlb, **args)) == ["C-CMO"]        # the clean is owed
    assert ids(judge(pre, "unmap", post, OLD, clean + [("icache", 0x9000_0000, G2)], **args)) \
        == ["C-CMO"]
    assert judge(pre, "unmap", post, NEW, tlb, **args) == []
    assert ids(judge(pre, "unmap", post, NEW, clean, **args)) == ["C-CMO"]
    fwb = S2(cmo=False, fwb=True).block(G1, 2, 0x9000_0000)
    assert judge(fwb, "unmap", fwb.copy().set(G1, 2, 0), OLD, tlb, **args) == []
    flushed = [("dcache", 0x9000_0000, G2)]
    span = dict(addr=G1, size=G2)
    assert judge(pre, "flush", pre.copy(), OLD, flushed, **span) == []
    assert ids(judge(pre, "flush", pre.copy(), OLD, (), **span)) == ["C-FLUSH"]
    assert judge(pre, "flush", pre.copy(), NEW, (), **span) == []
    assert ids(judge(pre, "flush", pre.copy(), NEW, flushed, **span)) == ["C-FLUSH"]
