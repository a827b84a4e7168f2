"""Geometry: impl's derived table shape equals the spec's, for every configuration KVM accepts.

The stage-2 shape (levels, start level, number of concatenated root pages, which levels take
blocks, the walk index of each level) and the hyp stage-1 shape (levels, start level) are functions
of a handful of small integers, so a complete enumeration proves them: every page size, every IPA
size 32..48 (52 with 64K) and every hyp VA size the impl accepts. The spec side is spec.geometry,
written from the architecture independently of impl.geometry.
"""

from __future__ import annotations

import spec.geometry as SG
from impl.geometry import Granule, Stage2Geometry, all_stage2_geometries, arm64_hw_pgtable_levels

from .registry import Result, obligation


def mismatches():
    """Yields (configuration, what differs) for every disagreement; nothing when all agree."""
    count = 0
    for geom in all_stage2_geometries():
        ps, ia = geom.gran.page_shift, geom.ia_bits
        count += 1
        where = f"{1 << (ps - 10)}K / {ia}-bit IPA"
        start = SG.stage2_start_level(ia, ps)
        if geom.start_level != start:
            yield where, f"start level {geom.start_level}, spec {start}"
        roots = SG.root_pages(ia, start, ps)
        if geom.pgd_pages != roots:
            yield where, f"{geom.pgd_pages} root pages, spec {roots}"
        for level in range(4):
            # the kernel's "supports block mapping" means "a leaf may sit here" (a page at level 3)
            if geom.gran.kvm_level_supports_block_mapping(level) != SG.level_allows_leaf(level, ps):
                yield where, f"leaf at level {level}: impl and spec disagree"
            if geom.gran.size[level] != SG.granule_size(level, ps):
                yield where, f"granule of level {level}: {geom.gran.size[level]:#x}"
        # the root index of the last and of a middle address
        span = SG.table_span(start, ps)
        for addr in ((1 << ia) - 1, (1 << ia) // 3):
            if geom.pgd_page_idx(addr) != addr // span:
                yield where, f"root page of {addr:#x}: {geom.pgd_page_idx(addr)}, spec {addr // span}"
    for ps in (12, 14, 16):
        for va in range(36, Granule(ps).pa_bits + 1):
            count += 1
            levels = arm64_hw_pgtable_levels(ps, va)
            if 4 - levels != SG.hyp_start_level(va, ps):
                yield f"hyp {1 << (ps - 10)}K / {va}-bit VA", (
                    f"start level {4 - levels}, spec {SG.hyp_start_level(va, ps)}")
    mismatches.count = count


@obligation("s2.geometry.all", engine="unit", invariants=["S2-TREE", "S1-TREE", "C-INIT"],
            kernel_functions=["stage2_pgtable_levels", "kvm_get_vtcr", "kvm_pgd_pages",
                              "__kvm_pgd_page_idx", "kvm_level_supports_block_mapping",
                              "ARM64_HW_PGTABLE_LEVELS", "kvm_pgtable_hyp_init"])
def geometry_all(ctx):
    """For every page size and every IPA size KVM accepts (32..48 bits, 52 with 64K), impl's start
    level, number of concatenated roots, root index, granule sizes and block levels equal the
    spec's; for every hyp VA size, impl's hyp start level equals the spec's. A complete
    enumeration of the configurations."""
    bad = list(mismatches())
    n = getattr(mismatches, "count", 0)
    if bad:
        where, what = bad[0]
        return Result.refuted({"violations": [f"S2-TREE {w}: {x}" for w, x in bad[:8]],
                               "ops": f"# {where}", "kernel_function": "stage2_pgtable_levels"},
                              detail=f"{len(bad)} mismatch(es) over {n} configurations",
                              examples=n)
    return Result.proved(n, f"{n} configurations, all equal")
