"""Hypothesis lock-step for lguest: impl and spec in step, every invariant after every step.

``make_machine(fmt, mode, variant)`` builds a ``RuleBasedStateMachine`` over one booted guest
(``ptspec.proofs.lguest.guest``): in mode ``"coop"`` the guest only changes its tables the way a Linux
guest does (write the entry, announce it), so LG-SHADOW is checked in its strict, coherent form; in
mode ``"hostile"`` it also writes arbitrary words anywhere in its memory and passes arbitrary
hypercall arguments (addresses in and beyond the switcher, unaligned and out-of-memory pgdirs,
out-of-range indices, PTEs with bad frames or flags). Both modes fault, switch pgdirs (with the
eviction choice drawn), flush, clear, run on every host CPU and inject allocation and
get_user_pages failures. Each step goes through ``LguestHarness.step``; a violation raises
``LgStepViolation`` with the program and the tables; ``shortest_failure`` then replays the
recorded log on a fresh guest and cuts it by delta debugging (``ptspec.proofs.engines.minimize``;
the boot stays, a cooperative guest's write-and-announce transactions are removed whole) to the
shortest run that breaks the same invariant. A hypothesis ``FlakyFailure`` still carries the
finding and is replayed the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ptspec.proofs.engines.collector import quiet_gc
from ptspec.proofs.lguest import guest as G
from ptspec.proofs.engines import minimize
from ptspec.proofs.lguest.harness import LguestHarness

U32 = (1 << 32) - 1


class LgStepViolation(AssertionError):
    def __init__(self, h: LguestHarness, note: str = ""):
        self.harness = h
        cx = h.counterexample()
        if note:
            cx["replay"] = note
        self.program, self.violations, self.raw_state = cx["ops"], cx["violations"], h.raw
        self.counterexample = cx
        super().__init__("\n".join(self.violations[:8]) + "\n\n" + self.program)


def entries(pae: bool, pfn_limit: int):
    """Words a hostile guest puts in its tables: plausible entries, bad frames, anything."""
    top = (1 << 64) - 1 if pae else U32
    flags = st.integers(0, 0xFFF)
    plausible = st.builds(lambda f, fl: (f << 12) | fl, st.integers(0, pfn_limit - 1), flags)
    badframe = st.builds(lambda f, fl: (f << 12) | fl | 1,
                         st.integers(pfn_limit, pfn_limit + 8) | st.integers(pfn_limit, 0xFFFFF), flags)
    common = st.sampled_from([0x67, 0x63, 0x61, 0x25, 0x1, 0x0, 0x181 | (12 << 12)])
    out = plausible | badframe | common | st.integers(0, top)
    if pae:
        out = out | st.builds(lambda e, hi: e | (hi << 44), plausible, st.integers(1, (1 << 20) - 1))
    return out


def make_machine(fmt: str, mode: str = "hostile", variant: str = "corrected", npgdirs: int = 4):
    layout = G.GuestLayout(fmt)
    pae = fmt == "pae"
    hostile = mode == "hostile"
    uva = st.sampled_from(layout.user_vas)
    kva = st.sampled_from(layout.kernel_vas)
    anyva = uva | kva
    frames = st.sampled_from(layout.data_frames[:6] + [0, layout.pfn_limit - 1])
    pte_flags = st.sampled_from([0, G.P | G.A, G.P | G.A | G.D, G.P | G.RW | G.A, G.P | G.RW | G.A | G.D,
                                 G.P | G.RW | G.US | G.A | G.D, G.P | G.US | G.A, G.P | G.RW, G.P])
    sw = 0xFFE0_0000 if pae else 0xFFC0_0000
    hostile_va = st.sampled_from([sw - 0x1000, sw, sw + 0x1000, sw + 0x3000, U32 & ~0xFFF, 0x1F000,
                                  0x20000, 0x3FF000, 0x400000, G.KERNEL_ADDRESS - 0x1000]) | \
        st.integers(0, U32) | anyva
    gpgdirs = st.sampled_from(layout.pgdirs) | st.sampled_from([0, 0x1004, 0x1FFFC, 0x20000, U32]) | \
        st.integers(0, U32)
    idxs = st.sampled_from([0, 1, 2, 3, 4, 5, 511, 512, 767, 768, 1022, 1023, 1024, 1025]) | \
        st.integers(0, U32)
    waddrs = st.sampled_from(layout.table_entry_addrs()) | \
        st.integers(0, layout.pfn_limit * 4096 - layout.eb).map(lambda a: a & ~(layout.eb - 1))
    words = entries(pae, layout.pfn_limit)

    class LguestLockstep(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.h = LguestHarness(fmt, variant=variant, coherent=not hostile, npgdirs=npgdirs)
            G.boot(self.h, layout)
            self.h.booted = len(self.h.log)
            self.h.boot_source = f"boot(h, GuestLayout({fmt!r}))"
            self._check()

        def _check(self):
            if self.h.violations:
                raise LgStepViolation(self.h)

        def _step(self, op, **args):
            self.h.step(op, **args)
            self._check()

        def alive(self):
            return not self.h.dead and not self.h.lg.freed

        # ---- what every guest does ----
        @precondition(alive)
        @rule(va=anyva, err=st.integers(0, 7))
        def fault(self, va, err):
            self._step("fault", vaddr=va, errcode=err)

        @precondition(alive)
        @rule(p=st.integers(0, 2), va=anyva, frame=frames, flags=pte_flags)
        def set_pte(self, p, va, frame, flags):
            G.coop_set_pte(self.h, layout, p, va, G.pte_value(frame, flags))
            self._check()

        @precondition(alive)
        @rule(p=st.integers(0, 2), flags=st.sampled_from([0, 0x67, 0x65, 0x63, 0x27, 0x21]))
        def set_user_pde(self, p, flags):
            if layout.pae:
                flags &= 0x67
            G.coop_set_user_pde(self.h, layout, p, flags)
            self._check()

        @precondition(alive)
        @rule(flags=st.sampled_from([0x63, 0x61, 0x67]))
        def set_kernel_pde(self, flags):
            G.coop_set_kernel_pde(self.h, layout, flags)
            self._check()

        @precondition(alive)
        @rule(p=st.integers(0, 2), evict=st.integers(0, npgdirs - 1))
        def switch(self, p, evict):
            self.h.force_random(evict)
            self._step("new_pagetable", pgtable=layout.pgdirs[p])
            self.h.clear_forced()

        @precondition(alive)
        @rule(op=st.sampled_from(["flush_user", "clear_all"]))
        def flush(self, op):
            self._step(op)

        @precondition(alive)
        @rule(cpu=st.integers(0, 1))
        def run(self, cpu):
            self._step("run", host_cpu=cpu)

        @precondition(alive)
        @rule(pages=st.integers(0, 2))
        def set_stack(self, pages):
            self._step("set_stack", esp=layout.stack_esp, pages=pages)

        @precondition(alive)
        @rule(va=anyva)
        def guest_pa(self, va):
            self._step("pa", vaddr=va)

        @precondition(alive)
        @rule(which=st.sampled_from(["alloc", "gup"]))
        def inject(self, which):
            (self.h.fail_next_alloc if which == "alloc" else self.h.fail_next_gup)()

        @precondition(lambda self: not self.h.lg.freed)
        @rule()
        def free(self):
            self._step("free")

        @precondition(lambda self: self.h.lg.freed)
        @rule()
        def recheck_after_free(self):
            """Once freed nothing runs; the final state is checked again (LG-RC: nothing held)."""
            self.h.recheck()
            self._check()

        # ---- what only a hostile guest does ----
        @precondition(lambda self: hostile and self.alive())
        @rule(addr=waddrs, value=words)
        def write_anything(self, addr, value):
            self._step("guest_write", addr=addr, value=value)

        @precondition(lambda self: hostile and self.alive())
        @rule(g=gpgdirs, va=hostile_va, gpte=words)
        def set_pte_anything(self, g, va, gpte):
            self._step("set_pte", gpgdir=g, vaddr=va, gpte=gpte)

        @precondition(lambda self: hostile and self.alive())
        @rule(g=gpgdirs, idx=idxs)
        def set_pgd_anything(self, g, idx):
            self._step("set_pgd", gpgdir=g, idx=idx)

        @precondition(lambda self: hostile and self.alive())
        @rule(g=gpgdirs, evict=st.integers(0, npgdirs - 1))
        def new_pagetable_anything(self, g, evict):
            self.h.force_random(evict)
            self._step("new_pagetable", pgtable=g)
            self.h.clear_forced()

        @precondition(lambda self: hostile and self.alive())
        @rule(va=hostile_va, err=st.integers(0, 7))
        def fault_anywhere(self, va, err):
            self._step("fault", vaddr=va, errcode=err)

        @precondition(lambda self: hostile and self.alive())
        @rule(esp=hostile_va, pages=st.integers(0, 3))
        def set_stack_anywhere(self, esp, pages):
            self._step("set_stack", esp=esp, pages=pages)

        @precondition(lambda self: hostile and self.alive())
        @rule(ka=hostile_va, addr=st.sampled_from([layout.lguest_data, 0x20000 - 4, U32]))
        def lguest_init_anything(self, ka, addr):
            if addr == layout.lguest_data:
                self._step("guest_write", addr=addr, value=ka & (U32 if not pae else (1 << 64) - 1))
            self._step("guest_data_init", lguest_data=addr)

        @precondition(lambda self: hostile and pae and self.alive())
        @rule(pmdp=gpgdirs, idx=idxs)
        def set_pmd_anything(self, pmdp, idx):
            self._step("set_pmd", pmdp=pmdp, idx=idx)

    LguestLockstep.__name__ = f"LguestLockstep_{fmt}_{mode}"
    return LguestLockstep


@dataclass
class LgOutcome:
    status: str
    examples: int
    steps: int
    cpu_seconds: float    # CPU time of the run (time.process_time)
    failure: LgStepViolation | None = None


def _groups(log):
    """The log cut into removable units: a begin..end transaction, or one other entry."""
    out, cur = [], None
    for e in log:
        if e[0] == "begin":
            cur = [e]
        elif e[0] == "end" and cur is not None:
            cur.append(e)
            out.append(cur)
            cur = None
        elif cur is not None:
            cur.append(e)
        else:
            out.append([e])
    if cur:
        out.append(cur)
    return out


def shortest_failure(exc: LgStepViolation, max_replays: int) -> LgStepViolation:
    """The finding replayed from its log on a fresh guest and cut by delta debugging to the
    shortest run (boot kept, transactions whole) that breaks the same first invariant; kept as
    found, and said so, when the log does not reproduce it."""
    h = exc.harness
    want = h.violations[0].inv
    head, units = h.log[:h.booted], _groups(h.log[h.booted:])

    def replay(trial):
        r, used = h.replay_counted(head + [e for g in trial for e in g])
        # `used` counts entries; give back how many whole units ran
        n, ran = 0, max(0, used - len(head))
        for g in trial:
            if ran <= 0:
                break
            ran -= len(g)
            n += 1
        return r, n

    cut = minimize.shortest(units, replay, minimize.same_statement(h.violations), max_replays)
    if not cut.reproduced:
        exc.counterexample["replay"] = (
            f"not replayable: the recorded log of {len(h.log)} entries, replayed on a fresh guest, "
            f"does not break {want} again")
        return exc
    n = sum(len(g) for g in cut.trace)
    return LgStepViolation(cut.outcome, note=f"replayed and minimised: {len(h.log) - len(head)} -> "
                                             f"{n} entries after the boot in {cut.replays} replays")


@quiet_gc()      # the older objects set aside from its collections (ptspec.proofs.engines.collector)
def run_lockstep(fmt: str, mode: str = "hostile", *, examples: int, steps: int, seed: int = 0,
                 variant: str = "corrected", npgdirs: int = 4,
                 shrink_replays: int = 200) -> LgOutcome:
    """Run the machine (hypothesis generation without its shrinker, which is slow on these long
    runs); a failure is then replayed and cut by ``shortest_failure`` (at most ``shrink_replays``
    replays)."""
    machine = make_machine(fmt, mode, variant, npgdirs)
    counter = {"runs": 0, "steps": 0}
    base_init = machine.__init__

    def counting_init(self):
        counter["runs"] += 1
        base_init(self)

    def counting_teardown(self):
        counter["steps"] += self.h.steps       # every checked step, boot included
    machine.__init__, machine.teardown = counting_init, counting_teardown
    cfg = settings(max_examples=examples, stateful_step_count=steps, database=None, deadline=None,
                   print_blob=False, report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck),
                   phases=[Phase.explicit, Phase.generate])
    t0 = time.process_time()
    exc = minimize.run_hypothesis(hyp_seed(seed)(machine), cfg, LgStepViolation)
    if exc is not None:
        return LgOutcome("refuted", counter["runs"], counter["steps"], time.process_time() - t0,
                         shortest_failure(exc, shrink_replays))
    return LgOutcome("passed", counter["runs"], counter["steps"], time.process_time() - t0)
