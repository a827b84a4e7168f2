"""The stage-2 map walker: ``kvm_pgtable_stage2_map`` and ``kvm_pgtable_stage2_set_owner``.

Models arch/arm64/kvm/hyp/pgtable.c (5.12-5.15 with the pKVM page-ownership patch):

* ``stage2_map_walker_try_leaf``: install a leaf (a valid page/block, or an owner annotation when
  ``phys`` is KVM_PHYS_INVALID) when ``stage2_leaf_mapping_allowed``; skip (``-EAGAIN``) a counted
  old entry that differs only in permissions; otherwise break-before-make through ``stage2_put_pte``;
  cache maintenance before installing (when mm_ops has the hooks); one page reference per counted
  entry;
* ``stage2_map_walk_table_pre``: the anchor -- a table entry that can become a block is cleared, the
  whole VMID invalidated, and the table's subtree released on the way back up;
* ``stage2_map_walk_leaf``: under an anchor drop references; else try a leaf, else allocate a table
  from the memcache (-ENOMEM without one) and replace the old entry (a block is split: the rest of
  it is unmapped and faulted back lazily);
* ``stage2_map_walk_table_post``: free the anchored subtree and install the block at the anchor.

Shared helpers used by the other stage-2 walkers (``stage2_put_pte``, ``kvm_set_table_pte``,
``kvm_clear_pte``) are here too.
"""

from __future__ import annotations

import errno

from ptspec.impl.pgtable.pte import KVM_PHYS_INVALID, KVM_PTE_VALID, kvm_block_mapping_supported, kvm_init_invalid_leaf_owner, kvm_init_valid_leaf_pte, kvm_phys_is_valid, kvm_pte_table, kvm_pte_to_phys, kvm_table_pte, stage2_pte_cacheable, stage2_pte_executable, stage2_pte_is_counted, stage2_pte_needs_update, stage2_set_prot_attr
from ptspec.impl.pgtable.walker import KVM_PGTABLE_WALK_LEAF, KVM_PGTABLE_WALK_TABLE_POST, KVM_PGTABLE_WALK_TABLE_PRE, KvmPgtableWalker, kvm_pgtable_walk

E2BIG = errno.E2BIG
# enum kvm_pgtable_stage2_flags
KVM_PGTABLE_S2_NOFWB = 1 << 0
KVM_PGTABLE_S2_IDMAP = 1 << 1


# -- helpers shared by the stage-2 walkers --------------------------------------------------------

def kvm_clear_pte(tbl: list, idx: int):
    tbl[idx] = 0


def kvm_set_table_pte(pgt, tbl: list, idx: int, childp: int):
    """Point an entry at a new table; the entry must not be valid (a WARN otherwise)."""
    if tbl[idx] & KVM_PTE_VALID:
        pgt.warn("kvm_set_table_pte: overwriting a valid entry")
    tbl[idx] = kvm_table_pte(childp, pgt.gran.page_shift)


def stage2_put_pte(pgt, tbl: list, ptp: int, idx: int, addr: int, level: int):
    """Clear a counted entry (with a TLB invalidation if it was valid) and drop its reference.

    The invalidation's level hint is the entry's level; from 6.1 (``table_tlbi_level0``) a table
    descriptor is invalidated with hint 0, as no leaf of the table's own level is cached for it."""
    pte = tbl[idx]
    if pte & KVM_PTE_VALID:
        kvm_clear_pte(tbl, idx)
        if pgt.table_tlbi_level0 and kvm_pte_table(pte, level):
            level = 0
        pgt.tlb_flush_vmid_ipa(addr, level)
    pgt.mm_ops.put_page(ptp)


# -- struct stage2_map_data and the walker -------------------------------------------------------

class Stage2MapData:
    __slots__ = ("pgt", "phys", "attr", "owner_id", "anchor", "childp", "memcache", "force_pte",
                 "ret", "has_fwb", "mm_ops", "gran", "pa_bits", "owner_pte")

    def __init__(self, pgt, phys: int, memcache, owner_id: int = 0, force_pte: bool = False):
        self.pgt = pgt
        self.phys = phys
        self.attr = 0
        self.owner_id = owner_id
        self.anchor = None       # (tbl, idx) of the anchored table entry
        self.childp = None       # physical address of the detached table
        self.memcache = memcache
        self.force_pte = force_pte
        self.ret = 0
        self.has_fwb = pgt.has_fwb()      # stage2_has_fwb(): fixed for the table's lifetime
        self.mm_ops = pgt.mm_ops          # map_data.mm_ops = pgt->mm_ops
        self.gran = pgt.gran              # the build's granule and PA range (constants)
        self.pa_bits = pgt.pa_bits
        # the annotation try_leaf installs when phys is KVM_PHYS_INVALID: a function of
        # data->owner_id and the build alone, so computed once for the walk, not for every entry
        self.owner_pte = kvm_init_invalid_leaf_owner(self.owner_id, pgt.owner_field)

    def walk(self, addr, end, level, tbl, ptp, idx, flag):
        """stage2_map_walker: dispatch on the walk flag (LEAF, the most frequent, first)."""
        if flag == KVM_PGTABLE_WALK_LEAF:
            return stage2_map_walk_leaf(addr, end, level, tbl, ptp, idx, self)
        if flag == KVM_PGTABLE_WALK_TABLE_PRE:
            return stage2_map_walk_table_pre(addr, end, level, tbl, ptp, idx, self)
        if flag == KVM_PGTABLE_WALK_TABLE_POST:
            return stage2_map_walk_table_post(addr, end, level, tbl, ptp, idx, self)
        return -errno.EINVAL


def stage2_leaf_mapping_allowed(addr: int, end: int, level: int, data: Stage2MapData) -> bool:
    if data.force_pte and level < 3:
        return False
    return kvm_block_mapping_supported(data.gran, addr, end, data.phys, level, data.pa_bits)


def stage2_map_walker_try_leaf(addr, end, level, tbl, ptp, idx, data: Stage2MapData) -> int:
    pgt = data.pgt
    mm_ops = data.mm_ops
    gran = data.gran
    old = tbl[idx]
    granule = gran.size[level]
    phys = data.phys

    if not stage2_leaf_mapping_allowed(addr, end, level, data):
        return -E2BIG

    phys_valid = kvm_phys_is_valid(phys, data.pa_bits)
    if phys_valid:
        new = kvm_init_valid_leaf_pte(phys, data.attr, level, gran.page_shift)
    else:
        new = data.owner_pte

    skipped = False
    if stage2_pte_is_counted(old):
        if not stage2_pte_needs_update(old, new):
            if not pgt.eagain_continues:
                return -errno.EAGAIN
            data.ret = -errno.EAGAIN
            skipped = True
        else:
            stage2_put_pte(pgt, tbl, ptp, idx, addr, level)

    if not skipped:
        if mm_ops.dcache_clean_inval_poc and stage2_pte_cacheable(new, data.has_fwb):
            mm_ops.dcache_clean_inval_poc(kvm_pte_to_phys(new, gran.page_shift), granule)
        if mm_ops.icache_inval_pou and stage2_pte_executable(new):
            mm_ops.icache_inval_pou(kvm_pte_to_phys(new, gran.page_shift), granule)
        tbl[idx] = new
        if stage2_pte_is_counted(new):
            mm_ops.get_page(ptp)

    if phys_valid:
        data.phys = phys + granule
    return 0


def stage2_map_walk_table_pre(addr, end, level, tbl, ptp, idx, data: Stage2MapData) -> int:
    if data.anchor is not None:
        return 0
    if not stage2_leaf_mapping_allowed(addr, end, level, data):
        return 0
    pgt = data.pgt
    data.childp = kvm_pte_to_phys(tbl[idx], pgt.gran.page_shift)
    kvm_clear_pte(tbl, idx)
    # The detached subtree may hold many leaves: invalidate the whole VMID.
    pgt.tlb_flush_vmid()
    data.anchor = (tbl, idx)
    return 0


def _is_anchor(data: Stage2MapData, tbl, idx) -> bool:
    a = data.anchor
    return a is not None and a[0] is tbl and a[1] == idx


def stage2_map_walk_leaf(addr, end, level, tbl, ptp, idx, data: Stage2MapData) -> int:
    pgt = data.pgt
    mm_ops = data.mm_ops
    pte = tbl[idx]

    if data.anchor is not None:
        if stage2_pte_is_counted(pte):
            mm_ops.put_page(ptp)
        return 0

    ret = stage2_map_walker_try_leaf(addr, end, level, tbl, ptp, idx, data)
    if ret != -E2BIG:
        return ret

    if level == 3:
        pgt.warn("stage2_map_walk_leaf: no leaf possible at the last level")
        return -errno.EINVAL

    if data.memcache is None:
        return -errno.ENOMEM

    childp = mm_ops.zalloc_page(data.memcache)
    if childp is None:
        return -errno.ENOMEM

    # An existing block is replaced by a table: the rest of it is unmapped and faulted back lazily.
    if stage2_pte_is_counted(pte):
        stage2_put_pte(pgt, tbl, ptp, idx, addr, level)

    kvm_set_table_pte(pgt, tbl, idx, childp)
    mm_ops.get_page(ptp)
    return 0


def stage2_map_walk_table_post(addr, end, level, tbl, ptp, idx, data: Stage2MapData) -> int:
    pgt = data.pgt
    mm_ops = pgt.mm_ops
    ret = 0
    if data.anchor is None:
        return 0
    if _is_anchor(data, tbl, idx):
        childp = data.childp
        data.anchor = None
        data.childp = None
        ret = stage2_map_walk_leaf(addr, end, level, tbl, ptp, idx, data)
    else:
        childp = kvm_pte_to_phys(tbl[idx], pgt.gran.page_shift)
    mm_ops.put_page(childp)
    mm_ops.put_page(ptp)
    return ret


MAP_WALK_FLAGS = KVM_PGTABLE_WALK_TABLE_PRE | KVM_PGTABLE_WALK_LEAF | KVM_PGTABLE_WALK_TABLE_POST


def kvm_pgtable_stage2_map(pgt, addr: int, size: int, phys: int, prot: int, mc) -> int:
    page_mask = pgt.gran.page_size - 1
    data = Stage2MapData(pgt, phys & ~page_mask, mc, force_pte=pgt.force_pte(addr, size, prot))
    walker = KvmPgtableWalker(data.walk, MAP_WALK_FLAGS)

    if pgt.flags & KVM_PGTABLE_S2_IDMAP and addr != phys:
        pgt.warn("kvm_pgtable_stage2_map: identity map with addr != phys")
        return -errno.EINVAL

    ret, attr = stage2_set_prot_attr(prot, pgt.has_fwb())
    if ret:
        return ret
    data.attr = attr

    ret = kvm_pgtable_walk(pgt, addr, size, walker)
    if ret:
        return ret
    return data.ret


def kvm_pgtable_stage2_set_owner(pgt, addr: int, size: int, mc, owner_id: int) -> int:
    data = Stage2MapData(pgt, KVM_PHYS_INVALID, mc, owner_id=owner_id, force_pte=True)
    walker = KvmPgtableWalker(data.walk, MAP_WALK_FLAGS)

    if owner_id > pgt.max_owner_id:
        return -errno.EINVAL

    ret = kvm_pgtable_walk(pgt, addr, size, walker)
    if ret:
        return ret
    return data.ret
