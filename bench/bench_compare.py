"""The same checking work under several checkouts, in one run on one machine: before and after.

``bench_throughput.py`` times the lock-step program of the checkout it runs in, so its figures move
when the program changes (issue 15 replaced the hypothesis state machine by ``Stage2Program``, with
other operations, sizes and weights). This script holds the work fixed:

* ``record OUT``: run this checkout's stage-2 lock-step program (``s2.lockstep.4k-39``'s: 4K/39,
  seeded) and write every run's operations, as the harness traced them (``["op", name, args]``,
  ``["fail", k]``), to OUT (JSON, gzip when OUT ends in .gz);
* ``lockstep TRACE``: feed those operations through ``Stage2Harness`` (impl, every invariant and
  contract judged, as the lock-step does; ``--subject c``: the kernel's C of the cached Debian
  tree in the same harness) and report operations per CPU second and the runs that found
  violations;
* ``exhaustive``: the stage-2 exhaustive exploration (depth 3) and lguest's (2-level and PAE,
  depth 2), transitions per CPU second, with the transition counts (equal counts: the same
  exploration);
* ``instructions TRACE``: the machine instructions one operation of the replay costs, counted by
  valgrind (cachegrind's "I refs"): runs ``--span A:B`` of the trace (default 20:80), as the
  difference of two counted replays (the first A runs, then the first B), so that start-up and
  imports cancel. A count, not a time: the same on a busy machine or a slow one, and the same on
  every run (string hashing is seeded, PYTHONHASHSEED=0), so before/after ratios need no rounds
  (they leave out what an instruction costs: cache misses, branch mispredictions).

``--python PY`` (repeatable) runs the same measurements under other interpreters too, each the venv
of another checkout (e.g. a ``git worktree`` of an older commit with ``pip install -e .``),
alternating fresh processes round by round; the figures are per CPU second of each process.

``bench/data/lockstep-4k39-32b07aa.json.gz`` is the program of the lock-step that issue 15 timed:
the hypothesis state machine of commit 32b07aa (main when the issue was filed; 200 examples of 30
steps, seed 0), recorded with ``record --runs 200`` under that checkout: 208 runs, 4,799
operations.

Run: .venv/bin/python bench/bench_compare.py lockstep bench/data/lockstep-4k39-32b07aa.json.gz \\
         --python ../old/.venv/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time


def _open(path: str, mode: str):
    return gzip.open(path, mode + "t") if path.endswith(".gz") else open(path, mode)


def record(out: str, runs: int, steps: int, seed: int) -> None:
    from ptspec.proofs.stage2 import harness as H
    from ptspec.proofs.stage2 import lockstep
    made = []
    init = H.Stage2Harness.__init__

    def tracing_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)
    H.Stage2Harness.__init__ = tracing_init
    try:
        res = lockstep.run_lockstep("4k-39", examples=runs, steps=steps, seed=seed)
    finally:
        H.Stage2Harness.__init__ = init
    if res.status != "passed":
        sys.exit(f"record: the lock-step did not pass ({res.status})")
    traces = [[list(entry) for entry in h.trace] for h in made]
    with _open(out, "w") as f:
        json.dump(traces, f, separators=(",", ":"))
    ops = sum(entry[0] == "op" for t in traces for entry in t)
    print(f"recorded {len(traces)} runs, {ops} operations -> {out}")


def _maker(subject: str):
    """A fresh 4K/39 harness per run: impl's Stage2Harness, or ("c") the kernel's C pgtable.c of
    the cached Debian tree under the same harness (CSideHarness), judged by the same spec."""
    from ptspec.proofs.stage2 import lockstep
    if subject == "impl":
        return lockstep.harness_maker("4k-39")
    from ptspec.proofs.kernel import subject as C
    from ptspec.proofs.kernel import tree as T
    tree, why = T.default_tree()
    if tree is None:
        sys.exit(f"the kernel's C: {why}")
    return lockstep.harness_maker("4k-39", C.subject_factory(tree), C.GEOMETRIES, C.OPTIONS)


def _as_the_check_runs():
    """What the checkout's lock-step check puts around the whole lock-step, if anything: its
    ``quiet_gc`` (the objects older than the lock-step set aside from the collector's walks; from
    d635b99 on), else nothing (the code issue 15 timed had none)."""
    from ptspec.proofs.stage2 import lockstep
    return getattr(lockstep, "quiet_gc", contextlib.nullcontext)()


def _per_run():
    """What the checkout's lock-step puts around each run, if anything: its ``run_gc`` (the
    collector paused for the run, one collection once the run's harness is dropped; stop 34),
    else nothing. (That checkout's own ``replay`` may pause the collector too; an outer run_gc
    makes that one do nothing, so the collection comes where the check's does.)"""
    try:
        from ptspec.proofs.engines.collector import run_gc
    except ImportError:
        return contextlib.nullcontext
    return run_gc


def lockstep_once(path: str, limit: int | None = None, subject: str = "impl") -> dict:
    """One replay of the runs of the trace file (the first ``limit``) through ``subject``'s
    harness (``harness.replay``, as the lock-step's minimiser runs a trace), with what the
    checkout's lock-step puts around the lock-step and around each run (_as_the_check_runs,
    _per_run): operations, CPU seconds, the runs that found violations, and their ids."""
    from ptspec.proofs.stage2.harness import replay
    with _open(path, "r") as f:
        traces = json.load(f)[:limit]
    make = _maker(subject)

    per_run = _per_run()

    def run():
        ops, bad, ids = 0, 0, set()
        for trace in traces:
            with per_run():
                h, used = replay(trace, make)       # stops at a run's first violation
                # the steps run; after a finding that ends a run (the C), the rest are not run
                ops += sum(entry[0] == "op" for entry in trace[:used]) - getattr(h, "unrun", 0)
                bad += bool(h.violations)
                ids.update(v.inv for v in h.violations)
                del h                               # dropped before the run's collection
        return ops, bad, ids
    run()                               # warm: imports, caches, the allocator
    with _as_the_check_runs():
        c0 = time.process_time()
        ops, bad, ids = run()
    return {f"{subject} lock-step 4K/39 (every check on)": {
        "count": ops, "cpu": time.process_time() - c0, "unit": "ops",
        "violations": bad, "ids": sorted(ids)}}


def exhaustive_once() -> dict:
    """The stage-2 (depth 3) and lguest (depth 2) exhaustive explorations: transitions, CPU s."""
    from ptspec.proofs.lguest import exhaustive as lg
    from ptspec.proofs.stage2 import exhaustive as s2
    out = {}
    for label, fn in (("stage-2 exhaustive, depth 3", lambda: s2.explore(3)),
                      ("lguest 2level exhaustive, depth 2", lambda: lg.explore(2, "2level")),
                      ("lguest pae exhaustive, depth 2", lambda: lg.explore(2, "pae"))):
        c0 = time.process_time()
        res = fn()
        out[label] = {"count": res.transitions, "cpu": time.process_time() - c0,
                      "unit": "transitions", "status": res.status}
    return out


def _verdict(got: dict) -> str:
    """", status passed" / ", violations N": what a measurement found, beside its rate."""
    return "".join(f", {k} {got[k]}" for k in ("status", "violations") if k in got)


def compare(what: list[str], rounds: int, pythons: list[str]) -> None:
    """Run ``_once *what`` under this interpreter and each of ``pythons``, alternating fresh
    processes for ``rounds`` rounds; print each figure's median (best) per interpreter."""
    subjects = [sys.executable] + pythons
    rates: dict = {}
    last: dict = {}
    for r in range(rounds):
        for py in subjects:
            out = subprocess.run([py, __file__, "_once", *what], capture_output=True, text=True,
                                 check=False)
            if out.returncode != 0:
                sys.exit(f"{py} failed:\n{out.stderr.strip()}")
            for label, got in json.loads(out.stdout).items():
                rate = got["count"] / got["cpu"]
                rates.setdefault(label, {}).setdefault(py, []).append(rate)
                last[label, py] = got
                print(f"round {r + 1}: {py}: {label}: {got['count']} {got['unit']} in "
                      f"{got['cpu']:.2f} CPU s = {rate:.0f}/s{_verdict(got)}", flush=True)
    print("\nper CPU second, median (best) of the rounds:")
    for label, per_py in rates.items():
        print(f"{label}:")
        for py, rs in per_py.items():
            got = last[label, py]
            print(f"  {statistics.median(rs):7.0f} ({max(rs):.0f}) {got['unit']}/s  "
                  f"[{got['count']} {got['unit']}{_verdict(got)}]  {py}")


def replay_first(path: str, limit: int) -> None:
    """Replay the first ``limit`` runs of the trace through impl's harness (``_replay``: what
    ``instructions`` counts; it judges as ``lockstep`` does and exits 1 at a violation)."""
    from ptspec.proofs.stage2.harness import replay
    with _open(path, "r") as f:
        traces = json.load(f)[:limit]
    make = _maker("impl")
    per_run = _per_run()
    with _as_the_check_runs():
        for i, trace in enumerate(traces):
            with per_run():
                h, _ = replay(trace, make)
                if h.violations:
                    sys.exit(f"run {i} found {h.violations[0]}")
                del h                   # dropped before the run's collection, as in the check


_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def instruction_count(valgrind_output: str) -> int:
    """cachegrind's "I refs" total from its summary on stderr."""
    m = _IREFS.search(valgrind_output)
    if m is None:
        raise ValueError("no 'I refs' line in valgrind's output")
    return int(m.group(1).replace(",", ""))


def instructions(path: str, span: tuple[int, int], pythons: list[str]) -> dict[str, float]:
    """Instructions per operation of runs span[0]..span[1] of the trace, per interpreter."""
    if shutil.which("valgrind") is None:
        sys.exit("instructions: needs valgrind (cachegrind) on the PATH")
    lo, hi = span
    with _open(path, "r") as f:
        ops = sum(entry[0] == "op" for t in json.load(f)[lo:hi] for entry in t)
    out = {}
    for py in [sys.executable] + pythons:
        counts = []
        for n in (lo, hi):
            run = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                  "--cachegrind-out-file=/dev/null", py, __file__, "_replay", path,
                                  str(n)], capture_output=True, text=True, check=False,
                                 env=dict(os.environ, PYTHONHASHSEED="0"))   # set order: fixed
            if run.returncode != 0:
                sys.exit(f"{py} failed:\n{run.stderr.strip()[-2000:]}")
            counts.append(instruction_count(run.stderr))
        out[py] = (counts[1] - counts[0]) / max(ops, 1)
        print(f"{py}: {out[py]:,.0f} instructions per operation (runs {lo}-{hi}: {ops} operations)",
              flush=True)
    first = out[sys.executable]
    for py, n in out.items():
        print(f"  {n:13,.0f} per op  x{n / first:.2f} of this checkout's  {py}")
    return out


def _span(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    if not (lo.isdigit() and hi.isdigit() and int(lo) < int(hi)):
        raise argparse.ArgumentTypeError(f"expected A:B with whole numbers A < B, not {text!r}")
    return int(lo), int(hi)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="record this checkout's lock-step program")
    rec.add_argument("out")
    rec.add_argument("--runs", type=int, default=100)
    rec.add_argument("--steps", type=int, default=30)
    rec.add_argument("--seed", type=int, default=0)
    for name, text in (("lockstep", "replay a recorded lock-step program, every check on"),
                       ("exhaustive", "the stage-2 and lguest exhaustive explorations")):
        p = sub.add_parser(name, help=text)
        if name == "lockstep":
            p.add_argument("trace")
            p.add_argument("--subject", choices=("impl", "c"), default="impl",
                           help="impl, or the kernel's C pgtable.c of the cached Debian tree")
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--python", action="append", default=[],
                       help="also run under this interpreter (another checkout's venv)")
    ins = sub.add_parser("instructions", help="instructions per operation of a recorded lock-step "
                                              "program's replay (valgrind), this checkout and others")
    ins.add_argument("trace")
    ins.add_argument("--span", type=_span, default=(20, 80), help="runs A:B of the trace (default 20:80)")
    ins.add_argument("--python", action="append", default=[],
                     help="also count under this interpreter (another checkout's venv)")
    once = sub.add_parser("_once")
    once.add_argument("what", nargs="+")
    rep = sub.add_parser("_replay")
    rep.add_argument("trace")
    rep.add_argument("limit", type=int)
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.out, args.runs, args.steps, args.seed)
    elif args.cmd == "lockstep":
        compare(["lockstep", args.trace, args.subject], args.rounds, args.python)
    elif args.cmd == "exhaustive":
        compare(["exhaustive"], args.rounds, args.python)
    elif args.cmd == "instructions":
        instructions(args.trace, args.span, args.python)
    elif args.cmd == "_replay":
        replay_first(args.trace, args.limit)
    elif args.what[0] == "lockstep":
        print(json.dumps(lockstep_once(args.what[1], subject=args.what[2])))
    else:
        print(json.dumps(exhaustive_once()))


if __name__ == "__main__":
    main()
