"""Layouts whose huge blocks cross the memslot's start and end come up in every profile.

mmu.hypothesis.layouts runs a fixed program on each of EDGE_LAYOUTS (proofs/mmu/layouts.py) before
its random runs, so the block-end check of fault_supports_stage2_huge_mapping is exercised even by
the quick profile's few runs.
"""

import pytest

from ptspec.proofs.mmu.layouts import EDGE_LAYOUTS, edge_ipas, make_layout
from ptspec.proofs.mmu.lockstep import edge_programs
from ptspec.proofs.mutation import mutate
from ptspec.proofs.runner import registry

# fault_supports_stage2_huge_mapping's block-end test `block + map_size <= uaddr_end` with `+` ->
# `-`: the block's end is no longer compared with the memslot's end (the check is dropped)
BLOCK_END = "mmu.fault:fault_supports_stage2_huge_mapping:arith9"
# `and` -> `or`: either bound alone lets the block through
EITHER_BOUND = "mmu.fault:fault_supports_stage2_huge_mapping:bool0"


def _mutant(mid):
    return next(m for m in mutate.enumerate_mutants(["ptspec.impl.mmu.fault"]) if m.id == mid)


@pytest.mark.parametrize("name", sorted(EDGE_LAYOUTS))
def test_edge_layouts_cross_both_ends_of_the_slot(name):
    lay = make_layout(**EDGE_LAYOUTS[name])
    b, s = lay["block"], lay["slots"][0]
    lo, hi = s["gpa"], s["gpa"] + s["size"]
    assert lo % b and hi % b, "the slot must start and end inside a block"
    assert (s["gpa"] - s["uaddr"]) % b == 0, "guest and host congruent modulo the block"
    v = lay["vmas"][0]
    assert v["start"] <= s["uaddr"] - s["uaddr"] % b
    assert s["uaddr"] + s["size"] + (-(s["uaddr"] + s["size"]) % b) <= v["start"] + v["size"]
    ipas = edge_ipas(lay)
    assert lo in ipas and hi - (1 << lay["page_shift"]) in ipas


def test_edge_programs_are_clean_on_the_kernel_model():
    counter = {"runs": 0, "steps": 0}
    assert edge_programs(counter) is None
    assert counter["runs"] == len(EDGE_LAYOUTS) and counter["steps"] >= 4 * len(EDGE_LAYOUTS)


@pytest.mark.parametrize("mid", [BLOCK_END, EITHER_BOUND])
def test_quick_profile_kills_the_dropped_block_end_check(mid):
    assert registry.load_all() == []
    ob = registry.get("mmu.hypothesis.layouts")
    assert registry.run_obligation(ob, "quick", 0).status == "passed"
    m = _mutant(mid)
    with mutate.applied(m):
        r = registry.run_obligation(ob, "quick", 0)
    assert r.status == "refuted", (mid, r)
    cx = r.counterexample
    assert any(v.startswith("MS ") and "outside memslot" in v for v in cx["violations"]), cx
    assert "h.step('access'" in cx["ops"]
