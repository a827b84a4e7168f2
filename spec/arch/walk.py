"""The hardware's view of a raw state: the tree walk, its leaves, and the translation of one address.

Models: what a VMSAv8-64 table walker sees when it starts from the concatenated root tables of a
state: which table pages it reaches (and at which level and input address), every leaf-level
descriptor slot (valid leaves, owner annotations and holes alike), and the translation of a single
input address (valid with output address and attributes, invalid with descriptor and owner id, or a
fault when there is no root or the table structure cannot be followed).

The plain statement is ``translate``: one address, from the roots down, as the hardware walks it; it
comes first. ``Walk`` computes the same answer for every address at once, as intervals, so that the
invariants and contracts cost what the tree holds, not what the address space holds
(tests/test_spec_plain.py holds the two equal). The walk is written here from the architecture,
independently of the kernel's walker. A table
descriptor that cannot be followed (its page is missing, is a root, or was already reached) is not
expanded: its range is kept as one opaque interval, and S2-TREE reports why.

Internal representation (used by the invariants and contracts, and cheap to compare): a list of
intervals ``(start, end, level, desc, table_pa, index, opaque)`` in input-address order covering
[0, 2**ia_bits) exactly; consecutive zero descriptors of one table page form one interval (a range
query, ``Walk.overlapping``, cuts such runs at the first and last slot it overlaps).
"""

from bisect import bisect_left
from dataclasses import dataclass
from itertools import compress, repeat
from operator import is_
from typing import NamedTuple, Optional

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G

START, END, LEVEL, DESC, TABLE, INDEX, OPAQUE = range(7)


class Leaf(NamedTuple):
    """One leaf-level descriptor slot: the input range it covers and what is written there."""
    ipa: int
    size: int
    level: int
    desc: int
    table_pa: int
    index: int


@dataclass(frozen=True)
class Translation:
    """What the hardware walk returns for one input address.

    kind is "valid" (oa = output address of `ipa`, attrs decoded), "invalid" (desc is the invalid or
    reserved descriptor, owner its owner id when it is shaped like an annotation), or "fault" (no
    root, outside the input range, or a table that cannot be followed: see reason).
    """
    ipa: int
    kind: str
    level: Optional[int] = None
    desc: int = 0
    size: int = 0
    table_pa: Optional[int] = None
    index: Optional[int] = None
    oa: Optional[int] = None
    attrs: Optional[D.LeafAttrs] = None
    owner: Optional[int] = None
    reason: str = ""

    @property
    def valid(self):
        return self.kind == "valid"


def translate(state, ipa):
    """The hardware walk of one input address, from the roots down (a Translation).

    Table descriptors are followed as the hardware would, also into pages S2-TREE reports (a shared
    table is read again); a table address that is not in `pages` is a fault.
    """
    from ptspec.spec.stage2.state import load_state
    st = load_state(state)
    ps = st.page_shift
    if not st.roots:
        return Translation(ipa, "fault", reason="no root table (not initialised, or destroyed)")
    if not 0 <= ipa < (1 << st.ia_bits):
        return Translation(ipa, "fault", reason=f"outside the {st.ia_bits}-bit input range")
    level = st.start_level
    idx = ipa >> G.granule_shift(level, ps)
    pa = st.roots[idx // st.entries] if idx // st.entries < len(st.roots) else None
    idx %= st.entries
    while True:
        if pa is None or pa not in st.pages:
            return Translation(ipa, "fault", level=level,
                               reason=f"table {pa:#x} at level {level} is not in pages" if pa is not None
                               else "no root table covers this address")
        d = st.pages[pa][idx]
        if D.is_table(d, level):
            pa = D.address(d, ps)
            level += 1
            idx = (ipa >> G.granule_shift(level, ps)) % st.entries
            continue
        size = G.granule_size(level, ps)
        if D.is_valid_leaf(d, level):
            oa = D.address(d, ps) + (ipa & (size - 1))
            return Translation(ipa, "valid", level, d, size, pa, idx, oa=oa, attrs=D.leaf_attrs(d))
        owner = D.owner_of(d, st.owner_field, getattr(st, "owner_tag", 0)) if st.owner_field and not d & D.VALID else None
        return Translation(ipa, "invalid", level, d, size, pa, idx, owner=owner)


# -- the same walk for every address at once, as intervals (optimised) -------------------------

class WalkSource:
    """What a Walk reads of its state: the pages (a State's pages are never changed once loaded),
    the geometry, the roots and the memcache. A walk keeps these, not the State, which keeps its
    walk (State.walk): were the walk to keep the State, each state and its walk would be a
    reference cycle, and every state a run drops would wait for the cyclic collector instead of
    being freed by its reference count."""

    __slots__ = ("pages", "page_shift", "ia_bits", "start_level", "roots", "entries", "memcache")

    def __init__(self, state):
        self.pages, self.page_shift, self.ia_bits = state.pages, state.page_shift, state.ia_bits
        self.start_level, self.roots, self.memcache = state.start_level, state.roots, state.memcache
        self.entries = 1 << (state.page_shift - 3)


class Walk:
    """The tree of one state, walked once from its roots.

    tables: pa -> (level, base ipa, slots inside the input range, parent pa, parent index)
    nonzero(pa): indices of the non-zero descriptors of a page
    problems: (message, where) pairs describing descriptors the walk could not follow
    intervals: see the module docstring (built on first use: check_state does not need them)
    """

    same_as = None       # an earlier walk whose every reached page this one shares (Walk.reuse)

    def __init__(self, state):
        self.state = WalkSource(state)       # what the walk reads of the state (no cycle)
        self.tables = {}
        self.problems = []
        self._nonzero = {}
        self._intervals = None
        self._opaque = {}          # (table pa, index) of table descriptors the walk did not follow
        if state.roots:
            self._walk_roots()

    def reuse(self, state):
        """The walk of `state`, a later state of the same table (ptspec.spec.stage2.state.load_state's
        ``prev``), taking from this walk what it provably shares, else None (walked on first use).

        The walk's shape (tables, levels, bases, parents) reads only the geometry, the roots, which
        pages exist, and the descriptors of the tables above level 3. When those are the same
        objects or values in `state` (its pages shared with this walk's state by load_state, which
        shares only equal pages) and this walk found no problem, the shape is the same and is
        shared; the non-zero index is kept for every shared page; the intervals too when every
        reached page is shared. Anything else walks `state` afresh."""
        old, new = self.state, state
        if (self.problems or old.roots != new.roots or (old.page_shift, old.ia_bits, old.start_level)
                != (new.page_shift, new.ia_bits, new.start_level)):
            return None
        pages, was = new.pages, old.pages
        tables = self.tables
        same_all = all(map(is_, map(pages.get, tables), map(was.__getitem__, tables)))
        if not same_all:
            for pa, (level, _, _, _, _) in tables.items():
                page = pages.get(pa)
                if page is not was[pa] and (level < G.LAST_LEVEL or page is None):
                    return None
        walk = Walk.__new__(Walk)
        walk.state = WalkSource(new)
        walk.tables = tables               # never changed once walked
        walk.problems = []
        walk._opaque = self._opaque
        walk._nonzero = {pa: nz for pa, nz in self._nonzero.items() if pages.get(pa) is was[pa]}
        walk._intervals = self._intervals if same_all else None
        walk.same_as = self if same_all else None      # every reached page shared: same translation
        return walk

    def nonzero(self, pa):
        """Indices of the non-zero descriptors of page pa (cached)."""
        nz = self._nonzero.get(pa)
        if nz is None:
            descs = self.state.pages[pa]
            nz = self._nonzero[pa] = list(compress(range(len(descs)), descs)) if any(descs) else []
        return nz

    def _walk_roots(self):
        st = self.state
        ps, start = st.page_shift, st.start_level
        limit = 1 << st.ia_bits
        g = G.granule_size(start, ps)
        span = G.table_span(start, ps)
        root_set = set(st.roots)
        for k, pa in enumerate(st.roots):
            base = k * span
            used = 0 if base >= limit else min(st.entries, -(-(limit - base) // g))
            if pa not in st.pages or pa in self.tables:
                why = "is not in pages" if pa not in st.pages else "is listed twice in roots"
                self.problems.append((f"root {k} ({pa:#x}) {why}", {"table": pa, "level": start}))
                self._opaque[(None, k)] = (base, min(base + span, limit), start, pa)
                continue
            self._visit(pa, start, base, used, None, None, root_set)

    def _visit(self, pa, level, base, used, parent, pindex, root_set):
        self.tables[pa] = (level, base, used, parent, pindex)
        if level >= 3:
            return
        st = self.state
        ps = st.page_shift
        descs = st.pages[pa]
        g = G.granule_size(level, ps)
        for i in self.nonzero(pa):
            if i >= used:
                break
            d = descs[i]
            if d & D.TYPE_BITS != D.TABLE_OR_PAGE:      # not a table descriptor
                continue
            s = base + i * g
            child = D.address(d, ps)
            why = None
            if child not in st.pages:
                why = "which is not in pages"
                if child in st.memcache:
                    why += " (it is in the memcache)"
            elif child in root_set:
                why = "which is a root table"
            elif child in self.tables:
                _, _, _, ppa, pidx = self.tables[child]
                why = ("which was already reached " +
                       (f"from table {ppa:#x} index {pidx}" if ppa is not None else "as a root"))
            if why:
                self.problems.append((
                    f"table {pa:#x} index {i} at level {level} (ipa {s:#x}): "
                    f"next-level table {child:#x} {why}",
                    {"table": pa, "index": i, "level": level, "ipa": s, "desc": d}))
                self._opaque[(pa, i)] = True
            else:
                self._visit(child, level + 1, s, st.entries, pa, i, root_set)

    @property
    def intervals(self):
        """All leaf intervals of the input range (see the module docstring), built on first use."""
        if self._intervals is None:
            self._intervals = self.overlapping(0, 1 << self.state.ia_bits)
        return self._intervals

    def overlapping(self, lo, hi):
        """Leaf intervals overlapping [lo, hi), in order, descending only into tables that overlap.

        Zero runs are cut at the slots that still overlap [lo, hi); the cost is linear in the leaves
        found, not in the size of the range.
        """
        st = self.state
        out = []
        if lo >= hi or not st.roots:
            return out
        span = G.table_span(st.start_level, st.page_shift)
        for k in range(max(lo // span, 0), min(-(-hi // span), len(st.roots))):
            bad = self._opaque.get((None, k))
            if bad:
                s, e, level, rpa = bad
                if s < e:
                    out.append((s, e, level, 0, rpa, 0, True))
                continue
            self._leaves_of(st.roots[k], lo, hi, out)
        return out

    def _leaves_of(self, pa, lo, hi, out, whole=False):
        st = self.state
        level, base, used, _, _ = self.tables[pa]
        if (whole and level == G.LAST_LEVEL and used == st.entries and lo <= base
                and base + (used << st.page_shift) <= hi):
            out.append(pa)          # a whole level-3 table, by its pa (slot's whole=True)
            return
        g = G.granule_size(level, st.page_shift)
        i_lo = max(0, (lo - base) // g)
        i_hi = min(used, -(-(hi - base) // g))
        if i_lo >= i_hi:
            return
        descs = st.pages[pa]
        nz = self.nonzero(pa)
        todo = nz[bisect_left(nz, i_lo):bisect_left(nz, i_hi)] if i_lo or i_hi < len(descs) else nz
        if level == G.LAST_LEVEL and len(todo) == i_hi - i_lo:
            # a level-3 run of non-zero slots only: one leaf each, no table to follow
            lo_ipa, hi_ipa = base + i_lo * g, base + i_hi * g        # tuples built at C speed
            out += zip(range(lo_ipa, hi_ipa, g), range(lo_ipa + g, hi_ipa + g, g), repeat(3),
                       descs[i_lo:i_hi], repeat(pa), range(i_lo, i_hi), repeat(False))
            return
        prev = i_lo
        for i in todo:
            if i > prev:
                out.append((base + prev * g, base + i * g, level, 0, pa, prev, False))
            d = descs[i]
            s = base + i * g
            if level < G.LAST_LEVEL and d & D.TYPE_BITS == D.TABLE_OR_PAGE:
                if (pa, i) in self._opaque:
                    out.append((s, s + g, level, d, pa, i, True))
                else:
                    self._leaves_of(D.address(d, st.page_shift), lo, hi, out, whole)
            else:
                out.append((s, s + g, level, d, pa, i, False))
            prev = i + 1
        if prev < i_hi:
            out.append((base + prev * g, base + i_hi * g, level, 0, pa, prev, False))

    def slot(self, pa, i, whole=False):
        """Leaf intervals under slot i of table pa (the slot itself unless it is a followed table);
        with `whole`, a level-3 table below the slot stands as its pa instead of its leaves."""
        st = self.state
        level, base, _, _, _ = self.tables[pa]
        d = st.pages[pa][i]
        g = G.granule_size(level, st.page_shift)
        s = base + i * g
        if level < G.LAST_LEVEL and d & D.TYPE_BITS == D.TABLE_OR_PAGE:
            if (pa, i) in self._opaque:
                return [(s, s + g, level, d, pa, i, True)]
            out = []
            self._leaves_of(D.address(d, st.page_shift), s, s + g, out, whole)
            return out
        return [(s, s + g, level, d, pa, i, False)]

    def is_opaque(self, pa, i):
        return (pa, i) in self._opaque

    # -- queries -------------------------------------------------------------------------------

    def find(self, ipa):
        """The leaf slot (interval) translating `ipa`, or None (no root, or outside the input range):
        ``overlapping(ipa, ipa + 1)``'s one interval, found by descending from the root
        (tests/test_state_reuse.py holds the two equal)."""
        st = self.state
        if not 0 <= ipa < 1 << st.ia_bits or not st.roots:
            return None
        ps = st.page_shift
        k = ipa // G.table_span(st.start_level, ps)
        if k >= len(st.roots):
            return None
        bad = self._opaque.get((None, k))
        if bad:
            s, e, level, rpa = bad
            return (s, e, level, 0, rpa, 0, True) if s < e else None
        pa, tables, pages, opaque = st.roots[k], self.tables, st.pages, self._opaque
        while True:
            level, base, _, _, _ = tables[pa]
            g = G.granule_size(level, ps)
            i = (ipa - base) // g
            d = pages[pa][i]
            s = base + i * g
            if level < G.LAST_LEVEL and d & D.TYPE_BITS == D.TABLE_OR_PAGE:
                if (pa, i) in opaque:
                    return (s, s + g, level, d, pa, i, True)
                pa = D.address(d, ps)       # a followed table: one level down
                continue
            return (s, s + g, level, d, pa, i, False)


def leaves(state):
    """Every leaf-level descriptor slot of the tree, in input-address order, as Leaf tuples.

    Valid leaves, owner annotations and zero slots alike, one per slot (slots of a root table that
    lie beyond 2**ia_bits are not input addresses and are skipped). Table descriptors that cannot be
    followed are skipped too (S2-TREE / S1-TREE report them).
    """
    from ptspec.spec.stage2.state import load_state
    state = load_state(state)
    for s, e, level, d, pa, idx, opaque in state.walk().intervals:
        if opaque:
            continue
        g = G.granule_size(level, state.page_shift)
        if d:
            yield Leaf(s, g, level, d, pa, idx)
        else:
            for k in range((e - s) // g):
                yield Leaf(s + k * g, g, level, 0, pa, idx + k)
