"""Stage-2 operation arguments, built from the table geometry, for every subject the spec judges.

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

Every argument is drawn through a *chooser*, which picks one of a list of options: ``RandomChooser``
(a seeded ``random.Random``: plain, fast runs) or ``DrawChooser`` (hypothesis's ``draw``: hypothesis
drives the choices and can shrink them). ``Stage2Program`` is the one operation generator of the
stage-2 lock-step (each operation kind with its argument ranges); the hypothesis strategies below
(``addresses``, ``sizes``, ...) are the same choices wrapped for other hypothesis machines.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from hypothesis import strategies as st

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G

U64 = (1 << 64) - 1

KVM_PGTABLE_PROT_X, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_R = D.PROT_X, D.PROT_W, D.PROT_R
KVM_PGTABLE_PROT_DEVICE = D.PROT_DEVICE
KVM_PGTABLE_PROT_NORMAL_NC = D.PROT_NORMAL_NC
KVM_PGTABLE_PROT_PX, KVM_PGTABLE_PROT_UX = D.PROT_PX, D.PROT_UX
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


# -- choosers ----------------------------------------------------------------------------------

class RandomChooser:
    """Choices from a seeded ``random.Random``: the same seed gives the same run."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self._random = self.rng.random

    def choice(self, options):
        return options[int(self._random() * len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return lo + int(self._random() * (hi - lo + 1))


@functools.lru_cache(maxsize=4096)
def _sampled(options: tuple):
    return st.sampled_from(options)


class DrawChooser:
    """Choices drawn by hypothesis (``data.draw`` or a composite's ``draw``): hypothesis drives
    them and shrinks a failing run towards the first option of each list."""

    def __init__(self, draw):
        self.draw = draw

    def choice(self, options):
        return self.draw(_sampled(tuple(options)))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))


# -- the options of one geometry -----------------------------------------------------------------

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


@dataclass(frozen=True)
class Options:
    """Every option list the choices of one geometry pick from (computed once per geometry)."""
    geom: Geometry
    fields: tuple           # per level from the start level: index << shift
    offsets: tuple          # in-page offsets, misaligned ones included
    aligned_offsets: tuple
    sizes: tuple            # page, block and root-entry multiples with small deltas
    wrapping_sizes: tuple   # 0 and sizes that wrap the 64-bit address space
    phys_offsets: tuple
    phys_bases: tuple
    bad_addresses: tuple
    straddle_levels: tuple
    aligned_levels: tuple   # levels that take leaves (map_aligned)


@functools.lru_cache(maxsize=None)
def options(geom: Geometry) -> Options:
    gran = geom.gran
    page, blk = gran.page_size, gran.size[2]
    fields = tuple(tuple(i << gran.shift[lv] for i in level_indices(geom, lv))
                   for lv in range(geom.start_level, 4))
    sizes = [page, 2 * page, 3 * page, blk, blk - page, blk + page, 2 * blk, 1, page + 1]
    if gran.kvm_level_supports_block_mapping(1):
        sizes.append(gran.size[1])
    lim = 1 << geom.ia_bits
    return Options(
        geom=geom, fields=fields,
        offsets=(0,) * 6 + (1, page // 2, page - 1), aligned_offsets=(0,),
        sizes=tuple(sizes), wrapping_sizes=(0, U64, U64 - page + 2),
        phys_offsets=(1 << 32, 1 << 32, (1 << 32) + blk, (1 << 32) + page,
                      (1 << 33) + 3 * page, (1 << 32) + 1),
        phys_bases=(1 << 32, (1 << 32) + blk, (1 << 32) + page, (1 << 33) + 3 * page,
                    (1 << gran.pa_bits) - blk),
        bad_addresses=(lim, lim + page, U64, U64 - page + 1, 1 << 63),
        straddle_levels=tuple(straddle_levels(geom)),
        aligned_levels=tuple(lv for lv in (1, 2, 3) if gran.block_ok[lv]))


# -- one argument, through a chooser ---------------------------------------------------------------

def choose_address(ch, opt: Options, misaligned: bool = True) -> int:
    """An IPA inside the IPA space, from per-level index fields and an in-page offset."""
    a = 0
    for f in opt.fields:
        a += ch.choice(f)
    return a + ch.choice(opt.offsets if misaligned else opt.aligned_offsets)


def choose_size(ch, opt: Options) -> int:
    """Page, block and root-entry multiples with small deltas, or 0 / sizes that wrap (one in two)."""
    return ch.choice(ch.choice((opt.sizes, opt.wrapping_sizes)))


def choose_phys_offset(ch, opt: Options) -> int:
    """Output address = IPA + offset, as a memslot maps guest memory linearly: re-maps of
    overlapping ranges then meet the same output addresses (permission-only re-maps, -EAGAIN).
    Offsets keep level-1 or level-2 block alignment, or only page alignment."""
    return ch.choice(opt.phys_offsets)


def choose_phys(ch, opt: Options) -> int:
    """A valid output address independent of the IPA: block aligned, page aligned, or not."""
    page = opt.geom.gran.page_size
    return ch.choice(opt.phys_bases) + ch.choice((0, 0, 0, page, 1))


PROT_BASE = [KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_X,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_DEVICE,
             KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_X | KVM_PGTABLE_PROT_R, 0]
_PROT_SW = (0, 0, 0, KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_SW3)
_R, _W, _X = KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X
# every subset of R, W, X (what relax_perms may be asked to add), once with a software bit (-EINVAL)
PERM_SETS = (0, _R, _W, _X, _R | _W, _R | _X, _W | _X, _R | _W | _X, _R | KVM_PGTABLE_PROT_SW0)
# permission bits to flip on a re-map (R, W, X; never DEVICE or software bits), 0 included
PERM_CHANGES = (0, _W, _X, _R, _W | _X)


# with NORMAL_NC (a subject whose enum kvm_pgtable_prot has it, 6.9 on): read-only and read-write
# non-cacheable maps, and the two combinations stage2_set_prot_attr refuses (with X, with DEVICE)
PROT_BASE_NC = PROT_BASE + [
    KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X | KVM_PGTABLE_PROT_NORMAL_NC,
    KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_NORMAL_NC]


# with PX and UX (a subject whose enum splits X, 7.1 on): each alone (-EINVAL without FEAT_XNX)
# and both named apart (the same as X)
PROT_PX_UX = [KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_PX,
              KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_UX,
              KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_PX | KVM_PGTABLE_PROT_UX]
PERM_SETS_PX_UX = (KVM_PGTABLE_PROT_PX, KVM_PGTABLE_PROT_UX,
                   KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_PX | KVM_PGTABLE_PROT_UX)


@functools.lru_cache(maxsize=None)
def prot_options(normal_nc: bool = False, px_ux: bool = False) -> tuple:
    """(map prot bases, relax_perms sets) for a subject: PROT_BASE and PERM_SETS, with the
    NORMAL_NC and PX/UX choices added where the subject has them (the same lists, so the same
    programs, as every earlier version where it has neither)."""
    base = PROT_BASE_NC if normal_nc else PROT_BASE
    if px_ux:
        return tuple(base + PROT_PX_UX), PERM_SETS + PERM_SETS_PX_UX
    return tuple(base), PERM_SETS


def choose_prot(ch, normal_nc: bool = False, px_ux: bool = False) -> int:
    """A map's prot: a base from PROT_BASE (with NORMAL_NC and PX/UX choices for a subject that
    has them: prot_options) plus, sometimes, a software bit. Without them the choices are those
    of every earlier version (the same seed gives the same program)."""
    return ch.choice(prot_options(normal_nc, px_ux)[0]) + ch.choice(_PROT_SW)


# kvm_pgtable_stage2_annotate's inputs (7.1 on, a subject that has it): POISONED (what pKVM writes
# for a page the host reclaimed from a guest) and DONATION owner records (owner id 1, bits 3:1) most
# often; the refused types 0 and LOCKED; types pgtable.c stores with no meaning (4, 15); and 18, 19:
# too big for the 4-bit field, they pass annotate's check and store DONATION / POISONED (the
# catalogued annotate-type-truncated). 16 and 17 would store type 0 / the locked marker and leave the
# table broken for every later step: their own sequences show them (tests/test_annotate.py).
ANNOTATE_TYPES = (D.TYPE_POISONED,) * 3 + (D.TYPE_DONATION,) * 2 + (0, D.TYPE_LOCKED, 4, 15, 18, 19)
OWNER_RECORD = 1 << 1                  # PKVM_ID_HYP in pKVM's owner field, bits 3:1
# a page donated to a guest: PKVM_ID_GUEST with the VM handle (pKVM's first, 0x1000) and a gfn in 59:4
GUEST_RECORD = (0x1000 | 0x8_0123 << 16) << 4 | D.PKVM_ID_GUEST << 1
ANNOTATION_ANY = 0x0123456789ABCDE0 & D.ANNOT_MASK   # bits a type with no owner field may hold
# refused annotations: bit 0 (it would make the descriptor valid), bits 63:60 (the type field)
ANNOTATIONS_BAD = (1, 1 << 63)


def choose_annotation(ch) -> dict:
    """type and annotation of an annotate record: for the DONATION type pKVM's records (the
    hypervisor's owner record, or a guest's with its VM handle and gfn: the annotations S2-OWN
    knows for it), 0 or any bits 59:1 for the others, now and then a refused annotation (bit 0,
    or a bit of 63:60)."""
    t = ch.choice(ANNOTATE_TYPES)
    good = (OWNER_RECORD, GUEST_RECORD) if t % 16 == D.TYPE_DONATION else (0, ANNOTATION_ANY)
    a = ch.choice(good * 3 + tuple(x | good[0] for x in ANNOTATIONS_BAD))
    return {"type": t, "annotation": a}


def choose_growth(ch, opt: Options) -> tuple[int, int]:
    """(bytes added before, bytes added after) a re-mapped range: none, a page, a level-2 block."""
    page, blk = opt.geom.gran.page_size, opt.geom.gran.size[2]
    return ch.choice((0, 0, page)), ch.choice((0, page, 2 * page, blk))


_STRADDLE_SIDES = ("page", "pages", "half")


def choose_straddle(ch, opt: Options) -> tuple[int, int]:
    """(addr, size): a range that starts inside one entry and ends just inside the next one.

    The entry boundary is at a level from the root down to level 2 (a level-3 entry is one page and
    a walk starts page aligned). The range starts one page, two pages or half an entry before the
    boundary and ends one page, two pages or half an entry after it. This is where a walker that
    advances without aligning to the entry first goes wrong, and where partial block splits and
    partial unmaps meet neighbouring entries. A range that would end beyond the IPA space is drawn
    again (the last tries fall back to the first boundary of the level)."""
    page, top = opt.geom.gran.page_size, 1 << opt.geom.ia_bits
    for attempt in range(8):
        level = ch.choice(opt.straddle_levels)
        base = choose_address(ch, opt, misaligned=False) if attempt < 7 else 0
        back, ahead = ch.choice(_STRADDLE_SIDES), ch.choice(_STRADDLE_SIDES)
        g = opt.geom.gran.size[level]
        boundary = (base // g + 1) * g
        b = {"page": page, "pages": 2 * page, "half": g // 2}[back]
        a = {"page": page, "pages": 2 * page, "half": g // 2}[ahead]
        if boundary + a <= top:
            return boundary - b, b + a
    raise AssertionError("unreachable: the first boundary of a level below the top fits")


# -- the same choices as hypothesis strategies (for the other hypothesis machines) ---------------

def _strategy(fn, *args):
    return st.composite(lambda draw: fn(DrawChooser(draw), *args))()


def addresses(geom: Geometry, misaligned: bool = True):
    """IPAs inside the IPA space, from per-level index fields and an in-page offset."""
    return _strategy(choose_address, options(geom), misaligned)


def sizes(geom: Geometry):
    return _strategy(choose_size, options(geom))


def phys_offsets(geom: Geometry):
    return _strategy(choose_phys_offset, options(geom))


def physes(geom: Geometry):
    return _strategy(choose_phys, options(geom))


def prots():
    return _strategy(choose_prot)


def perm_sets():
    return st.sampled_from(PERM_SETS)


def perm_changes():
    return st.sampled_from(PERM_CHANGES)


def growths(geom: Geometry):
    return _strategy(choose_growth, options(geom))


def owner_ids(max_owner_id: int):
    return st.sampled_from(list(range(0, max_owner_id + 2)))


def bad_addresses(geom: Geometry):
    """Addresses beyond the IPA space (the walker must answer -ERANGE)."""
    return st.sampled_from(options(geom).bad_addresses)


def straddle_levels(geom: Geometry) -> list[int]:
    """Levels whose entries span more than a page, where a walk can start inside an entry: from
    the start level (level 0 entries are never leaves, so at least 1) down to level 2."""
    return list(range(max(geom.start_level, 1), 3))


def straddles(geom: Geometry):
    return _strategy(choose_straddle, options(geom))
