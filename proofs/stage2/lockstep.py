"""Hypothesis lock-step check: impl and the spec contracts, every invariant after every step.

``make_machine(geometry)`` builds a ``RuleBasedStateMachine`` whose rules are the stage-2
operations with arguments from ``ptspec.proofs.stage2.strategies``, including bad arguments (beyond the IPA space,
zero and wrapping sizes, out-of-range owner ids) and injected allocation failures. Each rule runs
through ``Stage2Harness.step``, which checks S2-RC, S2-OWN, S2-BA, S2-TREE, S2-LEAK on the new
state and S2-BBM plus the operation's contract on the transition. A violation raises
``StepViolation`` carrying the pasteable program, the tables and the violations; hypothesis then
shrinks the run to a short one.

``run_lockstep`` runs one machine with a budget and a seed and turns the outcome into a result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ptspec.impl.pgtable.pte import OWNER_FIELD_5_15, OWNER_FIELD_SEED

from ptspec.proofs.engines import minimize
from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.harness import Stage2Harness, replay

# name -> (page_shift, ia_bits, owner_field); the four required shapes, plus the 5.15
# owner-field position on one of them.
GEOMETRIES = {
    "4k-39": (12, 39, OWNER_FIELD_SEED),     # 3 levels, one root page
    "4k-48": (12, 48, OWNER_FIELD_SEED),     # 4 levels; FEAT_S2FWB on
    "4k-34": (12, 34, OWNER_FIELD_5_15),     # 2 levels, 16 concatenated roots, owner bits 9:2,
                                             # a pKVM host-style force_pte_cb
    "16k-47": (14, 47, OWNER_FIELD_SEED),    # 3 levels from level 1
    "64k-44": (16, 44, OWNER_FIELD_SEED),    # 2 levels from level 2, 4 concatenated roots
}

# Per-geometry table options beyond the shape: FWB on one, a force_pte callback on another.
HOST_RAM_END = 1 << 33


def pkvm_host_force_pte_cb(addr, end, prot):
    """As pKVM's host stage 2 decides it: pages unless the range is RAM mapped RWX (or MMIO
    mapped RW device); here RAM is the IPA range below 8G."""
    rw = S.KVM_PGTABLE_PROT_R | S.KVM_PGTABLE_PROT_W
    if end <= HOST_RAM_END:
        return prot != rw | S.KVM_PGTABLE_PROT_X
    return prot != rw | S.KVM_PGTABLE_PROT_DEVICE


OPTIONS = {"4k-48": {"fwb": True}, "4k-34": {"force_pte_cb": pkvm_host_force_pte_cb}}


class StepViolation(AssertionError):
    """A step broke an invariant or a contract."""

    def __init__(self, harness: Stage2Harness, violations: list, note: str = ""):
        self.program = harness.program()
        self.violations = [str(v) for v in violations]
        self.raw_state = harness.raw_state()
        self.trace = list(harness.trace)
        self.note = note            # how the counterexample was obtained (replayed, minimised)
        super().__init__("\n".join(self.violations[:8]) + "\n\n" + self.program)


def harness_maker(name: str, harness_factory=Stage2Harness, geometries=None, options=None):
    """A function that builds a fresh harness for the named geometry (as each run starts).

    ``geometries``/``options`` replace GEOMETRIES/OPTIONS for another subject (the kernel's C)."""
    geometries = GEOMETRIES if geometries is None else geometries
    options = OPTIONS if options is None else options
    page_shift, ia_bits, owner_field = geometries[name]

    def make():
        return harness_factory(page_shift, ia_bits, owner_field=owner_field,
                               arena_pages=512 if page_shift == 12 else 128,
                               **options.get(name, {}))
    return make


def make_machine(name: str, harness_factory=Stage2Harness, geometries=None, options=None):
    page_shift, ia_bits, owner_field = (GEOMETRIES if geometries is None else geometries)[name]
    geom = S.geometry(page_shift, ia_bits)
    addr = S.addresses(geom)
    size = S.sizes(geom)
    make = harness_maker(name, harness_factory, geometries, options)

    class Stage2Lockstep(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.h = make()
            self.mapped = []        # (addr, size, phys, prot) of maps that returned 0
            self._check(self.h.violations)

        def _check(self, found):
            if found:
                raise StepViolation(self.h, found)

        def _step(self, op, **args):
            ret, found = self.h.step(op, **args)
            self._check(found)
            if op == "map" and ret == 0:
                self.mapped.append((args["addr"], args["size"], args["phys"], args["prot"]))

        @rule(a=addr, s=size, d=S.phys_offsets(geom), prot=S.prots())
        def map(self, a, s, d, prot):
            self._step("map", addr=a, size=s, phys=a + d, prot=prot)

        @rule(a=addr, s=size, p=S.physes(geom), prot=S.prots())
        def map_anywhere(self, a, s, p, prot):
            self._step("map", addr=a, size=s, phys=p, prot=prot)

        @rule(a=addr, d=S.phys_offsets(geom), prot=S.prots(),
              lvl=st.sampled_from([lv for lv in (1, 2, 3) if geom.gran.block_ok[lv]]))
        def map_aligned(self, a, d, prot, lvl):
            """A whole aligned entry at a level that takes leaves: blocks, and (over existing
            tables) the anchor that coalesces a subtree into one block."""
            g = geom.gran.size[lvl]
            a &= ~(g - 1)
            self._step("map", addr=a, size=g, phys=(a + d) & ~(g - 1), prot=prot)

        @precondition(lambda self: self.mapped)
        @rule(i=st.integers(0, 7), perms=S.perm_changes(), grow=S.growths(geom))
        def remap(self, i, perms, grow):
            """Re-create an earlier mapping (what two vCPUs faulting on one page do), with the
            permissions changed and the range grown or moved back: -EAGAIN territory."""
            a, s, p, prot = self.mapped[-1 - i % len(self.mapped)]
            before, after = grow
            before = min(before, a, p)
            self._step("map", addr=a - before, size=s + before + after, phys=p - before,
                       prot=prot ^ perms)

        @precondition(lambda self: self.mapped)
        @rule(i=st.integers(0, 7), lvl=st.sampled_from(S.straddle_levels(geom)),
              back=st.sampled_from([1, 2, 256]),
              op=st.sampled_from(["unmap", "wrprotect", "flush", "set_owner"]))
        def cross_into(self, i, lvl, back, op):
            """A range that starts `back` pages before the entry boundary below an earlier
            mapping and ends one page into that mapping: it crosses from one entry (often a
            block or an empty slot) into the next, where there is something to change."""
            a = self.mapped[-1 - i % len(self.mapped)][0]
            page = geom.gran.page_size
            boundary = a & ~(geom.gran.size[lvl] - 1)
            start = max(boundary - back * page, 0)
            args = {"addr": start, "size": (a & ~(page - 1)) + page - start}
            if op == "set_owner":
                args["owner_id"] = 1
            self._step(op, **args)

        @rule(r=S.straddles(geom), d=S.phys_offsets(geom), prot=S.prots(),
              op=st.sampled_from(["unmap", "wrprotect", "flush", "map", "set_owner"]))
        def straddle(self, r, d, prot, op):
            """A range crossing an entry boundary at some level (walker alignment edge)."""
            a, s = r
            args = {"addr": a, "size": s}
            if op == "map":
                args.update(phys=a + d, prot=prot)
            if op == "set_owner":
                args["owner_id"] = 1
            self._step(op, **args)

        @rule(a=addr, s=size, o=S.owner_ids(1))
        def set_owner(self, a, s, o):
            self._step("set_owner", addr=a, size=s, owner_id=o)

        @rule(a=addr, s=size)
        def unmap(self, a, s):
            self._step("unmap", addr=a, size=s)

        @rule(a=addr, s=size)
        def wrprotect(self, a, s):
            self._step("wrprotect", addr=a, size=s)

        @rule(a=addr, op=st.sampled_from(["mkyoung", "mkold", "is_young", "get_leaf"]))
        def leaf_op(self, a, op):
            self._step(op, addr=a)

        @rule(a=addr, prot=S.perm_sets())
        def relax_perms(self, a, prot):
            self._step("relax_perms", addr=a, prot=prot)

        @rule(a=addr, s=size)
        def flush(self, a, s):
            self._step("flush", addr=a, size=s)

        @rule(a=S.bad_addresses(geom), s=size,
              op=st.sampled_from(["unmap", "wrprotect", "flush", "map", "set_owner"]))
        def beyond_ipa(self, a, s, op):
            args = {"addr": a, "size": s}
            if op == "map":
                args.update(phys=1 << 32, prot=S.PROT_BASE[1])
            if op == "set_owner":
                args["owner_id"] = 1
            self._step(op, **args)

        @rule(k=st.integers(0, 3))
        def fail_allocation(self, k):
            """The k-th page-table allocation from now on fails (fault injection)."""
            self.h.fail_allocation(k)

        @precondition(lambda self: not self.h.destroyed)
        @rule()
        def destroy(self):
            self._step("destroy")

    extra = getattr(harness_factory, "machine_rules", None)
    if extra is not None:           # a subject with operations of its own (subject_mainline)
        mixin = extra(addr, size)
        if mixin is not None:
            Stage2Lockstep = type("Stage2Lockstep", (mixin, Stage2Lockstep), {})
    Stage2Lockstep.__name__ = f"Stage2Lockstep_{name.replace('-', '_')}"
    return Stage2Lockstep


def shortest_failure(exc, make, max_replays: int):
    """The finding ``exc`` (a StepViolation) replayed from its trace and cut by delta debugging
    (``minimize.shortest``) to the shortest sub-sequence that breaks one of the same ids. When the
    trace does not reproduce, the original run is kept and says so (never lost)."""
    target = minimize.ids(exc.violations)
    cut = minimize.shortest(exc.trace, lambda t: replay(t, make),
                            lambda h: bool(minimize.ids(h.violations) & target), max_replays)
    if not cut.reproduced:
        exc.note = (f"not replayable: the recorded trace of {cut.original} entries, replayed on a "
                    f"fresh table, does not break {', '.join(sorted(target))} again")
        return exc
    h = cut.outcome
    found = [v for v in h.violations]
    return type(exc)(h, found, note=f"replayed and minimised: {cut.original} -> {len(cut.trace)} "
                                    f"entries in {cut.replays} replays")


@dataclass
class LockstepOutcome:
    status: str                 # "passed" or "refuted"
    examples: int
    steps: int
    seconds: float
    failure: StepViolation | None = None


def run_lockstep(name: str, *, examples: int, steps: int, seed: int = 0,
                 harness_factory=Stage2Harness, shrink_replays: int = 200,
                 geometries=None, options=None) -> LockstepOutcome:
    """Run the machine for ``examples`` runs of up to ``steps`` steps, seeded and without a
    database, and report whether it found a violation.

    Hypothesis only generates; a failing run's recorded trace is then minimised by replay
    (ptspec.proofs.engines.minimize, at most ``shrink_replays`` replays), which is much cheaper than hypothesis's own
    shrinking of stateful runs and yields the operation sequence a reviewer reads."""
    machine = make_machine(name, harness_factory, geometries, options)
    counter = {"runs": 0, "steps": 0}
    base_init = machine.__init__

    def counting_init(self):
        counter["runs"] += 1
        base_init(self)
    machine.__init__ = counting_init
    orig_step = machine._step

    def counting_step(self, op, **args):
        counter["steps"] += 1
        orig_step(self, op, **args)
    machine._step = counting_step

    cfg = settings(max_examples=examples, stateful_step_count=steps, database=None,
                   deadline=None, print_blob=False, report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck),
                   phases=[Phase.explicit, Phase.generate])
    t0 = time.perf_counter()
    exc = minimize.run_hypothesis(hyp_seed(seed)(machine), cfg, StepViolation)
    if exc is not None:
        exc = shortest_failure(exc, harness_maker(name, harness_factory, geometries, options), shrink_replays)
        return LockstepOutcome("refuted", counter["runs"], counter["steps"],
                               time.perf_counter() - t0, exc)
    return LockstepOutcome("passed", counter["runs"], counter["steps"], time.perf_counter() - t0)
