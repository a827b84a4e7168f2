"""Contracts of init, map, set_owner and destroy: passing cases and planted violations."""

from ptspec import spec
from test_spec_builder import (S2, R, X, RW, DEVICE, EINVAL, ERANGE, ENOMEM, EAGAIN, leaf,
                               owner_desc, step, ids)

G2, G1 = 0x20_0000, 0x4000_0000


def run(pre, op, post, tlb=(), ret=0, out=None, **args):
    return spec.check_step(pre.raw(), step(op, ret, out, **args), post.raw(tlb=tlb))


def mp(pre, post, addr, size, phys, prot=RW, force_pte=False, ret=0, tlb=()):
    return run(pre, "map", post, tlb, ret, addr=addr, size=size, phys=phys, prot=prot, force_pte=force_pte)


def msgs(vs):
    return " | ".join(str(v) for v in vs)


# -- map -------------------------------------------------------------------------------------------

def test_map_one_page():
    pre = S2()
    assert mp(pre, pre.copy().page(G1, 0x8000_0000), G1, 0x1000, 0x8000_0000) == []
    # unaligned addr/size/phys are aligned like the kernel does
    assert mp(pre, pre.copy().page(G1, 0x8000_0000), G1 + 0x10, 0x20, 0x8000_0abc) == []


def test_map_builds_the_largest_block():
    pre = S2()
    assert mp(pre, pre.copy().block(G1, 2, 0x8000_0000), G1, G2, 0x8000_0000) == []
    pages = pre.copy()
    for i in range(512):
        pages.page(G1 + i * 0x1000, 0x8000_0000 + i * 0x1000)
    vs = mp(pre, pages, G1, G2, 0x8000_0000)
    assert ids(vs) == ["C-MAP"] and "a smaller leaf than KVM builds" in vs[0].message
    assert "more finding(s)" in vs[-1].message and len(vs) == 17
    # misaligned output: pages are the largest possible
    assert mp(pre, _pages(pre, G1, 512, 0x8000_1000), G1, G2, 0x8000_1000) == []


def _pages(pre, ipa, n, oa, **kw):
    b = pre.copy()
    for i in range(n):
        b.page(ipa + i * 0x1000, oa + i * 0x1000, **kw)
    return b


def test_map_level1_block_4k_and_mixed_range():
    pre = S2()
    assert mp(pre, pre.copy().block(G1, 1, G1), G1, G1, G1) == []
    # [1G - 4K, 1G + 2M + 4K): a page, then a 2M block, then a page
    post = pre.copy().page(G1 - 0x1000, 0x7FFF_F000).block(G1, 2, 0x8000_0000).page(G1 + G2, 0x8020_0000)
    assert mp(pre, post, G1 - 0x1000, G2 + 0x2000, 0x7FFF_F000) == []
    # the same range with an output not 2M-aligned relative to the input: pages only
    post = _pages(pre, G1 - 0x1000, 514, 0x7FFF_E000)
    assert mp(pre, post, G1 - 0x1000, G2 + 0x2000, 0x7FFF_E000) == []


def test_map_force_pte():
    pre = S2()
    assert mp(pre, _pages(pre, G1, 512, 0x8000_0000), G1, G2, 0x8000_0000, force_pte=True) == []
    vs = mp(pre, pre.copy().block(G1, 2, 0x8000_0000), G1, G2, 0x8000_0000, force_pte=True)
    assert ids(vs) == ["C-MAP"] and "a larger leaf than the range and alignment allow" in vs[0].message


def test_map_left_a_page_unmapped_or_wrong_attributes():
    pre = S2()
    vs = mp(pre, _pages(pre, G1, 2, 0x8000_0000), G1, 0x3000, 0x8000_0000)
    assert ids(vs) == ["C-MAP"] and "[0x40002000, 0x40003000)" in vs[0].message
    vs = mp(pre, _pages(pre, G1, 3, 0x8000_0000, w=False), G1, 0x3000, 0x8000_0000)
    assert ids(vs) == ["C-MAP"]
    vs = mp(pre, _pages(pre, G1, 3, 0x8000_2000), G1, 0x3000, 0x8000_0000)
    assert ids(vs) == ["C-MAP"]


def test_map_attributes_from_prot():
    pre = S2(fwb=True)
    prot = R | DEVICE | (1 << 55) | (1 << 58)
    post = pre.copy().page(G1, 0x8000_0000, w=False, device=True, sw=0b1001)
    assert mp(pre, post, G1, 0x1000, 0x8000_0000, prot=prot) == []
    post = pre.copy().page(G1, 0x8000_0000, x=True)        # FWB normal memory is MemAttr 0x6
    assert mp(pre, post, G1, 0x1000, 0x8000_0000, prot=RW | X) == []
    pre = S2()
    post = pre.copy().page(G1, 0x8000_0000, fwb=True)      # wrong MemAttr for a non-FWB table
    assert ids(mp(pre, post, G1, 0x1000, 0x8000_0000)) == ["C-MAP"]


def test_map_refused_before_the_walk():
    pre = S2().page(G1, 0x8000_0000)
    assert mp(pre, pre.copy(), G1, 0x1000, 0x9000_0000, prot=RW | X | DEVICE, ret=EINVAL) == []
    vs = mp(pre, pre.copy(), G1, 0x1000, 0x9000_0000, prot=RW | X | DEVICE, ret=0)
    assert ids(vs) == ["C-MAP"] and "expected -EINVAL" in vs[0].message
    vs = mp(pre, pre.copy().page(G1 + 0x1000, 0x1000), G1, 0x1000, 0x9000_0000, prot=RX_DEV(), ret=EINVAL)
    assert ids(vs) == ["C-MAP"] and "returned before any walk, yet table" in msgs(vs)
    top = (1 << 40) - 0x1000
    assert mp(pre, pre.copy(), top, 0x2000, 0, ret=ERANGE) == []
    assert ids(mp(pre, pre.copy(), top, 0x2000, 0, ret=0)) == ["C-MAP"]
    assert mp(pre, pre.copy(), top, 0x1000, 0x8000_0000, ret=0, ) != []   # in range: must map
    gone = S2(init=False)
    assert mp(gone, gone.copy(), 0, 0x1000, 0, ret=EINVAL) == []
    assert mp(pre, pre.copy(), G1, 0, 0x8000_0000) == []               # empty range


def RX_DEV():
    return R | X | DEVICE


def test_map_eagain_keeps_same_mapping_but_maps_the_rest():
    pre = S2().page(G1, 0x8000_0000, w=False)
    assert mp(pre, pre.copy(), G1, 0x1000, 0x8000_0000, ret=EAGAIN) == []
    vs = mp(pre, pre.copy(), G1, 0x1000, 0x8000_0000, ret=0)
    assert ids(vs) == ["C-MAP"]
    post = _pages(pre, G1 + 0x1000, 3, 0x8000_1000)
    assert mp(pre, post, G1, 0x4000, 0x8000_0000, ret=EAGAIN) == []
    # the historical eagain-abort bug: the walk stopped at the existing mapping
    vs = mp(pre, pre.copy(), G1, 0x4000, 0x8000_0000, ret=EAGAIN)
    assert ids(vs) == ["C-MAP"] and "[0x40001000, 0x40004000) should be a 4K page" in vs[0].message


def test_map_eagain_needs_a_reason():
    pre = S2()
    vs = mp(pre, pre.copy().page(G1, 0x8000_0000), G1, 0x1000, 0x8000_0000, ret=EAGAIN)
    assert ids(vs) == ["C-MAP"] and "differs only in permissions" in vs[0].message
    # a pre-op leaf that differs in more than permissions is replaced (break-before-make)
    pre = S2().page(G1, 0x8000_0000, af=False)
    assert ids(mp(pre, pre.copy(), G1, 0x1000, 0x8000_0000, ret=EAGAIN)) == ["C-MAP"]
    assert mp(pre, pre.copy().page(G1, 0x8000_0000), G1, 0x1000, 0x8000_0000,
              tlb=[("tlbi_ipa", G1, 3)]) == []


def test_map_split_collateral():
    pre = S2().block(G1, 2, 0x9000_0000).block(G1 + G2, 2, 0x9020_0000)
    post = pre.copy().page(G1 + 0x3000, 0xA000_0000)   # the rest of the block becomes invalid
    args = (G1 + 0x3000, 0x1000, 0xA000_0000)
    assert mp(pre, post, *args, tlb=[("tlbi_ipa", G1 + 0x3000, 2)]) == []
    bad = post.copy().set(G1 + G2, 2, 0)
    vs = mp(pre, bad, *args, tlb=[("tlbi_ipa", G1 + 0x3000, 2), ("tlbi_ipa", G1 + G2, 2)])
    assert ids(vs) == ["C-MAP"] and "outside the mapped range" in vs[0].message


def test_map_enomem_partial():
    pre = S2()
    post = _pages(pre, G1, 2, 0x8000_0000)
    assert mp(pre, post, G1, 0x4000, 0x8000_0000, ret=ENOMEM) == []
    assert ids(mp(pre, _pages(pre, G1, 2, 0x8000_1000), G1, 0x4000, 0x8000_0000, ret=ENOMEM)) == ["C-MAP"]
    # a level-1 block split, then no page for the level-3 table: the block is gone, nothing mapped
    pre = S2().block(G1, 1, 0x1_0000_0000)
    post = pre.copy().set(G1, 2, 0)
    assert mp(pre, post, G1 + 0x5000, 0x1000, 0x8000_0000, ret=ENOMEM, tlb=[("tlbi_ipa", G1 + 0x5000, 1)]) == []
    vs = mp(pre, post, G1 + 0x5000, 0x1000, 0x8000_0000, ret=0, tlb=[("tlbi_ipa", G1 + 0x5000, 1)])
    assert ids(vs) == ["C-MAP"]


def test_map_must_not_touch_anything_else():
    pre = S2().page(0x1000, 0x5000)
    post = pre.copy().page(G1, 0x8000_0000).set(0x1000, 3, 0)
    vs = mp(pre, post, G1, 0x1000, 0x8000_0000, tlb=[("tlbi_ipa", 0x1000, 3)])
    assert ids(vs) == ["C-MAP"] and "[0x1000, 0x2000) lies outside" in vs[0].message


def test_map_16k_and_64k_blocks():
    pre = S2(ps=14, ia=40)
    g2 = 1 << 25
    assert mp(pre, pre.copy().block(g2, 2, 0x4_0000_0000), g2, g2, 0x4_0000_0000) == []
    pre = S2(ps=16, ia=48, pa_bits=52)
    g2 = 1 << 29
    assert mp(pre, pre.copy().block(g2, 2, 0x000A_0000_0000_0000), g2, g2, 0x000A_0000_0000_0000) == []
    post = pre.copy().page(0x1_0000, 0x000A_0000_0001_0000)
    assert mp(pre, post, 0x1_0000, 0x1_0000, 0x000A_0000_0001_0000) == []
    bad = pre.copy().page(0x1_0000, 0x0000_0000_0001_0000)      # lost OA bits 51:48
    assert ids(mp(pre, bad, 0x1_0000, 0x1_0000, 0x000A_0000_0001_0000)) == ["C-MAP"]


def test_map_output_beyond_pa_range_is_outside_the_domain():
    pre = S2()
    assert mp(pre, pre.copy(), G1, 0x1000, 1 << 48) == []


# -- set_owner -------------------------------------------------------------------------------------

def so(pre, post, addr, size, owner, ret=0, tlb=()):
    return run(pre, "set_owner", post, tlb, ret, addr=addr, size=size, owner_id=owner)


def test_set_owner_pages_both_fields():
    for field in [(63, 56), (9, 2)]:
        pre = S2(field=field)
        post = pre.copy().owner(G1, 3, 1).owner(G1 + 0x1000, 3, 1)
        assert so(pre, post, G1, 0x2000, 1) == []
        assert pre.copy().owner(G1, 3, 1).get(G1, 3) == owner_desc(1, field)


def test_set_owner_is_page_granular():
    pre = S2()
    assert ids(so(pre, pre.copy().owner(G1, 2, 1), G1, G2, 1)) == ["C-SET-OWNER"]
    post = pre.copy()
    for i in range(512):
        post.owner(G1 + i * 0x1000, 3, 1)
    assert so(pre, post, G1, G2, 1) == []


def test_set_owner_zero_unmaps_with_bbm():
    pre = S2().page(G1, 0x8000_0000).owner(G1 + 0x1000, 3, 1)
    post = pre.copy().set(G1, 3, 0).set(G1 + 0x1000, 3, 0)
    assert so(pre, post, G1, 0x2000, 0, tlb=[("tlbi_ipa", G1, 3)]) == []
    assert ids(so(pre, post, G1, 0x2000, 0)) == ["S2-BBM"]
    vs = so(pre, pre.copy().set(G1, 3, 0), G1, 0x2000, 0, tlb=[("tlbi_ipa", G1, 3)])
    assert ids(vs) == ["C-SET-OWNER"]


def test_set_owner_errors():
    pre = S2()
    assert so(pre, pre.copy(), G1, 0x1000, 2, ret=EINVAL) == []
    assert ids(so(pre, pre.copy().owner(G1, 3, 1), G1, 0x1000, 2, ret=0)) == ["C-SET-OWNER"]
    assert ids(so(pre, pre.copy().owner(G1, 3, 1), G1, 0x1000, 1, ret=EAGAIN)) == ["C-SET-OWNER"]
    assert so(pre, pre.copy().owner(G1, 3, 1), G1, 0x2000, 1, ret=ENOMEM) == []
    # owner_id is a u8 in the kernel: 257 is owner 1
    assert so(pre, pre.copy().owner(G1, 3, 1), G1, 0x1000, 257) == []


# -- init / destroy --------------------------------------------------------------------------------

def test_init():
    pre = S2(init=False)
    assert run(pre, "init", S2()) == []
    vs = run(pre, "init", S2(nroots=1))
    assert ids(vs) == ["C-INIT"] and "kvm_pgd_pages gives 2" in vs[0].message
    dirty = S2()
    dirty.pages[dirty.roots[1]][3] = leaf(0, 1)
    assert "C-INIT" in ids(run(pre, "init", dirty))
    assert run(pre, "init", pre.copy(), ret=ENOMEM) == []
    assert ids(run(pre, "init", S2(), ret=ENOMEM)) == ["C-INIT"]


def test_destroy():
    pre = S2().page(G1, 0x8000_0000).block(2 * G1, 2, 0)
    gone = S2(init=False)
    gone.free = pre.free + len(pre.pages)
    assert run(pre, "destroy", gone) == []
    left = gone.copy()
    left.roots = []
    left.pages = {pre.roots[0]: [0] * 512}
    left.free -= 1
    vs = run(pre, "destroy", left)
    assert ids(vs) == ["C-DESTROY"] and "was not returned" in vs[0].message
    mc = gone.copy()
    mc.memcache = [0x7000_0000]
    mc.free -= 1
    assert ids(run(pre, "destroy", mc)) == ["C-DESTROY"]


def test_pool_balance_is_s2_leak():
    pre = S2()
    post = pre.copy().page(G1, 0x8000_0000)
    post.free += 1                      # a table page appeared from nowhere
    vs = mp(pre, post, G1, 0x1000, 0x8000_0000)
    assert ids(vs) == ["S2-LEAK"] and "not conserved" in vs[0].message
