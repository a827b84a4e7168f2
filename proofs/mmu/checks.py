"""mmu.c obligations (``mmu.*``): the stage-2 fault path, memslots, dirty logging, notifiers, hyp VAs.

Importing this module registers them (see ``ptspec.proofs.runner.registry``). Each judges impl only through the
spec: ``spec.check_state`` (S2-*), ``ptspec.spec.stage2.bbm`` (S2-BBM per VM step), ``ptspec.spec.mmu.invariants`` (MS, MS-PERM, DIRTY), ``ptspec.spec.mmu.contracts`` (PROGRESS,
the DIRTY step rule, C-MMU-*), ``ptspec.spec.mmu.hyp_va`` (C-HYP-VA). A refutation carries the operation
sequence as Python, the violations, the memslots and the stage-2 tables, and the kernel function.
"""

from __future__ import annotations

from ptspec.proofs.engines.z3.explore import HangGuard, guard_ms
from ptspec.proofs.mmu import exhaustive as mmu_exhaustive
from ptspec.proofs.mmu import hyp_va as mmu_hypva
from ptspec.proofs.mmu import lockstep as mmu_machine
from ptspec.proofs.mmu import scenarios as mmu_scenarios
from ptspec.proofs.mmu.harness import counterexample
from ptspec.proofs.mmu.z3_programs import hyp_allocator
from ptspec.proofs.runner.registry import Result, cpu_rate, obligation

S2 = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "S2-BBM-WALK", "CMO-POC", "CMO-POU"]
MMU = ["MS", "MS-PERM", "DIRTY", "PROGRESS", "C-MMU-ABORT", "C-MMU-PREPARE", "C-MMU-COMMIT",
       "C-MMU-FLUSH-SLOT", "C-MMU-NOTIFIER", "C-MMU-WP", "C-MMU-IOREMAP", "C-MMU-UNMAP-VM", "C-MMU-CMO", "MMU-WARN",
       "C-MMU-RETURNS"]
FAULT_PATH = ["kvm_handle_guest_abort", "user_mem_abort", "fault_supports_stage2_huge_mapping",
              "transparent_hugepage_adjust", "handle_access_fault", "kvm_arch_prepare_memory_region",
              "kvm_arch_commit_memory_region", "kvm_arch_flush_shadow_memslot",
              "kvm_mmu_write_protect_pt_masked", "kvm_unmap_gfn_range", "kvm_set_spte_gfn",
              "kvm_age_gfn", "kvm_test_age_gfn", "kvm_phys_addr_ioremap", "stage2_unmap_vm"]
DEFAULT_EXHAUSTIVE = ["thp-head-tail", "hugetlb-pmd-misaligned", "ipa-top-end"]


@obligation("mmu.hypothesis.layouts", engine="hypothesis", invariants=S2 + MMU,
            kernel_functions=FAULT_PATH)
def hypothesis_layouts(ctx):
    """Random VMs over memslot layouts chosen to hurt (userspace_addr and base_gfn misaligned to
    each other, partial head and tail blocks, THP, every hugetlb size of the granule, PFNMAP, slots
    at the top of the IPA space, 4K/16K/64K), with guest reads, writes, executions, stage-1 walks
    and cache maintenance interleaved with dirty logging on and off, harvests, THP splits, zaps,
    KSM merges, aging, notifier invalidations between fault and install, allocation failures, slot
    moves and deletes, stage2_unmap_vm and ioremaps; every invariant after every step, every step
    against its contract."""
    examples = max(3, ctx.budget["hypothesis_examples"] // 6)
    steps = min(ctx.budget["steps"], 20)
    out = mmu_machine.run_machine(examples=examples, steps=steps, seed=ctx.seed,
                                  shrink_replays=ctx.budget["shrink_replays"])
    detail = (f"{out.examples} runs, {out.steps} steps, "
              f"{cpu_rate(out.steps, out.cpu_seconds)} steps per CPU second")
    if out.status == "refuted":
        return Result.refuted(out.failure.cx, detail=detail, examples=out.steps)
    return Result.passed(out.steps, detail)


@obligation("mmu.exhaustive.layouts", engine="exhaustive", invariants=S2 + MMU,
            kernel_functions=FAULT_PATH)
def exhaustive_layouts(ctx):
    """Every sequence of the exploration alphabet (reads, writes and executions at a slot's first
    pages, first block boundary, last page and just outside it; logging toggled; dirty log
    harvested; THP split; zap; a write racing with a THP split; a write whose table allocation
    fails; aging; a cancelled migration) up to the profile's depth minus one, from the initial
    state of small layouts (THP aligned / partial / misaligned, hugetlb PMD / CONT_PTE / CONT_PMD,
    PFNMAP, slots ending at or beyond the IPA limit); the default profile explores three layouts
    at depth 2, quick all of them at depth 1, deep all of them at depth 3."""
    depth = min(max(1, ctx.budget["exhaustive_depth"] - 1), 3)
    names = DEFAULT_EXHAUSTIVE if depth == 2 else None
    out = mmu_exhaustive.explore(depth, names, expired=ctx.expired, progress=ctx.progress)
    detail = (f"depth {depth}, {len(out.layouts)} layouts: {out.sequences} sequences, "
              f"{out.steps} steps ({cpu_rate(out.steps, out.cpu_seconds)} per CPU second)")
    if out.status == "refuted":
        return Result.refuted(out.counterexample, detail=detail, examples=out.steps)
    if out.status == "unknown":
        return Result.unknown(f"budget not completed (hang guard) at {detail}", examples=out.steps)
    return Result.proved(out.steps, detail)


@obligation("mmu.scenarios", engine="unit", invariants=S2 + MMU, kernel_functions=FAULT_PATH)
def scenarios(ctx):
    """Directed sequences through each known trouble spot of mmu.c (a block at a memslot's
    partial head, hugetlb PMD / CONT_PTE / CONT_PMD / PUD with disagreeing alignment, slots ending
    exactly at and beyond the IPA limit, a failing write fault while logging, permission faults
    after logging was switched off (also after an instruction fetch), logging over existing blocks,
    dirty masks with gaps, access-flag faults and aging, a THP split racing with a fault, KSM
    copy-on-write (and with a mapped neighbour, so that the moved page is mapped again), execution
    after a read, abort routing
    outside memslots, unaligned ioremap, PFNMAP slots under stage2_unmap_vm, deleting a slot,
    zaps), every step checked."""
    n = 0
    for name, h, found in mmu_scenarios.run_all(progress=ctx.progress):
        n += h.steps
        if found:
            return Result.refuted(counterexample(h, found), detail=f"scenario {name}", examples=n)
    return Result.passed(n, f"{len(mmu_scenarios.SCENARIOS)} scenarios, {n} steps")


@obligation("mmu.hyp.private-va", engine="unit", invariants=["C-HYP-VA"],
            kernel_functions=["__create_hyp_private_mapping", "create_hyp_io_mappings",
                              "create_hyp_exec_mappings", "kvm_mmu_init"])
def hyp_private_va(ctx):
    """Seeded sequences of private hyp mappings (io and exec) on 4K/16K/64K builds with 39-, 47-
    and 48-bit VAs, io_map_base starting low, just below and just above the half of the VA space,
    sizes at every boundary (0, 1, a page +- 1, the room left +- a page, the half), physical
    addresses with in-page offsets; each checked against C-HYP-VA and the EL2 table."""
    n_seq = max(20, ctx.budget["hypothesis_examples"] // 2)
    n, cx = mmu_hypva.run_sequences(n_seq, ctx.seed, expired=ctx.expired)
    if cx:
        cx = dict(cx, sequence=cx["ops"], ops="\n".join([
            "from ptspec.proofs.mmu.hyp_va import run_sequences",
            f"n, cx = run_sequences({n_seq}, {ctx.seed})   # the sequence above is the one it fails on",
            "assert cx is None, cx['violations']"]))
        return Result.refuted(cx, detail=f"after {n} requests", examples=n)
    if ctx.expired():       # run_sequences stops at the hang guard: its budget was not completed
        return Result.unknown(f"hang guard reached after {n} requests; budget of {n_seq} "
                              "sequences not completed", examples=n)
    return Result.passed(n, f"{n} private mappings in {n_seq} sequences")


@obligation("mmu.z3.hyp-va", engine="z3", invariants=["C-HYP-VA"],
            kernel_functions=["__create_hyp_private_mapping"])
def z3_hyp_va(ctx):
    """z3 runs the impl's own allocator arithmetic (hyp_private_va) on 64-bit vectors: for every
    io_map_base below 2**VA_BITS, every physical address and every size with size + offset at most
    half the VA space, the request is refused exactly when it does not fit below io_map_base within
    io_map_base's half, and an accepted one ends exactly at io_map_base (4K/39, 4K/48, 16K/47,
    64K/48)."""
    n = 0
    for vb, ps in ((39, 12), (48, 12), (47, 14), (48, 16)):
        try:   # the rlimit is the budget; the z3 clock is what is left of the hang guard
            guard = guard_ms(ctx.deadline)
        except HangGuard:
            return Result.unknown(f"hang guard reached after {n} geometries; budget not "
                                  "completed", examples=n)
        status, info = mmu_hypva.z3_allocator(vb, ps, guard, ctx.budget["z3_rlimit"])
        if status == "refuted":
            return Result.refuted({"ops": hyp_allocator(vb, ps)(info),
                                   "inputs": f"io_map_base={info['io_map_base']:#x}, "
                                             f"phys={info['phys']:#x}, size={info['size']:#x}, "
                                             f"va_bits={vb}, page_shift={ps}",
                                   "violations": ["C-HYP-VA the allocator's answer disagrees "
                                                  "with the room below io_map_base"],
                                   "tables": "", "kernel_function": "__create_hyp_private_mapping"},
                                  rlimit=ctx.budget["z3_rlimit"])
        if status != "proved":
            return Result.unknown(f"z3 {status} for VA_BITS {vb} / {1 << (ps - 10)}K: {info}",
                                  examples=n)
        n += 1
    return Result.proved(n, "4 geometries", rlimit=ctx.budget["z3_rlimit"])
