"""lg.units.* obligations pass on the clean tree and fail on planted bugs; the new spec rules bite."""

import pytest

from ptspec.impl.lguest import Lguest
from ptspec.proofs.lguest import checks_units as U
from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest.harness import LguestHarness
from ptspec.proofs.lguest.planted import planted_lguest


def _ctx(profile):
    from ptspec.proofs.runner import budgets as profiles
    from ptspec.proofs.runner import registry
    return registry.Context(profile, 0, profiles.budget(profile))


def test_clean_tree_passes():
    assert U.scenarios(_ctx("quick")).status == "passed"
    assert U.model(_ctx("quick")).status == "passed"


@pytest.mark.parametrize("bug, want", [("pa-faults-in", "LG-C-OTHER"), ("stack-not-pinned", "LG-C-STACK"),
                                       ("demand-ignores-write", "LG-C-DEMAND")])
def test_scenarios_catch_planted(bug, want):
    with planted_lguest(bug):
        r = U.scenarios(_ctx("quick"))
    assert r.status == "refuted"
    assert any(want in v for v in r.counterexample["violations"]), r.counterexample["violations"]


def _booted(fmt):
    h = LguestHarness(fmt)
    G.boot(h, G.GuestLayout(fmt))
    return h


def test_nx_is_justified_only_by_a_non_nx_pte():
    h = _booted("pae")
    L = G.GuestLayout("pae")
    gpte = (L.data_frames[5] << 12) | 0x67 | (1 << 63)
    h.step("guest_write", addr=L.pte_addr(0, 0x1000), value=gpte)
    h.step("set_pte", gpgdir=L.pgdirs[0], vaddr=0x1000, gpte=gpte)
    h.step("fault", vaddr=0x1000, errcode=0)
    assert not h.violations
    # the shadow drops NX: executable where the guest said NX
    lg = h.lg
    words = lg.host.tables
    hits = False
    for t in words.values():
        for i, w in list(t.items()):
            if w >> 63 and (w >> 12) & 0xFFFFFFFF == 0x2000 + L.data_frames[5]:
                t[i] = w & ~(1 << 63)
                hits = True
    assert hits
    from ptspec.spec.lguest.check import lguest_check_state
    assert "LG-SHADOW" in {v.inv for v in lguest_check_state(lg.raw_state(), coherent=True)}


def test_switcher_percpu_pages_are_nx_with_pae():
    from ptspec.spec.lguest.check import lguest_check_state
    h = _booted("pae")
    h.step("run", host_cpu=0)
    raw = h.lg.raw_state()
    assert not lguest_check_state(raw)
    for t in raw["tables"].values():
        for k, w in t.items():
            if (w >> 12) & 0xFFFFFFFF == 0x900:
                t[k] = w & ~(1 << 63)
    assert "LG-SWITCHER" in {v.inv for v in lguest_check_state(raw)}


def test_an_unjustified_kill_is_a_violation():
    from ptspec.spec.lguest.check import lguest_check_step
    h = _booted("2level")
    pre = h.lg.raw_state()
    post = dict(pre, dead="killed for no reason")
    step = {"op": "fault", "args": {"vaddr": 0x1000, "errcode": 0}, "ret": False,
            "out": {"fail_alloc": 0, "fail_gup": 0}}
    assert "LG-C-DEMAND" in {v.inv for v in lguest_check_step(pre, step, post)}
    step["out"] = {"fail_alloc": 1, "fail_gup": 0}          # a pending failure justifies it
    assert not lguest_check_step(pre, step, post)


def test_guest_pa_answer_is_checked():
    from ptspec.spec.lguest.check import lguest_check_step
    h = _booted("2level")
    pre = h.lg.raw_state()
    want = h.lg.pa(0x1234)
    assert want & 0xFFF == 0x234
    step = {"op": "pa", "args": {"vaddr": 0x1234}, "ret": want ^ 0x1000, "out": {}}
    assert "LG-C-OTHER" in {v.inv for v in lguest_check_step(pre, step, pre)}
    step["ret"] = want
    assert not lguest_check_step(pre, step, pre)


def test_second_lguest_init_kills():
    lg = Lguest("pae")
    lg.init()
    lg.guest_data_init(0)
    assert lg.dead is None
    lg.guest_data_init(0)
    assert lg.dead
