"""Allocation failure at every allocation point of the kernel's C ``pgtable.c``.

The scenarios of impl's ``proofs/stage2/errorpaths.py`` (setups leaving blocks, pages, owner
annotations and a 1G block behind; target maps and set_owners that need new tables, straddle
blocks or cover whole ones; on trees with NORMAL_NC a straddling NC map, with FEAT_XNX a PX-only
map: ``replay.prot_cases``; with annotate, POISONED over new tables and across two level-2
entries: ``replay.annotate_cases``), run on the C code. For each target the call is first run once,
unjudged, to count the allocation calls it makes (the shim's allocator counts them); then, from a
freshly replayed setup, once per allocation point k with exactly the k-th allocation failing
(the shim's ``kdiff_fail_at``). Each failing call is judged by the spec like any other step: every
invariant of the state it leaves (nothing leaked, refcounts exact, no half-built table), S2-BBM,
and the operation's contract on failure (its failure rule: part of the range may be done, nothing
outside it changes, the error returned is -ENOMEM). Initialising the table with the root
allocation failing, and the identity-mapped table's steps, are judged the same way.
"""

from __future__ import annotations

import time

from ptspec.impl.pgtable.stage2_map import KVM_PGTABLE_S2_IDMAP

from ptspec.proofs.engines import minimize
from ptspec.proofs.kernel import replay, subject
from ptspec.proofs.stage2.errorpaths import scenarios


def scaled(geometry: str | None, cls=None):
    """impl's (SETUPS, TARGETS, IDMAP_STEPS, BAD_ARGS) scaled to the geometry (default 4K/39);
    with a subject class, TARGETS and BAD_ARGS also get the cases its tree has beyond impl's
    (``replay.extra_cases``: NORMAL_NC from 6.9, PX/UX from 6.19, FEAT_XNX, annotate from 7.1)."""
    ps, ia = replay.geometry(geometry)
    setups, targets, idmap_steps, bad_args = scenarios(ps, ia)
    if cls is not None:
        extra = replay.extra_cases(cls, geometry)
        targets, bad_args = targets + extra["targets"], bad_args + extra["bad"]
    return setups, targets, idmap_steps, bad_args


def setup_ops(name: str, geometry: str | None = None) -> list:
    return [("op", op, dict(args)) for op, args in scaled(geometry)[0][name]]


def count_allocations(tree, cls, setup: list, op: str, args: dict,
                      geometry: str | None = None) -> int:
    """Allocation calls ``op`` makes from the state ``setup`` leaves (run once, unjudged)."""
    h = replay.harness(tree, cls=cls, geometry_name=geometry)
    replay.run(h, setup, judge_from=len(setup))
    h.pgt.fail_at([])                       # clears the count and the fault list
    h.check = False
    h.step(op, **args)
    return replay.allocations(h)


def _failing_init(cls):
    """A harness class whose init meets a failing root allocation."""
    class FailingInit(cls):
        def _call(self, op, args):
            if op == "init":
                self.pgt.fail_at([0])
                self.lines.append("pgt.fail_at([0])")
            return super()._call(op, args)

        def program(self) -> str:
            """A replay through ``failing_init`` (init fails again), ending in the judge."""
            return minimize.program(["from ptspec.proofs.kernel.errorpaths import failing_init",
                                     "from ptspec.proofs.kernel.tree import open_tree"],
                                    self.make_source.replace("subject_factory(",
                                                             "failing_init(", 1),
                                    self.calls)
    FailingInit.__qualname__ = FailingInit.__name__ = "CSideHarness"
    return FailingInit


def failing_init(tree):
    """A C-side harness class on the tree whose init meets a failing root allocation."""
    return _failing_init(subject.subject_factory(tree))


def cases(tree, cls=None, geometry: str | None = None):
    """Yields (label, harness, violations) for every case on the geometry (default 4K/39), each
    judged by the spec."""
    cls = cls or subject.subject_factory(tree)
    SETUPS, TARGETS, IDMAP_STEPS, _ = scaled(geometry, cls)
    g = dict(geometry_name=geometry)
    h = replay.harness(tree, cls=_failing_init(cls), **g)
    yield "init with the root allocation failing", h, list(h.violations)
    for i in range(len(IDMAP_STEPS)):
        h = replay.harness(tree, cls=cls, flags=KVM_PGTABLE_S2_IDMAP, **g)
        ops = [("op", op, dict(args)) for op, args in IDMAP_STEPS[:i + 1]]
        found, _ = replay.run(h, ops)
        yield f"identity map: {IDMAP_STEPS[i][0]}({IDMAP_STEPS[i][1]})", h, found
    for name in SETUPS:
        setup = setup_ops(name, geometry)
        base = replay.harness(tree, cls=cls, **g)
        found, _ = replay.run(base, setup)
        if found or base.violations:
            yield f"setup {name}", base, found or list(base.violations)
            continue
        for op, args in TARGETS:
            n = count_allocations(tree, cls, setup, op, args, geometry)
            for k in range(n):
                h = replay.harness(tree, cls=cls, **g)
                found, _ = replay.run(h, setup + [("fail", k), ("op", op, dict(args))],
                                      judge_from=len(setup))
                yield f"{name}: {op} with allocation {k + 1}/{n} failing", h, found


def run_all(tree, *, expired=None, progress=None, geometry: str | None = None) -> replay.Outcome:
    """Every case on the geometry (default 4K/39); the first that breaks the spec refutes."""
    t0 = time.perf_counter()
    cls = subject.subject_factory(tree)
    SETUPS, TARGETS, _, _ = scaled(geometry, cls)
    return replay.judge_cases(
        cases(tree, cls, geometry), cls, t0, expired=expired, progress=progress, noun="cases",
        passed=lambda labels: f"{len(labels)} cases: {sum('failing' in x for x in labels)} injected "
                              f"allocation failures over {len(SETUPS)} setups x {len(TARGETS)} "
                              "targets, init, identity map")
