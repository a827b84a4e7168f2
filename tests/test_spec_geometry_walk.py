"""Geometry facts (hand-computed from the architecture and KVM's rules), the walk, leaves, translate."""

import pytest

from ptspec import spec
from ptspec.spec.arch import geometry as G
from test_spec_builder import S2, leaf, owner_desc


@pytest.mark.parametrize("ps,shifts", [
    (12, {0: 39, 1: 30, 2: 21, 3: 12}),
    (14, {0: 47, 1: 36, 2: 25, 3: 14}),
    (16, {1: 42, 2: 29, 3: 16}),
])
def test_granule_shift(ps, shifts):
    for level, shift in shifts.items():
        assert spec.granule_shift(level, ps) == shift


# (page_shift, ia_bits) -> (start level, concatenated root pages), worked out by hand:
# levels = max(2, (ia - 8) // (ps - 3)); roots = 2**ia / (one root table's span)
@pytest.mark.parametrize("ps,ia,start,roots", [
    (12, 32, 2, 4), (12, 36, 1, 1), (12, 39, 1, 1), (12, 40, 1, 2), (12, 43, 1, 16), (12, 44, 0, 1),
    (12, 48, 0, 1),
    (14, 32, 2, 1), (14, 36, 2, 1), (14, 40, 2, 16), (14, 47, 1, 1), (14, 48, 1, 2),
    (16, 32, 2, 1), (16, 42, 2, 1), (16, 46, 2, 16), (16, 47, 1, 1), (16, 48, 1, 1), (16, 52, 1, 1),
])
def test_start_level_and_root_pages(ps, ia, start, roots):
    assert spec.stage2_start_level(ia, ps) == start
    assert spec.root_pages(ia, start, ps) == roots


def test_block_levels_and_ipa_ranges():
    assert [lv for lv in range(4) if spec.level_allows_block(lv, 12)] == [1, 2]
    assert [lv for lv in range(4) if spec.level_allows_block(lv, 14)] == [2]
    assert [lv for lv in range(4) if spec.level_allows_block(lv, 16)] == [2]
    assert G.leaf_levels(0, 12) == [1, 2, 3] and G.leaf_levels(2, 12) == [2, 3] and G.leaf_levels(1, 16) == [2, 3]
    assert spec.ipa_bits_supported(48, 12) and not spec.ipa_bits_supported(49, 12)
    assert spec.ipa_bits_supported(52, 16) and not spec.ipa_bits_supported(31, 16)
    assert spec.hyp_start_level(48, 12) == 0 and spec.hyp_start_level(39, 12) == 1


def test_leaves_in_order_with_holes_and_annotations():
    b = S2().page(0x4000_1000, 0x8000_0000).owner(0x4000_3000, 3, 1).block(0x4020_0000, 2, 0x9000_0000)
    st = spec.load_state(b.raw())
    lv = list(spec.leaves(st))
    assert [x.ipa for x in lv] == sorted(x.ipa for x in lv)
    by_ipa = {x.ipa: x for x in lv}
    assert by_ipa[0x4000_1000].desc == leaf(0x8000_0000, 3) and by_ipa[0x4000_1000].level == 3
    assert by_ipa[0x4000_3000].desc == owner_desc(1) and by_ipa[0x4000_2000].desc == 0
    assert by_ipa[0x4020_0000].size == 0x20_0000 and by_ipa[0x4020_0000].level == 2
    # every slot of every table inside the 40-bit range appears exactly once
    assert sum(x.size for x in lv) == 1 << 40
    assert len(lv) == 512 + 511 + 511 + 512   # level-3 table, level-2 rest, two level-1 roots minus one


def test_leaves_skip_root_slots_beyond_the_input_range():
    st = spec.load_state(S2(ia=36).raw())       # one level-1 root, only 64 of its slots are IPAs
    assert len(list(spec.leaves(st))) == 64


def test_translate_valid_invalid_fault():
    b = S2().page(0x4000_1000, 0x8000_0000, w=False).owner(0x4000_3000, 3, 1).block(0x4020_0000, 2, 0x9000_0000)
    t = spec.translate(b.raw(), 0x4000_1abc)
    assert t.valid and t.oa == 0x8000_0abc and t.level == 3 and t.attrs.r and not t.attrs.w and t.attrs.af
    t = spec.translate(b.raw(), 0x4021_2345)
    assert t.valid and t.oa == 0x9001_2345 and t.size == 0x20_0000
    t = spec.translate(b.raw(), 0x4000_3fff)
    assert t.kind == "invalid" and t.owner == 1
    assert spec.translate(b.raw(), 0x4000_2000).owner == 0
    assert spec.translate(b.raw(), 1 << 40).kind == "fault"
    assert "no root" in spec.translate(S2(init=False).raw(), 0).reason


def test_translate_reserved_level3_encoding_is_invalid():
    b = S2().set(0x1000, 3, leaf(0x8000_0000, 3) & ~2)
    t = spec.translate(b.raw(), 0x1000)
    assert t.kind == "invalid"


def test_64k_output_address_bits_51_48():
    b = S2(ps=16, ia=48, pa_bits=52).page(0x1_0000, 0x000A_0000_0001_0000)
    st = spec.load_state(b.raw())
    assert spec.translate(st, 0x1_0123).oa == 0x000A_0000_0001_0123
    assert spec.check_state(st) == []
    # the same descriptor with a 48-bit PA range is out of range
    b.pa_bits = 48
    vs = spec.check_state(b.raw())
    assert [v.inv for v in vs] == ["S2-BA"] and "beyond the 48-bit PA range" in vs[0].message


def test_16k_walk_and_block():
    b = S2(ps=14, ia=40).block(0x200_0000, 2, 0x4_0000_0000).page(0x400_4000, 0x8000_4000)
    st = spec.load_state(b.raw())
    assert spec.check_state(st) == []
    assert spec.translate(st, 0x200_0000 + 0x12345).oa == 0x4_0001_2345
    assert spec.translate(st, 0x400_4000).level == 3 and spec.translate(st, 0x400_4000).size == 0x4000
