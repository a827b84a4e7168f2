"""Runnable counterexamples of the lguest z3 lemmas (``proofs/lguest/z3_lemmas.py``): the impl's
guest-entry checks on the model's values, then the failing ``assert``.

Same form as ``proofs/stage2/z3_programs.py``: imports, the model's inputs in hex, the impl's own
``ShadowOps`` methods called on the lemma's stand-in guest (``StandInGuest``, a ``ShadowOps`` whose
host calls are recorded, so a planted bug in a method is what runs), and the property on plain
ints as ``assert``. Each builder takes a case's format (and level) and returns
``program(values) -> str``.
"""

from __future__ import annotations

from ptspec.proofs.engines.minimize import judged_program
from ptspec.proofs.stage2.z3_programs import CHECKS

IMPORTS = ["from ptspec.impl.lguest.x86 import PAGE_SIZE, _PAGE_GLOBAL, X86Format",
           "from ptspec.proofs.lguest.z3_lemmas import StandInGuest"]
GUEST = ("pfn_limit", "mem_base", "host_pfn")


def gpte(name: str):
    def program(v):
        return judged_program(
            IMPORTS, {k: v[k] for k in GUEST + ("gpte",)},
            [f"fmt = X86Format({name!r})",
             "g = StandInGuest(fmt, pfn_limit, mem_base, host_pfn)",
             "if not g.check_gpte(gpte):",
             "    checks = {'LG-SHADOW: a rejected guest PTE kills the guest': len(g.killed) == 1}",
             "else:",
             "    spte = g.gpte_to_spte(gpte, 1)",
             "    if len(g.asked) != 1 or g.killed:",
             "        checks = {'LG-SHADOW: one launcher page is asked for': False}",
             "    else:",
             "        addr = g.asked[0] * PAGE_SIZE",
             "        checks = {'LG-SHADOW: the launcher page lies inside guest memory':"
             " mem_base <= addr and addr + PAGE_SIZE <= mem_base + pfn_limit * PAGE_SIZE,",
             "                  'LG-SHADOW: the shadow PTE maps the host frame':"
             " fmt.pfn(spte) == host_pfn,",
             "                  'LG-SHADOW: the shadow flags are the guest\\'s minus GLOBAL':"
             " fmt.flags(spte) == fmt.flags(gpte) & ~_PAGE_GLOBAL & fmt.word_mask}"],
            CHECKS, what="check_gpte / gpte_to_spte")
    return program


def table_addr(name: str, level: str):
    entry = f"g{level}"
    check = "check_gpgd" if level == "pgd" else "check_gpmd"
    walk = "gpmd_addr" if level == "pgd" and name == "pae" else "gpte_addr"

    def program(v):
        return judged_program(
            IMPORTS, {k: v[k] for k in GUEST + (entry, "vaddr")},
            [f"fmt = X86Format({name!r})",
             "g = StandInGuest(fmt, pfn_limit, mem_base, host_pfn)",
             f"if not g.{check}({entry}):",
             "    checks = {'LG-BND: a rejected entry kills the guest': len(g.killed) == 1}",
             "else:",
             f"    addr = g.{walk}({entry}, vaddr)",
             "    checks = {'LG-BND: the next-level entry lies inside guest memory':"
             " addr + fmt.entry_bytes <= pfn_limit * PAGE_SIZE}"],
            CHECKS, what=f"{check} / {walk}")
    return program


def index(name: str):
    def program(v):
        return judged_program(
            IMPORTS, {k: v[k] for k in ("idx", "vaddr")},
            [f"fmt = X86Format({name!r})",
             "g = StandInGuest(fmt, 1, 0, 0)",
             "g.guest_set_pgd(0, idx)",
             "checks = {'LG-BND: guest_set_pgd kills the guest or releases one index':"
             " (len(g.killed), len(g.released)) in ((1, 0), (0, 1))}",
             "if g.released:",
             "    checks['LG-BND: the released PGD index is below PTRS_PER_PGD'] = "
             "g.released[0] < fmt.ptrs_per_pgd",
             "checks['LG-BND: per-level indices are below the table sizes'] = ("
             "fmt.pgd_index(vaddr) < fmt.ptrs_per_pgd and fmt.pmd_index(vaddr) < fmt.ptrs_per_pmd"
             " and fmt.pte_index(vaddr) < fmt.ptrs_per_pte)"],
            CHECKS, what="guest_set_pgd")
    return program
