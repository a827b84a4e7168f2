"""Geometry: impl's derived table shape equals the spec's, for every configuration KVM accepts.

The stage-2 shape (levels, start level, number of concatenated root pages, which levels take
blocks, the walk index of each level) and the hyp stage-1 shape (levels, start level) are functions
of a handful of small integers, so a complete enumeration proves them: every page size, every IPA
size 32..48 (52 with 64K) and every hyp VA size the impl accepts. The spec side is ptspec.spec.arch.geometry,
written from the architecture independently of ptspec.impl.pgtable.geometry.
"""

from __future__ import annotations

from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import geometry as IG  # through the module: a function swapped into impl is what runs

from ptspec.proofs.engines.minimize import unit_program
from ptspec.proofs.runner.registry import Result, obligation


def mismatches():
    """Yields (configuration, what differs) for every disagreement; nothing when all agree."""
    count = 0
    listed = {(g.gran.page_shift, g.ia_bits) for g in IG.all_stage2_geometries()}
    wanted = {(ps, ia) for ps, (lo, hi) in SG.IPA_RANGE.items() for ia in range(lo, hi + 1)}
    for ps, ia in sorted(wanted ^ listed):
        yield (f"{1 << (ps - 10)}K / {ia}-bit IPA",
               "the architecture allows it but impl does not list it" if (ps, ia) in wanted
               else "impl lists it but the architecture does not allow it")
    for geom in IG.all_stage2_geometries():
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
        for va in range(36, IG.Granule(ps).pa_bits + 1):
            count += 1
            levels = IG.arm64_hw_pgtable_levels(ps, va)
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
                               "ops": unit_program(
                                   ["from ptspec.proofs.stage2.checks_geometry import mismatches"],
                                   ["bad = list(mismatches())"], "assert not bad, bad[:8]"),
                               "kernel_function": "stage2_pgtable_levels"},
                              detail=f"{len(bad)} mismatch(es) over {n} configurations",
                              examples=n)
    return Result.proved(n, f"{n} configurations, all equal")


def constructor_cases():
    """(description, thunk, expect_error) for the constructors' argument checks, edges included."""
    from ptspec.impl.pgtable.hyp import HypPgtable
    from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
    from ptspec.impl.pgtable.stage2 import KvmPgtable
    cases = [
        ("PagePool(12, 1) at a page-aligned base", lambda: PagePool(12, 1, 0x1000), False),
        ("PagePool(12, 1) at a base off by half a page", lambda: PagePool(12, 1, 0x800), True),
        ("PagePool(16, 1) at a 4K-aligned base", lambda: PagePool(16, 1, 0x1000), True),
        ("PagePool(12, 1) at a base one byte past a page", lambda: PagePool(12, 1, 0x1001), True),
        ("PagePool(12, 0)", lambda: PagePool(12, 0), True),
        ("memcache of capacity 0", lambda: KvmMmuMemoryCache(PagePool(12, 4), 0), True),
        ("memcache of capacity 1", lambda: KvmMmuMemoryCache(PagePool(12, 4), 1), False),
        ("topup beyond capacity", lambda: KvmMmuMemoryCache(PagePool(12, 4), 1).topup(2), True),
        ("KvmPgtable page_shift 13", lambda: KvmPgtable(13, 40), True),
        ("KvmPgtable kernel_version 4.19", lambda: KvmPgtable(12, 40, kernel_version="4.19"), True),
        ("KvmPgtable flags 4", lambda: KvmPgtable(12, 40, flags=4), True),
        ("KvmPgtable max_owner_id 256", lambda: KvmPgtable(12, 40, owner_field=(63, 48),
                                                           max_owner_id=256), True),
        ("KvmPgtable owner field 9:1", lambda: KvmPgtable(12, 40, owner_field=(9, 1)), True),
        ("KvmPgtable owner field 64:56", lambda: KvmPgtable(12, 40, owner_field=(64, 56)), True),
        ("KvmPgtable owner field 2:3", lambda: KvmPgtable(12, 40, owner_field=(2, 3)), True),
        ("KvmPgtable owner field 9:2, id 255", lambda: KvmPgtable(12, 40, owner_field=(9, 2),
                                                                  max_owner_id=255), False),
        ("HypPgtable page_shift 13", lambda: HypPgtable(13, 48), True),
        ("KvmPgtable owner field 9:9 (one bit), id 1", lambda: KvmPgtable(12, 40, owner_field=(9, 9),
                                                                          max_owner_id=1), False),
        ("KvmPgtable owner field 3:2, id 3", lambda: KvmPgtable(12, 40, owner_field=(3, 2),
                                                                max_owner_id=3), False),
        ("KvmPgtable owner field 3:2, id 4", lambda: KvmPgtable(12, 40, owner_field=(3, 2),
                                                                max_owner_id=4), True),
        ("KvmPgtable max_owner_id 0 (no owner but the host)",
         lambda: KvmPgtable(12, 40, max_owner_id=0), False),
        # Python values no C caller could pass (impl/pgtable/args.py)
        ("PagePool page_shift 13", lambda: PagePool(13, 4), True),
        ("PagePool of 1.5 pages", lambda: PagePool(12, 1.5), True),
        ("memcache of capacity 1.5", lambda: KvmMmuMemoryCache(PagePool(12, 4), 1.5), True),
        ("topup of -1 pages", lambda: KvmMmuMemoryCache(PagePool(12, 4), 1).topup(-1), True),
        ("KvmPgtable cmo 'no'", lambda: KvmPgtable(12, 40, cmo="no"), True),
        ("KvmPgtable fwb 1", lambda: KvmPgtable(12, 40, fwb=1), True),
        ("KvmPgtable max_owner_id 1.5", lambda: KvmPgtable(12, 40, max_owner_id=1.5), True),
        ("KvmPgtable on a 64K pool", lambda: KvmPgtable(12, 40, pool=PagePool(16, 4)), True),
        ("HypPgtable on a 64K pool", lambda: HypPgtable(12, 48, pool=PagePool(16, 4)), True),
        ("KvmPgtable on a pool that is no PagePool", lambda: KvmPgtable(12, 40, pool="pool"), True),
        ("KvmPgtable page_shift 12.0", lambda: KvmPgtable(12.0, 40), True),
        ("PagePool page_shift 12.0", lambda: PagePool(12.0, 4), True),
        ("memcache of no pool", lambda: KvmMmuMemoryCache(None, 4), True),
        ("topup of 0 pages", lambda: KvmMmuMemoryCache(PagePool(12, 4), 1).topup(0), False),
        ("KvmPgtable owner field of three bits", lambda: KvmPgtable(12, 40, owner_field=(63, 56, 1)),
         True),
    ]
    for ps, lo, hi in ((12, 32, 48), (14, 32, 48), (16, 32, 52)):
        cases += [(f"KvmPgtable({ps}, {lo - 1})", lambda ps=ps, v=lo - 1: KvmPgtable(ps, v), True),
                  (f"KvmPgtable({ps}, {lo})", lambda ps=ps, v=lo: KvmPgtable(ps, v), False),
                  (f"KvmPgtable({ps}, {hi})", lambda ps=ps, v=hi: KvmPgtable(ps, v), False),
                  (f"KvmPgtable({ps}, {hi + 1})", lambda ps=ps, v=hi + 1: KvmPgtable(ps, v), True),
                  (f"HypPgtable({ps}, 35)", lambda ps=ps: HypPgtable(ps, 35), True),
                  (f"HypPgtable({ps}, 36)", lambda ps=ps: HypPgtable(ps, 36), False),
                  (f"HypPgtable({ps}, {hi})", lambda ps=ps, v=hi: HypPgtable(ps, v), False),
                  (f"HypPgtable({ps}, {hi + 1})", lambda ps=ps, v=hi + 1: HypPgtable(ps, v), True)]
    return cases


@obligation("s2.args.constructors", engine="unit", invariants=["C-ARGS"],
            kernel_functions=["kvm_arm_setup_stage2", "kvm_pgtable_hyp_init",
                              "kvm_mmu_topup_memory_cache"])
def constructors(ctx):
    """Every constructor refuses what KVM would never configure and accepts its edges: IPA sizes
    32..48 (52 with 64K) and hyp VA sizes 36..48 (52 with 64K), page sizes 4K/16K/64K, owner fields
    inside 63..2 with ids that fit, known flags and kernel versions, page-aligned arenas, memcache
    capacities; refusal is a ValueError. The documented defaults (4K, 40-bit IPA; 4K, 48-bit hyp
    VA; owner field 63:56; no FEAT_S2FWB) hold."""
    from ptspec.impl.pgtable.hyp import HypPgtable
    from ptspec.impl.pgtable.stage2 import KvmPgtable
    bad = []
    cases = constructor_cases()
    for what, thunk, expect_error in cases:
        try:
            thunk()
            raised = False
        except ValueError:
            raised = True
        if raised != expect_error:
            bad.append(f"C-ARGS {what}: {'raised ValueError' if raised else 'accepted'}, expected "
                       f"{'ValueError' if expect_error else 'acceptance'}")
    s2, hy = KvmPgtable(), HypPgtable()
    defaults = {"KvmPgtable() page size": (s2.gran.page_size, 4096),
                "KvmPgtable() IPA bits": (s2.ia_bits, 40),
                "KvmPgtable() owner field": (s2.owner_field, (63, 56)),
                "KvmPgtable() cache maintenance": (s2.cmo, True),
                "KvmPgtable() without FEAT_S2FWB": (s2.has_fwb(), False),
                "KvmPgtable() continues map past -EAGAIN": (s2.eagain_continues, True),
                "HypPgtable() page size": (hy.gran.page_size, 4096),
                "HypPgtable() VA bits": (hy.ia_bits, 48)}
    bad += [f"C-ARGS {k}: {got!r}, documented {want!r}" for k, (got, want) in defaults.items()
            if got != want]
    n = len(cases) + len(defaults)
    if bad:
        return Result.refuted({"violations": bad[:8], "ops": unit_program(
            ["from ptspec.proofs.runner.registry import Context",
             "from ptspec.proofs.stage2.checks_geometry import constructors"],
            ["r = constructors(Context('default', 0, {}))"],
            "assert r.status == 'passed', r.counterexample['violations']"),
                               "kernel_function": "(constructors)"}, detail=f"{len(bad)} of {n}",
                              examples=n)
    return Result.passed(n, f"{n} constructor cases")
