"""Single-state invariants: one clean case and planted violations for each, every granule, both owner
fields, and the hyp stage-1 variants."""

import pytest

from ptspec import spec
from test_spec_builder import S2, leaf, owner_desc, table_desc, ids

GEOMETRIES = [(12, 40), (12, 32), (12, 44), (14, 40), (14, 48), (16, 42), (16, 52)]
FIELDS = [(63, 56), (9, 2)]


def populated(ps=12, ia=40, field=(63, 56)):
    """Blocks where the granule allows them, pages, and owner annotations."""
    b = S2(ps=ps, ia=ia, field=field, pa_bits=52 if ps == 16 else 48)
    g2 = 1 << ((ps - 3) * 2 + 3)
    page = 1 << ps
    b.block(g2, 2, 2 * g2)
    for i in range(4):
        b.page(4 * g2 + i * page, 0x8000_0000 + i * page, x=bool(i % 2))
    b.owner(4 * g2 + 8 * page, 3, 1)
    b.page(4 * g2 + 9 * page, 0x8800_0000, device=True)
    return b


def check(b):
    return spec.check_state(b.raw() if isinstance(b, S2) else b)


@pytest.mark.parametrize("ps,ia", GEOMETRIES)
@pytest.mark.parametrize("field", FIELDS)
def test_clean_states_pass(ps, ia, field):
    assert check(populated(ps, ia, field)) == []


def test_clean_state_in_hex_passes():
    assert spec.check_state(populated().raw(hexa=True)) == []


def test_empty_and_destroyed_states_pass():
    assert check(S2()) == []
    assert check(S2(init=False)) == []


def test_violation_str_and_where():
    b = populated()
    r = b.raw()
    pa = b.slot(4 << 21, 3)[0]
    r["refcount"][str(pa)] -= 1
    (v,) = spec.check_state(r)
    assert str(v) == f"S2-RC table {pa:#x} at level 3: refcount 6, counted descriptors 6"
    assert v.where == {"table": pa, "level": 3, "ipa": 4 << 21, "refcount": 6, "counted": 6}


# -- S2-RC -----------------------------------------------------------------------------------------

def test_rc_off_by_one_either_way_and_roots_included():
    b = populated()
    for delta in (-1, +1):
        r = b.raw()
        r["refcount"][str(b.roots[0])] += delta
        assert ids(spec.check_state(r)) == ["S2-RC"]


def test_rc_owner_annotations_are_counted():
    b = populated()
    r = b.raw()
    pa = b.slot(4 << 21, 3)[0]
    r["refcount"][str(pa)] = 1 + 5          # 5 valid pages; forgot the annotation
    vs = spec.check_state(r)
    assert ids(vs) == ["S2-RC"] and "counted descriptors 6" in vs[0].message


# -- S2-OWN ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", FIELDS)
def test_own_id_above_max(field):
    b = populated(field=field).set(0x5000_0000, 3, owner_desc(2, field))
    vs = check(b)
    assert ids(vs) == ["S2-OWN"] and "owner id 2" in vs[0].message and "KVM_MAX_OWNER_ID 1" in vs[0].message


def test_own_id_allowed_when_max_is_larger():
    b = populated()
    b.max_owner = 3
    b.set(0x5000_0000, 3, owner_desc(3))
    assert check(b) == []


@pytest.mark.parametrize("field,stray", [((63, 56), 1 << 3), ((63, 56), 1 << 12), ((9, 2), 1 << 56), ((9, 2), 1 << 1)])
def test_own_stray_bits(field, stray):
    b = populated(field=field).set(0x5000_0000, 3, owner_desc(1, field) | stray)
    vs = check(b)
    assert ids(vs) == ["S2-OWN"] and "outside the owner field" in vs[0].message
    assert vs[0].where["ipa"] == 0x5000_0000 and vs[0].where["level"] == 3


def test_own_annotation_at_block_level_is_well_formed():
    assert check(populated().owner(0x8000_0000, 2, 1)) == []


# -- S2-BA -----------------------------------------------------------------------------------------

def test_ba_misaligned_block():
    b = populated().block(0x4000_0000, 2, 0x8000_1000)
    vs = check(b)
    assert ids(vs) == ["S2-BA"] and "not aligned to the 2M block size" in vs[0].message


def test_ba_reserved_level3_encoding():
    b = populated().set(0x5000_0000, 3, leaf(0x8000_0000, 3) & ~0b10)
    vs = check(b)
    assert ids(vs) == ["S2-BA"] and "reserved encoding" in vs[0].message


@pytest.mark.parametrize("ps,ia,level", [(14, 48, 1), (16, 52, 1), (12, 44, 0)])
def test_ba_block_at_a_level_kvm_never_uses(ps, ia, level):
    b = S2(ps=ps, ia=ia, pa_bits=52 if ps == 16 else 48)
    size = 1 << ((ps - 3) * (4 - level) + 3)
    b.set(0, level, leaf(0 if size >= 1 << 48 else size, level, ps))
    vs = check(b)
    assert "S2-BA" in ids(vs) and any("allows no block" in v.message for v in vs)


def test_ba_level1_block_with_4k_is_fine():
    assert check(S2().block(0x4000_0000, 1, 0x4000_0000)) == []


def test_ba_64k_block_and_out_of_range():
    b = S2(ps=16, ia=48, pa_bits=52).block(0x2000_0000, 2, 0x000F_0000_2000_0000)
    assert check(b) == []
    b.pa_bits = 48
    assert ids(check(b)) == ["S2-BA"]
    b = S2(ps=16, ia=48).block(0x2000_0000, 2, 0x2001_0000)
    assert "not aligned to the 512M block size" in check(b)[0].message


def test_ba_16k_res0_address_bits():
    b = S2(ps=14, ia=40).set(0x4000, 3, leaf(0x8000_4000, 3, 14) | 0x1000)
    vs = check(b)
    assert ids(vs) == ["S2-BA"] and "bits 13:12" in vs[0].message


# -- S2-TREE ---------------------------------------------------------------------------------------

def test_tree_shared_table():
    b = populated()
    child = b.slot(0x0, 2)[0]            # the level-2 table under root slot 0
    b.set(1 << 30, 1, table_desc(child))  # a second level-1 slot points to the same table
    r = b.raw()
    r["refcount"][str(child)] = r["refcount"][str(child)]  # refcounts as built
    vs = spec.check_state(r)
    assert "S2-TREE" in ids(vs) and any("already reached" in v.message for v in vs)


def test_tree_cycle_to_a_root():
    b = populated()
    b.set(0x8000_0000, 1, table_desc(b.roots[1]))
    vs = check(b)
    assert "S2-TREE" in ids(vs) and any("is a root table" in v.message for v in vs)


def test_tree_missing_table_page_and_memcache_page():
    b = populated()
    b.memcache = [0x7770_0000]
    b.set(0x8000_0000, 1, table_desc(0x7770_0000))
    vs = check(b)
    assert "S2-TREE" in ids(vs)
    assert any("not in pages (it is in the memcache)" in v.message for v in vs)


def test_tree_wrong_start_level_and_root_count():
    r = populated().raw()
    r["start_level"] = 0
    assert any("needs start level 1" in v.message for v in spec.check_state(r))
    b = S2(nroots=1)
    vs = check(b)
    assert ids(vs) == ["S2-TREE"] and "needs 2" in vs[0].message


def test_tree_roots_must_be_contiguous_and_aligned():
    b = S2()
    b.roots = [b.roots[1], b.roots[0]]
    assert any("not physically contiguous" in v.message for v in check(b))
    b = S2(arena=0x4000_1000)
    b.roots = [b.roots[0] + 0x1000, b.alloc()]
    b.pages.pop(b.next - 0x3000, None)
    r = b.raw()
    assert any("not aligned to their total size" in v.message for v in spec.check_state(r))


def test_tree_root_missing_or_duplicated():
    b = S2()
    b.roots = [b.roots[0], b.roots[0]]
    assert any("listed twice in roots" in v.message for v in check(b))
    b = S2()
    del b.pages[b.roots[1]]
    assert any("root 1" in v.message and "not in pages" in v.message for v in check(b))


def test_tree_table_upper_bits():
    b = populated()
    pa, i = b.slot(4 << 21, 2)
    b.pages[pa][i] |= 1 << 61
    vs = check(b)
    assert ids(vs) == ["S2-TREE"] and "bits 63:59" in vs[0].message


def test_tree_descriptor_beyond_input_range():
    b = S2(ia=36)
    b.pages[b.roots[0]][100] = leaf(0, 1)
    vs = check(b)
    assert "S2-TREE" in ids(vs) and any("beyond the 36-bit input range" in v.message for v in vs)


def test_tree_ia_bits_unsupported_by_granule():
    r = S2(ps=12, ia=48).raw()
    r["ia_bits"] = 52
    vs = spec.check_state(r)
    assert "S2-TREE" in ids(vs) and any("not supported with the 4K granule" in v.message for v in vs)


# -- S2-LEAK ---------------------------------------------------------------------------------------

def test_leak_unreachable_page():
    b = populated()
    b.alloc()
    vs = check(b)
    assert ids(vs) == ["S2-LEAK"] and "not reached from the roots" in vs[0].message


def test_leak_pool_errors_and_memcache_overlap():
    b = populated()
    r = b.raw()
    r["pool_errors"] = ["put_page below zero: 0x1000"]
    vs = spec.check_state(r)
    assert ids(vs) == ["S2-LEAK"] and "put_page below zero" in vs[0].message
    b.memcache = [b.roots[0], 0x9990_0000, 0x9990_0000]
    vs = check(b)
    assert ids(vs) == ["S2-LEAK"] and len(vs) == 2


def test_leak_destroyed_table_with_pages_left():
    b = populated()
    b.roots = []
    vs = check(b)
    assert ids(vs) == ["S2-LEAK"] and all("no root" in v.message for v in vs)


# -- hyp stage 1 -----------------------------------------------------------------------------------

def hyp():
    b = S2(kind="arm64-hyp-s1", ia=48, start=0, nroots=1)
    b.block(0x4000_0000, 2, 0x8000_0000)
    b.page(0x4060_0000, 0x9000_0000)
    return b


def test_hyp_clean():
    assert check(hyp()) == []


def test_hyp_refcount_must_be_one():
    r = hyp().raw()
    r["refcount"][str(r["roots"][0])] = 2
    assert ids(spec.check_state(r)) == ["S1-RC"]


def test_hyp_tree_ba_leak():
    r = hyp().raw()
    r["start_level"] = 1
    assert "S1-TREE" in ids(spec.check_state(r))
    assert ids(check(hyp().block(0x8000_0000, 2, 0x8000_1000))) == ["S1-BA"]
    b = hyp()
    b.alloc()
    r = b.raw()
    assert ids(spec.check_state(r)) == ["S1-LEAK"]
    b = hyp()
    b.roots = [b.roots[0], b.alloc()]
    assert "S1-TREE" in ids(check(b))


def test_registry_and_docstrings():
    for inv in ("S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "S1-TREE", "S1-BA", "S1-RC"):
        doc = spec.explain(inv)
        assert doc.startswith(inv) and "Constrains:" in doc and "Why:" in doc
    assert set(spec.CONTRACTS) == {"init", "map", "set_owner", "unmap", "wrprotect", "mkyoung", "mkold",
                                   "is_young", "relax_perms", "flush", "get_leaf", "destroy",
                                   "test_clear_young", "split",       # these two: 6.5 on
                                   "annotate"}                        # 7.1 on
    for op, fn in spec.CONTRACTS.items():
        assert "Constrains:" in fn.__doc__ and spec.OP_CONTRACT_ID[op] in fn.__doc__
    assert set(spec.CONTRACT_IDS) == set(spec.OP_CONTRACT_ID.values()) | {"C-CMO"}
    for cid in spec.CONTRACT_IDS:
        assert spec.explain(cid).startswith(cid) and "Constrains:" in spec.explain(cid)


def test_registry_functions_take_raw_dicts():
    b = populated()
    r = b.raw()
    r["refcount"][str(b.roots[0])] += 1
    assert ids(spec.INVARIANTS["S2-RC"](r)) == ["S2-RC"]
    assert spec.INVARIANTS["S1-RC"](r) == []              # not a hyp state: nothing to judge
    st = {"op": "unmap", "args": {"addr": "0x0", "size": "0x1000"}, "ret": 0}
    assert spec.CONTRACTS["unmap"](b.raw(), st, b.raw()) == []
    assert spec.INVARIANTS["S2-BBM"](b.raw(), st, b.raw()) == []
    with pytest.raises(KeyError):
        spec.explain("S9-NOPE")
