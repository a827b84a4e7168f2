"""`ptspec verify --jobs N`: obligations run in worker processes (proofs/runner/parallel.py).

Workers are fresh interpreters ('spawn') that import the registry's check modules, so the fake
obligations here live in a check module written to a temporary directory, imported by the parent
and by every worker the way proofs/*/checks*.py are. One test runs a real obligation.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import textwrap
import uuid

import pytest

from ptspec.proofs.cli import main as cli
from ptspec.proofs.runner import parallel
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Listener, Obligation, Result

FAKE_CHECKS = textwrap.dedent('''
    """Fake check module for tests/test_cli_jobs.py: one obligation per behaviour a worker must handle."""
    import os
    import signal
    import time

    from ptspec.proofs.runner.registry import Result, obligation

    INV = ["S2-RC"]

    @obligation("f.a.slow", engine="hypothesis", invariants=INV)
    def slow(ctx):
        """Passes after a while, so it finishes after obligations registered later."""
        ctx.progress(total=5)
        for _ in range(5):
            time.sleep(0.12)
            ctx.progress()
        return Result.passed(5, detail=f"pid {os.getpid()}")

    @obligation("f.b.fast", engine="z3", invariants=INV)
    def fast(ctx):
        """Proved at once, with a z3 resource count."""
        return Result.proved(1, detail=f"pid {os.getpid()}", rlimit=4321)

    @obligation("f.c.refuted", engine="exhaustive", invariants=INV)
    def refuted(ctx):
        """Finds a counterexample, part of which cannot be pickled."""
        return Result.refuted({"ops": "pgt.map(0x1000, 0x1000, 0x40000000)", "pages": {0x1000},
                               "violations": ["S2-RC table 0x5000: refcount 2, counted 0"],
                               "opaque": lambda: None})

    @obligation("f.d.unknown", engine="crosshair", invariants=INV)
    def unknown(ctx):
        """Gives up."""
        return Result.unknown("solver timed out")

    @obligation("f.e.crash", engine="unit", invariants=INV)
    def crash(ctx):
        """Kills its own process, as a crash in C code would."""
        os._exit(7)

    @obligation("f.f.signal", engine="unit", invariants=INV)
    def killed(ctx):
        """Dies of SIGKILL (the OOM killer)."""
        os.kill(os.getpid(), signal.SIGKILL)

    @obligation("f.g.loop", engine="unit", invariants=INV, time_scale=0.005)
    def loop(ctx):
        """Ignores its deadline; the SIGALRM hard stop must end it inside the worker."""
        while True:
            time.sleep(0.01)

    @obligation("f.h.stuck", engine="unit", invariants=INV, time_scale=0.005)
    def stuck(ctx):
        """Blocks SIGALRM, like a C call that never returns to Python: only a kill ends it."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
        return Result.passed(1)

    @obligation("f.i.prints", engine="unit", invariants=INV)
    def prints(ctx):
        """Writes to stdout, which must not reach the parent's stdout under --ktap."""
        print("noise from a check")
        os.write(1, b"noise at the file descriptor\\n")
        return Result.passed(1)
''')


@pytest.fixture(scope="module")
def fake_module(tmp_path_factory):
    name = f"ptspec_fake_checks_{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("fakechecks")
    (folder / f"{name}.py").write_text(FAKE_CHECKS)
    sys.path.insert(0, str(folder))  # workers get the parent's sys.path
    yield name
    sys.path.remove(str(folder))
    sys.modules.pop(name, None)


@pytest.fixture
def fakes(fake_module):
    """An isolated registry whose only check module is the fake one (imported afresh)."""
    sys.modules.pop(fake_module, None)
    with registry.isolated([fake_module]) as reg:
        assert registry.load_all() == []
        yield reg


def verify(capsys, *args):
    code = cli.main(["verify", "--profile", "quick", *args])
    out, err = capsys.readouterr()
    return code, out, err


def run(pattern, jobs=2, listener=None):
    return parallel.run_parallel(registry.select(pattern, "quick"), "quick", 0, jobs, listener)


class Recorder(Listener):
    def __init__(self):
        self.events = []

    def started(self, ob, index, count):
        self.events.append(("started", ob.id))

    def progressed(self, ob, advance, total, note):
        self.events.append(("progress", ob.id, advance, total))

    def finished(self, ob, result, index, count):
        self.events.append(("finished", ob.id, result.status))


def test_results_come_back_in_registry_order_from_worker_processes(fakes):
    rec = Recorder()
    results = run("f.a.slow,f.b.fast,f.c.refuted,f.d.unknown", listener=rec)
    assert [r.id for r in results] == ["f.a.slow", "f.b.fast", "f.c.refuted", "f.d.unknown"]
    assert [r.status for r in results] == ["passed", "proved", "refuted", "unknown"]
    finished = [e[1] for e in rec.events if e[0] == "finished"]
    assert finished.index("f.b.fast") < finished.index("f.a.slow")  # completion order differs
    pids = {r.detail for r in results[:2]}
    assert f"pid {multiprocessing.current_process().pid}" not in pids  # not run in this process
    assert results[1].rlimit == 4321 and results[1].engine == "z3" and results[1].invariants == ["S2-RC"]
    assert all(r.seconds > 0 for r in results)
    assert results[3].detail == "solver timed out"
    # progress from the worker reaches the parent's listener, none of it lost to throttling
    slow = [e for e in rec.events if e[0] == "progress" and e[1] == "f.a.slow"]
    assert sum(e[2] for e in slow) == 5 and any(e[3] == 5 for e in slow)


def test_unpicklable_counterexample_comes_back_as_plain_values(fakes):
    (r,) = run("f.c.refuted")
    cx = r.counterexample
    assert r.status == "refuted" and cx["pages"] == [0x1000] and cx["opaque"].startswith("<function")
    assert cx["violations"] == ["S2-RC table 0x5000: refcount 2, counted 0"]


def test_a_crashing_worker_is_an_error_for_its_obligation_and_the_rest_still_run(fakes):
    results = run("f.e.crash,f.a.slow,f.f.signal,f.b.fast", jobs=2)
    by_id = {r.id: r for r in results}
    assert [r.id for r in results] == ["f.a.slow", "f.b.fast", "f.e.crash", "f.f.signal"]
    assert by_id["f.e.crash"].status == "error" and "exit code 7" in by_id["f.e.crash"].detail
    assert by_id["f.f.signal"].status == "error" and "SIGKILL" in by_id["f.f.signal"].detail
    assert by_id["f.a.slow"].status == "passed" and by_id["f.b.fast"].status == "proved"
    assert by_id["f.e.crash"].engine == "unit" and by_id["f.e.crash"].invariants == ["S2-RC"]
    assert multiprocessing.active_children() == []


def test_deadlines_apply_inside_workers_and_a_stuck_worker_is_killed(fakes, monkeypatch):
    monkeypatch.setattr(parallel, "KILL_MARGIN_SECONDS", 1.0)
    loop, stuck = run("f.g.loop,f.h.stuck", jobs=2)
    assert loop.status == "unknown" and loop.detail.startswith("stopped: still running")  # SIGALRM
    assert stuck.status == "unknown" and "worker process was killed" in stuck.detail
    assert multiprocessing.active_children() == []


def test_an_obligation_registered_outside_a_check_module_is_an_error_in_a_worker(capsys):
    with registry.isolated([]):
        registry.register(Obligation(id="t.inline", engine="unit", invariants=["S2-RC"], statement="inline",
                                     run=lambda ctx: Result.passed(1)))
        code, out, _ = verify(capsys, "--jobs", "2")
    assert code == 2 and "not registered in the worker process" in out


def test_interrupt_marks_running_and_waiting_obligations_unknown(fakes):
    class Interrupt(Recorder):
        def started(self, ob, index, count):
            super().started(ob, index, count)
            if index == 1:
                raise KeyboardInterrupt

    results = run("f.a.slow,f.b.fast,f.c.refuted,f.d.unknown", jobs=2, listener=Interrupt())
    assert [r.id for r in results] == ["f.a.slow", "f.b.fast", "f.c.refuted", "f.d.unknown"]
    assert [r.detail for r in results] == ["interrupted by the user"] * 2 + ["not run: interrupted by the user"] * 2
    assert all(r.status == "unknown" for r in results)
    assert multiprocessing.active_children() == []


def test_cli_jobs_report_matches_a_serial_run(fakes, capsys, tmp_path):
    pattern = "f.a.slow,f.b.fast,f.c.refuted,f.d.unknown"
    reports = []
    for jobs in ("1", "3"):
        path = tmp_path / f"r{jobs}.json"
        code, out, _ = verify(capsys, "--only", pattern, "--jobs", jobs, "--json", str(path))
        assert code == 1 and "counterexample: f.c.refuted breaks S2-RC" in out
        reports.append(json.loads(path.read_text()))
    strip = lambda rep: [(c["id"], c["status"], c["engine"], c["rlimit"], c["examples"]) for c in rep["checks"]]
    assert strip(reports[0]) == strip(reports[1])
    assert reports[1]["jobs"] == 3 and reports[0]["jobs"] == 1
    assert reports[1]["summary"]["wall_seconds"] > 0


def test_jobs_auto_is_one_worker_per_available_cpu(capsys, tmp_path, monkeypatch):
    """--jobs auto: as many workers as CPUs this process may use (at most AUTO_JOBS_MAX); the
    report says how many, and the summary line gives the run's wall time before the checks' sum."""
    from ptspec.proofs.cli import verify_args
    parse = verify_args.jobs_arg("--jobs")
    monkeypatch.setattr(verify_args, "available_cpus", lambda: 3)
    assert parse("auto") == parse("AUTO") == 3 and parse("5") == 5
    monkeypatch.setattr(verify_args, "available_cpus", lambda: 64)
    assert parse("auto") == verify_args.AUTO_JOBS_MAX
    monkeypatch.setattr(verify_args, "available_cpus", lambda: 2)
    path = tmp_path / "auto.json"
    code, out, _ = verify(capsys, "--only", "s2.errorpaths", "--jobs", "auto", "--json", str(path))
    rep = json.loads(path.read_text())
    assert code == 0 and rep["jobs"] == 2
    assert "s of checks in worker processes, " in out and "s CPU)" in out


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5", "auto2", ""])
def test_bad_jobs_is_a_usage_error(capsys, bad):
    assert cli.main(["verify", "--jobs", bad]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_real_obligation_runs_in_a_worker(capsys, tmp_path):
    """The process path with the real registry: spawned workers import proofs/*/checks*.py themselves."""
    path = tmp_path / "real.json"
    code, out, err = verify(capsys, "--only", "s2.errorpaths", "--jobs", "2", "--json", str(path))
    rep = json.loads(path.read_text())
    assert [c["id"] for c in rep["checks"]] == ["s2.errorpaths"], out + err
    check = rep["checks"][0]
    assert code == 0 and check["status"] == "passed" and check["examples"] > 0
    assert rep["jobs"] == 2 and multiprocessing.active_children() == []


def test_ktap_with_jobs_keeps_what_workers_print_off_stdout(fakes, capfd):
    from test_report_ktap import outcome, read_ktap  # the strict KTAP reader

    code = cli.main(["verify", "--profile", "quick", "--ktap", "--jobs", "2",
                     "--only", "f.i.prints,f.a.slow,f.b.fast,f.e.crash"])
    out, err = capfd.readouterr()
    doc = read_ktap(out)  # fails on any line that is not KTAP
    assert [(t["name"], outcome(t)) for t in doc["tests"]] == [
        ("f.a.slow", "pass"), ("f.b.fast", "pass"), ("f.e.crash", "error"), ("f.i.prints", "pass")]
    assert code == 2 and "jobs 2" in doc["tests"][0]["diagnostics"][0]
    assert "noise from a check" in err and "noise at the file descriptor" in err


def test_workers_that_die_while_loading_check_modules_lose_nothing(tmp_path, monkeypatch):
    """A check module that kills worker processes at import: every obligation is an error, none vanishes."""
    name = f"ptspec_fake_dying_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
        """Fake check module that exits when imported in a worker process."""
        import multiprocessing, os
        from ptspec.proofs.runner.registry import Result, obligation
        if multiprocessing.current_process().name == "ptspec-worker":
            os._exit(3)
        for i in range(3):
            obligation(f"d.{i}", engine="unit", invariants=["S2-RC"], statement="dies")(
                lambda ctx: Result.passed(1))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    with registry.isolated([name]):
        assert registry.load_all() == []
        results = run("d.", jobs=2)
    sys.modules.pop(name, None)
    assert [r.id for r in results] == ["d.0", "d.1", "d.2"]
    assert all(r.status == "error" and "exit code 3" in r.detail for r in results)
    assert multiprocessing.active_children() == []


def test_progress_bars_with_several_checks_running_at_once(fakes, monkeypatch):
    import io

    from rich.console import Console

    buf = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=buf, force_terminal=True, width=100))
    code = cli.main(["verify", "--profile", "quick", "--jobs", "2", "--only", "f.a.slow,f.b.fast,f.c.refuted"])
    text = buf.getvalue()
    assert code == 1
    assert "f.a.slow" in text and "f.b.fast" in text and "counterexample: f.c.refuted breaks S2-RC" in text


def test_shard_and_jobs_combine(fakes, capsys, tmp_path):
    pattern = "f.a.slow,f.b.fast,f.c.refuted,f.d.unknown"
    seen = []
    for i in (1, 2):
        path = tmp_path / f"s{i}.json"
        verify(capsys, "--only", pattern, "--jobs", "2", "--shard", f"{i}/2", "--json", str(path))
        rep = json.loads(path.read_text())
        assert rep["shard"] == f"{i}/2" and rep["jobs"] == 2
        seen.append([c["id"] for c in rep["checks"]])
    assert seen == [["f.a.slow", "f.c.refuted"], ["f.b.fast", "f.d.unknown"]]
