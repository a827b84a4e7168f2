"""Every optimised evaluator in spec/ equals its plain twin (STYLE.md: the plain statement first).

Each test drives impl (through the stage-2 harness's own calls) over a small window of a real
geometry, takes the raw states before and after every step, and holds the fast form of a statement
equal to the plain form written beside it in spec/:

* treediff.diff / diff_outside (intervals, tree descent, L3 chunks, cache)  == differing_pages
* segments.sweep (aligned intervals of two states)                       == page_translation per page
* bbm.check_bbm (interval diff, level-3 chunk screen)                     == uninvalidated_leaves_plain
* invariants.encoding_violations (non-zero index, level-3 page screen)    == encoding_violations_plain
* invariants.slot_violations (non-zero index, full level-3 tables skipped) == slot_violations_plain
* ownership.s2_own (non-zero index)                                      == own_violations_plain
* contracts settling whole level-3 tables (SETTLE_WHOLE_TABLES)            == the leaf-by-leaf sweep
* contracts_map.expected_zones (nested intervals)                         == expected_level per page
* walk.Walk intervals (zero runs, range queries)                          == translate per page
* state._parse_descriptors / _parse_event (C-speed array path)            == parse_int per element

The hyp, mmu and lguest evaluators are held to their plain twins in tests/test_spec_plain_areas.py.

States are corrupted on purpose (flipped descriptor bits, dropped TLB invalidations) so that the
two forms are compared on failing inputs too, not only on passing ones.
"""

import copy

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ptspec import spec
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2 import bbm, contract_common, invariants, ownership, segments, treediff
from ptspec.spec.stage2.contracts_map import expected_level, expected_zones
from ptspec.spec.stage2.state import StateError, _parse_descriptors, _parse_event, parse_int
from ptspec.proofs.stage2.exhaustive import alphabet
from ptspec.proofs.stage2.harness import Stage2Harness

K4, M2 = G.granule_size(3, 12), G.granule_size(2, 12)
W, P = 0x4000_0000, 0x8000_0000
WINDOW = (W, W + 2 * M2)            # exhaustive.alphabet() keeps every operation inside it
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OPS = st.lists(st.sampled_from(alphabet(W, P)), min_size=1, max_size=8)


def run(ops, page_shift=12, ia_bits=39):
    """[(pre, step, post)] of each step of `ops` on a fresh impl table, as validated spec States.

    The same 4K-aligned operations run on the 16K and 64K granules too (walked page-aligned there)."""
    h = Stage2Harness(page_shift, ia_bits, arena_pages=96, mc_capacity=8, check=False)
    out = []
    pre = h.raw_state()
    for op, args in ops:
        if op == "fail_next_alloc":
            h.fail_allocation(0)
            continue
        args = dict(args)
        ret, result = h._call(op, args)
        if op == "map":
            args["force_pte"] = h.pgt.force_pte(args["addr"], args["size"], args["prot"])
        if op in ("init", "map", "set_owner"):
            h.mc.topup(h.mc.capacity)
        post = h.raw_state()
        out.append((spec.load_state(pre), spec.load_step({"op": op, "args": args, "ret": ret,
                                                          "out": result}),
                    spec.load_state(post)))
        pre = post
    return out


def pages_of(segs, lo, hi, ps):
    out = set()
    for s, e, _, _ in segs:
        for ipa in range(max(s, lo), min(e, hi), 1 << ps):
            out.add(ipa)
    return out


def corrupt(state_raw, picks):
    """Flip bits in non-zero descriptors of the raw state's pages (picks: (page k, slot k, bit))."""
    raw = copy.deepcopy(state_raw)
    pas = sorted(raw["pages"])
    for pk, sk, bit in picks:
        if not pas:
            break
        words = raw["pages"][pas[pk % len(pas)]]
        nz = [i for i, w in enumerate(words) if w] or [0]
        i = nz[sk % len(nz)]
        words[i] ^= 1 << bit
    return raw


def raw_of(state):
    """A raw dict of a State (enough for load_state)."""
    return {"kind": state.kind, "page_shift": state.page_shift, "ia_bits": state.ia_bits,
            "start_level": state.start_level, "pa_bits": state.pa_bits,
            "owner_field": list(state.owner_field), "max_owner_id": state.max_owner_id,
            "has_fwb": state.has_fwb, "cmo": state.cmo, "idmap": state.idmap,
            "roots": list(state.roots), "pages": {pa: list(d) for pa, d in state.pages.items()},
            "refcount": dict(state.refcount), "memcache": list(state.memcache),
            "free_pages": state.free_pages, "pool_errors": list(state.pool_errors),
            "tlb_log": [list(e) for e in state.tlb_log]}


# -- segments: the interval diff against the per-page walk ------------------------------------------

@SETTINGS
@given(OPS, st.sampled_from([12, 14]))
def test_diff_equals_differing_pages(ops, ps):
    for pre, step, post in run(ops, ps, 39 if ps == 12 else 40):
        lo, hi = WINDOW
        segs = treediff.diff(pre, post)
        assert all(lo <= s and e <= hi for s, e, _, _ in segs), "a change outside the window"
        assert pages_of(segs, lo, hi, ps) == set(segments.differing_pages(pre, post, lo, hi))


@SETTINGS
@given(OPS, st.integers(0, 1023), st.integers(0, 1023))
def test_diff_outside_equals_differing_pages(ops, a, b):
    for pre, step, post in run(ops):
        lo, hi = WINDOW
        x, y = sorted((lo + a * K4, lo + b * K4 + K4))
        want = {p for p in segments.differing_pages(pre, post, lo, hi) if not x <= p < y}
        assert pages_of(treediff.diff_outside(pre, post, x, y), lo, hi, 12) == want
        treediff.diff(pre, post)                   # again, from the cached diff
        assert pages_of(treediff.diff_outside(pre, post, x, y), lo, hi, 12) == want


@SETTINGS
@given(OPS, st.integers(0, 1023), st.integers(1, 1024))
def test_sweep_equals_page_translations(ops, a, n):
    """sweep() (the aligned intervals the contracts judge) against each page's hardware walk."""
    for pre, step, post in run(ops):
        x = WINDOW[0] + a * K4
        y = min(x + n * K4, WINDOW[1])
        segs = segments.sweep(pre, post, x, y)
        assert segs[0][0] == x and segs[-1][1] == y
        assert all(s[1] == t[0] for s, t in zip(segs, segs[1:]))
        for s, e, p, q in segs:
            for ipa in range(s, e, K4):
                for iv, state in ((p, pre), (q, post)):
                    t = segments.page_translation(state, ipa)
                    assert (segments.is_valid(iv), iv[3]) == (t[0], t[2]), hex(ipa)


# -- S2-BBM: the interval form against the per-page statement ----------------------------------------

@SETTINGS
@given(OPS, st.lists(st.booleans(), min_size=8, max_size=8))
def test_bbm_equals_plain(ops, keep):
    for pre, step, post in run(ops):
        # drop some invalidations so that the two forms are compared on violations too
        log = [ev for k, ev in enumerate(post.tlb_log) if keep[k % len(keep)]]
        raw = raw_of(post)
        raw["tlb_log"] = [list(e) for e in log]
        post2 = spec.load_state(raw)
        fast = {(v.where["ipa"], v.where["level"]) for v in bbm.check_bbm(pre, step, post2)}
        plain = bbm.uninvalidated_leaves_plain(pre, step, post2, *WINDOW)
        assert fast == plain, (step, fast, plain)


@pytest.mark.parametrize("first", [0, 2, 4, 5, 10, 12])
def test_bbm_equals_plain_on_every_second_op(first):
    """Every operation after a block, a page, a straddling map or an annotation, with its
    invalidations dropped (all of them, or only the per-IPA ones): both forms find the same leaves."""
    ops = alphabet(W, P)
    for second in ops:
        for pre, step, post in run([ops[first], second])[1:]:
            for drop in (("tlbi_ipa",), ("tlbi_ipa", "tlbi_vmid")):
                raw = raw_of(post)
                raw["tlb_log"] = [e for e in raw["tlb_log"] if e[0] not in drop]
                post2 = spec.load_state(raw)
                fast = {(v.where["ipa"], v.where["level"]) for v in bbm.check_bbm(pre, step, post2)}
                assert fast == bbm.uninvalidated_leaves_plain(pre, step, post2, *WINDOW), step


def test_bbm_plain_finds_a_planted_missing_tlbi():
    """The plain statement is not vacuous: a block replaced with its TLBI dropped is reported."""
    (_, _, first), (pre, step, post) = run([alphabet(W, P)[0], alphabet(W, P)[2]])
    raw = raw_of(post)
    raw["tlb_log"] = [e for e in raw["tlb_log"] if e[0] != "tlbi_ipa"]
    post2 = spec.load_state(raw)
    assert bbm.uninvalidated_leaves_plain(pre, step, post2, *WINDOW) == {(W, 2)}
    assert {(v.where["ipa"], v.where["level"]) for v in bbm.check_bbm(pre, step, post2)} == {(W, 2)}


# -- invariants: screens against the slot-by-slot statement ----------------------------------------

@SETTINGS
@given(OPS, st.sampled_from([12, 14, 16]),
       st.lists(st.tuples(st.integers(0, 7), st.integers(0, 63), st.integers(0, 63)), max_size=4))
def test_encoding_and_slot_checks_equal_plain(ops, ps, picks):
    ia = {12: 39, 14: 40, 16: 42}[ps]
    for _, _, post in run(ops[:4], ps, ia):
        for pa_bits in (48, 52):
            raw = corrupt(raw_of(post), picks)
            raw["pa_bits"] = pa_bits
            st_ = spec.load_state(raw)
            assert [str(v) for v in invariants.encoding_violations(st_, "S2-BA")] == \
                [str(v) for v in invariants.encoding_violations_plain(st_, "S2-BA")]
            assert [str(v) for v in invariants.slot_violations(st_, "S2-TREE")] == \
                [str(v) for v in invariants.slot_violations_plain(st_, "S2-TREE")]


BITS = [0, 1, 6, 11, 12, 13, 14, 15, 16, 21, 30, 47, 48, 50, 51, 52, 53, 56, 59, 63]


@pytest.mark.parametrize("ps", [12, 14, 16])
def test_encoding_and_slot_checks_equal_plain_on_every_bit(ps):
    """Each of BITS flipped in every leaf-level descriptor (or in every table descriptor) of a table
    with blocks, pages and owner annotations, and in the last slot of every page: the screened and
    the plain forms agree."""
    ops = alphabet(W, P)
    ia = {12: 48, 14: 40, 16: 42}[ps]
    _, _, post = run([ops[0], ops[4], ops[10], ops[12]], ps, ia)[-1]
    levels = {pa: t[0] for pa, t in post.walk().tables.items()}
    for bit in BITS:
        for pa_bits, tables in ((48, False), (52, False), (48, True)):
            raw = raw_of(post)
            raw["pa_bits"] = pa_bits
            for pa, words in raw["pages"].items():
                for i, w in enumerate(words):
                    if w and (levels[pa] < 3 and w & 3 == 3) == tables:   # leaves, or tables only
                        words[i] = w ^ (1 << bit)
                words[-1] ^= 1 << bit
            st_ = spec.load_state(raw)
            assert [str(v) for v in invariants.encoding_violations(st_, "S2-BA")] == \
                [str(v) for v in invariants.encoding_violations_plain(st_, "S2-BA")], bit
            assert [str(v) for v in invariants.slot_violations(st_, "S2-TREE")] == \
                [str(v) for v in invariants.slot_violations_plain(st_, "S2-TREE")], bit
            assert [str(v) for v in ownership.s2_own(st_)] == \
                [str(v) for v in ownership.own_violations_plain(st_)], bit


@pytest.mark.parametrize("owner_field", [(63, 56), (9, 2)])
def test_own_equals_plain_at_the_id_boundary(owner_field):
    """Owner annotations rewritten with ids around max_owner_id: both forms agree, and id
    max_owner_id + 1 is refuted."""
    from ptspec.spec.arch import descriptor as D
    ops = alphabet(W, P)
    _, _, post = run([ops[0], ops[10], ops[12]])[-1]
    raw = raw_of(post)
    raw["owner_field"] = list(owner_field)
    old = tuple(post.owner_field)
    for top in (1, 2, 5):
        for delta in (-1, 0, 1):
            bad = copy.deepcopy(raw)
            bad["max_owner_id"] = top
            for words in bad["pages"].values():
                for i, w in enumerate(words):
                    if w and not w & D.VALID and D.owner_of(w, old):
                        words[i] = D.owner_descriptor(top + delta, owner_field) if top + delta else 0
            st_ = spec.load_state(bad)
            plain = [str(v) for v in ownership.own_violations_plain(st_)]
            assert [str(v) for v in ownership.s2_own(st_)] == plain
            assert bool(plain) == (delta == 1)


def test_encoding_plain_reports_a_misaligned_block():
    (_, _, post), = run([alphabet(W, P)[0]])
    raw = raw_of(post)
    for words in raw["pages"].values():
        for i, w in enumerate(words):
            if w & 3 == 1:
                words[i] = w | K4                      # output address no longer 2M aligned
    st_ = spec.load_state(raw)
    plain = [str(v) for v in invariants.encoding_violations_plain(st_, "S2-BA")]
    assert plain and "not aligned" in plain[0]
    assert plain == [str(v) for v in invariants.encoding_violations(st_, "S2-BA")]


# -- contracts: whole level-3 tables settled as lists against the sweep ------------------------------

def _contracts(pre, step, post, settle):
    contract_common.SETTLE_WHOLE_TABLES = settle
    try:
        return [str(v) for v in spec.check_step(pre, step, post)]
    finally:
        contract_common.SETTLE_WHOLE_TABLES = True


@SETTINGS
@given(OPS, st.lists(st.tuples(st.integers(0, 7), st.integers(0, 511), st.integers(0, 63)), max_size=2))
def test_contract_table_settling_equals_sweep(ops, picks):
    for pre, step, post in run(ops):
        assert _contracts(pre, step, post, True) == _contracts(pre, step, post, False)
        bad = spec.load_state(corrupt(raw_of(post), picks))
        assert _contracts(pre, step, bad, True) == _contracts(pre, step, bad, False)


@pytest.mark.parametrize("index", range(len(alphabet(W, P))))
def test_contract_table_settling_equals_sweep_on_every_op(index):
    """Each operation after a block and a straddling map; then each of BITS flipped in each
    descriptor of every level-3 table of the post-state: both forms report the same."""
    ops = alphabet(W, P)
    pre, step, post = run([ops[0], ops[4], ops[index]])[-1]
    assert _contracts(pre, step, post, True) == _contracts(pre, step, post, False)
    raw = raw_of(post)
    l3 = [pa for pa, (level, *_rest) in post.walk().tables.items() if level == 3]
    for pa in l3:
        nz = [i for i, w in enumerate(raw["pages"][pa]) if w][:4]
        for i in nz:
            for bit in (6, 7, 12, 54):
                bad = copy.deepcopy(raw)
                bad["pages"][pa][i] ^= 1 << bit
                bad = spec.load_state(bad)
                assert _contracts(pre, step, bad, True) == _contracts(pre, step, bad, False)


def test_contract_sweep_alone_catches_a_wrong_page():
    """With settling off, a map whose level-3 table holds one wrong page is still refuted."""
    seq = [alphabet(W, P)[2]]                          # a 4K page inside the first block
    (pre, step, post), = run(seq)
    raw = raw_of(post)
    for words in raw["pages"].values():
        for i, w in enumerate(words):
            if w & 3 == 3 and w & (1 << 10) and (w >> 12) & 0xFFFFFFFFF == (P + K4) >> 12:
                words[i] = w ^ (1 << 7)                # S2AP_W flipped
    bad = spec.load_state(raw)
    fast, plain = _contracts(pre, step, bad, True), _contracts(pre, step, bad, False)
    assert any(v.startswith("C-MAP") for v in plain) and fast == plain


# -- contracts_map: zones against the per-page leaf level ---------------------------------------------

@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.sampled_from([(12, 39), (12, 48), (14, 40), (16, 42)]), st.integers(0, 3 << 10),
       st.integers(1, 3 << 10), st.integers(-8, 8), st.sampled_from([0, 1, 2]), st.booleans())
def test_expected_zones_equal_expected_level(geo, a, n, dpages, dblocks, force_pte):
    ps, ia = geo
    state = spec.load_state(_empty(ps, ia))
    blk = G.granule_size(2, ps)
    # addresses around a level-1/level-2 boundary so that every zone shape comes up
    base = G.granule_size(1, ps) if ps == 12 else blk * 4
    A = base - (3 << 9 << ps) + (a << ps)
    E = A + (n << ps)
    delta = dpages * (1 << ps) + dblocks * blk
    zones = expected_zones(state, A, E, delta, force_pte)
    assert zones[0][0] == A and zones[-1][1] == E
    assert all(z[1] == nz[0] for z, nz in zip(zones, zones[1:]))
    for lo, hi, level in zones:
        for p in (lo, hi - (1 << ps), (lo + hi) // 2 // (1 << ps) * (1 << ps)):
            assert expected_level(state, A, E, delta, force_pte, p) == level
    for p in range(A, min(E, A + (256 << ps)), 1 << ps):
        assert any(lo <= p < hi and lv == expected_level(state, A, E, delta, force_pte, p)
                   for lo, hi, lv in zones)


def _empty(ps, ia):
    h = Stage2Harness(ps, ia, arena_pages=32, mc_capacity=2, check=False)
    return h.raw_state()


# -- the walk: intervals against the per-address hardware walk ----------------------------------------

@SETTINGS
@given(OPS, st.lists(st.tuples(st.integers(0, 7), st.integers(0, 511), st.integers(0, 63)), max_size=2))
def test_walk_intervals_equal_translate(ops, picks):
    for _, _, post in run(ops):
        for state in (post, spec.load_state(corrupt(raw_of(post), picks))):
            walk = state.walk()
            lo, hi = WINDOW
            got = walk.overlapping(lo, hi)
            assert got[0][0] <= lo and got[-1][1] >= hi
            for ipa in range(lo, hi, K4):
                iv = walk.find(ipa)
                t = spec.translate(state, ipa)
                if iv[6]:                              # an unfollowable table: S2-TREE reports it
                    continue
                assert (t.level, t.desc) == (iv[2], iv[3]), hex(ipa)
                assert t.valid == segments.is_valid(iv)


# -- the raw-state parser: C-speed lists against parse_int per element --------------------------------

WORDS = st.one_of(st.integers(-2, (1 << 64) + 2), st.integers(0, 1 << 20).map(hex), st.just(True),
                  st.just("x"), st.just(1.5))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(WORDS, min_size=4, max_size=4))
def test_descriptor_parsing_equals_parse_int(words):
    try:
        plain = [parse_int(d, f"p[{i}]", 0, (1 << 64) - 1) for i, d in enumerate(words)]
    except StateError:
        plain = None
    try:
        fast = _parse_descriptors(words, "p", 4)
    except StateError:
        fast = None
    assert fast == plain


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(["tlbi_ipa", "tlbi_vmid", "dcache", "icache"]), st.lists(WORDS, max_size=3))
def test_event_parsing_equals_parse_int(name, args):
    arity = {"tlbi_ipa": 2, "tlbi_vmid": 0, "dcache": 2, "icache": 2}[name]
    try:
        if len(args) != arity:
            raise StateError("arity")
        plain = (name, *[parse_int(v, "e", 0, (1 << 64) - 1) for v in args])
    except StateError:
        plain = None
    try:
        fast = _parse_event([name, *args], "e")
    except StateError:
        fast = None
    assert fast == plain
