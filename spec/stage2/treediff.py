"""Where two states' translations differ: the tree diff of a step, in interval and compact form.

Models: the segments (start, end, pre_interval, post_interval) of the input space where a pre- and
a post-state translate differently, as segments.differing_pages states it page by page (the plain
statement; tests/test_spec_plain.py holds them equal). ``diff`` descends both trees together and
skips identical table pages at C speed (all of them when the post-state shares every reached page
with the pre-state, as load_state's ``prev`` makes it); a differing level-3 table is kept as an
L3Chunk, and a whole level-3 table against the one slot it replaced (or that replaced it) as a
FlatL3 (ptspec.spec.stage2.segments), until a reader needs segments: ``diff_chunks`` is the
compact form, ``diff_within`` / ``diff_outside`` the parts inside and outside a range. The diff
of a pair of states is computed once and cached on the post-state.

Leaves out: what a difference means for an operation (the contracts and S2-BBM judge it).
"""

from bisect import bisect_left
from itertools import compress
from operator import ne

from ptspec.spec.arch.descriptor import TABLE_OR_PAGE, TYPE_BITS, address
from ptspec.spec.arch.geometry import granule_shift, table_span
from ptspec.spec.stage2.segments import (FlatL3, L3Chunk, against_one, covering_span,
                                         intervals, merge_segments, same_translation)


def diff_chunks(pre, post):
    """diff() in compact form: segments, L3Chunks and FlatL3s, in input-address order (cached)."""
    cached = post._diff
    if cached is not None and cached[0] is pre:
        return cached[1]
    # post's walk shares every reached page with pre's (load_state's prev): nothing differs
    pw = post.walk()
    out = [] if pw.same_as is not None and pw.same_as is pre._walk else _diff(pre, post, None)
    post._diff = (pre, out)     # on the state, not its walk: the diff's FlatL3s hold walks
    return out


def diff(pre, post):
    """Segments (start, end, pre_interval, post_interval) where the translation differs, in order.

    The pages these segments cover are exactly differing_pages(pre, post, 0, 2**ia_bits), the plain
    statement; this is the fast form.

    When both states have roots and the same geometry, the two trees are compared table by table:
    identical pages are skipped at C speed (only their table descriptors are followed), and only
    slots that differ are expanded into leaves. Otherwise every interval of both states is compared.
    """
    return _expand_chunks(diff_chunks(pre, post), None)


def diff_within(pre, post, lo, hi, compact=False):
    """The segments of diff(pre, post) that overlap [lo, hi), clipped to it, in order: the pages of
    [lo, hi) whose translation differs, with the cost of what changed there (the diff is cached on
    the post-state's walk), not of the range's size. `compact`: an L3Chunk or FlatL3 that
    overlaps [lo, hi) is kept whole (not clipped: the caller reads its slots_within(lo, hi))."""
    out = []
    for item in diff_chunks(pre, post):
        if type(item) is not tuple:
            end = item.base + item.g * len(item.B)
            if item.base >= hi or end <= lo:
                continue
            if compact:
                out.append(item)
                continue
            segs = item.expand()
        else:
            segs = (item,)
        for s, e, p, q in segs:
            if s < hi and e > lo:
                out.append((s if s > lo else lo, e if e < hi else hi, p, q))
    return out


def _expand_chunks(chunks, skip):
    out = []
    for item in chunks:
        if type(item) is not tuple:
            if skip and skip[0] <= item.base and item.base + item.g * len(item.B) <= skip[1]:
                continue
            if skip and type(item) is L3Chunk:
                # only its slots not wholly inside `skip` (the others give nothing outside it)
                idx, base, g = item.idx, item.base, item.g
                first, last = -(-(skip[0] - base) // g), (skip[1] - base) // g
                if first < last:
                    out_idx = idx[:bisect_left(idx, first)] + idx[bisect_left(idx, last):]
                    item = L3Chunk(item.a, item.b, base, g, out_idx, item.A, item.B)
            out.extend(item.expand())
        else:
            out.append(item)
    return out


def diff_outside(pre, post, lo, hi):
    """The parts of diff(pre, post) that lie outside [lo, hi) (slots inside it are not compared)."""
    cached = post._diff
    chunks = cached[1] if cached is not None and cached[0] is pre else _diff(pre, post, (lo, hi))
    out = []
    for s, e, p, q in _expand_chunks(chunks, (lo, hi)):
        if s < lo:
            out.append((s, min(e, lo), p, q))
        if e > hi:
            out.append((max(s, hi), e, p, q))
    return out


def _diff(pre, post, skip):
    if pre.roots and post.roots and (pre.page_shift, pre.ia_bits, pre.start_level) == (
            post.page_shift, post.ia_bits, post.start_level):
        return _TreeDiff(pre, post, skip).run()
    return _flat_diff(pre, post)


def _flat_diff(pre, post):
    p_all, q_all = intervals(pre), intervals(post)
    if p_all == q_all:
        return []
    p_set, q_set = set(p_all), set(q_all)
    ps = sorted(p_set.difference(q_set))
    qs = sorted(q_set.difference(p_set))
    return [seg for seg in merge_segments(ps, qs) if not same_translation(seg[2], seg[3])]


class _TreeDiff:
    """Parallel descent of two trees with the same geometry; slots inside `skip` are not compared."""

    def __init__(self, pre, post, skip=None):
        self.pre, self.post = pre, post
        self.pw, self.qw = pre.walk(), post.walk()
        self.skip = skip
        self.out = []

    def run(self):
        pre, post = self.pre, self.post
        span = table_span(pre.start_level, pre.page_shift)
        limit = 1 << pre.ia_bits
        for k in range(max(len(pre.roots), len(post.roots))):
            lo, hi = k * span, min((k + 1) * span, limit)
            if self.skip and self.skip[0] <= lo and hi <= self.skip[1]:
                continue
            a = pre.roots[k] if k < len(pre.roots) else None
            b = post.roots[k] if k < len(post.roots) else None
            if (a is not None and b is not None and a in self.pw.tables and b in self.qw.tables
                    and self.pw.tables[a][1] == k * span and self.qw.tables[b][1] == k * span
                    and self.pw.tables[a][3] is None and self.qw.tables[b][3] is None):
                self._table(a, b)
            elif lo < hi:
                self._expand(covering_span(pre, lo, hi), covering_span(post, lo, hi))
        return self.out

    def _expand(self, ps, qs):
        if len(ps) == 1 or len(qs) == 1:
            self.out += against_one(ps, qs)
            return
        for seg in merge_segments(ps, qs):
            if not same_translation(seg[2], seg[3]):
                self.out.append(seg)

    def _expand_slot(self, a, b, i):
        """Slot i of tables a (pre) and b (post), where at most one side is a followed table: the
        other side is one interval, and every whole level-3 table below the followed side becomes
        a FlatL3 (the rest of its leaves are compared against that one interval as _expand does)."""
        ps, qs = self.pw.slot(a, i, True), self.qw.slot(b, i, True)
        one_is_pre = len(ps) == 1 and type(ps[0]) is tuple
        one, many, walk = (ps[0], qs, self.qw) if one_is_pre else (qs[0], ps, self.pw)
        run = []
        for iv in many:
            if type(iv) is tuple:
                run.append(iv)
                continue
            if run:
                self.out += against_one([one], run) if one_is_pre else against_one(run, [one])
                run = []
            self.out.append(FlatL3(one, one_is_pre, walk, iv))
        if run:
            self.out += against_one([one], run) if one_is_pre else against_one(run, [one])

    def _table(self, a, b):
        pw, qw = self.pw, self.qw
        A, B = self.pre.pages[a], self.post.pages[b]
        level, base, used, _, _ = pw.tables[a]
        if A is B or A == B:
            if level == 3:
                return
            todo = [i for i in pw.nonzero(a) if i < used and A[i] & TYPE_BITS == TABLE_OR_PAGE]
        else:
            todo = list(compress(range(used), map(ne, A, B)))
            if level < 3:
                todo = sorted(set(todo).union(i for i in pw.nonzero(a)
                                              if i < used and A[i] & TYPE_BITS == TABLE_OR_PAGE))
        g = 1 << granule_shift(level, self.pre.page_shift)
        if self.skip:
            first = -(-(self.skip[0] - base) // g)
            last = (self.skip[1] - base) // g
            if first < last:
                todo = [i for i in todo if not first <= i < last]
        if level == 3:
            if todo:
                self.out.append(L3Chunk(a, b, base, g, todo, A, B))
            return
        for i in todo:
            da, db = A[i], B[i]
            if (da & TYPE_BITS == TABLE_OR_PAGE and db & TYPE_BITS == TABLE_OR_PAGE and not pw.is_opaque(a, i) and not qw.is_opaque(b, i)):
                self._table(address(da, self.pre.page_shift), address(db, self.post.page_shift))
            elif da != db or pw.is_opaque(a, i) != qw.is_opaque(b, i):
                self._expand_slot(a, b, i)
