"""The C engines' cases for the prots a tree has beyond impl's (``replay.prot_cases``): NORMAL_NC
from 6.9, PX/UX from 7.1, FEAT_XNX on the 4k-40 table. Trees without them keep their cases exactly;
a planted NORMAL_NC bug is now caught by the bounded exhaustive exploration, which missed it with
impl's alphabet. Skip without a cached tree."""

from ptspec.spec.arch import descriptor as D
from ptspec.proofs.kernel import errorpaths, exhaustive, refusal, replay, subject
from kdiff_support import need_tree

R, W, X, DEV = D.PROT_R, D.PROT_W, D.PROT_X, D.PROT_DEVICE
NC, PX, UX = D.PROT_NORMAL_NC, D.PROT_PX, D.PROT_UX


def _prots(ops):
    return {a["prot"] for _, a in ops if "prot" in a}


def test_no_extra_cases_before_normal_nc():
    cls = subject.subject_factory(need_tree("6.6"))
    assert replay.prot_features(cls, "4k-40") == (False, False, False)
    assert replay.prot_cases(cls) == {"explore": [], "targets": [], "bad": []}
    assert errorpaths.scaled(None, cls) == errorpaths.scaled(None)


def test_extra_cases_by_tree_and_geometry():
    c612 = subject.subject_factory(need_tree("6.12"))
    assert replay.prot_features(c612, "4k-40") == (True, False, False)
    cases = replay.prot_cases(c612)
    assert _prots(cases["explore"]) == {R | W | NC, R | X | NC}
    assert _prots(cases["bad"]) == {R | X | NC, R | DEV | NC}
    c71 = subject.subject_factory(need_tree("7.1"))
    assert replay.prot_features(c71) == (True, True, False)
    assert replay.prot_features(c71, "4k-40") == (True, True, True)
    plain, xnx = replay.prot_cases(c71), replay.prot_cases(c71, "4k-40")
    assert {R | PX, R | UX} <= _prots(plain["bad"])              # -EINVAL without FEAT_XNX
    assert R | PX not in _prots(xnx["bad"]) and R | PX in _prots(xnx["targets"])
    assert plain["explore"] == xnx["explore"]
    assert _prots(plain["explore"]) >= {R | UX, R | PX}


def test_refusal_and_errorpaths_pass_on_7_1_with_the_new_cases():
    tree = need_tree("7.1")
    cls = subject.subject_factory(tree)
    for geometry in (None, "4k-40"):
        _, targets, _, bad = errorpaths.scaled(geometry, cls)
        out = refusal.run_all(tree, geometry=geometry)
        assert out.status == "passed" and out.cases == len(bad) * 5, out.detail
        assert len(bad) > len(errorpaths.scaled(geometry)[3])
        out = errorpaths.run_all(tree, geometry=geometry)
        assert out.status == "passed" and f"x {len(targets)} targets" in out.detail, out.detail


def test_planted_nc_bug_is_caught_by_the_exhaustive_exploration(tmp_path, monkeypatch):
    """nc-as-normal (6.12.19 scratch copy): the exhaustive exploration refutes it at depth 1 (the
    NORMAL_NC block of the alphabet); with impl's alphabet alone it passes; the real tree passes."""
    from ptspec.proofs.kernel import planted_mainline as PM
    real = need_tree("6.12")
    scratch = PM.scratch_tree(PM.BY_ID["nc-as-normal"], real, tmp_path / "t")
    out = exhaustive.explore(scratch, 1)
    assert out.status == "refuted" and "C-MAP" in out.failure.violations[0], out.detail
    assert "prot=0x16" in out.failure.program or "prot=22" in out.failure.program
    assert exhaustive.explore(real, 1).status == "passed"
    monkeypatch.setattr(replay, "prot_cases",
                        lambda cls, g=None: {"explore": [], "targets": [], "bad": []})
    assert exhaustive.explore(scratch, 1).status == "passed"


def test_planted_xnx_swap_is_caught_by_the_exhaustive_exploration_on_the_xnx_table(tmp_path):
    """xnx-px-ux-swapped (7.1.5 scratch copy): the exhaustive exploration of 4k-40 (FEAT_XNX)
    refutes it at depth 1 (R|UX mapped as XN 0b11); on 4K/39 (no FEAT_XNX) the prot is -EINVAL
    before the encoding and depth 1 passes."""
    from ptspec.proofs.kernel import planted_mainline as PM
    scratch = PM.scratch_tree(PM.BY_ID["xnx-px-ux-swapped"], need_tree("7.1"), tmp_path / "t")
    out = exhaustive.explore(scratch, 1, geometry="4k-40")
    assert out.status == "refuted" and "C-MAP" in out.failure.violations[0], out.detail
    assert "xnx=True" in out.failure.program
    assert exhaustive.explore(scratch, 1).status == "passed"
