"""The reworked stage-2 walker's ``pgtable.c`` (Linux 6.2 and later) driven from Python via ctypes.

``CPgtableMainline`` is ``cside.CPgtable`` over a library built with ``kdiff_mainline_rt.c``
(``-DKDIFF_MAINLINE`` and the tree's ``tree_mainline`` symbols): the operations whose C signature
changed across 6.x (map's walk flags, mkold/is_young replaced by ``test_clear_young``, s8 levels)
go through the runtime's ``kdiff_ml_*`` entry points, and the new ones are added: ``split`` and
``test_clear_young``. Its raw state adds what the reworked walker's statements read
(spec/stage2/mainline.py): ``kernel_version``, the locked-PTE markers stored during the step
(``pte_locks``: [pte PA, value]) and the tables handed to ``free_unlinked``/``free_removed``
(``unlinked_freed``: [table PA, level]), the pages whose last reference was dropped, with the
number of TLB/cache events logged before (``pages_freed``: [PA, position]); its TLB log adds ``tlbi_range`` (IPA, size in bytes) and
``tlbi_ipa_nsh`` (IPA, level).

Prot and init flags are the spec's (what step records carry) and are translated to the tree's
enums at the call (``tree_mainline``: 7.x renumbers both); on a tree with
``kvm_pgtable_stage2_annotate`` (7.x) set_owner is that call with the ownership type, and
``annotate`` calls it with any type and annotation.
A call the tree does not have (mkold after 6.4, split before 6.5) raises ValueError before any C
code runs.
"""

from __future__ import annotations

import ctypes

from ptspec.proofs.kernel import cside, guard
from ptspec.proofs.kernel.cside import CPgtable, _u64
from ptspec.proofs.kernel.tree_mainline import SPEC_FLAG_AS_S1

EV_TLBI_RANGE, EV_TLBI_NSH, EV_LOCK, EV_FREE_UNLINKED, EV_FREED = 7, 8, 9, 10, 11


def _bind(lib):
    if getattr(lib, "_ml_bound", False):
        return
    u64, u32, i32, u8 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint8
    sigs = {
        "kdiff_ml_reset": (i32, [u64, i32, i32, u64]), "kdiff_ml_init": (i32, [u32, u32, i32]),
        "kdiff_ml_set_lock_marker": (None, [u64, u64]),
        "kdiff_ml_map": (i32, [u64, u64, u64, u64, i32, u32]),
        "kdiff_ml_set_owner": (i32, [u64, u64, i32, u8]),
        "kdiff_ml_mkyoung": (u64, [u64]), "kdiff_ml_mkold": (u64, [u64]),
        "kdiff_ml_is_young": (i32, [u64]), "kdiff_ml_test_clear_young": (i32, [u64, u64, i32]),
        "kdiff_ml_split": (i32, [u64, u64, i32]), "kdiff_ml_relax_perms": (i32, [u64, u64]),
        "kdiff_ml_set_xnx": (None, [i32]),
    }
    if hasattr(lib, "kdiff_ml_annotate"):
        sigs["kdiff_ml_annotate"] = (i32, [u64, u64, i32, i32, u64])
    guard.bind(lib, sigs)
    lib._ml_bound = True


class CPgtableMainline(CPgtable):
    """pgtable.c of 6.2 on, with the API of CPgtable plus split and test_clear_young."""

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, src=None, xnx: bool = False,
                 **kw):
        if src is None or getattr(src.shape, "mainline", None) is None:
            raise ValueError("CPgtableMainline needs a tree with the reworked walker (6.2 on)")
        if xnx and not src.shape.mainline.xnx:
            raise ValueError(f"Linux {src.version}'s pgtable.c never asks for ARM64_HAS_XNX "
                             "(FEAT_XNX is a 7.1 option)")
        as_s1 = kw.get("flags", 0) & SPEC_FLAG_AS_S1    # 7.1's KVM_PGTABLE_S2_AS_S1 (flags_to_tree)
        if as_s1 and "KVM_PGTABLE_S2_AS_S1" not in dict(src.shape.mainline.s2_flags):
            raise ValueError(f"Linux {src.version} has no KVM_PGTABLE_S2_AS_S1")
        kw["flags"] = kw.get("flags", 0) & ~SPEC_FLAG_AS_S1
        super().__init__(page_shift, ia_bits, src=src, **kw)
        self.flags |= as_s1
        self.shape = src.shape.mainline
        _bind(self.lib)
        if self.lib.kdiff_ml_reset(self.npages, int(self.fwb_cap), int(self.cmo), self.mc_capacity):
            raise MemoryError(f"could not map an arena of {self.npages} pages")
        self.xnx = bool(xnx)            # the CPU has FEAT_XNX (cpus_have_final_cap(ARM64_HAS_XNX))
        self.lib.kdiff_ml_set_xnx(int(self.xnx))
        self.lib.kdiff_ml_set_lock_marker(*(self.shape.lock_marker() or (0, 0)))
        self.pgt = self.lib.kdiff_pgtable()
        self.mc = cside.CMemcache(self)
        self.locks: list = []
        self.freed: list = []
        self.pages_freed: list = []

    def init(self) -> int:
        lib = self._lib()
        if self.initialised:
            raise ValueError("stage-2 table is already initialised")
        # the spec's flags (NOFWB 1, IDMAP 2) as the tree's enum (7.x: IDMAP 1, AS_S1 2, no NOFWB)
        ret = lib.kdiff_ml_init(self.ia_bits, self.shape.flags_to_tree(self.flags),
                                int(self.force_pte_all))
        self.start_level = lib.kdiff_start_level()
        if self.start_level > 3:
            self.start_level -= 256          # s8 level -1 (LPA2) read as a u32 byte
        if ret != 0:    # no root: pgt->start_level was never set; the one VTCR_EL2.SL0 gave init
            self.start_level = (2 if self.page_shift == 12 else 3) - ((lib.kdiff_vtcr() >> 6) & 3)
        shift = (self.page_shift - 3) * (4 - ((self.start_level - 1) & 0xFFFFFFFF)) + 3
        self.pgd_pages = ((((1 << self.ia_bits) - 1) >> (shift & 0xFFFFFFFFFFFFFFFF)) + 1)
        if ret == 0:
            self.initialised = True
        return ret

    def _use_mc(self, mc) -> int:
        return 0 if mc is None else 1

    def map(self, addr, size, phys, prot, mc, flags: int = 0) -> int:
        return self._lib().kdiff_ml_map(_u64("addr", addr), _u64("size", size), _u64("phys", phys),
                                        self._prot(prot), self._use_mc(mc), flags)

    def _prot(self, prot) -> int:
        """The spec's prot (what step records carry) as the tree's enum kvm_pgtable_prot."""
        return self.shape.prot_to_tree(_u64("prot", prot))

    def set_owner(self, addr, size, mc, owner_id) -> int:
        if isinstance(owner_id, bool) or not isinstance(owner_id, int) or not 0 <= owner_id <= 255:
            raise ValueError(f"owner_id must be a u8 (0..255), not {owner_id!r}")
        if self.shape.annotate:
            return self.annotate_owner(addr, size, mc, owner_id)
        return self._lib().kdiff_ml_set_owner(_u64("addr", addr), _u64("size", size),
                                              self._use_mc(mc), owner_id)

    def annotate_owner(self, addr, size, mc, owner_id) -> int:
        """7.x: set_owner's meaning through kvm_pgtable_stage2_annotate: the ownership type
        (KVM_HOST_INVALID_PTE_TYPE_DONATION, from the tree's enum) and owner_id in the owner field.
        Owner 0 (the host taking a page back) and ids above max_owner_id are no annotate call."""
        if not 1 <= owner_id <= self.max_owner_id:
            raise ValueError(f"owner_id {owner_id}: only ids 1..{self.max_owner_id} are "
                             f"annotations in Linux {self.version}")
        return self.annotate(addr, size, mc, self.shape.donation_type,
                             owner_id << self.owner_field[1])

    def annotate(self, addr, size, mc, type_, annotation) -> int:
        """kvm_pgtable_stage2_annotate(pgt, addr, size, mc, type, annotation) (7.x) as called:
        ``type_`` is an enum kvm_invalid_pte_type (a u32 here; the C refuses 0 and LOCKED itself),
        ``annotation`` a u64. A tree without annotate raises ValueError before any C runs."""
        if not self.shape.annotate:
            raise ValueError(f"Linux {self.version} has no kvm_pgtable_stage2_annotate")
        if isinstance(type_, bool) or not isinstance(type_, int) or not 0 <= type_ <= 0xFFFFFFFF:
            raise ValueError(f"type must be an enum kvm_invalid_pte_type value (a u32), not {type_!r}")
        return self._lib().kdiff_ml_annotate(_u64("addr", addr), _u64("size", size),
                                             self._use_mc(mc), type_ - (1 << 32) if type_ >> 31 else type_,
                                             _u64("annotation", annotation))

    def mkyoung(self, addr) -> int:
        return self._lib().kdiff_ml_mkyoung(_u64("addr", addr))

    def mkold(self, addr) -> int:
        if not self.shape.mkold:
            raise ValueError(f"Linux {self.version} has no kvm_pgtable_stage2_mkold "
                             "(use test_clear_young)")
        return self._lib().kdiff_ml_mkold(_u64("addr", addr))

    def is_young(self, addr) -> bool:
        if not self.shape.mkold:
            raise ValueError(f"Linux {self.version} has no kvm_pgtable_stage2_is_young "
                             "(use test_clear_young)")
        return bool(self._lib().kdiff_ml_is_young(_u64("addr", addr)))

    def relax_perms(self, addr, prot) -> int:
        return self._lib().kdiff_ml_relax_perms(_u64("addr", addr), self._prot(prot))

    def test_clear_young(self, addr, size, mkold) -> bool:
        if not self.shape.test_clear_young:
            raise ValueError(f"Linux {self.version} has no kvm_pgtable_stage2_test_clear_young")
        if mkold not in (0, 1):
            raise ValueError(f"mkold must be 0 or 1, not {mkold!r}")
        return bool(self._lib().kdiff_ml_test_clear_young(_u64("addr", addr), _u64("size", size),
                                                         int(mkold)))

    def split(self, addr, size, mc) -> int:
        if not self.shape.split:
            raise ValueError(f"Linux {self.version} has no kvm_pgtable_stage2_split")
        if mc is None:
            raise ValueError("kvm_pgtable_stage2_split needs a memcache (it reads mc->nobjs)")
        return self._lib().kdiff_ml_split(_u64("addr", addr), _u64("size", size), 1)

    def _extra_event(self, kind: int, a: int, b: int, position: int):
        if kind == EV_TLBI_RANGE:
            return ["tlbi_range", a, b << self.page_shift]
        if kind == EV_TLBI_NSH:
            return ["tlbi_ipa_nsh", a, b]
        if kind == EV_LOCK:
            self.locks.append([a, b])
            return None
        if kind == EV_FREE_UNLINKED:
            self.freed.append([a, b - (1 << 64) if b >> 63 else b])
            return None
        if kind == EV_FREED:          # position: TLB/cache events logged before it in this step
            self.pages_freed.append([a, position])
            return None
        return super()._extra_event(kind, a, b, position)

    def snapshot(self, drain_log: bool = True) -> dict:
        state = super().snapshot(drain_log)
        state["as_s1"] = bool(self.flags & SPEC_FLAG_AS_S1)
        if self.xnx:
            state["has_xnx"] = True         # (absent: no FEAT_XNX, as every state before it)
        state["pte_locks"] = [list(x) for x in self.locks]
        state["unlinked_freed"] = [list(x) for x in self.freed]
        state["pages_freed"] = [list(x) for x in self.pages_freed]
        if drain_log:
            self.locks.clear()
            self.freed.clear()
            self.pages_freed.clear()
        return state
