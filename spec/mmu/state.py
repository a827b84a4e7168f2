"""The ``mmu`` part of a raw state (docs/mmu.md): memslots, host VMAs and translation, dirty logs.

Models: a validated, read-only view of what the stage-2 fault path works against: the memslots
(with dirty bitmap and the guest's record of written pages), the host's VMAs and its HVA -> PFN
translation (as leaves of whole pages: small-page runs, THP PMDs, hugetlb pages, PFNMAP ranges),
the IPA ranges the guest's instruction fetches were granted (``fetched``), the CPU's DIC, the RAM
range (``pfn_valid``), the I/O regions KVM was asked to map (``kvm_phys_addr_ioremap``), the manual
dirty-log protect flags, and the host page references KVM holds. Also the stage-2 valid leaves of
the state, from the architecture walk of ptspec.spec.arch.walk.

Leaves out: nothing is inferred about the kernel's own bookkeeping; only the raw keys are read.
"""

from bisect import bisect_right
from typing import NamedTuple

from ptspec.spec.arch import descriptor as D
from ptspec.spec.stage2.state import StateError, load_state, parse_int, show

LOG_DIRTY, READONLY = 1, 2     # KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
U64 = (1 << 64) - 1
VMA_KINDS = ("anon", "hugetlb", "pfnmap")
HOST_LEAF_KINDS = ("pte", "thp", "hugetlb", "pfnmap")


def _obj(value, where):
    if not isinstance(value, dict):
        raise StateError(f"{where}: expected an object, got {show(value)}")
    return value


def _list(value, where, length=None):
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        want = f"a list of {length}" if length is not None else "a list"
        raise StateError(f"{where}: expected {want}, got {show(value)}")
    return value


def _req(obj, key, where):
    if key not in obj:
        raise StateError(f"{where}.{key}: missing")
    return obj[key]


def _bool(value, where):
    if not isinstance(value, bool):
        raise StateError(f"{where}: expected true or false, got {show(value)}")
    return value


def _u64(value, where, lo=0, hi=U64):
    return parse_int(value, where, lo, hi)


class S2Leaf(NamedTuple):
    """One valid stage-2 leaf: the IPA range [ipa, ipa + size) it maps, its level and descriptor."""
    ipa: int
    size: int
    level: int
    desc: int


class Slot:
    __slots__ = ("id", "base_gfn", "npages", "uaddr", "flags", "bitmap", "written", "fetched",
                 "start", "end", "_granted", "_bitbytes")

    def __init__(self, raw, ps, i):
        w = f"mmu.memslots[{i}]"
        _obj(raw, w)
        self.id = _u64(_req(raw, "id", w), f"{w}.id", 0, 0xFFFF_FFFF)
        self.base_gfn = _u64(_req(raw, "base_gfn", w), f"{w}.base_gfn", 0, U64 >> ps)
        self.npages = _u64(_req(raw, "npages", w), f"{w}.npages", 0, U64 >> ps)
        self.uaddr = _u64(_req(raw, "userspace_addr", w), f"{w}.userspace_addr")
        self.flags = _u64(_req(raw, "flags", w), f"{w}.flags", 0, 0xFFFF_FFFF)
        bm = raw.get("dirty_bitmap")
        if bm is not None:
            bm = parse_int(bm, f"{w}.dirty_bitmap", 0)
            if bm >> self.npages:
                raise StateError(f"{w}.dirty_bitmap: expected a bit mask of {self.npages} bits "
                                 f"(bit g = gfn base_gfn + g), got a {bm.bit_length()}-bit mask")
        self.bitmap = bm
        self._bitbytes = None
        self.written = {parse_int(x, f"{w}.written[{j}]", 0, max(self.npages - 1, 0))
                        for j, x in enumerate(_list(raw.get("written", ()), f"{w}.written"))}
        if self.written and not self.npages:
            raise StateError(f"{w}.written: an empty memslot has no page to write")
        self.start = self.base_gfn << ps
        self.end = (self.base_gfn + self.npages) << ps
        fetched = []
        for j, r in enumerate(_list(raw.get("fetched", ()), f"{w}.fetched")):
            g, n, pa = _list(r, f"{w}.fetched[{j}]", 3)
            g = parse_int(g, f"{w}.fetched[{j}][0]", 0, max(self.npages - 1, 0))
            n = parse_int(n, f"{w}.fetched[{j}][1]", 1, self.npages - g)
            pa = parse_int(pa, f"{w}.fetched[{j}][2]", 0, U64 - (n << ps) + 1)
            if pa % (1 << ps):
                raise StateError(f"{w}.fetched[{j}][2]: expected a page-aligned address, "
                                 f"got {pa:#x}")
            ipa = self.start + (g << ps)
            fetched.append((ipa, ipa + (n << ps), pa - ipa))
        # what instruction fetches were granted: IPA ranges, each with its translation offset
        self.fetched = sorted(fetched)
        self._granted = None

    def granted(self, delta):
        """The fetched IPA ranges granted at translation offset delta (pa - ipa), as a
        perms.ranges_union (built once for all offsets: a leaf's query is then a bisection)."""
        if self._granted is None:
            from ptspec.spec.mmu.perms import ranges_union
            by = {}
            for a, b, off in self.fetched:
                by.setdefault(off, []).append((a, b))
            self._granted = {off: ranges_union(r) for off, r in by.items()}
        return self._granted.get(delta, ((), ()))

    def dirty(self, g):
        """Is bit g (gfn base_gfn + g) set in the dirty bitmap?"""
        return self.bitmap is not None and bool(self.bits(g, 1))

    def bits(self, g, n):
        """Bits g .. g + n - 1 of the dirty bitmap (bit 0 = gfn base_gfn + g), as an int; read from
        a byte copy made once, so each query costs its n bits, not the bitmap's size."""
        if self._bitbytes is None:
            bm = self.bitmap or 0
            self._bitbytes = bm.to_bytes((bm.bit_length() + 7) // 8, "little")
        window = int.from_bytes(self._bitbytes[g >> 3:(g + n + 7) >> 3], "little")
        return window >> (g & 7) & ((1 << n) - 1)

    @property
    def logging(self):
        """memslot_is_logging: a dirty bitmap and not read-only."""
        return self.bitmap is not None and not self.flags & READONLY

    def hva(self, ipa):
        return self.uaddr + (ipa - self.start)


def _vma(raw, i):
    w = f"mmu.vmas[{i}]"
    _obj(raw, w)
    v = dict(raw)
    v["start"] = _u64(_req(raw, "start", w), f"{w}.start")
    v["end"] = _u64(_req(raw, "end", w), f"{w}.end", v["start"])
    kind = v["kind"] = raw.get("kind", "anon")
    if type(kind) is not str or kind not in VMA_KINDS:
        raise StateError(f"{w}.kind: expected one of {', '.join(VMA_KINDS)}, got {show(kind)}")
    for key, default in (("writable", True), ("thp", False)):       # VM_WRITE, THP enabled
        v[key] = _bool(raw[key], f"{w}.{key}") if key in raw else default
    for key in ("page_shift", "pgoff"):
        if raw.get(key) is not None:
            v[key] = _u64(raw[key], f"{w}.{key}")
    if kind == "pfnmap" and v.get("pgoff") is None:
        raise StateError(f"{w}.pgoff: missing (a pfnmap VMA maps pfn pgoff at its start)")
    return v


def _host_leaf(raw, i):
    w = f"mmu.host_map[{i}]"
    hva, size, pfn, kind, writable = _list(raw, w, 5)
    if type(kind) is not str or kind not in HOST_LEAF_KINDS:
        raise StateError(f"{w}[3]: expected one of {', '.join(HOST_LEAF_KINDS)}, got {show(kind)}")
    return (_u64(hva, f"{w}[0]"), _u64(size, f"{w}[1]", 1), _u64(pfn, f"{w}[2]"), kind,
            _bool(writable, f"{w}[4]"))


def _whole_pages(leaf, i, psize):
    """A host leaf maps whole pages: its hva and size are multiples of the page size."""
    for k, what in ((0, "hva"), (1, "size")):
        if leaf[k] % psize:
            raise StateError(f"mmu.host_map[{i}][{k}]: the host maps whole pages: expected a "
                             f"multiple of the page size {psize:#x} as {what}, got {leaf[k]:#x}")
    return leaf


def _ioremap(raw, i):
    w = f"mmu.ioremap[{i}]"
    ipa, pa, size, writable = _list(raw, w, 4)
    return (_u64(ipa, f"{w}[0]"), _u64(pa, f"{w}[1]"), _u64(size, f"{w}[2]"),
            _bool(writable, f"{w}[3]"))


def _strings(value, where):
    out = []
    for i, e in enumerate(_list(value, where)):
        if not isinstance(e, str):
            raise StateError(f"{where}[{i}]: expected a string, got {show(e)}")
        out.append(e)
    return out


class MmuView:
    """The validated mmu part of one raw state, with the stage-2 State next to it.

    Every key of docs/mmu.md is checked (type, range, shape) and StateError names the one at fault
    by its JSON path (``mmu.memslots[0].npages``). ``memslots`` is required; the other keys default
    to empty (no VMA, no host mapping, no RAM, no ioremap request, no reference, no WARN).
    """

    def __init__(self, raw, s2=None):
        if not isinstance(raw, dict) or "mmu" not in raw:
            raise StateError("mmu: missing (not a VM state: see docs/mmu.md)")
        self.s2 = load_state(raw) if s2 is None else s2
        if self.s2.kind != "arm64-stage2":
            raise StateError(f"mmu: only an arm64-stage2 state has an mmu part, not {self.s2.kind}")
        m = _obj(raw["mmu"], "mmu")
        ps = self.ps = self.s2.page_shift
        self.psize = 1 << ps
        self.ipa_limit = 1 << self.s2.ia_bits
        slots = _list(_req(m, "memslots", "mmu"), "mmu.memslots")
        self.slots = sorted((Slot(s, ps, i) for i, s in enumerate(slots)), key=lambda s: s.start)
        self._slot_starts = [s.start for s in self.slots]
        self.vmas = sorted((_vma(v, i) for i, v in enumerate(_list(m.get("vmas", []), "mmu.vmas"))),
                           key=lambda v: v["start"])
        self._vma_starts = [v["start"] for v in self.vmas]
        self.host = sorted(_whole_pages(_host_leaf(h, i), i, self.psize)
                           for i, h in enumerate(_list(m.get("host_map", []), "mmu.host_map")))
        self._host_starts = [h[0] for h in self.host]
        lo, hi = _list(m.get("ram_pfns", (0, 0)), "mmu.ram_pfns", 2)
        self.ram = (_u64(lo, "mmu.ram_pfns[0]"), _u64(hi, "mmu.ram_pfns[1]"))
        self.ioremap = [_ioremap(r, i) for i, r in enumerate(_list(m.get("ioremap", []), "mmu.ioremap"))]
        self.manual_protect = _bool(m.get("manual_protect", False), "mmu.manual_protect")
        self.init_set = _bool(m.get("init_set", False), "mmu.init_set")
        self.dic = _bool(m.get("dic", False), "mmu.dic")     # ARM64_HAS_CACHE_DIC
        refs = _obj(m.get("kvm_page_refs", {}), "mmu.kvm_page_refs")
        self.kvm_page_refs = {_u64(k, f"mmu.kvm_page_refs key {show(k)}"):
                              parse_int(v, f"mmu.kvm_page_refs[{show(k)}]",
                                                                 -(1 << 31), (1 << 31) - 1) for k, v in refs.items()}
        self.host_errors = _strings(m.get("host_errors", []), "mmu.host_errors")
        self.warnings = _strings(m.get("warnings", []), "mmu.warnings")
        for key in ("mmu_notifier_seq", "mmu_notifier_count"):
            if key in m:
                parse_int(m[key], f"mmu.{key}", -(1 << 63), U64)
        self._leaves = None
        self._pieces = {}

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
        a gap is a piece of kind None. Remembered per range (MS and MS-PERM both ask)."""
        key = (hva, size)
        got = self._pieces.get(key)
        if got is None:
            got = self._pieces[key] = self._host_pieces(hva, size)
        return got

    def _host_pieces(self, hva, size):
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
