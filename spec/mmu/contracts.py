"""Two-state checks of the stage-2 fault path: progress, abort routing, dirty marking, contracts.

Models what each VM-level step must achieve, judged from raw pre/post states and the step record
(docs/mmu.md lists the ops). Kernel functions constrained: ``kvm_handle_guest_abort``,
``user_mem_abort``, ``handle_access_fault``, ``kvm_arch_prepare_memory_region``,
``kvm_arch_commit_memory_region``, ``kvm_arch_flush_shadow_memslot``, ``stage2_unmap_vm``,
``kvm_phys_addr_ioremap``, ``kvm_mmu_write_protect_pt_masked``, the MMU-notifier hooks.

Each id's statement (PROGRESS, C-MMU-ABORT, -PREPARE, -COMMIT, -FLUSH-SLOT, -NOTIFIER, -WP,
-IOREMAP, -UNMAP-VM, and the per-step form of DIRTY) is declared in spec/mmu/contract_statements.py;
C-MMU-CMO is stated on check_cmo below.
"""

import errno

from ptspec.spec.arch import descriptor as D
from ptspec.spec.mmu.perms import first_uncovered, ranges_union
from ptspec.spec.mmu.state import LOG_DIRTY, READONLY, MmuView
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation

FAULT_BOUND = 4
S2AP_W, AF, XN = D.S2AP_W, D.AF, D.XN


def _bits(mask, limit=64):
    """The first `limit` set bit positions of mask."""
    out = []
    while mask and len(out) < limit:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def _v(inv, msg, **where):
    return Violation(inv, msg, where)


def _legal(pre: MmuView, ipa, kind):
    """None when the access must complete; else the outcomes the routing allows."""
    slot = pre.slot_of(ipa)
    write = kind in ("write", "s1ptw", "cm")
    if slot is None or (write and slot.flags & READONLY):
        if kind == "exec":
            return {"pabt"}
        if kind == "s1ptw":
            return {"dabt"}
        if kind == "cm" and slot is None:
            return {"skip"}
        return {"mmio"}
    vma = pre.vma_of(slot.hva(ipa))
    if vma is None:
        return {"error"}
    if write and not vma["writable"]:
        return {"error"}
    if kind == "exec" and vma["kind"] == "pfnmap":
        return {"pabt"}
    return None


def check_access(pre: MmuView, step, post: MmuView):
    out = []
    args, o = step["args"], step["out"]
    ipa, kind = args["ipa"], args["kind"]
    races = args.get("races", 0)
    allowed = _legal(pre, ipa, kind)
    n = len(o["faults"])
    if allowed is None:
        if args.get("enomem") and o["result"] == "error" and o["errno"] == -errno.ENOMEM:
            pass        # the host ran out of memory (injected): the access may fail, cleanly
        elif o["result"] != "done" or n > FAULT_BOUND + races:
            out.append(_v("PROGRESS", f"{kind} at ipa {ipa:#x} is allowed by the memslots and the "
                                      f"host but ended '{o['result']}' after {n} faults (bound "
                                      f"{FAULT_BOUND + races})", ipa=ipa))
    elif o["result"] not in allowed and not (o["result"] == "done" and not o["faults"]):
        # (an access the stage-2 tables allowed never reached the handler: MS judges the tables)
        out.append(_v("C-MMU-ABORT", f"{kind} at ipa {ipa:#x} ended '{o['result']}' "
                                     f"(errno {o['errno']}), expected {sorted(allowed)}", ipa=ipa))
    # dirty bits set by this access
    gfn = ipa >> pre.ps
    ok_write = any(w and ret >= 0 for _, _, w, ret in o["faults"])
    for s in post.slots:
        ps_ = pre.slot_by_id(s.id)
        if s.bitmap is None or ps_ is None or ps_.bitmap is None:
            continue
        for g in _bits(s.bitmap & ~ps_.bitmap):
            leaf = post.leaf_at(s.start + (g << pre.ps))
            fine = (s.base_gfn + g == gfn and ok_write and leaf is not None
                    and leaf.desc & S2AP_W)
            if not fine:
                out.append(_v("DIRTY", f"gfn {s.base_gfn + g:#x} became dirty in memslot {s.id} "
                                       f"but no fault that wrote it succeeded (faults: "
                                       f"{o['faults']})", slot=s.id))
    return out


def _no_new_dirty(pre, post, what):
    out = []
    for s in post.slots:
        p = pre.slot_by_id(s.id)
        if s.bitmap is None or p is None or p.bitmap is None:
            continue
        new = _bits(s.bitmap & ~p.bitmap)
        if new:
            out.append(_v("DIRTY", f"{what} set dirty bits of gfn "
                                   f"{', '.join(hex(s.base_gfn + g) for g in new[:4])} in memslot "
                                   f"{s.id}"))
    return out


def check_set_memory_region(pre: MmuView, step, post: MmuView):
    out = []
    a, ret = step["args"], step["ret"]
    gpa, size, flags, uaddr = a["guest_phys_addr"], a["memory_size"], a["flags"], a["userspace_addr"]
    old = pre.slot_by_id(a["slot"])
    end = gpa + size
    if size == 0:
        change = "delete"
    elif old is None:
        change = "create"
    elif gpa != old.start:
        change = "move"
    else:
        change = "flags"
    if ret == -errno.EFAULT and end <= pre.ipa_limit:
        out.append(_v("C-MMU-PREPARE", f"region [{gpa:#x}, {end:#x}) fits the IPA space "
                                       f"({pre.ipa_limit:#x}) but was refused with -EFAULT"))
    if ret == 0 and change in ("create", "move") and end > pre.ipa_limit:
        out.append(_v("C-MMU-PREPARE", f"region [{gpa:#x}, {end:#x}) ends beyond the IPA space "
                                       f"({pre.ipa_limit:#x}) but was accepted"))
    pfnmaps = [v for v in pre.vmas if v["kind"] == "pfnmap" and v["start"] < uaddr + size
               and uaddr < v["end"]] if size else []
    if ret == 0 and flags & LOG_DIRTY and pfnmaps and change != "delete":
        out.append(_v("C-MMU-PREPARE", "dirty logging was accepted over a VM_PFNMAP VMA"))
    if ret == 0 and change in ("create", "move"):
        for v in pfnmaps:
            lo, hi = max(uaddr, v["start"]), min(uaddr + size, v["end"])
            hva = lo
            while hva < hi:          # each page from lo on; a leaf's pages are judged at its first
                ipa = gpa + (hva - uaddr)
                leaf = post.leaf_at(ipa)
                want = (v["pgoff"] << pre.ps) + (hva - v["start"])
                if leaf is None or not post.is_device(leaf.desc) or \
                        post.oa(leaf.desc) + (ipa - leaf.ipa) != want:
                    out.append(_v("C-MMU-PREPARE", f"PFNMAP page at ipa {ipa:#x} (pa {want:#x}) "
                                                   f"is not mapped as device memory after prepare"))
                    break
                # the other pages of this leaf: the same leaf, and its output and the wanted pa
                # both advance with the page, so they agree there too
                hva += -(-(leaf.ipa + leaf.size - ipa) // pre.psize) * pre.psize
    if ret != 0 and change in ("create", "move", "flags") and size:
        before = set(pre.leaves_in(gpa, end))
        new = [lf for lf in post.leaves_in(gpa, end) if lf not in before]
        if new:
            out.append(_v("C-MMU-PREPARE", f"failed region update ({ret}) left new mappings in "
                                           f"[{gpa:#x}, {end:#x}): first at {new[0][0]:#x}"))
    if ret == 0 and change != "delete" and flags & LOG_DIRTY:
        slot = post.slot_by_id(a["slot"])
        was_logging = old is not None and old.bitmap is not None and change != "create"
        if slot is not None and not was_logging:
            if post.init_set:
                if slot.bitmap != (1 << slot.npages) - 1:
                    out.append(_v("C-MMU-COMMIT", f"memslot {slot.id}: initially-all-set bitmap "
                                                  f"has {bin(slot.bitmap).count('1')} of "
                                                  f"{slot.npages} bits set"))
            else:
                for lf in post.leaves_in(slot.start, slot.end):
                    if lf.desc & S2AP_W:
                        out.append(_v("C-MMU-COMMIT", f"memslot {slot.id}: dirty logging enabled "
                                                      f"but [{lf.ipa:#x}, {lf.ipa + lf.size:#x}) is "
                                                      f"still writable"))
                        break
    if ret == 0 and change in ("delete", "move") and old is not None:
        new_lo, new_hi = (gpa, end) if change == "move" else (0, 0)
        left = [lf for lf in post.leaves_in(old.start, old.end)
                if not (new_lo <= lf.ipa and lf.ipa + lf.size <= new_hi)]
        if left:
            out.append(_v("C-MMU-FLUSH-SLOT", f"memslot {old.id} was {change}d but "
                                              f"[{left[0][0]:#x}, {left[0][0] + left[0][1]:#x}) is "
                                              f"still mapped in its old range"))
    return out


def _ipa_ranges_of_hva(view, lo, hi):
    for s in view.slots:
        a, b = max(lo, s.uaddr), min(hi, s.uaddr + (s.npages << view.ps))
        if a < b:
            yield s, s.start + (a - s.uaddr), s.start + (b - s.uaddr)


def check_host_op(pre: MmuView, step, post: MmuView):
    """split_thp / zap / ksm / munmap / age / test_age: the notifier hooks' contracts."""
    out = []
    op, a = step["op"], step["args"]
    inv = step["out"].get("invalidated")
    if inv:
        lo, hi = inv
        for s, ilo, ihi in _ipa_ranges_of_hva(pre, lo, hi):
            for lf in post.leaves_in(ilo, ihi):
                if op == "ksm" and lf.size == post.psize and not lf.desc & S2AP_W:
                    continue          # change_pte installed the merged page read-only
                out.append(_v("C-MMU-NOTIFIER", f"{op}: hva [{lo:#x}, {hi:#x}) was invalidated "
                                                f"but ipa [{lf.ipa:#x}, {lf.ipa + lf.size:#x}) of "
                                                f"memslot {s.id} is still mapped"))
                break
    if op in ("age", "test_age"):
        young_ret = step["ret"]
        want = False
        # the mm hands clear_flush_young the host leaf's range and test_young its address; KVM
        # looks at the first gfn of each slot's part of it (kvm_age_gfn / kvm_test_age_gfn)
        end = a["end"] if op == "age" else a["start"] + 1
        for s, ilo, ihi in _ipa_ranges_of_hva(pre, a["start"], end):
            lf = pre.leaf_at(ilo)
            want |= bool(lf is not None and lf.desc & AF)
            if op == "age":
                lf2 = post.leaf_at(ilo)
                if lf2 is not None and lf2.desc & AF:
                    out.append(_v("C-MMU-NOTIFIER", f"age: ipa {ilo:#x} is still young"))
        if bool(young_ret) != want:
            out.append(_v("C-MMU-NOTIFIER", f"{op} of hva [{a['start']:#x}, {a['end']:#x}) "
                                            f"returned {bool(young_ret)}, the leaf was "
                                            f"{'young' if want else 'old'}"))
    out += _no_new_dirty(pre, post, op)
    return out


def check_dirty_log(pre: MmuView, step, post: MmuView):
    """out["cleared"]: bit mask (bit g = gfn base_gfn + g) of the dirty bits harvested and cleared."""
    out = []
    a = step["args"]
    cleared = step["out"].get("cleared", 0)
    s = post.slot_by_id(a["slot"])
    if s is not None and cleared:
        for ipa, size, level, d in post.leaves_in(s.start, s.end):
            if not d & S2AP_W:
                continue
            g0 = (max(ipa, s.start) - s.start) >> pre.ps
            g1 = (min(ipa + size, s.end) - s.start) >> pre.ps
            hit = cleared >> g0 & ((1 << (g1 - g0)) - 1)
            if hit:
                g = g0 + (hit & -hit).bit_length() - 1
                out.append(_v("C-MMU-WP", f"gfn {s.base_gfn + g:#x} of memslot {s.id} was "
                                          f"harvested from the dirty log but is still writable "
                                          f"(leaf [{ipa:#x}, {ipa + size:#x}) level {level})"))
                break
        still = _bits((s.bitmap or 0) & cleared, 4)
        if still:
            out.append(_v("C-MMU-WP", f"gfn {', '.join(hex(s.base_gfn + g) for g in still)} "
                                      f"harvested but still set in the bitmap"))
    out += _no_new_dirty(pre, post, step["op"])
    return out


def check_ioremap(pre: MmuView, step, post: MmuView):
    out = []
    a = step["args"]
    if step["ret"] != 0:
        return out
    mask = pre.psize - 1
    base = a["ipa"] & ~mask
    size = a["size"] + (a["ipa"] & mask)
    for k in range(0, size, pre.psize):
        lf = post.leaf_at(base + k)
        want = (a["pa"] + k) & ~mask
        if lf is None or not post.is_device(lf.desc) or post.oa(lf.desc) != want or \
                bool(lf.desc & S2AP_W) != bool(a["writable"]):
            out.append(_v("C-MMU-IOREMAP", f"ipa {base + k:#x} should map device pa {want:#x} "
                                           f"({'rw' if a['writable'] else 'ro'}) after "
                                           f"kvm_phys_addr_ioremap"))
            break
    return out


def check_unmap_vm(pre: MmuView, step, post: MmuView):
    out = []
    for s in pre.slots:
        for v in pre.vmas:
            lo, hi = max(s.uaddr, v["start"]), min(s.uaddr + (s.npages << pre.ps), v["end"])
            if lo >= hi:
                continue
            ilo, ihi = s.start + (lo - s.uaddr), s.start + (hi - s.uaddr)
            if v["kind"] == "pfnmap":
                if post.leaves_in(ilo, ihi) != pre.leaves_in(ilo, ihi):
                    out.append(_v("C-MMU-UNMAP-VM", f"stage2_unmap_vm changed the PFNMAP part "
                                                    f"[{ilo:#x}, {ihi:#x}) of memslot {s.id}"))
            elif post.leaves_in(ilo, ihi):
                out.append(_v("C-MMU-UNMAP-VM", f"stage2_unmap_vm left [{ilo:#x}, {ihi:#x}) of "
                                                f"memslot {s.id} mapped"))
    return out


STEP_CHECKS = {
    "access": check_access, "set_memory_region": check_set_memory_region,
    "split_thp": check_host_op, "zap": check_host_op, "ksm": check_host_op,
    "age": check_host_op, "test_age": check_host_op,
    "get_dirty_log": check_dirty_log, "clear_dirty_log": check_dirty_log,
    "ioremap": check_ioremap, "unmap_vm": check_unmap_vm,
}


def _covered(union, lo, hi):
    """Is [lo, hi) inside the union (perms.ranges_union) of the ranges?"""
    return first_uncovered(union, lo, hi) is None


@statement("C-MMU-CMO", constrains=(
    "user_mem_abort", "kvm_set_spte_gfn", "clean_dcache_guest_page", "invalidate_icache_guest_page"))
def check_cmo(pre: MmuView, step, post: MmuView):
    """C-MMU-CMO: the cache maintenance of user_mem_abort / kvm_set_spte_gfn (5.13 mmu.c).

    Statement: over the step's logged events (post.s2.tlb_log), for ``access`` and ``ksm`` steps:
    every valid normal-memory leaf of post over IPAs pre left unmapped or translated elsewhere is covered by
    ["dcache", pa, size] events over its whole output range unless the CPU has FWB; for ``access``
    steps every valid leaf that is executable in post and was not an executable leaf with the same
    output in pre is covered by ["icache", pa, size] events unless the CPU has DIC (``step["dic"]``);
    with FWB an access logs no dcache event and with DIC no icache event. For every step, every
    dcache / icache event lies in RAM (cache maintenance by VA of a page KVM does not own as memory
    is not what mmu.c does: device pfns are skipped).
    Exempt, as 5.13 does it: a permission fault whose mapping size differs from the fault granule
    maps a block over pages already mapped to the same place (after logging was switched off)
    without a clean (fault_status is FSC_PERM); a leaf whose IPAs pre already translated to the same
    addresses is therefore not required to be cleaned again.
    Why: without FWB the guest may see memory through a non-cacheable alias, so dirty lines must
    reach PoC before the guest gets the page; without DIC the I-cache may hold stale instructions.

    Constrains: user_mem_abort, kvm_set_spte_gfn, clean_dcache_guest_page,
    invalidate_icache_guest_page.
    """
    out = []
    events = [tuple(e) for e in post.s2.tlb_log]
    dc = [(e[1], e[1] + e[2]) for e in events if e[0] == "dcache"]
    ic = [(e[1], e[1] + e[2]) for e in events if e[0] == "icache"]
    ram_lo, ram_hi = post.ram[0] << post.ps, post.ram[1] << post.ps
    for kind, rng in (("dcache", dc), ("icache", ic)):
        for a, b in rng:
            if not (ram_lo <= a and b <= ram_hi):
                out.append(_v("C-MMU-CMO", f"{step['op']}: {kind} maintenance of [{a:#x}, {b:#x}) "
                                           f"outside RAM"))
                break
    op = step["op"]
    if op not in ("access", "ksm"):
        return out
    fwb, dic = post.s2.has_fwb, bool(step.get("dic", False))
    if op == "access" and fwb and dc:
        out.append(_v("C-MMU-CMO", f"access: D-cache clean of [{dc[0][0]:#x}, {dc[0][1]:#x}) "
                                   f"although the CPU has FWB"))
    if op == "access" and dic and ic:
        out.append(_v("C-MMU-CMO", f"access: I-cache invalidation of [{ic[0][0]:#x}, "
                                   f"{ic[0][1]:#x}) although the CPU has DIC"))
    unchanged = set(pre.leaves())
    dc_union, ic_union = ranges_union(dc), ranges_union(ic)
    for ipa, size, level, d in post.leaves():
        if (ipa, size, level, d) in unchanged or post.is_device(d):
            continue
        oa = post.oa(d)
        olds = pre.leaves_in(ipa, ipa + size)
        fresh = not olds or any(pre.oa(o.desc) + (max(o.ipa, ipa) - o.ipa) != oa + (max(o.ipa, ipa) - ipa)
                                for o in olds)
        if fresh and not fwb and not _covered(dc_union, oa, oa + size):
            out.append(_v("C-MMU-CMO", f"{op}: leaf [{ipa:#x}, {ipa + size:#x}) -> {oa:#x} was "
                                       f"installed without cleaning it to PoC", ipa=ipa))
            break
        if op == "access" and not dic and not d & XN:
            old = pre.leaf_at(ipa)
            same = old is not None and old.ipa == ipa and old.size == size and \
                pre.oa(old.desc) == oa and not old.desc & XN
            if not same and not _covered(ic_union, oa, oa + size):
                out.append(_v("C-MMU-CMO", f"access: leaf [{ipa:#x}, {ipa + size:#x}) -> {oa:#x} "
                                           f"became executable without an I-cache invalidation",
                              ipa=ipa))
                break
    return out


def check_mmu_step(pre, step, post):
    """The two-state checks of one step (pre/post raw states or MmuViews); the step record is
    validated first (``spec/mmu/step.py``: a malformed one is a StateError)."""
    from ptspec.spec.mmu.step import load_mmu_step
    step = load_mmu_step(step)
    pre = pre if isinstance(pre, MmuView) else MmuView(pre)
    post = post if isinstance(post, MmuView) else MmuView(post)
    fn = STEP_CHECKS.get(step["op"])
    if fn is None:
        return _no_new_dirty(pre, post, step["op"]) + check_cmo(pre, step, post)
    return fn(pre, step, post) + check_cmo(pre, step, post)
