"""`ptspec verify` / `list` refuse a command line that cannot mean what it says (one line, exit 2),
and `verify --skip AREA` leaves out an area's obligations, saying so in the summary and the report."""

from __future__ import annotations

import json

import pytest

from ptspec.proofs.cli import main as cli
from ptspec.proofs.cli import verify_args
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Obligation, Result


def _ob(id, status="passed", module="ptspec.proofs.stage2.checks"):
    def run(ctx):
        """A fake check."""
        return Result(status, "no kernel source" if status == "unknown" else "", 3)
    run.__module__ = module           # the area is the folder of proofs/ the check module is in
    return Obligation(id, "unit", ["S2-RC"], "", run)


@pytest.fixture
def reg():
    with registry.isolated() as r:
        registry.register(_ob("s2.a"))
        registry.register(_ob("s2.b"))
        registry.register(_ob("kdiff.random", "unknown", "ptspec.proofs.kernel.checks"))
        registry.register(_ob("kernel.new-family", "unknown", "ptspec.proofs.kernel.checks_more"))
        yield r


def verify(capsys, *args):
    code = cli.main(["verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, needle", [
    (["--only", "s2.a", "--only", "nomatch"], "--only 'nomatch' matches no obligation"),
    (["--only", "s2.a,nomatch"], "--only 'nomatch' matches no obligation"),
    (["--json", ""], "--json wants a file name"),
    (["--junit", ""], "--junit wants a file name"),
    (["--json", "R.xml", "--junit", "./R.xml"], "name the same file"),
    (["--skip", "nosuch"], "no obligation belongs to area 'nosuch' (areas: kernel, stage2)"),
])
def test_verify_refusals_are_one_line_exit_2_and_run_nothing(reg, capsys, tmp_path, monkeypatch,
                                                               args, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = verify(capsys, *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert out == "" and list(tmp_path.iterdir()) == []


def test_list_pattern_matching_nothing_exits_2(reg, capsys):
    assert cli.main(["list", "s2", "nosuch"]) == 2
    assert "'nosuch' matches no obligation" in capsys.readouterr().err
    assert cli.main(["list", "s2"]) == 0


def test_without_skip_the_kernel_checks_stay_unknown(reg, capsys):
    code, out, _ = verify(capsys)
    assert code == 2 and "kdiff.random: unknown: no kernel source" in out


def test_skip_kernel_leaves_out_the_area_and_says_so(reg, capsys, tmp_path):
    path = tmp_path / "r.json"
    code, out, err = verify(capsys, "--skip", "kernel", "--json", str(path))
    assert code == 0, (out, err)
    assert "skipped 2 obligation(s): 2 of area kernel (kdiff.random, kernel.new-family)" in out
    data = json.loads(path.read_text())
    assert [c["id"] for c in data["checks"]] == ["s2.a", "s2.b"]
    assert [s["id"] for s in data["skipped"]] == ["kdiff.random", "kernel.new-family"]
    assert all(s["area"] == "kernel" and "--skip kernel" in s["why"] and "kernel source" in s["why"]
               for s in data["skipped"])


def test_skip_of_everything_selected_is_nothing_checked(reg, capsys):
    code, _, err = verify(capsys, "--skip", "kernel", "--only", "kdiff")
    assert code == 2 and "left out by --skip kernel" in err


def test_real_kernel_checks_are_in_area_kernel_and_the_rest_are_not():
    registry.load_all()
    areas = {ob.id: verify_args.area_of(ob) for ob in registry.all_obligations()}
    kdiff = [i for i in areas if i.startswith("kdiff.")]
    assert kdiff and all(areas[i] == "kernel" for i in kdiff)
    assert "stage2" in {a for i, a in areas.items() if i.startswith("s2.")}
    assert None not in areas.values() and {"kernel", "stage2", "mmu", "lguest"} <= set(areas.values())


@pytest.mark.parametrize("args, needle", [
    (["--systematic", "--module", "nosuch", "--list"], "no impl module nosuch (known: "),
    (["--systematic", "--only", "pgtable.pte:nosuch:ret0", "--list"], "no such mutant(s)"),
    (["--systematic", "--sample", "-3", "--list"], "--sample wants a whole number >= 1, not -3"),
    (["--systematic", "--sample", "0", "--list"], "--sample wants a whole number >= 1, not 0"),
    (["--jobs", "0"], "--jobs wants a whole number >= 1 or auto, not '0'"),
    (["--only", "nosuch"], "unknown corpus bug(s): nosuch"),
])
def test_mutants_refusals_are_one_line_exit_2(capsys, args, needle):
    """`ptspec mutants` refuses arguments it cannot honour before it runs anything (these raised
    a traceback, or ran everything for --sample 0, or started with no worker for --jobs 0)."""
    try:
        code = cli.main(["mutants", *args])
    except SystemExit as exc:            # argparse's own refusals
        code = exc.code
    out, err = capsys.readouterr()
    said = [line for line in (out + err).splitlines() if line.startswith("ptspec mutants")]
    assert code == 2 and len(said) == 1 and needle in said[0], out + err
