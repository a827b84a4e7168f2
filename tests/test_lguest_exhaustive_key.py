"""The lguest exhaustive explorer's state identity and its exploration, pinned: the key says two
states are the same exactly when their raw states (and pending injected failures) are equal, and
the number of distinct states and transitions at each depth stays what it was before the explorer
was made faster (a speed-up must explore the same states)."""

import json
import sys

import pytest

from ptspec.proofs.lguest import exhaustive as E
from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest.harness import LguestHarness


def _booted(fmt="2level"):
    h = LguestHarness(fmt, npgdirs=2, rng_seed=1)
    G.boot(h, G.GuestLayout(fmt))
    return h.lg


def test_equal_raw_states_have_equal_keys():
    lg = _booted()
    raw = lg.raw_state()
    copy = json.loads(json.dumps(raw))                       # new objects, the same values
    copy["dead"] = "".join(["guest ", "killed"])             # built at run time: not interned
    raw["dead"] = sys.intern("guest killed")
    assert E._key(lg, raw) == E._key(lg, copy)


def test_unequal_states_have_unequal_keys():
    lg = _booted()
    raw = lg.raw_state()
    key = E._key(lg, raw)
    for change in (lambda r: r.__setitem__("linear_pages", not r["linear_pages"]),
                   lambda r: r["guest_mem"].__setitem__("0", 1),
                   lambda r: r.__setitem__("cpu_pgd", True if r["cpu_pgd"] == 1 else 1)):
        other = json.loads(json.dumps(raw))
        change(other)
        assert E._key(lg, other) != key
    lg.host.fail_next_gup += 1
    assert E._key(lg, raw) != key


def test_a_key_that_tells_interned_strings_apart_is_caught(monkeypatch):
    """The equal-keys test fails on a key that marks interned strings (marshal format 4)."""
    dumps = E.marshal.dumps
    monkeypatch.setattr(E.marshal, "dumps", lambda value, version: dumps(value, 4))
    with pytest.raises(AssertionError):
        test_equal_raw_states_have_equal_keys()


# (format, depth) -> (distinct states, transitions), as the explorer counted before its speed-ups
COUNTS = {("2level", 2): (352, 698), ("2level", 3): (3022, 7439),
          ("pae", 2): (353, 719), ("pae", 3): (3052, 7695)}


@pytest.mark.parametrize("fmt,depth", sorted(COUNTS))
def test_exploration_counts_are_unchanged(fmt, depth):
    out = E.explore(depth, fmt)
    assert out.status == "passed", out.violations
    assert (out.states, out.transitions) == COUNTS[fmt, depth]
