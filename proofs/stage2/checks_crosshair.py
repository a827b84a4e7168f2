"""The ``s2.crosshair.*`` obligations: CrossHair contracts on impl functions and spec/impl diffs.

Importing this module registers them (``proofs/runner/registry.py``). Each runs CrossHair in-process
(``proofs/engines/crosshair.py``) on the targets of ``proofs/stage2/crosshair_targets.py`` with the profile's
``crosshair_max_iterations`` (paths tried per contract or diff pair) and ``crosshair_smt_rlimit`` (z3
resource units per query): the same verdict on any machine. CrossHair's own clocks are set to what is
left of the check's hang guard (``ctx.deadline``), so they only stop a hung run. A refutation's ``ops`` is a program that
makes the refuting call and ends in the failing ``assert`` (``proofs/stage2/crosshair_programs.py``).
A pass needs CrossHair's own evidence:
"confirmed over all paths" for a contract, "all paths exhausted" for a diff; anything short of
that is unknown, and says why (iteration budget, rlimit, hang guard). Not in the quick profile.
"""

from __future__ import annotations

from ptspec.proofs.stage2 import crosshair_programs as CP
from ptspec.proofs.stage2 import crosshair_targets as T
from ptspec.proofs.runner.registry import Result, obligation

PROFILES = {"default", "deep"}


def _limits(ctx):
    """The profile's CrossHair budget, with what is left of the check's hang guard as its clock."""
    from ptspec.proofs.engines.crosshair import Budget
    b = ctx.budget
    return Budget(int(b["crosshair_max_iterations"]), int(b["crosshair_smt_rlimit"]),
                  max(ctx.time_left(), 0.0))


def _result(outs, kernel_function, invariant) -> Result:
    """Fold several CrossHair outcomes: the first refutation, else any unknown, else passed."""
    for o in outs:
        if o.status == "refuted":
            cex = dict(o.counterexample or {})
            cex["kernel_function"] = kernel_function
            cex["violations"] = [f"{invariant}: {o.detail}"]
            return Result.refuted(cex, detail=o.detail, examples=max(o.paths, 1))
    detail = "; ".join(o.detail for o in outs)        # deterministic: no clock readings
    if any(o.status != "passed" for o in outs):
        return Result.unknown(detail, examples=sum(o.paths for o in outs))
    return Result.passed(sum(o.paths for o in outs), detail)


def _contracts(ctx, fns, kernel_function, invariant):
    from ptspec.proofs.engines.crosshair import check_contract
    outs = []
    for fn in fns:
        outs.append(check_contract(fn, _limits(ctx)))
        cex = outs[-1].counterexample
        if outs[-1].status == "refuted" and cex:
            program = CP.contract_program(fn, cex.get("call", ""), cex.get("condition", ""))
            if program:
                cex["ops"] = program
        if outs[-1].status != "passed":
            break
    return _result(outs, kernel_function, invariant)


def _hex(text):
    """A CrossHair repr of an int as hex (other values unchanged)."""
    try:
        return hex(int(text))
    except (TypeError, ValueError):
        return text


def _diffs(ctx, pairs, kernel_function, invariant, annotate=None, setup=()):
    from ptspec.proofs.engines.crosshair import diff
    outs = []
    for a, b in pairs:
        out = diff(a, b, _limits(ctx))
        if out.status == "refuted":
            cex = out.counterexample
            cex["args"] = {k: _hex(v) for k, v in cex["args"].items()}
            for side in (a.__name__, b.__name__):
                cex[side]["returns"] = _hex(cex[side]["returns"])
            if annotate is not None:
                cex.update(annotate(cex["args"]))
            cex["ops"] = CP.diff_program(a, b, cex["args"], setup, kernel_function)
        outs.append(out)
        if out.status != "passed":
            break
    return _result(outs, kernel_function, invariant)


@obligation("s2.crosshair.prot-attr", engine="crosshair", invariants=["C-MAP"],
            kernel_functions=["stage2_set_prot_attr"], profiles=PROFILES)
def prot_attr(ctx):
    """Contract: for every R/W/X/DEVICE combination and FWB setting, stage2_set_prot_attr returns
    the architecture's attribute encoding (ptspec.spec.arch.descriptor.prot_attrs), or -EINVAL exactly for
    executable device memory; confirmed by CrossHair over all paths."""
    return _contracts(ctx, [T.stage2_prot_attr], "stage2_set_prot_attr", "C-MAP")


@obligation("s2.crosshair.walk-range", engine="crosshair", invariants=["C-UNMAP", "C-MAP"],
            kernel_functions=["__kvm_pgtable_walk", "__kvm_pgtable_visit"], profiles=PROFILES)
def walk_range(ctx):
    """Contract: the impl walker over one last-level table page (a list of descriptors, a callback
    collecting indices in a list) visits exactly the entries of [first, first + n) pages in order
    and stops at the end of the page, for ranges at both ends of the page; confirmed by CrossHair
    over all paths."""
    return _contracts(ctx, [T.walk_last_level], "__kvm_pgtable_walk", "C-UNMAP")


@obligation("s2.crosshair.diff.walk-index", engine="crosshair", invariants=["C-GET-LEAF"],
            kernel_functions=["__kvm_pgtable_walk"], profiles=PROFILES)
def diff_walk_index(ctx):
    """diffbehavior, 4K granule: for every address below the IPA limit and every level 1..3, the
    entry the impl walker visits is the architecture's index (address bits of the level); no
    difference and all paths exhausted."""
    return _diffs(ctx, [(T.impl_walk_index_4k, T.spec_walk_index_4k)], "__kvm_pgtable_walk",
                  "C-GET-LEAF")


@obligation("s2.crosshair.diff.block-size", engine="crosshair", invariants=["S2-BA", "C-MAP"],
            kernel_functions=["kvm_block_mapping_supported", "stage2_map_walker_try_leaf"],
            profiles=PROFILES)
def diff_block_size(ctx):
    """diffbehavior, 16K granule from level 2: for every page-aligned range and output address
    below 2**40, the first level at which the impl's kvm_block_mapping_supported lets map install a
    leaf is the largest leaf the architecture allows (aligned input and output, inside the range);
    no difference and all paths exhausted."""
    return _diffs(ctx, [(T.impl_block_level_16k, T.spec_block_level_16k)],
                  "kvm_block_mapping_supported", "S2-BA")


@obligation("s2.crosshair.diff.translate", engine="crosshair", invariants=["C-MAP", "S2-BA"],
            kernel_functions=["kvm_pgtable_stage2_map", "kvm_pgtable_get_leaf",
                              "kvm_pte_to_phys"], profiles=PROFILES)
def diff_translate(ctx):
    """diffbehavior, 64K granule / 52-bit IPA: after mapping a 512M block and a page with output
    addresses above 2**48, the translation of each probe address (both sides of every mapping
    boundary) through the impl's table (get_leaf + kvm_pte_to_phys + offset) is what the maps
    asked for; no difference and all paths exhausted."""
    T.build_tables()
    return _diffs(ctx, [(T.impl_translate_64k, T.spec_translate_64k)], "kvm_pgtable_get_leaf",
                  "C-MAP", setup=("build_tables()",), annotate=lambda args: {
                      "ipa": hex(T.PROBES["64k"][int(args["i"], 16)]),
                      "maps": [f"map({a:#x}, {n:#x}, {p:#x})"
                               for a, n, p in T.TRANSLATE_SETUPS["64k"][2]]})


@obligation("s2.crosshair.diff.memslot", engine="crosshair", invariants=["MS"],
            kernel_functions=["fault_supports_stage2_huge_mapping"], profiles=PROFILES)
def diff_memslot(ctx):
    """diffbehavior, 4K granule, 2M blocks: for every memslot (base gfn below 2**28, up to 4096
    pages) holding the faulting host address (at a 2M boundary, and inside a block),
    fault_supports_stage2_huge_mapping allows the block exactly when it lies inside the memslot and
    maps the host pages at the same offsets; no difference and all paths exhausted."""
    return _diffs(ctx, [(T.impl_memslot_block_4k, T.spec_memslot_block_4k)],
                  "fault_supports_stage2_huge_mapping", "MS")
