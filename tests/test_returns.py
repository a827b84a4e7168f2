"""C-RETURNS for impl: an operation of impl's Python code that does not come back is a verdict
(refuted, with the shortened sequence), counted in CPU time, not a hung check
(ptspec.proofs.stage2.returns)."""

import signal
import time

import pytest

from ptspec.impl.pgtable import hyp as hyp_impl
from ptspec.impl.pgtable import stage2_map as M
from ptspec.proofs.hyp import lockstep as hyp_lockstep
from ptspec.proofs.runner import budgets
from ptspec.proofs.stage2 import lockstep, returns
from ptspec.proofs.stage2.harness import Stage2Harness, SubjectFault


@pytest.fixture
def short_budget(monkeypatch):
    monkeypatch.setattr(returns, "IMPL_CALL_CPU_SECONDS", 0.3)


def _loop_at_level_2_above_1g(monkeypatch):
    """A planted bug: a leaf visit at level 2 of a PA at or above 1 GiB never ends."""
    orig = M.stage2_map_walker_try_leaf

    def looping(addr, end, level, tbl, ptp, idx, data):
        while level == 2 and data.phys >= 1 << 30:
            try:
                pass
            except Exception:   # code under test that swallows exceptions cannot swallow this
                pass
        return orig(addr, end, level, tbl, ptp, idx, data)
    monkeypatch.setattr(M, "stage2_map_walker_try_leaf", looping)


def test_an_endless_loop_in_impl_is_refuted_with_a_one_step_sequence(monkeypatch, short_budget):
    _loop_at_level_2_above_1g(monkeypatch)
    out = lockstep.run_lockstep("4k-39", examples=60, steps=12, seed=0)
    assert out.status == "refuted"
    assert len(out.failure.violations) == 1
    assert out.failure.violations[0].startswith(
        "C-RETURNS map: pgt.map did not return within 0.3 s of CPU time")
    steps = [line for line in out.failure.program.splitlines() if line.startswith("h.step(")]
    assert len(steps) == 1 and "does not return" in steps[0]


def test_the_step_shows_the_call_that_did_not_return(monkeypatch, short_budget):
    _loop_at_level_2_above_1g(monkeypatch)
    h = Stage2Harness(12, 39, arena_pages=512)
    _, found = h.step("map", addr=0x200000, size=0x200000, phys=0x40000000, prot=4)
    assert [v.inv for v in found] == ["C-RETURNS"]
    assert h.lines[-1].startswith("pgt.map(0x200000, 0x200000, 0x40000000, 4, mc)  # does not return")


def test_a_hyp_map_that_never_returns_is_refuted(monkeypatch, short_budget):
    real = hyp_impl.HypPgtable.map

    def never(self, addr, size, phys, prot):
        if size > 0x1000:
            while True:
                pass
        return real(self, addr, size, phys, prot)
    monkeypatch.setattr(hyp_impl.HypPgtable, "map", never)
    h = hyp_lockstep.HypHarness()
    assert h.step("map", addr=0x1000, size=0x1000, phys=0x1000, prot=1)[1] == []
    _, found = h.step("map", addr=0x200000, size=0x2000, phys=0x200000, prot=1)
    assert [v.inv for v in found] == ["C-RETURNS"]
    assert "did not return within 0.3 s of CPU time" in found[0].message


def test_the_budget_is_cpu_time_not_wall_clock():
    """A call that waits (a loaded machine looks the same to it) is not stopped; one that computes
    past the budget is; the handler and the timer are put back either way."""
    before = signal.getsignal(signal.SIGVTALRM)
    with returns.within("sleeper", 0.2):
        time.sleep(0.6)
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGVTALRM) is before
    with pytest.raises(SubjectFault, match="spinner did not return within 0.2 s of CPU time"):
        with returns.within("spinner", 0.2):
            while True:
                pass
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGVTALRM) is before


def test_other_exceptions_pass_through_and_disarm():
    with pytest.raises(ValueError):
        with returns.within("raiser", 5):
            raise ValueError("x")
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)


def test_one_budget_for_every_profile():
    """The harnesses do not know the profile: the value shown by `ptspec profiles` must be the one
    every profile uses."""
    for key, value in (("call_cpu_seconds", budgets.CALL_CPU_SECONDS),
                       ("impl_call_cpu_seconds", budgets.IMPL_CALL_CPU_SECONDS)):
        assert {budgets.budget(p)[key] for p in budgets.PROFILE_NAMES} == {value}
    assert (budgets.CALL_CPU_SECONDS, budgets.IMPL_CALL_CPU_SECONDS) == (2.0, 10.0)
    assert returns.within("x").seconds == budgets.IMPL_CALL_CPU_SECONDS


def test_a_nested_block_runs_under_the_outer_budget():
    with pytest.raises(SubjectFault, match="outer did not return within 0.3 s"):
        with returns.within("outer", 0.3):
            with returns.within("inner", 5):
                pass
            assert returns.within.armed           # the inner exit left the outer armed
            while True:
                pass
    assert not returns.within.armed and signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)


def _forever(*args, **kwargs):
    while True:
        pass


def _run(check_id):
    from ptspec.proofs.runner import registry
    registry.load_all()
    return registry.run_obligation(registry.get(check_id), "quick", 0)


def test_unit_call_gives_the_value_or_the_statement_that_did_not_hold(short_budget):
    assert returns.unit_call("C-MMU-RETURNS", "f()", lambda a: a + 1, 1) == (2, None)
    got, hang = returns.unit_call("C-MMU-RETURNS", "f()", _forever)
    assert got is None and hang.startswith("C-MMU-RETURNS f() did not return within 0.3 s")


@pytest.mark.parametrize("check_id, patch", [
    ("mmu.units.fault.abort", ("ptspec.proofs.mmu.checks_fault_units", "CASES", "abort")),
    ("mmu.units.host.memslot", ("ptspec.proofs.mmu.checks_host_units", "check_dirty_log", None)),
    ("mmu.units.hyp.layout", ("ptspec.proofs.mmu.hyp_va", "check_hyp_units", None)),
    ("mmu.units.host.mm", ("ptspec.proofs.mmu.host_contract", "run_host", None)),
])
def test_a_unit_check_whose_impl_call_loops_is_refuted_by_c_mmu_returns(monkeypatch, short_budget,
                                                                          check_id, patch):
    """The mmu unit checks call impl directly: a loop there (mutation testing's
    HostMM.zap:arith10, KvmMemorySlot.dirty_gfns:drop1, create_hyp_mappings:drop1) is a
    C-MMU-RETURNS refutation after an operation's CPU budget, not an unknown at the check's
    wall-clock hang guard."""
    import importlib
    module, name, key = patch
    mod = importlib.import_module(module)
    if key is None:
        monkeypatch.setattr(mod, name, _forever)
    else:
        monkeypatch.setitem(getattr(mod, name), key, _forever)
    r = _run(check_id)
    assert r.status == "refuted", (r.status, r.detail)
    assert r.counterexample["violations"][0].startswith("C-MMU-RETURNS ")
    assert "C-MMU-RETURNS" in r.invariants


@pytest.mark.parametrize("check_id, target, statement", [
    # hyp_cases maps through HypPgtable.map directly, with no harness step around it
    ("s2.units.hyp", ("ptspec.impl.pgtable.hyp", "HypPgtable", "map"), "C-RETURNS"),
    # stage2_cases asks kvm_pgtable_stage2_pte_prot directly for invalid descriptors
    ("s2.units.stage2", ("ptspec.impl.pgtable.pte", None, "kvm_pgtable_stage2_pte_prot"),
     "C-RETURNS"),
    # the lguest model's host group allocates straight from impl's Host
    ("lg.units.model", ("ptspec.impl.lguest.host", "Host", "get_zeroed_page"), "LG-C-RETURNS"),
])
def test_a_stage2_or_lguest_unit_check_whose_direct_impl_call_loops_is_refuted(
        monkeypatch, short_budget, check_id, target, statement):
    """s2.units.* and lg.units.model call impl outside any harness step too: a loop there is a
    refutation by the area's RETURNS statement after an operation's CPU budget, not an unknown at
    the check's wall-clock hang guard (where the code before stop 34 left it)."""
    import importlib
    module, cls, name = target
    owner = importlib.import_module(module)
    monkeypatch.setattr(getattr(owner, cls) if cls else owner, name, _forever)
    r = _run(check_id)
    assert r.status == "refuted", (r.status, r.detail)
    assert r.counterexample["violations"][0].startswith(f"{statement} "), r.counterexample
    assert statement in r.invariants
