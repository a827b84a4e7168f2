"""The checks of mmu.c's environment (host mm, memslots, hyp layout, raw state) pass on the impl and
fail on named defects.

A defect is a mechanical mutant of impl (ptspec.proofs.mutation.mutate), planted for one test with
``mutate.applied`` (restored on exit); the registered obligation must come back refuted naming its
invariant (HOST-MM for the host and memslot checks, C-HYP-VA for the hyp layout)."""

import random

import pytest

from ptspec.proofs.mmu import checks_host_units as units
from ptspec.proofs.mmu import host_cases as mmu_host_cases
from ptspec.proofs.mmu import host_contract as mmu_host_contract
from ptspec.proofs.mmu import hyp_va as mmu_hypva
from ptspec.proofs.mutation import mutate
from ptspec.proofs.runner import registry

MODULES = ["ptspec.impl.mmu.host", "ptspec.impl.mmu.memslot", "ptspec.impl.mmu.hyp", "ptspec.impl.mmu.state"]

# mutant -> (obligation that must refute it, what the defect is)
DEFECTS = {
    "mmu.host:HostMM.zap:swap6": ("mmu.units.host.mm", "a zap ending inside a THP drops it whole"),
    "mmu.host:HostMM._fault_in:const14": ("mmu.units.host.mm", "copy-on-write keeps the KSM pfn"),
    "mmu.host:HostMM.ksm_merge:const7": ("mmu.units.host.mm", "KSM allocates two pages"),
    "mmu.host:HostMM.host_leaf:const4": ("mmu.units.host.mm", "host_leaf misses THP at odd hva"),
    "mmu.host:HostMM.kvm_release_pfn_clean:arith0": ("mmu.units.host.mm", "put_page adds a ref"),
    "mmu.host:HostMM.find_vma_intersection:cmp1": ("mmu.units.host.mm",
                                                   "a VMA ending at start intersects"),
    "mmu.memslot:kvm_set_memory_region:const6": ("mmu.units.host.memslot",
                                                 "an odd memory_size is accepted"),
    "mmu.memslot:kvm_set_memory_region:drop6": ("mmu.units.host.memslot",
                                                "a move does not flush the old range"),
    "mmu.memslot:kvm_clear_dirty_log_protect:arith6": ("mmu.units.host.memslot",
                                                       "a clear beyond the slot is accepted"),
    "mmu.memslot:kvm_get_dirty_log_protect:const8": ("mmu.units.host.memslot",
                                                     "a word's top byte is not harvested"),
    "mmu.memslot:__gfn_to_pfn_memslot:cmp1": ("mmu.units.host.memslot", "pfn 0 is read-only"),
    "mmu.state:mmu_raw_state:const1": ("mmu.units.host.memslot",
                                       "start_level 1 in the state of a freed table"),
    "mmu.hyp:HypMmu.__init__:const29": ("mmu.units.hyp.layout", "tag from the idmap's end"),
    "mmu.hyp:kvm_mmu_init:const1": ("mmu.units.hyp.layout", "idmap end rounded short"),
    "mmu.hyp:create_hyp_io_mappings:const8": ("mmu.units.hyp.layout", "ioremap span offset"),
    "mmu.hyp:create_hyp_mappings:arith4": ("mmu.units.hyp.layout", "one page too many"),
}

INVARIANT = {"mmu.units.host.mm": "HOST-MM", "mmu.units.host.memslot": "HOST-MM",
             "mmu.units.hyp.layout": "C-HYP-VA"}


def _mutant(mid):
    return {m.id: m for m in mutate.enumerate_mutants(MODULES)}[mid]


def test_host_contract_passes():
    assert mmu_host_cases.check_sizes() == []
    n, cx = mmu_host_contract.run_host(4, 30, seed=3)
    assert cx is None, cx and cx["violations"]
    assert n > 100


def test_memslot_and_hyp_units_pass():
    assert units.check_set_memory_region() == []
    assert units.check_dirty_log(random.Random(1)) == []
    assert units.check_gfn_helpers() == []
    assert mmu_hypva.check_hyp_units() == []


@pytest.mark.parametrize("ob_id", sorted(INVARIANT))
def test_obligations_pass(ob_id):
    registry.load_all()
    r = registry.run_obligation(registry.get(ob_id), "quick", 0)
    assert r.status == "passed", (r.status, r.detail)


@pytest.mark.parametrize("mid", sorted(DEFECTS))
def test_defect_refuted(mid):
    ob_id, what = DEFECTS[mid]
    registry.load_all()
    with mutate.applied(_mutant(mid)):
        r = registry.run_obligation(registry.get(ob_id), "quick", 0)
    assert r.status == "refuted", (mid, what, r.status, r.detail)
    assert any(v.startswith(INVARIANT[ob_id]) for v in r.counterexample["violations"]), r
    # restored: the obligation passes again
    assert registry.run_obligation(registry.get(ob_id), "quick", 0).status == "passed"


def test_spy_restores_the_hook():
    from ptspec.impl.mmu import stage2 as mmu_stage2
    real = mmu_stage2.kvm_arch_mmu_enable_log_dirty_pt_masked
    kvm = units._vm()
    with pytest.raises(RuntimeError), units.spy_wp(kvm):
        raise RuntimeError("boom")
    assert mmu_stage2.kvm_arch_mmu_enable_log_dirty_pt_masked is real
    assert "flush_remote_tlbs" not in vars(kvm)
