"""The cyclic collector during the engines' runs (ptspec.proofs.engines.collector): run_gc pauses it
for one run and frees the run's cycles at the run's end; quiet_gc sets older objects aside for a
whole engine run. Both leave a caller's own choice alone and put everything back however the
block ends."""

import gc
import weakref

import pytest

from ptspec.proofs.engines.collector import quiet_gc, run_gc
from ptspec.proofs.stage2 import harness as H
from ptspec.proofs.stage2 import lockstep


class Node:
    pass


def _cycle():
    a, b = Node(), Node()
    a.b, b.a = b, a
    return weakref.ref(a)


def test_a_lockstep_run_pauses_the_collector_and_frees_its_cycles_at_its_end():
    seen = []
    make = lockstep.harness_maker("4k-39")

    def factory(*args, **kwargs):
        if seen:                            # the cycle the run before made is gone already
            assert seen[-1][1]() is None
        seen.append((gc.isenabled(), _cycle()))
        return make()
    out = lockstep.run_lockstep("4k-39", examples=3, steps=5, seed=0,
                                harness_factory=lambda *a, **k: factory())
    assert out.status == "passed" and out.examples == 3
    assert [enabled for enabled, _ in seen] == [False] * 3 and gc.isenabled()
    assert seen[-1][1]() is None            # collected at the run's end, no gc.collect() here


def test_the_spec_makes_no_reference_cycle_a_run_leaves_behind():
    """A walk keeps what it reads of its state (WalkSource), not the state, and the tree diff is
    cached on the post-state: a run's only cyclic garbage is its table's mm_ops (bound methods of
    itself). On 68976bd each state and its walk were a cycle."""
    from ptspec.proofs.stage2.program import Stage2Program
    make = lockstep.harness_maker("4k-39")
    program = Stage2Program(lockstep.S.geometry(12, 39))
    gc.collect()
    gc.disable()
    try:
        for i in range(4):
            lockstep.run_program(make, program, lockstep.S.RandomChooser(i), 20,
                                 {"runs": 0, "steps": 0})
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kinds = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert "State" not in kinds and "Walk" not in kinds and "FlatL3" not in kinds, kinds
    assert "MmOps" in kinds                 # the one cycle left (and so the check can fail)


def test_a_replay_pauses_the_collector_too():
    seen = {}
    make = lockstep.harness_maker("4k-39")

    def factory():
        seen["enabled"] = gc.isenabled()
        return make()
    h, used = H.replay([("op", "map", {"addr": 0x200000, "size": 0x1000, "phys": 0x40000000,
                                       "prot": 3})], factory)
    assert seen["enabled"] is False and gc.isenabled()
    assert used == 1 and not h.violations


def test_run_gc_leaves_a_disabled_collector_alone_and_comes_back_after_an_exception():
    gc.disable()
    try:
        with run_gc():
            ref = _cycle()
        assert not gc.isenabled() and ref() is not None     # the caller's choice: no collection
    finally:
        gc.enable()
    with pytest.raises(RuntimeError):
        with run_gc():
            assert not gc.isenabled()
            raise RuntimeError("a run that fails")
    assert gc.isenabled()
    with run_gc():
        with run_gc():                      # nested: the inner one does nothing
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_quiet_gc_as_a_decorator_freezes_for_the_call_only():
    @quiet_gc()
    def engine():
        return gc.get_freeze_count()
    assert gc.get_freeze_count() == 0
    assert engine() > 0 and gc.get_freeze_count() == 0
    assert engine.__name__ == "engine"
