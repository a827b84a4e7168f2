"""Stand-ins for the objects the impl's walker and leaf steps touch, usable with symbolic values.

The lemmas of ``proofs/stage2/z3_lemmas.py`` call the impl's own functions (``__kvm_pgtable_walk``,
``__kvm_pgtable_visit``, ``stage2_map_walk_leaf``, ``stage2_unmap_walker``, ...) directly. Those
functions reach for a ``struct kvm_pgtable`` (geometry, owner field, TLB and warning hooks), its
``mm_ops`` (page references) and table pages. The classes here provide exactly that surface:

* ``RecordingTable``: a table page whose entries may be read at a symbolic index; every read is
  recorded and answered with a fixed descriptor (so the index the walker computed can be checked);
* ``FakePgt`` / ``FakeMmOps``: a page table with one table page ``PTP`` whose reference count is a
  symbolic integer, and (for table entries) one child page, also with a symbolic count; pages the
  step allocates come from a fixed address;
* ``walk_data``: a ``struct kvm_pgtable_walk_data`` for a walk that starts at ``addr``.

Nothing here decides anything about the table's contents: that is the impl's code, run as is.
"""

from __future__ import annotations

from ptspec.impl.pgtable import walker as W
from ptspec.impl.pgtable.geometry import Granule, Stage2Geometry

from ptspec.proofs.engines.z3.bv import SymInt

PTP = 0x4000_0000            # the table page holding the entry a step works on
NEW_TABLE = 0x5000_0000      # the page a step allocates (zalloc_page)


class RecordingTable:
    """A table page: reads at any (symbolic) index return `desc`; writes and reads are recorded."""

    def __init__(self, desc=0):
        self.desc = desc
        self.reads: list = []

    def __getitem__(self, idx):
        self.reads.append(idx)
        return self.desc

    def __setitem__(self, idx, value):
        raise AssertionError("the walk index lemma's callback writes nothing")


class RecordingPages:
    """data.pages / pgt.pgd: any page address (symbolic or not) gives a RecordingTable."""

    def __init__(self, desc=0):
        self.desc = desc
        self.reads: list = []
        self.tables: list = []

    def __getitem__(self, key):
        self.reads.append(key)
        t = RecordingTable(self.desc)
        self.tables.append(t)
        return t


class FakeMmOps:
    """kvm_pgtable_mm_ops for one parent page PTP and at most one child page, counts symbolic."""

    def __init__(self, rc, child_rc=None, cmo=True):
        self.rc = rc                  # page_count(PTP)
        self.child_rc = child_rc      # page_count(child) for a table entry's child
        self.allocated: list = []
        self.errors: list = []
        self.cmo: list = []
        self.dcache_clean_inval_poc = (lambda pa, size: self.cmo.append("dc")) if cmo else None
        self.icache_inval_pou = (lambda pa, size: self.cmo.append("ic")) if cmo else None

    def _is_parent(self, pa) -> bool:
        return not isinstance(pa, SymInt) and pa == PTP

    def get_page(self, pa):
        if self._is_parent(pa):
            self.rc = self.rc + 1
        elif not isinstance(pa, SymInt) and pa in self.allocated:
            pass
        else:
            self.errors.append(f"get_page of an unknown page {pa!r}")

    def put_page(self, pa):
        if self._is_parent(pa):
            self.rc = self.rc - 1
        elif isinstance(pa, SymInt) and self.child_rc is not None:
            self.child_rc = self.child_rc - 1
        else:
            self.errors.append(f"put_page of an unknown page {pa!r}")

    def page_count(self, pa):
        if self._is_parent(pa):
            return self.rc
        if isinstance(pa, SymInt) and self.child_rc is not None:
            return self.child_rc
        self.errors.append(f"page_count of an unknown page {pa!r}")
        return 0

    def zalloc_page(self, mc):
        pa = NEW_TABLE + (len(self.allocated) << 16)
        self.allocated.append(pa)
        return pa


class FakePgt:
    """struct kvm_pgtable as the leaf steps see it."""

    def __init__(self, page_shift: int, ia_bits: int, *, owner_field=(63, 56), max_owner_id=1,
                 rc=None, child_rc=None, cmo=True, fwb=False, eagain_continues=True,
                 table_tlbi_level0=False):
        self.geom = Stage2Geometry.from_ipa(page_shift, ia_bits)
        self.gran = self.geom.gran
        self.ia_bits = ia_bits
        self.start_level = self.geom.start_level
        self.pa_bits = self.gran.pa_bits
        self.owner_field = owner_field
        self.max_owner_id = max_owner_id
        self.eagain_continues = eagain_continues
        self.table_tlbi_level0 = table_tlbi_level0      # KvmPgtable's 6.1 TLB-hint parameter
        self.mm_ops = FakeMmOps(rc, child_rc, cmo)
        self.fwb = fwb
        self.log: list = []
        self.warnings: list = []

    def has_fwb(self) -> bool:
        return self.fwb

    def tlb_flush_vmid_ipa(self, addr, level):
        self.log.append(("tlbi_ipa", addr, level))

    def tlb_flush_vmid(self):
        self.log.append(("tlbi_vmid",))

    def warn(self, msg):
        self.warnings.append(msg)


class _Pool:
    def __init__(self, pages):
        self.pages = pages


class _MmOpsPool:
    def __init__(self, pages):
        self.pool = _Pool(pages)


class WalkPgt:
    """The kvm_pgtable a whole walk needs: geometry, roots and pages that record every read."""

    def __init__(self, page_shift: int, ia_bits: int, desc=0):
        self.geom = Stage2Geometry.from_ipa(page_shift, ia_bits)
        self.gran = self.geom.gran
        self.ia_bits = ia_bits
        self.start_level = self.geom.start_level
        self.pgd = RecordingPages(desc)           # pgt->pgd[idx]: the root page address
        self.pages = RecordingPages(desc)
        self.mm_ops = _MmOpsPool(self.pages)
        self.warnings: list = []

    def pgd_page_idx(self, addr):
        return self.geom.pgd_page_idx(addr)

    def warn(self, msg):
        self.warnings.append(msg)


def walk_data(pgt, addr, end, cb, flags=W.KVM_PGTABLE_WALK_LEAF):
    """struct kvm_pgtable_walk_data for [addr, end) with the impl's own WalkData class."""
    return W.WalkData(pgt, W.KvmPgtableWalker(cb, flags), addr, end)


def granules():
    return [Granule(ps) for ps in (12, 14, 16)]
