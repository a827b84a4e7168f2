"""The C engines' annotate cases (``replay.annotate_cases``, 7.1 on): exhaustive, errorpaths and
refusal drive ``kvm_pgtable_stage2_annotate`` on a tree that has it, and trees without it keep
their cases and counts exactly. Planted annotate bugs are caught by the new cases (and not
without them); the 4k-40 exhaustive reaches relax_perms to PX alone on an existing leaf; C-INIT
compares FEAT_XNX. Skip without a cached tree."""

import collections

from ptspec.spec.arch import descriptor as D
from ptspec.proofs.kernel import errorpaths, exhaustive, refusal, replay, subject
from ptspec.proofs.stage2.exhaustive import alphabet
from kdiff_support import need_tree

NONE = {"explore": [], "targets": [], "bad": []}


def _no_annotate_cases(monkeypatch):
    monkeypatch.setattr(replay, "annotate_cases", lambda cls, g=None: dict(NONE))


def test_trees_without_annotate_keep_their_cases_and_counts():
    """5.x and 6.x: no annotate case, the alphabet and case lists as before, and 6.12.19's counts
    as they were before annotate cases existed (docs/kernel-mainline.md: depth 3 226 states /
    1,587 transitions, errorpaths 102 cases, refusal 150 calls)."""
    for version in ("5.14", "6.6", "6.12"):
        cls = subject.subject_factory(need_tree(version))
        assert not replay.has_annotate(cls)
        for g in (None, "4k-40", "64k-44"):
            assert replay.annotate_cases(cls, g) == NONE
            assert replay.extra_cases(cls, g) == replay.prot_cases(cls, g)
            ps = replay.geometry(g)[0]
            assert exhaustive._alphabet(cls, g) == (alphabet(page_shift=ps)
                                                    + replay.prot_cases(cls, g)["explore"])
    tree = need_tree("6.12")
    assert refusal.run_all(tree).cases == 150
    assert errorpaths.run_all(tree).cases == 102
    out = exhaustive.explore(tree, 3)
    assert out.status == "passed" and out.detail.startswith(
        "depth 3: 226 distinct states, 1587 transitions"), out.detail


def test_7_1_cases_by_geometry():
    cls = subject.subject_factory(need_tree("7.1"))
    assert replay.has_annotate(cls)
    for g, n in ((None, 2), ("4k-39", 2), ("4k-40", 1), ("16k-47", 1), ("64k-52", 1)):
        cases = replay.annotate_cases(cls, g)       # the block-sized one on 4K/39 only
        assert [a["type"] for _, a in cases["explore"]] == [D.TYPE_POISONED] * n
        assert len(cases["targets"]) == 2
        types = {a["type"] for _, a in cases["bad"]}
        assert {0, D.TYPE_LOCKED, -1, 18, 19} <= types
        assert {a["annotation"] & ~D.ANNOT_MASK for _, a in cases["bad"]} >= {1, 1 << 63}
        ops = exhaustive._alphabet(cls, g)
        assert cases["explore"] == [e for e in ops if e[0] == "annotate"]
        # owner 0 is no annotate call on 7.1 (the subject skips it): not explored
        assert all(a["owner_id"] == 1 for op, a in ops if op == "set_owner")


def test_7_1_refusal_and_errorpaths_pass_with_annotate():
    """Every refused input gets -EINVAL/-ENOMEM/-ERANGE with nothing changed; types 18 and 19
    are counted as the catalogued annotate-type-truncated (as in the lock-step); annotate with
    each allocation failing leaves a consistent table."""
    tree = need_tree("7.1")
    cls = subject.subject_factory(tree)
    for g, calls, cases in ((None, 210, 116), ("4k-40", 200, 122)):
        out = refusal.run_all(tree, geometry=g)
        assert out.status == "passed" and out.cases == calls, out.detail
        assert out.findings.get("annotate-type-truncated", 0) > 0
        out = errorpaths.run_all(tree, geometry=g)
        assert out.status == "passed" and out.cases == cases, out.detail
    labels = [x for x, _, found in errorpaths.cases(tree, cls) if "annotate with" in x]
    assert len(labels) >= 10, labels          # allocation points of the two annotate targets


def test_relax_perms_to_px_alone_on_an_existing_leaf_is_explored_on_4k_40():
    """With FEAT_XNX (4k-40) the exploration reaches relax_perms(R|PX) on a valid leaf, pages and
    blocks, leaving XN 0b11 (EL1 may execute, EL0 not): 7 transitions at depth 2 (57 up to depth 3);
    without FEAT_XNX (4K/39) the prot is -EINVAL and no leaf gets that field."""
    def count(geometry):
        hits = collections.Counter()

        def observe(h, path, entry):
            if (entry[0] == "op" and entry[1] == "relax_perms"
                    and entry[2]["prot"] & (D.PROT_PX | D.PROT_UX) == D.PROT_PX):
                ret, pte, level = h.pgt.get_leaf(entry[2]["addr"])
                if ret == 0 and pte & D.VALID:
                    hits[level, (pte & D.XN_FIELD) >> 53] += 1
        out = exhaustive.explore(need_tree("7.1"), 2, geometry=geometry, observe=observe)
        assert out.status == "passed", out.detail
        return hits
    hits = count("4k-40")
    assert hits == {(2, 0b11): 4, (3, 0b11): 3}, hits
    assert all(xn != 0b11 for _, xn in count(None))


def _scratch(plant, tmp_path):
    from ptspec.proofs.kernel import planted_mainline as PM
    return PM.scratch_tree(PM.BY_ID[plant], need_tree("7.1"), tmp_path / plant)


def test_planted_annotate_bugs_caught_by_refusal(tmp_path, monkeypatch):
    """annotate-locked-accepted (LOCKED stored) and annotate-mask-unchecked (an annotation with
    bit 0 stored, a valid descriptor): refuted by the refusal engine's annotate calls, which
    passed without them."""
    for plant, stored in (("annotate-locked-accepted", ", 1, 0x0)  # -> 0"),
                          ("annotate-mask-unchecked", ", 3, 0x1)  # -> 0")):
        scratch = _scratch(plant, tmp_path)
        out = refusal.run_all(scratch)
        assert out.status == "refuted", (plant, out.detail)
        assert "C-ANNOTATE" in " ".join(out.failure.violations), out.failure.violations
        assert stored in out.failure.program, out.failure.program
    with monkeypatch.context() as m:
        _no_annotate_cases(m)
        assert refusal.run_all(scratch).status == "passed"


def test_planted_poison_uncounted_caught_by_the_exhaustive_exploration(tmp_path, monkeypatch):
    """poison-uncounted (a POISONED entry takes no reference on its table): refuted at depth 1
    by the alphabet's POISONED annotate (S2-RC); without the annotate entries depth 2 passes."""
    scratch = _scratch("poison-uncounted", tmp_path)
    out = exhaustive.explore(scratch, 1)
    assert out.status == "refuted" and out.detail == "depth 1", out.detail
    assert any(v.startswith("S2-RC") for v in out.failure.violations), out.failure.violations
    assert "pgt.annotate(" in out.failure.program
    _no_annotate_cases(monkeypatch)
    assert exhaustive.explore(scratch, 2).status == "passed"


def test_c_init_compares_feat_xnx():
    """C-INIT: a table whose raw state does not report the FEAT_XNX it was built with (or reports
    one it was not built with) is a violation at init; the real table's report passes."""
    tree = need_tree("7.1")
    cls = subject.subject_factory(tree)

    def lying(change):
        class Lying(cls.pgtable_class):
            def snapshot(self, drain_log=True):
                return change(super().snapshot(drain_log))
        return type("CSideHarness", (cls,), {"pgtable_class": Lying})

    assert replay.harness(tree, cls=cls, geometry_name="4k-40").violations == []
    assert replay.harness(tree, cls=cls).violations == []
    dropped = replay.harness(tree, cls=lying(lambda s: {k: v for k, v in s.items()
                                                        if k != "has_xnx"}), geometry_name="4k-40")
    added = replay.harness(tree, cls=lying(lambda s: dict(s, has_xnx=True)))
    for h, want in ((dropped, "has_xnx = None, the table was built with True"),
                    (added, "has_xnx = True, the table was built with False")):
        assert any(str(v).startswith("C-INIT") and want in str(v) for v in h.violations), \
            h.violations
