"""Unit obligations for mmu.c's environment (``mmu.units.host.*``, ``mmu.units.hyp.*``).

The stage-2 spec judges KVM's tables against the host mm model and the memslots; these checks hold
those models to the semantics they document, so that the spec's verdicts rest on a right
environment:

* ``mmu.units.host.mm``: seeded sequences on ``HostMM`` against Linux's get_user_pages, THP split,
  MADV_DONTNEED, KSM, aging, munmap semantics (``ptspec.proofs.mmu.host_contract``), and the arm64 size
  constants;
* ``mmu.units.host.memslot``: ``__kvm_set_memory_region``'s checks and errno values (state left
  unchanged on failure), the dirty bitmap's life, ``kvm_get_dirty_log_protect`` and
  ``kvm_clear_dirty_log_protect`` word by word (which masks reach the arch write-protect hook, the
  flush), the gfn/hva helpers, ``__gfn_to_pfn_memslot``'s errors, the raw state;
* ``mmu.units.hyp.layout``: ``HypMmu``'s layout, ``kern_hyp_va``, ``kvm_kaddr_to_phys``,
  ``kvm_mmu_init``, ``create_hyp_mappings``, the ioremap side of ``create_hyp_io_mappings``
  (``ptspec.proofs.mmu.hyp_va.check_hyp_units``).

Expected values are worked out by hand from kvm_main.c / mmu.c (5.13), never from impl. Each
function that calls impl runs under one operation's CPU budget: one that does not come back breaks
C-MMU-RETURNS (impl looped).
"""

from __future__ import annotations

import contextlib
import errno
import random
import types

from ptspec.impl.mmu import memslot as M
from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu import state as mmu_state
from ptspec.impl.mmu.host import ANON, PFNMAP, HostMM
from ptspec.impl.mmu.kvm import Kvm

from ptspec.proofs.mmu import host_cases as mmu_host_cases
from ptspec.proofs.mmu import host_contract as mmu_host_contract
from ptspec.proofs.mmu import hyp_va as mmu_hypva
from ptspec.proofs.engines.minimize import unit_program
from ptspec.proofs.runner.registry import Result, obligation
from ptspec.proofs.stage2 import returns

P = 0x1000
EINVAL, EEXIST, EFAULT, ENOENT = -errno.EINVAL, -errno.EEXIST, -errno.EFAULT, -errno.ENOENT
LOG, RO = M.KVM_MEM_LOG_DIRTY_PAGES, M.KVM_MEM_READONLY
UA = 0x7F00_0000_0000


@contextlib.contextmanager
def spy_wp(kvm):
    """Record (gfn_offset, mask) of every kvm_arch_mmu_enable_log_dirty_pt_masked call and every
    kvm_flush_remote_tlbs of kvm (calls go through to the real functions); restored on exit."""
    calls = []
    real = mmu_stage2.kvm_arch_mmu_enable_log_dirty_pt_masked

    def hook(k, slot, off, mask):
        calls.append((slot.id, off, mask))
        return real(k, slot, off, mask)

    flush = kvm.flush_remote_tlbs

    def counted():
        calls.append("flush")
        flush()
    mmu_stage2.kvm_arch_mmu_enable_log_dirty_pt_masked = hook
    kvm.flush_remote_tlbs = counted
    try:
        yield calls
    finally:
        mmu_stage2.kvm_arch_mmu_enable_log_dirty_pt_masked = real
        del kvm.flush_remote_tlbs


def slots_of(kvm):
    return [(s.id, s.base_gfn, s.npages, s.userspace_addr, s.flags,
             None if s.dirty_bitmap is None else bytes(s.dirty_bitmap)) for s in kvm.memslots]


def _vm(manual=False, init_set=False, ia_bits=40):
    host = HostMM(12)
    host.mmap(UA, 0x40_0000, ANON)
    host.mmap(UA + 0x100_0000, 0x1_0000, ANON, writable=False)
    host.mmap(UA + 0x200_0000, 0x1_0000, PFNMAP, writable=False)
    host.mmap(UA + 0x300_0000, 0x1_0000, PFNMAP, pgoff=0)
    return Kvm(12, ia_bits, host=host, manual_protect=manual, init_set=init_set, arena_pages=512)


def check_set_memory_region():
    bad = []
    kvm = _vm()
    set_ = M.kvm_set_memory_region
    ok = [(0, 0, 0x1000_0000, 0x10_0000, UA), (1, LOG, 0x2000_0000, 0x6_5000, UA + 0x10_0000),
          (2, RO, 0x2010_0000, 0x1_0000, UA + 0x100_0000), (511, 0, 0x3000_0000, P, UA + 0x30_0000)]
    for args in ok:
        r = set_(kvm, *args)
        if r:
            bad.append(f"kvm_set_memory_region{args} = {r}, expected 0")
    base = slots_of(kvm)
    want = [(0, 0x1_0000, 0x100, UA, 0, None), (1, 0x2_0000, 0x65, UA + 0x10_0000, LOG, bytes(13)),
            (2, 0x2_0100, 0x10, UA + 0x100_0000, RO, None), (511, 0x3_0000, 1, UA + 0x30_0000, 0,
                                                             None)]
    if base != want:
        bad.append(f"memslots after creation {base}, expected {want}")
    refused = [((0, 4, 0x1000_0000, 0x10_0000, UA), EINVAL),
               ((3, 0, 0x4000_0000, 0x800, UA), EINVAL), ((3, 0, 0x4000_0800, P, UA), EINVAL),
               ((3, 0, 0x4000_0000, P, UA + 0x800), EINVAL), ((512, 0, 0x4000_0000, P, UA), EINVAL),
               ((3, 0, 0x4000_0000, P + 1, UA), EINVAL), ((3, 0, 0x4000_0001, P, UA), EINVAL),
               ((3, 0, 0x4000_0000, P, UA + 1), EINVAL), ((3, (1 << 32) - 1, 0x4000_0000, P, UA), EINVAL),
               ((3, 0, (1 << 64) - P, 2 * P, UA), EINVAL), ((3, 0, (1 << 64) - 2 * P, P, UA), EFAULT),
               ((3, 0, 1 << 40, (1 << 31) << 12, UA), EINVAL),
               ((3, 0, 1 << 40, ((1 << 31) - 1) << 12, UA), EFAULT),
               ((3, 0, 0x4000_0000, 0, UA), EINVAL), ((0, 0, 0x1000_0000, 0x10_0000, UA + P), EINVAL),
               ((0, 0, 0x1000_0000, 0x20_0000, UA), EINVAL), ((0, RO, 0x1000_0000, 0x10_0000, UA), EINVAL),
               ((2, 0, 0x2010_0000, 0x1_0000, UA + 0x100_0000), EINVAL),
               ((3, 0, 0x100F_F000, P, UA), EEXIST), ((3, 0, 0x2006_4000, 0x2000, UA), EEXIST),
               ((3, 0, 0x0FFF_F000, 2 * P, UA), EEXIST), ((0, 0, 0x2000_0000, 0x10_0000, UA), EEXIST),
               ((0, 0, 0x1FFF_0000, 0x10_0000, UA), EEXIST),
               ((0, 0, 1 << 40, 0x10_0000, UA), EFAULT), ((3, 0, (1 << 40) - P, 2 * P, UA), EFAULT),
               ((3, LOG, 0x5000_0000, 0x1_0000, UA + 0x200_0000), EINVAL),
               # the largest u64 is a kernel value: refused by the alignment check, not as misuse
               ((3, 0, (1 << 64) - 1, P, UA), EINVAL), ((3, 0, 0x4000_0000, (1 << 64) - 1, UA), EINVAL),
               ((3, 0, 0x4000_0000, P, (1 << 64) - 1), EINVAL)]
    for args, err in refused:
        r = set_(kvm, *args)
        if r != err or slots_of(kvm) != base:
            bad.append(f"kvm_set_memory_region{tuple(hex(a) for a in args)} = {r}, expected {err}"
                       f"{'' if slots_of(kvm) == base else ' and the memslots changed'}")
    for args in ok:                                   # the same again: nothing to do
        if set_(kvm, *args) or slots_of(kvm) != base:
            bad.append(f"repeating kvm_set_memory_region{args} changed something")
    # adjacent slots are fine; a move keeps the bitmap and takes the slot's new place
    cases = [((3, 0, 0x1010_0000, P, UA + 0x30_1000), 0), ((3, 0, 0x0FFF_F000, P, UA + 0x30_1000), 0),
             ((1, LOG, 0x2800_0000, 0x6_5000, UA + 0x10_0000), 0),
             ((3, 0, 0x0FFF_E000, P, UA + 0x30_1000), 0)]
    bm = kvm.memslots[[s.id for s in kvm.memslots].index(1)].dirty_bitmap
    for args, err in cases:
        if set_(kvm, *args) != err:
            bad.append(f"kvm_set_memory_region{args} != {err}")
    s1 = next(s for s in kvm.memslots if s.id == 1)
    if s1.base_gfn != 0x2_8000 or s1.dirty_bitmap is not bm:
        bad.append("a moved logging slot lost its place or its bitmap")
    if [s.base_gfn for s in kvm.memslots] != sorted(s.base_gfn for s in kvm.memslots):
        bad.append("memslots not sorted by base_gfn")
    # a move unmaps the old range at stage 2
    from ptspec.impl.mmu.guest import Guest
    from ptspec.spec.arch.walk import translate
    s3 = next(s for s in kvm.memslots if s.id == 3)
    Guest(kvm).access(s3.base_gfn << 12, "write")
    mapped = translate(kvm.pgt.snapshot(), s3.base_gfn << 12).valid
    set_(kvm, 3, 0, 0x0FFF_D000, P, UA + 0x30_1000)
    if not mapped or translate(kvm.pgt.snapshot(), 0x0FFF_E000).valid:
        bad.append(f"moving a slot left its old range mapped (mapped before: {mapped})")
    set_(kvm, 3, 0, 0x0FFF_E000, P, UA + 0x30_1000)
    # flags only: logging on gives a fresh bitmap, off drops it; delete removes the slot only
    set_(kvm, 0, LOG, 0x1000_0000, 0x10_0000, UA)
    s0 = next(s for s in kvm.memslots if s.id == 0)
    if s0.dirty_bitmap != bytearray(32) or s0.flags != LOG:
        bad.append(f"logging switched on: bitmap {s0.dirty_bitmap}")
    set_(kvm, 1, 0, 0x2800_0000, 0x6_5000, UA + 0x10_0000)
    if next(s for s in kvm.memslots if s.id == 1).dirty_bitmap is not None:
        bad.append("logging switched off keeps a bitmap")
    before = [s for s in slots_of(kvm) if s[0] != 3]
    if set_(kvm, 3, 0, 0x0FFF_E000, 0, UA + 0x30_1000) or slots_of(kvm) != before:
        bad.append("deleting slot 3 did not remove exactly it")
    # a move refused by the arch hook puts the old slot back
    if set_(kvm, 511, 0, 1 << 40, P, UA + 0x30_0000) != EFAULT or slots_of(kvm) != before:
        bad.append("a move beyond the IPA space did not restore the old slot")
    kvm = _vm(manual=True, init_set=True)
    for n, want in ((1, b"\x01"), (8, b"\xff"), (13, b"\xff\x1f"), (64, b"\xff" * 8),
                    (65, b"\xff" * 8 + b"\x01")):
        set_(kvm, 9, LOG, 0x1000_0000, n * P, UA)
        s = kvm.memslots[0]
        if bytes(s.dirty_bitmap) != want:
            bad.append(f"initially-all-set bitmap of {n} pages: {bytes(s.dirty_bitmap)}")
        set_(kvm, 9, 0, 0x1000_0000, 0, UA)
    for n in (1, 7, 8, 9, 64, 100):
        for all_set in (False, True):
            b = M._new_bitmap(n, all_set)
            exp = ((1 << n) - 1) if all_set else 0
            if len(b) != (n + 7) // 8 or int.from_bytes(b, "little") != exp:
                bad.append(f"_new_bitmap({n}, {all_set}) = {bytes(b)}")
    for v in (("1", 0, 0, P, UA), (0, -1, 0, P, UA), (0, 0, 1 << 64, P, UA), (0, 0, 0, True, UA)):
        try:
            set_(kvm, *v)
            bad.append(f"kvm_set_memory_region{v} accepted a value that is not a u64")
        except ValueError:
            pass
    return bad


def check_dirty_log(rng):
    bad = []
    for manual in (False, True):
        kvm = _vm(manual=manual)
        M.kvm_set_memory_region(kvm, 4, LOG, 0x1000_0000, 200 * P, UA)
        M.kvm_set_memory_region(kvm, 5, 0, 0x2000_0000, 8 * P, UA + 0x30_0000)
        if M.kvm_get_dirty_log_protect(kvm, 5) is not None or \
                M.kvm_get_dirty_log_protect(kvm, 6) is not None:
            bad.append("kvm_get_dirty_log_protect without a bitmap / slot is not -ENOENT")
        s = kvm.memslots[0]
        for trial in range(6):
            bits = rng.getrandbits(200) & [(1 << 200) - 1, 1 << 199 | 1, 0xFF << 64, 0,
                                           0xFF << 56 | 1 << 127, 1 << 63][trial]
            s.dirty_bitmap[:] = bits.to_bytes(25, "little")
            if s.dirty_gfns() != [g for g in range(200) if bits >> g & 1]:
                bad.append(f"dirty_gfns of {bits:#x} = {s.dirty_gfns()}")
            with spy_wp(kvm) as calls:
                got = M.kvm_get_dirty_log_protect(kvm, 4)
            if manual:
                want = []
                left = bits
            else:
                want = [(4, w, (bits >> w) & (2 ** 64 - 1)) for w in (0, 64, 128, 192)
                        if (bits >> w) & (2 ** 64 - 1)]
                want += ["flush"] if want else []
                left = 0
            if got != bits or calls != want or int.from_bytes(s.dirty_bitmap, "little") != left:
                bad.append(f"kvm_get_dirty_log_protect(manual={manual}) of {bits:#x}: {got}, "
                           f"calls {calls}, left {int.from_bytes(s.dirty_bitmap, 'little'):#x}")
            if not manual:
                continue
            for first, num in ((0, 64), (64, 136), (128, 72), (0, 200), (192, 8), (64, 64)):
                s.dirty_bitmap[:] = bits.to_bytes(25, "little")
                with spy_wp(kvm) as calls:
                    r = M.kvm_clear_dirty_log_protect(kvm, 4, first, num)
                want = []
                for off in range(first, first + num, 64):
                    m = (bits >> off) & ((1 << min(64, first + num - off)) - 1)
                    if m:
                        want.append((4, off, m))
                want += ["flush"] if want else []
                left = bits & ~(((1 << num) - 1) << first)
                if r or calls != want or int.from_bytes(s.dirty_bitmap, "little") != left:
                    bad.append(f"kvm_clear_dirty_log_protect({first}, {num}) of {bits:#x}: {r}, "
                               f"calls {calls}, left {int.from_bytes(s.dirty_bitmap, 'little'):#x}")
                    break
        s.dirty_bitmap[:] = bytes([0xFF] * 25)
        for first, num, err in ((1, 64, EINVAL), (63, 1, EINVAL), (64, 65, EINVAL),
                                (0, 201, EINVAL), (192, 9, EINVAL), (256, 0, EINVAL),
                                (0, 63, EINVAL), (64, 100, EINVAL), (200, 0, EINVAL),
                                (192, 64, EINVAL), (128, 128, EINVAL)):
            if M.kvm_clear_dirty_log_protect(kvm, 4, first, num) != err or \
                    bytes(s.dirty_bitmap) != bytes([0xFF] * 25):
                bad.append(f"kvm_clear_dirty_log_protect({first}, {num}) is not {err}")
        if M.kvm_clear_dirty_log_protect(kvm, 5, 0, 8) != ENOENT or \
                M.kvm_clear_dirty_log_protect(kvm, 7, 0, 8) != ENOENT:
            bad.append("kvm_clear_dirty_log_protect without a bitmap / slot is not -ENOENT")
        with spy_wp(kvm) as calls:
            if M.kvm_clear_dirty_log_protect(kvm, 4, 192, 0) or calls:
                bad.append("an empty clear at the slot's last word did something")
    return bad


def check_gfn_helpers():
    bad = []
    kvm = _vm()
    M.kvm_set_memory_region(kvm, 0, 0, 0x1000_0000, 0x10_0000, UA)
    M.kvm_set_memory_region(kvm, 1, RO, 0x2000_0000, 0x1_0000, UA + 0x100_0000)
    M.kvm_set_memory_region(kvm, 2, 0, 0x3000_0000, 0x1_0000, UA + 0x100_0000)
    M.kvm_set_memory_region(kvm, 3, 0, 0x4000_0000, 0x1_0000, UA + 0x180_0000)
    M.kvm_set_memory_region(kvm, 4, 0, 0x5000_0000, 0x1_0000, UA + 0x300_0000)
    s0, s1 = kvm.memslots[0], kvm.memslots[1]
    for gfn, sid in ((0xFFFF, None), (0x1_0000, 0), (0x1_00FF, 0), (0x1_0100, None),
                     (0x2_0000, 1), (0x2_000F, 1), (0x2_0010, None)):
        got = M.gfn_to_memslot(kvm, gfn)
        if (got.id if got else None) != sid:
            bad.append(f"gfn_to_memslot({gfn:#x}) = {got}, expected slot {sid}")
    checks = [(M.gfn_to_hva_memslot_prot(s0, 0x1_0005, 12), (UA + 0x5000, True)),
              (M.gfn_to_hva_memslot_prot(s1, 0x2_0003, 12), (UA + 0x100_3000, False)),
              (M.gfn_to_hva_memslot_prot(None, 0x2_0003, 12), (None, False)),
              (M.hva_to_gfn_memslot(UA + 0x7FFF, s0, 12), 0x1_0007),
              (M.memslot_is_readonly(s1), True), (M.memslot_is_readonly(s0), False)]
    pfn0 = kvm.host.get_user_pages(UA + 0x5000, False)[0]
    kvm.host.kvm_release_pfn_clean(pfn0)
    gup = [((s0, 0x1_0005, False), (pfn0, True)), ((s0, 0x1_0005, True), (pfn0, True)),
           ((None, 0x1_0005, False), (EFAULT, False)), ((s1, 0x2_0001, True), (EFAULT, False)),
           ((kvm.memslots[2], 0x3_0001, True), (EFAULT, False)),
           ((kvm.memslots[3], 0x4_0001, False), (EFAULT, False))]
    for (slot, gfn, w), want in gup:
        got = M.__dict__["__gfn_to_pfn_memslot"](kvm, slot, gfn, w)
        if got[0] > 0:
            kvm.host.kvm_release_pfn_clean(got[0])
        checks.append((got, want))
    got = M.__dict__["__gfn_to_pfn_memslot"](kvm, s1, 0x2_0001, False)
    kvm.host.kvm_release_pfn_clean(got[0])
    checks.append(((got[0] > 0, got[1]), (True, False)))
    bad += [f"gfn helper #{i}: {g}, expected {w}" for i, (g, w) in enumerate(checks) if g != w]
    if kvm.host.refs or kvm.host.errors:
        bad.append(f"references left {kvm.host.refs} / errors {kvm.host.errors}")
    M.kvm_set_memory_region(kvm, 0, LOG, 0x1000_0000, 0x10_0000, UA)
    s0 = kvm.memslots[0]
    for gfn in (0x1_0000, 0x1_0009, 0x1_00FF):
        M.mark_page_dirty_in_slot(kvm, s0, gfn)
    M.mark_page_dirty_in_slot(kvm, None, 0x1_0000)
    M.mark_page_dirty_in_slot(kvm, kvm.memslots[1], 0x2_0000)
    if s0.dirty_gfns() != [0, 9, 0xFF] or kvm.memslots[1].dirty_bitmap is not None:
        bad.append(f"mark_page_dirty_in_slot gave {s0.dirty_gfns()}")
    if M.__dict__["__gfn_to_pfn_memslot"](kvm, kvm.memslots[4], 0x5_0000, True) != (0, True):
        bad.append("__gfn_to_pfn_memslot of pfn 0 (a PFNMAP at pgoff 0) is not (0, writable)")
    if kvm.memslots[1].dirty_gfns() != [] or M.KvmMemorySlot(1, 2, 3, 4).flags != 0:
        bad.append("dirty_gfns without a bitmap / a slot's default flags")
    c = s0.copy()
    if (c.id, c.base_gfn, c.npages, c.userspace_addr, c.flags) != (0, 0x1_0000, 0x100, UA, LOG) \
            or c.dirty_bitmap is not s0.dirty_bitmap or c is s0:
        bad.append("KvmMemorySlot.copy")
    if repr(s0) != f"<memslot 0 gfn 0x10000+0x100 hva {UA:#x} flags 0x1>":
        bad.append(f"memslot repr {s0!r}")
    # the raw state the spec reads
    st = mmu_state.mmu_raw_state(kvm)["mmu"]
    want = {"id": 0, "base_gfn": 0x1_0000, "npages": 0x100, "userspace_addr": UA, "flags": LOG,
            "dirty_bitmap": (1 << 0xFF) | (1 << 9) | 1, "written": [], "fetched": []}
    if st["memslots"][0] != want or st["vmas"] != kvm.host.raw_vmas() or \
            st["host_map"] != kvm.host.host_map() or \
            st["ram_pfns"] != [kvm.host.ram_lo, kvm.host.ram_hi] or st["manual_protect"] or \
            st["init_set"] or st["kvm_page_refs"] or st["host_errors"] or \
            st["mmu_notifier_seq"] != kvm.mmu_notifier_seq or st["warnings"] or \
            st["ioremap"] != [list(r) for r in kvm.ioremaps] or \
            st["memslots"][1]["dirty_bitmap"] is not None or st["dic"] is not kvm.dic:
        bad.append(f"mmu_raw_state: {st['memslots'][:2]}")
    kvm.pgt.log.append(("tlbi", "marker"))
    first = mmu_state.mmu_raw_state(kvm)
    if kvm.pgt.log or mmu_state.mmu_raw_state(kvm, drain_log=False) is None:
        bad.append("mmu_raw_state does not drain the TLB/CMO log by default")

    guest = types.SimpleNamespace(written={0: {9, 1}}, fetched={0: {(4, 2, 0x5000), (0, 1, 0)}})
    slot0 = mmu_state.mmu_raw_state(kvm, guest)["mmu"]["memslots"][0]
    if slot0["written"] != [1, 9] or first["mmu"]["memslots"][0]["written"] != []:
        bad.append("mmu_raw_state ignores the guest's written pages")
    if slot0["fetched"] != [[0, 1, 0], [4, 2, 0x5000]]:
        bad.append(f"mmu_raw_state: the guest's fetched ranges are {slot0['fetched']}")
    from ptspec.impl.mmu.kvm import kvm_free_stage2_pgd
    k2 = _vm()
    kvm_free_stage2_pgd(k2)
    st2 = mmu_state.mmu_raw_state(k2)
    want2 = {"kind": "arm64-stage2", "page_shift": 12, "ia_bits": 40, "start_level": 0,
             "owner_field": [63, 56], "max_owner_id": 1, "roots": [], "pages": {},
             "refcount": {}}
    if {k: v for k, v in st2.items() if k != "mmu"} != want2 or "mmu" not in st2:
        bad.append(f"mmu_raw_state without a stage-2 table: {st2}")
    kvm.host.refs[0x1234] = 2
    kvm.host.errors.append("x")
    st = mmu_state.mmu_raw_state(kvm)["mmu"]
    if st["kvm_page_refs"] != {"4660": 2} or st["host_errors"] != ["x"]:
        bad.append("mmu_raw_state drops references or host errors")
    return bad


def _result(bad, n, what, fn, program):
    if bad:
        return Result.refuted({"ops": program,
                               "violations": [_named("HOST-MM", b) for b in bad[:8]], "tables": "",
                               "kernel_function": fn})
    return Result.passed(n, what)


def _named(statement: str, failure: str) -> str:
    """A failure as a violation of ``statement``, unless it names C-MMU-RETURNS (impl looped)."""
    return failure if failure.startswith("C-MMU-RETURNS ") else f"{statement} {failure}"


def _returning(fn, *args) -> list[str]:
    """The failures ``fn(*args)`` lists, or the one saying it did not return (C-MMU-RETURNS)."""
    got, hang = returns.unit_call("C-MMU-RETURNS", f"{fn.__name__}()", fn, *args)
    return [hang] if hang else got


@obligation("mmu.units.host.mm", engine="unit", invariants=["HOST-MM", "C-MMU-RETURNS"],
            kernel_functions=["get_user_pages", "__split_huge_pmd", "zap_page_range", "ksm",
                              "arch_hugetlb_valid_size"])
def host_mm(ctx):
    """The host mm model against Linux: seeded sequences of get_user_pages, THP splits, zaps, KSM
    merges, aging, munmap and page references on every VMA kind, each call compared with an
    independent page-by-page account (translations, fresh and aligned pfns, notifier calls,
    references, host_map / host_leaf / find_vma agreement); the arm64 size constants."""
    bad = mmu_host_cases.check_sizes()
    if bad:
        return _result(bad, 1, "mmu_host_cases.check_sizes", "HostSizes", unit_program(
            ["from ptspec.proofs.mmu.host_cases import check_sizes"], ["bad = check_sizes()"],
            "assert not bad, bad[:8]"))
    quick = ctx.budget["hypothesis_examples"] < 50
    got, hang = returns.unit_call("C-MMU-RETURNS", "run_host()", lambda: mmu_host_contract.run_host(
        1 if quick else 10, 15 if quick else 40, ctx.seed, expired=ctx.expired))
    n, cx = got if got else (0, {"ops": "", "violations": [hang], "tables": "",
                                 "kernel_function": "HostMM"})
    if cx:
        cx = dict(cx, sequence=cx["ops"], ops="\n".join([
            "from ptspec.proofs.mmu.host_contract import run_host",
            f"n, cx = run_host({1 if quick else 10}, {15 if quick else 40}, {ctx.seed})",
            "assert cx is None, cx['violations']"]))
        return Result.refuted(cx, detail="host mm sequence", examples=n)
    if ctx.expired():
        return Result.unknown("budget not completed (hang guard)", examples=n)
    return Result.passed(n, f"{n} host operations checked")


@obligation("mmu.units.host.memslot", engine="unit", invariants=["HOST-MM", "C-MMU-RETURNS"],
            kernel_functions=["__kvm_set_memory_region", "kvm_get_dirty_log_protect",
                              "kvm_clear_dirty_log_protect", "__gfn_to_pfn_memslot"])
def host_memslot(ctx):
    """Memslot updates (every argument check and its errno, overlap, the IPA bound, create / move /
    flags-only / delete, the bitmap's life, initially-all-set, nothing changed on failure), the
    dirty-log ioctls word by word against the write-protect hook and the flush, the gfn helpers,
    __gfn_to_pfn_memslot's errors and the raw state."""
    bad = _returning(check_set_memory_region)
    bad += _returning(check_dirty_log, random.Random(ctx.seed))
    bad += _returning(check_gfn_helpers)
    return _result(bad, 3, "check_set_memory_region / check_dirty_log / check_gfn_helpers",
                   "__kvm_set_memory_region", unit_program(
                       ["import random", "from ptspec.proofs.mmu.checks_host_units import "
                        "check_dirty_log, check_gfn_helpers, check_set_memory_region"],
                       ["bad = check_set_memory_region() + "
                        f"check_dirty_log(random.Random({ctx.seed})) + check_gfn_helpers()"],
                       "assert not bad, bad[:8]"))


@obligation("mmu.units.hyp.layout", engine="unit", invariants=["C-HYP-VA", "C-MMU-RETURNS"],
            kernel_functions=["kvm_mmu_init", "kern_hyp_va", "kvm_kaddr_to_phys",
                              "create_hyp_mappings", "create_hyp_io_mappings"])
def hyp_layout(ctx):
    """HypMmu's layout per build, kern_hyp_va, kvm_kaddr_to_phys, kvm_mmu_init (bounds, BUG,
    overlap refusal, executable idmap, allocation failure), create_hyp_mappings page by page,
    create_hyp_io_mappings' ioremap and its undo, against hand-derived values."""
    bad = _returning(mmu_hypva.check_hyp_units)
    if bad:
        return Result.refuted({"ops": unit_program(
                                   ["from ptspec.proofs.mmu.hyp_va import check_hyp_units"],
                                   ["bad = check_hyp_units()"], "assert not bad, bad[:8]"),
                               "violations": [_named("C-HYP-VA", b) for b in bad[:8]], "tables": "",
                               "kernel_function": "kvm_mmu_init / create_hyp_mappings"})
    return Result.passed(1, "hyp layout cases")
