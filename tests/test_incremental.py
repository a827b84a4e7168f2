"""The incremental judgement of a step (load_state's ``prev``, the shared walk, the compact diff)
equals the judgement from scratch: same states, same violations, same messages.

The lock-step harness loads each post-state from its pre-state (``spec.load_state(raw, prev=pre)``:
equal pages and the walk's shape are shared) and judges the two-state checks on the diff that
sharing makes cheap; every FULL_EVERY-th step it loads and judges from scratch instead. Here every
step of many random lock-step runs (clean, and with planted bugs of the two-state and the
single-state checks) is judged both ways, and the two must agree exactly: the states, every
two-state violation (S2-BBM, S2-BBM-WALK, the contract, C-CMO, pool balance), CMO-POC/POU on a
ghost kept both ways, and the single-state invariants (windowed too, while the pre-state is clean,
as tests/test_window.py states the window).
"""

import pytest

from ptspec import spec
from ptspec.proofs.stage2 import harness as H
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2.planted import planted
from program_support import program_steps
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch.walk import DESC, END, LEVEL, START
from ptspec.spec.stage2 import cmo
from ptspec.spec.stage2.cache import CacheJudge
from ptspec.spec.stage2.contract_common import Report, op_range
from ptspec.spec.stage2.ranges import covers, union
from ptspec.spec.stage2.segments import covering, is_valid, same_translation, sweep
from ptspec.spec.stage2.state import kernel_since
from ptspec.spec.stage2.step import walk_error
from ptspec.spec.stage2.window import changed_tables_plain

FIELDS = ("kind", "page_shift", "ia_bits", "start_level", "pa_bits", "owner_field", "max_owner_id",
          "has_fwb", "cmo", "idmap", "roots", "pages", "refcount", "memcache", "free_pages",
          "pool_errors", "tlb_log", "kernel_version")


def _judged_steps(name, seed, steps=60, monkeypatch=None):
    """(first raw state, [(pre raw, step record, post raw)]) of every judged step of one checked
    lock-step run, as the harness judged them (its own step records)."""
    ps, ia, field = lockstep.GEOMETRIES[name]
    seen = []
    real = spec.check_step

    def spy(pre, step, post):
        seen.append(step)
        return real(pre, step, post)

    monkeypatch.setattr(H.spec, "check_step", spy)
    h = H.Stage2Harness(ps, ia, owner_field=field, arena_pages=512 if ps == 12 else 128,
                        **lockstep.OPTIONS.get(name, {}))
    first = before = h._last_raw
    n = 0
    out = []
    for _ in program_steps(h, ps, ia, seed, steps):
        if len(seen) > n:
            out.append((before, seen[-1], h._last_raw))
        before, n = h._last_raw, len(seen)
    monkeypatch.setattr(H.spec, "check_step", real)
    return first, out


def _text(found):
    return [str(v) for v in found]


def _compare(first, records):
    """Judge every record from scratch and incrementally; returns (steps compared, steps with a
    two-state violation)."""
    pre_f = spec.load_state(first)
    pre_i = spec.load_state(first)
    cache_f, cache_i = CacheJudge(), CacheJudge()
    judged = broken = 0
    last_raw = first
    for pre_raw, step, post_raw in records:
        if pre_raw is not last_raw:          # a refused call in between: the harness reloaded
            pre_f, pre_i = spec.load_state(pre_raw), spec.load_state(pre_raw, pre_i)
        post_f = spec.load_state(post_raw)
        post_i = spec.load_state(post_raw, pre_i)
        for k in FIELDS:
            assert getattr(post_i, k) == getattr(post_f, k), k
        full = spec.check_step(pre_f, step, post_f) + cache_f.check(pre_f, step, post_f)
        incr = spec.check_step(pre_i, step, post_i) + cache_i.check(pre_i, step, post_i)
        assert _text(incr) == _text(full), step
        assert cache_i.ghost.dclean == cache_f.ghost.dclean
        assert cache_i.ghost.iclean == cache_f.ghost.iclean
        whole = _text(spec.check_state(post_f))
        assert _text(spec.check_state(post_i)) == whole
        if not spec.check_state(pre_f):
            window = spec.changed_tables(pre_i, post_i)
            assert window == changed_tables_plain(pre_i, post_i)
            assert _text(spec.check_state(post_i, pages=window)) == whole
        judged += 1
        broken += bool(full)
        pre_f, pre_i, last_raw = post_f, post_i, post_raw
    return judged, broken


@pytest.mark.parametrize("name", ["4k-39", "4k-48", "4k-34", "16k-47", "64k-44"])
def test_incremental_equals_from_scratch_on_clean_runs(name, monkeypatch):
    judged = shared = 0
    for seed in range(4 if name.startswith("4k") else 2):
        first, records = _judged_steps(name, seed, monkeypatch=monkeypatch)
        n, broken = _compare(first, records)
        assert broken == 0
        judged += n
        pre = spec.load_state(first)
        for _, _, post_raw in records:           # the sharing is real: equal pages are not re-parsed
            post = spec.load_state(post_raw, pre)
            shared += sum(post.pages[pa] is pre.pages.get(pa) for pa in post.pages)
            pre = post
    assert judged > 80 and shared > 0


@pytest.mark.parametrize("bug_id", ["put-pte-no-tlbi", "coalesce-tlbi", "table-tlbi-hint",
                                    "cmo-skips-blocks", "icache-before-dcache", "phys-advance",
                                    "owner-unmap", "valid-update-ref", "table-upper-bits",
                                    "flush-skips-blocks"])
def test_incremental_equals_from_scratch_with_planted_bugs(bug_id, monkeypatch):
    """With a planted bug the runs break the spec, and every step (the broken ones and those after
    them) is judged the same both ways."""
    broken = 0
    with planted(bug_id):
        for seed in range(8):
            first, records = _judged_steps("4k-39", seed, monkeypatch=monkeypatch)
            _, b = _compare(first, records)
            broken += b
            if broken and seed >= 3:
                break
    single_state = bug_id in ("valid-update-ref", "table-upper-bits")
    assert broken or single_state


def _run_harness(seed, full_every, bug_id=None, steps=80):
    """The violations per step of one harness run whose full cross-check comes every full_every-th
    step (1: every step loaded and judged from scratch)."""
    old = H.FULL_EVERY
    H.FULL_EVERY = full_every
    try:
        with planted(bug_id) if bug_id else _nothing():
            h = H.Stage2Harness(12, 39, owner_field=lockstep.GEOMETRIES["4k-39"][2], arena_pages=512)
            out = []
            for found in program_steps(h, 12, 39, seed, steps):
                out.append(_text(found))
                if found:
                    break               # the lock-step stops at the first broken step
            return out
    finally:
        H.FULL_EVERY = old


@pytest.mark.parametrize("bug_id", [None, "put-pte-no-tlbi", "owner-field-shift", "cmo-skips-blocks",
                                    "anchor-leak"])
def test_the_harness_reports_what_a_from_scratch_harness_reports(bug_id):
    """The lock-step harness (incremental, the whole state every FULL_EVERY-th step) and one that
    judges every step from scratch report the same violations up to the first broken step."""
    stopped = 0
    for seed in range(6):
        incr, full = _run_harness(seed, H.FULL_EVERY, bug_id), _run_harness(seed, 1, bug_id)
        assert incr == full
        stopped += bool(incr and incr[-1])
    assert stopped or bug_id is None


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _cmo_map_by_sweep(pre, step, post):
    """C-CMO of a map as the statement reads (and as check_cmo first computed it): every segment
    of R swept, each new valid leaf judged by itself."""
    rep = Report("C-CMO", step)
    A, E = op_range(pre, step)
    if walk_error(pre, A, E) is not None or E <= A:
        return []
    ranges = {k: union([ev[1], ev[1] + ev[2]] for ev in post.tlb_log if ev[0] == k)
              for k in ("dcache", "icache")}
    seen = set()
    for s, e, p, q in sweep(pre, post, A, E):
        if not is_valid(q) or same_translation(p, q) or q[START] in seen:
            continue
        if (kernel_since(pre, (6, 12, 0)) and is_valid(p) and p[LEVEL] == q[LEVEL]
                and not (p[DESC] ^ q[DESC]) & ~D.SW_MASK):
            continue
        seen.add(q[START])
        oa, size = D.address(q[DESC], pre.page_shift), q[END] - q[START]
        for kind, need, why in (("dcache", D.is_cacheable(q[DESC], pre.has_fwb), "new cacheable leaf"),
                                ("icache", D.is_executable(q[DESC]), "new executable leaf")):
            if need and not covers(ranges[kind], oa, oa + size):
                rep.add(f"{why} {q[DESC]:#x} at ipa {q[START]:#x} level {q[LEVEL]} has no "
                        f"[\"{kind}\", ...] covering its output [{oa:#x}, {oa + size:#x})",
                        {"ipa": q[START], "level": q[LEVEL], "desc": q[DESC]})
    return rep.result()


def _cmo_unmap_by_leaves(pre, step, post):
    """C-CMO of an unmap as the statement reads: each valid cacheable leaf intersecting R whose
    first page no longer translates validly (a hardware walk of the post-state) needs a dcache."""
    rep = Report("C-CMO", step)
    A, E = op_range(pre, step)
    if pre.has_fwb or walk_error(pre, A, E) is not None or E <= A:
        return []
    ranges = union([ev[1], ev[1] + ev[2]] for ev in post.tlb_log if ev[0] == "dcache")
    for p in covering(pre, A, E):
        if not is_valid(p) or not D.is_cacheable(p[DESC], False):
            continue
        if spec.translate(post, p[START]).valid:
            continue
        oa, size = D.address(p[DESC], pre.page_shift), p[END] - p[START]
        if not covers(ranges, oa, oa + size):
            rep.add(f"removed cacheable leaf {p[DESC]:#x} at ipa {p[START]:#x} level {p[LEVEL]} has "
                    f"no [\"dcache\", ...] covering its output [{oa:#x}, {oa + size:#x})",
                    {"ipa": p[START], "level": p[LEVEL], "desc": p[DESC]})
    return rep.result()


@pytest.mark.parametrize("bug_id", [None, "cmo-skips-blocks"])
def test_cmo_map_judges_the_diff_as_the_sweep_does(bug_id, monkeypatch):
    """check_cmo judges a map's new leaves from the diff inside R, runs of pages at once, and an
    unmap's removed leaves from the diff: the same findings, in the same order, as sweeping R leaf
    by leaf; with a planted bug it finds some."""
    maps = found = 0
    with planted(bug_id) if bug_id else _nothing():
        for name in ("4k-39", "64k-44"):
            for seed in range(6):
                first, records = _judged_steps(name, seed, monkeypatch=monkeypatch)
                for pre_raw, step, post_raw in records:
                    if step["op"] not in ("map", "unmap"):
                        continue
                    pre, post = spec.load_state(pre_raw), spec.load_state(post_raw)
                    if not pre.cmo:
                        continue
                    st = spec.load_step(step)
                    judge = _cmo_map_by_sweep if st.op == "map" else _cmo_unmap_by_leaves
                    want = _text(judge(pre, st, post))
                    assert _text(cmo.check_cmo(pre, st, post)) == want
                    maps += 1
                    found += bool(want)
    assert maps > 50
    assert found or not bug_id


@pytest.mark.parametrize("ps", [12, 16])
def test_cmo_map_reports_every_uncleaned_page_of_new_tables(ps):
    """A map builds new level-3 tables (runs of pages, judged at once when covered): the pages the
    log does not clean or invalidate are each reported, as the sweep reports them; pages whose
    outputs do not continue each other are not taken for one run."""
    from tests.test_spec_builder import RWX, S2, step
    ia = 39 if ps == 12 else 44
    g, n = 1 << ps, 1 << (ps - 3)
    base, phys = n * g * 4, 0x8000_0000
    st = spec.load_step(step("map", addr=base, size=2 * n * g, phys=phys, prot=RWX, force_pte=True))
    pre = S2(ps=ps, ia=ia, cmo=True)
    a = spec.load_state(pre.raw())

    def judged(post, log):
        b = spec.load_state(post.raw(tlb=log))
        got = _text(cmo.check_cmo(a, st, b))
        assert got == _text(_cmo_map_by_sweep(a, st, b))
        return got

    post = pre.copy()                               # two new tables, outputs continuing
    for i in range(2 * n):
        post.page(base + i * g, phys + i * g, x=True)
    holes = {n + 3, n + 4, 2 * n - 1}               # pages neither cleaned nor invalidated
    log = [[k, phys + i * g, g] for i in range(2 * n) if i not in holes for k in ("dcache", "icache")]
    got = judged(post, log)
    assert len(got) == 2 * len(holes)               # a dcache and an icache finding per hole
    assert all(f"{phys + i * g:#x}," in " ".join(got) for i in holes)
    assert judged(post, [[k, phys, 2 * n * g] for k in ("dcache", "icache")]) == []

    post = pre.copy()                               # one new table, outputs every other page
    for i in range(n):
        post.page(base + i * g, phys + 2 * i * g, x=True)
    got = judged(post, [[k, phys, n * g] for k in ("dcache", "icache")])
    beyond = 2 * (n // 2)                           # the pages mapped beyond [phys, phys + n * g)
    assert len(got) == 17 and got[-1].endswith(f"and {beyond - 16} more finding(s) of the same step")


def test_cmo_unmap_reports_each_removed_leaf_without_its_clean():
    """An unmap removes a block that starts before R, pages, and an annotation: each removed
    cacheable leaf whose output was not cleaned is reported once, in address order, as the plain
    reading reports it; a leaf the step left mapped is not."""
    from tests.test_spec_builder import S2, step
    pre = S2(ps=12, ia=39, cmo=True)
    M2, g = 1 << 21, 1 << 12
    pre.block(0, 2, 0x8000_0000)                        # [0, 2M): starts before R
    for i in range(4):
        pre.page(M2 + i * g, 0x9000_0000 + i * g)       # four pages in R
    pre.owner(M2 + 8 * g, 3, 1)
    pre.page(M2 + 9 * g, 0xA000_0000)                   # beyond R: stays
    post = pre.copy()
    post.set(0, 2, 0)
    for i in range(4):
        post.set(M2 + i * g, 3, 0)
    post.set(M2 + 8 * g, 3, 0)
    st = spec.load_step(step("unmap", addr=M2 - g, size=9 * g + g))
    a = spec.load_state(pre.raw())
    for cleaned, missing in (([0x8000_0000, 0x9000_0000 + g], 3), ([], 5)):
        b = spec.load_state(post.raw(tlb=[["dcache", pa, M2 if pa == 0x8000_0000 else g]
                                          for pa in cleaned]))
        got = _text(cmo.check_cmo(a, st, b))
        assert got == _text(_cmo_unmap_by_leaves(a, st, b))
        assert len(got) == missing and "0xa0000000" not in " ".join(got)
