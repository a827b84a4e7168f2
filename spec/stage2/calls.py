"""What every call into the stage-2 page-table library must do, whatever the operation: C-ARGS,
KERNEL-WARN and C-RETURNS (arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 and the trees judged since).

Models three statements about calls rather than states: a call with arguments the kernel cannot be
given (Python misuse of the model) is refused cleanly, no call reaches one of the library's
WARN_ONs, and every call returns (no endless loop, no fault). They are evaluated by the lock-step harness (proofs/stage2/harness.py), which sees the
call and its arguments; the statements live here. Leaves out: the operations' own contracts (C-*).
"""

from ptspec.spec.statements import declare

declare("""C-ARGS: a call with arguments that are not kernel values is refused and changes nothing.

Statement: every argument of a stage-2 or hyp operation is a u64 (not a bool), an owner id a u8.
A call whose arguments are all such values is never refused with ValueError; a call with any other
argument raises ValueError and leaves the tables, refcounts and pool exactly as they were (and the
single-state invariants still hold); accepting such a call is itself the violation.

Why: the kernel's functions take u64 and u8 arguments: a Python model that accepts a negative
address or an address past 2**64 explores behaviour no kernel has, and one that refuses a real
kernel value hides the kernel's answer to it. Either way the verdicts stop being about KVM.

Constrains: every entry point the harness drives: kvm_pgtable_stage2_map,
kvm_pgtable_stage2_set_owner, kvm_pgtable_stage2_relax_perms, kvm_pgtable_get_leaf,
kvm_pgtable_stage2_destroy, kvm_pgtable_hyp_init, kvm_pgtable_hyp_map, and the walk they share
(_kvm_pgtable_walk).
""", constrains=("kvm_pgtable_stage2_map", "kvm_pgtable_stage2_set_owner",
                 "kvm_pgtable_stage2_relax_perms", "kvm_pgtable_get_leaf",
                 "kvm_pgtable_stage2_destroy", "kvm_pgtable_hyp_init", "kvm_pgtable_hyp_map",
                 "_kvm_pgtable_walk"))

declare("""KERNEL-WARN: no call reaches a WARN_ON of the page-table library.

Statement: during no operation does the library raise one of its WARN_ONs: a table installed over
a valid entry (kvm_set_table_pte), a walk beyond the last level (__kvm_pgtable_walk), no leaf
possible at the last level (stage2_map_walk_leaf, hyp_map_walker), a destroy walk that failed.
The identity-map WARN of kvm_pgtable_stage2_map (addr != phys) is the caller's misuse and is judged
by C-MAP (-EINVAL, nothing changed) instead.

Why: each WARN_ON asserts a state the library takes as impossible; one that fires means the tables
were already broken or the walk went where it must not, whatever the operation then returned.

Constrains: kvm_set_table_pte, __kvm_pgtable_walk, stage2_map_walk_leaf, hyp_map_walker,
kvm_pgtable_stage2_destroy, kvm_pgtable_hyp_destroy.
""", constrains=("kvm_set_table_pte", "__kvm_pgtable_walk", "stage2_map_walk_leaf",
                 "hyp_map_walker", "kvm_pgtable_stage2_destroy", "kvm_pgtable_hyp_destroy"))

declare("""C-RETURNS: every call into the page-table library returns.

Statement: each operation comes back to its caller with a result: it neither runs on without end
nor faults (a bad pointer, a stack overflow, a trap). Seen by the harness around the call: a
call still running after its budget of CPU time (ptspec.proofs.runner.budgets: CALL_CPU_SECONDS for
the kernel's C, ptspec.proofs.kernel.guard; IMPL_CALL_CPU_SECONDS for impl's Python,
ptspec.proofs.stage2.returns; tens to hundreds of times the longest operation measured) breaks
the statement, and so does a
C call stopped by SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP or SIGABRT (the stack protector); the
tables it left half done are not judged further.

Why: a walk that never ends is a CPU stuck at EL2 or in the host with the MMU lock held, and a
fault there is a host crash; neither leaves a state for the other statements to judge, so without
this statement a tree with such a bug would hang or kill the check instead of failing it.

Constrains: every entry point (kvm_pgtable_stage2_map, kvm_pgtable_stage2_unmap,
kvm_pgtable_stage2_set_owner, kvm_pgtable_hyp_map, ...) and the walk they share
(_kvm_pgtable_walk, __kvm_pgtable_walk, __kvm_pgtable_visit).
""", constrains=("kvm_pgtable_stage2_map", "kvm_pgtable_stage2_unmap",
                 "kvm_pgtable_stage2_set_owner", "kvm_pgtable_hyp_map", "_kvm_pgtable_walk",
                 "__kvm_pgtable_walk", "__kvm_pgtable_visit"))
