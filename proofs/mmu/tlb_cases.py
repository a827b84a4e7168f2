"""The guest-side directed cases of ``mmu.units.fault.*``: ``tlb`` and ``tlb-model`` (a guest with
the TLB model behaves exactly as one that walks the tables on every access, and keeps entries until
the right invalidation) and ``guest`` (the fault syndrome and bound of the guest driver). Helpers
and conventions: proofs/mmu/fault_cases.py."""

from __future__ import annotations

from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu.fault import FSC_ACCESS, FSC_FAULT, FSC_PERM
from ptspec.impl.mmu.guest import Guest, Vmm
from ptspec.impl.mmu import kvm as mmu_kvm
from ptspec.impl.mmu.memslot import KVM_MEM_LOG_DIRTY_PAGES

from ptspec.proofs.mmu.fault_cases import AF, GPA, HVA, P, Expect, _leaf, _oa, _vm


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
    # the race hook of ptspec.impl.mmu.guest.once runs at the next fault only, once
    calls = []
    from ptspec.impl.mmu import guest as mmu_guest
    kvm.after_gfn_to_pfn = mmu_guest.once(lambda k: calls.append(k))
    guest.access(GPA + 0x9000, "read")
    e.eq("once() ran at the fault", calls, [kvm])
    e.eq("and unhooked itself", kvm.after_gfn_to_pfn, None)
    guest.access(GPA + 0xA000, "read")
    e.eq("not again", len(calls), 1)
    # the ghost record MS-PERM reads: the leaf an instruction fetch faulted for, nothing else
    e.eq("reads and writes that faulted record no fetch", guest.fetched, {})
    o = guest.access(GPA + 0xB003, "exec")
    pa = _oa(_leaf(guest, GPA + 0xB000)[0])
    e.eq("a fetch that faulted records its page (logging: a page leaf) at its address",
         (o.result, guest.fetched), ("done", {0: {(0xB, 1, pa)}}))
    kvm.pgt.mkold(GPA + 0xB000)
    o = guest.access(GPA + 0xB000, "exec")
    e.eq("an access-flag fault alone grants nothing new", ([f[0] for f in o.faults], guest.fetched),
         ([FSC_ACCESS], {0: {(0xB, 1, pa)}}))
    host, kvm, guest, vmm = _vm(slots=(("anon", 0x40_0000, {"thp": True}),))
    o = guest.access(GPA + 0x3_0000, "exec")
    d, level = _leaf(guest, GPA)
    e.eq("a fetch that faulted into a THP block records the whole block",
         (level, guest.fetched), (2, {0: {(0, 512, _oa(d))}}))


# -- mmu.c range operations, memslot hooks, notifier hooks ---------------------------------------
