"""Mutation testing of impl: the mutator, the runner's verdicts, the corpus, a fixed CI sample."""

import re
from pathlib import Path

import pytest

import ptspec.impl.pgtable.walker
from ptspec.proofs.mutation import corpus
from ptspec.proofs.mutation import mutants
from ptspec.proofs.mutation import mutate
from ptspec.proofs.cli.main import main

FAST = "s2.z3.*,s2.exhaustive*,s2.errorpaths"


# The CI sample is also judged against the kernel's C (the cached Debian 6.1, as CI has it): a
# mutant that only adds work the spec does not forbid (cache maintenance of a non-cacheable leaf)
# is told apart from the kernel by its TLB/CMO log alone, as the full systematic run tells it.
SAMPLE_CHECKS = FAST + ",kdiff.random.6.1"


@pytest.fixture(scope="module")
def allowed():
    """The kill suite's checks that pass on the unmutated impl (computed once)."""
    ok, base = mutants.baseline("quick", 0, FAST)
    assert ok and all(r.status in ("passed", "proved") for r in base), base
    return ok


@pytest.fixture(scope="module")
def allowed_with_c():
    """allowed, with the impl-against-C check; skipped where no kernel tree is cached."""
    ok, base = mutants.baseline("quick", 0, SAMPLE_CHECKS)
    c = [r for r in base if r.id.startswith("kdiff.")]
    if not c or c[0].status == "unknown":       # not checked here: no tree or no compiler
        pytest.skip(f"kdiff.random.6.1 does not run here: {c[0].detail if c else 'not listed'}")
    assert all(r.status in ("passed", "proved") for r in base), base
    return ok


def test_mutants_are_deterministic_and_named_uniquely():
    a = mutate.enumerate_mutants(["ptspec.impl.pgtable.walker"])
    b = mutate.enumerate_mutants(["ptspec.impl.pgtable.walker"])
    assert a == b and len({m.id for m in a}) == len(a) > 50
    assert {m.operator for m in a} == set(mutate.OPERATORS)


def test_applied_swaps_every_reference_and_restores():
    m = next(m for m in mutate.enumerate_mutants(["ptspec.impl.pgtable.pte"])
             if m.qualname == "kvm_block_mapping_supported" and m.operator == "cmp")
    import ptspec.impl.pgtable.hyp
    import ptspec.impl.pgtable.pte
    import ptspec.impl.pgtable.stage2_map
    orig = ptspec.impl.pgtable.pte.kvm_block_mapping_supported
    with mutate.applied(m) as new:
        assert new is not orig
        assert ptspec.impl.pgtable.pte.kvm_block_mapping_supported is new
        assert ptspec.impl.pgtable.stage2_map.kvm_block_mapping_supported is new   # imported by name there
        assert ptspec.impl.pgtable.hyp.kvm_block_mapping_supported is new
    assert ptspec.impl.pgtable.stage2_map.kvm_block_mapping_supported is orig
    assert ptspec.impl.pgtable.hyp.kvm_block_mapping_supported is orig


def _advance_mutant():
    """The mutant that turns the walker's ALIGN_DOWN (addr & ~(granule - 1)) into a `|`."""
    found = [m for m in mutate.enumerate_mutants(["ptspec.impl.pgtable.walker"])
             if m.qualname == "__kvm_pgtable_visit" and m.what.startswith("`&` -> `|`")
             and "data.addr | ~(granule - 1)" in mutate.mutated_source(m)]
    assert len(found) == 1, found
    return found[0]


def test_mutated_source_shows_the_change():
    m = _advance_mutant()
    assert "data.addr & ~(granule - 1)" not in mutate.mutated_source(m)


def test_a_real_mutant_is_killed_with_a_counterexample(allowed):
    # the walker's advance without aligning down: the walk-align bug, found mechanically
    m = _advance_mutant()
    out = mutants.run_target("mutant", m.id, "quick", 0, FAST, allowed=allowed)
    assert out.status in ("caught", "hung"), out
    assert ptspec.impl.pgtable.walker.__kvm_pgtable_visit.__code__.co_filename.endswith("walker.py")  # restored


def test_an_equivalent_mutant_survives_and_is_explained(allowed):
    # the anchor's install cannot fail (its slot was just cleared): `return ret` -> `return 0`
    target = "pgtable.stage2_map:stage2_map_walk_table_post:ret0"
    assert target in {m.id for m in mutate.enumerate_mutants(["ptspec.impl.pgtable.stage2_map"])}
    out = mutants.run_target("mutant", target, "quick", 0, FAST, allowed=allowed)
    assert out.status == "survived" and out.checks_run == len(allowed)
    from ptspec.proofs.cli.mutants import explained_survivors
    assert target in explained_survivors()


def test_score_counts_each_mutant_under_its_impl_module():
    outs = [mutants.Outcome("pgtable.stage2_map:stage2_map_walk_table_post:ret0", "mutant", "survived"),
            mutants.Outcome("pgtable.walker:__kvm_pgtable_visit:arith0", "mutant", "caught"),
            mutants.Outcome("walk-align", "corpus", "caught")]
    table = mutants.score(outs)
    s2map, walker = mutate.module_of("pgtable.stage2_map:"), mutate.module_of("pgtable.walker:")
    assert set(table) == {s2map, walker} and s2map.endswith("impl.pgtable.stage2_map")
    assert table[s2map]["survived"] == 1 and table[walker]["killed"] == 1
    assert sum(row["total"] for row in table.values()) == 2          # the corpus bug is not a mutant


def test_only_baseline_passing_checks_can_kill():
    suite = mutants.kill_suite("quick", "s2", "s2.errorpaths,s2.exhaustive*", {"s2.errorpaths"})
    assert [ob.id for ob in suite] == ["s2.errorpaths"]


def test_corpus_holds_every_bug_of_docs_bugs_md():
    bugs_md = Path(__file__).resolve().parents[1] / "docs" / "bugs.md"
    listed = set(re.findall(r"^\| ([a-z0-9-]+) \|", bugs_md.read_text(), re.M)) - {"id", "---"}
    assert len(listed) >= 11 and listed <= {b.id for b in corpus.all_bugs()}, listed
    historical = {b.id for b in corpus.HISTORICAL}
    assert listed == historical, listed ^ historical
    for b in corpus.HISTORICAL:      # the page names the statements the corpus requires
        row = next(line for line in bugs_md.read_text().splitlines() if line.startswith(f"| {b.id} |"))
        assert all(inv in row.rsplit("|", 2)[1] for inv in b.expected), (b.id, b.expected)


def test_corpus_cli_catches_a_historical_bug(capsys):
    code = main(["mutants", "--only", "valid-update-ref", "--profile", "quick",
                 "--checks", FAST])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "valid-update-ref" in out and "caught 1/1" in out


def test_ci_sample_of_mutants_is_killed(allowed_with_c):
    """A fixed deterministic sample over the stage-2 modules (the full run is in the README)."""
    ms = mutants.sample(mutate.enumerate_mutants(
        ["ptspec.impl.pgtable.pte", "ptspec.impl.pgtable.walker", "ptspec.impl.pgtable.stage2_map",
         "ptspec.impl.pgtable.stage2_walkers"]), 6, seed=0)
    explained = __import__("ptspec.proofs.cli.mutants", fromlist=["x"]).explained_survivors()
    outs = mutants.run_many([("mutant", m.id) for m in ms], "quick", 0, pattern=SAMPLE_CHECKS,
                            allowed=allowed_with_c)
    for o in outs:
        assert o.killed or o.target in explained, o


def test_mutant_of_a_function_no_check_runs_is_unreached_not_survived():
    m = next(m for m in mutate.enumerate_mutants(["ptspec.impl.pgtable.pte"]) if m.qualname == "kvm_pte_to_phys")
    reach = {"s2.errorpaths": {"pgtable.pte:kvm_pte_table"}}     # as if nothing ran kvm_pte_to_phys
    out = mutants.run_target("mutant", m.id, "quick", 0, FAST, allowed={"s2.errorpaths"},
                             reach=reach)
    assert out.status == "unreached" and not out.killed and out.checks_run == 0
    outs = mutants.run_many([("mutant", m.id)], "quick", 0, pattern=FAST,
                            allowed={"s2.errorpaths"}, reach=reach)
    assert outs[0].status == "unreached"


def test_reach_map_records_what_each_check_executes():
    reach = mutants.reach_map("quick", 0, "s2.errorpaths,s2.z3.descriptor-oa,s2.z3.owner")
    errorpaths = reach["s2.errorpaths"]
    assert "pgtable.walker:__kvm_pgtable_visit" in errorpaths
    assert "pgtable.stage2_map:stage2_map_walker_try_leaf" in errorpaths
    assert "pgtable.stage2_walkers:kvm_pgtable_stage2_unmap" in errorpaths   # nested cb counts here too
    assert "pgtable.hyp:HypPgtable.map" not in errorpaths                    # errorpaths is stage 2 only
    z3_only = {c for c in reach if c.startswith("s2.z3.")}
    assert z3_only and all("pgtable.walker:__kvm_pgtable_visit" not in reach[c] for c in z3_only)
    # a walker mutant meets only the checks that walk; they still kill it
    m = _advance_mutant()
    assert mutants.narrowed(m.id, None, reach) == {"s2.errorpaths"}
    out = mutants.run_target("mutant", m.id, "quick", 0, None, reach=reach)
    assert out.killed and out.check == "s2.errorpaths" and out.checks_run == 1


def test_every_explained_survivor_is_a_current_mutant():
    """proofs/mutation/survivors/*.toml must not go stale: each id names a mutant the mutator still makes."""
    from ptspec.proofs.cli.mutants import explained_survivors
    explained = explained_survivors()
    modules = sorted({mutate.module_of(k) for k in explained})
    ids = {m.id for m in mutate.enumerate_mutants(modules)}
    assert explained and not set(explained) - ids, sorted(set(explained) - ids)


def test_a_check_that_does_not_pass_under_the_recorder_reaches_everything(monkeypatch):
    """Recording slows checks; one stopped at its deadline recorded only part of its run, so it
    must stay in every mutant's suite (narrowing may never drop a check that could kill)."""
    from ptspec.proofs.runner import registry
    real = registry.run_obligation

    def late(ob, profile, seed, *a, **k):
        r = real(ob, profile, seed, *a, **k)
        return registry.Result("unknown", "stopped: (simulated)") if ob.id == "s2.pool" else r
    monkeypatch.setattr(registry, "run_obligation", late)
    reach = mutants.reach_map("quick", 0, "s2.pool,s2.geometry.all")
    assert reach["s2.pool"] is mutants.EVERYTHING
    assert "pgtable.walker:__kvm_pgtable_visit" not in reach["s2.geometry.all"]
    assert mutants.narrowed(_advance_mutant().id, None, reach) == {"s2.pool"}


def test_a_deadline_is_a_kill_only_if_the_unmutated_impl_meets_it(monkeypatch):
    """On a loaded machine every check may run out of time: "hung" needs the unmutated check to
    finish in time right after; otherwise the mutant is inconclusive, neither killed nor survived."""
    from ptspec.proofs.runner import registry
    real = registry.run_obligation
    m = _advance_mutant()
    stopped = registry.Result("unknown", "stopped: (simulated deadline)")
    monkeypatch.setattr(registry, "run_obligation", lambda *a, **k: stopped)
    out = mutants.run_target("mutant", m.id, "quick", 0, None, allowed={"s2.errorpaths"})
    assert out.status == "inconclusive" and not out.killed
    calls = []

    def slow_only_when_mutated(ob, profile, seed, *a, **k):
        calls.append(ob.id)
        return stopped if len(calls) == 1 else real(ob, profile, seed, *a, **k)
    monkeypatch.setattr(registry, "run_obligation", slow_only_when_mutated)
    out = mutants.run_target("mutant", m.id, "quick", 0, None, allowed={"s2.errorpaths"})
    assert out.status == "hung" and out.killed and calls == ["s2.errorpaths"] * 2


def test_applied_reaches_checkers_that_imported_the_function_by_name():
    """A check that did `from impl.x import f` calls impl: under a mutant of f it calls the mutant
    (ptspec.proofs.stage2.z3_lemmas imports all_stage2_geometries by name)."""
    import ptspec.impl.pgtable.geometry
    from ptspec.proofs.stage2 import z3_lemmas as zs
    orig = ptspec.impl.pgtable.geometry.all_stage2_geometries
    assert zs.all_stage2_geometries is orig
    m = next(m for m in mutate.enumerate_mutants(["ptspec.impl.pgtable.geometry"])
             if m.qualname == "all_stage2_geometries" and m.what == "`1` -> `0`")
    with mutate.applied(m) as new:
        assert zs.all_stage2_geometries is new is ptspec.impl.pgtable.geometry.all_stage2_geometries
        assert len(list(zs.all_stage2_geometries())) != len(list(orig()))
    assert zs.all_stage2_geometries is orig


def test_a_target_that_exhausts_memory_is_crashed_and_retires_its_worker(monkeypatch):
    """A mutant that allocates without bound is a kill (crashed); the worker that saw the
    MemoryError takes no further target (it exits, and run_many rebuilds the pool)."""
    import os

    def runaway(*a, **k):
        raise MemoryError()

    def fake_exit(code):
        raise SystemExit(code)
    monkeypatch.setattr(mutants, "run_target", runaway)
    monkeypatch.setattr(mutants, "_RETIRED", [False])
    monkeypatch.setattr(os, "_exit", fake_exit)
    out = mutants._worker(("mutant", "pgtable.walker:x:cmp0", "quick", 0, None, None))
    assert out["status"] == "crashed" and "MemoryError" in out["detail"]
    with pytest.raises(SystemExit) as left:
        mutants._worker(("mutant", "pgtable.walker:x:cmp1", "quick", 0, None, None))
    assert left.value.code == 3


def test_systematic_list_prints_one_line_per_mutant(capsys):
    """`ptspec mutants --systematic --list` names each mutant on one line, however long its
    description and however narrow the console, so that `| wc -l` or `| grep` see whole entries
    (the console used to wrap long ones at 80 columns: 4,164 mutants gave about 4,270 lines)."""
    module = "pgtable.stage2_map"
    assert main(["mutants", "--systematic", "--module", module, "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = mutate.enumerate_mutants([f"ptspec.impl.{module}"])
    assert len(lines) == len(want) and any(len(line) > 120 for line in lines)
    assert [line.split(" ", 1)[0] for line in lines] == [m.id for m in want]


def test_one_job_runs_in_a_worker_under_the_memory_limit(monkeypatch):
    """--jobs 1 (the default) runs its targets in one worker process with the address-space limit,
    as --jobs N does: stop 24's in-process run let one runaway mutant grow to 16 GB."""
    import concurrent.futures as cf
    made = []

    class Recorder(cf.ThreadPoolExecutor):          # the pool's wiring, run in threads here
        def __init__(self, max_workers, mp_context=None, initializer=None):
            made.append((max_workers, mp_context.get_start_method(), initializer))
            super().__init__(max_workers)

    monkeypatch.setattr(mutants.cf, "ProcessPoolExecutor", Recorder)
    monkeypatch.setattr(mutants, "_worker", lambda args: dict(
        target=args[1], kind=args[0], status="caught", profile=args[2]))
    outs = mutants.run_many([("mutant", "pgtable.pte:GENMASK:cmp0")], "quick", 0, jobs=1)
    assert made == [(1, "spawn", mutants._limit_memory)]
    assert outs[0].status == "caught"
