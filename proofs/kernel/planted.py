"""Planted bugs for the kernel differ: each must make ``ptspec diff-kernel`` report its named id.

``planted(bug_id)`` swaps one impl function (or the C side's build, for the ``c-*`` bugs) for a
variant with a single named defect and restores it on exit, like ``ptspec.proofs.stage2.planted``. A differ that
stays silent under one of these is itself broken.

* ``relax-no-tlbi`` (KD-TLB): relax_perms forgets its TLB invalidation;
* ``leaf-extra-ref`` (KD-RC): replacing a counted leaf takes a reference without dropping one;
* ``mkyoung-new-pte`` (KD-RET): mkyoung returns the updated descriptor instead of the old one;
* ``prot-no-sh`` (KD-WORDS): stage2_set_prot_attr leaves out the inner-shareable SH bits;
* ``pool-highest-first`` (KD-PAGES): the page pool hands out the highest free page;
* ``both-lose-root-ref`` (S2-RC): impl *and* the C shim stop counting references to the first
  root page. Both sides then agree, so only the spec's checks of the C side's raw state can see it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ptspec.impl.pgtable import pool as impl_pool
from ptspec.impl.pgtable import pte as P
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers

from ptspec.proofs.kernel import cside


@dataclass(frozen=True)
class Bug:
    id: str
    what: str
    expect: str                      # the id the differ must report
    patches: tuple                   # ((object, attribute, factory(original) -> new), ...)
    c_defines: tuple = ()


def _relax_no_tlbi(orig):
    def relax(pgt, addr, prot):
        saved = pgt.tlb_flush_vmid_ipa
        pgt.tlb_flush_vmid_ipa = lambda a, level: None      # the bug: no invalidation
        try:
            return orig(pgt, addr, prot)
        finally:
            del pgt.tlb_flush_vmid_ipa
            assert pgt.tlb_flush_vmid_ipa == saved
    return relax


def _leaf_extra_ref(orig):
    def try_leaf(addr, end, level, tbl, ptp, idx, data):
        old = tbl[idx]
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if ret == 0 and old and tbl[idx] != old:
            data.pgt.mm_ops.get_page(ptp)                   # the bug: one reference too many
        return ret
    return try_leaf


def _mkyoung_new(orig):
    def mkyoung(pgt, addr):
        old = orig(pgt, addr)
        return old | P.KVM_PTE_LEAF_ATTR_LO_S2_AF if old else old    # the bug: the new value
    return mkyoung


def _prot_no_sh(orig):
    def set_prot(prot, has_fwb):
        ret, attr = orig(prot, has_fwb)
        return ret, attr & ~(3 << 8)                        # the bug: SH left out
    return set_prot


def _pool_highest(orig):
    def alloc_page(self):
        for i in range(self.npages - 1, -1, -1):            # the bug: highest free page first
            if self._is_free[i]:
                return self._take(i)
        return None
    return alloc_page


def _pool_lose_root_ref(orig):
    def get_page(self, pa):
        if pa == self.base_pa:                               # the bug: first page not counted
            return
        orig(self, pa)
    return get_page


BUGS = {b.id: b for b in (
    Bug("relax-no-tlbi", "relax_perms does not invalidate the TLB", "KD-TLB",
        ((stage2_walkers, "kvm_pgtable_stage2_relax_perms", _relax_no_tlbi),)),
    Bug("leaf-extra-ref", "replacing a counted leaf leaks a page reference", "KD-RC",
        ((stage2_map, "stage2_map_walker_try_leaf", _leaf_extra_ref),)),
    Bug("mkyoung-new-pte", "mkyoung returns the new descriptor", "KD-RET",
        ((stage2_walkers, "kvm_pgtable_stage2_mkyoung", _mkyoung_new),)),
    Bug("prot-no-sh", "map writes leaves without the SH bits", "KD-WORDS",
        ((stage2_map, "stage2_set_prot_attr", _prot_no_sh),)),
    Bug("pool-highest-first", "the pool hands out its highest free page", "KD-PAGES",
        ((impl_pool.PagePool, "alloc_page", _pool_highest),)),
    Bug("both-lose-root-ref", "impl and the C shim both miss references to the first root page",
        "S2-RC", ((impl_pool.PagePool, "get_page", _pool_lose_root_ref),),
        c_defines=("KDIFF_PLANT_ROOT_REF",)),
)}


@contextlib.contextmanager
def planted(bug_id: str):
    """Swap in the named bug (impl functions and/or the C build) for the duration of the block."""
    bug = BUGS[bug_id]
    saved = []
    old_defines = cside.PLANT_DEFINES
    try:
        for obj, name, factory in bug.patches:
            orig = getattr(obj, name)
            saved.append((obj, name, orig))
            setattr(obj, name, factory(orig))
        cside.PLANT_DEFINES = tuple(bug.c_defines)
        yield bug
    finally:
        cside.PLANT_DEFINES = old_defines
        for obj, name, orig in reversed(saved):
            setattr(obj, name, orig)


# -- bugs planted in the C source of a scratch copy of a tree ----------------------------------------
# Each is an edit described by kernel names only (no kernel code is kept here): in function
# `function`, on the first line holding `token`, replace `old` by `new` (new "" deletes the line).
# ``scratch_tree`` copies a tree's four files to a scratch directory and applies one edit there; the
# original tree is never touched and nothing of it enters the repository.

@dataclass(frozen=True)
class CEdit:
    id: str
    what: str
    function: str
    token: str
    old: str
    new: str | None          # None: delete the line


C_SOURCE_BUGS = {e.id: e for e in (
    CEdit("walk-align", "after a leaf, the walker advances by the entry size without aligning "
          "down to the entry first", "__kvm_pgtable_visit", "ALIGN_DOWN", "", None),
    CEdit("valid-update-ref", "replacing a counted leaf clears it and invalidates the TLB but does "
          "not drop its page reference (the new one is taken as usual)",
          "stage2_map_walker_try_leaf", "stage2_put_pte(", "stage2_put_pte(",
          "KDIFF_PUT_PTE_KEEP_REF("),          # the shim's macro (linux/kvm_host.h)
    CEdit("owner-unmap", "unmap treats only valid descriptors as counted: owner annotations stay "
          "and keep their reference", "stage2_unmap_walker", "stage2_pte_is_counted(pte)",
          "stage2_pte_is_counted(pte)", "kvm_pte_valid(pte)"),
    CEdit("coalesce-tlbi", "replacing a table by a block invalidates only the anchor's IPA instead "
          "of the whole VMID", "stage2_map_walk_table_pre", "__kvm_tlb_flush_vmid,",
          "__kvm_tlb_flush_vmid, data->mmu", "__kvm_tlb_flush_vmid_ipa, data->mmu, addr, level"),
    CEdit("unmap-busy-table", "unmap frees a table that still holds one counted entry",
          "stage2_unmap_walker", "page_count(childp)", "!= 1", "> 2"),
    CEdit("table-tlbi-hint", "a cleared table descriptor is invalidated with the table's own "
          "level as the TLBI hint (the 5.12-5.15 behaviour put back into 6.1's stage2_put_pte)",
          "stage2_put_pte", "level = 0;", "level = 0;", "(void)level;"),
    CEdit("cmo-skips-blocks", "no D-cache clean before installing a block (only pages are "
          "cleaned)", "stage2_map_walker_try_leaf", "mm_ops->dcache_clean_inval_poc &&",
          "mm_ops->dcache_clean_inval_poc &&",
          "level == KVM_PGTABLE_MAX_LEVELS - 1 && mm_ops->dcache_clean_inval_poc &&"),
    CEdit("owner-id-bound", "set_owner accepts one owner id past KVM_MAX_OWNER_ID",
          "kvm_pgtable_stage2_set_owner", "KVM_MAX_OWNER_ID", "KVM_MAX_OWNER_ID",
          "KVM_MAX_OWNER_ID + 1"),
    CEdit("owner-dropped", "set_owner's annotation drops the owner id: every page it annotates "
          "reads as owned by the host (0)", "kvm_init_invalid_leaf_owner", "FIELD_PREP",
          "owner_id)", "0)"),
    # own bugs for the C-side engines (tests/test_kernel_engines.py)
    CEdit("unmap-table-leak", "unmap clears a table descriptor whose table it empties but never "
          "drops the table page's last reference: the page stays allocated, out of the tree",
          "stage2_unmap_walker", "put_page(childp)", "mm_ops->put_page(childp)", "(void)childp"),
    CEdit("attr-mask-lo", "the attribute update keeps only the upper attributes of its set/clear "
          "masks: mkyoung, wrprotect and relax_perms lose AF and S2AP (bits 11:2)",
          "stage2_update_leaf_attrs", "attr_mask =", "KVM_PTE_LEAF_ATTR_LO | ", ""),
    CEdit("unmap-no-cmo", "unmap never cleans the data cache of a cacheable leaf it removes on a "
          "CPU without FWB", "stage2_unmap_walker", "need_flush = !", "!stage2_has_fwb(pgt)",
          "false"),
    CEdit("force-pte-level", "forcing pages stops one level early: a 2M block is still allowed "
          "where pages are forced (set_owner, force_pte_cb)", "stage2_leaf_mapping_allowed",
          "force_pte", "KVM_PGTABLE_MAX_LEVELS - 1", "KVM_PGTABLE_MAX_LEVELS - 2"),
    CEdit("set-owner-drops-error", "set_owner returns 0 whatever the walk returned (an "
          "allocation failure part way is reported as success)", "kvm_pgtable_stage2_set_owner",
          "return ret;", "return ret;", "return 0;"),
    CEdit("hyp-leaf-no-ref", "a new hyp leaf in an empty entry takes no reference on its table "
          "page (6.0 on count hyp references per descriptor)", "hyp_map_walker_try_leaf",
          "get_page(ptep)", "data->mm_ops->get_page(ptep)", "(void)ptep"),
    CEdit("hyp-unmap-keep-ref", "hyp unmap clears a leaf or an emptied table's descriptor but "
          "keeps the reference it held on its table page", "hyp_unmap_walker", "put_page(ptep)",
          "mm_ops->put_page(ptep)", "(void)ptep"),
    CEdit("hyp-unmap-count", "hyp unmap removes leaves but does not count them in the bytes it "
          "returns", "hyp_unmap_walker", "unmapped += granule", "data->unmapped += granule",
          "(void)granule"),
    CEdit("hyp-unmap-table-hint", "hyp unmap invalidates a table descriptor it cleared with the "
          "table's own level as the TLBI hint (the 5.17-6.8 mainline code put back into 6.1's "
          "hyp_unmap_walker): the EL2 walk-cache entry of the freed table need not go",
          "hyp_unmap_walker", "vae2is", "__TLBI_VADDR(addr, 0), 0);",
          "__TLBI_VADDR(addr, 0), level);"),
    # bugs only a geometry's table options reach (subject.OPTIONS): FWB on 4k-48, the shim's
    # page-forcing force_pte_cb on 4k-34 (tests/test_kernel_engines.py)
    CEdit("fwb-memattr", "a normal-memory leaf gets the MemAttr encoding of a CPU without FWB "
          "also when the table has FWB", "stage2_set_prot_attr", "KVM_S2_MEMATTR(pgt, NORMAL)",
          "KVM_S2_MEMATTR(pgt, NORMAL)", "PAGE_S2_MEMATTR(NORMAL, false)"),
    CEdit("force-pte-cb-ignored", "map never asks the table's force_pte_cb: blocks are installed "
          "where the callback forces pages", "kvm_pgtable_stage2_map", ".force_pte",
          "pgt->force_pte_cb && pgt->force_pte_cb(addr, addr + size, prot)", "false"),
    CEdit("relax-no-icache", "relax_perms grants execute permission without invalidating the "
          "I-cache of the leaf's output", "stage2_attr_walker", "icache_inval_pou &&",
          "mm_ops->icache_inval_pou &&", "0 &&"),
    # a call that does not come back (C-RETURNS, proofs/kernel/guard.py; tests/test_kernel_guard.py)
    CEdit("walk-no-advance", "after a leaf or an empty entry the walker aligns its address down "
          "but never moves it past the entry: the walk repeats the same address",
          "__kvm_pgtable_visit", "data->addr +=", "data->addr +=", None),
    CEdit("tlbi-range-stuck", "the deferred range invalidation (6.6 on) never counts down the "
          "pages it has invalidated: an unmap on a CPU with range TLBI loops for good",
          "kvm_tlb_flush_vmid_range", "pages -= inval_pages", "pages -= inval_pages", None),
    CEdit("destroy-null-ops", "destroy gives its free walker no mm_ops: the first counted entry "
          "dereferences a NULL pointer", "kvm_pgtable_stage2_destroy", ".arg", "pgt->mm_ops",
          "NULL"),
    CEdit("table-pa-high", "a new table's descriptor carries its page's address with bit 30 "
          "set: the walk that installed it descends into memory no allocation handed out",
          "kvm_set_table_pte", "virt_to_phys(childp)", "mm_ops->virt_to_phys(childp)",
          "(mm_ops->virt_to_phys(childp) | BIT(30))"),
    CEdit("init-no-enomem", "stage-2 init reports success when its root allocation fails",
          "__kvm_pgtable_stage2_init", "return -ENOMEM;", "return -ENOMEM;", "return 0;"),
)}


class EditError(RuntimeError):
    """The edit does not apply to this tree (its code has another shape)."""


def apply_edit(text: str, edit: CEdit) -> str:
    """The source text with the edit applied; EditError when its anchor is not found."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines)
                  if f"{edit.function}(" in ln and not ln.rstrip().endswith(";")
                  and not ln.startswith((" ", "\t"))), None)
    if start is None:
        raise EditError(f"{edit.id}: no definition of {edit.function} in this pgtable.c")
    for i in range(start, len(lines)):
        if i > start and lines[i].startswith("}"):
            break
        if edit.token in lines[i] and edit.old in lines[i]:
            lines[i] = "" if edit.new is None else lines[i].replace(edit.old, edit.new, 1)
            return "".join(lines)
    raise EditError(f"{edit.id}: {edit.function} has no line with {edit.token!r}")


def scratch_tree(bug_id: str, tree, dest):
    """Copy the tree's four files to ``dest`` (a scratch directory), plant the bug in its
    pgtable.c, and return the opened scratch tree."""
    import shutil
    from pathlib import Path
    from ptspec.proofs.kernel import tree as T
    dest = Path(dest)
    for rel in T.FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tree.root) / rel, dest / rel)
    c = dest / T.FILES[0]
    c.write_text(apply_edit(c.read_text(), C_SOURCE_BUGS[bug_id]))
    return T.open_tree(dest)
