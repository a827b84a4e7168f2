"""mmu.units.fault.*: every case passes on the faithful impl, and each case (and the new spec rules
C-MMU-CMO and MMU-WARN of the VM checks) fails on a mutant of the function it pins down."""

import pytest

from proofs import checks_mmu_fault_units as units
from proofs import mmu_scenarios, mutate
from proofs.mmu_harness import VmHarness
from proofs.mmu_layouts import make_layout

MUTANTS = {m.id: m for m in mutate.enumerate_mutants(
    ["impl.mmu_fault", "impl.mmu_guest", "impl.mmu_kvm", "impl.mmu_stage2"])}


@pytest.mark.parametrize("name", sorted(units.CASES))
def test_case_passes_on_the_impl(name):
    n, failed = units.run_case(name)
    assert not failed, "\n".join(failed)
    assert n > 5


# (case, mutant): the case must report at least one failed expectation with the mutant planted
PLANTED = [
    ("routing", "mmu_fault:kvm_handle_guest_abort:arith4"),      # dabt FAR & instead of |
    ("routing", "mmu_fault:KvmFault.kvm_vcpu_trap_is_exec_fault:bool0"),
    ("huge", "mmu_fault:fault_supports_stage2_huge_mapping:cmp3"),
    ("huge", "mmu_kvm:Kvm.kvm_mmu_cache_min_pages:arith0"),
    ("abort", "mmu_fault:user_mem_abort:drop11"),                 # no kvm_set_pfn_dirty
    ("abort", "mmu_kvm:Kvm.mmu_notifier_retry:bool0"),
    ("notifier", "mmu_kvm:Kvm.change_pte:drop0"),
    ("notifier", "mmu_kvm:kvm_init_stage2_mmu:ret0"),
    ("tlb", "mmu_guest:Guest._tlb_sync:drop3"),                   # TLBI by IPA ignored
    ("tlb-model", "mmu_guest:Guest.translate:drop1"),             # nothing cached
    ("guest", "mmu_guest:Guest.access:cmp1"),
    ("vmm", "mmu_guest:Vmm.clear_dirty_log:drop0"),
    ("stage2", "mmu_stage2:kvm_mmu_write_protect_pt_masked:const4"),
    ("io", "mmu_stage2:kvm_phys_addr_ioremap:drop3"),             # private memcache leaks
    ("unmap-memslot", "mmu_stage2:stage2_unmap_memslot:swap2"),
]


@pytest.mark.parametrize("case,mid", PLANTED)
def test_case_catches_mutant(case, mid):
    with mutate.applied(MUTANTS[mid]):
        _, failed = units.run_case(case)
    assert failed, f"{case} did not notice {mid}"


def _scenario_violations(name):
    layout_args, steps = mmu_scenarios.SCENARIOS[name]
    h = VmHarness(make_layout(**layout_args), arena_pages=512)
    found = list(h.violations)
    for op, args in steps(h):
        found += h.step(op, **args)[1]
    return found


@pytest.mark.parametrize("mid,inv", [
    ("mmu_fault:user_mem_abort:drop7", "C-MMU-CMO"),          # no D-cache clean before mapping
    ("mmu_stage2:clean_dcache_guest_page:arith0", "C-MMU-CMO"),
    ("mmu_fault:user_mem_abort:bool0", "MMU-WARN"),           # WARN on every write fault
])
def test_vm_checks_catch(mid, inv):
    with mutate.applied(MUTANTS[mid]):
        found = _scenario_violations("thp-partial-head")
    assert any(v.inv == inv for v in found), [str(v) for v in found[:4]]


def test_vm_checks_quiet_on_impl():
    assert _scenario_violations("thp-partial-head") == []


def test_finding_age_warn_reachable():
    """Finding 4: a memslot starting inside a THP makes clear_flush_young hand kvm_age_gfn a range
    that is neither a page nor a PMD: 5.13's WARN fires; MMU-WARN exempts exactly that WARN."""
    from spec.mmu_invariants import check_mmu_warnings
    from impl.mmu_state import mmu_raw_state
    from impl.mmu_guest import Guest, Vmm
    from impl.mmu_host import HostMM
    from impl.mmu_kvm import Kvm
    host = HostMM(12)
    host.mmap(0x400000000000, 0x600000, "anon", thp=True)
    kvm = Kvm(12, 40, host=host, arena_pages=512)
    guest = Guest(kvm)
    vmm = Vmm(kvm, guest)
    assert vmm.set_memory_region(0, 0, 0x100001000, 0x3FE000, 0x400000001000) == 0
    assert guest.access(0x100001000, "read").result == "done"
    assert host.age(0x400000001000) is True
    assert kvm.warnings == ["kvm_age_gfn: range of 0x1ff000 bytes"]
    raw = mmu_raw_state(kvm, guest)
    assert check_mmu_warnings(raw) == []
    raw["mmu"]["warnings"].append("change_pte without an elevated mmu_notifier_count")
    assert [v.inv for v in check_mmu_warnings(raw)] == ["MMU-WARN"]
