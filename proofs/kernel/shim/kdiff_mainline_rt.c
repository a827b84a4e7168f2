/*
 * ptspec kdiff runtime for the reworked stage-2 walker (Linux 6.2 and later): the runtime of
 * kdiff_rt.c (arena, memcache, mm_ops, event log) plus what 6.3-7.x pgtable.c needs from the rest
 * of the kernel, and one entry point per operation whose C signature changed across versions, so
 * the Python side (ptspec.proofs.kernel.cside_mainline) drives every version the same way. Our
 * own code.
 *
 * Built with -DKDIFF_MAINLINE and the shape's symbols (ptspec.proofs.kernel.tree_mainline):
 *   KDIFF_ML_FREE_REMOVED  mm_ops->free_removed_table / kvm_pgtable_stage2_free_removed (6.2-6.4);
 *                          otherwise free_unlinked_table / kvm_pgtable_stage2_free_unlinked
 *   KDIFF_ML_LEVEL_S8      levels are s8 (6.8 on)
 *   KDIFF_ML_MKOLD         kvm_pgtable_stage2_mkold and _is_young exist (before 6.5); otherwise
 *                          kvm_pgtable_stage2_test_clear_young
 *   KDIFF_ML_SPLIT         kvm_pgtable_stage2_split exists (6.5 on)
 *
 * Single-threaded meaning (see kdiff_mainline.h): an unlinked table is freed at once (the host
 * defers it past an RCU grace period with call_rcu), stage2_try_set_pte always wins.
 */
#include "kdiff_rt.c"

#ifdef KDIFF_ML_LEVEL_S8
typedef s8 kdiff_level_t;
#else
typedef u32 kdiff_level_t;
#endif

enum { EV_TLBI_RANGE = 7, EV_TLBI_NSH = 8, EV_LOCK = 9, EV_FREE_UNLINKED = 10, EV_FREED = 11 };

/* one event per range; the kernel's loop over MAX_TLBI_RANGE_PAGES chunks is merged back into
   one event when a chunk starts where the previous one ended (same addresses invalidated). The
   event is what the hardware invalidates: the hyp's handler (nvhe and vhe tlb.c) takes its stride
   as PAGE_SIZE and rounds start down to it before the range TLBIs, so `pages` pages from the
   page holding start (an unaligned start does not shift the range up by its offset) */
void __kvm_tlb_flush_vmid_range(struct kvm_s2_mmu *mmu, phys_addr_t start, unsigned long pages)
{
	start &= ~((phys_addr_t)PAGE_SIZE - 1);
	if (loglen && logbuf[loglen - 1][0] == EV_TLBI_RANGE &&
	    logbuf[loglen - 1][1] + (logbuf[loglen - 1][2] << PAGE_SHIFT) == start) {
		logbuf[loglen - 1][2] += pages;
		return;
	}
	log_event(EV_TLBI_RANGE, start, pages);
}

void __kvm_tlb_flush_vmid_ipa_nsh(struct kvm_s2_mmu *mmu, phys_addr_t ipa, int level)
{
	log_event(EV_TLBI_NSH, ipa, (u64)(s64)level);
}

/* a descriptor stored by cmpxchg: the locked-PTE marker's stores are logged (the marker is one
   value, KVM_INVALID_PTE_LOCKED; it is matched with the valid bit ignored, so a marker stored as
   valid is seen too; a valid leaf whose AF is bit 10 is not the marker) */
static u64 lock_bits, lock_mask;

void kdiff_ml_store(void *ptep, u64 new_pte)
{
	if (lock_mask && (new_pte & ~1ULL) == lock_bits)
		log_event(EV_LOCK, kdiff_virt_to_phys(ptep), new_pte);
}

/* the marker as the tree defines it: the value `bits` (mask: where its field lies) */
void kdiff_ml_set_lock_marker(u64 mask, u64 bits)
{
	lock_mask = mask;
	lock_bits = bits;
}

/* the memcache as pgtable.c sees it: nobjs follows the shim's stack */
static struct kvm_mmu_memory_cache *ml_mc(int use_mc)
{
	if (!use_mc)
		return NULL;
	kdiff_mmu.split_page_cache.nobjs = (int)mc_len;
	return &kdiff_mmu.split_page_cache;
}

static void *ml_zalloc_page(void *mc)
{
	void *p = mm_zalloc_page(mc);

	kdiff_mmu.split_page_cache.nobjs = (int)mc_len;
	return p;
}

/* the host's free_unlinked hook (mmu.c defers it past an RCU grace period; here: at once) */
static void ml_free_unlinked(void *addr, kdiff_level_t level)
{
	log_event(EV_FREE_UNLINKED, kdiff_virt_to_phys(addr), (u64)(s64)level);
#ifdef KDIFF_ML_FREE_REMOVED
	kvm_pgtable_stage2_free_removed(&kdiff_mm_ops, addr, level);
#else
	kvm_pgtable_stage2_free_unlinked(&kdiff_mm_ops, addr, level);
#endif
}

/* put_page, logging the page whose last reference it drops (its order against the TLBIs) */
static void ml_put_page(void *addr)
{
	uintptr_t off = (uintptr_t)addr - (uintptr_t)arena;

	if ((uintptr_t)addr >= (uintptr_t)arena && (off >> PAGE_SHIFT) < npages &&
	    pstate[off >> PAGE_SHIFT] == PG_USED && refcount[off >> PAGE_SHIFT] == 1)
		log_event(EV_FREED, kdiff_virt_to_phys(addr), 0);
	mm_put_page(addr);
}

/* kdiff_reset, then the hooks the reworked walker needs */
int kdiff_ml_reset(u64 n, int fwb, int cmo, u64 mc_capacity)
{
	int ret = kdiff_reset(n, fwb, cmo, mc_capacity);

	kdiff_mm_ops.zalloc_page = ml_zalloc_page;
	kdiff_mm_ops.put_page = ml_put_page;
#ifdef KDIFF_ML_FREE_REMOVED
	kdiff_mm_ops.free_removed_table = ml_free_unlinked;
#else
	kdiff_mm_ops.free_unlinked_table = ml_free_unlinked;
#endif
	kdiff_mmu.split_page_cache.nobjs = 0;
	return ret;
}

/* the CPU has FEAT_XNX (cpus_have_final_cap(ARM64_HAS_XNX)); kdiff_reset clears it */
void kdiff_ml_set_xnx(int on)
{
	has_xnx = on;
}

int kdiff_ml_init(u32 ia_bits, u32 flags, int force_pte)
{
	kdiff_arch.vtcr = kvm_get_vtcr(KDIFF_PARANGE_MAX, 0, ia_bits);
	kdiff_mmu.vtcr = kdiff_arch.vtcr;
	return __kvm_pgtable_stage2_init(&kdiff_pgt, &kdiff_mmu, &kdiff_mm_ops, flags,
					 force_pte ? kdiff_force_all : NULL);
}

int kdiff_ml_map(u64 addr, u64 size, u64 phys, u64 prot, int use_mc, u32 walk_flags)
{
	return kvm_pgtable_stage2_map(&kdiff_pgt, addr, size, phys, prot, ml_mc(use_mc), walk_flags);
}

#ifdef KDIFF_ML_ANNOTATE
/* 7.x: set_owner became kvm_pgtable_stage2_annotate (a type and an annotation): the Python side
 * drives it through kdiff_ml_annotate with the ownership type and the owner id placed */
int kdiff_ml_set_owner(u64 addr, u64 size, int use_mc, u8 owner_id) { return -ENOSYS; }

int kdiff_ml_annotate(u64 addr, u64 size, int use_mc, int type, u64 annotation)
{
	return kvm_pgtable_stage2_annotate(&kdiff_pgt, addr, size, ml_mc(use_mc), type, annotation);
}
#else
int kdiff_ml_set_owner(u64 addr, u64 size, int use_mc, u8 owner_id)
{
	return kvm_pgtable_stage2_set_owner(&kdiff_pgt, addr, size, ml_mc(use_mc), owner_id);
}
#endif

/* mkyoung: 6.13 on it returns nothing (KDIFF_ML_MKYOUNG_VOID); 6.18 on it and relax_perms also
 * take walk flags (KDIFF_ML_WALK_FLAGS_API): the shim passes what the fault path (mmu.c's
 * user_mem_abort, handle_access_fault) passes as far as a single-threaded walk can tell: in 6.18
 * KVM_PGTABLE_WALK_HANDLE_FAULT (KDIFF_ML_HANDLE_FAULT), so that a visitor's -EAGAIN ends the walk
 * and is returned; from 6.19 -EAGAIN ends a walk unless the caller asks otherwise (IGNORE_EAGAIN),
 * so nothing. (pKVM's mem_protect.c passes 0: in 6.18 its relax_perms then returns 0 where there
 * is no valid leaf; the spec states the fault path's -EAGAIN.) */
#if defined(KDIFF_ML_WALK_FLAGS_API) && defined(KDIFF_ML_HANDLE_FAULT)
#define KDIFF_ML_FLAGS_ARG , KVM_PGTABLE_WALK_HANDLE_FAULT
#elif defined(KDIFF_ML_WALK_FLAGS_API)
#define KDIFF_ML_FLAGS_ARG , 0
#else
#define KDIFF_ML_FLAGS_ARG
#endif

u64 kdiff_ml_mkyoung(u64 addr)
{
#if defined(KDIFF_ML_MKYOUNG_VOID) || defined(KDIFF_ML_WALK_FLAGS_API)
	kvm_pgtable_stage2_mkyoung(&kdiff_pgt, addr KDIFF_ML_FLAGS_ARG);
	return 0;
#else
	return kvm_pgtable_stage2_mkyoung(&kdiff_pgt, addr);
#endif
}

int kdiff_ml_relax_perms(u64 addr, u64 prot)
{
	return kvm_pgtable_stage2_relax_perms(&kdiff_pgt, addr, prot KDIFF_ML_FLAGS_ARG);
}

#ifdef KDIFF_ML_MKOLD
u64 kdiff_ml_mkold(u64 addr) { return kvm_pgtable_stage2_mkold(&kdiff_pgt, addr); }
int kdiff_ml_is_young(u64 addr) { return kvm_pgtable_stage2_is_young(&kdiff_pgt, addr); }
int kdiff_ml_test_clear_young(u64 addr, u64 size, int mkold) { return -ENOSYS; }
#else
u64 kdiff_ml_mkold(u64 addr) { return 0; }
int kdiff_ml_is_young(u64 addr) { return -ENOSYS; }
int kdiff_ml_test_clear_young(u64 addr, u64 size, int mkold)
{
	return kvm_pgtable_stage2_test_clear_young(&kdiff_pgt, addr, size, mkold);
}
#endif

#ifdef KDIFF_ML_SPLIT
int kdiff_ml_split(u64 addr, u64 size, int use_mc)
{
	return kvm_pgtable_stage2_split(&kdiff_pgt, addr, size, ml_mc(use_mc));
}
#else
int kdiff_ml_split(u64 addr, u64 size, int use_mc) { return -ENOSYS; }
#endif

int kdiff_get_leaf(u64 addr, u64 *pte, u32 *level)
{
	kdiff_level_t lv = 0;
	int ret = kvm_pgtable_get_leaf(&kdiff_pgt, addr, pte, &lv);

	if (level)
		*level = (u32)(s32)lv;
	return ret;
}
