"""The changed ranges of a step cut into runs that owe the same cache maintenance: the reading of
the tree diff that CacheJudge (ptspec.spec.stage2.cache, CMO-POC and CMO-POU) judges.

Models: for every input range whose translation a step changed, which of the D-cache clean to the
point of coherency (CMO-POC) and the I-cache invalidation to the point of unification (CMO-POU)
the post-op leaf is owed (``needs``); neighbouring segments whose pre- and post-op outputs both
continue and whose needs are equal form one run (``continues``); level-3 tables are read a run of
slots at a time (``one_piece``), not a page at a time. ``changed_runs`` gives the runs of one
step; the page-by-page reading is cache.PlainCacheJudge, and tests/test_spec_shortcuts.py holds
the two equal.

Leaves out: what the runs owe across steps (the ghost, ptspec.spec.arch.cache) and the judgement
itself (cache.CacheJudge).
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.arch.walk import START, LEVEL, DESC
from ptspec.spec.stage2.segments import FlatL3, L3Chunk, is_valid


def needs(pd, qd, poa, qoa, qv, cache_attr, xn_mask=D.XN):
    """(CMO-POC, CMO-POU) judgement needed for a post leaf qd (if valid, qv) at output qoa over a
    pre leaf pd at output poa (None: not valid): poc when the post leaf is cacheable and not the
    same output as a cacheable pre leaf; pou when it is executable cacheable and not the same
    output as an executable cacheable pre leaf. Executable: the bits of ``xn_mask``
    (D.xn_exec_mask) are not XN alone (D.is_executable)."""
    if not qv:
        return False, False
    q_cache = qd & D.MEMATTR_MASK == cache_attr
    if poa is not None and poa == qoa:
        p_cache = pd & D.MEMATTR_MASK == cache_attr
        return (q_cache and not p_cache,
                q_cache and qd & xn_mask != D.XN and not (p_cache and pd & xn_mask != D.XN))
    return q_cache, q_cache and qd & xn_mask != D.XN


def continues(last, s, poa, qoa, poc, pou):
    """Whether a segment at s with these outputs and needs continues the run ``last``
    ([start, end, p, q, pre output, post output, poc, pou]): adjacent, the same needs, and each
    output continuing the run's (or absent on both)."""
    ls, le, _, _, lpoa, lqoa, lpoc, lpou = last
    return (le == s and lpoc == poc and lpou == pou
            and (poa is None if lpoa is None else poa == lpoa + (s - ls))
            and (qoa is None if lqoa is None else qoa == lqoa + (s - ls)))


def one_piece(slots, A, B, g, page_shift):
    """Whether `slots` (ascending slots of a level-3 table, descriptors A before and B after) are
    neighbours whose descriptors on each side are all one invalid value, or valid pages stepping
    by one page (g) with the same bits outside the address field (no carry out of it: the bits
    above it only grow along the list): then every slot has the first one's validity on each side,
    outputs continuing the first one's, the same attributes, hence the same needs. Read at C
    speed (list comparisons)."""
    n = len(slots)
    lo = slots[0]
    if slots[-1] - lo != n - 1:
        return False
    keep = ~D.encode_address(-1, page_shift)
    for X in (A, B):
        d = list(X[lo:lo + n])
        first = d[0]
        if first & D.TYPE_BITS == D.TABLE_OR_PAGE:
            if (first ^ d[-1]) & keep or d != list(range(first, first + n * g, g)):
                return False
        elif d.count(first) != n:
            return False
    return True


def changed_runs(chunks, page_shift, fwb, xnx=False):
    """The changed segments of diff_chunks(pre, post), each as (segment, pre output or None, post
    output or None, needs a CMO-POC judgement, needs a CMO-POU judgement); consecutive segments of
    one kind whose outputs continue each other are merged into one (a map of 512 pages is one
    run); the segment kept is (start, end, first pre interval, first post interval). Level-3
    chunks are read from their descriptor lists without building intervals: neighbouring slots
    that one_piece finds alike at once, others slot by slot; a table against a valid block a
    run of valid pages (FlatL3.valid_runs) or a stretch of invalid slots at a time.

    Per segment (D.address, D.is_cacheable, D.is_executable written out with this state's page
    size, FWB and FEAT_XNX setting): poc when the post leaf is cacheable and not the same output as a
    cacheable pre leaf; pou when the post leaf is executable cacheable and not the same output as
    an executable cacheable pre leaf."""
    out = []
    last = None
    address = D.address
    cache_attr = D.MEMATTR_NORMAL[fwb] << D.MEMATTR_SHIFT
    xn_mask = D.xn_exec_mask(xnx)

    def add(s, e, p, q, poa, qoa, poc, pou):
        """Extend the current run by [s, e), or close it and start a new one there."""
        nonlocal last
        if last is not None:
            if continues(last, s, poa, qoa, poc, pou):
                last[1] = e
                return
            ls, le, lp, lq, lpoa, lqoa, lpoc, lpou = last
            out.append(((ls, le, lp, lq), lpoa, lqoa, lpoc, lpou))
        last = [s, e, p, q, poa, qoa, poc, pou]

    def item(s, e, p, q, pd, qd, pv, qv):
        poa = address(pd, page_shift) + (s - p[START]) if pv else None
        qoa = address(qd, page_shift) + (s - q[START]) if qv else None
        add(s, e, p, q, poa, qoa, *needs(pd, qd, poa, qoa, qv, cache_attr, xn_mask))

    def pages(s, e, a, b, pv, qv, p, q):
        """Level-3 slots [s, e) whose outputs continue the first one's (a, b its descriptors), all
        with its needs (one_piece): a piece that continues the run extends it without building its
        intervals (p, q: callables making them)."""
        poa = address(a, page_shift) if pv else None
        qoa = address(b, page_shift) if qv else None
        poc, pou = needs(a, b, poa, qoa, qv, cache_attr, xn_mask)
        if last is not None and continues(last, s, poa, qoa, poc, pou):
            last[1] = e
        else:
            add(s, e, p(), q(), poa, qoa, poc, pou)

    for chunk in chunks:
        if type(chunk) is L3Chunk:
            A, B, base, g = chunk.A, chunk.B, chunk.base, chunk.g
            slots = [i for i in chunk.idx if A[i] & 3 == 3 or B[i] & 3 == 3]
            n = len(slots)
            for x, y in ((0, n),) if n > 1 and one_piece(slots, A, B, g, page_shift) else \
                    zip(range(n), range(1, n + 1)):
                i = slots[x]
                a, b, s = A[i], B[i], base + i * g
                pages(s, s + (y - x) * g, a, b, a & 3 == 3, b & 3 == 3, lambda: chunk.old_page(i),
                      lambda: chunk.page(i))
        elif type(chunk) is FlatL3:
            new = chunk.new_pages() is not None
            if not new and chunk.old_pages() is None:
                one, B, base, g = chunk.one, chunk.B, chunk.base, chunk.g
                if not is_valid(one) or one[LEVEL] == G.LAST_LEVEL:
                    for s, e, p, q in chunk.expand():
                        pv, qv = is_valid(p), is_valid(q)
                        if pv or qv:
                            item(s, e, p, q, p[DESC], q[DESC], pv, qv)
                    continue
                # a valid block against the table that replaced it (or that it replaced): every
                # leaf of the table differs from it, and the block's pages continue each other; the
                # table's slots are taken a piece at a time: each run of its valid pages
                # (FlatL3.valid_runs) and each stretch of invalid slots between them
                pieces, pos = [], 0
                for run in chunk.valid_runs():
                    if run.start > pos:
                        pieces.append((pos, run.start))
                    pieces.append((run.start, run.stop))
                    pos = run.stop
                if pos < len(B):
                    pieces.append((pos, len(B)))
                for x, y in pieces:
                    s, e, leaf, b = base + x * g, base + y * g, chunk.leaf(x), B[x]
                    if chunk.one_is_pre:
                        item(s, e, one, leaf, one[DESC], b, True, b & 3 == 3)
                    else:
                        item(s, e, leaf, one, b, one[DESC], b & 3 == 3, True)
                continue
            # a new table's valid pages where nothing was mapped, or a removed table's with nothing
            # valid after them (the rest is invalid on both sides: no run), taken a run of
            # neighbouring pages with continuing outputs and the same attributes at a time
            # (FlatL3.valid_runs): every page of it has the needs and output of its first one
            B, base, g = chunk.B, chunk.base, chunk.g
            for run in chunk.valid_runs():
                i = run[0]
                s, e, d = base + i * g, base + (run[-1] + 1) * g, B[i]
                if new:
                    qoa = address(d, page_shift)
                    add(s, e, chunk.one, chunk.page(i), None, qoa,
                        *needs(0, d, None, qoa, True, cache_attr, xn_mask))
                else:
                    add(s, e, chunk.page(i), chunk.one, address(d, page_shift), None, False, False)
        else:
            s, e, p, q = chunk
            pv, qv = is_valid(p), is_valid(q)
            if pv or qv:
                item(s, e, p, q, p[DESC], q[DESC], pv, qv)
    if last is not None:
        ls, le, lp, lq, lpoa, lqoa, lpoc, lpou = last
        out.append(((ls, le, lp, lq), lpoa, lqoa, lpoc, lpou))
    return out
