"""`ptspec verify --shard I/N`: a deterministic split of the selected obligations for a CI matrix."""

from __future__ import annotations

import json
import random

import pytest

from ptspec.proofs.cli import main as cli
from ptspec.proofs.runner import parallel
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Obligation, Result


def ob(id, profiles=None):
    kw = {} if profiles is None else {"profiles": profiles}
    return Obligation(id=id, engine="unit", invariants=["S2-RC"], statement=f"fake {id}",
                      run=lambda ctx: Result.passed(1), **kw)


IDS = [f"s2.lockstep.{g}-{b}" for g in ("4k", "16k", "64k") for b in (34, 39, 44, 48, 52)] + ["s2.errorpaths"]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 20])
def test_shards_are_disjoint_and_cover_the_selection(n):
    obs = [ob(i) for i in IDS]
    shards = [parallel.shard(obs, i, n) for i in range(1, n + 1)]
    ids = [o.id for s in shards for o in s]
    assert sorted(ids) == sorted(IDS) and len(ids) == len(set(ids))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1  # balanced
    for s in shards:  # each shard keeps registry order
        assert [o.id for o in s] == [i for i in IDS if i in {o.id for o in s}]


def test_shard_depends_only_on_the_ids_not_on_registration_order():
    obs = [ob(i) for i in IDS]
    shuffled = obs[:]
    random.Random(1).shuffle(shuffled)
    for i in (1, 2, 3):
        assert {o.id for o in parallel.shard(obs, i, 3)} == {o.id for o in parallel.shard(shuffled, i, 3)}
    # the documented rule: sorted ids, positions 0, 3, 6, ... for shard 1/3
    assert {o.id for o in parallel.shard(obs, 1, 3)} == {
        "s2.errorpaths", "s2.lockstep.16k-44", "s2.lockstep.4k-34", "s2.lockstep.4k-48",
        "s2.lockstep.64k-39", "s2.lockstep.64k-52"}


@pytest.mark.parametrize("text, want", [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3))])
def test_parse_shard(text, want):
    assert parallel.parse_shard(text) == want


@pytest.mark.parametrize("text, msg", [("0/3", "between 1 and 3"), ("4/3", "between 1 and 3"),
                                       ("1/0", "at least 1"), ("a/b", "whole numbers"), ("2", "i/n"),
                                       ("1/2/3", "i/n"), ("-1/2", "whole numbers"), ("", "i/n")])
def test_parse_shard_rejects(text, msg):
    with pytest.raises(ValueError, match=msg):
        parallel.parse_shard(text)


@pytest.mark.parametrize("bad", ["0/2", "3/2", "x/2", "1/0", "1-2"])
def test_bad_shard_is_a_usage_error(capsys, bad):
    assert cli.main(["verify", "--shard", bad]) == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "usage:" in err


def run_shard(capsys, tmp_path, shard, *extra):
    path = tmp_path / f"shard-{shard.replace('/', '-')}.json"
    code = cli.main(["verify", "--profile", "quick", "--shard", shard, "--json", str(path), *extra])
    out, err = capsys.readouterr()
    return code, json.loads(path.read_text()), err


def test_cli_shards_after_only_and_profile_filtering(capsys, tmp_path):
    with registry.isolated():
        for i in IDS:
            registry.register(ob(i))
        registry.register(ob("s2.deep-only", profiles={"deep"}))  # not in the quick profile
        seen = []
        for i in (1, 2, 3):
            code, rep, _ = run_shard(capsys, tmp_path, f"{i}/3", "--only", "lockstep")
            assert code == 0 and rep["shard"] == f"{i}/3"
            seen += [c["id"] for c in rep["checks"]]
    assert sorted(seen) == sorted(i for i in IDS if "lockstep" in i) and len(seen) == len(set(seen))


def test_cli_empty_shard_is_nothing_checked(capsys, tmp_path):
    with registry.isolated():
        registry.register(ob("t.a"))
        registry.register(ob("t.b"))
        code, rep, err = run_shard(capsys, tmp_path, "3/3")
    assert code == 2 and rep["checks"] == [] and "shard 3/3 is empty" in err


def test_cli_shard_runs_its_obligations_in_registry_order(capsys, tmp_path):
    with registry.isolated():
        registry.register(ob("t.a"))
        registry.register(ob("t.b"))
        registry.register(ob("t.c"))
        code, rep, _ = run_shard(capsys, tmp_path, "1/2")
    assert code == 0 and [c["id"] for c in rep["checks"]] == ["t.a", "t.c"]
