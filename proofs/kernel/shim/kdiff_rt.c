/*
 * ptspec kdiff runtime: what pgtable.c (Linux 5.15, 5.16-6.1) gets from the rest of the kernel
 * when it runs in userspace under ptspec's differential check. Our own code.
 *
 * - an arena of NPAGES pages at physical address KDIFF_ARENA_BASE (host memory from an anonymous
 *   mapping), a page-indexed refcount array, and the allocation order of impl/pgtable/pool.py: the lowest
 *   free page first; zalloc_pages_exact takes the lowest free run aligned to its power-of-two size;
 * - one memory cache (struct kvm_mmu_memory_cache): a LIFO stack topped up to its capacity;
 * - struct kvm_pgtable_mm_ops over both, phys_to_virt/virt_to_phys mapping arena PAs to host
 *   pointers (any PA maps, so cache maintenance of guest memory can be logged without touching it);
 * - a log of TLB invalidations and cache maintenance, WARN_ONs, and allocator errors;
 * - allocation-failure injection by allocation index, as impl's MmOps.fail_at.
 *
 * One page table per loaded library at a time (the state is global, as the kernel's mm_ops are).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <linux/bitfield.h>
#include <asm/kvm_pgtable.h>

#define KDIFF_ARENA_BASE	0x1000000000ULL
#define KDIFF_LOG_MAX		(1 << 20)
#define KDIFF_MC_MAX		4096
#define KDIFF_FAIL_MAX		16

enum { EV_TLBI_IPA = 1, EV_TLBI_VMID = 2, EV_DCACHE = 3, EV_ICACHE = 4, EV_WARN = 5, EV_ERR = 6 };
enum { PG_FREE = 0, PG_USED = 1, PG_MEMCACHE = 2 };

static unsigned char *arena;
static u64 npages;
static int32_t *refcount;
static uint8_t *pstate;
static u64 lowest_free;
static u64 nr_free;

static u64 logbuf[KDIFF_LOG_MAX][3];
static u64 loglen;
static int log_overflow;

static u64 mc_objs[KDIFF_MC_MAX];
static u64 mc_len, mc_cap = 40;

static u64 nr_allocs;
static u64 fail_at[KDIFF_FAIL_MAX];
static int nr_fail;

static bool has_fwb;
static bool has_xnx;		/* FEAT_XNX: read by 7.1's stage2_set_xn_attr (kdiff_ml_set_xnx) */
static struct kvm_arch kdiff_arch = { .mmu = { .arch = &kdiff_arch } };
#define kdiff_mmu (kdiff_arch.mmu)
static struct kvm_pgtable kdiff_pgt;

static void log_event(u64 kind, u64 a, u64 b)
{
	if (loglen >= KDIFF_LOG_MAX) {
		log_overflow = 1;
		return;
	}
	logbuf[loglen][0] = kind;
	logbuf[loglen][1] = a;
	logbuf[loglen][2] = b;
	loglen++;
}

void kdiff_warn(int line) { log_event(EV_WARN, (u64)line, 0); }

/* hyp stage 1's TLBI by VA at EL2 (linux/kvm_host.h's __tlbi_level); kinds after the 6.2 runtime's */
enum { EV_TLBI_EL2 = 12, EV_TLBI_EL2_LAST = 13 };
void kdiff_tlbi_el2(int last_level, u64 va, u64 level)
{
	log_event(last_level ? EV_TLBI_EL2_LAST : EV_TLBI_EL2, va, level);
}
bool kdiff_has_cap(int cap)
{
	if (cap == ARM64_HAS_STAGE2_FWB)
		return has_fwb;
#ifdef ARM64_HAS_XNX
	if (cap == ARM64_HAS_XNX)
		return has_xnx;
#endif
	return false;
}

void __kvm_tlb_flush_vmid_ipa(struct kvm_s2_mmu *mmu, phys_addr_t ipa, int level)
{
	log_event(EV_TLBI_IPA, ipa, (u64)(s64)level);
}

void __kvm_tlb_flush_vmid(struct kvm_s2_mmu *mmu) { log_event(EV_TLBI_VMID, 0, 0); }

/* -- addresses ------------------------------------------------------------------------------
 * A PA inside the arena is its page there. Any other PA (guest memory a leaf maps, whose cache
 * maintenance is only logged; or a table address a buggy tree computed) becomes a pointer into
 * the trap window: 16 MiB of PROT_NONE pages, one per translation, round robin, whose slot
 * remembers the page's PA. The CMO hooks log such a pointer as its PA (kdiff_virt_to_phys);
 * code that reads or writes through one faults, and the guard (kdiff_guard.c) reports that call
 * (C-RETURNS, with the PA: kdiff_trap_pa) instead of letting it touch the process's own memory.
 * The arena itself lies between two 16 MiB PROT_NONE guards, so running off either end (a table
 * index run away by up to 16 MiB) faults too.
 */
#define KDIFF_TRAP_SLOTS	((16ULL << 20) >> PAGE_SHIFT)	/* a 16 MiB window */
#define KDIFF_GUARD		(16ULL << 20)	/* PROT_NONE bytes before and after the arena */
static unsigned char *trap;
static u64 trap_pa[KDIFF_TRAP_SLOTS];
static u64 trap_next;

static bool in_arena(phys_addr_t pa)
{
	return pa - KDIFF_ARENA_BASE < (npages << PAGE_SHIFT);
}

static void *kdiff_phys_to_virt(phys_addr_t pa)
{
	u64 slot;

	if (in_arena(pa) || !trap)
		return (void *)((uintptr_t)arena + (uintptr_t)(pa - KDIFF_ARENA_BASE));
	slot = trap_next++ % KDIFF_TRAP_SLOTS;
	trap_pa[slot] = pa & ~(u64)(PAGE_SIZE - 1);
	return trap + (slot << PAGE_SHIFT) + (pa & (PAGE_SIZE - 1));
}

/* the PA behind a pointer into the trap window or into the PROT_NONE page before or after the
 * arena (what a fault address means), or ~0 */
u64 kdiff_trap_pa(u64 va)
{
	u64 off = va - (u64)(uintptr_t)trap;
	u64 near = va - ((u64)(uintptr_t)arena - KDIFF_GUARD);

	if (trap && off < ((u64)KDIFF_TRAP_SLOTS << PAGE_SHIFT))
		return trap_pa[off >> PAGE_SHIFT] + (off & (PAGE_SIZE - 1));
	if (arena && near < (npages << PAGE_SHIFT) + 2 * KDIFF_GUARD &&
	    (near < KDIFF_GUARD || near >= (npages << PAGE_SHIFT) + KDIFF_GUARD))
		return KDIFF_ARENA_BASE - KDIFF_GUARD + near;
	return ~0ULL;
}

static phys_addr_t kdiff_virt_to_phys(void *va)
{
	u64 pa = kdiff_trap_pa((u64)(uintptr_t)va);

	if (pa != ~0ULL)
		return pa;
	return (phys_addr_t)((uintptr_t)va - (uintptr_t)arena) + KDIFF_ARENA_BASE;
}

/* page index of a host pointer inside the arena, or -1 (an error is logged) */
static int64_t page_index(void *va, const char *what)
{
	uintptr_t off = (uintptr_t)va - (uintptr_t)arena;

	if ((uintptr_t)va < (uintptr_t)arena || (off >> PAGE_SHIFT) >= npages) {
		log_event(EV_ERR, 1, kdiff_virt_to_phys(va));
		return -1;
	}
	return (int64_t)(off >> PAGE_SHIFT);
}

/* -- the arena -------------------------------------------------------------------------------- */
static void take(u64 i)
{
	pstate[i] = PG_USED;
	refcount[i] = 1;
	nr_free--;
	memset(arena + (i << PAGE_SHIFT), 0, PAGE_SIZE);
}

static void release(u64 i)
{
	pstate[i] = PG_FREE;
	refcount[i] = 0;
	nr_free++;
	if (i < lowest_free)
		lowest_free = i;
}

static int64_t alloc_page(void)
{
	u64 i;

	for (i = lowest_free; i < npages; i++) {
		if (pstate[i] == PG_FREE) {
			take(i);
			lowest_free = i + 1;
			return (int64_t)i;
		}
	}
	lowest_free = npages;
	return -1;
}

static int64_t alloc_pages_exact(u64 n)
{
	u64 order = 1, start, j;

	while (order < n)
		order <<= 1;
	for (start = 0; start + n <= npages; start += order) {
		for (j = 0; j < n && pstate[start + j] == PG_FREE; j++)
			;
		if (j == n) {
			for (j = 0; j < n; j++)
				take(start + j);
			while (lowest_free < npages && pstate[lowest_free] != PG_FREE)
				lowest_free++;
			return (int64_t)start;
		}
	}
	return -1;
}

static bool inject(void)
{
	u64 n = nr_allocs++;
	int k;

	for (k = 0; k < nr_fail; k++)
		if (fail_at[k] == n)
			return true;
	return false;
}

/* -- mm_ops --------------------------------------------------------------------------------- */
static void *mm_zalloc_page(void *mc)
{
	if (inject())
		return NULL;
	if (!mc) {
		int64_t i = alloc_page();
		return i < 0 ? NULL : (void *)(arena + ((u64)i << PAGE_SHIFT));
	}
	if (!mc_len) {
		log_event(EV_ERR, 2, 0);	/* empty memcache: NULL, as the pKVM allocator */
		return NULL;
	}
	mc_len--;
	pstate[(mc_objs[mc_len] - KDIFF_ARENA_BASE) >> PAGE_SHIFT] = PG_USED;
	return kdiff_phys_to_virt(mc_objs[mc_len]);
}

static void *mm_zalloc_pages_exact(size_t size)
{
	int64_t i;

	if (inject())
		return NULL;
	i = alloc_pages_exact(size >> PAGE_SHIFT);
	return i < 0 ? NULL : (void *)(arena + ((u64)i << PAGE_SHIFT));
}

static void mm_put_page(void *addr)
{
	int64_t i = page_index(addr, "put_page");

	if (i < 0)
		return;
	if (pstate[i] == PG_FREE) {
		log_event(EV_ERR, 3, KDIFF_ARENA_BASE + ((u64)i << PAGE_SHIFT));
		return;
	}
	if (refcount[i] <= 0) {
		log_event(EV_ERR, 4, KDIFF_ARENA_BASE + ((u64)i << PAGE_SHIFT));
		return;
	}
	if (--refcount[i] == 0)
		release((u64)i);
}

static void mm_get_page(void *addr)
{
	int64_t i = page_index(addr, "get_page");

	if (i < 0)
		return;
	if (pstate[i] == PG_FREE) {
		log_event(EV_ERR, 5, KDIFF_ARENA_BASE + ((u64)i << PAGE_SHIFT));
		return;
	}
#ifdef KDIFF_PLANT_ROOT_REF
	/* planted bug (tests only): references to the arena's first page are not taken */
	if (i == 0)
		return;
#endif
	refcount[i]++;
}

static int mm_page_count(void *addr)
{
	int64_t i = page_index(addr, "page_count");

	return i < 0 ? 0 : refcount[i];
}

static void mm_free_pages_exact(void *addr, size_t size)
{
	u64 k;

	for (k = 0; k < (size >> PAGE_SHIFT); k++)
		mm_put_page((unsigned char *)addr + (k << PAGE_SHIFT));
}

static __attribute__((unused)) void mm_dcache(void *addr, size_t size)
{
	log_event(EV_DCACHE, kdiff_virt_to_phys(addr), size);
}

static __attribute__((unused)) void mm_icache(void *addr, size_t size)
{
	log_event(EV_ICACHE, kdiff_virt_to_phys(addr), size);
}

static struct kvm_pgtable_mm_ops kdiff_mm_ops = {
	.zalloc_page		= mm_zalloc_page,
	.zalloc_pages_exact	= mm_zalloc_pages_exact,
	.free_pages_exact	= mm_free_pages_exact,
	.get_page		= mm_get_page,
	.put_page		= mm_put_page,
	.page_count		= mm_page_count,
	.phys_to_virt		= kdiff_phys_to_virt,
	.virt_to_phys		= kdiff_virt_to_phys,
};

/* -- the interface the Python side drives ----------------------------------------------------- */
int kdiff_page_shift(void) { return PAGE_SHIFT; }
int kdiff_parange_max(void) { return KDIFF_PARANGE_MAX; }

/* a fresh arena of n pages, empty log and memcache; returns 0 or -ENOMEM */
int kdiff_reset(u64 n, int fwb, int cmo, u64 mc_capacity)
{
	unsigned char *region;

	if (arena)
		munmap(arena - KDIFF_GUARD, (npages << PAGE_SHIFT) + 2 * KDIFF_GUARD);
	free(refcount);
	free(pstate);
	if (!trap) {
		trap = mmap(NULL, (u64)KDIFF_TRAP_SLOTS << PAGE_SHIFT, PROT_NONE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (trap == MAP_FAILED)
			trap = NULL;
	}
	/* the arena's pages, between two PROT_NONE guards */
	region = mmap(NULL, (n << PAGE_SHIFT) + 2 * KDIFF_GUARD, PROT_NONE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	arena = region == MAP_FAILED ? MAP_FAILED : region + KDIFF_GUARD;
	if (arena != MAP_FAILED && n &&
	    mprotect(arena, n << PAGE_SHIFT, PROT_READ | PROT_WRITE)) {
		munmap(region, (n << PAGE_SHIFT) + 2 * KDIFF_GUARD);
		arena = MAP_FAILED;
	}
	refcount = calloc(n, sizeof(*refcount));
	pstate = calloc(n, 1);
	if (arena == MAP_FAILED || !refcount || !pstate || mc_capacity > KDIFF_MC_MAX) {
		arena = NULL;
		npages = 0;
		return -ENOMEM;
	}
	npages = n;
	nr_free = n;
	lowest_free = 0;
	loglen = 0;
	log_overflow = 0;
	mc_len = 0;
	mc_cap = mc_capacity;
	nr_allocs = 0;
	nr_fail = 0;
	has_fwb = fwb;
	has_xnx = false;
#ifndef KDIFF_NO_MM_CMO	/* 5.13's mm_ops has no cache-maintenance hooks */
	kdiff_mm_ops.dcache_clean_inval_poc = cmo ? mm_dcache : NULL;
	kdiff_mm_ops.icache_inval_pou = cmo ? mm_icache : NULL;
#endif
	memset(&kdiff_pgt, 0, sizeof(kdiff_pgt));
	kdiff_mmu.pgt = &kdiff_pgt;
	return 0;
}

/* a force_pte_cb that asks for page mappings everywhere */
static bool kdiff_force_all(u64 addr, u64 end, enum kvm_pgtable_prot prot)
{
	return true;
}

/*
 * kvm_get_vtcr for ia_bits on a CPU with the largest PARange, then __kvm_pgtable_stage2_init
 * (given the mmu from 5.16 on, the kvm_arch in 5.15: -DKDIFF_INIT_ARCH), or 5.14's
 * kvm_pgtable_stage2_init_flags (-DKDIFF_INIT_FLAGS); force_pte selects the force_pte_cb (none,
 * or one that always forces pages)
 */
int kdiff_init(u32 ia_bits, u32 flags, int force_pte)
{
	kdiff_arch.vtcr = kvm_get_vtcr(KDIFF_PARANGE_MAX, 0, ia_bits);
#if defined(KDIFF_INIT_FLAGS)
	/* 5.14: kvm_pgtable_stage2_init_flags(pgt, arch, mm_ops, flags); no force_pte_cb to give */
	if (force_pte)
		return -EINVAL;
	return kvm_pgtable_stage2_init_flags(&kdiff_pgt, &kdiff_arch, &kdiff_mm_ops, flags);
#elif defined(KDIFF_INIT_ARCH)
	/* 5.15: __kvm_pgtable_stage2_init(pgt, arch, mm_ops, flags, force_pte_cb) */
	return __kvm_pgtable_stage2_init(&kdiff_pgt, &kdiff_arch, &kdiff_mm_ops, flags,
					 force_pte ? kdiff_force_all : NULL);
#else
	return __kvm_pgtable_stage2_init(&kdiff_pgt, &kdiff_mmu, &kdiff_mm_ops, flags,
					 force_pte ? kdiff_force_all : NULL);
#endif
}

struct kvm_pgtable *kdiff_pgtable(void) { return &kdiff_pgt; }
void *kdiff_memcache(void) { return (void *)mc_objs; }
u64 kdiff_vtcr(void) { return kdiff_arch.vtcr; }
u32 kdiff_start_level(void) { return kdiff_pgt.start_level; }
u32 kdiff_ia_bits(void) { return kdiff_pgt.ia_bits; }
u64 kdiff_pgd_pa(void) { return kdiff_pgt.pgd ? kdiff_virt_to_phys(kdiff_pgt.pgd) : 0; }

/* kvm_mmu_topup_memory_cache: once below min, fill to capacity from the arena */
int kdiff_topup(u64 min)
{
	if (mc_len >= min)
		return 0;
	while (mc_len < mc_cap) {
		int64_t i = alloc_page();

		if (i < 0)
			return mc_len >= min ? 0 : -ENOMEM;
		pstate[i] = PG_MEMCACHE;
		mc_objs[mc_len++] = KDIFF_ARENA_BASE + ((u64)i << PAGE_SHIFT);
	}
	return 0;
}

/* kvm_mmu_free_memory_cache */
void kdiff_memcache_free(void)
{
	while (mc_len) {
		u64 i = (mc_objs[--mc_len] - KDIFF_ARENA_BASE) >> PAGE_SHIFT;

		if (refcount[i] != 1)
			log_event(EV_ERR, 7, KDIFF_ARENA_BASE + (i << PAGE_SHIFT));
		release(i);
	}
}

u64 kdiff_memcache_len(void) { return mc_len; }
u64 *kdiff_memcache_objs(void) { return mc_objs; }

void kdiff_fail_at(u64 n)
{
	if (nr_fail < KDIFF_FAIL_MAX)
		fail_at[nr_fail++] = n;
}
void kdiff_fail_clear(void) { nr_fail = 0; nr_allocs = 0; }

unsigned char *kdiff_arena(void) { return arena; }
int32_t *kdiff_refcounts(void) { return refcount; }
uint8_t *kdiff_page_states(void) { return pstate; }
u64 kdiff_npages(void) { return npages; }
u64 kdiff_free_pages(void) { return nr_free; }

u64 *kdiff_log(void) { return &logbuf[0][0]; }
u64 kdiff_log_len(void) { return loglen; }
int kdiff_log_overflowed(void) { return log_overflow; }
void kdiff_log_clear(void) { loglen = 0; }

#ifdef KDIFF_INIT_FLAGS
/*
 * 5.14 has no kvm_pgtable_get_leaf: the same lookup through its public walker, a leaf visitor
 * over the one page at addr that keeps the entry and level it is called with.
 */
struct kdiff_leaf { kvm_pte_t pte; u32 level; };

static int kdiff_leaf_cb(u64 addr, u64 end, u32 level, kvm_pte_t *ptep,
			 enum kvm_pgtable_walk_flags flag, void * const arg)
{
	struct kdiff_leaf *out = arg;

	out->pte = *ptep;
	out->level = level;
	return 0;
}

int kdiff_get_leaf(u64 addr, u64 *pte, u32 *level)
{
	struct kdiff_leaf out = { 0, 0 };
	struct kvm_pgtable_walker walker = {
		.cb	= kdiff_leaf_cb,
		.arg	= &out,
		.flags	= KVM_PGTABLE_WALK_LEAF,
	};
	int ret = kvm_pgtable_walk(&kdiff_pgt, ALIGN_DOWN(addr, PAGE_SIZE), PAGE_SIZE, &walker);

	if (!ret) {
		if (pte)
			*pte = out.pte;
		if (level)
			*level = out.level;
	}
	return ret;
}
#elif !defined(KDIFF_MAINLINE)	/* 6.2 on: kdiff_mainline_rt.c has its own */
/* kvm_pgtable_get_leaf with its outputs in one call */
int kdiff_get_leaf(u64 addr, u64 *pte, u32 *level)
{
	return kvm_pgtable_get_leaf(&kdiff_pgt, addr, pte, level);
}
#endif

/* 5.14's stage-2 unmap and flush call the kernel's dcache_clean_inval_poc(start, end) directly */
void dcache_clean_inval_poc(unsigned long start, unsigned long end)
{
	log_event(EV_DCACHE, kdiff_virt_to_phys((void *)start), end - start);
}

/* 5.13's name for the same clean (by address and length) */
void __flush_dcache_area(void *addr, size_t len)
{
	log_event(EV_DCACHE, kdiff_virt_to_phys(addr), len);
}

/*
 * -- additions for the C-side engines (proofs/kernel/replay.py, errorpaths.py, hyp.py) ----------
 * Allocation calls counted since the last kdiff_fail_clear (the error-path engine counts a call's
 * allocations, then fails each in turn), and one hyp stage-1 table (EL2's own) over the same arena
 * and mm_ops: kvm_pgtable_hyp_init/map/destroy (and kvm_pgtable_hyp_unmap where the tree has it)
 * are called on it directly.
 */
u64 kdiff_nr_allocs(void) { return nr_allocs; }

static struct kvm_pgtable kdiff_hyp_pgt;

int kdiff_hyp_init(u32 va_bits)
{
	memset(&kdiff_hyp_pgt, 0, sizeof(kdiff_hyp_pgt));
	return kvm_pgtable_hyp_init(&kdiff_hyp_pgt, va_bits, &kdiff_mm_ops);
}

struct kvm_pgtable *kdiff_hyp_pgtable(void) { return &kdiff_hyp_pgt; }
u32 kdiff_hyp_start_level(void) { return kdiff_hyp_pgt.start_level; }
u64 kdiff_hyp_pgd_pa(void) { return kdiff_hyp_pgt.pgd ? kdiff_virt_to_phys(kdiff_hyp_pgt.pgd) : 0; }
