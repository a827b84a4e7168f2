"""Memslots as arm64 KVM 5.13 uses them: ``struct kvm_memory_slot`` and the generic helpers around it.

Models (virt/kvm/kvm_main.c and include/linux/kvm_host.h, 5.13, reduced to one address space and
no dirty ring):

* ``struct kvm_memory_slot``: ``base_gfn``, ``npages``, ``userspace_addr``, ``flags``
  (``KVM_MEM_LOG_DIRTY_PAGES``, ``KVM_MEM_READONLY``), ``dirty_bitmap`` (a little-endian bit array,
  as ``set_bit_le`` writes it) and ``id``;
* ``gfn_to_memslot``, ``__gfn_to_hva_memslot``, ``gfn_to_hva_memslot_prot``, ``hva_to_gfn_memslot``,
  ``__gfn_to_pfn_memslot`` (through the host model's ``get_user_pages``), ``mark_page_dirty_in_slot``,
  ``memslot_is_readonly``;
* ``__kvm_set_memory_region``: argument checks, the change kind (``KVM_MR_CREATE``, ``_DELETE``,
  ``_MOVE``, ``_FLAGS_ONLY``), overlap check, dirty bitmap allocation (all ones with
  ``KVM_DIRTY_LOG_INITIALLY_SET`` under manual protect), flush of the old slot on delete / move,
  then the arch hooks ``kvm_arch_prepare_memory_region`` and ``kvm_arch_commit_memory_region``;
* ``kvm_get_dirty_log_protect`` (the bitmap is taken word by word, each non-zero word is cleared and
  handed to ``kvm_arch_mmu_enable_log_dirty_pt_masked``) and, for manual protect,
  ``kvm_clear_dirty_log_protect`` (clear the given bits, write-protect them).

Left out: address spaces other than 0, private slots, ``KVM_MEMSLOT_INVALID`` windows (the update is
atomic here), the dirty ring, ``KVM_MEM_MAX_NR_PAGES`` beyond a u32 page count.
"""

from __future__ import annotations

import errno

from ptspec.impl.pgtable import args

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MR_CREATE, KVM_MR_DELETE, KVM_MR_MOVE, KVM_MR_FLAGS_ONLY = range(4)
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
BITS_PER_LONG = 64
U64 = (1 << 64) - 1


class KvmMemorySlot:
    """struct kvm_memory_slot"""

    __slots__ = ("id", "base_gfn", "npages", "userspace_addr", "flags", "dirty_bitmap")

    def __init__(self, id, base_gfn, npages, userspace_addr, flags=0):
        self.id, self.base_gfn, self.npages = id, base_gfn, npages
        self.userspace_addr, self.flags = userspace_addr, flags
        self.dirty_bitmap = None          # bytearray of npages bits, or None

    def copy(self):
        s = KvmMemorySlot(self.id, self.base_gfn, self.npages, self.userspace_addr, self.flags)
        s.dirty_bitmap = self.dirty_bitmap
        return s

    def __repr__(self):
        return (f"<memslot {self.id} gfn {self.base_gfn:#x}+{self.npages:#x} hva "
                f"{self.userspace_addr:#x} flags {self.flags:#x}>")

    def dirty_gfns(self):
        """Offsets (gfn - base_gfn) of the set bits of the dirty bitmap."""
        bm = self.dirty_bitmap
        if bm is None:
            return []
        out = []
        for i, byte in enumerate(bm):
            while byte:
                low = byte & -byte
                out.append(i * 8 + low.bit_length() - 1)
                byte ^= low
        return out


def memslot_is_readonly(slot) -> bool:
    return bool(slot.flags & KVM_MEM_READONLY)


def gfn_to_memslot(kvm, gfn):
    """search_memslots: the slot whose [base_gfn, base_gfn + npages) holds gfn, or None."""
    for slot in kvm.memslots:
        if slot.base_gfn <= gfn < slot.base_gfn + slot.npages:
            return slot
    return None


def __gfn_to_hva_memslot(slot, gfn, page_shift):
    return slot.userspace_addr + ((gfn - slot.base_gfn) << page_shift)


def gfn_to_hva_memslot_prot(slot, gfn, page_shift):
    """(hva, writable); hva is None (KVM_HVA_ERR_BAD) without a slot."""
    if slot is None:
        return None, False
    return __gfn_to_hva_memslot(slot, gfn, page_shift), not memslot_is_readonly(slot)


def hva_to_gfn_memslot(hva, slot, page_shift):
    return slot.base_gfn + ((hva - slot.userspace_addr) >> page_shift)


def __gfn_to_pfn_memslot(kvm, slot, gfn, write_fault: bool):
    """(pfn, writable): KVM_PFN_ERR_RO_FAULT / -EFAULT as (negative, False)."""
    if slot is None:
        return -errno.EFAULT, False
    if memslot_is_readonly(slot) and write_fault:
        return -errno.EFAULT, False
    hva = __gfn_to_hva_memslot(slot, gfn, kvm.page_shift)
    pfn, writable = kvm.host.get_user_pages(hva, write_fault)
    if pfn < 0:
        return pfn, False
    if memslot_is_readonly(slot):
        writable = False
    return pfn, writable


def mark_page_dirty_in_slot(kvm, slot, gfn):
    if slot is not None and slot.dirty_bitmap is not None:
        rel = gfn - slot.base_gfn
        slot.dirty_bitmap[rel >> 3] |= 1 << (rel & 7)


def _new_bitmap(npages, all_set):
    n = (npages + 7) // 8
    bm = bytearray(b"\xff" * n if all_set else n)
    if all_set and npages % 8:
        bm[-1] = (1 << (npages % 8)) - 1
    return bm


def kvm_set_memory_region(kvm, slot_id: int, flags: int, guest_phys_addr: int, memory_size: int,
                          userspace_addr: int) -> int:
    """__kvm_set_memory_region (one address space); 0 or a negative errno.

    slot and flags are the u32 fields of struct kvm_userspace_memory_region, the rest u64."""
    slot_id = args.u32("slot", slot_id)
    flags = args.u32("flags", flags)
    for name, v in (("slot", slot_id), ("flags", flags), ("guest_phys_addr", guest_phys_addr),
                    ("memory_size", memory_size), ("userspace_addr", userspace_addr)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= U64:
            raise ValueError(f"{name} must be a u64, not {v!r}")
    ps = kvm.page_shift
    psize = 1 << ps
    if flags & ~(KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY):
        return -errno.EINVAL
    if memory_size & (psize - 1) or guest_phys_addr & (psize - 1) or userspace_addr & (psize - 1):
        return -errno.EINVAL
    if slot_id >= 512:
        return -errno.EINVAL
    if guest_phys_addr + memory_size > U64:
        return -errno.EINVAL
    if (memory_size >> ps) > KVM_MEM_MAX_NR_PAGES:
        return -errno.EINVAL
    old = next((s for s in kvm.memslots if s.id == slot_id), None)
    npages = memory_size >> ps
    base_gfn = guest_phys_addr >> ps
    if not npages:
        if old is None:
            return -errno.EINVAL
        change = KVM_MR_DELETE
    elif old is None:
        change = KVM_MR_CREATE
    else:
        if userspace_addr != old.userspace_addr or npages != old.npages or \
                (flags ^ old.flags) & KVM_MEM_READONLY:
            return -errno.EINVAL
        if base_gfn != old.base_gfn:
            change = KVM_MR_MOVE
        elif flags != old.flags:
            change = KVM_MR_FLAGS_ONLY
        else:
            return 0
    if change in (KVM_MR_CREATE, KVM_MR_MOVE):
        for s in kvm.memslots:
            if s.id != slot_id and base_gfn < s.base_gfn + s.npages and s.base_gfn < base_gfn + npages:
                return -errno.EEXIST
    if change == KVM_MR_DELETE:
        kvm.memslots.remove(old)
        from ptspec.impl.mmu.stage2 import kvm_arch_flush_shadow_memslot
        kvm_arch_flush_shadow_memslot(kvm, old)
        return 0
    new = KvmMemorySlot(slot_id, base_gfn, npages, userspace_addr, flags)
    if flags & KVM_MEM_LOG_DIRTY_PAGES:
        if old is not None and old.dirty_bitmap is not None and change != KVM_MR_CREATE:
            new.dirty_bitmap = old.dirty_bitmap
        else:
            new.dirty_bitmap = _new_bitmap(npages, kvm.manual_protect_init_set)
    from ptspec.impl.mmu.stage2 import kvm_arch_commit_memory_region, kvm_arch_prepare_memory_region
    if change == KVM_MR_MOVE:
        # the old slot is made invalid and its stage-2 mappings dropped before the arch hook
        kvm.memslots.remove(old)
        from ptspec.impl.mmu.stage2 import kvm_arch_flush_shadow_memslot
        kvm_arch_flush_shadow_memslot(kvm, old)
    r = kvm_arch_prepare_memory_region(kvm, new, (slot_id, flags, guest_phys_addr, memory_size,
                                                  userspace_addr), change)
    if r:
        if change == KVM_MR_MOVE:
            kvm.memslots.append(old)
            kvm.memslots.sort(key=lambda s: s.base_gfn)
        return r
    if old is not None and change != KVM_MR_MOVE:
        kvm.memslots.remove(old)
    kvm.memslots.append(new)
    kvm.memslots.sort(key=lambda s: s.base_gfn)
    kvm_arch_commit_memory_region(kvm, (slot_id, flags, guest_phys_addr, memory_size,
                                        userspace_addr), old, new, change)
    return 0


def kvm_get_dirty_log_protect(kvm, slot_id: int):
    """KVM_GET_DIRTY_LOG: the bitmap copied out, as an int (bit g = gfn base_gfn + g); the set bits
    are cleared and write-protected unless manual protect is on. None (-ENOENT) without a bitmap."""
    slot_id = args.u32("slot", slot_id)
    slot = next((s for s in kvm.memslots if s.id == slot_id), None)
    if slot is None or slot.dirty_bitmap is None:
        return None
    taken = int.from_bytes(slot.dirty_bitmap, "little")
    if kvm.manual_protect:
        return taken
    from ptspec.impl.mmu.stage2 import kvm_arch_mmu_enable_log_dirty_pt_masked
    bm = slot.dirty_bitmap
    flush = False
    for w in range(0, len(bm), 8):
        mask = int.from_bytes(bm[w:w + 8], "little")
        if mask:
            flush = True
            bm[w:w + 8] = bytes(len(bm[w:w + 8]))
            kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, w * 8, mask)
    if flush:
        kvm.flush_remote_tlbs()          # kvm_arch_flush_remote_tlbs_memslot
    return taken


def kvm_clear_dirty_log_protect(kvm, slot_id: int, first_page: int, num_pages: int) -> int:
    """KVM_CLEAR_DIRTY_LOG (manual protect): clear and write-protect the set bits of the range.

    first_page must be a multiple of 64 and the range inside the slot (else -EINVAL). slot and
    num_pages are u32, first_page a u64 (struct kvm_clear_dirty_log).
    """
    slot_id = args.u32("slot", slot_id)
    first_page = args.u64("first_page", first_page)
    num_pages = args.u32("num_pages", num_pages)
    slot = next((s for s in kvm.memslots if s.id == slot_id), None)
    if slot is None or slot.dirty_bitmap is None:
        return -errno.ENOENT
    if first_page & 63 or first_page + num_pages > slot.npages or first_page + num_pages < first_page:
        return -errno.EINVAL
    if num_pages & 63 and first_page + num_pages != slot.npages:
        return -errno.EINVAL
    from ptspec.impl.mmu.stage2 import kvm_arch_mmu_enable_log_dirty_pt_masked
    bm = slot.dirty_bitmap
    flush = False
    for off in range(first_page, first_page + num_pages, BITS_PER_LONG):
        n = min(BITS_PER_LONG, first_page + num_pages - off)
        w = off // 8
        word = int.from_bytes(bm[w:w + 8], "little")
        mask = word & ((1 << n) - 1)
        if mask:
            flush = True
            word &= ~mask
            bm[w:w + 8] = word.to_bytes(8, "little")[:len(bm[w:w + 8])]
            kvm_arch_mmu_enable_log_dirty_pt_masked(kvm, slot, off, mask)
    if flush:
        kvm.flush_remote_tlbs()
    return 0
