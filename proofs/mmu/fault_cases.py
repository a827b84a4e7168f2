"""The fault-path cases of ``mmu.units.fault.*`` (``routing``, ``huge``, ``abort``; registered by
proofs/mmu/checks_fault_units.py) and the helpers every case module shares (``Expect``, ``_vm``).
The other cases are in proofs/mmu/tlb_cases.py and proofs/mmu/vm_cases.py.

Each case builds a small VM (``ptspec.impl.mmu.host.HostMM``, ``ptspec.impl.mmu.kvm.Kvm``), calls one mmu.c
function (or a guest access) with inputs chosen by hand, and compares what comes back with what the
kernel code does for them, worked out from the 5.13 source by hand (the expected values are
literals or kernel formulas here, never the impl's own answer):

* ``routing``: ``kvm_handle_guest_abort``'s answer (1 resume, 0 exit, -errno), the exception it
  injects and the FAR it reports (IPA | FAR[11:0]), the skipped instruction, the MMIO exit record,
  the syndrome helpers (``kvm_is_write_fault``, ``kvm_vcpu_trap_is_exec_fault``), no WARN;
* ``huge``: ``fault_supports_stage2_huge_mapping`` on a table of slots and HVAs, the ``vma_shift``
  fall-through, ``kvm_mmu_cache_min_pages`` (``kvm_stage2_levels - 1``) per geometry;
* ``abort``: ``user_mem_abort``'s return values (-EFAULT, -ENOMEM, -EAGAIN as 0, a notifier retry
  as 0), the leaf it installs (block sizes, R/W/X, device), the host page state it leaves
  (``kvm_set_pfn_dirty`` / ``_accessed``), ``handle_access_fault``;
* ``notifier``: the sequence count and retry, change_pte installing the KSM page read-only,
  ``kvm_init_stage2_mmu`` / ``kvm_free_stage2_pgd``, the ``Kvm`` defaults that are kernel facts
  (40-bit IPA, 4K pages, 40 objects per memcache);
* ``tlb``: a guest with the TLB model behaves exactly like one that walks the tables on every
  access (with correct TLB invalidation by the page-table code, a TLB is invisible), over a
  sequence that maps, harvests, write-protects, zaps and splits;
* ``vmm``: the dirty-log ioctls' answers and the guest's record of unharvested writes.

A failed expectation is reported with the case's name, the call and both values. Left out: what
the random and exhaustive checks already judge through the spec.
"""

from __future__ import annotations

import errno

from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu.fault import FSC_ACCESS, FSC_FAULT, FSC_PERM, KvmFault, Vcpu
from ptspec.impl.mmu.guest import Guest, Vmm
from ptspec.impl.mmu.host import HostMM
from ptspec.impl.mmu.kvm import Kvm
from ptspec.impl.mmu.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KvmMemorySlot as MemSlot

S2AP_R, S2AP_W, AF, XN = 1 << 6, 1 << 7, 1 << 10, 1 << 54
HVA = 0x4000_0000_0000
GPA = 0x1_0000_0000
P = 0x1000
PMD = 0x20_0000


class Expect:
    """Collects failed expectations of one case."""

    def __init__(self, case):
        self.case = case
        self.failed: list[str] = []
        self.n = 0

    def eq(self, what, got, want):
        self.n += 1
        if got != want or type(got) is not type(want) and isinstance(want, bool):
            self.failed.append(f"{self.case}: {what}: got {got!r}, expected {want!r}")

    def true(self, what, cond):
        self.n += 1
        if not cond:
            self.failed.append(f"{self.case}: {what}")


def _vm(*, slots=(("anon", 0x40_0000, {}),), flags=0, ia_bits=40, **kw):
    """host + kvm + guest + vmm with slot i over VMA i at GPA + i*1G, HVA + i*1G."""
    host = HostMM(12)
    kvm = Kvm(12, ia_bits, host=host, arena_pages=256, **kw)
    guest = Guest(kvm)
    vmm = Vmm(kvm, guest)
    for i, (kind, size, opts) in enumerate(slots):
        host.mmap(HVA + i * 0x4000_0000, size, kind, **opts)
        f = flags[i] if isinstance(flags, tuple) else flags
        assert vmm.set_memory_region(i, f, GPA + i * 0x4000_0000, size, HVA + i * 0x4000_0000) == 0
    return host, kvm, guest, vmm


def _leaf(guest, ipa):
    d, level = guest.hw_walk(ipa)
    valid = d & 1 and (level == 3) == bool(d & 2)
    return (d, level) if valid else (0, level)


def _oa(d):
    return d & 0x0000_FFFF_FFFF_F000


# -- routing ---------------------------------------------------------------------------------------

def case_routing(e: Expect):
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {}), ("anon", P, {})),
                                flags=(0, KVM_MEM_READONLY))
    vcpu = Vcpu(kvm)
    e.eq("Vcpu() pc_skips", vcpu.pc_skips, 0)
    out = 0x8000_0000           # no memslot here
    f = KvmFault(GPA, FSC_FAULT, 3)
    e.eq("KvmFault defaults", (f.wnr, f.iabt, f.s1ptw, f.cm, f.far_low, f.sea),
         (False, False, False, False, 0, False))
    e.eq("KvmFault far_low masks FAR[11:0]", KvmFault(0, FSC_FAULT, 3, far_low=0x1ABC).far_low, 0xABC)
    e.eq("KvmFault far_low keeps bit 0", KvmFault(0, FSC_FAULT, 3, far_low=0x1).far_low, 0x1)
    e.eq("repr", repr(KvmFault(0x1000, FSC_PERM, 2, wnr=True, far_low=0x10)),
         "KvmFault(0x1000, FSC_PERM, 2, wnr=True, far_low=0x10)")
    for kw, w, x in ((dict(), False, False), (dict(wnr=True), True, False),
                     (dict(iabt=True), False, True), (dict(iabt=True, wnr=True), False, True),
                     (dict(s1ptw=True), True, False), (dict(s1ptw=True, iabt=True), True, False),
                     (dict(cm=True, wnr=True), True, False)):
        f = KvmFault(0, FSC_FAULT, 3, **kw)
        e.eq(f"kvm_is_write_fault {kw}", f.kvm_is_write_fault(), w)
        e.eq(f"kvm_vcpu_trap_is_exec_fault {kw}", f.kvm_vcpu_trap_is_exec_fault(), x)

    def run(f, ret, injected=None, skips=0, mmio=None):
        n_inj, n_mmio, sk = len(vcpu.injected), len(kvm.mmio_exits), vcpu.pc_skips
        got = mmu_fault.kvm_handle_guest_abort(vcpu, f)
        e.eq(f"kvm_handle_guest_abort({f!r})", got, ret)
        e.eq(f"injected by {f!r}", vcpu.injected[n_inj:], [injected] if injected else [])
        e.eq(f"instructions skipped by {f!r}", vcpu.pc_skips - sk, skips)
        e.eq(f"MMIO exits of {f!r}", kvm.mmio_exits[n_mmio:], [mmio] if mmio else [])

    run(KvmFault(GPA, FSC_FAULT, 3, sea=True), 1, ("vabt", GPA))
    run(KvmFault(GPA, 0x10, 3), -errno.EFAULT)
    run(KvmFault(GPA, 0x14, 3), -errno.EFAULT)
    run(KvmFault(out, FSC_FAULT, 1, iabt=True, far_low=0x124), 1, ("pabt", out | 0x124))
    run(KvmFault(out, FSC_FAULT, 1, s1ptw=True, far_low=0x128), 1, ("dabt", out | 0x128))
    run(KvmFault(out, FSC_FAULT, 1, cm=True, wnr=True, far_low=0x40), 1, skips=1)
    run(KvmFault(out, FSC_FAULT, 1, far_low=0x18), 0, mmio=(out | 0x18, False))
    run(KvmFault(out, FSC_FAULT, 1, wnr=True, far_low=0x8), 0, mmio=(out | 0x8, True))
    ro = GPA + 0x4000_0000
    run(KvmFault(ro, FSC_FAULT, 3, cm=True, wnr=True, far_low=0x30), 0, mmio=(ro | 0x30, True))
    run(KvmFault(ro, FSC_FAULT, 3, iabt=True, wnr=True, far_low=0x4), 1)   # exec reads: mapped
    run(KvmFault(ro, FSC_FAULT, 3, s1ptw=True, far_low=0x4), 1, ("dabt", ro | 0x4))
    run(KvmFault(GPA + 2 * P, FSC_FAULT, 3, far_low=0x20), 1)
    e.true("a read fault inside a memslot maps the page", _leaf(guest, GPA + 2 * P)[0] & 1)
    # an access-flag fault: the old leaf is made young and the page marked accessed
    ipa = GPA + 5 * P
    run(KvmFault(ipa, FSC_FAULT, 3), 1)
    d, _ = _leaf(guest, ipa)
    kvm.pgt.mkold(ipa)
    host.accessed.clear()
    run(KvmFault(ipa, FSC_ACCESS, 3), 1)
    e.true("handle_access_fault makes the leaf young", _leaf(guest, ipa)[0] & AF)
    e.eq("handle_access_fault marks the page accessed", host.accessed, {_oa(d) >> 12})
    host.accessed.clear()
    run(KvmFault(GPA + 0x30_0000, FSC_ACCESS, 3), 1)       # nothing mapped there
    e.eq("handle_access_fault on an unmapped IPA", host.accessed, set())
    e.eq("warnings", kvm.warnings, [])


# -- huge mappings ------------------------------------------------------------------------------

def case_huge(e: Expect):
    host, kvm, guest, vmm = _vm()
    sz = host.sz

    def supports(base_gfn, npages, uaddr, hva, size):
        return mmu_fault.fault_supports_stage2_huge_mapping(kvm, MemSlot(9, base_gfn, npages, uaddr),
                                                            hva, size)
    g = GPA >> 12
    # (base_gfn, npages, userspace_addr, hva, size) -> kernel answer
    table = [
        ((g, 1024, HVA, HVA, PMD), True),                   # block at the slot's start
        ((g, 1024, HVA, HVA + 0x3F_F000, PMD), True),       # block ending at the slot's end
        ((g, 1023, HVA, HVA + 0x3F_E000, PMD), False),      # the last block sticks out
        ((g + 1, 1023, HVA + P, HVA + P, PMD), False),      # the first block starts before it
        ((g + 1, 1023, HVA + P, HVA + PMD, PMD), True),
        ((g + 1, 1024, HVA + 2 * P, HVA + PMD, PMD), False),  # offsets disagree
        ((g + 0x10, 1024, HVA + 0x1_0000, HVA + PMD, PMD), True),   # agree, both unaligned
        ((g, 1024, HVA + P, HVA + PMD, PMD), False),
        ((g + 1, 1024, HVA, HVA + PMD, PMD), False),
        ((g, 1 << 18, HVA, HVA + 0x1234_5000, 1 << 30), True),
        ((g, (1 << 18) - 1, HVA, HVA, 1 << 30), False),
        ((g, 4, HVA, HVA + 0x10_0000, P), True),            # a page: always
        ((g + 3, 4, HVA + 0x10_0000, HVA, P), True),
    ]
    for args, want in table:
        e.eq(f"fault_supports_stage2_huge_mapping{tuple(hex(a) for a in args)}", supports(*args), want)
    slot = MemSlot(9, g, 1024, HVA)
    odd = MemSlot(9, g + 1, 1024, HVA)
    for shift, s, want in ((sz.PUD_SHIFT, MemSlot(9, g, 1 << 18, HVA), (sz.PUD_SHIFT, False)),
                           (sz.PUD_SHIFT, slot, (sz.PMD_SHIFT, False)),
                           (sz.PUD_SHIFT, odd, (12, True)),
                           (sz.CONT_PMD_SHIFT, slot, (sz.PMD_SHIFT, False)),
                           (sz.PMD_SHIFT, slot, (sz.PMD_SHIFT, False)),
                           (sz.PMD_SHIFT, odd, (12, True)),
                           (sz.CONT_PTE_SHIFT, slot, (12, True)),
                           (12, slot, (12, False))):
        e.eq(f"vma_shift_fallthrough({shift}, slot {s!r})",
             mmu_fault.vma_shift_fallthrough(kvm, s, HVA, shift), want)
    e.eq("warnings after known shifts", kvm.warnings, [])
    mmu_fault.vma_shift_fallthrough(kvm, slot, HVA, 13)
    e.eq("an unknown vma_shift WARNs", len(kvm.warnings), 1)
    for ps, ia in ((12, 40), (12, 48), (12, 36), (14, 40), (14, 47), (16, 42), (16, 48)):
        k = Kvm(ps, ia, arena_pages=64)
        levels = (ia - 4 - 4) // (ps - 3)       # kvm_stage2_levels: ARM64_HW_PGTABLE_LEVELS(ia - 4)
        e.eq(f"kvm_mmu_cache_min_pages {1 << (ps - 10)}K/{ia}", k.kvm_mmu_cache_min_pages(),
             levels - 1)
    k = Kvm()
    e.eq("Kvm() geometry (4K pages, KVM_PHYS_SHIFT 40)", (k.page_shift, k.ia_bits), (12, 40))
    e.eq("Kvm() memcache capacity (KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE)", k.memcache.capacity, 40)
    e.true("Kvm(host=h) uses h", Kvm(host=host, arena_pages=64).host is host)
    try:
        Kvm(arena_pages=64, manual_protect=True, init_set=True)
        e.true("manual protect with initially-set", True)
    except ValueError:
        e.true("Kvm(manual_protect=True, init_set=True) must be accepted", False)
    try:
        Kvm(arena_pages=64, init_set=True)
        e.true("Kvm(init_set=True) without manual protect must be refused", False)
    except ValueError:
        e.true("init_set alone refused", True)


# -- user_mem_abort -------------------------------------------------------------------------------

def _fault(kvm, ipa, fsc=FSC_FAULT, level=3, **kw):
    vcpu = Vcpu(kvm)
    return mmu_fault.kvm_handle_guest_abort(vcpu, KvmFault(ipa, fsc, level, **kw)), vcpu


def _uma(kvm, ipa, fsc=FSC_FAULT, level=3, slot=0, **kw):
    s = next(s for s in kvm.memslots if s.id == slot)
    hva = s.userspace_addr + (ipa - (s.base_gfn << 12))
    return mmu_fault.user_mem_abort(Vcpu(kvm), ipa, s, hva, KvmFault(ipa, fsc, level, **kw))


def case_abort(e: Expect):
    # THP: a read maps a PMD block, writable; the host page is dirty and accessed
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {"thp": True}),))
    e.eq("read fault on THP", _uma(kvm, GPA + 0x3000), 0)
    d, lvl = _leaf(guest, GPA + 0x3000)
    e.eq("THP fault maps a level-2 block", lvl, 2)
    e.true("THP block readable and writable", d & S2AP_R and d & S2AP_W)
    e.true("no exec without an exec fault", d & XN)
    pfn = _oa(d) >> 12
    e.true("host page marked accessed", pfn in host.accessed)
    e.true("host page marked dirty (mapped writable)", pfn in host.dirty)
    e.eq("no page reference left", host.refs, {})
    e.true("dcache clean of the block", ("dcache", pfn << 12, PMD) in kvm.pgt.log)
    # a second vCPU's stale fault on the same block: -EAGAIN from the map is success
    e.eq("stale fault on a mapped block", _uma(kvm, GPA + 0x5000), 0)
    # exec permission fault on the block: relaxed, readable and executable, I-cache invalidated
    kvm.pgt.log.clear()
    e.eq("exec permission fault", _uma(kvm, GPA + 0x5000, FSC_PERM, 2, iabt=True), 0)
    d2, _ = _leaf(guest, GPA + 0x5000)
    e.true("exec fault leaves the block readable, writable, executable",
           d2 & S2AP_R and d2 & S2AP_W and not d2 & XN)
    e.true("I-cache invalidated", ("icache", pfn << 12, PMD) in kvm.pgt.log)
    e.true("no dcache clean on a permission fault",
           not any(ev[0] == "dcache" for ev in kvm.pgt.log))
    # a read permission fault is refused
    e.eq("read permission fault", _uma(kvm, GPA + 0x5000, FSC_PERM, 2), -errno.EFAULT)
    # a notifier invalidation between gfn_to_pfn and mmu_lock: nothing mapped, 0 (retry)
    hits = []
    kvm.after_gfn_to_pfn = lambda k: (hits.append(1), host.zap(HVA + 0x30_0000, P))
    e.eq("fault racing with a zap", _uma(kvm, GPA + 0x30_0000), 0)
    e.eq("the race hook runs once per fault", len(hits), 1)
    kvm.after_gfn_to_pfn = None
    e.eq("nothing mapped after the race", _leaf(guest, GPA + 0x30_0000)[0], 0)
    e.eq("no page reference left after the race", host.refs, {})
    # exec permission fault racing with an unrelated invalidation: 0, nothing changed
    e.eq("read fault on the second block", _uma(kvm, GPA + 0x30_0000), 0)
    before = _leaf(guest, GPA + 0x30_0000)[0]
    kvm.after_gfn_to_pfn = lambda k: (host.zap(HVA + 0x10_0000, P), None)
    e.eq("exec permission fault racing", _uma(kvm, GPA + 0x30_0000, FSC_PERM, 2, iabt=True), 0)
    kvm.after_gfn_to_pfn = None
    e.eq("exec permission fault racing leaves the leaf", _leaf(guest, GPA + 0x30_0000)[0], before)

    # hugetlb PMD, dic: every mapping executable, no I-cache maintenance
    host, kvm, guest, vmm = _vm(slots=(("hugetlb", 0x40_0000, {"shift": 21}),), dic=True)
    e.eq("read fault on hugetlb", _uma(kvm, GPA + PMD + 0x1000), 0)
    d, lvl = _leaf(guest, GPA + PMD)
    e.eq("hugetlb PMD maps a level-2 block", lvl, 2)
    e.true("with DIC the block is executable", not d & XN)
    e.true("with DIC no icache", not any(ev[0] == "icache" for ev in kvm.pgt.log))

    # logging: pages only, a read maps read-only, a write marks the page dirty
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {"thp": True}),),
                                flags=KVM_MEM_LOG_DIRTY_PAGES)
    mm = kvm.pgt.mm_ops
    mm.fail_at = {mm.nr_allocs}
    e.eq("write fault whose table allocation fails", _uma(kvm, GPA + 0x9000, wnr=True),
         -errno.ENOMEM)
    mm.fail_at = set()
    e.eq("no dirty bit for a failed write", int.from_bytes(kvm.memslots[0].dirty_bitmap, "little"), 0)
    e.eq("read fault while logging", _uma(kvm, GPA + 0x7000), 0)
    d, lvl = _leaf(guest, GPA + 0x7000)
    e.eq("logging maps pages", lvl, 3)
    e.true("read while logging maps read-only", not d & S2AP_W)
    e.eq("no dirty bit for a read", int.from_bytes(kvm.memslots[0].dirty_bitmap, "little"), 0)
    e.eq("write permission fault while logging", _uma(kvm, GPA + 0x7000, FSC_PERM, 3, wnr=True), 0)
    e.eq("dirty bit for the write", int.from_bytes(kvm.memslots[0].dirty_bitmap, "little"), 1 << 7)
    e.true("write leaves the page writable", _leaf(guest, GPA + 0x7000)[0] & S2AP_W)

    # logging off again: the read-only page takes a write permission fault, no memcache needed
    e.eq("another read while logging", _uma(kvm, GPA + 0xA000), 0)
    e.eq("logging off", vmm.set_memory_region(0, 0, GPA, 0x40_0000, HVA), 0)
    e.eq("still read-only", _leaf(guest, GPA + 0xA000)[0] & S2AP_W, 0)
    kvm.memcache.free()
    while kvm.pool.alloc_page() is not None:                 # the host is out of memory
        pass
    e.eq("write permission fault on the page mapped while logging (no top-up needed)",
         _uma(kvm, GPA + 0xA000, FSC_PERM, 3, wnr=True), 0)
    e.true("now writable", _leaf(guest, GPA + 0xA000)[0] & S2AP_W)
    e.eq("a translation fault needs the memcache: -ENOMEM",
         _uma(kvm, GPA + 0x30_0000), -errno.ENOMEM)

    # a VMA that is not writable: a write fault cannot get the page (-EFAULT)
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {"writable": False}),))
    e.eq("write fault on a read-only VMA", _uma(kvm, GPA, wnr=True), -errno.EFAULT)
    e.eq("read fault on a read-only VMA", _uma(kvm, GPA), 0)
    e.true("read-only VMA mapped read-only", not _leaf(guest, GPA)[0] & S2AP_W)
    # a slot over a hole: no VMA, -EFAULT
    host.munmap(host.vmas[0])
    e.eq("fault without a VMA", _uma(kvm, GPA + 0x10_0000), -errno.EFAULT)

    # PFNMAP with pgoff 0 (pfn 0 is a device pfn like any other): mapped as device, no CMO
    host, kvm, guest, vmm = _vm(slots=(("pfnmap", 0x4000, {"pgoff": 0}),))
    mmu_stage2.unmap_stage2_range(kvm, GPA, 0x4000)
    kvm.pgt.log.clear()
    e.eq("read fault on PFNMAP pfn 0", _uma(kvm, GPA), 0)
    d, lvl = _leaf(guest, GPA)
    e.eq("PFNMAP page maps pa 0 at level 3", (lvl, _oa(d)), (3, 0))
    e.eq("PFNMAP page is device memory (MemAttr nGnRE)", (d >> 2) & 0xF, 1)
    e.eq("no cache maintenance of device memory",
         [ev for ev in kvm.pgt.log if ev[0] in ("dcache", "icache")], [])
    e.eq("exec fault on device memory", _uma(kvm, GPA + P, iabt=True), -errno.ENOEXEC)
    e.eq("warnings", kvm.warnings, [])


# -- notifiers, init, free -----------------------------------------------------------------------
