"""The stage-2 unit obligations of the mutation round: they pass on impl, and each fails on the
mechanical mutants it was written against (one per behaviour), naming the expected invariant."""

import pytest

from ptspec.proofs.mutation import mutate
from ptspec.proofs.runner import registry


def _mutant(mid: str):
    module = mutate.module_of(mid)
    found = {m.id: m for m in mutate.enumerate_mutants([module])}
    assert mid in found, f"mutant {mid} no longer exists (impl changed?)"
    return found[mid]


def _run(check_id: str):
    registry.load_all()
    ob = registry.get(check_id)
    assert ob is not None, check_id
    return registry.run_obligation(ob, "quick", 0)


@pytest.mark.parametrize("check_id", ["s2.units.hyp", "s2.units.stage2", "s2.pool",
                                      "s2.geometry.all", "s2.args.constructors", "s2.errorpaths"])
def test_passes_on_impl(check_id):
    r = _run(check_id)
    assert r.status in ("passed", "proved"), (r.status, r.detail, r.counterexample)
    assert r.examples > 0


KILLS = [
    ("s2.units.hyp", "pgtable.hyp:HypPgtable.init:ret0", "kvm_pgtable_hyp_init with the root"),
    ("s2.units.hyp", "pgtable.hyp:HypPgtable.__init__:cmp2", "uses the page pool"),
    ("s2.units.hyp", "pgtable.hyp:HypPgtable.map:const1", "phys = block + 1"),
    ("s2.units.hyp", "pgtable.hyp:HypPgtable.warn:drop0", "WARNs"),
    ("s2.units.hyp", "pgtable.pte:hyp_pte_needs_update:cmp1", "conflicting re-map"),
    ("s2.units.hyp", "pgtable.pte:hyp_pte_needs_update:drop0", "conflicting re-map"),
    ("s2.units.hyp", "pgtable.stage2_map:kvm_set_table_pte:drop1", "table over the block"),
    ("s2.units.stage2", "pgtable.stage2:KvmPgtable.warn:drop0", "identity map"),
    ("s2.units.stage2", "pgtable.stage2:KvmPgtable.set_owner:const0", "set_owner id 0"),
    ("s2.units.stage2", "pgtable.stage2:_u64:cmp1", "unmap(2**64 - 1, 1)"),
    ("s2.units.stage2", "pgtable.pte:GENMASK:const2", "owner mask"),
    ("s2.units.stage2", "pgtable.stage2:KvmPgtable.force_pte:arith1", "force_pte_cb"),
    ("s2.units.stage2", "pgtable.stage2_walkers:kvm_pgtable_stage2_destroy:arith2", "free_pages_exact"),
    ("s2.units.stage2", "pgtable.stage2_walkers:kvm_pgtable_stage2_relax_perms:arith3", "C-RELAX-PERMS"),
    ("s2.units.stage2", "pgtable.stage2_walkers:kvm_pgtable_get_leaf:const9", "get_leaf beyond"),
    ("s2.units.stage2", "pgtable.pte:kvm_pgtable_stage2_pte_prot:arith6", "pte_prot"),
    ("s2.units.stage2", "pgtable.stage2_map:stage2_put_pte:arith0", "no TLB invalidation"),
    ("s2.units.stage2", "pgtable.walker:_kvm_pgtable_walk:arith1", "C-MAP"),
    ("s2.units.stage2", "pgtable.stage2_walkers:stage2_flush_walker:arith0", "C-FLUSH"),
    ("s2.pool", "pgtable.pool:PagePool.alloc_pages_exact:const6", "2-page run"),
    ("s2.pool", "pgtable.pool:PagePool.get_page:drop1", "get_page on a page not allocated"),
    ("s2.geometry.all", "pgtable.geometry:all_stage2_geometries:arith0", "does not list it"),
    ("s2.args.constructors", "pgtable.stage2:KvmPgtable.__init__:cmp10", "owner field 3:2, id 4"),
    ("s2.args.constructors", "pgtable.stage2:KvmPgtable.__init__:const0", "FEAT_S2FWB"),
    ("s2.errorpaths", "pgtable.stage2:KvmPgtable.set_owner:const1", "C-ARGS"),
]


@pytest.mark.parametrize("check_id,mid,expect", KILLS, ids=[k[1] for k in KILLS])
def test_kills_its_mutant(check_id, mid, expect):
    with mutate.applied(_mutant(mid)):
        try:
            r = _run(check_id)
        except Exception as exc:          # noqa: BLE001 - a crash would also kill it, but say so
            pytest.fail(f"{check_id} crashed on {mid}: {exc!r}")
    assert r.status == "refuted", (r.status, r.detail)
    text = repr(r.counterexample)
    assert expect in text, text[:2000]
