"""A guest that reads, writes and executes at IPAs, and the user-space VMM that drives KVM.

Models (not kernel code; the environment mmu.c runs in):

* ``Guest.access(ipa, kind)``: the hardware stage-2 walk of the current tables (VMSAv8-64, no
  hardware AF/dirty update: HA/HD off): an access the leaf allows completes -- a write records that
  the page was written while its slot was logging; otherwise the abort is built as the CPU reports it
  (translation > access flag > permission, the level of the descriptor that stopped the walk, the IPA
  in 4K units with the low 12 bits in FAR) and handed to ``kvm_handle_guest_abort``; 1 retries the
  access, 0 is an exit to user space (MMIO), < 0 an error, an injected abort or a skipped instruction
  ends the access. Kinds: ``read``, ``write``, ``exec``, ``s1ptw`` (the stage-1 walker reading a
  guest page table: needs read, reported as a write by KVM), ``cm`` (a DC by VA: needs read, WnR set).
  An instruction fetch that took a translation or permission fault and then completed records the
  gfn range and output address of the stage-2 leaf it completed through (``fetched``: what that
  fetch was granted).
  An optional TLB (``tlb=True``) caches valid leaves until a TLB invalidation of the page-table log
  removes them; the checks run without it.
* ``Vmm``: the VMM's ioctls (KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG) that
  keep the guest's record of written pages in step with the dirty log it harvests.
"""

from __future__ import annotations

import errno

from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.mmu.fault import FSC_ACCESS, FSC_FAULT, FSC_PERM, KvmFault, Vcpu
from ptspec.impl.mmu.memslot import gfn_to_memslot, kvm_clear_dirty_log_protect, kvm_get_dirty_log_protect, kvm_set_memory_region
from ptspec.impl.pgtable import args
from ptspec.impl.pgtable.pte import kvm_pte_to_phys

S2AP_R, S2AP_W, AF, XN = 1 << 6, 1 << 7, 1 << 10, 1 << 54
KINDS = ("read", "write", "exec", "s1ptw", "cm")
_NEED = {"read": S2AP_R, "s1ptw": S2AP_R, "cm": S2AP_R, "write": S2AP_W}


class Outcome:
    """How one guest access ended: result in done / mmio / pabt / dabt / vabt / skip / error / stuck."""

    __slots__ = ("result", "faults", "errno")

    def __init__(self, result, faults, err=0):
        self.result, self.faults, self.errno = result, faults, err

    def as_dict(self):
        return {"result": self.result, "errno": self.errno,
                "faults": [[fsc, level, write, ret] for fsc, level, write, ret in self.faults]}

    def __repr__(self):
        return f"<Outcome {self.result} after {len(self.faults)} faults>"


class Guest:
    """One vCPU of the guest."""

    def __init__(self, kvm, *, tlb: bool = False, max_faults: int = 16):
        tlb = args.flag("tlb", tlb)
        max_faults = args.positive("max_faults", max_faults)
        self.kvm = kvm
        self.vcpu = Vcpu(kvm)
        self.written: dict[int, set] = {}   # slot id -> gfn offsets written while logging
        self.fetched: dict[int, set] = {}   # slot id -> fetch grants (gfn offset, count, pa)
        self.use_tlb = tlb
        self.max_faults = max_faults
        self._tlb = [dict() for _ in range(4)]
        self._tlb_pgt = None
        self._tlb_seen = 0

    # -- the hardware walk -----------------------------------------------------------------------
    def hw_walk(self, ipa):
        """(descriptor, level) of the entry that ends the walk of ipa (0 and the start level
        when there is no table)."""
        pgt = self.kvm.pgt
        if pgt is None or pgt.pgd is None:
            return 0, 0
        gran = pgt.gran
        shift = gran.shift
        entries = gran.ptrs_per_pte
        pages = pgt.pool.pages
        ps = gran.page_shift
        level = pgt.start_level
        idx = ipa >> shift[level]
        tbl = pages[pgt.pgd[idx // entries]]
        idx &= entries - 1
        while True:
            d = tbl[idx]
            if level < 3 and d & 3 == 3:
                tbl = pages[kvm_pte_to_phys(d, ps)]
                level += 1
                idx = (ipa >> shift[level]) & (entries - 1)
                continue
            return d, level

    def _tlb_sync(self):
        pgt = self.kvm.pgt
        log = pgt.log if pgt is not None else []
        if pgt is not self._tlb_pgt or len(log) < self._tlb_seen:
            for t in self._tlb:
                t.clear()
            self._tlb_pgt, self._tlb_seen = pgt, 0
        shift = pgt.gran.shift if pgt is not None else ()
        for ev in log[self._tlb_seen:]:
            if ev[0] == "tlbi_vmid":
                for t in self._tlb:
                    t.clear()
            elif ev[0] == "tlbi_ipa":
                for lvl in range(4):
                    self._tlb[lvl].pop(ev[1] >> shift[lvl], None)
        self._tlb_seen = len(log)

    def translate(self, ipa):
        if not self.use_tlb:
            return self.hw_walk(ipa)
        self._tlb_sync()
        shift = self.kvm.pgt.gran.shift
        for lvl in (3, 2, 1):
            d = self._tlb[lvl].get(ipa >> shift[lvl])
            if d is not None:
                return d, lvl
        d, lvl = self.hw_walk(ipa)
        if d & 1 and d & AF:
            self._tlb[lvl][ipa >> shift[lvl]] = d
        return d, lvl

    # -- one access ------------------------------------------------------------------------------
    def access(self, ipa, kind="read") -> Outcome:
        if kind not in KINDS:
            raise ValueError(f"access kind must be one of {KINDS}, not {kind!r}")
        if isinstance(ipa, bool) or not isinstance(ipa, int) or not 0 <= ipa < 1 << self.kvm.ia_bits:
            raise ValueError(f"ipa {ipa!r} is not inside the {self.kvm.ia_bits}-bit IPA space")
        faults = []
        vcpu = self.vcpu
        while True:
            d, level = self.translate(ipa)
            valid = d & 1 and (level == 3) == bool(d & 2)
            if not valid:
                fsc = FSC_FAULT
            elif not d & AF:
                fsc = FSC_ACCESS
            elif (kind == "exec" and d & XN) or (kind != "exec" and not d & _NEED[kind]):
                fsc = FSC_PERM
            else:
                if kind == "write":
                    self._record_write(ipa)
                return self._done(ipa, kind, d, level, faults)
            if len(faults) >= self.max_faults:
                return Outcome("stuck", faults)
            f = KvmFault(ipa & ~0xFFF, fsc, level, wnr=kind in ("write", "cm"),
                         iabt=kind == "exec", s1ptw=kind == "s1ptw", cm=kind == "cm",
                         far_low=ipa & 0xFFF)
            n_inj, n_skip = len(vcpu.injected), vcpu.pc_skips
            ret = mmu_fault.kvm_handle_guest_abort(vcpu, f)
            faults.append((fsc, level, f.kvm_is_write_fault(), ret))
            if len(vcpu.injected) > n_inj:
                return Outcome(vcpu.injected[-1][0], faults)
            if vcpu.pc_skips > n_skip:
                return Outcome("skip", faults)
            if ret == 0:
                return Outcome("mmio", faults)
            if ret < 0:
                return Outcome("error", faults, ret)

    def _record_write(self, ipa):
        kvm = self.kvm
        gfn = ipa >> kvm.page_shift
        slot = gfn_to_memslot(kvm, gfn)
        if slot is not None and mmu_fault.memslot_is_logging(slot):
            self.written.setdefault(slot.id, set()).add(gfn - slot.base_gfn)

    def _done(self, ipa, kind, d, level, faults):
        """The access completed through leaf d at ``level``; an instruction fetch that took a
        translation or permission fault on the way records the leaf as its grant."""
        if kind == "exec" and any(fsc != FSC_ACCESS for fsc, _, _, _ in faults):
            self._record_fetch(ipa, d, level)
        return Outcome("done", faults)

    def _record_fetch(self, ipa, d, level):
        """fetched[slot id] gets (first gfn offset, pages, pa of the first page) of the leaf."""
        kvm = self.kvm
        ps = kvm.page_shift
        pages = 1 << kvm.pgt.gran.shift[level] - ps
        first = ipa >> ps & ~(pages - 1)
        slot = gfn_to_memslot(kvm, ipa >> ps)
        # (a leaf that starts before its memslot, or ends after it, breaks MS: only its part
        # inside the slot is recorded, and nothing when it starts outside)
        if slot is not None and first >= slot.base_gfn:
            n = min(pages, slot.base_gfn + slot.npages - first)
            self.fetched.setdefault(slot.id, set()).add((first - slot.base_gfn, n,
                                                         kvm_pte_to_phys(d, ps)))


class Vmm:
    """The user-space side: memory-region and dirty-log ioctls, in step with the guest's record."""

    def __init__(self, kvm, guest: Guest):
        self.kvm, self.guest = kvm, guest

    def set_memory_region(self, slot, flags, guest_phys_addr, memory_size, userspace_addr) -> int:
        before = {s.id: s.dirty_bitmap for s in self.kvm.memslots}
        placed = {s.id: (s.base_gfn, s.npages) for s in self.kvm.memslots}
        ret = kvm_set_memory_region(self.kvm, slot, flags, guest_phys_addr, memory_size,
                                    userspace_addr)
        after = {s.id: s.dirty_bitmap for s in self.kvm.memslots}
        for sid in list(self.guest.written):
            if sid not in after or after[sid] is None or after[sid] is not before.get(sid):
                del self.guest.written[sid]
        where = {s.id: (s.base_gfn, s.npages) for s in self.kvm.memslots}
        for sid in list(self.guest.fetched):        # a fetch grant lives as long as its slot
            if where.get(sid) != placed.get(sid):
                del self.guest.fetched[sid]
        return ret

    def get_dirty_log(self, slot):
        """The copied-out bitmap (an int, bit g = gfn base_gfn + g), or -ENOENT."""
        got = kvm_get_dirty_log_protect(self.kvm, slot)
        if got is None:
            return -errno.ENOENT
        if not self.kvm.manual_protect:
            self._forget(slot, got)
        return got

    def clear_dirty_log(self, slot, first_page, num_pages) -> int:
        s = next((s for s in self.kvm.memslots if s.id == slot), None)
        bm = s.dirty_bitmap if s is not None else None
        before = int.from_bytes(bm, "little") if bm is not None else 0
        ret = kvm_clear_dirty_log_protect(self.kvm, slot, first_page, num_pages)
        if ret == 0:
            self._forget(slot, before & ~int.from_bytes(bm, "little"))
        return ret

    def _forget(self, slot, mask):
        """User space consumed these dirty bits: the guest's writes to them are accounted for."""
        w = self.guest.written.get(slot)
        if w:
            w.difference_update([g for g in w if mask >> g & 1])


def once(fn):
    """A ``kvm.after_gfn_to_pfn`` hook that runs ``fn(kvm)`` at the next fault only: a host event
    racing with the fault between ``__gfn_to_pfn_memslot`` and taking ``mmu_lock``."""
    def hook(kvm):
        kvm.after_gfn_to_pfn = None
        fn(kvm)
    return hook
