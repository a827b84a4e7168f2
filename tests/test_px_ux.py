"""7.1's split of KVM_PGTABLE_PROT_X into PX | UX, judged without FEAT_XNX (the userspace build
answers ARM64_HAS_XNX "no"): the spec's PX and UX bits, by kernel version (one alone is -EINVAL for
map and relax_perms; both are X; before 7.1 they mean nothing); the 7.1 enum translated; the
seeded program draws them only for a subject whose enum has them; a planted stage2_set_xn_attr
bug. The tree tests skip without a cached tree."""

from ptspec import spec
from ptspec.spec.arch import descriptor as D
from ptspec.proofs.stage2.harness import Stage2Harness
from test_spec_builder import S2, R, W, X, DEVICE, EINVAL, step, ids
from kdiff_support import need_tree
from program_support import drawn_args

PX, UX, NC = D.PROT_PX, D.PROT_UX, D.PROT_NORMAL_NC
G1 = 0x4000_0000
V71 = "7.1.5"


def _raw(s2, version=None, tlb=()):
    raw = s2.raw(tlb=tlb)
    if version is not None:
        raw["kernel_version"] = version
    return raw


def _check(pre, op, post, version, ret=0, tlb=(), **args):
    return spec.check_step(_raw(pre, version), step(op, ret, **args), _raw(post, version, tlb))


def _map(pre, post, prot, version, ret=0):
    return _check(pre, "map", post, version, ret, addr=G1, size=0x1000, phys=0x8000_0000,
                  prot=prot, force_pte=False)


def test_prot_attrs_with_px_and_ux():
    for fwb in (False, True):
        x = D.prot_attrs(R | X, fwb)
        assert D.prot_attrs(R | PX | UX, fwb, px_ux=True) == x
        assert D.prot_attrs(R | X | PX, fwb, px_ux=True) == x
        assert D.prot_attrs(R | PX, fwb, px_ux=True) is None
        assert D.prot_attrs(R | UX, fwb, px_ux=True) is None
        assert D.prot_attrs(R | DEVICE | PX | UX, fwb, px_ux=True) is None
        assert D.prot_attrs(R | NC | PX | UX, fwb, normal_nc=True, px_ux=True) is None
        # before 7.1 the bits mean nothing
        assert D.prot_attrs(R | PX, fwb) == D.prot_attrs(R, fwb)
    assert not D.has_px_ux((6, 12, 19)) and D.has_px_ux((7, 1, 0))


def test_c_map_px_ux_by_version():
    pre = S2()
    assert _map(pre, pre.copy(), R | W | PX, V71, ret=EINVAL) == []
    assert _map(pre, pre.copy(), R | W | UX, V71, ret=EINVAL) == []
    assert _map(pre, pre.copy().page(G1, 0x8000_0000, x=True), R | W | PX | UX, V71) == []
    vs = _map(pre, pre.copy().page(G1, 0x8000_0000, x=True), R | W | PX, V71)
    assert ids(vs) == ["C-MAP"] and "expected -EINVAL" in str(vs[0])
    # 6.12: ignored (normal non-executable memory)
    assert _map(pre, pre.copy().page(G1, 0x8000_0000), R | W | PX, "6.12.19") == []
    assert ids(_map(pre, pre.copy(), R | W | PX, "6.12.19", ret=EINVAL)) == ["C-MAP"]


def test_c_relax_perms_px_ux_by_version():
    pre = S2().page(G1, 0x8000_0000)
    nsh = [("tlbi_ipa_nsh", G1, 3)]
    assert _check(pre, "relax_perms", pre.copy(), V71, EINVAL, addr=G1, prot=PX) == []
    assert _check(pre, "relax_perms", pre.copy(), V71, EINVAL, addr=G1, prot=R | UX) == []
    # both: the leaf becomes executable
    post = pre.copy().page(G1, 0x8000_0000, x=True)
    assert _check(pre, "relax_perms", post, V71, 0, nsh, addr=G1, prot=R | W | PX | UX) == []
    vs = _check(pre, "relax_perms", post, V71, 0, nsh, addr=G1, prot=R | W | PX)
    assert ids(vs) == ["C-RELAX-PERMS"]
    # 6.12: PX alone is nothing (R W only: no change, XN stays)
    assert _check(pre, "relax_perms", pre.copy(), "6.12.19", 0, nsh, addr=G1,
                  prot=R | W | PX) == []


def _prots(harness_factory, n=2000):
    drawn = drawn_args(harness_factory, n)
    return ([a["prot"] for a in drawn.get("map", [])],
            [a["prot"] for a in drawn.get("relax_perms", [])])


def test_px_ux_prots_only_for_a_subject_that_has_them():
    class WithPxUx(Stage2Harness):
        @classmethod
        def program_px_ux(cls):
            return True

    maps, relax = _prots(Stage2Harness)
    assert not any(p & (PX | UX) for p in maps + relax)
    maps, relax = _prots(WithPxUx)
    assert {p & ~D.PROT_SW for p in maps if p & (PX | UX)} >= {R | PX, R | W | UX, R | PX | UX}
    assert {p for p in relax if p & (PX | UX)} == {PX, UX, R | PX | UX}
    assert not any(p & NC for p in maps)               # NORMAL_NC is a capability of its own


def test_7_1_translates_px_and_ux_and_refuses_one_alone():
    from ptspec.proofs.kernel import subject
    tree = need_tree("7.1")
    ml = tree.shape.mainline
    assert (ml.px, ml.ux) == (0x1, 0x2)
    assert ml.prot_to_tree(R | PX) == 0x8 | 0x1 and ml.prot_to_tree(R | UX) == 0x8 | 0x2
    assert ml.prot_to_tree(R | PX | UX) == ml.prot_to_tree(R | X) == 0x8 | 0x3
    h = subject.subject_factory(tree)(12, 39, arena_pages=512, cmo=True)
    assert h.program_normal_nc() and h.program_px_ux()
    assert h.step("map", addr=0x200000, size=0x1000, phys=0x4000200000, prot=R | PX) == (-22, [])
    assert h.step("map", addr=0x200000, size=0x1000, phys=0x4000200000, prot=R) == (0, [])
    assert h.step("relax_perms", addr=0x200000, prot=UX) == (-22, [])
    assert h.step("relax_perms", addr=0x200000, prot=PX | UX) == (0, [])
    assert not h.pgt.get_leaf(0x200000)[1] & D.XN
    assert h.findings == {}
    t612 = need_tree("6.12")
    assert t612.shape.mainline.px is None
    assert not subject.subject_factory(t612).program_px_ux()


def test_planted_xnx_assumed_is_caught(tmp_path):
    from ptspec.proofs.kernel import check
    from ptspec.proofs.kernel import planted_mainline as PM
    from ptspec.proofs.runner import budgets
    rv = PM.BY_ID["xnx-assumed"]
    scratch = PM.scratch_tree(rv, need_tree("7.1"), tmp_path / "t")
    r = check.check_geometry(scratch, "4k-39", budgets.budget("quick"), 0)
    assert r.status == "refuted" and "expected -EINVAL" in r.detail, r.detail


def test_program_without_px_ux_is_the_recorded_one():
    from test_normal_nc import DIGESTS, _program_digest
    assert _program_digest("4k-39", px_ux=False) == DIGESTS["4k-39"]
    assert _program_digest("4k-39", normal_nc=False, px_ux=True) != DIGESTS["4k-39"]
