"""MS and DIRTY: what must hold in every state of a VM (stage-2 tables against memslots and host).

Models the single-state invariants of the arm64 KVM stage-2 fault path (arch/arm64/kvm/mmu.c,
``user_mem_abort``, ``kvm_arch_prepare_memory_region``, ``kvm_phys_addr_ioremap``, dirty logging):

MS  -- memslots lie inside the IPA space and do not overlap. Every valid stage-2 leaf either lies
       inside one memslot or inside an I/O region KVM was asked to map. Inside a memslot, the leaf's
       translation equals the host translation of the memslot's HVA for each of its pages; a block
       needs the guest and host offsets to agree modulo its size and host huge leaves (THP or
       hugetlb) at least as large behind it; a writable leaf needs a writable slot and host mapping;
       device attributes exactly where the host pfn is not RAM. Outside memslots, only device
       leaves of an ioremap request, mapping its physical range, writable only if asked. KVM holds
       no host page reference between operations (user_mem_abort releases the one it takes).
DIRTY -- in a logging memslot every page the guest wrote is in the dirty bitmap, and every page
       stage 2 lets the guest write without a fault is too (else a later write would go unlogged).

Leaves out: the stage-2 structural invariants (S2-*, spec.check_state), cache maintenance, and
which permissions each page justifies beyond the slot / host checks above (MS-PERM,
spec/mmu/perms.py; check_mmu_state judges it with MS and DIRTY).
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.mmu.perms import check_perms
from ptspec.spec.mmu.state import READONLY, MmuView
from ptspec.spec.violation import Violation
from ptspec.spec.statements import statement


def _v(inv, msg, **where):
    return Violation(inv, msg, where)


def ms_leaf_breaks_plain(view: MmuView, leaf):
    """The plain statement of MS for one valid leaf that lies inside a memslot, page by page: True
    when some page of it breaks MS (None for a leaf not inside one memslot: I/O regions and leaves
    crossing a slot edge are judged per leaf, see _check_leaf).

    Each page p of the leaf must translate to the host translation of its HVA (the host leaf behind
    it present, host pa = leaf output + offset), be writable only over a writable host mapping and
    slot, carry device attributes exactly when its host pfn is not RAM; a block needs guest and host
    offsets that agree modulo its size and a THP/hugetlb host leaf at least as large behind every
    page. check_ms judges the same over host leaves instead of pages (tests/test_spec_plain.py).
    """
    ipa, size, d = leaf.ipa, leaf.size, leaf.desc
    slot = view.slot_of(ipa)
    if slot is None or slot.end < ipa + size:
        return None
    ps, psize = view.ps, view.psize
    hva, oa = slot.hva(ipa), view.oa(d)
    writable, device = bool(d & D.S2AP_W), view.is_device(d)
    if (size > psize and hva % size) or (writable and slot.flags & READONLY):
        return True
    for k in range(0, size, psize):
        h0, hsize, pfn, kind, host_writable = view.host_pieces(hva + k, psize)[0]
        if kind is None:
            return True
        page_pfn = pfn + ((hva + k - h0) >> ps)
        if (page_pfn << ps) != oa + k:
            return True
        if size > psize and (kind not in ("thp", "hugetlb") or hsize < size):
            return True
        if writable and not host_writable:
            return True
        if device == view.pfn_is_ram(page_pfn):
            return True
    return False


@statement("MS", constrains=(
    "user_mem_abort", "fault_supports_stage2_huge_mapping", "transparent_hugepage_adjust",
    "kvm_arch_prepare_memory_region", "kvm_phys_addr_ioremap", "kvm_arch_flush_shadow_memslot"))
def check_ms(view: MmuView):
    """MS: stage 2 maps exactly what the memslots and the host back, at the same offset.

    Statement: memslots lie inside the IPA space and do not overlap; every valid stage-2 leaf lies
    inside one memslot or inside an I/O region KVM was asked to map; inside a memslot each page of
    the leaf translates to the host translation of the slot's HVA for it (a block only where the
    guest and host offsets agree modulo the block size and the host has a huge leaf at least that
    large behind it, and the block lies inside the slot); writable only over a writable slot and
    host mapping; device attributes exactly where the host pfn is not RAM; KVM holds no host page
    reference between operations.

    Why: a stage-2 block is the guest's window onto host memory: one that reaches past the memslot
    or the host's huge page hands the guest host memory it was never given.

    Constrains: user_mem_abort (vma_shift fall-through, force_pte, fault_supports_stage2_huge_mapping,
    transparent_hugepage_adjust), kvm_arch_prepare_memory_region (IPA bound, PFNMAP ioremap),
    kvm_phys_addr_ioremap, the MMU-notifier hooks, kvm_arch_flush_shadow_memslot.
    """
    out = []
    prev = None
    for s in view.slots:
        if s.end > view.ipa_limit:
            out.append(_v("MS", f"memslot {s.id} [{s.start:#x}, {s.end:#x}) ends beyond the "
                                f"{view.s2.ia_bits}-bit IPA space ({view.ipa_limit:#x})", slot=s.id))
        if prev is not None and s.start < prev.end:
            out.append(_v("MS", f"memslots {prev.id} and {s.id} overlap at {s.start:#x}"))
        prev = s
    for ipa, size, level, d in view.leaves():
        out.extend(_check_leaf(view, ipa, size, level, d))
        if len(out) > 20:
            break
    if view.kvm_page_refs:
        refs = ", ".join(f"{p:#x}: {n}" for p, n in sorted(view.kvm_page_refs.items())[:4])
        out.append(_v("MS", f"KVM still holds host page references ({refs})"))
    for e in view.host_errors:
        out.append(_v("MS", f"host page reference error: {e}"))
    return out


def _check_leaf(view, ipa, size, level, d):
    ps, psize = view.ps, view.psize
    oa = view.oa(d)
    dev = view.is_device(d)
    w = bool(d & D.S2AP_W)
    what = f"{'block' if size > psize else 'page'} [{ipa:#x}, {ipa + size:#x}) -> {oa:#x} (level {level})"
    slot = view.slot_of(ipa)
    if slot is None or slot.end < ipa + size:
        other = view.slot_of(ipa + size - 1)
        if slot is not None or (other is not None):
            return [_v("MS", f"{what} extends outside memslot "
                             f"{(slot or other).id} [{(slot or other).start:#x}, "
                             f"{(slot or other).end:#x})", ipa=ipa, desc=d, level=level)]
        return _check_io_leaf(view, ipa, size, level, d, what)
    out = []
    hva = slot.hva(ipa)
    if size > psize and hva % size:
        out.append(_v("MS", f"{what}: guest and host disagree on alignment inside the block "
                            f"(memslot {slot.id} hva {hva:#x})", ipa=ipa, desc=d, level=level))
    for h0, hsize, pfn, kind, hw in view.host_pieces(hva, size):
        if kind is None:
            out.append(_v("MS", f"{what}: host has no page at hva {h0:#x} (memslot {slot.id})",
                          ipa=ipa, desc=d, level=level))
            break
        lo = max(h0, hva)
        want = (pfn << ps) + (lo - h0)
        got = oa + (lo - hva)
        if want != got:
            out.append(_v("MS", f"{what}: ipa {ipa + (lo - hva):#x} translates to {got:#x} but "
                                f"memslot {slot.id} hva {lo:#x} is host pa {want:#x}",
                          ipa=ipa, desc=d, level=level))
            break
        if size > psize and (kind not in ("thp", "hugetlb") or hsize < size):
            out.append(_v("MS", f"{what}: block over a host {kind} leaf of {hsize:#x} bytes at "
                                f"hva {h0:#x}", ipa=ipa, desc=d, level=level))
            break
        if w and not hw:
            out.append(_v("MS", f"{what} is writable but the host maps hva {h0:#x} read-only",
                          ipa=ipa, desc=d, level=level))
            break
        # the pfns of the pages of this leaf the host leaf backs: RAM or not, each one
        first = pfn + ((lo - h0) >> ps)
        last = pfn + ((min(h0 + hsize, hva + size) - h0 - 1) >> ps)
        bad = _ram_mismatch(view, first, last, dev)
        if bad is not None:
            over = "device attributes over RAM" if dev else "normal attributes over non-RAM"
            out.append(_v("MS", f"{what}: {over} pfn {bad:#x}", ipa=ipa, desc=d, level=level))
            break
    if w and slot.flags & READONLY:
        out.append(_v("MS", f"{what} is writable in read-only memslot {slot.id}",
                      ipa=ipa, desc=d, level=level))
    return out


def _ram_mismatch(view, first, last, device):
    """The first pfn of [first, last] whose RAM-ness disagrees with the attributes (device
    attributes exactly over non-RAM pfns), or None."""
    lo, hi = view.ram
    if device:
        if first < hi and lo <= last:
            return max(first, lo)
        return None
    if first < lo:
        return first
    if last >= hi:
        return max(first, hi)
    return None


def _check_io_leaf(view, ipa, size, level, d, what):
    psize = view.psize
    mask = psize - 1
    for r_ipa, r_pa, r_size, r_w in view.ioremap:
        lo = r_ipa & ~mask
        hi = (lo + r_size + (r_ipa & mask) + mask) & ~mask
        if lo <= ipa and ipa + size <= hi:
            if not view.is_device(d):
                return [_v("MS", f"{what} in an I/O region without device attributes", ipa=ipa)]
            want = (r_pa + (ipa - lo)) & ~mask
            if size != psize or view.oa(d) != want:
                return [_v("MS", f"{what} but the I/O region maps ipa {ipa:#x} to pa {want:#x}",
                           ipa=ipa, desc=d)]
            if d & D.S2AP_W and not r_w:
                return [_v("MS", f"{what} is writable in a read-only I/O region", ipa=ipa)]
            return []
    return [_v("MS", f"{what} lies outside every memslot and I/O region", ipa=ipa, desc=d,
               level=level)]


@statement("DIRTY", constrains=(
    "user_mem_abort", "kvm_arch_commit_memory_region", "kvm_mmu_wp_memory_region",
    "kvm_arch_mmu_enable_log_dirty_pt_masked"))
def check_dirty(view: MmuView):
    """DIRTY: while a memslot logs dirty pages, no guest write escapes the dirty bitmap.

    Statement: in a logging memslot every page the guest wrote is in the dirty bitmap, and every
    page stage 2 lets the guest write without a fault is too (else a later write goes unlogged);
    a fault that failed marks nothing dirty (checked per step).

    Why: live migration copies only dirty pages; a lost dirty bit is guest memory silently
    corrupted on the destination.

    Constrains: user_mem_abort (mark dirty only after a successful map/relax, write faults under
    logging mapped page by page), kvm_arch_commit_memory_region and the dirty-log write-protect
    (kvm_mmu_wp_memory_region, kvm_arch_mmu_enable_log_dirty_pt_masked).
    """
    out = []
    ps = view.ps
    for s in view.slots:
        if not s.logging:
            continue
        missing = sorted(g for g in s.written if not s.dirty(g))
        if missing:
            out.append(_v("DIRTY", f"memslot {s.id}: the guest wrote gfn "
                                   f"{', '.join(hex(s.base_gfn + g) for g in missing[:4])} but the "
                                   f"dirty bitmap does not have it", slot=s.id))
        for ipa, size, level, d in view.leaves_in(s.start, s.end):
            if not d & D.S2AP_W:
                continue
            lo, hi = max(ipa, s.start), min(ipa + size, s.end)
            g0, g1 = (lo - s.start) >> ps, (hi - s.start) >> ps
            clean = ~s.bits(g0, g1 - g0) & ((1 << (g1 - g0)) - 1)    # the leaf's gfns not dirty
            if clean:
                g = g0 + (clean & -clean).bit_length() - 1        # the first of them
                out.append(_v("DIRTY", f"memslot {s.id} is logging and gfn "
                                       f"{s.base_gfn + g:#x} is writable at stage 2 (leaf "
                                       f"[{ipa:#x}, {ipa + size:#x}) level {level}) but not in "
                                       f"the dirty bitmap: a write would not be logged",
                              slot=s.id, ipa=ipa, desc=d))
    return out


def check_mmu_state(raw):
    """MS, MS-PERM and DIRTY of one raw VM state."""
    view = raw if isinstance(raw, MmuView) else MmuView(raw)
    return check_ms(view) + check_perms(view) + check_dirty(view)


AGE_WARN = "kvm_age_gfn: range of "


@statement("MMU-WARN", constrains=(
    "user_mem_abort", "kvm_handle_guest_abort", "__unmap_stage2_range", "kvm_set_spte_gfn",
    "kvm_mmu_wp_memory_region"))
def check_mmu_warnings(raw):
    """MMU-WARN: no WARN_ON / VM_BUG_ON of mmu.c or the notifier glue ever fires.

    Statement: the raw state's ``mmu.warnings`` (every WARN the model of mmu.c and of the generic
    notifier code recorded, cumulative) is empty.

    Why: each of those WARNs asserts something the kernel takes for granted (a fault IPA inside the
    IPA space, a known vma_shift, change_pte inside an invalidation, notifier ranges of one page or
    one block, page-aligned unmaps); a WARN that fires is a broken assumption, not a behaviour.
    Exempt (a finding, the 5.13 kernel reaches it too): kvm_age_gfn's WARN on a range that is
    neither a page nor a PMD / PUD. clear_flush_young of a THP or hugetlb PMD hands the notifier the
    whole huge page, and __kvm_handle_hva_range clips it to the memslot, so a memslot that starts or
    ends inside a huge page gets a shorter range and the WARN fires.
    Constrains: user_mem_abort, kvm_handle_guest_abort, __unmap_stage2_range, kvm_set_spte_gfn,
    kvm_mmu_wp_memory_region, the notifier glue.
    """
    found = raw.warnings if isinstance(raw, MmuView) else (raw.get("mmu") or {}).get("warnings", [])
    warns = [w for w in found if not str(w).startswith(AGE_WARN)]
    return [_v("MMU-WARN", f"WARN fired: {w}") for w in warns[:4]]
