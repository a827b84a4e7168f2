"""The shape of a reworked stage-2 walker (Linux 6.2 and later), read from a tree's source text.

From 6.2 on, ``pgtable.c`` walkers take a ``struct kvm_pgtable_visit_ctx``, walks may be shared
(``KVM_PGTABLE_WALK_SHARED``), break-before-make locks the PTE with a marker, and tables removed
by a walk go back through ``mm_ops`` (``free_removed_table`` in 6.2-6.4, ``free_unlinked_table``
from 6.5). ``detect(pgtable_c, header)`` returns a ``Mainline`` describing what the tree has, or
None for an older walker (``ptspec.proofs.kernel.tree`` reads the rest of the shape):

* ``visit_ctx``: the visitor takes the context (the reason this module applies at all);
* ``free``: ``"free_removed"`` or ``"free_unlinked"``;
* ``level_s8``: levels are ``s8`` (6.8 on, for LPA2's level -1);
* ``mkold``: ``kvm_pgtable_stage2_mkold``/``_is_young`` exist (before 6.5), otherwise
  ``kvm_pgtable_stage2_test_clear_young``;
* ``split``, ``create_unlinked``, ``hyp_unmap``, ``tlbi_range`` (``kvm_tlb_flush_vmid_range``);
* ``lock``: the locked-PTE marker, ``("bit", n)`` (``KVM_INVALID_PTE_LOCKED BIT(n)``) or
  ``("type", hi, lo, value)`` (7.x: ``KVM_INVALID_PTE_TYPE_LOCKED`` in ``KVM_INVALID_PTE_TYPE_MASK``);
* ``annotate``: ``kvm_pgtable_stage2_annotate`` replaces ``set_owner`` (7.x: invalid descriptors
  carry a type in bits 63:60 and an annotation in the others).

* ``prot_masks``/``prot_to_tree``: the tree's ``enum kvm_pgtable_prot`` value for each of the spec's
  X, W, R, DEVICE (7.x renumbers it: X is PX | UX), to translate a spec prot at the C call;
* ``normal_nc``: the enum's ``KVM_PGTABLE_PROT_NORMAL_NC`` (6.9 on; None without it): the spec's
  NORMAL_NC bit is translated to it, and the generator draws NORMAL_NC prots only for such a tree;
* ``px``/``ux``: the enum's ``KVM_PGTABLE_PROT_PX`` and ``_UX`` (7.1 on): the spec's PX and UX bits
  are translated to them, and the generator draws prots with one of them only for such a tree;
* ``xnx``: pgtable.c reads ``ARM64_HAS_XNX`` (7.1 on): a table may be built on a CPU with
  FEAT_XNX (the shim answers the capability from the table's ``xnx`` option);
* ``s2_flags``/``flags_to_tree``: ``enum kvm_pgtable_stage2_flags`` (7.x: IDMAP BIT(0), no NOFWB);
* ``donation_type``: ``KVM_HOST_INVALID_PTE_TYPE_DONATION``, the annotate type set_owner records use;
  ``poisoned_type``: ``KVM_GUEST_INVALID_PTE_TYPE_POISONED`` (annotate records carry the spec's
  7.1 numbers, so a tree that renumbers the enum is refused).

Nothing is inferred from the version number. ``defines()`` are the preprocessor symbols
``kdiff_mainline_rt.c`` is built with; ``unsupported()`` says, in one line, what the shim cannot
judge (a prot enum with no value for one of the spec's bits, annotate without the donation type),
so such a tree is refused rather than misjudged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LOCK_BIT = re.compile(r"#define\s+KVM_INVALID_PTE_LOCKED\s+BIT\((\d+)\)")
_TYPE_MASK = re.compile(r"#define\s+KVM_INVALID_PTE_TYPE_MASK\s+GENMASK\((\d+),\s*(\d+)\)")
_TYPE_LOCKED = re.compile(r"KVM_INVALID_PTE_TYPE_LOCKED\s*=\s*(\d+)")


@dataclass(frozen=True)
class Mainline:
    free: str                   # "free_removed" or "free_unlinked"
    level_s8: bool
    mkold: bool
    split: bool
    create_unlinked: bool
    hyp_unmap: bool
    tlbi_range: bool
    test_clear_young: bool
    annotate: bool
    lock: tuple | None          # ("bit", n) or ("type", hi, lo, value)
    prot_bits: tuple = ()       # bit of KVM_PGTABLE_PROT_X (or PX), _W, _R, _DEVICE in the enum
    memattr1: bool = False      # PAGE_S2_MEMATTR takes one argument (7.x)
    walk_flags_api: bool = False  # mkyoung and relax_perms take walk flags (6.18 on)
    mkyoung_void: bool = False  # kvm_pgtable_stage2_mkyoung returns nothing (6.13 on)
    handle_fault: bool = False  # the walk flags have KVM_PGTABLE_WALK_HANDLE_FAULT (6.2-6.18)
    prot_masks: tuple = ()      # the enum's mask for each spec prot bit (X, W, R, DEVICE): X is PX|UX
    donation_type: int | None = None  # KVM_HOST_INVALID_PTE_TYPE_DONATION's value (annotate trees)
    poisoned_type: int | None = None  # KVM_GUEST_INVALID_PTE_TYPE_POISONED's value (annotate trees)
    s2_flags: tuple = ()        # (name, value) of enum kvm_pgtable_stage2_flags (7.x drops NOFWB)
    normal_nc: int | None = None  # KVM_PGTABLE_PROT_NORMAL_NC's value (6.9 on), None if absent
    px: int | None = None       # KVM_PGTABLE_PROT_PX's value (7.1 on), None if absent
    ux: int | None = None       # KVM_PGTABLE_PROT_UX's value (7.1 on), None if absent
    xnx: bool = False           # pgtable.c asks cpus_have_final_cap(ARM64_HAS_XNX) (7.1 on)

    def flags_to_tree(self, flags: int) -> int:
        """Stage-2 init flags in the spec's encoding (6.x: KVM_PGTABLE_S2_NOFWB BIT(0),
        KVM_PGTABLE_S2_IDMAP BIT(1); and SPEC_FLAG_AS_S1, BIT(2), for 7.1's KVM_PGTABLE_S2_AS_S1)
        as this tree's enum; a flag the tree lacks raises ValueError."""
        have = dict(self.s2_flags)
        out = 0
        for bit, name in ((0, "KVM_PGTABLE_S2_NOFWB"), (1, "KVM_PGTABLE_S2_IDMAP"),
                          (2, "KVM_PGTABLE_S2_AS_S1")):
            if flags >> bit & 1:
                if name not in have:
                    raise ValueError(f"this tree's enum kvm_pgtable_stage2_flags has no {name}")
                out |= have[name]
        if flags & ~7:
            raise ValueError(f"stage-2 flags {flags:#x}: only NOFWB (1), IDMAP (2) and AS_S1 (4) "
                             "are known")
        return out

    def prot_to_tree(self, prot: int) -> int:
        """A prot in the spec's encoding (spec/arch/descriptor.py PROT_*: X 0, W 1, R 2, DEVICE 3,
        NORMAL_NC 4, PX 5, UX 6, software bits 58:55) as this tree's enum kvm_pgtable_prot. Bits
        the spec's enum has no name for (7..54, 59..63), and NORMAL_NC, PX or UX on a tree whose
        enum lacks it, raise
        ValueError when the tree's enum is renumbered: they would mean something else in it. (On
        a tree with the spec's numbering the prot is passed as it is: before 6.9 pgtable.c ignores
        bit 4.)"""
        if self.identity_prot():
            return prot
        known = SPEC_SW_MASK | ((1 << len(SPEC_PROT_BITS)) - 1)
        for spec_bit, tree_value in self._extra_bits():
            known |= spec_bit
        unknown = prot & ~known
        if unknown:
            raise ValueError(f"prot {prot:#x} sets bits {unknown:#x} that the spec's enum "
                             "kvm_pgtable_prot does not name or this tree's lacks (no "
                             "translation to this tree)")
        out = prot & SPEC_SW_MASK
        for bit, mask in zip(SPEC_PROT_BITS, self.prot_masks):
            if prot >> bit & 1:
                out |= mask
        for spec_bit, tree_value in self._extra_bits():
            if prot & spec_bit:
                out |= tree_value
        return out

    def _extra_bits(self):
        """(spec bit, tree value) of the prot bits beyond X/W/R/DEVICE this tree's enum has."""
        return tuple((b, v) for b, v in ((SPEC_PROT_NORMAL_NC, self.normal_nc),
                                         (SPEC_PROT_PX, self.px), (SPEC_PROT_UX, self.ux))
                     if v is not None)

    def identity_prot(self) -> bool:
        """The tree's enum kvm_pgtable_prot numbers X, W, R, DEVICE (and NORMAL_NC, if it has
        it) as the spec's does: a spec prot is passed unchanged."""
        return ((not self.prot_masks or self.prot_masks == tuple(1 << b for b in SPEC_PROT_BITS))
                and self.normal_nc in (None, SPEC_PROT_NORMAL_NC))

    def lock_marker(self) -> tuple[int, int] | None:
        """(mask, bits): a descriptor is the locked marker when (desc & mask) == bits (bit 0, valid,
        is left out of the mask so a marker stored as valid is still seen)."""
        if self.lock is None:
            return None
        if self.lock[0] == "bit":
            return 1 << self.lock[1], 1 << self.lock[1]
        _, hi, lo, value = self.lock
        mask = ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)
        return mask, value << lo

    def defines(self) -> tuple:
        out = ["KDIFF_MAINLINE"]
        if self.free == "free_removed":
            out.append("KDIFF_ML_FREE_REMOVED")
        if self.level_s8:
            out.append("KDIFF_ML_LEVEL_S8")
        if self.mkold:
            out.append("KDIFF_ML_MKOLD")
        if self.split:
            out.append("KDIFF_ML_SPLIT")
        if self.memattr1:
            out.append("KDIFF_ML_MEMATTR1")
        if self.walk_flags_api:
            out.append("KDIFF_ML_WALK_FLAGS_API")
        if self.mkyoung_void:
            out.append("KDIFF_ML_MKYOUNG_VOID")
        if self.walk_flags_api and self.handle_fault:
            out.append("KDIFF_ML_HANDLE_FAULT")
        if self.annotate:
            out.append("KDIFF_ML_ANNOTATE")
        return tuple(out)

    def describe(self) -> str:
        parts = ["walker takes kvm_pgtable_visit_ctx", f"tables freed by {self.free}",
                 "s8 levels" if self.level_s8 else "u32 levels",
                 "mkold/is_young" if self.mkold else "test_clear_young"]
        parts += [n for n, on in (("split", self.split), ("create_unlinked", self.create_unlinked),
                                  ("hyp_unmap", self.hyp_unmap), ("range TLBI", self.tlbi_range),
                                  ("annotate", self.annotate)) if on]
        if self.walk_flags_api:
            parts.append("mkyoung/relax_perms take walk flags (the shim passes "
                         + ("KVM_PGTABLE_WALK_HANDLE_FAULT, as the fault path does)" if self.handle_fault
                            else "none, as the fault path does)"))
        elif self.mkyoung_void:
            parts.append("void mkyoung")
        if self.prot_masks and self.prot_masks != tuple(1 << b for b in SPEC_PROT_BITS):
            parts.append("prot enum renumbered (X/W/R/DEVICE = " +
                         "/".join(f"{m:#x}" for m in self.prot_masks) + "; translated from the spec's)")
        if self.normal_nc is not None:
            parts.append(f"NORMAL_NC prot {self.normal_nc:#x}")
        if self.px is not None and self.ux is not None:
            parts.append(f"PX/UX prots {self.px:#x}/{self.ux:#x} (no FEAT_XNX: one alone is -EINVAL"
                         + ("; FEAT_XNX: XN 0b01/0b11)" if self.xnx else ")"))
        if self.donation_type is not None:
            parts.append(f"owner annotations typed {self.donation_type} in bits 63:60")
        if self.annotate and self.poisoned_type is not None:
            parts.append(f"annotate driven (POISONED {self.poisoned_type}, other types, refused "
                         "inputs)")
        if "KVM_PGTABLE_S2_AS_S1" in dict(self.s2_flags):
            parts.append("KVM_PGTABLE_S2_AS_S1 on 16k-47's table")
        if self.lock:
            parts.append(f"locked-PTE marker BIT({self.lock[1]})" if self.lock[0] == "bit" else
                         f"locked-PTE type {self.lock[3]} in bits {self.lock[1]}:{self.lock[2]}")
        return ", ".join(parts)


def detect(pgtable_c: str, header: str) -> Mainline | None:
    """The reworked walker's shape, or None when the visitor does not take a visit_ctx."""
    text = pgtable_c + "\n" + header
    if "struct kvm_pgtable_visit_ctx" not in header:
        return None
    has = lambda fn: re.search(rf"\b{fn}\s*\(", header) is not None   # noqa: E731
    lock = None
    m = _LOCK_BIT.search(text)
    if m:
        lock = ("bit", int(m.group(1)))
    else:
        tm, tl = _TYPE_MASK.search(text), _TYPE_LOCKED.search(text)
        if tm and tl:
            lock = ("type", int(tm.group(1)), int(tm.group(2)), int(tl.group(1)))
    return Mainline(
        free="free_removed" if "free_removed_table" in header else "free_unlinked",
        level_s8=re.search(r"kvm_granule_shift\(\s*s8\b", header) is not None,
        mkold=has("kvm_pgtable_stage2_mkold"), split=has("kvm_pgtable_stage2_split"),
        create_unlinked=has("kvm_pgtable_stage2_create_unlinked"),
        hyp_unmap=has("kvm_pgtable_hyp_unmap"), tlbi_range=has("kvm_tlb_flush_vmid_range"),
        test_clear_young=has("kvm_pgtable_stage2_test_clear_young"),
        annotate=has("kvm_pgtable_stage2_annotate"), lock=lock,
        prot_bits=tuple(_prot_bit(header, n) for n in ("X", "W", "R", "DEVICE")),
        prot_masks=tuple(_prot_mask(header, n) for n in ("X", "W", "R", "DEVICE")),
        s2_flags=tuple(sorted(_bit_enum(header, "kvm_pgtable_stage2_flags").items())),
        normal_nc=_prot_mask(header, "NORMAL_NC"),
        px=_prot_mask(header, "PX"), ux=_prot_mask(header, "UX"),
        xnx=re.search(r"cpus_have_final_cap\(\s*ARM64_HAS_XNX\s*\)", pgtable_c) is not None,
        donation_type=_enum_value(header, "kvm_invalid_pte_type", "KVM_HOST_INVALID_PTE_TYPE_DONATION"),
        poisoned_type=_enum_value(header, "kvm_invalid_pte_type", "KVM_GUEST_INVALID_PTE_TYPE_POISONED"),
        memattr1=re.search(r"PAGE_S2_MEMATTR\(\s*\w+\s*\)", pgtable_c) is not None,
        walk_flags_api=re.search(r"kvm_pgtable_stage2_relax_perms\s*\([^)]*kvm_pgtable_walk_flags",
                                 header) is not None,
        mkyoung_void=re.search(r"void\s+kvm_pgtable_stage2_mkyoung\s*\(", header) is not None,
        handle_fault=re.search(r"\bKVM_PGTABLE_WALK_HANDLE_FAULT\s*=", header) is not None)


# the enum kvm_pgtable_prot the spec's encodings are (spec/arch/descriptor.py PROT_*)
SPEC_PROT_BITS = (0, 1, 2, 3)
SPEC_SW_MASK = 0xF << 55
SPEC_PROT_NORMAL_NC = 1 << 4     # spec/arch/descriptor.py PROT_NORMAL_NC
SPEC_PROT_PX, SPEC_PROT_UX = 1 << 5, 1 << 6   # PROT_PX, PROT_UX (X, bit 0, is both)
# 7.x: pgtable.c stores any annotation in bits 59:1; where pKVM keeps the owner id of a donated page
# is mem_protect.c's KVM_HOST_DONATION_PTE_OWNER_MASK, GENMASK(3, 1) (not among the cached files,
# so a fact stated here), and the ids set_owner records use are those of 6.x: up to PKVM_ID_HYP, 1
ANNOTATE_OWNER_FIELD = (3, 1)
ANNOTATE_MAX_OWNER_ID = 1
SPEC_FLAG_AS_S1 = 1 << 2         # the spec's (and the harness's) init flag for KVM_PGTABLE_S2_AS_S1        # KVM_PGTABLE_PROT_SW0..3, the same bits in every enum so far


def _enum_body(header: str, name: str) -> str | None:
    m = re.search(rf"enum\s+{name}\s*\{{(.*?)\}};", header, re.S)
    return None if m is None else re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)


def _prot_mask(header: str, name: str):
    """The value of KVM_PGTABLE_PROT_<name> in the tree's enum: BIT(n), or an OR of other members
    (7.x: X = PX | UX); None if absent."""
    return _bit_enum(header, "kvm_pgtable_prot").get(f"KVM_PGTABLE_PROT_{name}")


def _bit_enum(header: str, enum: str) -> dict:
    """Members of an enum whose values are BIT(n) or ORs of earlier members ({} if absent)."""
    body = _enum_body(header, enum)
    if body is None:
        return {}
    values = {}
    for member in body.split(","):
        if "=" not in member:
            continue
        key, expr = (x.strip() for x in member.split("=", 1))
        total = 0
        for term in (t.strip() for t in expr.split("|")):
            b = re.fullmatch(r"BIT\((\d+)\)", term)
            if b:
                total |= 1 << int(b.group(1))
            elif term in values:
                total |= values[term]
            else:
                total = None
                break
        if total is not None:
            values[key] = total
    return values


def _enum_value(header: str, enum: str, member: str):
    """The value of an enum member (explicit, or one more than the previous), None if absent."""
    body = _enum_body(header, enum)
    if body is None:
        return None
    value = -1
    for item in (x.strip() for x in body.split(",")):
        if not item:
            continue
        key, _, expr = (x.strip() for x in item.partition("="))
        value = int(expr, 0) if expr else value + 1
        if key == member:
            return value
    return None


def _prot_bit(header: str, name: str):
    """The bit of KVM_PGTABLE_PROT_<name> (X: of PX when X is PX | UX), or None."""
    for n in (name, "PX") if name == "X" else (name,):
        m = re.search(rf"KVM_PGTABLE_PROT_{n}\s*=\s*BIT\((\d+)\)", header)
        if m:
            return int(m.group(1))
    return None


def unsupported(ml: Mainline) -> str | None:
    """Why the shim cannot judge this reworked walker yet, or None."""
    if ml.prot_bits != SPEC_PROT_BITS and (None in ml.prot_masks or len(ml.prot_masks) != 4):
        names = ", ".join(f"{n} bit {b}" for n, b in zip(("X/PX", "W", "R", "DEVICE"), ml.prot_bits))
        return (f"enum kvm_pgtable_prot is renumbered ({names}; the spec's is X 0, W 1, R 2, "
                "DEVICE 3) and set_owner became kvm_pgtable_stage2_annotate (a type in bits "
                "63:60): not judged by the spec yet (it would misjudge every map)")
    if ml.annotate and ml.donation_type is None:
        return ("kvm_pgtable_stage2_annotate (7.x: invalid descriptors carry a type in bits 63:60 "
                "and an annotation; set_owner is gone) is not judged by the spec yet")
    if ml.annotate and ((ml.donation_type, ml.poisoned_type) != (2, 3)
                        or ml.lock is not None and ml.lock[0] == "type" and ml.lock[3] != 1):
        return ("enum kvm_invalid_pte_type is renumbered (the spec's is 7.1's: LOCKED 1, "
                f"DONATION 2, POISONED 3; this tree's DONATION {ml.donation_type}, POISONED "
                f"{ml.poisoned_type}): annotations would be misjudged")
    if ml.lock is None:
        return "no locked-PTE marker (KVM_INVALID_PTE_LOCKED) found: the shim cannot watch it"
    if ml.free == "free_unlinked" and not ml.test_clear_young and not ml.mkold:
        return "neither kvm_pgtable_stage2_mkold nor kvm_pgtable_stage2_test_clear_young"
    return None
