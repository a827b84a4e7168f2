"""A tiny, independent builder of raw stage-2 / hyp stage-1 states for the spec tests.

It encodes descriptors with its own code (from the architecture's bit positions, not from spec or
impl), so that the spec is tested against an independent encoding. The tests at the bottom pin the
builder's encodings to hand-computed constants.
"""

import copy

MASK48 = (1 << 48) - 1

# prot bits of enum kvm_pgtable_prot
X, W, R, DEVICE = 1, 2, 4, 8
RW, RWX, RO = R | W, R | W | X, R

EINVAL, ERANGE, ENOMEM, EAGAIN = -22, -34, -12, -11


def addr_bits(pa, ps):
    bits = pa & MASK48 & ~((1 << ps) - 1)
    if ps == 16:
        bits |= ((pa >> 48) & 0xF) << 12
    return bits


def leaf(oa, level, ps=12, r=True, w=True, x=False, device=False, af=True, fwb=False, sw=0):
    """A stage-2 leaf as KVM writes it: MemAttr 5:2, S2AP 7:6, SH 9:8 = 3, AF 10, XN 54, SW 58:55."""
    memattr = 0x1 if device else (0x6 if fwb else 0xF)
    attr = (memattr << 2) | (int(r) << 6) | (int(w) << 7) | (3 << 8) | (int(af) << 10)
    attr |= (0 if x else 1) << 54
    attr |= sw << 55
    return addr_bits(oa, ps) | attr | (0b11 if level == 3 else 0b01)


def table_desc(pa, ps=12):
    return addr_bits(pa, ps) | 0b11


def owner_desc(owner, field=(63, 56)):
    return owner << field[1]


def gshift(level, ps):
    return (ps - 3) * (4 - level) + 3


def start_level_for(ia, ps):
    levels = max(2, (ia - 8) // (ps - 3))
    return 4 - levels


class S2:
    """A stage-2 table under construction. set() creates tables on the way down, replacing leaves."""

    def __init__(self, ps=12, ia=40, field=(63, 56), max_owner=1, pa_bits=48, fwb=False, cmo=False,
                 arena=0x4000_0000, kind="arm64-stage2", start=None, nroots=None, init=True):
        self.ps, self.ia, self.field, self.max_owner = ps, ia, field, max_owner
        self.pa_bits, self.fwb, self.cmo, self.kind = pa_bits, fwb, cmo, kind
        self.n = 1 << (ps - 3)
        self.start = start_level_for(ia, ps) if start is None else start
        span = 1 << (gshift(self.start, ps) + ps - 3)
        self.nroots = max(1, (1 << ia) // span) if nroots is None else nroots
        self.pages = {}
        self.memcache = []
        self.free = 64
        self.next = arena
        self.roots = []
        if init:
            size = self.nroots << ps
            self.next = (self.next + size - 1) // size * size
            self.roots = [self.alloc() for _ in range(self.nroots)]

    def alloc(self):
        pa = self.next
        self.next += 1 << self.ps
        self.free -= 1
        self.pages[pa] = [0] * self.n
        return pa

    def slot(self, ipa, level, create=True):
        """(table pa, index) of the slot translating ipa at `level`, creating tables on the way."""
        ps = self.ps
        idx = ipa >> gshift(self.start, ps)
        pa = self.roots[idx // self.n]
        idx %= self.n
        lv = self.start
        while lv < level:
            d = self.pages[pa][idx]
            if d & 3 == 3:
                nxt = self.addr(d)
            elif create:
                nxt = self.alloc()
                self.pages[pa][idx] = table_desc(nxt, ps)
            else:
                return None
            pa, lv = nxt, lv + 1
            idx = (ipa >> gshift(lv, ps)) % self.n
        return pa, idx

    def set(self, ipa, level, desc):
        """Write desc at (ipa, level); a table it replaces is freed with its subtree."""
        pa, idx = self.slot(ipa, level)
        old = self.pages[pa][idx]
        if level < 3 and old & 3 == 3 and old != desc:
            self._free(self.addr(old), level + 1)
        self.pages[pa][idx] = desc
        return self

    def get(self, ipa, level):
        pa, idx = self.slot(ipa, level, create=False)
        return self.pages[pa][idx]

    def page(self, ipa, oa, **kw):
        kw.setdefault("fwb", self.fwb)
        return self.set(ipa, 3, leaf(oa, 3, self.ps, **kw))

    def block(self, ipa, level, oa, **kw):
        kw.setdefault("fwb", self.fwb)
        return self.set(ipa, level, leaf(oa, level, self.ps, **kw))

    def owner(self, ipa, level, owner):
        return self.set(ipa, level, owner_desc(owner, self.field))

    def addr(self, d):
        a = d & MASK48 & ~((1 << self.ps) - 1)
        if self.ps == 16:
            a |= ((d >> 12) & 0xF) << 48
        return a

    def drop_table(self, ipa, level):
        """Clear the table descriptor at (ipa, level) and free its subtree."""
        pa, idx = self.slot(ipa, level, create=False)
        d = self.pages[pa][idx]
        self.pages[pa][idx] = 0
        self._free(self.addr(d), level + 1)
        return self

    def _free(self, t, lv):
        self.free += 1
        for e in self.pages.pop(t):
            if lv < 3 and e & 3 == 3:
                self._free(self.addr(e), lv + 1)

    def copy(self):
        return copy.deepcopy(self)

    def raw(self, tlb=(), hexa=False):
        def h(v):
            return hex(v) if hexa else v
        pages = {h(pa) if hexa else str(pa): [h(d) for d in ds] for pa, ds in self.pages.items()}
        refs = {h(pa) if hexa else str(pa): 1 + sum(1 for d in ds if d) for pa, ds in self.pages.items()}
        bits = "ia_bits" if self.kind == "arm64-stage2" else "va_bits"
        out = {"kind": self.kind, "page_shift": self.ps, bits: self.ia, "start_level": self.start,
               "pa_bits": self.pa_bits, "roots": [h(r) for r in self.roots], "pages": pages,
               "refcount": refs, "memcache": list(self.memcache), "free_pages": self.free,
               "pool_errors": [], "tlb_log": [list(ev) for ev in tlb]}
        if self.kind == "arm64-stage2":
            out.update({"owner_field": list(self.field), "max_owner_id": self.max_owner,
                        "has_fwb": self.fwb, "cmo": self.cmo})
        else:
            out["refcount"] = {k: 1 for k in refs}
        return out


def step(op, ret=0, out=None, **args):
    return {"op": op, "args": args, "ret": ret, "out": out or {}}


def ids(violations):
    return sorted({v.inv for v in violations})


# -- the builder's encodings, pinned to hand-computed values ------------------------------------

def test_leaf_encoding_4k_page():
    # page at 0x80001000, RW, not executable, normal memory (0xf), SH=3, AF
    d = leaf(0x8000_1000, 3)
    assert d == (1 << 54) | 0x8000_1000 | (1 << 10) | (3 << 8) | (3 << 6) | (0xF << 2) | 0b11


def test_leaf_encoding_64k_high_bits():
    d = leaf(0x000A_0000_0001_0000, 3, ps=16)
    assert (d >> 12) & 0xF == 0xA and d & (0xFFFF_FFFF << 16) == 0x1_0000


def test_geometry_of_builder():
    s = S2(ps=12, ia=40)
    assert s.start == 1 and len(s.roots) == 2 and s.roots[0] % 0x2000 == 0
    assert S2(ps=16, ia=52).start == 1 and S2(ps=14, ia=40).nroots == 16
