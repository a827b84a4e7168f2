"""impl/ against the kernel's semantics, with expected values worked out by hand from pgtable.c."""

import errno

import pytest

from ptspec.impl.pgtable.geometry import Stage2Geometry, all_stage2_geometries
from ptspec.impl.pgtable.hyp import HypPgtable
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX, KVM_PGTABLE_PROT_X, OWNER_FIELD_5_15, kvm_phys_to_pte, kvm_pte_to_phys
from ptspec.impl.pgtable.stage2 import KvmPgtable

M2, K4, G1 = 0x200000, 0x1000, 0x40000000
XN = 1 << 54
# MemAttr normal (0xf<<2) | S2AP R | S2AP W | SH inner (3<<8) | AF
RW_ATTR = 0x3C | 0x40 | 0x80 | 0x300 | 0x400


def new(page_shift=12, ia_bits=39, **kw):
    pgt = KvmPgtable(page_shift, ia_bits, pool=PagePool(page_shift, 256), **kw)
    assert pgt.init() == 0
    mc = KvmMmuMemoryCache(pgt.pool, 16)
    assert mc.topup(16) == 0
    return pgt, mc


def leaf(pgt, addr):
    ret, pte, level = pgt.get_leaf(addr)
    assert ret == 0
    return pte, level


@pytest.mark.parametrize("ps,ia,start,pages", [
    (12, 32, 2, 4), (12, 34, 2, 16), (12, 35, 1, 1), (12, 39, 1, 1), (12, 40, 1, 2),
    (12, 43, 1, 16), (12, 44, 0, 1), (12, 48, 0, 1),
    (14, 32, 2, 1), (14, 40, 2, 16), (14, 41, 1, 1), (14, 47, 1, 1), (14, 48, 1, 2),
    (16, 32, 2, 1), (16, 42, 2, 1), (16, 44, 2, 4), (16, 46, 2, 16), (16, 47, 1, 1),
    (16, 52, 1, 1),
])
def test_geometry_as_kvm_get_vtcr_derives_it(ps, ia, start, pages):
    g = Stage2Geometry.from_ipa(ps, ia)
    assert (g.start_level, g.pgd_pages) == (start, pages)


def test_every_geometry_has_at_most_16_roots_and_two_levels():
    geoms = list(all_stage2_geometries())
    assert len(geoms) == 17 + 17 + 21
    assert all(1 <= g.pgd_pages <= 16 and g.start_level <= 2 for g in geoms)


@pytest.mark.parametrize("bad", [(12, 31), (12, 49), (14, 52), (16, 53), (13, 40)])
def test_geometry_rejects_what_the_kernel_rejects(bad):
    with pytest.raises(ValueError):
        Stage2Geometry.from_ipa(*bad)


def test_64k_output_address_bits_51_48_live_in_15_12():
    pa = (0xA << 48) | (0x1234 << 16)
    pte = kvm_phys_to_pte(pa, 16)
    assert (pte >> 12) & 0xF == 0xA and pte >> 48 == 0
    assert kvm_pte_to_phys(pte, 16) == pa


def test_block_descriptor_word_for_word():
    pgt, mc = new()
    assert pgt.map(G1, M2, 0x8000_0000, KVM_PGTABLE_PROT_RW, mc) == 0
    assert leaf(pgt, G1 + 0x1234) == (0x8000_0000 | XN | RW_ATTR | 0b01, 2)
    log = pgt.snapshot()["tlb_log"]
    assert log == [("dcache", 0x8000_0000, M2)]      # no TLBI: nothing was there before


def test_map_inside_a_block_splits_it_and_unmaps_the_rest():
    pgt, mc = new()
    pgt.map(G1, M2, 0x8000_0000, KVM_PGTABLE_PROT_RW, mc)
    pgt.snapshot()
    assert pgt.map(G1 + K4, K4, 0x9000_0000, KVM_PGTABLE_PROT_R, mc) == 0
    assert leaf(pgt, G1 + K4)[1] == 3
    assert leaf(pgt, G1) == (0, 3)                    # the rest of the old block is gone
    assert ("tlbi_ipa", G1 + K4, 2) in pgt.snapshot()["tlb_log"]


def test_map_over_pages_coalesces_into_a_block_with_a_vmid_flush():
    pgt, mc = new()
    pgt.map(G1, 2 * K4, 0x8000_0000, KVM_PGTABLE_PROT_RW, mc)
    used = len(pgt.pool.pages)
    pgt.snapshot()
    assert pgt.map(G1, M2, 0x8000_0000, KVM_PGTABLE_PROT_RW, mc) == 0
    assert leaf(pgt, G1)[1] == 2
    assert ("tlbi_vmid",) in pgt.snapshot()["tlb_log"]
    assert len(pgt.pool.pages) == used - 1           # the level-3 table went back to the pool


def test_permission_only_remap_is_skipped_with_eagain():
    pgt, mc = new()
    pgt.map(G1, K4, 0x8000_0000, KVM_PGTABLE_PROT_R, mc)
    before = leaf(pgt, G1)
    assert pgt.map(G1, K4, 0x8000_0000, KVM_PGTABLE_PROT_RW, mc) == -errno.EAGAIN
    assert leaf(pgt, G1) == before


@pytest.mark.parametrize("continues", [True, False])
def test_eagain_continues_the_walk_only_with_the_fix(continues):
    pgt, mc = new(eagain_continues=continues)
    pgt.map(G1, K4, 0x8000_0000, KVM_PGTABLE_PROT_R, mc)
    assert pgt.map(G1, 3 * K4, 0x8000_0000, KVM_PGTABLE_PROT_R, mc) == -errno.EAGAIN
    mapped = leaf(pgt, G1 + 2 * K4)[0] != 0
    assert mapped == continues
    if continues:
        assert kvm_pte_to_phys(leaf(pgt, G1 + 2 * K4)[0], 12) == 0x8000_2000


@pytest.mark.parametrize("field,word", [((63, 56), 1 << 56), (OWNER_FIELD_5_15, 1 << 2)])
def test_owner_annotations_are_counted_and_cleared_by_unmap(field, word):
    pgt, mc = new(owner_field=field)
    assert pgt.set_owner(G1, K4, mc, 1) == 0
    assert leaf(pgt, G1) == (word, 3)
    s = pgt.snapshot()
    l3 = [pa for pa, w in s["pages"].items() if word in w][0]
    assert s["refcount"][l3] == 2
    assert pgt.set_owner(G1, K4, mc, 2) == -errno.EINVAL
    assert pgt.unmap(G1, K4) == 0
    assert leaf(pgt, G1)[0] == 0
    assert l3 not in pgt.pool.pages                  # its last counted entry went: table freed


def test_set_owner_forces_pages_even_for_a_whole_block():
    pgt, mc = new()
    assert pgt.set_owner(G1, M2, mc, 1) == 0
    assert leaf(pgt, G1 + M2 - K4) == (1 << 56, 3)


def test_walk_range_errors_and_wrapping_sizes():
    pgt, mc = new()
    lim = 1 << 39
    assert pgt.map(lim, K4, 0, KVM_PGTABLE_PROT_R, mc) == -errno.ERANGE
    assert pgt.unmap(lim - K4, 2 * K4) == -errno.ERANGE
    assert pgt.unmap(lim, 0) == 0                    # start == limit, nothing to do
    assert pgt.map(K4, (1 << 64) - K4, 0, KVM_PGTABLE_PROT_R, mc) == 0   # end wraps to 0
    assert leaf(pgt, K4) == (0, 1)
    assert pgt.get_leaf(lim) == (-errno.ERANGE, 0, 0)


def test_walk_from_the_middle_of_a_block_reaches_the_next_entry():
    pgt, mc = new()
    pgt.map(G1, 2 * M2, 0x8000_0000, KVM_PGTABLE_PROT_RW, mc)
    assert pgt.unmap(G1 + K4, M2) == 0               # starts inside block 0, ends inside block 1
    assert leaf(pgt, G1)[0] == 0 and leaf(pgt, G1 + M2 + M2 - K4)[0] == 0


def test_unmap_and_destroy_return_every_page():
    pgt, mc = new(page_shift=16, ia_bits=44)
    pgt.map(0x2000_0000 - 0x10000, 0x30000, 1 << 32, KVM_PGTABLE_PROT_RWX, mc)
    assert len(pgt.pool.pages) == 4 + 2 + len(mc.objects)   # roots, two level-3 tables, cache
    assert pgt.unmap(0, 1 << 44) == 0
    assert set(pgt.pool.pages) - set(mc.objects) == set(pgt.pgd)
    assert all(pgt.pool.refcount[r] == 1 for r in pgt.pgd)
    pgt.destroy()
    assert set(pgt.pool.pages) == set(mc.objects)
    assert pgt.pool.errors == []
    assert pgt.unmap(0, K4) == -errno.EINVAL
    with pytest.raises(ValueError):
        pgt.destroy()


def test_injected_allocation_failure_changes_nothing():
    pgt, mc = new()
    before = pgt.snapshot()
    pgt.mm_ops.fail_at = {pgt.mm_ops.nr_allocs}
    assert pgt.map(G1, K4, 0x8000_0000, KVM_PGTABLE_PROT_R, mc) == -errno.ENOMEM
    after = pgt.snapshot()
    assert after["pages"] == before["pages"] and after["refcount"] == before["refcount"]


def test_empty_memcache_is_enomem_and_warned():
    pgt = KvmPgtable(12, 39, pool=PagePool(12, 16))
    pgt.init()
    mc = KvmMmuMemoryCache(pgt.pool, 1)
    assert pgt.map(G1, K4, 0, KVM_PGTABLE_PROT_R, mc) == -errno.ENOMEM
    assert pgt.map(G1, K4, 0, KVM_PGTABLE_PROT_R, None) == -errno.ENOMEM
    assert pgt.pool.warnings


def test_pool_records_double_free_and_put_below_zero():
    pool = PagePool(12, 4)
    pa = pool.alloc_page()
    pool.put_page(pa)
    pool.put_page(pa)
    assert pool.errors and "not allocated" in pool.errors[0]


def test_memcache_is_lifo_and_pool_lowest_first():
    pool = PagePool(12, 8, base_pa=0)
    mc = KvmMmuMemoryCache(pool, 3)
    mc.topup(3)
    assert mc.objects == [0, 0x1000, 0x2000]
    assert mc.alloc() == 0x2000
    assert pool.alloc_page() == 0x3000


def test_relax_perms_and_attribute_walkers():
    pgt, mc = new()
    pgt.map(G1, K4, 0x8000_0000, KVM_PGTABLE_PROT_R, mc)
    pgt.snapshot()
    assert pgt.relax_perms(G1, KVM_PGTABLE_PROT_RWX) == 0
    pte = leaf(pgt, G1)[0]
    assert pte & 0x80 and not pte & XN
    assert ("tlbi_ipa", G1, 3) in pgt.snapshot()["tlb_log"]
    assert pgt.relax_perms(G1, 1 << 55) == -errno.EINVAL
    old = pgt.mkold(G1)
    assert old == pte and not pgt.is_young(G1)
    assert pgt.mkyoung(G1) == pte & ~0x400 and pgt.is_young(G1)
    assert pgt.wrprotect(G1, K4) == 0 and not leaf(pgt, G1)[0] & 0x80
    assert pgt.mkyoung(G1 + M2) == 0                 # nothing mapped there


@pytest.mark.parametrize("args", [(-1, K4), (K4, -K4), (1 << 64, 1), ("0x1000", 1), (1.0, 1)])
def test_non_u64_arguments_are_value_errors(args):
    pgt, mc = new()
    with pytest.raises(ValueError):
        pgt.unmap(*args)
    with pytest.raises(ValueError):
        pgt.set_owner(0, K4, mc, 256)


def test_hyp_stage1_map_and_destroy():
    hyp = HypPgtable(12, 48, pool=PagePool(12, 16))
    assert hyp.init() == 0
    assert hyp.map(0x8000_0000, 2 * K4, 0x4000_1000, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X) == 0
    assert hyp.map(0x8000_0000, K4, 0x4000_1000, KVM_PGTABLE_PROT_RW | KVM_PGTABLE_PROT_X) \
        == -errno.EINVAL
    s = hyp.snapshot()
    assert len(s["pages"]) == 4 and set(s["refcount"].values()) == {1}
    hyp.destroy()
    assert hyp.snapshot()["pages"] == {} and hyp.pool.errors == []
