"""`ptspec mutants`: measure the checkers on the historical corpus and on mechanical mutants.

For each target (a corpus bug from ptspec.proofs.mutation.corpus, or a mutant from ptspec.proofs.mutation.mutate) the target is
planted into impl, and the registered obligations of a profile are run through the same runner as
`ptspec verify` (deadlines, honesty rules), the checks of the target's own area first, until one
refutes. The outcome of a target is:

* ``caught``   a check came back refuted: which check, which invariants its counterexample broke
  (and whether one of them is what the bug must be caught by), how long it took from the start;
* ``crashed``  a check ended in error (impl raised): the checks noticed, but without a verdict;
* ``hung``     a check had to be stopped after its deadline (impl looped): noticed, no verdict;
* ``survived`` every check passed (or was unknown for other reasons): the checkers missed it;
* ``unreached`` (mutants) no check executes the mutated function at all (dead code, or a gap);
* ``inconclusive`` (mutants) a check was stopped at its deadline, but the unmutated impl does not
  finish that check in time either (now, on this machine): neither a kill nor a survivor.

For the corpus every bug must be caught; crashed or hung counts as missed there (a real bug needs a
counterexample). For mechanical mutants, caught, crashed and hung all kill the mutant, as usual in
mutation testing; the score is killed / total per impl module. Only checks that pass on the
unmutated impl take part (the kernel differential check too, where its source is fetched).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Obligation, Result

AREA_PREFIX = {"s2": ("s2.",), "mmu": ("mmu.",), "lg": ("lg.",)}


@dataclass
class Outcome:
    target: str                  # corpus bug id or mutant id
    kind: str                    # "corpus" | "mutant"
    status: str                  # caught | crashed | hung | survived | error
    check: str | None = None     # first check that noticed
    invariants: list = field(default_factory=list)
    expected: list = field(default_factory=list)
    expected_hit: bool | None = None
    seconds: float = 0.0         # from the first check to the one that noticed (or all of them)
    checks_run: int = 0
    detail: str = ""
    counterexample: dict | None = None
    profile: str = ""            # the budget profile of the checks that judged it

    @property
    def killed(self) -> bool:
        return self.status in ("caught", "crashed", "hung")


ENGINE_ORDER = {"z3": 0, "unit": 1, "exhaustive": 2, "crosshair": 3, "hypothesis": 4, "random": 4}


def kill_suite(profile: str, area: str, pattern: str | None = None,
               allowed: set[str] | None = None) -> list[Obligation]:
    """The obligations run against a target: its area's first, then the others; within each, the
    cheap deterministic engines first. `allowed` keeps only the ids that passed on the baseline."""
    registry.load_all()
    obs = [ob for ob in registry.select(pattern, profile)
           if ob.engine != "mutant" and (allowed is None or ob.id in allowed)]
    mine = tuple(AREA_PREFIX.get(area, ()))
    key = lambda ob: (not ob.id.startswith(mine), ENGINE_ORDER.get(ob.engine, 9))  # noqa: E731
    return sorted(obs, key=key)      # sorted() is stable: registry order within a group


def baseline(profile: str, seed: int, pattern: str | None = None) -> tuple[set[str], list[Result]]:
    """Run the kill suite on the unmutated impl: only checks that pass there can kill a mutant
    (a check that fails or errors anyway would count every mutant as killed)."""
    results = [registry.run_obligation(ob, profile, seed) for ob in kill_suite(profile, "s2", pattern)]
    return {r.id for r in results if r.status in registry.PASSING}, results


def reach_map(profile: str, seed: int, pattern: str | None = None,
              allowed: set[str] | None = None) -> dict[str, set[str]]:
    """For every check of the kill suite, the impl functions it executes on the unmutated impl, as
    "module:qualname" (nested functions count as their enclosing function).

    A check that never calls a function cannot tell that function's mutant from the original:
    the checks are deterministic (fixed seeds), so their run is the same step for step. Running
    only the checks that reach the mutated function is what makes a full run affordable: a
    survivor costs the checks that could kill it, not the whole suite. A separate pass: the call
    recorder slows the checks down, so its results are not used as the baseline.

    A check that does not pass under the recorder (it ran out of time: recording slows it down)
    recorded only part of what it executes; it is taken to reach every function (EVERYTHING), so
    narrowing never drops a check that might kill."""
    out: dict[str, set[str]] = {}
    for ob in kill_suite(profile, "s2", pattern, allowed):
        reached: set[str] = set()
        with _calls_recorded(reached):
            r = registry.run_obligation(ob, profile, seed, slack=RECORDING_SLACK)
        out[ob.id] = reached if r.status in registry.PASSING else EVERYTHING
    return out


RECORDING_SLACK = 10.0     # the recorder makes checks a few times slower; their budget grows so
TARGET_SLACK = 0.5         # a planted target's checks get half the hang guard (3x their nominal time
                           # at quick, as before the hang guard grew) before "hung": only a loop (or
                           # a target that makes a check far slower) gets there, and "hung" counts
                           # only when the unmutated check then finishes in time


class _Everything(frozenset):
    """The reach of a check whose recording is incomplete: contains every function."""

    def __contains__(self, item) -> bool:
        return True

    def __repr__(self) -> str:
        return "EVERYTHING"


EVERYTHING = _Everything()


def checks_reaching(function: str, reach: dict[str, set[str]]) -> set[str]:
    """The checks that execute `function` ("module:qualname")."""
    return {check for check, fns in reach.items() if function in fns}


@contextlib.contextmanager
def _calls_recorded(reached: set[str]):
    from ptspec import impl
    root = os.path.dirname(impl.__file__) + os.sep
    seen: set = set()

    def prof(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code not in seen:
                seen.add(code)
    sys.setprofile(prof)
    threading.setprofile(prof)
    try:
        yield
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
        for code in seen:
            if code.co_filename.startswith(root):
                rel = code.co_filename[len(root):-3].replace(os.sep, ".")
                reached.add(f"{rel}:{code.co_qualname.split('.<locals>')[0]}")


def _broken(r: Result) -> list[str]:
    """Only the ids the counterexample's violations name: whether a bug was caught by the
    invariant it must be caught by is judged on what was found, never on what a check covers."""
    from ptspec.proofs.report.results import named_invariants
    return named_invariants(r)


def run_target(kind: str, target_id: str, profile: str, seed: int,
               pattern: str | None = None, stop_first: bool = True,
               allowed: set[str] | None = None,
               reach: dict[str, set[str]] | None = None) -> Outcome:
    """Plant one target and run the kill suite against it (in this process).

    With `reach` (see reach_map) a mutant meets only the checks that execute its function; one
    that no check executes is "unreached" at once: no check can kill it, and the report says so
    instead of spending the whole suite on it. A mutant is killed by the first check that notices
    it (caught, crashed or hung); a corpus bug needs a counterexample, so a crash does not stop
    the search for one."""
    from ptspec.proofs.mutation import corpus
    from ptspec.proofs.mutation import mutate
    if kind == "corpus":
        bug = {b.id: b for b in corpus.all_bugs()}[target_id]
        plant, area, expected = bug.plant, bug.area, list(bug.expected)
        if bug.exclude:
            allowed = (allowed if allowed is not None else
                       {ob.id for ob in kill_suite(profile, area, pattern)}) - set(bug.exclude)
    else:
        m = {mm.id: mm for mm in mutate.enumerate_mutants([mutate.module_of(target_id)])}[target_id]
        plant = lambda: mutate.applied(m)      # noqa: E731
        area = "mmu" if m.module.startswith("ptspec.impl.mmu") else "lg" if ".lguest" in m.module else "s2"
        expected = []
        if reach is not None:
            allowed = narrowed(target_id, allowed, reach)
            if not allowed:
                return Outcome(target_id, kind, "unreached", detail="no check executes this function")
    out = Outcome(target_id, kind, "survived", expected=expected, profile=profile)
    suite = kill_suite(profile, area, pattern, allowed)
    t0 = time.monotonic()
    try:
        with plant():
            for ob in suite:
                r = registry.run_obligation(ob, profile, seed, slack=TARGET_SLACK)
                out.checks_run += 1
                noticed = _classify(r)
                if noticed and (out.status == "survived" or noticed == "caught"):
                    out.status, out.check = noticed, ob.id
                    out.seconds = time.monotonic() - t0
                    out.detail = r.detail
                    if noticed == "caught":
                        out.invariants = _broken(r)
                        out.counterexample = r.counterexample
                        if expected:
                            out.expected_hit = bool(set(out.invariants) & set(expected))
                    if stop_first and (noticed == "caught" or kind == "mutant"):
                        break
    except Exception as exc:    # planting itself failed: the target is broken, not the checks
        out.status, out.detail = "error", f"could not plant {target_id}: {exc!r}"
    if out.status == "hung" and kind == "mutant":
        # a slow machine must not kill mutants: the same check, unmutated, must finish in time now
        ob = next(o for o in suite if o.id == out.check)
        again = registry.run_obligation(ob, profile, seed, slack=TARGET_SLACK)
        if again.status not in registry.PASSING:
            out.status = "inconclusive"
            out.detail = (f"{ob.id} was stopped at its deadline, and on the unmutated impl it is "
                          f"'{again.status}' now too (a loaded machine?): {again.detail[:200]}")
    if out.status == "survived":
        out.seconds = time.monotonic() - t0
    return out


def function_of(mutant_id: str) -> str:
    """ "module:qualname" of a mutant id ("module:qualname:opN"), as reach_map names functions."""
    return mutant_id.rsplit(":", 1)[0]


def narrowed(mutant_id: str, allowed: set[str] | None, reach: dict[str, set[str]]) -> set[str]:
    """The checks that may kill this mutant: those that execute its function (and are allowed)."""
    mine = checks_reaching(function_of(mutant_id), reach)
    return mine if allowed is None else mine & allowed


def _classify(r: Result) -> str | None:
    if r.status == "refuted":
        return "caught"
    if r.status == "error":
        return "crashed"
    if r.status == "unknown" and r.detail.startswith("stopped:"):
        return "hung"
    return None


WORKER_MEMORY = 6 << 30      # bytes of address space per worker: a runaway mutant fails, not the host


def _limit_memory() -> None:
    """A worker's start: its address-space limit; Ctrl-C is its parent's to handle (the parent
    stops the workers; a terminal's Ctrl-C reaches the whole process group, and a worker must not
    die of it with a traceback of its own); it dies with its parent (PR_SET_PDEATHSIG)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ptspec.proofs.runner.parallel import _die_with_parent
    _die_with_parent()
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ImportError, ValueError, OSError):     # not on this platform: run unlimited
        pass


def _stop_workers(pool) -> None:
    """Ctrl-C or SIGTERM in the parent: the pool's workers are killed at once (their targets are
    not finished; shutting the pool down would wait for each to end its current one)."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_alone(item, profile, seed, pattern, ctx) -> Outcome:
    """One target in a pool of its own: the outcome, or an error if its worker dies."""
    i, kind, target, mine = item
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_limit_memory) as pool:
        try:
            return Outcome(**pool.submit(_worker, (kind, target, profile, seed, pattern,
                                                   mine)).result())
        except KeyboardInterrupt:
            _stop_workers(pool)
            raise
        except Exception as exc:
            return Outcome(target, kind, "error", detail=f"worker died: {exc!r}")


_RETIRED = [False]


def _worker(args) -> dict:
    if _RETIRED[0]:
        # after a MemoryError the interpreter is not to be trusted (half-built objects, caches,
        # no room for a thread): this worker leaves; run_many runs the target in a fresh one
        import os
        os._exit(3)
    kind, target, profile, seed, pattern, allowed = args
    try:
        out = run_target(kind, target, profile, seed, pattern, allowed=allowed)
    except MemoryError:
        out = Outcome(target, kind, "crashed", profile=profile,
                      detail="MemoryError: the target allocated without bound")
    if "MemoryError" in out.detail:
        _RETIRED[0] = True
    return asdict(out)


def run_many(targets: list[tuple[str, str]], profile: str, seed: int, jobs: int = 1,
             pattern: str | None = None, allowed: set[str] | None = None,
             reach: dict[str, set[str]] | None = None,
             on_done: Callable[[Outcome, int, int], None] | None = None) -> list[Outcome]:
    """Run every (kind, id) target in `jobs` worker processes (at least one; each under the
    WORKER_MEMORY address-space limit), one target at a time each. With `reach`, each mutant's
    checks are narrowed here (unreached ones need no worker)."""
    outcomes: dict[int, Outcome] = {}
    n = len(targets)
    work: list[tuple[int, str, str, set[str] | None]] = []
    for i, (kind, target) in enumerate(targets):
        mine = allowed
        if kind == "mutant" and reach is not None:
            mine = narrowed(target, allowed, reach)
            if not mine:
                outcomes[i] = Outcome(target, kind, "unreached",
                                      detail="no check executes this function")
                if on_done:
                    on_done(outcomes[i], len(outcomes), n)
                continue
        work.append((i, kind, target, mine))
    # Always in worker processes, --jobs 1 included (one worker): a mutant that allocates without
    # bound meets the worker's address-space limit (WORKER_MEMORY) instead of the host's memory
    # (stop 24's in-process run: one runaway mutant grew to 16 GB), and one that kills its worker
    # is an error for itself only. A worker starts in about a second and serves many targets.
    if work:
        jobs = max(1, jobs)
        ctx = multiprocessing.get_context("spawn")
        pending = list(work)
        while pending:
            # A mutant may make a worker die (a runaway allocation past WORKER_MEMORY is a
            # MemoryError, but the OS may still kill it): its target is an error, the pool is
            # rebuilt and the targets it had not finished are run again.
            broken = False
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                                        initializer=_limit_memory) as pool:
                futures = {pool.submit(_worker, (kind, target, profile, seed, pattern, mine)):
                           (i, kind, target, mine) for i, kind, target, mine in pending}
                try:
                    for fut in cf.as_completed(futures):
                        i, kind, target, _ = futures[fut]
                        try:
                            outcomes[i] = Outcome(**fut.result())
                        except cf.process.BrokenProcessPool:
                            broken = True
                            continue
                        except MemoryError:         # its answer could not even be sent back
                            outcomes[i] = Outcome(target, kind, "crashed", profile=profile,
                                                  detail="MemoryError: the target allocated "
                                                         "without bound")
                        except Exception as exc:    # a failed worker: an error for its target
                            outcomes[i] = Outcome(target, kind, "error",
                                                  detail=f"worker failed: {exc!r}")
                        if on_done:
                            on_done(outcomes[i], len(outcomes), n)
                except KeyboardInterrupt:       # Ctrl-C / SIGTERM: no waiting for the workers
                    _stop_workers(pool)
                    raise
            left = [w for w in pending if w[0] not in outcomes]
            if broken and left:
                # the pool cannot say which target killed it: run them one at a time in turn
                # until the culprit is found (it is the one whose own single run breaks)
                first, rest = left[0], left[1:]
                out = _run_alone(first, profile, seed, pattern, ctx)
                outcomes[first[0]] = out
                if on_done:
                    on_done(out, len(outcomes), n)
                left = rest
            pending = left
    return [outcomes[i] for i in range(n)]


def score(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """Per impl module: total, killed, survived (mutants only)."""
    from ptspec.proofs.mutation import mutate
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if o.kind != "mutant":
            continue
        row = table.setdefault(mutate.module_of(o.target), {"total": 0, "killed": 0, "survived": 0,
                                                      "unreached": 0, "error": 0,
                                                      "inconclusive": 0})
        row["total"] += 1
        if o.killed:
            row["killed"] += 1
        elif o.status in ("error", "unreached", "inconclusive"):
            row[o.status] += 1
        else:
            row["survived"] += 1
    return table


def sample(mutants: list, count: int, seed: int) -> list:
    """A fixed, deterministic sample of `count` mutants spread over the modules (for CI)."""
    import random
    if count >= len(mutants):
        return list(mutants)
    rng = random.Random(seed)
    return sorted(rng.sample(list(mutants), count), key=lambda m: (m.module, m.line, m.id))
