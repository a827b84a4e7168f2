"""S2-BBM-WALK (walk caches, spec/stage2/walkcache.py): the statement on hand-built states, on impl's
profiles, under its planted bug, and the catalogued kernel finding it makes of 5.12-5.15."""

import pytest

from ptspec import spec
from ptspec.proofs.kernel import catalogue
from ptspec.proofs.kernel import findings
from ptspec.proofs.stage2 import exhaustive
from ptspec.proofs.stage2.harness import Stage2Harness
from ptspec.proofs.stage2.planted import BUGS, planted
from ptspec.spec.stage2.walkcache import check_bbm_walk, walk_entries
from test_spec_builder import S2, ids, step

IPA, OA = 0x4000_0000, 0x8000_0000
TTL_UNKNOWN = 0x7fff_ffff            # a later kernel's TLBI_TTL_UNKNOWN (INT_MAX), as the shim logs it


def _freed_table():
    """pre: one table at level 2 under IPA (holding no valid leaf); post: that table freed."""
    pre = S2(ps=12, ia=40)
    pre.owner(IPA, 3, 1)
    post = pre.copy().drop_table(IPA, 2)
    return pre, post


def _judge(pre, post, log, op="unmap"):
    return check_bbm_walk(spec.load_state(pre.raw()), spec.load_step(step(op, addr=IPA, size=0x20_0000)),
                          spec.load_state(post.raw(log)))


def test_walk_entries_are_the_table_descriptors_the_walk_reaches():
    pre, _ = _freed_table()
    st = spec.load_state(pre.raw())
    level2_table = pre.slot(IPA, 3)[0]
    assert (IPA, 2, level2_table) in walk_entries(st)
    assert all(level < 3 for _, level, _ in walk_entries(st))
    assert not any(t in st.roots for _, _, t in walk_entries(st))


@pytest.mark.parametrize("log,ok", [
    ([("tlbi_ipa", IPA, 0)], True),                  # no level hint: 6.1
    ([("tlbi_ipa", IPA + 0x1000, 0)], True),         # any address the entry covers
    ([("tlbi_ipa", IPA, TTL_UNKNOWN)], True),        # 6.12's TLBI_TTL_UNKNOWN
    ([("tlbi_vmid",)], True),
    ([("tlbi_ipa", IPA, 2)], False),                 # the table's own level: 5.12-5.15
    ([("tlbi_ipa", IPA, 3)], False),                 # a leaf hint
    ([("tlbi_ipa", IPA + 0x20_0000, 0)], False),     # outside the entry's range
    ([], False),
])
def test_a_freed_table_needs_an_invalidation_without_a_level_hint(log, ok):
    pre, post = _freed_table()
    found = _judge(pre, post, log)
    assert (found == []) == ok, found
    if not ok:
        assert ids(found) == ["S2-BBM-WALK"]
        assert "level 2" in str(found[0]) and f"{IPA:#x}" in str(found[0])
        assert spec.check_step(pre.raw(), step("unmap", addr=IPA, size=0x20_0000), post.raw(log))


@pytest.mark.parametrize("version,ok", [
    (None, True), ("6.1.176", True), ("6.6.87", True), ("6.7.0", True),   # 0 sets no TTL
    ("6.8.0", False), ("6.12.19", False), ("7.1.5", False),              # 0 names level 0
])
def test_hint_0_covers_a_table_descriptor_only_before_6_8(version, ok):
    """From 6.8 __tlbi_level encodes any level in 0..3 (LPA2), so a hint of 0 promises a level-0
    leaf and a CPU with FEAT_LPA2 may keep the cached table descriptor; TLBI_TTL_UNKNOWN is the
    no-hint value there. Before 6.8 a level of 0 sets no TTL (6.1.y and 6.6.y pass it for zapped
    tables, correctly)."""
    pre, post = _freed_table()

    def judged(log):
        pre_raw, post_raw = pre.raw(), post.raw(log)
        if version:
            pre_raw["kernel_version"] = post_raw["kernel_version"] = version
        return check_bbm_walk(spec.load_state(pre_raw), spec.load_step(step("unmap", addr=IPA, size=0x20_0000)),
                              spec.load_state(post_raw))
    found = judged([("tlbi_ipa", IPA, 0)])
    assert (found == []) == ok, found
    if not ok:
        assert ids(found) == ["S2-BBM-WALK"] and "level 0" in str(found[0]), found
    assert judged([("tlbi_ipa", IPA, TTL_UNKNOWN)]) == []      # no hint on every kernel
    assert ids(judged([("tlbi_ipa", IPA, 2)])) == ["S2-BBM-WALK"]


def test_unchanged_tables_and_destroy_need_nothing():
    pre, _ = _freed_table()
    assert _judge(pre, pre.copy(), []) == []
    gone = S2(ps=12, ia=40, init=False)
    assert check_bbm_walk(spec.load_state(pre.raw()), spec.load_step(step("destroy")),
                          spec.load_state(gone.raw())) == []


def test_a_table_replaced_by_another_needs_the_invalidation():
    """The same range reached through a different next-level table is a changed entry."""
    pre, _ = _freed_table()
    post = pre.copy().drop_table(IPA, 2)
    post.owner(IPA, 3, 1)                       # a new level-3 table at a new page
    assert pre.slot(IPA, 3)[0] != post.slot(IPA, 3)[0]
    assert ids(_judge(pre, post, [("tlbi_ipa", IPA, 2)])) == ["S2-BBM-WALK"]
    assert _judge(pre, post, [("tlbi_ipa", IPA, 0)]) == []


def _map_then_unmap(**kw):
    h = Stage2Harness(12, 39, **kw)
    h.step("map", addr=0x0, size=0x1000, phys=0x80_0000_0000, prot=6)
    return h.step("unmap", addr=0x0, size=0x20_0000)


def test_impl_default_and_6_1_pass_no_hint_5_15_passes_the_level():
    for kv in (None, "6.1"):
        ret, found = _map_then_unmap(**({"kernel_version": kv} if kv else {}))
        assert ret == 0 and found == [], (kv, found)
    ret, found = _map_then_unmap(kernel_version="5.15")
    assert ret == 0 and ids(found) == ["S2-BBM-WALK"]
    # the level-2 table (under the level-1 descriptor) and the level-3 table (under the level-2 one)
    assert sorted(v.where["level"] for v in found) == [1, 2]


def test_planted_table_tlbi_hint_is_caught_only_by_s2_bbm_walk():
    assert BUGS["table-tlbi-hint"].caught_by == ("S2-BBM-WALK",)
    with planted("table-tlbi-hint"):
        ret, found = _map_then_unmap()
        assert ids(found) == ["S2-BBM-WALK"]          # S2-BBM (leaves) stays silent
        out = exhaustive.explore(2)
    assert out.status == "refuted" and {str(v).split()[0] for v in out.violations} == {"S2-BBM-WALK"}


def test_the_5_15_hint_is_a_catalogued_finding_for_5_10_to_6_1_105():
    from ptspec.spec.violation import Violation
    v = Violation("S2-BBM-WALK", "unmap: table descriptor at level 2 for [0x0, 0x200000) -> table "
                  "0x1000 was removed ...; the log has tlbi_ipa 0x0 level 3, tlbi_ipa 0x0 level 2, "
                  "whose level hint names a leaf level and does not cover a table descriptor",
                  {"ipa": 0, "level": 2, "table": 0x1000})
    un = {"op": "unmap", "ret": 0, "args": {"addr": 0, "size": 0x20_0000}}
    for version in ((5, 14, 2), (5, 15, 100)):
        assert findings.finding_for(v, un, version).id == "table-tlbi-level"
    assert findings.finding_for(v, un, (6, 1, 176)) is None
    assert findings.finding_for(v, un, (6, 1, 105)).id == "table-tlbi-level"   # before the backport
    assert findings.finding_for(v, un, (5, 9, 0)) is None
    assert findings.finding_for(v, dict(un, op="map"), (5, 15, 100)) is None
    entry = next(e for e in catalogue.ENTRIES if e.id == "table-tlbi-level")
    assert entry.shows_in == ("5.15",)            # impl's default now passes no hint, as 6.1


# -- the kernel's own C (skipped without the cached sources or a compiler) ---------------------------

def _c_map_then_unmap(t):
    from ptspec.proofs.kernel import subject
    h = subject.subject_factory(t)(12, 39, arena_pages=64, mc_capacity=8)
    h.step("map", addr=0x0, size=0x1000, phys=0x80_0000_0000, prot=6)
    ret, found = h.step("unmap", addr=0x0, size=0x20_0000)
    return h, ret, found


@pytest.mark.parametrize("prefix", ["5.15", "5.14"])
def test_5_14_and_5_15_c_code_show_the_catalogued_finding(prefix):
    from kdiff_support import need_tree
    h, ret, found = _c_map_then_unmap(need_tree(prefix))
    assert ret == 0 and found == [] and h.findings == {"table-tlbi-level": 2}, (found, h.findings)


def test_6_1_c_code_passes_and_with_the_hint_put_back_is_refuted(tmp_path):
    from kdiff_support import need_kernel
    from ptspec.proofs.kernel import check
    from ptspec.proofs.kernel import planted as cplanted
    from ptspec.proofs.kernel import tree as T
    from ptspec.proofs.runner import budgets
    need_kernel()
    t, why = T.default_tree()
    if t is None:
        pytest.skip(why)
    h, ret, found = _c_map_then_unmap(t)
    assert ret == 0 and found == [] and h.findings == {}
    bad = cplanted.scratch_tree("table-tlbi-hint", t, tmp_path / "tree")
    h, ret, found = _c_map_then_unmap(bad)
    assert ret == 0 and ids(found) == ["S2-BBM-WALK"] and h.findings == {}
    r = check.check_geometry(bad, "4k-39", budgets.budget("default"), 0)
    assert r.status == "refuted" and r.detail.split()[1] == "S2-BBM-WALK", r.detail
    with pytest.raises(cplanted.EditError):          # a stage2_put_pte without the line
        cplanted.apply_edit("static void stage2_put_pte(void)\n{\n}\n",
                            cplanted.C_SOURCE_BUGS["table-tlbi-hint"])


# == CMO-POC / CMO-POU: the cache ghost (spec/arch/cache.py, spec/stage2/cache.py, spec/mmu/cache.py) ==

import random
from collections import Counter
from types import SimpleNamespace

from ptspec.spec.arch.cache import CacheGhost, Counts, Intervals
from ptspec.spec.stage2.cache import CacheJudge


def test_intervals_and_counts_agree_with_plain_sets():
    rng = random.Random(1)
    for _ in range(600):
        s, ref = Intervals(), set()
        c, cref = Counts(), Counter()
        for _ in range(10):
            a = rng.randrange(0, 40)
            b = a + rng.randrange(0, 12)
            if rng.random() < 0.6:
                s.add(a, b)
                ref |= set(range(a, b))
            else:
                s.remove(a, b)
                ref -= set(range(a, b))
            d = rng.choice((1, 1, -1))
            c.add(a, b, d)
            for x in range(a, b):
                cref[x] += d
            assert all(lo < hi for lo, hi in s.pairs())
            assert all(s.hi[i - 1] < s.lo[i] for i in range(1, len(s.lo)))
            assert {x for lo, hi in s.pairs() for x in range(lo, hi)} == ref
            q, r = rng.randrange(0, 45), rng.randrange(0, 10)
            assert s.first_gap(q, q + r) == next((x for x in range(q, q + r) if x not in ref), None)
            assert {x for lo, hi in c.zero_parts(q, q + r) for x in range(lo, hi)} == \
                {x for x in range(q, q + r) if cref[x] <= 0}


@pytest.mark.parametrize("contiguous", [False, True])
@pytest.mark.parametrize("coherent", [False, True])
def test_ghost_apply_in_runs_equals_event_by_event(coherent, contiguous):
    """contiguous: events mostly continue the one before (runs of pages, as the kernel logs them)."""
    rng = random.Random(7)
    for _ in range(400):
        log = []
        for _ in range(rng.randrange(1, 14)):
            kind = rng.choice(("dcache", "icache", "icache", "tlbi_ipa"))
            pa = rng.randrange(0, 12) * 0x1000
            if contiguous and log and rng.random() < 0.7:
                pa = log[-1][1] + (log[-1][2] if log[-1][0] != "tlbi_ipa" else 0)
            log.append((kind, pa, rng.choice((0x1000, 0x2000))) if kind != "tlbi_ipa" else (kind, pa, 3))
            if rng.random() < 0.3:
                log.append(log[-1])
        runs, one = CacheGhost(coherent), CacheGhost(coherent)
        for g in (runs, one):
            g.dclean.add(0x3000, 0x5000)
        runs.apply(log)
        for ev in log:
            if ev[0] in ("dcache", "icache"):
                one.event(ev)
        assert (runs.dclean, runs.iclean) == (one.dclean, one.iclean), log


def _pages_of(intervals, page=0x1000):
    return {pa for lo, hi in intervals.pairs() for pa in range(lo, hi, page)}


@pytest.mark.parametrize("bug", [None, "icache-before-dcache", "cmo-skips-blocks"])
def test_judge_equals_its_plain_statement_page_by_page(bug):
    """Random sequences of the exhaustive alphabet (a 4M window): CacheJudge (intervals over the
    diff) and PlainCacheJudge (page by page, sets) report the same ids and keep the same ghost."""
    import contextlib
    from ptspec.spec.stage2.cache import PlainCacheJudge
    ops = [op for op in exhaustive.alphabet() if op[0] != "fail_next_alloc"] + [("destroy", {})]
    rng = random.Random(5)
    with planted(bug) if bug else contextlib.nullcontext():
        for _ in range(12):
            h = Stage2Harness(12, 39, arena_pages=64, mc_capacity=4)
            plain = PlainCacheJudge(0x4000_0000, 0x4040_0000)
            for _ in range(8):
                op, args = rng.choice(ops)
                if h.destroyed:
                    break
                pre = h.state
                _, found = h.step(op, **args)
                expect = plain.check(pre, spec.load_step({"op": op, "args": args, "ret": 0}), h.state)
                assert set(ids(found)) & {"CMO-POC", "CMO-POU"} == expect, (op, args, found)
                assert _pages_of(h.cache.ghost.dclean) == plain.dclean
                assert _pages_of(h.cache.ghost.iclean) == plain.iclean


def test_ghost_an_icache_invalidation_counts_only_after_the_dcache_clean():
    g = CacheGhost()
    g.apply([("icache", 0x1000, 0x1000), ("dcache", 0x1000, 0x1000)])
    assert g.d_gap(0x1000, 0x1000) is None and g.i_gap(0x1000, 0x1000) == 0x1000
    g.apply([("icache", 0x1000, 0x1000)])
    assert g.i_gap(0x1000, 0x1000) is None
    g.host_write(0x1800, 0x10)
    assert g.d_gap(0x1000, 0x1000) == 0x1800 and g.i_gap(0x1000, 0x1000) == 0x1800
    coherent = CacheGhost(coherent_d=True)
    coherent.apply([("icache", 0x1000, 0x1000)])
    assert coherent.i_gap(0x1000, 0x1000) is None and coherent.d_gap(0x1000, 0x1000) == 0x1000


PA2 = 0x9000_0000


def _run(judge, steps, **kw):
    """Run (op, [(ipa, oa, leaf kwargs) to map], [ipa to unmap], log) steps on S2 builders."""
    b = S2(ps=12, ia=40, cmo=kw.get("cmo", True), fwb=kw.get("fwb", False))
    out = []
    for op, maps, unmaps, log in steps:
        pre = b.copy()
        for ipa, oa, lk in maps:
            b.page(ipa, oa, **lk)
        for ipa in unmaps:
            b.set(ipa, 3, 0)
        found = judge.check(spec.load_state(pre.raw()), SimpleNamespace(op=op),   # reads .op only
                            spec.load_state(b.raw(log)))
        out.append(ids(found))
    return out


def test_judge_poc_on_hand_built_steps():
    clean = [("dcache", OA, 0x1000)]
    assert _run(CacheJudge(), [("map", [(IPA, OA, {})], [], clean)]) == [[]]
    assert _run(CacheJudge(), [("map", [(IPA, OA, {})], [], [])]) == [["CMO-POC"]]
    assert _run(CacheJudge(), [("map", [(IPA, OA, {})], [], [])], fwb=True) == [[]]     # FWB
    assert _run(CacheJudge(), [("map", [(IPA, OA, {})], [], [])], cmo=False) == [[]]   # host s2
    assert _run(CacheJudge(), [("map", [(IPA, OA, {"device": True})], [], [])]) == [[]]
    # an alias keeps the page the guest's: unmapping one IPA does not hand it to the host ...
    seq = [("map", [(IPA, OA, {})], [], clean), ("map", [(IPA + 0x1000, OA, {})], [], clean),
           ("unmap", [], [IPA], []), ("map", [(IPA + 0x2000, OA, {})], [], [])]
    assert _run(CacheJudge(), seq) == [[], [], [], []]
    # ... unmapping the last one does: mapping it again needs a new clean
    seq = [("map", [(IPA, OA, {})], [], clean), ("unmap", [], [IPA], []),
           ("map", [(IPA, OA, {})], [], [])]
    assert _run(CacheJudge(), seq) == [[], [], ["CMO-POC"]]
    # an attribute change of a mapped page (same output) needs nothing new
    seq = [("map", [(IPA, OA, {})], [], clean), ("wrprotect", [(IPA, OA, {"w": False})], [], [])]
    assert _run(CacheJudge(), seq) == [[], []]


def test_judge_pou_on_hand_built_steps():
    ok = [("dcache", OA, 0x1000), ("icache", OA, 0x1000)]
    assert _run(CacheJudge(), [("map", [(IPA, OA, {"x": True})], [], ok)]) == [[]]
    assert _run(CacheJudge(), [("map", [(IPA, OA, {"x": True})], [], ok[::-1])]) == [["CMO-POU"]]
    assert _run(CacheJudge(), [("map", [(IPA, OA, {"x": True})], [], ok[:1])]) == [["CMO-POU"]]
    assert _run(CacheJudge(dic=True), [("map", [(IPA, OA, {"x": True})], [], ok[:1])]) == [[]]
    # relax_perms granting X to a mapped, cleaned page: the I-cache invalidation is enough
    seq = [("map", [(IPA, OA, {})], [], ok[:1]),
           ("relax_perms", [(IPA, OA, {"x": True})], [], [("icache", OA, 0x1000)])]
    assert _run(CacheJudge(), seq) == [[], []]
    seq[1] = ("relax_perms", [(IPA, OA, {"x": True})], [], [])
    assert _run(CacheJudge(), seq) == [[], ["CMO-POU"]]


@pytest.mark.parametrize("bug,only", [("cmo-skips-blocks", False), ("icache-before-dcache", True)])
def test_impl_planted_cmo_bugs_are_caught_by_the_ghost(bug, only):
    with planted(bug):
        h = Stage2Harness(12, 39)
        _, found = h.step("map", addr=0x20_0000, size=0x20_0000, phys=0x80_0000_0000, prot=7)
        out = exhaustive.explore(1)
    assert {"CMO-POC", "CMO-POU"} & set(ids(found))
    if only:
        assert ids(found) == ["CMO-POU"]            # C-CMO (events present, order not judged) is silent
        assert {str(v).split()[0] for v in out.violations} == {"CMO-POU"}
    else:
        assert {"C-CMO", "CMO-POC"} <= set(ids(found))
    assert out.status == "refuted"


def test_the_clean_impl_and_its_lock_step_pass_the_ghost():
    from ptspec.proofs.stage2 import lockstep
    out = lockstep.run_lockstep("4k-39", examples=30, steps=40, seed=3)
    assert out.status == "passed" and out.steps > 500


# -- mmu.c 5.13 --------------------------------------------------------------------------------------

def _scenario_ids(name):
    from ptspec.proofs.mmu import scenarios as mmu_scenarios
    (_, h, found), = list(mmu_scenarios.run_all([name]))
    return h, {str(v).split()[0] for v in found}


@pytest.mark.parametrize("bug,scenario,expect", [
    ("ksm-exec", "ksm-neighbour", {"CMO-POU", "MS-PERM"}),  # X no fetch justified, over a stale I-cache
    ("perm-relax-no-icache", "exec-after-read", {"CMO-POU", "C-MMU-CMO"}),
    ("block-clean-one-page", "hugetlb-pud", {"CMO-POC", "C-MMU-CMO"}),
])
def test_mmu_planted_cmo_bugs(bug, scenario, expect):
    from ptspec.proofs.mmu.planted import planted_mmu
    h, found = _scenario_ids(scenario)
    assert found == set() and not h.violations
    with planted_mmu(bug):
        h, found = _scenario_ids(scenario)
    assert found == expect, found


def test_mmu_finding_perm_fault_block_without_clean():
    """5.13: logging on, a read maps one page of a THP; logging off, a write to it is a permission
    fault whose mapping size (2M) is not the fault granule: the block is mapped with no clean.
    The harness counts it as finding perm-block-no-clean; the judge alone reports CMO-POC."""
    from ptspec.proofs.mmu.harness import VmHarness
    from ptspec.spec.mmu.cache import VmCacheJudge
    h, found = _scenario_ids("perm-after-logging")
    assert found == set() and h.findings == {"perm-block-no-clean": 1}
    # the same trace judged by a fresh ghost that knows no findings
    replay = VmHarness(h.layout, check=True)
    judge = VmCacheJudge()
    pre = replay._view
    seen = []
    for op, args in h.trace:
        replay.step(op, **args)
        post = replay._view
        seen += [str(v) for v in judge.check(pre, op, post)]
        pre = post
    assert len(seen) >= 1 and all(s.startswith("CMO-POC vm:access") for s in seen), seen


def test_6_1_c_code_passes_the_ghost_and_a_planted_block_without_clean_is_refuted(tmp_path):
    from kdiff_support import need_kernel
    from ptspec.proofs.kernel import planted as cplanted
    from ptspec.proofs.kernel import subject
    from ptspec.proofs.kernel import tree as T
    need_kernel()
    t, why = T.default_tree()
    if t is None:
        pytest.skip(why)
    for tree, expect in ((t, []), (cplanted.scratch_tree("cmo-skips-blocks", t, tmp_path / "tr"),
                                   ["C-CMO", "CMO-POC", "CMO-POU"])):
        h = subject.subject_factory(tree)(12, 39, arena_pages=64, mc_capacity=8)
        _, found = h.step("map", addr=0x20_0000, size=0x20_0000, phys=0x80_0000_0000, prot=7)
        assert ids(found) == expect, found


def test_the_table_tlbi_ranges_hold_the_trees_that_were_run():
    """The releases each zapped-table finding was seen on (or not) sit inside (outside) its
    ranges: table-tlbi-level (S2-BBM-WALK), table-tlbi-deferred (S2-TABLE-TLBI) and
    hyp-table-tlbi-level (S1-UNMAP-TLBI), as check-kernel ran them in stop 27."""
    by_id = {f.id: f for f in findings.FINDINGS}
    seen = {"table-tlbi-level": [(5, 14, 2), (5, 15, 100), (5, 17, 0), (5, 19, 0), (6, 1, 55),
                                 (6, 3, 8), (6, 6, 9), (6, 8, 0)],
            "table-tlbi-deferred": [(6, 6, 9), (6, 8, 0)],
            "hyp-table-tlbi-level": [(5, 17, 0), (5, 19, 0), (6, 1, 55), (6, 3, 8), (6, 6, 9),
                                     (6, 8, 0)]}
    clean = [(6, 1, 158), (6, 1, 176), (6, 6, 63), (6, 6, 87), (6, 12, 19), (6, 13, 7),
             (6, 18, 35), (6, 19, 9), (7, 0, 0), (7, 1, 5)]
    for fid, versions in seen.items():
        assert all(by_id[fid].applies_to(v) for v in versions), fid
        assert not any(by_id[fid].applies_to(v) for v in clean), fid
