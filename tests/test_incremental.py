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
from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.planted import planted
from ptspec.proofs.stage2.program import Stage2Program
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch.walk import DESC, END, LEVEL, START
from ptspec.spec.stage2 import cmo
from ptspec.spec.stage2.cache import CacheJudge
from ptspec.spec.stage2.contract_common import Report, op_range
from ptspec.spec.stage2.ranges import covers, union
from ptspec.spec.stage2.segments import covering, is_valid, same_translation, sweep
from ptspec.spec.stage2.state import kernel_since
from ptspec.spec.stage2.step import walk_error

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
    first = h._last_raw
    prog = Stage2Program(S.geometry(ps, ia))
    ch = S.RandomChooser(seed)
    out = []
    for _ in range(steps):
        e = prog.next(ch)
        if e[0] == "fail":
            h.fail_allocation(e[1])
            continue
        before, n = h._last_raw, len(seen)
        ret, _ = h.step(e[1], **e[2])
        prog.returned(e, ret)
        if len(seen) > n:
            out.append((before, seen[-1], h._last_raw))
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
            prog = Stage2Program(S.geometry(12, 39))
            ch = S.RandomChooser(seed)
            out = []
            for _ in range(steps):
                e = prog.next(ch)
                if e[0] == "fail":
                    h.fail_allocation(e[1])
                    continue
                ret, found = h.step(e[1], **e[2])
                prog.returned(e, ret)
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


# -- the C-speed readings of the TLB/cache log (round 2) -------------------------------------------

def _log(seed, n=400):
    import random
    rnd = random.Random(seed)
    names = ["tlbi_ipa", "tlbi_vmid", "dcache", "icache", "tlbi_range", "tlbi_ipa_nsh"]
    out = []
    for _ in range(n):
        name = rnd.choice(names)
        out.append([name] if name == "tlbi_vmid" else
                   [name, rnd.randrange(1 << 40) & ~0xFFF, rnd.choice([0, 1, 2, 3, 4096, 1 << 21])])
    return out


@pytest.mark.parametrize("seed", range(6))
def test_state_events_equal_the_plain_filter(seed):
    log = _log(seed)
    raw = {"kind": "arm64-stage2", "page_shift": 12, "ia_bits": 40, "start_level": 1,
           "owner_field": [9, 2], "max_owner_id": 1, "roots": [], "pages": {}, "refcount": {},
           "tlb_log": log}
    st = spec.load_state(raw)
    for name in ("tlbi_ipa", "tlbi_vmid", "dcache", "icache", "tlbi_range", "tlbi_ipa_nsh", "x"):
        assert st.events(name) == [ev for ev in st.tlb_log if ev[0] == name]
        assert st.events(name) is st.events(name)          # cached
    for kind in ("dcache", "icache"):
        assert cmo._ranges(st, kind) == union([ev[1], ev[1] + ev[2]] for ev in st.tlb_log
                                              if ev[0] == kind)


def _plain_decode(raw):
    """The shim's log read one event at a time: (events, warnings, errors)."""
    names = {1: "tlbi_ipa", 3: "dcache", 4: "icache"}
    events, warnings, errors = [], [], []
    for k, a, b in zip(raw[0::3], raw[1::3], raw[2::3]):
        if k == 2:
            events.append(("tlbi_vmid",))
        elif k in names:
            events.append((names[k], a, b))
        elif k > 6:                 # a runtime's own event, told how many events came before
            errors.append(f"event kind {k} after {len(events)}")
        elif k == 5:
            warnings.append(f"WARN_ON at pgtable.c:{a}")
        elif a == 2:
            warnings.append("kvm_mmu_memory_cache_alloc on an empty memcache")
        elif a in (3, 5):
            errors.append(f"{'put_page' if a == 3 else 'get_page'} on page {b:#x} that is not "
                          f"allocated{' (double free?)' if a == 3 else ''}")
        elif a == 1:
            errors.append(f"page reference to {b:#x} outside the arena")
        else:
            errors.append(f"allocator error {a} on page {b:#x}")
    return events, warnings, errors


@pytest.mark.parametrize("seed", range(8))
def test_c_log_decode_equals_the_event_by_event_one(seed):
    """cside.CPgtable._decode (TLB and cache events built at C speed, the rest where they stand)
    reads the shim's log as one loop over it does: the same events in order, tlbi_vmid without
    operands, the same WARNs and errors."""
    import random
    from array import array
    from ptspec.proofs.kernel import cside
    rnd = random.Random(seed)
    raw = array("Q")
    weights = [1, 1, 1, 1] + ([0, 0, 0] if seed % 4 == 0 else [0.05, 0.1, 0.02])
    for _ in range(rnd.randrange(0, 300)):
        kind = rnd.choices([1, 2, 3, 4, 5, 6, 7], weights)[0]
        a = rnd.choice([0, 1, 2, 3, 4, 5]) if kind == 6 else rnd.randrange(1 << 48)
        raw.extend([kind, a, rnd.randrange(1 << 64)])
    pgt = object.__new__(cside.CPgtable)
    pgt.warnings, pgt.errors, pgt.pending = [], [], []
    pgt._extra_event = lambda kind, a, b, position: pgt.errors.append(
        f"event kind {kind} after {position}")
    got = pgt._decode(raw)
    assert (got, pgt.warnings, pgt.errors) == _plain_decode(raw)
    assert all(type(ev) is tuple for ev in got)


def _page_flags_plain(pre, post, fwb):
    """Per level-3 page valid on either side: (pre output, post output, needs CMO-POC, needs
    CMO-POU), as cache._runs's docstring states them, page by page."""
    out = {}
    for s, e, p, q in spec.stage2.segments.diff(pre, post):
        pv, qv = is_valid(p), is_valid(q)
        if not (pv or qv):
            continue
        for a in range(s, e, 1 << pre.page_shift):
            poa = D.address(p[DESC], pre.page_shift) + (a - p[START]) if pv else None
            qoa = D.address(q[DESC], pre.page_shift) + (a - q[START]) if qv else None
            same = pv and qv and poa == qoa
            qc = qv and D.is_cacheable(q[DESC], fwb)
            pc = same and D.is_cacheable(p[DESC], fwb)
            poc = qc and not pc
            pou = (qc and D.is_executable(q[DESC])
                   and not (pc and D.is_executable(p[DESC])))
            out[a] = (poa, qoa, bool(poc), bool(pou))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_cache_runs_expand_to_the_page_by_page_flags(seed):
    """CacheJudge's runs (cache._runs, whose level-3 pages extend a run without building their
    intervals) expand to exactly the per-page outputs and CMO needs of the plain reading: a run
    merges only pages with the same needs and continuing outputs on both sides."""
    import copy
    import random
    from ptspec.spec.stage2.cache import _runs
    from ptspec.spec.stage2.segments import diff_chunks
    rnd = random.Random(seed)
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x200000, size=0x80000, phys=0x4020_0000, prot=7)
    pre_raw = h.raw_state()
    table = next(pa for pa, d in pre_raw["pages"].items()
                 if any(d) and pa not in pre_raw["roots"] and d[0] & 3 == 3)
    normal, device = 0xF << 2, 0x1 << 2
    post_raw = copy.deepcopy(pre_raw)
    post_raw["tlb_log"] = []
    for raw in (pre_raw, post_raw):
        words = raw["pages"][table]
        base = 0x4000_0000 + rnd.randrange(4) * 0x1000
        for i in range(512):
            r = rnd.random()
            if r < 0.15:
                words[i] = 0
            elif r < 0.6 and raw is post_raw:
                continue                       # as before
            else:
                out = base + i * 0x1000 if rnd.random() < 0.8 else 0x5000_0000 + rnd.randrange(64) * 0x1000
                words[i] = (out | 3 | (1 << 10) | rnd.choice([normal, device])
                            | (6 << 6) | rnd.choice([0, D.XN]))
    if seed % 3 == 0:       # the table removed, nothing (or an owner annotation) in its place
        parent, slot = next((pa, i) for pa, d in post_raw["pages"].items() for i, w in enumerate(d)
                            if w & 3 == 3 and w & ~0xFFF & ((1 << 48) - 1) == table)
        post_raw["pages"][parent][slot] = 0 if seed % 2 else 1 << 2
        del post_raw["pages"][table], post_raw["refcount"][table]
        post_raw["refcount"][parent] -= 1
    for fwb in (False, True):
        pre_raw["has_fwb"] = post_raw["has_fwb"] = fwb
        pre, post = spec.load_state(pre_raw), spec.load_state(post_raw)
        got = {}
        for (s, e, _, _), poa, qoa, poc, pou in _runs(diff_chunks(pre, post), 12, fwb):
            for a in range(s, e, 0x1000):
                got[a] = (None if poa is None else poa + a - s,
                          None if qoa is None else qoa + a - s, bool(poc), bool(pou))
        assert got == _page_flags_plain(pre, post, fwb)


@pytest.mark.parametrize("page_shift", [12, 16])
def test_c_snapshot_pages_equal_the_arena_words(page_shift):
    """The C side's raw pages (cside.CPgtable._page_tuples: the previous snapshot's tuple for a page
    whose bytes did not change) hold what the arena holds, step after step, and a page that did
    not change is the previous tuple itself."""
    from kdiff_support import need_kernel
    from ptspec.proofs.kernel.cside import CPgtable
    src = need_kernel(page_shift)
    pgt = CPgtable(page_shift, 40, npages=64, src=src)
    pgt.init()
    pgt.mc.topup(pgt.mc_capacity)
    g = 1 << page_shift
    prev = pgt.snapshot()["pages"]
    for k, (op, args) in enumerate([("map", (0x20_0000, 8 * g, 0x4000_0000, 3)),
                                    ("map", (0x20_0000 + 8 * g, 4 * g, 0x5000_0000, 7)),
                                    ("unmap", (0x20_0000 + 2 * g, g)), ("wrprotect", (0, 1 << 30)),
                                    ("get_leaf", (0x20_0000,)), ("unmap", (0, 1 << 40))]):
        if op == "map":
            getattr(pgt, op)(*args, pgt.mc)
        else:
            getattr(pgt, op)(*args)
        pages = pgt.snapshot()["pages"]
        assert {pa: list(t) for pa, t in pages.items()} == \
            {pa: pgt.page_words(pa) for pa in pgt.used_pages()}
        assert all(type(t) is tuple for t in pages.values())
        for pa, t in pages.items():
            if pa in prev and list(prev[pa]) == list(t):
                assert t is prev[pa]
        prev = pages


def test_load_state_shares_only_the_very_tuple_it_read():
    """load_state(raw, prev) takes a page's parse from prev without reading it when the raw page
    is the tuple prev's was read from; an equal new tuple or list is read (and refused when it is
    not plain ints) as from scratch."""
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x200000, size=0x10000, phys=0x4020_0000, prot=3)
    raw = h.raw_state()
    raw["pages"] = {pa: tuple(w) for pa, w in raw["pages"].items()}
    pre = spec.load_state(raw)
    post_raw = dict(raw, pages=dict(raw["pages"]))
    post = spec.load_state(post_raw, pre)
    assert all(post.pages[pa] is pre.pages[pa] for pa in pre.pages)
    pa = next(iter(raw["pages"]))
    bad = list(raw["pages"][pa])
    bad[0] = bool(bad[0]) if bad[0] in (0, 1) else float(bad[0])
    for value in (tuple(bad), bad):
        post_raw["pages"] = {**raw["pages"], pa: value}
        with pytest.raises(spec.StateError):
            spec.load_state(post_raw, pre)
    fresh = tuple(raw["pages"][pa])           # equal, another object: read, same values
    post_raw["pages"] = {**raw["pages"], pa: fresh}
    assert spec.load_state(post_raw, pre).pages == pre.pages



@pytest.mark.parametrize("unmap", [(0x210000, 0x20000), (0x200000, 0x200000), (0, 1 << 30)])
@pytest.mark.parametrize("keep_every", [1, 2, 3, 7, 0])
def test_bbm_screen_of_level3_pages_equals_the_plain_statement(unmap, keep_every):
    """check_bbm settles the suspect pages of a level-3 table (changed slots, or a removed table's
    valid pages) at once when a level-3 tlbi_ipa names each of their pages; with some of those
    TLBIs dropped it reports exactly the pages the plain, page-by-page statement reports."""
    from ptspec.spec.stage2 import bbm
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x201000, size=0x7e000, phys=0x4020_1000, prot=3)
    h.step("map", addr=0x300000, size=0x4000, phys=0x4040_0000, prot=3)
    pre = h.state
    h.step(op="unmap", addr=unmap[0], size=unmap[1])
    raw = h.raw_state()
    log = h.state.tlb_log
    tlbis = [k for k, ev in enumerate(log) if ev[0] == "tlbi_ipa"]
    assert len(tlbis) > 8
    drop = set(tlbis[::keep_every]) if keep_every else set()
    raw["tlb_log"] = [list(ev) for k, ev in enumerate(log) if k not in drop and ev[0] != "tlbi_vmid"]
    post = spec.load_state(raw)
    step = spec.load_step({"op": "unmap", "args": {"addr": unmap[0], "size": unmap[1]}, "ret": 0})
    fast = {(v.where["ipa"], v.where["level"]) for v in bbm.check_bbm(pre, step, post)}
    plain = bbm.uninvalidated_leaves_plain(pre, step, post, 0x200000, 0x400000)
    assert fast == plain
    assert bool(plain) == bool(drop)


@pytest.mark.parametrize("left", [None, 0, 1 << 2, 0x4040_0000 | 0x4C1, 0x4040_0000 | 0x4C3])
@pytest.mark.parametrize("unmap", [(0x200000, 0x200000), (0x1f0000, 0x220000), (0, 1 << 30)])
def test_unmap_contract_settles_removed_tables_as_the_sweep_judges_them(left, unmap):
    """C-UNMAP settles a removed level-3 table at once when one zero slot of the post-state covers
    it; whatever the post-state holds in that slot instead (an annotation, a block, a table
    descriptor), the contract reports what the leaf-by-leaf sweep reports."""
    from ptspec.spec.stage2 import contract_common
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x201000, size=0x7e000, phys=0x4020_1000, prot=3)
    h.step("map", addr=0x3f0000, size=0x4000, phys=0x4040_0000, prot=3)
    h.step("map", addr=0x600000, size=0x1000, phys=0x4060_0000, prot=3)
    pre = h.state
    h.step("unmap", addr=unmap[0], size=unmap[1])
    raw = h.raw_state()
    if left is not None:                      # plant: the freed table's slot is not zero
        root = raw["pages"][raw["roots"][0]]
        if root[0]:                             # the level-2 table's slot for [2M, 4M)
            words, slot = raw["pages"][root[0] & 0xFFFFFFFFF000], 1
        else:                                   # the level-2 table went too: the root's [0, 1G)
            words, slot = root, 0
        assert words[slot] == 0                 # the level-3 table was freed
        words[slot] = left
    post = spec.load_state(raw)
    step = {"op": "unmap", "args": {"addr": unmap[0], "size": unmap[1]}, "ret": 0}
    got = []
    for settle in (True, False):
        contract_common.SETTLE_WHOLE_TABLES = settle
        try:
            got.append([str(v) for v in spec.check_step(pre, step, post) if v.inv == "C-UNMAP"])
        finally:
            contract_common.SETTLE_WHOLE_TABLES = True
    assert got[0] == got[1]
    assert bool(got[0]) == bool(left)
