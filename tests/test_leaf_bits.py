"""S2-BA's leaf bits: a stage-2 leaf keeps clear every bit KVM never writes (11, 52:48, 63:59, and
53 without FEAT_XNX), so a dump (``ptspec check-state``) with a stray contiguous hint, DBM or PBHA
bit is refuted even where no step contract looks at it."""

import json

import pytest

from ptspec import spec
from ptspec.impl.pgtable import pte as P
from ptspec.impl.pgtable import stage2_map
from ptspec.proofs.cli import main as cli
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2.harness import Stage2Harness
from ptspec.spec.arch import descriptor as D

NEVER = "which KVM never writes in a stage-2 leaf"


def _raw_with_leaves():
    """A 4K/40 table with a 2M block and a 4K page (no violation), its leaves' (page, slot) list."""
    h = Stage2Harness(12, 40)
    h.step("map", addr=0x200000, size=0x200000, phys=0x40200000, prot=7)
    h.step("map", addr=0x600000, size=0x1000, phys=0x40600000, prot=3)
    assert not h.violations
    raw = h.raw_state()
    raw["pages"] = {pa: list(words) for pa, words in raw["pages"].items()}
    st = spec.load_state(raw)
    leaves = [(pa, i) for pa, words in raw["pages"].items() for i, w in enumerate(words)
              if w & 1 and not D.is_table(w, st.walk().tables[pa][0])]
    assert len(leaves) == 2
    return raw, leaves


def _never_written_reports(raw):
    return [str(v) for v in spec.check_state(spec.load_state(raw)) if NEVER in str(v)]


@pytest.mark.parametrize("has_xnx", [False, True])
def test_each_bit_kvm_never_writes_is_refuted_and_no_other(has_xnx):
    mask = D.s2_leaf_unwritten(has_xnx)
    assert mask >> 53 & 1 == (not has_xnx)
    for bit in range(64):
        raw, leaves = _raw_with_leaves()
        raw["has_xnx"] = has_xnx
        for pa, i in leaves:
            raw["pages"][pa][i] |= 1 << bit
        found = _never_written_reports(raw)
        if mask >> bit & 1:
            assert len(found) == 2 and all(v.startswith("S2-BA ") and f"bit(s) {bit}," in v
                                          for v in found), (bit, found)
        else:
            assert found == [], (bit, found)


def test_software_bits_and_the_attribute_fields_stay_free():
    """What KVM does write (MemAttr, S2AP, SH, AF, XN, the software bits pKVM keeps page states
    in) is not this rule's business."""
    allowed = D.MEMATTR_MASK | D.S2AP_R | D.S2AP_W | D.SH_MASK | D.AF | D.XN | D.SW_MASK
    assert allowed & D.s2_leaf_unwritten() == 0


def test_a_dump_with_a_contiguous_hint_fails_check_state(tmp_path, capsys):
    raw, leaves = _raw_with_leaves()
    pa, i = leaves[1]
    raw["pages"][pa][i] |= D.CONTIGUOUS
    path = tmp_path / "dump.json"
    path.write_text(json.dumps({**raw, "pages": {hex(k): v for k, v in raw["pages"].items()},
                                "refcount": {hex(k): v for k, v in raw["refcount"].items()}}))
    assert cli.main(["check-state", str(path)]) == 1
    out = capsys.readouterr().out
    assert "S2-BA" in out and "bit(s) 52," in out


def test_planted_leaf_with_the_contiguous_bit_is_refuted(monkeypatch):
    """kvm_init_valid_leaf_pte setting bit 52: the lock-step refutes it by S2-BA (the state after the
    map) besides C-MAP (the step), and the spec's state check alone, as on a dump, sees it."""
    real = P.kvm_init_valid_leaf_pte
    monkeypatch.setattr(stage2_map, "kvm_init_valid_leaf_pte",
                        lambda pa, attr, level, ps: real(pa, attr, level, ps) | D.CONTIGUOUS)
    out = lockstep.run_lockstep("4k-39", examples=20, steps=8, seed=0)
    assert out.status == "refuted"
    assert any(v.startswith("S2-BA ") and NEVER in v for v in out.failure.violations), \
        out.failure.violations
    h = Stage2Harness(12, 40, check=False)
    h.step("map", addr=0x200000, size=0x1000, phys=0x40200000, prot=3)
    assert [v.inv for v in spec.check_state(spec.load_state(h.raw_state()))] == ["S2-BA"]


def test_hyp_leaf_bits_kvm_never_writes_are_refuted_by_s1_ba():
    """The EL2 stage-1 rule: bits 11, 52:51, 49:48 and 63:59 refuted; GP (50) and PXN (53), which
    6.x / 7.1 write at EL2, and the software bits stay free."""
    from ptspec.proofs.hyp.lockstep import HypHarness
    for bit in range(64):
        h = HypHarness(12, 48)
        assert h.step("map", addr=0x200000, size=0x1000, phys=0x80000000, prot=6)[0] == 0   # R|W
        raw = h.raw_state()
        raw["pages"] = {pa: list(words) for pa, words in raw["pages"].items()}
        walk = spec.load_state(raw).walk()
        leaf = [(pa, i) for pa, t in walk.tables.items() if t[0] == 3
                for i, w in enumerate(raw["pages"][pa]) if w & 1]
        assert len(leaf) == 1
        pa, i = leaf[0]
        raw["pages"][pa][i] |= 1 << bit
        found = [str(v) for v in spec.check_state(spec.load_state(raw)) if "never writes" in str(v)]
        if D.HYP_LEAF_UNWRITTEN >> bit & 1:
            assert len(found) == 1 and found[0].startswith("S1-BA ") and "EL2 stage-1" in found[0], \
                (bit, found)
        else:
            assert found == [], (bit, found)


def test_z3_refutes_a_hyp_prot_attr_with_the_contiguous_bit(monkeypatch):
    """s2.proof.prot-attr's hyp case: hyp_set_prot_attr setting bit 52 is refuted, and the pasted
    program fails on the planted code and passes on the real one."""
    from ptspec.proofs.stage2 import z3_lemmas
    real = P.hyp_set_prot_attr

    def bad(prot):
        ret, attr = real(prot)
        return ret, (attr | D.CONTIGUOUS if ret == 0 else attr)
    monkeypatch.setattr(P, "hyp_set_prot_attr", bad)
    out = z3_lemmas.lemma_prot_attr(5_000_000, None)
    assert out.status == "refuted" and out.counterexample["case"] == "hyp"
    program = out.counterexample["program"]
    with pytest.raises(AssertionError, match="S1-BA"):
        exec(program, {})
    monkeypatch.setattr(P, "hyp_set_prot_attr", real)
    exec(program, {})
