"""Comparing two states' translations: the plain statement per page, and its interval form.

Models: per-page translation equality between a pre- and a post-state. The plain statement comes
first: ``same_page`` says when one page translates the same in both states, ``differing_pages``
walks a range page by page with the hardware walk (``ptspec.spec.arch.walk.translate``). A reviewer
reads those two functions; everything after them computes the same answer faster.

Two pages translate the same when both are valid with the same leaf level and descriptor (same level
and descriptor imply the same block, hence the same output address), or both invalid with the same
descriptor (the level of an invalid slot does not change what the hardware or an owner lookup sees).
A state without a root translates every address as "no root" (invalid, descriptor 0).

Speed (the optimised form, held equal to the plain one by tests/test_spec_plain.py): the same
comparison computed on the walk's intervals (ptspec.spec.arch.walk) so that the cost is linear in
the number of leaves, not of pages: the segments where the translation differs (``diff``,
``diff_outside``: ptspec.spec.stage2.treediff), and an aligned sweep of both states over a range
(``sweep``). diff descends both
trees together and skips identical table pages at C speed (and all of them when the post-state
shares every reached page with the pre-state: load_state's ``prev``); differing level-3 tables are
kept as compact L3Chunks, and a whole level-3 table against the one slot it replaced (or that
replaced it) as a FlatL3, until someone needs segments. ptspec.spec.stage2.ranges lets a contract
settle level-3 tables by comparing lists and sweep only the rest.
"""

from bisect import bisect_left
from itertools import compress, repeat
from operator import add, and_, ne, or_

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch.walk import START, END, LEVEL, DESC, OPAQUE, translate
from ptspec.spec.stage2.ranges import complement, covers, level3_parts, level3_tables, union  # noqa: F401 (their old home)



# -- the plain statement: page by page ---------------------------------------------------------

def page_translation(state, ipa):
    """(valid, level, desc) of one page as the hardware walk sees it; "no root" is (False, None, 0).

    The level of an invalid page is kept only to tell the caller where it sits; same_page ignores it.
    """
    t = translate(state, ipa)
    if t.kind == "fault":
        return (False, None, 0)
    return (t.valid, t.level, t.desc)


def same_page(a, b):
    """True when two page_translation() results are the same translation (see the module docstring)."""
    if a[0] != b[0]:
        return False
    if a[0]:
        return a[1] == b[1] and a[2] == b[2]
    return a[2] == b[2]


def differing_pages(pre, post, lo, hi):
    """The page addresses of [lo, hi) whose translation differs between pre and post, in order.

    The plain statement diff() computes over intervals: one hardware walk per page and state.
    """
    step = 1 << pre.page_shift
    start = lo - lo % step
    return [ipa for ipa in range(start, hi, step)
            if not same_page(page_translation(pre, ipa), page_translation(post, ipa))]


# -- the same comparison over intervals (optimised) ---------------------------------------------

def no_root_interval(state):
    """The pseudo-interval standing for 'no root': the whole input range, invalid, descriptor 0."""
    return (0, 1 << state.ia_bits, None, 0, None, None, False)


def intervals(state):
    ivs = state.walk().intervals
    return ivs if state.roots else [no_root_interval(state)]


# bits[1:0] of a valid leaf by level (D.is_valid_leaf): a block 0b01 above level 3, a page 0b11 at it
_LEAF_TYPE = (D.VALID, D.VALID, D.VALID, D.TABLE_OR_PAGE)
_PAGE_TYPE = D.TABLE_OR_PAGE


def is_valid(iv):
    """True for an interval that is one valid leaf (block or page): D.is_valid_leaf of its
    descriptor at its level, written out (the checkers call it once per changed leaf)."""
    level = iv[LEVEL]
    return level is not None and not iv[OPAQUE] and iv[DESC] & D.TYPE_BITS == _LEAF_TYPE[level]


def is_counted_leaf(iv):
    """True for one leaf slot holding a non-zero descriptor (valid leaf or owner annotation)."""
    return iv[LEVEL] is not None and not iv[OPAQUE] and iv[DESC] != 0


def same_translation(p, q):
    """True when every page of the overlap of p and q translates the same in both."""
    pv, qv = is_valid(p), is_valid(q)
    if pv != qv:
        return False
    if pv:
        return p[LEVEL] == q[LEVEL] and p[DESC] == q[DESC]
    if p[OPAQUE] or q[OPAQUE]:
        return p[OPAQUE] == q[OPAQUE] and p[DESC] == q[DESC] and p[LEVEL] == q[LEVEL]
    return p[DESC] == q[DESC]


def against_one(ps, qs):
    """[seg for seg in merge_segments(ps, qs) if not same_translation(seg[2], seg[3])] when one
    side is a single interval covering the other side's intervals (a slot against the leaves of a table
    that replaced it, or the reverse): the other side's intervals, less those translating as it
    does."""
    if len(ps) == 1:
        one, many, first = ps[0], qs, True
    else:
        one, many, first = qs[0], ps, False
    lo, hi = one[START], one[END]
    if not many or many[0][START] < lo or many[-1][END] > hi:
        return [seg for seg in merge_segments(ps, qs) if not same_translation(seg[2], seg[3])]
    level, desc, opaque = one[LEVEL], one[DESC], one[OPAQUE]
    if is_valid(one):
        def same(iv):
            return iv[LEVEL] == level and iv[DESC] == desc and is_valid(iv)
    elif opaque:
        def same(iv):
            return iv[OPAQUE] and iv[DESC] == desc and iv[LEVEL] == level and not is_valid(iv)
    else:
        def same(iv):
            return iv[DESC] == desc and not iv[OPAQUE] and not is_valid(iv)
    if first:
        return [(iv[START], iv[END], one, iv) for iv in many if not same(iv)]
    return [(iv[START], iv[END], iv, one) for iv in many if not same(iv)]


def merge_segments(ps, qs):
    """Aligned segments of two interval lists that partition the same set of addresses."""
    out = []
    i = j = 0
    while i < len(ps) and j < len(qs):
        p, q = ps[i], qs[j]
        s = p[START] if p[START] > q[START] else q[START]
        pe, qe = p[END], q[END]
        e = pe if pe < qe else qe
        if s < e:
            out.append((s, e, p, q))
        if pe <= qe:
            i += 1
        if qe <= pe:
            j += 1
    return out


class L3Chunk:
    """Differing slots of one pair of level-3 tables (pre pa a, post pa b at the same place).

    At level 3 a different descriptor always means a different translation, so the diff keeps
    these compact; expand() gives the segments, check_bbm reads them whole.
    """
    __slots__ = ("a", "b", "base", "g", "idx", "A", "B")

    def __init__(self, a, b, base, g, idx, A, B):
        self.a, self.b, self.base, self.g, self.idx, self.A, self.B = a, b, base, g, idx, A, B

    def page(self, i):
        """The post-state's leaf interval of slot i."""
        s = self.base + i * self.g
        return (s, s + self.g, 3, self.B[i], self.b, i, False)

    def old_page(self, i):
        """The pre-state's leaf interval of slot i."""
        s = self.base + i * self.g
        return (s, s + self.g, 3, self.A[i], self.a, i, False)

    def slots_within(self, lo, hi):
        """The chunk's differing slots that overlap [lo, hi), in order."""
        r = _slots_within(self.base, self.g, len(self.B), lo, hi)
        idx = self.idx
        return idx[bisect_left(idx, r.start):bisect_left(idx, r.stop)]

    def expand(self):
        a, b, base, g, A, B = self.a, self.b, self.base, self.g, self.A, self.B
        out = []
        for i in self.idx:
            s = base + i * g
            out.append((s, s + g, (s, s + g, 3, A[i], a, i, False), (s, s + g, 3, B[i], b, i, False)))
        return out


class FlatL3:
    """A whole level-3 table on one side of a changed slot whose other side is one interval `one`
    (the zero run, block, annotation or unfollowable table the table replaced, or that replaced
    it): its segments (expand) are the table's leaves that do not translate as `one` does, each
    paired with `one`. The diff keeps it compact; check_bbm, CacheJudge and C-CMO read the common
    case (new_pages) from the descriptor list B without building intervals."""
    __slots__ = ("one", "one_is_pre", "walk", "pa", "base", "g", "B", "_valid", "_runs")

    def __init__(self, one, one_is_pre, walk, pa):
        self.one, self.one_is_pre, self.walk, self.pa = one, one_is_pre, walk, pa
        self.base = walk.tables[pa][1]
        self.g = 1 << walk.state.page_shift
        self.B = walk.state.pages[pa]
        self._valid = self._runs = None     # _valid_pages(), valid_runs(): asked by every checker

    def expand(self):
        leaves = []
        self.walk._leaves_of(self.pa, self.base, self.base + self.g * len(self.B), leaves)
        return (against_one([self.one], leaves) if self.one_is_pre
                else against_one(leaves, [self.one]))

    def new_pages(self):
        """When `one` is the pre-state's and not valid (the table is new where nothing was mapped):
        the slots i of the table's valid pages, each one segment of expand(), (s, s + g, one, the
        page's leaf interval (s, s + g, 3, B[i], pa, i, False)) with s = base + i * g; every other
        segment pairs two invalid translations. Else None."""
        return self._valid_pages() if self.one_is_pre and not is_valid(self.one) else None

    def old_pages(self):
        """The same when `one` is the post-state's and not valid (the table was removed and nothing
        valid replaced it): segments (s, s + g, the page's leaf interval, one). Else None."""
        return self._valid_pages() if not self.one_is_pre and not is_valid(self.one) else None

    def _valid_pages(self):
        """The slots of the table's valid pages, ascending (computed once: the diff is cached, and
        S2-BBM, C-CMO and the CMO ghost read the same FlatL3)."""
        if self._valid is None:
            B, nz = self.B, self.walk.nonzero(self.pa)
            first = B[nz[0]] if nz else 0
            if len(nz) == len(B) and first & D.TYPE_BITS != D.TABLE_OR_PAGE and B.count(first) == len(B):
                self._valid = []                # one annotation in every slot (a set_owner's table)
                return self._valid
            n = len(nz)
            if n and first & D.TYPE_BITS == D.TABLE_OR_PAGE and nz[-1] - nz[0] == n - 1 and list(
                    B[nz[0]:nz[0] + n]) == list(range(first, first + n * self.g, self.g)):
                self._valid = list(nz)          # neighbouring pages stepping by one page (a map's):
                return self._valid              # all valid, as they share their low bits
            self._valid = list(compress(nz, map(_PAGE_TYPE.__eq__, map(and_, map(B.__getitem__, nz),
                                                                       repeat(D.TYPE_BITS)))))
        return self._valid

    def page(self, i):
        """The leaf interval of valid page i (new_pages, old_pages)."""
        s = self.base + i * self.g
        return (s, s + self.g, 3, self.B[i], self.pa, i, False)

    def leaf(self, i):
        """The table's leaf interval holding slot i (as the walk builds it: a non-zero slot alone,
        a zero slot in the run of zero slots around it)."""
        d, g, base = self.B[i], self.g, self.base
        if d:
            return (base + i * g, base + (i + 1) * g, 3, d, self.pa, i, False)
        nz = self.walk.nonzero(self.pa)
        k = bisect_left(nz, i)
        first = nz[k - 1] + 1 if k else 0
        end = nz[k] if k < len(nz) else len(self.B)
        return (base + first * g, base + end * g, 3, 0, self.pa, first, False)

    def valid_runs(self):
        """page_runs of the table's valid pages (each run a range of slots), computed once."""
        if self._runs is None:
            self._runs = page_runs(self._valid_pages(), self.B, self.g, self.walk.state.page_shift)
        return self._runs

    def page_runs(self, pages):
        """page_runs_plain of `pages` in this table (the plain form of valid_runs)."""
        return page_runs_plain(pages, self.B, self.g, self.walk.state.page_shift)

    def slots_within(self, lo, hi):
        """range of the table's slots that overlap [lo, hi)."""
        return _slots_within(self.base, self.g, len(self.B), lo, hi)


def _slots_within(base, g, n, lo, hi):
    return range(max(0, (lo - base) // g), min(n, max(0, -(-(hi - base) // g))))


def page_runs_plain(slots, B, g, page_shift):
    """`slots` (ascending) of descriptor list B cut into runs [slots] of neighbouring slots whose
    descriptors step by one page (g): one output range and the same attribute bits for the whole
    run."""
    keep = ~D.encode_address(-1, page_shift)      # bits outside the address
    out = []
    for i in slots:
        if out and out[-1][-1] == i - 1 and B[i] == B[i - 1] + g and not (B[i] ^ B[out[-1][0]]) & keep:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def clip_runs(runs, within):
    """The parts of `runs` (ranges of slots, ascending) inside the range `within`."""
    lo, hi = within.start, within.stop
    out = []
    for r in runs:
        if r.stop <= lo or r.start >= hi:
            continue
        out.append(r if lo <= r.start and r.stop <= hi else range(max(lo, r.start), min(hi, r.stop)))
    return out


def page_runs(slots, B, g, page_shift):
    """page_runs_plain, each run as a range of slots, computed at C speed: the slots are cut where
    a slot does not follow its neighbour or a descriptor does not step by one page from its
    neighbour's; a piece whose first and last descriptors differ outside the address field (a
    carry out of it: the bits above it only grow along the piece) is cut by page_runs_plain."""
    n = len(slots)
    if not n:
        return []
    keep = ~D.encode_address(-1, page_shift)
    lo = slots[0]
    if slots[-1] - lo == n - 1:             # neighbours: often one run (a list comparison says)
        d = list(B[lo:lo + n])
        if not (d[0] ^ d[-1]) & keep and d == list(range(d[0], d[0] + n * g, g)):
            return [range(lo, lo + n)]
    else:
        d = list(map(B.__getitem__, slots))
    cuts = list(compress(range(1, n), map(or_, map(ne, slots[1:], map(add, slots, repeat(1))),
                                          map(ne, d[1:], map(add, d, repeat(g))))))
    out = []
    for x, y in zip([0, *cuts], [*cuts, n]):
        if (d[x] ^ d[y - 1]) & keep:
            out.extend(range(r[0], r[-1] + 1) for r in page_runs_plain(slots[x:y], B, g, page_shift))
        else:
            out.append(range(slots[x], slots[y - 1] + 1))
    return out


def covering_span(state, lo, hi):
    return state.walk().overlapping(lo, hi) if state.roots else [no_root_interval(state)]


def sweep(pre, post, lo, hi):
    """Segments (start, end, pre_interval, post_interval) covering [lo, hi), both states aligned."""
    if lo >= hi:
        return []
    ps = pre.walk().overlapping(lo, hi) if pre.roots else [no_root_interval(pre)]
    qs = post.walk().overlapping(lo, hi) if post.roots else [no_root_interval(post)]
    segs = merge_segments(ps, qs)
    return [(max(s, lo), min(e, hi), p, q) for s, e, p, q in segs if s < hi and e > lo]


def covering(state, lo, hi):
    """Intervals of one state overlapping [lo, hi)."""
    if not state.roots:
        return [no_root_interval(state)] if lo < hi else []
    return state.walk().overlapping(lo, hi)
