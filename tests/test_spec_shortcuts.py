"""The spec's C-speed readings equal their plain statements: the TLB/cache log's parse and
per-kind event lists, the kernel-C snapshot's log decode and shared page tuples, the CMO ghost's
runs over level-3 tables, the snapshots' shared tuples. Each test compares a shortcut with the plain page-by-page or event-by-event reading (and
fails when its shortcut is broken); the two-state statements' shortcuts are in
tests/test_spec_shortcuts_steps.py, and tests/test_incremental.py holds the step's judgement whole.
"""

import pytest
from program_support import editable

from ptspec import spec
from ptspec.proofs.stage2 import harness as H
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch.walk import DESC, START
from ptspec.spec.stage2 import cmo
from ptspec.spec.stage2.ranges import union, union_sized
from ptspec.spec.stage2.segments import is_valid


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


@pytest.mark.parametrize("seed", range(4))
def test_union_sized_equals_union_of_the_ranges(seed):
    """ranges.union_sized (neighbours in order joined at C speed, then union) is union() of the
    ranges: logs of runs of page after page, repeats, empty ranges and overlaps."""
    import random
    rnd = random.Random(seed)
    for _ in range(3000):
        starts, sizes = [], []
        for _ in range(rnd.randrange(9)):
            cont = starts and rnd.random() < 0.6
            starts.append(starts[-1] + sizes[-1] if cont else rnd.randrange(48))
            sizes.append(rnd.choice([0, 1, 2, 3, 5, 8]))
        assert union_sized(starts, sizes) == union([a, a + n] for a, n in zip(starts, sizes))


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
    CMO-POU), as cache_runs.changed_runs's docstring states them, page by page."""
    out = {}
    from ptspec.spec.stage2.treediff import diff
    for s, e, p, q in diff(pre, post):
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
    """CacheJudge's runs (cache_runs.changed_runs, whose level-3 pages extend a run without building their
    intervals) expand to exactly the per-page outputs and CMO needs of the plain reading: a run
    merges only pages with the same needs and continuing outputs on both sides."""
    import random
    from ptspec.spec.stage2.cache_runs import changed_runs as _runs
    from ptspec.spec.stage2.treediff import diff_chunks
    rnd = random.Random(seed)
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x200000, size=0x80000, phys=0x4020_0000, prot=7)
    pre_raw = editable(h.raw_state())
    table = next(pa for pa, d in pre_raw["pages"].items()
                 if any(d) and pa not in pre_raw["roots"] and d[0] & 3 == 3)
    normal, device = 0xF << 2, 0x1 << 2
    post_raw = editable(pre_raw)
    post_raw["tlb_log"] = []
    for raw in (pre_raw, post_raw):
        words = raw["pages"][table]
        base = 0x4000_0000 + rnd.randrange(4) * 0x1000
        if seed % 4 == 1:                   # outputs that carry out of the 48-bit address field
            base = (1 << 48) - 300 * 0x1000 + rnd.randrange(4) * 0x1000
        for i in range(512):
            r = rnd.random()
            if seed % 4 == 1 and 290 <= i < 310:
                r = 1                           # new pages whose outputs cross 2**48
            if r < 0.15:
                words[i] = 0
            elif r < 0.6 and raw is post_raw:
                continue                       # as before
            else:
                out = base + i * 0x1000 if r == 1 or rnd.random() < 0.8 else 0x5000_0000 + rnd.randrange(64) * 0x1000
                words[i] = (out | 3 | (1 << 10) | (6 << 6) | (
                    normal if seed % 4 == 1 else rnd.choice([normal, device]) | rnd.choice([0, D.XN])))
    if seed % 3 == 0:       # the table removed, nothing (or an owner annotation) in its place
        parent, slot = next((pa, i) for pa, d in post_raw["pages"].items() for i, w in enumerate(d)
                            if w & 3 == 3 and w & ~0xFFF & ((1 << 48) - 1) == table)
        # seed 6: a 2M block in its place (and the other way round below: a block split into a
        # table), whose pages share outputs with the table's when the table's base is 0x4000_0000
        block = 0x4000_0000 | 1 | (1 << 10) | (6 << 6) | normal
        post_raw["pages"][parent][slot] = block if seed == 6 else 0 if seed % 2 else 1 << 2
        del post_raw["pages"][table], post_raw["refcount"][table]
        post_raw["refcount"][parent] -= 1
    # seed % 3 == 0: also the other way round, a new table where nothing (or an annotation) was
    for a_raw, b_raw in ((pre_raw, post_raw), (post_raw, pre_raw))[:2 if seed % 3 == 0 else 1]:
        for fwb in (False, True):
            a_raw["has_fwb"] = b_raw["has_fwb"] = fwb
            pre, post = spec.load_state(a_raw), spec.load_state(b_raw)
            got = {}
            for (s, e, _, _), poa, qoa, poc, pou in _runs(diff_chunks(pre, post), 12, fwb):
                for a in range(s, e, 0x1000):
                    got[a] = (None if poa is None else poa + a - s,
                              None if qoa is None else qoa + a - s, bool(poc), bool(pou))
            assert got == _page_flags_plain(pre, post, fwb)


@pytest.mark.parametrize("page_shift", [12, 16])
def test_flat_l3_valid_runs_equal_the_plain_page_runs(page_shift):
    """FlatL3.valid_runs (cut at C speed, cached) is page_runs of the valid pages, slot by slot:
    tables of neighbouring pages with continuing and jumping outputs, holes, invalid slots,
    attribute changes and outputs whose next page carries out of the address field."""
    import random
    from ptspec.spec.stage2.segments import FlatL3
    from ptspec.spec.stage2.treediff import diff_chunks
    rnd = random.Random(page_shift)
    g = 1 << page_shift
    top = (1 << 48) - g                         # the last page of the 48-bit address field
    h = H.Stage2Harness(page_shift, 40 if page_shift == 12 else 42)
    h.step("map", addr=0, size=2 * g, phys=0x4000_0000, prot=3)
    pre_raw = editable(h.raw_state())
    table = next(pa for pa, d in pre_raw["pages"].items()
                 if pa not in pre_raw["roots"] and d[0] & 3 == 3 and D.address(d[0], page_shift) == 0x4000_0000)
    parent, slot = next((pa, i) for pa, d in pre_raw["pages"].items() for i, w in enumerate(d)
                        if w & 3 == 3 and D.address(w, page_shift) == table)
    seen = carried = 0
    for k in range(45):
        words = [0] * len(pre_raw["pages"][table])
        if 42 <= k < 44:                        # one descriptor in every slot: an annotation, a page
            words = [1 << 2 if k == 42 else D.encode_address(0x4000_0000, page_shift) | 0x403] * len(words)
        if k == 44:                             # invalid words stepping by one page: no valid page
            words = [(1 << 2) + i * g for i in range(len(words))]
        out = rnd.choice([0x4000_0000, top - 5 * g])
        if 40 <= k < 42:                        # every slot a page, stepping by one page (from
            out = top - 5 * g if k == 41 else out       # below the top of the field: a carry)
            first = D.encode_address(out, page_shift) | 0x403 | (0xF << 2)
            words = [first + i * g for i in range(len(words))]
        for i in range(len(words) if k < 40 else 0):
            r = rnd.random()
            out = out + g if r < 0.8 else rnd.randrange(1 << 20) * g
            if r < 0.1:
                continue
            if r < 0.5 and i and words[i - 1]:
                words[i] = words[i - 1] + g     # at the top of the field: a carry into bit 48
                continue
            words[i] = D.encode_address(out % (1 << 48), page_shift) | rnd.choice([3, 3, 3, 1, 1 << 2]) | (
                rnd.choice([0, D.XN]) if rnd.random() < 0.1 else 0) | 0x400 | (0xF << 2)
        post_raw = editable(pre_raw)
        post_raw["pages"][table] = words
        pre_cut = editable(pre_raw)
        pre_cut["pages"][parent][slot] = 0
        del pre_cut["pages"][table], pre_cut["refcount"][table]
        pre_cut["refcount"][parent] -= 1
        for one, two in ((pre_cut, post_raw), (post_raw, pre_cut)):
            flats = [c for c in diff_chunks(spec.load_state(one), spec.load_state(two)) if type(c) is FlatL3]
            assert len(flats) == 1
            f = flats[0]
            want = f.page_runs([i for i, w in enumerate(words) if w & 3 == 3])
            assert f._valid_pages() == [i for i, w in enumerate(words) if w & 3 == 3]
            assert list(map(list, f.valid_runs())) == want
            seen += any(len(r) > 1 for r in want)
            carried += any(w >> 48 for w in words)
    assert seen and carried


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
    # a fresh table of the same library: a page equal to what the last table showed there is
    # that tuple itself, and every page still holds the arena's words
    firsts = []
    for _ in range(2):
        pgt = CPgtable(page_shift, 40, npages=64, src=src)
        pgt.init()
        pages = pgt.snapshot()["pages"]
        assert {pa: list(t) for pa, t in pages.items()} == \
            {pa: pgt.page_words(pa) for pa in pgt.used_pages()}
        firsts.append(pages)
    assert firsts[0] and all(firsts[1][pa] is t for pa, t in firsts[0].items()
                             if pa in firsts[1] and list(firsts[1][pa]) == list(t))
    assert any(pa in firsts[1] for pa in firsts[0])


@pytest.mark.parametrize("page_shift", [12, 16])
def test_impl_snapshot_pages_are_the_table_and_unchanged_ones_the_same_tuple(page_shift):
    """impl's snapshot gives each page as a tuple equal to the pool's words, step after step; a
    page that did not change is the previous snapshot's tuple itself (what load_state's identity
    shortcut relies on), and a page that changed is a new tuple."""
    from ptspec.impl.pgtable.pool import KvmMmuMemoryCache
    from ptspec.impl.pgtable.stage2 import KvmPgtable
    pgt = KvmPgtable(page_shift, 40)
    pgt.init()
    mc = KvmMmuMemoryCache(pgt.pool)
    g = 1 << page_shift
    prev = pgt.snapshot()["pages"]
    changed = 0
    for op, args in [("map", (0x20_0000, 8 * g, 0x4000_0000, 3)),
                     ("map", (0x20_0000 + 8 * g, 4 * g, 0x5000_0000, 7)),
                     ("unmap", (0x20_0000 + 2 * g, g)), ("wrprotect", (0, 1 << 30)),
                     ("get_leaf", (0x20_0000,)), ("unmap", (0, 1 << 40))]:
        if op == "map":
            mc.topup(8)
            pgt.map(*args, mc)
        else:
            getattr(pgt, op)(*args)
        pages = pgt.snapshot()["pages"]
        in_mc = pgt.pool.in_memcache
        assert pages == {pa: tuple(w) for pa, w in pgt.pool.pages.items() if pa not in in_mc}
        for pa, t in pages.items():
            if pa in prev:
                assert (t is prev[pa]) == (t == prev[pa])
                changed += t is not prev[pa]
        prev = pages
    assert changed                   # the steps did change pages (the identity test is not idle)


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


@pytest.mark.parametrize("ps", [12, 16])
def test_cache_runs_take_uniform_level3_changes_at_once_as_page_by_page(ps):
    """The ghost's runs take the differing slots of a level-3 table at once when they are
    neighbours whose descriptors on each side are one invalid value or pages stepping by one page
    (a set_owner over pages, a re-map, a permission change); a slot that breaks the step, and
    outputs that carry out of the 48-bit address field, are not: the same per-page outputs and
    needs as the plain reading."""
    from ptspec.spec.stage2.cache_runs import changed_runs as _runs
    from ptspec.spec.stage2.segments import L3Chunk
    from ptspec.spec.stage2.treediff import diff_chunks
    from test_spec_builder import S2, leaf
    g, n = 1 << ps, 1 << (ps - 3)
    ia = 39 if ps == 12 else 44
    base = n * g * 4
    for out0 in (0x8000_0000, (1 << 48) - 5 * g):
        pre = S2(ps=ps, ia=ia, cmo=True)
        d0 = leaf(out0, 3, ps)
        for i in range(2, 40):
            pre.set(base + i * g, 3, d0 + (i - 2) * g)      # from the top: carries past 2**48
        posts = [pre.copy() for _ in range(4)]
        for i in range(2, 40):
            posts[0].set(base + i * g, 3, 1 << 2)                               # annotations
            posts[1].set(base + i * g, 3, leaf(0x9000_0000 + i * g, 3, ps, x=True))    # re-map
            posts[2].set(base + i * g, 3, (d0 + (i - 2) * g) & ~(1 << 54))      # made executable
            posts[3].set(base + i * g, 3, leaf(0x9000_0000 + i * g + (g if i == 20 else 0), 3, ps))
        for post in posts:
            for fwb in (False, True):
                a = spec.load_state(dict(pre.raw(), has_fwb=fwb))
                b = spec.load_state(dict(post.raw(), has_fwb=fwb))
                chunks = diff_chunks(a, b)
                assert [type(c) for c in chunks] == [L3Chunk]
                got = {}
                for (s, e, _, _), poa, qoa, poc, pou in _runs(chunks, ps, fwb):
                    for x in range(s, e, g):
                        got[x] = (None if poa is None else poa + x - s,
                                  None if qoa is None else qoa + x - s, bool(poc), bool(pou))
                assert got == _page_flags_plain(a, b, fwb)
