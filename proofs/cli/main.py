"""The `ptspec` command: verify, check-state, list, explain, profiles (mutants, merge: own modules).

`verify` writes the JSON report (--json), JUnit XML (--junit) and KTAP (--ktap, on stdout); it runs
obligations in worker processes with --jobs N and a deterministic subset with --shard I/N
(proofs/runner/parallel.py). docs/reports.md describes the formats and options.

Exit codes (DESIGN.md): 0 all passed/proved (or no violation); 1 a counterexample (or a violation);
2 unknown, error, nothing checked, or input that cannot be read. spec/ is imported lazily, only by the
subcommands that need it, so `ptspec verify` and `ptspec list` work while spec/ is incomplete.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Sequence

from rich.console import Console
from rich.table import Table

from ptspec import __version__
from ptspec.proofs.cli import verify_args
from ptspec.proofs.runner import interrupt
from ptspec.proofs.runner import parallel
from ptspec.proofs.runner import registry
from ptspec.proofs.report import results as report
from ptspec.proofs.report import junit as report_junit
from ptspec.proofs.report import ktap as report_ktap
from ptspec.proofs.report import live as report_live
from ptspec.proofs.runner import budgets as profile_table
from ptspec.proofs.runner.registry import Listener, Obligation, Result

HEARTBEAT_SECONDS = 60.0  # without a terminal: a line while a check runs longer than this


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # CI logs: do not squeeze tables into 80 columns
    return console


def _error_console() -> Console:
    """The human output's console when stdout is reserved for KTAP."""
    console = Console(highlight=False, stderr=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def _print_plain(console: Console, text: str) -> None:
    report_live.print_plain(console, text)


def _load() -> list[Result]:
    """Import the check modules; a module that fails to import becomes an error result."""
    return [Result("error", f"check module {module} failed to import: {err}", id=f"load:{module}",
                   engine="unit") for module, err in registry.load_all()]


def _run(selected: list[Obligation], args: argparse.Namespace, console: Console,
         extra: Listener | None) -> list[Result]:
    """Run `selected` in-process (--jobs 1) or in worker processes, with the right display."""
    def go(listener: Listener) -> list[Result]:
        listener = report_live.Fanout(listener, extra) if extra else listener
        listener = interrupt.Checking(listener)
        if args.jobs > 1:
            return parallel.run_parallel(selected, args.profile, args.seed, args.jobs, listener,
                                         quiet_stdout=bool(args.ktap))
        return registry.run_all(selected, args.profile, args.seed, listener)

    if console.is_terminal:
        bars = report_live.Bars(console, len(selected))
        with bars.progress:
            return go(bars)
    return go(report_live.Lines(console, HEARTBEAT_SECONDS))


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    """verify, its report paths checked and under the run's signal handling (verify_args.guarded)."""
    return verify_args.guarded(args.json, args.junit, lambda: _verify(args, console))


def _verify(args: argparse.Namespace, console: Console) -> int | None:
    started = time.monotonic()
    stdout = sys.stdout
    if args.ktap:  # stdout carries KTAP only; everything for humans goes to stderr
        console = _error_console()
    shard_text = f"{args.shard[0]}/{args.shard[1]}" if args.shard else None
    pattern = ",".join(args.only) if args.only else None
    load_results = _load()
    for r in load_results:
        _print_plain(console, f"error    {r.id}: {r.detail}")
    results = list(load_results)
    unmatched = verify_args.unmatched(verify_args.patterns(args.only), registry.select(None, args.profile))
    problem = verify_args.skip_problem(args.skip or [], registry.all_obligations())
    if unmatched and registry.all_obligations():
        problem = (f"--only {unmatched[0]!r} matches no obligation in profile {args.profile!r} "
                   f"(see `ptspec list --profile {args.profile}`)")
    if problem:
        print(f"ptspec verify: {problem}", file=sys.stderr)
        return 2
    selected, left_out = verify_args.split_skipped(registry.select(pattern, args.profile), args.skip or [])
    why = None
    selection: list[str] | None = None
    if not selected and left_out:
        why = f"every selected obligation is left out by --skip {', '.join(args.skip)}"
    elif not selected:
        why = ("no obligations are registered" if not registry.all_obligations() else
               f"no obligation matches --only {pattern!r} in profile {args.profile!r}" if pattern else
               f"no obligation runs in profile {args.profile!r}")
    elif args.shard:
        selection = [ob.id for ob in selected]     # the whole split, for `ptspec merge` to check
        total = len(selected)
        selected = parallel.shard(selected, *args.shard)
        if not selected:
            why = f"shard {shard_text} is empty ({total} obligation(s) selected, fewer than the shards)"
    if why:
        print(f"ptspec verify: nothing checked: {why}", file=sys.stderr)
    stream = None
    if args.ktap:
        note = (f"ptspec {__version__} verify: profile {args.profile}, seed {args.seed}"
                + (f", shard {shard_text}" if shard_text else "") + (f", jobs {args.jobs}" if args.jobs > 1 else ""))
        stream = report_ktap.KtapStream(stdout, len(load_results) + len(selected), note)
        for position, r in enumerate(load_results):
            stream.add(position, r)
    if selected:
        extra = report_ktap.KtapListener(stream, len(load_results)) if stream else None
        with contextlib.redirect_stdout(sys.stderr) if args.ktap else contextlib.nullcontext():
            results += _run(selected, args, console, extra)
    wall = time.monotonic() - started
    if results:
        console.print(report.summary_table(results))
        _print_plain(console, report.summary_line(results, wall if args.jobs > 1 else None))
    for line in report.problems(results):
        _print_plain(console, line)
    if left_out:
        _print_plain(console, verify_args.skipped_line(left_out))
    if stream:
        stream.close(f"nothing checked: {why}" if why else "")
    extra_keys = {"shard": shard_text, "jobs": args.jobs, "wall_seconds": wall}
    unwritten = False
    json_report = report.build_report(results, args.profile, args.seed, **extra_keys)
    json_report["skipped"] = left_out
    if selection is not None:
        json_report["selection"] = selection
    junit_results = results
    if interrupt.received():       # JSON: a key; JUnit: an error case, so no CI shows it green
        json_report["interrupted"] = interrupt.name()
        junit_results = results + [Result("error", f"the run was interrupted by {interrupt.name()}",
                                          id="ptspec.interrupted", engine="unit")]
    for path, write in ((args.json, lambda p: report.write_json(json_report, p)),
                        (args.junit, lambda p: report_junit.write_junit(
                             junit_results, p, args.profile, args.seed, **extra_keys))):
        if path:
            try:
                write(path)
            except OSError as exc:
                print(f"ptspec verify: cannot write {path}: {exc}", file=sys.stderr)
                unwritten = True
    if unwritten:
        return 2
    code = report.exit_code(results)
    if code == 2 and results and all(r.status == "unknown" for r in results):
        print("ptspec verify: nothing was proved or passed: every check is unknown", file=sys.stderr)
    return code


def cmd_check_state(args: argparse.Namespace, console: Console) -> int:
    from ptspec.proofs.cli import check_state
    return check_state.run(args.file, lambda line: _print_plain(console, line))


def _load_warnings() -> int:
    errors = registry.load_all()
    for module, err in errors:
        print(f"ptspec: check module {module} failed to import: {err}", file=sys.stderr)
    return 2 if errors else 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    code = _load_warnings()
    obs = registry.select(",".join(args.only) if args.only else None, args.profile)
    unmatched = verify_args.unmatched(verify_args.patterns(args.only), registry.select(None, args.profile))
    if unmatched:
        where = f" in profile {args.profile!r}" if args.profile else ""
        print(f"ptspec list: {unmatched[0]!r} matches no obligation{where}", file=sys.stderr)
        return 2
    if not obs:
        print("ptspec list: no obligation" + (" matches" if args.only or args.profile else "s registered"),
              file=sys.stderr)
        return code
    table = Table(title=f"{len(obs)} obligation(s)")
    for col in ("id", "engine", "invariants", "profiles"):
        table.add_column(col, no_wrap=col == "id")
    order = profile_table.PROFILE_NAMES
    for ob in obs:
        table.add_row(ob.id, ob.engine, ", ".join(ob.invariants),
                      ", ".join(p for p in order if p in ob.profiles))
    console.print(table)
    return code


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    """An obligation, a statement id or a kernel function (ptspec.proofs.cli.explain)."""
    from ptspec.proofs.cli import explain
    code = _load_warnings()
    return explain.run(args.id, lambda text: _print_plain(console, text)) or code


def cmd_profiles(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="budgets per profile (proofs/runner/budgets.py)")
    table.add_column("key", no_wrap=True)
    for name in profile_table.PROFILE_NAMES:
        table.add_column(name, justify="right")
    table.add_column("meaning")
    for key, values, meaning in profile_table.describe():
        table.add_row(key, *(f"{v:,}" for v in values), meaning)
    console.print(table)
    return 0


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parallel.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptspec", description="Check the page-table impl against its spec.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser(
        "verify", help="run the proof obligations of a profile",
        description="Run the proof obligations of a profile. Exit status: 0 every check passed or was "
                    "proved; 1 a check found a counterexample; 2 a check was unknown or an error, "
                    "nothing was checked, or the command line or an output file was wrong. Report "
                    "formats: docs/reports.md.")
    v.add_argument("--profile", choices=profile_table.PROFILE_NAMES, default=profile_table.DEFAULT_PROFILE,
                   help="budget set (see `ptspec profiles`; default: %(default)s)")
    v.add_argument("--only", action="append", metavar="PATTERN",
                   help="glob or substring of obligation ids (repeatable, or comma-separated)")
    v.add_argument("--seed", type=int, default=0, help="seed of every randomised check (default: 0)")
    v.add_argument("--json", metavar="FILE",
                   help="write the JSON report here (per check: id, engine, status, seconds, rlimit, "
                        "counterexample)")
    v.add_argument("--junit", metavar="FILE",
                   help="write JUnit XML here for CI (one testcase per obligation, classname = engine)")
    v.add_argument("--ktap", action="store_true",
                   help="print KTAP version 1 (the kernel's KUnit/kselftest format) on stdout; the "
                        "human output goes to stderr")
    v.add_argument("--jobs", "-j", type=verify_args.jobs_arg("--jobs"), default=1, metavar="N",
                   help="run obligations in N worker processes, or auto: one per available CPU "
                        f"(at most {verify_args.AUTO_JOBS_MAX}) (default 1: in this process); "
                        "verdicts do not depend on it; results are reported in registry order")
    v.add_argument("--skip", action="append", metavar="AREA",
                   help="leave out every obligation of an area (the folder of proofs/ its check "
                        "lives in), e.g. kernel: the checks that need a kernel source tree; "
                        "repeatable; the summary and the JSON report list what was left out")
    v.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="run only shard I of N (1-based) of the selected obligations: sorted by id, "
                        "every N-th starting at the I-th; the N shards are disjoint and cover all")
    v.set_defaults(func=cmd_verify)
    c = sub.add_parser("check-state", help="check the invariants on a raw state, or a step file "
                                            "{pre, step, post} (JSON file, or - for stdin)",
                       description="Judge a raw state of any kind (its invariants), or a step file "
                                   "{\"pre\": state, \"step\": record, \"post\": state} (the post-state's "
                                   "invariants and the step's contract). Exit 0 no violation, 1 "
                                   "violations (one line each), 2 not a state or step file.")
    c.add_argument("file", metavar="FILE.json")
    c.set_defaults(func=cmd_check_state)
    ls = sub.add_parser("list", help="list the obligations")
    ls.add_argument("only", nargs="*", metavar="PATTERN")
    ls.add_argument("--profile", choices=profile_table.PROFILE_NAMES)
    ls.set_defaults(func=cmd_list)
    e = sub.add_parser("explain", help="explain an obligation, a statement id (S2-RC, KD-WORDS, ...) or a "
                                       "kernel function (stage2_unmap_walker)")
    e.add_argument("id", metavar="ID|FUNCTION")
    e.set_defaults(func=cmd_explain)
    p = sub.add_parser("profiles", help="show the budget of each profile")
    p.set_defaults(func=cmd_profiles)
    from ptspec.proofs.cli import mutants as cli_mutants
    cli_mutants.add_parser(sub)
    from ptspec.proofs.cli import merge as cli_merge
    cli_merge.add_parser(sub)
    d = sub.add_parser("diff-kernel", add_help=False,
                       help="run Linux 6.1's own pgtable.c side by side with impl (docs/kdiff.md)")
    d.add_argument("rest", nargs=argparse.REMAINDER)
    d.set_defaults(func=cmd_diff_kernel)
    k = sub.add_parser("check-kernel", add_help=False,
                       help="judge a kernel tree's own pgtable.c by the spec (docs/kernel.md)")
    k.add_argument("rest", nargs=argparse.REMAINDER)
    k.set_defaults(func=cmd_check_kernel)
    return parser


def cmd_diff_kernel(args: argparse.Namespace, console: Console) -> int:
    """`ptspec diff-kernel [--ops N] [--seed S] [--geometry G] [--fetch] ...` (see its --help).
    Ctrl-C or SIGTERM ends it with 128 + the signal and one line (no traceback)."""
    from ptspec.proofs.kernel import differ
    with interrupt.handling():
        try:
            return differ.main(list(args.rest))
        except KeyboardInterrupt:
            interrupt.acknowledge()
            print(f"kdiff: interrupted by {interrupt.name() or 'SIGINT'}; no verdict", flush=True)
            return interrupt.exit_code()


def cmd_check_kernel(args: argparse.Namespace, console: Console) -> int:
    """`ptspec check-kernel [--tree DIR] [--with-impl V] [--profile P] ...` (see its --help)."""
    from ptspec.proofs.kernel import check
    return check.main(list(args.rest))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["diff-kernel"]:          # its own argument parser (ptspec.proofs.kernel.differ)
        return cmd_diff_kernel(argparse.Namespace(rest=argv[1:]), _console())
    if argv[:1] == ["check-kernel"]:         # its own argument parser (ptspec.proofs.kernel.check)
        return cmd_check_kernel(argparse.Namespace(rest=argv[1:]), _console())
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (argparse exits 2)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args, _console())


if __name__ == "__main__":
    sys.exit(main())
