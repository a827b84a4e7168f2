"""Planted bugs: small wrong variants of impl functions, to show each check can fail.

``planted(bug_id)`` is a context manager that swaps one impl function (or flag) for a variant with
a single, named defect, and restores it on exit. The tests run the checkers under each one and
require a refutation naming the invariant or contract that must catch it; a checker that stays
green under its planted bug is itself broken.

The first five are historical bugs of ``docs/bugs.md`` put back; the others give every
invariant and every contract at least one bug of its own.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass

from ptspec.impl.pgtable import pte as P
from ptspec.impl.pgtable import stage2
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers
from ptspec.impl.pgtable import walker


@dataclass(frozen=True)
class Bug:
    id: str
    what: str
    caught_by: tuple[str, ...]       # any of these ids in the violations counts as caught
    patches: tuple                   # ((object, attribute name, factory(original) -> new), ...)


def _visit_without_align(orig):
    """walk-align: advance by the granule from the unaligned address (pre-357ad203d45c)."""
    def visit(data, tbl, ptp, idx, level):
        addr = data.addr
        pte = tbl[idx]
        table = P.kvm_pte_table(pte, level)
        flags = data.flags
        ret = 0
        if table and flags & walker.KVM_PGTABLE_WALK_TABLE_PRE:
            ret = data.cb(addr, data.end, level, tbl, ptp, idx, walker.KVM_PGTABLE_WALK_TABLE_PRE)
        if not table and flags & walker.KVM_PGTABLE_WALK_LEAF:
            ret = data.cb(addr, data.end, level, tbl, ptp, idx, walker.KVM_PGTABLE_WALK_LEAF)
            pte = tbl[idx]
            table = P.kvm_pte_table(pte, level)
        if ret:
            return ret
        if not table:
            data.addr += data.size[level]            # the bug: no ALIGN_DOWN first
            return ret
        ret = walker.__kvm_pgtable_walk(data, P.kvm_pte_to_phys(pte, data.page_shift), level + 1)
        if ret:
            return ret
        if flags & walker.KVM_PGTABLE_WALK_TABLE_POST:
            ret = data.cb(addr, data.end, level, tbl, ptp, idx, walker.KVM_PGTABLE_WALK_TABLE_POST)
        return ret
    return visit


def _try_leaf_leaking_ref(orig):
    """valid-update-ref: replacing a counted leaf takes a new reference without dropping the old."""
    def try_leaf(addr, end, level, tbl, ptp, idx, data):
        old = tbl[idx]
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if ret == 0 and old and tbl[idx] != old:
            data.pgt.mm_ops.get_page(ptp)
        return ret
    return try_leaf


def skip_invalid(orig):
    """A stage-2 walker callback that ignores every invalid descriptor, owner annotations included
    (the pre-pKVM convention): owner-unmap for the unmap walker, free-valid-only for the free one."""
    def walker_cb(pgt, addr, end, level, tbl, ptp, idx, flag):
        if not tbl[idx] & P.KVM_PTE_VALID:
            return 0
        return orig(pgt, addr, end, level, tbl, ptp, idx, flag)
    return walker_cb


def _table_pre_ipa_flush(orig):
    """coalesce-tlbi: replacing a table by a block invalidates only the anchor's IPA."""
    def table_pre(addr, end, level, tbl, ptp, idx, data):
        log = data.pgt.log
        n = len(log)
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if len(log) > n and log[-1] == ("tlbi_vmid",):
            log[-1] = ("tlbi_ipa", addr, level)
        return ret
    return table_pre


def _put_pte_no_tlbi(orig):
    def put_pte(pgt, tbl, ptp, idx, addr, level):
        if tbl[idx] & P.KVM_PTE_VALID:
            tbl[idx] = 0                              # the bug: no TLB invalidation
        pgt.mm_ops.put_page(ptp)
    return put_pte


def _put_pte_table_hint(orig):
    """table-tlbi-hint: a cleared table descriptor is invalidated with its own level as the hint
    (5.12-5.15), a leaf hint that need not remove the cached table descriptor."""
    def put_pte(pgt, tbl, ptp, idx, addr, level):
        saved = pgt.table_tlbi_level0
        pgt.table_tlbi_level0 = False                # the bug: the table's level as TTL hint
        try:
            return orig(pgt, tbl, ptp, idx, addr, level)
        finally:
            pgt.table_tlbi_level0 = saved
    return put_pte


def _owner_unmasked(orig):
    def owner(owner_id, owner_field):
        return owner_id << (owner_field[1] - 1)     # the bug: one bit too low
    return owner


def _set_owner_limit(orig):
    def set_owner(pgt, addr, size, mc, owner_id):
        saved = pgt.max_owner_id
        pgt.max_owner_id = saved + 1                # the bug: the id check is off by one
        try:
            return orig(pgt, addr, size, mc, owner_id)
        finally:
            pgt.max_owner_id = saved
    return set_owner


def _block_phys_unaligned(orig):
    def supported(gran, addr, end, phys, level, pa_bits):
        granule = gran.size[level]
        if not gran.kvm_level_supports_block_mapping(level) or granule > end - addr:
            return False
        return (addr & (granule - 1)) == 0          # the bug: phys alignment not checked
    return supported


def _table_pte_upper_bits(orig):
    def table_pte(child_pa, page_shift):
        return orig(child_pa, page_shift) | (1 << 63)   # the bug: NSTable set
    return table_pte


def _table_post_keeps_child(orig):
    def table_post(addr, end, level, tbl, ptp, idx, data):
        if data.anchor is not None and stage2_map._is_anchor(data, tbl, idx):
            data.anchor = None
            data.childp = None
            ret = stage2_map.stage2_map_walk_leaf(addr, end, level, tbl, ptp, idx, data)
            data.pgt.mm_ops.put_page(ptp)           # the bug: the detached table is never freed
            return ret
        return orig(addr, end, level, tbl, ptp, idx, data)
    return table_post


def _phys_advance_page(orig):
    def try_leaf(addr, end, level, tbl, ptp, idx, data):
        phys = data.phys
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if data.phys != phys:
            data.phys = phys + data.pgt.gran.page_size   # the bug: always advance by a page
        return ret
    return try_leaf


def _set_owner_blocks(orig):
    def set_owner(pgt, addr, size, mc, owner_id):
        data = stage2_map.Stage2MapData(pgt, P.KVM_PHYS_INVALID, mc, owner_id=owner_id,
                                        force_pte=False)  # the bug: no page granularity
        if owner_id > pgt.max_owner_id:
            return -errno.EINVAL
        w = walker.KvmPgtableWalker(data.walk, stage2_map.MAP_WALK_FLAGS)
        return walker.kvm_pgtable_walk(pgt, addr, size, w) or data.ret
    return set_owner


def _update_attrs(transform):
    def factory(orig):
        def update(pgt, addr, size, attr_set, attr_clr):
            return orig(pgt, addr, size, *transform(attr_set, attr_clr))
        return update
    return factory


def _xn_set_not_cleared(attr_set, attr_clr):
    xn = P.KVM_PTE_LEAF_ATTR_HI_S2_XN
    if attr_clr & xn:
        return attr_set | xn, attr_clr & ~xn
    return attr_set, attr_clr


def _mkyoung_returns_new(orig):
    def mkyoung(pgt, addr):
        pte = orig(pgt, addr)
        return pte | P.KVM_PTE_LEAF_ATTR_LO_S2_AF if pte else pte
    return mkyoung


def _is_young_inverted(orig):
    def is_young(pgt, addr):
        return not orig(pgt, addr)
    return is_young


def _flush_skips_blocks(orig):
    def flush_walker(pgt, addr, end, level, tbl, ptp, idx, flag):
        return 0 if level < 3 else orig(pgt, addr, end, level, tbl, ptp, idx, flag)
    return flush_walker


def _get_leaf_level(orig):
    def get_leaf(pgt, addr):
        ret, pte, level = orig(pgt, addr)
        return (ret, pte, level + 1) if ret == 0 and pte else (ret, pte, level)
    return get_leaf


def _destroy_keeps_roots(orig):
    def destroy(pgt):
        roots = list(pgt.pgd)
        for r in roots:
            pgt.mm_ops.get_page(r)                   # the bug: roots keep a reference
        orig(pgt)
    return destroy


def _init_unzeroed_root(orig):
    def init(pgt):
        ret = orig(pgt)
        if ret == 0:
            # the bug: the root is not zeroed, a stale table descriptor survives in entry 1
            pgt.pool.pages[pgt.pgd[0]][1] = P.kvm_table_pte(pgt.pool.base_pa + (1 << 30),
                                                            pgt.gran.page_shift)
        return ret
    return init


def _cmo_skips_blocks(orig):
    def try_leaf(addr, end, level, tbl, ptp, idx, data):
        hook = data.pgt.mm_ops.dcache_clean_inval_poc
        if level < 3:
            data.pgt.mm_ops.dcache_clean_inval_poc = None   # the bug: no clean for blocks
        try:
            return orig(addr, end, level, tbl, ptp, idx, data)
        finally:
            data.pgt.mm_ops.dcache_clean_inval_poc = hook
    return try_leaf


def _icache_before_dcache(orig):
    """icache-before-dcache: try_leaf invalidates the I-cache before it cleans the D-cache."""
    def try_leaf(addr, end, level, tbl, ptp, idx, data):
        mm = data.pgt.mm_ops
        hook, later = mm.dcache_clean_inval_poc, []
        if hook is not None:
            mm.dcache_clean_inval_poc = lambda pa, size: later.append((pa, size))
        try:
            return orig(addr, end, level, tbl, ptp, idx, data)
        finally:
            mm.dcache_clean_inval_poc = hook
            for pa, size in later:                  # the bug: the clean comes last
                hook(pa, size)
    return try_leaf


def _enomem_drops_ref(orig):
    def walk_leaf(addr, end, level, tbl, ptp, idx, data):
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if ret == -errno.ENOMEM:
            data.pgt.mm_ops.put_page(ptp)            # the bug: error path drops a reference
        return ret
    return walk_leaf


def _eagain_aborts(orig):
    def map_(pgt, addr, size, phys, prot, mc):
        saved = pgt.eagain_continues
        pgt.eagain_continues = False               # the seed's behaviour
        try:
            return orig(pgt, addr, size, phys, prot, mc)
        finally:
            pgt.eagain_continues = saved
    return map_


BUGS = {b.id: b for b in [
    Bug("walk-align", "walker advances by the granule without aligning down (357ad203d45c)",
        ("C-UNMAP", "C-MAP", "C-WRPROTECT", "C-FLUSH", "C-SET-OWNER"),
        ((walker, "__kvm_pgtable_visit", _visit_without_align),)),
    Bug("valid-update-ref", "replacing a valid leaf leaks a page reference (5c646b7e1d8b)",
        ("S2-RC", "S2-LEAK"),
        ((stage2_map, "stage2_map_walker_try_leaf", _try_leaf_leaking_ref),)),
    Bug("owner-unmap", "unmap leaves owner annotations (seed patch)", ("C-UNMAP",),
        ((stage2_walkers, "stage2_unmap_walker", skip_invalid),)),
    Bug("eagain-abort", "-EAGAIN stops the map walk (before 'Continue stage-2 map ...')",
        ("C-MAP",), ((stage2_map, "kvm_pgtable_stage2_map", _eagain_aborts),)),
    Bug("coalesce-tlbi", "table-to-block invalidates one IPA, not the VMID (3a0b870e3448)",
        ("S2-BBM", "S2-BBM-WALK"), ((stage2_map, "stage2_map_walk_table_pre", _table_pre_ipa_flush),)),
    Bug("put-pte-no-tlbi", "break-before-make without the TLB invalidation", ("S2-BBM",),
        ((stage2_map, "stage2_put_pte", _put_pte_no_tlbi),
         (stage2_walkers, "stage2_put_pte", _put_pte_no_tlbi))),
    Bug("table-tlbi-hint", "a freed table is invalidated with its level as the TTL hint (5.12-5.15)",
        ("S2-BBM-WALK",),
        ((stage2_map, "stage2_put_pte", _put_pte_table_hint),
         (stage2_walkers, "stage2_put_pte", _put_pte_table_hint))),
    Bug("owner-field-shift", "owner id written one bit below the owner field",
        ("S2-OWN", "C-SET-OWNER"),
        ((stage2_map, "kvm_init_invalid_leaf_owner", _owner_unmasked),)),
    Bug("owner-id-limit", "set_owner accepts KVM_MAX_OWNER_ID + 1", ("S2-OWN", "C-SET-OWNER"),
        ((stage2_map, "kvm_pgtable_stage2_set_owner", _set_owner_limit),)),
    Bug("block-phys-align", "block allowed with an output address not aligned to it",
        ("S2-BA", "C-MAP"), ((stage2_map, "kvm_block_mapping_supported", _block_phys_unaligned),)),
    Bug("table-upper-bits", "table descriptors written with NSTable set", ("S2-TREE",),
        ((stage2_map, "kvm_table_pte", _table_pte_upper_bits),)),
    Bug("anchor-leak", "the table replaced by a block is never freed", ("S2-LEAK",),
        ((stage2_map, "stage2_map_walk_table_post", _table_post_keeps_child),)),
    Bug("phys-advance", "the output address advances by a page after a block", ("C-MAP",),
        ((stage2_map, "stage2_map_walker_try_leaf", _phys_advance_page),)),
    Bug("set-owner-blocks", "set_owner without page granularity", ("C-SET-OWNER",),
        ((stage2_map, "kvm_pgtable_stage2_set_owner", _set_owner_blocks),)),
    Bug("wrprotect-clears-read", "wrprotect clears S2AP R as well", ("C-WRPROTECT",),
        ((stage2_walkers, "stage2_update_leaf_attrs", _update_attrs(
            lambda s, c: (s, c | (P.KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R
                                  if c == P.KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W else 0)))),)),
    Bug("mkold-noop", "mkold does not clear AF", ("C-MKOLD",),
        ((stage2_walkers, "stage2_update_leaf_attrs", _update_attrs(
            lambda s, c: (s, 0 if c == P.KVM_PTE_LEAF_ATTR_LO_S2_AF else c))),)),
    Bug("mkyoung-returns-new", "mkyoung returns the new descriptor", ("C-MKYOUNG",),
        ((stage2_walkers, "kvm_pgtable_stage2_mkyoung", _mkyoung_returns_new),)),
    Bug("is-young-inverted", "is_young answers the opposite", ("C-IS-YOUNG",),
        ((stage2_walkers, "kvm_pgtable_stage2_is_young", _is_young_inverted),)),
    Bug("relax-sets-xn", "relax_perms with X sets XN instead of clearing it", ("C-RELAX-PERMS",),
        ((stage2_walkers, "stage2_update_leaf_attrs", _update_attrs(_xn_set_not_cleared)),)),
    Bug("flush-skips-blocks", "flush cleans pages but not blocks", ("C-FLUSH",),
        ((stage2_walkers, "stage2_flush_walker", _flush_skips_blocks),)),
    Bug("get-leaf-level", "get_leaf reports the level below", ("C-GET-LEAF",),
        ((stage2_walkers, "kvm_pgtable_get_leaf", _get_leaf_level),)),
    Bug("destroy-keeps-roots", "destroy leaves the root pages allocated", ("S2-LEAK", "C-DESTROY"),
        ((stage2_walkers, "kvm_pgtable_stage2_destroy", _destroy_keeps_roots),)),
    Bug("init-unzeroed-root", "init leaves a stale descriptor in the root", ("C-INIT", "S2-TREE"),
        ((stage2_walkers, "kvm_pgtable_stage2_init", _init_unzeroed_root),)),
    Bug("enomem-put", "the allocation-failure path drops a reference it never took",
        ("S2-RC", "S2-LEAK"), ((stage2_map, "stage2_map_walk_leaf", _enomem_drops_ref),)),
    Bug("cmo-skips-blocks", "no D-cache clean before installing a block", ("C-CMO", "CMO-POC"),
        ((stage2_map, "stage2_map_walker_try_leaf", _cmo_skips_blocks),)),
    Bug("icache-before-dcache", "an executable leaf's I-cache is invalidated before its D-cache "
        "is cleaned", ("CMO-POU",),
        ((stage2_map, "stage2_map_walker_try_leaf", _icache_before_dcache),)),
]}

assert stage2  # the stage-2 object is patched through the modules it calls


@contextlib.contextmanager
def planted(bug_id: str):
    """Swap in the named bug's variants for the duration of the block."""
    with applied(BUGS[bug_id]) as bug:
        yield bug


@contextlib.contextmanager
def applied(bug: Bug):
    """Apply a bug's patches (object, attribute, factory(original)), restoring them on exit."""
    saved = []
    try:
        for obj, name, factory in bug.patches:
            orig = getattr(obj, name)
            saved.append((obj, name, orig))
            setattr(obj, name, factory(orig))
        yield bug
    finally:
        for obj, name, orig in reversed(saved):
            setattr(obj, name, orig)
