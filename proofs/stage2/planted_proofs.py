"""Planted bugs for the z3 and CrossHair obligations: each proof family must refute one.

Same idea as ``proofs/stage2/planted.py`` (whose bugs are reused where they hit a lemma's function): a
context manager swaps one impl function for a variant with a single named defect and restores it on
exit. The defects here target what the lemmas of ``proofs/stage2/z3_lemmas.py``,
``proofs/stage2/z3_leafsteps.py`` and ``proofs/stage2/crosshair_targets.py`` state, one or more per family; the tests
(tests/test_z3_planted.py, tests/test_crosshair_planted.py) plant each one and require the family's
obligation to come back refuted, naming one of the bug's expected ids.

``BUGS`` maps bug id -> ``ptspec.proofs.stage2.planted.Bug``; ``CAUGHT_BY`` maps bug id -> the obligation ids that
must refute it. ``planted(bug_id)`` works for the bugs of both modules.
"""

from __future__ import annotations

import contextlib
import errno

from ptspec.impl.pgtable import geometry
from ptspec.impl.pgtable import hyp
from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers
from ptspec.impl.pgtable import walker
from ptspec.impl.pgtable import pte as P
from ptspec.impl.lguest import shadow

from ptspec.proofs.stage2 import planted as base
from ptspec.proofs.stage2.planted import Bug


def _walk_index_mask(orig):
    """walk-index-mask: the entry index keeps one bit too many (mask PTRS_PER_PTE, not -1)."""
    def walk(data, ptp, level):
        if level >= 4:
            return -errno.EINVAL
        tbl = data.pages[ptp]
        ret = 0
        idx = (data.addr >> data.shift[level]) & data.ptrs         # the bug
        while idx < data.ptrs:
            if data.addr >= data.end:
                break
            ret = walker.__dict__["__kvm_pgtable_visit"](data, tbl, ptp, idx, level)
            if ret:
                break
            idx += 1
        return ret
    return walk


def _pgd_idx_mask(orig):
    """pgd-idx-mask: the root page index masks the address to ia_bits - 1 bits."""
    def pgd_page_idx(gran, ia_bits, start_level, addr):
        return orig(gran, ia_bits - 1, start_level, addr)
    return pgd_page_idx


def _phys_to_pte_no_high(orig):
    """oa-64k-high: kvm_phys_to_pte forgets PA bits 51:48 of the 64K granule."""
    def phys_to_pte(pa, page_shift):
        return pa & P.KVM_PTE_ADDR_MASK[page_shift]
    return phys_to_pte


def _prot_device_exec(orig):
    """prot-device-exec: executable device memory is accepted."""
    def set_prot(prot, has_fwb):
        ret, attr = orig(prot & ~P.KVM_PGTABLE_PROT_DEVICE, has_fwb)
        if prot & P.KVM_PGTABLE_PROT_DEVICE:
            attr = (attr & ~P.KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR) | P.kvm_s2_memattr(False, has_fwb)
        return ret, attr
    return set_prot


def _needs_update_no_xn(orig):
    """needs-update-xn: a re-map that changes XN counts as an update (XN left out of the perms)."""
    mask = ~(P.KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R | P.KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W) & P.U64

    def needs_update(old, new):
        if not (old & P.KVM_PTE_VALID) or not (new & P.KVM_PTE_VALID):
            return True
        return ((old ^ new) & mask) != 0
    return needs_update


def _counted_valid_only(orig):
    """counted-valid-only: the map walker counts only valid descriptors (pre-pKVM convention)."""
    def is_counted(pte):
        return (pte & P.KVM_PTE_VALID) != 0
    return is_counted


def _block_end_inclusive(orig):
    """block-end-overrun: a block may end one page past the end of the range."""
    def supported(gran, addr, end, phys, level, pa_bits):
        return orig(gran, addr, end + gran.page_size, phys, level, pa_bits)
    return supported


def _huge_no_bounds(orig):
    """memslot-bounds (6794ad5443a2 put back): the block need not lie inside the memslot."""
    def supported(kvm, slot, hva, map_size):
        ps = kvm.page_shift
        if map_size == 1 << ps:
            return True
        gpa_start = slot.base_gfn << ps
        return (gpa_start & (map_size - 1)) == (slot.userspace_addr & (map_size - 1))
    return supported


def _thp_ipa_unaligned(orig):
    """thp-ipa: the huge page is used but the IPA is not aligned down to the block."""
    def adjust(kvm, slot, hva, pfn, ipa):
        size, pfn2, ipa2 = orig(kvm, slot, hva, pfn, ipa)
        return size, pfn2, ipa
    return adjust


def _gpte_limit_off_by_one(orig):
    """lguest-gpte-limit: a guest PTE naming frame pfn_limit itself is accepted."""
    def check_gpte(self, gpte):
        return orig(self, gpte) or (self.fmt.pfn(gpte) == self.pfn_limit
                                    and not self.fmt.flags(gpte) & 0x80)
    return check_gpte


def _gpgd_no_limit(orig):
    """lguest-gpgd-limit: check_gpgd checks the flags but not the frame."""
    def check_gpgd(self, gpgd):
        if self.fmt.flags(gpgd) & ~self.fmt.check_gpgd_mask:
            self.kill_guest("bad page directory entry")
            return False
        return True
    return check_gpgd


def _set_pgd_seed(orig):
    """lguest-pgd-idx: guest_set_pgd's bound as the seed wrote it (idx <= PTRS_PER_PGD): the
    impl's own seed finding "set-pgd-bound" switched on."""
    def set_pgd(self, gpgdir, idx):
        saved = (self.seed_as_written, self.seed_findings)
        self.seed_as_written = True
        self.seed_findings = frozenset(self.seed_findings) | {"set-pgd-bound"}
        try:
            return orig(self, gpgdir, idx)
        finally:
            self.seed_as_written, self.seed_findings = saved
    return set_pgd


def _hyp_va_wrong_bit(orig):
    """hyp-va-bit: the allocator tests bit VA_BITS - 2 instead of VA_BITS - 1."""
    def private_va(io_map_base, phys_addr, size, va_bits, page_shift):
        return orig(io_map_base, phys_addr, size, va_bits - 1, page_shift)
    return private_va


# -- step bugs: one per walker-step lemma of proofs/stage2/z3_steps_*.py ----------------------------

def _split_no_parent_ref(orig):
    """step-split-no-ref: a table installed by map's LEAF step takes no reference on its page."""
    def leaf(addr, end, level, tbl, ptp, idx, data):
        was = P.kvm_pte_table(tbl[idx], level)
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if data.anchor is None and not was and P.kvm_pte_table(tbl[idx], level):
            data.pgt.mm_ops.put_page(ptp)
        return ret
    return leaf


def _anchored_valid_only(orig):
    """step-anchor-annotation: under an anchor, only valid entries give their reference back."""
    def leaf(addr, end, level, tbl, ptp, idx, data):
        if data.anchor is not None:
            if tbl[idx] & P.KVM_PTE_VALID:
                data.pgt.mm_ops.put_page(ptp)
            return 0
        return orig(addr, end, level, tbl, ptp, idx, data)
    return leaf


def _pre_drops_ref(orig):
    """step-pre-put: TABLE_PRE drops the cleared entry's reference (the anchor then holds none)."""
    def pre(addr, end, level, tbl, ptp, idx, data):
        had = data.anchor
        ret = orig(addr, end, level, tbl, ptp, idx, data)
        if had is None and data.anchor is not None:
            data.pgt.mm_ops.put_page(ptp)
        return ret
    return pre


def _post_keeps_child(orig):
    """step-post-keep-child: TABLE_POST at the anchor installs the block but never frees the
    detached table."""
    def post(addr, end, level, tbl, ptp, idx, data):
        a = data.anchor
        if a is not None and a[0] is tbl and a[1] == idx:
            data.anchor = None
            data.childp = None
            ret = stage2_map.stage2_map_walk_leaf(addr, end, level, tbl, ptp, idx, data)
            data.pgt.mm_ops.put_page(ptp)
            return ret
        return orig(addr, end, level, tbl, ptp, idx, data)
    return post


def _unmap_frees_busy(orig):
    """step-unmap-busy: unmap releases a table that still holds one counted entry."""
    def unmap(pgt, addr, end, level, tbl, ptp, idx, flag):
        pte = tbl[idx]
        if P.kvm_pte_table(pte, level):
            child = P.kvm_pte_to_phys(pte, pgt.gran.page_shift)
            if pgt.mm_ops.page_count(child) == 2:
                stage2_map.stage2_put_pte(pgt, tbl, ptp, idx, addr, level)
                pgt.mm_ops.put_page(child)
                return 0
        return orig(pgt, addr, end, level, tbl, ptp, idx, flag)
    return unmap


def _attr_touches_invalid(orig):
    """step-attr-invalid: the attribute walker also rewrites invalid entries (annotations)."""
    def attr(pgt, data, addr, end, level, tbl, ptp, idx, flag):
        pte = tbl[idx]
        if not pte & P.KVM_PTE_VALID and pte:
            tbl[idx] = (pte & ~data.attr_clr & P.U64) | data.attr_set
            return 0
        return orig(pgt, data, addr, end, level, tbl, ptp, idx, flag)
    return attr


def _free_keeps_child(orig):
    """step-free-no-child: destroy's free walker drops the entry's reference but not the child
    table's, so no table below the root is ever freed."""
    def free(pgt, addr, end, level, tbl, ptp, idx, flag):
        if stage2_map.stage2_pte_is_counted(tbl[idx]):
            pgt.mm_ops.put_page(ptp)
        return 0
    return free


def _flush_clears_af(orig):
    """step-flush-af: the flush walker also clears the access flag of the leaf it cleans."""
    def flush(pgt, addr, end, level, tbl, ptp, idx, flag):
        ret = orig(pgt, addr, end, level, tbl, ptp, idx, flag)
        if tbl[idx] & P.KVM_PTE_VALID:
            tbl[idx] = tbl[idx] & ~P.KVM_PTE_LEAF_ATTR_LO_S2_AF
        return ret
    return flush


def _hyp_block_any_phys(orig):
    """step-hyp-phys-align: hyp's try_leaf checks the block condition without the output
    address, so a block may start at a misaligned physical address."""
    def supported(gran, addr, end, phys, level, pa_bits):
        return orig(gran, addr, end, 0, level, pa_bits)
    return supported


def _walk_ignores_error(orig):
    """walk-no-stop: the entry loop goes on after a callback's error (the error is still the
    result if nothing later fails)."""
    def walk(data, ptp, level):
        if level >= 4:
            return -errno.EINVAL
        tbl = data.pages[ptp]
        ret = 0
        idx = (data.addr >> data.shift[level]) & (data.ptrs - 1)
        while idx < data.ptrs:
            if data.addr >= data.end:
                break
            r = walker.__dict__["__kvm_pgtable_visit"](data, tbl, ptp, idx, level)
            ret = ret or r                                   # the bug: no break
            idx += 1
        return ret
    return walk


def _erange_at_limit(orig):
    """walk-erange-limit: a range ending exactly at 2**ia_bits is refused with -ERANGE."""
    def walk(data):
        if data.end >= 1 << data.pgt.ia_bits:
            return -errno.ERANGE
        return orig(data)
    return walk


def _root_loop_stuck(orig):
    """walk-root-stuck: the root loop walks the same root page again instead of the next one."""
    def walk(data):
        pgt = data.pgt
        limit = 1 << pgt.ia_bits
        if data.addr > limit or data.end > limit:
            return -errno.ERANGE
        if pgt.pgd is None:
            return -errno.EINVAL
        ret = 0
        idx = pgt.pgd_page_idx(data.addr)
        while data.addr < data.end:
            ret = walker.__dict__["__kvm_pgtable_walk"](data, pgt.pgd[idx], pgt.start_level)
            if ret:
                break                                         # the bug: idx is never advanced
        return ret
    return walk


BUGS = {b.id: b for b in [
    Bug("walk-no-stop", "the walker goes on after a callback's error", ("C-GET-LEAF",),
        ((walker, "__kvm_pgtable_walk", _walk_ignores_error),)),
    Bug("walk-erange-limit", "a range ending at 2**ia_bits gets -ERANGE", ("C-GET-LEAF",),
        ((walker, "_kvm_pgtable_walk", _erange_at_limit),)),
    Bug("walk-root-stuck", "the root loop never moves to the next root page", ("C-GET-LEAF",),
        ((walker, "_kvm_pgtable_walk", _root_loop_stuck),)),
    Bug("step-split-no-ref", "a new table takes no reference on its parent page", ("S2-RC",),
        ((stage2_map, "stage2_map_walk_leaf", _split_no_parent_ref),)),
    Bug("step-anchor-annotation", "under an anchor, owner annotations keep their reference",
        ("S2-RC",), ((stage2_map, "stage2_map_walk_leaf", _anchored_valid_only),)),
    Bug("step-pre-put", "the anchor's TABLE_PRE drops the cleared entry's reference",
        ("S2-RC",), ((stage2_map, "stage2_map_walk_table_pre", _pre_drops_ref),)),
    Bug("step-post-keep-child", "the anchor's TABLE_POST never frees the detached table",
        ("S2-LEAK",), ((stage2_map, "stage2_map_walk_table_post", _post_keeps_child),)),
    Bug("step-unmap-busy", "unmap frees a table that still holds a counted entry",
        ("S2-LEAK",), ((stage2_walkers, "stage2_unmap_walker", _unmap_frees_busy),)),
    Bug("step-attr-invalid", "the attribute walker rewrites owner annotations", ("S2-OWN",),
        ((stage2_walkers, "stage2_attr_walker", _attr_touches_invalid),)),
    Bug("step-free-no-child", "destroy never puts a child table", ("S2-LEAK",),
        ((stage2_walkers, "stage2_free_walker", _free_keeps_child),)),
    Bug("step-flush-af", "the flush walker rewrites the leaves it cleans", ("S2-RC",),
        ((stage2_walkers, "stage2_flush_walker", _flush_clears_af),)),
    Bug("step-hyp-phys-align", "hyp stage 1 installs blocks at misaligned output addresses",
        ("S1-BA",), ((hyp, "kvm_block_mapping_supported", _hyp_block_any_phys),)),

    Bug("hyp-va-bit", "the hyp private VA allocator tests the wrong half bit", ("MS",),
        ((mmu_hyp, "hyp_private_va", _hyp_va_wrong_bit),)),
    Bug("memslot-bounds", "a block may reach outside the memslot (6794ad5443a2)", ("MS",),
        ((mmu_fault, "fault_supports_stage2_huge_mapping", _huge_no_bounds),)),
    Bug("thp-ipa", "THP adjustment keeps the unaligned IPA", ("MS",),
        ((mmu_fault, "transparent_hugepage_adjust", _thp_ipa_unaligned),)),
    Bug("lguest-gpte-limit", "check_gpte accepts frame pfn_limit", ("LG-SHADOW",),
        ((shadow.ShadowOps, "check_gpte", _gpte_limit_off_by_one),)),
    Bug("lguest-gpgd-limit", "check_gpgd does not bound the frame", ("LG-BND",),
        ((shadow.ShadowOps, "check_gpgd", _gpgd_no_limit),)),
    Bug("lguest-pgd-idx", "guest_set_pgd accepts idx == PTRS_PER_PGD (the seed's bound)",
        ("LG-BND",), ((shadow.ShadowOps, "guest_set_pgd", _set_pgd_seed),)),
    Bug("walk-index-mask", "the walker's entry index keeps one address bit too many",
        ("C-GET-LEAF", "C-UNMAP"), ((walker, "__kvm_pgtable_walk", _walk_index_mask),)),
    Bug("pgd-idx-mask", "the concatenated-root index drops the top IPA bit",
        ("C-GET-LEAF", "C-INIT"), ((geometry, "_kvm_pgd_page_idx", _pgd_idx_mask),)),
    Bug("oa-64k-high", "64K descriptors lose output-address bits 51:48",
        ("S2-BA", "S2-TREE", "C-MAP"),
        ((P, "kvm_phys_to_pte", _phys_to_pte_no_high),)),
    Bug("prot-device-exec", "executable device memory is accepted", ("C-MAP",),
        ((stage2_map, "stage2_set_prot_attr", _prot_device_exec),)),
    Bug("needs-update-xn", "an XN-only change is treated as a new mapping", ("C-MAP",),
        ((stage2_map, "stage2_pte_needs_update", _needs_update_no_xn),)),
    Bug("counted-valid-only", "the map walker does not count owner annotations",
        ("S2-RC", "S2-LEAK"), ((stage2_map, "stage2_pte_is_counted", _counted_valid_only),)),
    Bug("free-valid-only", "destroy drops no reference for owner annotations", ("S2-LEAK",),
        ((stage2_walkers, "stage2_free_walker", base.skip_invalid),)),
    Bug("block-end-overrun", "a block may end past the end of the range", ("S2-BA", "C-MAP"),
        ((stage2_map, "kvm_block_mapping_supported", _block_end_inclusive),)),
]}

# bug id -> obligations that must refute it (bugs of proofs/stage2/planted.py included)
CAUGHT_BY = {
    "block-phys-align": ["s2.z3.block-mapping", "s2.crosshair.diff.block-size"],
    "block-end-overrun": ["s2.z3.block-mapping", "s2.crosshair.diff.block-size"],
    "walk-index-mask": ["s2.z3.walk-index", "s2.crosshair.diff.walk-index",
                        "s2.crosshair.walk-range"],
    "pgd-idx-mask": ["s2.z3.root-index"],
    "walk-align": ["s2.z3.walk-advance"],
    "table-upper-bits": ["s2.z3.descriptor-oa"],
    "oa-64k-high": ["s2.z3.descriptor-oa", "s2.crosshair.diff.translate"],
    "prot-device-exec": ["s2.z3.prot-attr", "s2.crosshair.prot-attr"],
    "owner-field-shift": ["s2.z3.owner"],
    "needs-update-xn": ["s2.z3.needs-update"],
    "valid-update-ref": ["s2.z3.rc-own.map-leaf"],
    "counted-valid-only": ["s2.z3.rc-own.set-owner-leaf"],
    "owner-unmap": ["s2.z3.rc-own.unmap-step"],
    "free-valid-only": ["s2.z3.rc-own.free-step"],
    "memslot-bounds": ["s2.z3.mmu.huge-mapping", "s2.crosshair.diff.memslot"],
    "thp-ipa": ["s2.z3.mmu.thp-adjust"],
    "hyp-va-bit": ["s2.z3.mmu.hyp-va"],
    "lguest-gpte-limit": ["s2.z3.lguest.gpte"],
    "lguest-gpgd-limit": ["s2.z3.lguest.table-addr"],
    "lguest-pgd-idx": ["s2.z3.lguest.index"],
}


# bug id -> the s2.proof.* obligations that must refute it (tests/test_z3_steps.py)
STEP_CAUGHT_BY = {
    "step-split-no-ref": ["s2.proof.step.map-leaf"],
    "counted-valid-only": ["s2.proof.step.set-owner-leaf", "s2.proof.step.map-leaf"],
    "step-pre-put": ["s2.proof.step.map-table-pre"],
    "step-anchor-annotation": ["s2.proof.step.map-anchored-leaf"],
    "step-post-keep-child": ["s2.proof.step.map-table-post"],
    "step-unmap-busy": ["s2.proof.step.unmap"],
    "owner-unmap": ["s2.proof.step.unmap"],
    "step-attr-invalid": ["s2.proof.step.attr"],
    "step-free-no-child": ["s2.proof.step.free"],
    "step-hyp-phys-align": ["s2.proof.step.hyp-map"],
    "step-flush-af": ["s2.proof.step.flush"],
    "walk-no-stop": ["s2.proof.walk.table"],
    "walk-index-mask": ["s2.proof.walk.table"],
    "walk-erange-limit": ["s2.proof.walk.range"],
    "walk-root-stuck": ["s2.proof.walk.roots"],
    "pgd-idx-mask": ["s2.proof.walk.roots"],
}


def get(bug_id: str) -> Bug:
    if bug_id in BUGS:
        return BUGS[bug_id]
    return base.BUGS[bug_id]


@contextlib.contextmanager
def planted(bug_id: str):
    """Swap in the named bug (from this module or proofs/stage2/planted.py) for the block."""
    with base.applied(get(bug_id)) as bug:
        yield bug
