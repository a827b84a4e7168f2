"""Single-state invariants of a KVM stage-2 table: S2-RC, S2-BA, S2-TREE, S2-LEAK (S2-OWN: ownership.py).

Models: what must hold of every stage-2 raw state after every return of every page-table operation
(arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 with the pKVM ownership patch), stated over the tree the
hardware walks from the roots (ptspec.spec.arch.walk). Each function takes a State and returns Violations.

The structural helpers here (encoding and tree checks) are shared with the hyp stage-1 invariants
(ptspec.spec.hyp.invariants), which report them under S1-* ids. Per-table rules can be limited to
a window (``pages``: the tables a step changed, window.py) when every other table was judged
before and did not change; the whole-state check stays the statement.

Leaves out: two-state properties (S2-BBM, contracts) and everything mmu.c adds (memslots, dirty log).
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation

STAGE2 = "arm64-stage2"


def _where(pa, i, level, base, g, d=None):
    w = {"table": pa, "index": i, "level": level, "ipa": base + i * g}
    if d is not None:
        w["desc"] = d
    return w


def _tables(walk, pages):
    """The reached tables (pa, (level, base, used, parent, index)) in walk order: all of them, or
    only those in ``pages`` (a window: the tables a step changed, ptspec.spec.stage2.window)."""
    if pages is None:
        return walk.tables.items()
    return [(pa, t) for pa, t in walk.tables.items() if pa in pages]


# -- shared structural checks ---------------------------------------------------------------------

def _unwritten(state):
    """The leaf bits the encoding check requires clear: stage 2's (D.s2_leaf_unwritten), or hyp
    stage 1's (D.HYP_LEAF_UNWRITTEN)."""
    return D.s2_leaf_unwritten(state.has_xnx) if state.kind == STAGE2 else D.HYP_LEAF_UNWRITTEN


def encoding_violations_plain(state, inv):
    """The plain statement of the encoding check: every valid descriptor of every reached table, one
    slot at a time (slots beyond the input range are tree_violations' business).

    encoding_violations returns the same list faster (tests/test_spec_plain.py holds them equal).
    """
    out = []
    ps, pa_limit, unwritten = state.page_shift, 1 << state.pa_bits, _unwritten(state)
    walk = state.walk()
    for pa, (level, base, used, _, _) in walk.tables.items():
        descs = state.pages[pa]
        g = G.granule_size(level, ps)
        block_ok = G.level_allows_block(level, ps)
        for i in range(used):
            d = descs[i]
            if d & D.VALID:
                out += _encoding_report(inv, pa, i, level, base, g, d,
                                        _encoding_problems(d, level, ps, g, block_ok, pa_limit,
                                                           unwritten))
    return out


def _encoding_report(inv, pa, i, level, base, g, d, problems):
    at = f"table {pa:#x} index {i} at level {level} (ipa {base + i * g:#x})"
    return [Violation(inv, f"{at}: {text}", _where(pa, i, level, base, g, d)) for text in problems]


def encoding_violations(state, inv, pages=None):
    """Valid descriptors of every reached table: kind allowed at their level, addresses aligned.

    The fast form of encoding_violations_plain (read that one): zero slots are skipped through the
    walk's non-zero index, and level-3 pages are screened (page_fast below). ``pages``: only those
    tables (a window, see _tables).
    """
    out = []
    ps, pa_limit, walk = state.page_shift, 1 << state.pa_bits, state.walk()
    unwritten = _unwritten(state)
    # A level-3 page can only be misaligned or out of range through bits 13:12 (16K, RES0) or
    # 15:12 (64K, address bits 51:48, out of range when pa_bits is 48), and otherwise wrong only
    # through the bits KVM never writes: a page is screened by one mask.
    page_mask = D.TYPE_BITS | unwritten | {12: 0, 14: D.RES0_16K_MASK,
                                           16: 0 if state.pa_bits >= 52 else D.ADDR_51_48_MASK}[ps]
    valid, page = D.VALID, D.TABLE_OR_PAGE
    for pa, (level, base, used, _, _) in _tables(walk, pages):
        descs = state.pages[pa]
        g, block_ok = G.granule_size(level, ps), G.level_allows_block(level, ps)
        nz = walk.nonzero(pa)
        todo = nz if level < G.LAST_LEVEL else [    # the valid ones, less the pages whose type,
            i for i in nz if descs[i] & valid and descs[i] & page_mask != page]
        for i in todo:                              # address field aligned and in range
            if i >= used:
                break
            d = descs[i]
            if not d & D.VALID:
                continue
            problems = _encoding_problems(d, level, ps, g, block_ok, pa_limit, unwritten)
            if problems:
                out += _encoding_report(inv, pa, i, level, base, g, d, problems)
    return out


def _encoding_problems(d, level, ps, g, block_ok, pa_limit, unwritten=0):
    kind = D.classify(d, level)
    if kind == D.RESERVED:
        return [f"descriptor {d:#x} uses the reserved encoding 0b01 at level 3 (a page must be 0b11)"]
    out = []
    if kind != D.TABLE and d & unwritten:
        stage = "a stage-2" if unwritten != D.HYP_LEAF_UNWRITTEN else "an EL2 stage-1"
        out.append(f"leaf {d:#x} sets bit(s) {D.bit_list(d & unwritten)}, which KVM never writes "
                   f"in {stage} leaf ({D.bit_list(unwritten)} must be 0: RES0, or features KVM "
                   f"does not use)")
    if kind == D.BLOCK and not block_ok:
        out.append(f"block descriptor {d:#x} at level {level}, where KVM allows no block with the "
                   f"{G.granule_name(ps)} granule")
    addr = D.address(d, ps)
    what = "next-table address" if kind == D.TABLE else "output address"
    if D.res0_address_bits(d, ps):
        out.append(f"descriptor {d:#x} sets address bits 13:12, which are RES0 with the 16K granule: "
                   f"{what} not page aligned")
    if kind == D.BLOCK and addr % g:
        out.append(f"block output address {addr:#x} is not aligned to the {G.size_text(g)} block size")
    if addr >= pa_limit:
        out.append(f"{what} {addr:#x} is beyond the {pa_limit.bit_length() - 1}-bit PA range")
    return out


def tree_violations(state, inv, expected_start, expected_roots, geometry_note, pages=None):
    """Geometry, roots, the walk's problems, table upper bits, and slots beyond the input range
    (the per-slot rules only in ``pages`` when given)."""
    out = []
    ps = state.page_shift
    if state.start_level != expected_start:
        out.append(Violation(inv, f"start level {state.start_level}, but {geometry_note} needs start "
                                  f"level {expected_start}", {"level": state.start_level}))
    walk = state.walk()
    roots = state.roots
    if roots:
        if len(roots) != expected_roots:
            out.append(Violation(inv, f"{len(roots)} root table(s), but {geometry_note} at start level "
                                      f"{state.start_level} needs {expected_roots}", {}))
        if len(set(roots)) == len(roots) and len(roots) > 1:
            size = len(roots) << ps
            contiguous = all(r == roots[0] + (k << ps) for k, r in enumerate(roots))
            if not contiguous:
                out.append(Violation(inv, "concatenated root tables are not physically contiguous: "
                                          + " ".join(f"{r:#x}" for r in roots), {"table": roots[0]}))
            elif roots[0] % size:
                out.append(Violation(inv, f"concatenated root tables at {roots[0]:#x} are not aligned to "
                                          f"their total size {size:#x}", {"table": roots[0]}))
    for message, where in walk.problems:
        out.append(Violation(inv, message, dict(where)))
    return out + slot_violations(state, inv, pages)


def slot_violations_plain(state, inv):
    """The plain statement of tree_violations' per-slot rules, one slot at a time: a slot beyond the
    input range holds 0; a table descriptor keeps its upper attribute bits 63:59 zero.

    slot_violations returns the same list faster (tests/test_spec_plain.py holds them equal).
    """
    out = []
    for pa, (level, base, used, _, _) in state.walk().tables.items():
        descs = state.pages[pa]
        for i, d in enumerate(descs):
            out += _slot_problem(state, inv, pa, i, level, base, used, d)
    return out


def _slot_problem(state, inv, pa, i, level, base, used, d):
    g = G.granule_size(level, state.page_shift)
    if i >= used and d:
        return [Violation(inv, f"table {pa:#x} index {i} at level {level}: descriptor {d:#x} "
                               f"lies beyond the {state.ia_bits}-bit input range "
                               f"(ipa {base + i * g:#x}); it must stay 0",
                          _where(pa, i, level, base, g, d))]
    if i < used and D.is_table(d, level) and d & D.TABLE_UPPER_MASK:
        return [Violation(inv, f"table {pa:#x} index {i} at level {level} (ipa "
                               f"{base + i * g:#x}): table descriptor {d:#x} sets upper "
                               f"attribute bits 63:59 (RES0 as KVM writes them)",
                          _where(pa, i, level, base, g, d))]
    return []


def slot_violations(state, inv, pages=None):
    """The fast form of slot_violations_plain (read that one): zero slots are skipped through the
    walk's non-zero index, and full level-3 tables are skipped whole (no table descriptor can sit at
    level 3, and every one of their slots is an input address). ``pages``: only those tables."""
    out = []
    walk = state.walk()
    for pa, (level, base, used, _, _) in _tables(walk, pages):
        if level == G.LAST_LEVEL and used == state.entries:
            continue
        descs = state.pages[pa]
        for i in walk.nonzero(pa):
            d = descs[i]
            if i >= used or (level < G.LAST_LEVEL and d & D.TYPE_BITS == D.TABLE_OR_PAGE
                             and d & D.TABLE_UPPER_MASK):
                out += _slot_problem(state, inv, pa, i, level, base, used, d)
    return out


def leak_violations(state, inv):
    """Pages not reached from the roots, pages also in the memcache, pool errors."""
    out = []
    walk = state.walk()
    pages, mc = state.pages, state.memcache
    if not pages.keys() <= walk.tables.keys():        # (each loop: when it can find something)
        for pa in pages:
            if pa not in walk.tables:
                if not state.roots:
                    msg = f"page {pa:#x} is still in use, but the table has no root (destroyed)"
                else:
                    msg = f"page {pa:#x} is in use but not reached from the roots (leaked)"
                out.append(Violation(inv, msg, {"table": pa}))
    if not pages.keys().isdisjoint(mc) or len(set(mc)) != len(mc):
        seen = set()
        for pa in mc:
            if pa in pages:
                out.append(Violation(inv, f"page {pa:#x} is both a table page and in the memcache", {"table": pa}))
            if pa in seen:
                out.append(Violation(inv, f"page {pa:#x} is in the memcache twice", {"table": pa}))
            seen.add(pa)
    for err in state.pool_errors:
        out.append(Violation(inv, f"page pool error: {err}", {}))
    return out


# -- stage-2 invariants ---------------------------------------------------------------------------

@statement("S2-RC", constrains=(
    "stage2_map_walker_try_leaf", "get_page", "stage2_put_pte", "stage2_map_walk_leaf",
    "stage2_map_walk_table_pre", "stage2_unmap_walker", "stage2_free_walker",
    "kvm_pgtable_stage2_init"))
def s2_rc(state, pages=None):
    """S2-RC: every table page (roots included) has refcount == 1 + its counted descriptors.

    Statement: for every table page reached from the roots, page_count() equals one (the reference
    the table itself holds) plus the number of counted descriptors in it, counted meaning non-zero:
    a valid descriptor, or an invalid one carrying an owner annotation (stage2_pte_is_counted).

    Why: the refcount is how KVM knows a table has become empty and can be freed; one reference too
    many and the page is never freed (a leak), one too few and it is freed while still in use (a
    use-after-free of a live table, or a put below zero).

    Constrains: stage2_map_walker_try_leaf (get_page on a counted install, put via stage2_put_pte on
    replace), stage2_map_walk_leaf (a new table takes a reference on its parent), the anchor path of
    stage2_map_walk_table_pre/_post, stage2_unmap_walker (put on clear, including owner
    annotations), stage2_free_walker, kvm_pgtable_stage2_init (root pages start at 1).
    """
    if state.kind != STAGE2:
        return []
    return _rc_violations(state, "S2-RC", per_descriptor=True, pages=pages)


def _rc_violations(state, inv, per_descriptor, pages=None):
    out = []
    walk = state.walk()
    n = state.entries
    for pa, (level, base, _, _, _) in _tables(walk, pages):
        counted = n - state.pages[pa].count(0) if per_descriptor else 0
        rc = state.refcount[pa]
        if rc != 1 + counted:
            out.append(Violation(inv, f"table {pa:#x} at level {level}: refcount {rc}, counted "
                                      f"descriptors {counted}", {"table": pa, "level": level, "ipa": base,
                                                                 "refcount": rc, "counted": counted}))
    return out


@statement("S2-BA", constrains=(
    "kvm_block_mapping_supported", "kvm_level_supports_block_mapping",
    "stage2_map_walker_try_leaf", "kvm_init_valid_leaf_pte", "kvm_phys_to_pte",
    "kvm_set_table_pte", "user_mem_abort"))
def s2_ba(state, pages=None):
    """S2-BA: every valid descriptor is a kind its level allows, with an aligned, in-range address.

    Statement: a valid leaf at level 3 is a page (bits[1:0] = 0b11; 0b01 is a reserved encoding);
    a block sits only where KVM allows one (never level 0, level 1 only with 4K, level 2 always);
    a leaf's output address is aligned to the size it maps and lies below 2**pa_bits (with 64K,
    address bits 51:48 come from descriptor bits 15:12); a table descriptor's address is page aligned
    and below 2**pa_bits. With 16K, address bits 13:12 are RES0. A leaf leaves clear the bits KVM
    never writes at stage 2: 11, 52:48, 63:59, and 53 without FEAT_XNX (the state's has_xnx).

    Why: a misaligned block maps memory the caller never asked for (the hardware ignores the low
    bits, so the block silently starts earlier); a block at a level the granule does not support, or
    the reserved level-3 encoding, faults or is CONSTRAINED UNPREDICTABLE; a stray contiguous hint,
    DBM or PBHA bit changes what the hardware does with the mapping (a TLB entry for 16 pages, the
    hardware setting write permission, implementation-defined attributes) behind KVM's back.

    Constrains: kvm_block_mapping_supported / kvm_level_supports_block_mapping, stage2_map_walker_try_leaf,
    kvm_init_valid_leaf_pte / kvm_phys_to_pte, kvm_set_table_pte, and in mmu.c the size user_mem_abort
    asks for (force_pte handling).
    """
    if state.kind != STAGE2:
        return []
    return encoding_violations(state, "S2-BA", pages)


@statement("S2-TREE", constrains=(
    "kvm_pgtable_stage2_init", "kvm_pgd_pages", "stage2_map_walk_leaf", "kvm_set_table_pte",
    "stage2_map_walk_table_post", "stage2_unmap_walker", "stage2_free_walker"))
def s2_tree(state, pages=None):
    """S2-TREE: the tables form a tree that matches the geometry KVM configures.

    Statement: the IPA size is one the granule supports (32..48 bits, 32..52 with 64K); the start
    level is the one kvm_get_vtcr / stage2_pgtable_levels choose; there are kvm_pgd_pages roots,
    distinct, present in pages, physically contiguous and aligned to their total size (VTTBR_EL2
    points at them as one concatenated table); every table descriptor points to a page in pages that
    is reached exactly once (no sharing, no cycle, never a root); table descriptors keep their upper
    attribute bits 63:59 zero; root slots beyond 2**ia_bits stay 0.

    Why: the refcount and free logic assume each table has exactly one parent; a shared or cyclic
    table is freed twice or freed while reachable, and a wrong start level or root count makes the
    hardware walk different tables than the software does.

    Constrains: kvm_pgtable_stage2_init (kvm_pgd_pages, start level), stage2_map_walk_leaf and
    kvm_set_table_pte (installing a new table), stage2_map_walk_table_post (anchor replaced by a
    block), stage2_unmap_walker (freeing empty tables), stage2_free_walker.
    """
    if state.kind != STAGE2:
        return []
    ps = state.page_shift
    out = []
    if not G.ipa_bits_supported(state.ia_bits, ps):
        lo, hi = G.IPA_RANGE[ps]
        out.append(Violation("S2-TREE", f"ia_bits {state.ia_bits} is not supported with the "
                                        f"{G.granule_name(ps)} granule ({lo}..{hi})", {}))
        return out
    start = G.stage2_start_level(state.ia_bits, ps)
    note = f"a {state.ia_bits}-bit IPA with the {G.granule_name(ps)} granule"
    return out + tree_violations(state, "S2-TREE", start, G.root_pages(state.ia_bits, start, ps), note, pages)


@statement("S2-LEAK", constrains=(
    "stage2_unmap_walker", "stage2_map_walk_table_post", "stage2_free_walker",
    "kvm_pgtable_stage2_destroy", "stage2_map_walk_leaf", "put_page", "free_pages_exact"))
def s2_leak(state):
    """S2-LEAK: every page handed out is in the tree, in a memcache, or returned; nothing twice.

    Statement: every page in `pages` is reached from the roots (so after destroy, with no roots,
    `pages` is empty); no page is both a table page and in a memcache, or twice in a memcache; the
    page pool saw no error (no put below zero, no double free, no free of a foreign page). Across
    one step (check_step), pages in use + pages in memcaches + free pool pages stays constant.

    Why: a table page the tree no longer reaches is memory the hypervisor never gets back; a page
    both in use and in a memcache will be handed out again while live.

    Constrains: stage2_unmap_walker and stage2_map_walk_table_post (freeing tables), stage2_free_walker
    and kvm_pgtable_stage2_destroy, stage2_map_walk_leaf (taking pages from the memcache),
    mm_ops->put_page / free_pages_exact.
    """
    if state.kind != STAGE2:
        return []
    return leak_violations(state, "S2-LEAK")
