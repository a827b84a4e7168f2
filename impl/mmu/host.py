"""The host side that arch/arm64/kvm/mmu.c (Linux 5.13) relies on: user VMAs, HVA -> PFN, page refs.

Models, as the KVM fault path sees them:

* the arm64 host page-table sizes of one build (``PAGE_SHIFT``, ``CONT_PTE_SHIFT``, ``PMD_SHIFT``,
  ``CONT_PMD_SHIFT``, ``PUD_SHIFT``, ``PTRS_PER_PMD``) and the hugetlbfs sizes arm64 offers for each
  granule (``arch_hugetlb_valid_size``: PUD with 4K only, CONT_PMD, PMD, CONT_PTE);
* user-space VMAs: anonymous memory backed by small pages, optionally by transparent huge pages of
  PMD size (which can be split); hugetlbfs VMAs of one huge-page size; ``VM_PFNMAP`` device regions
  whose pfns (``vm_pgoff`` onwards) lie outside RAM (so ``pfn_valid`` is false);
* ``get_user_pages`` as ``__gfn_to_pfn_memslot`` uses it: fault the page in on first touch, answer
  whether the host mapping is writable, break copy-on-write for a write, take a page reference;
* page references, dirty and accessed marks (``kvm_get_pfn``, ``kvm_release_pfn_clean``,
  ``kvm_set_pfn_dirty``, ``kvm_set_pfn_accessed``), ``kvm_is_transparent_hugepage``;
* the MMU-notifier events the mm raises: a THP split and ``MADV_DONTNEED`` (invalidate range start /
  end), KSM merging one page into a read-only copy (start, ``change_pte``, end), and page aging
  (``clear_flush_young`` / ``test_young``, one host leaf at a time as ``page_referenced_one`` does).

Left out: the zero page (a first read allocates a real page), swap, NUMA, migration other than KSM,
hwpoison, hugetlb reservations, VMA splitting/merging (VMAs are created and removed whole), page
contents.

Physical pages are handed out by a bump allocator (never reused), RAM pfns are ``[ram_lo, ram_hi)``.
"""

from __future__ import annotations

import bisect
import errno

from ptspec.impl.pgtable import args

ANON, HUGETLB, PFNMAP = "anon", "hugetlb", "pfnmap"
RAM_BASE = 0x40_0000_0000           # physical base of host RAM (pfn_valid range starts here)
RAM_SIZE = 0x40_0000_0000           # 256 GiB of RAM, enough for any hugetlb size
DEVICE_BASE = 0x1000_0000           # where VM_PFNMAP regions point by default (not RAM)

# PTEs per contiguous range, PMDs per contiguous range (arch/arm64/include/asm/pgtable-hwdef.h)
_CONT_PTES = {12: 16, 14: 128, 16: 32}
_CONT_PMDS = {12: 16, 14: 32, 16: 32}


class HostSizes:
    """The host page-table constants of one arm64 build (48-bit VA: no folded PMD)."""

    def __init__(self, page_shift: int):
        if page_shift not in _CONT_PTES:
            raise ValueError(f"page_shift must be 12, 14 or 16, not {page_shift!r}")
        bits = page_shift - 3
        self.PAGE_SHIFT = page_shift
        self.PAGE_SIZE = 1 << page_shift
        self.PMD_SHIFT = page_shift + bits
        self.PUD_SHIFT = page_shift + 2 * bits
        self.CONT_PTE_SHIFT = page_shift + _CONT_PTES[page_shift].bit_length() - 1
        self.CONT_PMD_SHIFT = self.PMD_SHIFT + _CONT_PMDS[page_shift].bit_length() - 1
        self.PMD_SIZE = 1 << self.PMD_SHIFT
        self.PUD_SIZE = 1 << self.PUD_SHIFT
        self.PTRS_PER_PMD = 1 << bits
        self.pmd_folded = False      # __PAGETABLE_PMD_FOLDED: not with a 48-bit host VA

    def hugetlb_shifts(self) -> tuple:
        """arch_hugetlb_valid_size: PUD (4K granule only), CONT_PMD, PMD, CONT_PTE."""
        shifts = [self.CONT_PMD_SHIFT, self.PMD_SHIFT, self.CONT_PTE_SHIFT]
        if self.PAGE_SHIFT == 12:
            shifts.insert(0, self.PUD_SHIFT)
        return tuple(shifts)


class Vma:
    """struct vm_area_struct, reduced to what mmu.c reads."""

    __slots__ = ("start", "end", "kind", "writable", "shift", "pgoff", "thp")

    def __init__(self, start, end, kind, writable=True, shift=0, pgoff=0, thp=False):
        self.start, self.end, self.kind = start, end, kind
        self.writable, self.shift, self.pgoff, self.thp = writable, shift, pgoff, thp

    @property
    def vm_pfnmap(self) -> bool:
        return self.kind == PFNMAP

    def __repr__(self):
        extra = {HUGETLB: f" shift={self.shift}", PFNMAP: f" pgoff={self.pgoff:#x}",
                 ANON: " thp" if self.thp else ""}[self.kind]
        return f"<Vma {self.start:#x}-{self.end:#x} {self.kind}{extra}{'' if self.writable else ' ro'}>"


class HostMM:
    """current->mm of the VMM process, with the notifier KVM registers on it."""

    def __init__(self, page_shift: int = 12):
        page_shift = args.page_shift(page_shift)
        self.sz = HostSizes(page_shift)
        self.page_shift = page_shift
        self.ram_lo = RAM_BASE >> page_shift
        self.ram_hi = (RAM_BASE + RAM_SIZE) >> page_shift
        self._next = self.ram_lo
        self.vmas: list[Vma] = []
        self._starts: list[int] = []
        self.pte: dict[int, list] = {}       # hva >> PAGE_SHIFT -> [pfn, writable] (small pages)
        self.thp: dict[int, int] = {}        # PMD-aligned hva -> head pfn (THP mapped by a PMD)
        self.huge: dict[int, int] = {}       # hugetlb page base hva -> head pfn
        self.thp_heads: set[int] = set()     # head pfns of compound THPs still mapped huge
        self.refs: dict[int, int] = {}       # pfn -> references taken through gup / kvm_get_pfn
        self.dirty: set[int] = set()
        self.accessed: set[int] = set()
        self.errors: list[str] = []
        self.notifiers: list = []

    # -- VMAs -------------------------------------------------------------------------------
    def mmap(self, start, size, kind=ANON, *, writable=True, shift=0, pgoff=None, thp=False) -> Vma:
        """Create a VMA; hugetlb VMAs must be aligned to their huge-page size."""
        start = args.u64("start", start)
        size = args.u64("size", size)
        writable = args.flag("writable", writable)
        shift = args.integer("shift", shift)
        pgoff = args.optional_u64("pgoff", pgoff)
        thp = args.flag("thp", thp)
        ps = self.sz.PAGE_SIZE
        if kind not in (ANON, HUGETLB, PFNMAP):
            raise ValueError(f"unknown VMA kind {kind!r}")
        if start % ps or size % ps or size <= 0:
            raise ValueError("VMA start and size must be page aligned and size positive")
        if kind == HUGETLB:
            if shift not in self.sz.hugetlb_shifts():
                raise ValueError(f"hugetlb page shift {shift} is not one arm64 offers "
                                 f"({self.sz.hugetlb_shifts()})")
            if (start | size) & ((1 << shift) - 1):
                raise ValueError("a hugetlb VMA must be aligned to its page size")
        if kind == PFNMAP and pgoff is None:
            pgoff = DEVICE_BASE >> self.page_shift
        if any(v.start < start + size and start < v.end for v in self.vmas):
            raise ValueError("VMAs may not overlap")
        vma = Vma(start, start + size, kind, writable, shift if kind == HUGETLB else self.page_shift,
                  pgoff or 0, thp and kind == ANON)
        i = bisect.bisect(self._starts, start)
        self.vmas.insert(i, vma)
        self._starts.insert(i, start)
        return vma

    def munmap(self, vma: Vma):
        """Remove a whole VMA: its pages are zapped first (with the notifier)."""
        vma = args.member("vma", vma, self.vmas)
        self.zap(vma.start, vma.end - vma.start)
        i = self.vmas.index(vma)
        del self.vmas[i], self._starts[i]

    def find_vma(self, hva):
        """The VMA containing hva, or None."""
        i = bisect.bisect(self._starts, hva) - 1
        if i >= 0 and hva < self.vmas[i].end:
            return self.vmas[i]
        return None

    def find_vma_intersection(self, start, end):
        """find_vma_intersection: the first VMA that ends above start, if it begins below end."""
        i = bisect.bisect(self._starts, start) - 1
        if i < 0 or self.vmas[i].end <= start:
            i += 1
        if i < len(self.vmas) and self.vmas[i].start < end:
            return self.vmas[i]
        return None

    # -- physical pages ---------------------------------------------------------------------
    def _alloc(self, npages: int) -> int:
        align = npages
        pfn = -(-self._next // align) * align
        if pfn + npages > self.ram_hi:
            raise MemoryError("host model out of RAM")
        self._next = pfn + npages
        return pfn

    def pfn_valid(self, pfn) -> bool:
        return self.ram_lo <= pfn < self.ram_hi

    def is_transparent_hugepage(self, pfn) -> bool:
        """kvm_is_transparent_hugepage: the page belongs to a THP that is still PMD-mapped."""
        return (pfn & ~(self.sz.PTRS_PER_PMD - 1)) in self.thp_heads

    # -- the translation HVA -> (pfn, writable) ---------------------------------------------
    def lookup(self, hva):
        """The present host translation of hva as (pfn, writable), or None (no fault-in)."""
        vma = self.find_vma(hva)
        if vma is None:
            return None
        ps = self.page_shift
        if vma.kind == PFNMAP:
            return vma.pgoff + ((hva - vma.start) >> ps), vma.writable
        if vma.kind == HUGETLB:
            base = hva & ~((1 << vma.shift) - 1)
            head = self.huge.get(base)
            return None if head is None else (head + ((hva - base) >> ps), vma.writable)
        base = hva & ~(self.sz.PMD_SIZE - 1)
        head = self.thp.get(base)
        if head is not None:
            return head + ((hva - base) >> ps), vma.writable
        e = self.pte.get(hva >> ps)
        return None if e is None else (e[0], e[1])

    def _fault_in(self, vma: Vma, hva, write: bool):
        """handle_mm_fault, reduced: make hva present (and writable for a write); (pfn, w)."""
        ps = self.page_shift
        if vma.kind == PFNMAP:
            return vma.pgoff + ((hva - vma.start) >> ps), vma.writable
        if vma.kind == HUGETLB:
            base = hva & ~((1 << vma.shift) - 1)
            head = self.huge.get(base)
            if head is None:
                head = self.huge[base] = self._alloc(1 << (vma.shift - ps))
            return head + ((hva - base) >> ps), vma.writable
        pmd = self.sz.PMD_SIZE
        base = hva & ~(pmd - 1)
        head = self.thp.get(base)
        if head is not None:
            return head + ((hva - base) >> ps), vma.writable
        idx = hva >> ps
        e = self.pte.get(idx)
        if e is None:
            if (vma.thp and vma.start <= base and base + pmd <= vma.end
                    and not any((base >> ps) + k in self.pte for k in range(pmd >> ps))):
                head = self._alloc(pmd >> ps)
                self.thp[base] = head
                self.thp_heads.add(head)
                return head + ((hva - base) >> ps), vma.writable
            e = self.pte[idx] = [self._alloc(1), vma.writable]
        elif write and vma.writable and not e[1]:
            # break copy-on-write of a KSM page: the mm invalidates, then installs a new page
            start = idx << ps
            self._invalidate_start(start, start + (1 << ps))
            e[0], e[1] = self._alloc(1), True
            self._invalidate_end(start, start + (1 << ps))
        return e[0], e[1]

    def get_user_pages(self, hva, write: bool):
        """hva_to_pfn: (pfn, writable) with a reference taken on RAM pages, or (-EFAULT, False)."""
        hva = args.u64("hva", hva)
        vma = self.find_vma(hva)
        if vma is None or (write and not vma.writable):
            return -errno.EFAULT, False
        pfn, writable = self._fault_in(vma, hva, write)
        self.kvm_get_pfn(pfn)
        return pfn, writable

    # -- references --------------------------------------------------------------------------
    def kvm_get_pfn(self, pfn):
        if self.pfn_valid(pfn):
            self.refs[pfn] = self.refs.get(pfn, 0) + 1

    def kvm_release_pfn_clean(self, pfn):
        if not self.pfn_valid(pfn):
            return
        n = self.refs.get(pfn, 0)
        if n <= 0:
            self.errors.append(f"put_page on pfn {pfn:#x} with no reference held")
            return
        if n == 1:
            del self.refs[pfn]
        else:
            self.refs[pfn] = n - 1

    def kvm_set_pfn_dirty(self, pfn):
        if self.pfn_valid(pfn):
            self.dirty.add(pfn)

    def kvm_set_pfn_accessed(self, pfn):
        if self.pfn_valid(pfn):
            self.accessed.add(pfn)

    # -- notifier events ---------------------------------------------------------------------
    def _invalidate_start(self, start, end):
        for n in self.notifiers:
            n.invalidate_range_start(start, end)

    def _invalidate_end(self, start, end):
        for n in self.notifiers:
            n.invalidate_range_end(start, end)

    def split_thp(self, hva) -> bool:
        """__split_huge_pmd: the THP at hva becomes small pages (same pfns), with invalidation."""
        hva = args.u64("hva", hva)
        pmd = self.sz.PMD_SIZE
        base = hva & ~(pmd - 1)
        head = self.thp.get(base)
        if head is None:
            return False
        vma = self.find_vma(base)
        self._invalidate_start(base, base + pmd)
        del self.thp[base]
        self.thp_heads.discard(head)
        ps = self.page_shift
        for k in range(pmd >> ps):
            self.pte[(base >> ps) + k] = [head + k, vma.writable]
        self._invalidate_end(base, base + pmd)
        return True

    def zap(self, start, size):
        """MADV_DONTNEED / munmap: drop the pages of [start, start+size); in a hugetlb VMA the
        range is widened to whole huge pages first (the unit hugetlb unmaps and invalidates)."""
        start = args.u64("start", start)
        size = args.u64("size", size)
        ps = self.page_shift
        end = start + size
        vma = self.find_vma_intersection(start, end)
        if vma is not None and vma.kind == HUGETLB:     # hugetlb pages go whole
            hmask = (1 << vma.shift) - 1
            start, end = start & ~hmask, (end + hmask) & ~hmask
        self._invalidate_start(start, end)
        for base in [b for b in self.thp if b < end and start < b + self.sz.PMD_SIZE]:
            if base >= start and base + self.sz.PMD_SIZE <= end:
                self.thp_heads.discard(self.thp.pop(base))
            else:                                    # partial: split (no second notifier pass)
                head = self.thp.pop(base)
                self.thp_heads.discard(head)
                vma = self.find_vma(base)
                for k in range(self.sz.PMD_SIZE >> ps):
                    self.pte[(base >> ps) + k] = [head + k, vma.writable]
        lo, hi = start >> ps, -(-end >> ps)
        if len(self.pte) < hi - lo:
            for idx in [i for i in self.pte if lo <= i < hi]:
                del self.pte[idx]
        else:
            for idx in range(lo, hi):
                self.pte.pop(idx, None)
        for base in [b for b in self.huge if b < end and start < b + (1 << self.find_vma(b).shift)]:
            del self.huge[base]
        self._invalidate_end(start, end)
        return start, end

    def ksm_merge(self, hva) -> bool:
        """KSM replaces the small page at hva by a read-only copy: start, change_pte, end."""
        hva = args.u64("hva", hva)
        ps = self.page_shift
        vma = self.find_vma(hva)
        if vma is None or vma.kind != ANON:
            return False
        self.split_thp(hva)
        e = self.pte.get(hva >> ps)
        if e is None:
            return False
        start = (hva >> ps) << ps
        self._invalidate_start(start, start + (1 << ps))
        e[0], e[1] = self._alloc(1), False
        for n in self.notifiers:
            n.change_pte(start, e[0])
        self._invalidate_end(start, start + (1 << ps))
        return True

    def host_leaf(self, hva):
        """(start, size) of the host leaf mapping hva (page, THP PMD or hugetlb page), or None."""
        vma = self.find_vma(hva)
        if vma is None or self.lookup(hva) is None:
            return None
        if vma.kind == HUGETLB:
            size = 1 << vma.shift
        elif vma.kind == ANON and (hva & ~(self.sz.PMD_SIZE - 1)) in self.thp:
            size = self.sz.PMD_SIZE
        else:
            size = self.sz.PAGE_SIZE
        return hva & ~(size - 1), size

    def age(self, hva):
        """page_referenced_one on the leaf at hva: clear_flush_young over that leaf."""
        hva = args.u64("hva", hva)
        leaf = self.host_leaf(hva)
        if leaf is None:
            return False
        return any([n.clear_flush_young(leaf[0], leaf[0] + leaf[1]) for n in self.notifiers])

    def test_young(self, hva):
        hva = args.u64("hva", hva)
        leaf = self.host_leaf(hva)
        if leaf is None:
            return False
        return any([n.test_young(leaf[0]) for n in self.notifiers])

    # -- raw state -----------------------------------------------------------------------------
    def host_map(self) -> list:
        """The host translation as leaves [hva, size, pfn, kind, writable], small pages merged
        into runs of consecutive pfns with the same permission."""
        ps = self.page_shift
        out = []
        for base, head in self.thp.items():
            out.append([base, self.sz.PMD_SIZE, head, "thp", self.find_vma(base).writable])
        for base, head in self.huge.items():
            vma = self.find_vma(base)
            out.append([base, 1 << vma.shift, head, "hugetlb", vma.writable])
        for vma in self.vmas:
            if vma.kind == PFNMAP:
                out.append([vma.start, vma.end - vma.start, vma.pgoff, "pfnmap", vma.writable])
        run = None
        for idx in sorted(self.pte):
            pfn, w = self.pte[idx]
            if run and run[0] + (run[1] >> ps) == idx and run[2] + (run[1] >> ps) == pfn \
                    and run[4] == w:
                run[1] += 1 << ps
                continue
            if run:
                out.append([run[0] << ps, run[1], run[2], "pte", run[4]])
            run = [idx, 1 << ps, pfn, "pte", w]
        if run:
            out.append([run[0] << ps, run[1], run[2], "pte", run[4]])
        out.sort()
        return out

    def raw_vmas(self) -> list:
        return [{"start": v.start, "end": v.end, "kind": v.kind, "writable": v.writable,
                 "page_shift": v.shift, "pgoff": v.pgoff, "thp": v.thp} for v in self.vmas]
