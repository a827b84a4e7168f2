"""Hypothesis strategies for stage-2 operation arguments, built from the table geometry.

Addresses are assembled from per-level index fields (first entries, the last entry, the first entry
of the next concatenated root page, the top of the IPA space) plus an in-page offset, so that the
narrow bit patterns that matter to a page-table walker (entry boundaries, root-page boundaries,
misalignment by one byte or one page) come up often, and so that operations collide in a few
subtrees instead of spreading over an empty IPA space. Sizes are page, block and root-entry
multiples with small deltas, plus sizes that wrap the 64-bit address space. Physical addresses are
aligned to a block of some level or deliberately not.

Every input comes from the spec (``ptspec.spec.arch.geometry`` for levels, entry sizes, root pages
and block levels; ``ptspec.spec.arch.descriptor`` for the ``KVM_PGTABLE_PROT_*`` encodings), never
from impl: a generator that followed impl's geometry would inherit its mistakes. ``geometry()``
builds the geometry object the strategies read. The same strategies drive every subject the spec
judges (impl through ``Stage2Harness``, the kernel's own C through
``ptspec.proofs.kernel.subject.CSideHarness``): they produce operation records (name + keyword
arguments) that the subject's harness applies.
"""

from __future__ import annotations

from hypothesis import strategies as st

from dataclasses import dataclass, field

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G

U64 = (1 << 64) - 1

KVM_PGTABLE_PROT_X, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_R = D.PROT_X, D.PROT_W, D.PROT_R
KVM_PGTABLE_PROT_DEVICE = D.PROT_DEVICE
_SW_LOW = (D.PROT_SW & -D.PROT_SW)             # lowest software bit of the prot field
KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_SW3 = _SW_LOW, _SW_LOW << 3



@dataclass(frozen=True)
class Granule:
    """The per-level facts of one granule, as the spec states them (spec.arch.geometry)."""
    page_shift: int
    page_size: int = field(init=False)
    ptrs_per_pte: int = field(init=False)
    shift: tuple = field(init=False)          # levels 0..3
    size: tuple = field(init=False)
    block_ok: tuple = field(init=False)       # a leaf may sit at the level (page at level 3)
    pa_bits: int = field(init=False)

    def __post_init__(self):
        ps = self.page_shift
        if ps not in G.PAGE_SHIFTS:
            raise ValueError(f"page_shift must be one of {G.PAGE_SHIFTS}, not {ps!r}")
        put = object.__setattr__
        put(self, "page_size", 1 << ps)
        put(self, "ptrs_per_pte", G.entries_per_table(ps))
        put(self, "shift", tuple(G.granule_shift(lv, ps) for lv in range(G.MAX_LEVELS)))
        put(self, "size", tuple(G.granule_size(lv, ps) for lv in range(G.MAX_LEVELS)))
        put(self, "block_ok", tuple(G.level_allows_leaf(lv, ps) for lv in range(G.MAX_LEVELS)))
        # the largest output address size KVM configures without LPA2: 52 bits only with 64K
        # pages, 48 otherwise -- the same bound the spec's map contract applies
        put(self, "pa_bits", G.IPA_RANGE[ps][1])

    def kvm_level_supports_block_mapping(self, level: int) -> bool:
        return G.level_allows_block(level, self.page_shift)


@dataclass(frozen=True)
class Geometry:
    """A stage-2 table shape: granule, IPA size, start level and concatenated root pages."""
    gran: Granule
    ia_bits: int
    start_level: int
    pgd_pages: int


def geometry(page_shift: int, ia_bits: int) -> Geometry:
    """The stage-2 geometry KVM picks for this granule and IPA size, from the spec alone."""
    if not G.ipa_bits_supported(ia_bits, page_shift):
        raise ValueError(f"{G.granule_name(page_shift)} pages cannot translate a {ia_bits}-bit IPA")
    sl = G.stage2_start_level(ia_bits, page_shift)
    return Geometry(Granule(page_shift), ia_bits, sl, G.root_pages(ia_bits, sl, page_shift))


def hyp_geometry(page_shift: int, va_bits: int) -> Geometry:
    """The hyp stage-1 table's shape, from the spec alone: one root at the level the VA size needs."""
    return Geometry(Granule(page_shift), va_bits, G.hyp_start_level(va_bits, page_shift), 1)


def level_indices(geom: Geometry, level: int) -> list[int]:
    """Indices tried at one level; repeated entries weigh the choice towards a few subtrees."""
    ptrs = geom.gran.ptrs_per_pte
    if level == geom.start_level:
        # Root level: first entries, last entry of the first root page, first of the next one.
        limit = min(ptrs * geom.pgd_pages, 1 << max(geom.ia_bits - geom.gran.shift[level], 0))
        cand = [1, ptrs - 1, ptrs, limit - 1]
        return [0, 0, 0] + sorted({c for c in cand if 0 < c < limit})
    if level == 3:
        return [0, 0, 1, 2, ptrs // 2, ptrs - 1]
    return [0, 0, 1, 1, ptrs - 1]


def addresses(geom: Geometry, misaligned: bool = True):
    """IPAs inside the IPA space, from per-level index fields and an in-page offset."""
    gran = geom.gran
    parts = []
    for level in range(geom.start_level, 4):
        parts.append(st.sampled_from(level_indices(geom, level)).map(
            lambda i, s=gran.shift[level]: i << s))
    offsets = [0] * 6 + ([1, gran.page_size // 2, gran.page_size - 1] if misaligned else [])
    parts.append(st.sampled_from(offsets))
    return st.tuples(*parts).map(sum)


def sizes(geom: Geometry):
    gran = geom.gran
    page = gran.page_size
    blk = gran.size[2]
    base = [page, 2 * page, 3 * page, blk, blk - page, blk + page, 2 * blk, 1, page + 1]
    if gran.kvm_level_supports_block_mapping(1):
        base.append(gran.size[1])
    return st.one_of(st.sampled_from(base), st.sampled_from([0, U64, U64 - page + 2]))


def phys_offsets(geom: Geometry):
    """Output address = IPA + offset, as a memslot maps guest memory linearly: re-maps of
    overlapping ranges then meet the same output addresses (permission-only re-maps, -EAGAIN).
    Offsets keep level-1 or level-2 block alignment, or only page alignment."""
    gran = geom.gran
    page = gran.page_size
    return st.sampled_from([1 << 32, 1 << 32, (1 << 32) + gran.size[2], (1 << 32) + page,
                            (1 << 33) + 3 * page, (1 << 32) + 1])


def physes(geom: Geometry):
    """Valid output addresses independent of the IPA: block aligned, page aligned, or not."""
    gran = geom.gran
    page = gran.page_size
    top = 1 << gran.pa_bits
    bases = [1 << 32, (1 << 32) + gran.size[2], (1 << 32) + page, (1 << 33) + 3 * page,
             top - gran.size[2]]
    return st.tuples(st.sampled_from(bases), st.sampled_from([0, 0, 0, page, 1])).map(sum)


PROT_BASE = [KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_X,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_DEVICE,
             KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_X | KVM_PGTABLE_PROT_R, 0]


def prots():
    return st.tuples(st.sampled_from(PROT_BASE),
                     st.sampled_from([0, 0, 0, KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_SW3])).map(sum)


def perm_sets():
    """Every subset of R, W, X (what relax_perms may be asked to add), and once with a software
    bit (refused with -EINVAL)."""
    r, w, x = KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X
    return st.sampled_from([0, r, w, x, r | w, r | x, w | x, r | w | x, r | KVM_PGTABLE_PROT_SW0])


def perm_changes():
    """Permission bits to flip on a re-map (R, W, X; never DEVICE or software bits), 0 included."""
    return st.sampled_from([0, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X, KVM_PGTABLE_PROT_R,
                            KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_X])


def growths(geom: Geometry):
    """(bytes added before, bytes added after) a re-mapped range: none, a page, a level-2 block."""
    page, blk = geom.gran.page_size, geom.gran.size[2]
    return st.tuples(st.sampled_from([0, 0, page]), st.sampled_from([0, page, 2 * page, blk]))


def owner_ids(max_owner_id: int):
    return st.sampled_from(list(range(0, max_owner_id + 2)))


def bad_addresses(geom: Geometry):
    """Addresses beyond the IPA space (the walker must answer -ERANGE)."""
    lim = 1 << geom.ia_bits
    return st.sampled_from([lim, lim + geom.gran.page_size, U64, U64 - geom.gran.page_size + 1,
                            1 << 63])


def straddle_levels(geom: Geometry) -> list[int]:
    """Levels whose entries span more than a page, where a walk can start inside an entry: from
    the start level (level 0 entries are never leaves, so at least 1) down to level 2."""
    return list(range(max(geom.start_level, 1), 3))


def straddles(geom: Geometry):
    """(addr, size) ranges that start inside one entry and end just inside the next one.

    The entry boundary is at a level from the root down to level 2 (a level-3 entry is one page and
    a walk starts page aligned). The range starts one page, two pages or half an entry before the
    boundary and ends one page, two pages or half an entry after it. This is where a walker that
    advances without aligning to the entry first goes wrong, and where partial block splits and
    partial unmaps meet neighbouring entries.
    """
    gran = geom.gran
    page = gran.page_size
    levels = straddle_levels(geom)

    def build(args):
        level, base, back, ahead = args
        g = gran.size[level]
        boundary = (base // g + 1) * g
        b = {"page": page, "pages": 2 * page, "half": g // 2}[back]
        a = {"page": page, "pages": 2 * page, "half": g // 2}[ahead]
        return boundary - b, b + a

    return st.tuples(st.sampled_from(levels), addresses(geom, misaligned=False),
                     st.sampled_from(["page", "pages", "half"]),
                     st.sampled_from(["page", "pages", "half"])).map(build).filter(
        lambda r: r[0] + r[1] <= 1 << geom.ia_bits)
