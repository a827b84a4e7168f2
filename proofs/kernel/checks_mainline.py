"""Spec-judged obligations on the reworked walker (Linux 6.2 and later) and its upstream fixes.

``kernel.mainline.lockstep.<version>`` runs ``check-kernel``'s judgement on a cached 6.x tree
(``~/.cache/ptspec/trees/linux-<version>*``): the stage-2 lock-step with split and
test_clear_young added, every invariant and contract after every step, and the reworked walker's
statements (spec/stage2/mainline.py); catalogued findings of the tree's version are reported as
such. ``kernel.mainline.upstream-fixes`` puts real 6.x fixes back out in scratch copies
(``planted_mainline``) and requires each reachable one to be caught by its shortest sequence,
while the cached, fixed tree passes the same sequence. ``kernel.mainline.hyp.<version>`` runs the
hyp stage-1 engine (``hyp.py``) on the tree at ``ptspec verify``'s hyp budget. Where the tree
cache lacks their trees, `verify` leaves them out and says so (``needs``, below); called directly,
or without a C compiler, they are "unknown" with the reason, never passed.
"""

from __future__ import annotations

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import check
from ptspec.proofs.kernel import planted_mainline as PM
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner.registry import Obligation, Result, register

INVARIANTS = check.INVARIANTS + check.MAINLINE_INVARIANTS
VERIFY_SHARE = {"4k-39": 16, "4k-40": 32, "4k-48": 32, "64k-44": 32}   # 4k-40: the fault path; verify runs a share per tree, check-kernel --tree the whole profile
TREES = ("6.2", "6.3", "6.6", "6.12", "7.1", "7.2", "7.3")   # 7.2 on: none cached yet (docs/kernel-mainline.md)
FUNCTIONS = ["kvm_pgtable_walk", "__kvm_pgtable_visit", "stage2_map_walker_try_leaf",
             "stage2_map_walk_table_pre", "stage2_try_break_pte", "stage2_make_pte",
             "stage2_unmap_put_pte", "stage2_unmap_walker", "kvm_pgtable_stage2_split",
             "stage2_split_walker", "kvm_pgtable_stage2_create_unlinked",
             "kvm_pgtable_stage2_free_unlinked", "kvm_pgtable_stage2_test_clear_young",
             "stage2_age_walker", "kvm_pgtable_stage2_relax_perms", "kvm_tlb_flush_vmid_range"]


def _tree(prefix):
    tree, why = T.cached_tree(prefix)
    if tree is None:
        return None, f"not checked: {why}"
    bad = T.unsupported(tree.shape) or (None if tree.shape.mainline else
                                        f"linux-{prefix} has no reworked walker")
    if bad:
        return None, f"not checked: {bad}"
    try:
        build.library(12, tree)
    except build.BuildError as exc:
        return None, f"not checked: {str(exc).splitlines()[0]}"
    return tree, ""


def _lockstep(prefix: str):
    def run(ctx) -> Result:
        tree, why = _tree(prefix)
        if tree is None:
            return Result.unknown(why)
        steps, notes = 0, []
        for name, share in VERIFY_SHARE.items():
            budget = dict(ctx.budget)
            runs = max(4, int(budget["lockstep_runs"]) // share)
            budget["lockstep_runs"] = runs * check.SHARE[name]      # check divides by SHARE
            r = check.check_geometry(tree, name, budget, ctx.seed)
            if r.status != "passed":
                return r
            steps += r.examples
            notes.append(r.detail)
        return Result.passed(steps, f"Linux {tree.version}: " + "; ".join(notes))
    run.__doc__ = (f"The reworked walker's own pgtable.c (cached linux-{prefix} tree), geometries "
                   f"{', '.join(VERIFY_SHARE)}, driven by the shared stage-2 strategies plus split "
                   "and test_clear_young and judged by the spec alone: every invariant and "
                   "contract after every step, the locked-PTE marker (S2-LOCKED), unlinked tables "
                   "(S2-RCU), table frees after their TLBI (S2-TABLE-TLBI); catalogued findings "
                   "of the tree's version are reported as such, anything else refutes.")
    return run


HYP_IDS = ["S1-TREE", "S1-BA", "S1-RC", "S1-LEAK", "C-HYP-INIT", "C-HYP-MAP", "C-HYP-UNMAP",
           "C-HYP-DESTROY", "C-HYP-WARN", "S1-UNMAP-TLBI", "C-RETURNS"]
HYP_FUNCTIONS = ["kvm_pgtable_hyp_init", "kvm_pgtable_hyp_map", "hyp_map_walker",
                 "hyp_map_walker_try_leaf", "kvm_pgtable_hyp_unmap", "hyp_unmap_walker",
                 "kvm_pgtable_hyp_destroy", "hyp_free_walker"]


def _hyp(prefix: str):
    def run(ctx) -> Result:
        from ptspec.proofs.kernel import checks_engines, engines
        tree, why = _tree(prefix)
        if tree is None:
            return Result.unknown(why)
        r = engines.run_engine(tree, "hyp", checks_engines.verify_budget(ctx.budget),
                               seed=ctx.seed, expired=ctx.expired, progress=ctx.progress,
                               geometry="4k-48")
        r.id = f"kernel.mainline.hyp.{prefix}"
        r.detail = f"Linux {tree.version}: {r.detail}"
        return r
    run.__doc__ = (f"The reworked walker's hyp stage-1 code (cached linux-{prefix} tree: "
                   "kvm_pgtable_hyp_init, _map, _unmap, _destroy on 4K / 48-bit VA) driven by "
                   "the hyp lock-step machine and judged by the spec alone after every step: the "
                   "S1-* invariants with the per-descriptor reference rule of trees that have "
                   "kvm_pgtable_hyp_unmap, the C-HYP-* contracts (C-HYP-UNMAP, C-HYP-WARN "
                   "included) and S1-UNMAP-TLBI (the EL2 invalidations of what an unmap "
                   "removed); catalogued findings of the tree's version are reported as such, "
                   "anything else refutes.")
    return run


def _present(prefix: str) -> bool:
    """Whether the tree cache holds a linux-<prefix>* directory (checked once, at import)."""
    base = T.trees_dir()
    return base.is_dir() and any(p.is_dir() and p.name[len(f"linux-{prefix}"):][:1] in ("", ".")
                                 for p in base.glob(f"linux-{prefix}*"))


def _needs(*prefixes):
    """Why none of these trees is cached (the obligation's optional input), or None."""
    if any(_present(p) for p in prefixes):
        return None
    return f"no {' or '.join(f'linux-{p}*' for p in prefixes)} tree in {T.trees_dir()}"


# These obligations judge trees a developer put in the tree cache. `ptspec verify` on a machine
# without them (CI, a fresh clone) leaves them out and names them in its summary, rather than
# reporting an "unknown" that would make every verify without 6.x trees exit 2.
for _p in TREES:
    register(Obligation(f"kernel.mainline.lockstep.{_p}", "random", INVARIANTS,
                        _lockstep(_p).__doc__, _lockstep(_p), kernel_functions=FUNCTIONS,
                        needs=lambda _p=_p: _needs(_p)))
    register(Obligation(f"kernel.mainline.hyp.{_p}", "hypothesis", HYP_IDS, _hyp(_p).__doc__,
                        _hyp(_p), kernel_functions=HYP_FUNCTIONS, needs=lambda _p=_p: _needs(_p)))


def upstream_fixes(ctx) -> Result:
    """Real upstream fixes of 6.x pgtable.c, put back out in scratch copies of the cached trees
    (the PTE reload after TABLE_PRE, the last page reference in free_removed, the double put after
    free_unlinked in create_unlinked, the PA offset inferred from the IPA in the map walker, the
    undeferred TLBI of a zapped table): each revert's shortest sequence is reported by the spec
    under one of its expected statements, and the fixed tree runs the same sequence clean."""
    n, missing = 0, []
    for rv in PM.REVERTS:
        if not rv.sequence:
            continue                      # unreachable single-threaded (split-double-put)
        tree, why = _tree(rv.tree)
        if tree is None:
            missing.append(rv.id)
            continue
        got, _ = PM.run_sequence(rv, PM.scratch_tree(rv, tree))
        clean, _ = PM.run_sequence(rv, tree)
        n += 1
        ids = {str(v).split()[0] for v in got}
        if not ids & set(rv.expect) or clean:
            return Result.refuted({"ops": "\n".join(f"{k} {a}" for k, a in rv.sequence),
                                   "violations": [f"{rv.id}: reverted -> {sorted(ids)}, expected "
                                                  f"one of {list(rv.expect)}; fixed tree -> "
                                                  f"{[str(v) for v in clean][:3]}"],
                                   "tables": "", "kernel_function": rv.edits[0].function},
                                  examples=n)
    if not n:
        return Result.unknown(f"not checked: no cached tree for {', '.join(missing)}")
    note = f" ({', '.join(missing)} not checked: tree missing)" if missing else ""
    return Result.passed(n, f"{n} reverted upstream fixes caught by the spec, their fixed trees "
                            f"clean{note}")


register(Obligation("kernel.mainline.upstream-fixes", "unit", INVARIANTS + ["KERNEL-WARN"],
                    upstream_fixes.__doc__, upstream_fixes, kernel_functions=FUNCTIONS,
                    needs=lambda: _needs(*sorted({rv.tree for rv in PM.REVERTS if rv.sequence}))))
