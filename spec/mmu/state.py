"""The ``mmu`` part of a raw state (docs/mmu.md): memslots, host VMAs and translation, dirty logs.

Models: a validated, read-only view of what the stage-2 fault path works against: the memslots
(with dirty bitmap and the guest's record of written pages), the host's VMAs and its HVA -> PFN
translation (as leaves: small-page runs, THP PMDs, hugetlb pages, PFNMAP ranges), the RAM range
(``pfn_valid``), the I/O regions KVM was asked to map (``kvm_phys_addr_ioremap``), the manual
dirty-log protect flags, and the host page references KVM holds. Also the stage-2 valid leaves of
the state, from the architecture walk of ptspec.spec.arch.walk.

Leaves out: nothing is inferred about the kernel's own bookkeeping; only the raw keys are read.
"""

from bisect import bisect_right
from typing import NamedTuple

from ptspec.spec.arch import descriptor as D
from ptspec.spec.stage2.state import StateError, load_state

LOG_DIRTY, READONLY = 1, 2     # KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY


class S2Leaf(NamedTuple):
    """One valid stage-2 leaf: the IPA range [ipa, ipa + size) it maps, its level and descriptor."""
    ipa: int
    size: int
    level: int
    desc: int


class Slot:
    __slots__ = ("id", "base_gfn", "npages", "uaddr", "flags", "bitmap", "written", "start", "end")

    def __init__(self, raw, ps, i):
        try:
            self.id = int(raw["id"])
            self.base_gfn = int(raw["base_gfn"])
            self.npages = int(raw["npages"])
            self.uaddr = int(raw["userspace_addr"])
            self.flags = int(raw["flags"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"mmu.memslots[{i}]: {exc}") from None
        bm = raw.get("dirty_bitmap")
        if isinstance(bm, str):
            bm = int(bm, 0)
        if bm is not None and (not isinstance(bm, int) or bm < 0 or bm >> self.npages):
            raise StateError(f"mmu.memslots[{i}].dirty_bitmap: expected a bit mask of "
                             f"{self.npages} bits (bit g = gfn base_gfn + g)")
        self.bitmap = bm
        self.written = set(int(x) for x in raw.get("written", ()))
        self.start = self.base_gfn << ps
        self.end = (self.base_gfn + self.npages) << ps

    def dirty(self, g):
        """Is bit g (gfn base_gfn + g) set in the dirty bitmap?"""
        return self.bitmap is not None and bool(self.bitmap >> g & 1)

    @property
    def logging(self):
        """memslot_is_logging: a dirty bitmap and not read-only."""
        return self.bitmap is not None and not self.flags & READONLY

    def hva(self, ipa):
        return self.uaddr + (ipa - self.start)


class MmuView:
    """The validated mmu part of one raw state, with the stage-2 State next to it."""

    def __init__(self, raw):
        if "mmu" not in raw:
            raise StateError("mmu: missing (not a VM state: see docs/mmu.md)")
        self.s2 = load_state(raw)
        m = raw["mmu"]
        ps = self.ps = self.s2.page_shift
        self.psize = 1 << ps
        self.ipa_limit = 1 << self.s2.ia_bits
        self.slots = sorted((Slot(s, ps, i) for i, s in enumerate(m.get("memslots", []))),
                            key=lambda s: s.start)
        self._slot_starts = [s.start for s in self.slots]
        self.vmas = sorted((dict(v) for v in m.get("vmas", [])), key=lambda v: v["start"])
        self._vma_starts = [v["start"] for v in self.vmas]
        self.host = sorted(tuple(h) for h in m.get("host_map", []))
        self._host_starts = [h[0] for h in self.host]
        self.ram = tuple(m.get("ram_pfns", (0, 0)))
        self.ioremap = [tuple(r) for r in m.get("ioremap", [])]
        self.manual_protect = bool(m.get("manual_protect", False))
        self.init_set = bool(m.get("init_set", False))
        self.kvm_page_refs = {int(k): int(v) for k, v in m.get("kvm_page_refs", {}).items()}
        self.host_errors = list(m.get("host_errors", []))
        self._leaves = None

    # -- lookups -------------------------------------------------------------------------------
    def slot_of(self, ipa):
        i = bisect_right(self._slot_starts, ipa) - 1
        if i >= 0 and ipa < self.slots[i].end:
            return self.slots[i]
        return None

    def slot_by_id(self, sid):
        return next((s for s in self.slots if s.id == sid), None)

    def vma_of(self, hva):
        i = bisect_right(self._vma_starts, hva) - 1
        if i >= 0 and hva < self.vmas[i]["end"]:
            return self.vmas[i]
        return None

    def host_pieces(self, hva, size):
        """The host leaves covering [hva, hva+size) in order, as (start, size, pfn, kind, w);
        a gap is a piece of kind None."""
        out = []
        pos, end = hva, hva + size
        i = bisect_right(self._host_starts, pos) - 1
        if i < 0:
            i = 0
        while pos < end:
            while i < len(self.host) and self.host[i][0] + self.host[i][1] <= pos:
                i += 1
            if i >= len(self.host) or self.host[i][0] > pos:
                nxt = self.host[i][0] if i < len(self.host) else end
                out.append((pos, min(nxt, end) - pos, None, None, False))
                pos = min(nxt, end)
                continue
            h = self.host[i]
            out.append(h)
            pos = h[0] + h[1]
        return out

    def pfn_is_ram(self, pfn):
        return self.ram[0] <= pfn < self.ram[1]

    def leaves(self):
        """Valid stage-2 leaves as S2Leaf(ipa, size, level, desc), in IPA order."""
        if self._leaves is None:
            st = self.s2
            out = []
            for s, e, level, d, _, _, opaque in st.walk().intervals:
                if d and not opaque and D.is_valid_leaf(d, level):
                    out.append(S2Leaf(s, e - s, level, d))
            self._leaves = out
            self._leaf_starts = [lf.ipa for lf in out]
        return self._leaves

    def leaf_at(self, ipa):
        """The S2Leaf translating ipa, or None."""
        for lf in self.leaves_in(ipa, ipa + 1):
            return lf
        return None

    def leaves_in(self, lo, hi):
        """Valid leaves overlapping [lo, hi), in order."""
        leaves = self.leaves()
        i = max(bisect_right(self._leaf_starts, lo) - 1, 0)
        out = []
        while i < len(leaves) and leaves[i].ipa < hi:
            if lo < leaves[i].ipa + leaves[i].size:
                out.append(leaves[i])
            i += 1
        return out

    def is_device(self, desc):
        return D.memattr_name(D.leaf_attrs(desc).memattr, self.s2.has_fwb) == "DEVICE_nGnRE"

    def oa(self, desc):
        return D.address(desc, self.ps)
