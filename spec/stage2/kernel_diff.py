"""The kernel-differential statements KD-*: impl's pgtable.c does what the kernel's own C does.

Models, for arch/arm64/kvm/hyp/pgtable.c, what "the same as the kernel" means word for word: the
kernel's pgtable.c (Linux 6.1, compiled in userspace against ptspec's shim headers) and impl under
the 6.1 profile, built with the same geometry, allocator and memcache, given the same call, must
end in the same raw state and say the same things on the way. ``proofs/kernel/pair.py`` compares
the two sides (``Pair.compare``) and reports each kind of difference under one of these ids; a
difference that a released kernel really shows is a catalogued finding (proofs/kernel/catalogue.py)
with the kernel versions that show it. Leaves out: timing, and everything the spec already judges
on the C side (S2-*, C-*).
"""

from ptspec.spec.statements import declare

VERSIONS = ("differential against Linux 6.1 pgtable.c; impl's 5.12-5.15 profiles differ where "
            "proofs/kernel/catalogue.py lists it")


declare("""KD-RET: every call returns what the kernel's call returns.

Statement: after the same call on both sides, the return value is the same, and so is every output
the call hands back (the descriptor and level of kvm_pgtable_get_leaf, the old descriptor of
mkyoung / mkold, the young answer of is_young).

Why: KVM's callers act on these values (retry on -EAGAIN, give up on -ENOMEM, age a page on young);
a different answer is a different hypervisor even when the tables agree.

Constrains: kvm_pgtable_walk (the walk's error), stage2_map_walker_try_leaf (-EAGAIN),
kvm_pgtable_get_leaf, kvm_pgtable_stage2_mkyoung, kvm_pgtable_stage2_relax_perms,
kvm_pgtable_stage2_set_owner.
""", constrains=("kvm_pgtable_walk", "stage2_map_walker_try_leaf", "kvm_pgtable_get_leaf",
                 "kvm_pgtable_stage2_mkyoung", "kvm_pgtable_stage2_relax_perms",
                 "kvm_pgtable_stage2_set_owner"), kernel_versions=VERSIONS)

declare("""KD-PAGES: the same pages are in use, in the same roles.

Statement: after every call both sides have the same table pages in use, the same root pages, the
same pages in the memcache in the same order, and the same number of free pool pages.

Why: the allocator is deterministic (lowest free page first), so a different page set means a
different number of allocations or frees: a leak, a double free, or a table the kernel would not
have built.

Constrains: stage2_map_walk_leaf (taking pages from the memcache), stage2_unmap_walker and
stage2_map_walk_table_post (freeing tables), stage2_free_walker, __kvm_pgtable_stage2_init.
""", constrains=("stage2_map_walk_leaf", "stage2_unmap_walker", "stage2_map_walk_table_post",
                 "stage2_free_walker", "__kvm_pgtable_stage2_init"), kernel_versions=VERSIONS)

declare("""KD-WORDS: every descriptor word is the kernel's word.

Statement: after every call every 64-bit word of every table page in use is the same on both sides
(attributes, software bits, owner annotations and table descriptors included).

Why: the spec judges translations; this judges encodings the spec allows several of (e.g. which
SH or software bits a leaf carries), which the hardware and the rest of KVM still read.

Constrains: stage2_set_prot_attr, kvm_init_valid_leaf_pte, kvm_init_invalid_leaf_owner,
kvm_set_table_pte, stage2_map_walker_try_leaf, stage2_attr_walker.
""", constrains=("stage2_set_prot_attr", "kvm_init_valid_leaf_pte", "kvm_init_invalid_leaf_owner",
                 "kvm_set_table_pte", "stage2_map_walker_try_leaf", "stage2_attr_walker"),
        kernel_versions=VERSIONS)

declare("""KD-RC: every page's refcount is the kernel's.

Statement: after every call every table page in use has the same page_count() on both sides.

Why: S2-RC allows only one count per tree, but a model can reach the same tree with a different
history of gets and puts; equal counts after every call pin the history to the kernel's.

Constrains: stage2_map_walker_try_leaf, stage2_put_pte, stage2_map_walk_leaf,
stage2_unmap_walker, stage2_free_walker.
""", constrains=("stage2_map_walker_try_leaf", "stage2_put_pte", "stage2_map_walk_leaf",
                 "stage2_unmap_walker", "stage2_free_walker"), kernel_versions=VERSIONS)

declare("""KD-TLB: the same TLB invalidations and cache maintenance, in the same order.

Statement: the events a call logs (TLB invalidation by IPA with its level hint, of the whole VMID,
D-cache clean, I-cache invalidation, each with its range) are the same on both sides, in order.

Why: S2-BBM and C-CMO judge whether enough maintenance happened; this catches maintenance that is
different from the kernel's (a wrong level hint, a missing or extra invalidation the spec allows).

Constrains: stage2_put_pte, stage2_map_walker_try_leaf, stage2_unmap_walker,
kvm_pgtable_stage2_relax_perms, stage2_flush_walker.
""", constrains=("stage2_put_pte", "stage2_map_walker_try_leaf", "stage2_unmap_walker",
                 "kvm_pgtable_stage2_relax_perms", "stage2_flush_walker"), kernel_versions=VERSIONS)

declare("""KD-WARN: the same WARN_ONs and allocator complaints.

Statement: both sides raise the same WARN_ONs, take from an empty memcache at the same calls, and
report the same page allocator errors.

Why: a WARN or an allocator error the kernel does not raise is a state the kernel never reaches;
one it raises and impl does not is a broken state impl hides.

Constrains: kvm_set_table_pte, __kvm_pgtable_visit, stage2_map_walk_leaf,
kvm_pgtable_stage2_destroy.
""", constrains=("kvm_set_table_pte", "__kvm_pgtable_visit", "stage2_map_walk_leaf",
                 "kvm_pgtable_stage2_destroy"), kernel_versions=VERSIONS)
