"""Translation-table geometry of VMSAv8-64 as KVM/arm64 (5.12-5.15) configures it.

Models: the size each descriptor covers at each level for the 4K, 16K and 64K granules, the number of
levels and the start level KVM picks for a stage-2 IPA size (``kvm_get_vtcr`` with
``stage2_pgtable_levels``) and for a hyp stage-1 VA size (``kvm_pgtable_hyp_init``), how many
concatenated root tables cover the input range (``kvm_pgd_pages``), which levels KVM allows blocks at
(``kvm_level_supports_block_mapping``), and which IPA sizes a granule supports.

Leaves out: FEAT_LPA2 (52-bit addresses with 4K/16K granules), which 5.12-5.15 do not use.

Every function takes the granule as ``page_shift`` (12, 14 or 16) and computes its answer here, from
the architecture's rules; nothing is looked up from the implementation.
"""

MAX_LEVELS = 4            # levels 0..3; level 3 holds pages
LAST_LEVEL = MAX_LEVELS - 1
PAGE_SHIFTS = (12, 14, 16)

# Smallest and largest IPA size (bits) each granule supports at stage 2 without LPA2.
IPA_RANGE = {12: (32, 48), 14: (32, 48), 16: (32, 52)}


def granule_name(page_shift):
    """'4K', '16K' or '64K'."""
    return {12: "4K", 14: "16K", 16: "64K"}.get(page_shift, f"2^{page_shift}")


def entries_per_table(page_shift):
    """Descriptors in one table page: a page of 8-byte descriptors."""
    return 1 << (page_shift - 3)


def granule_shift(level, page_shift):
    """log2 of the input range one descriptor at `level` covers.

    Each level resolves page_shift - 3 bits; level 3 resolves the bits just above the page offset.
    """
    return (page_shift - 3) * (MAX_LEVELS - level) + 3


def granule_size(level, page_shift):
    """Bytes of input address space covered by one descriptor at `level`."""
    return 1 << granule_shift(level, page_shift)


def table_span(level, page_shift):
    """Bytes of input address space covered by one whole table page at `level`."""
    return granule_size(level, page_shift) * entries_per_table(page_shift)


def hw_levels(input_bits, page_shift):
    """Levels needed to translate `input_bits` bits with this granule (ARM64_HW_PGTABLE_LEVELS)."""
    return (input_bits - 4) // (page_shift - 3)


def stage2_levels(ia_bits, page_shift):
    """Levels KVM uses for a stage-2 IPA size.

    KVM concatenates up to 16 root tables, so it needs as many levels as an input of ia_bits - 4 bits
    would, and never fewer than 2 (so a host PMD block can stay a block at stage 2).
    """
    return max(2, hw_levels(ia_bits - 4, page_shift))


def stage2_start_level(ia_bits, page_shift):
    """The level of the stage-2 root tables KVM chooses for this IPA size."""
    return MAX_LEVELS - stage2_levels(ia_bits, page_shift)


def hyp_start_level(va_bits, page_shift):
    """The level of the (single) hyp stage-1 root table for this VA size."""
    return MAX_LEVELS - hw_levels(va_bits, page_shift)


def root_pages(ia_bits, start_level, page_shift):
    """Number of concatenated root tables needed to cover 2**ia_bits at `start_level` (kvm_pgd_pages).

    One table at the start level covers table_span(start_level); the input range needs
    ceil(2**ia_bits / span) of them, at least one.
    """
    span = table_span(start_level, page_shift)
    return max(1, -(-(1 << ia_bits) // span))


def ipa_bits_supported(ia_bits, page_shift):
    """True when this granule can translate an IPA of ia_bits bits (32..48, or 32..52 with 64K)."""
    lo, hi = IPA_RANGE.get(page_shift, (0, -1))
    return lo <= ia_bits <= hi


def level_allows_block(level, page_shift):
    """True when KVM may put a block (not a page) at `level`.

    Never at level 0; at level 1 only with the 4K granule (KVM does not create 64G or 4T blocks);
    always at level 2. Level 3 holds pages, not blocks, so this is False there.
    """
    if level <= 0 or level >= LAST_LEVEL:
        return False
    if level == 1:
        return page_shift == 12
    return True


def level_allows_leaf(level, page_shift):
    """True when a valid leaf (block, or page at level 3) may sit at `level` under KVM's rules."""
    return level == LAST_LEVEL or level_allows_block(level, page_shift)


def leaf_levels(start_level, page_shift):
    """Levels from the root down at which a leaf may sit, largest leaf first."""
    return [lv for lv in range(max(start_level, 0), MAX_LEVELS) if level_allows_leaf(lv, page_shift)]


# The contiguous hint: how many adjacent last-level (CONT_PTES) or level-2 (CONT_PMDS) entries one
# TLB entry may cover, per granule (VMSAv8-64; arm64's CONT_PTES / CONT_PMDS).
CONT_PTES = {12: 16, 14: 128, 16: 32}
CONT_PMDS = {12: 16, 14: 32, 16: 32}


def hugetlb_shifts(page_shift):
    """log2 of the huge page sizes arm64 Linux offers for a granule (arch_hugetlb_valid_size),
    largest first: a level-1 block (4K granule only), a contiguous run of level-2 blocks, a level-2
    block, a contiguous run of pages."""
    pmd, pud = granule_shift(2, page_shift), granule_shift(1, page_shift)
    cont_pmd = pmd + CONT_PMDS[page_shift].bit_length() - 1
    cont_pte = page_shift + CONT_PTES[page_shift].bit_length() - 1
    return ((pud,) if page_shift == 12 else ()) + (cont_pmd, pmd, cont_pte)


def size_text(size):
    """A byte count as the kernel's ptdump prints it: 4K, 2M, 1G, 512G ..."""
    units = "KMGTPE"
    if size < 1024 or size % 1024:
        return f"{size}B"
    size >>= 10
    unit = 0
    while size % 1024 == 0 and unit < len(units) - 1:
        size >>= 10
        unit += 1
    return f"{size}{units[unit]}"
