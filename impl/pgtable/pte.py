"""Descriptor encodings of arch/arm64/kvm/hyp/pgtable.c (5.12-5.15) as 64-bit integers.

Models: the KVM_PTE_* field masks, output-address packing (with the 64K granule's bits 51:48 kept in
descriptor bits 15:12), leaf/table construction, the stage-2 and hyp stage-1 attribute encodings
(``stage2_set_prot_attr``, ``hyp_set_prot_attr``), the pKVM owner annotation in invalid descriptors
(``kvm_init_invalid_leaf_owner``, with the owner field a parameter: bits 63:56 in the seed patch,
9:2 from 5.15), and the predicates ``stage2_pte_needs_update`` / ``stage2_pte_is_counted`` /
``hyp_pte_needs_update``.

Functions here take the PAGE_SHIFT-dependent masks as arguments or from a Granule; they use only
``&``, ``|``, ``^``, ``~``, shifts and comparisons so that the proof engines can run them on
symbolic bit-vectors. Left out: the stage-1 attribute index table (MAIR) and the DBM bit.
"""

from __future__ import annotations

import errno

U64 = (1 << 64) - 1


def BIT(n: int) -> int:
    return 1 << n


def GENMASK(h: int, l: int) -> int:
    return ((1 << (h - l + 1)) - 1) << l


KVM_PTE_VALID = BIT(0)
KVM_PTE_TYPE = BIT(1)
KVM_PTE_TYPE_BLOCK = 0
KVM_PTE_TYPE_PAGE = 1
KVM_PTE_TYPE_TABLE = 1
KVM_PTE_ADDR_51_48 = GENMASK(15, 12)

KVM_PTE_LEAF_ATTR_LO = GENMASK(11, 2)
KVM_PTE_LEAF_ATTR_LO_S1_ATTRIDX = GENMASK(4, 2)
KVM_PTE_LEAF_ATTR_LO_S1_AP = GENMASK(7, 6)
KVM_PTE_LEAF_ATTR_LO_S1_AP_RO = 3
KVM_PTE_LEAF_ATTR_LO_S1_AP_RW = 1
KVM_PTE_LEAF_ATTR_LO_S1_SH = GENMASK(9, 8)
KVM_PTE_LEAF_ATTR_LO_S1_SH_IS = 3
KVM_PTE_LEAF_ATTR_LO_S1_AF = BIT(10)

KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR = GENMASK(5, 2)
KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R = BIT(6)
KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W = BIT(7)
KVM_PTE_LEAF_ATTR_LO_S2_SH = GENMASK(9, 8)
KVM_PTE_LEAF_ATTR_LO_S2_SH_IS = 3
KVM_PTE_LEAF_ATTR_LO_S2_AF = BIT(10)

KVM_PTE_LEAF_ATTR_HI = GENMASK(63, 51)
KVM_PTE_LEAF_ATTR_HI_SW = GENMASK(58, 55)
KVM_PTE_LEAF_ATTR_HI_S1_XN = BIT(54)
KVM_PTE_LEAF_ATTR_HI_S2_XN = BIT(54)
KVM_PTE_LEAF_ATTR_S2_PERMS = (KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R | KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W
                              | KVM_PTE_LEAF_ATTR_HI_S2_XN)

# Owner annotations (pKVM): the seed patch puts the id in bits 63:56; 5.15 moved it to 9:2.
OWNER_FIELD_SEED = (63, 56)
OWNER_FIELD_5_15 = (9, 2)
KVM_MAX_OWNER_ID = 1
KVM_PHYS_INVALID = U64

# enum kvm_pgtable_prot
KVM_PGTABLE_PROT_X = BIT(0)
KVM_PGTABLE_PROT_W = BIT(1)
KVM_PGTABLE_PROT_R = BIT(2)
KVM_PGTABLE_PROT_DEVICE = BIT(3)
KVM_PGTABLE_PROT_SW0 = BIT(55)
KVM_PGTABLE_PROT_SW1 = BIT(56)
KVM_PGTABLE_PROT_SW2 = BIT(57)
KVM_PGTABLE_PROT_SW3 = BIT(58)
KVM_PGTABLE_PROT_RW = KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W
KVM_PGTABLE_PROT_RWX = KVM_PGTABLE_PROT_RW | KVM_PGTABLE_PROT_X

# Stage-2 MemAttr values (asm/memory.h), without and with FEAT_S2FWB.
MT_S2_NORMAL = 0xF
MT_S2_DEVICE_nGnRE = 0x1
MT_S2_FWB_NORMAL = 6
MT_S2_FWB_DEVICE_nGnRE = 1
# Stage-1 MAIR indices (asm/memory.h, 5.12+).
MT_NORMAL = 0
MT_DEVICE_nGnRE = 4


# KVM_PTE_ADDR_MASK, GENMASK(47, PAGE_SHIFT), for each build's page size (a table, not a helper
# call: it is read for every descriptor a walk follows or writes)
KVM_PTE_ADDR_MASK = {ps: GENMASK(47, ps) for ps in (12, 14, 16)}


def kvm_pte_table(pte: int, level: int) -> bool:
    """A valid descriptor with the type bit set above the last level is a table."""
    if level == 3:
        return False
    if not pte & KVM_PTE_VALID:
        return False
    return (pte & KVM_PTE_TYPE) != 0


def kvm_pte_to_phys(pte, page_shift: int):
    pa = pte & KVM_PTE_ADDR_MASK[page_shift]
    if page_shift == 16:
        pa |= ((pte & KVM_PTE_ADDR_51_48) >> 12) << 48
    return pa


def kvm_phys_to_pte(pa, page_shift: int):
    pte = pa & KVM_PTE_ADDR_MASK[page_shift]
    if page_shift == 16:
        pte |= ((pa >> 48) << 12) & KVM_PTE_ADDR_51_48
    return pte


def kvm_table_pte(child_pa: int, page_shift: int) -> int:
    """The descriptor kvm_set_table_pte writes: next-level address, type table, valid."""
    return kvm_phys_to_pte(child_pa, page_shift) | KVM_PTE_TYPE | KVM_PTE_VALID


def kvm_init_valid_leaf_pte(pa, attr, level: int, page_shift: int):
    pte = kvm_phys_to_pte(pa, page_shift)
    ptype = KVM_PTE_TYPE_PAGE if level == 3 else KVM_PTE_TYPE_BLOCK
    pte |= attr & (KVM_PTE_LEAF_ATTR_LO | KVM_PTE_LEAF_ATTR_HI)
    pte |= ptype << 1
    pte |= KVM_PTE_VALID
    return pte


def owner_mask(owner_field) -> int:
    hi, lo = owner_field
    return GENMASK(hi, lo)


def kvm_init_invalid_leaf_owner(owner_id, owner_field):
    """FIELD_PREP(KVM_INVALID_PTE_OWNER_MASK, owner_id): the id shifted into the owner field."""
    hi, lo = owner_field
    return (owner_id << lo) & GENMASK(hi, lo)


def owner_id_of(pte: int, owner_field) -> int:
    hi, lo = owner_field
    return (pte & GENMASK(hi, lo)) >> lo


def stage2_pte_needs_update(old, new) -> bool:
    """False only when both are valid and differ in nothing but S2AP/XN (the -EAGAIN case)."""
    if not (old & KVM_PTE_VALID) or not (new & KVM_PTE_VALID):
        return True
    return ((old ^ new) & (~KVM_PTE_LEAF_ATTR_S2_PERMS & U64)) != 0


def stage2_pte_is_counted(pte) -> bool:
    """The table refcount counts valid entries and owner annotations: any non-zero descriptor."""
    return pte != 0


def hyp_pte_needs_update(old: int, new: int, warn=None) -> bool:
    """Hyp stage 1 tolerates re-creating the same mapping or changing only software bits."""
    if old == new:
        return False
    if not old & KVM_PTE_VALID:
        return True
    if (old ^ new) & ~KVM_PTE_LEAF_ATTR_HI_SW & U64:
        if warn is not None:
            warn("hyp_pte_needs_update: conflicting valid mapping")
        return False
    return True


def kvm_s2_memattr(normal: bool, has_fwb: bool) -> int:
    """PAGE_S2_MEMATTR(NORMAL or DEVICE_nGnRE, has_fwb), already shifted into MemAttr."""
    if has_fwb:
        mt = MT_S2_FWB_NORMAL if normal else MT_S2_FWB_DEVICE_nGnRE
    else:
        mt = MT_S2_NORMAL if normal else MT_S2_DEVICE_nGnRE
    return mt << 2


def stage2_set_prot_attr(prot: int, has_fwb: bool):
    """stage2_set_prot_attr: (0, attr) or (-EINVAL, None) for executable device memory."""
    device = bool(prot & KVM_PGTABLE_PROT_DEVICE)
    attr = kvm_s2_memattr(not device, has_fwb)
    if not prot & KVM_PGTABLE_PROT_X:
        attr |= KVM_PTE_LEAF_ATTR_HI_S2_XN
    elif device:
        return -errno.EINVAL, None
    if prot & KVM_PGTABLE_PROT_R:
        attr |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R
    if prot & KVM_PGTABLE_PROT_W:
        attr |= KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W
    attr |= KVM_PTE_LEAF_ATTR_LO_S2_SH_IS << 8
    attr |= KVM_PTE_LEAF_ATTR_LO_S2_AF
    attr |= prot & KVM_PTE_LEAF_ATTR_HI_SW
    return 0, attr


# PAGE_S2_MEMATTR(NORMAL, has_fwb) for FWB off and on: what stage2_pte_cacheable compares with
S2_MEMATTR_NORMAL = {False: kvm_s2_memattr(True, False), True: kvm_s2_memattr(True, True)}


def stage2_pte_cacheable(pte: int, has_fwb: bool) -> bool:
    return (pte & KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR) == S2_MEMATTR_NORMAL[has_fwb]


def stage2_pte_executable(pte: int) -> bool:
    return not pte & KVM_PTE_LEAF_ATTR_HI_S2_XN


def kvm_pgtable_stage2_pte_prot(pte: int) -> int:
    """Decode a stage-2 descriptor back into enum kvm_pgtable_prot."""
    prot = pte & KVM_PTE_LEAF_ATTR_HI_SW
    if not pte & KVM_PTE_VALID:
        return prot
    if pte & KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R:
        prot |= KVM_PGTABLE_PROT_R
    if pte & KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W:
        prot |= KVM_PGTABLE_PROT_W
    if not pte & KVM_PTE_LEAF_ATTR_HI_S2_XN:
        prot |= KVM_PGTABLE_PROT_X
    return prot


def hyp_set_prot_attr(prot: int):
    """hyp_set_prot_attr: (0, attr) or (-EINVAL, None) (no read, W+X, or executable device)."""
    device = bool(prot & KVM_PGTABLE_PROT_DEVICE)
    mtype = MT_DEVICE_nGnRE if device else MT_NORMAL
    attr = mtype << 2
    ap = KVM_PTE_LEAF_ATTR_LO_S1_AP_RW if prot & KVM_PGTABLE_PROT_W else KVM_PTE_LEAF_ATTR_LO_S1_AP_RO
    if not prot & KVM_PGTABLE_PROT_R:
        return -errno.EINVAL, None
    if prot & KVM_PGTABLE_PROT_X:
        if prot & KVM_PGTABLE_PROT_W:
            return -errno.EINVAL, None
        if device:
            return -errno.EINVAL, None
    else:
        attr |= KVM_PTE_LEAF_ATTR_HI_S1_XN
    attr |= ap << 6
    attr |= KVM_PTE_LEAF_ATTR_LO_S1_SH_IS << 8
    attr |= KVM_PTE_LEAF_ATTR_LO_S1_AF
    attr |= prot & KVM_PTE_LEAF_ATTR_HI_SW
    return 0, attr


def kvm_block_mapping_supported(gran, addr, end, phys, level: int, pa_bits: int) -> bool:
    """A leaf of this level may map [addr, addr+granule): level allows blocks (or is the last),
    the range is large enough, addr is aligned and so is phys unless phys is the invalid marker
    (an owner annotation)."""
    granule = gran.size[level]
    if not gran.kvm_level_supports_block_mapping(level):
        return False
    if granule > end - addr:
        return False
    if kvm_phys_is_valid(phys, pa_bits) and phys & (granule - 1):
        return False
    return (addr & (granule - 1)) == 0


def kvm_phys_is_valid(phys, pa_bits: int) -> bool:
    """phys lies below the largest PA range the build supports; KVM_PHYS_INVALID does not."""
    return phys < (1 << pa_bits)
