"""Exhaustive bounded exploration of small VM layouts: every sequence of a few operations.

For each layout of ``ptspec.proofs.mmu.layouts.EXHAUSTIVE_LAYOUTS`` (THP aligned / head-tail / misaligned,
hugetlb PMD with head or misaligned, CONT_PTE, CONT_PMD, PFNMAP, slots ending at or beyond the IPA
limit), every sequence up to ``depth`` over an alphabet of guest accesses (read / write / exec at
the slot's first page, second page, first block boundary, last page, and just outside it) and VM
events (dirty logging toggled, dirty log harvested, THP split, a zap, a write fault racing with a
THP split, a write fault whose table allocation fails, page aging, and a cancelled migration:
logging on, read, logging off, write) is run from the layout's initial
state, every step checked by ``VmHarness`` (S2-*, MS, MS-PERM, DIRTY, PROGRESS, C-MMU-*). Sequences are
replayed from a deep copy of the layout's initial harness. Complete within the bound.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from ptspec.proofs.engines.collector import quiet_gc
from ptspec.proofs.mmu.harness import VmHarness, counterexample
from ptspec.proofs.mmu.layouts import EXHAUSTIVE_LAYOUTS, LOG, make_layout


def alphabet(layout):
    ps = 1 << layout["page_shift"]
    b = layout["block"]
    s = layout["slots"][0]
    lo, hi = s["gpa"], s["gpa"] + s["size"]
    nxt = (lo + b) & ~(b - 1)
    limit = 1 << layout["ia_bits"]
    ipas = [i for i in (lo, lo + ps, nxt if nxt < hi else hi - ps, hi - ps, max(lo - ps, 0))
            if i < limit]
    hva0 = s["uaddr"]
    ops = [("access", {"ipa": ipa, "kind": k}) for ipa in ipas for k in ("read", "write", "exec")]
    ops += [
        ("toggle_logging", {}),
        ("harvest", {}),
        ("split_thp", {"hva": hva0}),
        ("zap", {"hva": hva0 & ~(ps - 1), "size": ps}),
        ("access", {"ipa": ipas[1], "kind": "write", "race": ("split_thp", hva0 + ps),
                    "races": 1}),
        ("access", {"ipa": ipas[0], "kind": "write", "enomem": True}),
        ("age", {"hva": hva0}),
        ("logging_round", {"ipa": ipas[1]}),
    ]
    return ops


def apply(h: VmHarness, op, args):
    if op == "toggle_logging":
        s = next((s for s in h.kvm.memslots if s.id == 0), None)
        if s is None:
            return []
        ps = h.kvm.page_shift
        return h.step("set_memory_region", slot=0, flags=s.flags ^ LOG,
                      guest_phys_addr=s.base_gfn << ps, memory_size=s.npages << ps,
                      userspace_addr=s.userspace_addr)[1]
    if op == "harvest":
        s = next((s for s in h.kvm.memslots if s.id == 0), None)
        if s is None or s.dirty_bitmap is None:
            return []
        if h.kvm.manual_protect:
            return h.step("clear_dirty_log", slot=0, first=0, num=s.npages)[1]
        return h.step("get_dirty_log", slot=0)[1]
    if op == "logging_round":
        # a migration started and cancelled: logging on, read, logging off, write the same page
        for sub in (("toggle_logging", {}), ("access", {"ipa": args["ipa"], "kind": "read"}),
                    ("toggle_logging", {}), ("access", {"ipa": args["ipa"], "kind": "write"})):
            found = apply(h, *sub)
            if found:
                return found
        return []
    return h.step(op, **dict(args))[1]


@dataclass
class ExhaustiveOutcome:
    status: str                     # passed / refuted / unknown
    depth: int
    sequences: int = 0
    steps: int = 0
    cpu_seconds: float = 0.0    # CPU time of the run (time.process_time)
    layouts: list = field(default_factory=list)
    counterexample: dict | None = None


@quiet_gc()      # the older objects set aside from its collections (ptspec.proofs.engines.collector)
def explore(depth: int, layouts=None, *, expired=lambda: False, progress=None,
            **layout_overrides) -> ExhaustiveOutcome:
    names = layouts or list(EXHAUSTIVE_LAYOUTS)
    out = ExhaustiveOutcome("passed", depth, layouts=names)
    t0 = time.process_time()
    for name in names:
        layout = make_layout(**dict(EXHAUSTIVE_LAYOUTS[name], **layout_overrides))
        base = VmHarness(layout, arena_pages=512)
        if base.violations:
            out.status, out.counterexample = "refuted", counterexample(base, base.violations)
            break
        ops = alphabet(layout)
        for n in range(1, depth + 1):
            for seq in itertools.product(range(len(ops)), repeat=n):
                if expired():
                    out.status = "unknown"
                    out.cpu_seconds = time.process_time() - t0
                    return out
                h = VmHarness(layout, arena_pages=512)
                for i in seq:
                    found = apply(h, *ops[i])
                    out.steps += 1
                    if found:
                        out.status = "refuted"
                        out.counterexample = counterexample(h, found)
                        out.cpu_seconds = time.process_time() - t0
                        return out
                out.sequences += 1
                if progress:
                    progress()
    out.cpu_seconds = time.process_time() - t0
    return out
