"""Runnable counterexamples of the mmu z3 lemmas (``proofs/mmu/z3_lemmas.py``): the impl's
fault-path helper or hyp VA allocator on the model's values, then the failing ``assert``.

Same form as ``proofs/stage2/z3_programs.py``: imports, the model's inputs in hex, the call the
lemma makes (through ``ptspec.impl.mmu.fault`` / ``ptspec.impl.mmu.hyp``, so a planted bug is what
runs, with the lemma's own stand-ins for the VM, the host and the hyp page table), and the
property on plain ints as ``assert``. Each builder takes a case's concrete parameters and returns
``program(values) -> str``.
"""

from __future__ import annotations

from ptspec.proofs.engines.minimize import judged_program
from ptspec.proofs.stage2.z3_programs import CHECKS

FAULT = "from ptspec.impl.mmu import fault as mmu_fault"
SLOT = "from ptspec.impl.mmu.memslot import KvmMemorySlot"
SLOT_INPUTS = ("base_gfn", "npages", "uaddr", "hva")


def huge_mapping(ps: int, m: int):
    def program(v):
        return judged_program(
            [FAULT, SLOT, "from ptspec.proofs.mmu.z3_lemmas import StandInKvm"],
            {k: v[k] for k in SLOT_INPUTS},
            [f"m = {m:#x}",
             "slot = KvmMemorySlot(0, base_gfn, npages, uaddr)",
             f"got = mmu_fault.fault_supports_stage2_huge_mapping(StandInKvm({ps}), slot, hva, m)",
             f"gpa, size = base_gfn << {ps}, npages << {ps}",
             "ipa = gpa + (hva - uaddr)",
             "blk = ipa - ipa % m",
             "want = blk >= gpa and blk + m <= gpa + size and (uaddr + (blk - gpa)) % m == 0"],
            "assert bool(got) == want, f'MS: a block is allowed exactly when it lies inside the "
            "memslot and maps the host pages at the same offsets: got {got}, want {want}'")
    return program


def thp_adjust(ps: int):
    def program(v):
        return judged_program(
            [FAULT, SLOT, "from ptspec.impl.mmu.host import HostSizes",
             "from ptspec.proofs.mmu.z3_lemmas import StandInHost, StandInKvm"],
            {k: v[k] for k in SLOT_INPUTS + ("pfn", "thp")},
            [f"sz = HostSizes({ps})",
             "m = sz.PMD_SIZE",
             "host = StandInHost(sz, thp)",
             "slot = KvmMemorySlot(0, base_gfn, npages, uaddr)",
             f"gpa, size = base_gfn << {ps}, npages << {ps}",
             "ipa = gpa + (hva - uaddr)",
             "size_out, pfn2, ipa2 = mmu_fault.transparent_hugepage_adjust("
             f"StandInKvm({ps}, host), slot, hva, pfn, ipa)",
             "if size_out == sz.PAGE_SIZE:",
             "    checks = {'MS: a page mapping keeps ipa and pfn': pfn2 == pfn and ipa2 == ipa,",
             "              'MS: no reference moves for a page': host.refs == []}",
             "elif size_out != m:",
             "    checks = {f'MS: the size is a page or a PMD (got {size_out:#x})': False}",
             "else:",
             "    blk = ipa - ipa % m",
             "    checks = {'MS: ipa\\' is the PMD block holding ipa':"
             " ipa2 % m == 0 and ipa2 <= ipa < ipa2 + m,",
             "              'MS: pfn\\' is the huge page holding pfn': pfn2 % sz.PTRS_PER_PMD == 0"
             " and pfn2 <= pfn < pfn2 + sz.PTRS_PER_PMD,",
             f"              'MS: the IPA offset equals the PFN offset': ipa - ipa2 - ipa % {1 << ps:#x}"
             f" == (pfn - pfn2) << {ps},",
             "              'MS: the block lies inside the memslot at the same host offset':"
             " blk >= gpa and blk + m <= gpa + size and (uaddr + (blk - gpa)) % m == 0,",
             "              'MS: the reference moves from pfn to pfn\\'':"
             " host.refs == [('put', pfn), ('get', pfn2)]}"],
            CHECKS)
    return program


def hyp_va(ps: int, vb: int):
    def program(v):
        return judged_program(
            ["from ptspec.impl.mmu import hyp as mmu_hyp",
             "from ptspec.proofs.mmu.z3_lemmas import StandInHypMmu"],
            {k: v[k] for k in ("io_map_base", "phys", "size")},
            [f"page, vb = {1 << ps:#x}, {vb}",
             f"hm = StandInHypMmu({ps}, vb, io_map_base)",
             "ret, haddr = mmu_hyp.__dict__['__create_hyp_private_mapping'](hm, phys, size, "
             "mmu_hyp.PAGE_HYP_DEVICE)",
             "maps = hm.hyp_pgtable.maps",
             "if ret:",
             "    checks = {'MS: a refused allocation maps nothing': maps == [],",
             "              'MS: a refused allocation returns -ENOMEM': ret == -12}",
             "elif len(maps) != 1:",
             "    checks = {'MS: one mapping is made': False}",
             "else:",
             "    base, n, _ = maps[0]",
             "    old = io_map_base",
             "    same_half = (base >> (vb - 1)) & 1 == ((old - 1) >> (vb - 1)) & 1",
             "    checks = {'MS: the range stays in io_map_base\\'s half of the hyp VA space':"
             " n == 0 or (n <= old and base == old - n and same_half),",
             "              'MS: the range is page aligned':"
             " base & (page - 1) == 0 and n & (page - 1) == 0,",
             "              'MS: the range covers [haddr, haddr + size)':"
             " haddr >= base and haddr + size <= base + n,",
             "              'MS: io_map_base moves down to the range': hm.io_map_base == base}"],
            CHECKS, what="__create_hyp_private_mapping")
    return program


def hyp_allocator(vb: int, ps: int):
    """mmu.z3.hyp-va (``proofs/mmu/hyp_va.py``, ``z3_allocator``): the allocator's arithmetic
    ``hyp_private_va`` on the model's request, against the room below io_map_base in its half."""
    def program(v):
        return judged_program(
            ["from ptspec.impl.mmu import hyp as mmu_hyp"],
            {k: v[k] for k in ("io_map_base", "phys", "size")},
            [f"va_bits, page_shift = {vb}, {ps}",
             "page, half = 1 << page_shift, 1 << (va_bits - 1)",
             "alloc, base, crossed = mmu_hyp.hyp_private_va(io_map_base, phys, size, va_bits, "
             "page_shift)",
             "need = (size + phys % page + page - 1) // page * page   # the request in pages",
             "fits = need <= io_map_base and io_map_base - need >= io_map_base & ~(half - 1)",
             "checks = {'C-HYP-VA: refused exactly when the request does not fit below "
             "io_map_base in its half': (crossed == 0) == fits,",
             "          'C-HYP-VA: an accepted range is the request in pages and ends at "
             "io_map_base': crossed != 0 or (alloc == need and (base + alloc) % 2**64 == "
             "io_map_base)}"],
            CHECKS, what="hyp_private_va")
    return program
