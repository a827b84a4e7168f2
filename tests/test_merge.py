"""`ptspec merge`: N shard reports of verify, mutants and check-kernel join into the unsharded report."""

import json
import re

import pytest

from ptspec.proofs.cli import main as cli
from ptspec.proofs.mutation import mutants
from ptspec.proofs.mutation import mutate
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Obligation, Result

FAST = "s2.z3.*,s2.errorpaths"
_TIMING = {"seconds", "cpu_seconds", "wall_seconds", "shard", "selection"}


def comparable(x):
    """The report without timings and the shard fields (a rate per CPU second is a timing too)."""
    if isinstance(x, dict):
        return {k: comparable(v) for k, v in x.items() if k not in _TIMING}
    if isinstance(x, list):
        return [comparable(v) for v in x]
    if isinstance(x, str):
        return re.sub(r"\d+ (ops |steps )?per CPU second", "N per CPU second", x)
    return x


def run(tmp_path, argv, name):
    path = tmp_path / f"{name}.json"
    code = cli.main([*argv, "--json", str(path)])
    return code, json.loads(path.read_text()), str(path)


def merged(tmp_path, paths, name="merged"):
    out = tmp_path / f"{name}.json"
    code = cli.main(["merge", *paths, "--json", str(out)])
    return code, json.loads(out.read_text()) if out.exists() else None


def assert_shards_merge_to_whole(tmp_path, argv, ns=(2, 3)):
    """Unsharded once; for each N, the N shards merged: the same report and the same exit code."""
    whole_code, whole, _ = run(tmp_path, argv, "whole")
    for n in ns:
        paths, ids = [], []
        for i in range(1, n + 1):
            _, rep, path = run(tmp_path, [*argv, "--shard", f"{i}/{n}"], f"shard-{i}-of-{n}")
            assert rep["shard"] == f"{i}/{n}"
            paths.append(path)
            ids += [c.get("id") or c.get("target") for c in rep.get("checks", rep.get("outcomes"))]
        assert len(ids) == len(set(ids))                       # disjoint
        code, rep = merged(tmp_path, paths[::-1], f"merged-{n}")   # order of the files is irrelevant
        assert comparable(rep) == comparable(whole), n
        assert code == whole_code, n
    return whole_code, whole


def test_verify_shards_merge_to_the_unsharded_report(tmp_path):
    code, whole = assert_shards_merge_to_whole(
        tmp_path, ["verify", "--profile", "quick", "--only", "s2.z3.*,s2.errorpaths"])
    assert code == 0 and len(whole["checks"]) >= 4 and whole["shard"] is None


def test_mutants_corpus_shards_merge_to_the_unsharded_report(tmp_path):
    # owner-unmap is not caught by these few checks: the unsharded run (and the merge) exit 1
    code, whole = assert_shards_merge_to_whole(
        tmp_path, ["mutants", "--only", "valid-update-ref,owner-unmap", "--profile", "quick",
                   "--checks", FAST])
    assert code == 1 and [o["target"] for o in whole["outcomes"]] == ["valid-update-ref", "owner-unmap"]
    assert [o["status"] for o in whole["outcomes"]] == ["caught", "survived"]


def test_mutants_systematic_shards_merge_to_the_unsharded_report(tmp_path):
    # caught, survived and unreached mutants among the five (3 shards: 2 + 2 + 1 of them)
    ms = mutants.sample(mutate.enumerate_mutants(["ptspec.impl.pgtable.pte"]), 5, seed=0)
    code, whole = assert_shards_merge_to_whole(
        tmp_path, ["mutants", "--systematic", "--only", ",".join(m.id for m in ms), "--profile",
                   "quick", "--checks", "s2.errorpaths,s2.unit.*"], ns=(3,))
    assert len(whole["outcomes"]) == 5 and sum(r["total"] for r in whole["score"].values()) == 5
    assert {o["status"] for o in whole["outcomes"]} >= {"caught", "survived", "unreached"}
    assert code == 1


def test_check_kernel_shards_merge_to_the_unsharded_report(tmp_path):
    from kdiff_support import need_kernel
    need_kernel(12)
    code, whole = assert_shards_merge_to_whole(
        tmp_path, ["check-kernel", "--profile", "quick", "--geometry", "4k-39,4k-48"])
    assert code == 0 and [c["id"] for c in whole["checks"]] == [
        "kernel.lockstep.4k-39", "kernel.lockstep.4k-48",
        *(f"kernel.{e}.{g}" for e in ("exhaustive", "errorpaths", "refusal")
          for g in ("4k-39", "4k-48")),
        "kernel.hyp.4k-48", "kernel.hyp.16k-47", "kernel.hyp.64k-48"]


def test_check_kernel_refuses_shard_with_impl(capsys):
    assert cli.main(["check-kernel", "--shard", "1/2", "--with-impl", "5.15"]) == 2
    assert "do not combine" in capsys.readouterr().out


# ------------------------------------------------------------------ refusals (fake obligations)

def ob(id, status="passed"):
    def go(ctx):
        if status == "refuted":
            return Result.refuted({"violations": ["S2-RC planted"]}, "planted")
        return Result.passed(1)
    return Obligation(id=id, engine="unit", invariants=["S2-RC"], statement=f"fake {id}", run=go)


@pytest.fixture
def fake_shards(tmp_path):
    """verify --shard i/3 reports over six fake obligations, one of them refuted."""
    def make(n=3, seed=0, name="s", bad=None):
        paths = []
        with registry.isolated():
            for k in "abcdef":
                registry.register(ob(f"t.{k}", "refuted" if k == bad else "passed"))
            for i in range(1, n + 1):
                path = tmp_path / f"{name}-{i}.json"
                cli.main(["verify", "--profile", "quick", "--seed", str(seed), "--shard", f"{i}/{n}",
                          "--json", str(path)])
                paths.append(str(path))
            whole = tmp_path / f"{name}-whole.json"
            whole_code = cli.main(["verify", "--profile", "quick", "--seed", str(seed), "--json",
                                   str(whole)])
        return paths, whole_code, json.loads(whole.read_text())
    return make


def test_a_refuted_shard_makes_the_merge_exit_1(tmp_path, fake_shards, capsys):
    paths, whole_code, whole = fake_shards(bad="e")
    code, rep = merged(tmp_path, paths)
    assert whole_code == code == 1 and comparable(rep) == comparable(whole)
    assert [c["id"] for c in rep["checks"]] == [f"t.{k}" for k in "abcdef"]   # registry order
    assert "1 refuted" in capsys.readouterr().out


def refusal(capsys, tmp_path, paths):
    out = tmp_path / "refused.json"
    code = cli.main(["merge", *paths, "--json", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ptspec merge: ") and not out.exists()
    return err[0]


def test_refusals(tmp_path, fake_shards, capsys):
    paths, _, _ = fake_shards()
    other_seed, _, _ = fake_shards(seed=1, name="seed1")
    two, _, _ = fake_shards(n=2, name="two")
    capsys.readouterr()
    assert "shard 2/3 missing" in refusal(capsys, tmp_path, [paths[0], paths[2]])
    assert "given twice" in refusal(capsys, tmp_path, [paths[0], paths[0], paths[1], paths[2]])
    assert "seed" in refusal(capsys, tmp_path, [paths[0], other_seed[1], paths[2]])
    assert "of 2 shards" in refusal(capsys, tmp_path, [paths[0], two[1]])
    missing = str(tmp_path / "nope.json")
    assert "cannot read" in refusal(capsys, tmp_path, [*paths, missing])
    (tmp_path / "junk.json").write_text("{not json")
    assert "not a JSON report" in refusal(capsys, tmp_path, [*paths[:2], str(tmp_path / "junk.json")])
    # a shard report with a check taken out is not the shard its split assigns
    rep = json.loads(open(paths[1]).read())
    rep["checks"] = rep["checks"][1:]
    (tmp_path / "cut.json").write_text(json.dumps(rep))
    assert "its split assigns" in refusal(capsys, tmp_path, [paths[0], str(tmp_path / "cut.json"), paths[2]])
    # an unsharded report is not a shard
    whole = tmp_path / "whole.json"
    with registry.isolated():
        registry.register(ob("t.a"))
        cli.main(["verify", "--profile", "quick", "--json", str(whole)])
    capsys.readouterr()
    assert "not a shard report" in refusal(capsys, tmp_path, [str(whole)])


def test_mixed_kinds_are_refused(tmp_path, fake_shards, capsys):
    paths, _, _ = fake_shards()
    fake_mutants = {"profile": "quick", "seed": 0, "mode": "corpus", "escalate": None,
                    "baseline": {}, "outcomes": [], "score": {}, "shard": "2/3", "selection": []}
    (tmp_path / "m.json").write_text(json.dumps(fake_mutants))
    capsys.readouterr()
    line = refusal(capsys, tmp_path, [paths[0], str(tmp_path / "m.json"), paths[2]])
    assert "different kinds" in line and "is mutants" in line and "is verify" in line


def test_junit_of_a_merge(tmp_path, fake_shards):
    paths, _, _ = fake_shards(bad="b")
    junit = tmp_path / "merged.xml"
    assert cli.main(["merge", *paths, "--junit", str(junit)]) == 1
    text = junit.read_text()
    assert 'tests="6"' in text and 'failures="1"' in text
