"""The `ptspec` command: exit codes, output, the JSON report, check-state, list and explain.

Obligations and the spec module are fakes registered or monkeypatched here only.
"""

from __future__ import annotations

import io
import json
import sys
import types

import pytest
from rich.console import Console

from ptspec.proofs.cli import main as cli
from ptspec.proofs.runner import registry
from ptspec.proofs.report import results as report
from ptspec.proofs.runner.registry import Obligation, Result

CX = {"ops": "pgt = KvmPgtable.init(ia_bits=39)\npgt.map(0x200000, 0x1000, 0x40000000, prot=R | W)",
      "tables": "0x0000200000-0x0000201000  4K  L3  R W  owner 0",
      "violations": ["S2-RC table 0x5000 at level 2: refcount 1, counted descriptors 1"],
      "kernel_function": "stage2_map_walker_try_leaf"}


@pytest.fixture
def reg():
    with registry.isolated() as r:
        yield r


def add(id, status="passed", examples=5, engine="hypothesis", profiles=None, **kw):
    def run(ctx):
        ctx.progress(total=examples)
        for _ in range(examples):
            ctx.progress()
        return Result(status, kw.get("detail", ""), examples, kw.get("counterexample"), kw.get("rlimit"))

    extra = {} if profiles is None else {"profiles": profiles}
    registry.register(Obligation(id=id, engine=engine, invariants=["S2-RC", "S2-TREE"],
                                 statement=f"fake {id}", run=run, kernel_functions=["kvm_pgtable_stage2_map"],
                                 **extra))


def verify(capsys, *args):
    code = cli.main(["verify", "--profile", "quick", *args])
    out, err = capsys.readouterr()
    return code, out, err


# -------------------------------------------------------------------------------------------- verify

def test_all_passed_exits_0(reg, capsys):
    add("t.a")
    add("t.b", status="proved", engine="z3", rlimit=1234)
    code, out, _ = verify(capsys)
    assert code == 0
    assert "t.a" in out and "proved" in out and "ptspec verify" in out


def test_refuted_exits_1_and_prints_the_counterexample(reg, capsys):
    add("t.a")
    add("t.bad", status="refuted", counterexample=CX, detail="lock-step diverged")
    add("t.unsure", status="unknown", detail="z3 timed out")
    code, out, _ = verify(capsys)
    assert code == 1  # a counterexample wins over an unknown
    assert "counterexample: t.bad breaks S2-RC" in out
    assert "```python\npgt = KvmPgtable.init(ia_bits=39)\npgt.map(0x200000, 0x1000, 0x40000000, prot=R | W)\n```" in out
    assert "0x0000200000-0x0000201000" in out and "stage2_map_walker_try_leaf" in out
    assert "t.unsure: unknown: z3 timed out" in out


@pytest.mark.parametrize("status", ["unknown", "error"])
def test_unknown_or_error_exits_2(reg, capsys, status):
    add("t.a")
    add("t.b", status=status, detail="why")
    assert verify(capsys)[0] == 2


def test_zero_examples_exits_2(reg, capsys):
    add("t.empty", examples=0)
    code, out, _ = verify(capsys)
    assert code == 2 and "nothing was checked" in out


def test_nothing_selected_exits_2_with_a_message(reg, capsys, tmp_path):
    add("t.a", profiles={"deep"})
    code, _, err = verify(capsys, "--json", str(tmp_path / "r.json"))
    assert code == 2 and "nothing checked" in err and "profile 'quick'" in err
    assert json.loads((tmp_path / "r.json").read_text())["checks"] == []
    code, _, err = verify(capsys, "--only", "nomatch")
    assert code == 2 and "nomatch" in err


def test_nothing_registered_exits_2(reg, capsys):
    code, _, err = verify(capsys)
    assert code == 2 and "no obligations are registered" in err


def test_broken_check_module_is_an_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ptspec_test_broken_checks", None)
    with registry.isolated(["ptspec_test_broken_checks"]):
        add("t.a")
        code, out, _ = verify(capsys)
    assert code == 2 and "load:ptspec_test_broken_checks" in out


def test_only_selects_by_pattern(reg, capsys, tmp_path):
    add("s2.lockstep.4k")
    add("s2.lockstep.64k", status="refuted", counterexample=CX)
    add("s2.z3.index")
    code, out, _ = verify(capsys, "--only", "*.4k", "--only", "z3", "--json", str(tmp_path / "r.json"))
    assert code == 0
    ids = [c["id"] for c in json.loads((tmp_path / "r.json").read_text())["checks"]]
    assert ids == ["s2.lockstep.4k", "s2.z3.index"]


def test_json_report_keys(reg, capsys, tmp_path):
    add("t.a", examples=3)
    add("t.z3", status="proved", engine="z3", examples=1, rlimit=777)
    add("t.bad", status="refuted", counterexample=CX)
    path = tmp_path / "report.json"
    code, _, _ = verify(capsys, "--seed", "42", "--json", str(path))
    assert code == 1
    rep = json.loads(path.read_text())
    assert set(rep) >= {"ptspec", "profile", "seed", "checks", "summary"}
    assert rep["profile"] == "quick" and rep["seed"] == 42 and rep["ptspec"]
    for c in rep["checks"]:
        assert set(c) >= {"id", "engine", "invariants", "status", "seconds", "cpu_seconds", "detail",
                          "counterexample", "examples", "rlimit"}
        assert isinstance(c["seconds"], float) and c["invariants"] == ["S2-RC", "S2-TREE"]
        assert isinstance(c["cpu_seconds"], float) and c["cpu_seconds"] >= 0
    by_id = {c["id"]: c for c in rep["checks"]}
    assert by_id["t.z3"]["status"] == "proved" and by_id["t.z3"]["rlimit"] == 777
    assert by_id["t.a"]["examples"] == 3 and by_id["t.a"]["counterexample"] is None
    assert by_id["t.bad"]["counterexample"] == CX
    s = rep["summary"]
    assert (s["passed"], s["refuted"], s["unknown"], s["error"]) == (2, 1, 0, 0)  # proved counts as passed
    assert isinstance(s["seconds"], float)
    assert s["cpu_seconds"] == round(sum(c["cpu_seconds"] for c in rep["checks"]), 3)


def test_report_serialises_odd_values():
    r = Result("refuted", examples=1, counterexample={"pages": {0x1000}, "blob": b"\x01", "obj": object()},
               id="x", engine="unit")
    rep = json.loads(report.dumps(report.build_report([r], "quick", 0)))
    assert rep["checks"][0]["counterexample"]["pages"] == [4096]


def test_exit_code_precedence():
    def r(s):
        return Result(s, examples=1)

    assert report.exit_code([]) == 2
    assert report.exit_code([r("passed"), r("proved")]) == 0
    assert report.exit_code([r("passed"), r("unknown")]) == 2
    assert report.exit_code([r("error"), r("refuted"), r("unknown")]) == 1


def test_without_a_terminal_one_line_per_check_and_no_escape_codes(reg, capsys):
    for i in range(3):
        add(f"t.{i}", examples=200)  # 600 progress calls must not show up as 600 lines
    code, out, _ = verify(capsys)
    assert code == 0
    assert "\x1b[" not in out
    lines = [l for l in out.splitlines() if l.startswith("[")]
    assert lines == [f"[{i + 1}/3] passed   t.{i} (hypothesis, " + l.split(", ", 1)[1] for i, l in enumerate(lines)]
    assert len(out.splitlines()) < 25


def test_with_a_terminal_progress_bars_work(reg, capsys, monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(cli, "_console", lambda: Console(file=buf, force_terminal=True, width=100))
    add("t.a", examples=50)
    add("t.bad", status="refuted", counterexample=CX)
    assert cli.main(["verify", "--profile", "quick"]) == 1
    text = buf.getvalue()
    assert "t.a" in text and "counterexample: t.bad" in text


def test_render_counterexample_header_names_broken_invariants():
    r = Result("refuted", examples=1, id="s2.x", invariants=["S2-RC", "S2-BBM"],
               counterexample={"violations": ["S2-BBM ipa 0x1000: cached translation differs", "S2-BBM again"]})
    text = report.render_counterexample(r)
    assert text.splitlines()[0] == "=== counterexample: s2.x breaks S2-BBM"
    r.counterexample = {"ops": "pgt.unmap(0, 1)"}
    assert "breaks S2-RC, S2-BBM" in report.render_counterexample(r)  # no violations: the obligation's


# --------------------------------------------------------------------------------------- check-state

class _Violation:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


@pytest.fixture
def fake_spec(monkeypatch):
    spec = types.ModuleType("ptspec.spec")

    class StateError(ValueError):
        pass

    def load_state(obj):
        if obj.get("kind") != "arm64-stage2":
            raise StateError(f"'kind' is {obj.get('kind')!r}, expected 'arm64-stage2'")
        return obj

    def check_state(state):
        return [_Violation(v) for v in state.get("bad", [])]

    def s2_rc():
        """Every table page has refcount 1 + its counted descriptors."""

    spec.StateError, spec.load_state, spec.check_state = StateError, load_state, check_state
    spec.INVARIANTS = {"S2-RC": s2_rc, "S2-TREE": "Table descriptors form a tree."}
    spec.CONTRACTS = {"C-MAP": types.SimpleNamespace(doc="map installs the requested translation")}
    monkeypatch.setitem(sys.modules, "ptspec.spec", spec)
    return spec


def state_file(tmp_path, obj, name="s.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


# check-state runs the real spec (ptspec.spec.check_any): tests/test_check_state_cli.py


# -------------------------------------------------------------------------------------- list, explain

def test_list(reg, capsys):
    add("s2.lockstep.4k", profiles={"default", "deep"})
    add("s2.z3.index", engine="z3")
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "s2.lockstep.4k" in out and "default, deep" in out and "S2-RC, S2-TREE" in out
    assert cli.main(["list", "z3"]) == 0
    assert "s2.lockstep" not in capsys.readouterr().out


def test_explain_obligation_shows_spec_docs(reg, capsys):
    add("s2.lockstep.4k")
    assert cli.main(["explain", "s2.lockstep.4k"]) == 0
    out = capsys.readouterr().out
    assert "fake s2.lockstep.4k" in out and "kvm_pgtable_stage2_map" in out
    # the statements come from the spec's registry (ptspec.spec.statements)
    assert "refcount == 1 + its counted descriptors" in out and "S2-TREE: the tables form a tree" in out


def test_explain_invariant_and_contract_ids(reg, capsys):
    add("s2.lockstep.4k")
    assert cli.main(["explain", "S2-RC"]) == 0
    assert "checked by: s2.lockstep.4k" in capsys.readouterr().out
    assert cli.main(["explain", "C-MAP"]) == 0
    assert "installs the largest leaves" in capsys.readouterr().out


def test_explain_without_spec_and_unknown_ids(reg, monkeypatch, capsys):
    from ptspec.proofs.cli import explain

    def broken():
        raise ImportError("spec is broken")
    monkeypatch.setattr(explain, "_statements", broken)  # spec not importable
    add("s2.a")
    add("s2.b")
    assert cli.main(["explain", "s2.a"]) == 0
    assert "spec is not importable" in capsys.readouterr().out
    assert cli.main(["explain", "s2"]) == 2  # ambiguous
    assert cli.main(["explain", "NOPE-1"]) == 2


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == 2
    assert cli.main(["verify", "--profile", "nightly"]) == 2
    assert cli.main(["--help"]) == 0


def test_without_a_terminal_long_checks_get_a_heartbeat(reg, capsys, monkeypatch):
    monkeypatch.setattr(cli, "HEARTBEAT_SECONDS", 0.0)
    add("t.long", examples=2)
    code, out, _ = verify(capsys)
    assert code == 0 and "... t.long: 1/2" in out and "... t.long: 2/2" in out
