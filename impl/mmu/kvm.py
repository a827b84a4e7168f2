"""``struct kvm`` as arch/arm64/kvm/mmu.c (Linux 5.13) sees it, and the generic MMU-notifier glue.

Models:

* the VM: its stage-2 table (``kvm->arch.mmu.pgt``, an ``ptspec.impl.pgtable.stage2.KvmPgtable`` created with
  ``cmo=False``, because in 5.13 the cache maintenance is done by mmu.c itself, not by the page-table
  code), the vCPU memcache (``vcpu->arch.mmu_page_cache``), memslots, ``mmu_notifier_seq`` /
  ``mmu_notifier_count``, the manual dirty-log protect flags, the CPU capabilities mmu.c reads
  (``ARM64_HAS_STAGE2_FWB``, ``ARM64_HAS_CACHE_DIC``);
* ``kvm_init_stage2_mmu`` / ``kvm_free_stage2_pgd``, ``kvm_flush_remote_tlbs``,
  ``kvm_mmu_cache_min_pages``;
* the generic notifier callbacks of virt/kvm/kvm_main.c 5.13 that call into mmu.c:
  ``kvm_mmu_notifier_invalidate_range_start`` / ``_end`` (count, unmap, sequence number),
  ``kvm_mmu_notifier_change_pte``, ``clear_flush_young``, ``test_young``, with the hva -> gfn range
  arithmetic of ``__kvm_handle_hva_range``.

Ghost records for the spec (not kernel state): ``ioremaps`` (every ``kvm_phys_addr_ioremap``
request: where a device mapping is allowed) and ``mmio_exits``.
"""

from __future__ import annotations

from ptspec.impl.mmu.host import HostMM
from ptspec.impl.pgtable import args
from ptspec.impl.mmu.memslot import hva_to_gfn_memslot
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
from ptspec.impl.pgtable.stage2 import KvmPgtable


class Kvm:
    """One VM with one vCPU's memcache."""

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, host: HostMM | None = None,
                 arena_pages: int = 1 << 14, fwb: bool = False, dic: bool = False,
                 manual_protect: bool = False, init_set: bool = False, mc_capacity: int = 40):
        ia_bits = args.ipa_bits(page_shift, ia_bits)
        host = args.instance("host", host, HostMM, optional=True)
        arena_pages = args.positive("arena_pages", arena_pages)
        fwb = args.flag("fwb", fwb)
        dic = args.flag("dic", dic)
        manual_protect = args.flag("manual_protect", manual_protect)
        init_set = args.flag("init_set", init_set)
        mc_capacity = args.positive("mc_capacity", mc_capacity)
        self.page_shift = page_shift
        self.ia_bits = ia_bits
        self.host = host if host is not None else HostMM(page_shift)
        if self.host.page_shift != page_shift:
            raise ValueError("host and guest granule differ")
        self.pool = PagePool(page_shift, arena_pages)
        self.fwb = fwb                      # cpus_have_final_cap(ARM64_HAS_STAGE2_FWB)
        self.dic = dic                      # cpus_have_const_cap(ARM64_HAS_CACHE_DIC)
        if init_set and not manual_protect:
            raise ValueError("KVM_DIRTY_LOG_INITIALLY_SET needs KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE")
        self.manual_protect = manual_protect
        self.manual_protect_init_set = init_set
        self.memslots: list = []
        self.mmu_notifier_seq = 0
        self.mmu_notifier_count = 0
        self.memcache = KvmMmuMemoryCache(self.pool, mc_capacity)
        self.pgt = None
        self.warnings: list[str] = []
        self.ioremaps: list[tuple] = []     # ghost: (ipa, pa, size, writable) of each request
        self.mmio_exits: list[tuple] = []
        self.after_gfn_to_pfn = None        # test hook: runs between gfn_to_pfn and mmu_lock
        self.host.notifiers.append(self)
        ret = kvm_init_stage2_mmu(self)
        if ret:
            self.host.notifiers.remove(self)        # a VM that was never made is not registered
            raise MemoryError(f"kvm_init_stage2_mmu failed: {ret}")

    # -- small kernel helpers -----------------------------------------------------------------
    def kvm_phys_size(self) -> int:
        return 1 << self.ia_bits

    def kvm_mmu_cache_min_pages(self) -> int:
        """kvm_stage2_levels(kvm) - 1"""
        return (4 - self.pgt.start_level) - 1

    def flush_remote_tlbs(self):
        """kvm_flush_remote_tlbs: __kvm_tlb_flush_vmid"""
        if self.pgt is not None:
            self.pgt.tlb_flush_vmid()

    def warn(self, msg: str):
        self.warnings.append(msg)

    def mmu_notifier_retry(self, mmu_seq: int) -> bool:
        return bool(self.mmu_notifier_count) or self.mmu_notifier_seq != mmu_seq

    def log(self, event):
        if self.pgt is not None:
            self.pgt.log.append(event)

    # -- generic MMU-notifier glue (virt/kvm/kvm_main.c) ----------------------------------------
    def _handle_hva_range(self, start, end, handler, arg=None) -> bool:
        """__kvm_handle_hva_range: call handler on the gfn range of each slot the hvas overlap."""
        ps = self.page_shift
        ret = False
        for slot in list(self.memslots):
            s_start = slot.userspace_addr
            s_end = s_start + (slot.npages << ps)
            hva_start, hva_end = max(start, s_start), min(end, s_end)
            if hva_start >= hva_end:
                continue
            rng = GfnRange(hva_to_gfn_memslot(hva_start, slot, ps),
                           hva_to_gfn_memslot(hva_end + (1 << ps) - 1, slot, ps), slot, arg, True)
            ret |= bool(handler(self, rng))
        return ret

    def invalidate_range_start(self, start, end):
        from ptspec.impl.mmu.stage2 import kvm_unmap_gfn_range
        self.mmu_notifier_count += 1
        if self._handle_hva_range(start, end, kvm_unmap_gfn_range):
            self.flush_remote_tlbs()

    def invalidate_range_end(self, start, end):
        self.mmu_notifier_seq += 1
        self.mmu_notifier_count -= 1

    def change_pte(self, hva, pfn):
        from ptspec.impl.mmu.stage2 import kvm_set_spte_gfn
        if not self.mmu_notifier_count:
            self.warn("change_pte without an elevated mmu_notifier_count")
        self._handle_hva_range(hva, hva + 1, kvm_set_spte_gfn, pfn)

    def clear_flush_young(self, start, end) -> bool:
        from ptspec.impl.mmu.stage2 import kvm_age_gfn
        young = self._handle_hva_range(start, end, kvm_age_gfn)
        if young:
            self.flush_remote_tlbs()
        return young

    def test_young(self, hva) -> bool:
        from ptspec.impl.mmu.stage2 import kvm_test_age_gfn
        return self._handle_hva_range(hva, hva + 1, kvm_test_age_gfn)


class GfnRange:
    """struct kvm_gfn_range: [start, end) gfns of one slot; pte carries change_pte's new pfn."""

    __slots__ = ("start", "end", "slot", "pte", "may_block")

    def __init__(self, start, end, slot, pte=None, may_block=True):
        self.start, self.end, self.slot, self.pte, self.may_block = start, end, slot, pte, may_block


def kvm_init_stage2_mmu(kvm: Kvm) -> int:
    """kvm_init_stage2_mmu: -EINVAL when already initialised; the table's own init errors."""
    import errno
    if kvm.pgt is not None:
        return -errno.EINVAL
    pgt = KvmPgtable(kvm.page_shift, kvm.ia_bits, pool=kvm.pool, fwb=kvm.fwb, cmo=False,
                     eagain_continues=False)      # 5.13: -EAGAIN stops the map walk
    err = pgt.init()
    if err:
        return err
    kvm.pgt = pgt
    return 0


def kvm_free_stage2_pgd(kvm: Kvm):
    """kvm_free_stage2_pgd (and kvm_arch_flush_shadow_all): detach the table, then destroy it."""
    pgt, kvm.pgt = kvm.pgt, None
    if pgt is not None:
        pgt.destroy()
        kvm.retired_log = pgt.log
