"""S2-BBM: changed cached translations need a TLBI of the right level inside the old leaf."""

from ptspec import spec
from test_spec_builder import S2, RW, leaf, step, ids

AF = 1 << 10
W = 1 << 7


def bbm(pre, op, post, tlb=(), **args):
    return spec.INVARIANTS["S2-BBM"](spec.load_state(pre.raw()), spec.load_step(step(op, **args)),
                                     spec.load_state(post.raw(tlb=tlb)))


def mapped():
    b = S2()
    for i in range(4):
        b.page(0x4000_0000 + i * 0x1000, 0x8000_0000 + i * 0x1000)
    b.block(0x4020_0000, 2, 0x9000_0000)
    return b


def test_page_removed_without_tlbi():
    pre = mapped()
    post = pre.copy().set(0x4000_1000, 3, 0)
    vs = bbm(pre, "unmap", post, addr=0x4000_1000, size=0x1000)
    assert ids(vs) == ["S2-BBM"]
    assert vs[0].message.startswith("unmap: valid 4K leaf at ipa 0x40001000 level 3")
    assert vs[0].where["ipa"] == 0x4000_1000 and vs[0].where["level"] == 3
    assert bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_1000, 3)], addr=0x4000_1000, size=0x1000) == []
    assert bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_1fff, 3)], addr=0x4000_1000, size=0x1000) == []
    assert bbm(pre, "unmap", post, [("tlbi_vmid",)], addr=0x4000_1000, size=0x1000) == []


def test_tlbi_at_the_wrong_level_or_outside_the_leaf():
    pre = mapped()
    post = pre.copy().set(0x4000_1000, 3, 0)
    vs = bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_1000, 2)], addr=0x4000_1000, size=0x1000)
    assert ids(vs) == ["S2-BBM"] and "at the wrong level" in vs[0].message
    vs = bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_2000, 3)], addr=0x4000_1000, size=0x1000)
    assert ids(vs) == ["S2-BBM"]


def test_a_tlbi_without_level_hint_covers_a_leaf_of_any_level():
    # level 0 sets no TTL (__tlbi_level skips it; no stage-2 leaf lives at level 0), as S2-BBM-WALK
    # reads it; a later kernel's TLBI_TTL_UNKNOWN means the same. 6.6.63's unmap of a table's last
    # page logs only such table invalidations for it: not a violation.
    pre = mapped()
    post = pre.copy().set(0x4000_1000, 3, 0)
    for hint in (0, 0x7FFF_FFFF):
        assert bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_1000, hint)], addr=0x4000_1000, size=0x1000) == []
        # still inside the leaf only
        assert ids(bbm(pre, "unmap", post, [("tlbi_ipa", 0x4000_2000, hint)], addr=0x4000_1000,
                       size=0x1000)) == ["S2-BBM"]
    split = pre.copy().set(0x4020_0000, 2, 0)          # the 2M block removed
    assert bbm(pre, "unmap", split, [("tlbi_ipa", 0x4020_0000, 0)], addr=0x4020_0000, size=0x20_0000) == []
    assert ids(bbm(pre, "unmap", split, [("tlbi_ipa", 0x4020_0000, 3)], addr=0x4020_0000,
                   size=0x20_0000)) == ["S2-BBM"]


def test_hint_0_names_level_0_from_6_8():
    """6.8's __tlbi_level encodes a level of 0 as a TTL hint: it no longer covers a level-3 page
    or a level-2 block there (TLBI_TTL_UNKNOWN does); before 6.8 it covers both."""
    pre = mapped()
    page = pre.copy().set(0x4000_1000, 3, 0)
    block = pre.copy().set(0x4020_0000, 2, 0)
    for version, ok in ((None, True), ("6.6.87", True), ("6.8.0", False), ("7.1.5", False)):
        for post, addr, size in ((page, 0x4000_1000, 0x1000), (block, 0x4020_0000, 0x20_0000)):
            for hint, covers in ((0, ok), (0x7FFF_FFFF, True)):
                pre_raw, post_raw = pre.raw(), post.raw([("tlbi_ipa", addr, hint)])
                if version:
                    pre_raw["kernel_version"] = post_raw["kernel_version"] = version
                vs = spec.check_step(pre_raw, step("unmap", addr=addr, size=size), post_raw)
                assert ("S2-BBM" not in ids(vs)) == covers, (version, hint, vs)


def test_attribute_change_needs_tlbi():
    pre = mapped()
    post = pre.copy().page(0x4000_0000, 0x8000_0000, x=True)
    assert ids(bbm(pre, "relax_perms", post, addr=0x4000_0000, prot=1)) == ["S2-BBM"]
    assert bbm(pre, "relax_perms", post, [("tlbi_ipa", 0x4000_0000, 3)], addr=0x4000_0000, prot=1) == []


def test_block_split_needs_tlbi_at_block_level():
    pre = mapped()
    post = pre.copy().page(0x4020_3000, 0xA000_0000)      # block replaced by a table: collateral zeros
    args = dict(addr=0x4020_3000, size=0x1000, phys=0xA000_0000, prot=RW, force_pte=False)
    assert ids(bbm(pre, "map", post, **args)) == ["S2-BBM"]
    assert ids(bbm(pre, "map", post, [("tlbi_ipa", 0x4020_3000, 3)], **args)) == ["S2-BBM"]
    assert bbm(pre, "map", post, [("tlbi_ipa", 0x4020_3000, 2)], **args) == []


def test_table_coalesced_into_block_needs_vmid_flush():
    pre = mapped()
    post = pre.copy()
    post.drop_table(0x4000_0000, 2)
    post.block(0x4000_0000, 2, 0x8000_0000)
    args = dict(addr=0x4000_0000, size=0x20_0000, phys=0x8000_0000, prot=RW, force_pte=False)
    # the historical coalesce-tlbi bug: one IPA at the anchor's level
    vs = bbm(pre, "map", post, [("tlbi_ipa", 0x4000_0000, 2)], **args)
    assert ids(vs) == ["S2-BBM"] and len(vs) == 4
    assert bbm(pre, "map", post, [("tlbi_vmid",)], **args) == []


def test_exemptions_wrprotect_mkold_mkyoung_destroy():
    pre = mapped()
    wp = pre.copy().page(0x4000_0000, 0x8000_0000, w=False)
    assert bbm(pre, "wrprotect", wp, addr=0x4000_0000, size=0x1000) == []
    assert ids(bbm(pre, "unmap", wp, addr=0x4000_0000, size=0x1000)) == ["S2-BBM"]
    old = pre.copy().page(0x4000_0000, 0x8000_0000, af=False)
    assert bbm(pre, "mkold", old, addr=0x4000_0000) == []
    assert ids(bbm(pre, "wrprotect", old, addr=0x4000_0000, size=0x1000)) == ["S2-BBM"]
    assert bbm(old, "mkyoung", pre, addr=0x4000_0000) == []
    assert bbm(old, "map", pre, addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=RW, force_pte=False) == []
    # wrprotect that also changes another bit is not exempt
    wp2 = pre.copy().set(0x4000_0000, 3, leaf(0x8000_0000, 3, w=False, x=True))
    assert ids(bbm(pre, "wrprotect", wp2, addr=0x4000_0000, size=0x1000)) == ["S2-BBM"]
    gone = S2(init=False)
    assert bbm(pre, "destroy", gone) == []


def test_new_mappings_and_annotations_need_no_tlbi():
    pre = mapped()
    post = pre.copy().page(0x4000_8000, 0x8800_0000).owner(0x4000_9000, 3, 1)
    assert bbm(pre, "map", post, addr=0x4000_8000, size=0x1000, phys=0x8800_0000, prot=RW, force_pte=False) == []


def test_unchanged_state_and_large_state_fast_path():
    b = S2()
    for i in range(256):
        b.block(0x4000_0000 + i * 0x20_0000, 2, 0x1_0000_0000 + i * 0x20_0000)
    assert bbm(b, "flush", b.copy(), addr=0, size=0x1000) == []
    post = b.copy().set(0x4000_0000 + 17 * 0x20_0000, 2, 0)
    vs = bbm(b, "unmap", post, addr=0x4000_0000 + 17 * 0x20_0000, size=0x20_0000)
    assert len(vs) == 1 and vs[0].where["level"] == 2
