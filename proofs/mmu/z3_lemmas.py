"""z3 lemmas over the impl's fault-path helpers of arch/arm64/kvm/mmu.c (5.13): memslot blocks.

Runs the impl's own ``fault_supports_stage2_huge_mapping`` and ``transparent_hugepage_adjust``
(``impl/mmu/fault.py``) on symbolic memslots, host addresses and pfns (``proofs/engines/z3/bv.py``), per
granule and per block size (concrete), against statements written from what a stage-2 block means:

* a block of size M for the faulting address is allowed exactly when every page of the block lies
  inside the memslot and maps to the host page at the same offset, i.e. the IPA block lies in
  [gpa_start, gpa_start + size) and its first page's host address is M-aligned;
* ``transparent_hugepage_adjust`` either leaves (ipa, pfn) alone with a page size, or returns the
  PMD block that contains the faulting IPA and the huge page that contains the pfn, with the IPA
  and PFN offsets inside them equal, and swaps the page reference from the old pfn to the new one.

The host facts assumed (not proved) are the host's own guarantees: a transparent huge page is
mapped PMD-aligned, so a pfn inside one sits at the same offset as its host virtual address.
Addresses here are exact integers (z3 Int, ``z3_bv.SymNat``): sums and comparisons of 64-bit
addresses are what bit-blasting handles worst, and the impl's masks are all constants.
* the hyp private VA allocator (``__create_hyp_private_mapping``, impl/mmu/hyp.py) never hands out
  a range that leaves the half of the hyp VA space ``io_map_base`` is in, for every size up to half
  the VA space; the range is page-aligned, ends at the old ``io_map_base`` and covers the request.
  (Beyond that bound the kernel's one-bit test is blind: see ``lemma_hyp_va``.)
"""

from __future__ import annotations

import z3

from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.impl.mmu.host import HostSizes
from ptspec.impl.mmu.memslot import KvmMemorySlot

from ptspec.proofs.engines.z3.bv import Inputs, SymBool, SymNat, as_bv, nat, sym
from ptspec.proofs.mmu import z3_programs as ZP
from ptspec.proofs.stage2.z3_lemmas import combine

PAGE_SHIFTS = (12, 14, 16)
USER_VA_BITS = 48


def _z(x):
    return as_bv(x)


class _Host:
    """The host side transparent_hugepage_adjust calls: THP test and pfn references."""

    def __init__(self, sz, thp):
        self.sz = sz
        self.thp = thp
        self.refs: list = []

    def is_transparent_hugepage(self, pfn):
        return SymBool(self.thp) if isinstance(self.thp, z3.BoolRef) else self.thp

    def kvm_release_pfn_clean(self, pfn):
        self.refs.append(("put", pfn))

    def kvm_get_pfn(self, pfn):
        self.refs.append(("get", pfn))


class _Kvm:
    def __init__(self, ps, host=None):
        self.page_shift = ps
        self.host = host


def _slot_inputs(ps, inputs):
    """Symbolic memslot (base_gfn, npages, userspace_addr) and a faulting hva inside it, with the
    KVM_SET_USER_MEMORY_REGION limits as assumptions."""
    gfn, npages, uaddr, hva = (nat(n, 64, inputs) for n in ("base_gfn", "npages", "uaddr", "hva"))
    size = _z(npages) * (1 << ps)
    gpa = _z(gfn) * (1 << ps)
    assume = [_z(npages) >= 1, _z(npages) < (1 << 31),           # KVM_MEM_MAX_NR_PAGES
              _z(gfn) < (1 << (52 - ps)),                          # inside a 52-bit IPA space
              _mod(_z(uaddr), 1 << ps) == 0,                       # page-aligned user address
              _z(uaddr) + size <= (1 << USER_VA_BITS),
              _z(hva) >= _z(uaddr), _z(hva) < _z(uaddr) + size]
    return gfn, npages, uaddr, hva, gpa, size, assume


def _mod(x, m: int):
    """x mod m (m a power of two) on exact integers."""
    assert m & (m - 1) == 0
    return x % m


def _block_ok(m, ipa, gpa, size, uaddr):
    """spec: the M-block holding ipa lies inside the memslot and maps to an M-aligned host range."""
    blk = ipa - _mod(ipa, m)
    return z3.And(blk >= gpa, blk + m <= gpa + size,
                  _mod(_z(uaddr) + (blk - gpa), m) == 0)


def lemma_huge_mapping(rlimit, timeout_ms, deadline=None):
    """fault_supports_stage2_huge_mapping(slot, hva, M) is true exactly when every page of the
    M-block around the faulting IPA lies inside the memslot and maps to the host page at the same
    offset (the block's host image is one M-aligned block), for every granule, every block size the
    fault path asks for (page, PMD, PUD) and every memslot and hva inside it."""
    def cases():
        for ps in PAGE_SHIFTS:
            sz = HostSizes(ps)
            for m in (sz.PAGE_SIZE, sz.PMD_SIZE, sz.PUD_SIZE):
                inputs = Inputs()
                gfn, npages, uaddr, hva, gpa, size, assume = _slot_inputs(ps, inputs)

                def body(ps=ps, m=m, gfn=gfn, npages=npages, uaddr=uaddr, hva=hva, gpa=gpa,
                         size=size):
                    slot = KvmMemorySlot(0, gfn, npages, uaddr)
                    got = mmu_fault.fault_supports_stage2_huge_mapping(_Kvm(ps), slot, hva, m)
                    ipa = gpa + (_z(hva) - _z(uaddr))
                    return {"MS: a block is allowed exactly when it lies inside the memslot and "
                            "maps the host pages at the same offsets":
                            (_z(got) != 0) == _block_ok(m, ipa, gpa, size, uaddr)}
                yield (f"{1 << (ps - 10)}K block {m:#x}", body, inputs, assume, None,
                       ZP.huge_mapping(ps, m))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_thp_adjust(rlimit, timeout_ms, deadline=None):
    """transparent_hugepage_adjust keeps the IPA/PFN offset: it returns (PAGE_SIZE, pfn, ipa)
    unchanged, or (PMD_SIZE, pfn', ipa') with ipa' the PMD-aligned block holding ipa, pfn' the
    PMD-aligned huge page holding pfn, ipa - ipa' == (pfn - pfn') pages, and the block allowed for
    the memslot; the page reference moves from pfn to pfn'. For every granule, memslot, hva inside
    it and pfn (a THP pfn sits at its hva's offset inside the huge page)."""
    def cases():
        for ps in PAGE_SHIFTS:
            sz = HostSizes(ps)
            inputs = Inputs()
            gfn, npages, uaddr, hva, gpa, size, assume = _slot_inputs(ps, inputs)
            pfn = nat("pfn", 64, inputs)
            thp = z3.Bool("thp")
            inputs["thp"] = thp
            ipa_z = gpa + (_z(hva) - _z(uaddr))
            assume = assume + [
                _z(pfn) < (1 << (52 - ps)),
                # the huge page is PMD-aligned in both host VA and PA: pfn's page and hva's page
                # sit at the same offset inside their PMD blocks
                z3.Implies(thp, (_z(pfn) * (1 << ps) - (_z(hva) - _z(hva) % (1 << ps)))
                           % sz.PMD_SIZE == 0)]

            def body(ps=ps, sz=sz, gfn=gfn, npages=npages, uaddr=uaddr, hva=hva, pfn=pfn,
                     thp=thp, ipa_z=ipa_z, gpa=gpa, size=size):
                host = _Host(sz, thp)
                slot = KvmMemorySlot(0, gfn, npages, uaddr)
                ipa = SymNat(ipa_z)
                size_out, pfn2, ipa2 = mmu_fault.transparent_hugepage_adjust(
                    _Kvm(ps, host), slot, hva, pfn, ipa)
                m = sz.PMD_SIZE
                if size_out == sz.PAGE_SIZE:
                    return {"MS: a page mapping keeps ipa and pfn":
                            z3.And(_z(pfn2) == _z(pfn), _z(ipa2) == ipa_z),
                            "MS: no reference moves for a page": z3.BoolVal(host.refs == [])}
                if size_out != m:
                    return {f"MS: the size is a page or a PMD (got {size_out:#x})": False}
                return {"MS: ipa' is the PMD block holding ipa": z3.And(
                            _mod(_z(ipa2), m) == 0, _z(ipa2) <= ipa_z, ipa_z < _z(ipa2) + m),
                        "MS: pfn' is the huge page holding pfn": z3.And(
                            _mod(_z(pfn2), sz.PTRS_PER_PMD) == 0,
                            _z(pfn2) <= _z(pfn), _z(pfn) < _z(pfn2) + sz.PTRS_PER_PMD),
                        "MS: the IPA offset equals the PFN offset":
                            ipa_z - _z(ipa2) - ipa_z % (1 << ps)
                            == (_z(pfn) - _z(pfn2)) * (1 << ps),
                        "MS: the block lies inside the memslot at the same host offset":
                            _block_ok(m, ipa_z, gpa, size, uaddr),
                        "MS: the reference moves from pfn to pfn'": z3.BoolVal(
                            len(host.refs) == 2 and host.refs[0] == ("put", pfn)
                            and host.refs[1][0] == "get" and host.refs[1][1] is pfn2)}
            yield f"{1 << (ps - 10)}K", body, inputs, assume, None, ZP.thp_adjust(ps)
    return combine(cases(), rlimit, timeout_ms, deadline)


class _HypPgt:
    def __init__(self):
        self.maps: list = []

    def map(self, start, size, phys, prot):
        self.maps.append((start, size, phys))
        return 0


class _HypMmu:
    """mmu.c's hyp state as __create_hyp_private_mapping reads it."""

    def __init__(self, ps, va_bits, io_map_base):
        self.page_shift, self.page_size, self.va_bits = ps, 1 << ps, va_bits
        self.io_map_base = io_map_base
        self.hyp_pgtable = _HypPgt()


# (page_shift, VA_BITS) of arm64 builds: the smallest and largest VA with 4K, 16K/47, 64K/48
HYP_CONFIGS = ((12, 39), (12, 48), (14, 47), (16, 48))


def lemma_hyp_va(rlimit, timeout_ms, deadline=None, *, max_size_bits=None):
    """__create_hyp_private_mapping(phys, size) either fails with -ENOMEM and maps nothing, or maps
    the page-aligned range [base, io_map_base) that ends at the old io_map_base, lies entirely in the
    same half of the hyp VA space as io_map_base (bit VA_BITS - 1), covers [haddr, haddr + size)
    and moves io_map_base down to base; for every page-aligned io_map_base below 2**VA_BITS, every
    phys and every size up to 2**(VA_BITS - 1) - 2 pages, each granule and VA_BITS.
    (With max_size_bits=64 every u64 size is allowed: the one-bit test then misses allocations that
    wrap below 0, which is what the docs report.)"""
    def cases():
        for ps, vb in HYP_CONFIGS:
            inputs: dict = {}
            io, phys, size = (sym(n, 64, inputs) for n in ("io_map_base", "phys", "size"))
            page = 1 << ps
            half = 1 << (vb - 1)

            def body(ps=ps, vb=vb, io=io, phys=phys, size=size, page=page, half=half):
                hm = _HypMmu(ps, vb, io)
                ret, haddr = mmu_hyp.__dict__["__create_hyp_private_mapping"](
                    hm, phys, size, mmu_hyp.PAGE_HYP_DEVICE)
                maps = hm.hyp_pgtable.maps
                if ret:
                    return {"MS: a refused allocation maps nothing": z3.BoolVal(maps == []),
                            "MS: a refused allocation returns -ENOMEM": z3.BoolVal(ret == -12)}
                if len(maps) != 1:
                    return {"MS: one mapping is made": False}
                base, asize, _ = maps[0]
                b, n, old = _z(base), _z(asize), _z(io)
                in_half = z3.Or(n == 0, z3.And(
                    n <= old,                                    # no wrap below 0
                    b == old - n,                                # it ends at the old base
                    # first and last byte in the same half (the range lies below 2**VA_BITS)
                    z3.Extract(vb - 1, vb - 1, b) == z3.Extract(vb - 1, vb - 1, old - 1)))
                return {"MS: the range stays in io_map_base's half of the hyp VA space": in_half,
                        "MS: the range is page aligned": z3.And(b & (page - 1) == 0,
                                                                n & (page - 1) == 0),
                        "MS: the range covers [haddr, haddr + size)": z3.And(
                            _z(haddr) >= b, _z(haddr) + _z(size) <= b + n),
                        "MS: io_map_base moves down to the range": _z(hm.io_map_base) == b}
            limit = (1 << 64) if max_size_bits == 64 else half - 2 * page
            assume = [_z(io) < (1 << vb), _z(io) & (page - 1) == 0, _z(size) <= limit - 1]
            yield (f"{1 << (ps - 10)}K VA_BITS {vb}", body, inputs, assume, None,
                   ZP.hyp_va(ps, vb))
    return combine(cases(), rlimit, timeout_ms, deadline)


# the stand-ins, by the names the counterexample programs (proofs/mmu/z3_programs.py) import
StandInKvm, StandInHost, StandInHypMmu = _Kvm, _Host, _HypMmu

LEMMAS = {"mmu.huge-mapping": lemma_huge_mapping, "mmu.thp-adjust": lemma_thp_adjust,
          "mmu.hyp-va": lemma_hyp_va}
