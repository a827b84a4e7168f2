"""The catalogue of kernel findings: where a released kernel really departs from the spec.

The differences of ptspec.proofs.kernel.catalogue are between the C code and impl. A *finding* is
between the C code and the spec: a violation of a statement that a released kernel version really
shows (a bug, or a design the spec states otherwise), with the versions it was seen on. The
spec-judged C-side checks (ptspec.proofs.kernel.subject, hyp, engines) report a violation that
``finding_for`` matches to a finding for the tree's version as that finding, counted and printed;
any other violation refutes.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, replace

from ptspec.proofs.kernel.finding_shapes import (
    _annotate_truncated, _hyp_conflict_page, _hyp_conflict_warns, _hyp_overreach,
    _left_as_it_was, _memtype_changed, _only_range_tlbis, _own_level_hint, _split_excess,
    _split_page, _freed_walk_shift, _walks_freed_table)


@dataclass(frozen=True)
class KernelFinding:
    id: str
    statement: str              # the spec statement id the violation is reported under
    since: tuple                # first kernel version that shows it
    until: tuple | None         # first version that no longer does (None: not known to be fixed)
    why: str
    kernel_functions: tuple
    when: object                # step record -> bool: the violation's step matches the finding
    text: str = ""              # and the violation's message holds this (empty: any message)
    also: tuple = ()            # more (since, until) ranges: a fix backported to a stable branch
    where: object = None        # (violation, step) -> bool: the violation's place fits it too
    ends_run: bool = False      # the bug corrupts the subject (a use after free): once it is
                                # seen, the run's later steps are not run (nothing left to judge)

    def _ranges(self):
        return ((self.since, self.until),) + tuple(self.also)

    def applies_to(self, version: tuple) -> bool:
        return any(lo <= version and (hi is None or version < hi) for lo, hi in self._ranges())

    def versions(self) -> str:
        def one(lo, hi):
            lo = ".".join(map(str, lo))
            return f"{lo} and later" if hi is None else \
                f"{lo} up to (not including) {'.'.join(map(str, hi))}"
        return "; ".join(one(lo, hi) for lo, hi in self._ranges())


# 5.14's differences from 5.15 that are design, not bugs (its prot enum without the software
# bits, set_owner without force_pte, unmap and flush cleaning without mm_ops) are version rules of
# the spec (D.known_prot, SET_OWNER_PAGES_SINCE, DCACHE_VIA_MM_OPS_SINCE), not findings: a step is
# judged by its own version's statement, so nothing of such a step is set aside.


def _conflict_einval(step) -> bool:
    """A hyp map step over a conflicting valid entry that returned -EINVAL (the two
    hyp-conflict-page-einval findings: C-HYP-MAP's and C-HYP-WARN's view of one behaviour)."""
    return step is not None and bool(step.get("conflict")) and step.get("ret") == -22


def _xnx_one_el(violation, step=None) -> bool:
    """Whether a cache-maintenance violation is about a leaf whose XN field (bits 54:53) says
    executable at one EL only (0b01 or 0b11): the leaves xnx-icache-executable misjudges (a
    ``where`` predicate: the step is not read). Read from the descriptor the violation names
    (its where's desc, else the 0x... before "at ipa")."""
    desc = (getattr(violation, "where", None) or {}).get("desc")
    if desc is None:
        m = re.search(r"(0x[0-9a-f]+) at ipa", str(violation))
        desc = int(m.group(1), 16) if m else None
    return desc is not None and (desc >> 53) & 0b11 in (0b01, 0b11)


def _op(*names: str):
    """The step predicate of a finding that any step of these operations shows."""
    return lambda step: step is not None and step.get("op") in names


# The 2024 fix of zapped tables' invalidation (36e008323926 and its companion) reached 6.6.y by
# 6.6.63 and mainline in the 6.9 cycle: the ranges after 6.1.y that its stage-2 and hyp findings
# share (table-tlbi-level, hyp-table-tlbi-level).
_ZAPPED_TABLE_RANGES = (((6, 2, 0), (6, 6, 63)), ((6, 7, 0), (6, 9, 0)))
# 6.2's walker walks into the table its TABLE_PRE callback freed until a9f0e3d5a089 (6.4-rc4, 6.3.7):
# the range the three walk-freed-table findings share (one per statement the bug breaks)
_FREED_WALK_RANGE = ((6, 2, 0), (6, 3, 7))


def _freed_walk(id: str, statement: str, text: str, functions: tuple, where) -> "KernelFinding":
    """One statement's view of walk-freed-table: a map step of 6.2.0 up to 6.3.7, matched by
    `where` (finding_shapes), that ends the run."""
    return KernelFinding(id, statement, *_FREED_WALK_RANGE, text, functions, _op("map"),
                         where=where, ends_run=True)


# the kernel functions of xnx-icache-executable, in either statement's view
_XNX_ICACHE_FUNCTIONS = ("stage2_pte_executable", "stage2_map_walker_try_leaf",
                         "stage2_attr_walker")


FINDINGS = (
    KernelFinding(
        "eagain-abort", "C-MAP", (5, 13, 0), None,
        "the map walk stops at the first leaf that needs no update (same output and attributes, "
        "or only permissions differ): stage2_map_walker_try_leaf returns -EAGAIN and "
        "kvm_pgtable_walk aborts, so the rest of the range is left as it was, while C-MAP "
        "requires a map that returns -EAGAIN to have done its whole range (the posted 'Continue "
        "stage-2 map when re-creating mappings'); seen running Debian's 6.1.176, 5.15.100 and "
        "5.14.2; from 6.2 only a walk with KVM_PGTABLE_WALK_HANDLE_FAULT (the fault handler's map) "
        "still stops, seen so on 6.3.8, 6.6.63 and 6.12.19 (docs/kernel-mainline.md); no fix "
        "known to ptspec",
        ("stage2_map_walker_try_leaf", "kvm_pgtable_walk"),
        lambda step: step is not None and step.get("op") == "map" and step.get("ret") == -11,
        where=lambda v, step: _left_as_it_was(v, step)),
    KernelFinding(
        "table-tlbi-level", "S2-BBM-WALK", (5, 10, 0), (6, 1, 106),
        "stage2_put_pte invalidates a table descriptor it cleared (stage2_unmap_walker freeing a "
        "table that became empty) with the table's own level as the TLBI level hint; the hint "
        "names the level of a leaf, a table descriptor is none, so the walk-cache entry holding "
        "the freed table need not be removed (S2-BBM-WALK, docs/cmo.md). Since the generic "
        "stage-2 unmap (6d9d2115c480, 5.10); fixed upstream by 36e008323926 'KVM: arm64: Don't "
        "pass a TLBI level hint when zapping table entries' (2024) and backported to 6.1.y "
        "(reviewed for stable on 15 Aug 2024, taken here as 6.1.106: 6.1.55 shows it, 6.1.158 and "
        "6.1.176 do not) "
        "and 6.6.y; mainline 6.3.8, 6.4.4 and 6.5.0 still pass the level (6.6.63 passes 0, and the "
        "first fixed 6.6.y is not pinned down); "
        "run on 5.15.100, 5.14.2, 5.17-rc5, 5.19.0 and 6.3.8; 6.6.9 and 6.8.0 (before the fix "
        "reached them: the 6.9 cycle, and a 6.6.y after 6.6.9 and at the latest 6.6.63, which "
        "is fixed, as 6.6.87 and 6.12.19 are) pass the level too: their stage2_unmap_put_pte "
        "treats a table like a leaf (ranges 6.2 to 6.6.63, 6.7-6.8; 6.7.3 shows it too)",
        ("stage2_put_pte", "stage2_unmap_walker"),
        _op("unmap"),
        also=_ZAPPED_TABLE_RANGES, where=lambda v, step: _own_level_hint(v)),
    KernelFinding(
        "table-tlbi-deferred-walk", "S2-BBM-WALK", (6, 6, 0), (6, 6, 63),
        "table-tlbi-deferred as S2-BBM-WALK sees it: the zapped table's invalidation was deferred "
        "to the range TLBI at the end of the walk, which does not reach the table descriptor's "
        "range, so the log holds no invalidation in it at all; seen running 6.6.9 and 6.8.0 "
        "(default profile, 4k-48)",
        ("stage2_unmap_put_pte", "stage2_unmap_walker", "kvm_pgtable_stage2_unmap"),
        _op("unmap"),
        where=lambda v, step: "; the log has " not in str(v),
        also=(((6, 7, 0), (6, 9, 0)),)),
    KernelFinding(
        "table-tlbi-deferred", "S2-TABLE-TLBI", (6, 6, 0), (6, 6, 63),
        "with FWB and range TLBI (stage2_unmap_defer_tlb_flush) stage2_unmap_put_pte defers the "
        "invalidation of a table descriptor it zapped, like a leaf's, to the range TLBI at the "
        "end of the walk, but the table page is freed at once: until that TLBI a walker may "
        "still use the walk-cache entry of a page that is back in the allocator; fixed in the "
        "6.9 cycle together with table-tlbi-level (a zapped table is invalidated at once, without "
        "a level hint: the shape 6.6.63's backport and 6.12.19 have; ptspec's planted "
        "defer-table-tlbi puts it back into 6.12); deferral came with 6.6's range TLBI; seen "
        "running 6.6.9 and 6.8.0 (the first fixed 6.6.y lies after 6.6.9 and at the latest at "
        "6.6.63, which is fixed, as 6.6.87 is)",
        ("stage2_unmap_put_pte", "stage2_unmap_walker", "kvm_pgtable_stage2_unmap"),
        _op("unmap"),
        text="was freed with no TLB invalidation",
        also=(((6, 7, 0), (6, 9, 0)),)),
    KernelFinding(
        "hyp-refcount", "S1-RC", (5, 17, 0), None,
        "hyp stage-1 tables count a reference per non-zero descriptor, as stage-2 tables do "
        "(hyp_map_walker takes one for each new leaf and table, kvm_pgtable_hyp_unmap drops them "
        "and frees emptied tables), while S1-RC states 5.12-5.15's rule that every hyp table "
        "page keeps its single reference; the design that came with kvm_pgtable_hyp_unmap, not "
        "a bug: the C-side hyp check (ptspec.proofs.kernel.hyp) then judges the per-descriptor "
        "rule instead, on trees that have kvm_pgtable_hyp_unmap; seen running 5.17-rc5, 5.19.0, "
        "6.1.176, 6.3.8, 6.6.63 and 6.12.19, not 5.15.100 or 5.16.10 (neither has "
        "kvm_pgtable_hyp_unmap: the range starts at 5.17, the first release that has it)",
        ("hyp_map_walker", "hyp_map_walker_try_leaf", "kvm_pgtable_hyp_unmap"),
        lambda step: step is not None and bool(step.get("hyp"))),
    KernelFinding(
        "hyp-conflict-page-einval", "C-HYP-MAP", (5, 17, 0), None,
        "a hyp map over a valid page (last level) it conflicts with: hyp_map_walker_try_leaf "
        "WARNs and returns false, hyp_map_walker cannot put a table at the last level, WARNs "
        "again and fails the walk with -EINVAL: the map stops there (pages before it mapped, "
        "those after it not) and returns -EINVAL, where C-HYP-MAP (5.15: the entry kept, the walk "
        "goes on) expects 0 and the rest of the range mapped; a caller's misuse behind a WARN; "
        "seen running 6.1.176, 6.3.8, 6.6.63 and 6.12.19",
        ("hyp_map_walker_try_leaf", "hyp_map_walker"),
        _conflict_einval, where=_hyp_conflict_page),
    KernelFinding(
        "hyp-conflict-page-einval-warn", "C-HYP-WARN", (5, 17, 0), None,
        "hyp-conflict-page-einval as C-HYP-WARN sees it: the conflict's WARN and "
        "hyp_map_walker's own (no table at the last level) come with a map that returns -EINVAL, "
        "where C-HYP-WARN expects only the conflict's, from a map returning 0; seen running "
        "6.1.176, 6.3.8, 6.6.63 and 6.12.19",
        ("hyp_map_walker_try_leaf", "hyp_map_walker"),
        _conflict_einval, where=_hyp_conflict_warns),
    KernelFinding(
        "hyp-conflict-split", "C-HYP-MAP", (5, 17, 0), None,
        "a hyp map over a valid leaf it conflicts with (more than software bits differ): "
        "hyp_map_walker_try_leaf's WARN_ON fires and it returns false, so hyp_map_walker "
        "installs a new table over the valid block and maps the range's pages below it, the "
        "block's other pages unmapped; before 6.4 (6.3.8 does, 6.6.9 no longer) data->phys was "
        "already advanced past the leaf, so those pages and every later one in the walk map one "
        "block-size too high in the output space; 5.15 leaves the entry as it was after the WARN, "
        "as C-HYP-MAP states; a caller's misuse behind a WARN, but the lost and (before 6.4) "
        "wrong translations are real; matched only where each page is exactly what that walk "
        "gives it (finding_shapes.hyp_conflict_outcome); seen running 6.1.176, 6.3.8, 6.6.63 and "
        "6.12.19",
        ("hyp_map_walker_try_leaf", "hyp_map_walker"),
        lambda step: step is not None and bool(step.get("conflict")), where=_hyp_conflict_page),
    KernelFinding(
        "hyp-conflict-split-warn", "C-HYP-WARN", (5, 17, 0), (6, 2, 0),
        "the same conflicting hyp re-map as hyp-conflict-split: the table installed over the "
        "valid block raises kvm_set_table_pte's WARN_ON too, where C-HYP-WARN expects only the "
        "conflict's; seen running 6.1.176; 6.2's walker rework removed kvm_set_table_pte and its "
        "WARN (hyp-split-silent), so 6.3.8, 6.6.63 and 6.12.19 raise only the conflict's",
        ("kvm_set_table_pte", "hyp_map_walker"),
        lambda step: step is not None and bool(step.get("conflict")), where=_hyp_conflict_warns),
    KernelFinding(
        "hyp-split-ref", "S1-RC", (5, 17, 0), None,
        "when hyp_map_walker installs a table over a valid leaf (a block split by a map inside "
        "it, or hyp-conflict-split; kvm_set_table_pte WARNs up to 6.1, the harness reads it from "
        "the state on 6.2 on), it takes a reference for the new "
        "table and nothing drops the replaced leaf's: the table page holding it stays one above "
        "1 + its descriptors for the rest of the run, so kvm_pgtable_hyp_unmap can never free "
        "it; counted on every later step of such a run; seen running 6.1.176, 6.3.8, 6.6.63 and "
        "6.12.19 (5.15 counts no references here)",
        ("hyp_map_walker", "kvm_set_table_pte", "kvm_pgtable_hyp_unmap"),
        lambda step: step is not None and bool(step.get("hyp_per_descriptor"))
        and bool(step.get("after_split")),
        where=lambda v, step: _split_excess(v, step)),
    KernelFinding(
        "hyp-split-silent", "C-HYP-WARN", (6, 2, 0), None,
        "6.2's walker rework removed kvm_set_table_pte and its WARN_ON on a valid entry: "
        "hyp_map_walker now installs the new table over a valid hyp block it has to split "
        "(kvm_init_table_pte, then a plain store) without any WARN, where C-HYP-WARN (the "
        "WARN_ONs of 5.12-6.1) expects one per block replaced; the block's other pages become "
        "unmapped at EL2 as before, now unreported (no caller is meant to do this, so the WARN "
        "was the only sign of it); seen running 6.3.8, 6.6.63 and 6.12.19",
        ("hyp_map_walker", "kvm_init_table_pte"),
        lambda step: step is not None and bool(step.get("hyp")),
        text="no WARN from kvm_set_table_pte"),
    KernelFinding(
        "hyp-split-leak", "S1-LEAK", (5, 17, 0), None,
        "after hyp-split-ref, kvm_pgtable_hyp_destroy drops 1 + the descriptors of each table "
        "page, so the page holding the extra reference stays allocated after the table is "
        "destroyed; seen running 6.1.176, 6.3.8, 6.6.63 and 6.12.19",
        ("kvm_pgtable_hyp_destroy", "hyp_free_walker"),
        lambda step: step is not None and bool(step.get("hyp")) and bool(step.get("after_split")),
        where=lambda v, step: _split_page(v, step)),
    KernelFinding(
        "hyp-split-leak-destroy", "C-HYP-DESTROY", (5, 17, 0), None,
        "hyp-split-leak as C-HYP-DESTROY sees it: the page is not returned by destroy; seen "
        "running 6.1.176, 6.3.8, 6.6.63 and 6.12.19",
        ("kvm_pgtable_hyp_destroy", "hyp_free_walker"),
        lambda step: step is not None and bool(step.get("hyp")) and bool(step.get("after_split")),
        where=lambda v, step: _split_page(v, step)),
    KernelFinding(
        "hyp-unmap-overreach", "C-HYP-UNMAP", (5, 17, 0), None,
        "kvm_pgtable_hyp_unmap of a range that starts inside a valid block: hyp_unmap_walker "
        "checks only that the rest of the range from the walk's (unaligned) address is at least "
        "the block's size, so it removes the whole block, pages before the range included, counts "
        "it in the bytes returned and goes on, where C-HYP-UNMAP stops at a leaf reaching outside "
        "the range; seen running 6.1.176, 6.3.8, 6.6.63 and 6.12.19 (map [0x200000, +4M), "
        "unmap [0x201000, +2M): the block [0x200000, 0x400000) goes, 0x200000 returned)",
        ("kvm_pgtable_hyp_unmap", "hyp_unmap_walker"),
        lambda step: step is not None and bool(step.get("starts_inside_leaf")),
        where=_hyp_overreach),
    KernelFinding(
        "hyp-table-tlbi-level", "S1-UNMAP-TLBI", (5, 17, 0), (6, 1, 106),
        "hyp_unmap_walker invalidates a hyp table descriptor it cleared (a table the unmap "
        "emptied) by `tlbi vae2is` with the table's own level as the TLBI level hint: the hint "
        "names the level of a leaf, a table descriptor is none, so the EL2 walk-cache entry of "
        "the freed table need not go (S1-UNMAP-TLBI). The hyp half of table-tlbi-level, fixed "
        "by the same 36e008323926 ('KVM: arm64: Don't pass a TLBI level hint when zapping table "
        "entries', 2024; it passes 0, later TLBI_TTL_UNKNOWN): Debian's 6.1.176 and 6.6.63 pass "
        "0, 6.12.19 on TLBI_TTL_UNKNOWN; seen running 5.17-rc5, 5.19.0, 6.1.55, 6.3.8, 6.6.9 "
        "and 6.8.0 (ranges as table-tlbi-level's)",
        ("hyp_unmap_walker", "kvm_pgtable_hyp_unmap", "__tlbi_level"),
        _op("unmap"),
        text="table descriptor at level",
        where=lambda v, step: _own_level_hint(v, "tlbi_el2"),
        also=_ZAPPED_TABLE_RANGES),
    # the reworked walker (6.2 on): docs/kernel-mainline.md
    _freed_walk(
        "walk-freed-table", "S2-LEAK",
        "6.2's reworked walker reloads the descriptor after a LEAF callback but not after a "
        "TABLE_PRE one: when stage2_map_walk_table_pre replaces a table by a block and frees the "
        "table (free_removed_table), __kvm_pgtable_visit still descends into the freed table and "
        "maps into it: references taken and dropped on freed pages, tables allocated under it "
        "that nothing reaches (a use after free of hypervisor memory). Fixed by a9f0e3d5a089 "
        "'KVM: arm64: Reload PTE after invoking walker callback on preorder traversal' (6.4-rc4, "
        "backported to 6.3.7; 6.2.y had ended); seen running 6.2.12, not 6.3.8 (ptspec's "
        "pte-reload-table-pre puts the bug back into 6.6). Matched only for pages of a table the "
        "map replaced by a leaf and pages the step handed out that nothing reaches "
        "(finding_shapes.freed_table_walk); the run ends there (ends_run)",
        ("__kvm_pgtable_visit", "stage2_map_walk_table_pre", "kvm_pgtable_stage2_free_removed"),
        _walks_freed_table),
    _freed_walk(
        "walk-freed-table-phys", "C-MAP",
        "walk-freed-table as C-MAP sees it: mapping into the freed table advances data->phys over "
        "its span a second time (nested freed tables again), so the later leaves of the map "
        "point too high in the output space: live guest mappings of the wrong memory; and an old "
        "leaf inside the freed table can make the map return -EAGAIN. Matched only where the "
        "found leaf is C-MAP's own but for an output moved up by at most the spans of the "
        "pre-state's tables in the range, or for a -EAGAIN with no page kept when a replaced "
        "table held a valid leaf (finding_shapes._freed_walk_shift); seen running 6.2.12",
        ("__kvm_pgtable_visit", "stage2_map_walk_table_pre", "stage2_map_walker_try_leaf"),
        _freed_walk_shift),
    _freed_walk(
        "walk-freed-table-rcu", "S2-RCU",
        "walk-freed-table as S2-RCU sees it: a page of the table handed to free_removed_table is "
        "still allocated after the step (the walk into the freed table took a reference on it); "
        "seen running 6.2.12",
        ("__kvm_pgtable_visit", "stage2_map_walk_table_pre", "kvm_pgtable_stage2_free_removed"),
        _walks_freed_table),
    KernelFinding(
        "relax-perms-eagain-level", "C-RELAX-PERMS", (6, 7, 0), (6, 12, 98),
        "kvm_pgtable_stage2_relax_perms invalidates the faulting IPA on this CPU also when the walk "
        "returns -EAGAIN (no valid leaf: another CPU changed it), but passes the TLBI the `level` "
        "that stage2_update_leaf_attrs only writes on success: an uninitialised stack value as "
        "the TTL hint (-2 in the userspace build, which fills uninitialised locals with 0xfe), so the invalidation may miss the stale "
        "entry it is for and the vCPU can fault again; the invalidation on -EAGAIN came with 6.7 "
        "(6.6.63 has none; 6.7.3 passes a u32 level, 0xfefefefe in that build); seen running "
        "6.7.3, 6.8.0, 6.9.0, 6.12.19, 6.13.7, 6.18.35, 6.19.9 and 7.0.0. Fixed upstream for 7.2 "
        "by \"KVM: arm64: Fix propagation of TLBI level in kvm_pgtable_stage2_relax_perms()\" "
        "(8d187d4b33c2, a kvmarm fix of the 7.2-rc cycle), which passes TLBI_TTL_UNKNOWN on "
        "-EAGAIN; backported to 7.1.y as ab2afe109266, first in 7.1.5 (7.1.3's source still has "
        "the uninitialised level), and to 6.12.y by 6.12.98 (a branch on 6.12.98 carries it)",
        ("kvm_pgtable_stage2_relax_perms", "stage2_update_leaf_attrs"),
        lambda step: (step is not None and step.get("op") == "relax_perms"
                      and step.get("ret") == -11),
        # only the hint: a -EAGAIN that changes something, or logs no invalidation or two, is not it
        text="the walk never set the level it passes",
        also=(((6, 13, 0), (7, 1, 5)),)),
    KernelFinding(
        "create-unlinked-double-put", "S2-LEAK", (6, 5, 0), (6, 12, 0),
        "when the walk that fills a new unlinked table fails (an allocation fails part way), "
        "kvm_pgtable_stage2_create_unlinked calls kvm_pgtable_stage2_free_unlinked, which already "
        "drops the table page's last reference, and then puts the page once more: a double free "
        "of a hypervisor page (reached by kvm_pgtable_stage2_split with a memcache large enough to "
        "split a 1G block to pages and an allocation failure); seen running 6.6.63, fixed in "
        "6.12.19 (the first fixed release is not pinned down here)",
        ("kvm_pgtable_stage2_create_unlinked", "kvm_pgtable_stage2_free_unlinked",
         "stage2_split_walker"),
        # a split that fails with -ENOMEM and puts a page that is no longer allocated, only
        lambda step: step is not None and step.get("op") == "split" and step.get("ret") == -12,
        text="that is not allocated"),
    KernelFinding(
        "split-drops-memtype", "C-SPLIT", (6, 5, 0), None,
        "kvm_pgtable_stage2_split rebuilds a block from kvm_pgtable_stage2_pte_prot(pte), which "
        "carries R, W, X and the software bits but not the memory type: a device (or, 6.12, "
        "normal non-cacheable) block splits into normal cacheable pages. Whether a guest ever has "
        "such a block in a memslot that is eagerly split depends on mmu.c (device mappings are "
        "normally installed page by page); seen running 6.6.63 and 6.12.19, still so in 7.1.5's "
        "source",
        ("kvm_pgtable_stage2_split", "stage2_split_walker", "kvm_pgtable_stage2_pte_prot"),
        _op("split"),
        text="the memory type changed"),
    KernelFinding(
        "split-drops-memtype-cmo", "CMO-POC", (6, 5, 0), None,
        "split-drops-memtype as CMO-POC sees it: the device block split into normal cacheable "
        "pages makes cacheable guest mappings visible over memory no clean to PoC covered (a "
        "device mapping owes none); seen running 6.6.63 and 6.12.19",
        ("kvm_pgtable_stage2_split", "stage2_split_walker", "kvm_pgtable_stage2_pte_prot"),
        _op("split"), where=lambda v, step: _memtype_changed(v, step)),
    KernelFinding(
        "split-drops-memtype-pou", "CMO-POU", (6, 5, 0), None,
        "split-drops-memtype as CMO-POU sees it later: relax_perms granting X to a page of such a "
        "split block invalidates the I-cache, but the D-cache of memory the device or normal "
        "non-cacheable block mapped was never cleaned (none is owed for it), so the invalidation "
        "cannot make the guest fetch what the host last wrote; relax_perms cleans nothing by "
        "design (the map that made a page cacheable did); seen running 6.12.19 and 7.1.5",
        ("kvm_pgtable_stage2_split", "kvm_pgtable_stage2_relax_perms", "stage2_attr_walker"),
        _op("relax_perms"),
        text="its D-cache was not cleaned"),
    KernelFinding(
        "xnx-icache-executable", "C-CMO", (6, 19, 0), (7, 1, 0),
        "with FEAT_XNX the stage-2 XN field is two bits (54:53) and a leaf executable at one EL "
        "only holds 0b01 (EL0) or 0b11 (EL1), but stage2_pte_executable still takes a leaf as "
        "executable only when the whole field is 0: a map (or a relax_perms) that makes a leaf "
        "executable at EL1 or at EL0 alone invalidates no I-cache, so the guest can fetch stale "
        "instructions; the bug came with 6.19's PX/UX split and is fixed by 17f073f78fc4 "
        "(stage2_pte_executable reads kvm_pgtable_stage2_pte_prot), in 7.1.3 and 7.1.5; seen "
        "running 6.19.9 and 7.0.0 (whether 6.19.y or 7.0.y stable took the fix is not pinned "
        "down here); only on a CPU with FEAT_XNX (the XNX tables of 4k-40 and 4k-48)",
        _XNX_ICACHE_FUNCTIONS, _op("map", "relax_perms"),
        text='["icache"',
        where=_xnx_one_el),
    KernelFinding(
        "xnx-icache-executable-pou", "CMO-POU", (6, 19, 0), (7, 1, 0),
        "xnx-icache-executable as CMO-POU sees it: the leaf executable at one EL becomes visible "
        "to the guest over output whose I-cache was never invalidated since the host wrote it; "
        "seen running 6.19.9 and 7.0.0",
        _XNX_ICACHE_FUNCTIONS, _op("map", "relax_perms"),
        text="its I-cache was not invalidated",
        where=_xnx_one_el),
    KernelFinding(
        "unmap-deferred-tlbi-refused", "C-UNMAP", (6, 6, 0), None,
        "with FWB and range TLBI (stage2_unmap_defer_tlb_flush), kvm_pgtable_stage2_unmap "
        "invalidates [addr, addr + size) after the walk whatever the walk returned: a range the "
        "walk refuses (-ERANGE) or finds empty (its page-aligned end wraps) still gets range TLBIs over the "
        "caller's raw size, up to 2**31 TLBI instructions for a wrapped size (a long, "
        "non-preemptible loop); extra invalidation, not a missing one; the kernel's callers pass "
        "memslot ranges; seen running 6.6.63 and 6.12.19",
        ("kvm_pgtable_stage2_unmap", "kvm_tlb_flush_vmid_range"),
        text="TLB/cache event(s), first ['tlbi_range'",     # the deferred range TLBI, nothing else
        where=lambda v, step: _only_range_tlbis(v),
        when=lambda step: (step is not None and step.get("op") == "unmap"
                      and (step.get("ret") != 0 or step["args"]["addr"] + step["args"]["size"]
                           > (1 << 64) - (1 << 16)))),   # the page-aligned end wraps (any granule)
    KernelFinding(
        "unmap-deferred-tlbi-short", "S2-BBM", (6, 6, 0), None,
        "with FWB and range TLBI (stage2_unmap_defer_tlb_flush), kvm_pgtable_stage2_unmap's "
        "deferred invalidation kvm_tlb_flush_vmid_range(mmu, addr, size) covers size >> "
        "PAGE_SHIFT pages from addr's page (the hyp rounds addr down), while the walk covers addr "
        "rounded down to that plus size rounded up: for a size that is not a multiple of the page "
        "size (whatever addr's alignment) the last page's leaf (a whole "
        "block there) is removed and never invalidated, a stale translation of memory the guest "
        "no longer owns. The kernel's callers pass page-aligned (memslot) ranges; seen running "
        "6.6.63, 6.12.19 and 7.1.5 (reached by the 7.1.5 lock-step once NORMAL_NC prots changed "
        "its draws: unmap(0x3ff000, 0x1001) over a 2M block at 0x400000)",
        ("kvm_pgtable_stage2_unmap", "kvm_tlb_flush_vmid_range", "stage2_unmap_put_pte"),
        # the size is no multiple of the smallest granule (4K): no multiple of the page either
        lambda step: (step is not None and step.get("op") == "unmap"
                      and isinstance(step["args"].get("size"), int)
                      and step["args"]["size"] % 4096 != 0),
        text="now invalid", where=lambda v, step: _past_the_range_tlbi(v, step)),
    KernelFinding(
        "split-drops-memtype-pou-split", "CMO-POU", (6, 5, 0), None,
        "split-drops-memtype as CMO-POU sees it at the split itself: a device block that "
        "relax_perms made executable (stage2_attr_walker checks no memory type) splits into normal "
        "cacheable executable pages, over memory whose D-cache was never cleaned nor I-cache "
        "invalidated (a device mapping owes neither); the guest may fetch stale instructions. Seen "
        "running 7.1.5 (4k-39, once the annotate draws changed the program: map a 1G R|W|DEVICE "
        "block, relax_perms(X) on it, split two pages of it)",
        ("kvm_pgtable_stage2_split", "stage2_split_walker", "kvm_pgtable_stage2_pte_prot"),
        _op("split"), text="its D-cache was not cleaned"),
    KernelFinding(
        "annotate-type-truncated", "C-ANNOTATE", (7, 1, 0), None,
        "kvm_pgtable_stage2_annotate refuses type 0 and KVM_INVALID_PTE_TYPE_LOCKED, then puts the "
        "type into bits 63:60 with FIELD_PREP, which keeps its low 4 bits only (no range check for "
        "a value not known at compile time): a type of 16 or more passes the check and stores type "
        "& 0xf, so 16 writes an untyped annotation (with annotation 0, a zero descriptor: an unmap "
        "reported as an annotation) and 17 leaves the locked-PTE marker in the table for good, the "
        "two values the check exists to refuse; 18 and 19 become DONATION and POISONED. Every "
        "in-tree caller passes an enumerator (pKVM's mem_protect.c), so no kernel path reaches it; "
        "a hardening gap (checking type against the field, or the enum's last value, closes it). "
        "Seen running 7.1.5; the lock-step draws 18 and 19 only (16 and 17 leave a table every "
        "later step would be judged broken by; tests/test_annotate.py shows them)",
        ("kvm_pgtable_stage2_annotate",),
        lambda step: (step is not None and step.get("op") == "annotate"
                      and isinstance(step["args"].get("type"), int) and step["args"]["type"] >= 16),
        where=_annotate_truncated),
)

# The hyp findings first seen on 6.1.176 reach back to 5.17: the hyp map and unmap walkers of the
# 5.17-rc5 and 5.19.0 trees are 6.1.176's (the same functions, but for the TLBI level hint of
# hyp_unmap_walker), and running them shows hyp-refcount and hyp-conflict-split there; 5.15.100
# and 5.16.10 have neither (no kvm_pgtable_hyp_unmap; 5.16.10's hyp check passes as 5.15's).
_HYP_SINCE_5_17 = ("hyp-conflict-page-einval", "hyp-conflict-page-einval-warn", "hyp-conflict-split",
                   "hyp-conflict-split-warn", "hyp-split-ref", "hyp-split-leak",
                   "hyp-split-leak-destroy", "hyp-unmap-overreach")
_HYP_NOTE = ("; from 5.17: 5.17-rc5's and 5.19.0's hyp walkers are 6.1.176's (5.16.10 has no "
             "kvm_pgtable_hyp_unmap and passes)")
FINDINGS = tuple(replace(f, why=f.why + _HYP_NOTE) if f.id in _HYP_SINCE_5_17 else f
                 for f in FINDINGS)


def _past_the_range_tlbi(violation, step) -> bool:
    """The leaf changed at or after the end of what kvm_tlb_flush_vmid_range(mmu, addr, size)
    invalidates, addr's page + (size >> PAGE_SHIFT pages) (__kvm_tlb_flush_vmid_range rounds
    addr down to the page): the part of the walk the deferred TLBI misses (step page_shift: the
    table's; without it, 64K, whose bound is the lowest)."""
    where = getattr(violation, "where", None) or {}
    ps = step.get("page_shift") or 16
    a = step["args"]
    at = where.get("changed_at")
    return isinstance(at, int) and at >= (a["addr"] >> ps << ps) + (a["size"] >> ps << ps)


def finding_for(violation, step, version: tuple):
    """The catalogued finding a violation of this step is, for this kernel version, or None. A
    contract's "... and N more finding(s)" summary is catalogued when every violation it stands
    for is a catalogued finding (spec.stage2.contract_common.Report keeps them in
    where["dropped"]): the first of them is returned (e.g. the many pages a -EAGAIN map left as
    they were, each eagain-abort). One that is not, or a summary that did not
    keep them all (more than MAX_DROPPED), is none."""
    where = getattr(violation, "where", None) or {}
    if "dropped" in where:
        if where["dropped"] is None:        # more than a Report keeps: not each was judged
            return None
        found = [finding_for(v, step, version) for v in where["dropped"]]
        return found[0] if found and None not in found else None
    vid = str(violation).split()[0]
    for f in FINDINGS:
        if (f.statement == vid and f.applies_to(version) and f.when(step)
                and f.text in str(violation) and (f.where is None or f.where(violation, step))):
            return f
    return None
