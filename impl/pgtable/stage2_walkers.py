"""The other stage-2 walkers of arch/arm64/kvm/hyp/pgtable.c (5.12-5.15 with pKVM ownership).

* ``__kvm_pgtable_stage2_init``: allocate the zeroed concatenated root (``zalloc_pages_exact``);
* ``stage2_unmap_walker`` / ``kvm_pgtable_stage2_unmap``: clear every counted entry met (owner
  annotations included), break-before-make valid leaves with cache cleaning of cacheable memory when
  FWB is off, and free a table on the way back up once only its own reference is left;
* ``stage2_attr_walker`` / ``stage2_update_leaf_attrs`` and its users ``wrprotect``, ``mkyoung``,
  ``mkold``, ``is_young``, ``relax_perms`` (the only one that invalidates the TLB itself);
* ``stage2_flush_walker`` / ``kvm_pgtable_stage2_flush`` (nothing to do with FWB);
* ``leaf_walker`` / ``kvm_pgtable_get_leaf``;
* ``stage2_free_walker`` / ``kvm_pgtable_stage2_destroy``.
"""

from __future__ import annotations

import errno
from functools import partial

from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X, KVM_PTE_LEAF_ATTR_HI, KVM_PTE_LEAF_ATTR_HI_S2_XN, KVM_PTE_LEAF_ATTR_HI_SW, KVM_PTE_LEAF_ATTR_LO, KVM_PTE_LEAF_ATTR_LO_S2_AF, KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R, KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W, KVM_PTE_VALID, U64, kvm_pte_table, kvm_pte_to_phys, stage2_pte_cacheable, stage2_pte_executable, stage2_pte_is_counted
from ptspec.impl.pgtable.stage2_map import kvm_clear_pte, stage2_put_pte
from ptspec.impl.pgtable.walker import KVM_PGTABLE_WALK_LEAF, KVM_PGTABLE_WALK_TABLE_POST, KvmPgtableWalker, kvm_pgtable_walk


def kvm_pgtable_stage2_init(pgt) -> int:
    if pgt.pgd is not None:
        raise ValueError("stage-2 table is already initialised")
    pgd = pgt.mm_ops.zalloc_pages_exact(pgt.pgd_pages() * pgt.gran.page_size)
    if pgd is None:
        return -errno.ENOMEM
    pgt.pgd = pgd
    return 0


# -- unmap ---------------------------------------------------------------------------------------

def stage2_unmap_walker(pgt, addr, end, level, tbl, ptp, idx, flag) -> int:
    mm_ops = pgt.mm_ops
    pte = tbl[idx]
    childp = None
    need_flush = False

    if not pte & KVM_PTE_VALID:
        if stage2_pte_is_counted(pte):
            kvm_clear_pte(tbl, idx)
            mm_ops.put_page(ptp)
        return 0

    if kvm_pte_table(pte, level):
        childp = kvm_pte_to_phys(pte, pgt.gran.page_shift)
        if mm_ops.page_count(childp) != 1:
            return 0
    else:
        has_fwb = pgt.has_fwb()
        if stage2_pte_cacheable(pte, has_fwb):
            need_flush = not has_fwb

    # Like map: the whole block goes, and what lies outside the range is faulted back lazily.
    stage2_put_pte(pgt, tbl, ptp, idx, addr, level)

    if need_flush and mm_ops.dcache_clean_inval_poc:
        mm_ops.dcache_clean_inval_poc(kvm_pte_to_phys(pte, pgt.gran.page_shift),
                                      pgt.gran.size[level])

    if childp is not None:
        mm_ops.put_page(childp)
    return 0


def kvm_pgtable_stage2_unmap(pgt, addr: int, size: int) -> int:
    walker = KvmPgtableWalker(partial(stage2_unmap_walker, pgt),
                              KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST)
    return kvm_pgtable_walk(pgt, addr, size, walker)


# -- leaf attributes -----------------------------------------------------------------------------

class Stage2AttrData:
    __slots__ = ("attr_set", "attr_clr", "pte", "level")

    def __init__(self, attr_set: int, attr_clr: int):
        self.attr_set = attr_set
        self.attr_clr = attr_clr
        self.pte = 0
        self.level = 0


def stage2_attr_walker(pgt, data: Stage2AttrData, addr, end, level, tbl, ptp, idx, flag) -> int:
    pte = tbl[idx]
    if not pte & KVM_PTE_VALID:
        return 0
    data.level = level
    data.pte = pte
    pte &= ~data.attr_clr & U64
    pte |= data.attr_set
    # Racing with the hardware setting AF only ever loses an AF update, which is harmless.
    if data.pte != pte:
        mm_ops = pgt.mm_ops
        if (mm_ops.icache_inval_pou and stage2_pte_executable(pte)
                and not stage2_pte_executable(tbl[idx])):
            mm_ops.icache_inval_pou(kvm_pte_to_phys(pte, pgt.gran.page_shift),
                                    pgt.gran.size[level])
        tbl[idx] = pte
    return 0


def stage2_update_leaf_attrs(pgt, addr: int, size: int, attr_set: int, attr_clr: int):
    """Returns (ret, orig_pte, level) of the last valid leaf visited."""
    attr_mask = KVM_PTE_LEAF_ATTR_LO | KVM_PTE_LEAF_ATTR_HI
    data = Stage2AttrData(attr_set & attr_mask, attr_clr & attr_mask)
    cb = partial(stage2_attr_walker, pgt, data)
    ret = kvm_pgtable_walk(pgt, addr, size, KvmPgtableWalker(cb, KVM_PGTABLE_WALK_LEAF))
    if ret:
        return ret, None, None
    return 0, data.pte, data.level


def kvm_pgtable_stage2_wrprotect(pgt, addr: int, size: int) -> int:
    return stage2_update_leaf_attrs(pgt, addr, size, 0, KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W)[0]


def kvm_pgtable_stage2_mkyoung(pgt, addr: int) -> int:
    ret, pte, _ = stage2_update_leaf_attrs(pgt, addr, 1, KVM_PTE_LEAF_ATTR_LO_S2_AF, 0)
    return pte if not ret else 0


def kvm_pgtable_stage2_mkold(pgt, addr: int) -> int:
    # No TLB invalidation here: the MMU notifier's clear_flush_young does it.
    ret, pte, _ = stage2_update_leaf_attrs(pgt, addr, 1, 0, KVM_PTE_LEAF_ATTR_LO_S2_AF)
    return pte if not ret else 0


def kvm_pgtable_stage2_is_young(pgt, addr: int) -> bool:
    ret, pte, _ = stage2_update_leaf_attrs(pgt, addr, 1, 0, 0)
    return bool(not ret and pte & KVM_PTE_LEAF_ATTR_LO_S2_AF)


def kvm_pgtable_stage2_relax_perms(pgt, addr: int, prot: int) -> int:
    if prot & KVM_PTE_LEAF_ATTR_HI_SW:
        return -errno.EINVAL
    attr_set = attr_clr = 0
    if prot & KVM_PGTABLE_PROT_R:
        attr_set |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R
    if prot & KVM_PGTABLE_PROT_W:
        attr_set |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W
    if prot & KVM_PGTABLE_PROT_X:
        attr_clr |= KVM_PTE_LEAF_ATTR_HI_S2_XN
    ret, _, level = stage2_update_leaf_attrs(pgt, addr, 1, attr_set, attr_clr)
    if not ret:
        pgt.tlb_flush_vmid_ipa(addr, level)
    return ret


# -- flush, get_leaf, destroy --------------------------------------------------------------------

def stage2_flush_walker(pgt, addr, end, level, tbl, ptp, idx, flag) -> int:
    pte = tbl[idx]
    if not pte & KVM_PTE_VALID or not stage2_pte_cacheable(pte, pgt.has_fwb()):
        return 0
    if pgt.mm_ops.dcache_clean_inval_poc:
        pgt.mm_ops.dcache_clean_inval_poc(kvm_pte_to_phys(pte, pgt.gran.page_shift),
                                          pgt.gran.size[level])
    return 0


def kvm_pgtable_stage2_flush(pgt, addr: int, size: int) -> int:
    if pgt.has_fwb():
        return 0
    walker = KvmPgtableWalker(partial(stage2_flush_walker, pgt), KVM_PGTABLE_WALK_LEAF)
    return kvm_pgtable_walk(pgt, addr, size, walker)


def kvm_pgtable_get_leaf(pgt, addr: int):
    found = [0, 0]

    def leaf_walker(a, e, level, tbl, ptp, idx, flag):
        found[0] = tbl[idx]
        found[1] = level
        return 0
    page_mask = pgt.gran.page_size - 1
    ret = kvm_pgtable_walk(pgt, addr & ~page_mask, pgt.gran.page_size,
                           KvmPgtableWalker(leaf_walker, KVM_PGTABLE_WALK_LEAF))
    if ret:
        return ret, 0, 0
    return 0, found[0], found[1]


def stage2_free_walker(pgt, addr, end, level, tbl, ptp, idx, flag) -> int:
    mm_ops = pgt.mm_ops
    pte = tbl[idx]
    if not stage2_pte_is_counted(pte):
        return 0
    mm_ops.put_page(ptp)
    if kvm_pte_table(pte, level):
        mm_ops.put_page(kvm_pte_to_phys(pte, pgt.gran.page_shift))
    return 0


def kvm_pgtable_stage2_destroy(pgt) -> None:
    if pgt.pgd is None:
        raise ValueError("kvm_pgtable_stage2_destroy: the table has no root (never initialised "
                         "or already destroyed)")
    walker = KvmPgtableWalker(partial(stage2_free_walker, pgt),
                              KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST)
    if kvm_pgtable_walk(pgt, 0, 1 << pgt.ia_bits, walker):
        pgt.warn("kvm_pgtable_stage2_destroy: walk failed")
    pgt.mm_ops.free_pages_exact(pgt.pgd, pgt.pgd_pages() * pgt.gran.page_size)
    pgt.pgd = None
