"""Hyp stage-1 lock-step: kvm_pgtable_hyp_init / _map / _destroy judged by the spec after every step.

``HypHarness`` drives an impl ``HypPgtable`` the way ``Stage2Harness`` drives a stage-2 table (same
interface: ``step``, ``fail_allocation``, ``trace``, ``lines``), so the trace minimiser and the
counterexample report work unchanged. After every step the S1-* invariants of the new state and the
step's C-HYP-* contract are checked, the WARN_ONs the step raised (``pgt.warnings``) against
C-HYP-WARN. ``run_hyp_lockstep`` runs a hypothesis state machine over hyp
mappings: page, block and misaligned ranges, re-maps of the same range (same mapping, software
bits only, a conflicting one), splits of existing blocks, refused prot values, addresses beyond
the VA range, and injected allocation failures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypothesis import HealthCheck, Phase, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ptspec import spec
from ptspec.impl.pgtable import hyp as hyp_impl
from ptspec.impl.pgtable.pool import PagePool
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_DEVICE, KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_SW0, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X

from ptspec.proofs.engines import minimize
from ptspec.proofs.stage2 import returns, strategies as S
from ptspec.proofs.stage2.harness import ERRNO_NAMES, Stage2Harness, SubjectFault, fmt
from ptspec.proofs.stage2.lockstep import StepViolation, shortest_failure

# name -> (page_shift, va_bits)
HYP_GEOMETRIES = {"4k-48": (12, 48), "16k-47": (14, 47), "64k-48": (16, 48)}


class HypHarness:
    """One impl hyp stage-1 table checked against the spec after every step."""

    python_subject = True           # as Stage2Harness's: impl's calls run under returns.within

    def __init__(self, page_shift: int = 12, va_bits: int = 48, arena_pages: int = 128):
        self.pool = PagePool(page_shift, arena_pages)
        self.pgt = hyp_impl.HypPgtable(page_shift, va_bits, pool=self.pool)
        self.lines = ["from ptspec.impl.pgtable.hyp import HypPgtable", "from ptspec.impl.pgtable.pool import PagePool",
                      f"pool = PagePool({page_shift}, {arena_pages})",
                      f"pgt = HypPgtable({page_shift}, {va_bits}, pool=pool)"]
        self.violations: list = []
        self.trace: list = []
        self.calls: list = []           # the trace as harness calls (source, impl line it ran)
        self.make_source = minimize.call("HypHarness", {}, page_shift, va_bits, arena_pages,
                                         hex_ints=False)
        self.make_imports = ["from ptspec.proofs.hyp.lockstep import HypHarness"]
        self.steps = 0
        self.destroyed = False
        self._raw = self.pgt.snapshot()
        self.step("init")

    @property
    def ops_source(self) -> str:
        return "\n".join(self.lines)

    def raw_state(self) -> dict:
        return self.pgt.snapshot()

    program = Stage2Harness.program                       # replay through HypHarness, then judge
    fail_allocation = Stage2Harness.fail_allocation       # same mm_ops, trace and program

    def step(self, op: str, **args):
        if op != "init":
            self.trace.append(("op", op, dict(args)))
        pre = self._raw
        warned = len(self.pgt.warnings)
        try:
            with returns.guard(f"pgt.{op}", self.python_subject):
                if op == "init":
                    ret = self.pgt.init()
                    call = "pgt.init()"
                elif op == "map":
                    ret = self.pgt.map(args["addr"], args["size"], args["phys"], args["prot"])
                    call = f"pgt.map({fmt(args['addr'])}, {fmt(args['size'])}, " \
                           f"{fmt(args['phys'])}, {fmt(args['prot'])})"
                elif op == "destroy":
                    self.pgt.destroy()
                    ret, call, self.destroyed = 0, "pgt.destroy()", True
                else:
                    raise ValueError(f"unknown hyp operation {op!r}")
        except SubjectFault as exc:
            return None, self._did_not_return(op, args, exc)
        self.steps += 1
        self.lines.append(f"{call}  # -> {ERRNO_NAMES.get(ret, fmt(ret))}")
        if op != "init":
            self.calls.append((minimize.call("h.step", args, op), self.lines[-1]))
        post = self._raw = self.pgt.snapshot()
        found = spec.check_state(post) + spec.check_hyp_step(
            pre, {"op": op, "args": args, "ret": ret, "out": {"warnings": self.pgt.warnings[warned:]}},
            post)
        self.violations.extend(found)
        return ret, found

    def _did_not_return(self, op: str, args: dict, exc: SubjectFault) -> list:
        """C-RETURNS: the call ran past its budget or faulted (the kernel's C code, guard.py);
        its tables are not judged (the last snapshot stays the state)."""
        self.steps += 1
        shown = ", ".join(fmt(v) for v in args.values())
        self.lines.append(f"pgt.{op}({shown})  # does not return: {exc}")
        if op != "init":
            self.calls.append((minimize.call("h.step", args, op), self.lines[-1]))
        found = [spec.Violation("C-RETURNS", f"{op}: {exc}", {"op": op})]
        self.violations.extend(found)
        return found


def hyp_geometry(name: str):
    """The hyp table's shape the inputs are built from: from spec (strategies.hyp_geometry), not impl."""
    page_shift, va_bits = HYP_GEOMETRIES[name]
    return S.hyp_geometry(page_shift, va_bits)


HYP_PROTS = [KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_DEVICE,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_DEVICE,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_SW0,
             # refused: not readable, W+X, executable device
             KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W | KVM_PGTABLE_PROT_X,
             KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X | KVM_PGTABLE_PROT_DEVICE]


def hyp_sizes(geom):
    """EL2 maps small things (text, data, per-CPU pages, a few MB): page to two-block sizes, with
    small deltas, plus zero and sizes that wrap the 64-bit range."""
    page, blk = geom.gran.page_size, geom.gran.size[2]
    return st.sampled_from([page, 2 * page, 3 * page, blk - page, blk, blk + page, 2 * blk, 1,
                            page + 1, 0, (1 << 64) - 1])


def harness_maker(name: str):
    page_shift, va_bits = HYP_GEOMETRIES[name]
    return lambda: HypHarness(page_shift, va_bits, 128 if page_shift == 12 else 48)


def make_machine(name: str, counter: dict | None = None):
    geom = hyp_geometry(name)
    counter = counter if counter is not None else {}
    counter.setdefault("steps", 0)
    make = harness_maker(name)
    addr, size = S.addresses(geom), hyp_sizes(geom)

    class HypLockstep(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.h = make()
            self.mapped = []
            self._check(self.h.violations)

        def _check(self, found):
            if found:
                raise StepViolation(self.h, found)

        def _map(self, a, s, p, prot):
            # Output addresses stay inside the PA range: the VA range is as wide, so IPA + offset
            # can pass its top, and the kernel's callers never hand hyp_map such a phys (README,
            # "Arguments"). Reducing modulo the range keeps every block alignment.
            p %= 1 << geom.gran.pa_bits
            counter["steps"] += 1
            ret, found = self.h.step("map", addr=a, size=s, phys=p, prot=prot)
            self._check(found)
            if ret == 0:
                self.mapped.append((a, s, p, prot))

        @precondition(lambda self: not self.h.destroyed)
        @rule(a=addr, s=size, d=S.phys_offsets(geom), prot=st.sampled_from(HYP_PROTS))
        def map(self, a, s, d, prot):
            self._map(a, s, a + d, prot)

        @precondition(lambda self: not self.h.destroyed)
        @rule(a=addr, d=S.phys_offsets(geom), prot=st.sampled_from(HYP_PROTS[:6]),
              lvl=st.sampled_from([2, 3]))
        def map_block(self, a, d, prot, lvl):
            g = geom.gran.size[lvl]
            a &= ~(g - 1)
            self._map(a, g, (a + d) & ~(g - 1), prot)

        @precondition(lambda self: self.mapped and not self.h.destroyed)
        @rule(i=st.integers(0, 7), change=st.sampled_from(["same", "sw", "perm", "phys", "inner"]))
        def remap(self, i, change):
            a, s, p, prot = self.mapped[-1 - i % len(self.mapped)]
            page = geom.gran.page_size
            if change == "sw":
                prot ^= KVM_PGTABLE_PROT_SW0
            elif change == "perm":
                prot ^= KVM_PGTABLE_PROT_W if not prot & KVM_PGTABLE_PROT_X else 0
            elif change == "phys":
                p += page
            elif change == "inner":        # a page inside: splits a block that holds it
                a, s, p = a + page, page, p + page
            self._map(a, s, p, prot)

        @precondition(lambda self: not self.h.destroyed)
        @rule(a=S.bad_addresses(geom), s=size)
        def beyond_va(self, a, s):
            self._map(a, s, 1 << 32, KVM_PGTABLE_PROT_R)

        @rule(k=st.integers(0, 2))
        def fail_allocation(self, k):
            self.h.fail_allocation(k)

        @precondition(lambda self: not self.h.destroyed)
        @rule()
        def destroy(self):
            counter["steps"] += 1
            _, found = self.h.step("destroy")
            self._check(found)

    HypLockstep.__name__ = f"HypLockstep_{name.replace('-', '_')}"
    return HypLockstep


@dataclass
class HypOutcome:
    status: str
    examples: int
    steps: int
    seconds: float
    failure: StepViolation | None = None


def run_hyp_lockstep(name: str, *, examples: int, steps: int, seed: int = 0,
                     shrink_replays: int = 200) -> HypOutcome:
    total = {"steps": 0}
    machine = make_machine(name, total)
    counter = {"runs": 0}
    base_init = machine.__init__

    def counting_init(self):
        counter["runs"] += 1
        base_init(self)
    machine.__init__ = counting_init
    cfg = settings(max_examples=examples, stateful_step_count=steps, database=None, deadline=None,
                   print_blob=False, report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    t0 = time.perf_counter()
    exc = minimize.run_hypothesis(hyp_seed(seed)(machine), cfg, StepViolation)
    if exc is not None:
        failure = shortest_failure(exc, harness_maker(name), shrink_replays)
        return HypOutcome("refuted", counter["runs"], total["steps"], time.perf_counter() - t0,
                          failure)
    return HypOutcome("passed", counter["runs"], total["steps"], time.perf_counter() - t0)
