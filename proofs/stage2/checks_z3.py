"""The ``s2.z3.*`` obligations: z3 lemmas over the impl's own functions.

Importing this module registers them (``proofs/runner/registry.py``). Each one runs a lemma family of
``proofs/stage2/z3_lemmas.py``, ``proofs/stage2/z3_leafsteps.py`` (stage-2 pgtable.c), ``proofs/mmu/z3_lemmas.py``
(mmu.c memslot blocks) or ``proofs/lguest/z3_lemmas.py`` (lguest guest-entry checks) under the profile's z3 budget: ``z3_rlimit``
per query (the deterministic limit, recorded in the Result); the z3 clock is the check's hang guard
(``ctx.deadline``), never the budget. The detail names the largest resource use of one query, and an
unknown says whether the rlimit ("rlimit exhausted: N units") or the hang guard stopped it. A proof is
"proved"; a counterexample (inputs in hex, the violated statements, the path, and as ``ops`` a
program that calls the impl with those inputs and ends in the failing ``assert`` of the property:
the case's ``program`` builder, ``combine`` in ``z3_lemmas.py``) is "refuted"; z3
``unknown``, too many paths or the time budget running out is "unknown", never a pass.
"""

from __future__ import annotations

from ptspec.proofs.stage2 import z3_leafsteps
from ptspec.proofs.lguest import z3_lemmas as z3_lguest
from ptspec.proofs.mmu import z3_lemmas as z3_mmu
from ptspec.proofs.stage2 import z3_lemmas as z3_stage2
from ptspec.proofs.runner.registry import Result, obligation


def to_result(out, ctx) -> Result:
    """A z3_bv.Outcome as a registry Result."""
    rlimit = int(ctx.budget["z3_rlimit"])
    # nothing in the detail that varies between runs: no clock readings, and not the units a
    # query used (z3's count moves by a few units with what the process asked before)
    detail = f"{out.detail}; {out.queries} z3 queries, rlimit {rlimit} per query"
    if out.status == "proved":
        return Result.proved(examples=out.paths, detail=detail, rlimit=rlimit)
    if out.status == "refuted":
        cex = dict(out.counterexample or {})
        extra = ("replay", "entry", "refcount", "show_error", "program_error")
        shown = ("violated", "case", "path", "raised", "program") + extra
        return Result.refuted({"inputs": {k: v for k, v in cex.items() if k not in shown},
                               "case": cex.get("case"), "path": cex.get("path"),
                               "raised": cex.get("raised"),
                               **({"ops": cex["program"]} if cex.get("program") else {}),
                               **{k: cex[k] for k in extra if k in cex},
                               "violations": cex.get("violated", []),
                               "kernel_function": _KERNEL.get(ctx.check_id, "")},
                              detail=detail, examples=max(out.paths, 1), rlimit=rlimit)
    return Result.unknown(detail, examples=out.paths, rlimit=rlimit)


def _run(lemma, ctx) -> Result:
    b = ctx.budget
    return to_result(lemma(int(b["z3_rlimit"]), None, ctx.deadline), ctx)


_KERNEL: dict[str, str] = {}


QUICK = {"walk-index", "walk-advance", "descriptor-oa", "prot-attr", "owner", "needs-update",
         "lguest.index", "lguest.table-addr", "lguest.gpte", "mmu.thp-adjust"}


def _register(name, lemma, invariants, kernel_functions):
    oid = f"s2.z3.{name}"
    _KERNEL[oid] = kernel_functions[0]

    def run(ctx):
        return _run(lemma, ctx)
    run.__doc__ = lemma.__doc__
    profiles = {"quick", "default", "deep"} if name in QUICK else {"default", "deep"}
    obligation(oid, engine="z3", invariants=invariants, kernel_functions=kernel_functions,
               profiles=profiles)(run)


_register("block-mapping", z3_stage2.lemma_block_mapping, ["S2-BA", "C-MAP", "C-SET-OWNER"],
          ["kvm_block_mapping_supported", "kvm_level_supports_block_mapping",
           "kvm_phys_is_valid"])
_register("walk-index", z3_stage2.lemma_walk_index, ["C-GET-LEAF", "C-MAP", "C-UNMAP"],
          ["__kvm_pgtable_walk", "kvm_pgtable_idx"])
_register("root-index", z3_stage2.lemma_root_index, ["C-GET-LEAF", "C-INIT"],
          ["_kvm_pgtable_walk", "kvm_pgd_page_idx", "kvm_pgd_pages", "kvm_get_vtcr"])
_register("walk-advance", z3_stage2.lemma_walk_advance, ["C-UNMAP", "C-MAP", "C-WRPROTECT"],
          ["__kvm_pgtable_visit"])
_register("descriptor-oa", z3_stage2.lemma_descriptor_oa, ["S2-BA", "S2-TREE"],
          ["kvm_phys_to_pte", "kvm_pte_to_phys", "kvm_init_valid_leaf_pte", "kvm_set_table_pte"])
_register("prot-attr", z3_stage2.lemma_prot_attr, ["C-MAP", "C-GET-LEAF", "S2-BA", "S1-BA"],
          ["stage2_set_prot_attr", "kvm_pgtable_stage2_pte_prot", "hyp_set_prot_attr"])
_register("owner", z3_stage2.lemma_owner, ["S2-OWN", "S2-RC"],
          ["kvm_init_invalid_leaf_owner", "stage2_pte_is_counted"])
_register("needs-update", z3_stage2.lemma_needs_update, ["C-MAP"],
          ["stage2_pte_needs_update"])
_register("rc-own.map-leaf", z3_leafsteps.lemma_map_leaf, ["S2-RC", "S2-OWN", "S2-LEAK", "C-MAP"],
          ["stage2_map_walker_try_leaf", "stage2_map_walk_leaf", "stage2_put_pte"])
_register("rc-own.set-owner-leaf", z3_leafsteps.lemma_set_owner_leaf,
          ["S2-RC", "S2-OWN", "S2-LEAK"],
          ["stage2_map_walker_try_leaf", "kvm_pgtable_stage2_set_owner"])
_register("rc-own.unmap-step", z3_leafsteps.lemma_unmap_step,
          ["S2-RC", "S2-OWN", "S2-LEAK", "C-UNMAP"], ["stage2_unmap_walker", "stage2_put_pte"])
_register("rc-own.free-step", z3_leafsteps.lemma_free_step, ["S2-RC", "S2-LEAK", "C-DESTROY"],
          ["stage2_free_walker"])
_register("mmu.huge-mapping", z3_mmu.lemma_huge_mapping, ["MS"],
          ["fault_supports_stage2_huge_mapping"])
_register("mmu.thp-adjust", z3_mmu.lemma_thp_adjust, ["MS"],
          ["transparent_hugepage_adjust", "fault_supports_stage2_huge_mapping"])
_register("mmu.hyp-va", z3_mmu.lemma_hyp_va, ["MS"],
          ["__create_hyp_private_mapping", "create_hyp_io_mappings", "create_hyp_exec_mappings"])
_register("lguest.gpte", z3_lguest.lemma_gpte, ["LG-SHADOW", "LG-BND"],
          ["check_gpte", "gpte_to_spte"])
_register("lguest.table-addr", z3_lguest.lemma_table_addr, ["LG-BND"],
          ["check_gpgd", "check_gpmd", "gpmd_addr", "gpte_addr"])
_register("lguest.index", z3_lguest.lemma_index, ["LG-BND"],
          ["guest_set_pgd", "pgd_index", "pmd_index", "pte_index"])
