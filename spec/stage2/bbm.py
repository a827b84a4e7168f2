"""S2-BBM: a translation the TLB may hold before an operation and that the operation changed must
have been invalidated by that operation.

Models: the TLB-maintenance half of break-before-make for one step, judged from the pre-state, the
post-state and the step's tlb_log: every pre-op valid leaf whose translation changed (output
address, leaf level/size, any attribute, or no longer valid) needs a ``tlbi_vmid`` or a ``tlbi_ipa``
inside that leaf with the leaf's level as the TTL hint, or with no hint.

Leaves out: the order of the invalidation relative to the descriptor writes (the log does not record
writes), and the hardware's own AF/DBM updates.
"""

from bisect import bisect_left
from collections import defaultdict
from itertools import chain, compress, repeat
from operator import add, itemgetter, rshift

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.segments import FlatL3, L3Chunk, is_valid, page_translation, same_page
from ptspec.spec.stage2.treediff import diff_chunks
from ptspec.spec.stage2.state import kernel_since
from ptspec.spec.stage2.walkcache import LEAF_HINTS, leaf_hints
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation
from ptspec.spec.arch.walk import START, END, LEVEL, DESC, TABLE, INDEX

# attribute bits an op may clear without TLB maintenance, because the caller flushes
_CALLER_FLUSHES = {"wrprotect": D.S2AP_W, "mkold": D.AF, "test_clear_young": D.AF}
# A tlbi_ipa whose level names no leaf level carries no level hint and removes entries of every
# level: 0 before 6.8 (__tlbi_level sets no TTL for level 0, and no stage-2 leaf lives at level 0;
# from 6.8 0 is a level-0 hint, walkcache.leaf_hints), TLBI_TTL_UNKNOWN (6.12 on) later; S2-BBM-WALK
# reads hints the same way. The log's no-hint events are grouped under TTL_UNKNOWN.
TTL_UNKNOWN = 0x7FFFFFFF
_IPA_OF, _LEVEL_OF = itemgetter(1), itemgetter(2)


def _hint(level, hints=LEAF_HINTS):
    """The level a tlbi_ipa's hint names, or TTL_UNKNOWN when it names none (`hints`: the
    state's walkcache.leaf_hints)."""
    return level if level in hints else TTL_UNKNOWN


# The first kernel whose relax_perms invalidates on this CPU only (__kvm_tlb_flush_vmid_ipa_nsh,
# "KVM: arm64: Use local TLBI on permission relaxation", a12ab1378a88, merged for 6.5): 6.5.0
# does, 6.4.4 does not.
LOCAL_RELAX_TLBI_SINCE = (6, 5, 0)


def _local_ok(op, state):
    """6.5 on: relax_perms invalidates only this CPU's TLB (tlbi_ipa_nsh), which S2-BBM accepts
    for it: what another CPU may still cache has fewer permissions (a spurious fault at worst)."""
    return op == "relax_perms" and kernel_since(state, LOCAL_RELAX_TLBI_SINCE)


def _invalidates(ev, level, lo, hi, local_ok=False, hints=LEAF_HINTS):
    """Whether one log event removes a cached translation of the leaf [lo, hi) at `level`:
    tlbi_ipa inside the leaf with the leaf's level (or no hint), tlbi_range overlapping it."""
    if ev[0] == "tlbi_ipa" or ev[0] == "tlbi_ipa_nsh" and local_ok:
        return (ev[2] == level or ev[2] not in hints) and lo <= ev[1] < hi
    if ev[0] == "tlbi_range":
        return ev[1] < hi and lo < ev[1] + ev[2]
    return False


# -- the plain statement: page by page -----------------------------------------------------------

# The first kernel whose map walker stores a change of only a leaf's software bits in place, without
# break-before-make or cache maintenance (stage2_map_walker_try_leaf, outside a shared walk): 6.10.0
# and 6.11.11 do, 6.9.0 does not (stop 30; the gate sat at 6.12, the first tree run then).
SW_BITS_STORE_SINCE = (6, 10, 0)


def _free_bits(state):
    """Bits a change may touch with no TLBI by kernel version: from 6.10 the software bits 58:55
    (the map walker stores a change of only those without break-before-make; the hardware ignores
    them, so a cached copy with the old ones translates the same; seen in 6.10.0 and 6.12.19, not
    6.9.0)."""
    return D.SW_MASK if kernel_since(state, SW_BITS_STORE_SINCE) else 0


def exempt_change(op, old, new, free=0):
    """A change of one page's translation, (valid, level, desc) before and after, that needs no TLBI:
    still valid at the same level, only the bits the caller flushes cleared, only AF set (and the
    `free` bits changed either way)."""
    if not new[0] or new[1] != old[1]:
        return False
    cleared, added = old[2] & ~new[2], new[2] & ~old[2]
    return not cleared & ~(_CALLER_FLUSHES.get(op, 0) | free) and not added & ~(D.AF | free)


def uninvalidated_leaves_plain(pre, step, post, lo, hi):
    """S2-BBM stated page by page over [lo, hi): the pre-op leaves, as (ipa, level), with a page whose
    valid translation changed (not exempt) and no invalidation in the log that covers the leaf.

    The plain statement of check_bbm, which finds the same leaves (over the whole input range) from
    the interval diff; tests/test_spec_plain.py holds them equal.
    """
    if not post.roots and step.op == "destroy":
        return set()
    if (pre.page_shift, pre.ia_bits) != (post.page_shift, post.ia_bits):
        return set()
    log = post.tlb_log
    if any(ev[0] == "tlbi_vmid" for ev in log):
        return set()
    out = set()
    page = 1 << pre.page_shift
    for ipa in range(lo - lo % page, hi, page):
        old, new = page_translation(pre, ipa), page_translation(post, ipa)
        if not old[0] or same_page(old, new) or exempt_change(step.op, old, new, _free_bits(pre)):
            continue
        level = old[1]
        size = G.granule_size(level, pre.page_shift)
        leaf = ipa - ipa % size
        local = _local_ok(step.op, pre)
        if not any(_invalidates(ev, level, leaf, leaf + size, local, leaf_hints(pre)) for ev in log):
            out.add((leaf, level))
    return out


# -- the same over the interval diff (optimised) -------------------------------------------------


def _exempt(op, p, q, free=0):
    """A change the kernel leaves to its caller, or one that cannot be cached stale."""
    if not is_valid(q) or q[LEVEL] != p[LEVEL]:
        return False
    old, new = p[DESC], q[DESC]
    cleared, added = old & ~new, new & ~old
    return not cleared & ~(_CALLER_FLUSHES.get(op, 0) | free) and not added & ~(D.AF | free)


def _l3_suspects(op, chunk, free=0):
    """The segments of a level-3 chunk that may need a TLBI: valid before, and not exempt."""
    A, B, idx = chunk.A, chunk.B, chunk.idx
    n = len(idx)
    if n > 1 and idx[-1] - idx[0] == n - 1:
        # neighbouring slots, now all one invalid value, before pages stepping by one page (all
        # valid: they share their low bits): every slot is a suspect (list comparisons, C speed)
        lo = idx[0]
        after = B[lo:lo + n]
        if after[0] & D.TYPE_BITS != D.TABLE_OR_PAGE and after.count(after[0]) == n:
            first = A[lo]
            if first & D.TYPE_BITS == D.TABLE_OR_PAGE and list(A[lo:lo + n]) == list(
                    range(first, first + n * chunk.g, chunk.g)):
                return list(idx)
    may_clear = ~(_CALLER_FLUSHES.get(op, 0) | free)
    not_af = ~(D.AF | free)
    keep = [i for i in chunk.idx
            if A[i] & D.TYPE_BITS == D.TABLE_OR_PAGE and not (B[i] & D.TYPE_BITS == D.TABLE_OR_PAGE and not A[i] & ~B[i] & may_clear
                                      and not B[i] & ~A[i] & not_af)]
    return keep


def _pages_hit(by_level, page_shift):
    """The page numbers (ipa >> page_shift) that a tlbi_ipa of level 3 or with no level hint
    names: every leaf page inside one of them is covered (check_bbm's covered())."""
    return set(chain.from_iterable(map(rshift, by_level.get(lv, ()), repeat(page_shift))
                                   for lv in (3, TTL_UNKNOWN)))


def _violation(step, by_level, s, p, q):
    level, lo, hi = p[LEVEL], p[START], p[END]
    near = [f"tlbi_ipa {ipa:#x} level {lv}" for lv, lst in sorted(by_level.items())
            for ipa in lst if lo <= ipa < hi]
    hint = f"; the log has {', '.join(near)}, at the wrong level" if near else ""
    after = f"now {q[DESC]:#x} at level {q[LEVEL]}" if is_valid(q) else f"now invalid ({q[DESC]:#x})"
    return Violation(
        "S2-BBM",
        f"{step.op}: valid {G.size_text(hi - lo)} leaf at ipa {lo:#x} level {level} ({p[DESC]:#x}) "
        f"changed at {s:#x} ({after}) with no tlbi_vmid and no tlbi_ipa inside [{lo:#x}, {hi:#x}) at "
        f"level {level}{hint}",
        {"table": p[TABLE], "index": p[INDEX], "level": level, "ipa": lo, "desc": p[DESC],
         "changed_at": s, "new_desc": q[DESC]})


@statement("S2-BBM", constrains=(
    "stage2_put_pte", "stage2_map_walker_try_leaf", "stage2_map_walk_leaf",
    "stage2_map_walk_table_pre", "stage2_unmap_walker", "kvm_pgtable_stage2_relax_perms",
    "kvm_pgtable_stage2_set_owner"))
def check_bbm(pre, step, post):
    """S2-BBM: every cached translation an operation changed was invalidated by that operation.

    (The plain, page-by-page form of this statement is uninvalidated_leaves_plain above; this
    function computes the same from the interval diff, with a screen on whole level-3 chunks.)

    Statement: for every page whose pre-op translation was valid and whose post-op translation
    differs (output address, leaf level or size, any attribute bit, or now invalid), the step's
    tlb_log holds ["tlbi_vmid"], or ["tlbi_ipa", ipa, level] with `level` the level of the pre-op
    leaf (or no level hint: 0 before 6.8, which sets no TTL, or TLBI_TTL_UNKNOWN) and `ipa` inside
    that leaf, or (6.6 on)
    ["tlbi_range", ipa, size] whose range [ipa, ipa + size) overlaps that leaf; for relax_perms
    from 6.5 on, ["tlbi_ipa_nsh", ipa, level] (this CPU only) is enough: another CPU's stale entry
    has fewer permissions, a spurious fault at worst; from 6.10 a change of only the software bits
    58:55 needs none (the hardware ignores them; the map walker stores such a change without
    break-before-make). Exempt: clearing S2AP W in wrprotect (the caller,
    kvm_mmu_wp_memory_region, flushes the VMID), clearing AF in mkold (the MMU notifier's
    clear_flush_young flushes), and a change that only sets AF (a translation with AF = 0 is never
    cached). destroy is exempt too: the stage 2 is no longer in use (its VMID is retired).

    Why: the TLB may keep serving the old translation after the descriptor changed: the guest keeps
    access to memory it no longer owns, or two translations for one address coexist (a TLB conflict
    abort). The level hint must match: with a TTL hint the TLBI only removes entries of that level.

    Constrains: stage2_put_pte (break-before-make when replacing or clearing a valid leaf),
    stage2_map_walker_try_leaf, stage2_map_walk_leaf (splitting a block), stage2_map_walk_table_pre
    (a table replaced by a block needs the whole VMID flushed), stage2_unmap_walker,
    kvm_pgtable_stage2_relax_perms, kvm_pgtable_stage2_set_owner.
    """
    if not post.roots and step.op == "destroy":
        return []
    if (pre.page_shift, pre.ia_bits) != (post.page_shift, post.ia_bits):
        return []  # the contract reports the changed geometry
    chunks = diff_chunks(pre, post)
    if not chunks:
        return []
    by_level = defaultdict(list)
    ranges = []
    log_read = False        # the log is read when the first changed valid leaf asks for it

    def read_log():
        """False when the log holds a tlbi_vmid (everything is invalidated); else fills by_level
        and ranges from the step's tlbi events."""
        nonlocal log_read
        log_read = True
        if ("tlbi_vmid",) in post.tlb_log:
            return False
        local = _local_ok(step.op, pre)
        evs = post.events("tlbi_ipa") + (post.events("tlbi_ipa_nsh") if local else [])
        levels = list(map(_LEVEL_OF, evs))
        hints = leaf_hints(pre)
        for level in set(levels):       # the events of each hint, picked out at C speed
            by_level[_hint(level, hints)] += map(_IPA_OF, compress(evs, map(level.__eq__, levels)))
        for ev in post.events("tlbi_range"):
            ranges.append((ev[1], ev[1] + ev[2]))
        for ipas in by_level.values():
            ipas.sort()
        return True

    def covered(level, lo, hi):
        for lv in (level, TTL_UNKNOWN):
            ipas = by_level.get(lv, ())
            k = bisect_left(ipas, lo)
            if k < len(ipas) and ipas[k] < hi:
                return True
        return any(a < hi and lo < b for a, b in ranges)

    out = []
    reported = set()
    free = _free_bits(pre)
    settled = None      # a pre leaf judged whatever the post side is (not valid, covered, reported)
    hit = None          # _pages_hit, when first needed
    for item in chunks:
        if type(item) is L3Chunk or type(item) is FlatL3:
            if type(item) is L3Chunk:
                pages = _l3_suspects(step.op, item, free)
            elif item.one_is_pre and not is_valid(item.one):
                continue        # a new table where nothing valid was: no cached translation changed
            else:
                pages = item.old_pages()    # a removed table's valid pages (else None)
            if pages:
                if not log_read and not read_log():
                    return []
                # level-3 pages whose page a level-3 (or unhinted) tlbi_ipa names are covered,
                # whatever changed: a table all of whose suspects are is settled at C speed
                if hit is None:
                    hit = _pages_hit(by_level, pre.page_shift)
                first = item.base >> pre.page_shift
                if hit.issuperset(map(add, pages, repeat(first))):
                    continue
            if type(item) is L3Chunk:
                if not pages:
                    continue
                segs = L3Chunk(item.a, item.b, item.base, item.g, pages, item.A, item.B).expand()
            elif item.one_is_pre and is_valid(item.one) and item.one[LEVEL] < G.LAST_LEVEL:
                # a valid block split into this table: every leaf of the table differs from it
                # (another level), none is exempt, and the block is judged at its first segment
                first = item.leaf(0)
                segs = ((first[START], first[END], item.one, first),)
            else:
                segs = item.expand()
        else:
            segs = (item,)
        for s, e, p, q in segs:
            if p is settled:        # the next part of the same pre leaf (a block split up)
                continue
            if not is_valid(p) or p[START] in reported:
                settled = p
                continue
            if _exempt(step.op, p, q, free):
                continue
            level, lo, hi = p[LEVEL], p[START], p[END]
            settled = p
            if not log_read and not read_log():
                return []
            if covered(level, lo, hi):
                continue
            reported.add(lo)
            out.append(_violation(step, by_level, s, p, q))
    return out
