"""`ptspec merge SHARD.json... [--json OUT] [--junit OUT]`: one report, one summary, one exit code.

Models: the joining job of a CI matrix (proofs/report/merge.py does the joining and refuses what
does not fit). The exit code is the one the unsharded run would have had, by the rules of the
command that wrote the shards: verify and check-kernel 0 all passed, 1 a refutation (a violation),
2 unknown, error or nothing checked; mutants 1 a missed corpus bug or an unexplained survivor. Reports
that cannot be merged, or an output that cannot be written, are one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from ptspec.proofs.report import atomic
from ptspec.proofs.report import merge as M


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="join the JSON reports of --shard I/N runs into one report",
                       description=__doc__.split("\n\n")[1] if __doc__ else None)
    p.add_argument("reports", nargs="+", metavar="REPORT.json")
    p.add_argument("--json", metavar="FILE", help="write the merged JSON report here")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML here (verify, check-kernel)")
    p.set_defaults(func=cmd_merge)


def _fail(text: str) -> int:
    print(f"ptspec merge: {text}", file=sys.stderr)
    return 2


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    from ptspec.proofs.cli.verify_args import output_problem
    problem = output_problem(args.json, args.junit)
    if problem:
        return _fail(problem)
    try:
        reports = [(path, M.load(path)) for path in args.reports]
        kind, merged = M.merge(reports)
    except M.MergeError as exc:
        return _fail(str(exc))
    except Exception as exc:                  # noqa: BLE001 -- the last resort: never a traceback
        return _fail(f"internal error in merging: {type(exc).__name__}: {str(exc)[:200]}")
    if kind == "mutants" and args.junit:
        return _fail("--junit: mutants reports have no JUnit form; use --json")
    try:
        code = _summary(kind, merged, reports, console)
    except Exception as exc:                  # noqa: BLE001 -- the last resort: never a traceback
        return _fail(f"internal error in the summary: {type(exc).__name__}: {str(exc)[:200]}")
    from ptspec.proofs.report import junit, results as report
    results = [M.result_of(c) for c in merged.get("checks", [])]
    writes = []
    if args.json:
        text = (json.dumps(merged, indent=1, default=str) if kind == "mutants"
                else report.dumps(merged))
        writes.append((args.json, lambda p: atomic.write_text(p, text)))
    if args.junit:
        writes.append((args.junit, lambda p: junit.write_junit(
            results, p, merged["profile"], merged["seed"],
            **({"wall_seconds": merged["summary"]["wall_seconds"]}
               if "wall_seconds" in merged["summary"] else {}))))
    for path, write in writes:
        try:
            write(path)
        except OSError as exc:
            return _fail(f"cannot write {path}: {exc.strerror or exc}")
    return code


def _summary(kind: str, merged: dict, reports, console: Console) -> int:
    """Print the summary of the merged run; its exit code."""
    n = len(reports)
    print(f"ptspec merge: {n} shard(s) of ptspec {kind}, profile {merged['profile']}, "
          f"seed {merged['seed']}")
    if kind == "mutants":
        from ptspec.proofs.cli import mutants as cli_mutants
        from ptspec.proofs.mutation import mutants
        for check_id in M.baseline_disagreements(reports):
            print(f"ptspec merge: warning: {check_id} has different baseline statuses in the shards")
        outcomes = [mutants.Outcome(**o) for o in merged["outcomes"]]
        if merged["mode"] == "systematic":
            return cli_mutants._systematic_report(outcomes, console)
        return cli_mutants._corpus_report(outcomes, console)
    from ptspec.proofs.report import results as report
    results = [M.result_of(c) for c in merged["checks"]]
    if kind == "verify":
        print(report.summary_line(results))
        for line in report.problems(results):
            print(line)
        return report.exit_code(results)
    from ptspec.proofs.kernel import check
    for fid, count in sorted(merged["kernel"].get("findings", {}).items()):
        print(f"check-kernel: catalogued finding {fid} ({count} steps)")
    code = check.exit_code(results)
    print(f"check-kernel: {sum(r.status == 'passed' for r in results)} passed, "
          f"{sum(r.status == 'refuted' for r in results)} refuted, "
          f"{sum(r.status in ('unknown', 'error') for r in results)} not checked; exit {code}")
    return code
