"""``ptspec check-kernel``: a kernel tree's own ``pgtable.c`` judged by the spec.

For each geometry, the stage-2 lock-step machine (``ptspec.proofs.stage2.lockstep``, arguments from
``ptspec.proofs.stage2.strategies``) drives the tree's C code, compiled in userspace against the
shim, through ``subject.CSideHarness``: every invariant after every operation, every operation
against its contract, injected allocation failures and bad arguments. A violation that is a
catalogued finding for the tree's kernel version (``findings.FINDINGS``) is reported as that
finding; any other is a violation, shortened by replay (``ptspec.proofs.engines.minimize``) and
printed as pasteable Python driving the C library, with the C tables in ptdump style.

``--with-impl KERNEL_VERSION`` adds one more judge: every step of the same runs also goes to impl at
that kernel version and the two are compared word for word (``paired.PairedHarness``); a run's first
difference is reported, and the spec goes on judging the C side after it.

``--shard I/N`` checks shard I of N of the selected geometries, split by check id
(``kernel.lockstep.<geometry>``) with verify's rule (``parallel.shard_ids``); each geometry's runs
and seed are the same as in an unsharded run, so ``ptspec merge`` of the N JSON reports equals the
unsharded report. Not combined with ``--with-impl`` (its judgement spans every geometry).

``--engines`` (default all) adds the other C-side engines of ``ptspec.proofs.kernel.engines``, each
one result per geometry: bounded exhaustive exploration, allocation failure at every allocation
point and bad arguments on each selected geometry (``kernel.<engine>.<geometry>``), hyp stage 1 on
its own geometries where the tree has it.

Exit status: 0 only catalogued findings (or none), 1 any other violation or difference, 2 nothing
could be checked (the tree cannot be read or built, no compiler, bad arguments).
"""

from __future__ import annotations

import argparse
import sys
import time

from ptspec import spec

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import findings
from ptspec.proofs.kernel import check_output
from ptspec.proofs.kernel.check_output import exit_code, findings_of, format_result  # noqa: F401
from ptspec.proofs.kernel import engines as E
from ptspec.proofs.kernel import kernels
from ptspec.proofs.kernel import subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.runner import budgets
from ptspec.proofs.runner import interrupt
from ptspec.proofs.runner import parallel
from ptspec.proofs.runner.registry import Result, cpu_rate, cpu_time
from ptspec.proofs.stage2 import lockstep
from ptspec.proofs.stage2.checks import KERNEL_ENTRY
from ptspec.proofs.stage2.ptdump import render

GEOMETRIES = list(subject.GEOMETRIES)
# Share of the profile's runs per geometry (divisor), as the impl lock-step shares them.
SHARE = {"4k-39": 1, "4k-48": 2, "4k-40": 2, "4k-34": 2, "16k-47": 4, "16k-40": 4,
         "64k-44": 8, "64k-52": 8}
INVARIANTS = ["S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK", "S2-BBM", "S2-BBM-WALK", "C-INIT", "C-MAP",
              "C-SET-OWNER", "C-UNMAP", "C-WRPROTECT", "C-MKYOUNG", "C-MKOLD", "C-IS-YOUNG",
              "C-RELAX-PERMS", "C-FLUSH", "C-GET-LEAF", "C-DESTROY", "C-CMO", "CMO-POC", "CMO-POU", "C-ARGS",
              "KERNEL-WARN", "C-RETURNS"]
# what a tree with the reworked walker (6.2 on) is judged by as well (spec/stage2/mainline.py)
MAINLINE_INVARIANTS = ["S2-LOCKED", "S2-RCU", "S2-TABLE-TLBI", "C-SPLIT", "C-TEST-CLEAR-YOUNG",
                       "C-ANNOTATE"]


def _statement(vid: str) -> str:
    try:
        return (spec.explain(vid) or "").strip().splitlines()[0]
    except (KeyError, IndexError):
        return ""


C_CALLS = {
    "map": ("kvm_pgtable_stage2_map", ("addr", "size", "phys", "prot", "@mc")),
    "set_owner": ("kvm_pgtable_stage2_set_owner", ("addr", "size", "@mc", "owner_id")),
    "unmap": ("kvm_pgtable_stage2_unmap", ("addr", "size")),
    "wrprotect": ("kvm_pgtable_stage2_wrprotect", ("addr", "size")),
    "flush": ("kvm_pgtable_stage2_flush", ("addr", "size")),
    "mkyoung": ("kvm_pgtable_stage2_mkyoung", ("addr",)),
    "mkold": ("kvm_pgtable_stage2_mkold", ("addr",)),
    "is_young": ("kvm_pgtable_stage2_is_young", ("addr",)),
    "relax_perms": ("kvm_pgtable_stage2_relax_perms", ("addr", "prot")),
    "get_leaf": ("kvm_pgtable_get_leaf", ("addr", "@leaf")),
    "destroy": ("kvm_pgtable_stage2_destroy", ()),
    "test_clear_young": ("kvm_pgtable_stage2_test_clear_young", ("addr", "size", "mkold")),
    "split": ("kvm_pgtable_stage2_split", ("addr", "size", "@mc")),
    "annotate": ("kvm_pgtable_stage2_annotate", ("addr", "size", "@mc", "type", "annotation")),
}


def c_test_body(trace: list, mc_capacity: int = 16, shape=None, raw=None) -> str:
    """The operation sequence as the body of a C test function over the kernel's API (a table
    already initialised, a memcache topped up to capacity after init, map and set_owner, as the
    harness does). ``shape``: the tree's Shape; on a tree whose enum kvm_pgtable_prot is
    renumbered (7.x) prot values are the tree's, and set_owner is the annotate call that drives it.
    ``raw``: a raw state of the run, whose table configuration (granule, IPA size, FWB, CMO hooks,
    identity map) the comment above the function states."""
    ml = getattr(shape, "mainline", None)
    out = []
    if raw and raw.get("kind") == "arm64-stage2":
        out.append(f"/* pgt: {1 << raw['page_shift'] >> 10}K pages, ia_bits {raw['ia_bits']}, "
                   f"start level {raw['start_level']}; FWB {'on' if raw.get('has_fwb') else 'off'}"
                   f"; mm_ops {'with' if raw.get('cmo') else 'without'} the CMO hooks"
                   f"{'; KVM_PGTABLE_S2_IDMAP' if raw.get('idmap') else ''}"
                   f"{'; a CPU with FEAT_XNX (ARM64_HAS_XNX)' if raw.get('has_xnx') else ''} */")
    out += ["static void ptspec_counterexample(struct kvm_pgtable *pgt, "
            "struct kvm_mmu_memory_cache *mc)", "{", "	kvm_pte_t pte; u32 level;", ""]
    for entry in trace:
        if entry[0] == "fail":
            out.append(f"	/* the allocation {entry[1]} after this point fails (-ENOMEM) */")
            continue
        _, op, args = entry
        fn, names = C_CALLS[op]
        if ml is not None and "prot" in args and isinstance(args["prot"], int):
            try:
                args = dict(args, prot=ml.prot_to_tree(args["prot"]))
            except ValueError:
                pass                # the binding refused it before any C ran; shown as given
        if op == "set_owner" and ml is not None and ml.annotate and isinstance(args["owner_id"], int):
            fn, names = "kvm_pgtable_stage2_annotate", ("addr", "size", "@mc", "@type", "annotation")
            args = dict(args, annotation=args["owner_id"] << shape.owner_field[1])
        vals = []
        for n in names:
            if n == "@mc":
                vals.append("NULL" if args.get("no_memcache") else "mc")
            elif n == "@leaf":
                vals.append("&pte, &level")
            elif n == "@type":
                vals.append("KVM_HOST_INVALID_PTE_TYPE_DONATION")
            else:
                v = args[n]
                vals.append(hex(v) if isinstance(v, int) and v > 9 else str(v))
        out.append(f"	{fn}({', '.join(['pgt'] + vals)});")
        if op in ("map", "set_owner", "annotate"):
            out.append(f"	kvm_mmu_topup_memory_cache(mc, {mc_capacity});")
    out.append("}")
    return "\n".join(out)


def counterexample(failure, tree) -> dict:
    """The counterexample of a failing C-side run, as ``ptspec verify`` reports them."""
    program = failure.program
    ops = [entry[1] for entry in failure.trace if entry[0] == "op"]
    op = ops[-1] if ops else ""
    try:
        tables = render(spec.load_state(failure.raw_state),
                        title=f"C side: Linux {tree.version} pgtable.c")
    except Exception as exc:          # a broken state may not be drawable; say so, keep the rest
        tables = f"(tables not drawable: {exc})"
    ids = sorted({v.split()[0] for v in failure.violations})
    return {"ops": program, "violations": failure.violations, "tables": tables,
            "statements": {i: _statement(i) for i in ids},
            "c_test": c_test_body(failure.trace, shape=tree.shape, raw=failure.raw_state) if all(
                e[0] == "fail" or e[1] in C_CALLS for e in failure.trace) else "",
            "kernel_function": KERNEL_ENTRY.get(op, op)}


def check_geometry(tree, name: str, budget, seed: int, harness=None) -> Result:
    """The spec-judged lock-step of one geometry on the tree's C code (``harness``: a
    CSideHarness class bound to the tree; default ``subject.subject_factory(tree)``)."""
    t0 = time.perf_counter()
    page_shift = subject.GEOMETRIES[name][0]
    try:
        build.library(page_shift, tree)
    except build.BuildError as exc:
        return Result.unknown(f"not checked: {exc}", id=f"kernel.lockstep.{name}")
    harness = harness or subject.subject_factory(tree)
    examples = max(1, int(budget["lockstep_runs"]) // SHARE.get(name, 1))
    out = lockstep.run_lockstep(name, examples=examples, steps=int(budget["steps"]), seed=seed,
                                harness_factory=harness, shrink_replays=int(budget["shrink_replays"]),
                                geometries=subject.GEOMETRIES, options=subject.OPTIONS)
    found = ", ".join(f"{k} x{n} ({catalogue_versions(k)})" for k, n in sorted(harness.seen.items()))
    note = f"; catalogued findings: {found}" if found else ""
    mainline = getattr(tree.shape, "mainline", None) is not None
    kw = dict(id=f"kernel.lockstep.{name}", engine="random",
              invariants=INVARIANTS + (MAINLINE_INVARIANTS if mainline else []),
              seconds=time.perf_counter() - t0)
    if out.status == "refuted":
        return Result.refuted(counterexample(out.failure, tree),
                              detail=f"{name}: {out.failure.violations[0]}{note}",
                              examples=out.steps, **kw)
    cut = f" ({out.ended} ended at a finding that ends the run)" if out.ended else ""
    return Result.passed(out.steps, f"{name}: {out.examples} runs{cut}, {out.steps} operations, "
                                    f"{cpu_rate(out.steps, out.cpu_seconds)} ops per CPU second{note}",
                         **kw)


def catalogue_versions(finding_id: str) -> str:
    f = next(x for x in findings.FINDINGS if x.id == finding_id)
    return f"Linux {f.versions()}"


def impl_judgement(kernel_version: str, harnesses: dict) -> Result:
    """One more judge: the C code and impl at ``kernel_version``, compared word for word on the
    same runs the spec judged (``paired.PairedHarness``): the first difference found, if any."""
    kw = dict(id=f"kernel.diff-impl.{kernel_version}", engine="random",
              invariants=["KD-RET", "KD-PAGES", "KD-WORDS", "KD-RC", "KD-TLB", "KD-WARN"])
    steps = sum(h.compared[0] for h in harnesses.values())
    for name, h in harnesses.items():
        if h.differences:
            lines, program, trace = h.differences[0]
            from ptspec.proofs.kernel.paired import shortest_difference
            short = shortest_difference(h.tree, kernel_version, name, trace,
                                        {ln.split()[0] for ln in lines})
            if short is not None:
                program, lines = short
            return Result.refuted({"ops": program, "violations": lines, "tables": "",
                                   "kernel_function": "pgtable.c"},
                                  detail=f"{name}: {lines[0]} ({len(h.differences)} of the runs "
                                         f"differ from impl {kernel_version}; the spec judged "
                                         "every step of them)", examples=steps, **kw)
    if not steps:
        return Result.unknown("nothing was compared", **kw)
    return Result.passed(steps, f"{steps} steps equal to impl {kernel_version} word for word",
                         **kw)


def _guarded(cid: str, run) -> Result:
    """One check; an exception inside ptspec's own harness becomes an "error" result of one line
    (where it was raised), never a traceback: it is no verdict on the kernel, and the run goes on
    with the other checks (exit 2 unless a check refuted)."""
    t0, c0 = time.perf_counter(), cpu_time()
    try:
        r = run()
        r.cpu_seconds = cpu_time() - c0
        return r
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:         # noqa: BLE001 - reported, with where it came from
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} "
                 f"({tb.tb_frame.f_code.co_name})") if tb is not None else ""
        return Result("error", f"internal error in ptspec, not a verdict on the kernel: "
                               f"{type(exc).__name__}: {exc}{where}", 0,
                      seconds=time.perf_counter() - t0, id=cid, engine="", cpu_seconds=cpu_time() - c0)


def planned(geometries, engines=("lockstep",), checks=None) -> list[str]:
    """The ids of the checks ``run`` makes, in its order (the impl comparison aside)."""
    if checks is None:
        checks = [c for e in engines if e != "lockstep" for c in E.check_ids(e, geometries)]
    return [f"kernel.lockstep.{g}" for g in (geometries if "lockstep" in engines else ())] + \
        list(checks)


def run(tree, geometries, profile: str, seed: int, with_impl: str | None = None,
        progress=None, engines=("lockstep",), checks=None, results=None) -> list[Result]:
    """The selected engines on the tree: the lock-step on each geometry, then each other engine
    (``ptspec.proofs.kernel.engines``) on its own geometries (``checks``: their check ids; default
    every check of the engines named). ``results``: a list each result is appended to as it comes
    (what an interrupted run had finished)."""
    budget = budgets.budget(profile)
    results = [] if results is None else results
    paired = {}
    for name in (geometries if "lockstep" in engines else ()):
        harness = None
        if with_impl:
            from ptspec.proofs.kernel.paired import paired_factory
            harness = paired[name] = paired_factory(tree, with_impl)
        r = _guarded(f"kernel.lockstep.{name}",
                     lambda: check_geometry(tree, name, budget, seed, harness))
        results.append(r)
        if progress:
            progress(f"{r.id}: {r.status} ({r.seconds:.1f} s) {r.detail}")
    if checks is None:
        checks = [c for e in engines if e != "lockstep" for c in E.check_ids(e, geometries)]
    for cid in checks:
        r = _guarded(cid, lambda: E.run_check(tree, cid, budget, seed=seed))
        results.append(r)
        if progress:
            progress(f"{r.id}: {r.status} ({r.seconds:.1f} s) {r.detail}")
    if with_impl and paired:
        r = impl_judgement(with_impl, paired)
        results.append(r)
        if progress:
            progress(f"{r.id}: {r.status} ({r.seconds:.1f} s) {r.detail}")
    return results


def _geometries(text: str) -> list[str]:
    if text == "all":
        return list(GEOMETRIES)
    names = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in names if g not in subject.GEOMETRIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown geometry {', '.join(bad) or '(none)'}; choose "
                                         f"from {', '.join(GEOMETRIES)} or 'all'")
    return names


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ptspec check-kernel", description=(
        "Judge a kernel tree's own arch/arm64/kvm/hyp/pgtable.c (compiled in userspace) by the "
        "spec: every invariant after every operation, every operation against its contract. Exit "
        "0: only catalogued findings; 1: another violation; 2: nothing could be checked."))
    ap.add_argument("--tree", metavar="DIR",
                    help="a kernel source tree (default: the cached Debian linux-source-6.1)")
    ap.add_argument("--kernel-version", metavar="X.Y.Z",
                    help="judge the tree as this kernel instead of its Makefile's version (a "
                         "distro or vendor tree carrying later changes): the spec's per-version "
                         "rules and the catalogue's ranges follow it")
    ap.add_argument("--with-impl", metavar="KERNEL_VERSION", choices=list(kernels.PROFILES),
                    help="also compare the C code word for word with impl at this kernel version "
                         f"({', '.join(kernels.PROFILES)})")
    ap.add_argument("--profile", choices=budgets.PROFILE_NAMES, default=budgets.DEFAULT_PROFILE,
                    help="budget (default: %(default)s)")
    ap.add_argument("--geometry", type=_geometries, default=list(GEOMETRIES),
                    help=f"one of {', '.join(GEOMETRIES)}, a comma list, or 'all' (default)")
    ap.add_argument("--engines", type=_engines, default=list(E.ENGINES), metavar="LIST",
                    help=f"comma list of {', '.join(E.ENGINES)}, or 'all' (default); the "
                         "lock-step, exhaustive, errorpaths and refusal run on each --geometry, hyp "
                         "on its own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="write the JSON report here")
    ap.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    ap.add_argument("--shard", type=_shard_arg, metavar="I/N",
                    help="check only shard I of N of the geometries (split by check id as verify "
                         "--shard); `ptspec merge` joins the N JSON reports")
    return ap


def _engines(text: str) -> list[str]:
    try:
        return E.parse_engines(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parallel.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_id(geometry: str) -> str:
    return f"kernel.lockstep.{geometry}"


def selection_ids(geometries: list[str], engines=("lockstep",)) -> list[str]:
    """Every check id of a run: the lock-step's per geometry, then the other engines'."""
    return ([check_id(g) for g in geometries] if "lockstep" in engines else []) + \
        [c for e in engines if e != "lockstep" for c in E.check_ids(e, geometries)]


def sharded(geometries: list[str], shard: tuple[int, int] | None,
            engines=("lockstep",)) -> tuple[list[str], list[str]]:
    """The lock-step geometries and the other engines' check ids of shard (i, n), in the given
    order (all of them without a shard)."""
    ids = selection_ids(geometries, engines)
    mine = set(parallel.shard_ids(ids, *shard)) if shard else set(ids)
    geos = [g for g in geometries if "lockstep" in engines and check_id(g) in mine]
    others = [c for c in ids if c.split(".")[1] != "lockstep" and c in mine]
    return geos, others


def open_tree_or_reason(directory, kernel_version=None):
    """(tree, '') or (None, one line saying why it cannot be checked), the tree judged as
    `kernel_version` when given."""
    if directory is None:
        tree, why = T.default_tree()
        if tree is None:
            return tree, why
        directory = tree.root
    try:
        tree = T.open_tree(directory, kernel_version)
    except (T.TreeError, OSError) as exc:
        return None, str(exc)
    return tree, ""


def version_conflict(tree) -> str | None:
    """One line refusing a tree whose source contradicts the version it is judged as
    (tree.version_conflicts: a backport its Makefile does not show), with the remedy; or None."""
    bad = T.version_conflicts(tree)
    if not bad:
        return None
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    fix = ("pass --kernel-version with the kernel whose pgtable.c it carries"
           if tree.makefile_version is None else "pass the kernel whose pgtable.c it carries")
    return f"{bad[0]}{more}: its code is not that release's; {fix}"


def main(argv=None) -> int:
    ap = parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    from ptspec.proofs.cli.verify_args import prepare_reports
    problem = prepare_reports(args.json, args.junit)
    if problem:
        print(f"check-kernel: {problem}")
        return 2
    if args.shard and args.with_impl:
        print("check-kernel: --shard and --with-impl do not combine (the comparison with impl "
              "spans every geometry); run --with-impl unsharded")
        return 2
    selection = selection_ids(args.geometry, args.engines)
    geometries, checks = sharded(args.geometry, args.shard, args.engines)
    tree, why = open_tree_or_reason(args.tree, args.kernel_version)
    if tree is None:
        print(f"check-kernel: not checked: {why}")
        return 2
    judged = (f" (judged as {tree.version}: --kernel-version; its Makefile says "
              f"{tree.makefile_version})" if tree.makefile_version else "")
    print(f"check-kernel: Linux {tree.version} at {tree.root}{judged}: {tree.shape.describe()}")
    bad = T.unsupported(tree.shape) or version_conflict(tree)
    if bad:
        print(f"check-kernel: not checked: {bad}")
        return 2
    if args.with_impl and getattr(tree.shape, "mainline", None) is not None:
        print(f"check-kernel: not checked: --with-impl compares with impl's 5.12-6.1 profiles; "
              f"Linux {tree.version} has the reworked walker (6.2 on) and is judged by the spec "
              "alone (run without --with-impl)")
        return 2
    if not geometries and not checks:
        print(f"check-kernel: nothing checked: shard {args.shard[0]}/{args.shard[1]} is empty "
              f"({len(selection)} checks selected, fewer than the shards)")
        check_output.write_reports(args, tree, [], selection)
        return 2
    try:
        build.library(subject.GEOMETRIES[geometries[0]][0] if geometries else
                      E.ENGINE_PAGE_SHIFT, tree)
    except build.BuildError as exc:
        print(f"check-kernel: not checked: {str(exc).splitlines()[0]}")
        for ln in str(exc).splitlines()[1:6]:
            print(f"  {ln}")
        return 2
    results: list[Result] = []
    with interrupt.handling():
        try:
            run(tree, geometries, args.profile, args.seed, args.with_impl,
                progress=lambda m: print(m, file=sys.stderr), engines=args.engines,
                checks=checks, results=results)
        except KeyboardInterrupt:           # Ctrl-C or SIGTERM (interrupt.Interrupted)
            interrupt.acknowledge()
            return check_output.interrupted(args, tree, results, selection,
                                planned(geometries, args.engines, checks))
    for r in results:
        print(format_result(r))
    for fid, n in sorted(findings_of(results).items()):
        f = next(x for x in findings.FINDINGS if x.id == fid)
        print(f"check-kernel: catalogued finding {fid} ({n} steps; Linux {f.versions()}; this tree "
              f"is {tree.version}): {f.statement}: {f.why}")
    code = exit_code(results)
    print(f"check-kernel: {sum(r.status in ('passed', 'proved') for r in results)} passed, "
          f"{sum(r.status == 'refuted' for r in results)} refuted, "
          f"{sum(r.status in ('unknown', 'error') for r in results)} not checked; exit {code}")
    check_output.write_reports(args, tree, results, selection)
    return code


if __name__ == "__main__":
    sys.exit(main())
