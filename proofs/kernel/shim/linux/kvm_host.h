/*
 * ptspec kdiff shim: the handful of kernel definitions arch/arm64/kvm/hyp/pgtable.c and
 * asm/kvm_pgtable.h (Linux 5.15, 5.16-6.1) use, written for a userspace build on any host. Our
 * own code: architecture constants and kernel macro names only.
 *
 * PAGE_SHIFT (12, 14 or 16) and KDIFF_PARANGE_MAX (5: 48-bit PA, 6: 52-bit PA) come from the
 * compiler command line. Barriers are no-ops (single-threaded), kvm_call_hyp is a direct call,
 * WARN_ON records a warning in the shim's log, capabilities are read from the shim's globals.
 */
#ifndef KDIFF_SHIM_KVM_HOST_H
#define KDIFF_SHIM_KVM_HOST_H

#include <errno.h>
#include <linux/types.h>
#include <linux/bits.h>

#ifndef PAGE_SHIFT
#error "build with -DPAGE_SHIFT=12|14|16"
#endif
#ifndef KDIFF_PARANGE_MAX
#error "build with -DKDIFF_PARANGE_MAX=5|6"
#endif

#define PAGE_SIZE		(1ULL << PAGE_SHIFT)
#define PAGE_MASK		(~(PAGE_SIZE - 1))
#define PTRS_PER_PTE		(1 << (PAGE_SHIFT - 3))

#if PAGE_SHIFT == 12
#define CONFIG_ARM64_4K_PAGES 1
#endif

#define ALIGN_DOWN(x, a)	((x) & ~((u64)(a) - 1))
#define ALIGN(x, a)		(((x) + ((u64)(a) - 1)) & ~((u64)(a) - 1))
#define PAGE_ALIGN(x)		ALIGN(x, PAGE_SIZE)
#define SZ_4K			0x1000ULL
#define IS_ALIGNED(x, a)	(((x) & ((u64)(a) - 1)) == 0)

/* asm/pgtable-hwdef.h: levels and per-level shift (n may be a u32 that wrapped below zero) */
#define ARM64_HW_PGTABLE_LEVELS(va_bits)	(((va_bits) - 4) / (PAGE_SHIFT - 3))
#define ARM64_HW_PGTABLE_LEVEL_SHIFT(n)		((PAGE_SHIFT - 3) * (4 - (n)) + 3)

/* single-threaded userspace: plain accesses, no barriers */
#define READ_ONCE(x)			(*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v)		(*(volatile __typeof__(x) *)&(x) = (v))
#define smp_store_release(p, v)		WRITE_ONCE(*(p), (v))
#define dsb(opt)			do { } while (0)
#define isb()				do { } while (0)

void kdiff_warn(int line);
#define WARN_ON(cond)		({ int __c = !!(cond); if (__c) kdiff_warn(__LINE__); __c; })
#define WARN_ON_ONCE(cond)	WARN_ON(cond)

/* capabilities */
#define ARM64_HAS_STAGE2_FWB			1
#define ARM64_WORKAROUND_AMPERE_AC03_CPU_38	2
bool kdiff_has_cap(int cap);
#define cpus_have_const_cap(cap)	kdiff_has_cap(cap)
#define cpus_have_final_cap(cap)	kdiff_has_cap(cap)

/* memory types: stage-1 MAIR indices and stage-2 MemAttr values */
#define MT_NORMAL		0
#define MT_DEVICE_nGnRE		4
#define MT_S2_NORMAL		0xf
#define MT_S2_DEVICE_nGnRE	0x1
#define MT_S2_FWB_NORMAL	6
#define MT_S2_FWB_DEVICE_nGnRE	1
#define PTE_S2_MEMATTR(t)	((pteval_t)(t) << 2)
#define PAGE_S2_MEMATTR(attr, has_fwb) \
	((has_fwb) ? PTE_S2_MEMATTR(MT_S2_FWB_ ## attr) : PTE_S2_MEMATTR(MT_S2_ ## attr))

/* ID_AA64MMFR0_EL1.PARange and ID_AA64MMFR1_EL1.VMIDBits */
#define ID_AA64MMFR0_EL1_PARANGE_SHIFT	0
#define ID_AA64MMFR0_EL1_PARANGE_MAX	KDIFF_PARANGE_MAX
/* the same fields under their names before 6.0 (5.13-5.19 spell them without _EL1) */
#define ID_AA64MMFR0_PARANGE_SHIFT	ID_AA64MMFR0_EL1_PARANGE_SHIFT
#define ID_AA64MMFR0_PARANGE_MAX	ID_AA64MMFR0_EL1_PARANGE_MAX
static inline u64 cpuid_feature_extract_unsigned_field(u64 reg, int shift)
{
	return (reg >> shift) & 0xf;
}
static inline u32 id_aa64mmfr0_parange_to_phys_shift(int parange)
{
	switch (parange) {
	case 0: return 32;
	case 1: return 36;
	case 2: return 40;
	case 3: return 42;
	case 4: return 44;
	case 5: return 48;
	case 6: return 52;
	default: return 0;
	}
}
static inline u32 get_vmid_bits(u64 mmfr1)
{
	return ((mmfr1 >> 4) & 0xf) == 2 ? 16 : 8;
}

/* VTCR_EL2 fields (asm/kvm_arm.h) */
#define VTCR_EL2_T0SZ_MASK	0x3fULL
#define VTCR_EL2_T0SZ(x)	((64ULL - (x)) & VTCR_EL2_T0SZ_MASK)
#define VTCR_EL2_SL0_SHIFT	6
#define VTCR_EL2_SL0_MASK	(3ULL << VTCR_EL2_SL0_SHIFT)
#define VTCR_EL2_PS_SHIFT	16
#define VTCR_EL2_HA		(1ULL << 21)
#define VTCR_EL2_VS_8BIT	(0ULL << 19)
#define VTCR_EL2_VS_16BIT	(1ULL << 19)
#if PAGE_SHIFT == 12
#define VTCR_EL2_TGRAN_SL0_BASE	2ULL
#define VTCR_EL2_TG0		(0ULL << 14)
#elif PAGE_SHIFT == 14
#define VTCR_EL2_TGRAN_SL0_BASE	3ULL
#define VTCR_EL2_TG0		(2ULL << 14)
#else
#define VTCR_EL2_TGRAN_SL0_BASE	3ULL
#define VTCR_EL2_TG0		(1ULL << 14)
#endif
/* inner/outer write-back cacheable, inner shareable, plus the granule */
#define VTCR_EL2_FLAGS		((3ULL << 12) | (1ULL << 10) | (1ULL << 8) | VTCR_EL2_TG0)
#define VTCR_EL2_LVLS_TO_SL0(levels) \
	((VTCR_EL2_TGRAN_SL0_BASE - (4 - (levels))) << VTCR_EL2_SL0_SHIFT)
#define VTCR_EL2_SL0_TO_LVLS(sl0)	((sl0) + 4 - VTCR_EL2_TGRAN_SL0_BASE)
#define VTCR_EL2_LVLS(vtcr) \
	VTCR_EL2_SL0_TO_LVLS(((vtcr) & VTCR_EL2_SL0_MASK) >> VTCR_EL2_SL0_SHIFT)
#define VTCR_EL2_IPA(vtcr)	(64 - ((vtcr) & VTCR_EL2_T0SZ_MASK))

/*
 * the stage-2 MMU as pgtable.c sees it: 5.16 on reach VTCR through mmu->arch->vtcr and take the
 * mmu at init; 5.13-5.15 take the kvm_arch at init and use its embedded mmu (arch->mmu); both
 * shapes are served by one layout. struct kvm is there for stage2_pgtable.h's inline helpers.
 */
struct kvm_pgtable;
struct kvm_arch;
#ifdef KDIFF_MAINLINE
#include <linux/kdiff_mainline.h>
#endif
struct kvm_s2_mmu {
	struct kvm_arch *arch;
	struct kvm_pgtable *pgt;
#ifdef KDIFF_MAINLINE
	u64 vtcr;					/* 6.12 on read VTCR here */
	struct kvm_mmu_memory_cache split_page_cache;	/* split's memcache (6.6 on) */
#endif
};
struct kvm_arch {
	u64 vtcr;
	struct kvm_s2_mmu mmu;
};
struct kvm {
	struct kvm_arch arch;
};

/* data-cache maintenance by VA range (5.14's pgtable.c calls it directly): logged by the shim */
void dcache_clean_inval_poc(unsigned long start, unsigned long end);
/* 5.13's name for it: __flush_dcache_area(addr, len) */
void __flush_dcache_area(void *addr, size_t len);

/* TLB maintenance: logged by the shim */
void __kvm_tlb_flush_vmid_ipa(struct kvm_s2_mmu *mmu, phys_addr_t ipa, int level);
void __kvm_tlb_flush_vmid(struct kvm_s2_mmu *mmu);
#define kvm_call_hyp(f, ...)	f(__VA_ARGS__)

/*
 * For planted bugs only (ptspec.proofs.kernel.planted.C_SOURCE_BUGS, valid-update-ref): clear a
 * descriptor and invalidate its IPA, but keep the page reference it held. Unused by the kernel.
 */
#define KDIFF_PUT_PTE_KEEP_REF(ptep, mmu, addr, level, mm_ops) \
	do { *(ptep) = 0; kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, mmu, addr, level); } while (0)

/*
 * hyp stage-1 TLB maintenance (hyp_unmap_walker): logged for the hyp harness (S1-UNMAP-TLBI) as
 * ["tlbi_el2", va, level] for vae2is and ["tlbi_el2_last", va, level] for vale2is. __TLBI_VADDR
 * is the identity here, so the operand is the VA on every tree (7.1 passes the VA itself); the
 * level is logged as given (TLBI_TTL_UNKNOWN included). Another TLBI op does not compile.
 */
void kdiff_tlbi_el2(int last_level, u64 va, u64 level);
#define KDIFF_TLBI_LAST_vae2is		0
#define KDIFF_TLBI_LAST_vale2is		1
#define __TLBI_VADDR(addr, asid)	((u64)(addr))
#define __tlbi_level(op, addr, level)	\
	kdiff_tlbi_el2(KDIFF_TLBI_LAST_##op, (u64)(addr), (u64)(s64)(level))
#define __tlbi_sync_s1ish_hyp()		do { } while (0)

#endif
