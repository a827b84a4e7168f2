"""load_state's wholesale reuse of ``prev`` (every page the very tuple prev's was read from) and
the fast paths a step that changed nothing takes (the empty window, the shared walk, the frame
condition of a contract) give what the page-by-page reading and judging give; and where only a
part is the same (the pages, not the refcounts, the pool, the log), the rest is read anew."""

import pytest

from ptspec import spec
from ptspec.spec import StateError
from ptspec.spec.stage2 import contract_common, invariants
from ptspec.spec.stage2.contract_common import Report
from ptspec.proofs.stage2 import lockstep
from ptspec.spec.stage2.step import load_step
from ptspec.spec.stage2.window import changed_tables_plain

FIELDS = ("kind", "page_shift", "ia_bits", "start_level", "pa_bits", "owner_field", "max_owner_id",
          "has_fwb", "has_xnx", "cmo", "idmap", "as_s1", "roots", "pages", "refcount", "memcache",
          "free_pages", "pool_errors", "tlb_log", "kernel_version")


def _harness():
    h = lockstep.harness_maker("4k-39")()
    h.step("map", addr=0, size=2 << 20, phys=0x4000_0000, prot=3)
    h.step("map", addr=4 << 20, size=64 << 10, phys=0x8000_0000, prot=7)
    h.step("set_owner", addr=1 << 30, size=1 << 20, owner_id=1)
    return h


def _same_state(a, b):
    for k in FIELDS:
        assert getattr(a, k) == getattr(b, k), k
    assert list(a.pages) == list(b.pages) and list(a.refcount) == list(b.refcount)


def test_unchanged_pages_are_lent_wholesale_and_read_the_same():
    h = _harness()
    pre = h.state
    raw = h.pgt.snapshot()
    post = spec.load_state(raw, pre)
    assert all(post.pages[pa] is pre.pages[pa] for pa in post.pages)      # the reuse applied
    _same_state(post, spec.load_state(raw))
    assert post.walk().same_as is pre.walk()
    assert spec.changed_tables(pre, post) == set()


@pytest.mark.parametrize("edit", ["refcount", "memcache", "free_pages", "pool_errors", "tlb_log",
                                  "roots", "order"])
def test_the_same_pages_with_the_rest_changed_read_the_rest_anew(edit):
    """The pages are the very tuples, something else differs: that part is read from the raw
    state (the same as without prev), and the window and the contracts see it."""
    h = _harness()
    pre = h.state
    raw = dict(h.pgt.snapshot())
    pa = next(p for p in raw["pages"] if p not in raw["roots"])
    if edit == "refcount":
        raw["refcount"] = dict(raw["refcount"], **{})
        raw["refcount"][pa] += 1
    elif edit == "memcache":
        raw["memcache"] = raw["memcache"][:-1]
    elif edit == "free_pages":
        raw["free_pages"] += 1
    elif edit == "pool_errors":
        raw["pool_errors"] = ["put_page of a free page"]
    elif edit == "tlb_log":
        raw["tlb_log"] = [("tlbi_vmid",)]
    elif edit == "roots":
        raw["roots"] = []
    else:
        raw["pages"] = dict(reversed(raw["pages"].items()))
        raw["refcount"] = dict(reversed(raw["refcount"].items()))
    post = spec.load_state(raw, pre)
    _same_state(post, spec.load_state(raw))
    step = load_step({"op": "get_leaf", "args": {"addr": 0x1000}, "ret": 0,
                      "out": {"pte": pre.walk().find(0x1000)[3], "level": 2}})
    scratch = spec.load_state(raw)
    assert ([str(v) for v in spec.check_step(pre, step, post)]
            == [str(v) for v in spec.check_step(spec.load_state(h._last_raw), step, scratch)])
    window = spec.changed_tables(pre, post)
    assert window == changed_tables_plain(pre, post)
    if edit == "refcount":
        assert window == {pa}
        assert any(v.inv == "S2-RC" for v in spec.check_state(post, pages=window))
    if edit in ("refcount", "memcache", "tlb_log", "roots"):
        assert spec.check_step(pre, step, post)          # get_leaf only reads: reported
    if edit in ("memcache", "free_pages", "pool_errors"):
        assert any(v.inv == "S2-LEAK" for v in spec.check_state(post, pages=window)
                   + spec.check_step(pre, step, post))


@pytest.mark.parametrize("pages", [{False: "t"}, {0x1000: None}, {0.0: "t"}, {0: "t", 0x1000: "t"}])
def test_pages_equal_to_prev_by_value_only_are_not_lent(pages):
    """Keys equal to prev's but not ints (False == 0, 0.0 == 0), a missing page, an extra page:
    read as without prev (the same State or the same error)."""
    t = tuple([0] * 512)
    base = {"kind": "arm64-stage2", "page_shift": 12, "ia_bits": 39, "start_level": 1,
            "owner_field": [63, 56], "max_owner_id": 255, "roots": [0], "pages": {0: t},
            "refcount": {0: 1}}
    prev = spec.load_state(base)
    raw = dict(base, pages={k: (t if v == "t" else v) for k, v in pages.items()},
               refcount={k: 1 for k in pages})
    got = []
    for p in (prev, None):
        try:
            st = spec.load_state(raw, p)
            got.append((st.pages, st.refcount))
        except StateError as exc:
            got.append(str(exc))
    assert got[0] == got[1]


def _plain_leak(state, inv):
    """S2-LEAK's per-state rules, as leak_violations stated them before its C-speed screens."""
    out = []
    for pa in state.pages:
        if pa not in state.walk().tables:
            out.append((inv, pa))
    seen = set()
    for pa in state.memcache:
        if pa in state.pages or pa in seen:
            out.append((inv, pa))
        seen.add(pa)
    return out


@pytest.mark.parametrize("edit", ["none", "leaked", "in-both", "twice"])
def test_leak_screens_find_what_the_loops_find(edit):
    h = _harness()
    raw = dict(h.pgt.snapshot())
    root = raw["roots"][0]
    pages = dict(raw["pages"])
    if edit == "leaked":
        pages[0x7000_0000] = tuple([0] * 512)
        raw["refcount"] = dict(raw["refcount"], **{}) | {0x7000_0000: 1}
    elif edit == "in-both":
        raw["memcache"] = raw["memcache"] + [root]
    elif edit == "twice":
        raw["memcache"] = raw["memcache"] + raw["memcache"][:1]
    raw["pages"] = pages
    state = spec.load_state(raw)
    got = invariants.leak_violations(state, "S2-LEAK")
    assert [(v.inv, v.where.get("table")) for v in got] == _plain_leak(state, "S2-LEAK")
    assert bool(got) == (edit != "none")


def test_nothing_changed_reports_a_refcount_or_memcache_change_only():
    """check_nothing_changed's screen (equal pages and refcounts) lets through exactly the changes
    its loop reports: a refcount alone, a memcache reordered (not a change), a geometry field."""
    h = _harness()
    pre = h.state
    raw = dict(h.pgt.snapshot())
    pa = next(p for p in raw["pages"] if p not in raw["roots"])
    step = load_step({"op": "get_leaf", "args": {"addr": 0}, "ret": 0})
    raw2 = dict(raw, refcount=dict(raw["refcount"]))
    raw2["refcount"][pa] += 1
    rep = Report("C-GET-LEAF", step)
    contract_common.check_nothing_changed(rep, pre, spec.load_state(raw2, pre), "why")
    assert [str(v) for v in rep.result()] == [
        f"C-GET-LEAF get_leaf: why, yet the refcount of table {pa:#x} changed from "
        f"{raw['refcount'][pa]} to {raw['refcount'][pa] + 1}"]
    rep = Report("C-GET-LEAF", step)
    contract_common.check_nothing_changed(rep, pre, spec.load_state(
        dict(raw, memcache=list(reversed(raw["memcache"]))), pre), "why")
    assert rep.result() == []
    wider = spec.load_state(dict(raw, owner_field=[9, 2]), pre)
    assert contract_common.geometry_changes(pre, wider) == ["owner_field"]
    assert contract_common.geometry_changes(pre, spec.load_state(raw, pre)) == []


def test_find_is_the_one_slot_overlapping_gives():
    """Walk.find descends from the root; overlapping(ipa, ipa + 1) cuts the intervals: the same
    interval, on valid leaves, zero slots, annotations, blocks, outside the range, no root, and
    unfollowable tables (a table descriptor to a missing page, a root missing)."""
    h = _harness()
    raw = dict(h.pgt.snapshot())
    states = [h.state, spec.load_state(dict(raw, roots=[]))]
    root = raw["roots"][0]
    l2 = next(pa for pa, (level, base, *_) in h.state.walk().tables.items() if (level, base) == (2, 0))
    bad = dict(raw["pages"])
    bad[l2] = tuple([0x1234_5000 | 3] + list(bad[l2][1:]))      # a table at level 2 to nowhere
    states.append(spec.load_state(dict(raw, pages=bad)))
    states.append(spec.load_state(dict(raw, roots=[root + 0x1000_0000])))     # root not in pages
    ipas = [0, 0x1000, (2 << 20) - 1, 2 << 20, 4 << 20, (4 << 20) + 0x3000, 1 << 30,
            (1 << 30) + (1 << 20), (1 << 39) - 1, 1 << 39, -1]
    for state in states:
        walk = state.walk()
        for ipa in ipas:
            want = walk.overlapping(ipa, ipa + 1) if 0 <= ipa < 1 << state.ia_bits else []
            assert walk.find(ipa) == (want[0] if want else None), (state, hex(ipa))
    assert any(states[2].walk().find(ipa)[6] for ipa in (0, 0x1000))          # the opaque one
    assert states[3].walk().find(0)[6]
