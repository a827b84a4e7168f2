"""Stage-2 obligations: lock-step hypothesis runs, exhaustive exploration, error paths.

Importing this module registers them (see ``ptspec.proofs.runner.registry``). Each one judges impl only through
the spec (``Stage2Harness``) and turns a violation into a counterexample a reviewer can use: the
operation sequence as Python, the tables in ptdump style, the violations, and the kernel function
of the failing step.
"""

from __future__ import annotations

import re

from ptspec import spec

from ptspec.proofs.stage2 import errorpaths
from ptspec.proofs.stage2 import exhaustive
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2.ptdump import render
from ptspec.proofs.runner.registry import Obligation, Result, cpu_rate, obligation, register

ALL_S2 = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "S2-BBM-WALK"]
ALL_CONTRACTS = ["C-INIT", "C-MAP", "C-SET-OWNER", "C-UNMAP", "C-WRPROTECT", "C-MKYOUNG",
                 "C-MKOLD", "C-IS-YOUNG", "C-RELAX-PERMS", "C-FLUSH", "C-GET-LEAF", "C-DESTROY",
                 "C-CMO", "CMO-POC", "CMO-POU", "C-RETURNS"]

KERNEL_ENTRY = {
    "init": "__kvm_pgtable_stage2_init", "map": "kvm_pgtable_stage2_map",
    "set_owner": "kvm_pgtable_stage2_set_owner", "unmap": "kvm_pgtable_stage2_unmap",
    "wrprotect": "kvm_pgtable_stage2_wrprotect", "mkyoung": "kvm_pgtable_stage2_mkyoung",
    "mkold": "kvm_pgtable_stage2_mkold", "is_young": "kvm_pgtable_stage2_is_young",
    "relax_perms": "kvm_pgtable_stage2_relax_perms", "flush": "kvm_pgtable_stage2_flush",
    "get_leaf": "kvm_pgtable_get_leaf", "destroy": "kvm_pgtable_stage2_destroy",
}
MAP_FUNCTIONS = ["kvm_pgtable_walk", "__kvm_pgtable_visit", "stage2_map_walker_try_leaf",
                 "stage2_map_walk_table_pre", "stage2_map_walk_leaf", "stage2_map_walk_table_post",
                 "kvm_pgtable_stage2_set_owner", "stage2_unmap_walker", "stage2_attr_walker",
                 "stage2_flush_walker", "stage2_free_walker", "kvm_pgtable_stage2_relax_perms"]


def counterexample(program: str, violations: list[str], raw_state: dict | None,
                   note: str = "") -> dict:
    """The report's counterexample: the program (a replay ending in the judge, or the impl calls),
    the violations, the tables, the kernel function of the last operation, how it was obtained."""
    last = re.findall(r"\bpgt\.(\w+)\(", program)
    op = last[-1] if last else ""
    tables = ""
    if raw_state is not None:
        try:
            tables = render(spec.load_state(raw_state))
        except Exception as exc:     # the state may be too broken to draw; say so, keep the rest
            tables = f"(tables not drawable: {exc})"
    cx = {"ops": program, "violations": violations, "tables": tables,
          "kernel_function": KERNEL_ENTRY.get(op, op)}
    if note:
        cx["replay"] = note
    return cx


# Share of the profile's lock-step runs per geometry (divisor): 4K/39 is the primary geometry,
# where the planted-bug tests measure the checker; a step on a 16K or 64K table (2048 / 8192
# entries) costs several times a 4K one, so those get fewer runs for the same time.
LOCKSTEP_SHARE = {"4k-39": 1, "4k-48": 2, "4k-34": 2, "16k-47": 4, "64k-44": 8}


def lockstep_examples(name: str, budget) -> int:
    """Lock-step runs for one stage-2 geometry under a profile's budget."""
    return max(1, budget["lockstep_runs"] // LOCKSTEP_SHARE.get(name, 1))


def _lockstep_check(name: str):
    def run(ctx):
        examples = lockstep_examples(name, ctx.budget)
        out = lockstep.run_lockstep(name, examples=examples, steps=ctx.budget["steps"],
                                    seed=ctx.seed, shrink_replays=ctx.budget["shrink_replays"])
        detail = (f"{out.examples} runs, {out.steps} steps, "
                  f"{cpu_rate(out.steps, out.cpu_seconds)} steps per CPU second")
        if out.status == "refuted":
            f = out.failure
            return Result.refuted(counterexample(f.program, f.violations, f.raw_state, f.note),
                                  detail=detail, examples=out.steps)
        return Result.passed(out.steps, detail)
    page_shift, ia_bits, field = lockstep.GEOMETRIES[name]
    run.__doc__ = (f"Random operation sequences on a {1 << (page_shift - 10)}K / {ia_bits}-bit IPA "
                   f"stage-2 table (owner field {field[0]}:{field[1]}), impl and spec in lock-step: "
                   "every invariant after every step, every step against its contract, bad "
                   "arguments and injected allocation failures included.")
    return run


for _name in lockstep.GEOMETRIES:
    register(Obligation(f"s2.lockstep.{_name}", "random", ALL_S2 + ALL_CONTRACTS, "",
                        _lockstep_check(_name), kernel_functions=MAP_FUNCTIONS))


@obligation("s2.exhaustive.4k-39", engine="exhaustive", invariants=ALL_S2 + ALL_CONTRACTS,
            kernel_functions=MAP_FUNCTIONS)
def exhaustive_4k_39(ctx):
    """Every sequence of the exploration alphabet (block and page maps, straddling and
    permission-only re-maps, partial and whole unmaps, owner annotations, write-protect, access
    flag and permission changes, flush, an injected allocation failure) up to the profile's depth,
    over two 2M blocks of a 4K / 39-bit table, states deduplicated by tree shape and cache ghost
    (a state only cleaner than an explored one is skipped); every transition
    checked against every invariant and its contract."""
    depth = ctx.budget["stage2_exhaustive_depth"]
    out = exhaustive.explore(depth, expired=ctx.expired, progress=ctx.progress)
    detail = (f"depth {out.depth}: {out.states} distinct states, {out.transitions} transitions "
              f"({cpu_rate(out.transitions, out.cpu_seconds)} per CPU second)")
    if out.status == "refuted":
        return Result.refuted(counterexample(out.program, out.violations, out.raw_state),
                              detail=detail, examples=out.transitions)
    if out.status == "unknown":
        return Result.unknown(f"budget not completed (hang guard) at {detail}", examples=out.transitions)
    return Result.proved(out.transitions, detail)


@obligation("s2.errorpaths", engine="unit", invariants=ALL_S2 + ["C-MAP", "C-SET-OWNER", "C-INIT",
                                                                  "C-ARGS"],
            kernel_functions=["stage2_map_walk_leaf", "kvm_mmu_memory_cache_alloc",
                              "__kvm_pgtable_stage2_init", "_kvm_pgtable_walk"])
def error_paths(ctx):
    """Every allocation point of map and set_owner made to fail in turn, from states holding
    blocks, pages, owner annotations and a 1G block; initialisation with the root allocation
    failing; and bad arguments (unaligned, beyond the IPA space, size 0, wrapping and huge sizes,
    owner ids out of range, refused prot values, non-u64 values). After each: every invariant holds,
    nothing leaked, the failure rule of the operation's contract holds."""
    n = 0
    for label, h, found in errorpaths.run_all(progress=ctx.progress):
        n += 1
        if found:
            return Result.refuted(counterexample(exhaustive._program(h), [str(v) for v in found],
                                                 h.raw_state()), detail=label, examples=n)
        if ctx.expired():
            return Result.unknown(f"budget not completed (hang guard) after {n} cases", examples=n)
    return Result.passed(n, f"{n} failure injections and bad-argument calls")
