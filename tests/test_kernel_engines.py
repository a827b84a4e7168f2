"""The C-side engines besides the lock-step (ptspec.proofs.kernel.engines): exhaustive exploration,
allocation failure at every allocation point, bad arguments, hyp stage 1, on the kernel's own
pgtable.c, judged by the spec alone; each shown to fail on a bug planted in a scratch copy."""

import json

import pytest

from ptspec.proofs.cli.main import main as ptspec_main
from ptspec.proofs.kernel import check, engines as E, errorpaths, exhaustive, planted, refusal
from ptspec.proofs.kernel import replay, subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner import budgets

from kdiff_support import need_kernel


def _tree():
    need_kernel()
    t, why = T.default_tree()
    if t is None:
        pytest.skip(why)
    return t


def test_the_clean_tree_passes_every_engine():
    t = _tree()
    b = budgets.budget("quick")
    for engine in ("exhaustive", "errorpaths", "refusal"):
        r = E.run_engine(t, engine, b)
        assert r.status in ("passed", "proved"), (engine, r.detail)
        assert r.id == E.check_id(engine) and r.examples > 50


def test_replay_judges_only_from_where_it_is_asked():
    t = _tree()
    h = replay.harness(t)
    ops = [("op", "map", dict(addr=0x40000000, size=0x200000, phys=0x80000000, prot=6)),
           ("fail", 0), ("op", "map", dict(addr=0x40001000, size=0x1000, phys=0x9000, prot=6))]
    found, used = replay.run(h, ops, judge_from=1)
    assert found == [] and used == 3
    assert replay.allocations(h) == 1             # the failing table allocation was counted
    assert h.steps == 3 and h.check               # init + 2 maps, judging again at the end


def test_exhaustive_states_are_canonical_over_physical_pages():
    t = _tree()
    a = replay.harness(t, arena_pages=64)
    a.step("map", addr=0x40001000, size=0x1000, phys=0x80001000, prot=6)
    raw = a.raw_state()
    key = exhaustive.canonical(raw, False)
    # the same tree with its table pages at other physical addresses is the same state
    moved = dict(raw)
    shift = 0x100000
    pages = {}
    for pa, words in raw["pages"].items():
        pages[pa + shift] = [w + shift if w & 3 == 3 and (w & ~0xfff) in raw["pages"] else w
                             for w in words]
    moved["pages"] = pages
    moved["refcount"] = {pa + shift: n for pa, n in raw["refcount"].items()}
    moved["roots"] = [r + shift for r in raw["roots"]]
    assert exhaustive.canonical(moved, False) == key
    assert exhaustive.canonical(raw, True) != key             # a pending failure differs
    a.step("unmap", addr=0x40001000, size=0x1000)
    assert exhaustive.canonical(a.raw_state(), False) != key


# (bug, engine that catches it, statements it is caught by); the own bugs of planted.py with the
# corpus ones the engines also catch. Measured (default profile, 6.1.176, loaded 2-core machine):
# see docs/kernel.md "Planted C bugs".
CAUGHT = [
    ("unmap-busy-table", "exhaustive", {"S2-LEAK", "S2-RC", "C-UNMAP"}),
    ("walk-align", "exhaustive", {"C-UNMAP", "C-MAP", "C-WRPROTECT", "C-FLUSH", "C-SET-OWNER"}),
    ("owner-id-bound", "refusal", {"C-SET-OWNER", "S2-OWN"}),
    ("unmap-table-leak", "exhaustive", {"S2-LEAK"}),
    ("attr-mask-lo", "exhaustive", {"C-WRPROTECT", "C-MKYOUNG", "C-RELAX-PERMS", "C-MKOLD"}),
    ("unmap-no-cmo", "exhaustive", {"C-CMO"}),
    ("force-pte-level", "exhaustive", {"C-SET-OWNER"}),
    ("cmo-skips-blocks", "exhaustive", {"CMO-POC"}),        # the ghost statements, across steps
    ("relax-no-icache", "exhaustive", {"CMO-POU"}),
    ("set-owner-drops-error", "errorpaths", {"C-SET-OWNER"}),
    ("init-no-enomem", "errorpaths", {"S2-TREE", "C-INIT"}),
    ("hyp-leaf-no-ref", "hyp", {"S1-RC"}),
    ("hyp-unmap-keep-ref", "hyp", {"S1-RC"}),
    ("hyp-unmap-count", "hyp", {"C-HYP-UNMAP"}),
    ("hyp-unmap-table-hint", "hyp", {"S1-UNMAP-TLBI"}),
]


@pytest.mark.parametrize("bug,engine,ids", CAUGHT, ids=[c[0] for c in CAUGHT])
def test_engines_catch_planted_c_bugs(tmp_path, bug, engine, ids):
    t = _tree()
    bad = planted.scratch_tree(bug, t, tmp_path / "tree")
    r = E.run_engine(bad, engine, budgets.budget("default"))
    assert r.status == "refuted", r.detail
    cex = r.counterexample
    assert {v.split()[0] for v in cex["violations"]} & ids, cex["violations"]
    assert "open_tree(" in cex["ops"]
    env = {}
    with pytest.raises(AssertionError):          # runs as pasted, ends in the failing judge
        exec(cex["ops"], env)
    c_test = cex["c_test"]
    if engine != "hyp":                          # a stage-2 table: which one, above the function
        head, c_test = c_test.split("\n", 1)
        assert head.startswith("/* pgt: 4K pages, ia_bits 39,")
    assert c_test.startswith("static void")


def test_the_clean_tree_passes_the_hyp_engine_with_its_findings():
    t = _tree()
    r = E.run_engine(t, "hyp", budgets.budget("quick"))
    assert r.status == "passed", r.detail
    assert "hyp-refcount x" in r.detail and "with kvm_pgtable_hyp_unmap" in r.detail


def test_hyp_conflicting_remap_of_a_block_is_a_catalogued_6_1_finding():
    """6.1: the conflict WARN fires after data->phys moved on, a table replaces the block and its
    pages map one block too high, the block's reference stays: catalogued, not violations; the
    spec's own reading of S1-RC is kept for a tree without kvm_pgtable_hyp_unmap."""
    from ptspec.proofs.kernel import hyp
    t = _tree()
    h = hyp.hyp_harness(t)(12, 48, 128)
    assert h.refcounted
    h.step("map", addr=0x7fe00000, size=0x200000, phys=0x17fe00000, prot=0x80000000000004)
    ret, found = h.step("map", addr=0x7fe00000, size=0x200000, phys=0x17fe00000,
                        prot=0x80000000000006)
    assert ret == 0 and found == []
    assert {"hyp-conflict-split", "hyp-conflict-split-warn", "hyp-split-ref"} <= set(h.seen)
    words = [w for pa, ws in h.raw_state()["pages"].items() for w in ws if w & 3 == 3]
    assert any((w & ((1 << 48) - 1) & ~0xfff) == 0x180000000 for w in words)   # a block too high


def test_hyp_on_a_tree_without_unmap_keeps_the_single_reference_rule():
    from kdiff_support import need_tree
    from ptspec.proofs.kernel import hyp
    t = need_tree("5.15")
    h = hyp.hyp_harness(t)(12, 48, 128)
    assert not h.refcounted and h.pgt.unmap_fn is None
    ret, found = h.step("map", addr=0x200000, size=0x1000, phys=0x100200000, prot=4)
    assert ret == 0 and found == [] and not h.seen


def test_errorpaths_count_every_allocation_point():
    t = _tree()
    cls = subject.subject_factory(t)
    setup = errorpaths.setup_ops("block")
    # a page inside a block: one table allocated from the memcache
    n = errorpaths.count_allocations(t, cls, setup, "map",
                                     dict(addr=0x40001000, size=0x1000, phys=0xc0000000, prot=6))
    assert n == 1
    labels = [label for label, _, _ in errorpaths.cases(t, cls)]
    assert any("allocation 1/" in x for x in labels) and labels[0].startswith("init")


def test_refusal_covers_every_bad_call_from_every_setup():
    t = _tree()
    out = refusal.run_all(t)
    from ptspec.proofs.stage2.errorpaths import BAD_ARGS, SETUPS
    assert out.status == "passed" and out.cases == len(BAD_ARGS) * len(SETUPS)


def test_cli_engines_option_and_json(tmp_path, capsys):
    _tree()
    js = tmp_path / "r.json"
    code = ptspec_main(["check-kernel", "--engines", "exhaustive,refusal", "--profile", "quick",
                        "--geometry", "4k-39,16k-47", "--json", str(js)])
    out = capsys.readouterr().out
    assert code == 0, out
    rep = json.loads(js.read_text())
    ids = [c["id"] for c in rep["checks"]]
    assert ids == ["kernel.exhaustive.4k-39", "kernel.exhaustive.16k-47",
                   "kernel.refusal.4k-39", "kernel.refusal.16k-47"]
    assert ptspec_main(["check-kernel", "--engines", "lockstep,fuzz"]) == 2
    assert "unknown engine fuzz" in capsys.readouterr().err


def test_engine_shards_split_by_check_id():
    engines = ["lockstep", "exhaustive", "errorpaths", "hyp"]
    geos, checks = check.sharded(["4k-39", "4k-48"], (1, 2), engines)
    geos2, checks2 = check.sharded(["4k-39", "4k-48"], (2, 2), engines)
    assert sorted(geos + geos2) == ["4k-39", "4k-48"]
    assert sorted(checks + checks2) == sorted(
        ["kernel.exhaustive.4k-39", "kernel.exhaustive.4k-48", "kernel.errorpaths.4k-39",
         "kernel.errorpaths.4k-48", "kernel.hyp.4k-48", "kernel.hyp.16k-47", "kernel.hyp.64k-48"])
    assert not set(checks) & set(checks2)
    assert check.sharded(["4k-39"], None, ["exhaustive"]) == ([], ["kernel.exhaustive.4k-39"])


def test_hyp_runs_on_every_hyp_geometry_in_check_kernel():
    t = _tree()
    assert E.check_ids("hyp") == ["kernel.hyp.4k-48", "kernel.hyp.16k-47", "kernel.hyp.64k-48"]
    r = E.run_check(t, "kernel.hyp.16k-47", budgets.budget("quick"))
    assert r.status == "passed" and r.id == "kernel.hyp.16k-47", r.detail
    assert r.detail.startswith("16k-47:")
    with pytest.raises(ValueError):                 # a hyp geometry, not a stage-2 one
        E.run_engine(t, "exhaustive", budgets.budget("quick"), geometry="64k-48")


def test_stage2_engines_run_on_every_geometry_in_check_kernel():
    assert E.check_ids("refusal") == [f"kernel.refusal.{g}" for g in subject.GEOMETRIES]
    assert E.check_ids("errorpaths", ["64k-44"]) == ["kernel.errorpaths.64k-44"]
    assert E.check_id("exhaustive") == "kernel.exhaustive.4k-39"      # ptspec verify's


def test_a_non_4k_geometry_passes_every_engine_clean():
    t = _tree()
    b = budgets.budget("quick")
    for engine in ("exhaustive", "errorpaths", "refusal"):
        r = E.run_engine(t, engine, b, geometry="16k-47")
        assert r.status in ("passed", "proved"), (engine, r.detail)
        assert r.id == f"kernel.{engine}.16k-47" and r.examples > 50
    # the table really is 16K pages: the alphabet's page map leaves a level-3 table of 2048 entries
    h = replay.harness(t, geometry_name="16k-47")
    h.step("map", addr=0x40004000, size=0x4000, phys=0x80004000, prot=6)
    assert h.raw_state()["page_shift"] == 14
    assert {len(words) for words in h.raw_state()["pages"].values()} == {2048}


def test_scaled_scenarios_fit_the_geometry():
    from ptspec.proofs.stage2.errorpaths import scenarios
    from ptspec.spec.arch import geometry as G
    assert scenarios(12, 39) == scenarios()
    for name, (ps, ia, _) in subject.GEOMETRIES.items():
        setups, targets, idmap, bad = scenarios(ps, ia)
        page = G.granule_size(3, ps)
        for op, args in [c for s in setups.values() for c in s] + targets + idmap:
            assert args["addr"] % page == 0 and args["size"] % page == 0, (name, op, args)
            assert args["addr"] + args["size"] <= 1 << ia, (name, op, args)
        assert ("get_leaf", dict(addr=1 << ia)) in bad


# (bug, engine, geometry, statements): planted bugs caught on the 16K and 64K granules
CAUGHT_OTHER_GRANULES = [
    ("owner-id-bound", "refusal", "64k-44", {"C-SET-OWNER", "S2-OWN"}),
    ("set-owner-drops-error", "errorpaths", "64k-52", {"C-SET-OWNER"}),
    ("unmap-busy-table", "exhaustive", "16k-47", {"S2-LEAK", "S2-RC", "C-UNMAP"}),
]


def _refuted_on(tmp_path, bug, engine, geometry, ids):
    """The planted bug's scratch tree, refuted by the engine on the geometry at the quick profile
    with one of the statements ``ids``: (the tree, the counterexample)."""
    bad = planted.scratch_tree(bug, _tree(), tmp_path / "tree")
    r = E.run_engine(bad, engine, budgets.budget("quick"), geometry=geometry)
    assert r.status == "refuted" and r.id == f"kernel.{engine}.{geometry}", r.detail
    cex = r.counterexample
    assert {v.split()[0] for v in cex["violations"]} & ids, cex["violations"]
    return bad, cex


@pytest.mark.parametrize("bug,engine,geometry,ids", CAUGHT_OTHER_GRANULES,
                         ids=[c[0] for c in CAUGHT_OTHER_GRANULES])
def test_engines_catch_planted_c_bugs_on_16k_and_64k(tmp_path, bug, engine, geometry, ids):
    _, cex = _refuted_on(tmp_path, bug, engine, geometry, ids)
    env = {}
    with pytest.raises(AssertionError):          # runs as pasted, ends in the failing judge
        exec(cex["ops"], env)


def test_c_hyp_unmap_on_6_1_and_its_overreach_finding():
    """C-HYP-UNMAP: whole leaves from the start of the range, the bytes returned; 6.1 removes a
    block the range starts inside (catalogued hyp-unmap-overreach); a hand-changed return value
    breaks the statement."""
    from ptspec import spec
    from ptspec.proofs.kernel import hyp
    t = _tree()
    h = hyp.hyp_harness(t)(12, 48, 128)
    assert h.step("map", addr=0x200000, size=0x400000, phys=0x100200000, prot=4) == (0, [])
    pre = h.raw_state()
    ret, found = h.step("unmap", addr=0x400000, size=0x1000)       # a page of a block: stops
    assert (ret, found) == (0, [])
    ret, found = h.step("unmap", addr=0x201000, size=0x200000)     # starts inside a block
    assert ret == 0x200000 and found == [] and h.seen.get("hyp-unmap-overreach")
    post = h.raw_state()
    step = {"op": "unmap", "args": {"addr": 0x201000, "size": 0x200000}, "ret": 0x200000,
            "out": {"warnings": []}}
    assert {v.inv for v in spec.check_hyp_step(pre, step, post)} == {"C-HYP-UNMAP"}
    ret, found = h.step("unmap", addr=0x400000, size=0x200000)     # the other block, whole
    assert (ret, found) == (0x200000, [])
    bad = dict(step, args={"addr": 0x400000, "size": 0x200000}, ret=0x1000)
    assert any("returned 0x1000, expected 0x200000" in str(v)
               for v in spec.check_hyp_step(post, bad, h.raw_state()))


def test_a_runtime_without_the_engines_entry_points_is_not_checked(monkeypatch):
    """A tree built with another shim runtime (one without kdiff_nr_allocs): unknown, one line,
    never a traceback or a pass."""
    t = _tree()

    def missing(h):
        raise AttributeError("/x/pgtable.so: undefined symbol: kdiff_nr_allocs")
    monkeypatch.setattr(replay, "allocations", missing)
    r = E.run_engine(t, "errorpaths", budgets.budget("quick"))
    assert r.status == "unknown" and "lacks kdiff_nr_allocs" in r.detail


def test_an_internal_exception_is_an_error_result_not_a_traceback(monkeypatch):
    """A bug in ptspec's own harness (here a planted TypeError in an engine) is reported as one
    "error" line naming where it was raised; the other checks still run, and the exit code is 2
    (nothing refuted, something not checked), never a traceback or a verdict on the kernel."""
    from ptspec.proofs.kernel import check
    t = _tree()

    def broken(*a, **k):
        raise TypeError("planted")
    monkeypatch.setattr(E, "run_check", broken)
    results = check.run(t, ["4k-39"], "quick", 0, engines=("lockstep", "refusal"))
    assert [r.status for r in results] == ["passed", "error"], [r.detail for r in results]
    assert results[1].id == "kernel.refusal.4k-39"
    assert results[1].detail.startswith("internal error in ptspec, not a verdict on the kernel: "
                                        "TypeError: planted at test_kernel_engines.py")
    assert check.exit_code(results) == 2


def test_every_c_engine_builds_the_geometrys_table_options():
    """replay.harness (every C engine's table) applies subject.OPTIONS as the C lock-step does:
    FWB on 4k-48, pages forced on 4k-34, no CMO hooks on 16k-40; none on 4k-39; FEAT_XNX (4k-40,
    4k-48, 16k-40) is dropped on this tree (its pgtable.c never reads it: tests/test_xnx.py)."""
    t = _tree()
    want = {"4k-39": (False, True, False), "4k-48": (True, True, False),
            "4k-34": (False, True, True), "16k-40": (False, False, False),
            "4k-40": (False, True, False)}
    for name, (fwb, cmo, force) in want.items():
        h = replay.harness(t, geometry_name=name)
        raw = h.raw_state()
        assert (raw["has_fwb"], raw["cmo"], h.pgt.force_pte_all) == (fwb, cmo, force), name
        assert f"fwb={fwb}, cmo={cmo}" in h.make_source and f"force_pte={force}" in h.make_source
    assert subject.OPTIONS.keys() <= want.keys()
    # the errorpaths' and refusal's cases are built through it too (init failing included)
    label, h, _ = next(errorpaths.cases(t, geometry="4k-48"))
    assert label.startswith("init") and h.params["fwb"] is True
    _, h, _ = next(refusal.cases(t, geometry="4k-34"))
    assert h.pgt.force_pte_all


# (bug, engine, geometry, statements): bugs only a geometry's table options reach (FWB on 4k-48,
# the shim's page-forcing force_pte_cb on 4k-34); before the engines applied subject.OPTIONS the
# same check passed them (asserted below with the options taken away again)
CAUGHT_BY_OPTIONS = [
    ("fwb-memattr", "exhaustive", "4k-48", {"C-MAP"}),
    ("fwb-memattr", "errorpaths", "4k-48", {"C-MAP"}),
    ("force-pte-cb-ignored", "exhaustive", "4k-34", {"C-MAP"}),
]


@pytest.mark.parametrize("bug,engine,geometry,ids", CAUGHT_BY_OPTIONS,
                         ids=[f"{c[0]}-{c[1]}" for c in CAUGHT_BY_OPTIONS])
def test_engines_catch_bugs_only_the_geometry_options_reach(tmp_path, monkeypatch, bug, engine,
                                                            geometry, ids):
    bad, cex = _refuted_on(tmp_path, bug, engine, geometry, ids)
    opts = {k: v for k, v in subject.OPTIONS[geometry].items() if k != "xnx"}   # (6.1: no XNX)
    assert all(f"{k}=True" in cex["ops"] for k in opts)     # the program builds the same table
    assert "xnx" not in cex["ops"]
    if opts.get("fwb"):                                     # and the C test says which table
        assert cex["c_test"].startswith("/* pgt: 4K pages, ia_bits 48, start level 0; FWB on;")
    with pytest.raises(AssertionError):                     # runs as pasted, ends in the judge
        exec(cex["ops"], {})
    monkeypatch.setattr(replay, "options", lambda name: {})  # the engines as they were
    before = E.run_engine(bad, engine, budgets.budget("quick"), geometry=geometry)
    assert before.status in ("passed", "proved"), before.detail


def test_exhaustive_keys_hold_the_cache_ghost_on_the_c_side():
    """Two runs of the C code to the same tables: a read-write page alone, and the same page after
    an executable block over it (whose I-cache the block's map invalidated; the page keeps the
    block's output, so the host never wrote it): one key before, two now (the old key's parts
    equal); only the cleaner is subsumed by the dirtier, never the other way."""
    from ptspec.proofs.stage2.exhaustive import Explored, alphabet
    t = _tree()
    ops = alphabet()
    assert ops[1][1]["prot"] == 5 and ops[2][1]["prot"] == 6 and ops[2][1]["size"] == 0x1000

    def key(indices):
        h = replay.harness(t, arena_pages=64, mc_capacity=4)
        found, _ = replay.run(h, [("op", *ops[i]) for i in indices])
        assert found == []
        return exhaustive.canonical(h.raw_state(), False, h.cache)
    dirty, clean = key([2]), key([1, 2])
    assert clean[:-1] == dirty[:-1] and clean != dirty
    page = ops[2][1]["phys"]
    assert dirty[-1][1] == ((), ()) and clean[-1][1] == ((page,), (page + 0x1000,))  # I-clean
    assert clean[-1][0] == dirty[-1][0]                                             # D-clean
    seen = Explored()
    assert seen.add(dirty) and not seen.add(clean)
    seen = Explored()
    assert seen.add(clean) and seen.add(dirty) and seen.states == 2


def test_s1_unmap_tlbi_judges_the_el2_invalidations_of_6_1():
    """S1-UNMAP-TLBI on the Debian 6.1 hyp code: an unmap that frees a page and the two tables
    above it (a second mapping keeps the level-1 table) logs vale2is of the page with its level
    and vae2is of each table without a hint: clean. The same step with a table's hint set to its
    level, with hints that name no level the page is at, with only last-level invalidations, or
    with no log at all is refuted, naming what was left in the TLB or the walk caches."""
    from ptspec import spec
    from ptspec.proofs.kernel import hyp
    h = hyp.hyp_harness(_tree())(12, 48, 128)
    assert h.step("map", addr=0x200000, size=0x1000, phys=0x100200000, prot=4) == (0, [])
    assert h.step("map", addr=0x40000000, size=0x1000, phys=0x100400000, prot=4) == (0, [])
    pre = h.raw_state()
    assert h.step("unmap", addr=0x200000, size=0x1000) == (0x1000, [])
    post = h.raw_state()
    assert post["tlb_log"] == [("tlbi_el2_last", 0x200000, 3), ("tlbi_el2", 0x200000, 0),
                               ("tlbi_el2", 0x200000, 0)]
    step = {"op": "unmap", "args": {"addr": 0x200000, "size": 0x1000}, "ret": 0x1000,
            "out": {"warnings": []}}

    def judged(log):
        return [str(v) for v in spec.check_hyp_step(pre, step, dict(post, tlb_log=log))
                if v.inv == "S1-UNMAP-TLBI"]
    assert judged(post["tlb_log"]) == []
    hinted = judged([("tlbi_el2_last", 0x200000, 3), ("tlbi_el2", 0x200000, 2),
                     ("tlbi_el2", 0x200000, 1)])
    assert len(hinted) == 2 and all("table descriptor at level" in v for v in hinted), hinted
    assert any("level 1 for [0x0, 0x40000000)" in v for v in hinted)
    # without the page's own vale2is the no-hint vae2is of the same VA still removes it; with
    # hints that name other levels nothing does
    assert judged(post["tlb_log"][1:]) == []
    no_leaf = judged([("tlbi_el2", 0x200000, 2), ("tlbi_el2", 0x200000, 1)])
    assert len(no_leaf) == 3 and sum("leaf" in v and "level 3" in v for v in no_leaf) == 1, no_leaf
    # the last-level form does not reach the walk caches
    last_only = judged([("tlbi_el2_last", 0x200000, 0)] * 3)
    assert len(last_only) == 2 and all("table descriptor" in v for v in last_only)
    assert len(judged([])) == 3
    # from 6.8 a hint of 0 names level 0 (__tlbi_level encodes 0..3): 6.1's no-hint 0 for the
    # tables is then a level-0 hint that leaves both walk-cache entries; TLBI_TTL_UNKNOWN is none
    as_6_8 = [str(v) for v in spec.check_hyp_step(dict(pre, kernel_version="6.8.0"), step,
                                                   dict(post, kernel_version="6.8.0"))
              if v.inv == "S1-UNMAP-TLBI"]
    assert len(as_6_8) == 2 and all("table descriptor" in v for v in as_6_8), as_6_8
    unknown = [("tlbi_el2_last", 0x200000, 3)] + [("tlbi_el2", 0x200000, 0x7FFFFFFF)] * 2
    assert [v for v in spec.check_hyp_step(dict(pre, kernel_version="6.8.0"), step,
                                           dict(post, kernel_version="6.8.0", tlb_log=unknown))
            if v.inv == "S1-UNMAP-TLBI"] == []


def test_the_old_hyp_table_hint_is_caught_by_s1_unmap_tlbi_alone(tmp_path):
    """hyp-unmap-table-hint (5.17-6.8's hyp_unmap_walker in 6.1's code): every other statement
    passes it; without S1-UNMAP-TLBI the hyp engine would pass the planted tree."""
    bad = planted.scratch_tree("hyp-unmap-table-hint", _tree(), tmp_path / "tree")
    r = E.run_engine(bad, "hyp", budgets.budget("default"))
    assert r.status == "refuted"
    assert {v.split()[0] for v in r.counterexample["violations"]} == {"S1-UNMAP-TLBI"}


def test_every_profile_frees_a_hyp_table_whose_parent_stays(tmp_path):
    """The hyp engine runs hyp.table_freeing_programs before its random runs: map a page at a and
    at a + granule(L), unmap a, for each level L from the start level to 2. So the quick profile
    too refutes hyp-unmap-table-hint, with a 3-step program; the clean tree passes them."""
    from ptspec.proofs.kernel import hyp
    progs = hyp.table_freeing_programs(12, 48)
    assert len(progs) == 3 and all([op for op, _ in p] == ["map", "map", "unmap"] for p in progs)
    assert {p[1][1]["addr"] - p[0][1]["addr"] for p in progs} == {1 << 39, 1 << 30, 1 << 21}
    assert len(hyp.table_freeing_programs(16, 48)) == 2           # 64K/48 starts at level 1
    bad = planted.scratch_tree("hyp-unmap-table-hint", _tree(), tmp_path / "tree")
    r = E.run_engine(bad, "hyp", budgets.budget("quick"))
    assert r.status == "refuted", r.detail
    assert {v.split()[0] for v in r.counterexample["violations"]} == {"S1-UNMAP-TLBI"}
    assert r.counterexample["ops"].count("h.step(") == 3, r.counterexample["ops"]
    assert E.run_engine(_tree(), "hyp", budgets.budget("quick")).status == "passed"
