"""The stage-2 lock-step's one operation generator (proofs/stage2/program.py) and its choosers.

The same program serves plain seeded runs (RandomChooser) and hypothesis runs (DrawChooser); the
random driver is deterministic, reaches every operation kind, and still finds planted bugs (the
planted-bug tests run it at the default budget; here, the hypothesis driver finds one too).
"""

import pytest
from hypothesis import given, settings, strategies as st

from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.planted import planted
from ptspec.proofs.stage2.program import Stage2Program


def _entries(name, seed, n=400):
    ps, ia, _ = lockstep.GEOMETRIES[name]
    prog = Stage2Program(S.geometry(ps, ia))
    ch = S.RandomChooser(seed)
    out = []
    for _ in range(n):
        e = prog.next(ch)
        out.append(e)
        prog.returned(e, 0)          # as if every map succeeded: re-maps and crossings enabled
    return out


@pytest.mark.parametrize("name", sorted(lockstep.GEOMETRIES))
def test_program_is_deterministic_and_covers_every_kind(name):
    a, b = _entries(name, 7), _entries(name, 7)
    assert a == b
    assert a != _entries(name, 8)
    ops = {e[1] for e in a if e[0] == "op"}
    assert ops == {"map", "set_owner", "unmap", "wrprotect", "flush", "mkyoung", "mkold",
                   "is_young", "get_leaf", "relax_perms", "destroy"}
    assert any(e[0] == "fail" for e in a)
    assert sum(e[1] == "destroy" for e in a) == 1          # destroy runs once per run


@pytest.mark.parametrize("name", sorted(lockstep.GEOMETRIES))
def test_straddles_cross_an_entry_boundary_inside_the_ipa_space(name):
    ps, ia, _ = lockstep.GEOMETRIES[name]
    geom = S.geometry(ps, ia)
    opt = S.options(geom)
    ch = S.RandomChooser(1)
    for _ in range(300):
        a, s = S.choose_straddle(ch, opt)
        assert a + s <= 1 << ia and a % geom.gran.page_size == 0
        assert any(a // geom.gran.size[lv] != (a + s - 1) // geom.gran.size[lv]
                   for lv in opt.straddle_levels)


def test_random_chooser_stays_in_range():
    ch = S.RandomChooser(0)
    seen = {ch.integer(0, 3) for _ in range(200)}
    assert seen == {0, 1, 2, 3}
    assert {ch.choice((5, 6)) for _ in range(100)} == {5, 6}


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_draw_chooser_gives_the_same_kinds_of_values(data):
    geom = S.geometry(12, 39)
    a = S.choose_address(S.DrawChooser(data.draw), S.options(geom))
    assert 0 <= a < 1 << 39 and a % 4096 in (0, 1, 2048, 4095)


def test_runs_count_exact_steps():
    out = lockstep.run_lockstep("4k-39", examples=3, steps=20, seed=0)
    assert out.status == "passed" and out.examples == 3
    assert 3 * 20 * 0.6 < out.steps <= 3 * 20          # allocation failures are not operations


def test_hypothesis_driver_still_drives_the_same_program_and_finds_a_planted_bug():
    with planted("destroy-keeps-roots"):
        out = lockstep.run_lockstep("4k-39", examples=50, steps=30, seed=0, driver="hypothesis")
    assert out.status == "refuted"
    assert {v.split()[0] for v in out.failure.violations} & {"C-DESTROY", "S2-LEAK", "S2-TREE"}
    with pytest.raises(ValueError):
        lockstep.run_lockstep("4k-39", examples=1, steps=1, driver="nope")


def test_a_subject_adds_operations_through_program_rules():
    """A subject with operations of its own (a newer tree's) hands them to the program; both
    drivers then run them (here: a harmless extra get_leaf, counted by the harness)."""
    from ptspec.proofs.stage2.harness import Stage2Harness
    seen = []

    class WithExtra(Stage2Harness):
        @classmethod
        def program_rules(cls, opt):
            return [lambda ch: ("op", "get_leaf", {"addr": S.choose_address(ch, opt),
                                                   "extra": True})]

        def step(self, op, **args):
            if args.pop("extra", False):
                seen.append(op)
            return super().step(op, **args)

    for driver in ("random", "hypothesis"):
        seen.clear()
        out = lockstep.run_lockstep("4k-39", examples=5, steps=30, seed=0,
                                    harness_factory=WithExtra, driver=driver)
        assert out.status == "passed" and seen, driver


def test_a_run_sets_the_older_objects_aside_from_its_collections_and_puts_them_back():
    """quiet_gc: during a run the objects made before it are frozen (gc.freeze), after it none
    are, and a reference cycle the run drops is still collected."""
    import gc
    import weakref

    class Node:
        pass
    seen = {}

    def spy():
        seen["frozen"] = gc.get_freeze_count()
        a, b = Node(), Node()
        a.b, b.a = b, a
        seen["ref"] = weakref.ref(a)
    make = lockstep.harness_maker("4k-39")

    def harness(*args, **kwargs):
        spy()
        return make()
    assert gc.get_freeze_count() == 0
    out = lockstep.run_lockstep("4k-39", examples=1, steps=3, seed=0,
                                harness_factory=lambda *a, **k: harness())
    assert out.status == "passed"
    assert seen["frozen"] > 0 and gc.get_freeze_count() == 0
    gc.collect()
    assert seen["ref"]() is None
    with lockstep.quiet_gc():             # nested: the outer freeze is left alone
        outer = gc.get_freeze_count()
        with lockstep.quiet_gc():
            pass
        assert gc.get_freeze_count() == outer > 0
    assert gc.get_freeze_count() == 0
