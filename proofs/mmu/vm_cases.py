"""The VM-wide directed cases of ``mmu.units.fault.*``: ``notifier`` (sequence count and retry,
change_pte, init/free of the stage-2 MMU, aging), ``stage2`` (apply_range chunks, write-protect by
dirty mask, the notifier hooks' answers), ``io`` (ioremap and PFNMAP prepare), ``unmap-memslot``
and ``vmm`` (the dirty-log ioctls). Helpers and conventions: proofs/mmu/fault_cases.py."""

from __future__ import annotations

import errno

from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu.guest import Guest, Vmm
from ptspec.impl.mmu.host import HostMM
from ptspec.impl.mmu import kvm as mmu_kvm
from ptspec.impl.mmu.kvm import GfnRange, Kvm
from ptspec.impl.mmu.memslot import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, KvmMemorySlot as MemSlot

from ptspec.proofs.mmu.fault_cases import GPA, HVA, P, PMD, S2AP_W, XN, Expect, _fault, _leaf, _oa, _vm


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

def _writable(guest, ipa):
    d, _ = _leaf(guest, ipa)
    return bool(d & 1 and d & S2AP_W)


def case_stage2(e: Expect):
    """stage2_apply_range chunks, __unmap_stage2_range, stage2_flush_memslot, stage2_unmap_memslot,
    write-protect by mask, kvm_phys_addr_ioremap, prepare/commit, the notifier hooks' answers."""
    from ptspec.impl.mmu.memslot import KVM_MR_CREATE, KVM_MR_DELETE
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
