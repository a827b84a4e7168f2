"""`ptspec mutants`: the historical corpus matrix, and systematic mutation testing of impl/.

    ptspec mutants [--only ID[,ID]] [--checks PATTERN] [--json FILE] [--profile P] [--seed N]
                   [--jobs N]
    ptspec mutants --systematic [--module NAME] [--sample N] [--list] [--json FILE] ...
    ptspec mutants ... --shard I/N      (one job of a CI matrix; `ptspec merge` joins the reports)

Corpus mode prints one row per historical bug (upstream fix, caught or not, the first check that
caught it, the invariants its counterexample broke, time to catch) and then each counterexample;
it exits 1 if a bug survives. Systematic mode plants every mechanical mutant of the selected impl
modules (ptspec.proofs.mutation.mutate), prints the mutation score per module and every survivor, and exits 1 if a
survivor is not explained in proofs/mutation/survivors/*.toml (an equivalent mutant, with the reason).

`--shard I/N` runs shard I of N of the selected targets (after --only, --module and --sample), split
by target id with verify's rule (proofs/runner/parallel.py `shard_ids`); its JSON report records
"shard" and the whole "selection", so `ptspec merge` can check and join the N reports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tomllib
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ptspec.proofs.cli import verify_args
from ptspec.proofs.mutation import corpus
from ptspec.proofs.mutation import mutants
from ptspec.proofs.mutation import mutate
from ptspec.proofs.report import atomic
from ptspec.proofs.runner import interrupt
from ptspec.proofs.runner import parallel

SURVIVORS_DIR = Path(mutants.__file__).with_name("survivors")   # package data, installed with the wheel


def explained_survivors() -> dict[str, str]:
    """mutant id -> why it is equivalent (or why no check can tell it apart), from the files of
    proofs/mutation/survivors/ (one per area). An id explained twice is an error: one reason each."""
    out: dict[str, str] = {}
    files = sorted(SURVIVORS_DIR.glob("*.toml"))
    if not files:   # a broken install must not turn every explained survivor into an unexplained one
        raise FileNotFoundError(f"no survivor explanations in {SURVIVORS_DIR} (incomplete install?)")
    for f in files:
        for k, v in tomllib.loads(f.read_text()).items():
            if k in out:
                raise ValueError(f"{f.name}: {k} is explained twice")
            if not str(v.get("why", "")).strip():
                raise ValueError(f"{f.name}: {k} has no reason ('why')")
            out[k] = v["why"]
    return out


def add_parser(sub) -> None:
    m = sub.add_parser("mutants", help="measure the checks on the bug corpus / on mutants of impl",
                       description=__doc__.split("\n\n")[1] if __doc__ else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--only", action="append", metavar="ID", help="corpus bug or mutant ids")
    m.add_argument("--systematic", action="store_true", help="mechanical mutants of impl/")
    m.add_argument("--module", action="append", metavar="NAME",
                   help="impl module(s) to mutate, e.g. pgtable.stage2_map (default: all)")
    m.add_argument("--sample", type=verify_args.count_arg("--sample"), metavar="N",
                   help="a fixed deterministic sample of N mutants")
    m.add_argument("--list", action="store_true", help="list the targets and exit")
    m.add_argument("--checks", metavar="PATTERN",
                   help="run only these obligations against each target (as verify --only)")
    m.add_argument("--profile", default="default", choices=("quick", "default", "deep"))
    m.add_argument("--escalate", metavar="PROFILE", choices=("default", "deep"),
                   help="(--systematic) run the survivors of --profile again under this profile")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--jobs", type=verify_args.jobs_arg("--jobs"), default=1,
                   help="worker processes, one target each, or auto: one per available CPU")
    m.add_argument("--json", metavar="FILE", help="write every outcome as JSON")
    m.add_argument("--shard", type=_shard_arg, metavar="I/N",
                   help="run only shard I of N (1-based) of the selected targets, split by id as "
                        "verify --shard; `ptspec merge` joins the N JSON reports")
    m.set_defaults(func=cmd_mutants)


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parallel.parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sharded(targets: list[tuple[str, str]], shard: tuple[int, int] | None) -> list[tuple[str, str]]:
    """The targets of shard (i, n), in the order of `targets` (all of them without a shard)."""
    if not shard:
        return targets
    mine = set(parallel.shard_ids([t for _, t in targets], *shard))
    return [(kind, t) for kind, t in targets if t in mine]


def build_report(args, base, outcomes, selection: list[str]) -> dict:
    """The JSON report of a run (or of one shard: "shard" "i/n" and the whole "selection")."""
    rep = {"profile": args.profile, "escalate": args.escalate, "seed": args.seed,
           "mode": "systematic" if args.systematic else "corpus",
           "baseline": {r.id: r.status for r in base},
           "outcomes": [mutants.asdict(o) for o in outcomes],
           "score": mutants.score(outcomes)}
    if getattr(args, "shard", None):
        rep["shard"] = f"{args.shard[0]}/{args.shard[1]}"
        rep["selection"] = selection
    return rep


def _targets(args) -> list[tuple[str, str]]:
    only = {i.strip() for o in args.only or [] for i in o.split(",") if i.strip()}
    if args.systematic:
        modules = [m if m.startswith("ptspec.impl.") else f"ptspec.impl.{m}" for m in args.module or []] or None
        known = mutate.impl_modules()
        unknown = [m for m in modules or [] if m not in known]
        if unknown:
            raise SystemExit(f"ptspec mutants: no impl module {', '.join(sorted(u.removeprefix('ptspec.impl.') for u in unknown))} (known: "
                             f"{', '.join(k.removeprefix('ptspec.impl.') for k in known)})")
        ms = mutate.enumerate_mutants(modules)
        if only:
            missing = only - {m.id for m in ms}
            if missing:
                raise SystemExit(f"ptspec mutants: no such mutant(s) in the selected modules: "
                                 f"{', '.join(sorted(missing))} (see --systematic --list)")
            ms = [m for m in ms if m.id in only]
        if args.sample:
            ms = mutants.sample(ms, args.sample, args.seed)
        return [("mutant", m.id) for m in ms]
    bugs = corpus.all_bugs()
    unknown = only - {b.id for b in bugs}
    if unknown:
        raise SystemExit(f"ptspec mutants: unknown corpus bug(s): {', '.join(sorted(unknown))}")
    return [("corpus", b.id) for b in bugs if not only or b.id in only]


def cmd_mutants(args, console: Console) -> int:
    try:
        targets = _targets(args)
    except SystemExit as exc:
        print(exc.code)
        return 2
    selection = [t for _, t in targets]
    targets = sharded(targets, args.shard)
    if args.shard and selection and not targets:
        print(f"ptspec mutants: nothing checked: shard {args.shard[0]}/{args.shard[1]} is empty "
              f"({len(selection)} target(s) selected, fewer than the shards)")
        if args.json:
            atomic.write_text(args.json, json.dumps(build_report(args, [], [], selection), indent=1))
        return 2
    if args.list:
        by_module: dict[str, dict] = {}        # each module's mutants, enumerated once
        for kind, t in targets:
            if kind != "corpus":
                module = mutate.module_of(t)
                if module not in by_module:
                    by_module[module] = {m.id: m for m in mutate.enumerate_mutants([module])}
                t = mutate.describe(by_module[module][t])
            # one line per target, however narrow the terminal (`| wc -l` counts targets)
            console.print(t, markup=False, highlight=False, soft_wrap=True)
        return 0
    if not targets:
        print("ptspec mutants: nothing selected")
        return 2

    problem = verify_args.prepare_reports(args.json, None)
    if problem:
        print(f"ptspec mutants: {problem}")
        return 2
    finished: list = []
    with interrupt.handling():
        try:
            return _measure(args, console, targets, selection, finished)
        except KeyboardInterrupt:          # Ctrl-C or SIGTERM: the workers are stopped already
            interrupt.acknowledge()
            how = interrupt.name() or "SIGINT"
            print(f"ptspec mutants: interrupted by {how}: {len(finished)} of {len(targets)} "
                  f"target(s) finished; no score, no report written", flush=True)
            return interrupt.exit_code()


def _measure(args, console: Console, targets, selection, finished: list) -> int:
    """Run the targets (and the escalation), then report; ``finished`` collects the outcomes as
    they come (what an interrupted run had done)."""
    def done(o, k, n):
        finished.append(o)
        what = f"{o.status:9} {o.target}"
        if o.check:
            what += f"  [{o.check} {','.join(o.invariants)} {o.seconds:.1f}s]"
        console.print(f"[{k}/{n}] {what}", markup=False, highlight=False)

    outcomes, base = _run(targets, args.profile, args, console, done)
    if outcomes is None:
        return 2
    if args.systematic and args.escalate:
        # unreached too: a bigger budget may reach a function (a longer sequence, more examples)
        again = [i for i, o in enumerate(outcomes)
                 if o.status in ("survived", "unreached", "inconclusive")]
        console.print(f"escalating {len(again)} survivor(s) of the {args.profile} profile to "
                      f"{args.escalate}", highlight=False)
        if again:
            more, _ = _run([targets[i] for i in again], args.escalate, args, console, done)
            if more is None:
                return 2
            for i, o in zip(again, more):
                outcomes[i] = o
    if args.json:
        atomic.write_text(args.json, json.dumps(build_report(args, base, outcomes, selection),
                                                indent=1, default=str))
    if args.systematic:
        return _systematic_report(outcomes, console)
    return _corpus_report(outcomes, console)


def _run(targets, profile: str, args, console: Console, done):
    """Baseline, reach map (systematic) and the run of every target under one profile."""
    allowed, base = mutants.baseline(profile, args.seed, args.checks)
    for r in base:
        if r.status not in ("passed", "proved"):
            console.print(f"baseline: {r.id} is {r.status} on the unmutated impl ({profile}); it is "
                          f"left out ({r.detail[:100]})", markup=False, highlight=False)
    if not allowed:
        print("ptspec mutants: no check passes on the unmutated impl; nothing can be measured")
        return None, base
    reach = mutants.reach_map(profile, args.seed, args.checks, allowed) \
        if args.systematic else None
    return mutants.run_many(targets, profile, args.seed, args.jobs, pattern=args.checks,
                            allowed=allowed, reach=reach, on_done=done), base


def _corpus_report(outcomes, console: Console) -> int:
    bugs = {b.id: b for b in corpus.all_bugs()}
    t = Table(title="historical bug corpus")
    for col in ("bug", "upstream fix", "caught", "first check", "invariants", "expected", "time"):
        t.add_column(col)
    for o in outcomes:
        b = bugs[o.target]
        t.add_row(o.target, b.fix[:48], "yes" if o.status == "caught" else f"NO ({o.status})",
                  o.check or "-", ", ".join(o.invariants) or "-",
                  ("yes" if o.expected_hit else "no") if o.expected_hit is not None else "-",
                  f"{o.seconds:.1f}s")
    console.print(t)
    caught = [o for o in outcomes if o.status == "caught"]
    times = [o.seconds for o in caught]
    if times:
        console.print(f"caught {len(caught)}/{len(outcomes)}; time to catch median "
                      f"{statistics.median(times):.1f}s, max {max(times):.1f}s", highlight=False)
    for o in caught:
        cx = o.counterexample or {}
        console.print(f"\n== {o.target}: {o.check}", markup=False, highlight=False)
        for v in (cx.get("violations") or [])[:3]:
            console.print(f"   {v}", markup=False, highlight=False)
        if cx.get("ops"):
            console.print(cx["ops"], markup=False, highlight=False)
    missed = [o for o in outcomes if o.status != "caught" or o.expected_hit is False]
    for o in missed:
        why = "not caught" if o.status != "caught" else "caught, but not by the invariant it must be"
        console.print(f"MISSED {o.target}: {why} ({o.status}; {o.detail})", markup=False,
                      highlight=False)
    return 1 if missed else 0


def _systematic_report(outcomes, console: Console) -> int:
    t = Table(title="mutation score per impl module")
    for col in ("module", "mutants", "killed", "survived", "unreached", "inconclusive", "error",
                "score"):
        t.add_column(col)
    table = mutants.score(outcomes)
    for module, row in sorted(table.items()):
        t.add_row(module, str(row["total"]), str(row["killed"]), str(row["survived"]),
                  str(row["unreached"]), str(row["inconclusive"]), str(row["error"]),
                  f"{100 * row['killed'] / max(row['total'], 1):.1f}%")
    cols = ("total", "killed", "survived", "unreached", "inconclusive", "error")
    sums = {k: sum(r[k] for r in table.values()) for k in cols}
    t.add_row("all", *(str(sums[k]) for k in cols),
              f"{100 * sums['killed'] / max(sums['total'], 1):.1f}%")
    console.print(t)
    explained = explained_survivors()
    unexplained = []
    for o in outcomes:
        if o.killed:
            continue
        note = explained.get(o.target)
        console.print(f"{'survived' if o.status == 'survived' else o.status}: {o.target}"
                      + (f"  -- explained: {note}" if note else "  -- NOT EXPLAINED"),
                      markup=False, highlight=False)
        if not note:
            unexplained.append(o)
    return 1 if unexplained else 0
