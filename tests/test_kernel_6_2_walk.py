"""walk-freed-table: 6.2's walker descends into a table its TABLE_PRE callback has just freed
(fixed by a9f0e3d5a089 in 6.4-rc4 and 6.3.7). Found by running 6.2.12 (stop 30). The finding is
matched by its shape only (finding_shapes.freed_table_walk): pages of a table the map replaced by
a leaf, pages the step allocated that nothing reaches, and (C-MAP) leaves whose output address is
moved up by exactly the replaced spans before them. It ends the run: what follows a use after free
is not the kernel's behaviour to judge."""

import pytest

from ptspec import spec
from ptspec.proofs.kernel import findings
from ptspec.proofs.kernel.finding_shapes import freed_table_walk
from ptspec.spec.violation import Violation
from test_spec_builder import S2, R, W, ids

G1, G2 = 0x4000_0000, 0x20_0000
V62, V63 = (6, 2, 12), (6, 3, 8)


def _record():
    """A map of [1G, 1G + 4M) over a level-3 table at 1G, as 6.2.12 leaves it: the table
    replaced by a 2M block, the next block one span (2M) too high, the freed table still
    allocated and unreachable."""
    pre = S2().page(G1, 0x8000_0000)
    table = pre.slot(G1, 3)[0]
    post = pre.copy().block(G1, 2, 0x8000_0000).block(G1 + G2, 2, 0x8000_0000 + 2 * G2)
    post.pages[table], post.free = [0] * post.n, post.free - 1     # still allocated
    args = dict(addr=G1, size=2 * G2, phys=0x8000_0000, prot=R | W, force_pte=False)
    a, b = pre.raw(), post.raw(tlb=[("tlbi_vmid",)])
    a["kernel_version"] = b["kernel_version"] = "6.2.12"
    step = {"op": "map", "args": args, "ret": 0, "out": {}}
    found = spec.check_state(b) + spec.check_step(a, step, b)
    return dict(step, pre=spec.load_state(a), post=spec.load_state(b)), found, table


def test_the_range_is_6_2_up_to_the_6_3_7_backport():
    for fid in ("walk-freed-table", "walk-freed-table-phys", "walk-freed-table-rcu"):
        f = next(x for x in findings.FINDINGS if x.id == fid)
        assert f.ends_run and f.applies_to((6, 2, 0)) and f.applies_to((6, 3, 6))
        assert not any(f.applies_to(v) for v in ((6, 1, 158), (6, 3, 7), V63, (6, 4, 0)))


def test_the_kernels_outcome_is_catalogued_on_6_2_only():
    step, found, table = _record()
    assert freed_table_walk(step) == {table}
    assert ids(found) == ["C-MAP", "S2-LEAK"]
    got = {findings.finding_for(v, step, V62).id for v in found}
    assert got == {"walk-freed-table", "walk-freed-table-phys"}
    assert all(findings.finding_for(v, step, V63) is None for v in found)


def test_only_the_freed_pages_and_the_shifted_leaves_are_set_aside():
    step, found, table = _record()
    cmap = next(v for v in found if v.inv == "C-MAP")
    def leak(pa):
        return Violation("S2-LEAK", f"page {pa:#x} is in use but not reached from the roots "
                         "(leaked)", {"table": pa})
    parent = step["pre"].roots[0]           # a page of the pre-state outside the freed table
    assert findings.finding_for(leak(parent), step, V62) is None
    # a page the step handed out that nothing reaches (a table allocated under the freed one)
    assert findings.finding_for(leak(table + 0x10_0000), step, V62).id == "walk-freed-table"
    wrong_shift = Violation("C-MAP", cmap.message, dict(cmap.where, desc=cmap.where["desc"] + G2))
    assert findings.finding_for(wrong_shift, step, V62) is None
    # the same violations in a map that replaced no table are not it
    plain = dict(step, pre=spec.load_state(S2().raw()))
    plain.pop("freed_table_walk", None)
    assert all(findings.finding_for(v, plain, V62) is None for v in found)


def test_eagain_is_set_aside_only_when_a_freed_table_held_a_leaf():
    step, _, _ = _record()
    eagain = Violation("C-MAP", "map: returned -EAGAIN, but no page of the range kept an existing "
                       "mapping that differs only in permissions", {})
    assert findings.finding_for(eagain, dict(step, ret=-11), V62).id == "walk-freed-table-phys"
    owned = S2().owner(G1, 3, 1)                        # the freed table held no valid leaf
    rec = dict(step, ret=-11, pre=spec.load_state(dict(owned.raw(), kernel_version="6.2.12")))
    assert findings.finding_for(eagain, rec, V62) is None


def test_a_6_2_tree_ends_the_run_at_the_use_after_free(tmp_path):
    from kdiff_support import need_tree
    from ptspec.proofs.kernel import subject
    tree = need_tree("6.2")
    h = subject.subject_factory(tree)(12, 39, arena_pages=512)
    assert h.step("map", addr=G1, size=0x1000, phys=0x8000_0000, prot=7) == (0, [])
    ret, found = h.step("map", addr=G1, size=2 * G2, phys=0x8000_0000, prot=7)
    assert (ret, found) == (0, [])
    assert {"walk-freed-table", "walk-freed-table-phys"} <= set(h.findings)
    assert h.ended_by in h.findings
    n = len(h.trace)
    assert h.step("unmap", addr=0, size=1 << 39) == (None, []) and len(h.trace) == n
    assert h.unrun == 1                 # counted: an engine's report says a case was cut short
    from ptspec.proofs.kernel import replay
    out = replay.judge_cases([("cut", h, [])], type(h), 0.0, expired=None, progress=None,
                             noun="cases", passed=lambda labels: f"{len(labels)} cases")
    assert out.status == "passed"
    assert "1 of them stopped at a finding that ends the run" in out.detail
    # the lock-step counts the runs the finding ended
    from ptspec.proofs.kernel import check
    from ptspec.proofs.runner import budgets
    r = check.check_geometry(tree, "4k-39", budgets.budget("quick"), 0)
    assert r.status == "passed" and "ended at a finding that ends the run" in r.detail, r.detail
    # the walk into the freed table meets the old page (the same output but for permissions): the
    # map returns -EAGAIN with no live page kept (found by the default profile on 4k-39)
    h = subject.subject_factory(tree)(12, 39, arena_pages=512)
    h.step("map", addr=0xfff, size=0x201000, phys=0x100200fff, prot=0)
    assert h.step("map", addr=G2, size=G2, phys=0x100200000, prot=6) == (-11, [])
    assert "walk-freed-table-phys" in h.findings
    # nested tables: the 1G table's walk and its 2M table's walk move the output by 1G + 2M
    h = subject.subject_factory(tree)(12, 48, fwb=True, arena_pages=512)
    h.step("set_owner", addr=0, size=0x1000, owner_id=1)
    assert h.step("map", addr=0, size=G1 + 0x1000, phys=0x1_0000_0000, prot=6) == (0, [])
    assert "walk-freed-table-phys" in h.findings


if __name__ == "__main__":
    pytest.main([__file__])
