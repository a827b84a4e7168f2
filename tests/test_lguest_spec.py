"""spec.lguest_*: the walks, the state loader, and each invariant and contract on hand-made states."""

import copy
import json

import pytest

from ptspec.spec.lguest.check import LG_IDS, lguest_check_state, lguest_check_step, lguest_explain
from ptspec.spec.lguest.state import load_lguest_state
from ptspec.spec.lguest.walk import guest_allows, guest_walk, shadow_translations
from ptspec.spec.stage2.state import StateError
from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest.harness import LguestHarness


def booted(fmt="2level"):
    h = LguestHarness(fmt, npgdirs=2, rng_seed=1, coherent=True)
    G.boot(h, G.GuestLayout(fmt))
    h.step("fault", vaddr=0x1000, errcode=2)
    h.step("run", host_cpu=0)
    assert not h.violations and not h.dead
    return h, copy.deepcopy(h.raw)


def inv_ids(raw, coherent=False):
    return {v.inv for v in lguest_check_state(raw, coherent=coherent)}


def cur_root(raw):
    return raw["pgdirs"][raw["cpu_pgd"]]["pgdir"]


def leaf_page(raw, va):
    """(table key, index) of the shadow PTE of va in the current pgdir (2-level)."""
    root = raw["tables"][str(cur_root(raw))]
    pde = root[str(va >> 22)]
    return str(pde & ~0xFFF), str((va >> 12) & 1023)


@pytest.mark.parametrize("fmt", ["2level", "pae"])
def test_clean_state_and_json_round_trip(fmt):
    _, raw = booted(fmt)
    assert lguest_check_state(raw, coherent=True) == []
    text = json.dumps(raw)
    assert lguest_check_state(json.loads(text), coherent=True) == []
    hexed = json.loads(text)
    hexed["switcher_addr"] = hex(hexed["switcher_addr"])
    assert load_lguest_state(hexed).switcher_addr == raw["switcher_addr"]


def test_guest_walk_both_formats():
    for fmt in ("2level", "pae"):
        _, raw = booted(fmt)
        st = load_lguest_state(raw)
        L = G.GuestLayout(fmt)
        gw = guest_walk(st, L.pgdirs[0], G.KERNEL_ADDRESS + 0x1000)
        assert gw.ok and gw.frame == L.data_frames[1] and gw.rw and not gw.us
        assert guest_allows(gw, True, False) and not guest_allows(gw, False, True)
        gw = guest_walk(st, L.pgdirs[0], 0x5000)
        assert not gw.ok and "not present" in gw.reason
        gw = guest_walk(st, 0x1F000 - 2, 0)                      # unaligned, straddling, in memory
        assert gw.ok is False
        assert not guest_walk(st, 0x20000, 0).ok                 # root outside guest memory
        lin = guest_walk(st, 0, 0x3000, linear=True)
        assert lin.ok and lin.frame == 3 and lin.rw and not lin.us


def test_read_guest_unaligned():
    _, raw = booted()
    st = load_lguest_state(raw)
    st.guest_mem = {0x100: 0x44332211, 0x104: 0x88776655}
    assert st.read_guest(0x102, 4) == 0x66554433
    assert st.read_guest(0x1F_FFE, 4) is None


def test_lg_shadow_catches_foreign_frame_global_and_incoherence():
    _, raw = booted()
    key, idx = leaf_page(raw, 0x1000)
    bad = copy.deepcopy(raw)
    bad["tables"][key][idx] = (0x800 << 12) | 0x67                # a switcher page, at a guest va
    assert "LG-SHADOW" in inv_ids(bad)
    bad = copy.deepcopy(raw)
    bad["tables"][key][idx] |= 0x100
    assert "LG-SHADOW" in inv_ids(bad)
    bad = copy.deepcopy(raw)
    L = G.GuestLayout("2level")
    addr = L.pte_addr(0, 0x1000)
    bad["guest_mem"][str(addr)] = bad["guest_mem"][str(addr)] & ~0x40   # guest PTE no longer dirty
    assert "LG-SHADOW" not in inv_ids(bad)
    assert "LG-SHADOW" in inv_ids(bad, coherent=True)


def test_lg_rc_catches_missing_and_extra_references_and_leaks():
    _, raw = booted()
    key, idx = leaf_page(raw, 0x1000)
    hpfn = raw["tables"][key][idx] >> 12
    bad = copy.deepcopy(raw)
    bad["refs"][str(hpfn)] += 1
    assert "LG-RC" in inv_ids(bad)
    bad = copy.deepcopy(raw)
    del bad["tables"][key][idx]
    assert "LG-RC" in inv_ids(bad)                               # reference without PTE
    bad = copy.deepcopy(raw)
    bad["tables"][str(0x1F00_0000)] = {}
    assert "LG-RC" in inv_ids(bad)                               # leaked table page


def test_lg_switcher():
    _, raw = booted()
    sw = raw["switcher_addr"]
    key, idx = leaf_page(raw, sw)
    bad = copy.deepcopy(raw)
    bad["tables"][key][idx] |= 0x2                               # switcher writable
    assert "LG-SWITCHER" in inv_ids(bad)
    bad = copy.deepcopy(raw)
    del bad["tables"][key][idx]                                  # switcher gone
    bad["refs"][str(raw["switcher_pages"][0])] -= 1
    assert inv_ids(bad) == {"LG-SWITCHER"}
    bad = copy.deepcopy(raw)
    k2, i2 = leaf_page(raw, sw + 0x8000)                          # beyond the switcher pages
    bad["tables"][k2][i2] = (raw["guest_frames"][3] << 12) | 0x63
    bad["refs"][str(raw["guest_frames"][3])] = 1
    assert "LG-SWITCHER" in inv_ids(bad)
    bad = copy.deepcopy(raw)
    bad["pgdirs"][raw["cpu_pgd"]]["last_host_cpu"] = 1            # cpu 0's pages but "ran on 1"
    assert "LG-SWITCHER" in inv_ids(bad)


def test_lg_bnd():
    _, raw = booted()
    bad = copy.deepcopy(raw)
    bad["host_errors"] = [["oob", "read of entry 1024 of table 0x1001000"]]
    assert inv_ids(bad) == {"LG-BND"}
    _, praw = booted("pae")
    bad = copy.deepcopy(praw)
    bad["tables"][str(cur_root(praw))]["7"] = 0x1234001
    assert "LG-BND" in inv_ids(bad)


def test_step_contracts_on_hand_made_transitions():
    h, raw = booted()
    L = G.GuestLayout("2level")
    post = copy.deepcopy(raw)
    key, idx = leaf_page(raw, 0x1000)
    del post["tables"][key][idx]
    # a fault that did not map the page it says it fixed
    step = {"op": "fault", "args": {"vaddr": 0x1000, "errcode": 2}, "ret": True}
    pre = copy.deepcopy(raw)
    pre["tables"][key].pop(idx)
    assert {v.inv for v in lguest_check_step(pre, step, pre)} == {"LG-C-DEMAND"}
    # set_pgd out of bounds accepted
    step = {"op": "set_pgd", "args": {"gpgdir": L.pgdirs[0], "idx": 1024}, "ret": None}
    assert {v.inv for v in lguest_check_step(raw, step, raw)} == {"LG-BND"}
    # flush that leaves a user page
    step = {"op": "flush_user", "args": {}, "ret": None}
    assert {v.inv for v in lguest_check_step(raw, step, raw)} == {"LG-C-FLUSH"}
    # set_pte touching another page
    step = {"op": "set_pte", "args": {"gpgdir": L.pgdirs[0], "vaddr": 0x5000, "gpte": 0}, "ret": None}
    assert {v.inv for v in lguest_check_step(raw, step, post)} == {"LG-C-SET-PTE"}
    # guest memory write that changes the shadow
    step = {"op": "guest_write", "args": {"addr": 0, "value": 0}, "ret": None}
    assert {v.inv for v in lguest_check_step(raw, step, post)} == {"LG-C-OTHER"}


def test_load_errors_name_the_place():
    _, raw = booted()
    for mutate, text in [(lambda r: r.pop("pgdirs"), "pgdirs"),
                         (lambda r: r.__setitem__("format", "3level"), "format"),
                         (lambda r: r["tables"].__setitem__("4097", {}), "page aligned"),
                         (lambda r: r["guest_mem"].__setitem__("2", 1), "aligned"),
                         (lambda r: r.__setitem__("guest_frames", [1]), "guest_frames"),
                         (lambda r: r["pgdirs"][0].__setitem__("switcher_mapped", 1), "switcher_mapped")]:
        bad = copy.deepcopy(raw)
        mutate(bad)
        with pytest.raises(StateError, match=text):
            load_lguest_state(bad)
    with pytest.raises(StateError):
        load_lguest_state({"kind": "arm64-stage2"})


def test_every_id_is_explained():
    for cid in LG_IDS:
        assert lguest_explain(cid).strip()
    with pytest.raises(KeyError):
        lguest_explain("LG-NOPE")


def test_shadow_translations_reports_dangling_tables():
    _, raw = booted()
    st = load_lguest_state(raw)
    problems = []
    assert shadow_translations(st, cur_root(raw), problems) and problems == []
    bad = copy.deepcopy(raw)
    key, _ = leaf_page(raw, 0x1000)
    del bad["tables"][key]
    assert "LG-RC" in inv_ids(bad)
