"""Hyp stage 1 (EL2's own page table) on the kernel's C ``pgtable.c``, judged by the spec alone.

``CHypPgtable`` drives the tree's ``kvm_pgtable_hyp_init``, ``kvm_pgtable_hyp_map``,
``kvm_pgtable_hyp_destroy`` and, where the tree has it (6.0 on), ``kvm_pgtable_hyp_unmap`` on the
shim's hyp table (``kdiff_hyp_*`` at the end of ``shim/kdiff_rt.c``: the same arena and mm_ops as
stage 2), and exports the raw ``arm64-hyp-s1`` state the spec reads. ``CHypHarness`` is the hyp
lock-step harness (``proofs/hyp/lockstep.py``) over it, and the hyp lock-step machine drives it
with the same rules as impl's (pages, blocks, re-maps, splits, refused prot values, addresses
beyond the VA range, injected allocation failures, destroy), plus unmaps where the tree has them.

Every step is judged by the S1-* invariants and the step's C-HYP-* contract (C-HYP-WARN from the
WARN_ONs the C code raised, each named by the kernel function whose source lines hold it). Two
things depend on the tree, read from its source, not from its version number:

* hyp tables counting a reference per descriptor (trees with ``kvm_pgtable_hyp_unmap``): S1-RC as
  the spec states it (5.12-5.15: every table page keeps its one reference) is then the catalogued
  finding ``hyp-refcount``, and the table pages are judged by the per-descriptor rule the spec
  states for stage 2 (``S2-RC``'s rule, reported under S1-RC): 1 + the non-zero descriptors;
* the conflicting re-map WARN_ON sits in ``hyp_map_walker_try_leaf`` where 5.15's sits in
  ``hyp_pte_needs_update`` (the check moved): the C-HYP-WARN name of that WARN is the spec's;
* a table installed over a valid block (the condition of the split findings) is known from
  ``kvm_set_table_pte``'s WARN up to 6.1 and from the state on every tree (6.2 on, the reworked
  walker, has no such WARN: ``_table_over_leaf``). The same code runs on 6.2+ trees: their
  runtime (``kdiff_mainline_rt.c``) includes ``kdiff_rt.c`` and its ``kdiff_hyp_*``.

An unmap step is judged by the S1-* invariants, C-HYP-UNMAP (spec/hyp/unmap.py) and S1-UNMAP-TLBI
(spec/hyp/tlbi.py: the shim logs hyp_unmap_walker's TLBIs by VA at EL2 into the state's tlb_log).
"""

from __future__ import annotations

import ctypes
import time

from hypothesis import HealthCheck, Phase, seed as hyp_seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from ptspec import spec
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.invariants import _rc_violations

from ptspec.proofs.engines import minimize
from ptspec.proofs.hyp import lockstep as hyp_lockstep
from ptspec.proofs.kernel import build, cside, findings, guard, replay
from ptspec.proofs.kernel.subject import functions_of, source_text
from ptspec.proofs.stage2.harness import SubjectFault, fmt
from ptspec.proofs.stage2.lockstep import StepViolation, shortest_failure

GEOMETRY = "4k-48"
# share of the profile's hypothesis runs (divisor) per geometry, as s2.hyp.lockstep.*
HYP_SHARE = {"4k-48": 2, "16k-47": 8, "64k-48": 16}
# the conflicting re-map WARN_ON: where 6.0 on keep it -> the function the spec names
WARN_ALIASES = {"hyp_map_walker_try_leaf": "hyp_pte_needs_update"}


def has_unmap(tree) -> bool:
    return "kvm_pgtable_hyp_unmap(" in source_text(str(tree.pgtable_c))


def _functions(tree) -> list[tuple[range, str]]:
    """(line range, name) of every function defined in the tree's pgtable.c."""
    return [(range(a, b + 1), n) for a, b, n in functions_of(str(tree.pgtable_c))]


def _tables_over_leaf(pre: dict, post: dict) -> dict:
    """{table page: entries of it where the step replaced a valid block descriptor by a table
    descriptor in place} (a block, 0b01, in the pre-state, a table, 0b11, after): what
    kvm_set_table_pte's WARN_ON reported up to 6.1; 6.2 on install tables with
    kvm_init_table_pte and no WARN, so the state tells it. A 0b01 entry is a block at levels 1-2
    and never written at level 3 (reserved there), so no level is needed."""
    after = post.get("pages", {})
    out = {}
    for pa, words in pre.get("pages", {}).items():
        new = after.get(pa)
        if new is not None:
            n = sum(1 for w, m in zip(words, new) if w & 3 == 1 and m & 3 == 3)
            if n:
                out[pa] = n
    return out


def _table_over_leaf(pre: dict, post: dict) -> bool:
    """Whether the step replaced a valid block descriptor by a table descriptor in place."""
    return bool(_tables_over_leaf(pre, post))


def _starts_inside_leaf(raw: dict, addr: int) -> bool:
    """Whether the page at ``addr`` is mapped by a valid leaf that starts below it (the spec's
    walk of the raw state)."""
    st = spec.load_state(raw)
    page = addr - addr % (1 << st.page_shift)
    iv = st.walk().find(page) if st.roots else None
    return bool(iv and iv[3] and iv[0] < page)


class CHypPgtable:
    """The tree's hyp stage-1 code on the shim's hyp table (API and raw state as HypPgtable's)."""

    def __init__(self, tree, page_shift: int = 12, va_bits: int = 48, npages: int = 128):
        self.tree = tree
        self.lib = lib = cside.load(page_shift, cside.PLANT_DEFINES, tree)
        u64, u32, i32, vp = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p
        sigs = {"kdiff_hyp_init": (i32, [u32]), "kdiff_hyp_pgtable": (vp, []),
                "kdiff_hyp_start_level": (u32, []), "kdiff_hyp_pgd_pa": (u64, []),
                "kvm_pgtable_hyp_map": (i32, [vp, u64, u64, u64, u64]),
                "kvm_pgtable_hyp_destroy": (None, [vp])}
        if has_unmap(tree):
            sigs["kvm_pgtable_hyp_unmap"] = (u64, [vp, u64, u64])
        guard.bind(lib, sigs)          # the calls into the tree's code guarded (guard.py)
        self.unmap_fn = getattr(lib, "kvm_pgtable_hyp_unmap", None) if has_unmap(tree) else None
        self.page_shift, self.page_size, self.va_bits, self.npages = \
            page_shift, 1 << page_shift, va_bits, npages
        self.pa_bits = 52 if lib.kdiff_parange_max() == 6 else 48
        old = cside._LIVE.get(id(lib))
        if old is not None:
            old.lib = None
        if lib.kdiff_reset(npages, 0, 0, 0):
            raise MemoryError(f"could not map an arena of {npages} pages")
        cside._LIVE[id(lib)] = self
        self.pgt = lib.kdiff_hyp_pgtable()
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.pending: list = []             # EL2 invalidations since the last snapshot
        self.initialised = False
        self.start_level = 4 - (va_bits - 4) // (page_shift - 3)   # before init: from va_bits
        self._fns = None

    def _lib(self):
        if self.lib is None:
            raise RuntimeError("this CHypPgtable was superseded by a newer table of the granule")
        return self.lib

    def init(self) -> int:
        ret = self._lib().kdiff_hyp_init(self.va_bits)
        if ret == 0:
            self.initialised = True
            self.start_level = self.lib.kdiff_hyp_start_level()
        return ret

    def map(self, addr, size, phys, prot) -> int:
        prot = cside._u64("prot", prot)
        ml = getattr(self.tree.shape, "mainline", None)
        if ml is not None:          # the spec's enum kvm_pgtable_prot as the tree's (7.x renumbers)
            prot = ml.prot_to_tree(prot)
        return self._lib().kvm_pgtable_hyp_map(self.pgt, cside._u64("addr", addr),
                                               cside._u64("size", size),
                                               cside._u64("phys", phys), prot)

    def unmap(self, addr, size) -> int:
        if self.unmap_fn is None:
            raise ValueError("this tree has no kvm_pgtable_hyp_unmap")
        self._lib()
        return int(self.unmap_fn(self.pgt, cside._u64("addr", addr), cside._u64("size", size)))

    def destroy(self) -> None:
        if not self.initialised:
            raise ValueError("kvm_pgtable_hyp_destroy: the table has no root")
        self._lib().kvm_pgtable_hyp_destroy(self.pgt)
        self.initialised = False

    def fail_at(self, indices):
        lib = self._lib()
        lib.kdiff_fail_clear()
        for n in indices:
            lib.kdiff_fail_at(n)

    def _function_of(self, line: int) -> str:
        if self._fns is None:
            self._fns = _functions(self.tree)
        name = next((n for lines, n in self._fns if line in lines), "pgtable.c")
        return WARN_ALIASES.get(name, name)

    def drain(self) -> None:
        """The shim's log: WARN_ONs (named by their function), allocator errors, and the EL2 TLB
        invalidations (hyp_unmap_walker's, kept in ``pending`` for the next snapshot's tlb_log,
        as ``["tlbi_el2" | "tlbi_el2_last", va, level]``); hyp issues no cache maintenance."""
        lib = self._lib()
        n = lib.kdiff_log_len()
        raw = (ctypes.c_uint64 * (3 * n)).from_address(lib.kdiff_log()) if n else []
        for k in range(n):
            kind, a, b = raw[3 * k], raw[3 * k + 1], raw[3 * k + 2]
            if kind == cside.EV_WARN:
                self.warnings.append(f"{self._function_of(a)}: WARN_ON at pgtable.c:{a}")
            elif kind == cside.EV_ERR:
                self.errors.append(f"allocator error {a} on page {b:#x}")
            elif kind in cside.EL2_EVENT_NAMES:
                self.pending.append((cside.EL2_EVENT_NAMES[kind], a, b))
        lib.kdiff_log_clear()

    def snapshot(self) -> dict:
        self.drain()
        lib = self._lib()
        states = ctypes.string_at(lib.kdiff_page_states(), self.npages)
        rc = (ctypes.c_int32 * self.npages).from_address(lib.kdiff_refcounts())
        used = [cside.ARENA_BASE + (i << self.page_shift) for i, s in enumerate(states)
                if s == cside.PG_USED]
        base = lib.kdiff_arena()
        pages = {}
        for pa in used:
            words = ctypes.string_at(base + (pa - cside.ARENA_BASE), self.page_size)
            pages[pa] = list(memoryview(words).cast("Q"))
        return {
            "kind": "arm64-hyp-s1", "page_shift": self.page_shift, "va_bits": self.va_bits,
            "start_level": self.start_level, "pa_bits": self.pa_bits,
            "roots": [lib.kdiff_hyp_pgd_pa()] if self.initialised else [],
            "pages": pages,
            "refcount": {pa: rc[(pa - cside.ARENA_BASE) >> self.page_shift] for pa in used},
            "memcache": [], "free_pages": int(lib.kdiff_free_pages()),
            "pool_errors": list(self.errors), "warnings": list(self.warnings),
            "tlb_log": self._take_log(),
            # the hint encoding of __tlbi_level is the kernel's (S1-UNMAP-TLBI reads hint 0 as no
            # hint before 6.8, as level 0 from 6.8)
            "kernel_version": self.tree.version,
        }

    def _take_log(self) -> list:
        """The EL2 invalidations since the last snapshot (each snapshot is a step's post-state)."""
        out, self.pending = self.pending, []
        return out


class CHypHarness(hyp_lockstep.HypHarness):
    """The hyp lock-step harness over the tree's C code (bound to a tree by ``hyp_harness``)."""

    python_subject = False          # its calls are guarded in C (guard.py)

    tree = None
    seen: dict = {}

    def __init__(self, page_shift: int = 12, va_bits: int = 48, arena_pages: int = 128):
        tree = self.tree
        self.refcounted = has_unmap(tree)
        self.version = tree.version_tuple()
        self.pgt = CHypPgtable(tree, page_shift, va_bits, arena_pages)
        self.lines = ["from ptspec.proofs.kernel.hyp import CHypPgtable",
                      "from ptspec.proofs.kernel.tree import open_tree",
                      f"pgt = CHypPgtable({tree.opener()}, {page_shift}, "
                      f"{va_bits}, {arena_pages})"]
        self.violations, self.trace, self.calls = [], [], []
        self.make_source = minimize.call(f"hyp_harness({tree.opener()})", {},
                                         page_shift, va_bits, arena_pages, hex_ints=False)
        self.make_imports = ["from ptspec.proofs.kernel.hyp import hyp_harness",
                             "from ptspec.proofs.kernel.tree import open_tree"]
        self.steps = 0
        self.destroyed = False
        self._raw = self.pgt.snapshot()
        self.step("init")

    def raw_state(self, drain_log: bool = False) -> dict:
        """The state after the last step, with that step's EL2 invalidations (every change to the
        table is a step, so a fresh snapshot would read the same tables and an empty log)."""
        return self._raw

    def fail_allocation(self, k: int = 0):
        self.pgt.fail_at([k])
        self.trace.append(("fail", k))
        self.lines.append(f"pgt.fail_at([{k}])")
        self.calls.append((f"h.fail_allocation({k})", self.lines[-1]))

    def step(self, op: str, **args):
        w0 = len(self.pgt.warnings)
        inside = False
        pre = self._raw
        if op != "unmap":
            ret, found = super().step(op, **args)
        else:
            self.trace.append(("op", op, dict(args)))
            try:
                ret = self.pgt.unmap(args["addr"], args["size"])
            except SubjectFault as exc:
                return None, self._did_not_return(op, args, exc)
            self.steps += 1
            self.lines.append(f"pgt.unmap({fmt(args['addr'])}, {fmt(args['size'])})  # -> "
                              f"{fmt(ret)}")
            self.calls.append((minimize.call("h.step", args, op), self.lines[-1]))
            post = self._raw = self.pgt.snapshot()
            inside = _starts_inside_leaf(pre, args["addr"])
            found = spec.check_state(post) + spec.check_hyp_step(
                pre, {"op": op, "args": args, "ret": ret,
                      "out": {"warnings": self.pgt.warnings[w0:]}}, post)
            self.violations.extend(found)
        new = self.pgt.warnings[w0:]
        conflict = any(w.startswith("hyp_pte_needs_update") for w in new)
        over = _tables_over_leaf(pre, self._raw)
        # hyp-split-ref: each block a table replaced leaves its table page one reference too
        # many for good; kept per page while the page is allocated (hyp-split-leak after destroy)
        held = self._raw.get("pages", {})
        self.excess = {pa: n for pa, n in getattr(self, "excess", {}).items() if pa in held}
        for pa, n in over.items():
            self.excess[pa] = self.excess.get(pa, 0) + n
        self.split = getattr(self, "split", False) or any(   # a table over a valid leaf
            w.startswith("kvm_set_table_pte") for w in new) or bool(over)
        return ret, self._judge(op, args, found, conflict, op == "unmap" and inside, ret,
                                (pre, new) if conflict or inside else None)

    def _judge(self, op: str, args: dict, found: list, conflict: bool, inside=False,
               ret=None, seen=None) -> list:
        """S1-RC by the tree's counting rule; catalogued findings set aside. `seen`: the raw
        pre-state and the WARNs raised, for a conflicting map or an unmap starting inside a leaf
        (the shapes of hyp-conflict-* and hyp-unmap-overreach)"""
        before = len(self.violations) - len(found)
        excess = dict(getattr(self, "excess", {}))
        record = {"op": op, "args": args, "ret": ret, "hyp": True, "conflict": conflict,
                  "after_split": self.split, "starts_inside_leaf": inside, "split_excess": excess}
        if seen is not None and found:
            record.update(pre=spec.load_state(seen[0]), warnings=list(seen[1]),
                          version=self.version)
        pending = [(v, dict(record)) for v in found]
        if self.refcounted:
            step = {"op": op, "hyp_per_descriptor": True, "after_split": self.split,
                    "split_excess": excess}
            pending += [(spec.Violation(v.inv, f"{v.message} (this tree counts hyp references "
                                               "per descriptor: 1 + its descriptors expected)",
                                        v.where), step)
                        for v in _rc_violations(spec.load_state(self._raw), "S1-RC",
                                                per_descriptor=True)]
        kept = []
        for v, step in pending:
            f = findings.finding_for(v, step, self.version)
            if f is not None and (f.id != "hyp-refcount" or self.refcounted):
                self.seen[f.id] = self.seen.get(f.id, 0) + 1
            else:
                kept.append(v)
        del self.violations[before:]
        self.violations.extend(kept)
        return kept


HYP_CALLS = {"map": ("kvm_pgtable_hyp_map", ("addr", "size", "phys", "prot")),
             "unmap": ("kvm_pgtable_hyp_unmap", ("addr", "size")),
             "destroy": ("kvm_pgtable_hyp_destroy", ())}


def c_test_body(trace: list, shape=None) -> str:
    """The operation sequence as the body of a C test function over the kernel's hyp API (a hyp
    table already initialised by kvm_pgtable_hyp_init); ``shape``: the tree's, whose prot enum the
    C text speaks (7.x renumbers it)."""
    ml = getattr(shape, "mainline", None)
    out = ["static void ptspec_hyp_counterexample(struct kvm_pgtable *pgt)", "{"]
    for entry in trace:
        if entry[0] == "fail":
            out.append(f"\t/* the allocation {entry[1]} after this point fails (-ENOMEM) */")
            continue
        fn, names = HYP_CALLS[entry[1]]
        args = dict(entry[2])
        if ml is not None and isinstance(args.get("prot"), int):
            try:
                args["prot"] = ml.prot_to_tree(args["prot"])
            except ValueError:
                pass                # refused by the binding before any C ran: shown as given
        vals = [hex(args[n]) if args[n] > 9 else str(args[n]) for n in names]
        out.append(f"\t{fn}({', '.join(['pgt'] + vals)});")
    out.append("}")
    return "\n".join(out)


def hyp_harness(tree):
    """A CHypHarness class bound to one kernel tree."""
    return type("CHypHarness", (CHypHarness,), {"tree": tree, "seen": {}})


def arena_pages(page_shift: int) -> int:
    return 128 if page_shift == 12 else 48            # as proofs/hyp/lockstep.harness_maker


def make_machine(tree, cls, counter: dict, geometry: str = GEOMETRY):
    """The hyp lock-step machine of proofs/hyp/lockstep.py over the C code, with unmaps where
    the tree has kvm_pgtable_hyp_unmap."""
    base = hyp_lockstep.make_machine(geometry, counter)
    page_shift, va_bits = hyp_lockstep.HYP_GEOMETRIES[geometry]
    geom = hyp_lockstep.hyp_geometry(geometry)
    unmaps = has_unmap(tree)

    class CHypLockstep(base):
        def __init__(self):
            RuleBasedStateMachine.__init__(self)
            self.h = cls(page_shift, va_bits, arena_pages(page_shift))
            self.mapped = []
            self._check(self.h.violations)

        @precondition(lambda self: unmaps and self.mapped and not self.h.destroyed)
        @rule(i=st.integers(0, 7), part=st.sampled_from(["all", "first-page", "inner", "more",
                                                         "shifted"]))
        def unmap(self, i, part):
            a, s, _, _ = self.mapped[-1 - i % len(self.mapped)]
            page = geom.gran.page_size
            if part == "first-page":
                s = page
            elif part == "inner":
                a, s = a + page, max(page, s - 2 * page)
            elif part == "more":
                a, s = a - page, s + 2 * page
            elif part == "shifted":                  # as long, one page later
                a += page
            counter["steps"] += 1
            _, found = self.h.step("unmap", addr=a % (1 << 64), size=s % (1 << 64))
            self._check(found)

    CHypLockstep.__name__ = "CHypLockstep"
    return CHypLockstep


def table_freeing_programs(page_shift: int, va_bits: int) -> list[tuple]:
    """Short programs, one per level L from the table's start level to 2, that map a page at VA a
    and another at a + granule(L) (the two share the tables down to level L), then unmap a: the
    unmap frees a's tables below level L while the level-L table stays, so the invalidations of
    the freed table descriptors are what S1-UNMAP-TLBI judges (a parent that goes too would take
    its own, hint-free, invalidation of a). Run before the random runs in every profile: a random
    run of the quick profile rarely builds this shape (docs/kernel-mainline.md)."""
    start = 4 - (va_bits - 4) // (page_shift - 3)          # as CHypPgtable's
    page = 1 << page_shift
    a = G.granule_size(2, page_shift)
    out = []
    for level in range(max(start, 0), 3):
        b = a + G.granule_size(level, page_shift)
        out.append((("map", dict(addr=a, size=page, phys=1 << 32, prot=4)),
                    ("map", dict(addr=b, size=page, phys=(1 << 32) + page, prot=4)),
                    ("unmap", dict(addr=a, size=page))))
    return out


def run_all(tree, budget, *, seed: int = 0, expired=None, progress=None,
            geometry: str = GEOMETRY) -> replay.Outcome:
    """The hyp lock-step on the tree's C code at the profile's budget (default 4K / 48-bit VA)."""
    t0 = time.perf_counter()
    page_shift, va_bits = hyp_lockstep.HYP_GEOMETRIES[geometry]
    try:
        build.library(page_shift, tree)
    except build.BuildError as exc:
        return replay.Outcome("unknown", 0, 0.0, str(exc).splitlines()[0])
    missing = [f for f in ("kvm_pgtable_hyp_init", "kvm_pgtable_hyp_map", "kvm_pgtable_hyp_destroy")
               if f"{f}(" not in source_text(str(tree.pgtable_c))]
    if missing:
        return replay.Outcome("unknown", 0, 0.0, f"this pgtable.c has no {', '.join(missing)}")
    cls = hyp_harness(tree)
    counter = {"steps": 0}
    runs = {"n": 0}
    machine = make_machine(tree, cls, counter, geometry)
    base_init = machine.__init__

    def counting_init(self):
        runs["n"] += 1
        if progress:
            progress()
        base_init(self)
    machine.__init__ = counting_init
    make = lambda: cls(page_shift, va_bits, arena_pages(page_shift))      # noqa: E731
    for program in table_freeing_programs(page_shift, va_bits) if has_unmap(tree) else ():
        h = make()
        runs["n"] += 1
        for op, args in program:
            counter["steps"] += 1
            h.step(op, **args)
            if h.violations:
                exc = StepViolation(h, h.violations, note="a table-freeing program")
                f = shortest_failure(exc, make, int(budget["shrink_replays"]))
                fail = replay.Failure("hyp", f.program, f.violations, f.raw_state, f.trace)
                return replay.Outcome("refuted", counter["steps"], time.perf_counter() - t0,
                                      f"{geometry}: {f.note}", fail, dict(cls.seen))
    examples = max(1, int(budget["hypothesis_examples"]) // HYP_SHARE[geometry])
    cfg = settings(max_examples=examples, stateful_step_count=int(budget["steps"]),
                   database=None, deadline=None, print_blob=False, report_multiple_bugs=False,
                   suppress_health_check=list(HealthCheck),
                   phases=[Phase.explicit, Phase.generate])
    exc = minimize.run_hypothesis(hyp_seed(seed)(machine), cfg, StepViolation)
    secs = time.perf_counter() - t0
    unmap = "with kvm_pgtable_hyp_unmap" if has_unmap(tree) else "no kvm_pgtable_hyp_unmap"
    if exc is not None:
        f = shortest_failure(exc, make, int(budget["shrink_replays"]))
        fail = replay.Failure("hyp", f.program, f.violations, f.raw_state, f.trace)
        return replay.Outcome("refuted", counter["steps"], secs, f"{geometry}: {f.note}", fail,
                              dict(cls.seen))
    return replay.Outcome("passed", counter["steps"], secs,
                          f"{geometry}: {runs['n']} runs, {counter['steps']} operations "
                          f"({unmap})", findings=dict(cls.seen))
