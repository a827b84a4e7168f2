"""Property tests of spec's own machinery: the table-by-table diff agrees with the flat comparison,
range-restricted leaf queries agree with the full list, and translate() agrees with the leaves."""

from hypothesis import given, settings, strategies as st

from ptspec import spec
from ptspec.spec.stage2 import segments, treediff
from ptspec.spec.stage2.treediff import _expand_chunks, _flat_diff, _TreeDiff, diff_outside
from test_spec_builder import S2

GEOS = [(12, 32), (12, 40), (14, 36), (16, 42)]


def _g(level, ps):
    return 1 << ((ps - 3) * (4 - level) + 3)


ops = st.lists(st.tuples(st.sampled_from(["page", "block", "owner", "zero", "drop"]),
                         st.integers(0, 63), st.integers(0, 7), st.booleans()), max_size=12)


def build(base, geo, seq):
    ps, ia = geo
    b = base.copy() if base is not None else S2(ps=ps, ia=ia)
    page, blk = 1 << ps, _g(2, ps)
    for op, slot, k, flag in seq:
        ipa = (slot % 4) * blk + (slot // 4) * page
        if op == "page":
            b.page(ipa, 0x8000_0000 + k * page, w=flag)
        elif op == "block":
            b.block((slot % 4) * blk, 2, (k + 1) * blk, x=flag)
        elif op == "owner":
            b.owner(ipa, 3 if flag else 2, 1)
        elif op == "zero":
            b.set(ipa, 3 if flag else 2, 0)
        elif op == "drop":
            d = b.get((slot % 4) * blk, 2) if b.slot((slot % 4) * blk, 2, create=False) else 0
            if d & 3 == 3:
                b.drop_table((slot % 4) * blk, 2)
    return b


def coverage(segs):
    return segments.union([s, e] for s, e, _, _ in segs)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(GEOS), ops, ops, st.integers(0, 1 << 24), st.integers(0, 1 << 23))
def test_tree_diff_matches_flat_diff(geo, first, second, lo, size):
    pre_b = build(None, geo, first)
    post_b = build(pre_b, geo, second)
    pre, post = spec.load_state(pre_b.raw()), spec.load_state(post_b.raw())
    tree = _expand_chunks(_TreeDiff(pre, post).run(), None)
    flat = _flat_diff(pre, post)
    assert coverage(tree) == coverage(flat)
    for s, e, p, q in tree:
        assert not segments.same_translation(p, q)
    # the restricted diff (computed afresh, then from the cache) equals the full one cut at [lo, hi)
    hi = lo + size
    want = segments.union([x, y] for s, e, _, _ in flat for x, y in ((s, min(e, lo)), (max(s, hi), e)) if x < y)
    pre2, post2 = spec.load_state(pre_b.raw()), spec.load_state(post_b.raw())
    assert coverage(diff_outside(pre2, post2, lo, hi)) == want
    treediff.diff(pre2, post2)
    assert coverage(diff_outside(pre2, post2, lo, hi)) == want


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(GEOS), ops, st.integers(0, 1 << 26), st.integers(1, 1 << 24))
def test_overlapping_and_translate_agree_with_leaves(geo, seq, lo, size):
    state = spec.load_state(build(None, geo, seq).raw())
    walk = state.walk()
    full = walk.intervals
    assert full[0][0] == 0 and full[-1][1] == 1 << state.ia_bits
    assert all(a[1] == b[0] for a, b in zip(full, full[1:]))
    hi = min(lo + size, 1 << state.ia_bits)
    got = walk.overlapping(lo, hi)
    want = [iv for iv in full if iv[0] < hi and iv[1] > lo]
    # same descriptors in the same order; zero runs may be cut at the query's slots
    assert [(iv[2], iv[3]) for iv in got if iv[3]] == [(iv[2], iv[3]) for iv in want if iv[3]]
    assert got[0][0] <= lo and got[-1][1] >= hi
    for ipa in (lo, hi - 1, (lo + hi) // 2):
        t = spec.translate(state, ipa)
        iv = walk.find(ipa)
        assert t.desc == iv[3] and t.level == iv[2]
        assert t.valid == segments.is_valid(iv)
    assert spec.check_state(state) == []
