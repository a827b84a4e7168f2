"""Hyp stage-1 obligations: lock-step runs of kvm_pgtable_hyp_init / _map / _destroy.

Importing this module registers them (see ptspec.proofs.runner.registry). Each run checks S1-TREE, S1-BA, S1-RC,
S1-LEAK after every step and every step against its C-HYP-* contract (ptspec.spec.hyp.contracts),
its WARN_ONs against C-HYP-WARN (ptspec.spec.hyp.warn).
"""

from __future__ import annotations

from ptspec.proofs.hyp import lockstep as hyp_lockstep
from ptspec.proofs.stage2.checks import counterexample
from ptspec.proofs.runner.registry import Obligation, Result, register

HYP_IDS = ["S1-TREE", "S1-BA", "S1-RC", "S1-LEAK", "C-HYP-INIT", "C-HYP-MAP", "C-HYP-DESTROY",
           "C-HYP-WARN", "C-RETURNS"]
HYP_FUNCTIONS = ["kvm_pgtable_hyp_init", "kvm_pgtable_hyp_map", "hyp_map_walker",
                 "hyp_map_walker_try_leaf", "hyp_pte_needs_update", "hyp_set_prot_attr",
                 "kvm_pgtable_hyp_destroy", "hyp_free_walker"]


# Share of the profile's hypothesis runs per hyp geometry (divisor), as for stage 2: EL2 maps are
# fewer and smaller than a guest's, and 16K/64K tables cost more per step.
HYP_SHARE = {"4k-48": 2, "16k-47": 8, "64k-48": 16}


def hyp_examples(name: str, budget) -> int:
    return max(1, budget["hypothesis_examples"] // HYP_SHARE[name])


def _hyp_check(name: str):
    def run(ctx):
        out = hyp_lockstep.run_hyp_lockstep(name, examples=hyp_examples(name, ctx.budget),
                                            steps=ctx.budget["steps"], seed=ctx.seed,
                                            shrink_replays=ctx.budget["shrink_replays"])
        detail = f"{out.examples} runs, {out.steps} steps"
        if out.status == "refuted":
            f = out.failure
            cx = counterexample(f.program, f.violations, f.raw_state, f.note)
            cx["kernel_function"] = "kvm_pgtable_hyp_map"
            return Result.refuted(cx, detail=detail, examples=out.steps)
        return Result.passed(out.steps, detail)
    page_shift, va_bits = hyp_lockstep.HYP_GEOMETRIES[name]
    run.__doc__ = (f"Random hyp stage-1 mappings on a {1 << (page_shift - 10)}K / {va_bits}-bit VA "
                   "table (EL2's own): pages, blocks, re-maps (identical, software bits only, "
                   "conflicting), block splits, refused prot values, addresses beyond the VA "
                   "range, injected allocation failures, destroy; S1-* after every step and "
                   "every step against C-HYP-*, its WARNs against C-HYP-WARN.")
    return run


for _name in hyp_lockstep.HYP_GEOMETRIES:
    register(Obligation(f"s2.hyp.lockstep.{_name}", "hypothesis", HYP_IDS, "", _hyp_check(_name),
                        kernel_functions=HYP_FUNCTIONS))
