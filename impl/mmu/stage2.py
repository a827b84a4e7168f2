"""arch/arm64/kvm/mmu.c (Linux 5.13): stage-2 range operations, memslot hooks, MMU-notifier hooks.

Models, in the kernel's order of operations and with its error codes:

* ``stage2_apply_range`` (the table may disappear between chunks: -EINVAL; chunks end at the next
  ``stage2_pgd_addr_end``; ``cond_resched_lock`` is a no-op here), ``__unmap_stage2_range``,
  ``unmap_stage2_range``, ``stage2_flush_memslot``, ``stage2_unmap_memslot`` (VMA walk, PFNMAP parts
  kept) and ``stage2_unmap_vm``;
* ``kvm_phys_addr_ioremap`` (one page at a time, a private memcache topped up before each page);
* ``stage2_wp_range``, ``kvm_mmu_wp_memory_region``, ``kvm_mmu_write_protect_pt_masked`` /
  ``kvm_arch_mmu_enable_log_dirty_pt_masked`` (first to last set bit of the mask);
* ``kvm_arch_prepare_memory_region`` (IPA bound as in 262b003d059c, VMA walk, ioremap of PFNMAP
  parts, -EINVAL for dirty logging on I/O, unmap on failure, flush unless FWB),
  ``kvm_arch_commit_memory_region``, ``kvm_arch_flush_shadow_memslot``;
* the notifier hooks ``kvm_unmap_gfn_range``, ``kvm_set_spte_gfn``, ``kvm_age_gfn``,
  ``kvm_test_age_gfn``.

WARN_ONs are recorded in ``kvm.warnings``. Locks (mmu_lock, mmap lock, srcu) are not modelled: every
call runs to completion before the next starts.
"""

from __future__ import annotations

import errno

from ptspec.impl.mmu.host import PFNMAP
from ptspec.impl.mmu.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KVM_MR_CREATE, KVM_MR_DELETE, KVM_MR_FLAGS_ONLY, KVM_MR_MOVE
from ptspec.impl.pgtable import args
from ptspec.impl.pgtable.args import U64
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache
from ptspec.impl.pgtable.stage2 import KvmPgtable
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_DEVICE, KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PTE_VALID

KVM_PTE_LEAF_ATTR_LO_S2_AF = 1 << 10


def stage2_pgd_addr_end(kvm, addr, end):
    """The end of the stage-2 PGD entry holding addr, or end if that comes first."""
    pgt = kvm.pgt
    size = pgt.gran.size[pgt.start_level]
    boundary = (addr + size) & ~(size - 1)
    return boundary if boundary - 1 < end - 1 else end


def stage2_apply_range(kvm, addr, end, fn, resched: bool) -> int:
    while True:
        pgt = kvm.pgt
        if pgt is None:
            return -errno.EINVAL
        nxt = stage2_pgd_addr_end(kvm, addr, end)
        ret = fn(pgt, addr, nxt - addr)
        if ret:
            return ret
        addr = nxt
        if addr == end:
            return ret


def _unmap(pgt, addr, size):
    return pgt.unmap(addr, size)


def _flush(pgt, addr, size):
    return pgt.flush(addr, size)


def _wrprotect(pgt, addr, size):
    return pgt.wrprotect(addr, size)


def __unmap_stage2_range(kvm, start, size, may_block: bool):
    end = start + size
    if size & ((1 << kvm.page_shift) - 1):
        kvm.warn(f"__unmap_stage2_range: size {size:#x} is not page aligned")
    if stage2_apply_range(kvm, start, end, _unmap, may_block):
        kvm.warn(f"__unmap_stage2_range: unmap of {start:#x}+{size:#x} failed")


def unmap_stage2_range(kvm, start, size):
    __unmap_stage2_range(kvm, start, size, True)


def stage2_flush_memslot(kvm, slot):
    addr = slot.base_gfn << kvm.page_shift
    end = addr + (slot.npages << kvm.page_shift)
    stage2_apply_range(kvm, addr, end, _flush, True)


def stage2_unmap_memslot(kvm, slot):
    """Unmap the parts of the slot backed by non-PFNMAP VMAs (holes and PFNMAP parts are kept)."""
    ps = kvm.page_shift
    hva = slot.userspace_addr
    addr = slot.base_gfn << ps
    size = slot.npages << ps
    reg_end = hva + size
    while True:
        vma = kvm.host.find_vma_intersection(hva, reg_end)
        if vma is None:
            break
        vm_start = max(hva, vma.start)
        vm_end = min(reg_end, vma.end)
        if vma.kind != PFNMAP:
            gpa = addr + (vm_start - slot.userspace_addr)
            unmap_stage2_range(kvm, gpa, vm_end - vm_start)
        hva = vm_end
        if not hva < reg_end:
            break


def stage2_unmap_vm(kvm):
    for slot in list(kvm.memslots):
        stage2_unmap_memslot(kvm, slot)


def kvm_phys_addr_ioremap(kvm, guest_ipa, pa, size, writable: bool) -> int:
    """The arithmetic is the kernel's u64 arithmetic: a range that wraps past 2**64 ends before it
    starts (nothing is mapped), and pa wraps with it."""
    for name, v in (("guest_ipa", guest_ipa), ("pa", pa), ("size", size)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
            raise ValueError(f"{name} must be a u64, not {v!r}")
    writable = args.flag("writable", writable)
    pgt = args.instance("kvm->arch.mmu.pgt (the VM's stage-2 table)", kvm.pgt, KvmPgtable)
    ps = kvm.page_shift
    psize = 1 << ps
    ret = 0
    cache = KvmMmuMemoryCache(kvm.pool, kvm.memcache.capacity)
    prot = KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_R | (KVM_PGTABLE_PROT_W if writable else 0)
    kvm.ioremaps.append((guest_ipa, pa, size, bool(writable)))
    size += guest_ipa & (psize - 1)
    guest_ipa &= ~(psize - 1)
    addr = guest_ipa
    while addr < (guest_ipa + size) & U64:
        ret = cache.topup(kvm.kvm_mmu_cache_min_pages())
        if ret:
            break
        ret = pgt.map(addr, psize, pa, prot, cache)
        if ret:
            break
        pa += psize
        pa &= U64
        addr += psize
    cache.free()
    return ret


def stage2_wp_range(kvm, addr, end):
    stage2_apply_range(kvm, addr, end, _wrprotect, True)


def kvm_mmu_wp_memory_region(kvm, slot_id):
    slot = next((s for s in kvm.memslots if s.id == slot_id), None)
    if slot is None:
        kvm.warn("kvm_mmu_wp_memory_region: no such slot")
        return
    start = slot.base_gfn << kvm.page_shift
    end = (slot.base_gfn + slot.npages) << kvm.page_shift
    stage2_wp_range(kvm, start, end)
    kvm.flush_remote_tlbs()


def kvm_mmu_write_protect_pt_masked(kvm, slot, gfn_offset, mask):
    base_gfn = slot.base_gfn + gfn_offset
    ffs = (mask & -mask).bit_length() - 1
    fls = mask.bit_length() - 1
    start = (base_gfn + ffs) << kvm.page_shift
    end = (base_gfn + fls + 1) << kvm.page_shift
    stage2_wp_range(kvm, start, end)


def kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, gfn_offset, mask):
    kvm_mmu_write_protect_pt_masked(kvm, slot, gfn_offset, mask)


def clean_dcache_guest_page(kvm, pfn, size):
    """__clean_dcache_guest_page: skipped with FWB."""
    if not kvm.fwb:
        kvm.log(("dcache", pfn << kvm.page_shift, size))


def invalidate_icache_guest_page(kvm, pfn, size):
    """__invalidate_icache_guest_page: skipped with DIC."""
    if not kvm.dic:
        kvm.log(("icache", pfn << kvm.page_shift, size))


# -- memslot hooks ---------------------------------------------------------------------------

def kvm_arch_commit_memory_region(kvm, mem, old, new, change):
    slot_id, flags = mem[0], mem[1]
    if change != KVM_MR_DELETE and flags & KVM_MEM_LOG_DIRTY_PAGES:
        if not kvm.manual_protect_init_set:
            kvm_mmu_wp_memory_region(kvm, slot_id)


def kvm_arch_prepare_memory_region(kvm, slot, mem, change) -> int:
    """mem is (slot, flags, guest_phys_addr, memory_size, userspace_addr)."""
    _, _, guest_phys_addr, memory_size, userspace_addr = mem
    ps = kvm.page_shift
    hva = userspace_addr
    reg_end = hva + memory_size
    writable = not mem[1] & KVM_MEM_READONLY
    ret = 0
    if change not in (KVM_MR_CREATE, KVM_MR_MOVE, KVM_MR_FLAGS_ONLY):
        return 0
    if slot.base_gfn + slot.npages > (kvm.kvm_phys_size() >> ps):
        return -errno.EFAULT
    while True:
        vma = kvm.host.find_vma_intersection(hva, reg_end)
        if vma is None:
            break
        vm_start = max(hva, vma.start)
        vm_end = min(reg_end, vma.end)
        if vma.kind == PFNMAP:
            gpa = guest_phys_addr + (vm_start - userspace_addr)
            pa = vma.pgoff << ps
            pa += vm_start - vma.start
            if slot.flags & KVM_MEM_LOG_DIRTY_PAGES:
                return -errno.EINVAL
            ret = kvm_phys_addr_ioremap(kvm, gpa, pa, vm_end - vm_start, writable)
            if ret:
                break
        hva = vm_end
        if not hva < reg_end:
            break
    if change == KVM_MR_FLAGS_ONLY:
        return ret
    if ret:
        unmap_stage2_range(kvm, guest_phys_addr, memory_size)
    elif not kvm.fwb:
        stage2_flush_memslot(kvm, slot)
    return ret


def kvm_arch_flush_shadow_memslot(kvm, slot):
    gpa = slot.base_gfn << kvm.page_shift
    size = slot.npages << kvm.page_shift
    unmap_stage2_range(kvm, gpa, size)


# -- MMU-notifier hooks ----------------------------------------------------------------------

def kvm_unmap_gfn_range(kvm, rng) -> bool:
    if kvm.pgt is None:
        return False
    ps = kvm.page_shift
    __unmap_stage2_range(kvm, rng.start << ps, (rng.end - rng.start) << ps, rng.may_block)
    return False


def kvm_set_spte_gfn(kvm, rng) -> bool:
    pfn = rng.pte
    if kvm.pgt is None:
        return False
    if rng.end - rng.start != 1:
        kvm.warn("kvm_set_spte_gfn: range is not one page")
    clean_dcache_guest_page(kvm, pfn, 1 << kvm.page_shift)
    kvm.pgt.map(rng.start << kvm.page_shift, 1 << kvm.page_shift, pfn << kvm.page_shift,
                KVM_PGTABLE_PROT_R, None)
    return False


def kvm_age_gfn(kvm, rng) -> bool:
    ps = kvm.page_shift
    size = (rng.end - rng.start) << ps
    if kvm.pgt is None:
        return False
    if size not in (1 << ps, kvm.host.sz.PMD_SIZE, kvm.host.sz.PUD_SIZE):
        kvm.warn(f"kvm_age_gfn: range of {size:#x} bytes")
    kpte = kvm.pgt.mkold(rng.start << ps)
    return bool(kpte & KVM_PTE_VALID) and bool(kpte & KVM_PTE_LEAF_ATTR_LO_S2_AF)


def kvm_test_age_gfn(kvm, rng) -> bool:
    if kvm.pgt is None:
        return False
    return kvm.pgt.is_young(rng.start << kvm.page_shift)
