"""What CrossHair checks: PEP 316 contracts on impl functions, and spec/impl pairs for diffbehavior.

Contracts (``check_contract``): each wrapper calls the impl function through the module that the
kernel code calls it from (so planted bugs are what is checked) and states its postconditions
against ``spec/``:

* ``stage2_prot_attr``: ``stage2_set_prot_attr`` (control flow over the prot bits) gives the spec's
  attribute encoding, or -EINVAL exactly where the spec refuses;
* ``walk_last_level``: the impl walker (``__kvm_pgtable_walk`` over a list-of-descriptors table,
  callback collecting indices in a list) visits exactly the entries of the range, in order,
  stopping at the end of the table page.

Pairs (``diff``), one granule per function so that the bit masks stay concrete, each side guarding
the same domain (inputs outside it return None on both sides, so preconditions are respected):

* walk index: the entry the impl walker visits for an address at a level, vs the architecture's
  index (ptspec.spec.arch.geometry);
* block-size choice: the level the impl's ``kvm_block_mapping_supported`` lets map use first, vs
  the largest leaf the architecture allows for the range and output address;
* translation of one address: the impl's table after a few maps (``KvmPgtable.get_leaf`` and
  ``kvm_pte_to_phys``), vs what those maps asked for, over a fixed list of probe addresses at and
  around every mapping boundary (CrossHair concretises the address masks of a whole walk, so the
  domain is the probe list, exhausted);
* memslot check: ``fault_supports_stage2_huge_mapping`` vs the block-inside-memslot statement, for
  small memslots (page-granular inputs).
"""

from __future__ import annotations

import errno

from ptspec.spec.arch import descriptor as SD
from ptspec.spec.arch import geometry as SG
from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import walker
from ptspec.impl.pgtable.geometry import Granule
from ptspec.impl.mmu.memslot import KvmMemorySlot
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache
from ptspec.impl.pgtable.stage2 import KvmPgtable

# ------------------------------------------------------------------------------------ contracts


def stage2_prot_attr(prot: int, has_fwb: bool) -> tuple:
    """
    The stage-2 attributes of a kvm_pgtable_prot (R, W, X, DEVICE bits).

    pre: 0 <= prot < 16
    post: _ == ((0, SD.prot_attrs(prot, has_fwb)) if SD.prot_attrs(prot, has_fwb) is not None else (-errno.EINVAL, None))
    """
    return stage2_map.stage2_set_prot_attr(prot, has_fwb)


class _WalkPgt:
    """A one-page, last-level table for the walker: 4K granule, descriptors all 0."""

    def __init__(self):
        self.gran = Granule(12)
        self.mm_ops = _Ns()
        self.mm_ops.pool = _Ns()
        self.mm_ops.pool.pages = {0: _ZeroTable()}


class _Ns:
    pass


class _ZeroTable:
    """A table page of n zero descriptors (reads at any index in range give 0); a list would
    make CrossHair branch over every element for a symbolic index."""

    def __init__(self, n=512):
        self.n = n

    def __getitem__(self, idx):
        if not 0 <= idx < self.n:
            raise IndexError(idx)
        return 0


def walk_last_level(first: int, npages: int) -> list:
    """
    The entries the impl walker visits at the last level for [first, first + npages) pages.

    pre: 0 <= first < 2 or 510 <= first < 512
    pre: 1 <= npages <= 3
    post: _ == list(range(first, min(first + npages, 512)))
    """
    seen = []

    def cb(addr, end, level, tbl, ptp, idx, flag):
        seen.append(idx)
        return 0
    pgt = _WalkPgt()
    data = walker.WalkData(pgt, walker.KvmPgtableWalker(cb, walker.KVM_PGTABLE_WALK_LEAF),
                           first * 4096, (first + npages) * 4096)
    walker.__dict__["__kvm_pgtable_walk"](data, 0, 3)
    return seen


# ------------------------------------------------------------------------------------ walk index

class _IndexPgt:
    """A walk whose table pages are all-zero lists: only the index the walker picks matters."""

    class _Pages:
        def __init__(self, n):
            self.n = n

        def __getitem__(self, key):
            return _ZeroTable(self.n)

    def __init__(self, ps):
        self.gran = Granule(ps)
        self.mm_ops = type("M", (), {})()
        self.mm_ops.pool = type("P", (), {})()
        self.mm_ops.pool.pages = _IndexPgt._Pages(1 << (ps - 3))


def _impl_index(ps, addr, level):
    seen = []

    def cb(a, e, lvl, tbl, ptp, idx, flag):
        seen.append(idx)
        return 1
    data = walker.WalkData(_IndexPgt(ps), walker.KvmPgtableWalker(cb, walker.KVM_PGTABLE_WALK_LEAF),
                           addr, addr + 1)
    walker.__dict__["__kvm_pgtable_walk"](data, 0, level)
    return seen[0] if seen else None


def _index_domain(ps, addr, level):
    return 0 <= addr < (1 << SG.IPA_RANGE[ps][1]) and 1 <= level <= 3


def impl_walk_index_4k(addr: int, level: int):
    return _impl_index(12, addr, level) if _index_domain(12, addr, level) else None


def spec_walk_index_4k(addr: int, level: int):
    if not _index_domain(12, addr, level):
        return None
    return (addr >> SG.granule_shift(level, 12)) % SG.entries_per_table(12)


# ------------------------------------------------------------------------------------ block size

def _block_domain(ps, addr, end, phys):
    page = 1 << ps
    return (0 <= addr < end <= (1 << 40) and 0 <= phys < (1 << 40)
            and addr % page == 0 and end % page == 0 and phys % page == 0)


def _impl_block_level(ps, start_level, addr, end, phys):
    gran = Granule(ps)
    for level in range(start_level, 4):
        if stage2_map.kvm_block_mapping_supported(gran, addr, end, phys, level, gran.pa_bits):
            return level
    return None


def _spec_block_level(ps, start_level, addr, end, phys):
    for level in SG.leaf_levels(start_level, ps):
        g = SG.granule_size(level, ps)
        if addr % g == 0 and phys % g == 0 and addr + g <= end:
            return level
    return None


def impl_block_level_16k(addr: int, end: int, phys: int):
    return _impl_block_level(14, 2, addr, end, phys) if _block_domain(14, addr, end, phys) else None


def spec_block_level_16k(addr: int, end: int, phys: int):
    return _spec_block_level(14, 2, addr, end, phys) if _block_domain(14, addr, end, phys) else None


# ------------------------------------------------------------------------------------ translation

# (page_shift, ia_bits, [(ipa, size, phys)]): maps done on a fresh table, block and page sized,
# with 64K output addresses above 2**48 (descriptor bits 15:12)
TRANSLATE_SETUPS = {
    "64k": (16, 52, [(0x2000_0000, 0x2000_0000, 0xA_0000_2000_0000),
                     (0x4001_0000, 0x1_0000, 0xF_0000_0001_0000)]),
}
_TABLES: dict = {}


def build_tables():
    """(Re)build the translation tables with the impl as it is now (planted bugs included)."""
    for name, (ps, ia, maps) in TRANSLATE_SETUPS.items():
        pgt = KvmPgtable(ps, ia)
        if pgt.init():
            raise RuntimeError(f"could not initialise the {name} translation table")
        mc = KvmMmuMemoryCache(pgt.pool)
        for ipa, size, phys in maps:
            mc.topup(8)
            ret = pgt.map(ipa, size, phys, 0b111, mc)
            if ret:
                raise RuntimeError(f"map({ipa:#x}, {size:#x}, {phys:#x}) returned {ret}")
        _TABLES[name] = pgt


def _probes(name):
    ps, _, maps = TRANSLATE_SETUPS[name]
    page = 1 << ps
    out = []
    for ipa, size, _ in maps:
        out += [ipa - 1, ipa, ipa + 1, ipa + page - 1, ipa + page, ipa + size // 2,
                ipa + size - 1, ipa + size]
    return sorted(set(p for p in out if p >= 0))


PROBES = {name: _probes(name) for name in TRANSLATE_SETUPS}


def _impl_translate(name, i):
    pgt = _TABLES[name]
    ipa = PROBES[name][i]
    ret, pte, level = pgt.get_leaf(ipa)
    if ret or not SD.is_valid_leaf(pte, level):
        return None
    g = 1 << pgt.gran.shift[level]
    return stage2_map.kvm_pte_to_phys(pte, pgt.gran.page_shift) + (ipa & (g - 1))


def _spec_translate(name, i):
    ipa = PROBES[name][i]
    for base, size, phys in TRANSLATE_SETUPS[name][2]:
        if base <= ipa < base + size:
            return phys + (ipa - base)
    return None


def impl_translate_64k(i: int):
    return _impl_translate("64k", i) if 0 <= i < len(PROBES["64k"]) else None


def spec_translate_64k(i: int):
    return _spec_translate("64k", i) if 0 <= i < len(PROBES["64k"]) else None


# ------------------------------------------------------------------------------------ memslots

class _Kvm:
    page_shift = 12


PMD_4K = 1 << 21
# faulting host addresses: at a 2M boundary, and inside a block
HVAS = (0x4000_0000, 0x4020_3000)
_HVA_PFNS = tuple(h >> 12 for h in HVAS)


def _slot_domain(gfn, npages, upfn, i):
    return (0 <= i < len(HVAS) and 0 <= gfn < (1 << 28) and 1 <= npages <= 4096
            and 0 <= upfn <= _HVA_PFNS[i] < upfn + npages)


def impl_memslot_block_4k(gfn: int, npages: int, upfn: int, i: int):
    if not _slot_domain(gfn, npages, upfn, i):
        return None
    slot = KvmMemorySlot(0, gfn, npages, upfn << 12)
    return bool(mmu_fault.fault_supports_stage2_huge_mapping(_Kvm(), slot, HVAS[i], PMD_4K))


def spec_memslot_block_4k(gfn: int, npages: int, upfn: int, i: int):
    if not _slot_domain(gfn, npages, upfn, i):
        return None
    per = PMD_4K >> 12                       # pages per 2M block
    ipfn = gfn + (_HVA_PFNS[i] - upfn)       # the faulting guest page
    first = ipfn - ipfn % per                # first guest page of the block holding it
    inside = gfn <= first and first + per <= gfn + npages
    return inside and (upfn + (first - gfn)) % per == 0


assert errno  # used by the contract of stage2_prot_attr
