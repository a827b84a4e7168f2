"""Contracts of the operations that change or read existing leaves: unmap, wrprotect, mkyoung, mkold,
is_young, relax_perms, flush, get_leaf.

Models: kvm_pgtable_stage2_unmap, _wrprotect, _mkyoung, _mkold, _is_young, _relax_perms, _flush and
kvm_pgtable_get_leaf (arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 with the pKVM ownership patch). These
walk existing leaves and transform each one that intersects the walked range as a whole (a block
that starts before the range is transformed entirely); no page outside those leaves may change.

Leaves out: table freeing in unmap (the invariants judge refcounts and leaks), cache maintenance of
unmap and relax_perms (ptspec.spec.stage2.cmo).
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2 import contract_common
from ptspec.spec.stage2.contract_common import Report, check_geometry, check_nothing_changed, check_ret, describe, early_exit, op_range, where_of
from ptspec.spec.stage2.ranges import complement, level3_parts
from ptspec.spec.stage2.segments import covering, is_valid, same_translation, sweep
from ptspec.spec.stage2.treediff import diff_outside
from ptspec.spec.stage2.bbm import LOCAL_RELAX_TLBI_SINCE
from ptspec.spec.stage2.cmo import DCACHE_VIA_MM_OPS_SINCE
from ptspec.spec.stage2.state import kernel_before, kernel_since
from ptspec.spec.stage2.step import EAGAIN, EINVAL, walk_error
from ptspec.spec.arch.walk import START, END, LEVEL, DESC, OPAQUE
from ptspec.spec.statements import statement


def check_leafwise(rep, pre, post, A, E, transform, page_fn=None):
    """Each pre-op leaf intersecting [A, E) becomes transform(desc, level); every other page is unchanged.

    transform returns the expected descriptor (same slot and level) or None for unchanged. page_fn,
    when given, maps level-3 descriptors to the expected ones slot by slot (a whole table, or the
    run of its slots inside the walked leaves): runs it accounts for exactly (same place in the
    post-state, or, for an expected all-zero run, one zero slot of the post-state where the table
    was removed) are settled at C speed, the rest is swept leaf by leaf.
    The plain statement is the sweep alone (page_fn ignored, or SETTLE_WHOLE_TABLES false): it judges
    every leaf; tests/test_spec_plain.py holds the two equal.
    """
    ps = pre.page_shift
    first, last = pre.walk().find(A), pre.walk().find(E - 1)
    lo, hi = first[START], last[END]
    done = []
    if page_fn is not None and contract_common.SETTLE_WHOLE_TABLES:
        g = 1 << ps
        post_l3 = {x - i * g: pa for x, _, pa, i in level3_parts(post, lo, hi)}
        for x, y, pa, i in level3_parts(pre, lo, hi):       # whole tables, or their ends
            qpa = post_l3.get(x - i * g)
            j = i + (y - x) // g
            if qpa is not None:
                if page_fn(pre.pages[pa][i:j]) == post.pages[qpa][i:j]:
                    done.append((x, y))
            elif _zero_over(post, x, y) and not any(page_fn(pre.pages[pa][i:j])):
                done.append((x, y))     # the table is gone, all of [x, y) is zero, as expected
    reported = set()
    for x, y in complement(done, lo, hi):
        for s, e, p, q in sweep(pre, post, x, y):
            want = None if p[OPAQUE] else transform(p[DESC], p[LEVEL])
            if want is None:
                ok = same_translation(p, q)
            elif want & D.VALID:
                ok = is_valid(q) and q[LEVEL] == p[LEVEL] and q[DESC] == want
            else:
                ok = not is_valid(q) and not q[OPAQUE] and q[DESC] == want
            if ok or (p[START], q[START]) in reported:
                continue
            reported.add((p[START], q[START]))
            want_text = "unchanged" if want is None else (
                f"{want:#x} at level {p[LEVEL]}" if want & D.VALID else f"invalid {want:#x}")
            rep.add(f"[{s:#x}, {e:#x}) was {describe(p, ps)}; expected {want_text}, found "
                    f"{describe(q, ps)}", where_of(q, s))
    for x, y, p, q in diff_outside(pre, post, lo, hi):
        rep.add(f"[{x:#x}, {y:#x}) lies outside the leaves the walk of [{A:#x}, {E:#x}) visits, "
                f"but changed from {describe(p, ps)} to {describe(q, ps)}", where_of(q, x))


def _zero_over(state, x, y):
    """Whether [x, y) lies inside one zero slot of the state (not an annotation, not an
    unfollowable table): what the sweep pairs each page of a removed table with."""
    iv = state.walk().find(x) if state.roots else None
    return iv is not None and iv[DESC] == 0 and not iv[OPAQUE] and iv[START] <= x and iv[END] >= y


def _simple_range_op(inv, pre, step, post, transform, page_fn):
    rep = Report(inv, step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    if early_exit(rep, pre, post, step, A, E):
        return rep.result()
    check_ret(rep, step, 0)
    check_leafwise(rep, pre, post, A, E, transform, page_fn)
    return rep.result()


def _valid(d, level):
    return D.is_valid_leaf(d, level)


@statement("C-UNMAP", constrains=(
    "kvm_pgtable_stage2_unmap", "stage2_unmap_walker", "stage2_put_pte", "__kvm_pgtable_visit"))
def contract_unmap(pre, step, post):
    """C-UNMAP: kvm_pgtable_stage2_unmap clears every leaf that intersects the range, whole.

    Statement: -ERANGE/-EINVAL from the walk with nothing changed; otherwise ret 0, every page of
    every pre-op leaf intersecting R (valid leaves, and owner annotations, which are counted) is
    invalid descriptor 0 afterwards, and every other page keeps its translation. (Empty tables left
    behind are not judged here: the kernel frees only tables whose refcount dropped to 1 on the walk.)

    Why: a page left mapped after unmap is guest access to memory the host is taking back; an owner
    annotation left behind keeps a page recorded as someone else's, and keeps its table's refcount up.

    Constrains: kvm_pgtable_stage2_unmap, stage2_unmap_walker (valid leaves, counted invalid ones,
    tables at TABLE_POST), stage2_put_pte, and the walker's range alignment (__kvm_pgtable_visit).
    """
    return _simple_range_op("C-UNMAP", pre, step, post,
                            lambda d, level: 0 if d and not D.is_table(d, level) else None,
                            lambda descs: [0] * len(descs))


@statement("C-WRPROTECT", constrains=(
    "kvm_pgtable_stage2_wrprotect", "stage2_update_leaf_attrs", "stage2_attr_walker"))
def contract_wrprotect(pre, step, post):
    """C-WRPROTECT: kvm_pgtable_stage2_wrprotect clears S2AP W in every valid leaf intersecting R.

    Statement: -ERANGE/-EINVAL with nothing changed; otherwise ret 0, every valid leaf intersecting R
    has S2AP W clear and is otherwise unchanged (same level, same bits), and nothing else changes
    anywhere (invalid descriptors and annotations included). No TLBI is required (the caller,
    kvm_mmu_wp_memory_region, flushes the VMID; see S2-BBM).

    Why: dirty logging relies on every page of the slot being write-protected; changing any other
    bit loses attributes the guest relies on.

    Constrains: kvm_pgtable_stage2_wrprotect, stage2_update_leaf_attrs, stage2_attr_walker.
    """
    w = D.S2AP_W
    return _simple_range_op("C-WRPROTECT", pre, step, post,
                            lambda d, level: d & ~w if _valid(d, level) else None,
                            lambda descs: [d & ~w if d & D.TYPE_BITS == D.TABLE_OR_PAGE else d for d in descs])


def _young_op(inv, pre, step, post, set_bits, clr_bits, returns=True):
    rep = Report(inv, step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    err = walk_error(pre, A, E)
    leaf = None if err is not None else pre.walk().find(A)
    old = leaf[DESC] if leaf is not None and is_valid(leaf) else 0
    if not returns:
        old = 0                 # a void function: the step records 0 for ret and out.pte
    if step.ret != old:
        rep.add(f"returned {step.ret:#x}, expected the old leaf descriptor {old:#x}"
                + (" (no valid leaf)" if not old else ""))
    if "pte" not in step.out:
        rep.add("out.pte is missing")
    elif step.out["pte"] != old:
        rep.add(f"out.pte is {step.out['pte']:#x}, expected the old leaf descriptor {old:#x}")
    if err is not None:
        check_nothing_changed(rep, pre, post, "the walk is refused (address outside the IPA space or no root)")
        return rep.result()
    check_leafwise(rep, pre, post, A, E,
                   lambda d, level: (d | set_bits) & ~clr_bits if _valid(d, level) else None)
    return rep.result()


# The first kernel whose kvm_pgtable_stage2_mkyoung returns nothing.
MKYOUNG_VOID_SINCE = (6, 13, 0)


@statement("C-MKYOUNG", constrains=(
    "kvm_pgtable_stage2_mkyoung", "stage2_update_leaf_attrs", "stage2_attr_walker"))
def contract_mkyoung(pre, step, post):
    """C-MKYOUNG: kvm_pgtable_stage2_mkyoung sets AF in the valid leaf holding addr, and returns it.

    Statement: the valid leaf translating addr's page gets AF set, nothing else changes anywhere;
    ret and out.pte are that leaf's pre-op descriptor, or 0 when the page has no valid leaf or addr
    is outside the IPA space / the table has no root (then nothing changes). From 6.13
    (kernel_version) mkyoung returns void (seen in 6.13.7's source, not 6.12.19's; from 6.18 it
    also takes walk flags): ret and out.pte are 0.

    Why: the MMU notifier's ageing and the access-fault path depend on it; setting any other bit, or
    touching a neighbouring leaf, changes a guest mapping behind everyone's back.

    Constrains: kvm_pgtable_stage2_mkyoung, stage2_update_leaf_attrs, stage2_attr_walker.
    """
    return _young_op("C-MKYOUNG", pre, step, post, D.AF, 0,
                     returns=not kernel_since(pre, MKYOUNG_VOID_SINCE))


@statement("C-MKOLD", constrains=(
    "kvm_pgtable_stage2_mkold", "stage2_update_leaf_attrs", "stage2_attr_walker"))
def contract_mkold(pre, step, post):
    """C-MKOLD: kvm_pgtable_stage2_mkold clears AF in the valid leaf holding addr, and returns it.

    Statement: as C-MKYOUNG with AF cleared. No TLBI is required (the MMU notifier's
    clear_flush_young flushes; see S2-BBM).

    Why: page ageing: an access flag left set makes a cold page look hot; anything else changed is a
    silent change of the guest's mapping.

    Constrains: kvm_pgtable_stage2_mkold, stage2_update_leaf_attrs, stage2_attr_walker.
    """
    return _young_op("C-MKOLD", pre, step, post, 0, D.AF)


@statement("C-IS-YOUNG", constrains=("kvm_pgtable_stage2_is_young", "stage2_update_leaf_attrs"))
def contract_is_young(pre, step, post):
    """C-IS-YOUNG: kvm_pgtable_stage2_is_young reports AF of the valid leaf holding addr, changing nothing.

    Statement: nothing changes (no descriptor, no TLB or cache event); ret (0/1) and out.young are
    true exactly when addr's page has a valid leaf with AF set (false outside the IPA space or
    without a root).

    Why: a wrong answer misleads page reclaim; a change made by a query is a bug by definition.

    Constrains: kvm_pgtable_stage2_is_young, stage2_update_leaf_attrs.
    """
    rep = Report("C-IS-YOUNG", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    leaf = None if walk_error(pre, A, E) is not None else pre.walk().find(A)
    young = bool(leaf is not None and is_valid(leaf) and leaf[DESC] & D.AF)
    if step.ret != int(young):
        rep.add(f"returned {step.ret}, expected {int(young)}")
    if "young" not in step.out:
        rep.add("out.young is missing")
    elif step.out["young"] != young:
        rep.add(f"out.young is {step.out['young']}, expected {young}")
    check_nothing_changed(rep, pre, post, "is_young only reads")
    return rep.result()


def _check_retry_tlbi(rep, pre, step, post):
    """6.7 on (RETRY_TLBI_SINCE): relax_perms that returns -EAGAIN still invalidates addr on this
    CPU (a stale entry would make the fault repeat): one ["tlbi_ipa_nsh", addr, level], level a
    level of this table or TLBI_TTL_UNKNOWN (no hint)."""
    levels = set(range(pre.start_level, G.LAST_LEVEL + 1)) | {0x7FFFFFFF}
    want = [ev for ev in post.tlb_log if ev[0] == "tlbi_ipa_nsh" and ev[1] == step.args["addr"]]
    if len(want) != 1 or len(post.tlb_log) != 1:
        rep.add(f"-EAGAIN (6.7 on): expected exactly one [\"tlbi_ipa_nsh\", "
                f"{step.args['addr']:#x}, level], found {[list(ev) for ev in post.tlb_log]}")
    elif want[0][2] not in levels:
        rep.add(f"-EAGAIN: tlbi_ipa_nsh of {step.args['addr']:#x} with level hint {want[0][2]}, "
                f"not a level of this table ({pre.start_level}..{G.LAST_LEVEL}) nor "
                "TLBI_TTL_UNKNOWN: the walk never set the level it passes (uninitialised)")


# The first kernel whose stage2_attr_walker returns -EAGAIN on a page with no valid leaf, so that
# relax_perms reports it and the fault is retried ("KVM: arm64: Return EAGAIN for invalid PTE in
# attr walker", 76259cca4795, merged for 6.3: 6.3.8 does; 6.2.12 returns 0, as 6.1 does).
RELAX_EAGAIN_SINCE = (6, 3, 0)
# The first kernel whose relax_perms invalidates also when its walk returns -EAGAIN ("KVM: arm64:
# Always invalidate TLB for stage-2 permission faults", be097997a273, merged for 6.7: 6.7.3 does,
# with a u32 level; 6.6.63 and 6.6.87 do not).
RETRY_TLBI_SINCE = (6, 7, 0)
# The first kernel whose relax_perms leaves XN alone for a prot without X (6.19 to 7.1 set it).
XN_ON_REQUEST_SINCE = (7, 2, 0)


@statement("C-RELAX-PERMS", constrains=(
    "kvm_pgtable_stage2_relax_perms", "stage2_update_leaf_attrs", "stage2_attr_walker"))
def contract_relax_perms(pre, step, post):
    """C-RELAX-PERMS: kvm_pgtable_stage2_relax_perms adds permissions to the valid leaf holding addr.

    Statement: -EINVAL with nothing changed if prot has any software bit (55..58; before 5.15 the
    enum has none and they are ignored: D.known_prot); -ERANGE/-EINVAL
    from the walk with nothing changed. Otherwise ret 0; the valid leaf translating addr's page gets
    S2AP R if prot R, S2AP W if prot W, XN cleared if prot X (nothing is ever removed), nothing else
    changes; and the log holds ["tlbi_ipa", addr, level] with the level of that leaf (0 when there is
    no valid leaf: the kernel invalidates with the level its walk data was initialised with).
    By kernel version (the state's kernel_version): from 6.3 a page with no valid leaf returns
    -EAGAIN with nothing changed and nothing logged (the fault is retried; 6.1.176 and 6.2.12
    return 0, 6.3.8 -EAGAIN); from 6.5 the invalidation is this CPU's only, ["tlbi_ipa_nsh", addr,
    level] (a stale entry elsewhere has fewer permissions: a spurious fault at worst; seen in 6.5.0
    and 6.6.63, not 6.4.4); from 6.7 a -EAGAIN also logs exactly one ["tlbi_ipa_nsh", addr,
    level], level a level of the table or TLBI_TTL_UNKNOWN (seen in 6.7.3, 6.8.0 and 6.12.19, not
    6.6.63);
    from 6.19 the leaf's XN becomes what prot says: a prot without X sets XN (stage2_set_xn_attr;
    FEAT_XNX), so execute permission is removed (seen in 6.19.9's and 7.1.5's sources, not
    6.18.35's; its kernel-doc still says no permission is removed); a prot with exactly one of PX
    and UX (D.exec_bits) is -EINVAL with nothing changed and nothing logged without FEAT_XNX; with
    it (the state's has_xnx) the leaf's 2-bit XN field becomes D.xn_field of PX and UX (UX only
    0b01, PX only 0b11); from 7.2 XN is touched only when prot asks for X (PX or UX), so a prot
    without X leaves it as it was again, with or without FEAT_XNX ("Only update XN attr when
    requested during S2 relaxation", a 7.2-rc fix; seen in 7.2-rc's source at 8d187d4b33c2, not
    7.1.5's).

    Why: the permission-fault path relies on it to make progress; removing a permission, or touching
    a neighbour, silently changes the guest's mappings.

    Constrains: kvm_pgtable_stage2_relax_perms, stage2_update_leaf_attrs, stage2_attr_walker.
    """
    rep = Report("C-RELAX-PERMS", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    prot = D.known_prot(step.args["prot"], pre.kernel_version)    # 5.14: no SW bits
    A, E = op_range(pre, step)
    px, ux = D.exec_bits(prot, D.has_px_ux(pre.kernel_version))
    xnx = D.uses_xnx(pre.kernel_version, pre.has_xnx)
    xn = D.xn_field(px, ux, xnx)
    if early_exit(rep, pre, post, step, A, E, EINVAL if prot & D.PROT_SW or xn is None else None):
        return rep.result()
    leaf = pre.walk().find(A)
    if kernel_since(pre, RELAX_EAGAIN_SINCE) and (leaf is None or not is_valid(leaf)):
        check_ret(rep, step, EAGAIN, " (6.3 on: no valid leaf, the fault is retried)")
        retry_tlbi = kernel_since(pre, RETRY_TLBI_SINCE)
        check_nothing_changed(rep, pre, post, "no valid leaf to relax (6.3 on)",
                              allow_log=retry_tlbi)
        if retry_tlbi:
            _check_retry_tlbi(rep, pre, step, post)
        return rep.result()
    check_ret(rep, step, 0)
    set_bits = (D.S2AP_R if prot & D.PROT_R else 0) | (D.S2AP_W if prot & D.PROT_W else 0)
    clr_bits = D.XN if px else 0
    keep_xn = not (px or ux) and kernel_since(pre, XN_ON_REQUEST_SINCE)    # 7.2: X not asked for
    if not px and kernel_since(pre, D.PX_UX_SINCE) and not keep_xn:
        set_bits |= D.XN
    if xnx and not keep_xn:  # FEAT_XNX: the whole field becomes what PX and UX say
        set_bits, clr_bits = set_bits & ~D.XN_FIELD | xn, D.XN_FIELD & ~xn
    check_leafwise(rep, pre, post, A, E,
                   lambda d, level: (d | set_bits) & ~clr_bits if _valid(d, level) else None)
    level = leaf[LEVEL] if leaf is not None and is_valid(leaf) else 0
    tlbi = "tlbi_ipa_nsh" if kernel_since(pre, LOCAL_RELAX_TLBI_SINCE) else "tlbi_ipa"
    want = (tlbi, step.args["addr"], level)
    if want not in post.tlb_log:
        rep.add(f"no [\"{tlbi}\", {step.args['addr']:#x}, {level}] in the log "
                f"(found {[list(ev) for ev in post.tlb_log]})")
    return rep.result()


@statement("C-FLUSH", constrains=(
    "kvm_pgtable_stage2_flush", "stage2_flush_walker", "stage2_pte_cacheable"))
def contract_flush(pre, step, post):
    """C-FLUSH: kvm_pgtable_stage2_flush cleans the data cache for every cacheable leaf, changing nothing.

    Statement: no descriptor, refcount or root changes. With FWB the kernel returns 0 at once and
    logs nothing. Otherwise -ERANGE/-EINVAL from the walk with nothing logged; else ret 0 and, when
    the table does cache maintenance (cmo), the log holds exactly one ["dcache", oa, size] per valid
    leaf with cacheable (normal) MemAttr intersecting R (oa its output address, size its size),
    and no other event; without cmo it logs nothing, except before 5.15 (DCACHE_VIA_MM_OPS_SINCE:
    stage2_flush_walker calls dcache_clean_inval_poc itself), where it logs the same as with cmo.

    Why: the flush makes guest memory coherent with the point of coherency (e.g. before the host
    reads it uncached); a missed leaf hands the host stale data.

    Constrains: kvm_pgtable_stage2_flush, stage2_flush_walker, stage2_pte_cacheable.
    """
    rep = Report("C-FLUSH", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    if pre.has_fwb:
        check_ret(rep, step, 0, " (with FWB the flush returns at once)")
        check_nothing_changed(rep, pre, post, "with FWB flush does nothing")
        return rep.result()
    if early_exit(rep, pre, post, step, A, E):
        return rep.result()
    check_ret(rep, step, 0)
    check_nothing_changed(rep, pre, post, "flush changes no descriptor", allow_log=True)
    ps = pre.page_shift
    want = []
    if pre.cmo or kernel_before(pre, DCACHE_VIA_MM_OPS_SINCE):     # 5.14 cleans without mm_ops
        for iv in covering(pre, A, E):
            if is_valid(iv) and D.is_cacheable(iv[DESC], pre.has_fwb):
                want.append(("dcache", D.address(iv[DESC], ps), iv[END] - iv[START]))
    got = list(post.tlb_log)
    for ev in want:
        if ev in got:
            got.remove(ev)
        else:
            rep.add(f"no [\"dcache\", {ev[1]:#x}, {ev[2]:#x}] for the cacheable leaf mapping it")
    for ev in got:
        rep.add(f"unexpected event {[hex(x) if isinstance(x, int) else x for x in ev]} in the log")
    return rep.result()


@statement("C-GET-LEAF", constrains=("kvm_pgtable_get_leaf", "leaf_walker"))
def contract_get_leaf(pre, step, post):
    """C-GET-LEAF: kvm_pgtable_get_leaf returns the leaf slot of addr's page, changing nothing.

    Statement: nothing changes; -ERANGE/-EINVAL from the walk; else ret 0 with out.pte the leaf-level
    descriptor found for addr's page (valid, annotation or 0) and out.level its level.

    Why: the fault path sizes its mapping from this answer (the fault granule); a wrong level makes
    it build the wrong block, or loop on permission faults.

    Constrains: kvm_pgtable_get_leaf, leaf_walker.
    """
    rep = Report("C-GET-LEAF", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    err = walk_error(pre, A, E)
    check_nothing_changed(rep, pre, post, "get_leaf only reads")
    if err is not None:
        check_ret(rep, step, err)
        return rep.result()
    if not check_ret(rep, step, 0):
        return rep.result()
    leaf = pre.walk().find(A)
    if leaf is None or leaf[OPAQUE]:
        return rep.result()
    if step.out.get("pte") != leaf[DESC]:
        got = step.out.get("pte")
        rep.add(f"out.pte is {'missing' if got is None else hex(got)}, the leaf of {A:#x} is "
                f"{leaf[DESC]:#x}", where_of(leaf, A))
    if step.out.get("level") != leaf[LEVEL]:
        rep.add(f"out.level is {step.out.get('level')}, the leaf of {A:#x} is at level {leaf[LEVEL]}",
                where_of(leaf, A))
    return rep.result()
