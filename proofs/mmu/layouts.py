"""Memslot layouts chosen to hurt the stage-2 fault path, and the addresses worth touching in them.

A layout (see ``ptspec.proofs.mmu.harness``) is built by ``make_layout`` from a few small parameters:

* the granule, and the backing of the main slot: small anonymous pages, THP, hugetlbfs of every size
  arm64 offers for the granule (PUD, CONT_PMD, PMD, CONT_PTE), or a ``VM_PFNMAP`` device region;
* ``nblocks`` blocks of the backing's huge size, a VMA one block larger than the slot (so the host
  has huge pages the slot only partly covers);
* ``head`` / ``tail``: pages cut from the slot's start / end (a head or tail covering part of a
  block), ``misalign``: the userspace address shifted by one page against the IPA (guest and host
  disagree on alignment inside every block);
* ``top``: the slot placed at the end of the IPA space (ending exactly at the limit, or one page
  beyond), flags (dirty logging, read-only), the manual-protect modes, a second small slot.

``layout_pool()`` draws (seeded) a few hundred of these for the hypothesis machine to pick from;
``EXHAUSTIVE_LAYOUTS`` is a fixed list for exhaustive runs.
"""

from __future__ import annotations

from ptspec.spec.arch import geometry as G

HVA_BASE = 1 << 46
DEVICE_BASE = 0x1000_0000           # where the layouts' VM_PFNMAP regions point (not RAM)
GPA_BASE = 1 << 32
LOG, RO = 1, 2


def backings(page_shift):
    """The main slot's backings for a granule; hugetlb sizes from spec (G.hugetlb_shifts)."""
    return ["anon", "thp", "pfnmap"] + [f"hugetlb:{s}" for s in G.hugetlb_shifts(page_shift)]


def block_of(page_shift, backing):
    if backing.startswith("hugetlb:"):
        return 1 << int(backing.split(":")[1])
    if backing == "pfnmap":
        return 16 << page_shift           # device regions stay small: ioremap goes page by page
    return G.granule_size(2, page_shift)  # PMD_SIZE: a THP


def make_layout(page_shift=12, backing="thp", nblocks=2, head=0, tail=0, misalign=False,
                flags=0, top=None, ia_bits=40, manual_protect=False, init_set=False,
                second_slot=False, dic=False, vma_writable=True):
    ps = 1 << page_shift
    b = block_of(page_shift, backing)
    size = nblocks * b - (head + tail) * ps
    if size <= 0:
        size = ps
    vsize = (nblocks + 1) * b
    kind = backing.split(":")[0]
    if kind == "thp":
        kind = "anon"
    vma = {"start": HVA_BASE, "size": vsize, "kind": kind, "writable": vma_writable,
           "thp": backing == "thp"}
    if kind == "hugetlb":
        vma["shift"] = int(backing.split(":")[1])
    if kind == "pfnmap":
        vma["pgoff"] = DEVICE_BASE >> page_shift
        flags &= ~LOG
        if not vma_writable:
            # 5.13 maps a read-only PFNMAP VMA writable when the slot is writable (docs/mmu.md,
            # finding 1): the random runs keep such slots read-only so that they test the rest
            flags |= RO
    uaddr = HVA_BASE + head * ps + (ps if misalign else 0)
    gpa = GPA_BASE + (-GPA_BASE % b) + head * ps
    if top is not None:
        limit = 1 << ia_bits
        gpa = limit - size + (ps if top == "beyond" else 0)
    slots = [{"id": 0, "flags": flags, "gpa": gpa, "size": size, "uaddr": uaddr}]
    vmas = [vma]
    if second_slot:
        s2 = 4 * ps
        vmas.append({"start": HVA_BASE // 2, "size": s2, "kind": "anon", "writable": True})
        slots.append({"id": 1, "flags": 0, "gpa": 16 * ps, "size": s2, "uaddr": HVA_BASE // 2})
    return {"page_shift": page_shift, "ia_bits": ia_bits, "vmas": vmas, "slots": slots,
            "manual_protect": manual_protect or init_set, "init_set": init_set, "dic": dic,
            "block": b, "backing": backing}


def interesting_ipas(layout):
    """IPAs worth touching: slot edges, block boundaries inside and around, outside the slots."""
    ps = 1 << layout["page_shift"]
    b = layout["block"]
    out = set()
    limit = 1 << layout["ia_bits"]
    for s in layout["slots"]:
        lo, hi = s["gpa"], s["gpa"] + s["size"]
        nxt = (lo + b) & ~(b - 1)
        for ipa in (lo, lo + ps, nxt - ps, nxt, nxt + ps, hi - ps, hi - 2 * ps, lo - ps, hi,
                    lo + 0x10, (lo + hi) // 2):
            if 0 <= ipa < limit:
                out.add(ipa)
    out.add(0x2000)
    return sorted(out)


def layout_pool(n: int = 600, seed: int = 0) -> list:
    """n layouts drawn (seeded) from the parameter space above, every backing of every granule
    with head/misalign/top classes among them: hypothesis picks from this list, which keeps its
    runs spread over many layouts instead of mutating a few."""
    import random
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ps = (12, 12, 12, 14, 16)[i % 5]
        bk = backings(ps)
        backing = bk[(i // 5) % len(bk)]
        ppb = block_of(ps, backing) >> ps
        nblocks = rng.choice([1, 2])
        head = rng.choice([0, 0, 1, ppb // 2, ppb - 1])
        tail = rng.choice([0, 0, 1, ppb - 1])
        if head + tail >= nblocks * ppb:
            tail = 0
        b = block_of(ps, backing)
        init_set = rng.random() < 0.2
        out.append(make_layout(ps, backing, nblocks, head, tail, misalign=rng.random() < 0.4,
                               flags=rng.choice([0, 0, 0, LOG, RO, LOG | RO]),
                               top=rng.choice([None, None, None, None, "end", "beyond"]),
                               ia_bits=40 if b < (1 << 34) else 44,
                               manual_protect=rng.random() < 0.3, init_set=init_set,
                               second_slot=rng.random() < 0.4, dic=rng.random() < 0.3,
                               vma_writable=rng.random() < 0.85))
    return out


EXHAUSTIVE_LAYOUTS = {
    "thp-aligned": dict(backing="thp", nblocks=2, head=0, tail=0),
    "thp-head-tail": dict(backing="thp", nblocks=2, head=1, tail=1),
    "thp-misaligned": dict(backing="thp", nblocks=2, head=0, tail=0, misalign=True),
    "hugetlb-pmd-head": dict(backing="hugetlb:21", nblocks=2, head=3, tail=0),
    "hugetlb-pmd-misaligned": dict(backing="hugetlb:21", nblocks=1, misalign=True),
    "hugetlb-contpte": dict(backing="hugetlb:16", nblocks=2),
    "hugetlb-contpmd": dict(backing="hugetlb:25", nblocks=1, head=0, tail=1),
    "pfnmap": dict(backing="pfnmap", nblocks=1),
    "ipa-top-end": dict(backing="anon", nblocks=1, top="end", ia_bits=36),
    "ipa-top-beyond": dict(backing="anon", nblocks=1, top="beyond", ia_bits=36),
}


# Layouts whose first and last huge blocks cross the memslot's start and end: the slot starts
# `head` pages into a block and ends `tail` pages before a block's end, guest and host congruent
# modulo the block (so only the start and end checks of fault_supports_stage2_huge_mapping can
# refuse the block), and the VMA holds whole huge pages beyond both ends. Every profile runs a
# fixed program on each (lockstep.edge_programs) before its random runs.
EDGE_LAYOUTS = {
    "thp-4k-edges": dict(page_shift=12, backing="thp", nblocks=2, head=1, tail=1),
    "hugetlb-pmd-4k-edges": dict(page_shift=12, backing="hugetlb:21", nblocks=2, head=256, tail=3),
    "thp-16k-edges": dict(page_shift=14, backing="thp", nblocks=2, head=1, tail=1),
    "hugetlb-pmd-16k-edges": dict(page_shift=14, backing="hugetlb:25", nblocks=2, head=1, tail=1),
    "hugetlb-pud-4k-edges": dict(page_shift=12, backing="hugetlb:30", nblocks=1, head=1, tail=1),
}


def edge_ipas(layout):
    """The pages of the main slot inside its crossing blocks: the first and last pages, and the
    pages next to the block boundary inside the slot."""
    ps = 1 << layout["page_shift"]
    b = layout["block"]
    s = layout["slots"][0]
    lo, hi = s["gpa"], s["gpa"] + s["size"]
    first_end = (lo + b) & ~(b - 1)
    last_start = (hi - 1) & ~(b - 1)
    return [ipa for ipa in (hi - ps, lo, last_start, first_end - ps) if lo <= ipa < hi]
