"""The ``s2.proof.*`` obligations: the step and walk lemmas behind the operation-level theorem.

Importing this module registers them (``proofs/runner/registry.py``). ``s2.proof.step.*`` run the
walker-step lemmas of ``proofs/stage2/z3_steps_walkers.py`` and ``z3_steps_hyp.py`` (every
callback of every walker, on a whole symbolic table page); ``s2.proof.walk.*`` run the walk lemmas
of ``proofs/stage2/z3_steps_walk.py``. docs/proofs.md composes them into "every operation, from
every state satisfying the invariants and for every argument, returns with the invariants true".
The budget is the profile's ``z3_rlimit`` per query (deterministic); the z3 clock is the check's
hang guard only (``ctx.deadline``); z3 ``unknown`` or too many paths is "unknown", never a pass. Their planted bugs are
``planted_proofs.STEP_CAUGHT_BY`` (tests/test_z3_steps.py).
"""

from __future__ import annotations

from ptspec.proofs.runner.registry import obligation
from ptspec.proofs.stage2 import z3_steps_hyp, z3_steps_map, z3_steps_walk, z3_steps_walkers
from ptspec.proofs.stage2.checks_z3 import to_result

# name -> (lemma, invariants, kernel functions)
STEPS = {
    "step.map-leaf": (z3_steps_map.lemma_map_leaf,
                      ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "C-MAP"],
                      ["stage2_map_walk_leaf", "stage2_map_walker_try_leaf", "kvm_set_table_pte",
                       "stage2_put_pte"]),
    "step.set-owner-leaf": (z3_steps_map.lemma_set_owner_leaf,
                            ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "C-SET-OWNER"],
                            ["stage2_map_walk_leaf", "kvm_pgtable_stage2_set_owner",
                             "kvm_init_invalid_leaf_owner"]),
    "step.map-table-pre": (z3_steps_map.lemma_map_table_pre,
                           ["S2-RC", "S2-TREE", "C-MAP"], ["stage2_map_walk_table_pre"]),
    "step.map-anchored-leaf": (z3_steps_map.lemma_map_anchored_leaf,
                               ["S2-RC", "S2-LEAK", "C-MAP"], ["stage2_map_walk_leaf"]),
    "step.map-table-post": (z3_steps_map.lemma_map_table_post,
                            ["S2-RC", "S2-BA", "S2-TREE", "S2-LEAK", "C-MAP"],
                            ["stage2_map_walk_table_post", "stage2_map_walk_leaf"]),
    "step.unmap": (z3_steps_walkers.lemma_unmap_step,
                   ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "C-UNMAP"],
                   ["stage2_unmap_walker", "stage2_put_pte"]),
    "step.attr": (z3_steps_walkers.lemma_attr_step,
                  ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "C-WRPROTECT"],
                  ["stage2_attr_walker", "stage2_update_leaf_attrs"]),
    "step.free": (z3_steps_walkers.lemma_free_step, ["S2-RC", "S2-LEAK", "C-DESTROY"],
                  ["stage2_free_walker", "kvm_pgtable_stage2_destroy"]),
    "step.flush": (z3_steps_walkers.lemma_flush_step, ["S2-RC", "S2-OWN", "S2-BA", "C-FLUSH"],
                   ["stage2_flush_walker", "kvm_pgtable_stage2_flush"]),
    "step.hyp-map": (z3_steps_hyp.lemma_hyp_map_step, ["S1-RC", "S1-BA", "S1-TREE", "C-HYP-MAP"],
                     ["hyp_map_walker", "hyp_map_walker_try_leaf", "kvm_set_table_pte"]),
}
STEPS.update({name: spec for name, spec in z3_steps_walk.CHECKS.items()})

KERNEL = {f"s2.proof.{name}": fns[0] for name, (_, _, fns) in STEPS.items()}


def _register(name, lemma, invariants, kernel_functions):
    oid = f"s2.proof.{name}"

    def run(ctx):
        b = ctx.budget
        out = lemma(int(b["z3_rlimit"]), None, ctx.deadline)
        r = to_result(out, ctx)
        if r.counterexample is not None:
            r.counterexample["kernel_function"] = KERNEL[oid]
            # to_result puts the step's replay (a pasteable program ending in the failed assert)
            # under "ops", where every z3 refutation keeps its program
        return r
    run.__doc__ = lemma.__doc__
    obligation(oid, engine="z3", invariants=invariants, kernel_functions=kernel_functions,
               profiles={"default", "deep"})(run)


for _name, (_lemma, _inv, _fns) in STEPS.items():
    _register(_name, _lemma, _inv, _fns)
