"""Exhaustive bounded exploration: every operation sequence up to a depth, states deduplicated.

Over a real geometry (4K granule, 39-bit IPA, three levels) and a small IPA window of two 2M blocks,
a fixed alphabet of operations (block and page maps, a map that straddles the block boundary, a
permission-only re-map, partial and whole unmaps, owner annotations, write-protect, access-flag
and permission changes, flush, and an injected allocation failure) is applied breadth-first from the
empty table. States are identified by the shape of the tree (table pages numbered in walk order, so
two states that differ only in which physical pages hold the tables are the same) together with the
memcache fill, a pending injected failure and the cache ghost CMO-POC / CMO-POU judge the future
steps by (``ghost_key``); a state already seen is not expanded again, nor one whose ghost is only
cleaner than a seen one's with the same tables (``Explored``: it has no verdict the other lacks).
Every transition is checked by the spec (all invariants of the new state, S2-BBM and the
operation's contract), so within the bound the check is complete: any reachable violation is
found, with the shortest sequence that reaches it.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections import deque
from itertools import compress
from dataclasses import dataclass, field

from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX, KVM_PGTABLE_PROT_X
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G

from ptspec.proofs.engines.collector import quiet_gc
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2.harness import Stage2Harness

K4, M2 = G.granule_size(3, 12), G.granule_size(2, 12)      # a 4K page and a 2M block, from spec


def alphabet(window: int = 0x4000_0000, phys: int = 0x8000_0000,
             page_shift: int = 12) -> list[tuple[str, dict]]:
    """The operations explored, as (op, args); addresses inside two level-2 blocks from
    ``window`` ([window, window + 4M) with 4K pages). ``page_shift`` scales the pages and blocks
    to another granule (16K: 32M blocks, 64K: 512M blocks), as the kernel-side engines use it."""
    W, P = window, phys
    K4, M2 = G.granule_size(3, page_shift), G.granule_size(2, page_shift)
    RW, R, RWX, RX = KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RWX, \
        KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X
    return [
        ("map", dict(addr=W, size=M2, phys=P, prot=RW)),                   # a block
        ("map", dict(addr=W, size=M2, phys=P, prot=RX)),                   # same, other perms
        ("map", dict(addr=W + K4, size=K4, phys=P + K4, prot=RW)),         # a page inside it
        ("map", dict(addr=W + K4, size=K4, phys=P + 7 * K4, prot=R)),      # a different page
        ("map", dict(addr=W + M2 - K4, size=2 * K4, phys=P + M2 - K4, prot=RWX)),  # straddles
        ("map", dict(addr=W, size=2 * M2, phys=P, prot=RW)),               # two blocks
        ("map", dict(addr=W + M2 - K4, size=K4, phys=P + M2 - K4, prot=R)),  # first of the straddle
        ("unmap", dict(addr=W + K4, size=K4)),
        ("unmap", dict(addr=W + K4, size=M2)),                             # partial, both blocks
        ("unmap", dict(addr=W, size=2 * M2)),
        ("set_owner", dict(addr=W + K4, size=K4, owner_id=1)),
        ("set_owner", dict(addr=W, size=2 * K4, owner_id=0)),
        ("set_owner", dict(addr=W + M2, size=M2, owner_id=1)),             # a whole block
        ("wrprotect", dict(addr=W, size=2 * M2)),
        ("mkold", dict(addr=W + K4)),
        ("mkyoung", dict(addr=W + K4)),
        ("relax_perms", dict(addr=W + K4, prot=RWX)),
        ("flush", dict(addr=W, size=2 * M2)),
        ("get_leaf", dict(addr=W + K4)),
        ("is_young", dict(addr=W)),
        ("fail_next_alloc", {}),
    ]


def renumbered_tables(pages: dict, refcount: dict, roots, start_level: int, ps: int):
    """(the tables reached from the roots, pages renumbered in walk order with each page's
    refcount and non-zero entries, table pointers by new number; how many are reached): a state
    key that two runs reaching the same tree on other pages share (impl's and the C side's)."""
    names: dict[int, int] = {}
    out = []

    def visit(pa: int, level: int):
        names[pa] = len(names)
        row = [refcount.get(pa)]
        descs = pages[pa]
        for i in compress(range(len(descs)), descs):        # the non-zero entries, found at C speed
            w = descs[i]
            if D.is_table(w, level):
                child = D.address(w, ps)
                if child in pages and child not in names:
                    visit(child, level + 1)
                row.append((i, "T", names.get(child, -1)))
            else:
                row.append((i, w))
        out.append((names[pa], tuple(row)))

    for root in roots:
        if root in pages:
            visit(root, start_level)
    return tuple(out), len(names)


def ghost_key(judge, cmo: bool, has_fwb: bool):
    """The part of a run's cache ghost (the spec's ``CacheJudge``: which output addresses are
    D-clean to PoC and I-clean to PoU since the host last wrote them) that the run's future
    CMO-POC / CMO-POU verdicts depend on, for a state key. Two states with the same tables but
    another ghost have other futures: a later map over an address clean in one and not in the
    other is a violation from one of them only.

    None for a table that is not a guest's (no CMO hooks, ``cmo`` false): neither statement
    judges it. Else (D-clean, I-clean) as interval bounds (the ghost keeps them sorted, disjoint
    and merged, so equal sets give equal keys); D-clean is left out (None) under FWB, where
    CMO-POC requires nothing and an I-cache invalidation needs no clean before it, I-clean with
    DIC, where CMO-POU requires nothing. The addresses are output addresses, which the key's
    renumbering of table pages leaves alone; every one of them is mapped by a leaf of the tables
    (the host writes, and so un-cleans, every address a step stops mapping). The ghost's count of
    leaves per output address is a function of the tables and is not repeated here."""
    guest = cmo if judge.guest is None else judge.guest
    if not guest:
        return None
    g = judge.ghost
    d = None if has_fwb else (tuple(g.dclean.lo), tuple(g.dclean.hi))
    i = None if judge.dic else (tuple(g.iclean.lo), tuple(g.iclean.hi))
    return d, i


def _within(small, big) -> bool:
    """Whether the interval set ``small`` lies inside ``big`` (both as ``ghost_key`` gives them:
    sorted, disjoint, merged bounds, so each interval of small lies in one interval of big)."""
    blo, bhi = big
    for a, b in zip(*small):
        i = bisect_right(blo, a) - 1
        if i < 0 or bhi[i] < b:
            return False
    return True


def no_cleaner(ghost, other) -> bool:
    """Whether the ghost ``ghost`` (of ``ghost_key``) is clean nowhere ``other`` is not: its clean
    sets inside other's, part by part (a part left out, None, is so in both: same table)."""
    if ghost is None or other is None:
        return ghost == other
    return all(g == o if g is None or o is None else _within(g, o) for g, o in zip(ghost, other))


class Explored:
    """The states a breadth-first exploration has expanded, by ``canonical`` key (its last part
    the ghost of ``ghost_key``), with subsumption over the ghost: ``add(key)`` is False (do not
    expand) when a state with the same tables, memcache and pending failure (the rest of the key)
    and a ghost clean nowhere this one is not was already expanded. That loses no verdict: the
    subject never reads the ghost, so from both states the same operations do the same to the
    tables; the ghost only grows by clean events and shrinks by host writes over the same
    addresses in both, so the dirtier one stays dirtier; and a CMO-POC / CMO-POU verdict is a
    gap in a clean set over a range, so every one of the cleaner state's is also the dirtier
    one's. Breadth-first, the kept state was reached no later, so it has at least as many
    operations left. ``states``: how many were expanded."""

    def __init__(self):
        self._ghosts: dict = {}
        self.states = 0

    def add(self, key) -> bool:
        rest, ghost = key[:-1], key[-1]
        kept = self._ghosts.setdefault(rest, [])
        if any(no_cleaner(g, ghost) for g in kept):
            return False
        kept[:] = [g for g in kept if not no_cleaner(ghost, g)] + [ghost]
        self.states += 1
        return True


def canonical(h: Stage2Harness):
    """The tree's shape with table pages renumbered in walk order, plus the memcache fill,
    pending fault injection and the cache ghost's part the future verdicts read (``ghost_key``)."""
    pgt = h.pgt
    pages = pgt.pool.pages                                  # descriptors decoded by spec
    tables, reached = renumbered_tables(pages, pgt.pool.refcount, pgt.pgd or (), pgt.start_level,
                                        h.params["page_shift"])
    fail = tuple(sorted(n - pgt.mm_ops.nr_allocs for n in pgt.mm_ops.fail_at
                        if n >= pgt.mm_ops.nr_allocs))
    return (tables, len(pages) - reached, h.mc.nobjs, fail,
            ghost_key(h.cache, pgt.cmo, pgt.has_fwb()))           # as its snapshot says


@dataclass
class ExploreOutcome:
    status: str
    states: int
    transitions: int
    depth: int
    cpu_seconds: float    # CPU time of the run (time.process_time)
    program: str | None = None
    violations: list = field(default_factory=list)
    raw_state: dict | None = None


def _program(h) -> str:
    """The counterexample program: a replay ending in the judge for ptspec's own harness; the
    subject's own program for any other harness (a kernel pair)."""
    return h.program() if type(h) is Stage2Harness else h.ops_source


# The table explored (s2.exhaustive.4k-39): the lock-step's geometry of that name, its shape and
# its table options (lockstep.OPTIONS), so that the id means one table configuration in both.
GEOMETRY = "4k-39"


@quiet_gc()      # the older objects set aside from its collections (ptspec.proofs.engines.collector)
def explore(depth: int = 3, *, harness_factory=Stage2Harness, expired=None, progress=None) -> ExploreOutcome:
    page_shift, ia_bits, owner_field = lockstep.GEOMETRIES[GEOMETRY]
    ops = alphabet(page_shift=page_shift)
    t0 = time.process_time()
    root = harness_factory(page_shift, ia_bits, owner_field=owner_field, arena_pages=64,
                           mc_capacity=4, **lockstep.OPTIONS.get(GEOMETRY, {}))
    if root.violations:
        return ExploreOutcome("refuted", 1, 0, 0, time.process_time() - t0, _program(root),
                              [str(v) for v in root.violations], root.raw_state())
    seen = Explored()
    seen.add(canonical(root))
    frontier = deque([(root, 0)])
    transitions = 0
    while frontier:
        h, d = frontier.popleft()
        if d >= depth:
            continue
        for op, args in ops:
            if expired is not None and expired():
                return ExploreOutcome("unknown", seen.states, transitions, d,
                                      time.process_time() - t0)
            child = h.fork()
            if op == "fail_next_alloc":
                child.fail_allocation(0)
                found = []
            else:
                _, found = child.step(op, **args)
            transitions += 1
            if progress:
                progress()
            if found:
                return ExploreOutcome("refuted", seen.states, transitions, d + 1,
                                      time.process_time() - t0, _program(child),
                                      [str(v) for v in found], child.raw_state())
            if seen.add(canonical(child)):
                frontier.append((child, d + 1))
    return ExploreOutcome("passed", seen.states, transitions, depth, time.process_time() - t0)
