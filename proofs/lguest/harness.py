"""Lock-step driver for lguest: one impl guest, judged by the spec after every step.

``LguestHarness(fmt, variant=..., coherent=...)`` owns an ``impl.lguest.Lguest``. ``step(op, **args)``
runs one hypercall-level operation (or a guest memory write, or an injected failure), snapshots the
raw state, and asks the spec for every lguest invariant of the new state (LG-SHADOW in its coherent
form when the guest is cooperative) and for the two-state checks of the step (per-step LG-SHADOW
and the operation's contract). Every call is recorded as a line of Python, so a failing run prints
as a program a reviewer can paste. After ``kill_guest`` the only operation left is ``free``.

Operations whose arguments are not u32 (u64 for a PAE PTE) are Python misuse: impl raises and the
harness checks that nothing changed (LG-C-ARGS, stated in spec/lguest/contracts_ops.py).
"""

from __future__ import annotations

from ptspec.impl.lguest import Lguest
from ptspec.proofs.engines import minimize
from ptspec.spec.lguest.check import lguest_check_state, lguest_check_step
from ptspec.spec.lguest.state import load_lguest_state

from ptspec.proofs.lguest import refusal
from ptspec.proofs.lguest.ptdump import render_lguest
from ptspec.proofs.stage2 import returns

# op -> (Lguest method, argument names)
OPS = {
    "init": ("init", ()), "set_pte": ("set_pte", ("gpgdir", "vaddr", "gpte")),
    "set_pgd": ("set_pgd", ("gpgdir", "idx")), "set_pmd": ("set_pmd", ("pmdp", "idx")),
    "new_pagetable": ("new_pagetable", ("pgtable",)), "flush_user": ("flush_user", ()),
    "clear_all": ("clear_all", ()), "fault": ("fault", ("vaddr", "errcode")),
    "pin": ("pin", ("vaddr",)), "set_stack": ("set_stack", ("esp", "pages")),
    "guest_data_init": ("guest_data_init", ("lguest_data",)), "pa": ("pa", ("vaddr",)),
    "run": ("run", ("host_cpu",)), "guest_write": ("guest_write", ("addr", "value")),
    "free": ("free", ()),
}
KERNEL_FUNCTION = {
    "init": "init_guest_pagetable", "set_pte": "guest_set_pte", "set_pgd": "guest_set_pgd",
    "set_pmd": "guest_set_pmd", "new_pagetable": "guest_new_pagetable",
    "flush_user": "guest_pagetable_flush_user", "clear_all": "guest_pagetable_clear_all",
    "fault": "demand_page", "pin": "pin_page", "set_stack": "pin_stack_pages",
    "guest_data_init": "page_table_guest_data_init", "pa": "guest_pa", "run": "map_switcher_in_guest",
    "guest_write": "(guest memory write)", "free": "free_guest_pagetable",
}


def _fmt(v):
    return hex(v) if isinstance(v, int) and not isinstance(v, bool) and v > 9 else repr(v)


class LguestHarness:
    """One impl guest checked against the spec after every step."""

    def __init__(self, fmt="2level", *, variant="corrected", coherent=False, check=True, **kw):
        kw = {k: v for k, v in kw.items() if v is not None}
        self.lg = Lguest(fmt, variant=variant, **kw)
        self.ctor = dict(fmt=fmt, variant=variant, coherent=coherent, **kw)
        self.log: list = []          # ("step", op, args) / ("knob", name, value) / ("begin"|"end",)
        self.calls: list = []        # the log as harness calls, one per entry (source, impl line)
        self.booted = 0              # log entries of the boot (``guest.boot``), printed as one call
        self.boot_source = ""
        self.make_source = minimize.call("LguestHarness", {k: v for k, v in self.ctor.items()
                                                           if k != "fmt"}, fmt)
        self.fmt = fmt
        self.coherent = coherent
        self.check = check
        extra = "".join(f", {k}={v!r}" for k, v in kw.items())
        self.lines = ["from ptspec.impl.lguest import Lguest",
                      f"lg = Lguest({fmt!r}, variant={variant!r}{extra})"]
        self.violations: list = []
        self.steps = 0
        self.hung = False               # a call did not return: the guest is called no more
        self.last_op = None
        self.raw = self.lg.raw_state()
        self.state = load_lguest_state(self.raw) if check else None
        self.in_transaction = False

    # ---- a guest change and its announcement, judged together ----------------------------------
    def begin(self):
        """Start a change the guest announces only at its end (write an entry, then the
        hypercall): in between, the guest's tables legitimately differ from the shadow, so the
        coherent form of LG-SHADOW waits for ``end()``; everything else is checked as usual."""
        self.in_transaction = True
        self._log(("begin",), "h.begin()")

    def end(self):
        self.in_transaction = False
        self._log(("end",), "h.end()")
        if self.check and self.coherent and self.raw["dead"] is None:
            found = [v for v in lguest_check_state(self.state, coherent=True) if v.inv == "LG-SHADOW"]
            self.violations.extend(found)

    # ---- knobs (no state change the spec sees) -------------------------------------------------
    def fail_next_alloc(self):
        self.lg.host.fail_next_alloc += 1
        self.lines.append("lg.host.fail_next_alloc += 1")
        self._log(("knob", "fail_next_alloc", None), "h.fail_next_alloc()", self.lines[-1])

    def fail_next_gup(self):
        self.lg.host.fail_next_gup += 1
        self.lines.append("lg.host.fail_next_gup += 1")
        self._log(("knob", "fail_next_gup", None), "h.fail_next_gup()", self.lines[-1])

    def force_random(self, value):
        self.lg.forced_random = [value]
        self.lines.append(f"lg.forced_random = [{value}]")
        self._log(("knob", "force_random", value), f"h.force_random({value!r})", self.lines[-1])

    def clear_forced(self):
        self.lg.forced_random = []
        self._log(("knob", "clear_forced", None), "h.clear_forced()")

    def _log(self, entry, source, note=""):
        self.log.append(entry)
        self.calls.append((source, note))

    def recheck(self):
        """Check the current state again (after ``free`` nothing runs; LG-RC: nothing held)."""
        self._log(("recheck",), "h.recheck()")
        if self.check:
            self.violations.extend(lguest_check_state(self.raw))

    def program(self, calls: list | None = None) -> str:
        """The run (or ``calls``, which start with this harness's own) as a program that replays
        it through a fresh harness and ends in the judge (``assert not h.violations``): runnable
        as pasted; the boot is one call."""
        calls = list(self.calls if calls is None else calls)
        imports = ["from ptspec.proofs.lguest.harness import LguestHarness"]
        if self.booted and self.boot_source:
            imports.append("from ptspec.proofs.lguest.guest import GuestLayout, boot")
            calls = [(self.boot_source, "the guest boots: init, kernel mappings, stack")] + \
                calls[self.booted:]
        return minimize.program(imports, self.make_source, calls)

    @property
    def dead(self):
        return self.lg.dead is not None

    @property
    def ops_source(self):
        return "\n".join(self.lines)

    def raw_state(self):
        return self.lg.raw_state()

    # ---- one step -------------------------------------------------------------------------------
    def step(self, op, **args):
        """Run op, check the spec; returns the impl's return value. Violations accumulate."""
        method, names = OPS[op]
        if set(args) != set(names):
            raise TypeError(f"{op} takes {names}, got {sorted(args)}")
        call = f"lg.{method}({', '.join(_fmt(args[n]) for n in names)})"
        if self.hung:               # the host is stuck in the earlier call (LG-C-RETURNS)
            return None
        pre, pre_state = self.raw, self.state
        pre_private = refusal.private_state(self.lg) if self.check else None
        pending = {"fail_alloc": self.lg.host.fail_next_alloc, "fail_gup": self.lg.host.fail_next_gup}
        self._log(("step", op, dict(args)), minimize.call("h.step", args, op))
        try:
            with returns.within(f"lg.{method}"):
                ret = getattr(self.lg, method)(*(args[n] for n in names))
        except returns.SubjectFault as exc:
            # LG-C-RETURNS: the call did not come back; its half-done state is not judged
            from ptspec.spec.violation import Violation
            self.lines.append(f"{call}  # does not return: {exc}")
            self.calls[-1] = (self.calls[-1][0], self.lines[-1])
            self.steps, self.hung = self.steps + 1, True
            self.violations.append(Violation("LG-C-RETURNS", f"{call}: {exc}", {}))
            return None
        except (ValueError, TypeError) as exc:
            self.lines.append(f"# {call} -> {type(exc).__name__}: {exc}")
            self.calls[-1] = (self.calls[-1][0], self.lines[-1][2:])
            post = self.lg.raw_state()
            changed = [] if not self.check else (["raw state"] if post != pre else []) + \
                refusal.differences(pre_private, refusal.private_state(self.lg))
            if changed:
                from ptspec.spec.violation import Violation
                self.violations.append(Violation("LG-C-ARGS", f"{call} raised {exc} but changed the "
                                                 f"state ({', '.join(changed)})", {}))
            return None
        self.lines.append(call + (f"  # -> {_fmt(ret)}" if ret is not None else "")
                          + (f"  # kill_guest: {self.lg.dead}" if self.lg.dead and
                             not (pre.get("dead")) else ""))
        self.calls[-1] = (self.calls[-1][0], self.lines[-1])
        self.steps += 1
        self.last_op = op
        post = self.lg.raw_state()
        self.raw = post
        if self.check:
            self.state = load_lguest_state(post)
            coherent = self.coherent and post["dead"] is None and not self.in_transaction
            found = lguest_check_state(self.state, coherent=coherent)
            found += lguest_check_step(pre_state, {"op": op, "args": dict(args), "ret": ret, "out": pending},
                                       self.state)
            self.violations.extend(found)
        return ret

    def replay(self, log):
        """A fresh harness with the same parameters, driven through ``log``; stops at the first
        violation (so a shortened log can be judged)."""
        h = LguestHarness(**self.ctor)
        for entry in log:
            if h.violations:
                break
            if entry[0] == "step":
                if (h.dead and entry[1] != "free") or h.lg.freed:
                    continue
                h.step(entry[1], **entry[2])
            elif entry[0] == "knob":
                name, value = entry[1], entry[2]
                if name == "force_random":
                    h.force_random(value)
                else:
                    getattr(h, name)()
            else:
                getattr(h, entry[0])()
        return h

    def replay_counted(self, log):
        """``replay``, also returning how many entries ran (for ``minimize.shortest``); the boot
        marker carries over when the log starts with the boot."""
        h = LguestHarness(**self.ctor)
        used = 0
        for entry in log:
            if h.violations:
                break
            used += 1
            if entry[0] == "step":
                if (h.dead and entry[1] != "free") or h.lg.freed:
                    continue
                h.step(entry[1], **entry[2])
            elif entry[0] == "knob":
                if entry[1] == "force_random":
                    h.force_random(entry[2])
                else:
                    getattr(h, entry[1])()
            else:
                getattr(h, entry[0])()
        if self.booted and log[:self.booted] == self.log[:self.booted]:
            h.booted, h.boot_source = self.booted, self.boot_source
        return h, used

    def counterexample(self):
        """The program, the violations, the tables in ptdump style, the kernel function."""
        try:
            tables = render_lguest(self.raw)
        except Exception as exc:            # too broken to draw: say so, keep the rest
            tables = f"(tables not drawable: {exc})"
        return {"ops": self.program(), "violations": [str(v) for v in self.violations],
                "tables": tables, "kernel_function": KERNEL_FUNCTION.get(self.last_op, "")}
