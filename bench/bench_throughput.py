"""Throughput of ptspec's engines with every check on: numbers, not assertions.

Figures (deterministic budgets and seeds; only the time varies with the machine):

* impl stage-2 lock-step on 4K/39 (``s2.lockstep.4k-39``'s program): operations per second, every
  invariant and contract judged;
* the kernel's C ``pgtable.c`` (the cached Debian 6.1) under the same lock-step, judged by the
  spec (``kernel.lockstep.4k-39``): operations per second (skipped without the source or a
  compiler);
* exhaustive exploration: stage 2 (transitions/s), the kernel's C on 64K/44 (transitions/s,
  skipped like the C lock-step), mmu.c (steps/s), lguest 2-level and PAE (transitions/s).

``--profile`` adds, for the two lock-steps, where the time goes (cProfile, cumulative seconds of
the subject's operations, the spec's load, single-state and two-state checks, the CMO ghost, the
window, the generator), and the ceiling: the same lock-step with the spec's judgement stubbed out
(what the subject, its snapshots and the harness cost alone).

These figures are for the checkout's own programs: to compare checkouts on the same work (a
recorded lock-step program, the same explorations), use bench/bench_compare.py.

Run: .venv/bin/python bench/bench_throughput.py [--runs N] [--profile]
or as pytest-benchmark runs: .venv/bin/python -m pytest bench/bench_throughput.py
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import time

from ptspec.proofs.stage2 import lockstep

STEPS = 30


def impl_lockstep(runs: int = 100, geometry: str = "4k-39", seed: int = 0) -> tuple[int, float]:
    """(operations, seconds) of ``runs`` impl lock-step runs."""
    t0 = time.perf_counter()
    out = lockstep.run_lockstep(geometry, examples=runs, steps=STEPS, seed=seed)
    assert out.status == "passed", out.failure
    return out.steps, time.perf_counter() - t0


def c_harness():
    """A CSideHarness class on the cached Debian tree, or None (with the reason printed)."""
    from ptspec.proofs.kernel import build, subject
    from ptspec.proofs.kernel import tree as T
    tree, why = T.default_tree()
    if tree is None:
        print(f"C lock-step: skipped: {why}")
        return None
    try:
        build.library(12, tree)
    except build.BuildError as exc:
        print(f"C lock-step: skipped: {str(exc).splitlines()[0]}")
        return None
    return subject.subject_factory(tree)


def c_lockstep(runs: int = 100, geometry: str = "4k-39", seed: int = 0,
               harness=None) -> tuple[int, float]:
    """(operations, seconds) of ``runs`` spec-judged lock-step runs of the kernel's C."""
    from ptspec.proofs.kernel import subject
    harness = harness or c_harness()
    t0 = time.perf_counter()
    out = lockstep.run_lockstep(geometry, examples=runs, steps=STEPS, seed=seed,
                                harness_factory=harness, geometries=subject.GEOMETRIES,
                                options=subject.OPTIONS)
    assert out.status == "passed", out.failure
    return out.steps, time.perf_counter() - t0


def kernel_exhaustive(depth: int = 2, geometry: str = "64k-44") -> tuple[int, float]:
    """(transitions, seconds) of the C engine's exhaustive exploration (needs the cached tree)."""
    from ptspec.proofs.kernel import build, exhaustive
    from ptspec.proofs.kernel import tree as T
    tree, _ = T.default_tree()
    build.library(16 if geometry.startswith("64k") else 12, tree)
    out = exhaustive.explore(tree, depth, geometry=geometry)
    assert out.status == "passed"
    return out.cases, out.seconds


@contextlib.contextmanager
def spec_stubbed():
    """The lock-step harness with the spec's judgement replaced by nothing: what is left is the
    subject, its snapshots, the harness's records and the generator (the lock-step's ceiling)."""
    from ptspec import spec
    from ptspec.proofs.stage2 import harness as H
    from ptspec.spec.stage2.cache import CacheJudge
    saved = (H.Stage2Harness._load, spec.check_state, spec.check_step, spec.changed_tables,
             CacheJudge.check)
    H.Stage2Harness._load = lambda self, raw, prev=None: None
    spec.check_state = spec.check_step = CacheJudge.check = lambda *a, **k: []
    spec.changed_tables = lambda *a, **k: None
    try:
        yield
    finally:
        (H.Stage2Harness._load, spec.check_state, spec.check_step, spec.changed_tables,
         CacheJudge.check) = saved


def stage2_exhaustive(depth: int = 3) -> tuple[int, float]:
    from ptspec.proofs.stage2 import exhaustive
    t0 = time.perf_counter()
    out = exhaustive.explore(depth)
    assert out.status == "passed"
    return out.transitions, time.perf_counter() - t0


def mmu_exhaustive(depth: int = 2) -> tuple[int, float]:
    from ptspec.proofs.mmu import exhaustive
    from ptspec.proofs.mmu.checks import DEFAULT_EXHAUSTIVE
    t0 = time.perf_counter()
    out = exhaustive.explore(depth, DEFAULT_EXHAUSTIVE)
    assert out.status == "passed"
    return out.steps, time.perf_counter() - t0


def lguest_exhaustive(fmt: str, depth: int = 2) -> tuple[int, float]:
    from ptspec.proofs.lguest import exhaustive
    t0 = time.perf_counter()
    out = exhaustive.explore(depth, fmt)
    assert out.status == "passed"
    return out.transitions, time.perf_counter() - t0


# where the time of a lock-step step goes: label -> (file suffix, function name) in the profile
SPLIT = {
    "subject (the operation itself)": ("proofs/stage2/harness.py", "_call"),
    "subject snapshot": (None, "snapshot"),
    "spec load_state": ("proofs/stage2/harness.py", "_load"),
    "spec check_state (windowed)": ("spec/stage2/check.py", "check_state"),
    "spec window (changed_tables)": ("spec/stage2/window.py", "changed_tables"),
    "spec check_step (S2-BBM, contract, C-CMO)": ("spec/stage2/check.py", "check_step"),
    "spec CMO-POC/POU ghost (CacheJudge.check)": ("spec/stage2/cache.py", "check"),
    "generator (Stage2Program.next)": ("proofs/stage2/program.py", "next"),
}


def profile_split(fn, *args) -> list[tuple[str, float, float]]:
    """(label, seconds, share of the whole) per SPLIT entry, from one profiled call of fn."""
    prof = cProfile.Profile()
    prof.enable()
    fn(*args)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = max((ct for (_, _, name), (_, _, _, ct, _) in stats.items()
                 if name == "run_lockstep"), default=1e-9)
    out = []
    for label, (suffix, name) in SPLIT.items():
        secs = sum(ct for (path, _, fname), (_, _, _, ct, _) in stats.items()
                   if fname == name and (suffix is None or path.endswith(suffix)))
        out.append((label, secs, secs / total))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="lock-step runs of 30 operations")
    ap.add_argument("--profile", action="store_true", help="also print where the time goes")
    args = ap.parse_args(argv)
    rows = [("impl stage-2 lock-step 4K/39", "ops", impl_lockstep, (args.runs,))]
    harness = c_harness()
    if harness is not None:
        rows.append(("kernel C lock-step 4K/39 (spec-judged)", "ops", c_lockstep,
                     (args.runs, "4k-39", 0, harness)))
    rows.append(("stage-2 exhaustive, depth 3", "transitions", stage2_exhaustive, (3,)))
    if harness is not None:
        rows.append(("kernel C exhaustive 64K/44, depth 2", "transitions", kernel_exhaustive, (2,)))
    rows += [
             ("mmu exhaustive, depth 2 (default layouts)", "steps", mmu_exhaustive, (2,)),
             ("lguest 2level exhaustive, depth 2", "transitions", lguest_exhaustive, ("2level", 2)),
             ("lguest pae exhaustive, depth 2", "transitions", lguest_exhaustive, ("pae", 2))]
    print("(rates per wall-clock second, and per CPU second of this process: the fairer number "
          "on a shared machine)")
    for label, unit, fn, fargs in rows:
        c0 = time.process_time()
        n, s = fn(*fargs)
        c = time.process_time() - c0
        print(f"{label:44s} {n:7d} {unit:11s} in {s:6.2f} s = {n / s:7.0f} {unit}/s "
              f"(CPU {c:6.2f} s = {n / c:7.0f}/s)")
    if args.profile:
        subjects = [("impl", impl_lockstep, ())]
        if harness is not None:
            subjects.append(("kernel C", c_lockstep, (100, "4k-39", 0, harness)))
        for name, fn, fargs in subjects:
            print(f"\nwhere the {name} lock-step's time goes (cProfile, cumulative):")
            for label, secs, share in profile_split(fn, *(fargs or (100,))):
                print(f"  {label:44s} {secs:6.2f} s {share:6.1%}")
            with spec_stubbed():
                fn(*(fargs or (100,)))
                c0 = time.process_time()
                n, _ = fn(*(fargs or (100,)))
                c = time.process_time() - c0
            print(f"  {'ceiling: the same run, spec stubbed':44s} {c:6.2f} s = {n / c:7.0f} ops per "
                  f"CPU second")


# -- pytest-benchmark -------------------------------------------------------------------------

def _rate(benchmark, fn, *args):
    n, s = benchmark.pedantic(fn, args=args, rounds=1, iterations=1)
    benchmark.extra_info["per_second"] = n / s
    return n


def test_impl_lockstep(benchmark):
    assert _rate(benchmark, impl_lockstep, 100) > 0


def test_c_lockstep(benchmark):
    import pytest
    harness = c_harness()
    if harness is None:
        pytest.skip("no cached kernel source or no compiler")
    assert _rate(benchmark, c_lockstep, 100, "4k-39", 0, harness) > 0


def test_stage2_exhaustive(benchmark):
    assert _rate(benchmark, stage2_exhaustive, 3) > 0


def test_mmu_exhaustive(benchmark):
    assert _rate(benchmark, mmu_exhaustive, 2) > 0


def test_lguest_exhaustive(benchmark):
    assert _rate(benchmark, lguest_exhaustive, "pae", 2) > 0


if __name__ == "__main__":
    main()
