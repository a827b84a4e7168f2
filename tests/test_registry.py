"""The obligation registry and the runner's honesty rules, with fake obligations registered here only."""

from __future__ import annotations

import importlib
import sys
import time

import pytest

from ptspec.proofs.runner import budgets as profiles
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Context, Obligation, Result


@pytest.fixture
def reg():
    with registry.isolated() as r:
        yield r


def ob(id="t.ok", run=None, engine="unit", invariants=["S2-RC"], **kw) -> Obligation:
    return Obligation(id=id, engine=engine, invariants=invariants, statement="a fake obligation",
                      run=run or (lambda ctx: Result.passed(1)), **kw)


@pytest.fixture
def short_grace(monkeypatch):
    """Make the hard stop fire 50ms after the deadline instead of seconds."""
    monkeypatch.setitem(profiles._TABLE, "grace_seconds", ((0.05, 0.05, 0.05), "test"))


# ------------------------------------------------------------------------------------------ registry

def test_select_glob_substring_case_and_commas(reg):
    for i in ("s2.lockstep.4k-39", "s2.lockstep.64k-52", "s2.z3.index", "lg.shadow.pae"):
        registry.register(ob(i))
    ids = lambda p: [o.id for o in registry.select(p)]
    assert ids("s2.lockstep.*") == ["s2.lockstep.4k-39", "s2.lockstep.64k-52"]
    assert ids("lockstep") == ["s2.lockstep.4k-39", "s2.lockstep.64k-52"]  # substring
    assert ids("*.4K-*") == ["s2.lockstep.4k-39"]  # case-insensitive
    assert ids("z3,pae") == ["s2.z3.index", "lg.shadow.pae"]  # comma-separated, registration order
    assert ids("nothing*") == []
    assert len(registry.select(None)) == 4 == len(registry.all_obligations())


def test_select_by_profile(reg):
    registry.register(ob("a", profiles={"deep"}))
    registry.register(ob("b"))
    assert [o.id for o in registry.select(None, "quick")] == ["b"]
    assert [o.id for o in registry.select(None, "deep")] == ["a", "b"]
    assert registry.select("a", "deep")[0].profiles == {"deep"}


def test_default_profiles_are_all_three(reg):
    assert registry.register(ob()).profiles == {"quick", "default", "deep"}


def test_decorator_registers_and_returns_the_function(reg):
    @registry.obligation("t.deco", engine="z3", invariants=["S2-BA"], kernel_functions=["kvm_granule_shift"])
    def check(ctx):
        """Every granule shift is one the architecture allows."""
        return Result.proved(1)

    got = registry.get("t.deco")
    assert got.run is check and got.engine == "z3" and got.kernel_functions == ["kvm_granule_shift"]
    assert got.statement.startswith("Every granule shift")  # the docstring stands in for a statement


@pytest.mark.parametrize("kw, msg", [
    ({"engine": "magic"}, "engine"),
    ({"profiles": {"nightly"}}, "profiles"),
    ({"profiles": set()}, "profiles"),
    ({"id": "has space"}, "id"),
    ({"invariants": "S2-RC"}, "invariants"),
    ({"time_scale": 0}, "time_scale"),
])
def test_obligation_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ob(**kw)


def test_statement_required():
    with pytest.raises(ValueError, match="statement"):
        Obligation(id="x", engine="unit", invariants=[], statement="", run=lambda ctx: None)


def test_duplicate_id_rejected(reg):
    registry.register(ob("dup"))
    with pytest.raises(ValueError, match="twice"):
        registry.register(ob("dup"))


def test_isolated_restores_the_real_registry():
    before = registry.all_obligations()
    with registry.isolated():
        registry.register(ob("t.only-here"))
    assert registry.get("t.only-here") is None and registry.all_obligations() == before


def test_load_all_reports_broken_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "ptspec_test_broken", None)  # import of it raises ImportError
    with registry.isolated(["ptspec_test_broken", "ptspec_no_such_module_xyz"]):
        errors = registry.load_all()
        assert [m for m, _ in errors] == ["ptspec_test_broken", "ptspec_no_such_module_xyz"]
        assert registry.load_all() == errors  # not retried, not duplicated


def test_shipped_check_modules_import_and_register_real_obligations():
    for name in registry.CHECK_MODULES:
        importlib.import_module(name)  # every listed module exists and imports
    assert registry.load_all() == []
    for o in registry.all_obligations():
        assert o.statement and o.engine in registry.ENGINES


def test_profiles_have_the_same_keys_and_are_read_only():
    keys = {n: set(profiles.budget(n)) for n in profiles.PROFILE_NAMES}
    assert keys["quick"] == keys["default"] == keys["deep"]
    assert {"hypothesis_examples", "steps", "exhaustive_depth", "check_seconds"} <= keys["quick"]
    assert profiles.budget("quick")["check_seconds"] <= profiles.budget("deep")["check_seconds"]
    with pytest.raises(TypeError):
        profiles.budget("quick")["steps"] = 1
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.budget("nightly")


# -------------------------------------------------------------------------------------------- runner

def test_context_carries_profile_seed_budget_deadline():
    seen = {}

    def run(ctx: Context):
        seen.update(profile=ctx.profile, seed=ctx.seed, steps=ctx.budget["steps"], left=ctx.time_left(),
                    id=ctx.check_id, expired=ctx.expired())
        return Result.passed(3)

    r = registry.run_obligation(ob(run=run), "quick", 7)
    assert r.status == "passed" and r.examples == 3 and r.seconds >= 0
    assert (r.id, r.engine, r.invariants) == ("t.ok", "unit", ["S2-RC"])
    assert seen["profile"] == "quick" and seen["seed"] == 7 and seen["id"] == "t.ok"
    assert seen["steps"] == profiles.budget("quick")["steps"]
    assert 0 < seen["left"] <= profiles.hang_guard(profiles.budget("quick")) and not seen["expired"]
    # the deadline is the hang guard: far beyond the nominal time of a check
    assert seen["left"] > 3 * profiles.budget("quick")["check_seconds"]


def test_exception_is_error_with_traceback_summary():
    def run(ctx):
        raise KeyError("missing descriptor")

    r = registry.run_obligation(ob(run=run), "quick", 0)
    assert r.status == "error"
    assert "KeyError" in r.detail and "missing descriptor" in r.detail and "test_registry.py" in r.detail


def test_system_exit_is_error():
    def run(ctx):
        raise SystemExit(0)  # e.g. a tool's main() that exits 0: not a pass

    assert registry.run_obligation(ob(run=run), "quick", 0).status == "error"


@pytest.mark.parametrize("status", ["passed", "proved"])
def test_zero_examples_is_unknown(status):
    r = registry.run_obligation(ob(run=lambda ctx: Result(status, "looked good", examples=0)), "quick", 0)
    assert r.status == "unknown" and r.detail.startswith("nothing was checked")


@pytest.mark.parametrize("value", [None, True, "passed", Result("passed", examples=-1),
                                   Result("refuted", counterexample="ops"), Result("proved", examples=1, rlimit=1.5)])
def test_malformed_results_are_errors(value):
    assert registry.run_obligation(ob(run=lambda ctx: value), "quick", 0).status == "error"


def test_bad_status_is_error():
    r = registry.run_obligation(ob(run=lambda ctx: Result("ok")), "quick", 0)
    assert r.status == "error" and "status" in r.detail


def test_unknown_without_reason_gets_one():
    r = registry.run_obligation(ob(run=lambda ctx: Result("unknown")), "quick", 0)
    assert r.status == "unknown" and r.detail


def test_refuted_without_counterexample_is_flagged():
    r = registry.run_obligation(ob(run=lambda ctx: Result("refuted", "bad", examples=1)), "quick", 0)
    assert r.status == "refuted" and "no counterexample" in r.detail


def test_a_late_pass_is_a_pass():
    """A check that completes its budget is never "unknown" for being slow: here it takes five
    times its nominal time (20ms) and is still far from its hang guard."""
    def run(ctx):
        time.sleep(0.1)
        return Result.passed(10)

    r = registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0)  # 20ms nominal
    assert r.status == "passed" and r.seconds >= 0.1


def test_cpu_seconds_are_the_checks_own_cpu_time_children_included():
    """seconds is the wall clock, cpu_seconds what the check itself ran (and the processes it
    waited for): a sleeping check costs next to no CPU whatever the wall clock says, and one that
    burns 0.2 s, here or in a child process, reports at least that."""
    def sleep(ctx):
        time.sleep(0.2)
        return Result.passed(1)

    def burn(ctx):
        c0 = time.process_time()
        while time.process_time() - c0 < 0.2:
            pass
        return Result.passed(1)

    def child(ctx):
        import subprocess
        subprocess.run([sys.executable, "-c", "import time\nc = time.process_time()\n"
                        "while time.process_time() - c < 0.2: pass"], check=True)
        return Result.passed(1)

    slept = registry.run_obligation(ob(run=sleep), "quick", 0)
    assert slept.seconds >= 0.2 and slept.cpu_seconds < 0.1
    assert registry.run_obligation(ob(run=burn), "quick", 0).cpu_seconds >= 0.2
    assert registry.run_obligation(ob(run=child), "quick", 0).cpu_seconds >= 0.2


def test_a_check_that_stops_at_its_hang_guard_is_unknown():
    def run(ctx):
        n = 0
        while not ctx.expired():
            time.sleep(0.005)
            n += 1
        return Result.unknown("hang guard reached before the budget was completed", examples=n)

    r = registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0)
    assert r.status == "unknown" and "budget" in r.detail
    assert r.seconds >= profiles.hang_guard(profiles.budget("quick"), 0.002)


def test_refutation_after_the_deadline_stays_a_refutation():
    def run(ctx):
        time.sleep(0.05)
        return Result.refuted({"violations": ["S2-RC table 0x1000"]}, examples=4)

    assert registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0).status == "refuted"


def test_check_that_ignores_its_deadline_is_stopped(short_grace):
    def run(ctx):
        time.sleep(10)
        return Result.passed(1)

    t0 = time.monotonic()
    r = registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0)
    assert time.monotonic() - t0 < 2
    assert r.status == "unknown" and r.detail.startswith("stopped")


def test_check_that_swallows_the_stop_is_still_unknown(short_grace):
    def run(ctx):
        try:
            time.sleep(10)
        except BaseException:
            pass
        return Result.refuted({"violations": ["S2-RC artefact of the interruption"]})

    r = registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0)
    assert r.status == "unknown" and "stopped" in r.detail and r.counterexample is None


def test_check_that_swallows_the_stop_and_runs_on_is_stopped_again(short_grace):
    """A check that catches its stop and keeps going (as a mutant that loops does when the stop
    lands where it cannot propagate) is stopped by the next alarm; unknown, never its own word."""
    caught = []

    def run(ctx):
        while True:
            try:
                time.sleep(10)
            except registry.DeadlineExceeded:
                if caught:
                    raise
                caught.append(1)

    t0 = time.monotonic()
    r = registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0)
    assert time.monotonic() - t0 < 3 and caught == [1]
    assert r.status == "unknown" and r.detail.startswith("stopped")


def test_a_stop_landing_in_a_gc_callback_is_delivered_again_and_not_printed(short_grace, capsys):
    """The alarm fires while a gc callback runs (hypothesis registers one): Python cannot raise
    it there ("Exception ignored in ..."), so the check would run on past its guard; the stop is
    raised again outside the callback, and nothing is printed for the lost one. The first
    collection's callback runs for a second, so the first alarms land in it (on a machine so
    loaded that the first alarm comes before the callback, the stop is simply delivered)."""
    import gc
    in_callback = []

    def slow_callback(phase, info):
        if phase == "start" and not in_callback:
            in_callback.append(1)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                pass

    def run(ctx):
        gc.callbacks.append(slow_callback)
        try:
            while True:                           # runs on forever unless stopped
                gc.collect()
                time.sleep(0.01)
        finally:
            gc.callbacks.remove(slow_callback)

    t0 = time.monotonic()
    r = registry.run_obligation(ob(run=run, time_scale=0.002), "quick", 0)
    # the run never ends by itself, so returning at all is the stop; the bound only rules out a
    # stop that came by luck much later (each full collection of a loaded test process can take
    # a good part of a second: 12.9 s was seen once on a 2-core machine running three jobs)
    assert time.monotonic() - t0 < 60
    assert r.status == "unknown" and r.detail.startswith("stopped")
    err = capsys.readouterr().err
    assert "DeadlineExceeded" not in err and "Exception ignored" not in err, err


def test_the_stop_timer_is_off_and_the_hooks_restored_after_a_stop(short_grace):
    import signal
    import sys
    hook, handler = sys.unraisablehook, signal.getsignal(signal.SIGALRM)
    r = registry.run_obligation(ob(run=lambda ctx: time.sleep(10), time_scale=0.002), "quick", 0)
    assert r.status == "unknown"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert sys.unraisablehook is hook and signal.getsignal(signal.SIGALRM) is handler
    time.sleep(0.6)                               # no late stop arrives here


def test_progress_reaches_the_listener_and_a_broken_listener_is_harmless():
    events = []

    class L(registry.Listener):
        def progressed(self, o, advance, total, note):
            events.append((o.id, advance, total, note))
            raise RuntimeError("display broke")

    def run(ctx):
        ctx.progress(total=3)  # sets the total, does not advance
        ctx.progress()
        ctx.progress(note="phase 2")
        ctx.progress(2, note="done")
        return Result.passed(3)

    [r] = registry.run_all([ob(run=run)], "quick", 0, L())
    assert r.status == "passed"
    assert events == [("t.ok", 0, 3, None), ("t.ok", 1, None, None), ("t.ok", 0, None, "phase 2"),
                      ("t.ok", 2, None, "done")]


def test_keyboard_interrupt_marks_current_and_rest_unknown():
    def stop(ctx):
        raise KeyboardInterrupt

    results = registry.run_all([ob("a"), ob("b", run=stop), ob("c")], "quick", 0)
    assert [(r.id, r.status) for r in results] == [("a", "passed"), ("b", "unknown"), ("c", "unknown")]
    assert "interrupted" in results[1].detail and results[2].detail.startswith("not run")


def test_stop_passes_through_hypothesis_instead_of_becoming_a_counterexample(short_grace):
    from hypothesis import given, settings, strategies as st

    def run(ctx):
        @settings(max_examples=10**6, deadline=None, database=None)
        @given(st.integers())
        def prop(x):
            time.sleep(0.01)

        try:
            prop()
        except Exception as exc:  # what a hypothesis check does with a falsifying example
            return Result.refuted({"violations": [f"S2-RC {exc}"]})
        return Result.passed(10**6)

    r = registry.run_obligation(ob(run=run, engine="hypothesis", time_scale=0.01), "quick", 0)
    assert r.status == "unknown" and r.detail.startswith("stopped")


def test_check_modules_follow_the_current_registry():
    assert registry.check_modules() == registry.CHECK_MODULES
    with registry.isolated(["ptspec_a", "ptspec_b"]):
        assert registry.check_modules() == ["ptspec_a", "ptspec_b"]


def test_cpu_rate_is_a_whole_number_and_takes_a_zero_time():
    assert registry.cpu_rate(3000, 1.5) == "2000"
    assert registry.cpu_rate(7, 2.0) == "4"          # rounded, not cut
    assert registry.cpu_rate(5, 0.0) == "5000000000"  # a zero time counts as 1 ns
