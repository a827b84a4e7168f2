"""The generic page-table walker of arch/arm64/kvm/hyp/pgtable.c (5.12-5.15).

Models ``kvm_pgtable_walk`` -> ``_kvm_pgtable_walk`` -> ``__kvm_pgtable_walk`` ->
``__kvm_pgtable_visit`` exactly:

* the walked range is ``[ALIGN_DOWN(addr, PAGE_SIZE), PAGE_ALIGN(start + size))`` in u64 arithmetic
  (a size that wraps makes an empty walk); ``-ERANGE`` when either end lies beyond ``2**ia_bits``,
  ``-EINVAL`` when the table has no root;
* the walk starts in the concatenated root page that holds the start address and moves to the next
  root page while the range goes on;
* at each entry: TABLE_PRE for a table, LEAF for anything else followed by a re-read of the entry (a
  LEAF callback may have turned it into a table, which is then descended into), descent into a table
  using the descriptor read *before* TABLE_PRE, then TABLE_POST with the address the visit started at;
* after a non-table entry the address advances by aligning down to the entry's granule and adding
  it, so a walk that starts inside an entry lands on the next entry boundary (the fix of 357ad203d45c);
* the first non-zero callback result stops the walk and is returned.

A callback is ``cb(addr, end, level, tbl, ptp, idx, flag) -> int`` where ``tbl`` is the list of
descriptors of the table page at physical address ``ptp`` and ``idx`` the entry: ``(tbl, idx)`` is
the kernel's ``ptep``. Walk flags are those of ``enum kvm_pgtable_walk_flags``.
"""

from __future__ import annotations

import errno

from ptspec.impl.pgtable.geometry import U64
from ptspec.impl.pgtable.pte import KVM_PTE_TYPE, KVM_PTE_VALID, kvm_pte_to_phys

KVM_PGTABLE_WALK_LEAF = 1 << 0
KVM_PGTABLE_WALK_TABLE_PRE = 1 << 1
KVM_PGTABLE_WALK_TABLE_POST = 1 << 2


class KvmPgtableWalker:
    """struct kvm_pgtable_walker: a callback and the flags saying when to call it."""

    __slots__ = ("cb", "flags")

    def __init__(self, cb, flags: int):
        self.cb = cb
        self.flags = flags


class WalkData:
    """struct kvm_pgtable_walk_data: the walk's cursor and its end."""

    __slots__ = ("pgt", "walker", "addr", "end", "pages", "shift", "size", "ptrs", "page_shift",
                 "cb", "flags")

    def __init__(self, pgt, walker: KvmPgtableWalker, addr: int, end: int):
        self.pgt = pgt
        self.walker = walker
        self.addr = addr
        self.end = end
        gran = pgt.gran
        self.pages = pgt.mm_ops.pool.pages
        self.shift = gran.shift
        self.size = gran.size
        self.ptrs = gran.ptrs_per_pte
        self.page_shift = gran.page_shift
        self.cb = walker.cb
        self.flags = walker.flags


def kvm_pgtable_walk(pgt, addr: int, size: int, walker: KvmPgtableWalker) -> int:
    page_mask = pgt.gran.page_size - 1
    start = addr & ~page_mask & U64
    end = (start + size + page_mask) & ~page_mask & U64
    return _kvm_pgtable_walk(WalkData(pgt, walker, start, end))


def _kvm_pgtable_walk(data: WalkData) -> int:
    pgt = data.pgt
    limit = 1 << pgt.ia_bits
    if data.addr > limit or data.end > limit:
        return -errno.ERANGE
    if pgt.pgd is None:
        return -errno.EINVAL
    ret = 0
    idx = pgt.pgd_page_idx(data.addr)
    while data.addr < data.end:
        ret = __kvm_pgtable_walk(data, pgt.pgd[idx], pgt.start_level)
        if ret:
            break
        idx += 1
    return ret


def __kvm_pgtable_walk(data: WalkData, ptp: int, level: int) -> int:
    if level >= 4:
        data.pgt.warn("__kvm_pgtable_walk: level beyond the last")
        return -errno.EINVAL
    tbl = data.pages[ptp]
    ret = 0
    ptrs = data.ptrs
    idx = (data.addr >> data.shift[level]) & (ptrs - 1)
    end = data.end                  # fixed for the walk; data.addr moves with every visit
    # the kernel's for loop, as a counter: s2.proof.walk.table, s2.z3.walk-index and
    # s2.z3.root-index run this code on a symbolic index, which range() cannot take
    while idx < ptrs:
        if data.addr >= end:
            break
        ret = __kvm_pgtable_visit(data, tbl, ptp, idx, level)
        if ret:
            break
        idx += 1
    return ret


_TABLE_BITS = KVM_PTE_VALID | KVM_PTE_TYPE


def __kvm_pgtable_visit(data: WalkData, tbl: list, ptp: int, idx: int, level: int) -> int:
    ret = 0
    addr = data.addr
    pte = tbl[idx]
    table = level != 3 and (pte & _TABLE_BITS) == _TABLE_BITS      # kvm_pte_table()
    flags = data.flags

    if table and flags & KVM_PGTABLE_WALK_TABLE_PRE:
        ret = data.cb(addr, data.end, level, tbl, ptp, idx, KVM_PGTABLE_WALK_TABLE_PRE)

    if not table and flags & KVM_PGTABLE_WALK_LEAF:
        ret = data.cb(addr, data.end, level, tbl, ptp, idx, KVM_PGTABLE_WALK_LEAF)
        pte = tbl[idx]
        table = level != 3 and (pte & _TABLE_BITS) == _TABLE_BITS

    if ret:
        return ret

    if not table:
        granule = data.size[level]
        data.addr = (data.addr & ~(granule - 1)) + granule
        return ret

    childp = kvm_pte_to_phys(pte, data.page_shift)
    ret = __kvm_pgtable_walk(data, childp, level + 1)
    if ret:
        return ret

    if flags & KVM_PGTABLE_WALK_TABLE_POST:
        ret = data.cb(addr, data.end, level, tbl, ptp, idx, KVM_PGTABLE_WALK_TABLE_POST)
    return ret
