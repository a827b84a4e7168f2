"""mmu.units.fault.*: every case passes on the faithful impl, and each case (and the new spec rules
C-MMU-CMO and MMU-WARN of the VM checks) fails on a mutant of the function it pins down."""

import pytest

from ptspec.proofs.mmu import checks_fault_units as units
from ptspec.proofs.mmu import scenarios as mmu_scenarios
from ptspec.proofs.mutation import mutate
from ptspec.proofs.mmu.harness import VmHarness
from ptspec.proofs.mmu.layouts import make_layout

MUTANTS = {m.id: m for m in mutate.enumerate_mutants(
    ["ptspec.impl.mmu.fault", "ptspec.impl.mmu.guest", "ptspec.impl.mmu.kvm", "ptspec.impl.mmu.stage2"])}


@pytest.mark.parametrize("name", sorted(units.CASES))
def test_case_passes_on_the_impl(name):
    n, failed = units.run_case(name)
    assert not failed, "\n".join(failed)
    assert n > 5


# (case, mutant): the case must report at least one failed expectation with the mutant planted
PLANTED = [
    ("routing", "mmu.fault:kvm_handle_guest_abort:arith4"),      # dabt FAR & instead of |
    ("routing", "mmu.fault:KvmFault.kvm_vcpu_trap_is_exec_fault:bool0"),
    ("huge", "mmu.fault:fault_supports_stage2_huge_mapping:cmp3"),
    ("huge", "mmu.kvm:Kvm.kvm_mmu_cache_min_pages:arith0"),
    ("abort", "mmu.fault:user_mem_abort:drop11"),                 # no kvm_set_pfn_dirty
    ("abort", "mmu.kvm:Kvm.mmu_notifier_retry:bool0"),
    ("notifier", "mmu.kvm:Kvm.change_pte:drop0"),
    ("notifier", "mmu.kvm:kvm_init_stage2_mmu:ret0"),
    ("tlb", "mmu.guest:Guest._tlb_sync:drop3"),                   # TLBI by IPA ignored
    ("tlb-model", "mmu.guest:Guest.translate:drop1"),             # nothing cached
    ("guest", "mmu.guest:Guest.access:cmp1"),
    ("vmm", "mmu.guest:Vmm.clear_dirty_log:drop0"),
    ("stage2", "mmu.stage2:kvm_mmu_write_protect_pt_masked:const4"),
    ("io", "mmu.stage2:kvm_phys_addr_ioremap:drop3"),             # private memcache leaks
    ("unmap-memslot", "mmu.stage2:stage2_unmap_memslot:swap2"),
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
    ("mmu.fault:user_mem_abort:drop7", "C-MMU-CMO"),          # no D-cache clean before mapping
    ("mmu.stage2:clean_dcache_guest_page:arith0", "C-MMU-CMO"),
    ("mmu.fault:user_mem_abort:bool0", "MMU-WARN"),           # WARN on every write fault
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
    from ptspec.spec.mmu.invariants import check_mmu_warnings
    from ptspec.impl.mmu.state import mmu_raw_state
    from ptspec.impl.mmu.guest import Guest, Vmm
    from ptspec.impl.mmu.host import HostMM
    from ptspec.impl.mmu.kvm import Kvm
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
