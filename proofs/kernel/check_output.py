"""check-kernel's output: one result as text, the exit code, the catalogued findings a run saw,
and the JSON / JUnit reports, an interrupted run's included (ptspec.proofs.kernel.check runs the
checks; ``ptspec merge`` joins shard reports with the same pieces).

Models nothing of the kernel: how a verdict on a tree is shown and recorded.
"""

from __future__ import annotations

from ptspec.proofs.kernel import findings
from ptspec.proofs.runner import interrupt
from ptspec.proofs.runner.registry import Result


def findings_of(results) -> dict:
    """finding id -> count, over the results' details (for the summary line)."""
    out = {}
    for r in results:
        for f in findings.FINDINGS:
            tag = f"{f.id} x"
            if tag in r.detail:
                n = int(r.detail.split(tag, 1)[1].split()[0])
                out[f.id] = out.get(f.id, 0) + n
    return out


def format_result(r: Result) -> str:
    lines = [f"{r.id}: {r.status.upper()} ({r.examples} operations, {r.seconds:.1f} s): {r.detail}"]
    cex = r.counterexample
    if cex:
        lines += ["  broken:"] + [f"    {v}" for v in cex["violations"][:8]]
        for vid, text in cex.get("statements", {}).items():
            if text:
                lines.append(f"    {vid}: {text}")
        lines += [f"  kernel function: {cex['kernel_function']}", "",
                  "operation sequence (pasteable):", cex["ops"], ""]
        if cex.get("c_test"):
            lines += ["the same sequence in C:", cex["c_test"], ""]
        lines += [cex["tables"]]
        if cex.get("tables_impl"):
            lines += ["", "impl:", cex["tables_impl"]]
    return "\n".join(lines)


def exit_code(results: list[Result]) -> int:
    if any(r.status == "refuted" for r in results):
        return 1
    if not results or any(r.status in ("unknown", "error") for r in results):
        return 2
    return 0


def interrupted(args, tree, results: list[Result], selection: list[str],
                 ids: list[str]) -> int:
    """An interrupted run: what finished, the rest "unknown: interrupted", reports that say so,
    and the exit code 128 + the signal (130 for SIGINT, 143 for SIGTERM); never a traceback."""
    how = interrupt.name() or "SIGINT"
    done = {r.id for r in results}
    results += [Result.unknown(f"interrupted by {how} before it finished", id=cid, engine="")
                for cid in ids if cid not in done]
    for r in results:
        print(format_result(r))
    code = interrupt.exit_code()
    print(f"check-kernel: interrupted by {how}: {len(done)} of {len(ids)} checks finished, "
          f"{sum(r.status == 'refuted' for r in results)} refuted; no verdict on the rest; "
          f"exit {code}")
    write_reports(args, tree, results, selection, interrupted=how)
    return code


def kernel_key(tree, results) -> dict:
    """The report's "kernel" object: the tree judged and the catalogued findings seen."""
    out = {"tree": str(tree.root), "version": tree.version, "shape": tree.shape.describe(),
           "findings": findings_of(results)}
    if getattr(tree, "makefile_version", None):       # judged as another kernel (--kernel-version)
        out["makefile_version"] = tree.makefile_version
    return out


def write_reports(args, tree, results, selection: list[str], interrupted: str = "") -> None:
    from ptspec.proofs.report import junit, results as report
    from ptspec.proofs.report import atomic
    shard = f"{args.shard[0]}/{args.shard[1]}" if args.shard else None
    if args.json:
        rep = report.build_report(results, args.profile, args.seed, shard=shard)
        rep["kernel"] = kernel_key(tree, results)
        if shard:
            rep["selection"] = selection
        if interrupted:                 # as verify's: a run no CI may take for a finished one
            rep["interrupted"] = interrupted
        atomic.write_text(args.json, report.dumps(rep))
    if args.junit:
        shown = results + ([Result("error", f"the run was interrupted by {interrupted}",
                                   id="ptspec.interrupted", engine="unit")]
                           if interrupted else [])
        junit.write_junit(shown, args.junit, args.profile, args.seed, shard=shard)
