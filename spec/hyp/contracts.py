"""Contracts of the hyp stage-1 operations: kvm_pgtable_hyp_init, _map and _destroy (5.12-5.15).

Models what EL2's own stage-1 table must look like after each operation, over per-page
translations of the hyp VA range, from the architecture's stage-1 descriptor format (VMSAv8-64,
EL2 translation regime) and KVM's conventions for hyp mappings:

* attributes (hyp_set_prot_attr): AttrIndx 4:2 = MT_NORMAL (0) or MT_DEVICE_nGnRE (4), AP 7:6 =
  read-only (0b11) unless PROT_W (0b01), SH 9:8 inner shareable, AF, XN bit 54 unless PROT_X,
  software bits 58:55 from prot; a mapping must be readable, never W+X, never executable device;
* a leaf is placed at the first level on the page's path, from the root down, where the existing
  entry is not a table and a block fits: aligned inside the walked range, output address aligned,
  and the level allows one (existing tables are never collapsed: the hyp walker has no anchor);
* re-creating the same leaf, or one differing only in software bits, is fine; a different valid
  leaf already there is left alone (the kernel WARNs: C-HYP-WARN, spec/hyp/warn.py); a block that must be split is replaced by a
  new table, so its part outside the range becomes unmapped (also a WARN);
* nothing is ever unmapped otherwise, and nothing outside the range changes.

Leaves out: the TLB (hyp mappings are only ever added to invalid entries in 5.15; no TLBI is
issued), cacheability of the tables themselves.
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.contract_common import MAX_REPORTS, Report, check_nothing_changed, check_ret
from ptspec.spec.arch.walk import DESC, END, LEVEL, START, translate
from ptspec.spec.hyp.unmap import nonzero_leaves
from ptspec.spec.stage2.state import load_state
from ptspec.spec.stage2.step import EINVAL, ENOMEM, ERANGE, load_step, walked_range
from ptspec.spec.statements import statement

ATTRIDX_SHIFT = 2
MT_NORMAL, MT_DEVICE_nGnRE = 0, 4
AP_SHIFT = 6
AP_RW, AP_RO = 0b01, 0b11
SW_MASK = D.SW_MASK                 # software bits 58:55, as at stage 2


def hyp_attrs(prot, kernel_version=None):
    """The stage-1 leaf attribute bits of a hyp mapping, or None when KVM refuses the prot, as
    the kernel version reads the prot (D.known_prot: before 5.15 no software bits)."""
    prot = D.known_prot(prot, kernel_version)
    device = bool(prot & D.PROT_DEVICE)
    if not prot & D.PROT_R:
        return None
    if prot & D.PROT_X and (prot & D.PROT_W or device):
        return None
    attr = (MT_DEVICE_nGnRE if device else MT_NORMAL) << ATTRIDX_SHIFT
    attr |= (AP_RW if prot & D.PROT_W else AP_RO) << AP_SHIFT
    attr |= D.SH_INNER << D.SH_SHIFT
    attr |= D.AF
    if not prot & D.PROT_X:
        attr |= D.XN
    return attr | (prot & SW_MASK)


def _entry(state, pa, va, level):
    idx = (va >> G.granule_shift(level, state.page_shift)) % state.entries
    page = state.pages.get(pa) if pa is not None else None
    return page[idx] if page is not None else 0      # a missing page: S1-TREE reports it


def expected_leaf(pre, va, A, E, phys_al, attrs):
    """(level, descriptor) the page `va` of [A, E) must end up with after a successful map."""
    ps = pre.page_shift
    pa = pre.roots[0]
    for level in range(pre.start_level, G.MAX_LEVELS):
        d = _entry(pre, pa, va, level)
        if pa is not None and D.is_table(d, level):
            pa = D.address(d, ps)
            continue
        g = G.granule_size(level, ps)
        base = va - va % g
        oa = phys_al + (base - A)
        if G.level_allows_leaf(level, ps) and base >= A and base + g <= E and oa % g == 0:
            new = D.leaf_descriptor(oa, attrs, level, ps)
            if d == new or not d & D.VALID or not (d ^ new) & ~SW_MASK:
                return level, new
            return level, d                       # a conflicting mapping is left alone
        pa = None                                 # a fresh (zeroed) table goes here
    raise AssertionError("no level can hold a page")    # level 3 always can


def hyp_map_wrong_pages_plain(pre, step, post):
    """The plain statement of C-HYP-MAP inside R, page by page: the pages of R whose post-op leaf is not
    expected_leaf()'s (where -ENOMEM allows it, also not what it was before, and not empty).

    contract_hyp_map checks the same over the post-state's intervals, skipping runs of empty slots;
    tests/test_spec_plain.py holds the two verdicts equal. Returns [] outside the op's domain.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    a = step.args
    attrs = hyp_attrs(a["prot"], pre.kernel_version)
    A, E = walked_range(a["addr"], a["size"], pre.page_shift)
    ps = pre.page_shift
    phys_al = a["phys"] - a["phys"] % (1 << ps)
    if (attrs is None or not pre.roots or E > 1 << pre.ia_bits or E <= A
            or phys_al + (E - A) > 1 << pre.pa_bits):
        return []
    wrong = []
    for va in range(A, E, 1 << ps):
        level, want = expected_leaf(pre, va, A, E, phys_al, attrs)
        t = translate(post, va)
        got = (t.level, t.desc, va - va % t.size if t.size else None) if t.kind != "fault" else None
        if got == (level, want, va - va % G.granule_size(level, ps)):
            continue
        if step.ret == ENOMEM:
            before = translate(pre, va)
            if got is None or not got[1] or (before.kind != "fault" and (before.level, before.desc) == got[:2]):
                continue
        wrong.append(va)
    return wrong


@statement("C-HYP-MAP", constrains=(
    "kvm_pgtable_hyp_map", "hyp_set_prot_attr", "hyp_map_walker", "hyp_map_walker_try_leaf",
    "hyp_pte_needs_update", "kvm_block_mapping_supported", "kvm_set_table_pte"))
def contract_hyp_map(pre, step, post):
    """C-HYP-MAP: kvm_pgtable_hyp_map maps [A, E) to phys with the prot's stage-1 attributes.

    Statement (R = [A, E) the page-aligned walked range, phys_al = phys aligned down to a page):
    -EINVAL with nothing changed when the prot is refused (not readable, W+X, executable device) or
    there is no root (before 5.15 the prot's software bits are ignored: D.known_prot); -ERANGE
    with nothing changed when A or E is beyond 2**va_bits; an empty range returns 0 unchanged.
    ret 0: every page of R translates through the leaf expected_leaf() gives:
    at the first non-table level on its path where a block fits (aligned, inside R, output aligned,
    level allowed), mapping phys_al + (page - A) with the prot's attributes, except that a
    different valid leaf already there is kept. ret -ENOMEM: each page of R is as for ret 0, or as
    before. Outside R: every non-zero leaf is unchanged, except the parts of pre-existing blocks that
    intersect R and had to be split (they become unmapped). Table pages keep refcount 1 (S1-RC).

    Why: EL2 maps the hypervisor's own text, data and per-CPU pages this way; a wrong output
    address or permission there is a hole in the hypervisor itself.

    Constrains: kvm_pgtable_hyp_map, hyp_set_prot_attr, hyp_map_walker, hyp_map_walker_try_leaf,
    hyp_pte_needs_update, kvm_block_mapping_supported, kvm_set_table_pte.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    rep = Report("C-HYP-MAP", step)
    a = step.args
    attrs = hyp_attrs(a["prot"], pre.kernel_version)
    A, E = walked_range(a["addr"], a["size"], pre.page_shift)
    limit = 1 << pre.ia_bits
    refused = (EINVAL if attrs is None else ERANGE if A > limit or E > limit
               else EINVAL if not pre.roots else None)
    if refused is not None:
        check_ret(rep, step, refused, " (refused before the walk)")
        check_nothing_changed(rep, pre, post, "the map was refused")
        return rep.result()
    if E <= A:
        check_ret(rep, step, 0, " (empty range)")
        check_nothing_changed(rep, pre, post, "the range is empty")
        return rep.result()
    check_ret(rep, step, (0, ENOMEM))
    ps = pre.page_shift
    phys_al = a["phys"] - a["phys"] % (1 << ps)
    if phys_al + (E - A) > 1 << pre.pa_bits:
        return rep.result()                        # outside the contract's domain
    ivs = post.walk().overlapping(A, E)          # post-state leaf slots over R, in order
    before = pre.walk()
    k, va = 0, A
    while va < E and len(rep.items) < MAX_REPORTS:
        level, want = expected_leaf(pre, va, A, E, phys_al, attrs)
        while k < len(ivs) and ivs[k][END] <= va:
            k += 1
        iv = ivs[k] if k < len(ivs) and ivs[k][START] <= va else None
        got_level, got = (iv[LEVEL], iv[DESC]) if iv else (None, None)
        g = G.granule_size(level, ps)
        ok = got_level == level and got == want and iv[START] == va - va % g
        if not ok and step.ret == ENOMEM:
            was = before.find(va)
            ok = (was is not None and (was[LEVEL], was[DESC]) == (got_level, got)) or not got
        if not ok:
            rep.add(f"page {va:#x} should be {want:#x} at level {level}, found "
                    f"{'nothing' if got is None else f'{got:#x} at level {got_level}'}",
                    {"ipa": va, "level": level, "desc": got or 0, "found_level": got_level})
        nxt = va - va % g + g
        if iv is not None and not iv[DESC]:          # a run of empty slots: skip to its end
            nxt = iv[END] if ok else nxt     # ok there: -ENOMEM, where every empty slot is ok
        va = max(nxt if ok else min(nxt, iv[END] if iv else nxt), va + (1 << ps))
    old, new = nonzero_leaves(pre, opaque=False), nonzero_leaves(post, opaque=False)
    for (s, level), d in old.items():
        g = G.granule_size(level, ps)
        if s + g <= A or s >= E:
            if new.get((s, level)) != d:
                rep.add(f"leaf {d:#x} at {s:#x} level {level} lies outside [{A:#x}, {E:#x}) but "
                        f"changed to {new.get((s, level), 0):#x}", {"ipa": s, "level": level})
        # a block intersecting R may have been split: its outside parts are then unmapped
    for (s, level), d in new.items():
        g = G.granule_size(level, ps)
        if (s + g <= A or s >= E) and (s, level) not in old:
            rep.add(f"new leaf {d:#x} at {s:#x} level {level} lies outside [{A:#x}, {E:#x})",
                    {"ipa": s, "level": level, "desc": d})
    return rep.result()


@statement("C-HYP-INIT", constrains=("kvm_pgtable_hyp_init", "zalloc_page"))
def contract_hyp_init(pre, step, post):
    """C-HYP-INIT: kvm_pgtable_hyp_init allocates one zeroed root page, or fails cleanly (-ENOMEM).

    Statement: ret 0: exactly one root page, all of its descriptors 0, and no other page allocated;
    ret -ENOMEM: no root and no page allocated; any other return is wrong.

    Why: EL2 runs on this table from its first map; a root with stale descriptors maps whatever they
    point at into the hypervisor, and a failed init that keeps pages leaks them from the hyp pool.

    Constrains: kvm_pgtable_hyp_init (zalloc_page, start level from ARM64_HW_PGTABLE_LEVELS).
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    rep = Report("C-HYP-INIT", step)
    if step.ret == 0:
        if len(post.roots) != 1:
            rep.add(f"{len(post.roots)} root pages, expected one")
        for pa in post.roots:
            if any(post.pages.get(pa, [0])):
                rep.add(f"root {pa:#x} is not zeroed", {"table": pa})
        if set(post.pages) - set(pre.pages) - set(post.roots):
            rep.add("pages other than the root were allocated")
    elif check_ret(rep, step, (0, ENOMEM)):
        if post.roots or set(post.pages) - set(pre.pages):
            rep.add("returned -ENOMEM but allocated pages")
    return rep.result()


@statement("C-HYP-DESTROY", constrains=("kvm_pgtable_hyp_destroy", "hyp_free_walker"))
def contract_hyp_destroy(pre, step, post):
    """C-HYP-DESTROY: kvm_pgtable_hyp_destroy returns the root and every table page.

    Statement: afterwards the table has no root and no page in use: the root and every table page
    the tree held went back to the page allocator.

    Why: the hyp tables are torn down when protected mode hands EL2 over or the hypervisor is
    unloaded; a table page kept is memory lost for good.

    Constrains: kvm_pgtable_hyp_destroy, hyp_free_walker.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    rep = Report("C-HYP-DESTROY", step)
    if post.roots:
        rep.add("roots remain after destroy")
    for pa in sorted(post.pages):
        rep.add(f"page {pa:#x} was not returned by destroy", {"table": pa})
    return rep.result()


from ptspec.spec.hyp.unmap import contract_hyp_unmap  # noqa: E402  (6.0 on: kvm_pgtable_hyp_unmap)

HYP_CONTRACTS = {"init": contract_hyp_init, "map": contract_hyp_map,
                 "destroy": contract_hyp_destroy, "unmap": contract_hyp_unmap}
