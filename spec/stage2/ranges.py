"""Sorted address ranges and the level-3 tables under a range: what the contracts and C-CMO
settle at C speed before they sweep leaf by leaf.

Models: nothing of the kernel; bookkeeping over [lo, hi) ranges of input or output addresses:
merging (union), coverage (covers), what is left (complement), and the reached level-3 tables
that lie in a range, whole (level3_tables) or cut to it (level3_parts).
"""

from bisect import bisect_right
from itertools import compress
from operator import add, ne

from ptspec.spec.arch.geometry import table_span


def union(ranges):
    """Sorted, merged list of [lo, hi) ranges."""
    out = []
    for lo, hi in sorted(ranges):
        if hi <= lo:
            continue
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return out


def union_sized(starts, sizes):
    """union(zip(starts, starts + sizes)): the merged ranges given by first addresses and sizes
    (sizes >= 0), e.g. a log's cache-maintenance events. Ranges that continue each other in the
    given order tile one range (a log that cleans page after page is one), so they are joined first
    at C speed and union() merges the few that are left."""
    ends = list(map(add, starts, sizes))
    n = len(starts)
    if n < 2:
        return union(zip(starts, ends))
    if starts[1:] == ends[:-1]:                 # one run (a list comparison says)
        return union([(starts[0], ends[-1])])
    cuts = list(compress(range(1, n), map(ne, starts[1:], ends[:-1])))     # k: starts[k] != ends[k - 1]
    firsts = [0, *cuts]
    lasts = [k - 1 for k in cuts]
    lasts.append(n - 1)
    return union(zip(map(starts.__getitem__, firsts), map(ends.__getitem__, lasts)))


def covers(merged, lo, hi, starts=None):
    """True when the merged ranges (from union()) contain all of [lo, hi); ``starts``, the
    ranges' first addresses in order, saves building them again on every call."""
    k = bisect_right([r[0] for r in merged] if starts is None else starts, lo) - 1
    return k >= 0 and merged[k][0] <= lo and merged[k][1] >= hi


def level3_tables(state, lo, hi):
    """(base, pa) of the reached level-3 tables whose whole range lies inside [lo, hi), by base."""
    if not state.roots:
        return []
    span = table_span(3, state.page_shift)
    return sorted((base, pa) for pa, (level, base, _, _, _) in state.walk().tables.items()
                  if level == 3 and lo <= base and base + span <= hi)


def level3_parts(state, lo, hi):
    """(start, end, pa, first slot) of the parts of the reached level-3 tables that lie inside
    [lo, hi) (whole tables or their ends), by start: level3_tables, cut to the range."""
    if not state.roots:
        return []
    span = table_span(3, state.page_shift)
    g = 1 << state.page_shift
    out = []
    for pa, (level, base, _, _, _) in state.walk().tables.items():
        if level == 3 and base < hi and base + span > lo:
            x, y = max(lo, base), min(hi, base + span)
            out.append((x, y, pa, (x - base) // g))
    return sorted(out)


def complement(done, lo, hi):
    """The parts of [lo, hi) not covered by the sorted, disjoint ranges in `done`."""
    out = []
    for s, e in done:
        if s > lo:
            out.append((lo, s))
        lo = max(lo, e)
    if lo < hi:
        out.append((lo, hi))
    return out
