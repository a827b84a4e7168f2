"""mmu and lguest lock-steps minimise like stage 2: hypothesis's own shrink phase is off, the first
failing run is replayed and cut by delta debugging (ptspec.proofs.engines.minimize.shortest), and
the cut keeps the statement the failure reported first.

Measured (seed 0, 60 runs of 20 steps; trace length of the first failing run -> after delta
debugging; with hypothesis's shrink phase on, the same findings took 41 s and 79 s for perm-level
and access-fault-noop, now under 3 s):
  mmu perm-level        72 -> 2 steps (11 replays)     PROGRESS
  mmu access-fault-noop 87 -> 3 steps (36 replays)     PROGRESS
  mmu commit-no-wp      14 -> 2 steps (10 replays)     C-MMU-COMMIT / DIRTY
  lguest (seed 3, 40 runs of 25 steps) shadow-release pae coop 3 -> 1 entries after the boot,
  percpu-stale 2level hostile 5 -> 2.
"""

import re

import pytest
from hypothesis import Phase

from ptspec.proofs.engines import minimize
from ptspec.proofs.lguest import lockstep as lg_lockstep
from ptspec.proofs.lguest.planted import BUGS as LG_BUGS, planted_lguest
from ptspec.proofs.mmu import lockstep as mmu_lockstep
from ptspec.proofs.mmu.planted import BUGS as MMU_BUGS, planted_mmu

# bug -> the longest minimised trace measured (steps)
MMU = {"perm-level": 2, "access-fault-noop": 3, "commit-no-wp": 2}
# bug -> (format, mode, longest minimised trace after the boot)
LGUEST = {"shadow-release": ("pae", "coop", 1), "percpu-stale": ("2level", "hostile", 2)}


class _Out:
    def __init__(self, violations):
        self.violations = violations


def test_the_cut_keeps_the_first_reported_statement():
    """A trace whose shorter parts only break a secondary statement is not cut to them."""
    def replay(trace):
        if trace == ["a", "b", "c"] or trace == ["a", "c"]:
            return _Out(["MS block outside the memslot", "PROGRESS no progress"]), len(trace)
        if "c" in trace:
            return _Out(["PROGRESS no progress"]), len(trace)
        return _Out([]), len(trace)
    found = ["MS block outside the memslot", "PROGRESS no progress"]
    cut = minimize.shortest(["a", "b", "c"], replay, minimize.same_statement(found))
    assert cut.trace == ["a", "c"] and minimize.first_id(cut.outcome.violations) == "MS"
    drifting = minimize.shortest(["a", "b", "c"], replay,
                                 lambda o: bool(minimize.ids(o.violations) & minimize.ids(found)))
    assert drifting.trace == ["c"]          # what "any of the same ids" would have reported
    assert not minimize.same_statement([])(_Out(["MS x"]))


def _phases(monkeypatch, run):
    seen = []
    orig = minimize.run_hypothesis

    def spy(machine, cfg, kind):
        seen.append(tuple(cfg.phases))
        return orig(machine, cfg, kind)
    monkeypatch.setattr(minimize, "run_hypothesis", spy)
    run()
    assert seen
    return seen


def test_hypothesis_shrink_phase_is_off(monkeypatch):
    for phases in _phases(monkeypatch, lambda: mmu_lockstep.run_machine(examples=1, steps=2)):
        assert Phase.shrink not in phases and Phase.generate in phases
    for phases in _phases(monkeypatch, lambda: lg_lockstep.run_lockstep(
            "2level", "coop", examples=1, steps=2)):
        assert Phase.shrink not in phases and Phase.generate in phases


def _cut(note):
    m = re.match(r"replayed and minimised: (\d+) -> (\d+) ", note or "")
    assert m, note
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("bug", sorted(MMU))
def test_mmu_finding_is_replayed_and_cut(bug):
    with planted_mmu(bug):
        out = mmu_lockstep.run_machine(examples=60, steps=20, seed=0)
    assert out.status == "refuted", bug
    f = out.failure
    before, after = _cut(f.cx.get("replay"))
    assert after <= MMU[bug] and after <= before, f.cx["replay"]
    first = minimize.first_id(f.violations)
    assert first in MMU_BUGS[bug].caught_by, f.violations
    with planted_mmu(bug), pytest.raises(AssertionError) as err:       # pasted, it reproduces
        exec(f.program, {})
    assert first in str(err.value)
    exec(f.program, {})


@pytest.mark.parametrize("bug", sorted(LGUEST))
def test_lguest_finding_is_replayed_and_cut(bug):
    fmt, mode, bound = LGUEST[bug]
    with planted_lguest(bug):
        out = lg_lockstep.run_lockstep(fmt, mode, examples=40, steps=25, seed=3)
    assert out.status == "refuted", bug
    f = out.failure
    before, after = _cut(f.counterexample.get("replay"))
    assert after <= bound and after <= before, f.counterexample["replay"]
    first = minimize.first_id(f.violations)
    assert first in LG_BUGS[bug].caught_by, f.violations
    with planted_lguest(bug), pytest.raises(AssertionError) as err:
        exec(f.program, {})
    assert first in str(err.value)
    exec(f.program, {})
