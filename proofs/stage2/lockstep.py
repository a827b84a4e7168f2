"""Lock-step check: impl and the spec contracts, every invariant after every step.

The operations come from ``ptspec.proofs.stage2.program.Stage2Program`` (arguments from
``ptspec.proofs.stage2.strategies``), including bad arguments (beyond the IPA space, zero and
wrapping sizes, out-of-range owner ids) and injected allocation failures. Each runs through
``Stage2Harness.step``, which checks S2-RC, S2-OWN, S2-BA, S2-TREE, S2-LEAK on the new state and
S2-BBM plus the operation's contract on the transition. A violation raises ``StepViolation``
carrying the pasteable program, the tables and the violations; its trace is then replayed and cut
to the shortest one that still fails.

``run_lockstep`` runs a budget of seeded runs (plain random choices by default; hypothesis's with
``driver="hypothesis"``, through ``make_machine``) and turns the outcome into a result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from ptspec.impl.pgtable.pte import OWNER_FIELD_5_15, OWNER_FIELD_SEED

from ptspec.proofs.engines import minimize
from ptspec.proofs.engines.collector import quiet_gc, run_gc
from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.harness import Stage2Harness, replay
from ptspec.proofs.stage2.program import Stage2Program

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
    """A hypothesis state machine whose one rule runs the next operation of ``Stage2Program``,
    its choices drawn by hypothesis (``DrawChooser``): hypothesis drives and shrinks the run."""
    page_shift, ia_bits, owner_field = (GEOMETRIES if geometries is None else geometries)[name]
    geom = S.geometry(page_shift, ia_bits)
    make = harness_maker(name, harness_factory, geometries, options)
    program = subject_program(geom, harness_factory)    # one per machine: begin() starts runs

    class Stage2Lockstep(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.h = make()
            self.program = program
            program.begin()
            if self.h.violations:
                raise StepViolation(self.h, self.h.violations)

        def _step(self, op, **args):
            ret, found = self.h.step(op, **args)
            if found:
                raise StepViolation(self.h, found)
            return ret

        @rule(data=st.data())
        def operation(self, data):
            entry = self.program.next(S.DrawChooser(data.draw))
            if entry[0] == "fail":
                self.h.fail_allocation(entry[1])
                return
            ret = self._step(entry[1], **entry[2])
            self.program.returned(entry, ret)

    # a subject's operations of its own (subject_mainline's split, test_clear_young) come with
    # the program (program_rules): the one rule above draws them too
    Stage2Lockstep.__name__ = f"Stage2Lockstep_{name.replace('-', '_')}"
    return Stage2Lockstep


def subject_program(geom, harness_factory) -> Stage2Program:
    """The lock-step program for a subject: Stage2Program plus the operations the subject adds
    through a ``program_rules(options)`` class method (functions of a chooser returning a trace
    entry; None or empty: nothing to add), e.g. a newer tree's split and test_clear_young, and
    whose maps draw NORMAL_NC prots when its ``program_normal_nc()`` class method says so, and
    PX/UX prots when its ``program_px_ux()`` does."""
    hook = getattr(harness_factory, "program_rules", None)
    extra = hook(S.options(geom)) if hook is not None else None
    nc = getattr(harness_factory, "program_normal_nc", None)     # a tree with NORMAL_NC (6.9 on)
    pxux = getattr(harness_factory, "program_px_ux", None)       # a tree with PX/UX (7.1 on)
    return Stage2Program(geom, tuple(extra or ()), normal_nc=bool(nc is not None and nc()),
                         px_ux=bool(pxux is not None and pxux()))


def run_program(make, program: Stage2Program, chooser, steps: int, counter: dict):
    """One run: a fresh harness, then ``steps`` entries of the program (operations and injected
    allocation failures); raises StepViolation at the first step the spec rejects."""
    h = make()
    counter["runs"] += 1
    if h.violations:
        raise StepViolation(h, h.violations)
    program.begin()
    for _ in range(steps):
        entry = program.next(chooser)
        if entry[0] == "fail":
            h.fail_allocation(entry[1])
            continue
        counter["steps"] += 1
        ret, found = h.step(entry[1], **entry[2])
        if found:
            raise StepViolation(h, found)
        if getattr(h, "ended_by", None) is not None:
            counter["ended"] = counter.get("ended", 0) + 1
            break               # a catalogued finding corrupted the subject (a kernel's C only)
        program.returned(entry, ret)
    return h


def run_seed(seed: int, run: int) -> int:
    """The seed of run ``run`` of a lock-step seeded ``seed`` (runs are independent)."""
    return (seed << 32) ^ run


def shortest_failure(exc, make, max_replays: int):
    """The finding ``exc`` (a StepViolation) replayed from its trace and cut by delta debugging
    (``minimize.shortest``) to the shortest sub-sequence that still breaks the statement it
    reported first (``minimize.same_statement``). When the trace does not reproduce, the original
    run is kept and says so (never lost)."""
    target = minimize.first_id(exc.violations)
    cut = minimize.shortest(exc.trace, lambda t: replay(t, make),
                            minimize.same_statement(exc.violations), max_replays)
    if not cut.reproduced:
        exc.note = (f"not replayable: the recorded trace of {cut.original} entries, replayed on a "
                    f"fresh table, does not break {target} again")
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
    cpu_seconds: float    # CPU time of the run (time.process_time)
    failure: StepViolation | None = None
    ended: int = 0              # runs a finding that ends the run (a kernel's C) cut short


def run_lockstep(name: str, *, examples: int, steps: int, seed: int = 0,
                 harness_factory=Stage2Harness, shrink_replays: int = 200,
                 geometries=None, options=None, driver: str = "random") -> LockstepOutcome:
    """Run ``examples`` runs of ``steps`` operations each, seeded, and report whether one broke
    the spec.

    ``driver="random"`` (the default): each run draws from its own ``RandomChooser`` (seed
    ``run_seed(seed, i)``), so runs cost only the subject and the judge. ``driver="hypothesis"``:
    hypothesis draws the same program's choices (``make_machine``), seeded and without a database.
    Either way a failing run's recorded trace is then minimised by replay
    (ptspec.proofs.engines.minimize, at most ``shrink_replays`` replays), which is much cheaper
    than hypothesis's own shrinking of stateful runs and yields the operation sequence a reviewer
    reads."""
    if driver not in ("random", "hypothesis"):
        raise ValueError(f"driver must be 'random' or 'hypothesis', not {driver!r}")
    with quiet_gc():
        return _run_lockstep(name, examples, steps, seed, harness_factory, shrink_replays,
                             geometries, options, driver)


def _run_lockstep(name, examples, steps, seed, harness_factory, shrink_replays, geometries,
                  options, driver):
    make = harness_maker(name, harness_factory, geometries, options)
    counter = {"runs": 0, "steps": 0}
    t0 = time.process_time()
    exc = None
    if driver == "random":
        page_shift, ia_bits, _ = (GEOMETRIES if geometries is None else geometries)[name]
        program = subject_program(S.geometry(page_shift, ia_bits), harness_factory)
        for i in range(examples):
            try:
                # the collector paused for the run, and one collection once its harness is
                # dropped (ptspec.proofs.engines.collector)
                with run_gc():
                    run_program(make, program, S.RandomChooser(run_seed(seed, i)), steps, counter)
            except StepViolation as found:
                exc = found
                break
    else:
        exc = _run_machine(name, examples, steps, seed, harness_factory, geometries, options,
                           counter)
    if exc is not None:
        exc = shortest_failure(exc, make, shrink_replays)
        return LockstepOutcome("refuted", counter["runs"], counter["steps"],
                               time.process_time() - t0, exc)
    return LockstepOutcome("passed", counter["runs"], counter["steps"], time.process_time() - t0,
                           ended=counter.get("ended", 0))


def _run_machine(name, examples, steps, seed, harness_factory, geometries, options, counter):
    machine = make_machine(name, harness_factory, geometries, options)
    base_init = machine.__init__

    def counting_init(self):
        counter["runs"] += 1
        base_init(self)
    machine.__init__ = counting_init
    orig_step = machine._step

    def counting_step(self, op, **args):
        counter["steps"] += 1
        return orig_step(self, op, **args)
    machine._step = counting_step

    cfg = settings(max_examples=examples, stateful_step_count=steps, database=None,
                   deadline=None, print_blob=False, report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck),
                   phases=[Phase.explicit, Phase.generate])
    return minimize.run_hypothesis(hyp_seed(seed)(machine), cfg, StepViolation)
