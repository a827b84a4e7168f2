"""Hypothesis stateful runs of a whole VM: memslot layouts chosen to hurt, host events, guest accesses.

``MmuMachine`` draws a layout (``ptspec.proofs.mmu.layouts``: misaligned userspace_addr/base_gfn, partial
head and tail blocks, every hugetlb size, THP, PFNMAP, slots at the top of the IPA space, manual
dirty-log protect modes) and then interleaves guest accesses (read, write, exec, stage-1 walk, cache
maintenance) with dirty logging switched on and off, dirty-log harvests, THP splits, zaps, KSM
merges, page aging, notifier invalidations racing with a fault (between ``gfn_to_pfn`` and
``mmu_lock``), injected allocation failures, slot moves and deletes, ``stage2_unmap_vm`` and
ioremaps. Every step goes through ``VmHarness.step``; a violation raises ``MmuViolation``, whose
recorded trace is then replayed on a fresh VM and cut by delta debugging
(``ptspec.proofs.engines.minimize``) to the shortest sequence that breaks the same statement (the
id the failure reported first); hypothesis's own shrink phase is off, so every area minimises the
same way. A
hypothesis ``FlakyFailure`` (its own re-run disagreeing) still carries the finding: it is taken
out and replayed the same way, never reported as an error.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ptspec.proofs.engines.collector import quiet_gc
from ptspec.proofs.engines import minimize
from ptspec.proofs.mmu.harness import VmHarness, counterexample, replay
from ptspec.proofs.mmu.layouts import EDGE_LAYOUTS, LOG, edge_ipas, interesting_ipas, layout_pool, make_layout

KINDS = st.sampled_from(["read", "write", "write", "exec", "s1ptw", "cm"])
CHUNK = 6                          # examples per hypothesis run (see run_machine)
PICK = st.integers(0, 11)         # an index into the layout's interesting IPAs (collide often)


class MmuViolation(AssertionError):
    def __init__(self, harness, violations, note: str = ""):
        self.cx = counterexample(harness, violations)
        if note:
            self.cx["replay"] = note
        self.violations = self.cx["violations"]
        self.program = self.cx["ops"]
        self.trace = list(harness.trace)
        self.initial = harness.initial
        super().__init__("\n".join(self.violations[:6]) + "\n\n" + self.program)


def make_machine(layouts=None):
    layouts = layouts or st.sampled_from(layout_pool())

    class MmuMachine(RuleBasedStateMachine):
        h = None

        @initialize(layout=layouts)
        def setup(self, layout):
            self.h = VmHarness(layout, arena_pages=1024)
            self.ipas = interesting_ipas(layout)
            self._check(self.h.violations)

        def _check(self, found):
            if found:
                raise MmuViolation(self.h, found)

        def _step(self, op, **args):
            _, found = self.h.step(op, **args)
            self._check(found)

        def _ipa(self, k):
            return self.ipas[k % len(self.ipas)]

        def _hva(self, k):
            lay = self.h.layout
            v = lay["vmas"][0]
            ps = 1 << lay["page_shift"]
            ipa = self._ipa(k)
            for s in lay["slots"]:
                if s["gpa"] <= ipa < s["gpa"] + s["size"]:
                    return s["uaddr"] + (ipa - s["gpa"])
            return v["start"] + (k * ps) % v["size"]

        def _slot(self, k):
            slots = self.h.kvm.memslots
            return slots[k % len(slots)] if slots else None

        @rule(k=PICK, kind=KINDS)
        def access(self, k, kind):
            self._step("access", ipa=self._ipa(k), kind=kind)

        @rule(kind=st.sampled_from(["read", "write", "exec"]), reverse=st.booleans())
        def touch_all(self, kind, reverse):
            """The guest touches every interesting address once (in either order)."""
            for ipa in (reversed(self.ipas) if reverse else self.ipas):
                self._step("access", ipa=ipa, kind=kind)

        @rule(k=PICK, kind=KINDS, race=st.sampled_from(["split_thp", "zap", "ksm_merge"]))
        def access_racing(self, k, kind, race):
            self._step("access", ipa=self._ipa(k), kind=kind, race=(race, self._hva(k)), races=1)

        @rule(k=PICK, kind=st.sampled_from(["read", "write", "exec"]))
        def access_enomem(self, k, kind):
            self._step("access", ipa=self._ipa(k), kind=kind, enomem=True)

        @precondition(lambda self: self.h is not None and self.h.kvm.memslots)
        @rule(k=PICK)
        def toggle_logging(self, k):
            s = self._slot(k)
            self._step("set_memory_region", slot=s.id, flags=s.flags ^ LOG,
                       guest_phys_addr=s.base_gfn << self.h.layout["page_shift"],
                       memory_size=s.npages << self.h.layout["page_shift"],
                       userspace_addr=s.userspace_addr)

        @precondition(lambda self: self.h is not None and self.h.kvm.memslots)
        @rule(k=PICK)
        def harvest(self, k):
            s = self._slot(k)
            if self.h.kvm.manual_protect:
                self._step("clear_dirty_log", slot=s.id, first=0, num=s.npages)
            else:
                self._step("get_dirty_log", slot=s.id)

        @rule(k=PICK, op=st.sampled_from(["split_thp", "ksm", "age", "test_age"]))
        def host_event(self, k, op):
            self._step(op, hva=self._hva(k))

        @rule(k=PICK, whole=st.booleans())
        def zap(self, k, whole):
            lay = self.h.layout
            size = lay["block"] if whole else 1 << lay["page_shift"]
            hva = self._hva(k) & ~(size - 1)
            self._step("zap", hva=hva, size=size)

        @precondition(lambda self: self.h is not None and self.h.kvm.memslots)
        @rule(k=PICK, how=st.sampled_from(["delete", "move", "recreate"]))
        def slot_update(self, k, how):
            s = self._slot(k)
            ps = self.h.layout["page_shift"]          # the layout's granule, not impl's
            args = dict(slot=s.id, flags=s.flags, guest_phys_addr=s.base_gfn << ps,
                        memory_size=s.npages << ps, userspace_addr=s.userspace_addr)
            if how == "move":
                args["guest_phys_addr"] += self.h.layout["block"]
            if how in ("delete", "recreate"):
                self._step("set_memory_region", **dict(args, memory_size=0))
            if how != "delete":
                self._step("set_memory_region", **args)

        @rule()
        def unmap_vm(self):
            self._step("unmap_vm")

        @rule(off=st.sampled_from([0, 0x10, 0xFF0]), n=st.integers(0, 2), w=st.booleans())
        def ioremap(self, off, n, w):
            ps = 1 << self.h.layout["page_shift"]
            self._step("ioremap", ipa=0x800 * ps + off, pa=0x0900_0000 + off,
                       size=n * ps + 0x20, writable=w)

        @precondition(lambda self: self.h is not None and self.h.kvm.memslots)
        @rule(k=PICK)
        def logging_round(self, k):
            """A migration that starts and is cancelled: logging on, the guest reads, logging
            off, the guest writes the same page."""
            self.toggle_logging(0)
            self.access(k, "read")
            self.toggle_logging(0)
            self.access(k, "write")

    return MmuMachine


@dataclass
class MachineOutcome:
    status: str
    examples: int
    steps: int
    cpu_seconds: float    # CPU time of the run (time.process_time)
    failure: MmuViolation | None = None


def shortest_failure(exc: MmuViolation, max_replays: int) -> MmuViolation:
    """The finding replayed from its trace on a fresh VM of the same layout and cut to the
    shortest sequence that still breaks the statement it reported first; kept as found (and said so) when the trace
    does not reproduce it."""
    layout, arena = exc.initial
    target = minimize.first_id(exc.violations)
    cut = minimize.shortest(exc.trace, lambda t: replay(t, copy.deepcopy(layout), arena),
                            minimize.same_statement(exc.violations), max_replays)
    if not cut.reproduced:
        exc.cx["replay"] = (f"not replayable: the recorded trace of {cut.original} steps, replayed "
                            f"on a fresh VM, does not break {target} again")
        return exc
    h = cut.outcome
    return MmuViolation(h, list(h.violations), note=f"replayed and minimised: {cut.original} -> "
                                                    f"{len(cut.trace)} steps in {cut.replays} replays")


def edge_programs(counter: dict) -> MmuViolation | None:
    """The fixed first runs of every profile: on each EDGE_LAYOUTS layout (huge blocks crossing
    the memslot's start and end), the guest reads, then writes, the slot's first and last pages
    and the pages beside the block boundaries inside it, every step judged as in the random runs.
    Returns the first violation found (None when all are clean)."""
    for params in EDGE_LAYOUTS.values():
        h = VmHarness(make_layout(**params), arena_pages=1024)
        counter["runs"] += 1
        found = list(h.violations)
        for kind in ("read", "write"):
            for ipa in edge_ipas(h.layout):
                if found:
                    break
                counter["steps"] += 1
                _, found = h.step("access", ipa=ipa, kind=kind)
        if found:
            return MmuViolation(h, list(found))
    return None


@quiet_gc()      # the older objects set aside from its collections (ptspec.proofs.engines.collector)
def run_machine(*, examples: int, steps: int, seed: int = 0, layouts=None,
                shrink_replays: int = 200) -> MachineOutcome:
    """``examples`` runs of up to ``steps`` steps, seeded, no database: passed when all ran
    clean. The budget is the number of runs and steps, never the clock."""
    machine = make_machine(layouts)
    counter = {"runs": 0, "steps": 0}
    orig = machine._step

    def counting(self, op, **args):
        counter["steps"] += 1
        orig(self, op, **args)
    machine._step = counting

    t0 = time.process_time()
    if layouts is None:            # the random layout pool: first the fixed block-crossing programs
        exc = edge_programs(counter)
        if exc is not None:
            return MachineOutcome("refuted", counter["runs"], counter["steps"],
                                  time.process_time() - t0, shortest_failure(exc, shrink_replays))
    edge_runs = counter["runs"]
    # Several short runs with derived seeds rather than one long one: a long run keeps mutating
    # the few layouts it drew first; short ones spread over many layouts.
    done = 0
    chunk = 0
    while done < examples:
        n = min(CHUNK, examples - done)
        cfg = settings(max_examples=n, stateful_step_count=steps, database=None,
                       deadline=None, print_blob=False, report_multiple_bugs=False,
                       suppress_health_check=list(HealthCheck),
                       phases=[Phase.explicit, Phase.generate])
        # no shrink phase: the first failing run is replayed and cut by our delta debugging
        # (shortest_failure, as for stage 2); if hypothesis's own re-run disagrees
        # (FlakyFailure), the finding is kept
        exc = minimize.run_hypothesis(hyp_seed(seed * 7919 + chunk)(machine), cfg, MmuViolation)
        if exc is not None:
            return MachineOutcome("refuted", edge_runs + done + n, counter["steps"],
                                  time.process_time() - t0, shortest_failure(exc, shrink_replays))
        done += n
        chunk += 1
    return MachineOutcome("passed", edge_runs + done, counter["steps"], time.process_time() - t0)
