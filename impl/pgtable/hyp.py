"""Hyp stage-1 page tables: ``kvm_pgtable_hyp_init`` / ``kvm_pgtable_hyp_map`` / ``..._destroy``.

Models arch/arm64/kvm/hyp/pgtable.c as of 5.15: the EL2 stage-1 table is walked with the same
walker; ``hyp_map_walker`` installs a block or page where ``kvm_block_mapping_supported`` allows
(re-creating the same mapping, or one that differs only in software bits, is tolerated by
``hyp_pte_needs_update``; a conflicting one is a WARN and is left alone), otherwise allocates a table
straight from the pool (``zalloc_page(NULL)``). Tables keep no per-descriptor refcounts in 5.15
(that came with hyp unmap in 5.16): every table page has refcount 1 until destroy drops it.

Left out: ``kvm_pgtable_hyp_pte_prot`` and the pKVM private-VA allocator (that lives with mmu.c).
"""

from __future__ import annotations

import errno

from ptspec.impl.pgtable import args
from ptspec.impl.pgtable.geometry import KVM_PGTABLE_MAX_LEVELS, Granule, U64, arm64_hw_pgtable_levels
from ptspec.impl.pgtable.pool import MmOps, PagePool
from ptspec.impl.pgtable.pte import hyp_pte_needs_update, hyp_set_prot_attr, kvm_block_mapping_supported, kvm_init_valid_leaf_pte, kvm_pte_to_phys
from ptspec.impl.pgtable.stage2_map import kvm_set_table_pte
from ptspec.impl.pgtable.walker import KVM_PGTABLE_WALK_LEAF, KVM_PGTABLE_WALK_TABLE_POST, KvmPgtableWalker, kvm_pgtable_walk


class HypPgtable:
    """struct kvm_pgtable for the hypervisor's own stage-1 (no mmu, one root page)."""

    def __init__(self, page_shift: int = 12, va_bits: int = 48, *, pool: PagePool | None = None):
        page_shift = args.page_shift(page_shift)
        pool = args.pool(pool, page_shift)
        self.gran = Granule(page_shift)
        if not isinstance(va_bits, int) or not 36 <= va_bits <= self.gran.pa_bits:
            raise ValueError(f"va_bits must be 36..{self.gran.pa_bits}, not {va_bits!r}")
        levels = arm64_hw_pgtable_levels(page_shift, va_bits)
        if not 2 <= levels <= KVM_PGTABLE_MAX_LEVELS:
            raise ValueError(f"{va_bits}-bit VA needs {levels} levels with this granule")
        self.pool = pool if pool is not None else PagePool(page_shift)
        self.mm_ops = MmOps(self.pool, cmo=False)
        self.ia_bits = va_bits
        self.start_level = KVM_PGTABLE_MAX_LEVELS - levels
        self.pa_bits = self.gran.pa_bits
        self.pgd = None
        self.warnings: list[str] = []

    def pgd_page_idx(self, addr: int) -> int:
        shift = self.gran.kvm_granule_shift(self.start_level - 1)
        return (addr & ((1 << self.ia_bits) - 1)) >> shift

    def warn(self, msg: str):
        self.warnings.append(msg)

    def init(self) -> int:
        """kvm_pgtable_hyp_init"""
        if self.pgd is not None:
            raise ValueError("hyp table is already initialised")
        pa = self.mm_ops.zalloc_page(None)
        if pa is None:
            return -errno.ENOMEM
        self.pgd = [pa]
        return 0

    def map(self, addr: int, size: int, phys: int, prot: int) -> int:
        """kvm_pgtable_hyp_map"""
        for name, v in (("addr", addr), ("size", size), ("phys", phys), ("prot", prot)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= U64:
                raise ValueError(f"{name} must be a u64, not {v!r}")
        data = HypMapData(self, phys & ~(self.gran.page_size - 1))
        ret, attr = hyp_set_prot_attr(prot)
        if ret:
            return ret
        data.attr = attr
        return kvm_pgtable_walk(self, addr, size, KvmPgtableWalker(data.walk, KVM_PGTABLE_WALK_LEAF))

    def destroy(self) -> None:
        """kvm_pgtable_hyp_destroy"""
        if self.pgd is None:
            raise ValueError("kvm_pgtable_hyp_destroy: the table has no root")
        mm_ops = self.mm_ops
        ps = self.gran.page_shift

        def hyp_free_walker(a, e, level, tbl, ptp, idx, flag):
            mm_ops.put_page(kvm_pte_to_phys(tbl[idx], ps))
            return 0
        if kvm_pgtable_walk(self, 0, 1 << self.ia_bits,
                            KvmPgtableWalker(hyp_free_walker, KVM_PGTABLE_WALK_TABLE_POST)):
            self.warn("kvm_pgtable_hyp_destroy: walk failed")
        mm_ops.put_page(self.pgd[0])
        self.pgd = None

    def snapshot(self) -> dict:
        pool = self.pool
        pages = {pa: list(w) for pa, w in pool.pages.items() if pa not in pool.in_memcache}
        return {
            "kind": "arm64-hyp-s1", "page_shift": self.gran.page_shift, "va_bits": self.ia_bits,
            "start_level": self.start_level, "pa_bits": self.pa_bits,
            "roots": list(self.pgd) if self.pgd is not None else [],
            "pages": pages, "refcount": {pa: pool.refcount[pa] for pa in pages},
            "memcache": [], "free_pages": pool.free_pages(), "pool_errors": list(pool.errors),
            "warnings": self.warnings + pool.warnings,
        }


class HypMapData:
    """struct hyp_map_data"""

    __slots__ = ("pgt", "phys", "attr")

    def __init__(self, pgt: HypPgtable, phys: int):
        self.pgt = pgt
        self.phys = phys
        self.attr = 0

    def walk(self, addr, end, level, tbl, ptp, idx, flag):
        """hyp_map_walker"""
        pgt = self.pgt
        if hyp_map_walker_try_leaf(addr, end, level, tbl, idx, self):
            return 0
        if level == 3:
            pgt.warn("hyp_map_walker: no leaf possible at the last level")
            return -errno.EINVAL
        childp = pgt.mm_ops.zalloc_page(None)
        if childp is None:
            return -errno.ENOMEM
        kvm_set_table_pte(pgt, tbl, idx, childp)
        return 0


def hyp_map_walker_try_leaf(addr, end, level, tbl, idx, data: HypMapData) -> bool:
    pgt = data.pgt
    granule = pgt.gran.size[level]
    phys = data.phys
    if not kvm_block_mapping_supported(pgt.gran, addr, end, phys, level, pgt.pa_bits):
        return False
    new = kvm_init_valid_leaf_pte(phys, data.attr, level, pgt.gran.page_shift)
    if hyp_pte_needs_update(tbl[idx], new, pgt.warn):
        tbl[idx] = new
    data.phys = phys + granule
    return True
