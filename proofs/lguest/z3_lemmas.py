"""z3 lemmas over the impl's lguest guest-entry checks (drivers/lguest/page_tables.c, Linux 4.7).

Runs the impl's own methods of ``ptspec.impl.lguest.shadow.ShadowOps`` (``check_gpte``, ``check_gpgd``,
``check_gpmd``, ``gpte_to_spte``, ``gpmd_addr``, ``gpte_addr``, ``guest_set_pgd``) on a stand-in
guest whose guest entries, addresses, pfn limit and memory base are symbolic (``proofs/engines/z3/bv.py``),
for both entry formats (2-level and PAE), and proves:

* LG-SHADOW / bounds: a guest PTE that passes ``check_gpte`` makes ``gpte_to_spte`` ask for the
  launcher page ``mem_base / PAGE_SIZE + pfn``, which lies inside guest memory
  [mem_base, mem_base + pfn_limit * PAGE_SIZE); the shadow PTE it returns carries the host frame and
  the guest's flags without GLOBAL;
* a guest PGD (or PAE PMD) entry that passes ``check_gpgd`` (``check_gpmd``) makes ``gpmd_addr`` /
  ``gpte_addr`` compute a guest address whose whole entry lies inside guest memory
  [0, pfn_limit * PAGE_SIZE);
* LG-BND: ``guest_set_pgd`` either kills the guest or releases a PGD index below PTRS_PER_PGD, for
  every guest-supplied index; the per-level indices of any address are below their table sizes.

The stand-in (``_Guest``) subclasses ``ShadowOps``, so the methods are the impl's; it records what
they ask of the host (``get_pfn``, ``release_pgd``, ``kill_guest``) instead of doing it.
"""

from __future__ import annotations

import z3

from ptspec.impl.lguest import shadow
from ptspec.impl.lguest.x86 import PAGE_SIZE, _PAGE_GLOBAL, X86Format

from ptspec.proofs.engines.z3.bv import as_bv, sym
from ptspec.proofs.lguest import z3_programs as ZP
from ptspec.proofs.stage2.z3_lemmas import combine


def _z(x):
    return as_bv(x)


class _Pgdir:
    def __init__(self):
        self.pgdir = 0x1000
        self.gpgdir = 0
        self.switcher_mapped = True
        self.last_host_cpu = 0


class _Guest(shadow.ShadowOps):
    """A guest as the checked methods see it; host calls are recorded, not performed."""

    def __init__(self, fmt, pfn_limit, mem_base, host_pfn):
        self.fmt = fmt
        self.pfn_limit = pfn_limit
        self.mem_base = mem_base
        self.seed_as_written = False      # the corrected variant (older impl flag)
        self.seed_findings = frozenset()   # no seed finding kept (docs/lguest.md)
        self.host_pfn = host_pfn
        self.killed: list = []
        self.asked: list = []
        self.released: list = []
        self.pgdirs = [_Pgdir()]

    def kill_guest(self, reason):
        self.killed.append(reason)

    def get_pfn(self, virtpfn, write):
        self.asked.append(virtpfn)
        return self.host_pfn

    # guest_set_pgd's collaborators
    def find_pgdir(self, gpgdir):
        return 0

    def release_pgd(self, pgdir_pa, idx):
        self.released.append(idx)

    def allocate_switcher_mapping(self):
        return True


def _guest_inputs(fmt, inputs):
    pfn_limit, mem_base, host_pfn = (sym(n, 32, inputs) for n in ("pfn_limit", "mem_base",
                                                                  "host_pfn"))
    assume = [_z(pfn_limit) >= 1, _z(pfn_limit) <= (1 << 16),          # Lguest's modelled range
              _z(mem_base) & (PAGE_SIZE - 1) == 0,
              _z(mem_base) + _z(pfn_limit) * PAGE_SIZE <= (1 << 32),
              _z(host_pfn) < (1 << 20)]
    return pfn_limit, mem_base, host_pfn, assume


FORMAT_NAMES = ("2level", "pae")


def lemma_gpte(rlimit, timeout_ms, deadline=None):
    """check_gpte(gpte) => gpte_to_spte(gpte) reads the launcher page of a frame inside guest
    memory, and the shadow PTE is the host frame with the guest's flags minus GLOBAL; a rejected
    entry kills the guest."""
    def cases():
        for name in FORMAT_NAMES:
            fmt = X86Format(name)
            inputs: dict = {}
            pfn_limit, mem_base, host_pfn, assume = _guest_inputs(fmt, inputs)
            gpte = sym("gpte", fmt.entry_bytes * 8, inputs)

            def body(fmt=fmt, pfn_limit=pfn_limit, mem_base=mem_base, host_pfn=host_pfn,
                     gpte=gpte):
                g = _Guest(fmt, pfn_limit, mem_base, host_pfn)
                if not g.check_gpte(gpte):
                    return {"LG-SHADOW: a rejected guest PTE kills the guest":
                            z3.BoolVal(len(g.killed) == 1)}
                spte = g.gpte_to_spte(gpte, 1)
                if len(g.asked) != 1 or g.killed:
                    return {"LG-SHADOW: one launcher page is asked for": False}
                addr = _z(g.asked[0]) * PAGE_SIZE
                flags = _z(fmt.flags(gpte))
                return {"LG-SHADOW: the launcher page lies inside guest memory": z3.And(
                            addr >= _z(mem_base), addr + PAGE_SIZE
                            <= _z(mem_base) + _z(pfn_limit) * PAGE_SIZE),
                        "LG-SHADOW: the shadow PTE maps the host frame":
                            _z(fmt.pfn(spte)) == _z(host_pfn),
                        "LG-SHADOW: the shadow flags are the guest's minus GLOBAL":
                            _z(fmt.flags(spte)) == flags & ~_PAGE_GLOBAL & fmt.word_mask}
            yield name, body, inputs, assume, None, ZP.gpte(name)
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_table_addr(rlimit, timeout_ms, deadline=None):
    """check_gpgd(gpgd) => the guest address of the next-level entry of any vaddr (gpte_addr in
    2-level, gpmd_addr with PAE) lies, whole entry included, inside guest memory; with PAE also
    check_gpmd(gpmd) => gpte_addr(gpmd, vaddr) inside guest memory."""
    def cases():
        for name in FORMAT_NAMES:
            fmt = X86Format(name)
            for level in (("pgd", "pmd") if fmt.pae else ("pgd",)):
                inputs: dict = {}
                pfn_limit, mem_base, host_pfn, assume = _guest_inputs(fmt, inputs)
                entry = sym(f"g{level}", fmt.entry_bytes * 8, inputs)
                vaddr = sym("vaddr", 32, inputs)

                def body(fmt=fmt, level=level, pfn_limit=pfn_limit, mem_base=mem_base,
                         host_pfn=host_pfn, entry=entry, vaddr=vaddr):
                    g = _Guest(fmt, pfn_limit, mem_base, host_pfn)
                    ok = g.check_gpgd(entry) if level == "pgd" else g.check_gpmd(entry)
                    if not ok:
                        return {"LG-BND: a rejected entry kills the guest":
                                z3.BoolVal(len(g.killed) == 1)}
                    if level == "pgd" and fmt.pae:
                        addr = g.gpmd_addr(entry, vaddr)
                    else:
                        addr = g.gpte_addr(entry, vaddr)
                    return {"LG-BND: the next-level entry lies inside guest memory":
                            _z(addr) + fmt.entry_bytes <= _z(pfn_limit) * PAGE_SIZE}
                yield f"{name} {level}", body, inputs, assume, None, ZP.table_addr(name, level)
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_index(rlimit, timeout_ms, deadline=None):
    """guest_set_pgd(gpgdir, idx) kills the guest or releases a PGD index below PTRS_PER_PGD, for
    every 32-bit idx the guest passes; pgd_index, pmd_index and pte_index of any address are below
    PTRS_PER_PGD, PTRS_PER_PMD and PTRS_PER_PTE."""
    def cases():
        for name in FORMAT_NAMES:
            fmt = X86Format(name)
            inputs: dict = {}
            idx, vaddr = sym("idx", 32, inputs), sym("vaddr", 32, inputs)

            def body(fmt=fmt, idx=idx, vaddr=vaddr):
                g = _Guest(fmt, 1, 0, 0)
                g.guest_set_pgd(0, idx)
                ok = {"LG-BND: guest_set_pgd kills the guest or releases one index": z3.BoolVal(
                    (len(g.killed), len(g.released)) in ((1, 0), (0, 1)))}
                if g.released:
                    ok["LG-BND: the released PGD index is below PTRS_PER_PGD"] = (
                        _z(g.released[0]) < fmt.ptrs_per_pgd)
                ok["LG-BND: per-level indices are below the table sizes"] = z3.And(
                    _z(fmt.pgd_index(vaddr)) < fmt.ptrs_per_pgd,
                    _z(fmt.pmd_index(vaddr)) < fmt.ptrs_per_pmd,
                    _z(fmt.pte_index(vaddr)) < fmt.ptrs_per_pte)
                return ok
            yield name, body, inputs, [], None, ZP.index(name)
    return combine(cases(), rlimit, timeout_ms, deadline)


# the stand-in guest, by the name the counterexample programs (proofs/lguest/z3_programs.py) import
StandInGuest = _Guest

LEMMAS = {"lguest.gpte": lemma_gpte, "lguest.table-addr": lemma_table_addr,
          "lguest.index": lemma_index}


