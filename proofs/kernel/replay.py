"""Replaying an operation list on the kernel's C code, judged by the spec: the engines' shared core.

The C-side engines (bounded exhaustive exploration, allocation failure at every point, bad
arguments) cannot copy a C table the way impl's engines deep-copy a harness: the shim keeps one
table per granule in global state. Each case is instead rebuilt from scratch: a fresh
``subject.CSideHarness`` on the tree, then the operation list (the lock-step's trace format,
``("op", name, args)`` and ``("fail", k)``) replayed on it. The C code is deterministic given the
list (a fresh arena each time), so a replayed prefix reaches the same state it reached when it was
first judged.

``run(h, ops, judge_from=i)`` runs the first ``i`` entries without the spec (they were judged when
first reached) and judges every entry from ``i`` on: every invariant of the new state, S2-BBM and
the operation's contract, WARN_ONs, catalogued findings of the tree's version set aside as in the
lock-step. ``allocations(h)`` is the shim's count of allocation calls, which the error-path engine
uses to find every allocation point of a call.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field

from ptspec.proofs.kernel import subject
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.proofs.stage2 import strategies as S

# The engines' default table: 4K pages, 39-bit IPA (three levels), as proofs/stage2/exhaustive.py
# and proofs/stage2/errorpaths.py use for impl; ``geometry_name`` picks another of subject.GEOMETRIES.
PAGE_SHIFT, IA_BITS = 12, 39


def geometry(name: str | None) -> tuple[int, int]:
    """(page_shift, ia_bits) of a geometry of ``subject.GEOMETRIES`` (None: the engines' 4K/39)."""
    if name is None:
        return PAGE_SHIFT, IA_BITS
    if name not in subject.GEOMETRIES:
        raise ValueError(f"unknown geometry {name}; choose from {', '.join(subject.GEOMETRIES)}")
    return subject.GEOMETRIES[name][:2]


def options(name: str | None) -> dict:
    """The table options of a geometry (``subject.OPTIONS``: FWB on 4k-48, pages forced on 4k-34,
    no CMO hooks on 16k-40, FEAT_XNX on 4k-40, 4k-48 and 16k-40 where the tree reads it), as the
    C lock-step builds its tables: ``kernel.<engine>.<geometry>`` is the same table configuration
    in every engine."""
    return dict(subject.OPTIONS.get(name, {})) if name is not None else {}


def harness(tree, *, arena_pages: int = 96, mc_capacity: int = 8, flags: int = 0, cls=None,
            geometry_name: str | None = None):
    """A fresh C-side harness on the tree's library for the geometry (default 4K/39) with the
    geometry's options (``options``), its init already judged."""
    cls = cls or subject.subject_factory(tree)
    return cls(*geometry(geometry_name), arena_pages=arena_pages, mc_capacity=mc_capacity,
               flags=flags, **options(geometry_name))


def prot_features(cls, geometry_name: str | None = None) -> tuple[bool, bool, bool]:
    """(NORMAL_NC, PX/UX, FEAT_XNX): the prots beyond X/W/R/DEVICE the subject's tree has
    (``program_normal_nc``: 6.9 on; ``program_px_ux``: 6.19 on) and whether the geometry's table
    is built with FEAT_XNX (``options``, only where pgtable.c reads ARM64_HAS_XNX). All False for
    impl-era trees (6.1-6.8), whose engines' cases stay as they were."""
    nc = getattr(cls, "program_normal_nc", None)
    pxux = getattr(cls, "program_px_ux", None)
    ml = getattr(cls.tree.shape, "mainline", None)
    xnx = bool(options(geometry_name).get("xnx") and ml is not None and ml.xnx)
    return bool(nc and nc()), bool(pxux and pxux()), xnx


def prot_cases(cls, geometry_name: str | None = None) -> dict:
    """The engines' extra cases for the subject's prot features (``prot_features``), in the
    spec's prot encoding, scaled to the geometry's granule like the engines' own alphabets
    (K4 a page, M2 a level-2 block, W/P the exhaustive window and its output, G1 the error
    paths' level-1 entry): ``explore`` operations for the exhaustive alphabet, ``targets`` maps
    for allocation failure, ``bad`` calls the kernel refuses (-EINVAL, nothing changed). Empty
    lists when the tree has none of them."""
    nc, pxux, xnx = prot_features(cls, geometry_name)
    ps = geometry(geometry_name)[0]
    K4, M2, G1 = (G.granule_size(level, ps) for level in (3, 2, 1))
    W, P = 0x4000_0000, 0x8000_0000
    R, W_, X, DEV = D.PROT_R, D.PROT_W, D.PROT_X, D.PROT_DEVICE
    NC, PX, UX = D.PROT_NORMAL_NC, D.PROT_PX, D.PROT_UX
    explore, targets, bad = [], [], []
    if nc:
        explore += [("map", dict(addr=W, size=M2, phys=P, prot=R | W_ | NC)),        # NC block
                    ("map", dict(addr=W + K4, size=K4, phys=P + K4, prot=R | X | NC))]  # -EINVAL
        targets += [("map", dict(addr=G1 + M2 - K4, size=M2 + 2 * K4, phys=3 * G1,
                                 prot=R | W_ | NC))]
        bad += [("map", dict(addr=G1, size=K4, phys=0, prot=R | X | NC)),
                ("map", dict(addr=G1, size=K4, phys=0, prot=R | DEV | NC))]
    if pxux:
        explore += [("map", dict(addr=W + K4, size=K4, phys=P + K4, prot=R | UX)),
                     ("relax_perms", dict(addr=W + K4, prot=R | PX))]
        bad += [("map", dict(addr=G1, size=K4, phys=0, prot=R | DEV | UX))]
        if xnx:
            targets += [("map", dict(addr=G1 + K4, size=K4, phys=3 * G1, prot=R | PX))]
        else:
            bad += [("map", dict(addr=G1, size=K4, phys=0, prot=R | PX)),
                    ("relax_perms", dict(addr=G1, prot=R | UX))]
    return {"explore": explore, "targets": targets, "bad": bad}


def has_annotate(cls) -> bool:
    """The subject's tree has ``kvm_pgtable_stage2_annotate`` with 7.1's types (the gate of the
    lock-step's annotate rule, ``MainlineHarness.program_rules``); False for every tree before."""
    ml = getattr(cls.tree.shape, "mainline", None)
    return bool(ml is not None and ml.annotate and ml.donation_type is not None)


def annotate_cases(cls, geometry_name: str | None = None) -> dict:
    """The engines' annotate cases (7.1 on, ``has_annotate``), shaped and scaled as
    ``prot_cases``. ``explore``: POISONED over a page inside the window's first block (any bits
    59:1) and, on the default 4K/39 table only, over the whole second block (annotation 0);
    DONATION over the same page and block is the alphabet's set_owner of owner 1 on these trees
    (owner 0's is no call, and the exhaustive engine leaves it out), so the block-sized annotate
    walk is explored on every geometry. Kept small for check-kernel's time: a block-sized
    annotate writes one page entry per page of the block (annotate forces pages), and with it
    depth 3 cost 50-70% more CPU on 4k-34, 16k-40 and 64k-52 (4K/39: 205 -> 293 states, 1,575
    -> 2,132 transitions, a few CPU seconds); with the page alone 3-14% more. ``targets``: POISONED over a range that needs new
    tables and over one straddling a level-2 entry, for allocation failure at each point.
    ``bad``: what annotate refuses with -EINVAL (type 0, LOCKED, an annotation with bit 0 or a
    bit of 63:60), -ENOMEM without a memcache where a table is needed, an address past the IPA
    space, a type that is no u32 (the binding's ValueError, C-ARGS), and types 18 and 19, which
    the kernel stores as DONATION / POISONED (the catalogued annotate-type-truncated, drawn as
    the lock-step draws them: 16 and 17 are left to tests/test_annotate.py). Empty lists for a
    tree without annotate."""
    if not has_annotate(cls):
        return {"explore": [], "targets": [], "bad": []}
    ps, ia = geometry(geometry_name)
    K4, M2, G1 = (G.granule_size(level, ps) for level in (3, 2, 1))
    W = 0x4000_0000
    POI, DON, LOCKED = D.TYPE_POISONED, D.TYPE_DONATION, D.TYPE_LOCKED
    OWNER, ANY = S.OWNER_RECORD, S.ANNOTATION_ANY

    def ann(addr, size, type_, annotation, **kw):
        return ("annotate", dict(addr=addr, size=size, type=type_, annotation=annotation, **kw))

    explore = [ann(W + K4, K4, POI, ANY)]                 # a page inside the first block
    if (ps, ia) == (PAGE_SHIFT, IA_BITS):
        explore.append(ann(W + M2, M2, POI, 0))           # a whole block-sized range (4K/39 only)
    targets = [ann(G1 + 5 * K4, M2, POI, ANY),            # new tables, into the next block
               ann(G1 + M2 - K4, 2 * K4, POI, 0)]         # straddles two level-2 entries
    bad = [ann(G1, K4, 0, 0),                             # type 0: -EINVAL
           ann(G1, K4, LOCKED, 0),                        # the locked-PTE marker: -EINVAL
           ann(G1, K4, POI, 1),                           # bit 0 (a valid descriptor): -EINVAL
           ann(G1, K4, POI, 1 << 63),                     # a bit of the type field: -EINVAL
           ann(3 * G1 + K4, K4, POI, 0, no_memcache=True),    # a table needed: -ENOMEM
           ann(1 << ia, K4, POI, 0),                      # past the IPA space
           ann(G1, K4, -1, 0),                            # no u32: refused by the binding
           ann(G1, K4, 16 + DON, OWNER),                  # stored as DONATION (catalogued)
           ann(G1, K4, 16 + POI, 0)]                      # stored as POISONED (catalogued)
    return {"explore": explore, "targets": targets, "bad": bad}


def extra_cases(cls, geometry_name: str | None = None) -> dict:
    """The engines' cases beyond impl's for the subject's tree: ``prot_cases`` then
    ``annotate_cases``, list by list (all empty before 6.9)."""
    prots, ann = prot_cases(cls, geometry_name), annotate_cases(cls, geometry_name)
    return {k: prots[k] + ann[k] for k in ("explore", "targets", "bad")}


def _unjudged(h):
    """Stop judging: the next steps only run the C code (and record the program)."""
    h.check = False


def _judge_from_here(h):
    """Judge again from the current state: the raw state now is the next step's pre-state. It is
    loaded with the state the unjudged steps kept current (the caches' ghost follows them) as
    ``prev``, so pages they did not change are not parsed again (the same State either way)."""
    h._last_raw = h.pgt.snapshot()
    h.state = h._load(h._last_raw, h.state)
    h.warned = len(h.pgt.warnings)
    h.check = True


def run(h, ops, judge_from: int = 0) -> tuple[list, int]:
    """Apply ``ops`` to harness ``h``; entries before ``judge_from`` run unjudged. Returns (the
    violations of the first judged entry that had any, how many entries ran)."""
    if judge_from:
        _unjudged(h)
    for i, entry in enumerate(ops):
        if i == judge_from and judge_from:
            _judge_from_here(h)
        if entry[0] == "fail":
            h.fail_allocation(entry[1])
            continue
        _, op, args = entry
        _, found = h.step(op, **args)
        if found:
            return list(found), i + 1
    if judge_from >= len(ops) and judge_from:
        _judge_from_here(h)
    return [], len(ops)


def allocations(h) -> int:
    """Allocation calls the shim's allocator has seen since its fault list was last cleared."""
    fn = h.pgt._lib().kdiff_nr_allocs
    fn.restype, fn.argtypes = ctypes.c_uint64, []
    return int(fn())


@dataclass
class Failure:
    """A C-side case that broke the spec, shaped as the lock-step's failures (``check.
    counterexample`` reads program, trace, raw_state and violations)."""

    label: str
    program: str
    violations: list
    raw_state: dict
    trace: list = field(default_factory=list)

    @classmethod
    def of(cls, label: str, h, found) -> "Failure":
        return cls(label, h.program(), [str(v) for v in found], h.raw_state(), list(h.trace))


@dataclass
class Outcome:
    """An engine's result: passed / refuted / unknown, cases judged, and the first failure."""

    status: str
    cases: int
    seconds: float
    detail: str = ""
    failure: Failure | None = None
    findings: dict = field(default_factory=dict)


def judge_cases(cases, cls, t0: float, *, expired, progress, noun: str, passed) -> Outcome:
    """The engines' shared loop over (label, harness, violations) cases: the first case that broke
    the spec refutes; an expired hang guard stops with "unknown"; otherwise passed, its detail
    ``passed(labels)`` (every case's label, in order), and how many cases a finding that ends the
    run (findings.ends_run) cut short."""
    labels, cut = [], 0
    for label, h, found in cases:
        labels.append(label)
        cut += bool(getattr(h, "unrun", 0))     # a finding that ends the run came before its end
        if progress:
            progress()
        if found:
            return Outcome("refuted", len(labels), time.perf_counter() - t0, label,
                           Failure.of(label, h, found), dict(cls.seen))
        if expired is not None and expired():
            return Outcome("unknown", len(labels), time.perf_counter() - t0,
                           f"stopped after {len(labels)} {noun}", findings=dict(cls.seen))
    note = (f"; {cut} of them stopped at a finding that ends the run, before their last step"
            if cut else "")
    return Outcome("passed", len(labels), time.perf_counter() - t0, passed(labels) + note,
                   findings=dict(cls.seen))

