"""Translation-table geometry of arm64 KVM: granules, levels, start level, concatenated roots.

Models the compile-time constants of one kernel build (PAGE_SHIFT, PTRS_PER_PTE, the PA range that
``ID_AA64MMFR0_PARANGE_MAX`` allows) and the arithmetic that derives the shape of a stage-2 table
from the IPA size, as in Linux 5.12-5.15:

* ``kvm_granule_shift`` / ``kvm_granule_size`` (``ARM64_HW_PGTABLE_LEVEL_SHIFT``),
* ``stage2_pgtable_levels`` (asm/stage2_pgtable.h) and the two-level minimum of ``kvm_get_vtcr``,
  which fixes VTCR_EL2.SL0 and so the start level (``__kvm_pgtable_stage2_init``),
* ``__kvm_pgd_page_idx`` / ``kvm_pgd_pages``: which concatenated root page an IPA uses, and how many,
* ``kvm_level_supports_block_mapping`` (asm/kvm_pgtable.h),
* ``ARM64_HW_PGTABLE_LEVELS`` for hyp stage 1 (``kvm_pgtable_hyp_init``).

Left out: VTCR_EL2 fields other than SL0/T0SZ (PS, TG0, VS, HA), and LPA2 (52-bit IPA with 4K/16K),
which 5.x kernels do not support.
"""

from __future__ import annotations

from dataclasses import dataclass, field

U64 = (1 << 64) - 1
KVM_PGTABLE_MAX_LEVELS = 4
PAGE_SHIFTS = (12, 14, 16)
# The smallest IPA size KVM accepts (kvm_arm_setup_stage2) and the default one (KVM_PHYS_SHIFT).
KVM_PHYS_SHIFT_MIN = 32
KVM_PHYS_SHIFT = 40


def arm64_hw_pgtable_levels(page_shift: int, va_bits: int) -> int:
    """ARM64_HW_PGTABLE_LEVELS(va_bits): levels needed to translate va_bits with this granule."""
    return (va_bits - 4) // (page_shift - 3)


def arm64_hw_pgtable_level_shift(page_shift: int, level: int) -> int:
    """ARM64_HW_PGTABLE_LEVEL_SHIFT(n) with n a u32, so level -1 is allowed (it 'underflows')."""
    return (page_shift - 3) * (4 - level) + 3


def stage2_pgtable_levels(page_shift: int, ipa: int) -> int:
    """stage2_pgtable_levels(ipa): up to 16 concatenated root pages save one level (hence ipa - 4)."""
    return arm64_hw_pgtable_levels(page_shift, ipa - 4)


def kvm_vtcr_levels(page_shift: int, ipa: int) -> int:
    """The number of levels kvm_get_vtcr programs into VTCR_EL2.SL0: at least two."""
    return max(stage2_pgtable_levels(page_shift, ipa), 2)


def ipa_limit(page_shift: int) -> int:
    """Largest IPA size a 5.x kernel supports: 52 bits only with 64K pages (PA_BITS_52)."""
    return 52 if page_shift == 16 else 48


def parange_max_bits(page_shift: int) -> int:
    """id_aa64mmfr0_parange_to_phys_shift(ID_AA64MMFR0_PARANGE_MAX): 52 with 64K, else 48."""
    return 52 if page_shift == 16 else 48


@dataclass(frozen=True)
class Granule:
    """One kernel build's page size and the per-level constants the walker needs (precomputed)."""

    page_shift: int
    page_size: int = field(init=False)
    ptrs_per_pte: int = field(init=False)
    shift: tuple = field(init=False)       # kvm_granule_shift(level), levels 0..3
    size: tuple = field(init=False)        # kvm_granule_size(level)
    pa_bits: int = field(init=False)
    block_ok: tuple = field(init=False)    # kvm_level_supports_block_mapping(level), levels 0..3

    def __post_init__(self):
        if self.page_shift not in PAGE_SHIFTS:
            raise ValueError(f"page_shift must be one of {PAGE_SHIFTS} (4K, 16K, 64K), "
                             f"not {self.page_shift!r}")
        ps = self.page_shift
        object.__setattr__(self, "page_size", 1 << ps)
        object.__setattr__(self, "ptrs_per_pte", 1 << (ps - 3))
        shifts = tuple(arm64_hw_pgtable_level_shift(ps, lvl) for lvl in range(4))
        object.__setattr__(self, "shift", shifts)
        object.__setattr__(self, "size", tuple(1 << s for s in shifts))
        object.__setattr__(self, "pa_bits", parange_max_bits(ps))
        object.__setattr__(self, "block_ok", tuple(
            not (lvl == 0 or (ps != 12 and lvl == 1)) for lvl in range(4)))

    def kvm_granule_shift(self, level: int) -> int:
        return arm64_hw_pgtable_level_shift(self.page_shift, level)

    def kvm_level_supports_block_mapping(self, level: int) -> bool:
        """No level-0 blocks, and no level-1 blocks (64G/4T) unless the granule is 4K."""
        return self.block_ok[level]


def _kvm_pgd_page_idx(gran: Granule, ia_bits: int, start_level: int, addr: int) -> int:
    """Index of the concatenated root page that translates addr."""
    shift = gran.kvm_granule_shift(start_level - 1)
    mask = (1 << ia_bits) - 1
    return (addr & mask) >> shift


def kvm_pgd_pages(gran: Granule, ia_bits: int, start_level: int) -> int:
    """Number of concatenated root pages: the root index of the last IPA, plus one."""
    return _kvm_pgd_page_idx(gran, ia_bits, start_level, U64) + 1


@dataclass(frozen=True)
class Stage2Geometry:
    """Shape of one guest's stage-2 table, derived from (page_shift, ia_bits) as KVM does."""

    gran: Granule
    ia_bits: int
    start_level: int
    pgd_pages: int

    @classmethod
    def from_ipa(cls, page_shift: int, ia_bits: int) -> "Stage2Geometry":
        gran = Granule(page_shift)
        if not isinstance(ia_bits, int) or not KVM_PHYS_SHIFT_MIN <= ia_bits <= ipa_limit(page_shift):
            raise ValueError(f"ia_bits must be {KVM_PHYS_SHIFT_MIN}..{ipa_limit(page_shift)} "
                             f"with {gran.page_size // 1024}K pages, not {ia_bits!r}")
        start_level = KVM_PGTABLE_MAX_LEVELS - kvm_vtcr_levels(page_shift, ia_bits)
        return cls(gran, ia_bits, start_level, kvm_pgd_pages(gran, ia_bits, start_level))

    def pgd_page_idx(self, addr: int) -> int:
        return _kvm_pgd_page_idx(self.gran, self.ia_bits, self.start_level, addr)


def all_stage2_geometries():
    """Every (page_shift, ia_bits) pair a 5.x kernel accepts."""
    for ps in PAGE_SHIFTS:
        for ia in range(KVM_PHYS_SHIFT_MIN, ipa_limit(ps) + 1):
            yield Stage2Geometry.from_ipa(ps, ia)
