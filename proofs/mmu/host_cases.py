"""The fixed parts of the host mm contract check (``ptspec.proofs.mmu.host_contract``).

* ``HostCases``: the state-consistency checks a ``HostRun`` applies after every call (``lookup``,
  ``host_leaf``, ``is_transparent_hugepage``, ``find_vma``, ``find_vma_intersection``, ``host_map``
  against the checker's page-by-page account), mmap's refusals, and the directed sequence through
  every branch of ``HostMM``;
* ``check_sizes``: the arm64 host page-table constants per granule, the small ``Vma`` helpers,
  adjacency of VMAs, ``pfn_valid``'s bounds and the allocator's last RAM page.

Expected values are Linux's (mm, arm64 hugetlbpage.c), worked out by hand.
"""

from __future__ import annotations

from ptspec.impl.mmu.host import ANON, HUGETLB, PFNMAP, HostMM, HostSizes, Vma

P = 0x1000
PMD = 0x20_0000
BASE = 0x7F00_0000_0000

SIZES = {12: (12, 21, 30, 16, 25, 512, (30, 25, 21, 16)),
         14: (14, 25, 36, 21, 30, 2048, (30, 25, 21)),
         16: (16, 29, 42, 21, 34, 8192, (34, 29, 21))}


class HostCases:
    """Mixed into ``HostRun``: needs its ``mm``, ``snapshot``, ``vma_of``, ``leaf_of``, ``apply``."""

    def _directed_layout(self):
        self.mmap(BASE + PMD - 3 * P, 2 * PMD + 6 * P, ANON, thp=True)          # A
        self.mmap(BASE + 3 * PMD + 3 * P, 16 * P, ANON)                          # B, adjacent
        self.mmap(BASE + 4 * PMD, 4 * 0x10000, HUGETLB, shift=16)                # C
        self.mmap(BASE + 5 * PMD, PMD, HUGETLB, shift=21, writable=False)        # C2
        self.mmap(BASE + 6 * PMD, 8 * P, PFNMAP, pgoff=0x9000)                   # D
        self.mmap(BASE + 7 * PMD, PMD, ANON, thp=True, writable=False)          # E: one PMD

    def directed(self):
        """Every branch of the host model once: THPs made, split by KSM and by partial zaps, zapped
        whole; zaps that end at / start at a THP, odd sizes, hugetlb widening, no VMA; both ways
        zap drops small pages; copy-on-write breaks; a fault next to small pages of a PMD; double
        references and their release."""
        A, B, C, C2 = BASE + PMD - 3 * P, BASE + 3 * PMD + 3 * P, BASE + 4 * PMD, BASE + 5 * PMD
        T1, T2 = BASE + PMD, BASE + 2 * PMD
        seq = [("gup", A, False), ("gup", T1 + 0x5123, True), ("gup", T1 + 0x5000, False),
               ("release",), ("release",), ("gup", T2 + P, True), ("gup", A + 2 * PMD + 5 * P, True),
               ("gup", B + P, True), ("gup", B + 2 * P, False), ("gup", B, False),
               ("ksm", B + P), ("gup", B + P, False), ("gup", B + P, True), ("gup", B + P, True),
               ("ksm", T1 + 0x5000), ("gup", T1 + 0x5000, False), ("gup", T1 + 0x5000, True),
               ("gup", C + P, True), ("gup", C + 0x10123, False), ("gup", C + 0x30000, True),
               ("gup", C2 + 0x3000, False), ("gup", BASE + 7 * PMD + 5 * P, False),
               ("young", B + 10 * P), ("young", BASE + 10 * PMD), ("split", BASE + 7 * PMD + P),
               ("zap", C + P, 0x123), ("zap", C + 0x20000, P), ("zap", T2 - P, P),
               ("zap", T2 + PMD, P), ("zap", T2 + 0x3000, 0x2000), ("gup", T2 + 0x3000, False),
               ("zap", T2, PMD), ("gup", T2 + P, True), ("zap", T2, PMD), ("gup", T2 + P, False),
               ("ksm", T2 + 0x10000), ("zap", T1, PMD + 0x5000), ("gup", T2 + P, True),
               ("zap", T2, PMD), ("gup", T2 + P, False), ("zap", T2 - P, 2 * P), ("zap", T2, PMD),
               ("gup", T2 + P, False), ("zap", T2 + PMD - P, 2 * P), ("zap", B + 3 * P, 0x123),
               ("zap", BASE + 9 * PMD, P), ("split", T2),
               ("gup", B + 15 * P, False), ("zap", A, 2 * PMD + 6 * P), ("age", C + 0x10000),
               ("young", C2), ("age", B + 15 * P), ("release",), ("release",),
               ("gup", BASE + 6 * PMD + 3 * P + 0x10, True), ("mmap_bad",),
               ("munmap", BASE + 6 * PMD), ("gup", B + 4 * P, True), ("munmap", B),
               ("gup", B + 4 * P, False)]
        self._thp = set()
        snap = self.snapshot()
        bad = self.check_state(snap)
        for op in seq:
            if bad:
                return bad
            self._cache = None
            self.events.clear()
            for r in self.recs:
                r.young = not r.young
            bad = self.apply(snap, op[0], op[1:])
            snap = self.snapshot()
            if not bad:
                bad = self.check_state(snap)
        return bad

    def check_state(self, snap):
        mm, bad = self.mm, []
        owner = {}
        self.k = (self.k + 1) % 23
        edges = {x for v in mm.vmas for x in (v.start, v.end - P, v.start + P)}
        edges |= {b + d for b in self._thp for d in (0, P, PMD - P)}
        for hva, t in snap.items():
            if (hva >> 12) % 23 != self.k and hva not in edges and (t is None or
                                                                    owner.get(t[0]) is None):
                if t is not None and mm.pfn_valid(t[0]):
                    owner[t[0]] = hva
                continue
            v = self.vma_of(hva)
            if v is None:
                if t is not None or mm.find_vma(hva) is not None or mm.host_leaf(hva) is not None:
                    bad.append(f"lookup({hva:#x}) = {t}, find_vma {mm.find_vma(hva)} outside "
                               "every VMA")
                continue
            if mm.find_vma(hva) is not v:
                bad.append(f"find_vma({hva:#x}) is {mm.find_vma(hva)}, not {v}")
            if t is None:
                if mm.host_leaf(hva) is not None:
                    bad.append(f"host_leaf({hva:#x}) = {mm.host_leaf(hva)} for an absent page")
                continue
            pfn, w = t
            if v.kind == PFNMAP:
                if (pfn, w) != (v.pgoff + ((hva - v.start) >> 12), v.writable) or mm.pfn_valid(pfn):
                    bad.append(f"PFNMAP page {hva:#x} -> {t}, expected pgoff {v.pgoff:#x} + offset")
                continue
            if not mm.pfn_valid(pfn):
                bad.append(f"page {hva:#x} -> pfn {pfn:#x} outside RAM")
            if pfn in owner:
                bad.append(f"pages {owner[pfn]:#x} and {hva:#x} share pfn {pfn:#x}")
            owner[pfn] = hva
            if mm.lookup(hva + 0x123) != t or mm.lookup(hva + P - 1) != t:
                bad.append(f"lookup inside page {hva:#x} disagrees with lookup of the page")
            leaf = self.leaf_of(hva, snap)
            got = mm.host_leaf(hva)
            if mm.host_leaf(hva + 0x123) != got:
                bad.append(f"host_leaf inside page {hva:#x} disagrees with the page's")
            if got != leaf[:2]:
                bad.append(f"host_leaf({hva:#x}) = {got}, expected {leaf[:2]}")
            if mm.is_transparent_hugepage(pfn) != (leaf[2] == "thp"):
                bad.append(f"is_transparent_hugepage({pfn:#x}) = {mm.is_transparent_hugepage(pfn)} "
                           f"for a {leaf[2]} page")
        ranges = [(BASE, BASE + P), (BASE - P, BASE + 8 * PMD), (BASE + PMD, BASE + PMD + P)]
        for v in mm.vmas:
            ranges += [(v.end, v.end + P), (v.start - P, v.start), (v.end - P, v.end + PMD)]
        for lo, hi in ranges:
            exp = next((v for v in self.mm.vmas if v.end > lo and v.start < hi), None)
            if mm.find_vma_intersection(lo, hi) is not exp:
                bad.append(f"find_vma_intersection({lo:#x}, {hi:#x}) = "
                           f"{mm.find_vma_intersection(lo, hi)}, expected {exp}")
        bad += self.check_host_map(snap) + self.mmap_bad
        if dict(mm.refs) != self.refs:
            bad.append(f"references {mm.refs} but gup/release accounting gives {self.refs}")
        if [(v.start, v.end) for v in mm.vmas] != sorted((v.start, v.end) for v in mm.vmas) or \
                mm._starts != [v.start for v in mm.vmas]:
            bad.append("the VMA list is not sorted by start")
        return bad

    def check_host_map(self, snap):
        """host_map expands to lookup page by page, with maximal pte runs and the right kinds."""
        bad, pages, prev = [], {}, None
        for hva, size, pfn, kind, w in self.mm.host_map():
            v = self.vma_of(hva)
            if v is None or hva + size > v.end and (kind != "pte" or any(
                    self.vma_of(hva + k * P) is None for k in range(size // P))):
                bad.append(f"host_map leaf {hva:#x}+{size:#x} leaves its VMA")
                continue
            leaf = self.leaf_of(hva, snap)
            if leaf is None or kind != leaf[2] and not (kind == "pfnmap" and v.kind == PFNMAP):
                bad.append(f"host_map leaf {hva:#x} has kind {kind}, expected {leaf}")
            if kind in ("thp", "hugetlb") and (hva, size) != leaf[:2]:
                bad.append(f"host_map {kind} leaf {hva:#x}+{size:#x} is not the leaf {leaf[:2]}")
            if kind == "pfnmap" and (hva, size) != (v.start, v.end - v.start):
                bad.append(f"host_map pfnmap leaf {hva:#x}+{size:#x} is not the whole VMA")
            for k in range(size // P):
                pages[hva + k * P] = (pfn + k, w)
            if kind == "pte":
                if prev and prev[0] + prev[1] == hva and prev[2] + prev[1] // P == pfn \
                        and prev[4] == w:
                    bad.append(f"host_map pte runs at {prev[0]:#x} and {hva:#x} are not merged")
                prev = (hva, size, pfn, kind, w)
        present = {hva: t for hva, t in snap.items() if t is not None}
        if pages != present:
            diff = sorted(set(pages.items()) ^ set(present.items()))[:3]
            bad.append(f"host_map disagrees with lookup at {[(hex(a), t) for a, t in diff]}")
        return bad

    @property
    def thp_bases(self):
        return self._thp

    # -- one operation and its contract -----------------------------------------------------

    def check_mmap_refusals(self):
        mm, bad = self.mm, []
        before = mm.raw_vmas()
        v = mm.vmas[0]
        cases = [(v.start, P, ANON, {}), (v.end - P, 2 * P, ANON, {}),
                 (v.start - P, 2 * P, PFNMAP, {}),
                 (0x10_0000_0000 + 0x800, P, ANON, {}), (0x10_0000_0000, 0x800, ANON, {}),
                 (0x10_0000_0000, 0, ANON, {}), (0x10_0000_0000, P, "file", {}),
                 (0x10_0000_0000, PMD, HUGETLB, {"shift": 20}),
                 (0x10_0000_0000 + 0x10000, PMD, HUGETLB, {"shift": 21}),
                 (0x10_0000_0000, PMD + 0x10000, HUGETLB, {"shift": 21})]
        for start, size, kind, kw in cases:
            try:
                mm.mmap(start, size, kind, **kw)
                bad.append(f"mmap({start:#x}, {size:#x}, {kind!r}, {kw}) was accepted")
            except ValueError:
                pass
            if mm.raw_vmas() != before:
                bad.append(f"a refused mmap({start:#x}, {size:#x}, {kind!r}) changed the VMAs")
                break
        return bad


def check_sizes():
    """HostSizes and the small Vma helpers against the arm64 constants, as a list of violations."""
    bad = []
    for ps, (page, pmd, pud, cpte, cpmd, ptrs, huge) in SIZES.items():
        s = HostSizes(ps)
        got = (s.PAGE_SHIFT, s.PMD_SHIFT, s.PUD_SHIFT, s.CONT_PTE_SHIFT, s.CONT_PMD_SHIFT,
               s.PTRS_PER_PMD, s.hugetlb_shifts())
        if got != (page, pmd, pud, cpte, cpmd, ptrs, huge):
            bad.append(f"HostSizes({ps}) = {got}")
        if (s.PAGE_SIZE, s.PMD_SIZE, s.PUD_SIZE) != (1 << page, 1 << pmd, 1 << pud) or s.pmd_folded:
            bad.append(f"HostSizes({ps}) sizes {s.PAGE_SIZE:#x} {s.PMD_SIZE:#x} {s.PUD_SIZE:#x}")
        mm = HostMM(ps)
        if (mm.ram_lo, mm.ram_hi) != (0x40_0000_0000 >> ps, 0x80_0000_0000 >> ps):
            bad.append(f"HostMM({ps}) RAM pfns {mm.ram_lo:#x}-{mm.ram_hi:#x}")
        for i, shift in enumerate(huge):           # every size arm64 offers maps, aligned
            h = mm.mmap((i + 1) << 45, 1 << shift, HUGETLB, shift=shift)
            pfn, w = mm.get_user_pages(h.start + (1 << ps), True)
            if (pfn - (1 << 0)) % (1 << (shift - ps)) or not w or h.shift != shift:
                bad.append(f"hugetlb {shift} page at pfn {pfn:#x} is not aligned")
        a = mm.mmap(1 << 43, 1 << ps, ANON)
        if a.shift != ps or a.pgoff or a.thp or not a.writable:
            bad.append(f"mmap's default VMA {a} shift {a.shift} pgoff {a.pgoff}")
        d = mm.mmap(1 << 42, 1 << ps, PFNMAP)
        if d.pgoff != 0x1000_0000 >> ps or mm.lookup(d.start) != (d.pgoff, True):
            bad.append(f"PFNMAP default pgoff {d.pgoff:#x}")
        for bad_ps in (13, 0, None):
            try:
                HostSizes(bad_ps)
                bad.append(f"HostSizes({bad_ps!r}) accepted")
            except ValueError:
                pass
    mm = HostMM()
    if mm.page_shift != 12 or mm.sz.PAGE_SHIFT != 12:
        bad.append("HostMM() is not a 4K host")
    a = mm.mmap(0x10_0000, P, ANON)
    try:
        mm.mmap(0x10_0000 - P, P, ANON)              # directly below: touching is not overlapping
    except ValueError:
        bad.append("mmap of a VMA ending where another begins was refused")
    if [x.start for x in mm.vmas] != [0x10_0000 - P, 0x10_0000] or mm.find_vma(0x10_0000) is not a:
        bad.append("the VMA list is not kept sorted")
    if mm.pfn_valid(mm.ram_hi) or not mm.pfn_valid(mm.ram_hi - 1) or mm.pfn_valid(mm.ram_lo - 1) \
            or not mm.pfn_valid(mm.ram_lo):
        bad.append("pfn_valid is not exactly [ram_lo, ram_hi)")
    mm._next = mm.ram_hi - 1                          # the last RAM page is still handed out
    if mm.get_user_pages(0x10_0000, False)[0] != mm.ram_hi - 1:
        bad.append("the last RAM page is not allocatable")
    try:
        mm.get_user_pages(0x10_0000 - P, False)
        bad.append("allocation beyond RAM did not raise MemoryError")
    except MemoryError:
        pass
    for what in ("ksm", "cow", "hugetlb"):           # the last RAM pages are handed out too
        mm = HostMM()
        mm.mmap(0x20_0000, PMD, HUGETLB if what == "hugetlb" else ANON, shift=21)
        if what != "hugetlb":
            mm.get_user_pages(0x20_0000, False)
        if what == "cow":
            mm.ksm_merge(0x20_0000)
        mm._next = mm.ram_hi - (PMD // P if what == "hugetlb" else 1)
        try:
            if what == "ksm":
                ok = mm.ksm_merge(0x20_0000) and mm.lookup(0x20_0000)[0] == mm.ram_hi - 1
            else:
                ok = mm.get_user_pages(0x20_0000, True) == (mm._next - 1 if what == "cow" else
                                                            mm.ram_hi - PMD // P, True)
        except MemoryError:
            ok = False
        if not ok:
            bad.append(f"{what} could not use the last free RAM")
    v = Vma(0x1000, 0x3000, ANON)
    if (v.writable, v.shift, v.pgoff, v.thp, v.vm_pfnmap) != (True, 0, 0, False, False):
        bad.append("Vma defaults")
    if not Vma(0, 0x1000, PFNMAP).vm_pfnmap or Vma(0, 0x1000, HUGETLB).vm_pfnmap:
        bad.append("Vma.vm_pfnmap")
    reprs = {repr(Vma(0x1000, 0x3000, ANON, thp=True)): "<Vma 0x1000-0x3000 anon thp>",
             repr(Vma(0x1000, 0x3000, ANON, writable=False)): "<Vma 0x1000-0x3000 anon ro>",
             repr(Vma(0, 0x10000, HUGETLB, shift=16)): "<Vma 0x0-0x10000 hugetlb shift=16>",
             repr(Vma(0, 0x1000, PFNMAP, pgoff=0x90)): "<Vma 0x0-0x1000 pfnmap pgoff=0x90>"}
    bad += [f"repr {g!r}, expected {e!r}" for g, e in reprs.items() if g != e]
    return bad
