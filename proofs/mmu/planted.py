"""Planted bugs in the mmu.c model: each check of the ``mmu`` area must fail on its own.

``planted_mmu(bug_id)`` swaps one impl function for a variant with a single named defect and restores
it on exit. A variant is made from the impl function's own source with one textual change (shown in
the bug's ``old`` / ``new``), compiled in the impl module's namespace, so the defect is exactly that
change. The historical mmu.c bugs of ``docs/bugs.md`` carry their ids there (memslot-bounds,
force-pte-size, ipa-limit, dirty-before, perm-level); the others give MS, DIRTY, PROGRESS and each
C-MMU-* contract, MS-PERM and C-HYP-VA a bug of their own.
"""

from __future__ import annotations

import contextlib
import inspect
import textwrap
from dataclasses import dataclass

from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.impl.mmu import stage2 as mmu_stage2


@dataclass(frozen=True)
class MmuBug:
    id: str
    what: str
    caught_by: tuple          # any of these ids among the violations counts as caught
    module: object
    function: str
    old: str                  # the text replaced in the function's source ...
    new: str                  # ... by this


def _variant(bug: MmuBug):
    orig = getattr(bug.module, bug.function)
    src = textwrap.dedent(inspect.getsource(orig))
    if bug.old not in src:
        raise AssertionError(f"planted bug {bug.id}: {bug.old!r} not found in {bug.function}")
    src = src.replace(bug.old, bug.new, 1)
    ns = dict(vars(bug.module))
    exec(compile(src, f"<planted {bug.id}: {bug.function}>", "exec"), ns)
    return ns[bug.function]


F, S, H = mmu_fault, mmu_stage2, mmu_hyp

BUGS = {b.id: b for b in [
    # -- historical (docs/bugs.md) --------------------------------------------------------
    MmuBug("memslot-bounds", "a block at a memslot's head or tail may extend outside it "
           "(before 6794ad5443a2)", ("MS",), F, "fault_supports_stage2_huge_mapping",
           "    return (hva & ~(map_size - 1)) >= uaddr_start and \\\n"
           "        (hva & ~(map_size - 1)) + map_size <= uaddr_end",
           "    return True"),
    MmuBug("force-pte-size", "force_pte set but the mapping size stays huge (before a80868f39855)",
           ("MS", "S2-BA"), F, "vma_shift_fallthrough",
           "        vma_shift = sz.PAGE_SHIFT\n        force_pte = True",
           "        force_pte = True"),
    MmuBug("ipa-limit", "no bound: a memslot may end beyond the IPA space (before c3058d5da222)",
           ("MS", "C-MMU-PREPARE"), S, "kvm_arch_prepare_memory_region",
           "    if slot.base_gfn + slot.npages > (kvm.kvm_phys_size() >> ps):",
           "    if False:"),
    MmuBug("dirty-before", "the page is marked dirty before the mapping is installed, also when "
           "that fails (before 509552e65ae8)", ("DIRTY",), F, "user_mem_abort",
           "        if fault_status == FSC_PERM and vma_pagesize == fault_granule:\n"
           "            ret = pgt.relax_perms(fault_ipa, prot)\n"
           "        else:\n"
           "            ret = pgt.map(fault_ipa, vma_pagesize, pfn << ps, prot, memcache)\n"
           "        if writable and not ret:\n",
           "        if writable:\n"
           "            host.kvm_set_pfn_dirty(pfn)\n"
           "            mark_page_dirty_in_slot(kvm, slot, gfn)\n"
           "        if fault_status == FSC_PERM and vma_pagesize == fault_granule:\n"
           "            ret = pgt.relax_perms(fault_ipa, prot)\n"
           "        else:\n"
           "            ret = pgt.map(fault_ipa, vma_pagesize, pfn << ps, prot, memcache)\n"
           "        if False:\n"),
    MmuBug("perm-level", "relax-vs-map decided without the fault granule (before 7d894834a305)",
           ("PROGRESS", "MS"), F, "user_mem_abort",
           "if fault_status == FSC_PERM and vma_pagesize == fault_granule:",
           "if fault_status == FSC_PERM and not (logging_active and writable):"),
    # -- of their own ----------------------------------------------------------------------------
    MmuBug("ipa-limit-ge", "the IPA bound refuses a memslot ending exactly at the limit "
           "(the off-by-one fixed in 262b003d059c)", ("C-MMU-PREPARE",), S,
           "kvm_arch_prepare_memory_region",
           "    if slot.base_gfn + slot.npages > (kvm.kvm_phys_size() >> ps):",
           "    if slot.base_gfn + slot.npages >= (kvm.kvm_phys_size() >> ps):"),
    MmuBug("thp-no-align", "transparent_hugepage_adjust maps the THP block at the unaligned IPA",
           ("MS",), F, "transparent_hugepage_adjust",
           "        ipa &= ~(sz.PMD_SIZE - 1)\n", ""),
    MmuBug("no-mark-dirty", "a successful write fault does not set the dirty bit", ("DIRTY",),
           F, "user_mem_abort", "            mark_page_dirty_in_slot(kvm, slot, gfn)\n", ""),
    MmuBug("access-fault-noop", "handle_access_fault looks the leaf up but never makes it young",
           ("PROGRESS",), F, "handle_access_fault",
           "kpte = kvm.pgt.mkyoung(fault_ipa)", "kpte = kvm.pgt.get_leaf(fault_ipa)[1]"),
    MmuBug("cm-no-skip", "cache maintenance outside memslots exits to user space as MMIO",
           ("C-MMU-ABORT",), F, "kvm_handle_guest_abort",
           "elif hva is None and f.cm:", "elif False:"),
    MmuBug("commit-no-wp", "enabling dirty logging does not write-protect the memslot",
           ("C-MMU-COMMIT", "DIRTY", "MS-PERM"), S, "kvm_arch_commit_memory_region",
           "            kvm_mmu_wp_memory_region(kvm, slot_id)", "            pass"),
    MmuBug("flush-slot-short", "flushing a deleted memslot leaves its last page mapped",
           ("C-MMU-FLUSH-SLOT", "MS"), S, "kvm_arch_flush_shadow_memslot",
           "size = slot.npages << kvm.page_shift", "size = (slot.npages - 1) << kvm.page_shift"),
    MmuBug("age-returns-new", "kvm_age_gfn answers from the descriptor after clearing AF",
           ("C-MMU-NOTIFIER",), S, "kvm_age_gfn",
           "    kpte = kvm.pgt.mkold(rng.start << ps)\n",
           "    kpte = kvm.pgt.mkold(rng.start << ps) & ~KVM_PTE_LEAF_ATTR_LO_S2_AF\n"),
    MmuBug("unmap-gfn-short", "the notifier unmap stops one page short of the range",
           ("C-MMU-NOTIFIER", "MS"), S, "kvm_unmap_gfn_range",
           "(rng.end - rng.start) << ps", "(rng.end - rng.start - 1) << ps"),
    MmuBug("wp-mask-fls", "write-protecting a dirty mask stops before its last set bit",
           ("C-MMU-WP", "DIRTY"), S, "kvm_mmu_write_protect_pt_masked",
           "end = (base_gfn + fls + 1) << kvm.page_shift", "end = (base_gfn + fls) << kvm.page_shift"),
    MmuBug("wp-no-flush", "write-protecting a memslot for dirty logging skips the TLB flush",
           ("S2-BBM",), S, "kvm_mmu_wp_memory_region",
           "    stage2_wp_range(kvm, start, end)\n    kvm.flush_remote_tlbs()",
           "    stage2_wp_range(kvm, start, end)"),
    MmuBug("ioremap-offset", "kvm_phys_addr_ioremap ignores the IPA's offset in its page",
           ("C-MMU-IOREMAP",), S, "kvm_phys_addr_ioremap",
           "    size += guest_ipa & (psize - 1)\n", ""),
    MmuBug("unmap-vm-pfnmap", "stage2_unmap_vm unmaps the PFNMAP parts of memslots too",
           ("C-MMU-UNMAP-VM",), S, "stage2_unmap_memslot",
           "if vma.kind != PFNMAP:", "if True:"),
    MmuBug("exec-on-read", "a read fault on normal memory maps the page executable too (with the "
           "I-cache invalidated, so only the permission is wrong)", ("MS-PERM",), F,
           "user_mem_abort", "        if exec_fault:\n            prot |= KVM_PGTABLE_PROT_X",
           "        if exec_fault or not (write_fault or device):\n"
           "            prot |= KVM_PGTABLE_PROT_X"),
    MmuBug("block-keeps-exec", "a block built over a table keeps the execute permission of the "
           "page it faulted on: one fetched page makes the whole block executable",
           ("MS-PERM",), F, "user_mem_abort",
           "        if exec_fault:\n            prot |= KVM_PGTABLE_PROT_X",
           "        if exec_fault or (vma_pagesize > sz.PAGE_SIZE\n"
           "                          and pgt.get_leaf(f.ipa)[1] & KVM_PTE_VALID\n"
           "                          and not pgt.get_leaf(f.ipa)[1] >> 54 & 1):\n"
           "            prot |= KVM_PGTABLE_PROT_X"),
    MmuBug("ksm-exec", "kvm_set_spte_gfn maps the page KSM moved executable, with no I-cache "
           "invalidation", ("CMO-POU", "MS-PERM"), S, "kvm_set_spte_gfn",
           "                KVM_PGTABLE_PROT_R, None)", "                KVM_PGTABLE_PROT_R | 1, None)"),
    MmuBug("block-clean-one-page", "a fault that maps a block cleans only its first page to PoC",
           ("CMO-POC", "C-MMU-CMO"), F, "user_mem_abort",
           "            clean_dcache_guest_page(kvm, pfn, vma_pagesize)",
           "            clean_dcache_guest_page(kvm, pfn, 1 << ps)"),
    MmuBug("perm-relax-no-icache", "an execution fault that relaxes permissions grants X without "
           "invalidating the I-cache", ("CMO-POU", "C-MMU-CMO"), F, "user_mem_abort",
           "            invalidate_icache_guest_page(kvm, pfn, vma_pagesize)",
           "            if fault_status != FSC_PERM:\n"
           "                invalidate_icache_guest_page(kvm, pfn, vma_pagesize)"),
    MmuBug("ioremap-eagain-retry", "kvm_phys_addr_ioremap retries a page whose map answered "
           "-EAGAIN (already mapped so): an ioremap over its own mapping never returns",
           ("C-MMU-RETURNS",), S, "kvm_phys_addr_ioremap",
           "        ret = pgt.map(addr, psize, pa, prot, cache)\n        if ret:\n",
           "        ret = pgt.map(addr, psize, pa, prot, cache)\n"
           "        if ret == -errno.EAGAIN:\n            continue\n        if ret:\n"),
    MmuBug("hyp-va-no-xor", "the private VA allocator tests bit VA_BITS-1 of the new base only",
           ("C-HYP-VA",), H, "hyp_private_va",
           "crossed = (base ^ io_map_base) & (1 << (va_bits - 1))",
           "crossed = base & (1 << (va_bits - 1))"),
    MmuBug("hyp-va-no-offset", "the private mapping's address drops the offset in the page",
           ("C-HYP-VA",), H, "__create_hyp_private_mapping",
           "haddr = base + (phys_addr & (page_size - 1))", "haddr = base"),
]}

HISTORICAL = ("memslot-bounds", "force-pte-size", "ipa-limit", "dirty-before", "perm-level")


@contextlib.contextmanager
def planted_mmu(bug_id: str):
    bug = BUGS[bug_id]
    orig = getattr(bug.module, bug.function)
    setattr(bug.module, bug.function, _variant(bug))
    try:
        yield bug
    finally:
        setattr(bug.module, bug.function, orig)
