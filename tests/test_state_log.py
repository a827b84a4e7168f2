"""The tlb_log of a raw state is read at C speed (spec/stage2/state.py _parse_log) exactly as the
plain per-event reading (_parse_event) reads it: the same events, the same error for bad ones."""

from hypothesis import given, settings, strategies as st

from ptspec.spec.stage2.state import StateError, _parse_event, _parse_log

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
