"""Catalogued kernel findings match their own bug's shape only (proofs/kernel/finding_shapes.py):
another violation of the same statement in the same kind of step is refuted, not catalogued."""

import errno

from ptspec.proofs.kernel import findings
from ptspec.proofs.kernel import planted_mainline as PM
from kdiff_support import need_tree  # noqa: E402  (tests/ is on sys.path)


def _hyp(tree):
    from ptspec.proofs.kernel import hyp
    return hyp.hyp_harness(tree)(12, 48, 128)


def test_shape_bound_findings_take_their_own_shape_only():
    """table-tlbi-level is a removed table descriptor whose log has an invalidation in its range
    with the descriptor's own level as the hint; relax-perms-eagain-level is the uninitialised
    hint on -EAGAIN. Another violation of the same statement in such a step (no invalidation at
    all, a 6.8+ hint 0, a -EAGAIN that changed a leaf) is not catalogued: it is refuted."""
    from ptspec.spec.violation import Violation
    head = ("unmap: table descriptor at level 2 for [0x0, 0x200000) -> table 0x1000 was removed "
            "with no tlbi_vmid and no tlbi_ipa inside the range without a level hint")
    where = {"ipa": 0, "level": 2, "table": 0x1000}
    unmap = {"op": "unmap", "ret": 0}

    def walk(tail):
        return Violation("S2-BBM-WALK", head + tail, where)
    own = walk("; the log has tlbi_ipa 0x0 level 3, tlbi_ipa 0x0 level 2, whose level hint names "
               "a leaf level and does not cover a table descriptor")
    assert findings.finding_for(own, unmap, (5, 15, 100)).id == "table-tlbi-level"
    assert findings.finding_for(own, unmap, (6, 8, 0)).id == "table-tlbi-level"
    for other in (walk(""), walk("; the log has tlbi_ipa 0x0 level 0, whose level hint names a "
                                 "leaf level and does not cover a table descriptor"),
                  walk("; the log has tlbi_ipa 0x0 level 3, whose level hint names a leaf level "
                       "and does not cover a table descriptor")):
        assert findings.finding_for(other, unmap, (5, 15, 100)) is None, other
    eagain = {"op": "relax_perms", "ret": -errno.EAGAIN}
    hint = Violation("C-RELAX-PERMS", "relax_perms: -EAGAIN: tlbi_ipa_nsh of 0x0 with level hint "
                     "-2, not a level of this table (1..3) nor TLBI_TTL_UNKNOWN: the walk never "
                     "set the level it passes (uninitialised)", {})
    assert findings.finding_for(hint, eagain, (6, 12, 19)).id == "relax-perms-eagain-level"
    for text in ("relax_perms: -EAGAIN: expected exactly one [\"tlbi_ipa_nsh\", 0x0, level], "
                 "found []", "relax_perms: leaf at 0x0 changed: no valid leaf to relax (6.2 on)"):
        assert findings.finding_for(Violation("C-RELAX-PERMS", text, {}), eagain, (6, 12, 19)) is None


def test_6_x_findings_take_their_own_shape_only():
    """create-unlinked-double-put is the double put of a split that failed with -ENOMEM;
    split-drops-memtype-cmo a page whose MemAttr is not its pre-state block's;
    unmap-deferred-tlbi-refused a refused unmap whose log is range invalidations only. Another
    S2-LEAK in a split, a clean skipped on a normal block's split, or a refused unmap logging
    another event is refuted."""
    from ptspec import spec
    from ptspec.spec.violation import Violation
    from test_spec_builder import S2, leaf
    V = (6, 6, 63)
    failed = {"op": "split", "ret": -12}
    double = Violation("S2-LEAK", "page pool error: put_page on page 0x1000258000 that is not "
                       "allocated (double free?)", {})
    assert findings.finding_for(double, failed, V).id == "create-unlinked-double-put"
    assert findings.finding_for(double, {"op": "split", "ret": 0}, V) is None
    assert findings.finding_for(Violation("S2-LEAK", "page 0x1000258000 is allocated but "
                                          "unreachable", {}), failed, V) is None
    for device, want in ((True, "split-drops-memtype-cmo"), (False, None)):
        b = S2()
        b.block(0x20_0000, 2, 0x1_0020_0000, device=device)
        split = {"op": "split", "ret": 0, "pre": spec.load_state(b.raw())}
        page = leaf(0x1_0020_0000, 3)
        poc = Violation("CMO-POC", "split: cacheable leaf at ipa 0x200000 level 3 made ... visible",
                        {"ipa": 0x20_0000, "leaf_ipa": 0x20_0000, "level": 3, "desc": page,
                         "pa": 0x1_0020_0000})
        got = findings.finding_for(poc, split, V)
        assert (got.id if got else None) == want
    refused = {"op": "unmap", "ret": -34, "args": {"addr": 0, "size": 0x1000}}
    text = ("unmap: the walk is refused with -ERANGE, yet the step logged 1 TLB/cache event(s), "
            "first ['tlbi_range', 0, 4096]")
    ranged = Violation("C-UNMAP", text, {"log_kinds": ["tlbi_range"]})
    assert findings.finding_for(ranged, refused, V).id == "unmap-deferred-tlbi-refused"
    mixed = Violation("C-UNMAP", text, {"log_kinds": ["dcache", "tlbi_range"]})
    assert findings.finding_for(mixed, refused, V) is None


def test_after_a_hyp_split_only_its_own_extra_reference_is_catalogued():
    """hyp-split-ref, hyp-split-leak and -destroy match the table page a split left one reference
    too many (per split) only: another page's wrong refcount, a second extra reference or a pool
    error in a run that split a block is refuted, not absorbed by "after a split"."""
    from ptspec.proofs.kernel import findings
    from ptspec.spec.violation import Violation
    h = _hyp(need_tree("6.6"))
    assert h.step("map", addr=0x40000000, size=0x200000, phys=0x140000000, prot=5) == (0, [])
    assert h.step("map", addr=0x40100000, size=0x1000, phys=0x240103000, prot=0xe)[1] == []
    assert len(h.excess) == 1 and list(h.excess.values()) == [1]       # the block's level-2 table
    (t, n), = h.excess.items()
    step = {"op": "map", "hyp_per_descriptor": True, "after_split": True, "split_excess": dict(h.excess)}
    v = lambda table, rc, counted: Violation(     # noqa: E731
        "S1-RC", f"table {table:#x} at level 2: refcount {rc}, counted descriptors {counted}",
        {"table": table, "level": 2, "ipa": 0, "refcount": rc, "counted": counted})
    V = (6, 6, 63)
    assert findings.finding_for(v(t, 1 + 5 + n, 5), step, V).id == "hyp-split-ref"
    assert findings.finding_for(v(t, 1 + 5 + n + 1, 5), step, V) is None
    assert findings.finding_for(v(t + 0x1000, 1 + 5 + n, 5), step, V) is None
    hstep = {"op": "destroy", "hyp": True, "after_split": True, "split_excess": dict(h.excess)}
    leak = lambda table: Violation("S1-LEAK", f"page {table:#x} is still in use, but the table "  # noqa: E731
                                   "has no root (destroyed)", {"table": table})
    assert findings.finding_for(leak(t), hstep, V).id == "hyp-split-leak"
    assert findings.finding_for(leak(t + 0x1000), hstep, V) is None
    assert findings.finding_for(Violation("S1-LEAK", "page pool error: double free", {}), hstep, V) is None
    assert h.step("destroy") == (0, [])
    assert {"hyp-split-ref", "hyp-split-leak", "hyp-split-leak-destroy"} <= set(h.seen)


def test_a_dropped_retry_invalidation_is_not_taken_for_the_catalogued_hint(tmp_path, monkeypatch):
    """relax-perms-retry-untlbied (6.12: no invalidation on -EAGAIN) lies inside
    relax-perms-eagain-level's range and kind of step; the finding now matches the uninitialised
    hint only, so the plant is refuted; matched by statement and step alone (as before stop 28)
    it would have been catalogued and check-kernel would have passed."""
    import dataclasses
    from ptspec.proofs.kernel import findings
    rv = PM.BY_ID["relax-perms-retry-untlbied"]
    scratch = PM.scratch_tree(rv, need_tree("6.12"), tmp_path / "t")
    got, h = PM.run_sequence(rv, scratch)
    assert [str(v).split()[0] for v in got] == ["C-RELAX-PERMS"] and h.findings == {}, got
    loose = tuple(dataclasses.replace(f, text="") if f.id == "relax-perms-eagain-level" else f
                  for f in findings.FINDINGS)
    monkeypatch.setattr(findings, "FINDINGS", loose)
    got, h = PM.run_sequence(rv, scratch)
    assert got == [] and h.findings == {"relax-perms-eagain-level": 1}
