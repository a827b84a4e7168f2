"""Spec-judged kernel obligations: the cached Linux ``pgtable.c`` under the stage-2 lock-step.

``kernel.lockstep.<geometry>`` runs ``ptspec check-kernel``'s judgement (``check.check_geometry``)
on the cached Debian source: the C code driven by the shared stage-2 strategies, every invariant
after every operation, every operation against its contract, catalogued findings of the tree's
version reported as such. Without the cached source or a C compiler they are "unknown" (never
passed) with the reason. Every id starts with ``kernel.`` so a selection can leave them out.
"""

from __future__ import annotations

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import check
from ptspec.proofs.kernel import subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner.registry import Obligation, Result, register

# The geometries ptspec verify runs (check-kernel --geometry all runs every one), and the share
# of the profile's lock-step runs each gets (a divisor; the C side costs about what impl does).
VERIFY_SHARE = {"4k-39": 4, "4k-34": 8, "64k-44": 8}
FUNCTIONS = ["kvm_pgtable_walk", "__kvm_pgtable_visit", "stage2_map_walker_try_leaf",
             "stage2_map_walk_table_pre", "stage2_map_walk_leaf", "stage2_map_walk_table_post",
             "kvm_pgtable_stage2_set_owner", "stage2_unmap_walker", "stage2_attr_walker",
             "stage2_flush_walker", "stage2_free_walker", "stage2_put_pte",
             "kvm_pgtable_stage2_relax_perms", "kvm_pgtable_get_leaf",
             "__kvm_pgtable_stage2_init", "kvm_pgtable_stage2_destroy"]


def _lockstep(name: str):
    def run(ctx) -> Result:
        tree, why = T.supported_default_tree()
        if tree is None:
            return Result.unknown(f"not checked: {why}")
        try:
            build.library(subject.GEOMETRIES[name][0], tree)
        except build.BuildError as exc:
            return Result.unknown(f"not checked: {str(exc).splitlines()[0]}")
        budget = dict(ctx.budget)
        runs = max(4, int(budget["lockstep_runs"]) // VERIFY_SHARE[name])
        budget["lockstep_runs"] = runs * check.SHARE[name]          # check divides by SHARE
        return check.check_geometry(tree, name, budget, ctx.seed)
    run.__doc__ = (f"The kernel's own pgtable.c (the cached Debian source), geometry {name}, "
                   "driven by the shared stage-2 strategies and judged by the spec alone: every "
                   "invariant after every operation, every operation against its contract, "
                   "injected allocation failures and bad arguments; catalogued findings of the "
                   "tree's kernel version are reported as such, anything else refutes.")
    return run


for _name in VERIFY_SHARE:
    register(Obligation(f"kernel.lockstep.{_name}", "random", check.INVARIANTS,
                        _lockstep(_name).__doc__, _lockstep(_name), kernel_functions=FUNCTIONS))
