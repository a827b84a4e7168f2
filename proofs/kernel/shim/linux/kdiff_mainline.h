/*
 * ptspec kdiff shim, reworked walker (Linux 6.2 and later): the extra kernel definitions that
 * pgtable.c and asm/kvm_pgtable.h of 6.3-7.x use, for a single-threaded userspace build. Our own
 * code; included at the end of linux/kvm_host.h when the build defines KDIFF_MAINLINE.
 *
 * What the single-threaded meaning hides (see docs/kernel-mainline.md):
 * - RCU: rcu_dereference is a plain load, rcu_read_lock/unlock do nothing and call_rcu is not
 *   needed (the shim frees an unlinked table at once, through mm_ops->free_unlinked_table). A
 *   concurrent walker that still holds a pointer into a freed table (use after free) cannot be
 *   seen here;
 * - atomics: cmpxchg is a compare-and-store that always sees the value the walker just read, so
 *   a lost race (stage2_try_set_pte failing, -EAGAIN from a shared walk) never happens, and a
 *   locked PTE is never observed by another walker; what a concurrent walker would see between
 *   the lock and the unlock is checked instead by the S2-LOCKED statement on the states between
 *   steps, and by the shim logging every store of a locked marker (kdiff_mainline_rt.c);
 * - barriers (dsb/isb, smp_store_release) are no-ops, so ordering bugs are invisible.
 */
#ifndef KDIFF_SHIM_MAINLINE_H
#define KDIFF_SHIM_MAINLINE_H

typedef int8_t s8;
typedef int16_t s16;
typedef u64 kvm_pfn_t;

#define __rcu
#define __phys_to_pfn(pa)		((kvm_pfn_t)((pa) >> PAGE_SHIFT))
#define rcu_dereference_check(p, c)	(p)
#define rcu_dereference_raw(p)		(p)
#define rcu_read_lock()			do { } while (0)
#define rcu_read_unlock()		do { } while (0)
#define rcu_read_lock_held()		1
#define unlikely(x)			(x)
#define likely(x)			(x)
#define fallthrough			do { } while (0)

/* every compare-and-store of a descriptor is reported to the shim (kdiff_mainline_rt.c keeps
   those that store a locked-PTE marker, for S2-LOCKED) */
void kdiff_ml_store(void *ptep, u64 new_pte);
#define cmpxchg(ptr, o, n)	({ __typeof__(*(ptr)) __old = *(ptr); \
				   if (__old == (o)) { *(ptr) = (n); kdiff_ml_store((void *)(ptr), (u64)(n)); } \
				   __old; })
/* plain descriptor stores (WRITE_ONCE, smp_store_release) are reported the same way: a
   non-shared walk breaks a PTE with WRITE_ONCE, not cmpxchg */
#undef WRITE_ONCE
#define WRITE_ONCE(x, v)	do { __typeof__(x) __w = (v); *(volatile __typeof__(x) *)&(x) = __w; \
				     if (sizeof(x) == 8) kdiff_ml_store((void *)&(x), (u64)__w); \
				} while (0)
#define xchg(ptr, n)		({ __typeof__(*(ptr)) __old = *(ptr); *(ptr) = (n); __old; })

#define min(a, b)		((a) < (b) ? (a) : (b))
#define max(a, b)		((a) > (b) ? (a) : (b))
#define min_t(t, a, b)		((t)(a) < (t)(b) ? (t)(a) : (t)(b))
#define max_t(t, a, b)		((t)(a) > (t)(b) ? (t)(a) : (t)(b))
#define BUG_ON(c)		do { if (c) kdiff_warn(-__LINE__); } while (0)
#define WARN_ON_ONCE(cond)	WARN_ON(cond)
#define __always_inline		inline
#define __maybe_unused		__attribute__((unused))
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
#define DIV_ROUND_UP(n, d)	(((n) + (d) - 1) / (d))
#define BITS_PER_LONG		64

/* capabilities and configuration of 6.x (the shim's answers: not hVHE, no BTI, no LPA2) */
#define ARM64_KVM_HVHE			3
#define CONFIG_ARM64_BTI_KERNEL		0
#define CONFIG_ARM64_PA_BITS_52		(KDIFF_PARANGE_MAX == 6)
#define ID_AA64MMFR0_EL1_PARANGE_48	5
#define ID_AA64MMFR0_EL1_PARANGE_52	6
#define IS_ENABLED(x)			(x)
static inline bool kvm_lpa2_is_enabled(void) { return false; }
static inline bool system_supports_lpa2(void) { return false; }
static inline bool system_supports_tlb_range(void) { return true; }
#define system_supports_bti_kernel()	false

/*
 * range TLB invalidation (6.6 on): the architecture's largest range per TLBI is 32 << 16 pages,
 * and kvm_tlb_flush_vmid_range loops in chunks of it. The shim logs one event per contiguous
 * range anyway (kdiff_mainline_rt.c merges chunks), so it lets one chunk cover any range: the
 * addresses invalidated are the same, the loop does not run 2**31 times for a wrapped size (the
 * count of TLBI instructions is what this hides).
 */
#define MAX_TLBI_RANGE_PAGES		(~0UL >> 1)

/* TLBI without a level hint (6.12 on use it for tables): the kernel's value */
#define TLBI_TTL_UNKNOWN		0x7fffffff
#define VTCR_EL2_DS			(1ULL << 32)
#define MT_S2_NORMAL_NC			0x5
#define MT_S2_FWB_NORMAL_NC		5

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - __builtin_offsetof(type, member)))
#define IS_ERR_VALUE(x)		((unsigned long)(void *)(x) >= (unsigned long)-4095)
#define IS_ERR(p)		IS_ERR_VALUE(p)
#define PTR_ERR(p)		((long)(p))
#define ERR_PTR(e)		((void *)(long)(e))

/*
 * the memcache as pgtable.c reads it from 6.6 on (split looks at nobjs); the shim keeps its
 * count equal to the shim's own memcache stack (kdiff_mainline_rt.c)
 */
struct kvm_mmu_memory_cache {
	int nobjs;
};

struct kvm_s2_mmu;
void __kvm_tlb_flush_vmid_range(struct kvm_s2_mmu *mmu, phys_addr_t start, unsigned long pages);
void __kvm_tlb_flush_vmid_ipa_nsh(struct kvm_s2_mmu *mmu, phys_addr_t ipa, int level);

/* from 6.14 kvm_pgtable is a union with pKVM's mapping tree (unused here): an rb_root in 6.14,
   an rb_root_cached by 6.18 */
struct rb_root { void *rb_node; };
struct rb_root_cached { void *rb_node; void *rb_leftmost; };

#ifdef KDIFF_ML_MEMATTR1
/* 7.x: PAGE_S2_MEMATTR(attr) reads the FWB capability itself; VTCR fields are masks */
#undef PAGE_S2_MEMATTR
/* asm/memory.h (not among the cached files): stage 2 normal write-back, so stage 1's attributes win */
#define MT_S2_AS_S1			MT_S2_NORMAL
#define MT_S2_FWB_AS_S1			7
#define PAGE_S2_MEMATTR(attr) \
	(kdiff_has_cap(ARM64_HAS_STAGE2_FWB) ? PTE_S2_MEMATTR(MT_S2_FWB_ ## attr) \
					      : PTE_S2_MEMATTR(MT_S2_ ## attr))
#define VTCR_EL2_PS			GENMASK(18, 16)
#define VTCR_EL2_T0SZ			GENMASK(5, 0)
#define VTCR_EL2_VS			BIT(19)
#endif
#define ARM64_HAS_XNX			4

#endif
