"""S2-BBM-WALK: a table descriptor the walk caches may hold and that an operation removed must have
been invalidated by a TLBI that covers walk-cache entries.

Models: the walk caches (intermediate caching of table descriptors) of a VMSAv8-64 stage-2 walker.
An entry caches, for the input range one table descriptor covers, which next-level table the walk
goes on to: (ipa range, level of the descriptor, next-level table pa). Every table descriptor the
walk reaches in the pre-state may be cached. After the step, an entry is still right when the post
walk reaches the same next-level table from the same range at the same level; otherwise it must be
invalidated: by ``tlbi_vmid``, by ``tlbi_ipa`` of an address in its range with no level hint, or
(6.6 on) by a ``tlbi_range`` overlapping its range (range invalidation carries no level hint).

The level hint (FEAT_TTL, the ``level`` of a ``["tlbi_ipa", ipa, level]`` event): it tells the
hardware at which level the *leaf* entry for the address lies, and an invalidation whose hint is
wrong for an entry is not required to remove it. A table descriptor is never a leaf, so a hint of
1, 2 or 3 promises that the entry to drop is a leaf at that level, and a cached table descriptor
may survive it. Level 0 is "no level information" before 6.8 (``__tlbi_level`` sets no TTL for a
level of 0); from 6.8 (LPA2's rework of ``__tlbi_level``: any level in 0..3 is encoded, and
``TLBI_TTL_UNKNOWN``, INT_MAX, asks for no hint) 0 is a hint that the leaf is at level 0, which a
CPU with FEAT_LPA2 honours, so it no longer covers a table descriptor (``leaf_hints``). A value
outside 0..3 (``TLBI_TTL_UNKNOWN``, logged as the int it is) names no level on every kernel.

Leaves out: the order of the invalidation relative to the descriptor write (the log records no
writes: an invalidation before the clear would not do), leaf translations (S2-BBM judges those),
and descriptors the walk cannot follow (S2-TREE reports them).
"""

from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.state import kernel_since
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation

LEAF_HINTS = (1, 2, 3)          # hints that name a leaf level before 6.8; any other value names none
LEAF_HINTS_LPA2 = (0, 1, 2, 3)  # from 6.8: level 0 is a hint too (FEAT_LPA2 has level-0 leaves)
# The first kernel whose __tlbi_level encodes a level of 0 as a TTL hint (seen in 6.8.0's
# asm/tlbflush.h, `level >= 0 && level <= 3`; 6.6.y and 6.1.y test `level` and skip 0).
TTL_LEVEL0_SINCE = (6, 8, 0)


def leaf_hints(state):
    """The level hints that name a leaf level on the state's kernel: 1-3, and 0 too from 6.8 (a
    state without a kernel_version is the 5.12-6.1 code: 1-3)."""
    return LEAF_HINTS_LPA2 if kernel_since(state, TTL_LEVEL0_SINCE) else LEAF_HINTS


def covers_walk_entry(event, lo, hi, hints=LEAF_HINTS):
    """Whether one tlb_log event removes walk-cache entries for an address in [lo, hi), `hints`
    being the level hints that name a leaf level (leaf_hints of the state)."""
    if event[0] == "tlbi_vmid":
        return True
    if event[0] == "tlbi_range":    # 6.6 on: by IPA range, no level hint (TLBI_TTL_UNKNOWN)
        return event[1] < hi and lo < event[1] + event[2]
    return event[0] == "tlbi_ipa" and lo <= event[1] < hi and event[2] not in hints


def walk_entries(state):
    """The walk-cache entries the hardware may hold for a state: {(ipa, level, next table pa)} for
    every table descriptor the walk reaches (ipa = start of the range it covers, level = its own
    level). Roots are reached from the VTTBR, not from a descriptor: they have no entry."""
    if not state.roots:
        return set()
    out = set()
    for pa, (level, base, _used, parent, _pindex) in state.walk().tables.items():
        if parent is not None:
            out.add((base, level - 1, pa))
    return out


@statement("S2-BBM-WALK", constrains=(
    "stage2_put_pte", "stage2_unmap_walker", "stage2_map_walk_table_pre", "__kvm_tlb_flush_vmid_ipa"))
def check_bbm_walk(pre, step, post):
    """S2-BBM-WALK: every cached table descriptor an operation removed was invalidated, with no level hint.

    Statement: for every table descriptor the pre-op walk reaches (at level L, covering input range
    [ipa, ipa + granule(L)), pointing to next-level table T) such that the post-op walk does not
    reach T from the same range at the same level, the step's tlb_log holds ["tlbi_vmid"], or
    ["tlbi_ipa", a, h] with a inside [ipa, ipa + granule(L)) and h not a leaf level (h not in 1..3:
    0 before 6.8, or TLBI_TTL_UNKNOWN; from 6.8 0 names level 0), or ["tlbi_range", a, n] with [a, a + n) overlapping
    that range (6.6 on). destroy is exempt (the VMID is retired).

    Why: the walk caches keep table descriptors so that later walks skip the upper levels. A cached
    descriptor that outlives the table it points to lets the guest's walks read a page that was
    freed and may be reused by anyone: the guest translates through garbage, or through tables of
    another VM. A TLBI by IPA with a level hint is only required to remove leaf entries of that
    level; a table descriptor is not a leaf, so only an invalidation without a hint (or of the whole
    VMID) removes it.

    Constrains: stage2_put_pte (the invalidation after clearing a table descriptor, reached from
    stage2_unmap_walker when it frees a table that became empty, must carry no level hint),
    stage2_map_walk_table_pre (a table replaced by a block: the whole VMID), and
    __kvm_tlb_flush_vmid_ipa (the hint it passes is the one its caller gave).
    """
    if not post.roots and step.op == "destroy":
        return []
    if (pre.page_shift, pre.ia_bits) != (post.page_shift, post.ia_bits):
        return []   # the contract reports the changed geometry
    if pre.roots and post.roots and pre.walk().tables is post.walk().tables:
        return []       # the same walk shape (shared by load_state's prev): no entry is gone
    before = walk_entries(pre)
    if not before:
        return []
    gone = before - walk_entries(post)
    if not gone:
        return []
    log = post.tlb_log
    if ("tlbi_vmid",) in log:
        return []
    out = []
    hints = leaf_hints(pre)
    # the events covers_walk_entry can find covering (tlbi_vmid is not in the log): the rest of
    # the log (cache maintenance, hinted TLBIs, often one per page) is left out of the search
    candidates = [*post.events("tlbi_range"), *post.events("tlbi_ipa")]
    for ipa, level, table in sorted(gone):
        hi = ipa + G.granule_size(level, pre.page_shift)
        if any(covers_walk_entry(ev, ipa, hi, hints) for ev in candidates):
            continue
        near = [f"tlbi_ipa {ev[1]:#x} level {ev[2]}" for ev in log
                if ev[0] == "tlbi_ipa" and ipa <= ev[1] < hi]
        hint = (f"; the log has {', '.join(near)}, whose level hint names a leaf level and does "
                f"not cover a table descriptor") if near else ""
        out.append(Violation(
            "S2-BBM-WALK",
            f"{step.op}: table descriptor at level {level} for [{ipa:#x}, {hi:#x}) -> table "
            f"{table:#x} was removed with no tlbi_vmid and no tlbi_ipa inside the range without a "
            f"level hint{hint}",
            {"ipa": ipa, "level": level, "table": table}))
    return out
