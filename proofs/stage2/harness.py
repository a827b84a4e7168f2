"""Lock-step driver: runs one impl stage-2 table and judges every step with the spec.

A ``Stage2Harness`` owns an impl ``KvmPgtable``, its page pool and a memcache. ``step(op, **args)``
tops up the memcache where the kernel's callers would (before map and set_owner), runs the
operation, snapshots the raw state, and asks the spec for the single-state invariants of the new
state and for the two-state checks of the step (S2-BBM, S2-BBM-WALK and the operation's contract), plus
CMO-POC and CMO-POU on a ghost of the caches kept across the steps (spec/stage2/cache.py). Every call is
also recorded as a line of Python, so a failing run prints as a program a reviewer can paste into a
test.

Operations whose arguments are not u64 values are Python misuse: impl raises ValueError and the
harness checks that the state did not change.
"""

from __future__ import annotations

import copy
import errno
import pickle

from ptspec import spec
from ptspec.proofs.engines import minimize
from ptspec.proofs.engines.collector import run_gc
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
from ptspec.impl.pgtable.pte import OWNER_FIELD_SEED
from ptspec.impl.pgtable.stage2 import KvmPgtable
from ptspec.proofs.stage2 import refusal, returns
from ptspec.proofs.stage2.returns import SubjectFault   # noqa: F401  (the harnesses' name for it)
from ptspec.spec.stage2.cache import CacheJudge

ERRNO_NAMES = {-getattr(errno, n): f"-errno.{n}" for n in
               ("EINVAL", "ENOMEM", "ERANGE", "EAGAIN", "E2BIG", "ENOEXEC", "EFAULT")}

# Argument order of each operation, as the kernel functions take them (the step record's table).
OP_ARGS = spec.stage2.step.OP_ARGS
U64 = (1 << 64) - 1


def _source(v) -> str:
    """A keyword value as Python a reviewer can paste (a function by its importable name)."""
    return f"{v.__module__}.{v.__qualname__}" if callable(v) else repr(v)


# The single-state invariants of a step are judged on the tables it changed
# (spec.changed_tables); every FULL_EVERY-th step, and the first, judges the whole state instead,
# a cross-check of the window (the two must agree: tests/test_window.py).
FULL_EVERY = 16

# A WARN the kernel raises for its caller's misuse, not for its own state: the caller's bug.
CALLER_WARNINGS = ("kvm_pgtable_stage2_map: identity map with addr != phys",)


def fmt(v) -> str:
    return hex(v) if isinstance(v, int) and not isinstance(v, bool) and v > 9 else repr(v)


def _same_tables(a: dict, b: dict) -> bool:
    keys = ("roots", "pages", "refcount", "memcache", "pool_errors")
    return all(a[k] == b[k] for k in keys) and not b["tlb_log"]


def kernel_values(op: str, args: dict) -> bool:
    """Whether every argument of `op` is a value the kernel function can be called with: a u64
    (not a bool), an owner id a u8, an annotate type a u32. Anything else is Python misuse,
    refused with ValueError."""
    for name in OP_ARGS.get(op, ()):
        v = args.get(name)
        top = 0xFF if name == "owner_id" else 0xFFFFFFFF if name == "type" else U64   # type: an enum
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            return False
    return True


class Stage2Harness:
    """One impl stage-2 table checked against the spec after every step."""

    # impl's operations run under returns.guard (a CPU budget, C-RETURNS); the kernel's C
    # harnesses say False: their library calls are guarded in C (ptspec.proofs.kernel.guard)
    python_subject = True

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, owner_field=OWNER_FIELD_SEED,
                 fwb: bool = False, cmo: bool = True, arena_pages: int = 256,
                 mc_capacity: int = 16, check: bool = True, **pgt_kwargs):
        self.params = dict(page_shift=page_shift, ia_bits=ia_bits, owner_field=tuple(owner_field),
                           fwb=fwb, cmo=cmo, **pgt_kwargs)
        self.pool = PagePool(page_shift, arena_pages)
        self.pgt = KvmPgtable(page_shift, ia_bits, pool=self.pool, owner_field=owner_field,
                              fwb=fwb, cmo=cmo, **pgt_kwargs)
        self.mc = KvmMmuMemoryCache(self.pool, mc_capacity)
        self.check = check
        extra = "".join(f", {k}={_source(v)}" for k, v in pgt_kwargs.items())
        imports = sorted({f"import {v.__module__}" for v in pgt_kwargs.values() if callable(v)})
        self.lines = [
            *imports,
            "from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool",
            "from ptspec.impl.pgtable.stage2 import KvmPgtable",
            f"pool = PagePool({page_shift}, {arena_pages})",
            f"pgt = KvmPgtable({page_shift}, {ia_bits}, pool=pool, owner_field={tuple(owner_field)},"
            f" fwb={fwb}, cmo={cmo}{extra})",
            f"mc = KvmMmuMemoryCache(pool, {mc_capacity})",
        ]
        cls = type(self)           # a subclass replays through itself
        self.make_source = minimize.call(cls.__qualname__, dict(
            owner_field=tuple(owner_field), fwb=fwb, cmo=cmo, arena_pages=arena_pages,
            mc_capacity=mc_capacity, **pgt_kwargs), page_shift, ia_bits, hex_ints=False)
        self.make_imports = [f"from {cls.__module__} import {cls.__qualname__}"] + sorted(
            {f"import {v.__module__}" for v in pgt_kwargs.values() if callable(v)})
        self._begin()

    def _begin(self) -> None:
        """The run's bookkeeping, from the fresh table (self.pgt) to its init step; every subject
        (impl, the kernel's C) starts its run here."""
        self.violations: list = []
        self.cache = CacheJudge()       # CMO-POC / CMO-POU: the ghost of the caches, across steps
        self.warned = 0                 # kernel WARNs seen so far (pgt.warnings)
        self.trace: list = []           # what was run, replayable: ("op", name, args) / ("fail", k)
        self.calls: list = []           # the same, as harness calls (source, impl line it ran)
        self.steps = 0
        self._last_raw = self.pgt.snapshot()
        self.state = self._load(self._last_raw) if self.check else None
        self.destroyed = False
        self.step("init")

    def _load(self, raw, prev=None):
        """The State of a raw state; ``prev`` (the step's pre-state) lends what did not change."""
        return spec.load_state(raw, prev)

    @property
    def ops_source(self) -> str:
        return "\n".join(self.lines)

    def program(self) -> str:
        """The run as a program that replays it through a fresh harness and ends in the judge
        (``assert not h.violations``): runnable as pasted, it raises AssertionError exactly when
        the run broke the spec."""
        if "<locals>" in type(self).__qualname__:      # not importable: the impl calls it ran
            return self.ops_source
        return minimize.program(self.make_imports, self.make_source, self.calls)

    def raw_state(self, drain_log: bool = False) -> dict:
        return self.pgt.snapshot(drain_log=drain_log)

    # the run's records: copied list by list on fork (their entries are never changed)
    _RECORDS = ("lines", "trace", "calls", "violations")
    # judged states: shared on fork (nothing changes a state once it is taken)
    _SHARED = ("state", "_last_raw")

    def fork(self) -> "Stage2Harness":
        """An independent copy of this harness, for exploring several continuations of one state:
        the same as ``copy.deepcopy(self)``, faster. The subject (table, pool, memcache) is copied
        through pickle (one C-speed deep copy that keeps their shared references), the run's
        records list by list, and the judged states are shared. A subject pickle cannot copy
        (the kernel's C library) is deep-copied as before."""
        keep = {k: self.__dict__.pop(k) for k in self._RECORDS + self._SHARED}
        try:
            twin = pickle.loads(pickle.dumps(self, pickle.HIGHEST_PROTOCOL))
        except (pickle.PicklingError, TypeError, AttributeError):
            twin = copy.deepcopy(self)
        finally:
            self.__dict__.update(keep)
        for k in self._RECORDS:
            setattr(twin, k, list(keep[k]))
        for k in self._SHARED:
            setattr(twin, k, keep[k])
        return twin

    # -- running operations ----------------------------------------------------------------
    def _call(self, op: str, args: dict):
        pgt = self.pgt
        mc = None if args.get("no_memcache") else self.mc     # a caller without a memcache
        if op == "init":
            return pgt.init(), {}
        if op == "map":
            return pgt.map(args["addr"], args["size"], args["phys"], args["prot"], mc), {}
        if op == "set_owner":
            return pgt.set_owner(args["addr"], args["size"], mc, args["owner_id"]), {}
        if op in ("unmap", "wrprotect", "flush"):
            return getattr(pgt, op)(args["addr"], args["size"]), {}
        if op in ("mkyoung", "mkold"):
            pte = getattr(pgt, op)(args["addr"])
            return pte, {"pte": pte}
        if op == "is_young":
            young = pgt.is_young(args["addr"])
            return int(young), {"young": young}
        if op == "relax_perms":
            return pgt.relax_perms(args["addr"], args["prot"]), {}
        if op == "get_leaf":
            ret, pte, level = pgt.get_leaf(args["addr"])
            return ret, ({"pte": pte, "level": level} if ret == 0 else {})
        if op == "destroy":
            pgt.destroy()
            return 0, {}
        raise ValueError(f"unknown stage-2 operation {op!r}")

    def _record(self, op: str, args: dict, ret, no_mc: bool = False):
        if op == "init":
            call = "pgt.init()"
        else:
            names = OP_ARGS[op]
            vals = [fmt(args[n]) for n in names]
            mc = "None" if no_mc else "mc"
            if op == "map":
                vals.append(mc)
            if op == "set_owner":
                vals.insert(2, mc)
            call = f"pgt.{op}({', '.join(vals)})"
        shown = ERRNO_NAMES.get(ret, fmt(ret)) if isinstance(ret, int) else repr(ret)
        self.lines.append(f"{call}  # -> {shown}")

    def _kernel_warnings(self, op: str) -> list:
        """A WARN_ON the kernel code raised during this step: it asserts a state that must never
        happen (a valid entry overwritten by a table, a walk past the last level, no leaf possible
        at level 3), so it is reported like a broken invariant."""
        new = self.pgt.warnings[self.warned:]
        self.warned = len(self.pgt.warnings)
        return [spec.Violation("KERNEL-WARN", f"{op}: WARN_ON fired: {w}", {}) for w in new
                if w not in CALLER_WARNINGS]

    def _configuration(self, raw: dict) -> list:
        """The raw state reports the configuration the table was built with (checked against the
        harness's own parameters, not impl's view of them)."""
        p = self.params
        want = {"page_shift": p["page_shift"], "ia_bits": p["ia_bits"],
                "owner_field": list(p["owner_field"]), "cmo": p["cmo"],
                "has_fwb": bool(p["fwb"]) and not p.get("flags", 0) & 1,     # KVM_PGTABLE_S2_NOFWB
                "has_xnx": bool(p.get("xnx"))}          # FEAT_XNX; a raw state without the key: no
        return [spec.Violation("C-INIT", f"init: the state reports {k} = {raw.get(k)!r}, the "
                                         f"table was built with {v!r}", {})
                for k, v in want.items() if raw.get(k, False if k == "has_xnx" else None) != v]

    def fail_allocation(self, k: int = 0):
        """Make the k-th page-table allocation from now on fail (fault injection)."""
        mm = self.pgt.mm_ops
        mm.fail_at = {mm.nr_allocs + k}
        self.trace.append(("fail", k))
        self.lines.append(f"pgt.mm_ops.fail_at = {{pgt.mm_ops.nr_allocs + {k}}}")
        self.calls.append((f"h.fail_allocation({k})", self.lines[-1]))

    def step(self, op: str, **args):
        """Run one operation and check it; returns (ret, violations of this step). A ValueError
        must come for exactly the calls whose arguments are not kernel values (C-ARGS; the statement,
        with KERNEL-WARN's, is in spec/stage2/calls.py)."""
        if op != "init":
            self.trace.append(("op", op, dict(args)))
            self.calls.append((minimize.call("h.step", args, op), ""))
        mark = len(self.lines)
        try:
            return self._step(op, args)
        finally:
            if op != "init" and len(self.lines) > mark:
                self.calls[-1] = (self.calls[-1][0], self.lines[mark])

    def _full_snapshot(self) -> dict | None:
        """All of the subject's state a refused call must leave alone (ptspec.proofs.stage2.refusal);
        None where only the raw state can be seen (the kernel's C)."""
        return refusal.snapshot(self.pgt, self.mc)

    def _step(self, op: str, args: dict):
        pre_raw = pre = pre_full = None
        kernel = kernel_values(op, args)        # the arguments are kernel values (else C-ARGS)
        if self.check:
            pre_raw, pre = self._last_raw, self.state
            if not kernel:                        # a refusal is due: all of impl's state, first
                pre_full = self._full_snapshot()
        try:
            with returns.guard(f"pgt.{op}", self.python_subject):
                ret, out = self._call(op, args)
        except SubjectFault as exc:
            return self._did_not_return(op, args, exc)
        except ValueError as exc:
            # Python misuse: impl must refuse before touching anything.
            self.lines.append(f"# pgt.{op}(**{args!r}) raised ValueError: {exc}")
            if not self.check:
                return None, []
            changed = [] if pre_full is None else refusal.differences(pre_full, self._full_snapshot())
            post_raw = self.pgt.snapshot()
            if not _same_tables(pre_raw, post_raw) and not changed:
                changed = ["tables"]
            found = [] if not changed else [spec.Violation(
                "C-ARGS", f"{op} raised ValueError ({exc}) but changed {', '.join(changed)}", {})]
            if kernel:
                found.append(spec.Violation(
                    "C-ARGS", f"{op} raised ValueError ({exc}) for arguments the kernel takes", {}))
            self._last_raw, self.state = post_raw, self._load(post_raw)
            found += spec.check_state(self.state)
            self.violations.extend(found)
            return None, found
        self.steps += 1
        misuse_accepted = not kernel
        no_mc = bool(args.get("no_memcache"))
        args = {k: v for k, v in args.items() if k != "no_memcache"}   # not a kernel argument
        if op == "map":
            args = dict(args, force_pte=self.pgt.force_pte(args["addr"], args["size"], args["prot"]))
        if op == "destroy":
            self.destroyed = True
        self._record(op, {k: v for k, v in args.items() if k != "force_pte"}, ret, no_mc)
        if op in ("init", "map", "set_owner"):
            # Refill the memcache now, as the kernel's callers do before their next map: the
            # post-state then already is the next operation's pre-state.
            self.mc.topup(self.mc.capacity)
            self.lines.append(f"mc.topup({self.mc.capacity})")
        if not self.check:
            if self.state is not None:
                # Unjudged (a replayed prefix), but the caches' ghost follows every step: CMO-POC
                # and CMO-POU judge across steps, so a judged step after the prefix needs its history.
                post = self._load(self.pgt.snapshot(), self.state)
                self.cache.check(self.state, {"op": op, "args": args, "ret": ret, "out": out}, post)
                self.state = post
            return ret, []
        post_raw = self.pgt.snapshot()
        self._last_raw = post_raw
        # a full step loads and judges the post-state from scratch: the cross-check of the
        # incremental load (pages and walk lent by pre) and of the window
        full = self.steps % FULL_EVERY == 1
        post = self._load(post_raw, None if full else pre)
        step = {"op": op, "args": args, "ret": ret, "out": out}
        window = None if full else spec.changed_tables(pre, post)
        found = spec.check_state(post, pages=window) + spec.check_step(pre, step, post)
        found += self.cache.check(pre, step, post)
        found += self._kernel_warnings(op)
        if misuse_accepted:
            found.append(spec.Violation("C-ARGS", f"{op} accepted arguments that are not u64 "
                                                  f"values (returned {ret!r})", {}))
        if op == "init":
            found += self._configuration(post_raw)
        self.state = post
        self.violations.extend(found)
        return ret, found

    def _did_not_return(self, op: str, args: dict, exc: SubjectFault):
        """C-RETURNS: the call ran past its budget or faulted. The step is the violation; the
        tables are left as the call left them (half done, not judged), and the harness's state
        stays the pre-state, so a counterexample shows the tables the call started from."""
        self.steps += 1
        try:
            self._record(op, {k: v for k, v in args.items() if k != "no_memcache"}, None,
                         bool(args.get("no_memcache")))
            call = self.lines.pop().rsplit("  # -> ", 1)[0]
        except (KeyError, TypeError, ValueError):   # arguments no record line knows: as given
            call = f"pgt.{op}(**{args!r})"
        self.lines.append(f"{call}  # does not return: {exc}")
        found = [spec.Violation("C-RETURNS", f"{op}: {exc}", {"op": op})]
        self.violations.extend(found)
        return None, found


def replay(trace: list, make) -> tuple:
    """Run a recorded trace (``("op", name, args)`` / ``("fail", k)``) on ``make()``, stopping at
    the first step with a violation; returns (harness, used) for ``minimize.shortest``. Works
    for every harness with this trace format (stage 2, hyp stage 1). The collector is paused for
    the replay, as for a lock-step run (run_gc)."""
    with run_gc():
        return _replay(trace, make)


def _replay(trace: list, make) -> tuple:
    h = make()
    if h.violations:
        return h, 0
    for i, entry in enumerate(trace):
        if entry[0] == "fail":
            h.fail_allocation(entry[1])
            continue
        _, op, args = entry
        if op == "destroy" and h.destroyed:
            continue
        _, found = h.step(op, **args)
        if found:
            return h, i + 1
    return h, len(trace)
