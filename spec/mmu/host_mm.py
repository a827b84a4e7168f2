"""HOST-MM: what the environment of mmu.c must do (Linux mm and kvm_main.c semantics).

Models the contract the stage-2 spec takes as given about the host: the host mm (get_user_pages,
THP, hugetlb, zap, KSM, munmap and mmap) and the memslot ioctls of virt/kvm/kvm_main.c. MS and
DIRTY judge KVM's tables against the host translation and the memslots, so these must be right for
their verdicts to mean anything. The checks are directed and random unit sequences
(proofs/mmu/host_contract.py, proofs/mmu/checks_host_units.py, docs/mmu_host_units.md).
Leaves out: VMA splitting, 16K/64K page-level sequences.
"""

from ptspec.spec.statements import declare

declare("""HOST-MM: the host mm and the memslot ioctls behave as Linux documents them.

Statement: get_user_pages returns -EFAULT without a VMA or for a write to a read-only VMA (nothing
changes); returns a present page as it is; faults in an absent one as a whole hugetlb page (aligned
to its size), a whole THP (when the VMA allows it, the PMD lies inside the VMA and none of its pages
is present) or one small page, always fresh RAM pages; breaks copy-on-write for a write to a KSM
page inside an invalidation of that page; gives vm_pgoff plus the offset for VM_PFNMAP (not RAM);
takes one reference per RAM page. THP split keeps the pfns, inside an invalidation of the PMD; a
zap invalidates and empties its range (widened to whole huge pages in a hugetlb VMA) and nothing
else; a KSM merge gives a fresh read-only pfn with change_pte inside the invalidation; munmap
invalidates and removes the VMA; mmap's refusals change nothing; lookups agree page by page and
distinct pages never share a RAM pfn. __kvm_set_memory_region refuses each bad argument with its
errno and changes nothing then; create / move / flags-only / delete and the dirty bitmap's life,
and kvm_get_dirty_log_protect / kvm_clear_dirty_log_protect, act word by word as kvm_main.c does.

Why: the spec cannot see mistakes in the models it compares KVM against: a host model that kept a
page mapped after MADV_DONTNEED would make a wrong stage 2 look right.

Constrains: get_user_pages, __split_huge_pmd, zap_page_range, __kvm_set_memory_region,
kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect, __gfn_to_pfn_memslot.
""", constrains=("get_user_pages", "__split_huge_pmd", "zap_page_range", "__kvm_set_memory_region",
                 "kvm_get_dirty_log_protect", "kvm_clear_dirty_log_protect", "__gfn_to_pfn_memslot"))
