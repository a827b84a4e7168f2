"""The directed unit cases of ``mmu.units.fault.*`` (registered by proofs/checks_mmu_fault_units.py):
the 5.13 fault path, the notifier glue and the guest/VMM driver, one obligation per case.

Each case builds a small VM (``impl.mmu_host.HostMM``, ``impl.mmu_kvm.Kvm``), calls one mmu.c
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

from impl import mmu_fault, mmu_stage2
from impl.mmu_fault import FSC_ACCESS, FSC_FAULT, FSC_PERM, KvmFault, Vcpu
from impl.mmu_guest import Guest, Vmm
from impl.mmu_host import HostMM
from impl import mmu_kvm
from impl.mmu_kvm import GfnRange, Kvm
from impl.mmu_memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KvmMemorySlot as MemSlot

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

def case_notifier(e: Expect):
    host, kvm, guest, vmm = _vm()
    e.eq("kvm_init_stage2_mmu twice", mmu_kvm.kvm_init_stage2_mmu(kvm), -errno.EINVAL)
    try:
        Kvm(12, 40, arena_pages=1)
        e.true("Kvm with no room for its PGD must fail", False)
    except MemoryError:
        e.true("pgd allocation failure", True)
    seq = kvm.mmu_notifier_seq
    kvm.invalidate_range_start(0, P)
    e.eq("count inside an invalidation", kvm.mmu_notifier_count, 1)
    e.true("retry inside an invalidation", kvm.mmu_notifier_retry(seq))
    kvm.invalidate_range_end(0, P)
    e.eq("count after", kvm.mmu_notifier_count, 0)
    e.true("retry after an invalidation that ended", kvm.mmu_notifier_retry(seq))
    e.true("no retry with the new sequence", not kvm.mmu_notifier_retry(kvm.mmu_notifier_seq))
    # KSM: change_pte maps the merged page read-only (the table stays: another page is mapped)
    for k in (0, 1):
        _fault(kvm, GPA + k * P, wnr=True)
    kvm.pgt.log.clear()
    e.true("ksm merge", host.ksm_merge(HVA))
    d, lvl = _leaf(guest, GPA)
    new = host.lookup(HVA)
    e.true("KSM page mapped by change_pte", d & 1 and lvl == 3)
    e.eq("KSM page mapped read-only at the new pfn", (_oa(d) >> 12, bool(d & S2AP_W)),
         (new[0], False))
    e.true("KSM page cleaned to PoC", ("dcache", _oa(d), P) in kvm.pgt.log)
    e.eq("change_pte outside an invalidation WARNs", kvm.warnings, [])
    kvm.change_pte(HVA + P, 0)
    e.eq("change_pte outside an invalidation WARNs", len(kvm.warnings), 1)
    # age / test_age through the glue: one call per slot, AF cleared, young reported once
    _fault(kvm, GPA + 2 * P)
    e.true("test_young of a young page", kvm.test_young(HVA + 2 * P))
    e.true("clear_flush_young of a young page", kvm.clear_flush_young(HVA + 2 * P, HVA + 3 * P))
    e.true("old now", not kvm.test_young(HVA + 2 * P))
    e.true("clear_flush_young of an old page", not kvm.clear_flush_young(HVA + 2 * P, HVA + 3 * P))
    e.true("outside every slot", not kvm.clear_flush_young(HVA - PMD, HVA))
    n = len(kvm.warnings)
    mmu_stage2.kvm_age_gfn(kvm, GfnRange(GPA >> 12, (GPA >> 12) + 3, kvm.memslots[0]))
    e.eq("kvm_age_gfn of three pages WARNs", len(kvm.warnings), n + 1)
    for size in (P, PMD):
        mmu_stage2.kvm_age_gfn(kvm, GfnRange(GPA >> 12, (GPA + size) >> 12, kvm.memslots[0]))
    e.eq("kvm_age_gfn of a page or a PMD does not", len(kvm.warnings), n + 1)
    e.true("GfnRange may block by default", GfnRange(0, 1, None).may_block)
    # free: the table's pages go back to the pool
    free = kvm.pool.free_pages()
    pgt = kvm.pgt
    mmu_kvm.kvm_free_stage2_pgd(kvm)
    e.true("freed", kvm.pgt is None and kvm.retired_log is pgt.log)
    e.true("the table's pages are back in the pool", kvm.pool.free_pages() > free)
    e.eq("a fault after free", mmu_stage2.kvm_unmap_gfn_range(kvm, GfnRange(0, 1, None)), False)


# -- the guest's TLB -----------------------------------------------------------------------------

def case_tlb(e: Expect):
    """Two guests on two identical VMs, one with the TLB model: every access ends the same."""
    vms = []
    for tlb in (False, True):
        host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {"thp": True}),
                                           ("anon", 0x4_0000, {})), manual_protect=True)
        g = Guest(kvm, tlb=tlb)
        vms.append((host, kvm, g, Vmm(kvm, g)))
    e.eq("Guest() defaults", (Guest(vms[0][1]).use_tlb, Guest(vms[0][1]).max_faults), (False, 16))
    B = GPA + 0x4000_0000
    LOGS = KVM_MEM_LOG_DIRTY_PAGES

    def each(fn):
        return [fn(*vm) for vm in vms]

    seq = [("w", GPA + 0x1000), ("r", GPA + 0x1000), ("w", B), ("r", B + P), ("x", B + P),
           ("log", 1), ("r", B), ("w", B), ("w", B), ("clear", 1), ("w", B), ("r", B + P),
           ("w", B + P), ("x", GPA + 0x1000), ("zap", HVA + 0x1000), ("r", GPA + 0x1000),
           ("w", GPA + 0x1000), ("split", HVA), ("w", GPA + 0x2000), ("unmap", 0),
           ("r", GPA + 0x2000), ("w", B), ("nolog", 1), ("w", B + 2 * P), ("free", 0),
           ("r", GPA)]
    for op, arg in seq:
        if op in ("r", "w", "x"):
            kind = {"r": "read", "w": "write", "x": "exec"}[op]
            outs = each(lambda h, k, g, v: (lambda o: (o.result, o.faults))(g.access(arg, kind)))
            e.eq(f"{kind} at {arg:#x} with and without a TLB", outs[1], outs[0])
            if op == "w":
                e.eq(f"written record after write at {arg:#x}", vms[1][2].written, vms[0][2].written)
        elif op == "log":
            each(lambda h, k, g, v: v.set_memory_region(arg, LOGS, GPA + arg * 0x4000_0000, 0x4_0000,
                                                        HVA + arg * 0x4000_0000))
        elif op == "nolog":
            each(lambda h, k, g, v: v.set_memory_region(arg, 0, GPA + arg * 0x4000_0000, 0x4_0000,
                                                        HVA + arg * 0x4000_0000))
        elif op == "clear":
            outs = each(lambda h, k, g, v: v.clear_dirty_log(arg, 0, 64))
            e.eq("clear_dirty_log", outs, [0, 0])
        elif op == "zap":
            each(lambda h, k, g, v: h.zap(arg, P))
        elif op == "split":
            each(lambda h, k, g, v: h.split_thp(arg))
        elif op == "unmap":
            each(lambda h, k, g, v: mmu_stage2.stage2_unmap_vm(k))
        elif op == "free":
            def refresh(h, k, g, v):
                mmu_kvm.kvm_free_stage2_pgd(k)
                mmu_kvm.kvm_init_stage2_mmu(k)
            each(refresh)
    e.eq("translate without a TLB is the walk", vms[0][2].translate(GPA), vms[0][2].hw_walk(GPA))


def _poke(kvm, guest, ipa, value):
    """Write the descriptor that ends the walk of ipa behind the TLB's back (no TLBI)."""
    pgt = kvm.pgt
    gran = pgt.gran
    level = pgt.start_level
    idx = ipa >> gran.shift[level]
    n = gran.ptrs_per_pte
    tbl = pgt.pool.pages[pgt.pgd[idx // n]]
    idx &= n - 1
    while level < 3 and tbl[idx] & 3 == 3:
        tbl = pgt.pool.pages[_oa(tbl[idx])]
        level += 1
        idx = (ipa >> gran.shift[level]) & (n - 1)
    old, tbl[idx] = tbl[idx], value
    return old


def case_tlb_model(e: Expect):
    """The guest's TLB model (docs/mmu.md): valid young leaves are cached per level until a TLBI of
    their IPA (any level) or of the VMID, or until the table is replaced."""
    host, kvm, _, vmm = _vm(slots=(("anon", 0x40_0000, {"thp": True}), ("anon", 0x4_0000, {}),
                                   ("hugetlb", 1 << 30, {"shift": 30})))
    g = Guest(kvm, tlb=True)
    C = GPA + 0x8000_0000
    e.eq("read in a 1G hugetlb slot", g.access(C + 0x1234_5000, "read").result, "done")
    old_pud = _poke(kvm, g, C, 0)
    e.eq("TLB holds the level-1 block", g.translate(C + 0x10_0000), (old_pud, 1))
    kvm.pgt.tlb_flush_vmid_ipa(C + 0x3000_0000, 1)
    e.eq("after a TLBI inside the level-1 block", g.translate(C)[0] & 1, 0)
    _poke(kvm, g, C, old_pud)
    B = GPA + 0x4000_0000
    for ipa in (GPA + 0x3000, B + P, B + 2 * P):
        e.eq(f"read {ipa:#x}", g.access(ipa, "read").result, "done")
    for ipa, lvl in ((GPA + 0x3000, 2), (GPA + 0x1F_F000, 2), (B + P, 3), (B + 2 * P, 3)):
        d, l = g.translate(ipa)
        e.eq(f"cached translation of {ipa:#x}", (l, bool(d & 1 and d & AF)), (lvl, True))
    # change the tables behind the TLB: the cached leaves stay in use until their TLBI
    old_blk = _poke(kvm, g, GPA, 0)
    old_pg = _poke(kvm, g, B + P, 0)
    _poke(kvm, g, B + 2 * P, 0)
    e.eq("walk sees the change", g.hw_walk(GPA)[0] & 1, 0)
    e.eq("TLB still holds the block", g.translate(GPA + 0x5000), (old_blk, 2))
    e.eq("TLB still holds the page", g.translate(B + P), (old_pg, 3))
    e.eq("an access through the stale entry completes",
         (g.access(B + P, "read").result, len(g.access(B + P, "read").faults)), ("done", 0))
    kvm.pgt.tlb_flush_vmid_ipa(B + P, 3)
    e.eq("after a TLBI of the page's IPA", g.translate(B + P)[0] & 1, 0)
    e.eq("other page still cached", g.translate(B + 2 * P)[0] & 1, 1)
    kvm.pgt.tlb_flush_vmid_ipa(GPA + 0x1000, 3)      # the block's IPA, any page of it
    e.eq("after a TLBI inside the block", g.translate(GPA + 0x5000)[0] & 1, 0)
    kvm.pgt.tlb_flush_vmid()
    e.eq("after a VMID TLBI", g.translate(B + 2 * P)[0] & 1, 0)
    _poke(kvm, g, GPA, old_blk)
    _poke(kvm, g, B + P, old_pg)
    # an old (AF clear) leaf is not cached; a young one at the same place is
    kvm.pgt.mkold(B + P)
    o = g.access(B + P, "read")
    e.eq("an old leaf faults with FSC_ACCESS", [f[0] for f in o.faults], [FSC_ACCESS])
    _poke(kvm, g, B + P, 0)
    e.eq("a young leaf read after the access-flag fault is cached", g.translate(B + P), (old_pg, 3))
    kvm.pgt.tlb_flush_vmid()
    _poke(kvm, g, B + P, old_pg)
    # a new table, or a log that was drained, starts the TLB afresh
    g.access(B + P, "read")
    kvm.pgt.log.clear()
    _poke(kvm, g, B + P, 0)
    e.eq("a drained log empties the TLB", g.translate(B + P)[0] & 1, 0)
    _poke(kvm, g, B + P, old_pg)
    g.access(B + P, "read")
    g2 = Guest(kvm, tlb=True)
    e.eq("a new guest's TLB is empty", g2.translate(B + P), g2.hw_walk(B + P))
    mmu_kvm.kvm_free_stage2_pgd(kvm)
    e.eq("no table: the walk ends at once", g.hw_walk(B + P), (0, 0))
    mmu_kvm.kvm_init_stage2_mmu(kvm)
    e.eq("a new table empties the TLB", g.translate(B + P)[0] & 1, 0)


def case_guest(e: Expect):
    """Guest.access: fault syndrome as the CPU builds it, the fault bound, the race hook."""
    host, kvm, guest, vmm = _vm(flags=KVM_MEM_LOG_DIRTY_PAGES)
    out = 0x8000_0000
    o = guest.access(out + 0x123, "read")
    e.eq("MMIO read outside memslots", (o.result, kvm.mmio_exits[-1]), ("mmio", (out + 0x123, False)))
    o = guest.access(out + 0xFFF, "write")
    e.eq("MMIO write: IPA and FAR[11:0]", kvm.mmio_exits[-1], (out + 0xFFF, True))
    o = guest.access(out + 0x801, "exec")
    e.eq("instruction abort outside memslots", (o.result, guest.vcpu.injected[-1]),
         ("pabt", ("pabt", out + 0x801)))
    o = guest.access(out + 0x7, "s1ptw")
    e.eq("stage-1 walk outside memslots", (o.result, guest.vcpu.injected[-1]),
         ("dabt", ("dabt", out + 0x7)))
    o = guest.access(GPA + 0x5001, "read")
    e.eq("read at an odd address (no table yet: the level-1 walk stops)", (o.result, o.faults),
         ("done", [(FSC_FAULT, 1, False, 1)]))
    e.eq("the page mapped", _oa(_leaf(guest, GPA + 0x5000)[0]) != 0, True)
    kvm.pgt.mkold(GPA + 0x5000)
    o = guest.access(GPA + 0x5008, "write")
    e.eq("old read-only leaf under logging: access flag, then permission",
         [(f[0], f[2]) for f in o.faults], [(FSC_ACCESS, True), (FSC_PERM, True)])
    e.eq("written while logging", guest.written, {0: {5}})
    guest.access(GPA + 0x6000, "read")
    kvm.pgt.mkold(GPA + 0x6000)
    g1 = Guest(kvm, max_faults=1)
    o = g1.access(GPA + 0x6000, "write")
    e.eq("an access needing two faults with a bound of one", (o.result, len(o.faults)), ("stuck", 1))
    e.eq("Outcome errno default", (o.errno, repr(o)), (0, "<Outcome stuck after 1 faults>"))
    # the race hook of impl.mmu_guest.once runs at the next fault only, once
    calls = []
    from impl import mmu_guest
    kvm.after_gfn_to_pfn = mmu_guest.once(lambda k: calls.append(k))
    guest.access(GPA + 0x9000, "read")
    e.eq("once() ran at the fault", calls, [kvm])
    e.eq("and unhooked itself", kvm.after_gfn_to_pfn, None)
    guest.access(GPA + 0xA000, "read")
    e.eq("not again", len(calls), 1)


# -- mmu.c range operations, memslot hooks, notifier hooks ---------------------------------------

def _writable(guest, ipa):
    d, _ = _leaf(guest, ipa)
    return bool(d & 1 and d & S2AP_W)


def case_stage2(e: Expect):
    """stage2_apply_range chunks, __unmap_stage2_range, stage2_flush_memslot, stage2_unmap_memslot,
    write-protect by mask, kvm_phys_addr_ioremap, prepare/commit, the notifier hooks' answers."""
    from impl.mmu_memslot import KVM_MR_CREATE, KVM_MR_DELETE
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x10_0000, {}), ("anon", 0x10_0000, {})))
    top = kvm.pgt.gran.size[kvm.pgt.start_level]           # one stage-2 PGD entry (1G here)
    calls = []
    rec = lambda pgt, a, n: (calls.append((a, n)), 0)[1]   # noqa: E731
    e.eq("apply over two PGD entries", mmu_stage2.stage2_apply_range(kvm, top - 2 * P, top + P, rec,
                                                                     True), 0)
    e.eq("chunks end at the PGD entry", calls, [(top - 2 * P, 2 * P), (top, P)])
    e.eq("an error stops the walk", mmu_stage2.stage2_apply_range(
        kvm, top - P, top + P, lambda pgt, a, n: -errno.ENOMEM, True), -errno.ENOMEM)
    for k in range(8):
        guest.access(GPA + k * P, "write")
    # write-protect by dirty mask: exactly the first to the last set bit
    mmu_stage2.kvm_mmu_write_protect_pt_masked(kvm, kvm.memslots[0], 0, 0b0010_0100)
    e.eq("wp mask 0b00100100", [_writable(guest, GPA + k * P) for k in range(8)],
         [True, True, False, False, False, False, True, True])
    guest.access(GPA + 2 * P, "write")
    mmu_stage2.kvm_mmu_write_protect_pt_masked(kvm, kvm.memslots[0], 2, 0b1)
    e.eq("wp mask 1 at offset 2", [_writable(guest, GPA + k * P) for k in range(4)],
         [True, True, False, False])
    e.eq("a page unmap is not a WARN", (mmu_stage2.unmap_stage2_range(kvm, GPA + 7 * P, P),
                                        kvm.warnings), (None, []))
    mmu_stage2.unmap_stage2_range(kvm, GPA + 6 * P, P + 1)
    e.eq("an unmap of a size that is not page aligned WARNs", len(kvm.warnings), 1)
    mmu_stage2.unmap_stage2_range(kvm, GPA + 6 * P, P + 0x20)
    e.eq("another unaligned size WARNs", len(kvm.warnings), 2)
    e.eq("and unmaps what it covers", _leaf(guest, GPA + 6 * P)[0], 0)
    kvm.warnings.clear()
    mmu_stage2.kvm_mmu_wp_memory_region(kvm, 5)
    e.eq("wp of a missing slot WARNs", len(kvm.warnings), 1)
    kvm.warnings.clear()
    # switching logging off (a flags-only update without LOG) write-protects nothing
    guest.access(GPA + 0x4000_0000 + P, "write")
    e.eq("logging on", vmm.set_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, GPA, 0x10_0000, HVA), 0)
    e.eq("logging on write-protects", _writable(guest, GPA + P), False)
    e.eq("slot 1 untouched by slot 0's logging", _writable(guest, GPA + 0x4000_0000 + P), True)
    guest.access(GPA + P, "write")
    e.eq("logging off", vmm.set_memory_region(0, 0, GPA, 0x10_0000, HVA), 0)
    e.eq("a page written while logging stays writable after", _writable(guest, GPA + P), True)
    e.eq("slot 1 logging on", vmm.set_memory_region(1, KVM_MEM_LOG_DIRTY_PAGES, GPA + 0x4000_0000,
                                                    0x10_0000, HVA + 0x4000_0000), 0)
    e.eq("slot 0 untouched by slot 1's logging", _writable(guest, GPA + P), True)
    # the notifier hooks' answers
    s0 = kvm.memslots[0]
    e.eq("kvm_unmap_gfn_range asks for no flush",
         mmu_stage2.kvm_unmap_gfn_range(kvm, GfnRange(GPA >> 12, (GPA >> 12) + 1, s0)), False)
    e.eq("and unmapped exactly its page", (_leaf(guest, GPA)[0], bool(_leaf(guest, GPA + P)[0])),
         (0, True))
    neighbour = _leaf(guest, GPA + 2 * P)
    e.eq("kvm_set_spte_gfn asks for no flush", mmu_stage2.kvm_set_spte_gfn(
        kvm, GfnRange((GPA >> 12) + 1, (GPA >> 12) + 2, s0, host.ram_lo + 77)), False)
    d, _ = _leaf(guest, GPA + P)
    e.eq("kvm_set_spte_gfn maps the pfn read-only", (_oa(d) >> 12, bool(d & S2AP_W)),
         (host.ram_lo + 77, False))
    e.eq("kvm_set_spte_gfn maps one page", _leaf(guest, GPA + 2 * P), neighbour)
    e.eq("no WARN for one page", kvm.warnings, [])
    mmu_stage2.kvm_set_spte_gfn(kvm, GfnRange((GPA >> 12) + 3, (GPA >> 12) + 5, s0,
                                              host.ram_lo + 78))
    e.eq("kvm_set_spte_gfn of two pages WARNs", len(kvm.warnings), 1)
    kvm.warnings.clear()
    # kvm_arch_flush_shadow_memslot of slot 1 leaves slot 0 (below it in IPA) alone
    guest.access(GPA + 0x4000_0000, "write")
    e.eq("delete slot 1", vmm.set_memory_region(1, 0, GPA + 0x4000_0000, 0, HVA + 0x4000_0000), 0)
    e.true("slot 0 still mapped", _leaf(guest, GPA + 2 * P)[0] & 1)
    e.eq("prepare of a delete", mmu_stage2.kvm_arch_prepare_memory_region(
        kvm, s0, (0, 0, GPA, 0, HVA), KVM_MR_DELETE), 0)
    e.eq("prepare of a create without I/O", mmu_stage2.kvm_arch_prepare_memory_region(
        kvm, MemSlot(3, (GPA >> 12) + 0x800, 16, HVA), (3, 0, GPA + 0x80_0000, 0x1_0000, HVA),
        KVM_MR_CREATE), 0)
    mmu_kvm.kvm_free_stage2_pgd(kvm)
    e.eq("age without a table", mmu_stage2.kvm_age_gfn(kvm, GfnRange(0, 1, s0)), False)
    e.eq("test_age without a table", mmu_stage2.kvm_test_age_gfn(kvm, GfnRange(0, 1, s0)), False)
    e.eq("set_spte without a table", mmu_stage2.kvm_set_spte_gfn(kvm, GfnRange(0, 1, s0, 5)), False)
    e.eq("apply_range without a table", mmu_stage2.stage2_apply_range(kvm, 0, P, rec, True),
         -errno.EINVAL)
    mmu_stage2.unmap_stage2_range(kvm, GPA, P)
    e.eq("an unmap without a table WARNs", len(kvm.warnings), 1)


def case_io(e: Expect):
    """kvm_phys_addr_ioremap and the PFNMAP part of kvm_arch_prepare_memory_region."""
    host = HostMM(12)
    kvm = Kvm(12, 40, host=host, arena_pages=256)
    guest, dev = Guest(kvm), 0x900_0000
    vmm = Vmm(kvm, guest)
    io = 0x8000_0000
    free = kvm.pool.free_pages()
    e.eq("ioremap, offset 0xFFF, 2 bytes", mmu_stage2.kvm_phys_addr_ioremap(
        kvm, io + 0xFFF, dev + 0xFFF, 2, False), 0)
    for k in range(2):
        d, lvl = _leaf(guest, io + k * P)
        e.eq(f"ioremap page {k}", (lvl, _oa(d), (d >> 2) & 0xF, bool(d & S2AP_W), bool(d & XN)),
             (3, dev + k * P, 1, False, True))
    e.eq("nothing beyond", _leaf(guest, io + 2 * P)[0], 0)
    used = free - kvm.pool.free_pages()
    e.eq("ioremap, writable, two pages", mmu_stage2.kvm_phys_addr_ioremap(
        kvm, io + 4 * P, dev + 4 * P, 2 * P, True), 0)
    e.eq("no page leaked by the private memcache", free - kvm.pool.free_pages(), used)
    e.eq("writable as asked", [_writable(guest, io + k * P) for k in (4, 5, 6)], [True, True, False])
    e.eq("ioremap of nothing", mmu_stage2.kvm_phys_addr_ioremap(kvm, 0, 1 << 63, 0, True), 0)
    e.eq("ioremap at IPA 0, pa 0", (mmu_stage2.kvm_phys_addr_ioremap(kvm, 0, 0, P, True),
                                    _oa(_leaf(guest, 0)[0]), bool(_leaf(guest, 0)[0] & 1)),
         (0, 0, True))
    e.eq("ioremap of a page mapped the same (5.13: -EAGAIN)", mmu_stage2.kvm_phys_addr_ioremap(
        kvm, io + 4 * P, dev + 4 * P, P, True), -errno.EAGAIN)
    n_req = len(kvm.ioremaps)
    for bad in (True, -1, 1 << 64):
        try:
            mmu_stage2.kvm_phys_addr_ioremap(kvm, bad, 0, P, True)
            e.true(f"ioremap of {bad!r} must raise ValueError", False)
        except ValueError:
            e.true("refused", True)
        e.eq(f"a refused ioremap of {bad!r} changes nothing", len(kvm.ioremaps), n_req)
    e.eq("largest page-aligned u64 accepted",
         mmu_stage2.kvm_phys_addr_ioremap(kvm, (1 << 64) - P, (1 << 64) - 1, 0, True), 0)
    # PFNMAP slots: one PFNMAP VMA entered one page in, then a second PFNMAP VMA
    host.mmap(HVA + 0x1_0000, 4 * P, "pfnmap", pgoff=0x9100)
    host.mmap(HVA + 0x1_4000, 2 * P, "pfnmap", pgoff=0x9200)
    e.eq("PFNMAP slot, read-only", vmm.set_memory_region(1, KVM_MEM_READONLY, GPA, 5 * P,
                                                         HVA + 0x1_1000), 0)
    want = {GPA: 0x9101000, GPA + 2 * P: 0x9103000, GPA + 3 * P: 0x9200000,
            GPA + 4 * P: 0x9201000}
    for ipa, pa in want.items():
        d, _ = _leaf(guest, ipa)
        e.eq(f"PFNMAP slot: ipa {ipa:#x}", (_oa(d), (d >> 2) & 0xF, bool(d & S2AP_W)), (pa, 1, False))
    e.eq("nothing after the slot", _leaf(guest, GPA + 5 * P)[0], 0)
    e.eq("PFNMAP slot, writable", vmm.set_memory_region(2, 0, GPA + 0x4000_0000, 2 * P,
                                                        HVA + 0x1_4000), 0)
    e.eq("writable slot maps writable", _writable(guest, GPA + 0x4000_0000 + P), True)
    e.eq("dirty logging over PFNMAP", vmm.set_memory_region(
        5, KVM_MEM_LOG_DIRTY_PAGES, GPA + 0x8000_0000, 2 * P, HVA + 0x1_4000), -errno.EINVAL)
    # a create whose ioremap fails (the page is already mapped the same: -EAGAIN) maps nothing
    mmu_stage2.kvm_phys_addr_ioremap(kvm, GPA + 0xC000_0000 + P, 0x9201000, P, True)
    e.eq("create over an identical mapping", vmm.set_memory_region(
        6, 0, GPA + 0xC000_0000, 2 * P, HVA + 0x1_4000), -errno.EAGAIN)
    e.eq("the failed create unmapped its range", _leaf(guest, GPA + 0xC000_0000 + P)[0], 0)
    # finding 3: a logging slot whose hole later gets a PFNMAP VMA the guest faults in; switching
    # logging off re-runs the ioremap, which meets the identical page: -EAGAIN, logging stays on
    e.eq("logging slot over a hole", vmm.set_memory_region(
        7, KVM_MEM_LOG_DIRTY_PAGES, GPA + 0x1_0000_0000, 2 * P, HVA + 0x10_0000), 0)
    host.mmap(HVA + 0x10_0000, 2 * P, "pfnmap", pgoff=0x9400)
    e.eq("the guest reads the device page", guest.access(GPA + 0x1_0000_0000, "read").result, "done")
    e.eq("logging off is refused (-EAGAIN)", vmm.set_memory_region(
        7, 0, GPA + 0x1_0000_0000, 2 * P, HVA + 0x10_0000), -errno.EAGAIN)
    e.eq("warnings", kvm.warnings, [])


def case_unmap_memslot(e: Expect):
    """stage2_unmap_memslot / stage2_unmap_vm over a slot of hole + anon + PFNMAP + anon, next to
    a second slot whose HVAs follow the first's."""
    host = HostMM(12)
    kvm = Kvm(12, 40, host=host, arena_pages=256)
    guest = Guest(kvm)
    vmm = Vmm(kvm, guest)
    host.mmap(HVA, 4 * P, "anon")
    host.mmap(HVA + 5 * P, P, "pfnmap", pgoff=0x9300)
    host.mmap(HVA + 6 * P, 5 * P, "anon")
    host.mmap(HVA + 16 * P, 4 * P, "anon")
    e.eq("slot 0", vmm.set_memory_region(0, 0, GPA, 13 * P, HVA - 2 * P), 0)
    e.eq("slot 1", vmm.set_memory_region(1, 0, GPA + 13 * P, 4 * P, HVA + 16 * P), 0)
    for k in (2, 5, 8, 9, 12):
        guest.access(GPA + k * P, "write")
    for k in range(4):
        guest.access(GPA + (13 + k) * P, "write")
    mmu_stage2.stage2_unmap_memslot(kvm, kvm.memslots[0])
    e.eq("slot 0's anon parts unmapped, its PFNMAP page kept",
         [bool(_leaf(guest, GPA + k * P)[0]) for k in (2, 5, 7, 8, 9, 12)],
         [False, False, True, False, False, False])
    e.eq("slot 1 untouched", [bool(_leaf(guest, GPA + (13 + k) * P)[0]) for k in range(4)],
         [True] * 4)
    mmu_stage2.stage2_unmap_vm(kvm)
    e.eq("stage2_unmap_vm: slot 1 unmapped",
         [bool(_leaf(guest, GPA + (13 + k) * P)[0]) for k in range(4)], [False] * 4)
    # the notifier glue: a zap of HVAs after slot 0's end (inside its last VMA) leaves slot 1
    for k in range(4):
        guest.access(GPA + (13 + k) * P, "write")
    host.zap(HVA + 11 * P, P)
    guest.access(GPA + 12 * P, "write")
    host.zap(HVA + 10 * P, 2 * P)
    e.eq("zap: slot 0's last page unmapped, slot 1 untouched",
         [bool(_leaf(guest, GPA + k * P)[0]) for k in (12, 13, 14, 15, 16)],
         [False, True, True, True, True])
    e.true("age reaches slot 1 only for its HVAs", not kvm.clear_flush_young(HVA + 11 * P,
                                                                             HVA + 12 * P))
    e.eq("warnings", kvm.warnings, [])


# -- the VMM's dirty-log ioctls ------------------------------------------------------------------

def case_vmm(e: Expect):
    LOGS = KVM_MEM_LOG_DIRTY_PAGES
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {}), ("anon", 0x8_0000, {})),
                                flags=(LOGS, LOGS))
    for ipa in (GPA + 3 * P, GPA + 5 * P, GPA + 0x4000_0000 + P):
        guest.access(ipa, "write")
    e.eq("written record", guest.written, {0: {3, 5}, 1: {1}})
    e.eq("get_dirty_log returns the bitmap", vmm.get_dirty_log(0), (1 << 3) | (1 << 5))
    e.eq("harvested writes forgotten", guest.written, {0: set(), 1: {1}})
    e.eq("get_dirty_log of a slot without a bitmap", vmm.get_dirty_log(7), -errno.ENOENT)
    e.eq("a second harvest", vmm.get_dirty_log(0), 0)
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {}), ("anon", 0x8_0000, {})),
                                flags=(LOGS, LOGS), manual_protect=True)
    for ipa in (GPA + 3 * P, GPA + 70 * P, GPA + 0x4000_0000 + P):
        guest.access(ipa, "write")
    e.eq("manual: get_dirty_log", vmm.get_dirty_log(0), (1 << 3) | (1 << 70))
    e.eq("manual: nothing forgotten by get", guest.written, {0: {3, 70}, 1: {1}})
    e.eq("clear_dirty_log misaligned", vmm.clear_dirty_log(0, 1, 64), -errno.EINVAL)
    e.eq("clear_dirty_log of a missing slot", vmm.clear_dirty_log(5, 0, 64), -errno.ENOENT)
    e.eq("nothing forgotten by failed clears", guest.written, {0: {3, 70}, 1: {1}})
    e.eq("clear_dirty_log of the first 64", vmm.clear_dirty_log(0, 0, 64), 0)
    e.eq("only the cleared write forgotten", guest.written, {0: {70}, 1: {1}})
    e.eq("bitmap after the clear", int.from_bytes(kvm.memslots[0].dirty_bitmap, "little"),
         1 << 70)
    e.eq("clear_dirty_log of the second slot", vmm.clear_dirty_log(1, 0, 128), 0)
    e.eq("second slot forgotten", guest.written, {0: {70}, 1: set()})
    # a flags-only update that keeps logging keeps the record; switching logging off drops it
    e.eq("keep logging", vmm.set_memory_region(0, LOGS, GPA, 0x40_0000, HVA), 0)
    e.eq("record kept", guest.written.get(0), {70})
    e.eq("logging off", vmm.set_memory_region(0, 0, GPA, 0x40_0000, HVA), 0)
    e.eq("record dropped", 0 in guest.written, False)
    e.eq("other slot untouched", guest.written.get(1), set())
    e.eq("write outside any slot records nothing", guest.access(0x8000_0000, "write").result, "mmio")
    e.eq("access at IPA 0", guest.access(0, "read").result, "mmio")
    try:
        guest.access(1 << 40, "read")
        e.true("an IPA beyond the IPA space must be refused", False)
    except ValueError:
        e.true("refused", True)
    # a write whose fault keeps failing ends 'error' at once, not after retries
    mm = kvm.pgt.mm_ops
    mm.fail_at = set(range(mm.nr_allocs, mm.nr_allocs + 64))
    kvm.memcache.free()
    o = guest.access(GPA + 0x20_0000, "write")
    mm.fail_at = set()
    e.eq("a failing fault", (o.result, o.errno, len(o.faults)), ("error", -errno.ENOMEM, 1))


CASES = {"routing": case_routing, "huge": case_huge, "abort": case_abort,
         "notifier": case_notifier, "tlb": case_tlb, "tlb-model": case_tlb_model,
         "guest": case_guest, "vmm": case_vmm, "stage2": case_stage2, "io": case_io,
         "unmap-memslot": case_unmap_memslot}


def run_case(name):
    """(number of expectations checked, failures) of one case; an exception is a failure."""
    e = Expect(name)
    try:
        CASES[name](e)
    except Exception as exc:           # a crash of the impl under these inputs is a finding too
        import traceback
        e.failed.append(f"{name}: raised {type(exc).__name__}: {exc}\n"
                        + "".join(traceback.format_exc().splitlines(True)[-4:]))
    return e.n, e.failed
