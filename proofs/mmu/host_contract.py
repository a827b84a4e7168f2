"""The host mm model (``ptspec.impl.mmu.host.HostMM``) against the Linux semantics it documents.

The stage-2 spec judges KVM's tables against the host translation, so the host model must be right
for the spec's verdicts to mean anything. This module drives a ``HostMM`` with seeded random
sequences (``get_user_pages`` for reads and writes, THP split, ``MADV_DONTNEED`` zaps, KSM merges,
aging, munmap / mmap, page references) over a layout with every VMA kind, and after every call
compares the model with an independent page-by-page account of what Linux does:

* ``get_user_pages``: -EFAULT without a VMA or for a write to a read-only VMA (nothing changes);
  a present page is returned as is; an absent one is faulted in: a whole hugetlb page (head aligned
  to its size), a whole THP (when the VMA allows THP, the PMD lies inside the VMA and none of its
  pages is present yet) or one small page, always fresh RAM pages; a write to a read-only (KSM)
  page of a writable VMA breaks copy-on-write (a fresh writable page, inside an invalidation of
  that page); ``VM_PFNMAP`` gives ``vm_pgoff`` plus the offset (not RAM); one reference per RAM page;
* ``split_thp``: same pfns, now small pages, inside an invalidation of the PMD; false without THP;
* ``zap``: the range (widened to whole huge pages in a hugetlb VMA) is invalidated and emptied,
  everything else keeps its translation (a partly covered THP is split);
* ``ksm_merge``: anonymous present pages only; the THP is split first; the page gets a fresh
  read-only pfn, with ``change_pte`` inside the invalidation;
* ``age`` / ``test_young``: one notifier call per notifier on the host leaf, answer = any;
* ``munmap``: the VMA's range invalidated and gone; ``mmap``'s refusals change nothing;
* the state: ``lookup``, ``host_leaf``, ``is_transparent_hugepage``, ``find_vma``,
  ``find_vma_intersection`` and ``host_map`` (runs of consecutive pfns merged maximally) agree with
  each other page by page; distinct pages never share a RAM pfn; references counted exactly.

These are the checks of HOST-MM (its statement: spec/mmu/host_mm.py). The state checks, the
directed sequence and the size table are in ``ptspec.proofs.mmu.host_cases``.
Left out: 16K/64K sequences (their constants are checked as a table; the page-level walk would be
too slow for the budget), VMA splitting (the model has none).
"""

from __future__ import annotations

import errno
import random

from ptspec.impl.mmu.host import ANON, HUGETLB, PFNMAP, HostMM

from ptspec.proofs.mmu.host_cases import BASE, PMD, HostCases, P


class Recorder:
    """An MMU notifier that records every call; its young answer is set by the test."""

    def __init__(self, events, name, young=False):
        self.events, self.name, self.young = events, name, young

    def invalidate_range_start(self, start, end):
        self.events.append((self.name, "start", start, end))

    def invalidate_range_end(self, start, end):
        self.events.append((self.name, "end", start, end))

    def change_pte(self, hva, pfn):
        self.events.append((self.name, "change_pte", hva, pfn))

    def clear_flush_young(self, start, end):
        self.events.append((self.name, "clear_flush_young", start, end))
        return self.young

    def test_young(self, hva):
        self.events.append((self.name, "test_young", hva))
        return self.young


def _inv(names, start, end, inner=()):
    out = [(n, "start", start, end) for n in names]
    out += list(inner)
    return out + [(n, "end", start, end) for n in names]


class HostRun(HostCases):
    """One HostMM, its recorders, and the checker's own account of it."""

    def __init__(self, rng, directed=False):
        self.rng = rng
        self.is_directed = directed
        self.mm = HostMM(12)
        self.events = []
        self.recs = [Recorder(self.events, "n0"), Recorder(self.events, "n1")]
        self.mm.notifiers.extend(self.recs)
        self.lines = ["host = HostMM(12)"]
        self.seen = set()            # every RAM pfn ever handed out
        self._cache = None           # the snapshot of the current state
        self.k = 0                   # which residue class of pages gets the per-page calls
        self.refs = {}
        self.mmap_bad = []
        if directed:
            self._directed_layout()
            return
        a0 = BASE + rng.choice([PMD - 3 * P, PMD, PMD - P])
        asz = PMD + rng.choice([3 * P, 5 * P, 0])
        self.mmap(a0, asz, ANON, thp=True, writable=rng.random() < 0.85)
        b0 = a0 + asz + rng.choice([0, 0, P])
        self.mmap(b0, 16 * P, ANON, writable=rng.random() < 0.7)
        c0 = (b0 + 16 * P + PMD) & ~(PMD - 1)
        if rng.random() < 0.7:
            self.mmap(c0, 4 * 0x10000, HUGETLB, shift=16, writable=rng.random() < 0.8)
        else:
            self.mmap(c0, PMD, HUGETLB, shift=21, writable=rng.random() < 0.8)
        d0 = c0 + PMD + 4 * P
        pgoff = rng.choice([None, 0x9000, 0x7_0000])
        self.mmap(d0, 8 * P, PFNMAP, pgoff=pgoff, writable=rng.random() < 0.5)

    # -- driving, with a record of the calls ------------------------------------------------
    def mmap(self, start, size, kind, **kw):
        v = self.mm.mmap(start, size, kind, **kw)
        args = "".join(f", {k}={hex(x) if type(x) is int else x}" for k, x in kw.items())
        self.lines.append(f"host.mmap({start:#x}, {size:#x}, {kind!r}{args})")
        pgoff = kw.get("pgoff")
        want = (start, start + size, kind, kw.get("writable", True),
                kw.get("shift") if kind == HUGETLB else 12,
                (0x1_0000 if pgoff is None else pgoff) if kind == PFNMAP else 0,
                bool(kw.get("thp")) and kind == ANON)
        got = (v.start, v.end, v.kind, v.writable, v.shift, v.pgoff, v.thp)
        if got != want or self.mm.find_vma(start) is not v:
            self.mmap_bad.append(f"mmap({start:#x}, {size:#x}, {kind!r}{args}) made {got}, "
                                 f"expected {want}")
        return v

    def universe(self):
        pages = []
        for v in self.mm.vmas:
            pages.extend(range(v.start - P, v.end + P, P))
        return sorted(set(pages))

    def snapshot(self):
        if self._cache is None:
            self._cache = {hva: self.mm.lookup(hva) for hva in self.universe()}
        return self._cache

    def vma_of(self, hva):
        for v in self.mm.vmas:
            if v.start <= hva < v.end:
                return v
        return None

    def leaf_of(self, hva, snap):
        """(start, size, kind) of the leaf mapping hva from the checker's account, or None."""
        v = self.vma_of(hva)
        if v is None or snap.get(hva & ~(P - 1)) is None:
            return None
        if v.kind == HUGETLB:
            size = 1 << v.shift
            return hva & ~(size - 1), size, "hugetlb"
        if v.kind == ANON and (hva & ~(PMD - 1)) in self.thp_bases:
            return hva & ~(PMD - 1), PMD, "thp"
        return hva & ~(P - 1), P, "pfnmap" if v.kind == PFNMAP else "pte"

    # -- the state's own consistency --------------------------------------------------------
    def run(self, nops):
        self._thp = set()
        snap = self.snapshot()
        bad = self.check_state(snap)
        if bad:
            return bad
        for _ in range(nops):
            self._cache = None
            bad = self.one(snap)
            snap = self.snapshot()
            if not bad:
                bad = self.check_state(snap)
            if bad:
                return bad
        return []

    def pick_hva(self):
        rng = self.rng
        v = rng.choice(self.mm.vmas) if self.mm.vmas else None
        if v is None or rng.random() < 0.05:
            return BASE - P
        pmd_in = ((v.start + PMD - 1) & ~(PMD - 1))
        cands = [v.start, v.start + P, v.end - P, pmd_in, pmd_in - P, pmd_in + PMD - P,
                 v.start + rng.randrange((v.end - v.start) // P) * P]
        hva = rng.choice([c for c in cands if v.start <= c < v.end])
        return hva + rng.choice([0, 0, 0x123])

    def one(self, snap):
        rng, mm = self.rng, self.mm
        op = rng.choice(["gup", "gup", "gup", "gup", "split", "zap", "ksm", "ksm", "age", "young",
                         "release", "dirty", "munmap", "mmap_bad"])
        self.events.clear()
        for r in self.recs:
            r.young = rng.random() < 0.5
        if op == "gup":
            return self.apply(snap, op, (self.pick_hva(), rng.random() < 0.5))
        if op == "zap":
            start = self.pick_hva() & ~(P - 1)
            size = rng.choice([P, 2 * P, PMD, 0x11000, 3 * PMD])
            first = next((x for x in mm.vmas if x.end > start), None)
            if any(x.kind == HUGETLB and x is not first and x.start < start + size
                   and x.end > start for x in mm.vmas):
                size = first.end - start     # madvise refuses hugetlb VMAs: stay out of them
            return self.apply(snap, op, (start, size))
        if op in ("split", "ksm", "age", "young"):
            return self.apply(snap, op, (self.pick_hva(),))
        return self.apply(snap, op, ())

    def apply(self, snap, op, a):
        rng, mm = self.rng, self.mm
        if op == "gup":
            hva, write = a
            self.lines.append(f"host.get_user_pages({hva:#x}, {write})")
            return self.check_gup(snap, hva, write, mm.get_user_pages(hva, write))
        if op == "split":
            hva = a[0]
            self.lines.append(f"host.split_thp({hva:#x})")
            return self.check_split(snap, hva, mm.split_thp(hva))
        if op == "zap":
            start, size = a
            self.lines.append(f"host.zap({start:#x}, {size:#x})")
            return self.check_zap(snap, start, size, mm.zap(start, size))
        if op == "ksm":
            hva = a[0]
            self.lines.append(f"host.ksm_merge({hva:#x})")
            return self.check_ksm(snap, hva, mm.ksm_merge(hva))
        if op in ("age", "young"):
            hva = a[0]
            leaf = self.leaf_of(hva, snap)
            self.lines.append(f"host.{'age' if op == 'age' else 'test_young'}({hva:#x})")
            got = mm.age(hva) if op == "age" else mm.test_young(hva)
            if leaf is None:
                exp_ev = []
            elif op == "age":
                exp_ev = [(r.name, "clear_flush_young", leaf[0], leaf[0] + leaf[1])
                          for r in self.recs]
            else:
                exp_ev = [(r.name, "test_young", leaf[0]) for r in self.recs]
            exp = leaf is not None and any(r.young for r in self.recs)
            return self.same(snap, hva, f"{op} returned {got}", got == exp, exp_ev)
        if op in ("release", "dirty"):
            held = sorted(self.refs, key=lambda f: (-self.refs[f], f))
            if self.is_directed:
                pfn = held[0] if held else mm.ram_lo + 5
            else:
                pfn = rng.choice(held + [mm.ram_lo + 5, 0x9000]) if held else rng.choice(
                    [mm.ram_lo + 5, 0x9000, mm.ram_hi])
            if op == "dirty":
                self.lines.append(f"host.kvm_set_pfn_dirty({pfn:#x}); "
                                  f"host.kvm_set_pfn_accessed({pfn:#x})")
                mm.kvm_set_pfn_dirty(pfn)
                mm.kvm_set_pfn_accessed(pfn)
                ok = (pfn in mm.dirty) == (pfn in mm.accessed) == mm.pfn_valid(pfn)
                return self.same(snap, None, "dirty/accessed marks", ok, [])
            n_err = len(mm.errors)
            self.lines.append(f"host.kvm_release_pfn_clean({pfn:#x})")
            mm.kvm_release_pfn_clean(pfn)
            if mm.pfn_valid(pfn):
                if pfn in self.refs:
                    self.refs[pfn] -= 1
                    if not self.refs[pfn]:
                        del self.refs[pfn]
                    ok = len(mm.errors) == n_err
                else:
                    ok = len(mm.errors) == n_err + 1 and f"{pfn:#x}" in mm.errors[-1]
            else:
                ok = len(mm.errors) == n_err
            return self.same(snap, None, "release error accounting", ok, [])
        if op == "munmap":
            if len(mm.vmas) < 2:
                return []
            v = mm.find_vma(a[0]) if a else rng.choice(mm.vmas)
            self.lines.append(f"host.munmap(host.find_vma({v.start:#x}))")
            mm.munmap(v)
            new = self.snapshot()
            self._cache = None
            bad = [] if mm.find_vma(v.start) is None and v not in mm.vmas else [
                f"munmap left {v} in place"]
            if self.events != _inv(["n0", "n1"], v.start, v.end):
                bad.append(f"munmap notified {self.events}")
            for hva, t in snap.items():
                if v.start <= hva < v.end and mm.lookup(hva) is not None:
                    bad.append(f"page {hva:#x} still mapped after munmap")
                    break
                elif not v.start <= hva < v.end and hva in new and new[hva] != t:
                    bad.append(f"page {hva:#x} outside the unmapped VMA changed {t} -> {new[hva]}")
            self._thp = {b for b in self._thp if not v.start <= b < v.end}
            if v.kind == ANON:   # map something new in its place, a different kind
                self.mmap(v.start, v.end - v.start, ANON, thp=not v.thp, writable=True)
            return bad
        return self.check_mmap_refusals()

    def same(self, snap, hva, what, ok, exp_ev):
        bad = [] if ok else [what]
        if self.events != exp_ev:
            bad.append(f"notifier calls {self.events}, expected {exp_ev}")
        new = self.snapshot()
        if new != snap:
            bad.append("the host translation changed")
        return bad

    def fresh(self, pfn):
        ok = self.mm.pfn_valid(pfn) and pfn not in self.seen
        self.seen.add(pfn)
        return ok

    def check_gup(self, snap, hva, write, got):
        mm, v = self.mm, self.vma_of(hva)
        page = hva & ~(P - 1)
        if v is None or (write and not v.writable):
            return self.same(snap, hva, f"get_user_pages -> {got}, expected -EFAULT",
                             got == (-errno.EFAULT, False), [])
        new, bad = self.snapshot(), []
        pre = snap[page]
        exp_ev = []
        if v.kind == PFNMAP:
            exp = (v.pgoff + ((page - v.start) >> 12), v.writable)
            changed = {}
        elif pre is not None and not (write and not pre[1]):
            exp, changed = pre, {}
        elif pre is not None:       # copy-on-write break of a read-only (KSM) page
            exp = new[page]
            if not (exp[1] and self.fresh(exp[0])):
                bad.append(f"COW break gave {exp}, expected a fresh writable page")
            changed = {page: exp}
            exp_ev = _inv(["n0", "n1"], page, page + P)
        else:
            if v.kind == HUGETLB:
                size = 1 << v.shift
            else:
                b = page & ~(PMD - 1)
                whole = v.thp and v.start <= b and b + PMD <= v.end and \
                    all(snap.get(b + k * P) is None for k in range(PMD // P))
                size = PMD if whole else P
                if whole:
                    self._thp.add(b)
            lo = page & ~(size - 1)
            head = new[lo][0] if new.get(lo) else -1
            if head % (size // P) or not all(self.fresh(head + k) for k in range(size // P)):
                bad.append(f"fault-in of {size:#x} at {lo:#x} gave head pfn {head:#x}: not fresh "
                           "and aligned")
            changed = {lo + k * P: (head + k, v.writable) for k in range(size // P)}
            exp = changed[page]
        if got != exp:
            bad.append(f"get_user_pages({hva:#x}, {write}) = {got}, expected {exp}")
        if mm.pfn_valid(exp[0]):
            self.refs[exp[0]] = self.refs.get(exp[0], 0) + 1
        bad += self.diff(snap, new, changed, set())
        if self.events != exp_ev:
            bad.append(f"notifier calls {self.events}, expected {exp_ev}")
        return bad

    def diff(self, snap, new, changed, emptied):
        bad = []
        for hva, t in snap.items():
            want = changed.get(hva, None if hva in emptied else t)
            if new.get(hva) != want:
                bad.append(f"page {hva:#x}: {t} -> {new.get(hva)}, expected {want}")
                break
        return bad

    def check_split(self, snap, hva, got):
        b = hva & ~(PMD - 1)
        was = b in self._thp and self.vma_of(hva) is not None
        exp_ev = _inv(["n0", "n1"], b, b + PMD) if was else []
        bad = [] if got == was else [f"split_thp({hva:#x}) = {got}, expected {was}"]
        self._thp.discard(b)
        if self.events != exp_ev:
            bad.append(f"notifier calls {self.events}, expected {exp_ev}")
        return bad + self.diff(snap, self.snapshot(), {}, set())

    def check_zap(self, snap, start, size, got):
        end = start + size
        v = next((x for x in self.mm.vmas if x.end > start and x.start < end), None)
        if v is not None and v.kind == HUGETLB:
            m = (1 << v.shift) - 1
            start, end = start & ~m, (end + m) & ~m
        bad = [] if got == (start, end) else [f"zap returned {got}, expected {(start, end)}"]
        if self.events != _inv(["n0", "n1"], start, end):
            bad.append(f"notifier calls {self.events}, expected invalidation of "
                       f"[{start:#x}, {end:#x})")
        self._thp = {b for b in self._thp if b >= end or b + PMD <= start}
        emptied = {h for h in snap if start <= h < end and self.vma_of(h) is not None
                   and self.vma_of(h).kind != PFNMAP}
        return bad + self.diff(snap, self.snapshot(), {}, emptied)

    def check_ksm(self, snap, hva, got):
        v, page = self.vma_of(hva), hva & ~(P - 1)
        ok = v is not None and v.kind == ANON and snap[page] is not None
        bad = [] if got == ok else [f"ksm_merge({hva:#x}) = {got}, expected {ok}"]
        new = self.snapshot()
        if not ok:
            exp_ev, changed = [], {}
        else:
            b = page & ~(PMD - 1)
            exp_ev = _inv(["n0", "n1"], b, b + PMD) if b in self._thp else []
            self._thp.discard(b)
            pfn = new[page][0]
            if new[page][1] or not self.fresh(pfn):
                bad.append(f"KSM page {page:#x} -> {new[page]}, expected a fresh read-only pfn")
            exp_ev += _inv(["n0", "n1"], page, page + P,
                           [(n, "change_pte", page, pfn) for n in ("n0", "n1")])
            changed = {page: (pfn, False)}
        if self.events != exp_ev:
            bad.append(f"notifier calls {self.events}, expected {exp_ev}")
        return bad + self.diff(snap, new, changed, set())

def run_host(n_runs: int, nops: int, seed: int = 0, expired=lambda: False):
    """(ops checked, None) or (n, counterexample dict)."""
    run = HostRun(random.Random(seed), directed=True)
    bad = run.directed()
    n = len(run.lines)
    if bad:
        return n, {"ops": "\n".join(["from ptspec.impl.mmu.host import HostMM"] + run.lines),
                   "violations": [f"HOST-MM {b}" for b in bad], "tables": "",
                   "kernel_function": "get_user_pages / zap / ksm_merge / split_thp"}
    for i in range(n_runs):
        if expired():
            break
        run = HostRun(random.Random(seed * 7919 + i))
        bad = run.run(nops)
        n += len(run.lines)
        if bad:
            return n, {"ops": "\n".join(["from ptspec.impl.mmu.host import HostMM"] + run.lines),
                       "violations": [f"HOST-MM {b}" for b in bad], "tables": "",
                       "kernel_function": "get_user_pages / zap / ksm_merge / split_thp"}
    return n, None
