"""Bounded exhaustive exploration of the kernel's C ``pgtable.c``: every sequence up to a depth.

The same exploration as impl's ``proofs/stage2/exhaustive.py`` and over its alphabet (block and
page maps, a straddling and a permission-only re-map, partial and whole unmaps, owner annotations,
write-protect, access flag and permission changes, flush, get_leaf, is_young, an injected
allocation failure; all inside two 2M blocks of a 4K / 39-bit table, or two level-2 blocks of
another geometry's granule), breadth-first from the empty table, with the C code as the subject,
built with the geometry's table options as the C lock-step builds it (``replay.options``: FWB on
4k-48, pages forced on 4k-34, no CMO on 16k-40, FEAT_XNX on 4k-40 where the tree reads it). The
alphabet gains the prots the tree has beyond impl's (``replay.prot_cases``: a NORMAL_NC block and
NORMAL_NC | X from 6.9, UX alone mapped and PX alone granted from 6.19) and, where the tree has
``kvm_pgtable_stage2_annotate`` (7.1), POISONED annotations over a page and a block
(``replay.annotate_cases``; set_owner of owner 0, no annotate call there, is left out); for older
trees it is impl's. A C table cannot be copied, so each transition
replays its parent's operation list on a fresh table (unjudged: it was judged when first
reached) and judges the new operation (``replay.run``): every invariant of the new state, S2-BBM,
the operation's contract, WARN_ONs. States are identified by the raw state the spec reads: the
tree's shape with table pages numbered in walk order (descriptors decoded by ``spec.arch``), the
refcounts, the memcache fill, pages in use outside the tree, whether an injected allocation
failure is still pending, and the cache ghost the future CMO-POC / CMO-POU verdicts read
(``ghost_key``: output addresses clean to PoC / PoU since the host last wrote them); a state whose
ghost is only cleaner than an explored one's with the same tables is not explored again
(``Explored``). Within the bound the check is complete: any reachable violation is found,
with a shortest sequence that reaches it.
"""

from __future__ import annotations

import time
from collections import deque

from ptspec.proofs.engines.collector import quiet_gc
from ptspec.proofs.kernel import replay, subject
from ptspec.proofs.runner.registry import cpu_rate
from ptspec.proofs.stage2.exhaustive import Explored, alphabet, ghost_key, renumbered_tables


def canonical(raw: dict, pending: bool, cache=None):
    """The C table's state with table pages renumbered in walk order, and the part of the run's
    cache ghost (``cache``: the harness's CacheJudge; None: left out) that its future CMO-POC /
    CMO-POU verdicts depend on (``ghost_key``)."""
    tables, reached = renumbered_tables(raw["pages"], raw["refcount"], raw["roots"],
                                        raw["start_level"], raw["page_shift"])
    ghost = None if cache is None else ghost_key(cache, raw["cmo"], raw["has_fwb"])
    return tables, len(raw["pages"]) - reached, len(raw["memcache"]), pending, ghost


def _entry(op: str, args: dict):
    return ("fail", 0) if op == "fail_next_alloc" else ("op", op, dict(args))


def _alphabet(cls, geometry: str | None) -> list:
    """impl's alphabet on the geometry and the tree's cases beyond it (``replay.extra_cases``).
    On a tree with annotate, set_owner entries whose owner id no annotate call writes (owner 0:
    the subject skips them, ``MainlineHarness.step``) are left out: each was a transition that
    changed nothing."""
    ops = (alphabet(page_shift=replay.geometry(geometry)[0])
           + replay.extra_cases(cls, geometry)["explore"])
    if replay.has_annotate(cls):
        ops = [(op, a) for op, a in ops if op != "set_owner" or a["owner_id"] != 0]
    return ops


@quiet_gc()      # the older objects set aside from its collections (ptspec.proofs.engines.collector)
def explore(tree, depth: int = 3, *, expired=None, progress=None,
            geometry: str | None = None, observe=None) -> replay.Outcome:
    """Breadth-first over the alphabet up to ``depth`` operations on the tree's C code, on the
    geometry (default 4K/39; pages and blocks scaled to its granule). ``observe(h, path, entry)``,
    if given, sees every judged transition that passed (the harness after ``entry``): what a test
    counts the exploration reaching."""
    t0, c0 = time.perf_counter(), time.process_time()
    cls = subject.subject_factory(tree)
    ops = _alphabet(cls, geometry)
    make = lambda: replay.harness(tree, arena_pages=64, mc_capacity=4, cls=cls,   # noqa: E731
                                  geometry_name=geometry)
    root = make()
    if root.violations:
        return replay.Outcome("refuted", 1, time.perf_counter() - t0, "init",
                              replay.Failure.of("init", root, root.violations), dict(cls.seen))
    seen = Explored()
    seen.add(canonical(root.raw_state(), False, root.cache))
    frontier = deque([([], False)])           # (operation list, failure pending)
    transitions = 0
    while frontier:
        path, pending = frontier.popleft()
        if len(path) >= depth:
            continue
        for op, args in ops:
            if expired is not None and expired():
                return replay.Outcome("unknown", transitions, time.perf_counter() - t0,
                                      f"stopped at depth {len(path)}: {seen.states} states, "
                                      f"{transitions} transitions", findings=dict(cls.seen))
            entry = _entry(op, args)
            h = make()
            found, _ = replay.run(h, path + [entry], judge_from=len(path))
            transitions += 1
            if progress:
                progress()
            if found:
                return replay.Outcome("refuted", transitions, time.perf_counter() - t0,
                                      f"depth {len(path) + 1}",
                                      replay.Failure.of(f"depth {len(path) + 1}", h, found),
                                      dict(cls.seen))
            if observe is not None:
                observe(h, path, entry)
            # an injected failure is pending until an allocation consumed it
            now_pending = entry[0] == "fail" or (pending and _unconsumed(h))
            if h.ended_by is not None:
                continue        # a catalogued use after free: no kernel state to explore from
            if seen.add(canonical(h.raw_state(), now_pending, h.cache)):
                frontier.append((path + [entry], now_pending))
    cpu = time.process_time() - c0
    return replay.Outcome("passed", transitions, time.perf_counter() - t0,
                          f"depth {depth}: {seen.states} distinct states, {transitions} "
                          f"transitions ({cpu_rate(transitions, cpu)} per CPU second)",
                          findings=dict(cls.seen))


def _unconsumed(h) -> bool:
    """Whether the last injected failure (the k = 0 of its ("fail", 0)) has not been used yet:
    no allocation call since it was set."""
    return replay.allocations(h) == 0
