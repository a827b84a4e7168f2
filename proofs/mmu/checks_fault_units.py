"""``mmu.units.fault.*``: one unit obligation per directed case (the 5.13 fault path in
proofs/mmu/fault_cases.py, the guest and its TLB in proofs/mmu/tlb_cases.py, the notifier glue and
the VM-wide operations in proofs/mmu/vm_cases.py), with the invariants and kernel functions each
one judges. A case runs under one operation's CPU budget: a case that does not come back breaks
C-MMU-RETURNS (impl looped), as a VM-level operation in the harness does."""

from __future__ import annotations

from ptspec.proofs.mmu.fault_cases import Expect, case_abort, case_huge, case_routing
from ptspec.proofs.mmu.tlb_cases import case_guest, case_tlb, case_tlb_model
from ptspec.proofs.mmu.vm_cases import case_io, case_notifier, case_stage2, case_unmap_memslot, case_vmm
from ptspec.proofs.engines.minimize import unit_program
from ptspec.proofs.runner.registry import Result, obligation
from ptspec.proofs.stage2 import returns

CASES = {"routing": case_routing, "huge": case_huge, "abort": case_abort,
         "notifier": case_notifier, "tlb": case_tlb, "tlb-model": case_tlb_model,
         "guest": case_guest, "vmm": case_vmm, "stage2": case_stage2, "io": case_io,
         "unmap-memslot": case_unmap_memslot}


def run_case(name):
    """(number of expectations checked, failures) of one case; an exception is a failure, and so
    is a case still running after an operation's CPU budget (C-MMU-RETURNS: impl looped)."""
    e = Expect(name)
    try:
        _, hang = returns.unit_call("C-MMU-RETURNS", f"run_case({name!r})", CASES[name], e)
        if hang:
            e.failed.append(hang)
    except Exception as exc:           # a crash of the impl under these inputs is a finding too
        import traceback
        e.failed.append(f"{name}: raised {type(exc).__name__}: {exc}\n"
                        + "".join(traceback.format_exc().splitlines(True)[-4:]))
    return e.n, e.failed

INVARIANTS = {"routing": ["C-MMU-ABORT", "MMU-WARN"], "huge": ["MS", "MMU-WARN"],
              "abort": ["C-MMU-FAULT", "C-MMU-CMO", "DIRTY"], "notifier": ["C-MMU-NOTIFIER", "MMU-WARN"],
              "tlb": ["C-MMU-TLB"], "tlb-model": ["C-MMU-TLB"], "guest": ["C-MMU-ABORT", "MS-PERM"],
              "vmm": ["DIRTY", "C-MMU-WP"], "stage2": ["C-MMU-WP", "C-MMU-NOTIFIER", "MMU-WARN"],
              "io": ["C-MMU-IOREMAP", "C-MMU-PREPARE"], "unmap-memslot": ["C-MMU-UNMAP-VM",
                                                                          "C-MMU-NOTIFIER"]}
FUNCTIONS = {"routing": ["kvm_handle_guest_abort", "handle_access_fault", "io_mem_abort"],
             "huge": ["fault_supports_stage2_huge_mapping", "kvm_mmu_cache_min_pages"],
             "abort": ["user_mem_abort", "transparent_hugepage_adjust"],
             "notifier": ["kvm_set_spte_gfn", "kvm_age_gfn", "kvm_init_stage2_mmu",
                          "kvm_free_stage2_pgd"],
             "tlb": [], "tlb-model": [], "guest": ["kvm_handle_guest_abort"], "vmm": ["kvm_get_dirty_log_protect", "kvm_clear_dirty_log_protect"],
             "stage2": ["stage2_apply_range", "kvm_mmu_write_protect_pt_masked",
                        "stage2_flush_memslot", "kvm_unmap_gfn_range", "kvm_set_spte_gfn"],
             "io": ["kvm_phys_addr_ioremap", "kvm_arch_prepare_memory_region"],
             "unmap-memslot": ["stage2_unmap_memslot", "stage2_unmap_vm"]}


def _register(name):
    fn = CASES[name]

    def check(ctx):
        n, failed = run_case(name)
        if failed:
            return Result.refuted({"ops": unit_program(
                                       ["from ptspec.proofs.mmu.checks_fault_units import run_case"],
                                       [f"n, failed = run_case({name!r})"],
                                       "assert not failed, '\\n'.join(failed)"),
                                   "violations": failed[:12], "tables": "",
                                   "kernel_function": (FUNCTIONS[name] or ["(guest model)"])[0]},
                                  detail=f"{len(failed)} of {n} expectations failed", examples=n)
        return Result.passed(n, f"{n} expectations")
    check.__doc__ = fn.__doc__ or f"Directed cases: {name} (see the module docstring)."
    check.__name__ = f"units_fault_{name}"
    obligation(f"mmu.units.fault.{name}", engine="unit",
               invariants=INVARIANTS[name] + ["C-MMU-RETURNS"], kernel_functions=FUNCTIONS[name])(check)


for _name in CASES:
    _register(_name)
