"""impl as one more judge of the kernel's C: the spec-judged C run compared word for word with impl.

``PairedHarness`` is ``subject.CSideHarness`` (the C table, judged by the spec after every step)
that also runs every step on an impl table at a kernel version (``kernels.make_impl``) and compares
the two after it (``pair.Pair.compare``: return values, every descriptor word, refcounts, pages in
use and in the memcache, TLB/cache events, warnings). The first difference of a run is recorded
(``differences`` of the class) and the comparison stops for that run, because the two tables have
diverged; the spec goes on judging the C side to the end. So a change that departs from impl on
purpose is still judged by the spec after the departure.
"""

from __future__ import annotations

from types import SimpleNamespace

from ptspec import spec

from ptspec.proofs.kernel import kernels
from ptspec.proofs.kernel.pair import Pair
from ptspec.proofs.kernel.subject import CSideHarness
from ptspec.proofs.stage2.harness import Stage2Harness


class PairedHarness(CSideHarness):
    """The C table under the spec, shadowed by impl at ``kernel_version`` and compared."""

    kernel_version = "6.1"          # set by paired_factory
    strict = False                  # a difference is also a violation (for shortening by replay)
    differences: list = []          # set by paired_factory: (lines, program) per diverged run
    compared: list = []             # set by paired_factory: [steps compared]

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, arena_pages: int = 256,
                 fwb: bool = False, cmo: bool = True, mc_capacity: int = 16,
                 force_pte: bool = False, flags: int = 0, **kw):
        self.impl, self.imc = kernels.make_impl(self.kernel_version, page_shift, ia_bits,
                                                npages=arena_pages, fwb=fwb, cmo=cmo,
                                                mc_capacity=mc_capacity, flags=flags,
                                                force_pte=force_pte)
        self.diverged = None
        super().__init__(page_shift, ia_bits, arena_pages=arena_pages, fwb=fwb, cmo=cmo,
                         mc_capacity=mc_capacity, force_pte=force_pte, flags=flags, **kw)

    def fail_allocation(self, k: int = 0):
        super().fail_allocation(k)
        ops = self.impl.mm_ops
        ops.fail_at = {ops.nr_allocs + k}

    def _impl_step(self, op: str, args: dict):
        """The same call on impl, as Stage2Harness makes it (memcache top-up included)."""
        saved = self.pgt, self.mc
        self.pgt, self.mc = self.impl, self.imc
        try:
            ret, _ = Stage2Harness._call(self, op, args)
        except ValueError:
            ret = None
        finally:
            self.pgt, self.mc = saved
        if ret is not None and op in ("init", "map", "set_owner"):
            self.imc.topup(self.imc.capacity)
        return ret

    def step(self, op: str, **args):
        ret, found = super().step(op, **args)
        if self.diverged is None and not any(v.inv == "C-RETURNS" for v in found):
            # (a C call that did not return left no state to compare: C-RETURNS is the verdict)
            i_ret = self._impl_step(op, args)
            view = SimpleNamespace(rets=(ret, i_ret), c=self.pgt, i=self.impl, imc=self.imc)
            diffs = Pair.compare(view, c_events=self._last_raw.get("tlb_log", []))
            self.compared[0] += 1
            if diffs:
                self.diverged = [str(d) for d in diffs]
                self.diverged_program = self.ops_source + (
                    f"\n# impl (kernel_version {self.kernel_version!r}) returned {i_ret!r}")
                self.differences.append((self.diverged, self.diverged_program, list(self.trace)))
                if self.strict:
                    kd = [spec.Violation(d.id, d.text, {}) for d in diffs]
                    self.violations.extend(kd)
                    found = list(found) + kd
        return ret, found


def paired_factory(tree, kernel_version: str, strict: bool = False):
    """A PairedHarness class bound to a kernel tree and an impl kernel version (``strict``: a
    difference is also returned as a violation, which replay-based shortening needs)."""
    kernels.check_profile(kernel_version)
    return type("PairedHarness", (PairedHarness,), {
        "tree": tree, "seen": {}, "kernel_version": kernel_version, "differences": [],
        "compared": [0], "strict": strict})


def shortest_difference(tree, kernel_version: str, name: str, trace: list, ids: set,
                        max_replays: int = 200):
    """(program, lines) of the shortest replayed sub-trace of a diverged run that still differs
    from impl with one of ``ids`` (ptspec.proofs.engines.minimize), or None if it does not."""
    from ptspec.proofs.engines import minimize
    from ptspec.proofs.kernel import subject
    from ptspec.proofs.stage2 import lockstep
    make = lockstep.harness_maker(name, paired_factory(tree, kernel_version, strict=True),
                                  subject.GEOMETRIES, subject.OPTIONS)
    from ptspec.proofs.stage2.harness import replay
    cut = minimize.shortest(trace, lambda t: replay(t, make),
                            lambda h: bool(minimize.ids(h.violations) & ids), max_replays)
    if not cut.reproduced:
        return None
    h = cut.outcome
    kd = [str(v) for v in h.violations if str(v).split()[0] in ids]
    if not kd or h.diverged is None:
        return None
    return h.diverged_program, kd
