"""The program builders behind z3 and CrossHair refutations (proofs/engines/minimize.py
``judged_program``, proofs/stage2/z3_programs.py, proofs/stage2/crosshair_programs.py): a call that
raises still ends in a failed check, and CrossHair's refuting call is read back exactly."""

import pytest

from ptspec.impl.pgtable import stage2_map
from ptspec.proofs.engines.minimize import judged_program
from ptspec.proofs.stage2 import crosshair_programs as CP
from ptspec.proofs.stage2 import crosshair_targets as T
from ptspec.proofs.stage2 import z3_lemmas


def test_a_raising_call_fails_the_programs_check():
    prog = judged_program(["import math"], {"x": -4}, ["got = math.isqrt(x)"],
                          "assert got == 2, got")
    assert prog.splitlines()[-1] == "assert got == 2, got"
    with pytest.raises(AssertionError, match="raised ValueError"):
        exec(prog, {})
    assert "x = 0x10" in judged_program([], {"x": 16}, ["pass"], "assert True")


def test_a_z3_path_that_raises_is_refuted_with_a_judging_program(monkeypatch):
    def raising(old, new):
        if old & 1 and not new & 1:
            raise KeyError("planted: no descriptor")
        return True if not (old & 1 and new & 1) else (old ^ new) & ~0xC0 & (2**64 - 1 - (1 << 54)) != 0
    monkeypatch.setattr(stage2_map, "stage2_pte_needs_update", raising)
    out = z3_lemmas.lemma_needs_update(50_000_000, 20_000)
    assert out.status == "refuted", out
    cex = out.counterexample
    assert "raised" in cex and "KeyError" in cex["raised"], cex
    prog = cex["program"]
    with pytest.raises(AssertionError, match="raised KeyError"):
        exec(prog, {})
    monkeypatch.undo()
    exec(prog, {})


def test_model_values_reads_inputs_only():
    cex = {"addr": "0x1000", "thp": "True", "entry": "0x1 -> 0x2", "violated": ["x"],
           "path": "TF", "case": "4K level 3"}
    assert z3_lemmas.model_values(cex) == {"addr": 0x1000, "thp": True}


def test_crosshair_call_is_read_back_by_parameter():
    assert CP.call_args(T.walk_last_level, "false when calling walk_last_level(510, 3) "
                                           "(which returns [0, 1, 2])") == {"first": 510,
                                                                             "npages": 3}
    assert CP.call_args(T.walk_last_level, "IndexError: 3 when calling "
                                           "walk_last_level(first=1, npages=2)") == {"first": 1,
                                                                                     "npages": 2}
    assert CP.call_args(T.walk_last_level, "nothing here") is None
    assert CP.contract_program(T.walk_last_level, "calling walk_last_level(x, 3)", "_") is None
