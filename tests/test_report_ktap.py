"""`ptspec verify --ktap`: KTAP version 1 on stdout, read back with a strict reader written here.

The reader follows Documentation/dev-tools/ktap.rst for the flat (un-nested) case ptspec writes:
version line, plan line, result lines numbered 1..N without gaps, each optionally followed by
' # DIRECTIVE data', and '# ' diagnostic lines. It rejects any other line, so "stdout carries only
KTAP" is checked, not assumed.
"""

from __future__ import annotations

import io
import re
import sys

import pytest

from ptspec.proofs.cli import main as cli
from ptspec.proofs.runner import registry
from ptspec.proofs.report import ktap as report_ktap
from ptspec.proofs.runner.registry import Obligation, Result

_RESULT = re.compile(r"^(ok|not ok) ([0-9]+)(?: ([^#]*?))?(?: # ?(?:(SKIP|TODO|XFAIL|TIMEOUT|ERROR)\b ?)?(.*))?$")
DIRECTIVE_STATUS = {None: None, "SKIP": "skipped", "ERROR": "error", "TIMEOUT": "timeout"}


def read_ktap(text: str) -> dict:
    """{"plan": N, "tests": [{number, ok, name, directive, data, diagnostics}], "tail": [...]}."""
    lines = text.splitlines()
    assert lines[:1] == ["KTAP version 1"], f"first line is not the version line: {lines[:1]}"
    plan = re.fullmatch(r"1\.\.([0-9]+)", lines[1] if len(lines) > 1 else "")
    assert plan, f"second line is not a plan: {lines[1:2]}"
    tests, diags = [], []
    for line in lines[2:]:
        if line.startswith("# "):
            diags.append(line[2:])
            continue
        m = _RESULT.match(line)
        assert m, f"not a KTAP line: {line!r}"
        ok, number, name, directive, data = m.groups()
        assert int(number) == len(tests) + 1, f"test number {number} after {len(tests)} tests"
        tests.append({"number": int(number), "ok": ok == "ok", "name": name, "directive": directive,
                      "data": data, "diagnostics": diags})
        diags = []
    assert len(tests) == int(plan.group(1)), f"plan says {plan.group(1)}, got {len(tests)} tests"
    return {"plan": int(plan.group(1)), "tests": tests, "tail": diags}


def outcome(test: dict) -> str:
    """What a KTAP consumer concludes: pass, fail, skipped, error."""
    if test["directive"]:
        return DIRECTIVE_STATUS[test["directive"]]
    return "pass" if test["ok"] else "fail"


CX = {"ops": "pgt.map(0x200000, 0x1000, 0x40000000, prot=R | W)",
      "violations": ["S2-RC table 0x5000 at level 2: refcount 1, counted descriptors 1"]}


def sample():
    return [Result("passed", "lock-step", 30, id="s2.lockstep.4k-39", engine="hypothesis", seconds=0.5),
            Result("proved", "", 4, id="s2.z3.index", engine="z3", rlimit=99, seconds=0.1),
            Result("refuted", "diverged", 1, CX, id="s2.bad", engine="exhaustive", invariants=["S2-RC"]),
            Result("unknown", "z3 timed out\nafter 5000 ms", id="s2.z3.slow", engine="z3"),
            Result("error", "ZeroDivisionError: division by zero\n  at x.py:1 in f", id="s2#odd", engine="unit")]


def test_render_reads_back_with_one_test_per_result():
    text = report_ktap.render(sample(), note="ptspec verify: profile quick")
    doc = read_ktap(text)
    assert doc["plan"] == 5
    assert [t["name"] for t in doc["tests"]] == ["s2.lockstep.4k-39", "s2.z3.index", "s2.bad", "s2.z3.slow",
                                                 "s2_odd"]  # '#' cannot appear in a description
    assert [outcome(t) for t in doc["tests"]] == ["pass", "pass", "fail", "skipped", "error"]
    assert not doc["tests"][3]["ok"]  # an unknown is never "ok", even to a reader ignoring SKIP
    assert doc["tests"][3]["data"] == "z3 timed out"
    assert doc["tests"][4]["data"] == "ZeroDivisionError: division by zero"
    bad = doc["tests"][2]["diagnostics"]
    assert bad[0] == "=== counterexample: s2.bad breaks S2-RC"
    assert "pgt.map(0x200000, 0x1000, 0x40000000, prot=R | W)" in bad
    assert "s2.z3.slow: unknown after 0.00s (z3): z3 timed out" in doc["tests"][3]["diagnostics"]
    assert "after 5000 ms" in doc["tests"][3]["diagnostics"]  # the rest of the reason, as diagnostics
    assert doc["tests"][0]["diagnostics"] == ["ptspec verify: profile quick",
                                              "s2.lockstep.4k-39: passed, 30 checked in 0.50s (hypothesis): lock-step"]
    assert doc["tail"] == ["Totals: pass:2 fail:1 skip:1 error:1"]
    assert text.splitlines()[:3] == ["KTAP version 1", "1..5", "# ptspec verify: profile quick"]


def test_reader_rejects_what_is_not_ktap():
    good = report_ktap.render(sample()[:2])
    for broken in (good.replace("KTAP version 1", "TAP version 13"), good.replace("ok 2", "ok 3"),
                   good.replace("1..2", "1..3"), good + "stray output\n"):
        with pytest.raises(AssertionError):
            read_ktap(broken)


def test_stream_writes_in_test_order_whatever_the_completion_order():
    results = sample()
    out = io.StringIO()
    stream = report_ktap.KtapStream(out, len(results))
    for position in (2, 0, 4, 3):
        stream.add(position, results[position])
    written = [line for line in out.getvalue().splitlines() if not line.startswith("#")]
    assert written == ["KTAP version 1", "1..5", "ok 1 s2.lockstep.4k-39"]  # 3, 4, 5 wait for 2
    stream.add(1, results[1])
    stream.close()
    assert out.getvalue() == report_ktap.render(results)


def test_stream_close_reports_missing_results_as_errors():
    out = io.StringIO()
    stream = report_ktap.KtapStream(out, 2)
    stream.add(0, sample()[0])
    stream.close()
    doc = read_ktap(out.getvalue())
    assert [outcome(t) for t in doc["tests"]] == ["pass", "error"]


# ---------------------------------------------------------------------------------------------- CLI

@pytest.fixture
def reg():
    with registry.isolated() as r:
        yield r


def add(id, status="passed", detail="", cx=None, printing=False):
    def run(ctx):
        if printing:
            print("a check that prints to stdout")
        return Result(status, detail, 3, cx)

    registry.register(Obligation(id=id, engine="hypothesis", invariants=["S2-RC"], statement=f"fake {id}",
                                 run=run))


def ktap_run(capsys, *args):
    code = cli.main(["verify", "--profile", "quick", "--ktap", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ktap_stdout_is_only_ktap(reg, capsys):
    add("t.a", printing=True)
    add("t.bad", status="refuted", cx=CX, detail="diverged")
    add("t.maybe", status="unknown", detail="budget spent")
    code, out, err = ktap_run(capsys, "--seed", "7")
    assert code == 1
    doc = read_ktap(out)
    assert [(t["name"], outcome(t)) for t in doc["tests"]] == [("t.a", "pass"), ("t.bad", "fail"),
                                                               ("t.maybe", "skipped")]
    assert doc["tests"][0]["diagnostics"][0] == "ptspec 0.1.0 verify: profile quick, seed 7"
    assert doc["tests"][2]["data"] == "budget spent"
    # the human output and what the check printed went to stderr
    assert "a check that prints to stdout" in err and "ptspec verify" in err and "[1/3] passed" in err
    assert "counterexample: t.bad breaks S2-RC" in err


def test_cli_ktap_all_passed_exits_0(reg, capsys):
    add("t.a")
    code, out, _ = ktap_run(capsys)
    assert code == 0 and [outcome(t) for t in read_ktap(out)["tests"]] == ["pass"]


def test_cli_ktap_nothing_checked_has_an_empty_plan(reg, capsys):
    code, out, err = ktap_run(capsys)
    doc = read_ktap(out)
    assert code == 2 and doc["plan"] == 0
    assert doc["tail"][1:] == ["nothing checked: no obligations are registered", "Totals: pass:0 fail:0 skip:0 error:0"]


def test_cli_ktap_counts_a_broken_check_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ptspec_test_broken_ktap", None)
    with registry.isolated(["ptspec_test_broken_ktap"]):
        add("t.a")
        code, out, _ = ktap_run(capsys)
    doc = read_ktap(out)
    assert code == 2 and [(t["name"], outcome(t)) for t in doc["tests"]] == [
        ("load:ptspec_test_broken_ktap", "error"), ("t.a", "pass")]
