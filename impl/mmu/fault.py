"""The stage-2 fault path of arch/arm64/kvm/mmu.c (Linux 5.13): ``kvm_handle_guest_abort`` and friends.

Models, faithfully and in the kernel's order of operations:

* ``struct KvmFault``: what the handler reads from ESR_EL2 / HPFAR_EL2 / FAR_EL2 (fault status code,
  fault level, WnR, instruction abort, stage-1 page-table walk, cache maintenance, the low 12 bits of
  the faulting VA), with ``kvm_is_write_fault`` and ``kvm_vcpu_trap_is_exec_fault`` of 5.13;
* ``fault_supports_stage2_huge_mapping`` (guest/host alignment within the block, block inside the
  memslot), ``transparent_hugepage_adjust``;
* ``user_mem_abort``: the VMA lookup, the ``vma_shift`` fall-through PUD -> CONT_PMD -> PMD -> CONT_PTE
  -> PAGE, logging and PFNMAP forcing pages, memcache top-up, ``mmu_notifier_seq`` snapshot,
  ``__gfn_to_pfn_memslot``, device pfns (force pages, -ENOEXEC on exec), read faults mapped read-only
  while logging, the notifier retry, THP adjustment, cache maintenance, prot, relax-perms vs map by
  fault granule, dirty marking only on success, ``-EAGAIN`` -> 0;
* ``handle_access_fault`` and ``kvm_handle_guest_abort`` routing.

Left out: synchronous external aborts are reduced to "inject a virtual SError, return 1"
(``kvm_handle_guest_sea`` without RAS), hwpoison, ``io_mem_abort``'s in-kernel devices (every MMIO
access exits to user space: returns 0), MTE.
"""

from __future__ import annotations

import errno

from ptspec.impl.mmu.host import HUGETLB, PFNMAP
from ptspec.impl.mmu.memslot import KVM_MEM_READONLY, __gfn_to_pfn_memslot, gfn_to_hva_memslot_prot, gfn_to_memslot, mark_page_dirty_in_slot
from ptspec.impl.mmu.stage2 import clean_dcache_guest_page, invalidate_icache_guest_page
from ptspec.impl.pgtable import args
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_DEVICE, KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X, KVM_PTE_VALID, kvm_pte_to_phys

FSC_FAULT, FSC_ACCESS, FSC_PERM = 0x04, 0x08, 0x0C     # ESR_ELx_FSC_* without the level bits
FSC_SEA = 0x10
FSC_NAMES = {FSC_FAULT: "FSC_FAULT", FSC_ACCESS: "FSC_ACCESS", FSC_PERM: "FSC_PERM",
             FSC_SEA: "FSC_SEA"}


class KvmFault:
    """The fault syndrome of one stage-2 abort, as kvm_vcpu_* accessors return it."""

    __slots__ = ("ipa", "fsc", "level", "wnr", "iabt", "s1ptw", "cm", "far_low", "sea")

    def __init__(self, ipa, fsc, level, *, wnr=False, iabt=False, s1ptw=False, cm=False,
                 far_low=0, sea=False):
        ipa = args.u64("ipa", ipa)
        fsc = args.u8("fsc", fsc)
        level = args.u8("level", level)
        wnr = args.flag("wnr", wnr)
        iabt = args.flag("iabt", iabt)
        s1ptw = args.flag("s1ptw", s1ptw)
        cm = args.flag("cm", cm)
        far_low = args.u64("far_low", far_low)
        sea = args.flag("sea", sea)
        self.ipa, self.fsc, self.level = ipa, fsc, level
        self.wnr, self.iabt, self.s1ptw, self.cm = wnr, iabt, s1ptw, cm
        self.far_low, self.sea = far_low & 0xFFF, sea

    def kvm_is_write_fault(self) -> bool:
        if self.s1ptw:
            return True
        if self.iabt:
            return False
        return self.wnr

    def kvm_vcpu_trap_is_exec_fault(self) -> bool:
        return self.iabt and not self.s1ptw

    def __repr__(self):
        flags = "".join(f", {k}=True" for k in ("wnr", "iabt", "s1ptw", "cm", "sea")
                        if getattr(self, k))
        return (f"KvmFault({self.ipa:#x}, {FSC_NAMES.get(self.fsc, hex(self.fsc))}, {self.level}"
                f"{flags}{f', far_low={self.far_low:#x}' if self.far_low else ''})")


class Vcpu:
    """What a vCPU exit leaves behind: injected exceptions, skipped instructions, MMIO exits."""

    def __init__(self, kvm):
        self.kvm = kvm
        self.injected: list = []         # ("dabt" | "pabt" | "vabt", far)
        self.pc_skips = 0


def memslot_is_logging(slot) -> bool:
    return slot.dirty_bitmap is not None and not slot.flags & KVM_MEM_READONLY


def fault_supports_stage2_huge_mapping(kvm, slot, hva, map_size) -> bool:
    ps = kvm.page_shift
    if map_size == 1 << ps:
        return True
    size = slot.npages << ps
    gpa_start = slot.base_gfn << ps
    uaddr_start = slot.userspace_addr
    uaddr_end = uaddr_start + size
    if (gpa_start & (map_size - 1)) != (uaddr_start & (map_size - 1)):
        return False
    return (hva & ~(map_size - 1)) >= uaddr_start and \
        (hva & ~(map_size - 1)) + map_size <= uaddr_end


def transparent_hugepage_adjust(kvm, slot, hva, pfn, ipa):
    """Returns (map size, pfn, ipa)."""
    host = kvm.host
    sz = host.sz
    if host.is_transparent_hugepage(pfn) and \
            fault_supports_stage2_huge_mapping(kvm, slot, hva, sz.PMD_SIZE):
        ipa &= ~(sz.PMD_SIZE - 1)
        host.kvm_release_pfn_clean(pfn)
        pfn &= ~(sz.PTRS_PER_PMD - 1)
        host.kvm_get_pfn(pfn)
        return sz.PMD_SIZE, pfn, ipa
    return sz.PAGE_SIZE, pfn, ipa


def vma_shift_fallthrough(kvm, slot, hva, vma_shift):
    """The switch on vma_shift: returns (vma_shift, force_pte set by it)."""
    sz = kvm.host.sz
    force_pte = False
    case = vma_shift
    if case == sz.PUD_SHIFT and not sz.pmd_folded:
        if fault_supports_stage2_huge_mapping(kvm, slot, hva, sz.PUD_SIZE):
            return vma_shift, force_pte
        case = sz.CONT_PMD_SHIFT
    if case == sz.CONT_PMD_SHIFT:
        vma_shift = sz.PMD_SHIFT
        case = sz.PMD_SHIFT
    if case == sz.PMD_SHIFT:
        if fault_supports_stage2_huge_mapping(kvm, slot, hva, sz.PMD_SIZE):
            return vma_shift, force_pte
        case = sz.CONT_PTE_SHIFT
    if case == sz.CONT_PTE_SHIFT:
        vma_shift = sz.PAGE_SHIFT
        force_pte = True
        case = sz.PAGE_SHIFT
    if case != sz.PAGE_SHIFT:
        kvm.warn(f"Unknown vma_shift {vma_shift}")
    return vma_shift, force_pte


def user_mem_abort(vcpu, fault_ipa, slot, hva, f: KvmFault) -> int:
    kvm = vcpu.kvm
    host = kvm.host
    sz = host.sz
    ps = kvm.page_shift
    ret = 0
    force_pte = False
    device = False
    memcache = kvm.memcache
    logging_active = memslot_is_logging(slot)
    fault_status = f.fsc
    prot = KVM_PGTABLE_PROT_R
    fault_granule = 1 << ((ps - 3) * (4 - f.level) + 3)
    write_fault = f.kvm_is_write_fault()
    exec_fault = f.kvm_vcpu_trap_is_exec_fault()
    if write_fault and exec_fault:
        kvm.warn("user_mem_abort: write and exec fault at once")
    if fault_status == FSC_PERM and not write_fault and not exec_fault:
        return -errno.EFAULT

    vma = host.find_vma_intersection(hva, hva + 1)
    if vma is None:
        return -errno.EFAULT
    vma_shift = vma.shift if vma.kind == HUGETLB else ps
    if logging_active or vma.kind == PFNMAP:
        force_pte = True
        vma_shift = ps
    vma_shift, forced = vma_shift_fallthrough(kvm, slot, hva, vma_shift)
    force_pte |= forced
    vma_pagesize = 1 << vma_shift
    if vma_pagesize in (sz.PMD_SIZE, sz.PUD_SIZE):
        fault_ipa &= ~(vma_pagesize - 1)
    gfn = fault_ipa >> ps

    if fault_status != FSC_PERM or (logging_active and write_fault):
        ret = memcache.topup(kvm.kvm_mmu_cache_min_pages())
        if ret:
            return ret

    mmu_seq = kvm.mmu_notifier_seq
    pfn, writable = __gfn_to_pfn_memslot(kvm, slot, gfn, write_fault)
    if kvm.after_gfn_to_pfn is not None:
        kvm.after_gfn_to_pfn(kvm)
    if pfn < 0:
        return -errno.EFAULT
    if not host.pfn_valid(pfn):
        device = True
        force_pte = True
    elif logging_active and not write_fault:
        writable = False
    if exec_fault and device:
        return -errno.ENOEXEC

    pgt = kvm.pgt
    if not kvm.mmu_notifier_retry(mmu_seq):
        if vma_pagesize == sz.PAGE_SIZE and not force_pte:
            vma_pagesize, pfn, fault_ipa = transparent_hugepage_adjust(kvm, slot, hva, pfn,
                                                                        fault_ipa)
        if writable:
            prot |= KVM_PGTABLE_PROT_W
        if fault_status != FSC_PERM and not device:
            clean_dcache_guest_page(kvm, pfn, vma_pagesize)
        if exec_fault:
            prot |= KVM_PGTABLE_PROT_X
            invalidate_icache_guest_page(kvm, pfn, vma_pagesize)
        if device:
            prot |= KVM_PGTABLE_PROT_DEVICE
        elif kvm.dic:
            prot |= KVM_PGTABLE_PROT_X
        if fault_status == FSC_PERM and vma_pagesize == fault_granule:
            ret = pgt.relax_perms(fault_ipa, prot)
        else:
            ret = pgt.map(fault_ipa, vma_pagesize, pfn << ps, prot, memcache)
        if writable and not ret:
            host.kvm_set_pfn_dirty(pfn)
            mark_page_dirty_in_slot(kvm, slot, gfn)
    host.kvm_set_pfn_accessed(pfn)
    host.kvm_release_pfn_clean(pfn)
    return ret if ret != -errno.EAGAIN else 0


def handle_access_fault(vcpu, fault_ipa):
    kvm = vcpu.kvm
    kpte = kvm.pgt.mkyoung(fault_ipa)
    if kpte & KVM_PTE_VALID:
        kvm.host.kvm_set_pfn_accessed(kvm_pte_to_phys(kpte, kvm.page_shift) >> kvm.page_shift)


def io_mem_abort(vcpu, fault_ipa, f: KvmFault) -> int:
    """Every MMIO access exits to user space (KVM_EXIT_MMIO): returns 0."""
    vcpu.kvm.mmio_exits.append((fault_ipa, f.kvm_is_write_fault()))
    return 0


def kvm_handle_guest_abort(vcpu, f: KvmFault) -> int:
    """1: resume the guest; 0: exit to user space; < 0: error to user space."""
    kvm = vcpu.kvm
    ps = kvm.page_shift
    fault_status = f.fsc
    fault_ipa = f.ipa
    is_iabt = f.iabt
    if f.sea:
        vcpu.injected.append(("vabt", fault_ipa))
        return 1
    if fault_status not in (FSC_FAULT, FSC_PERM, FSC_ACCESS):
        return -errno.EFAULT
    gfn = fault_ipa >> ps
    slot = gfn_to_memslot(kvm, gfn)
    hva, writable = gfn_to_hva_memslot_prot(slot, gfn, ps)
    write_fault = f.kvm_is_write_fault()
    if hva is None or (write_fault and not writable):
        if is_iabt:
            ret = -errno.ENOEXEC
        elif f.s1ptw:
            vcpu.injected.append(("dabt", fault_ipa | f.far_low))
            return 1
        elif hva is None and f.cm:
            vcpu.pc_skips += 1
            return 1
        else:
            fault_ipa |= f.far_low
            return io_mem_abort(vcpu, fault_ipa, f)
    else:
        if fault_ipa >= kvm.kvm_phys_size():
            kvm.warn(f"VM_BUG_ON: fault IPA {fault_ipa:#x} beyond the IPA space")
        if fault_status == FSC_ACCESS:
            handle_access_fault(vcpu, fault_ipa)
            return 1
        ret = user_mem_abort(vcpu, fault_ipa, slot, hva, f)
        if ret == 0:
            ret = 1
    if ret == -errno.ENOEXEC:
        vcpu.injected.append(("pabt", fault_ipa | f.far_low))
        ret = 1
    return ret
