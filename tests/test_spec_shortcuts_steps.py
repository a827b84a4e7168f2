"""The two-state statements' shortcuts equal their plain readings: S2-BBM's screen of level-3
pages, C-UNMAP and C-MAP settling whole level-3 tables (on or off: contract_common.
SETTLE_WHOLE_TABLES), C-CMO and the CMO ghost reading level-3 slots a run at a time, and the tree
diff's part outside a range. Each test compares a shortcut with the page-by-page reading (and
fails when its shortcut is broken); the C-speed readings of the log, snapshots and states are
tests/test_spec_shortcuts.py.
"""

import pytest
from program_support import editable
from ptspec import spec
from ptspec.proofs.stage2 import harness as H
from ptspec.spec.stage2 import cmo


def _settled_and_swept(pre, step, post, inv):
    """The step's ``inv`` violations (as text) with whole level-3 tables settled at once, then with
    every page swept (contract_common.SETTLE_WHOLE_TABLES off): the two readings to compare."""
    from ptspec.spec.stage2 import contract_common
    got = []
    for settle in (True, False):
        contract_common.SETTLE_WHOLE_TABLES = settle
        try:
            got.append([str(v) for v in spec.check_step(pre, step, post) if v.inv == inv])
        finally:
            contract_common.SETTLE_WHOLE_TABLES = True
    return got


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
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x201000, size=0x7e000, phys=0x4020_1000, prot=3)
    h.step("map", addr=0x3f0000, size=0x4000, phys=0x4040_0000, prot=3)
    h.step("map", addr=0x600000, size=0x1000, phys=0x4060_0000, prot=3)
    pre = h.state
    h.step("unmap", addr=unmap[0], size=unmap[1])
    raw = editable(h.raw_state())
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
    got = _settled_and_swept(pre, step, post, "C-UNMAP")
    assert got[0] == got[1]
    assert bool(got[0]) == bool(left)


@pytest.mark.parametrize("kept", [True, False])
@pytest.mark.parametrize("size", [0x200000, 0x100000])
def test_map_contract_settles_tables_on_eagain_as_the_sweep_judges_them(kept, size):
    """C-MAP settles the level-3 tables that hold exactly the expected pages with -EAGAIN too, and
    reads from the pre-state's tables whether one of those pages kept its leaf: the kept half of
    a re-map (the kernel returns -EAGAIN on reaching it) lets it pass, a table where every page is
    new does not; both forms report the same."""
    h = H.Stage2Harness(12, 39)
    h.step("map", addr=0x200000, size=0x1000, phys=0x4000_0000, prot=3)
    if kept:                                    # the second half already mapped as asked
        h.step("map", addr=0x300000, size=0x100000, phys=0x4050_1000, prot=3)
    pre = h.state
    ret, _ = h.step("map", addr=0x200000 + 0x200000 - size, size=size,
                    phys=0x4040_1000 + 0x200000 - size, prot=3)
    post = h.state
    step = {"op": "map", "args": {"addr": 0x200000 + 0x200000 - size, "size": size,
                                  "phys": 0x4040_1000 + 0x200000 - size, "prot": 3}, "ret": -11}
    got = _settled_and_swept(pre, step, post, "C-MAP")
    assert got[0] == got[1]
    assert bool(got[0]) == (not kept), (ret, got[0])


@pytest.mark.parametrize("ps", [12, 16])
def test_cmo_judges_level3_slots_a_run_at_a_time_as_the_sweep_does(ps):
    """C-CMO reads the differing slots of a level-3 table a run of pages at a time (L3Chunk), and a
    new or removed table only inside R (a FlatL3 R covers in part): a map into an existing table,
    a map whose new table also holds pages outside R, an unmap of part of a table, with pages the
    log leaves uncleaned: the same findings, in the same order, as the leaf-by-leaf reading."""
    from test_incremental import _cmo_map_by_sweep, _cmo_unmap_by_leaves, _text
    from test_spec_builder import RWX, S2, step
    from ptspec.spec.stage2.segments import FlatL3, L3Chunk
    from ptspec.spec.stage2.treediff import diff_chunks
    ia = 39 if ps == 12 else 44
    g, n = 1 << ps, 1 << (ps - 3)
    base, phys = n * g * 4, 0x8000_0000
    holes = {3, 4, 9, n - 1}
    log = [[k, phys + i * g, g] for i in range(n) if i not in holes for k in ("dcache", "icache")]
    lo, hi = 2, n - 1                               # R = [base + lo * g, base + hi * g)
    st = spec.load_step(step("map", addr=base + lo * g, size=(hi - lo) * g, phys=phys + lo * g,
                             prot=RWX, force_pte=True))
    seen = set()
    for existing in (True, False):
        pre = S2(ps=ps, ia=ia, cmo=True)
        if existing:
            pre.page(base, phys)                    # the table is there: an L3Chunk
        post = pre.copy()
        for i in range(1, n):                       # pages 1 and n - 1 lie outside R
            post.page(base + i * g, phys + i * g, x=True)
        a, b = spec.load_state(pre.raw()), spec.load_state(post.raw(tlb=log))
        seen.update(type(c) for c in diff_chunks(a, b))
        got = _text(cmo.check_cmo(a, st, b))
        assert got == _text(_cmo_map_by_sweep(a, st, b))
        assert len(got) == 2 * len(holes & set(range(lo, hi)))
    assert seen == {FlatL3, L3Chunk}
    pre = S2(ps=ps, ia=ia, cmo=True)
    for i in range(n):
        pre.page(base + i * g, phys + i * g)
    post = pre.copy()
    for i in range(lo, hi):
        post.set(base + i * g, 3, 0)
    unmap = spec.load_step(step("unmap", addr=base + lo * g, size=(hi - lo) * g))
    a = spec.load_state(pre.raw())
    b = spec.load_state(post.raw(tlb=[ev for ev in log if ev[0] == "dcache"]))
    got = _text(cmo.check_cmo(a, unmap, b))
    assert got == _text(_cmo_unmap_by_leaves(a, unmap, b))
    assert len(got) == len(holes & set(range(lo, hi)))
    # the whole table removed (a FlatL3), also its pages outside R: C-CMO judges those of R only
    post = pre.copy().set(base, 2, 0)
    b = spec.load_state(post.raw(tlb=[ev for ev in log if ev[0] == "dcache"]))
    got = _text(cmo.check_cmo(a, unmap, b))
    assert got == _text(_cmo_unmap_by_leaves(a, unmap, b))
    assert len(got) == len(holes & set(range(lo, hi)))


@pytest.mark.parametrize("ps", [12, 16])
def test_diff_outside_skips_the_slots_inside_as_the_whole_diff_clipped(ps):
    """diff_outside leaves out a level-3 chunk's slots that lie wholly inside [lo, hi) before
    expanding it: the same segments as the whole diff's, clipped to the outside of [lo, hi), for
    ranges whose ends fall on, between and inside the changed slots."""
    from ptspec.spec.stage2.segments import L3Chunk
    from ptspec.spec.stage2.treediff import diff, diff_chunks, diff_outside
    from test_spec_builder import S2, leaf
    g, n = 1 << ps, 1 << (ps - 3)
    base = n * g * 4
    pre = S2(ps=ps, ia=39 if ps == 12 else 44)
    for i in range(n):
        pre.page(base + i * g, 0x8000_0000 + i * g)
    post = pre.copy()
    for i in (0, 2, 3, 4, 7, 8, 9, 12, n - 1):
        post.set(base + i * g, 3, leaf(0x9000_0000 + i * g, 3, ps) if i % 2 else 0)
    a, b = spec.load_state(pre.raw()), spec.load_state(post.raw())
    assert [type(c) for c in diff_chunks(a, b)] == [L3Chunk]
    whole = diff(a, b)
    for lo, hi in ((3, 8), (2, 9), (3, 3), (0, n), (5, 6), (2.5, 8.5), (0.5, n - 0.5)):
        lo, hi = base + int(lo * g), base + int(hi * g)
        want = []
        for s, e, p, q in whole:
            if s < lo:
                want.append((s, min(e, lo), p, q))
            if e > hi:
                want.append((max(s, hi), e, p, q))
        assert diff_outside(a, b, lo, hi) == want
