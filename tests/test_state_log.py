"""The fast readings of a raw state (spec/stage2/state.py) equal the plain ones: the tlb_log
(_parse_log against _parse_event per event) and a page's descriptors (_parse_descriptors against
parse_int per descriptor): the same values, the same error for bad input."""

from hypothesis import given, settings, strategies as st

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
