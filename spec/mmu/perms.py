"""MS-PERM: every permission a stage-2 leaf grants is justified, page by page.

Models what arch/arm64/kvm/mmu.c (5.13) knows when it decides a leaf's read, write and execute
permissions (``user_mem_abort``'s prot, ``kvm_phys_addr_ioremap``, ``kvm_set_spte_gfn``, the
dirty-log write-protect), and states that no page of any valid leaf is granted more:

R -- the page lies in a memslot and the host mm backs its HVA (or in an I/O region KVM was asked
     to map);
W -- and the memslot is not read-only, the VMA is writable (VM_WRITE) and the host maps the page
     writable; while the slot logs dirty pages, only pages whose write was logged (dirty bit set);
     an I/O page only when its request asked for it;
X -- never device memory; normal memory only where the CPU makes I-cache maintenance unnecessary
     (ARM64_HAS_CACHE_DIC: user_mem_abort then maps all normal memory executable) or where the
     guest's instruction fetch faulted and was granted it: the ghost ``fetched`` ranges of the
     memslot (the leaf each such fetch completed through, with its output address; a fetch fault
     that maps a block grants the whole block, as 5.13 does), as long as the page still translates
     to the address the fetch was granted (a page the host replaced must be fetched again).

A block built over pages of which some never justified a permission breaks MS-PERM for those
pages, whatever the others justified.

Leaves out: where the leaf translates to (MS), the dirty bitmap's own consistency (DIRTY), cache
maintenance (C-MMU-CMO), the access flag.
"""

from bisect import bisect_right

from ptspec.spec.arch import descriptor as D
from ptspec.spec.mmu.state import READONLY, MmuView
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation

LIMIT = 20          # violations reported per state


def _v(msg, **where):
    return Violation("MS-PERM", msg, where)


def covered(ranges, lo, hi):
    """The first address of [lo, hi) that no range of the sorted list covers, or None."""
    pos = lo
    for a, b in ranges:
        if a > pos:
            break
        if b > pos:
            pos = b
            if pos >= hi:
                return None
    return pos if pos < hi else None


def ranges_union(ranges):
    """The union of [a, b) ranges as (starts, ends) of sorted disjoint runs, touching ones joined:
    built once, it answers each ``first_uncovered`` query with one bisection."""
    starts, ends = [], []
    for a, b in sorted(ranges):
        if ends and a <= ends[-1]:
            ends[-1] = max(ends[-1], b)
        elif a < b:
            starts.append(a)
            ends.append(b)
    return starts, ends


def first_uncovered(union, lo, hi):
    """``covered`` over a ``ranges_union``: the first address of [lo, hi) outside it, or None."""
    starts, ends = union
    i = bisect_right(starts, lo) - 1
    pos = ends[i] if i >= 0 and ends[i] > lo else lo
    return pos if pos < hi else None


def _unwritable_vma(view, lo, hi):
    """The first HVA of [lo, hi) not inside a writable VMA, or None."""
    pos = lo
    while pos < hi:
        vma = view.vma_of(pos)
        if vma is None or not vma.get("writable", True):
            return pos
        pos = vma["end"]
    return None


def _io_request(view, ipa, size):
    """The ioremap request [ipa, pa, size, writable] whose pages hold [ipa, ipa + size), or None."""
    mask = view.psize - 1
    for req in view.ioremap:
        lo = req[0] & ~mask
        hi = (req[0] + req[2] + mask) & ~mask
        if lo <= ipa and ipa + size <= hi:
            return req
    return None


class _Leaf:
    """One leaf being judged; its description is written only when a violation needs it."""

    __slots__ = ("view", "ipa", "size", "level", "desc")

    def __init__(self, view, ipa, size, level, desc):
        self.view, self.ipa, self.size, self.level, self.desc = view, ipa, size, level, desc

    def v(self, msg):
        d = self.desc
        names = "".join(c for c, on in (("R", d & D.S2AP_R), ("W", d & D.S2AP_W),
                                        ("X", not d & D.XN)) if on)
        what = (f"{'block' if self.size > self.view.psize else 'page'} [{self.ipa:#x}, "
                f"{self.ipa + self.size:#x}) (level {self.level}, {names})")
        return _v(what + msg, ipa=self.ipa, desc=d, level=self.level)


def perms_of_leaf(view: MmuView, ipa, size, level, d):
    """The MS-PERM violations of one valid leaf (at most one per permission)."""
    r, w, x = d & D.S2AP_R, d & D.S2AP_W, not d & D.XN
    if not (r or w or x):
        return []
    leaf = _Leaf(view, ipa, size, level, d)
    out = []
    device = x and view.is_device(d)
    if device:
        out.append(leaf.v(" is executable device memory: user_mem_abort never grants X with "
                          "KVM_PGTABLE_PROT_DEVICE and an I/O region is mapped R/W only"))
    slot = view.slot_of(ipa)
    if slot is None or slot.end < ipa + size:
        return out + _io_perms(view, slot, leaf, w)
    out += _host_perms(view, slot, leaf, w)
    if x and not device and not view.dic:
        delta = view.oa(d) - ipa             # a grant counts only while it translates the same
        bad = first_uncovered(slot.granted(delta), ipa, ipa + size)
        if bad is not None:
            out.append(leaf.v(f": gfn {bad >> view.ps:#x} is executable but no instruction fetch "
                              f"of the guest faulted for it at this address (and the CPU has no "
                              f"DIC)"))
    return out


def _io_perms(view, slot, leaf, w):
    """A leaf outside memslots (or leaving one): only an ioremap request justifies it."""
    req = _io_request(view, leaf.ipa, leaf.size) if slot is None else None
    if req is None:
        return [leaf.v(f": ipa {leaf.ipa:#x} is in no memslot, or the leaf leaves its memslot, "
                       f"and no I/O region holds it: nothing justifies access")]
    if w and not req[3]:
        return [leaf.v(" is writable but its I/O region was requested read-only")]
    return []


def _host_perms(view, slot, leaf, w):
    """R and W of a leaf inside a memslot: the host backs every page (writable for W), and W
    also needs a writable slot, VM_WRITE VMAs and, while logging, every page's dirty bit."""
    out = []
    ipa, size = leaf.ipa, leaf.size
    ps, hva = view.ps, slot.hva(ipa)
    for h0, hsize, pfn, kind, hw in view.host_pieces(hva, size):
        if kind is None or (w and not hw):
            gfn = (slot.start + (max(h0, hva) - slot.uaddr)) >> ps
            if kind is None:
                return out + [leaf.v(f": gfn {gfn:#x} (memslot {slot.id}) has no host page at "
                                     f"hva {h0:#x} to justify any access")]
            out.append(leaf.v(f": gfn {gfn:#x} is writable but the host maps hva "
                              f"{max(h0, hva):#x} read-only"))
            w = False
    if not w:
        return out
    if slot.flags & READONLY:
        return out + [leaf.v(f" is writable in read-only memslot {slot.id}")]
    bad = _unwritable_vma(view, hva, hva + size)
    if bad is not None:
        return out + [leaf.v(f": gfn {(slot.start + bad - slot.uaddr) >> ps:#x} is writable "
                             f"but hva {bad:#x} is in no VM_WRITE VMA")]
    if slot.logging:
        g0, n = (ipa - slot.start) >> ps, size >> ps
        clean = ~slot.bits(g0, n) & ((1 << n) - 1)
        if clean:
            g = g0 + (clean & -clean).bit_length() - 1
            out.append(leaf.v(f": memslot {slot.id} is logging and gfn {slot.base_gfn + g:#x} "
                              f"is writable before a write fault for it was logged"))
    return out


@statement("MS-PERM", constrains=(
    "user_mem_abort", "kvm_handle_guest_abort", "transparent_hugepage_adjust",
    "kvm_phys_addr_ioremap", "kvm_set_spte_gfn", "kvm_mmu_wp_memory_region",
    "kvm_mmu_write_protect_pt_masked"))
def check_perms(view: MmuView):
    """MS-PERM: every permission a stage-2 leaf grants is justified for every page it covers.

    Statement: for every valid stage-2 leaf and every page p it covers: if the leaf grants any
    access (R, W or X), p lies in a memslot whose HVA for p the host maps (or, outside memslots,
    in an ioremap request); W only if the memslot is not read-only, p's HVA is in a VM_WRITE VMA
    and the host maps it writable, and, while the memslot logs dirty pages, p's dirty bit is set
    (a write fault for p was logged); an I/O page is writable only if its request asked for it;
    X never on device memory, and on normal memory only when the CPU has DIC (mmu.dic) or p lies
    in one of the memslot's ``fetched`` ranges (the leaf an instruction fetch of the guest faulted
    for and completed through) and still translates to the address that range was granted at. A
    block whose pages do not all justify a permission it grants breaks MS-PERM.

    Why: stage 2 is the guest's only limit: a writable page the host mapped read-only (a KSM or
    zero page, a read-only file) lets the guest corrupt host memory; a write that escapes the
    dirty log is lost in migration; an executable page the guest never fetched from was never
    I-cache-maintained for execution, and an executable block built from one fetched page hands
    execute rights over memory the guest only ever read.

    Constrains: user_mem_abort (prot R, W only when writable and, under logging, for write
    faults; X only for exec faults or DIC; transparent_hugepage_adjust and block builds granting
    only what the fault asked), kvm_handle_guest_abort (exec faults routed), kvm_phys_addr_ioremap
    (device, R/W), kvm_set_spte_gfn (R only), kvm_mmu_wp_memory_region and
    kvm_mmu_write_protect_pt_masked (W removed while logging).
    """
    out = []
    for ipa, size, level, d in view.leaves():
        out.extend(perms_of_leaf(view, ipa, size, level, d))
        if len(out) > LIMIT:
            break
    return out
