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
                 "found []", "relax_perms: leaf at 0x0 changed: no valid leaf to relax (6.3 on)"):
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


def _conflict_record(h, args, version, warnings):
    from ptspec import spec
    return {"op": "map", "args": args, "ret": 0, "hyp": True, "conflict": True,
            "pre": spec.load_state(h._raw), "warnings": warnings, "version": version}


def test_a_conflicting_hyp_map_is_catalogued_only_as_the_kernel_does_it():
    """hyp-conflict-split / -page-einval (C-HYP-MAP) match a page that holds what the kernel's own
    conflict behaviour gives it (finding_shapes.hyp_conflict_outcome: a fresh table over the
    conflicting leaf, its pages below; up to 6.1 one block higher in the output); the -warn ones
    (C-HYP-WARN) the exact WARN_ONs of that behaviour. Another output, level or WARN is refuted."""
    from ptspec.proofs.kernel import finding_shapes as FS
    from ptspec.spec.violation import Violation
    h = _hyp(need_tree("6.6"))
    assert h.step("map", addr=0x40000000, size=0x200000, phys=0x140000000, prot=5) == (0, [])
    args = dict(addr=0x40000000, size=0x200000, phys=0x240000000, prot=4)
    V = (6, 6, 63)
    st = _conflict_record(h, args, V, ["hyp_pte_needs_update: WARN_ON at pgtable.c:1"])
    leaves, stop, warns = FS.hyp_conflict_outcome(st["pre"], args, V)
    assert stop is None and warns == ["hyp_pte_needs_update"] and len(leaves) == 512
    level, desc = FS._leaf_at(leaves, 0x40001000, 12)
    assert level == 3 and desc & 0xfffffffff000 == 0x240001000          # 6.2 on: phys from addr
    old_leaves = FS.hyp_conflict_outcome(st["pre"], args, (6, 3, 8))[0]
    assert FS._leaf_at(old_leaves, 0x40001000, 12)[1] & 0xfffffffff000 == 0x240201000   # 6.3: +2M

    def page(found_level, found):
        return Violation("C-HYP-MAP", f"map: page 0x40001000 should be 0x1 at level 2, found "
                         f"{found:#x} at level {found_level}",
                         {"ipa": 0x40001000, "level": 2, "desc": found, "found_level": found_level})
    assert findings.finding_for(page(3, desc), st, V).id == "hyp-conflict-split"
    for other in (page(3, desc + 0x1000), page(2, desc), page(3, desc ^ (1 << 54))):
        assert findings.finding_for(other, st, V) is None, other
    assert findings.finding_for(page(3, desc), dict(st, pre=None), V) is None
    warn = Violation("C-HYP-WARN", "map: a WARN from kvm_set_table_pte that is not due", {})
    extra = dict(st, warnings=st["warnings"] + ["kvm_set_table_pte: WARN_ON at pgtable.c:2"])
    assert findings.finding_for(warn, extra, (6, 1, 55)) is None          # 6.1 raises that, but
    old = _conflict_record(h, args, (6, 1, 55), extra["warnings"])      # (hyp-conflict-split-warn)
    assert findings.finding_for(warn, old, (6, 1, 55)).id == "hyp-conflict-split-warn"
    assert findings.finding_for(warn, dict(old, warnings=old["warnings"] * 2), (6, 1, 55)) is None
    # the real step: catalogued as the kernel's conflict behaviour, nothing left over
    assert h.step("map", **args) == (0, []) and h.seen.get("hyp-conflict-split")
    # a level-3 conflict: -EINVAL, the pages after it untouched, two WARNs
    assert h.step("map", addr=0x200000, size=0x1000, phys=0x100200000, prot=4) == (0, [])
    ret, kept = h.step("map", addr=0x1ff000, size=0x3000, phys=0x1101ff000, prot=4)
    assert ret == -22 and kept == [], kept
    assert {"hyp-conflict-page-einval", "hyp-conflict-page-einval-warn"} <= set(h.seen)


def test_a_conflicting_hyp_leaf_overwritten_is_refuted_not_catalogued(tmp_path, monkeypatch):
    """The plant hyp-conflict-overwrite (6.12: the conflict WARNs but the new leaf is stored over
    the old one) lies in hyp-conflict-split's kind of step; matched by statement and step alone
    (before stop 29) it was catalogued and check-kernel passed."""
    import dataclasses
    rv = PM.HYP_CONFLICT_OVERWRITE
    scratch = PM.scratch_tree(rv, need_tree("6.12"), tmp_path / "t")
    got, h = PM.run_hyp_sequence(rv, scratch)
    assert {str(v).split()[0] for v in got} == {"C-HYP-MAP"}, [str(v) for v in got]
    assert "hyp-conflict-split" not in h.seen
    clean, h = PM.run_hyp_sequence(rv, need_tree("6.12"))
    assert clean == [] and h.seen.get("hyp-conflict-split")
    loose = tuple(dataclasses.replace(f, where=None) if f.id.startswith("hyp-conflict") else f
                  for f in findings.FINDINGS)
    monkeypatch.setattr(findings, "FINDINGS", loose)
    got, h = PM.run_hyp_sequence(rv, scratch)
    assert got == [] and h.seen.get("hyp-conflict-split")


def test_an_unmap_starting_inside_a_hyp_block_is_catalogued_only_as_the_kernel_walks_it():
    """hyp-unmap-overreach matches the kernel's own walk (finding_shapes.hyp_unmap_outcome: the
    first leaf goes whole when the rest of the range is at least its size, counted): another leaf
    removed, or another count, in such a step is refuted."""
    from ptspec import spec
    from ptspec.proofs.kernel import finding_shapes as FS
    from ptspec.spec.violation import Violation
    h = _hyp(need_tree("6.6"))
    assert h.step("map", addr=0x200000, size=0x400000, phys=0x100200000, prot=4) == (0, [])
    pre = spec.load_state(h._raw)
    args = dict(addr=0x201000, size=0x200000)
    assert FS.hyp_unmap_outcome(pre, args) == ({(0x200000, 2)}, 0x200000)
    st = {"op": "unmap", "args": args, "ret": 0x200000, "hyp": True, "starts_inside_leaf": True,
          "pre": pre}
    V = (6, 6, 63)

    def gone(ipa):
        return Violation("C-HYP-UNMAP", f"unmap: leaf 0x1 at [{ipa:#x}, {ipa + 0x200000:#x}) "
                         "level 2 must stay (it is not a whole leaf at the start of [0x201000, "
                         "0x401000)) but was removed", {"ipa": ipa, "level": 2, "desc": 1})
    ret = Violation("C-HYP-UNMAP", "unmap: returned 0x200000, expected 0x0 (the bytes of the 0 "
                    "whole leaves at the start of [0x201000, 0x401000))", {})
    assert findings.finding_for(gone(0x200000), st, V).id == "hyp-unmap-overreach"
    assert findings.finding_for(ret, st, V).id == "hyp-unmap-overreach"
    assert findings.finding_for(gone(0x400000), st, V) is None          # the next block stays
    assert findings.finding_for(ret, dict(st, ret=0x400000), V) is None
    assert findings.finding_for(gone(0x200000), dict(st, pre=None), V) is None
    ret_, kept = h.step("unmap", **args)
    assert ret_ == 0x200000 and kept == [] and h.seen.get("hyp-unmap-overreach")


def test_a_truncated_annotate_type_is_catalogued_only_for_what_the_truncation_stores():
    """annotate-type-truncated (7.1, a type of 16 or more) matches a step that stored exactly
    annotation | (type & 0xf) << 60 on each page of R, nothing else: another descriptor, a page
    left out, or a refusal is refuted."""
    from ptspec import spec
    from ptspec.spec.violation import Violation
    from test_spec_builder import S2

    def load(b):
        raw = b.raw()
        raw["kernel_version"] = "7.1.5"
        return spec.load_state(raw)
    pre = S2()
    args = {"addr": 0x200000, "size": 0x2000, "type": 18, "annotation": 2}

    def record(*descs, ret=0):
        post = pre.copy()
        for i, d in enumerate(descs):
            post.set(0x200000 + i * 0x1000, 3, d)
        return {"op": "annotate", "args": args, "ret": ret, "pre": load(pre), "post": load(post)}
    v = Violation("C-ANNOTATE", "annotate: returned 0, expected -EINVAL", {})
    V, ok = (7, 1, 5), 2 | 2 << 60
    assert findings.finding_for(v, record(ok, ok), V).id == "annotate-type-truncated"
    for other in (record(ok, 4 | 2 << 60), record(ok), record(ok, ok, ok), record(ok, ok, ret=-22)):
        assert findings.finding_for(v, other, V) is None
    # -ENOMEM part way (the memcache ran dry): the pages done hold the truncated descriptor
    assert findings.finding_for(v, record(ok, ret=-12), V).id == "annotate-type-truncated"
    assert findings.finding_for(v, record(4 | 2 << 60, ret=-12), V) is None
    # the walk's own refusal (a range past the IPA space): -ERANGE with nothing changed
    far = dict(args, addr=1 << 40)
    refused = dict(record(), args=far, ret=-34)
    assert findings.finding_for(v, refused, V).id == "annotate-type-truncated"
    assert findings.finding_for(v, dict(record(ok), args=far, ret=-34), V) is None


def test_hyp_table_tlbi_level_is_the_own_level_hint_only():
    """hyp-table-tlbi-level is a removed hyp table descriptor whose log has a vae2is in its range
    with the descriptor's own level as the hint; no invalidation there at all (a TLBI dropped
    outright), or another hint, is refuted."""
    from ptspec.spec.violation import Violation
    head = ("unmap: table descriptor at level 2 for [0x200000, 0x400000) -> table 0x1000003000 was "
            "removed with no tlbi_el2 (vae2is) inside the range without a level hint; the log has ")
    where = {"ipa": 0x200000, "level": 2, "table": 0x1000003000}
    unmap = {"op": "unmap", "hyp": True}
    own = Violation("S1-UNMAP-TLBI", head + "tlbi_el2_last 0x200000 level 3, tlbi_el2 0x200000 "
                    "level 2", where)
    assert findings.finding_for(own, unmap, (6, 3, 8)).id == "hyp-table-tlbi-level"
    for tail in ("no EL2 invalidation in it (1 elsewhere)", "tlbi_el2 0x200000 level 1",
                 "tlbi_el2_last 0x200000 level 2"):
        assert findings.finding_for(Violation("S1-UNMAP-TLBI", head + tail, where), unmap,
                                    (6, 3, 8)) is None, tail
    # the spec's where lists every vae2is hint in the range (its message shows six events only)
    for hints, want in (([2, 3], "hyp-table-tlbi-level"), ([3], None), ([], None)):
        v = Violation("S1-UNMAP-TLBI", head + "tlbi_el2_last 0x200000 level 3 and 511 more",
                      dict(where, el2_hints=hints))
        got = findings.finding_for(v, unmap, (6, 3, 8))
        assert (got.id if got else None) == want, hints


def test_after_a_level_3_conflict_only_pages_left_as_they_were_are_catalogued():
    """A level-3 conflict stops the hyp map with -EINVAL: a page after it is hyp-conflict-page-einval
    only if it is as it was; one the step emptied or changed is refuted."""
    from ptspec.spec.violation import Violation
    h = _hyp(need_tree("6.6"))
    for va in (0x200000, 0x201000):
        assert h.step("map", addr=va, size=0x1000, phys=0x100000000 + va, prot=4) == (0, [])
    V = (6, 6, 63)
    st = dict(_conflict_record(h, dict(addr=0x1ff000, size=0x3000, phys=0x1101ff000, prot=4), V,
                               ["hyp_pte_needs_update: x", "hyp_map_walker: x"]), ret=-22)
    page = st["pre"].walk().find(0x201000)[3]

    def found(desc, level=3):
        text = "nothing" if level is None else f"{desc:#x} at level {level}"
        return Violation("C-HYP-MAP", f"map: page 0x201000 should be 0x1 at level 3, found {text}",
                         {"ipa": 0x201000, "level": 3, "desc": desc, "found_level": level})
    assert findings.finding_for(found(page), st, V).id == "hyp-conflict-page-einval"
    assert findings.finding_for(found(0, None), st, V) is None
    assert findings.finding_for(found(page ^ 0x1000), st, V) is None
    warn = Violation("C-HYP-WARN", "map: a WARN from hyp_pte_needs_update that is not due", {})
    assert findings.finding_for(warn, st, V).id == "hyp-conflict-page-einval-warn"
    assert findings.finding_for(warn, dict(st, warnings=st["warnings"][:1]), V) is None
