"""Windowed single-state invariants (spec/stage2/window.py) equal the whole-state check, and still
catch what the whole-state check catches.

check_state(post, pages=changed_tables(pre, post)) must report exactly what check_state(post)
reports whenever pre was clean; the lock-step harness judges a window on most steps, so a planted
bug in impl must still be caught (here: with the whole-state cross-check switched off, so only the
window can catch it).
"""

import pytest

from ptspec import spec
from ptspec.proofs.stage2 import harness as H
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2.planted import planted
from ptspec.spec.stage2.window import changed_tables_plain
from program_support import program_steps


def _states(name, seed, steps=60):
    """(pre, post) State pairs of one unchecked run of the lock-step program."""
    ps, ia, field = lockstep.GEOMETRIES[name]
    h = H.Stage2Harness(ps, ia, owner_field=field, arena_pages=512 if ps == 12 else 128,
                        check=False)
    pre = spec.load_state(h.pgt.snapshot())
    for _ in program_steps(h, ps, ia, seed, steps):
        post = spec.load_state(h.pgt.snapshot())
        yield pre, post
        pre = post


@pytest.mark.parametrize("name,bug_id", [("4k-39", None), ("4k-34", None), ("64k-44", None),
                                         ("4k-39", "valid-update-ref"),
                                         ("4k-39", "table-upper-bits"),
                                         ("4k-39", "owner-field-shift")])
def test_window_equals_the_whole_state(name, bug_id):
    """From every clean pre-state, the window reports what the whole-state check reports (with a
    planted bug, the first broken states are compared too)."""
    checked = broken = 0
    with planted(bug_id) if bug_id else _nothing():
        for seed in range(6):
            for pre, post in _states(name, seed):
                if spec.check_state(pre):
                    break
                window = spec.changed_tables(pre, post)
                assert window == changed_tables_plain(pre, post)
                want = [str(v) for v in spec.check_state(post)]
                assert [str(v) for v in spec.check_state(post, pages=window)] == want
                checked += 1
                broken += bool(want)
    assert checked > 50
    assert broken or not bug_id


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _corrupt(state, pa, i, d):
    state.pages[pa] = list(state.pages[pa])
    state.pages[pa][i] = d
    state._walk = None


def test_a_changed_table_is_in_the_window_and_its_violation_reported():
    pre = post = None
    for pre, post in _states("4k-39", 3):
        if len(post.pages) > 2:
            break
    pa = next(p for p in post.pages if p not in post.roots)
    before = spec.load_state(post)
    after = spec.load_state(dict(kind="arm64-stage2", page_shift=12, ia_bits=39,
                                 start_level=post.start_level, owner_field=list(post.owner_field),
                                 max_owner_id=post.max_owner_id, roots=list(post.roots),
                                 pages={p: list(d) for p, d in post.pages.items()},
                                 refcount=dict(post.refcount)))
    _corrupt(after, pa, 7, 0x3 << 60)                   # garbage in an invalid slot: S2-OWN
    window = spec.changed_tables(before, after)
    assert pa in window
    assert any(str(v).startswith("S2-OWN") for v in spec.check_state(after, pages=window))
    # an unchanged table stays out of the window (its rules were judged before)
    assert spec.changed_tables(before, before) == set()
    # a state-wide change judges everything
    wider = spec.load_state(dict(kind="arm64-stage2", page_shift=12, ia_bits=39,
                                 start_level=post.start_level, owner_field=[9, 2],
                                 max_owner_id=post.max_owner_id, roots=list(post.roots),
                                 pages={p: list(d) for p, d in post.pages.items()},
                                 refcount=dict(post.refcount)))
    assert wider.owner_field != before.owner_field
    assert spec.changed_tables(before, wider) is None
    assert spec.changed_tables(None, before) is None


@pytest.mark.parametrize("bug_id,inv", [("valid-update-ref", "S2-RC"), ("owner-field-shift", "S2-OWN"),
                                        ("block-phys-align", "S2-BA"),
                                        ("table-upper-bits", "S2-TREE")])
def test_planted_bug_caught_by_the_window_alone(bug_id, inv, monkeypatch):
    """With the whole-state cross-check never due (after init), the windowed single-state
    invariant still reports the bug (its id among the failing step's violations)."""
    monkeypatch.setattr(H, "FULL_EVERY", 10 ** 9)
    with planted(bug_id):
        out = lockstep.run_lockstep("4k-39", examples=200, steps=30, seed=0, shrink_replays=0)
    assert out.status == "refuted", bug_id
    assert inv in {v.split()[0] for v in out.failure.violations}, out.failure.violations
