"""`ptspec verify --junit FILE`: JUnit XML, parsed back with xml.etree and checked element by element."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET

import pytest

from ptspec.proofs.cli import main as cli
from ptspec.proofs.runner import registry
from ptspec.proofs.report import junit as report_junit
from ptspec.proofs.runner.registry import Obligation, Result

CX = {"ops": "pgt.map(0x200000, 0x1000, 0x40000000, prot=R | W)",
      "violations": ["S2-OWN descriptor 0x2 at 0x6008: owner bits set \x01\x1b[31m"]}


def sample():
    return [Result("passed", "lock-step", 30, id="s2.lockstep.4k-39", engine="hypothesis", seconds=0.5),
            Result("proved", "", 4, id="s2.z3.index", engine="z3", rlimit=99, seconds=0.1234),
            Result("refuted", "diverged", 1, CX, id="s2.bad", engine="exhaustive", invariants=["S2-OWN"],
                   seconds=2.0),
            Result("unknown", "z3 timed out after 5000 ms", id="s2.z3.slow", engine="z3", seconds=5.0),
            Result("error", "ZeroDivisionError: division by zero\n  at x.py:1 in f", id="s2.crash",
                   engine="unit", seconds=0.01)]


def parse(text):
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n')
    return ET.fromstring(text.encode("utf-8"))


def test_structure_counts_and_times():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5)
    root = parse(report_junit.dumps(report_junit.build(sample(), "quick", 7, wall_seconds=4.5, shard="2/3",
                                                       jobs=2, timestamp=when)))
    assert root.tag == "testsuites" and root.get("name") == "ptspec"
    (suite,) = root.findall("testsuite")
    for el in (root, suite):
        assert (el.get("tests"), el.get("failures"), el.get("errors"), el.get("skipped"), el.get("time")) == \
               ("5", "1", "1", "1", "4.500")
    assert suite.get("name") == "ptspec" and suite.get("timestamp") == "2026-01-02T03:04:05"
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props == {"ptspec": "0.1.0", "profile": "quick", "seed": "7", "shard": "2/3", "jobs": "2"}
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name"), c.get("time")) for c in cases] == [
        ("hypothesis", "s2.lockstep.4k-39", "0.500"), ("z3", "s2.z3.index", "0.123"),
        ("exhaustive", "s2.bad", "2.000"), ("z3", "s2.z3.slow", "5.000"), ("unit", "s2.crash", "0.010")]


def test_outcome_elements():
    root = parse(report_junit.dumps(report_junit.build(sample(), "default", 0)))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    passed = cases["s2.lockstep.4k-39"]
    assert [e.tag for e in passed] == ["system-out"] and passed[0].text == "passed: 30 checked; lock-step"
    assert [e.tag for e in cases["s2.z3.index"]] == ["system-out"]
    (failure,) = cases["s2.bad"]
    assert failure.tag == "failure" and failure.get("type") == "refuted"
    assert failure.get("message") == "counterexample: breaks S2-OWN"
    assert "pgt.map(0x200000, 0x1000, 0x40000000, prot=R | W)" in failure.text
    assert "\ufffd\ufffd[31m" in failure.text  # control characters XML cannot hold are replaced
    (error,) = cases["s2.crash"]
    assert error.tag == "error" and error.get("message") == "ZeroDivisionError: division by zero"
    assert "at x.py:1 in f" in error.text
    (skipped,) = cases["s2.z3.slow"]
    assert skipped.tag == "skipped" and skipped.get("message") == "z3 timed out after 5000 ms"
    # without a wall-clock time the suite's time is the sum of the checks' times
    assert root.get("time") == "7.633"


def test_empty_run_is_a_valid_empty_suite():
    root = parse(report_junit.dumps(report_junit.build([], "quick", 0)))
    assert root.find("testsuite").get("tests") == "0" and root.find("testsuite").findall("testcase") == []


@pytest.fixture
def reg():
    with registry.isolated() as r:
        yield r


def add(id, status, cx=None):
    registry.register(Obligation(id=id, engine="z3", invariants=["S2-RC"], statement=f"fake {id}",
                                 run=lambda ctx: Result(status, "why", 2, cx, 1000)))


def test_cli_writes_junit(reg, capsys, tmp_path):
    add("t.a", "proved")
    add("t.bad", "refuted", {"ops": "pgt.unmap(0x1000, 0x1000)"})
    path = tmp_path / "junit.xml"
    code = cli.main(["verify", "--profile", "quick", "--junit", str(path), "--shard", "1/1"])
    capsys.readouterr()
    assert code == 1
    root = ET.parse(path).getroot()
    cases = root.find("testsuite").findall("testcase")
    assert [(c.get("name"), [e.tag for e in c]) for c in cases] == [("t.a", ["system-out"]),
                                                                    ("t.bad", ["failure"])]
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["profile"] == "quick" and props["shard"] == "1/1"
    assert float(root.get("time")) > 0


def test_cli_unwritable_junit_path_exits_2(reg, capsys, tmp_path):
    add("t.a", "proved")
    code = cli.main(["verify", "--profile", "quick", "--junit", str(tmp_path / "no" / "such" / "dir.xml")])
    assert code == 2 and "cannot write" in capsys.readouterr().err
