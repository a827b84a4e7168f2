"""The kernel's own ``pgtable.c`` as a subject of the stage-2 lock-step, judged by the spec alone.

``CSideHarness`` is ``ptspec.proofs.stage2.harness.Stage2Harness`` over a ``cside.CPgtable`` instead
of impl's ``KvmPgtable``: the same operation records (from ``ptspec.proofs.stage2.strategies``, via
the lock-step machine), the same checks after every step (every invariant on the new raw state,
S2-BBM and the operation's contract on the transition, WARN_ONs, Python misuse refused without a
change), the same replayable trace and allocation-failure injection (the shim's allocator fails
the k-th allocation from now). Only the judge differs from impl's run in one way: a violation that
matches a catalogued finding for the tree's kernel version (``findings.FINDINGS``) is counted as
that finding, not reported as a violation.

The C table is configured from the tree's detected shape (owner field and largest owner id), not
from impl. ``force_pte_cb`` can only be none or one that forces pages everywhere (the shim's); a
tree without one (5.14) runs its geometries without it, and a tree whose mm_ops has no
cache-maintenance hooks (5.13) runs them without CMO.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from ptspec import spec

from ptspec.proofs.kernel import findings
from ptspec.proofs.engines import minimize
from ptspec.proofs.kernel.cside import CPgtable
from ptspec.proofs.stage2.harness import Stage2Harness

# name -> (page_shift, ia_bits, owner_field); owner_field is filled from the tree (None here).
GEOMETRIES = {
    "4k-39": (12, 39, None), "4k-48": (12, 48, None), "4k-40": (12, 40, None),
    "4k-34": (12, 34, None), "16k-47": (14, 47, None), "16k-40": (14, 40, None),
    "64k-44": (16, 44, None), "64k-52": (16, 52, None),
}
# Per-geometry table options: FWB on one, the shim's page-forcing force_pte_cb on another, no CMO
# hooks on a third, a CPU with FEAT_XNX (only where pgtable.c reads ARM64_HAS_XNX, 6.19 on; elsewhere
# the option is dropped, as force_pte is on a tree without force_pte_cb) on 4k-40 alone and with
# FWB (4k-48) and without CMO hooks (16k-40), so PX/UX-only leaves meet each cache-maintenance
# regime; every C engine builds its tables with them (the lock-step through
# lockstep.harness_maker, the others through replay.harness), so kernel.<engine>.<geometry> is one
# table configuration.
OPTIONS = {"4k-48": {"fwb": True, "xnx": True}, "4k-34": {"force_pte": True},
           "16k-40": {"cmo": False, "xnx": True}, "4k-40": {"xnx": True}}


class CSideHarness(Stage2Harness):
    """One C stage-2 table (the tree's pgtable.c) checked against the spec after every step."""

    python_subject = False          # its calls are guarded in C (guard.py)

    tree = None                     # set by subject_factory: the kernel tree being judged
    pgtable_class = CPgtable        # the C table (subject_mainline's for 6.2 on)
    seen: dict = {}                 # set by subject_factory: findings over every harness of a run

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, owner_field=None,
                 fwb: bool = False, cmo: bool = True, arena_pages: int = 256,
                 mc_capacity: int = 16, check: bool = True, force_pte: bool = False,
                 flags: int = 0, xnx: bool = False):
        shape = self.tree.shape
        owner_field = tuple(shape.owner_field)
        if not shape.force_pte_cb:
            force_pte = False       # 5.14: no force_pte_cb to give (the geometry runs without)
        if not shape.mm_cmo:
            cmo = False             # 5.13: mm_ops has no CMO hooks (the geometry runs without)
        ml = getattr(shape, "mainline", None)
        xnx = bool(xnx and ml is not None and ml.xnx)   # FEAT_XNX: only a 7.1+ pgtable.c reads it
        extra = {"xnx": True} if xnx else {}            # (absent otherwise: programs as before)
        self.version = self.tree.version_tuple()
        self.make_source = minimize.call(
            f"subject_factory({self.tree.opener()})",
            dict(fwb=fwb, cmo=cmo, arena_pages=arena_pages, mc_capacity=mc_capacity,
                 force_pte=force_pte, flags=flags, **extra), page_shift, ia_bits, hex_ints=False)
        self.params = dict(page_shift=page_shift, ia_bits=ia_bits, owner_field=owner_field,
                           fwb=fwb, cmo=cmo, flags=flags, **extra)
        self.pgt = self.pgtable_class(page_shift, ia_bits, npages=arena_pages, fwb=fwb, flags=flags,
                            cmo=cmo, mc_capacity=mc_capacity, force_pte=force_pte,
                            src=self.tree, owner_field=owner_field,
                            max_owner_id=shape.max_owner_id, **extra)
        self.mc = self.pgt.mc
        self.check = check
        self.lines = [
            (f"from {self.pgtable_class.__module__} import CPgtable"
             if self.pgtable_class.__name__ == "CPgtable" else
             f"from {self.pgtable_class.__module__} import {self.pgtable_class.__name__} as CPgtable"),
            "from ptspec.proofs.kernel.tree import open_tree",
            f"tree = {self.tree.opener()}",
            f"pgt = CPgtable({page_shift}, {ia_bits}, npages={arena_pages}, fwb={fwb}, "
            f"flags={flags}, cmo={cmo}, mc_capacity={mc_capacity}, force_pte={force_pte}, "
            f"src=tree, owner_field={owner_field}, max_owner_id={shape.max_owner_id}"
            + (", xnx=True)" if xnx else ")"),
            "mc = pgt.mc",
        ]
        self.findings: dict = {}        # finding id -> times seen
        self._begin()

    def program(self) -> str:
        """The run as a program a reviewer pastes: a harness on the same tree replays every
        recorded call (the C call each one made as its comment), then the judge, which fails
        exactly as this run did. ``ops_source`` keeps the bare C-library calls."""
        return minimize.program(["from ptspec.proofs.kernel.subject import subject_factory",
                                 "from ptspec.proofs.kernel.tree import open_tree"],
                                self.make_source, self.calls)

    def _full_snapshot(self):
        """The C library's state is its raw state: a refused call is judged on the tables."""
        return None

    def _kernel_warnings(self, op: str) -> list:
        """WARN_ONs of pgtable.c, as for impl. The shim also logs an allocation from an empty
        memcache (the kernel's kvm_mmu_memory_cache_alloc WARNs there): that is the caller's
        sizing of its memcache, not pgtable.c's state, so it is not reported (impl's memcache
        runs dry the same way and map returns -ENOMEM on both)."""
        found = super()._kernel_warnings(op)
        found = [v for v in found if "on an empty memcache" not in str(v)]
        last = self.trace[-1] if self.trace else None
        if (op == "map" and self.params.get("flags", 0) & 2 and last and last[0] == "op"
                and last[2].get("addr") != last[2].get("phys")):
            # KVM_PGTABLE_S2_IDMAP with addr != phys: the WARN_ON inside kvm_pgtable_stage2_map
            # is the caller's misuse (as impl's CALLER_WARNINGS), judged by C-MAP instead
            lines = function_lines(self.tree, "kvm_pgtable_stage2_map")
            found = [v for v in found if not _warn_line(v) in lines]
        return found

    def raw_state(self, drain_log: bool = False) -> dict:
        """The raw state; for a harness whose C table was superseded by a newer one (the library
        holds one table per granule; replaying a trace builds new ones), the state after its last
        step, which was snapshotted then."""
        if self.pgt.lib is None:
            return self._last_raw
        return super().raw_state(drain_log)

    def fail_allocation(self, k: int = 0):
        """Make the k-th page-table allocation from now on fail (the shim's allocator)."""
        self.pgt.fail_at([k])
        self.trace.append(("fail", k))
        self.lines.append(f"pgt.fail_at([{k}])")
        self.calls.append((f"h.fail_allocation({k})", self.lines[-1]))    # in the program too

    ended_by = None                 # the id of a finding that ended this run (findings.ends_run)
    unrun = 0                       # the steps asked for after it, not run

    def step(self, op: str, **args):
        if self.ended_by is not None:
            # a catalogued use after free corrupted the table: nothing after it is the kernel's
            # behaviour to judge (the engines end the run, or do not explore past it, and say so)
            self.unrun += 1
            return None, []
        before = len(self.violations)
        pre = self.state                # the spec's reading of the pre-state (findings' where)
        ret, found = super().step(op, **args)
        if not found:
            return ret, found
        step = {"op": op, "ret": ret, "args": args, "cmo": self.params["cmo"],
                "page_shift": self.params["page_shift"], "pre": pre, "post": self.state}
        kept = []
        for v in found:
            f = findings.finding_for(v, step, self.version)
            if f is None:
                kept.append(v)
            else:
                self.findings[f.id] = self.findings.get(f.id, 0) + 1
                self.seen[f.id] = self.seen.get(f.id, 0) + 1
                if f.ends_run:
                    self.ended_by = f.id
        del self.violations[before:]
        self.violations.extend(kept)
        return ret, kept


def _warn_line(v) -> int | None:
    text = str(v)
    tail = text.rsplit("pgtable.c:", 1)
    return int(tail[1].split()[0]) if len(tail) == 2 and tail[1].split()[0].isdigit() else None


def source_text(path: str) -> str:
    """A tree file's text (read once per version of the file)."""
    return _text(path, Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _text(path: str, mtime_ns: int) -> str:
    return Path(path).read_text(errors="replace")


def functions_of(path: str) -> tuple:
    """(first line, last line, name) of every function defined in a pgtable.c (1-based): a line
    that opens a definition (not indented, not a declaration) up to its closing brace."""
    return _functions(path, Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _functions(path: str, mtime_ns: int) -> tuple:
    out, name, start = [], None, 0
    for i, ln in enumerate(_text(path, mtime_ns).splitlines()):
        m = re.match(r"^[A-Za-z_][\w\s\*]*?\b(\w+)\(", ln)
        if m and not ln.rstrip().endswith(";"):
            name, start = m.group(1), i + 1
        elif ln.startswith("}") and name:
            out.append((start, i + 1, name))
            name = None
    return tuple(out)


def function_lines(tree, name: str) -> range:
    """The line numbers (1-based) of a function's definition in the tree's pgtable.c."""
    return next((range(a, b + 1) for a, b, n in functions_of(str(tree.pgtable_c)) if n == name),
                range(0))


def subject_factory(tree):
    """A CSideHarness class bound to one kernel tree (what the lock-step machine instantiates);
    a tree with the reworked walker (6.2 on) gets subject_mainline's harness."""
    base = CSideHarness
    if getattr(tree.shape, "mainline", None) is not None:
        from ptspec.proofs.kernel.subject_mainline import MainlineHarness
        base = MainlineHarness
    return type("CSideHarness", (base,), {"tree": tree, "seen": {}})


def spec_violations(raw: dict) -> list:
    """The spec's single-state violations of a C-side raw state (for tests and reports)."""
    return spec.check_state(spec.load_state(raw))
