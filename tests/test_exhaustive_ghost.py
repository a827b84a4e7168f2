"""The exhaustive explorations' state keys hold the cache ghost CMO-POC / CMO-POU judge by
(proofs/stage2/exhaustive.py ghost_key, Explored): two runs reaching the same tables with other
clean sets are different states, and only a cleaner copy of an explored state is skipped."""

from ptspec.proofs.stage2 import exhaustive as X
from ptspec.proofs.stage2.harness import Stage2Harness

OPS = X.alphabet()
STRADDLE_RWX, BLOCK_RW, FIRST_OF_STRADDLE_R = 4, 0, 6       # indices into the alphabet
assert OPS[STRADDLE_RWX][1]["prot"] == 7 and OPS[BLOCK_RW][1]["size"] == 0x200000
assert OPS[FIRST_OF_STRADDLE_R][1]["prot"] == 4


def _run(indices, **kw):
    h = Stage2Harness(12, 39, arena_pages=64, mc_capacity=4, **kw)
    for i in indices:
        op, args = OPS[i]
        _, found = h.step(op, **args)
        assert found == []
    return h


def _two_paths(**kw):
    """Two runs to the same tables: the RWX straddle then the RW block over its first page (whose
    I-cache the straddle invalidated and which stays mapped at the same output), and the same
    after the first page was mapped read-only (the straddle then leaves it alone: -EAGAIN)."""
    return _run([STRADDLE_RWX, BLOCK_RW], **kw), _run([FIRST_OF_STRADDLE_R, STRADDLE_RWX, BLOCK_RW],
                                                      **kw)


def test_the_old_key_merged_two_states_with_other_ghosts():
    clean, dirty = _two_paths()
    kc, kd = X.canonical(clean), X.canonical(dirty)
    assert kc[:-1] == kd[:-1]                       # the old key: tables, memcache, pending
    assert kc != kd                                 # the ghost tells them apart now
    page = OPS[STRADDLE_RWX][1]["phys"]             # the straddle's first output page
    assert clean.cache.ghost.i_gap(page, 0x1000) is None
    assert dirty.cache.ghost.i_gap(page, 0x1000) == page
    # breadth-first the cleaner one comes first (depth 2); the dirtier (depth 3) was dropped
    seen = X.Explored()
    assert seen.add(kc) and seen.add(kd) and seen.states == 2
    assert not seen.add(kc) and not seen.add(kd)


def test_the_two_states_have_other_futures():
    """The same next step (the straddle again, over the block's last page, on a table whose
    I-cache hook is gone) breaks CMO-POU from the dirtier state only; C-CMO (per step) from both."""
    for h, pou in zip(_two_paths(), (False, True)):
        f = h.fork()
        f.pgt.mm_ops.icache_inval_pou = None
        _, found = f.step(*OPS[STRADDLE_RWX][:1], **OPS[STRADDLE_RWX][1])
        ids = {v.inv for v in found}
        assert "C-CMO" in ids and ("CMO-POU" in ids) == pou, found


def test_a_cleaner_copy_of_an_explored_state_is_skipped():
    clean, dirty = _two_paths()
    kc, kd = X.canonical(clean), X.canonical(dirty)
    seen = X.Explored()
    assert seen.add(kd) and not seen.add(kc) and seen.states == 1
    assert X.no_cleaner(kd[-1], kc[-1]) and not X.no_cleaner(kc[-1], kd[-1])
    # other tables are never subsumed, whatever their ghost
    other = _run([BLOCK_RW])
    assert seen.add(X.canonical(other))


def test_the_ghost_key_leaves_out_what_no_verdict_reads():
    """No CMO hooks: nothing (neither statement judges the table); FWB: no D-clean (CMO-POC
    requires nothing, an I-cache invalidation needs no clean)."""
    for kw, want in (({"cmo": False}, None), ({"fwb": True}, "no-d"), ({}, "both")):
        h = _run([BLOCK_RW], **kw)
        g = X.canonical(h)[-1]
        if want is None:
            assert g is None
        elif want == "no-d":
            assert g[0] is None and g[1] is not None
        else:
            assert g[0] == ((0x80000000,), (0x80200000,)) and g[1] == ((), ())
    a, b = _two_paths(cmo=False)
    assert X.canonical(a) == X.canonical(b)         # not a guest's table: one state


def test_within_reads_merged_interval_bounds():
    big = ((0x1000, 0x5000), (0x3000, 0x8000))
    assert X._within(((0x1000,), (0x3000,)), big)
    assert X._within(((0x1000, 0x6000), (0x2000, 0x8000)), big)
    assert not X._within(((0x2000,), (0x6000,)), big)       # across a gap
    assert not X._within(((0x0,), (0x1000,)), big)
    assert X._within(((), ()), ((), ()))
    assert not X._within(((0x0,), (0x1000,)), ((), ()))


def test_the_explored_table_is_the_lock_steps_geometry_with_its_options(monkeypatch):
    """s2.exhaustive.4k-39 builds lockstep's 4k-39 table with lockstep.OPTIONS for it (none
    today), as the C engines build theirs with subject.OPTIONS."""
    from ptspec.proofs.stage2 import lockstep
    made = []

    def factory(*a, **kw):
        made.append((a, kw))
        return Stage2Harness(*a, **kw)
    X.explore(0, harness_factory=factory)
    assert made[0][0] == (12, 39) and "fwb" not in made[0][1]
    monkeypatch.setitem(lockstep.OPTIONS, "4k-39", {"fwb": True})
    made.clear()
    out = X.explore(1, harness_factory=factory)
    assert made[0][1]["fwb"] is True and out.status == "passed" and out.transitions == len(OPS)
