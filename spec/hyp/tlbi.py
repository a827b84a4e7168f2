"""S1-UNMAP-TLBI: what kvm_pgtable_hyp_unmap removes from EL2's stage 1 is invalidated (walk caches
too).

Models the TLB maintenance of hyp_unmap_walker (kvm_pgtable_hyp_unmap, 5.17 on): the EL2 TLB may
hold a leaf translation for every valid leaf the walk reaches, and its walk caches an entry for
every table descriptor the walk reaches (the VA range the descriptor covers -> the next-level
table). After the step, each of them that the post-state no longer has must have been removed by
a TLB invalidation by VA at EL2 (``__tlbi_level(op, va, level)``, logged as ``["tlbi_el2", va,
level]`` for ``vae2is`` and ``["tlbi_el2_last", va, level]`` for ``vale2is``):

* a leaf at level L over [s, e): an event of either kind with s <= va < e whose level hint is L
  or names no leaf level;
* a table descriptor at level L over [s, e): a ``tlbi_el2`` (``vale2is`` touches last-level
  entries only) with s <= va < e and no leaf level as its hint. The hint (FEAT_TTL) promises at
  which level the *leaf* for va lies, and an invalidation whose hint is wrong for an entry is not
  required to remove it: a table descriptor is never a leaf. Hints are read as for stage 2
  (``spec.stage2.walkcache.leaf_hints``: 1-3 name a leaf level, and 0 from 6.8, whose
  ``__tlbi_level`` encodes level 0 as a hint; before 6.8 0 sets no TTL and names none, as
  TLBI_TTL_UNKNOWN does on every kernel).

Leaves out: the order of the invalidation against the descriptor write and the page's release
(the log records neither), the DSB/ISB that complete it, and the hyp map (it replaces no valid
entry but in the WARNed conflict cases, C-HYP-WARN's). As for stage 2, a state's ``tlb_log``
holds what the step did (docs/interface.md) and a state without one did nothing: an unmap that
removed something is then refuted. impl's hyp stage 1 (5.15) has no unmap.
"""

from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.state import load_state
from ptspec.spec.stage2.step import load_step
from ptspec.spec.hyp.unmap import nonzero_leaves
from ptspec.spec.stage2.walkcache import leaf_hints, walk_entries
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation


def _covered(log, lo, hi, kinds, hints_ok):
    return any(ev[0] in kinds and lo <= ev[1] < hi and hints_ok(ev[2]) for ev in log)


@statement("S1-UNMAP-TLBI",
           constrains=("kvm_pgtable_hyp_unmap", "hyp_unmap_walker", "__tlbi_level"))
def check_hyp_unmap_tlbi(pre, step, post):
    """S1-UNMAP-TLBI: every hyp leaf and table descriptor an unmap removed was invalidated at EL2.

    Statement: on a hyp unmap step, for every valid leaf of the pre-state at level L over [s, e)
    that the post-state does not have (same start, level and descriptor), the step's log holds
    ["tlbi_el2" or "tlbi_el2_last", va, hint] with s <= va < e and hint L or no leaf level; for
    every table descriptor the pre-state's walk reaches at level L over [s, e) that the
    post-state's walk does not reach the same way (same range, level and next table), the log
    holds ["tlbi_el2", va, hint] with s <= va < e and a hint that names no leaf level (not 1, 2
    or 3).

    Why: EL2 keeps running on its own stage 1. A removed leaf left in the TLB keeps the hypervisor
    reading and writing memory it gave back; a removed table left in the walk caches lets a later
    walk go on through a table page that is back in the allocator. The kernel invalidated a
    removed table with the table's own level as the hint until the 2024 fix (36e008323926, which
    passes no hint: 0 on 6.1.y and 6.6.y, TLBI_TTL_UNKNOWN from 6.10; 5.17-6.9 mainline pass the
    level): a hint that names a leaf where there is none is not required to remove anything. From
    6.8 a hint of 0 names level 0 (walkcache.leaf_hints), so passing 0 for a table there is wrong too.

    Constrains: kvm_pgtable_hyp_unmap, hyp_unmap_walker, __tlbi_level.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    if step.op != "unmap" or not pre.roots:
        return []
    log = post.tlb_log
    out = []
    hints = leaf_hints(pre)
    now = nonzero_leaves(post)
    for (s, level), d in nonzero_leaves(pre).items():
        if now.get((s, level)) == d:
            continue
        e = s + G.granule_size(level, pre.page_shift)
        if not _covered(log, s, e, ("tlbi_el2", "tlbi_el2_last"),
                        lambda h, level=level: h == level or h not in hints):
            out.append(Violation("S1-UNMAP-TLBI", f"unmap: leaf {d:#x} at [{s:#x}, {e:#x}) level "
                                 f"{level} was removed with no TLBI of an address in it whose hint "
                                 f"is {level} or none; the log has {_show(log, s, e)}",
                                 {"ipa": s, "level": level, "desc": d}))
    # the walk-cache entries (va, descriptor level, next table) pre had and post has not
    for s, level, table in sorted(walk_entries(pre) - walk_entries(post)):
        e = s + G.granule_size(level, pre.page_shift)
        if not _covered(log, s, e, ("tlbi_el2",), lambda h: h not in hints):
            out.append(Violation("S1-UNMAP-TLBI", f"unmap: table descriptor at level {level} for "
                                 f"[{s:#x}, {e:#x}) -> table {table:#x} was removed with no "
                                 f"tlbi_el2 (vae2is) inside the range without a level hint; the "
                                 f"log has {_show(log, s, e)}",
                                 {"ipa": s, "level": level, "table": table,
                                  # every vae2is hint in the range (_show lists six events)
                                  "el2_hints": sorted({ev[2] for ev in log if ev[0] == "tlbi_el2"
                                                       and s <= ev[1] < e}, key=str)}))
    return out


def _show(log, lo, hi):
    """The log's EL2 invalidations of addresses in [lo, hi), as a reviewer reads them (at most 6)."""
    evs = [ev for ev in log if ev[0] in ("tlbi_el2", "tlbi_el2_last") and lo <= ev[1] < hi]
    if not evs:
        n = sum(ev[0] in ("tlbi_el2", "tlbi_el2_last") for ev in log)
        return f"no EL2 invalidation in it ({n} elsewhere)"
    text = ", ".join(f"{ev[0]} {ev[1]:#x} level {ev[2] if ev[2] in (0, 1, 2, 3) else 'none'}"
                     for ev in evs[:6])
    return text + (f" and {len(evs) - 6} more" if len(evs) > 6 else "")
