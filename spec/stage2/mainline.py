"""The reworked stage-2 walker (Linux 6.2 and later): what its operations and its new machinery must do.

Models: ``arch/arm64/kvm/hyp/pgtable.c`` from 6.2 on, where break-before-make first stores a
locked-PTE marker in the descriptor (``stage2_try_break_pte``), tables a walk removes are handed
to ``mm_ops->free_removed_table`` (6.2-6.4) / ``free_unlinked_table`` (6.5 on), ageing is
``kvm_pgtable_stage2_test_clear_young`` (6.5 on; ``mkold``/``is_young`` before) and
``kvm_pgtable_stage2_split`` breaks blocks into pages. Statements, each parameterised by kernel
version where the kernel changed its mind:

* S2-LOCKED: the locked-PTE marker (``KVM_INVALID_PTE_LOCKED``, BIT(10) of an invalid descriptor in
  6.2-6.12; type 1 in bits 63:60 from 7.1) is stored only as an invalid descriptor, and none is
  left in the tables when the operation returns;
* S2-RCU: a table handed to free_unlinked/free_removed is no longer reachable from the roots and,
  with every table below it, is free when the step ends (S2-LEAK judges the rest);
* S2-TABLE-TLBI: a table page is freed only after a TLB invalidation of the range it mapped
  (the walk caches; 6.6's deferred unmap TLBI came too late for zapped tables);
* C-TEST-CLEAR-YOUNG and C-SPLIT: the contracts of the two operations (registered with the other
  contracts in ``ptspec.spec.stage2.check``).

The raw state keys read here (docs/interface.md; other states lack them and are judged as having
none): ``kernel_version`` ("6.6.63"), ``pte_locks`` ([[pte PA, stored value], ...] of this step),
``unlinked_freed`` ([[table PA, level], ...] of this step), ``pages_freed`` ([[PA, position], ...]:
pages whose last reference the step dropped, after how many of its tlb_log events).

Leaves out: concurrency. A second walker that sees the marker and backs off, a stale pointer kept
across the RCU grace period, a lost cmpxchg: the checks run single-threaded and judge what one
walker leaves behind, step by step.
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.arch.walk import START, END, LEVEL, DESC, OPAQUE
from ptspec.spec.stage2.contract_common import (Report, check_geometry, check_nothing_changed,
                                                check_ret, describe, op_range, where_of)
from ptspec.spec.stage2.contracts_attr import check_leafwise
from ptspec.spec.stage2.segments import covering, is_valid
from ptspec.spec.stage2.treediff import diff
from ptspec.spec.stage2.state import load_state
from ptspec.spec.stage2.step import ENOMEM, walk_error
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation

# Where the locked-PTE marker lives, by the first version that placed it there: (mask, bits) such
# that an invalid descriptor d is the marker when d & mask == bits.
LOCK_MARKERS = (
    ((6, 2, 0), (1 << 10, 1 << 10)),              # KVM_INVALID_PTE_LOCKED BIT(10)
    ((7, 1, 0), (0xF << 60, 1 << 60)),            # KVM_INVALID_PTE_TYPE_LOCKED in bits 63:60
)


def version_tuple(version) -> tuple:
    """'6.12.19' -> (6, 12, 19); a tuple is returned as is; None -> ()."""
    if version is None:
        return ()
    if isinstance(version, tuple):
        return version
    out = [int(p) if p.isdigit() else 0 for p in str(version).split(".")[:3]]
    return tuple(out + [0] * (3 - len(out)))


def lock_marker(version) -> tuple | None:
    """(mask, bits) of the locked-PTE marker of this kernel version, None before 6.2."""
    v = version_tuple(version)
    found = None
    for since, marker in LOCK_MARKERS:
        if v and v >= since:
            found = marker
    return found


def _raw(obj, key):
    return obj.get(key, []) if isinstance(obj, dict) else []


@statement("S2-LOCKED", constrains=("stage2_try_break_pte", "stage2_make_pte",
                                    "stage2_try_set_pte"), kernel_versions="6.2-")
def check_locked(post_raw) -> list:
    """S2-LOCKED: the locked-PTE marker is never a valid descriptor and never outlives an operation.

    Statement: every descriptor an operation stores as the locked-PTE marker of its kernel version
    (pte_locks: BIT(10) in 6.2-6.12, type 1 in bits 63:60 from 7.1) has the valid bit clear; and when
    the operation returns, no table page holds an invalid descriptor that matches the marker.

    Why: the marker is break-before-make's "break": the hardware walker must see it as invalid (a
    valid-looking marker is a translation to whatever its address bits say), and other software
    walkers back off while it is there (a marker left behind makes every later walk return -EAGAIN
    forever, and loses the page's mapping and its reference).

    Constrains: stage2_try_break_pte (stores the marker through stage2_try_set_pte),
    stage2_make_pte (replaces it), every walker that breaks a PTE and returns early.
    """
    if not isinstance(post_raw, dict):
        return []
    marker = lock_marker(post_raw.get("kernel_version"))
    if marker is None:
        return []
    mask, bits = marker
    out = []
    for pa, value in _raw(post_raw, "pte_locks"):
        if value & D.VALID:
            out.append(Violation("S2-LOCKED", f"the locked-PTE marker was stored as a valid "
                                 f"descriptor {value:#x} at {pa:#x}: the hardware walk uses it",
                                 {"pte": pa, "desc": value}))
    state = load_state(post_raw)
    ptrs = 1 << (state.page_shift - 3)
    for pa, words in sorted(state.pages.items()):
        for i, w in enumerate(words[:ptrs]):
            if w and not w & D.VALID and w & mask == bits:
                out.append(Violation("S2-LOCKED", f"table {pa:#x} index {i} still holds the "
                                     f"locked-PTE marker {w:#x} after the operation returned",
                                     {"table": pa, "index": i, "desc": w}))
                break
    return out


def _tables_below(state, pa, level, seen=None):
    """The table page pa and every table page reachable below it (level = pa's level)."""
    seen = set() if seen is None else seen
    if pa in seen or pa not in state.pages:
        return seen
    seen.add(pa)
    if level >= G.LAST_LEVEL:
        return seen
    ptrs = 1 << (state.page_shift - 3)
    for w in state.pages[pa][:ptrs]:
        if D.is_table(w, level):
            _tables_below(state, D.address(w, state.page_shift), level + 1, seen)
    return seen


def _reachable(state):
    out = set()
    for k, root in enumerate(state.roots):
        _tables_below(state, root, state.start_level, out)
    return out


@statement("S2-RCU", constrains=("stage2_free_unlinked_table", "kvm_pgtable_stage2_free_unlinked",
                                 "kvm_pgtable_stage2_free_removed", "stage2_map_walk_table_pre",
                                 "stage2_split_walker"), kernel_versions="6.2-")
def check_unlinked(pre_raw, post_raw) -> list:
    """S2-RCU: a table handed to free_unlinked/free_removed was unlinked first, and all of it is freed.

    Statement: for every [pa, level] in the step's unlinked_freed: pa was a table page of the
    pre-state, it is not reachable from the roots after the step, and neither pa nor any table page
    that was below it in the pre-state is still allocated after the step (unless reachable again).

    Why: the host frees an unlinked table after an RCU grace period, while shared walkers may still
    be inside it: freeing a table that is still linked is a use after free for the next walker; a
    subtree page whose last reference is not dropped is leaked memory of the hypervisor.

    Constrains: stage2_map_walk_table_pre (a table replaced by a block), stage2_split_walker (the
    unlinked table of a lost race), kvm_pgtable_stage2_free_unlinked and
    kvm_pgtable_stage2_free_removed (drop every reference of the subtree), the host's
    stage2_free_unlinked_table.
    """
    if not isinstance(post_raw, dict) or not _raw(post_raw, "unlinked_freed"):
        return []
    pre, post = load_state(pre_raw), load_state(post_raw)
    live = _reachable(post)
    out = []
    for pa, level in _raw(post_raw, "unlinked_freed"):
        if pa not in pre.pages:
            out.append(Violation("S2-RCU", f"free_unlinked of {pa:#x} (level {level}), which was "
                                 "not a table page before the step", {"table": pa}))
            continue
        if pa in live:
            out.append(Violation("S2-RCU", f"free_unlinked of table {pa:#x} (level {level}) that "
                                 "is still reachable from the roots", {"table": pa}))
            continue
        kept = sorted(p for p in _tables_below(pre, pa, level) if p in post.pages and p not in live)
        if kept:
            out.append(Violation("S2-RCU", f"free_unlinked of table {pa:#x} (level {level}) left "
                                 f"{len(kept)} page(s) of it allocated, first {kept[0]:#x}",
                                 {"table": kept[0]}))
    return out


def table_spans(state):
    """table page -> (level, first IPA, end IPA) for every table reachable from the roots."""
    out = {}
    ps = state.page_shift
    ptrs = 1 << (ps - 3)

    def visit(pa, level, base):
        if pa in out or pa not in state.pages:
            return
        span = G.granule_size(level, ps) * ptrs
        out[pa] = (level, base, base + span)
        if level >= G.LAST_LEVEL:
            return
        for i, w in enumerate(state.pages[pa][:ptrs]):
            if D.is_table(w, level):
                visit(D.address(w, ps), level + 1, base + i * G.granule_size(level, ps))

    top = G.granule_size(state.start_level, ps) * ptrs
    for k, root in enumerate(state.roots):
        visit(root, state.start_level, k * top)
    return out


def _clears(ev, lo, hi):
    if ev[0] == "tlbi_vmid":
        return True
    if ev[0] == "tlbi_ipa":
        return lo <= ev[1] < hi
    if ev[0] == "tlbi_range":
        return ev[1] < hi and lo < ev[1] + ev[2]
    return False


@statement("S2-TABLE-TLBI", constrains=("stage2_unmap_put_pte", "stage2_unmap_walker",
                                        "stage2_try_break_pte"), kernel_versions="6.2-")
def check_table_tlbi(pre_raw, step, post_raw) -> list:
    """S2-TABLE-TLBI: a table page is freed only after the TLB was invalidated for the range it mapped.

    Statement: for every page of pages_freed that was a non-root table page of the pre-state,
    mapping the IPA range [lo, hi), the step's tlb_log holds before it (its position) a
    ["tlbi_vmid"], a ["tlbi_ipa", ipa, level] with lo <= ipa < hi (any level hint), or a
    ["tlbi_range", ipa, size] overlapping [lo, hi). destroy is exempt (the VMID is retired).

    Why: the hardware walker caches table entries (the walk caches) as well as leaves; a table page
    freed while such an entry may still point at it lets the walker read memory that now belongs to
    someone else. Deferring the invalidation to one range TLBI at the end of the walk (6.6's
    unmap with FWB) is fine for leaves but too late for a table that was already freed.

    Constrains: stage2_unmap_put_pte (the zapped table's TLBI may not be deferred),
    stage2_unmap_walker (frees the child table), stage2_try_break_pte (a table replaced by a
    block: the VMID is invalidated before the subtree is freed).
    """
    if not isinstance(post_raw, dict) or not _raw(post_raw, "pages_freed"):
        return []
    if (step.get("op") if isinstance(step, dict) else step.op) == "destroy":
        return []
    pre = load_state(pre_raw)
    spans = table_spans(pre)
    roots = set(pre.roots)
    log = post_raw.get("tlb_log", [])
    out = []
    for pa, pos in _raw(post_raw, "pages_freed"):
        if pa not in spans or pa in roots:
            continue
        level, lo, hi = spans[pa]
        if not any(_clears(ev, lo, hi) for ev in log[:pos]):
            later = any(_clears(ev, lo, hi) for ev in log[pos:])
            out.append(Violation("S2-TABLE-TLBI", f"level-{level} table {pa:#x} mapping "
                                 f"[{lo:#x}, {hi:#x}) was freed with no TLB invalidation of that "
                                 f"range before it{' (one comes after the free)' if later else ''}",
                                 {"table": pa, "level": level, "ipa": lo}))
    return out


def check_mainline_step(pre_raw, step, post_raw) -> list:
    """The reworked walker's statements on one step (S2-LOCKED, S2-RCU, S2-TABLE-TLBI), given
    raw states."""
    return (check_locked(post_raw) + check_unlinked(pre_raw, post_raw)
            + check_table_tlbi(pre_raw, step, post_raw))


@statement("C-TEST-CLEAR-YOUNG", constrains=("kvm_pgtable_stage2_test_clear_young",
                                             "stage2_age_walker"), kernel_versions="6.5-")
def contract_test_clear_young(pre, step, post):
    """C-TEST-CLEAR-YOUNG: kvm_pgtable_stage2_test_clear_young reports and (mkold) clears AF in a range.

    Statement: ret (0/1) and out.young are true exactly when some valid leaf intersecting the walked
    range [addr, addr + size) has AF set (false when the range is outside the IPA space or there is
    no root: the kernel WARNs and reports not young). With mkold = 1 each such leaf loses AF and
    nothing else changes; with mkold = 0 nothing changes. No TLB or cache event (the MMU notifier's
    caller flushes; see S2-BBM).

    Why: page ageing: a young page reported old is reclaimed while hot, an old page reported young
    is never reclaimed; any other change is a silent change of the guest's mapping.

    Constrains: kvm_pgtable_stage2_test_clear_young, stage2_age_walker.
    """
    rep = Report("C-TEST-CLEAR-YOUNG", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    young = False
    if walk_error(pre, A, E) is None and E > A:
        young = any(is_valid(iv) and iv[DESC] & D.AF for iv in covering(pre, A, E))
    if step.ret != int(young):
        rep.add(f"returned {step.ret}, expected {int(young)}")
    if "young" in step.out and step.out["young"] != young:
        rep.add(f"out.young is {step.out['young']}, expected {young}")
    if not step.args.get("mkold") or not young:
        check_nothing_changed(rep, pre, post, "nothing to clear" if step.args.get("mkold")
                              else "test_clear_young without mkold only reads")
        return rep.result()

    def transform(desc, level):
        if D.is_valid_leaf(desc, level) and desc & D.AF:
            return desc & ~D.AF
        return None
    check_leafwise(rep, pre, post, A, E, transform)
    if post.tlb_log:
        rep.add(f"the step logged {len(post.tlb_log)} TLB/cache event(s), first "
                f"{list(post.tlb_log[0])}; ageing leaves the flush to its caller")
    return rep.result()


def _page_oa(iv, s, page_shift):
    return D.address(iv[DESC], page_shift) + (s - iv[START])


_ATTRS = D.LEAF_ATTR_LO | D.LEAF_ATTR_HI


@statement("C-SPLIT", constrains=("kvm_pgtable_stage2_split", "stage2_split_walker",
                                  "kvm_pgtable_stage2_create_unlinked"),
           kernel_versions="6.5-")
def contract_split(pre, step, post):
    """C-SPLIT: kvm_pgtable_stage2_split maps the same translations, with pages in the range.

    Statement: the walk is refused (-ERANGE/-EINVAL, nothing changed) as every walk; otherwise ret
    is 0 or -ENOMEM, and:
    - same translations: every page translates after the step as before: an invalid page keeps its
      descriptor, a valid one keeps its output address and its leaf attributes (bits 11:2, 63:51),
      at the same or a deeper level; AF may only be gained (the new leaves are built with AF set,
      kvm_pgtable_stage2_pte_prot does not carry it: an old block splits into young pages, seen
      in 6.6.63);
    - page granularity: with ret 0, every valid leaf intersecting [addr, addr + size) is a page
      (the last level);
    - the memcache is charged as documented: every page the step allocated came from the memcache
      (kvm_pgtable_stage2_split's @mc), nothing from the allocator beyond it; with ret 0 the pages
      left there are exactly the ones not installed (a failed split may have taken more, and
      given them back to the allocator: S2-LEAK judges that they were).

    Why: splitting is dirty logging's preparation: a changed output address or permission is a
    silent remap of guest memory; a block left in the range defeats dirty tracking at page
    granularity; an allocation outside the pre-charged memcache can sleep or fail under the
    MMU lock the caller holds.

    Constrains: kvm_pgtable_stage2_split, stage2_split_walker, kvm_pgtable_stage2_create_unlinked.
    """
    rep = Report("C-SPLIT", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    A, E = op_range(pre, step)
    err = walk_error(pre, A, E)
    if err is not None:
        check_ret(rep, step, err, " (the walk is refused)")
        check_nothing_changed(rep, pre, post, "the walk is refused")
        return rep.result()
    check_ret(rep, step, (0, ENOMEM))
    ps = pre.page_shift
    memtype_told = False
    for s, e, p, q in diff(pre, post):
        if p[OPAQUE] or q[OPAQUE]:
            rep.add(f"[{s:#x}, {e:#x}) was {describe(p, ps)}, now {describe(q, ps)}", where_of(q, s))
        elif not is_valid(p):
            rep.add(f"[{s:#x}, {e:#x}) was invalid {p[DESC]:#x}, now {describe(q, ps)}",
                    where_of(q, s))
        elif not is_valid(q):
            rep.add(f"[{s:#x}, {e:#x}) was {describe(p, ps)}, now invalid", where_of(q, s))
        elif (_page_oa(p, s, ps) == _page_oa(q, s, ps) and q[LEVEL] >= p[LEVEL]
              and (p[DESC] ^ q[DESC]) & _ATTRS & ~D.AF == D.MEMATTR_MASK & (p[DESC] ^ q[DESC])
              and (p[DESC] ^ q[DESC]) & D.MEMATTR_MASK):
            if memtype_told:
                continue            # one report per step: every page of the block says the same
            memtype_told = True
            rep.add(f"[{s:#x}, {e:#x}) was {describe(p, ps)}, now {describe(q, ps)}: the memory "
                    f"type changed (MemAttr {(p[DESC] & D.MEMATTR_MASK) >> 2:#x} -> "
                    f"{(q[DESC] & D.MEMATTR_MASK) >> 2:#x})", where_of(q, s))
        elif (_page_oa(p, s, ps) != _page_oa(q, s, ps) or (p[DESC] ^ q[DESC]) & _ATTRS & ~D.AF
              or p[DESC] & ~q[DESC] & D.AF or q[LEVEL] < p[LEVEL]):
            rep.add(f"[{s:#x}, {e:#x}) was {describe(p, ps)}, now {describe(q, ps)}: not the same "
                    "translation", where_of(q, s))
    if step.ret == 0 and E > A:
        for iv in covering(post, A, E):
            if is_valid(iv) and iv[LEVEL] != G.LAST_LEVEL:
                rep.add(f"[{iv[START]:#x}, {iv[END]:#x}) is still a level-{iv[LEVEL]} block after "
                        "the split returned 0", where_of(iv))
                break
    new = sorted(set(post.pages) - set(pre.pages))
    outside = [pa for pa in new if pa not in set(pre.memcache)]
    if outside:
        rep.add(f"{len(outside)} table page(s) allocated outside the memcache, first "
                f"{outside[0]:#x}")
    left = sorted(set(pre.memcache) - set(new))
    if step.ret == 0 and sorted(post.memcache) != left:
        rep.add(f"the memcache holds {len(post.memcache)} page(s) after the step; {len(left)} "
                "expected (the ones the split did not install)")
    elif not set(post.memcache) <= set(left):
        rep.add("the memcache gained pages during the split")
    return rep.result()
