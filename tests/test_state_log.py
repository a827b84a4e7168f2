"""The fast readings of a raw state (spec/stage2/state.py) equal the plain ones: the tlb_log
(_parse_log against _parse_event per event) and a page's descriptors (_parse_descriptors against
parse_int per descriptor): the same values, the same error for bad input."""

from hypothesis import example, given, settings, strategies as st

import enum

from ptspec.spec.stage2.state import (StateError, _parse_descriptors, _parse_event, _parse_log,
                                      parse_int)

_operand = st.one_of(st.integers(-2, 2), st.integers((1 << 64) - 2, (1 << 64) + 1),
                     st.integers(0, 1 << 48), st.booleans(), st.floats(0, 4), st.text(max_size=2))
_name = st.sampled_from(["tlbi_ipa", "tlbi_vmid", "dcache", "icache", "tlbi", 3])
_event = st.one_of(st.tuples(_name).map(list),
                   st.builds(lambda n, a: [n, *a], _name, st.lists(_operand, max_size=3)),
                   st.builds(lambda n, a: (n, *a), _name, st.lists(_operand, max_size=3)),
                   st.just([]), st.just("dcache"), st.integers())


def _plain(log):
    try:
        return [_parse_event(e, f"tlb_log[{i}]") for i, e in enumerate(log)]
    except StateError as exc:
        return ("error", str(exc))


def _fast(log):
    try:
        return _parse_log(log)
    except StateError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(st.lists(_event, max_size=5))
def test_fast_log_reading_equals_the_plain_one(log):
    assert _fast(log) == _plain(log)


def test_well_formed_logs_are_read():
    log = [["tlbi_ipa", 0x1000, 3], ("tlbi_vmid",), ["dcache", 1 << 32, 4096]]
    assert _parse_log(log) == [("tlbi_ipa", 0x1000, 3), ("tlbi_vmid",), ("dcache", 1 << 32, 4096)]


class _Owner(enum.IntEnum):
    ONE = 1


_word = st.one_of(st.integers(0, 3), st.integers((1 << 64) - 2, (1 << 64) + 1),
                  st.integers(-1, 0), st.integers(0, (1 << 64) - 1), st.booleans(),
                  st.just(_Owner.ONE), st.floats(0, 2), st.sampled_from(["0x10", "7", " 1"]))


def _plain_page(words):
    try:
        return [parse_int(d, f"p[{i}]", 0, (1 << 64) - 1) for i, d in enumerate(words)]
    except StateError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(st.lists(_word, min_size=4, max_size=4), st.booleans())
def test_fast_descriptor_reading_equals_the_plain_one(words, as_tuple):
    value = tuple(words) if as_tuple else words
    try:
        fast = _parse_descriptors(value, "p", 4)
    except StateError as exc:
        fast = ("error", str(exc))
    assert fast == _plain_page(words)
    if isinstance(fast, list):
        assert type(fast) is list and fast is not value and all(type(d) is int for d in fast)


# -- the usual log of a step (two operands per event) and the per-name events ---------------------

_two = st.one_of(st.integers(0, 1 << 48), st.integers((1 << 64) - 2, (1 << 64) + 1), st.booleans(),
                 st.just(-1))
_usual = st.builds(lambda n, a, b, as_list: [n, a, b] if as_list else (n, a, b),
                   st.sampled_from(["dcache", "icache", "tlbi_ipa", "tlbi_range", "tlbi_ipa_nsh"]),
                   st.integers(0, 1 << 48), st.integers(0, 3), st.booleans())
_odd = st.one_of(st.just(("tlbi_vmid",)), st.builds(lambda n, a: (n, *a), st.sampled_from(
    ["dcache", "tlbi_vmid", "tlbi", 3, ["dcache"]]), st.lists(_two, max_size=3)))


@settings(max_examples=400, deadline=None)
@given(st.lists(_usual, max_size=12), st.lists(st.tuples(st.integers(0, 12), _odd), max_size=2))
def test_fast_reading_of_the_usual_log_equals_the_plain_one(log, odd):
    """Logs of two-operand events (the path the whole log is checked at once on), with a few
    events of other shapes, bad operands and bad names put in: the same events or the same error."""
    log = list(log)
    for k, e in odd:
        log.insert(k, e)
    assert _fast(log) == _plain(log)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_usual, st.just(("tlbi_vmid",))), max_size=10))
def test_events_by_name_are_the_log_filtered(log):
    """State.events(name): the events of that name in log order, for names in the log, names not in
    it, and a log of one name only."""
    from ptspec.spec.stage2.state import load_state
    raw = {"kind": "arm64-stage2", "page_shift": 12, "ia_bits": 39, "start_level": 1,
           "owner_field": [63, 56], "max_owner_id": 255, "roots": [], "pages": {}, "refcount": {},
           "tlb_log": log}
    state = load_state(raw)
    for name in ("dcache", "icache", "tlbi_ipa", "tlbi_vmid", "tlbi_range", "tlbi_ipa_nsh"):
        for _ in range(2):                   # computed, then cached
            assert state.events(name) == [tuple(e) for e in log if e[0] == name]


_ref = st.one_of(st.integers(-2, 3), st.integers((1 << 31) - 1, 1 << 31), st.just(-(1 << 31) - 1),
                 st.booleans(), st.just("7"), st.just(1.0))
_key = st.one_of(st.sampled_from([0, 0x1000, 0x2000, 0x3000]), st.just("4096"), st.just(False),
                 st.just(4096.0), st.just(0x1001))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_key, _ref, max_size=4), st.sets(st.sampled_from([0, 0x1000, 0x2000]), max_size=3))
@example({False: 1}, {0})                       # keys equal to the pages' (False == 0), not ints
@example({4096.0: 1, 0: 2}, {0, 0x1000})
@example({0: True}, {0})
def test_fast_refcount_reading_equals_the_plain_one(refs, pas):
    """_parse_refcount against _parse_refcount_plain: the same object or the same error, for int,
    string, bool and float keys, pages missing or extra, and values out of range or not ints."""
    from ptspec.spec.stage2.state import _parse_refcount, _parse_refcount_plain
    pages = {pa: [0] for pa in sorted(pas)}
    got = []
    for fn in (_parse_refcount, _parse_refcount_plain):
        try:
            out = fn(refs, pages)
            got.append((out, list(out), [type(n) for n in out.values()]))
        except StateError as exc:
            got.append(("error", str(exc)))
    assert got[0] == got[1]
