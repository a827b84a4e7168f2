"""Spec-judged kernel obligations beside the lock-step: the other C-side engines, cached source.

``kernel.exhaustive.4k-39`` (bounded exhaustive exploration), ``kernel.errorpaths.4k-39``
(allocation failure at every allocation point), ``kernel.refusal.4k-39`` (bad arguments) and
``kernel.hyp.4k-48`` (hyp stage 1) run ``ptspec.proofs.kernel.engines`` on the cached Debian
source, as ``check-kernel --engines`` does on any tree, at a smaller budget (``verify_budget``:
exploration one operation shallower, a quarter of the hyp runs; check-kernel runs the profile's).
Without the cached source, with a tree of another shape or without a C compiler they are
"unknown" (never passed) with the reason.
"""

from __future__ import annotations

from ptspec.proofs.kernel import engines as E
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner.registry import Obligation, Result, register

FUNCTIONS = {
    "exhaustive": ["kvm_pgtable_walk", "__kvm_pgtable_visit", "stage2_map_walker_try_leaf",
                   "stage2_map_walk_table_pre", "stage2_map_walk_leaf",
                   "kvm_pgtable_stage2_set_owner", "stage2_unmap_walker", "stage2_attr_walker",
                   "stage2_flush_walker", "kvm_pgtable_stage2_relax_perms"],
    "errorpaths": ["stage2_map_walk_leaf", "stage2_map_walk_table_pre",
                   "kvm_pgtable_stage2_set_owner", "__kvm_pgtable_stage2_init",
                   "kvm_pgtable_walk"],
    "refusal": ["kvm_pgtable_stage2_map", "kvm_pgtable_stage2_set_owner", "kvm_pgtable_walk",
                "kvm_pgtable_stage2_relax_perms", "kvm_pgtable_get_leaf"],
    "hyp": ["kvm_pgtable_hyp_init", "kvm_pgtable_hyp_map", "hyp_map_walker",
            "kvm_pgtable_hyp_unmap", "hyp_unmap_walker", "kvm_pgtable_hyp_destroy",
            "hyp_free_walker"],
}
STATEMENTS = {
    "exhaustive": "Every sequence of the stage-2 exploration alphabet up to the profile's depth on "
                  "the kernel's own pgtable.c (the cached Debian source), two 2M blocks of a "
                  "4K / 39-bit table, states deduplicated by tree shape and cache ghost; every "
                  "transition judged by the spec alone (every invariant, S2-BBM, its contract, "
                  "WARN_ONs).",
    "errorpaths": "Every allocation point of the kernel's map and set_owner made to fail in turn "
                  "(from states holding blocks, pages, owner annotations and a 1G block), init "
                  "with its root allocation failing, the identity-mapped table: every invariant "
                  "after each failure and each failure against its contract's failure rule.",
    "refusal": "Bad arguments to the kernel's pgtable.c from five starting states: the errno "
               "the contract names and nothing changed, every invariant intact; values that are "
               "not u64 refused before the C code runs (C-ARGS).",
    "hyp": "The kernel's own hyp stage-1 code (kvm_pgtable_hyp_init, _map, _unmap where the tree "
           "has it, _destroy) driven by random sequences and judged by the S1-* invariants and "
           "C-HYP-* contracts after every step.",
}


def verify_budget(budget) -> dict:
    """What ptspec verify gives the engines (check-kernel gives the whole profile): exploration
    one operation shallower, a quarter of the hyp runs; about 4 s at the default profile."""
    out = dict(budget)
    out["exhaustive_depth"] = max(1, int(budget["exhaustive_depth"]) - 1)
    out["hypothesis_examples"] = max(8, int(budget["hypothesis_examples"]) // 4)
    return out


def _engine(engine: str):
    def run(ctx) -> Result:
        tree, why = T.supported_default_tree()
        if tree is None:
            return Result.unknown(f"not checked: {why}")
        return E.run_engine(tree, engine, verify_budget(ctx.budget), seed=ctx.seed,
                            expired=ctx.expired, progress=ctx.progress)
    run.__doc__ = STATEMENTS[engine]
    return run


for _engine_name, (_cid, _ids) in E.CHECKS.items():
    register(Obligation(_cid, E.ENGINE_KIND[_engine_name], _ids,
                        STATEMENTS[_engine_name], _engine(_engine_name),
                        kernel_functions=FUNCTIONS[_engine_name]))
