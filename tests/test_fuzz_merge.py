"""No traceback, ever: ``ptspec merge REPORT.json...`` on mutated and unreadable reports (tests/
fuzz_support.py): exit 0/1, or exit 2 with one line on stderr that is not an "internal error",
within a CPU-time budget."""


from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptspec.proofs.cli import main as cli

from fuzz_support import (  # noqa: F401 (print_counts: an autouse fixture)
    COUNTS, fuzz_settings, mutated, print_counts, within_budget)

# -- ptspec merge on mutated reports ------------------------------------------------------------

def _fake_reports(tmp_path):
    """verify --shard i/2 reports over three fake obligations (as tests/test_merge.py makes them)."""
    from ptspec.proofs.runner import registry
    from ptspec.proofs.runner.registry import Obligation, Result

    def ob(i):
        def go(ctx):
            if i == "b":
                return Result.refuted({"violations": ["S2-RC planted"], "ops": "pgt.map(0, 1)",
                                       "tables": "root 0x1000", "kernel_function": "f"}, "planted")
            return Result.passed(1)
        return Obligation(id=f"t.{i}", engine="unit", invariants=["S2-RC"], statement=f"fake {i}",
                          run=go)
    paths = []
    with registry.isolated():
        for i in "abc":
            registry.register(ob(i))
        for i in (1, 2):
            p = tmp_path / f"s-{i}.json"
            cli.main(["verify", "--profile", "quick", "--seed", "0", "--shard", f"{i}/2", "--json", str(p)])
            paths.append(p)
    return [json.loads(p.read_text()) for p in paths]


def _mutants_reports():
    """Two mutants shard reports of one fake outcome each."""
    from ptspec.proofs.mutation import corpus, mutants
    from ptspec.proofs.runner import parallel
    ids = sorted(b.id for b in corpus.all_bugs())[:2]
    out = []
    for i in (1, 2):
        outcomes = [dataclasses.asdict(mutants.Outcome(
            t, "corpus", "caught", seconds=0.5, check="t.a", invariants=["S2-RC"],
            counterexample={"violations": ["S2-RC x"], "ops": "pgt.map(0, 1)"}))
            for t in parallel.shard_ids(ids, i, 2)]
        out.append({"profile": "quick", "seed": 0, "mode": "corpus", "escalate": None,
                    "baseline": {}, "outcomes": outcomes, "score": {}, "shard": f"{i}/2",
                    "selection": ids})
    return out


def _merge_cli(tmp_path, reports, capsys, junit=False):
    paths = []
    for i, rep in enumerate(reports):
        p = tmp_path / f"m{i}.json"
        if isinstance(rep, (str, bytes)):
            p.write_bytes(rep.encode("utf-8", "surrogatepass") if isinstance(rep, str) else rep)
        else:
            p.write_text(json.dumps(rep))
        paths.append(str(p))
    out = tmp_path / "merged.json"
    code = within_budget(cli.main, ["merge", *paths, "--json", str(out)]
                         + (["--junit", str(tmp_path / "merged.xml")] if junit else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 1, 2), code
    if code == 2:
        assert len(err) == 1 and err[0].startswith("ptspec merge: "), err
        assert "internal error" not in err[0], err[0]
    return code, err


@pytest.fixture(scope="module")
def verify_reports(tmp_path_factory):
    return _fake_reports(tmp_path_factory.mktemp("reports"))


def test_merge_of_the_unmutated_reports_succeeds(tmp_path, capsys, verify_reports):
    """The merge fuzz starts from reports that merge (so a refusal is the mutation's doing)."""
    assert _merge_cli(tmp_path, verify_reports, capsys)[0] == 1          # t.b is refuted
    capsys.readouterr()
    assert _merge_cli(tmp_path, _mutants_reports(), capsys)[0] in (0, 1)


def test_merge_of_mutated_reports(tmp_path, capsys, verify_reports):
    @fuzz_settings(60)
    @given(st.data())
    def run(data):
        base = data.draw(st.sampled_from([verify_reports, _mutants_reports()]))
        reports = copy.deepcopy(base)
        i = data.draw(st.integers(0, len(reports) - 1))
        reports[i] = data.draw(mutated(reports[i]))
        COUNTS["merge"] += 1
        _merge_cli(tmp_path, reports, capsys, junit=data.draw(st.booleans()))
    run()


@pytest.mark.parametrize("text, needle", [
    ('{"a": ' + "1" * 5000 + "}", "integer"),                 # int() refuses 4300+ digits
    ("[" * 100000 + "]" * 100000, "nested"),                   # the json module recurses
    ('{"checks": [1], "shard": "1/1", "selection": []}', "checks[0]"),
    (b'{"checks": []}\xff', "utf-8"),
    ('{"checks": [], "shard": "1/10000000000000", "selection": []}', "and 9999999999994 more missing"),
])
def test_merge_refuses_unreadable_reports_in_one_line(tmp_path, capsys, text, needle):
    code, err = _merge_cli(tmp_path, [text], capsys)
    assert code == 2 and needle in err[0], err
