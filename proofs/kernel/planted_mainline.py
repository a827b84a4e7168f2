"""Real upstream fixes of the reworked walker (6.x pgtable.c) put back out, in scratch copies.

Each ``Revert`` undoes one fix the kernel made between 6.2 and 7.2, as edits described by kernel
names only (``planted.CEdit``: in a function, on the first line holding a token, replace a piece
or delete the line; no kernel code is kept here). ``scratch_tree(revert, tree, dest)`` copies the
tree's four files to a scratch directory outside the repository and applies the edits there; the
cached tree is never touched. ``measure(revert)`` then asks whether, and how fast, the spec catches
the reverted code: the lock-step of ``check-kernel`` on the revert's geometries (steps until the
first violation), and the revert's own shortest sequence (``sequence``) when the generator's
default memcache cannot reach the code (see docs/kernel-mainline.md for the numbers).

The fixes (upstream subject lines paraphrased):

* ``pte-reload-table-pre``: reload the PTE after a TABLE_PRE callback (so the walker does not
  descend into a table the callback just replaced by a block and freed);
* ``free-removed-last-ref``: drop the last page reference of the table root in
  ``kvm_pgtable_stage2_free_removed``/``free_unlinked``;
* ``create-unlinked-double-put``: no extra put_page after ``kvm_pgtable_stage2_free_unlinked`` in
  ``kvm_pgtable_stage2_create_unlinked``'s error path (put back into 6.12, which has the fix);
* ``pa-from-ipa``: infer the PA offset from the IPA in the map walker instead of advancing
  ``data->phys`` per installed leaf (which a skipped leaf leaves behind);
* ``defer-table-tlbi``: don't defer the TLBI when unmap zaps a table (put back into 6.12);
* ``split-double-put``: no extra put_page after free_unlinked in the split walker's lost race
  (put back into 6.12; unreachable single-threaded: the split walk is exclusive);
* ``relax-perms-tlbi-level``: pass TLBI_TTL_UNKNOWN, not the unset level, when relax_perms' walk
  returns -EAGAIN (the 7.2-rc fix, backported to 7.1.5; put back into 7.1.5, which gives 7.1.3's
  code);
* ``xnx-icache-executable``: with FEAT_XNX, count a leaf executable at either EL as executable for
  the I-cache invalidation (17f073f78fc4; put back into 7.1.5, judged on an XNX table).

````PLANTS`` are bugs planted for a statement (not upstream fixes): the locked-PTE marker left or
stored valid (S2-LOCKED), and NORMAL_NC (6.9 on) mishandled by ``stage2_set_prot_attr`` (C-MAP):
``nc-as-normal`` (normal cacheable MemAttr), ``nc-x-accepted`` (NORMAL_NC | X mapped),
``nc-device-accepted`` (DEVICE | NORMAL_NC mapped as normal memory), and PX/UX (6.19 on):
``xnx-assumed`` (PX without UX mapped on a CPU without FEAT_XNX), ``xnx-px-ux-swapped`` (with
FEAT_XNX, PX alone and UX alone given each other's XN value), and annotate (7.1 on, C-ANNOTATE,
S2-RC): ``annotate-locked-accepted`` (type LOCKED stored), ``annotate-mask-unchecked`` (an
annotation with bit 0 stored as a valid descriptor), ``poison-uncounted`` (POISONED annotations
not counted in the table's refcount), and AS_S1 (7.0 on, 16k-47's table): ``as-s1-device-forced``
(a device map in an AS_S1 table given Device-nGnRE).

``HYP_PLANTS`` are bugs planted (not upstream fixes) in each 6.x tree's hyp stage-1 unmap
(``hyp-unmap-keeps-table``, ``hyp-unmap-uncounted``), run by ``run_hyp_sequence`` on the hyp
harness of ``proofs/kernel/hyp.py``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import fetch
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.kernel.planted import CEdit, apply_edit


@dataclass(frozen=True)
class Revert:
    id: str
    what: str
    tree: str                   # the cached tree it is put back into ("6.6" -> linux-6.6*)
    edits: tuple                # CEdit, applied in order
    geometries: tuple           # where the lock-step should see it
    expect: tuple               # statement ids that must report it
    sequence: tuple = ()        # ((kind, args), ...): a shortest program, ("fail", k) / (op, args)
    harness: tuple = ()         # extra harness options for the sequence (memcache, arena)
    upstream: bool = True       # a real upstream fix undone (False: a bug planted for a statement)


def _e(rid, function, token, old, new):
    return CEdit(rid, "", function, token, old, new)


REVERTS = (
    Revert("pte-reload-table-pre",
           "the walker keeps the PTE it read before the TABLE_PRE callback: after the callback "
           "replaced the table by a block (and freed it), the walk still descends into it",
           "6.6", (_e("pte-reload-table-pre", "__kvm_pgtable_visit", "reload = true",
                      "reload = true;", None),),
           ("4k-39", "4k-48", "16k-40"), ("S2-LEAK", "S2-RC", "S2-RCU", "KERNEL-WARN", "C-MAP"),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=6)),
            ("map", dict(addr=0x200000, size=0x200000, phys=0x4000200000, prot=6)))),
    Revert("free-removed-last-ref",
           "kvm_pgtable_stage2_free_removed walks the removed subtree but never drops the "
           "reference of its root page: every table replaced by a block leaks a page",
           "6.3", (_e("free-removed-last-ref", "kvm_pgtable_stage2_free_removed",
                      "mm_ops->put_page(pgtable)", "mm_ops->put_page(pgtable);", None),),
           ("4k-39", "4k-48", "16k-40"), ("S2-RCU", "S2-LEAK"),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=6)),
            ("map", dict(addr=0x200000, size=0x200000, phys=0x4000200000, prot=6)))),
    Revert("create-unlinked-double-put",
           "kvm_pgtable_stage2_create_unlinked's error path puts the table page again after "
           "kvm_pgtable_stage2_free_unlinked already dropped its last reference",
           "6.12", (_e("create-unlinked-double-put", "kvm_pgtable_stage2_create_unlinked",
                       "kvm_pgtable_stage2_free_unlinked(", "level);",
                       "level); mm_ops->put_page(pgtable);"),),
           ("4k-39",), ("S2-LEAK",),
           (("map", dict(addr=0x40000000, size=0x40000000, phys=0x4040000000, prot=6)),
            ("fail", 5), ("split", dict(addr=0x40000000, size=0x1000))),
           (("arena_pages", 2048), ("mc_capacity", 600))),
    Revert("pa-from-ipa",
           "the map walker takes data->phys as the leaf's output address and advances it only "
           "when it installs a leaf: a leaf skipped with -EAGAIN (same mapping) leaves every "
           "later leaf of the walk one granule behind",
           "6.6", (_e("pa-from-ipa", "stage2_map_walker_phys_addr", "return phys +",
                      "return phys + (ctx->addr - ctx->start);", "return phys;"),
                   _e("pa-from-ipa", "stage2_map_walker_try_leaf", "stage2_make_pte(ctx, new);",
                      "stage2_make_pte(ctx, new);",
                      "stage2_make_pte(ctx, new); if (kvm_phys_is_valid(data->phys)) "
                      "*(u64 *)&data->phys += granule;")),
           ("4k-39", "16k-40", "64k-44"), ("C-MAP",),
           (("map", dict(addr=0x0, size=0x1000, phys=0x4000000000, prot=6)),
            ("map", dict(addr=0x0, size=0x2000, phys=0x4000000000, prot=6)))),
    Revert("defer-table-tlbi",
           "unmap defers the TLBI of a zapped table to the range TLBI at the end of the walk (with "
           "FWB), after the table page was already freed",
           "6.12", (_e("defer-table-tlbi", "stage2_unmap_put_pte", "kvm_pte_table(ctx->old",
                       "kvm_pte_table(ctx->old, ctx->level)", "0"),),
           ("4k-48",), ("S2-TABLE-TLBI",),
           (("map", dict(addr=0x0, size=0x1000, phys=0x4000000000, prot=6)),
            ("unmap", dict(addr=0x0, size=0x200000))),
           (("fwb", True),)),
    Revert("split-double-put",
           "the split walker puts the new table page again after freeing it when it loses the "
           "race to break the block (stage2_try_break_pte fails)",
           "6.12", (_e("split-double-put", "stage2_split_walker", "kvm_pgtable_stage2_free_unlinked(",
                       "level);", "level); mm_ops->put_page(childp);"),),
           ("4k-39",), ("S2-LEAK",)),
    # The 7.2 cycle's one known change to pgtable.c: 8d187d4b33c2 (kvmarm fixes for 7.2-rc),
    # backported to 7.1.y as ab2afe109266 (first in 7.1.5). Put back out of the cached 7.1.5, the
    # relax_perms TLBI takes the level the failed walk never wrote (7.1.3's code)
    Revert("relax-perms-tlbi-level",
           "kvm_pgtable_stage2_relax_perms passes the TLBI the level stage2_update_leaf_attrs "
           "only writes on success, also when the walk returned -EAGAIN (no valid leaf): an "
           "uninitialised TTL hint instead of TLBI_TTL_UNKNOWN",
           "7.1", (_e("relax-perms-tlbi-level", "kvm_pgtable_stage2_relax_perms",
                      "TLBI_TTL_UNKNOWN : level", "(ret == -EAGAIN) ? TLBI_TTL_UNKNOWN : level",
                      "level"),),
           ("4k-39",), ("C-RELAX-PERMS",),
           (("relax_perms", dict(addr=0x100800, prot=3)),)),
    # 17f073f78fc4 (June 2026, in 7.0.y/7.1.y stable; the base of the 7.2-rc fixes branch still
    # lacks it, see docs/kernel-mainline.md "7.2"): with FEAT_XNX (the table option xnx, 4k-40) XN
    # is a 2-bit field, and testing it for zero misses a leaf executable at one EL only
    Revert("xnx-icache-executable",
           "stage2_pte_executable takes a leaf as executable only when its whole XN field is 0: "
           "with FEAT_XNX a PX-only (0b11) or UX-only (0b01) leaf gets no I-cache invalidation",
           "7.1", (_e("xnx-icache-executable", "stage2_pte_executable",
                      "kvm_pgtable_stage2_pte_prot(pte)", "kvm_pgtable_stage2_pte_prot(pte)", None),
                   _e("xnx-icache-executable", "stage2_pte_executable",
                      "KVM_PGTABLE_PROT_UX | KVM_PGTABLE_PROT_PX",
                      "prot & (KVM_PGTABLE_PROT_UX | KVM_PGTABLE_PROT_PX)",
                      "kvm_pte_valid(pte) && !(pte & KVM_PTE_LEAF_ATTR_HI_S2_XN)")),
           ("4k-40",), ("C-CMO", "CMO-POU"),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=0x24)),),
           harness=(("xnx", True),)),
)
# Bugs planted (not upstream fixes) so that the reworked walker's marker statement is seen to fail
# on the C code itself, not only on hand-built states (tests/test_spec_mainline.py).
PLANTS = (
    Revert("lock-left", "the map walker breaks the old leaf (the locked-PTE marker) and returns "
           "without making the new one", "6.6",
           (_e("lock-left", "stage2_map_walker_try_leaf", "stage2_make_pte(ctx, new);",
               "stage2_make_pte(ctx, new);", "return 0;"),),
           ("4k-39",), ("S2-LOCKED",),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=6)),),
           upstream=False),
    Revert("lock-valid", "stage2_try_break_pte stores the locked-PTE marker with the valid bit "
           "set", "6.6",
           (_e("lock-valid", "stage2_try_break_pte", "KVM_INVALID_PTE_LOCKED)",
               "KVM_INVALID_PTE_LOCKED)", "KVM_INVALID_PTE_LOCKED | KVM_PTE_VALID)"),),
           ("4k-39",), ("S2-LOCKED",),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=6)),),
           upstream=False),
) + tuple(
    # NORMAL_NC (6.9 on): bugs in stage2_set_prot_attr that only a spec judging the NORMAL_NC prot,
    # and a generator that draws it, can see (tests/test_kernel_mainline.py)
    Revert(rid, what, "6.12", (_e(rid, "stage2_set_prot_attr", token, old, new),),
           ("4k-39",), ("C-MAP",), (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000,
                                                  prot=prot)),), upstream=False)
    for rid, what, token, old, new, prot in (
        ("nc-as-normal", "a NORMAL_NC prot is given the normal cacheable MemAttr",
         "KVM_S2_MEMATTR(pgt, NORMAL_NC)", "NORMAL_NC)", "NORMAL)", 0x16),
        ("nc-x-accepted", "the NORMAL_NC case skips its X check: NORMAL_NC | X maps an "
         "executable non-cacheable leaf instead of -EINVAL",
         "case KVM_PGTABLE_PROT_NORMAL_NC:", "NORMAL_NC:", "NORMAL_NC: if (0)", 0x15),
        ("nc-device-accepted", "DEVICE | NORMAL_NC is no longer refused: it falls to the default "
         "(normal cacheable) case", "case KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_NORMAL_NC:",
         "case", None, 0x1e)))
# PX/UX (6.19 on): stage2_set_xn_attr takes FEAT_XNX as present on a CPU without it, so a prot with
# one of PX and UX writes XN 0b01/0b11 (which such a CPU does not implement) instead of -EINVAL
PLANTS += (
    Revert("xnx-assumed", "stage2_set_xn_attr skips its ARM64_HAS_XNX check: PX without UX maps "
           "(XN 0b11) on a CPU without FEAT_XNX instead of -EINVAL", "7.1",
           (_e("xnx-assumed", "stage2_set_xn_attr", "ARM64_HAS_XNX", "px != ux", "0"),),
           ("4k-39",), ("C-MAP",),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=0x24)),),
           upstream=False),
    # FEAT_XNX (the table option xnx, 4k-40): the 2-bit XN values of PX alone and UX alone
    # exchanged, so a guest kernel mapping may execute at EL0 only and a user one at EL1 only.
    # Without FEAT_XNX one alone is -EINVAL before the encoding: only an XNX table sees it
    Revert("xnx-px-ux-swapped", "stage2_set_xn_attr encodes UX alone as XN 0b11 and PX alone "
           "as 0b01 (FEAT_XNX's meanings exchanged)", "7.1",
           (_e("xnx-px-ux-swapped", "stage2_set_xn_attr", "else if (!px && ux)", "!px && ux",
               "px && !ux"),),
           ("4k-40",), ("C-MAP", "C-RELAX-PERMS"),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=0x24)),),
           harness=(("xnx", True),), upstream=False),)
# kvm_pgtable_stage2_annotate (7.1 on): its two argument checks weakened, and POISONED annotations
# left out of the table's refcount; the lock-step drives annotate (and POISONED) only since C-ANNOTATE
PLANTS += (
    Revert("annotate-locked-accepted", "kvm_pgtable_stage2_annotate refuses type 0 only: "
           "KVM_INVALID_PTE_TYPE_LOCKED is stored, a locked-PTE marker left in the table", "7.1",
           (_e("annotate-locked-accepted", "kvm_pgtable_stage2_annotate",
               "KVM_INVALID_PTE_TYPE_LOCKED)", "!type ||", "!type || 0 &&"),),
           ("4k-39",), ("C-ANNOTATE", "S2-LOCKED", "S2-OWN"),
           (("annotate", dict(addr=0x200000, size=0x1000, type=1, annotation=0)),),
           upstream=False),
    Revert("annotate-mask-unchecked", "kvm_pgtable_stage2_annotate skips its annotation check: "
           "an annotation with bit 0 set is stored as a valid descriptor", "7.1",
           (_e("annotate-mask-unchecked", "kvm_pgtable_stage2_annotate",
               "KVM_INVALID_PTE_ANNOT_MASK", "if (", "if (0 && "),),
           ("4k-39",), ("C-ANNOTATE",),
           (("annotate", dict(addr=0x200000, size=0x1000, type=3, annotation=1)),),
           upstream=False),
    Revert("poison-uncounted", "stage2_pte_is_counted leaves POISONED annotations out: a page "
           "annotated POISONED takes no reference on its table (and unmap drops none)", "7.1",
           (_e("poison-uncounted", "stage2_pte_is_counted", "return !!pte", "!!pte",
               "(!!pte && (pte >> 60) != 3)"),),
           ("4k-39",), ("S2-RC",),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=6)),
            ("annotate", dict(addr=0x201000, size=0x1000, type=3, annotation=0))),
           upstream=False),)
# KVM_PGTABLE_S2_AS_S1 (7.0 on): the device case of stage2_set_prot_attr bypasses the table's AS_S1
# override (PAGE_S2_MEMATTR instead of KVM_S2_MEMATTR): a device map in an AS_S1 table forces
# Device-nGnRE at stage 2 where stage 1 should decide; the same code without AS_S1 is unchanged
PLANTS += (
    Revert("as-s1-device-forced", "stage2_set_prot_attr's device case ignores "
           "KVM_PGTABLE_S2_AS_S1: a device map in an AS_S1 table gets MemAttr Device-nGnRE", "7.1",
           (_e("as-s1-device-forced", "stage2_set_prot_attr", "KVM_S2_MEMATTR(pgt, DEVICE_nGnRE)",
               "KVM_S2_MEMATTR(pgt, DEVICE_nGnRE)", "PAGE_S2_MEMATTR(DEVICE_nGnRE)"),),
           ("16k-47",), ("C-MAP",),
           (("map", dict(addr=0x200000, size=0x1000, phys=0x4000200000, prot=0xe)),),
           harness=(("flags", 4),), upstream=False),)   # 4k-39 with AS_S1 (SPEC_FLAG_AS_S1)
# Bugs planted in the hyp stage-1 code of the reworked walker (not upstream fixes), so that the hyp
# engine is seen to catch a wrong hyp table on 6.x C code: their sequences run on the hyp harness
# (``run_hyp_sequence``, 4K / 48-bit VA).
_HYP_MAP = ("map", dict(addr=0x200000, size=0x1000, phys=0x100200000, prot=4))
HYP_PLANTS = tuple(
    Revert(rid, what, tree, edits, ("4k-48",), expect, seq, upstream=False)
    for tree in ("6.3", "6.6", "6.12")
    for rid, what, edits, expect, seq in (
        ("hyp-unmap-keeps-table",
         "hyp_unmap_walker clears the entry of a table it emptied and drops the parent's "
         "reference, but never puts the table page itself: it stays allocated, unreachable",
         (_e("hyp-unmap-keeps-table", "hyp_unmap_walker", "put_page(childp)",
             "mm_ops->put_page(childp);", ";"),),
         ("S1-LEAK",), (_HYP_MAP, ("unmap", dict(addr=0x200000, size=0x1000)))),
        ("hyp-unmap-uncounted",
         "hyp_unmap_walker removes a leaf without adding its size to the bytes unmapped: "
         "kvm_pgtable_hyp_unmap returns 0 for a range it did unmap",
         (_e("hyp-unmap-uncounted", "hyp_unmap_walker", "*unmapped += granule",
             "*unmapped += granule;", None),),
         ("C-HYP-UNMAP",), (_HYP_MAP, ("unmap", dict(addr=0x200000, size=0x1000)))),
    ))
# The hyp half of 36e008323926 undone: a table hyp_unmap_walker emptied is invalidated with its
# own level as the hint again (6.3.8 and 6.8.0 still have that code; catalogued there as
# hyp-table-tlbi-level), caught by S1-UNMAP-TLBI on the unmap that frees the table.
# map the page at 0x200000 and one at 0x40000000 (the level-1 table stays), unmap the first: the
# tables below it are freed while their parent stays
_HYP_TABLE_FREE = (_HYP_MAP, ("map", dict(addr=0x40000000, size=0x1000, phys=0x100400000, prot=4)),
                   ("unmap", dict(addr=0x200000, size=0x1000)))
HYP_PLANTS += (Revert("hyp-table-tlbi-hint",
                      "hyp_unmap_walker invalidates a table descriptor it cleared with the table's "
                      "level as the TLBI hint, so the EL2 walk-cache entry of the freed table "
                      "need not go",
                      "6.12", (_e("hyp-table-tlbi-hint", "hyp_unmap_walker", "vae2is",
                                  "TLBI_TTL_UNKNOWN);", "ctx->level);"),),
                      ("4k-48",), ("S1-UNMAP-TLBI",),
                      # a second mapping keeps the level-1 table, so no TLBI of the level-0
                      # descriptor (no hint before 6.10) covers the freed tables' walk entries
                      _HYP_TABLE_FREE),)
# 6.1.y's and 6.6.y's backports of 36e008323926 pass 0 for a zapped table, which sets no TTL
# there; from 6.8 __tlbi_level encodes 0 as a level-0 hint (LPA2), so the same 0 in a 6.8+ tree
# leaves the walk-cache entry on a CPU with FEAT_LPA2: the backport's shape put into 6.12's stage-2
# unmap and hyp unmap, caught by S2-BBM-WALK and S1-UNMAP-TLBI (walkcache.leaf_hints)
PLANTS += (
    Revert("table-tlbi-zero", "stage2_unmap_put_pte invalidates a zapped table with hint 0 (6.6.y's "
           "no-hint value), a level-0 hint from 6.8", "6.12",
           (_e("table-tlbi-zero", "stage2_unmap_put_pte", "TLBI_TTL_UNKNOWN);",
               "TLBI_TTL_UNKNOWN);", "0);"),),
           ("4k-39",), ("S2-BBM-WALK",),
           (("map", dict(addr=0x0, size=0x1000, phys=0x4000000000, prot=6)),
            ("unmap", dict(addr=0x0, size=0x1000))), upstream=False),)
# The retry path's invalidation dropped (a relax_perms -EAGAIN that invalidates nothing, 6.6's
# code in a 6.8+ tree): inside relax-perms-eagain-level's range, so a catalogue entry matching
# any C-RELAX-PERMS violation of a -EAGAIN step (as it did before stop 28) would pass it
PLANTS += (
    Revert("relax-perms-retry-untlbied", "kvm_pgtable_stage2_relax_perms invalidates only when "
           "its walk returned 0: a -EAGAIN (the leaf changed under it) leaves this CPU's stale "
           "entry, so the vCPU faults again", "6.12",
           (_e("relax-perms-retry-untlbied", "kvm_pgtable_stage2_relax_perms",
               "ret == -EAGAIN)", "if (!ret || ret == -EAGAIN)", "if (!ret)"),),
           ("4k-39",), ("C-RELAX-PERMS",),
           (("relax_perms", dict(addr=0x200000, prot=6)),), upstream=False),)
HYP_PLANTS += (Revert("hyp-table-tlbi-zero",
                      "hyp_unmap_walker invalidates a table descriptor it cleared with hint 0 "
                      "(6.6.y's no-hint value), a level-0 hint from 6.8",
                      "6.12", (_e("hyp-table-tlbi-zero", "hyp_unmap_walker", "vae2is",
                                  "TLBI_TTL_UNKNOWN);", "0);"),),
                      ("4k-48",), ("S1-UNMAP-TLBI",),
                      _HYP_TABLE_FREE, upstream=False),)
# A conflicting hyp re-map whose WARN_ON no longer stops the store: the conflicting leaf is
# overwritten (impl's hyp-conflict-overwrite, in 6.12's C). Not in HYP_PLANTS: its clean run shows
# the catalogued hyp-conflict-split. Refuted by C-HYP-MAP since hyp-conflict-* match the kernel's
# own conflict behaviour only (finding_shapes.hyp_conflict_outcome); matched by statement and step
# alone (before stop 29) it was catalogued
HYP_CONFLICT_OVERWRITE = Revert(
    "hyp-conflict-overwrite", "hyp_map_walker_try_leaf WARNs on a conflicting valid leaf but stores "
    "the new one over it anyway", "6.12",
    (_e("hyp-conflict-overwrite", "hyp_map_walker_try_leaf", "WARN_ON((ctx->old ^ new)",
        "& ~KVM_PTE_LEAF_ATTR_HI_SW)", "& ~KVM_PTE_LEAF_ATTR_HI_SW) && 0"),),
    ("4k-48",), ("C-HYP-MAP",),
    (("map", dict(addr=0x40000000, size=0x200000, phys=0x140000000, prot=5)),
     ("map", dict(addr=0x40000000, size=0x200000, phys=0x240000000, prot=4))), upstream=False)
BY_ID = {r.id: r for r in REVERTS + PLANTS}

# 7.2's pgtable.c differs from the cached 7.1.5's, as far as the sources read here show
# (docs/kernel-mainline.md "7.2"), by one change: relax_perms updates XN only when prot asks for X
# ("Only update XN attr when requested during S2 relaxation", f35c08c09250, a 7.2-rc fix). V72_EDITS
# make it in a scratch copy of 7.1.5, by kernel names, so that 7.2's behaviour can be judged where
# no 7.2 tree is cached. (Mainline at 8d187d4b33c2 also has the older stage2_pte_executable that
# 17f073f78fc4 fixed for FEAT_XNX; 7.1.5 and, by then, mainline have the fix.)
V72_EDITS = (
    _e("v7.2", "kvm_pgtable_stage2_relax_perms", "stage2_set_xn_attr(prot, &xn)", "ret = ",
       "if (prot & KVM_PGTABLE_PROT_X) { ret = "),
    _e("v7.2", "kvm_pgtable_stage2_relax_perms", "clr |= ~xn", "KVM_PTE_LEAF_ATTR_HI_S2_XN;",
       "KVM_PTE_LEAF_ATTR_HI_S2_XN; }"),
)


def v72_scratch_tree(tree, dest, version: str = "7.2.0"):
    """7.1.5's four files under ``dest`` with V72_EDITS applied to pgtable.c and the Makefile's
    version lines set to ``version``: the opened tree (a stand-in for 7.2's pgtable.c with 7.1.5's
    headers, not a 7.2 tree)."""
    import re
    text = (Path(tree.root) / T.FILES[0]).read_text()
    for edit in V72_EDITS:
        text = apply_edit(text, edit)
    dest = Path(dest)
    _fill(dest, tree, text)
    mk = dest / "Makefile"
    body = mk.read_text()
    for key, val in zip(("VERSION", "PATCHLEVEL", "SUBLEVEL"), version.split(".")):
        body = re.sub(rf"^{key} = \d+$", f"{key} = {val}", body, count=1, flags=re.M)
    mk.write_text(body)
    return T.open_tree(dest)


def scratch_dir() -> Path:
    """Where scratch trees live: beside the kdiff cache, never in the repository."""
    return fetch.cache_dir().parent / "scratch"


def scratch_tree(revert: Revert, tree, dest=None):
    """Copy the tree's four files to ``dest`` (default: the scratch directory), apply the
    revert's edits to its pgtable.c, and return the opened scratch tree (EditError when an edit's
    anchor is missing)."""
    text = (Path(tree.root) / T.FILES[0]).read_text()
    for edit in revert.edits:
        text = apply_edit(text, edit)
    if dest is not None:
        _fill(Path(dest), tree, text)
        return T.open_tree(dest)
    # The shared scratch directory: named by the content it holds and filled in a private
    # directory first, then renamed into place, so two runs at once never read a half-written copy
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    dest = scratch_dir() / f"{revert.id}-{tree.version}-{digest}"
    if not dest.is_dir():
        scratch_dir().mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=scratch_dir()))
        _fill(tmp, tree, text)
        try:
            tmp.rename(dest)
        except OSError:             # another run put the same copy in place first
            shutil.rmtree(tmp, ignore_errors=True)
    return T.open_tree(dest)


def _fill(dest: Path, tree, text: str) -> None:
    """The tree's files under ``dest``, its pgtable.c replaced by ``text``."""
    for rel in T.FILES:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tree.root) / rel, dest / rel)
    (dest / T.FILES[0]).write_text(text)


def run_sequence(revert: Revert, tree):
    """The revert's shortest sequence on a fresh harness of ``tree`` (4K, 39-bit IPA, its
    options): (violations, harness)."""
    from ptspec.proofs.kernel.subject import subject_factory
    h = subject_factory(tree)(12, 39, **dict((("arena_pages", 512),) + revert.harness))
    for kind, args in revert.sequence:
        if kind == "fail":
            h.fail_allocation(args)
        else:
            h.step(kind, **args)
        if h.violations:
            break
    return list(h.violations), h


def run_hyp_sequence(revert: Revert, tree):
    """The plant's sequence on a fresh hyp harness of ``tree`` (4K granule, 48-bit VA, 128 arena
    pages): (violations, harness)."""
    from ptspec.proofs.kernel.hyp import hyp_harness
    h = hyp_harness(tree)(12, 48, 128)
    for kind, args in revert.sequence:
        h.step(kind, **args)
        if h.violations:
            break
    return list(h.violations), h


def measure(revert: Revert, profile: str = "quick", seed: int = 0) -> dict:
    """Whether the spec catches the revert, and how fast: the first refuting geometry's
    operations and seconds, and the shortest sequence's result, on the cached tree."""
    from ptspec.proofs.kernel import check
    from ptspec.proofs.runner import budgets
    tree, why = T.cached_tree(revert.tree)
    if tree is None:
        return {"id": revert.id, "status": "unknown", "why": why}
    scratch = scratch_tree(revert, tree)
    try:
        build.library(12, scratch)
    except build.BuildError as exc:
        return {"id": revert.id, "status": "unknown", "why": str(exc).splitlines()[0]}
    out = {"id": revert.id, "tree": tree.version, "lockstep": []}
    seq_v, _ = run_sequence(revert, scratch) if revert.sequence else ([], None)
    out["sequence"] = sorted({str(v).split()[0] for v in seq_v})
    for g in revert.geometries:
        t0 = time.perf_counter()
        r = check.check_geometry(scratch, g, budgets.budget(profile), seed)
        out["lockstep"].append({"geometry": g, "status": r.status, "operations": r.examples,
                                "seconds": round(time.perf_counter() - t0, 1),
                                "detail": r.detail[:200]})
    return out
