"""VMSAv8-64 stage-2 descriptor format, as KVM/arm64 (5.12-5.15) writes it.

Models: how a 64-bit descriptor is classified at a given level (invalid, table, block, page, or the
reserved level-3 encoding 0b01), how the output or next-table address is decoded (bits[47:page_shift],
plus bits 51:48 held in descriptor bits 15:12 with the 64K granule), the stage-2 leaf attribute
fields KVM uses, the MemAttr values it writes with and without FWB (normal, device, and from 6.9 normal
non-cacheable), the pKVM owner annotation kept in invalid descriptors, and the ``enum
kvm_pgtable_prot`` bits.

Leaves out: stage-1 attribute meanings (hyp stage-1 tables are checked only for structure), FEAT_LPA2
address encodings, and the meaning of architecture features KVM does not use (the contiguous hint,
DBM, PBHA): a leaf must keep their bits clear (S2_LEAF_UNWRITTEN and HYP_LEAF_UNWRITTEN, judged
by S2-BA and S1-BA).
"""

from collections import namedtuple

from ptspec.spec.arch.geometry import LAST_LEVEL

VALID = 1 << 0                     # KVM_PTE_VALID
TYPE = 1 << 1                      # KVM_PTE_TYPE. level < 3: 1 = table, 0 = block; level 3: must be 1 (page)
TYPE_BITS = VALID | TYPE           # bits[1:0], the descriptor's kind
TABLE_OR_PAGE = VALID | TYPE       # bits[1:0] = 0b11: a table (level < 3) or a page (level 3)
MEMATTR_SHIFT, MEMATTR_MASK = 2, 0xF << 2     # KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR
S2AP_R = 1 << 6                    # KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R
S2AP_W = 1 << 7                    # KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W
SH_SHIFT, SH_MASK = 8, 0x3 << 8    # KVM_PTE_LEAF_ATTR_LO_S2_SH
SH_INNER = 3                       # KVM_PTE_LEAF_ATTR_LO_S2_SH_IS
AF = 1 << 10                       # KVM_PTE_LEAF_ATTR_LO_S2_AF
DBM = 1 << 51
CONTIGUOUS = 1 << 52
XN = 1 << 54                       # KVM_PTE_LEAF_ATTR_HI_S2_XN (5.x-6.x); XN[1] from 6.19
XN_PXN = 1 << 53                   # XN[0] (FEAT_XNX): with XN[1], the 2-bit XN field of 6.19
XN_FIELD = XN | XN_PXN             # KVM_PTE_LEAF_ATTR_HI_S2_XN from 6.19: GENMASK(54, 53)
SW_SHIFT, SW_MASK = 55, 0xF << 55  # KVM_PTE_LEAF_ATTR_HI_SW
TABLE_UPPER_MASK = 0x1F << 59       # NSTable/APTable/XNTable/PXNTable: RES0 at stage 2
PERMS = S2AP_R | S2AP_W | XN        # what a re-map may differ in and still be "the same mapping"
ADDR_LOW_SHIFT = 12                 # the address field starts at bit 12 (below: attributes)
ADDR_FIELD_TOP = 48                 # ... and ends below bit 48 (bits 47:page_shift hold address bits)
LEAF_ATTR_LO = ((1 << ADDR_LOW_SHIFT) - 1) & ~TYPE_BITS        # KVM_PTE_LEAF_ATTR_LO: bits 11:2
LEAF_ATTR_HI_SHIFT = 51
LEAF_ATTR_HI = ((1 << 64) - 1) & ~((1 << LEAF_ATTR_HI_SHIFT) - 1)  # KVM_PTE_LEAF_ATTR_HI: bits 63:51

# Stage-2 leaf bits KVM never writes (5.12 to 7.1): bit 11 (FnXS with FEAT_XS), bits 52:48
# (address bits 49:48 with FEAT_LPA2, which the spec leaves out; GP, a stage-1 bit; DBM; the
# contiguous hint) and bits 63:59 (PBHA, RES0). Bit 53 is XN[0] with FEAT_XNX only. The software
# bits 58:55 are KVM's own (pKVM's page states).
S2_LEAF_UNWRITTEN = (1 << 11) | (0x1F << 48) | (0x1F << 59)
# A hyp stage-1 leaf: the same, less GP (bit 50, BTI-guarded EL2 text from 6.x) and PXN (bit 53,
# written from 7.1); bit 54 is XN / UXN.
HYP_LEAF_UNWRITTEN = (1 << 11) | (0x3 << 48) | (0x3 << 51) | (0x1F << 59)

ADDR_MASK_48 = ((1 << ADDR_FIELD_TOP) - 1)
U64 = (1 << 64) - 1

# 64K granule: address bits 51:48 sit in descriptor bits 15:12 (KVM_PTE_ADDR_51_48)
ADDR_51_48_SHIFT = 12
ADDR_51_48_MASK = 0xF << ADDR_51_48_SHIFT
# 16K granule: descriptor bits 13:12 lie below the page offset's top: RES0 in the address field
RES0_16K_MASK = 0x3 << ADDR_LOW_SHIFT

OWNER_ID_MASK = 0xFF                # owner_id is a u8 parameter of kvm_pgtable_stage2_set_owner

# enum kvm_pgtable_prot
PROT_X = 1 << 0
PROT_W = 1 << 1
PROT_R = 1 << 2
PROT_DEVICE = 1 << 3
PROT_NORMAL_NC = 1 << 4          # KVM_PGTABLE_PROT_NORMAL_NC: means something from 6.9 only
# 6.19 splits X into KVM_PGTABLE_PROT_PX | KVM_PGTABLE_PROT_UX: the spec's X stays both, and these
# two name one of them alone (privileged / unprivileged execute); they mean something from 6.19 only
PROT_PX = 1 << 5
PROT_UX = 1 << 6
PROT_SW = 0xF << SW_SHIFT        # KVM_PGTABLE_PROT_SW0..3: the leaf's software bits 58:55
PROT_SW_SINCE = (5, 15, 0)        # PROT_SW0..3 come in 5.15: before, X|W|R|DEVICE, the rest ignored

# MemAttr[3:0] values KVM writes (PAGE_S2_MEMATTR), keyed by has_fwb
MEMATTR_NORMAL = {False: 0xF, True: 0x6}
MEMATTR_DEVICE = {False: 0x1, True: 0x1}
MEMATTR_NORMAL_NC = {False: 0x5, True: 0x5}   # MT_S2_NORMAL_NC / MT_S2_FWB_NORMAL_NC
# KVM_PGTABLE_S2_AS_S1 (7.0, an init flag: "final memory attributes are that of stage 1"): every
# leaf's MemAttr is PAGE_S2_MEMATTR(AS_S1), whatever the prot asks for: MT_S2_AS_S1 is MT_S2_NORMAL
# (0xf: stage 2 normal write-back, so the combination is stage 1's) and MT_S2_FWB_AS_S1 is 7 (FWB:
# use stage 1's attributes). stage2_pte_cacheable compares with the same encoding, so every valid
# leaf of such a table is cacheable (is_cacheable with as_s1)
MEMATTR_AS_S1 = {False: 0xF, True: 0x7}
AS_S1_SINCE = (7, 0, 0)
# the first release whose stage2_set_prot_attr reads KVM_PGTABLE_PROT_NORMAL_NC (before it the bit
# is ignored: the leaf is normal cacheable)
NORMAL_NC_SINCE = (6, 9, 0)
# the first release whose stage2_set_xn_attr reads PX and UX apart. On a CPU without FEAT_XNX
# (ARM64_HAS_XNX; a state's has_xnx false) exactly one of them is -EINVAL, so the XN field (bits
# 54:53 from 6.19) only ever holds 0b00 or 0b10, bit 54 as before. With FEAT_XNX (has_xnx) the
# field holds the architecture's 2-bit XN[1:0]: which ELs may execute from the leaf
PX_UX_SINCE = (6, 19, 0)
# XN[1:0] -> (EL1 may execute, EL0 may execute), FEAT_XNX's stage-2 encoding (Arm ARM, D8: "XN")
XNX_EXEC = {0b00: (True, True), 0b01: (False, True), 0b10: (False, False), 0b11: (True, False)}

SH_NAMES = {0: "NS", 1: "SH?", 2: "OS", 3: "IS"}

# kinds returned by classify()
INVALID, TABLE, BLOCK, PAGE, RESERVED = "invalid", "table", "block", "page", "reserved"

LeafAttrs = namedtuple("LeafAttrs", "memattr r w sh af xn sw dbm contiguous")


def classify(desc, level):
    """What a descriptor is at `level`: invalid, table, block, page, or reserved (0b01 at level 3)."""
    if not desc & VALID:
        return INVALID
    if level >= LAST_LEVEL:
        return PAGE if desc & TYPE else RESERVED
    return TABLE if desc & TYPE else BLOCK


def is_valid_leaf(desc, level):
    """True when the hardware walk stops at this descriptor with a translation (block or page)."""
    if not desc & VALID:
        return False
    if level >= LAST_LEVEL:
        return bool(desc & TYPE)
    return not desc & TYPE


def is_table(desc, level):
    """True when the hardware walk follows this descriptor to a next-level table."""
    return level < LAST_LEVEL and desc & TYPE_BITS == TABLE_OR_PAGE


def address(desc, page_shift):
    """Output address (leaf) or next-table address (table) held in a descriptor.

    4K/16K: bits[47:page_shift]. 64K: bits[47:16], with address bits 51:48 taken from descriptor
    bits 15:12.
    """
    addr = desc & ADDR_MASK_48 & ~((1 << page_shift) - 1)
    if page_shift == 16:
        addr |= ((desc & ADDR_51_48_MASK) >> ADDR_51_48_SHIFT) << ADDR_FIELD_TOP
    return addr


def res0_address_bits(desc, page_shift):
    """Bits between bit 12 and page_shift - 1 of the address field: RES0 with 16K (bits 13:12).

    With 4K there are none; with 64K bits 15:12 are address bits 51:48.
    """
    if page_shift == 14:
        return desc & RES0_16K_MASK
    return 0


def encode_address(addr, page_shift):
    """The descriptor bits that hold `addr` (inverse of address() for page-aligned addresses)."""
    bits = addr & ADDR_MASK_48 & ~((1 << page_shift) - 1)
    if page_shift == 16:
        bits |= ((addr >> ADDR_FIELD_TOP) << ADDR_51_48_SHIFT) & ADDR_51_48_MASK
    return bits


def leaf_attrs(desc):
    """The stage-2 leaf attribute fields of a descriptor."""
    return LeafAttrs(
        memattr=(desc & MEMATTR_MASK) >> MEMATTR_SHIFT,
        r=bool(desc & S2AP_R), w=bool(desc & S2AP_W),
        sh=(desc & SH_MASK) >> SH_SHIFT, af=bool(desc & AF), xn=bool(desc & XN),
        sw=(desc & SW_MASK) >> SW_SHIFT, dbm=bool(desc & DBM), contiguous=bool(desc & CONTIGUOUS))


def memattr_name(memattr, has_fwb):
    """NORMAL, DEVICE_nGnRE, or the raw value, as KVM's encodings name it."""
    if memattr == MEMATTR_NORMAL[has_fwb]:
        return "NORMAL"
    if memattr == MEMATTR_DEVICE[has_fwb]:
        return "DEVICE_nGnRE"
    if memattr == MEMATTR_NORMAL_NC[has_fwb]:
        return "NORMAL_NC"
    return f"MEMATTR={memattr:#x}"


def is_cacheable(desc, has_fwb, as_s1=False):
    """MemAttr is KVM's normal (write-back cacheable) encoding for this FWB setting (device and
    normal non-cacheable are not); in a KVM_PGTABLE_S2_AS_S1 table, the AS_S1 encoding (every leaf
    KVM writes there: stage2_pte_cacheable compares with KVM_S2_MEMATTR(pgt, NORMAL))."""
    normal = MEMATTR_AS_S1 if as_s1 else MEMATTR_NORMAL
    return (desc & MEMATTR_MASK) >> MEMATTR_SHIFT == normal[has_fwb]


def s2_leaf_unwritten(has_xnx=False):
    """The bits of a stage-2 leaf KVM never sets: S2_LEAF_UNWRITTEN, and bit 53 without FEAT_XNX."""
    return S2_LEAF_UNWRITTEN | (0 if has_xnx else XN_PXN)


def bit_list(bits):
    """The set bits of ``bits``, highest first, as text ("52, 11")."""
    return ", ".join(str(b) for b in range(63, -1, -1) if bits >> b & 1)


def xn_exec_mask(has_xnx=False):
    """The descriptor bits that decide whether a leaf is executable: XN (bit 54), or with FEAT_XNX
    (a state's has_xnx) the 2-bit field 54:53. A leaf is executable at no EL exactly when these
    bits equal XN alone (0b10); any other value lets some EL execute (is_executable)."""
    return XN_FIELD if has_xnx else XN


def is_executable(desc, has_xnx=False):
    """A valid leaf the guest may execute from at some EL: XN clear; with FEAT_XNX (has_xnx) any XN
    field but 0b10 (0b01: EL0 only, 0b11: EL1 only, 0b00: both). (xn_exec_mask written out.)"""
    return desc & (XN_FIELD if has_xnx else XN) != XN


def exec_levels(desc, has_xnx=False):
    """(EL1 may execute, EL0 may execute) of a valid leaf: XNX_EXEC of its field with FEAT_XNX;
    without it bit 53 is RES0 and bit 54 decides both."""
    if has_xnx:
        return XNX_EXEC[(desc & XN_FIELD) >> 53]
    x = not desc & XN
    return x, x


def perms_mask(kernel_version) -> int:
    """KVM_PTE_LEAF_ATTR_S2_PERMS for a kernel version: S2AP R/W and the XN field (bit 54; from
    6.19 bits 54:53). A re-map that differs from a leaf only in these bits is the -EAGAIN case."""
    return PERMS | XN_PXN if has_px_ux(kernel_version) else PERMS


def field_mask(hi, lo):
    """Mask of bits hi..lo inclusive."""
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


# From 7.1 an owner annotation is typed: kvm_pgtable_stage2_annotate stores the type in bits 63:60
# (KVM_INVALID_PTE_TYPE_MASK) next to the annotation, and pKVM's host-ownership records use
# KVM_HOST_INVALID_PTE_TYPE_DONATION, 2 (type 1 is the locked-PTE marker). (since, tag) pairs:
INVALID_TYPE_MASK = 0xF << 60
OWNER_TAGS = (((7, 1, 0), 2 << 60),)


def owner_tag(kernel_version) -> int:
    """The type bits an owner annotation carries for a kernel version (a tuple; None: 5.12-6.1): 0
    before 7.1, KVM_HOST_INVALID_PTE_TYPE_DONATION in bits 63:60 from 7.1."""
    tag = 0
    for since, t in OWNER_TAGS:
        if kernel_version is not None and tuple(kernel_version) >= since:
            tag = t
    return tag


# kvm_pgtable_stage2_annotate (7.1) stores any annotation an invalid descriptor can hold: a type
# (enum kvm_invalid_pte_type) in bits 63:60 and an annotation in bits 59:1 (KVM_INVALID_PTE_ANNOT_MASK).
# Types 0 (the empty descriptor) and 1 (KVM_INVALID_PTE_TYPE_LOCKED, break-before-make's marker) are
# refused; DONATION (2) is pKVM's owner record on the host stage-2 (owner_tag), and POISONED (3) marks
# a guest page the host reclaimed by force. pgtable.c gives other types no meaning: it stores them.
INVALID_TYPE_SHIFT = 60
TYPE_LOCKED, TYPE_DONATION, TYPE_POISONED = 1, 2, 3     # enum kvm_invalid_pte_type in 7.1
ANNOT_MASK = U64 & ~(VALID | INVALID_TYPE_MASK)          # KVM_INVALID_PTE_ANNOT_MASK: bits 59:1
ANNOTATE_SINCE = (7, 1, 0)


def has_annotate(kernel_version) -> bool:
    """Whether a version's invalid descriptors are kvm_pgtable_stage2_annotate's (7.1 on; None: no)."""
    return kernel_version is not None and tuple(kernel_version) >= ANNOTATE_SINCE


def annotation_descriptor(type_, annotation):
    """The invalid descriptor kvm_pgtable_stage2_annotate stores for (type, annotation), or None
    when the call must be refused (-EINVAL): an annotation with bit 0 or any of bits 63:60 set, a
    type of 0 or TYPE_LOCKED, or a type the 4-bit field cannot hold (16 and above, or negative: the
    field would store another type than the one asked for)."""
    if annotation & ~ANNOT_MASK or not TYPE_LOCKED < type_ < 16:
        return None
    return annotation | type_ << INVALID_TYPE_SHIFT


def annotation_type(desc) -> int:
    """The type (bits 63:60) of an invalid descriptor from 7.1."""
    return (desc & INVALID_TYPE_MASK) >> INVALID_TYPE_SHIFT


def is_other_annotation(desc, tag) -> bool:
    """From 7.1 (tag: owner_tag, non-zero): an invalid descriptor that annotate stores and that is
    not an owner record: a type other than 0, TYPE_LOCKED and the owner type, with any annotation
    in bits 59:1 (POISONED, with annotation 0, is what pKVM writes; the rest pgtable.c stores as
    given). Before 7.1 (tag 0) there is no such descriptor."""
    if not tag or desc & VALID:
        return False
    t = annotation_type(desc)
    return t not in (0, TYPE_LOCKED) and t << INVALID_TYPE_SHIFT != tag


# pKVM's DONATION records (mem_protect.c, 7.1: host_stage2_set_owner_metadata_locked) keep the owner
# (enum pkvm_component_id) in bits 3:1 (KVM_HOST_DONATION_PTE_OWNER_MASK) and metadata in bits 59:4
# (KVM_HOST_DONATION_PTE_EXTRA_MASK). The hypervisor's records (PKVM_ID_HYP) carry none; a page
# donated to a protected guest records PKVM_ID_GUEST with the guest's VM handle (metadata bits
# 15:0) and gfn (bits 55:16), which pKVM reads back when the host touches the page; VM handles
# start at 0x1000 (pkvm.c's HANDLE_OFFSET), so a guest's record never has handle 0. The host
# (PKVM_ID_HOST) is never recorded: it owns a page by a mapping.
PKVM_ID_HOST, PKVM_ID_HYP, PKVM_ID_GUEST = 0, 1, 2
DONATION_OWNER_MASK = field_mask(3, 1)
DONATION_HANDLE_MASK = field_mask(19, 4)        # metadata bits 15:0: the guest's VM handle


def is_guest_donation(desc, tag) -> bool:
    """From 7.1 (tag: owner_tag, non-zero): pKVM's record of a page donated to a guest, an
    invalid descriptor of the owner type whose owner bits 3:1 are PKVM_ID_GUEST, with metadata in
    bits 59:4 that names a VM (a non-zero handle in bits 19:4; the gfn above it is any). Before
    7.1 (tag 0) there is no such record."""
    return (bool(tag) and not desc & VALID and desc & INVALID_TYPE_MASK == tag
            and (desc & DONATION_OWNER_MASK) >> 1 == PKVM_ID_GUEST
            and desc & DONATION_HANDLE_MASK != 0)


def owner_of(desc, owner_field, tag=0):
    """Owner id of an invalid descriptor shaped like an annotation, else None.

    Returns 0 for the zero descriptor (the host owns it), the id for a descriptor whose only set bits
    are in the owner field (and, with a `tag` (owner_tag), whose bits 63:60 are exactly the tag's),
    and None when other bits are set (or the valid bit is set).
    """
    hi, lo = owner_field
    mask = field_mask(hi, lo)
    if tag and desc:
        if desc & INVALID_TYPE_MASK != tag:
            return None
        desc &= ~INVALID_TYPE_MASK
        if not desc:
            return None             # a typed annotation of owner 0: not a record pKVM writes
    if desc & ~mask:
        return None
    return (desc & mask) >> lo


def owner_descriptor(owner_id, owner_field, tag=0):
    """The invalid descriptor that records `owner_id` (kvm_init_invalid_leaf_owner; from 7.1
    kvm_pgtable_stage2_annotate with the tag's type); owner 0 is the zero descriptor."""
    hi, lo = owner_field
    d = (owner_id << lo) & field_mask(hi, lo)
    return d | tag if d else d


def known_prot(prot, kernel_version):
    """The prot as a kernel version reads it: before 5.15 (PROT_SW_SINCE) only X|W|R|DEVICE."""
    return prot & 0xF if kernel_version is not None and tuple(kernel_version) < PROT_SW_SINCE else prot


def has_normal_nc(kernel_version) -> bool:
    """Whether KVM_PGTABLE_PROT_NORMAL_NC means anything for a kernel version (a tuple; None:
    5.12-6.1): from 6.9 on."""
    return kernel_version is not None and tuple(kernel_version) >= NORMAL_NC_SINCE


def has_px_ux(kernel_version) -> bool:
    """Whether the spec's PROT_PX / PROT_UX mean anything for a kernel version: from 6.19 on."""
    return kernel_version is not None and tuple(kernel_version) >= PX_UX_SINCE


def uses_xnx(kernel_version, has_xnx) -> bool:
    """Whether stage2_set_xn_attr encodes PX and UX apart: a 6.19+ kernel (has_px_ux) on a CPU with
    FEAT_XNX (has_xnx: ARM64_HAS_XNX). Before 6.19 the capability is never read."""
    return bool(has_xnx) and has_px_ux(kernel_version)


def xn_field(px, ux, xnx=False):
    """The XN bits stage2_set_xn_attr writes for (privileged, unprivileged) execute, or None
    (-EINVAL): both 0b00, neither 0b10 (XN); with `xnx` (uses_xnx) UX only 0b01 and PX only 0b11
    (XNX_EXEC); without it exactly one of them is -EINVAL."""
    if px == ux:
        return 0 if px else XN
    if not xnx:
        return None
    return XN_PXN if ux else XN_FIELD


def exec_bits(prot, px_ux=False):
    """(px, ux): whether a prot asks for privileged and unprivileged execute. X is both; with
    `px_ux` (6.19 on: has_px_ux) PROT_PX and PROT_UX add one each, before 6.19 they are ignored."""
    x = bool(prot & PROT_X)
    if not px_ux:
        return x, x
    return x or bool(prot & PROT_PX), x or bool(prot & PROT_UX)


def prot_attrs(prot, has_fwb, normal_nc=False, px_ux=False, as_s1=False, xnx=False):
    """The leaf attribute bits KVM derives from a kvm_pgtable_prot (stage2_set_prot_attr).

    MemAttr normal, device, or (with `normal_nc`, 6.9 on: has_normal_nc) normal non-cacheable for
    PROT_NORMAL_NC, S2AP R/W from PROT_R/PROT_W, SH inner shareable, AF set, XN unless PROT_X,
    software bits 58:55 copied from the prot. Returns None (-EINVAL) for X with DEVICE, and with
    `normal_nc` for X with NORMAL_NC and for DEVICE with NORMAL_NC. Without `normal_nc` the
    NORMAL_NC bit is ignored, as the kernels before it do. With `px_ux` (6.19 on) "X" is either of
    PX and UX (exec_bits): with DEVICE or NORMAL_NC still -EINVAL, and exactly one of them is
    -EINVAL too without FEAT_XNX (PX_UX_SINCE); XN is set unless both. With `as_s1` (a table
    initialised with KVM_PGTABLE_S2_AS_S1, 7.0 on) the MemAttr is MEMATTR_AS_S1 for every prot the
    rules above accept (device and non-cacheable included: stage 1 decides). With `xnx`
    (uses_xnx: 6.19 on a CPU with FEAT_XNX) one of PX and UX alone is mapped, its XN field from
    xn_field (UX only 0b01, PX only 0b11).
    """
    device = bool(prot & PROT_DEVICE)
    nc = normal_nc and bool(prot & PROT_NORMAL_NC)
    px, ux = exec_bits(prot, px_ux)
    xn = xn_field(px, ux, xnx and px_ux)
    if (device or nc) and (px or ux) or device and nc or xn is None:
        return None
    memattr = (MEMATTR_AS_S1 if as_s1 else MEMATTR_DEVICE if device else MEMATTR_NORMAL_NC if nc
               else MEMATTR_NORMAL)
    attr = memattr[has_fwb] << MEMATTR_SHIFT
    attr |= xn
    if prot & PROT_R:
        attr |= S2AP_R
    if prot & PROT_W:
        attr |= S2AP_W
    attr |= SH_INNER << SH_SHIFT
    attr |= AF
    attr |= prot & PROT_SW
    return attr


def leaf_descriptor(oa, attrs, level, page_shift):
    """A valid leaf at `level` mapping `oa` with `attrs` (kvm_init_valid_leaf_pte)."""
    kind = (VALID | TYPE) if level >= LAST_LEVEL else VALID
    return encode_address(oa, page_shift) | (attrs & (LEAF_ATTR_LO | LEAF_ATTR_HI)) | kind
