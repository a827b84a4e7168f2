"""7.1's annotations and init flags. kvm_pgtable_stage2_annotate driven with its own inputs
(C-ANNOTATE), POISONED and other typed annotations in the tables (S2-OWN), the generator's annotate
draws (only for a subject that has annotate: impl's and 6.x trees' programs stay as they were), the
catalogued annotate-type-truncated; KVM_PGTABLE_S2_AS_S1 (C-MAP's MemAttr, cacheability, 16k-47's
table); four planted bugs each caught by the new judgement only. The tree tests skip without a
cached tree."""

import pytest

from ptspec import spec
from ptspec.spec.arch import descriptor as D
from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.harness import Stage2Harness
from test_spec_builder import S2, step, ids
from kdiff_support import need_tree
from program_support import drawn_args

V71, V612 = "7.1.5", "6.12.19"
POISON = D.TYPE_POISONED << 60
OWNER1 = D.owner_descriptor(1, (3, 1), D.owner_tag((7, 1, 0)))


def _raw(s2, version, tlb=()):
    raw = s2.raw(tlb=tlb)
    raw["kernel_version"] = version
    return raw


def _s2():
    return S2(field=(3, 1), max_owner=1)


# -- the spec --------------------------------------------------------------------------------

def test_annotation_descriptor_refuses_what_annotate_refuses():
    assert D.annotation_descriptor(D.TYPE_POISONED, 0) == POISON
    assert D.annotation_descriptor(D.TYPE_DONATION, 2) == OWNER1
    assert D.annotation_descriptor(15, D.ANNOT_MASK) == (15 << 60) | D.ANNOT_MASK
    for t, a in ((0, 0), (D.TYPE_LOCKED, 0), (16, 0), (17, 0), (18, 2), (-1, 0),
                 (D.TYPE_POISONED, 1), (D.TYPE_POISONED, 1 << 60), (D.TYPE_POISONED, 1 << 63)):
        assert D.annotation_descriptor(t, a) is None, (t, a)


def test_s2_own_accepts_poisoned_and_other_types_on_7_1_only():
    tag71 = D.owner_tag((7, 1, 0))
    assert D.is_other_annotation(POISON, tag71) and D.is_other_annotation(POISON | 0x10, tag71)
    assert not D.is_other_annotation(OWNER1, tag71)                    # the owner record
    assert not D.is_other_annotation(D.TYPE_LOCKED << 60, tag71)       # the locked marker
    assert not D.is_other_annotation(0x2, tag71)                       # untyped
    assert not D.is_other_annotation(POISON, 0)                        # before 7.1
    for desc, v71, v612 in ((POISON, [], ["S2-OWN"]), ((15 << 60) | 0x40, [], ["S2-OWN"]),
                            (OWNER1, [], ["S2-OWN"]), (0x2, ["S2-OWN"], []),
                            (D.TYPE_LOCKED << 60, ["S2-OWN"], ["S2-OWN"])):
        s = _s2()
        s.page(0x1000, 0x8000_0000)
        s.set(0x2000, 3, desc)
        for version, want in ((V71, v71), (V612, v612)):
            got = [i for i in ids(spec.check_state(_raw(s, version))) if i == "S2-OWN"]
            assert got == want, (hex(desc), version, got)


# pKVM's record of a page donated to a protected guest (7.1's mem_protect.c): DONATION type, owner
# PKVM_ID_GUEST in bits 3:1, the guest's VM handle (0x1000, pKVM's first) and gfn 0x8_0123 in 59:4
GUEST_META = 0x1000 | 0x8_0123 << 16
GUEST_REC = (D.TYPE_DONATION << 60) | GUEST_META << 4 | D.PKVM_ID_GUEST << 1


def test_s2_own_accepts_a_guest_donation_record_on_7_1_only():
    """S2-OWN judged real pKVM host stage-2 tables wrong: a page donated to a guest records its VM
    handle and gfn next to PKVM_ID_GUEST (no KVM_MAX_OWNER_ID bounds it). Metadata next to any
    other owner, a guest record without a VM handle (pKVM's start at 0x1000), the guest's id
    without the owner type, or the record before 7.1 stay violations; the plain statement agrees
    on each."""
    from ptspec.spec.stage2.ownership import own_violations_plain
    from ptspec.spec.stage2.state import load_state
    tag71 = D.owner_tag((7, 1, 0))
    assert D.is_guest_donation(GUEST_REC, tag71) and not D.is_guest_donation(GUEST_REC, 0)
    hyp_meta = (D.TYPE_DONATION << 60) | GUEST_META << 4 | D.PKVM_ID_HYP << 1
    for desc, v71, v612 in ((GUEST_REC, [], ["S2-OWN"]),
                            (GUEST_REC & ~(0xFFFF << 4), ["S2-OWN"], ["S2-OWN"]),  # handle 0
                            ((D.TYPE_DONATION << 60) | D.PKVM_ID_GUEST << 1, ["S2-OWN"], ["S2-OWN"]),
                            (hyp_meta, ["S2-OWN"], ["S2-OWN"]),                 # HYP: no metadata
                            (hyp_meta + (1 << 2), ["S2-OWN"], ["S2-OWN"]),      # owner 3: no writer
                            ((D.TYPE_DONATION << 60) | GUEST_META << 4, ["S2-OWN"], ["S2-OWN"]),  # host
                            (GUEST_META << 4 | D.PKVM_ID_GUEST << 1, ["S2-OWN"], ["S2-OWN"])):   # untyped
        s = _s2()
        s.page(0x1000, 0x8000_0000)
        s.set(0x2000, 3, desc)
        for version, want in ((V71, v71), (V612, v612)):
            raw = _raw(s, version)
            got = [i for i in ids(spec.check_state(raw)) if i == "S2-OWN"]
            assert got == want, (hex(desc), version, got)
            assert [v.inv for v in own_violations_plain(load_state(raw))] == want


def _annotate_step(pre, post, version, ret, **args):
    return ids(spec.check_step(_raw(pre, version), step("annotate", ret, **args),
                               _raw(post, version)))


def test_c_annotate_contract():
    pre = _s2()
    pre.page(0x1000, 0x8000_0000)
    post = pre.copy()
    post.set(0x2000, 3, POISON)
    args = dict(addr=0x2000, size=0x1000, annotation=0)
    assert _annotate_step(pre, post, V71, 0, type=D.TYPE_POISONED, **args) == []
    # the wrong type stored, or the right one not stored
    assert _annotate_step(pre, post, V71, 0, type=4, **args) == ["C-ANNOTATE"]
    assert _annotate_step(pre, pre, V71, 0, type=D.TYPE_POISONED, **args) == ["C-ANNOTATE"]
    # refused inputs: -EINVAL and nothing changed
    for t, a in ((0, 0), (D.TYPE_LOCKED, 0), (17, 0), (D.TYPE_POISONED, 1)):
        a_args = dict(args, annotation=a)
        assert _annotate_step(pre, pre, V71, -22, type=t, **a_args) == [], (t, a)
        assert _annotate_step(pre, pre, V71, 0, type=t, **a_args) == ["C-ANNOTATE"], (t, a)
    # no such call before 7.1
    assert _annotate_step(pre, post, V612, 0, type=D.TYPE_POISONED, **args) == ["C-ANNOTATE"]


# -- the generator -----------------------------------------------------------------------------

def _annotates(harness_factory, n=3000):
    return [(a["type"], a["annotation"]) for a in drawn_args(harness_factory, n).get("annotate", [])]


def test_annotate_draws_only_for_a_subject_that_has_it():
    from ptspec.proofs.kernel import subject
    assert _annotates(Stage2Harness) == []
    assert _annotates(subject.subject_factory(need_tree("6.12"))) == []
    got = _annotates(subject.subject_factory(need_tree("7.1")))
    assert {t for t, _ in got} == set(S.ANNOTATE_TYPES)
    assert (D.TYPE_DONATION, S.OWNER_RECORD) in got and (D.TYPE_POISONED, 0) in got
    assert (D.TYPE_DONATION, S.GUEST_RECORD) in got and S.GUEST_RECORD == GUEST_REC & D.ANNOT_MASK
    assert any(a & 1 for _, a in got) and any(a >> 60 for _, a in got)     # refused annotations
    # a DONATION record is always one of pKVM's (the hypervisor's, a guest's), stored or refused
    assert all(a & ~(1 | 1 << 63) in (S.OWNER_RECORD, S.GUEST_RECORD)
               for t, a in got if t % 16 == D.TYPE_DONATION)


# -- the C (7.1.5) -------------------------------------------------------------------------------

def _h71(**kw):
    from ptspec.proofs.kernel import subject
    return subject.subject_factory(need_tree("7.1"))(12, 39, arena_pages=512, cmo=True, **kw)


def test_7_1_c_stores_a_guest_donation_record_s2_own_accepts(monkeypatch):
    """7.1.5's annotate stores pKVM's guest record as given (C-ANNOTATE); S2-OWN accepts it, and
    without the guest record in the statement the same step is an S2-OWN violation."""
    h = _h71()
    assert h.step("map", addr=0x200000, size=0x4000, phys=0x4000200000, prot=6) == (0, [])
    args = dict(addr=0x201000, size=0x1000, type=D.TYPE_DONATION, annotation=S.GUEST_RECORD)
    assert h.step("annotate", **args) == (0, [])
    assert h.pgt.get_leaf(0x201000)[1] == GUEST_REC
    monkeypatch.setattr(D, "is_guest_donation", lambda desc, tag: False)
    h = _h71()
    assert h.step("map", addr=0x200000, size=0x4000, phys=0x4000200000, prot=6) == (0, [])
    assert "S2-OWN" in ids(h.step("annotate", **args)[1])


def test_7_1_annotate_inputs_on_the_c():
    h = _h71()
    assert h.step("map", addr=0x200000, size=0x4000, phys=0x4000200000, prot=6) == (0, [])
    # refused: type 0, LOCKED, annotation bit 0 or bits 63:60; nothing changed (C-ANNOTATE)
    for t, a in ((0, 0), (1, 0), (3, 1), (3, 1 << 60), (2, 1 << 63 | 2)):
        assert h.step("annotate", addr=0x201000, size=0x1000, type=t, annotation=a) == (-22, [])
    # stored: POISONED over a valid page, another type, a DONATION owner record; then map over a
    # POISONED page and unmap one: the annotation is replaced / cleared like an owner record
    assert h.step("annotate", addr=0x201000, size=0x2000, type=3, annotation=0) == (0, [])
    assert h.pgt.get_leaf(0x201000)[1] == POISON
    assert h.step("annotate", addr=0x300000, size=0x1000, type=15, annotation=0x40) == (0, [])
    assert h.step("annotate", addr=0x301000, size=0x1000, type=2, annotation=2) == (0, [])
    assert h.step("map", addr=0x201000, size=0x1000, phys=0x4000201000, prot=6) == (0, [])
    assert h.step("unmap", addr=0x202000, size=0x1000) == (0, [])
    assert h.pgt.get_leaf(0x202000)[1] == 0
    assert h.step("unmap", addr=0x300000, size=0x2000) == (0, [])
    assert h.findings == {} and h.violations == []
    # set_owner's owner 0 and ids above 1 are no annotate call on 7.1 (skipped), id 1 is DONATION
    assert h.step("set_owner", addr=0x400000, size=0x1000, owner_id=0) == (None, [])
    assert h.step("set_owner", addr=0x400000, size=0x1000, owner_id=2) == (None, [])
    assert h.step("set_owner", addr=0x400000, size=0x1000, owner_id=1) == (0, [])
    assert h.pgt.get_leaf(0x400000)[1] == OWNER1
    assert any(ln.startswith("pgt.annotate(0x201000, 0x2000, mc, 3, 0x0)") for ln in h.lines)
    from ptspec.proofs.kernel import check
    text = check.c_test_body(h.trace, shape=h.tree.shape)
    assert "kvm_pgtable_stage2_annotate(pgt, 0x201000, 0x2000, mc, 3, 0);" in text
    assert "kvm_pgtable_stage2_annotate(pgt, 0x400000, 0x1000, mc, " \
           "KVM_HOST_INVALID_PTE_TYPE_DONATION, 2);" in text


@pytest.mark.parametrize("t,a,stored,left", [
    (18, 2, OWNER1, []),                          # DONATION, and a well-formed owner record
    (19, 0, POISON, []),                          # POISONED
    (16, 2, 0x2, ["S2-OWN"]),                     # untyped: no 7.1 writer makes one
    (17, 0, 1 << 60, ["S2-LOCKED", "S2-OWN"]),    # the locked marker, left for good
])
def test_types_past_the_field_are_the_catalogued_truncation(t, a, stored, left):
    h = _h71()
    ret, found = h.step("annotate", addr=0x200000, size=0x1000, type=t, annotation=a)
    assert ret == 0 and set(h.findings) == {"annotate-type-truncated"}
    assert h.pgt.get_leaf(0x200000)[1] == stored
    assert sorted(set(ids(found))) == left


def test_planted_annotate_bugs_are_caught_by_their_sequences():
    from ptspec.proofs.kernel import planted_mainline as PM
    real = need_tree("7.1")
    import tempfile
    from pathlib import Path
    for rid, want in (("annotate-locked-accepted", {"C-ANNOTATE", "S2-LOCKED", "S2-OWN"}),
                      ("annotate-mask-unchecked", {"C-ANNOTATE"}),
                      ("poison-uncounted", {"S2-RC"})):
        rv = PM.BY_ID[rid]
        assert set(rv.expect) <= want | {"S2-BA"}
        with tempfile.TemporaryDirectory() as d:
            scratch = PM.scratch_tree(rv, real, Path(d) / "t")
            got, _ = PM.run_sequence(rv, scratch)
        assert want <= set(ids(got)), (rid, ids(got))
        assert PM.run_sequence(rv, real)[0] == []


def test_planted_bugs_are_caught_only_with_annotate_driven(tmp_path):
    """annotate-locked-accepted and poison-uncounted on a scratch 7.1 tree: the lock-step refutes
    them; the same lock-step without the annotate rule (the generator before C-ANNOTATE) does
    not."""
    from ptspec.proofs.kernel import check
    from ptspec.proofs.kernel import planted_mainline as PM
    from ptspec.proofs.kernel import subject
    from ptspec.proofs.runner import budgets
    quick = budgets.budget("quick")
    for rid, vid in (("annotate-locked-accepted", "C-ANNOTATE"), ("poison-uncounted", "S2-RC")):
        scratch = PM.scratch_tree(PM.BY_ID[rid], need_tree("7.1"), tmp_path / rid)
        r = check.check_geometry(scratch, "4k-39", quick, 0)
        assert r.status == "refuted" and vid in r.detail, (rid, r.detail)

        base = subject.subject_factory(scratch)

        class Blind(base):
            @classmethod
            def program_rules(cls, opt):
                return [f for f in base.program_rules(opt) if f.__name__ != "annotate"]
        r = check.check_geometry(scratch, "4k-39", quick, 0, harness=Blind)
        assert r.status == "passed", (rid, r.detail)


# -- KVM_PGTABLE_S2_AS_S1 ------------------------------------------------------------------------

def test_as_s1_memattr_for_every_prot_and_the_same_refusals():
    R, W, X, DEV, NC = D.PROT_R, D.PROT_W, D.PROT_X, D.PROT_DEVICE, D.PROT_NORMAL_NC
    for fwb, want in ((False, 0xF), (True, 0x7)):
        for prot in (R | W, R | W | DEV, R | NC, R | X):
            attrs = D.prot_attrs(prot, fwb, True, True, as_s1=True)
            assert attrs is not None and D.leaf_attrs(attrs).memattr == want, (hex(prot), fwb)
            assert D.is_cacheable(attrs, fwb, as_s1=True)
        for prot in (R | X | DEV, R | X | NC, R | DEV | NC, R | D.PROT_PX):
            assert D.prot_attrs(prot, fwb, True, True, as_s1=True) is None, hex(prot)
    # with FWB a device leaf of an AS_S1 table is not "normal", yet cacheable there
    dev = D.prot_attrs(R | DEV, True, as_s1=True)
    assert not D.is_cacheable(dev, True) and D.is_cacheable(dev, True, as_s1=True)


def test_c_map_reads_as_s1_from_the_state():
    from test_spec_builder import leaf
    pre = _s2()
    post_s1, post_dev = pre.copy(), pre.copy()
    post_s1.page(0x2000, 0x8000_2000)                        # MemAttr 0xf (normal = AS_S1, no FWB)
    post_dev.set(0x2000, 3, leaf(0x8000_2000, 3, 12, device=True))
    args = dict(addr=0x2000, size=0x1000, phys=0x8000_2000, prot=D.PROT_R | D.PROT_W | D.PROT_DEVICE,
                force_pte=False)

    def judge(post, as_s1):
        raw_pre, raw_post = _raw(pre, V71), _raw(post, V71)
        raw_pre["as_s1"] = raw_post["as_s1"] = as_s1
        return ids(spec.check_step(raw_pre, step("map", 0, **args), raw_post))
    assert judge(post_s1, True) == [] and judge(post_dev, False) == []
    assert judge(post_dev, True) == ["C-MAP"] and judge(post_s1, False) == ["C-MAP"]


def test_as_s1_only_on_16k_47_of_a_tree_that_has_it():
    from ptspec.proofs.kernel import subject
    h = subject.subject_factory(need_tree("7.1"))(14, 47, arena_pages=512, cmo=True)
    assert h.pgt.snapshot(False)["as_s1"] and "flags=4" in h.make_source
    # a device map: stage 1 decides (MemAttr 0xf without FWB), and it is cacheable: D-cache cleaned
    ret, found = h.step("map", addr=0x200000, size=0x4000, phys=0x4000200000, prot=0xe)
    assert (ret, found) == (0, []) and D.leaf_attrs(h.pgt.get_leaf(0x200000)[1]).memattr == 0xF
    assert any(ln.startswith("pgt.map(0x200000") for ln in h.lines)
    assert not subject.subject_factory(need_tree("7.1"))(14, 40).pgt.snapshot(False)["as_s1"]
    h612 = subject.subject_factory(need_tree("6.12"))(14, 47, arena_pages=512)
    assert not h612.pgt.snapshot(False)["as_s1"]
    with pytest.raises(ValueError, match="AS_S1"):
        subject.subject_factory(need_tree("6.12"))(12, 39, flags=4)


def test_as_s1_with_fwb_on_the_c():
    """AS_S1 and FWB together (no geometry has both): 7.1.5 writes MT_S2_FWB_AS_S1 (7) for normal,
    device and non-cacheable maps alike; every leaf is cacheable to stage2_pte_cacheable (it
    compares with the AS_S1 encoding), so pgtable.c calls the D-cache hook for each (with FWB the
    host's hook does nothing: no clean is owed, an extra one is harmless) and the I-cache hook for
    the executable map; the spec judges each step clean, and the same map read as a plain FWB
    table (as_s1 off in both states) refutes C-MAP."""
    from ptspec.proofs.kernel import subject
    R, W, X, DEV, NC = D.PROT_R, D.PROT_W, D.PROT_X, D.PROT_DEVICE, D.PROT_NORMAL_NC

    def make():
        return subject.subject_factory(need_tree("7.1", 14))(14, 47, arena_pages=512, cmo=True,
                                                              fwb=True)
    h = make()
    raw = h.raw_state()
    assert raw["as_s1"] and raw["has_fwb"] and "fwb=True" in h.make_source
    events = []
    for addr, prot in ((0x200000, R | W), (0x400000, R | DEV), (0x600000, R | NC), (0x800000, R | X)):
        ret, found = h.step("map", addr=addr, size=0x4000, phys=0x4000000000 + addr, prot=prot)
        assert (ret, found) == (0, []), (hex(prot), found)
        assert D.leaf_attrs(h.pgt.get_leaf(addr)[1]).memattr == 0x7, hex(prot)
        events += [ev[0] for ev in h.state.tlb_log]
    assert events == ["dcache"] * 4 + ["icache"], events
    h = make()
    pre = h.raw_state()
    args = dict(addr=0x200000, size=0x4000, phys=0x4000200000, prot=R | W)
    assert h.step("map", **args)[1] == []
    post = h.raw_state()
    pre["as_s1"] = post["as_s1"] = False
    assert "C-MAP" in ids(spec.check_step(pre, step("map", 0, force_pte=False, **args), post))


def test_planted_as_s1_bug_is_caught_only_with_as_s1_set(tmp_path):
    from ptspec.proofs.kernel import check
    from ptspec.proofs.kernel import planted_mainline as PM
    from ptspec.proofs.kernel import subject
    from ptspec.proofs.runner import budgets
    rv = PM.BY_ID["as-s1-device-forced"]
    scratch = PM.scratch_tree(rv, need_tree("7.1"), tmp_path / "t")
    assert ids(PM.run_sequence(rv, scratch)[0]) == ["C-MAP"]
    assert PM.run_sequence(rv, need_tree("7.1"))[0] == []
    quick = budgets.budget("quick")
    r = check.check_geometry(scratch, "16k-47", quick, 0)
    assert r.status == "refuted" and r.detail.startswith("16k-47: C-MAP"), r.detail

    class NoAsS1(subject.subject_factory(scratch)):
        AS_S1_GEOMETRIES = set()
    r = check.check_geometry(scratch, "16k-47", quick, 0, harness=NoAsS1)
    assert r.status == "passed", r.detail
