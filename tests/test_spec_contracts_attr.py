"""Contracts of unmap, wrprotect, mkyoung, mkold, is_young, relax_perms, flush, get_leaf, and C-CMO."""

from ptspec import spec
from test_spec_builder import S2, R, X, RW, RWX, EINVAL, ERANGE, leaf, owner_desc, step, ids

G1, G2 = 0x4000_0000, 0x20_0000
AF = 1 << 10


def run(pre, op, post, tlb=(), ret=0, out=None, **args):
    return spec.check_step(pre.raw(), step(op, ret, out, **args), post.raw(tlb=tlb))


def mapped(**kw):
    b = S2(**kw)
    for i in range(4):
        b.page(G1 + i * 0x1000, 0x8000_0000 + i * 0x1000)
    b.owner(G1 + 0x8000, 3, 1)
    b.block(G1 + G2, 2, 0x9000_0000)
    b.page(G1 + 2 * G2, 0xA000_0000, device=True)
    return b


# -- unmap -----------------------------------------------------------------------------------------

def test_unmap_pages():
    pre = mapped()
    post = pre.copy().set(G1 + 0x1000, 3, 0).set(G1 + 0x2000, 3, 0)
    tlb = [("tlbi_ipa", G1 + 0x1000, 3), ("tlbi_ipa", G1 + 0x2000, 3)]
    assert run(pre, "unmap", post, tlb, addr=G1 + 0x1000, size=0x2000) == []


def test_unmap_removes_whole_block_and_annotations():
    pre = mapped()
    post = pre.copy().set(G1 + G2, 2, 0)
    # a range that only touches the middle of the block removes all of it
    assert run(pre, "unmap", post, [("tlbi_ipa", G1 + G2 + 0x5000, 2)], addr=G1 + G2 + 0x5000, size=0x1000) == []
    post = pre.copy().set(G1 + 0x8000, 3, 0)
    assert run(pre, "unmap", post, addr=G1 + 0x8000, size=0x1000) == []
    # the owner-unmap bug: an annotation left behind
    vs = run(pre, "unmap", pre.copy(), addr=G1 + 0x8000, size=0x1000)
    assert ids(vs) == ["C-UNMAP"] and "invalid 0x100000000000000" in vs[0].message


def test_unmap_left_a_page_or_removed_too_much():
    pre = mapped()
    post = pre.copy().set(G1 + 0x1000, 3, 0)
    vs = run(pre, "unmap", post, [("tlbi_ipa", G1 + 0x1000, 3)], addr=G1 + 0x1000, size=0x2000)
    assert ids(vs) == ["C-UNMAP"] and "0x40002000" in vs[0].message
    post = pre.copy().set(G1 + 0x1000, 3, 0).set(G1 + 0x3000, 3, 0)
    vs = run(pre, "unmap", post, [("tlbi_vmid",)], addr=G1 + 0x1000, size=0x1000)
    assert ids(vs) == ["C-UNMAP"] and "outside the leaves" in vs[0].message


def test_unmap_walk_align_bug_shape():
    # a walk that started mid-entry and skipped later entries leaves the second block mapped
    pre = S2().block(G1, 2, 0x9000_0000).block(G1 + G2, 2, 0x9020_0000)
    post = pre.copy().set(G1, 2, 0)
    vs = run(pre, "unmap", post, [("tlbi_vmid",)], addr=G1 + 0x1000, size=G2)
    assert ids(vs) == ["C-UNMAP"]
    post.set(G1 + G2, 2, 0)
    assert run(pre, "unmap", post, [("tlbi_vmid",)], addr=G1 + 0x1000, size=G2) == []


def test_unmap_errors():
    pre = mapped()
    assert run(pre, "unmap", pre.copy(), ret=ERANGE, addr=1 << 40, size=0x1000) == []
    assert ids(run(pre, "unmap", pre.copy(), ret=0, addr=1 << 40, size=0x1000)) == ["C-UNMAP"]
    gone = S2(init=False)
    assert run(gone, "unmap", gone.copy(), ret=EINVAL, addr=0, size=0x1000) == []


# -- wrprotect -------------------------------------------------------------------------------------

def test_wrprotect():
    pre = mapped()
    post = pre.copy()
    for i in range(4):
        post.page(G1 + i * 0x1000, 0x8000_0000 + i * 0x1000, w=False)
    post.block(G1 + G2, 2, 0x9000_0000, w=False)
    assert run(pre, "wrprotect", post, addr=G1, size=2 * G2) == []
    # missed the block
    post2 = post.copy().block(G1 + G2, 2, 0x9000_0000)
    assert ids(run(pre, "wrprotect", post2, addr=G1, size=2 * G2)) == ["C-WRPROTECT"]
    # cleared something else too
    post3 = post.copy().page(G1, 0x8000_0000, w=False, r=False)
    assert ids(run(pre, "wrprotect", post3, addr=G1, size=2 * G2)) == ["C-WRPROTECT", "S2-BBM"]
    # touched a leaf outside the range
    post4 = post.copy().page(G1 + 2 * G2, 0xA000_0000, device=True, w=False)
    assert ids(run(pre, "wrprotect", post4, addr=G1, size=2 * G2)) == ["C-WRPROTECT"]


# -- mkyoung / mkold / is_young --------------------------------------------------------------------

def test_mkyoung():
    pre = S2().page(G1, 0x8000_0000, af=False)
    old = leaf(0x8000_0000, 3, af=False)
    post = pre.copy().page(G1, 0x8000_0000)
    assert run(pre, "mkyoung", post, ret=old, out={"pte": old}, addr=G1 + 0x123) == []
    vs = run(pre, "mkyoung", post, ret=0, out={"pte": old}, addr=G1)
    assert ids(vs) == ["C-MKYOUNG"] and "expected the old leaf descriptor" in vs[0].message
    post2 = pre.copy().page(G1, 0x8000_0000, x=True)
    assert "C-MKYOUNG" in ids(run(pre, "mkyoung", post2, ret=old, out={"pte": old}, addr=G1))
    # no valid leaf / out of range: 0 and no change
    assert run(pre, "mkyoung", pre.copy(), ret=0, out={"pte": 0}, addr=G1 + 0x1000) == []
    assert run(pre, "mkyoung", pre.copy(), ret=0, out={"pte": 0}, addr=1 << 40) == []
    vs = run(pre, "mkyoung", post, ret=0, out={"pte": 0}, addr=1 << 40)
    assert "C-MKYOUNG" in ids(vs)


def test_mkold_and_is_young():
    pre = mapped()
    cur = leaf(0x8000_0000, 3)
    post = pre.copy().page(G1, 0x8000_0000, af=False)
    assert run(pre, "mkold", post, ret=cur, out={"pte": cur}, addr=G1) == []
    assert ids(run(pre, "mkold", pre.copy(), ret=cur, out={"pte": cur}, addr=G1)) == ["C-MKOLD"]
    assert run(pre, "is_young", pre.copy(), ret=1, out={"young": True}, addr=G1) == []
    assert run(post, "is_young", post.copy(), ret=0, out={"young": False}, addr=G1) == []
    assert ids(run(pre, "is_young", pre.copy(), ret=0, out={"young": False}, addr=G1)) == ["C-IS-YOUNG"]
    assert ids(run(pre, "is_young", post, ret=1, out={"young": True}, addr=G1)) == ["C-IS-YOUNG", "S2-BBM"]


# -- relax_perms -----------------------------------------------------------------------------------

def test_relax_perms():
    pre = S2().page(G1, 0x8000_0000, w=False)
    post = pre.copy().page(G1, 0x8000_0000, w=False, x=True)
    tlb = [("tlbi_ipa", G1 + 0x10, 3)]
    assert run(pre, "relax_perms", post, tlb, addr=G1 + 0x10, prot=R | X) == []
    vs = run(pre, "relax_perms", post, addr=G1 + 0x10, prot=R | X)
    assert "C-RELAX-PERMS" in ids(vs) and any('["tlbi_ipa", 0x40000010, 3]' in v.message for v in vs)
    # removed a permission
    post2 = pre.copy().page(G1, 0x8000_0000, w=False, r=False, x=True)
    assert ids(run(pre, "relax_perms", post2, tlb, addr=G1 + 0x10, prot=X)) == ["C-RELAX-PERMS"]
    # software bits are refused
    assert run(pre, "relax_perms", pre.copy(), ret=EINVAL, addr=G1, prot=R | (1 << 56)) == []
    # no valid leaf: the kernel still invalidates, with level 0
    assert run(pre, "relax_perms", pre.copy(), [("tlbi_ipa", G1 + 0x1000, 0)], addr=G1 + 0x1000, prot=R) == []


# -- flush -----------------------------------------------------------------------------------------

def test_flush():
    pre = mapped(cmo=True)
    tlb = [("dcache", 0x8000_0000 + i * 0x1000, 0x1000) for i in range(4)] + [("dcache", 0x9000_0000, G2)]
    assert run(pre, "flush", pre.copy(), tlb, addr=G1, size=3 * G2) == []
    vs = run(pre, "flush", pre.copy(), tlb[1:], addr=G1, size=3 * G2)
    assert ids(vs) == ["C-FLUSH"] and '"dcache", 0x80000000, 0x1000' in vs[0].message
    vs = run(pre, "flush", pre.copy(), tlb + [("dcache", 0xA000_0000, 0x1000)], addr=G1, size=3 * G2)
    assert ids(vs) == ["C-FLUSH"] and "unexpected event" in vs[0].message
    assert ids(run(pre, "flush", pre.copy().set(G1, 3, 0), tlb, addr=G1, size=3 * G2)) == ["C-FLUSH", "S2-BBM"]
    fwb = mapped(cmo=True, fwb=True)
    assert run(fwb, "flush", fwb.copy(), addr=G1, size=3 * G2) == []
    assert run(fwb, "flush", fwb.copy(), addr=1 << 40, size=0x1000) == []      # FWB returns 0 at once
    nocmo = mapped()
    assert run(nocmo, "flush", nocmo.copy(), addr=G1, size=3 * G2) == []
    assert run(nocmo, "flush", nocmo.copy(), ret=ERANGE, addr=1 << 40, size=0x1000) == []


# -- get_leaf --------------------------------------------------------------------------------------

def test_get_leaf():
    pre = mapped()
    d = leaf(0x8000_1000, 3)
    assert run(pre, "get_leaf", pre.copy(), out={"pte": d, "level": 3}, addr=G1 + 0x1234) == []
    assert run(pre, "get_leaf", pre.copy(), out={"pte": owner_desc(1), "level": 3}, addr=G1 + 0x8000) == []
    assert run(pre, "get_leaf", pre.copy(), out={"pte": 0, "level": 1}, addr=0x80_0000_0000) == []
    blk = leaf(0x9000_0000, 2)
    assert run(pre, "get_leaf", pre.copy(), out={"pte": blk, "level": 2}, addr=G1 + G2 + 0x5000) == []
    vs = run(pre, "get_leaf", pre.copy(), out={"pte": blk, "level": 3}, addr=G1 + G2)
    assert ids(vs) == ["C-GET-LEAF"] and "level 2" in vs[0].message
    assert run(pre, "get_leaf", pre.copy(), ret=ERANGE, addr=1 << 40) == []
    assert ids(run(pre, "get_leaf", pre.copy().set(G1, 3, 0), out={"pte": d, "level": 3}, addr=G1 + 0x1000,
                   tlb=[("tlbi_vmid",)])) == ["C-GET-LEAF"]


# -- C-CMO -----------------------------------------------------------------------------------------

def mp(pre, post, tlb, addr, size, phys, prot=RW):
    return run(pre, "map", post, tlb, addr=addr, size=size, phys=phys, prot=prot, force_pte=False)


def test_cmo_map_needs_dcache_and_icache():
    pre = S2(cmo=True)
    post = pre.copy().page(G1, 0x8000_0000, x=True)
    both = [("dcache", 0x8000_0000, 0x1000), ("icache", 0x8000_0000, 0x1000)]
    assert mp(pre, post, both, G1, 0x1000, 0x8000_0000, RWX) == []
    vs = mp(pre, post, both[:1], G1, 0x1000, 0x8000_0000, RWX)
    assert ids(vs) == ["C-CMO"] and "new executable leaf" in vs[0].message
    vs = mp(pre, post, both[1:], G1, 0x1000, 0x8000_0000, RWX)
    assert ids(vs) == ["C-CMO"] and "new cacheable leaf" in vs[0].message
    # a block: one CMO covering it, or several that together do
    post = pre.copy().block(G1, 2, 0x8000_0000)
    assert mp(pre, post, [("dcache", 0x8000_0000, G2)], G1, G2, 0x8000_0000) == []
    halves = [("dcache", 0x8000_0000, G2 // 2), ("dcache", 0x8000_0000 + G2 // 2, G2 // 2)]
    assert mp(pre, post, halves, G1, G2, 0x8000_0000) == []
    assert ids(mp(pre, post, halves[:1], G1, G2, 0x8000_0000)) == ["C-CMO"]


def test_cmo_device_and_fwb():
    pre = S2(cmo=True)
    post = pre.copy().page(G1, 0x8000_0000, device=True)
    assert mp(pre, post, [], G1, 0x1000, 0x8000_0000, RW | 8) == []
    pre = S2(cmo=True, fwb=True)
    post = pre.copy().page(G1, 0x8000_0000)
    assert ids(mp(pre, post, [], G1, 0x1000, 0x8000_0000)) == ["C-CMO"]
    assert mp(pre, post, [("dcache", 0x8000_0000, 0x1000)], G1, 0x1000, 0x8000_0000) == []


def test_cmo_off_means_no_cache_events():
    pre = S2()
    post = pre.copy().page(G1, 0x8000_0000)
    assert mp(pre, post, [], G1, 0x1000, 0x8000_0000) == []
    vs = mp(pre, post, [("dcache", 0x8000_0000, 0x1000)], G1, 0x1000, 0x8000_0000)
    assert ids(vs) == ["C-CMO"] and "cmo false" in vs[0].message


def test_cmo_unmap_and_relax_perms():
    pre = S2(cmo=True).block(G1, 2, 0x9000_0000)
    post = pre.copy().set(G1, 2, 0)
    tlb = [("tlbi_ipa", G1, 2)]
    assert ids(run(pre, "unmap", post, tlb, addr=G1, size=0x1000)) == ["C-CMO"]
    assert run(pre, "unmap", post, tlb + [("dcache", 0x9000_0000, G2)], addr=G1, size=0x1000) == []
    fwb = S2(cmo=True, fwb=True).block(G1, 2, 0x9000_0000)
    assert run(fwb, "unmap", fwb.copy().set(G1, 2, 0), tlb, addr=G1, size=0x1000) == []
    post = pre.copy().block(G1, 2, 0x9000_0000, x=True)
    tlb = [("tlbi_ipa", G1, 2)]
    assert ids(run(pre, "relax_perms", post, tlb, addr=G1, prot=X)) == ["C-CMO"]
    assert run(pre, "relax_perms", post, tlb + [("icache", 0x9000_0000, G2)], addr=G1, prot=X) == []
