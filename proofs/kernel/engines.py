"""The C-side engines besides the lock-step, as check results: what ``check-kernel --engines`` runs.

Each engine judges the tree's own ``pgtable.c`` by the spec alone and gives one result with its own
id: ``kernel.exhaustive.<geometry>`` (bounded exhaustive exploration, ``exhaustive.py``),
``kernel.errorpaths.<geometry>`` (allocation failure at every allocation point, ``errorpaths.py``),
``kernel.refusal.<geometry>`` (bad arguments, ``refusal.py``), each on every stage-2 geometry of
``subject.GEOMETRIES`` in check-kernel (ptspec verify: 4k-39 only) with the geometry's table
options (``subject.OPTIONS``, as the lock-step: FWB on 4k-48, pages forced on 4k-34, no CMO on
16k-40, FEAT_XNX on 4k-40, 4k-48 and 16k-40 from 6.19), and ``kernel.hyp.4k-48`` (hyp stage 1, ``hyp.py``). Catalogued findings of the tree's
version are set aside and named in the detail, as for the lock-step (``check.findings_of`` reads
them from there); anything else refutes, with the counterexample of ``check.counterexample``.
"""

from __future__ import annotations

import time

from ptspec.proofs.kernel import build, errorpaths, exhaustive, refusal, subject
from ptspec.proofs.runner.registry import Result

ENGINES = ("lockstep", "exhaustive", "errorpaths", "refusal", "hyp")

# engine -> (check id, statements judged, kernel functions)
EXHAUSTIVE_IDS = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "C-INIT", "C-MAP",
                  "C-SET-OWNER", "C-UNMAP", "C-WRPROTECT", "C-MKYOUNG", "C-MKOLD", "C-IS-YOUNG",
                  "C-RELAX-PERMS", "C-FLUSH", "C-GET-LEAF", "C-CMO", "CMO-POC", "CMO-POU",
                  "KERNEL-WARN", "C-RETURNS"]
ERROR_IDS = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "C-INIT", "C-MAP",
             "C-SET-OWNER", "KERNEL-WARN", "C-RETURNS"]
REFUSAL_IDS = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "C-MAP", "C-SET-OWNER",
               "C-UNMAP", "C-WRPROTECT", "C-MKYOUNG", "C-RELAX-PERMS", "C-FLUSH", "C-GET-LEAF",
               "C-ARGS", "KERNEL-WARN", "C-RETURNS"]
CHECKS = {
    "exhaustive": ("kernel.exhaustive.4k-39", EXHAUSTIVE_IDS),
    "errorpaths": ("kernel.errorpaths.4k-39", ERROR_IDS),
    "refusal": ("kernel.refusal.4k-39", REFUSAL_IDS),
    "hyp": ("kernel.hyp.4k-48", ["S1-TREE", "S1-BA", "S1-RC", "S1-LEAK", "C-HYP-INIT",
                                 "C-HYP-MAP", "C-HYP-UNMAP", "C-HYP-DESTROY", "C-HYP-WARN",
                                 "S1-UNMAP-TLBI", "C-RETURNS"]),
}
ENGINE_PAGE_SHIFT = 12
ENGINE_KIND = {"exhaustive": "exhaustive", "errorpaths": "unit", "refusal": "unit",
               "hyp": "hypothesis"}


# hyp stage 1 runs on every hyp geometry in check-kernel (ptspec verify: 4k-48 only)
HYP_GEOMETRIES = ("4k-48", "16k-47", "64k-48")


def check_id(engine: str) -> str:
    """The engine's check in ptspec verify (its first geometry)."""
    return CHECKS[engine][0]


def check_ids(engine: str, geometries=None) -> list[str]:
    """Every check of the engine in check-kernel: one per geometry it runs on (the stage-2
    engines: each of ``geometries``, default every one of ``subject.GEOMETRIES``; hyp: its own)."""
    if engine == "hyp":
        return [f"kernel.hyp.{g}" for g in HYP_GEOMETRIES]
    return [f"kernel.{engine}.{g}" for g in (geometries or subject.GEOMETRIES)]


def run_check(tree, cid: str, budget, *, seed: int = 0, expired=None, progress=None) -> Result:
    """The check ``kernel.<engine>.<geometry>``."""
    _, engine, geometry = cid.split(".", 2)
    return run_engine(tree, engine, budget, seed=seed, expired=expired, progress=progress,
                      geometry=geometry)


def _run(tree, engine: str, cid: str, budget, seed: int, expired, progress):
    """The engine's outcome (a ``replay.Outcome``)."""
    geometry = cid.split(".", 2)[2]
    if engine == "exhaustive":
        return exhaustive.explore(tree, int(budget["exhaustive_depth"]), expired=expired,
                                  progress=progress, geometry=geometry)
    if engine == "errorpaths":
        return errorpaths.run_all(tree, expired=expired, progress=progress, geometry=geometry)
    if engine == "refusal":
        return refusal.run_all(tree, expired=expired, progress=progress, geometry=geometry)
    from ptspec.proofs.kernel import hyp
    return hyp.run_all(tree, budget, seed=seed, expired=expired, progress=progress,
                       geometry=cid.split(".", 2)[2])


def parse_engines(text: str) -> list[str]:
    """'all' or a comma list of ENGINES; ValueError naming the unknown ones."""
    if text == "all":
        return list(ENGINES)
    names = [e.strip() for e in text.split(",") if e.strip()]
    bad = [e for e in names if e not in ENGINES]
    if bad or not names:
        raise ValueError(f"unknown engine {', '.join(bad) or '(none)'}; choose from "
                         f"{', '.join(ENGINES)} or 'all'")
    return names


def _note(findings: dict) -> str:
    from ptspec.proofs.kernel.check import catalogue_versions
    found = ", ".join(f"{k} x{n} ({catalogue_versions(k)})" for k, n in sorted(findings.items()))
    return f"; catalogued findings: {found}" if found else ""


def run_engine(tree, engine: str, budget, *, seed: int = 0, expired=None,
               progress=None, geometry: str | None = None) -> Result:
    """One engine on the tree's C code, judged by the spec alone, on ``geometry`` (default: the
    engine's first, hyp 4k-48, the others 4k-39; they run on every ``subject.GEOMETRIES``)."""
    cid, ids = CHECKS[engine]
    if geometry is not None:
        cid = f"kernel.{engine}.{geometry}"
        if cid not in check_ids(engine):
            raise ValueError(f"{engine} does not run on {geometry}")
    kw = dict(id=cid, engine=ENGINE_KIND[engine], invariants=ids)
    t0 = time.perf_counter()
    page_shift = {"16k-47": 14, "64k-48": 16}.get(geometry, ENGINE_PAGE_SHIFT)
    if geometry in subject.GEOMETRIES:
        page_shift = subject.GEOMETRIES[geometry][0]
    try:
        build.library(page_shift, tree)
    except build.BuildError as exc:
        return Result.unknown(f"not checked: {str(exc).splitlines()[0]}", **kw)
    try:
        out = _run(tree, engine, cid, budget, seed, expired, progress)
    except AttributeError as exc:            # a shim runtime without the engines' entry points
        if "undefined symbol" not in str(exc):
            raise
        return Result.unknown(f"not checked: the shim runtime this tree builds with lacks "
                              f"{str(exc).rsplit(':', 1)[-1].strip()} (kdiff_rt.c's additions "
                              "for the engines)", seconds=time.perf_counter() - t0, **kw)
    if out.status == "unknown" and not out.cases:
        return Result.unknown(f"not checked: {out.detail}", seconds=time.perf_counter() - t0,
                              **kw)
    kw["seconds"] = time.perf_counter() - t0
    detail = out.detail + _note(out.findings)
    if out.status == "refuted":
        from ptspec.proofs.kernel.check import counterexample
        cex = counterexample(out.failure, tree)
        if cex.get("violations"):           # the one-line verdict names what broke, as the
            detail = f"{out.detail}: {cex['violations'][0]}{_note(out.findings)}"   # lock-step's
        if engine == "hyp":
            from ptspec.proofs.kernel import hyp
            ops = [e[1] for e in out.failure.trace if e[0] == "op"]
            cex["c_test"] = hyp.c_test_body(out.failure.trace, shape=tree.shape)
            cex["kernel_function"] = hyp.HYP_CALLS.get(ops[-1] if ops else "",
                                                       ("kvm_pgtable_hyp_init",))[0]
        return Result.refuted(cex, detail=detail, examples=out.cases, **kw)
    if out.status == "unknown":
        return Result.unknown(f"budget not completed (hang guard): {detail}", examples=out.cases,
                              **kw)
    if engine == "exhaustive":
        return Result.proved(out.cases, detail, **kw)
    return Result.passed(out.cases, detail, **kw)
