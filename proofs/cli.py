"""The `ptspec` command: verify, check-state, list, explain, profiles.

Exit codes (DESIGN.md): 0 all passed/proved (or no violation); 1 a counterexample (or a violation);
2 unknown, error, nothing checked, or input that cannot be read. spec/ is imported lazily, only by the
subcommands that need it, so `ptspec verify` and `ptspec list` work while spec/ is incomplete.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from typing import Any, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from proofs import profiles as profile_table
from proofs import registry, report
from proofs.registry import Listener, Obligation, Result

HEARTBEAT_SECONDS = 60.0  # without a terminal: a line while a check runs longer than this


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # CI logs: do not squeeze tables into 80 columns
    return console


def _print_plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


class _Lines(Listener):
    """No terminal (CI): one line per finished check, a heartbeat for long ones, no bars."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.done, self.total = 0, None
        self.last = time.monotonic()

    def started(self, ob: Obligation, index: int, count: int) -> None:
        self.done, self.total, self.last = 0, None, time.monotonic()

    def progressed(self, ob: Obligation, advance: int, total: int | None, note: str | None) -> None:
        self.done += advance
        self.total = total if total is not None else self.total
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_SECONDS and advance:
            self.last = now
            of = f"/{self.total}" if self.total else ""
            _print_plain(self.console, f"      ... {ob.id}: {self.done}{of}" + (f" {note}" if note else ""))

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None:
        self.console.print(report.result_text(result, index, count))
        if result.status == "refuted":
            _print_plain(self.console, report.render_counterexample(result))


class _Bars(Listener):
    """A terminal: an overall bar and one for the running check, throttled to ~10 updates a second."""

    def __init__(self, console: Console, count: int) -> None:
        self.console = console
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.overall = self.progress.add_task("checks", total=count)
        self.task: Any = None
        self.pending, self.last = 0, 0.0

    def started(self, ob: Obligation, index: int, count: int) -> None:
        self.task = self.progress.add_task(ob.id, total=None)
        self.pending, self.last = 0, 0.0

    def progressed(self, ob: Obligation, advance: int, total: int | None, note: str | None) -> None:
        self.pending += advance
        now = time.monotonic()
        if now - self.last < 0.1 and total is None and note is None:
            return
        self.last = now
        kw: dict[str, Any] = {"advance": self.pending}
        if total is not None:
            kw["total"] = total
        if note is not None:
            kw["description"] = f"{ob.id} {note}"
        self.progress.update(self.task, **kw)
        self.pending = 0

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.progress.advance(self.overall)
        self.console.print(report.result_text(result, index, count))
        if result.status == "refuted":
            _print_plain(self.console, report.render_counterexample(result))


def _load() -> list[Result]:
    """Import the check modules; a module that fails to import becomes an error result."""
    return [Result("error", f"check module {module} failed to import: {err}", id=f"load:{module}",
                   engine="unit") for module, err in registry.load_all()]


def cmd_verify(args: argparse.Namespace, console: Console) -> int:
    pattern = ",".join(args.only) if args.only else None
    load_results = _load()
    for r in load_results:
        _print_plain(console, f"error    {r.id}: {r.detail}")
    results = list(load_results)
    selected = registry.select(pattern, args.profile)
    if not selected:
        why = ("no obligations are registered" if not registry.all_obligations() else
               f"no obligation matches --only {pattern!r} in profile {args.profile!r}" if pattern else
               f"no obligation runs in profile {args.profile!r}")
        print(f"ptspec verify: nothing checked: {why}", file=sys.stderr)
    if selected:
        if console.is_terminal:
            bars = _Bars(console, len(selected))
            with bars.progress:
                results += registry.run_all(selected, args.profile, args.seed, bars)
        else:
            results += registry.run_all(selected, args.profile, args.seed, _Lines(console))
    if results:
        console.print(report.summary_table(results))
        _print_plain(console, report.summary_line(results))
    for line in report.problems(results):
        _print_plain(console, line)
    if args.json:
        try:
            report.write_json(report.build_report(results, args.profile, args.seed), args.json)
        except OSError as exc:
            print(f"ptspec verify: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    code = report.exit_code(results)
    if code == 2 and results and all(r.status == "unknown" for r in results):
        print("ptspec verify: nothing was proved or passed: every check is unknown", file=sys.stderr)
    return code


def cmd_check_state(args: argparse.Namespace, console: Console) -> int:
    name = args.file
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"ptspec check-state: cannot read {name}: {exc}", file=sys.stderr)
        return 2
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"ptspec check-state: {name} is not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
              file=sys.stderr)
        return 2
    try:
        spec = importlib.import_module("spec")
        load_state, check_state = spec.load_state, spec.check_state
    except Exception as exc:
        print(f"ptspec check-state: spec cannot check states yet ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    state_error = getattr(spec, "StateError", ValueError)
    if not (isinstance(state_error, type) and issubclass(state_error, Exception)):
        state_error = ValueError
    try:
        state = load_state(obj)
    except state_error as exc:
        print(f"ptspec check-state: {name} is not a valid state: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"ptspec check-state: spec.load_state failed on {name}: {registry._summarise(exc)}",
              file=sys.stderr)
        return 2
    try:
        violations = list(check_state(state))
    except Exception as exc:
        print(f"ptspec check-state: spec.check_state failed on {name}: {registry._summarise(exc)}",
              file=sys.stderr)
        return 2
    for v in violations:
        _print_plain(console, str(v))
    print(f"{name}: {len(violations)} violation(s)" if violations else f"{name}: no violation",
          file=sys.stderr)
    return 1 if violations else 0


def _load_warnings() -> int:
    errors = registry.load_all()
    for module, err in errors:
        print(f"ptspec: check module {module} failed to import: {err}", file=sys.stderr)
    return 2 if errors else 0


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    code = _load_warnings()
    obs = registry.select(",".join(args.only) if args.only else None, args.profile)
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


def _doc_of(obj: Any) -> str | None:
    if isinstance(obj, str):
        return obj
    if inspect.isroutine(obj) or inspect.isclass(obj):
        return inspect.getdoc(obj)
    for attr in ("doc", "docstring", "statement", "description"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(obj, Mapping):
        for attr in ("doc", "statement"):
            if isinstance(obj.get(attr), str):
                return obj[attr]
    return inspect.getdoc(obj)


def spec_doc(inv_id: str) -> str:
    """The spec's text for an invariant or contract id, or a note saying why there is none."""
    try:
        spec = importlib.import_module("spec")
    except Exception as exc:
        return f"(spec is not importable: {type(exc).__name__}: {exc})"
    for table_name in ("INVARIANTS", "CONTRACTS"):
        table = getattr(spec, table_name, None)
        if isinstance(table, Mapping) and inv_id in table:
            return _doc_of(table[inv_id]) or f"(spec.{table_name}[{inv_id!r}] has no docstring)"
    return "(not in spec.INVARIANTS or spec.CONTRACTS)"


def _explain_obligation(ob: Obligation, console: Console) -> None:
    order = profile_table.PROFILE_NAMES
    lines = [f"{ob.id}  ({ob.engine}; profiles: {', '.join(p for p in order if p in ob.profiles)})", "",
             ob.statement, ""]
    if ob.kernel_functions:
        lines += ["kernel functions: " + ", ".join(ob.kernel_functions), ""]
    for inv in ob.invariants:
        lines += [f"{inv}:", *("  " + l for l in spec_doc(inv).splitlines()), ""]
    _print_plain(console, "\n".join(lines).rstrip())


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    code = _load_warnings()
    ob = registry.get(args.id)
    candidates = [ob] if ob else registry.select(args.id)
    if len(candidates) == 1:
        _explain_obligation(candidates[0], console)
        return code
    if len(candidates) > 1:
        print(f"ptspec explain: {args.id!r} matches {len(candidates)} obligations:", file=sys.stderr)
        for c in candidates:
            print(f"  {c.id}", file=sys.stderr)
        return 2
    covering = [o for o in registry.all_obligations() if args.id in o.invariants]
    doc = spec_doc(args.id)
    if covering or not doc.startswith("("):
        lines = [f"{args.id}:", *("  " + l for l in doc.splitlines())]
        lines.append("checked by: " + (", ".join(o.id for o in covering) or "(no obligation yet)"))
        _print_plain(console, "\n".join(lines))
        return code
    print(f"ptspec explain: no obligation or invariant {args.id!r} {doc}", file=sys.stderr)
    return 2


def cmd_profiles(args: argparse.Namespace, console: Console) -> int:
    table = Table(title="budgets per profile (proofs/profiles.py)")
    table.add_column("key", no_wrap=True)
    for name in profile_table.PROFILE_NAMES:
        table.add_column(name, justify="right")
    table.add_column("meaning")
    for key, values, meaning in profile_table.describe():
        table.add_row(key, *(f"{v:,}" for v in values), meaning)
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptspec", description="Check the page-table impl against its spec.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser("verify", help="run the proof obligations of a profile")
    v.add_argument("--profile", choices=profile_table.PROFILE_NAMES, default=profile_table.DEFAULT_PROFILE)
    v.add_argument("--only", action="append", metavar="PATTERN",
                   help="glob or substring of obligation ids (repeatable, or comma-separated)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--json", metavar="FILE", help="write the JSON report here")
    v.set_defaults(func=cmd_verify)
    c = sub.add_parser("check-state", help="check the invariants on a raw state (JSON file, or - for stdin)")
    c.add_argument("file", metavar="FILE.json")
    c.set_defaults(func=cmd_check_state)
    ls = sub.add_parser("list", help="list the obligations")
    ls.add_argument("only", nargs="*", metavar="PATTERN")
    ls.add_argument("--profile", choices=profile_table.PROFILE_NAMES)
    ls.set_defaults(func=cmd_list)
    e = sub.add_parser("explain", help="explain an obligation (or an invariant id)")
    e.add_argument("id", metavar="ID")
    e.set_defaults(func=cmd_explain)
    p = sub.add_parser("profiles", help="show the budget of each profile")
    p.set_defaults(func=cmd_profiles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
