"""spec/mmu/: MS, DIRTY and the step checks flag hand-made bad raw states, and accept good ones."""

import copy

import pytest

from ptspec.proofs.mmu.harness import VmHarness
from ptspec.proofs.mmu.layouts import make_layout
from ptspec.spec.mmu.hyp_va import check_hyp_private, hyp_va_fits
from ptspec.spec.mmu.invariants import check_mmu_state
from ptspec.spec.mmu.state import MmuView
from ptspec.spec.mmu.contracts import check_mmu_step
from ptspec.spec.stage2.state import StateError

G = 0x1_0000_0000


def ids(vs):
    return {str(v).split()[0] for v in vs}


@pytest.fixture
def thp_state():
    h = VmHarness(make_layout(backing="thp", nblocks=1))
    h.step("access", ipa=G + 0x1000, kind="write")
    raw = h.raw_state()
    assert check_mmu_state(raw) == []
    return raw


def _block_pte(raw):
    for pa, words in raw["pages"].items():
        for i, d in enumerate(words):
            if d & 3 == 1:
                return pa, i, d
    raise AssertionError("no block")


def test_memslot_beyond_ipa_space(thp_state):
    raw = copy.deepcopy(thp_state)
    raw["mmu"]["memslots"][0]["base_gfn"] = (1 << 40 >> 12) - 1
    assert "MS" in ids(check_mmu_state(raw))


def test_block_over_small_host_pages(thp_state):
    raw = copy.deepcopy(thp_state)
    hm = raw["mmu"]["host_map"]
    hm[0][3] = "pte"                                   # same pfns, but no huge page behind it
    vs = check_mmu_state(raw)
    assert any("block over a host pte leaf" in str(v) for v in vs)


def test_translation_mismatch_and_leaf_outside_slot(thp_state):
    raw = copy.deepcopy(thp_state)
    raw["mmu"]["host_map"][0][2] += 512                # the host now has another huge page there
    assert "MS" in ids(check_mmu_state(raw))
    raw = copy.deepcopy(thp_state)
    raw["mmu"]["memslots"] = []
    assert any("outside every memslot" in str(v) for v in check_mmu_state(raw))


def test_written_page_not_in_bitmap(thp_state):
    raw = copy.deepcopy(thp_state)
    slot = raw["mmu"]["memslots"][0]
    slot["dirty_bitmap"], slot["written"] = 0, [1]
    found = ids(check_mmu_state(raw))
    assert "DIRTY" in found
    slot["dirty_bitmap"] = (1 << slot["npages"]) - 1   # every bit set: the block may stay W
    assert check_mmu_state(raw) == []


def test_dirty_bitmap_must_fit_the_slot(thp_state):
    raw = copy.deepcopy(thp_state)
    raw["mmu"]["memslots"][0]["dirty_bitmap"] = 1 << 4096
    with pytest.raises(StateError):
        MmuView(raw)


def test_step_rules_dirty_and_progress(thp_state):
    pre = copy.deepcopy(thp_state)
    pre["mmu"]["memslots"][0]["dirty_bitmap"] = 0
    post = copy.deepcopy(pre)
    post["mmu"]["memslots"][0]["dirty_bitmap"] = 1 << 5
    step = {"op": "access", "args": {"ipa": G + 0x5000, "kind": "write"}, "ret": "error",
            "out": {"result": "error", "errno": -12, "faults": [[4, 3, True, -12]]}}
    found = ids(check_mmu_step(pre, step, post))
    assert {"DIRTY", "PROGRESS"} <= found
    step["out"] = {"result": "done", "errno": 0, "faults": []}
    assert check_mmu_step(pre, step, pre) == []


def test_abort_routing_rule(thp_state):
    step = {"op": "access", "args": {"ipa": 0x2000, "kind": "cm"}, "ret": "mmio",
            "out": {"result": "mmio", "errno": 0, "faults": [[4, 2, True, 0]]}}
    assert "C-MMU-ABORT" in ids(check_mmu_step(thp_state, step, thp_state))


def test_hyp_va_contract():
    assert hyp_va_fits(0x4100_0000, 0x123, 0x2000, 48, 12) == (True, 0x3000)
    assert hyp_va_fits(0x2000, 0, 0x3000, 48, 12)[0] is False
    assert hyp_va_fits((1 << 47) + 0x1000, 0, 0x2000, 48, 12)[0] is False   # would cross
    step = {"op": "hyp_private_map", "args": {"phys": 0, "size": 0x3000},
            "pre": {"io_map_base": 0x2000, "va_bits": 48, "page_shift": 12},
            "ret": 0, "out": {"haddr": (0x2000 - 0x3000) % (1 << 64),
                              "io_map_base": (0x2000 - 0x3000) % (1 << 64)}}
    empty = {"kind": "arm64-hyp-s1", "page_shift": 12, "va_bits": 48, "start_level": 0,
             "roots": [], "pages": {}, "refcount": {}}
    assert ids(check_hyp_private(step, empty)) == {"C-HYP-VA"}
