"""Contracts of the operations that write leaves over a range: map, set_owner, annotate.

Models: kvm_pgtable_stage2_map, kvm_pgtable_stage2_set_owner and (7.1) kvm_pgtable_stage2_annotate
(arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 with the pKVM ownership patch,
set_owner forcing page granularity as in 5.15), stated over per-page translations of the walked
range R = [A, E) and of the rest of the IPA space, including the collateral effect of splitting a
block: the part of the block outside R becomes invalid (descriptor 0) and is faulted back lazily.

Leaves out: how the walker gets there (anchors, table allocation order), which the invariants and
S2-BBM judge; cache maintenance (ptspec.spec.stage2.cmo); a table's creation and teardown
(ptspec.spec.stage2.contracts_table).
"""

from itertools import compress
from operator import eq, ne

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2 import contract_common
from ptspec.spec.stage2.contract_common import Report, check_geometry, check_ret, describe, early_exit, op_range, where_of
from ptspec.spec.stage2.ranges import complement, level3_parts
from ptspec.spec.stage2.segments import is_counted_leaf, is_valid, same_translation, sweep
from ptspec.spec.stage2.treediff import diff_outside
from ptspec.spec.stage2.state import kernel_before, kernel_since
from ptspec.spec.stage2.step import EAGAIN, EINVAL, ENOMEM, ret_name
from ptspec.spec.arch.walk import START, END, LEVEL, DESC, TABLE, INDEX, OPAQUE
from ptspec.spec.statements import statement


def expected_level(state, A, E, delta, force_pte, p):
    """The leaf level KVM builds for page p of R = [A, E) (the plain statement of expected_zones).

    The largest leaf (the lowest level number) that the level allows (kvm_block_mapping_supported),
    whose aligned block around p lies inside R, and whose output address is aligned to the block size
    (delta = output - input, so that is delta % size == 0); with force_pte only level 3.
    """
    ps = state.page_shift
    for level in G.leaf_levels(state.start_level, ps):          # largest leaf first
        if level == G.LAST_LEVEL:
            return level
        size = G.granule_size(level, ps)
        block = p - p % size
        if not force_pte and A <= block and block + size <= E and delta % size == 0:
            return level
    return G.LAST_LEVEL


def expected_zones(state, A, E, delta, force_pte):
    """[(lo, hi, level)] covering [A, E): expected_level() of each page of R, as intervals.

    The fast form of expected_level (read that one): the blocks that fit form nested intervals, so R
    splits into at most 7 zones, each with one level (tests/test_spec_plain.py holds them equal).
    """
    ps = state.page_shift
    cands = [lv for lv in G.leaf_levels(state.start_level, ps)
             if lv == 3 or (not force_pte and delta % G.granule_size(lv, ps) == 0)]
    ranges = {}
    points = {A, E}
    for lv in cands:
        if lv == 3:
            continue
        g = G.granule_size(lv, ps)
        lo, hi = -(-A // g) * g, E // g * g
        if lo < hi:
            ranges[lv] = (lo, hi)
            points.update((lo, hi))
    pts = sorted(points)
    zones = []
    for x, y in zip(pts, pts[1:]):
        lv = next(lv for lv in cands if lv == 3 or (lv in ranges and ranges[lv][0] <= x < ranges[lv][1]))
        zones.append((x, y, lv))
    return zones


def _split_by_zones(segs, zones):
    """Cut sweep segments at zone boundaries: (s, e, pre_iv, post_iv, level)."""
    out = []
    k = 0
    for s, e, p, q in segs:
        while k < len(zones) and zones[k][1] <= s:
            k += 1
        j = k
        while j < len(zones) and zones[j][0] < e:
            zs, ze, lv = zones[j]
            out.append((max(s, zs), min(e, ze), p, q, lv))
            j += 1
    return out


def _check_outside(rep, pre, post, A, E, what):
    """Outside R only split collateral may change: pages of a pre-op block (or annotation above level
    3) that intersects R may become invalid descriptor 0; everything else keeps its translation."""
    for lo, hi, p, q in diff_outside(pre, post, A, E):
        collateral = (q[DESC] == 0 and not is_valid(q) and is_counted_leaf(p) and p[LEVEL] < 3
                      and p[START] < E and p[END] > A)
        if not collateral:
            rep.add(f"[{lo:#x}, {hi:#x}) lies outside the {what} range [{A:#x}, {E:#x}) but changed "
                    f"from {describe(p, pre.page_shift)} to {describe(q, post.page_shift)}",
                    where_of(q, lo))


def _settled_tables(post, A, E, zones, page_fn):
    """The parts of the post-state's level-3 tables, inside [A, E) and a level-3 zone, whose
    slots hold exactly what page_fn(base, i, j) says for them (whole tables, a table's end when R
    starts or ends inside it, or the runs of a table's slots that do), as (lo, hi, table pa,
    first slot i, end slot j), by address."""
    done = []
    g = 1 << post.page_shift
    for x, y, pa, first in level3_parts(post, A, E):
        base = x - first * g
        for zs, ze, lv in zones:
            lo, hi = max(x, zs), min(y, ze)
            if lv != 3 or lo >= hi:
                continue
            i, j = (lo - base) // g, (hi - base) // g
            got, want = post.pages[pa][i:j], page_fn(base, i, j)
            if got == want:
                done.append((lo, hi, pa, i, j))
                continue
            # the runs of slots that hold what page_fn says (cut at C speed where that changes)
            same = list(map(eq, got, want))
            cuts = [0, *compress(range(1, j - i), map(ne, same[1:], same)), j - i]
            done.extend((lo + x * g, lo + y * g, pa, i + x, i + y)
                        for x, y in zip(cuts, cuts[1:]) if same[x])
    return done


def _kept_in_settled(pre, post, done):
    """Whether a page of the settled parts (_settled_tables) kept its pre-op leaf: what the sweep
    finds `kept` there. A settled page holds the expected valid page, so it was kept exactly when
    the pre-state translates it by the same descriptor in a level-3 slot (the same translation,
    hence equal to the expected leaf in permissions too)."""
    if not pre.roots:
        return False
    walk = pre.walk()
    for lo, _, pa, i, j in done:
        p = walk.find(lo)
        if p is None or p[LEVEL] != G.LAST_LEVEL or p[OPAQUE]:
            continue
        k = p[INDEX]
        B = post.pages[pa]
        if any(a == b and b & D.TYPE_BITS == D.TABLE_OR_PAGE
               for a, b in zip(pre.pages[p[TABLE]][k:k + j - i], B[i:j])):
            return True
    return False


def _check_inside(rep, pre, post, A, E, zones, expected, ret, allow_eagain, page_fn=None,
                  allow_eagain_rets=(EAGAIN,)):
    """Every page of R holds what the op installs (or, on error, what the error rules allow).

    page_fn(base, i, j), when given, is the expected content of slots [i, j) of a level-3 table at
    `base`: slots that match it are settled at C speed (the sweep would find each of them right;
    whether one of them kept its pre-op leaf is read from the pre-state's table: _kept_in_settled).
    Returns True when some page kept a pre-op leaf that equals the expected one except in
    permissions (what makes the kernel return -EAGAIN).
    """
    ps = pre.page_shift
    perms = D.perms_mask(pre.kernel_version)     # S2AP and XN (6.19: the 2-bit field)
    reported = set()
    settled = (_settled_tables(post, A, E, zones, page_fn)
               if page_fn and contract_common.SETTLE_WHOLE_TABLES else [])
    kept_same_mapping = allow_eagain and _kept_in_settled(pre, post, settled)
    done = [(lo, hi) for lo, hi, _, _, _ in settled]
    segs = [seg for x, y in complement(done, A, E) for seg in sweep(pre, post, x, y)]
    last = None         # (post leaf, level, whether it is what KVM builds): a block swept
    for s, e, p, q, lv in _split_by_zones(segs, zones):        # against each pre-op page under it
        kept = (allow_eagain and p[LEVEL] == lv and is_valid(p) and same_translation(p, q)
                and (p[DESC] & ~perms) == (expected(lv, p[START]) & ~perms))
        kept_same_mapping = kept_same_mapping or kept
        if last is None or last[0] is not q or last[1] != lv:
            want = expected(lv, q[START]) if q[LEVEL] == lv else None
            last = (q, lv, want is not None and not q[OPAQUE] and q[DESC] == want
                    and is_valid(q) == bool(want & D.VALID))
        if last[2]:
            continue
        if kept and ret in allow_eagain_rets:
            continue
        if ret == ENOMEM and (same_translation(p, q) or
                              (q[DESC] == 0 and not is_valid(q) and is_counted_leaf(p) and p[LEVEL] < 3)):
            continue
        key = (q[START], p[START])
        if key in reported:
            continue
        reported.add(key)
        g = G.granule_size(lv, ps)
        block = s // g * g
        exp = expected(lv, block)
        hint = ""
        if is_valid(q) and q[LEVEL] != lv and (q[DESC] ^ exp) & ~(D.encode_address(-1, ps) | D.TYPE) == 0:
            hint = (" (a smaller leaf than KVM builds for this range and alignment)" if q[LEVEL] > lv
                    else " (a larger leaf than the range and alignment allow)")
        if exp & D.VALID:
            kind = "page" if lv == 3 else "block"
            want_text = (f"a {G.size_text(g)} {kind} at level {lv} -> {D.address(exp, ps):#x} "
                         f"(desc {exp:#x})")
        else:
            want_text = f"invalid {exp:#x} at level {lv}"
        rep.add(f"[{s:#x}, {e:#x}) should be {want_text} after {ret_name(ret)}, found "
                f"{describe(q, ps)}{hint}", where_of(q, s))
    return kept_same_mapping


@statement("C-MAP", constrains=(
    "kvm_pgtable_stage2_map", "stage2_set_prot_attr", "stage2_map_walker",
    "stage2_map_walker_try_leaf", "kvm_block_mapping_supported", "stage2_pte_needs_update",
    "stage2_map_walk_leaf", "stage2_map_walk_table_pre", "kvm_pgtable_walk"))
def contract_map(pre, step, post):
    """C-MAP: kvm_pgtable_stage2_map installs the largest leaves the range and alignment allow.

    Statement (R = [A, E) the walked range, phys_al = phys aligned down to a page):
    -EINVAL with nothing changed if prot has both X and DEVICE, if the table is an identity map
    (KVM_PGTABLE_S2_IDMAP, the pKVM host) and addr != phys, or the table has no root; -ERANGE
    with nothing changed if A or E is above 2**ia_bits; an empty range returns 0 and changes nothing.
    Otherwise page p of R must map phys_al + (p - A) with MemAttr normal/device (per DEVICE and
    FWB), S2AP R/W from prot, SH inner shareable, AF set, XN unless prot X, software bits 58:55
    from prot, in a leaf at the largest level that KVM allows blocks at (or level 3), not above level 3
    when force_pte, whose aligned block around p lies inside R and whose output address is aligned
    to the block size. ret 0: all of R is exactly that. ret -EAGAIN: the same, except that pages whose
    pre-op leaf was already that leaf but for permissions (S2AP, XN) keep it, and at least one page
    did so. By kernel version: from 6.2 a map outside the fault handler (no
    KVM_PGTABLE_WALK_HANDLE_FAULT, as the shim calls it) goes on past such a leaf and may return 0
    with those pages kept (seen in 6.3.8; 6.1.176 stops: eagain-abort). From 6.9
    (KVM_PGTABLE_PROT_NORMAL_NC, D.has_normal_nc) a prot with NORMAL_NC maps MemAttr normal
    non-cacheable, and NORMAL_NC with X or with DEVICE is -EINVAL (before 6.9 the bit is ignored).
    From 6.19 (D.has_px_ux) X is split into PX and UX: a prot with exactly one of them is -EINVAL
    without FEAT_XNX, and either of them counts as X with DEVICE or NORMAL_NC; with FEAT_XNX (the
    state's has_xnx) one alone maps with XN 0b01 (UX only) or 0b11 (PX only), D.xn_field, and a
    re-map differing in the 2-bit XN field only (D.perms_mask) is a permission change; in a table
    initialised with KVM_PGTABLE_S2_AS_S1 (the state's as_s1) every leaf's MemAttr is the AS_S1
    encoding (D.MEMATTR_AS_S1), device and NORMAL_NC prots included, the -EINVAL rules unchanged.
    Before 5.15 (D.known_prot: 5.14's enum kvm_pgtable_prot is X|W|R|DEVICE) the prot's software
    bits are ignored. ret -ENOMEM: each page of R is done, unchanged, or invalid 0 because its
    pre-op block was split. Outside R: unchanged, except pages of a pre-op block intersecting R,
    which may become invalid 0 (the split's collateral). A map whose output range exceeds
    2**pa_bits is outside the contract's domain: only the outside-R rule is checked then.

    Why: a leaf smaller than necessary costs TLB reach (and a mutant that never builds blocks goes
    unnoticed otherwise); a leaf larger than R maps memory the caller did not ask for; a walk that
    stops early (e.g. on -EAGAIN) leaves the guest faulting forever on the rest of the range.

    Constrains: kvm_pgtable_stage2_map, stage2_set_prot_attr, stage2_map_walker,
    stage2_map_walker_try_leaf (kvm_block_mapping_supported, stage2_pte_needs_update),
    stage2_map_walk_leaf (splitting blocks), stage2_map_walk_table_pre/_post (coalescing a table
    into a block), kvm_pgtable_walk (range and -ERANGE).
    """
    rep = Report("C-MAP", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    ps = pre.page_shift
    a = step.args
    A, E = op_range(pre, step)
    prot = D.known_prot(a["prot"], pre.kernel_version)        # 5.14: no software bits
    attrs = D.prot_attrs(prot, pre.has_fwb, D.has_normal_nc(pre.kernel_version),
                         D.has_px_ux(pre.kernel_version), pre.as_s1,
                         D.uses_xnx(pre.kernel_version, pre.has_xnx))
    refused = attrs is None or (pre.idmap and a["addr"] != a["phys"])
    if early_exit(rep, pre, post, step, A, E, EINVAL if refused else None):
        return rep.result()
    check_ret(rep, step, (0, EAGAIN, ENOMEM))
    phys_al = a["phys"] & ~((1 << ps) - 1)
    if phys_al + (E - A) <= 1 << min(pre.pa_bits, G.IPA_RANGE[ps][1]):     # 52 bits with 64K, else 48
        zones = expected_zones(pre, A, E, phys_al - A, a["force_pte"])

        def expected(level, ipa):
            return D.leaf_descriptor(phys_al + (ipa - A), attrs, level, ps)

        def page_fn(base, i, j):
            first = expected(3, base + (i << ps))
            out = list(range(first, first + ((j - i) << ps), 1 << ps))
            if out and out[-1] != expected(3, base + ((j - 1) << ps)):
                # the output crosses 2**48 (64K: address bits 51:48 sit in descriptor bits 15:12)
                return [expected(3, base + (k << ps)) for k in range(i, j)]
            return out

        # 6.2 on, a walk outside the fault handler goes on past such a leaf and returns 0
        rets = (EAGAIN, 0) if kernel_since(pre, (6, 2, 0)) else (EAGAIN,)
        kept = _check_inside(rep, pre, post, A, E, zones, expected, step.ret, allow_eagain=True,
                             page_fn=page_fn, allow_eagain_rets=rets)
        if step.ret == EAGAIN and not kept:
            rep.add("returned -EAGAIN, but no page of the range kept an existing mapping that differs "
                    "only in permissions")
    _check_outside(rep, pre, post, A, E, "mapped")
    return rep.result()


SET_OWNER_PAGES_SINCE = (5, 15, 0)       # set_owner's map walk sets force_pte from 5.15


@statement("C-SET-OWNER", constrains=(
    "kvm_pgtable_stage2_set_owner", "kvm_init_invalid_leaf_owner", "stage2_map_walker_try_leaf",
    "kvm_phys_is_valid", "stage2_map_walk_leaf"))
def contract_set_owner(pre, step, post):
    """C-SET-OWNER: kvm_pgtable_stage2_set_owner writes owner annotations, page by page.

    Statement: -EINVAL with nothing changed when owner_id is above KVM_MAX_OWNER_ID (owner_id is a
    u8 parameter in the kernel, so only its low 8 bits count: 257 is owner 1); -ERANGE/-EINVAL
    from the walk with nothing changed; an empty range returns 0. Otherwise every page of R becomes
    the invalid descriptor holding owner_id in the owner field (0 for owner 0) in a level-3 slot
    (set_owner forces page granularity, as 5.15 does); valid leaves it replaces are broken before
    (S2-BBM). Never -EAGAIN. ret -ENOMEM: each page of R is done, unchanged, or
    invalid 0 as split collateral. Outside R as for map: unchanged or split collateral.
    Before 5.15 (SET_OWNER_PAGES_SINCE; seen in 5.14.2, which has no force_pte) set_owner writes the
    annotation in the largest leaf slots the range allows, as map would for an output address that
    is never misaligned (kvm_block_mapping_supported skips KVM_PHYS_INVALID's alignment).
    From 7.1 (kernel_version) set_owner is kvm_pgtable_stage2_annotate with the ownership type: the
    annotation also carries KVM_HOST_INVALID_PTE_TYPE_DONATION in bits 63:60 (D.owner_tag).

    Why: pKVM reads ownership from these annotations; a page left with the previous owner, or a
    block-sized annotation where 5.15 writes pages, is a wrong ownership record.

    Constrains: kvm_pgtable_stage2_set_owner, kvm_init_invalid_leaf_owner, stage2_map_walker_try_leaf
    (the !kvm_phys_is_valid path), stage2_map_walk_leaf.
    """
    rep = Report("C-SET-OWNER", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    owner = step.args["owner_id"] & D.OWNER_ID_MASK
    if early_exit(rep, pre, post, step, A, E, EINVAL if owner > pre.max_owner_id else None):
        return rep.result()
    check_ret(rep, step, (0, ENOMEM))
    want = D.owner_descriptor(owner, pre.owner_field, pre.owner_tag)
    # before 5.15 nothing forces pages: the largest blocks of R, the output address not checked
    old = kernel_before(pre, SET_OWNER_PAGES_SINCE)
    zones = expected_zones(pre, A, E, 0, False) if old else [(A, E, 3)]
    _check_inside(rep, pre, post, A, E, zones, lambda level, ipa: want, step.ret, allow_eagain=False,
                  page_fn=lambda base, i, j: [want] * (j - i))
    _check_outside(rep, pre, post, A, E, "annotated")
    return rep.result()


@statement("C-ANNOTATE", constrains=(
    "kvm_pgtable_stage2_annotate", "stage2_map_walker_try_leaf", "stage2_leaf_mapping_allowed"),
    kernel_versions="7.1-")
def contract_annotate(pre, step, post):
    """C-ANNOTATE: kvm_pgtable_stage2_annotate writes one typed annotation on every page of a range.

    Statement (7.1 on; kernel_version): -EINVAL with nothing changed when the annotation has bit 0
    or any of bits 63:60 set, or the type is 0, KVM_INVALID_PTE_TYPE_LOCKED, or a value the 4-bit
    type field cannot hold (D.annotation_descriptor); -ERANGE/-EINVAL from the walk with nothing
    changed; an empty range returns 0. Otherwise, as set_owner: every page of R becomes the invalid
    descriptor annotation | type << 60 in a level-3 slot (annotate forces page granularity), valid
    leaves it replaces broken before (S2-BBM), never -EAGAIN, on -ENOMEM each page done, unchanged,
    or invalid 0 as split collateral; outside R unchanged or split collateral. A state before 7.1
    has no such call.

    Why: pKVM records page ownership (KVM_HOST_INVALID_PTE_TYPE_DONATION) and pages the host took
    back from a guest (KVM_GUEST_INVALID_PTE_TYPE_POISONED) with it; a type 0 or LOCKED descriptor
    would read as an empty entry or as a break-before-make in progress forever, and an annotation
    with bit 0 set is a valid descriptor: a translation nobody asked for.

    Constrains: kvm_pgtable_stage2_annotate, stage2_map_walker_try_leaf, stage2_leaf_mapping_allowed.
    """
    rep = Report("C-ANNOTATE", step)
    if not D.has_annotate(pre.kernel_version):
        rep.add("kvm_pgtable_stage2_annotate does not exist before 7.1 (the state's kernel_version "
                f"is {pre.kernel_version!r})")
        return rep.result()
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    want = D.annotation_descriptor(step.args["type"], step.args["annotation"])
    if early_exit(rep, pre, post, step, A, E, EINVAL if want is None else None):
        return rep.result()
    check_ret(rep, step, (0, ENOMEM))
    _check_inside(rep, pre, post, A, E, [(A, E, 3)], lambda level, ipa: want, step.ret, allow_eagain=False,
                  page_fn=lambda base, i, j: [want] * (j - i))
    _check_outside(rep, pre, post, A, E, "annotated")
    return rep.result()
