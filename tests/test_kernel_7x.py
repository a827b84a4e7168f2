"""Kernels after 7.1 (docs/kernel-mainline.md "7.2: what would change").

No consistent 7.2 or 7.3 tree has been found yet, so the tests here are of two kinds:

* a cached ``linux-7.2*`` / ``linux-7.3*`` tree, when one is put in the tree cache, is opened,
  driven and judged like 7.1.5 (they skip, saying so, when it is absent);
* what is known of 7.2's pgtable.c is judged now: its one known change (8d187d4b33c2, the
  relax_perms TLBI level, backported to 7.1.y in 7.1.5) and the version plumbing past 7.1. The
  scratch trees are the cached 7.1.5 under another version line, and 7.1.5 with that fix put back
  out (``planted_mainline``'s ``relax-perms-tlbi-level``, which gives 7.1.3's code): they test how
  ptspec reads a version, not what a real 7.2 does.
"""

import re
from pathlib import Path

import pytest

from ptspec.proofs.kernel import check
from ptspec.proofs.kernel import catalogue
from ptspec.proofs.kernel import checks_mainline as CM
from ptspec.proofs.kernel import planted_mainline as PM
from ptspec.proofs.kernel import subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner import budgets
from kdiff_support import need_tree

HOLE = dict(addr=0x100800, prot=3)      # relax_perms where no leaf is mapped: the walk's -EAGAIN


def _relabel(tree, dest: Path, version: str):
    """The tree's four files under ``dest`` with the Makefile's version lines set to
    ``version`` ("7.2.0"); the opened tree."""
    v, p, s = version.split(".")
    for rel in T.FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes((Path(tree.root) / rel).read_bytes())
    mk = dest / "Makefile"
    text = mk.read_text()
    for key, val in (("VERSION", v), ("PATCHLEVEL", p), ("SUBLEVEL", s)):
        text, n = re.subn(rf"^{key} = \d+$", f"{key} = {val}", text, count=1, flags=re.M)
        assert n == 1, key
    mk.write_text(text)
    return T.open_tree(dest)


def _relax_hole(tree):
    h = subject.subject_factory(tree)(12, 39, arena_pages=512)
    ret, found = h.step("relax_perms", **HOLE)
    return ret, sorted({str(v).split()[0] for v in found}), h.findings


# -- a real tree, when cached ----------------------------------------------------------------------

@pytest.mark.parametrize("prefix", ["7.2", "7.3"])
def test_cached_7x_tree_is_driven_and_passes_a_quick_lockstep(prefix):
    tree, why = T.cached_tree(prefix)
    if tree is None:
        pytest.skip(f"kdiff: {why}")
    bad = T.unsupported(tree.shape)
    assert bad is None, f"Linux {tree.version}: {bad}"
    assert tree.shape.mainline is not None and tree.version_tuple() >= (7, 2, 0)
    r = check.check_geometry(tree, "4k-39", budgets.budget("quick"), 0)
    assert r.status == "passed", check.format_result(r)
    assert r.examples > 50


def test_verify_names_the_7x_lockstep_obligations():
    assert {"7.2", "7.3"} <= set(CM.TREES)


# -- the 7.2 fix and the catalogue's range ---------------------------------------------------------

def test_the_7_2_fix_put_back_is_catalogued_only_where_the_kernel_had_it(tmp_path):
    """The relax_perms TLBI-level fix reverted out of 7.1.5 is 7.1.3's code: labelled 7.1.3 it is
    the catalogued relax-perms-eagain-level (no violation); labelled 7.1.5 or 7.2.0 (which have the
    fix) the same step is a C-RELAX-PERMS violation. The catalogue's old range ([6.12, 7.1.0))
    failed the first half: a 7.1.3 tree was refuted."""
    tree = need_tree("7.1")
    reverted = PM.scratch_tree(PM.BY_ID["relax-perms-tlbi-level"], tree, tmp_path / "rv")
    as_713 = _relabel(reverted, tmp_path / "713", "7.1.3")
    assert _relax_hole(as_713) == (-11, [], {"relax-perms-eagain-level": 1})
    for label in ("7.1.5", "7.2.0"):
        as_v = _relabel(reverted, tmp_path / label, label)
        ret, found, findings = _relax_hole(as_v)
        assert ret == -11 and found == ["C-RELAX-PERMS"] and findings == {}, label


def test_relax_perms_finding_range_follows_the_backport():
    f = next(k for k in catalogue.FINDINGS if k.id == "relax-perms-eagain-level")
    assert f.applies_to((6, 12, 19)) and f.applies_to((7, 1, 4))
    assert not f.applies_to((7, 1, 5)) and not f.applies_to((7, 2, 0))
    assert "8d187d4b33c2" in f.why and "ab2afe109266" in f.why


# -- the version plumbing past 7.1 ----------------------------------------------------------------

def test_7_1_sources_under_a_7_2_version_line_are_judged_with_the_7_1_statements(tmp_path):
    """Every version gate of the spec is "from X on": a tree past 7.1 whose code has 7.1's API is
    judged by the 7.1 statements (typed owner annotations, the typed locked-PTE marker, PX/UX,
    void mkyoung). A gate written for 7.1 alone would make this quick lock-step refute."""
    tree = need_tree("7.1")
    t72 = _relabel(tree, tmp_path / "72", "7.2.0")
    assert t72.version == "7.2.0" and T.unsupported(t72.shape) is None
    assert t72.shape.mainline == tree.shape.mainline          # the shape is read, not the version
    r = check.check_geometry(t72, "4k-39", budgets.budget("quick"), 0)
    assert r.status == "passed", check.format_result(r)
    assert "relax-perms-eagain-level" not in r.detail
    assert _relax_hole(t72) == (-11, [], {})
