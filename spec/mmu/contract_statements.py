"""PROGRESS and the C-MMU-* contracts of the stage-2 fault path (arch/arm64/kvm/mmu.c, 5.13).

Models the statements that spec/mmu/contracts.py evaluates over (pre, step, post) — several per
evaluator, one per VM operation kind — and the two contracts judged by directed unit cases
(C-MMU-FAULT, C-MMU-TLB: proofs/mmu/fault_cases.py and tlb_cases.py), declared here so each has
one text. C-MMU-CMO is stated on its evaluator (spec/mmu/contracts.py check_cmo).
Leaves out: the single-state invariants (MS, DIRTY, MMU-WARN: spec/mmu/invariants.py).
"""

from ptspec.spec.statements import declare

FAULT_PATH = ("kvm_handle_guest_abort", "user_mem_abort", "handle_access_fault")

declare("""PROGRESS: an access the memslots and the host allow completes.

Statement: an access inside a memslot, with a host VMA behind it, a write only to a writable slot
and VMA, and no execution of device memory, completes within FAULT_BOUND (4) stage-2 faults, plus
one per injected MMU-notifier race; with an injected allocation failure it may instead fail with
-ENOMEM, cleanly.

Why: a fault handler that returns success without mapping (or maps something the retried access
faults on again) livelocks the vCPU: the guest spins on the same instruction forever.

Constrains: kvm_handle_guest_abort, user_mem_abort (the retry on a notifier race, the mapping
size it settles on), handle_access_fault, transparent_hugepage_adjust.
""", constrains=FAULT_PATH + ("transparent_hugepage_adjust",))

declare("""C-MMU-ABORT: an access the memslots or the host do not allow ends as KVM routes it.

Statement: outside memslots (or a write to a read-only one) an instruction fetch is a prefetch
abort injected into the guest, a stage-1 page-table walk a data abort, a cache maintenance
operation is skipped, anything else exits to user space as MMIO; an instruction fetch from device
memory is a prefetch abort; an access with no host VMA behind the memslot is an error (-EFAULT).

Why: the routing is the guest-visible behaviour of a stage-2 fault; an MMIO exit where the guest
expects an abort (or the reverse) is a guest crash or a VMM confused about a device access.

Constrains: kvm_handle_guest_abort, io_mem_abort, user_mem_abort.
""", constrains=("kvm_handle_guest_abort", "io_mem_abort", "user_mem_abort"))

declare("""C-MMU-PREPARE: a memory-region update is refused exactly where mmu.c refuses it.

Statement: kvm_arch_prepare_memory_region returns -EFAULT exactly for regions ending beyond the
IPA space and -EINVAL for dirty logging over a VM_PFNMAP VMA; on success every PFNMAP page of the
region is mapped as device memory at its physical address; a failed region update maps nothing
new in its range.

Why: a memslot beyond the IPA space cannot be mapped at all, and dirty logging of device memory
cannot work; accepting either leaves the VMM believing in a region the guest cannot use.

Constrains: kvm_arch_prepare_memory_region, kvm_phys_addr_ioremap.
""", constrains=("kvm_arch_prepare_memory_region", "kvm_phys_addr_ioremap"))

declare("""C-MMU-COMMIT: enabling dirty logging write-protects the memslot.

Statement: after a region update that turns dirty logging on (without
KVM_DIRTY_LOG_INITIALLY_SET) no page of the slot is writable at stage 2; with initially-all-set
the new dirty bitmap has every bit set.

Why: dirty logging relies on the first write to each page faulting; a page left writable is
written without a fault, never logged, and lost by live migration.

Constrains: kvm_arch_commit_memory_region, kvm_mmu_wp_memory_region.
""", constrains=("kvm_arch_commit_memory_region", "kvm_mmu_wp_memory_region"))

declare("""C-MMU-FLUSH-SLOT: a deleted or moved memslot's old range is unmapped.

Statement: after a region update that deletes or moves a slot, nothing is mapped at stage 2 in
the slot's old IPA range.

Why: a mapping left behind keeps the guest's access to host memory the VMM has taken back.

Constrains: kvm_arch_flush_shadow_memslot.
""", constrains=("kvm_arch_flush_shadow_memslot",))

declare("""C-MMU-NOTIFIER: the MMU-notifier hooks follow the host's changes.

Statement: after a host invalidation (split, zap, KSM merge, munmap) nothing is mapped at the IPAs
of the invalidated HVAs (change_pte may leave KSM's new page mapped read-only); age reports whether
the leaf at the first gfn of each memslot's part of the range was young and leaves it old;
test_age reports that leaf's youngness for the address it is given.

Why: the stage-2 tables are a cache of the host's page tables; a translation that outlives the
host's is a guest still writing a page the host has freed or shared.

Constrains: kvm_unmap_gfn_range, kvm_set_spte_gfn, kvm_age_gfn, kvm_test_age_gfn.
""", constrains=("kvm_unmap_gfn_range", "kvm_set_spte_gfn", "kvm_age_gfn", "kvm_test_age_gfn"))

declare("""C-MMU-WP: harvested dirty pages are write-protected again.

Statement: every page whose dirty bit the VMM harvested and cleared (KVM_GET_DIRTY_LOG /
KVM_CLEAR_DIRTY_LOG) is not writable at stage 2 afterwards.

Why: the next write to such a page must fault so that it is logged again; a page left writable
is modified after its copy was taken, silently.

Constrains: kvm_mmu_write_protect_pt_masked, kvm_arch_mmu_enable_log_dirty_pt_masked.
""", constrains=("kvm_mmu_write_protect_pt_masked", "kvm_arch_mmu_enable_log_dirty_pt_masked"))

declare("""C-MMU-IOREMAP: kvm_phys_addr_ioremap maps the whole request as device memory.

Statement: a successful ioremap maps every page of the request (its in-page offset included) as
device memory at its physical address, writable exactly when asked.

Why: the VMM maps device regions (the GIC's CPU interface) this way; a missing page faults the
guest, a normal-memory attribute lets it speculate into a device.

Constrains: kvm_phys_addr_ioremap.
""", constrains=("kvm_phys_addr_ioremap",))

declare("""C-MMU-UNMAP-VM: stage2_unmap_vm unmaps the RAM of every memslot and keeps the rest.

Statement: after stage2_unmap_vm nothing is mapped in the non-PFNMAP parts of any memslot, and the
PFNMAP parts keep their mappings.

Why: on a vCPU reset KVM must drop every RAM mapping so the guest sees memory as the VMM left
it; unmapping device regions instead would lose mappings nothing faults back in.

Constrains: stage2_unmap_vm, stage2_unmap_memslot.
""", constrains=("stage2_unmap_vm", "stage2_unmap_memslot"))

declare("""C-MMU-FAULT: user_mem_abort answers each kind of fault as 5.13 does.

Statement: for hand-picked faults: -EFAULT for a read permission fault, a missing VMA or a write
the host refuses; -ENOMEM when the memcache cannot be topped up or a table allocation fails (and
no dirty bit then); 0 for -EAGAIN from the map and for a notifier retry (nothing mapped); the
leaf's size and its R/W/X/device bits; the host page marked dirty / accessed.

Why: each of those answers is what the vCPU loop and the VMM act on; a wrong errno turns a retry
into a guest kill or a kill into a livelock.

Constrains: user_mem_abort, transparent_hugepage_adjust.
""", constrains=("user_mem_abort", "transparent_hugepage_adjust"))

declare("""C-MMU-TLB: the guest's TLB model ends every access as a table walk would.

Statement: a guest run with the TLB model ends every access exactly as one that walks the tables;
the TLB keeps valid young leaves per level until a TLBI of their IPA or VMID, a new table or a
drained log.

Why: the stage-2 checks judge KVM by what a guest with a TLB can still reach after each
operation; a TLB model that drops entries too early hides missing invalidations (S2-BBM).

Constrains: kvm_handle_guest_abort (the accesses replayed through it), __kvm_tlb_flush_vmid_ipa,
kvm_flush_remote_tlbs.
""", constrains=("kvm_handle_guest_abort", "__kvm_tlb_flush_vmid_ipa", "kvm_flush_remote_tlbs"))

declare("""C-MMU-ARGS: a call into the VM, host or hyp model with arguments that are not C values is refused and changes nothing.

Statement: every argument of an mmu.c entry point, a memslot or dirty-log ioctl, the host mm or the
hyp mappings is a value of its C type (u64 addresses and sizes, u32 slot ids, flags and page
counts, bools for flags that are bools). A call with any other argument raises TypeError or
ValueError and leaves the whole VM as it was: the raw state, the stage-2 pool and memcache, the
memslots and their dirty bitmaps, the ioremap records, the host's tables, references and notifiers,
and the hyp side (io_map_base, the ioremap cursor, the EL2 table). A call whose arguments are all
C values is never refused that way: the kernel answers it, with its errno where it has one.

Why: a model that accepts a negative size or moves io_map_base before refusing explores behaviour
no kernel has and can leave a broken VM that every later check then misjudges; one that refuses a
real kernel value hides the kernel's answer to it.

Constrains: kvm_handle_guest_abort, __kvm_set_memory_region, kvm_get_dirty_log_protect,
kvm_clear_dirty_log_protect, kvm_phys_addr_ioremap, create_hyp_mappings, create_hyp_io_mappings,
kvm_mmu_init, kvm_init_stage2_mmu, get_user_pages.
""", constrains=("kvm_handle_guest_abort", "__kvm_set_memory_region", "kvm_get_dirty_log_protect",
                 "kvm_clear_dirty_log_protect", "kvm_phys_addr_ioremap", "create_hyp_mappings",
                 "create_hyp_io_mappings", "kvm_mmu_init", "kvm_init_stage2_mmu",
                 "get_user_pages"))

declare("""C-MMU-RETURNS: every VM-level operation returns.

Statement: each operation the VM harness drives (a guest access and the faults it takes, a memslot
or dirty-log ioctl, an ioremap, stage2_unmap_vm, a host mm change and the notifiers it runs: zap,
THP split, KSM, ageing) comes back to its caller: it does not run on without end. Seen by the
harness around the call: one still running after its budget of CPU time
(ptspec.proofs.runner.budgets.IMPL_CALL_CPU_SECONDS, tens of times the longest operation measured)
breaks the statement, and the half-done state is not judged further.

Why: a fault handler or a notifier that loops is a vCPU or a host thread stuck with kvm->mmu_lock
held; it leaves no state for the other statements to judge, so without this one such a bug would
stop the check on its wall-clock guard (an "unknown" that depends on the machine's load) instead
of failing it with the operations that lead there.

Constrains: kvm_handle_guest_abort, user_mem_abort, __kvm_set_memory_region,
kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect, kvm_phys_addr_ioremap, stage2_unmap_vm,
kvm_unmap_gfn_range, kvm_set_spte_gfn, kvm_age_gfn.
""", constrains=("kvm_handle_guest_abort", "user_mem_abort", "__kvm_set_memory_region",
                 "kvm_get_dirty_log_protect", "kvm_clear_dirty_log_protect",
                 "kvm_phys_addr_ioremap", "stage2_unmap_vm", "kvm_unmap_gfn_range",
                 "kvm_set_spte_gfn", "kvm_age_gfn"))
