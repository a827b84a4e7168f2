"""Kernel-differential obligations: Linux 6.1 ``pgtable.c`` (run in userspace) against impl.

Each needs the Debian ``linux-source-6.1`` files in the kdiff cache and a C compiler. Neither is
fetched by ``ptspec verify`` unless ``PTSPEC_KDIFF_FETCH=1`` is set: without them the obligations
are "unknown" with the command that fetches the source (``ptspec diff-kernel --fetch``), never
passed. See docs/kdiff.md.
"""

from __future__ import annotations

import os

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import catalogue
from ptspec.proofs.kernel import differ
from ptspec.proofs.kernel import fetch
from ptspec.proofs.kernel.pair import KD_IDS
from ptspec.proofs.runner.registry import Result, obligation

C_SPEC = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "S2-BBM-WALK"]
FUNCTIONS = ["kvm_pgtable_walk", "__kvm_pgtable_visit", "stage2_map_walker_try_leaf",
             "stage2_map_walk_table_pre", "stage2_map_walk_leaf", "stage2_map_walk_table_post",
             "kvm_pgtable_stage2_set_owner", "stage2_unmap_walker", "stage2_attr_walker",
             "stage2_flush_walker", "stage2_free_walker", "stage2_put_pte",
             "kvm_pgtable_stage2_relax_perms", "kvm_pgtable_get_leaf", "__kvm_pgtable_stage2_init",
             "kvm_pgtable_stage2_destroy", "kvm_get_vtcr"]


def _ready():
    """None when the source is cached and builds; else the reason (fetching only if asked to)."""
    src, why = fetch.locate()
    if src is None and os.environ.get("PTSPEC_KDIFF_FETCH") == "1":
        try:
            src = fetch.fetch(progress=lambda m: None)
        except fetch.FetchError as exc:
            return f"skipped: {exc}"
    if src is None:
        return f"skipped: {why}"
    try:
        build.library(12, src)
    except build.BuildError as exc:
        return f"skipped: {exc}"
    return None


def _refuted(finding, n):
    cex = {"ops": finding.program, "violations": finding.lines, "tables": finding.tables_c,
           "tables_impl": finding.tables_impl, "kernel_function": "arch/arm64/kvm/hyp/pgtable.c"}
    return Result.refuted(cex, detail=f"{finding.kind} in {finding.geometry}", examples=n)


@obligation("kdiff.random.6.1", engine="unit", invariants=list(KD_IDS) + C_SPEC,
            kernel_functions=FUNCTIONS)
def random_ops(ctx):
    """Random operation sequences (maps forcing blocks, splits and coalescing, unmap, set_owner,
    wrprotect, mkyoung, mkold, is_young, relax_perms, flush, get_leaf, destroy, bad arguments,
    injected allocation failures) on the kernel's own 6.1 pgtable.c compiled for the host and on
    impl with the 6.1 profile, over 4K/16K/64K geometries with concatenated roots: after every
    operation the return values, every table word, every refcount, the pages in use and in the
    memcache, the TLB/cache log and the warnings are equal, and the C side's raw state satisfies
    the spec's invariants and the step's contract (catalogued findings of the source's version
    counted and named, not failed)."""
    why = _ready()
    if why:
        return Result.unknown(why)
    total = max(100, int(ctx.budget["hypothesis_examples"]) * 3 // 2)
    plan = [("4k-39", 0.45), ("4k-34", 0.3), ("16k-40", 0.15), ("64k-44", 0.1)]
    ops = 0
    for name, share in plan:
        out = differ.run([name], max(20, int(total * share)), seed=ctx.seed, spec_every=1,
                         shrink_replays=int(ctx.budget["shrink_replays"]), expired=ctx.expired)
        ops += out.ops
        if out.status == "skipped":
            return Result.unknown(f"skipped: {out.reason}")
        if out.status == "refuted":
            return _refuted(out.finding, ops)
        if out.status == "unknown":
            return Result.unknown(f"{name}: {out.reason}", examples=ops)
    return Result.passed(ops, f"{ops} operations compared word for word with Linux "
                              f"{fetch.locate()[0].version} pgtable.c, C side checked by the spec "
                              "after each")


@obligation("kdiff.catalogue", engine="unit", invariants=list(KD_IDS),
            kernel_functions=["kvm_init_invalid_leaf_owner", "stage2_map_walker_try_leaf",
                              "stage2_put_pte"])
def difference_catalogue(ctx):
    """Every catalogued difference between 6.1 and impl's other profiles (owner field position,
    -EAGAIN stopping the map walk, level hint 0 when a table descriptor is cleared) reproduces with
    its minimal operation sequence under the profiles it is listed for, with the expected
    difference id, and vanishes under the 6.1 profile."""
    why = _ready()
    if why:
        return Result.unknown(why)
    n = 0
    for entry in catalogue.ENTRIES:
        problems = catalogue.verify_entry(entry)
        n += len(entry.shows_in) + 1
        if problems:
            return Result.refuted({"ops": entry.program("6.1"), "violations": problems,
                                   "tables": "", "kernel_function": ", ".join(
                                       entry.kernel_functions)}, examples=n)
    return Result.passed(n, f"{len(catalogue.ENTRIES)} differences reproduced and fixed by "
                            "the 6.1 profile")
