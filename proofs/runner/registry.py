"""The registry of proof obligations, and the runner that keeps their results honest.

A check module registers obligations when it is imported; `load_all()` imports the modules named in
`CHECK_MODULES` (every `proofs/<area>/checks*.py`, found on disk, imported lazily). Each
obligation's `run(ctx)` returns a `Result`; the runner (`run_obligation`, `run_all`), not the check, enforces the rules of DESIGN.md:

- an exception inside a check is status "error" with the traceback summary;
- "passed"/"proved" with `examples == 0` is "unknown: nothing was checked";
- budgets are examples, steps, states, replays and solver resources (`ctx.budget`), which do not
  depend on the machine's speed; wall-clock time is only a hang guard. `ctx.deadline` is the hang
  guard: the profile's nominal `check_seconds` times the obligation's `time_scale` times the
  profile's `hang_guard_factor` (10 at default: a machine three times slower is far from it). A
  check that completes its budget is never "unknown" for being slow: a late pass is a pass. A check
  that polls `ctx.expired()` and stops before completing its budget must return "unknown" (budget
  not completed), never "passed" on a partial, clock-dependent budget. One still running
  `grace_seconds` after the hang guard is stopped (SIGALRM raising `DeadlineExceeded`; main thread
  only, and only between Python bytecodes, so z3 queries need their own resource limit) and is
  "unknown", whatever it returns afterwards. A refutation stays a refutation (its counterexample
  does not depend on time), unless the check had to be stopped.
- a check module that fails to import is an "error" result (see `load_errors`), never a silent skip.

A check module (a file `proofs/<area>/checks*.py`; it is found by name, nothing to edit elsewhere):

    from ptspec.proofs.runner.registry import Result, obligation

    @obligation("s2.z3.granule-shift", engine="z3", invariants=["S2-BA"],
                kernel_functions=["kvm_granule_shift"], profiles={"quick", "default", "deep"})
    def granule_shift(ctx):
        '''For every level, the impl's granule shift is the one the architecture gives.'''
        ...  # use ctx.budget["z3_rlimit"], ctx.seed, ctx.progress(), ctx.expired()
        return Result.proved(examples=4)   # or Result.refuted({...}), Result.unknown("why")

Statuses: "passed" (tested, no counterexample), "proved" (complete for what it covers), "refuted",
"unknown" (with the reason), "error".
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import importlib
import resource
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from ptspec.proofs.runner import budgets as profile_table
from ptspec.proofs.runner import interrupt

# "random": the seeded random lock-steps of stage 2 (impl and the kernel's C): plain seeded choices
# through the shared generator (proofs/stage2/program.py), no hypothesis engine behind them.
ENGINES = ("z3", "crosshair", "hypothesis", "random", "exhaustive", "unit", "mutant")
STATUSES = ("passed", "proved", "refuted", "unknown", "error")
PASSING = ("passed", "proved")


def _discover_check_modules() -> list[str]:
    """Every ``proofs/<area>/checks*.py``, in name order: adding checks is adding a file."""
    import pkgutil
    from ptspec import proofs
    return sorted(m.name for m in pkgutil.walk_packages(proofs.__path__, prefix="ptspec.proofs.")
                  if not m.ispkg and m.name.rsplit(".", 1)[1].startswith("checks"))


# Check modules, in run order.
CHECK_MODULES: list[str] = _discover_check_modules()


@dataclass
class Result:
    """What one check found. `seconds` (wall clock), `cpu_seconds`, `id`, `engine` and `invariants`
    are filled by the runner."""

    status: str
    detail: str = ""
    examples: int = 0  # examples / states / paths / discharged queries actually checked
    counterexample: dict[str, Any] | None = None  # keys: ops, tables, violations, kernel_function
    rlimit: int | None = None
    seconds: float = 0.0
    id: str = ""
    engine: str = ""
    invariants: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # CPU time the check took (its process and the children it waited for)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Result status {self.status!r} is not one of {', '.join(STATUSES)}")

    @classmethod
    def passed(cls, examples: int, detail: str = "", **kw: Any) -> "Result":
        return cls("passed", detail, examples, **kw)

    @classmethod
    def proved(cls, examples: int = 1, detail: str = "", **kw: Any) -> "Result":
        return cls("proved", detail, examples, **kw)

    @classmethod
    def refuted(cls, counterexample: dict[str, Any], detail: str = "", examples: int = 1, **kw: Any) -> "Result":
        return cls("refuted", detail, examples, counterexample, **kw)

    @classmethod
    def unknown(cls, detail: str, examples: int = 0, **kw: Any) -> "Result":
        return cls("unknown", detail, examples, **kw)


def _no_progress(advance: int | None = None, total: int | None = None, note: str | None = None) -> None:
    return None


@dataclass(frozen=True)
class Context:
    """What a check gets: profile, seed, budget, its hang guard (`deadline`, time.monotonic()) and
    a progress hook."""

    profile: str
    seed: int
    budget: Mapping[str, Any]
    deadline: float = float("inf")
    check_id: str = ""
    # progress(advance=None, total=None, note=None): ctx.progress() advances by one;
    # ctx.progress(total=N) / ctx.progress(note="...") only set the total / the note.
    progress: Callable[..., None] = _no_progress

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline


@dataclass
class Obligation:
    """One thing to prove or test; `statement` is what a reviewer reads."""

    id: str
    engine: str
    invariants: list[str]
    statement: str
    run: Callable[[Context], Result]
    kernel_functions: list[str] = field(default_factory=list)
    profiles: set[str] = field(default_factory=lambda: set(profile_table.PROFILE_NAMES))
    time_scale: float = 1.0  # multiplies the profile's nominal check_seconds (and so its hang guard)
    # An optional input this machine may not have (a kernel tree a developer caches): returns why
    # it is absent, or None. `verify` leaves such an obligation out and says so in its summary,
    # as `--skip` does; called directly it still runs (and reports "unknown" without its input).
    needs: Callable[[], str | None] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id or any(c.isspace() for c in self.id):
            raise ValueError(f"obligation id must be a non-empty string without spaces, not {self.id!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"{self.id}: engine {self.engine!r} is not one of {', '.join(ENGINES)}")
        if isinstance(self.invariants, str) or not all(isinstance(i, str) and i for i in self.invariants):
            raise ValueError(f"{self.id}: invariants must be a list of ids, not {self.invariants!r}")
        if isinstance(self.kernel_functions, str):
            raise ValueError(f"{self.id}: kernel_functions must be a list of names")
        self.invariants = list(self.invariants)
        self.kernel_functions = list(self.kernel_functions)
        self.profiles = set(self.profiles)
        bad = self.profiles - set(profile_table.PROFILE_NAMES)
        if not self.profiles or bad:
            raise ValueError(f"{self.id}: profiles must be a non-empty subset of {profile_table.PROFILE_NAMES}")
        if not callable(self.run):
            raise ValueError(f"{self.id}: run must be callable(ctx) -> Result")
        if not self.statement:
            self.statement = (getattr(self.run, "__doc__", None) or "").strip()
        if not self.statement:
            raise ValueError(f"{self.id}: a statement (or a docstring on run) is required")
        if not self.time_scale > 0:
            raise ValueError(f"{self.id}: time_scale must be positive")


class Registry:
    """Obligations by id, in registration order, and the check modules that register them."""

    def __init__(self, modules: list[str] | None = None) -> None:
        self._modules = modules  # None: read CHECK_MODULES when loading
        self.obligations: dict[str, Obligation] = {}
        self.load_errors: list[tuple[str, str]] = []  # (module, error summary)

    def modules(self) -> list[str]:
        return list(CHECK_MODULES if self._modules is None else self._modules)


_current = Registry()


def register(ob: Obligation) -> Obligation:
    """Add `ob` to the registry; a second obligation with the same id is a ValueError."""
    if not isinstance(ob, Obligation):
        raise TypeError(f"register() takes an Obligation, not {type(ob).__name__}")
    if ob.id in _current.obligations:
        raise ValueError(f"obligation {ob.id!r} is registered twice")
    _current.obligations[ob.id] = ob
    return ob


def obligation(id: str, *, engine: str, invariants: list[str], statement: str = "",
               kernel_functions: list[str] = (), profiles: set[str] | None = None,
               time_scale: float = 1.0) -> Callable[[Callable[[Context], Result]], Callable[[Context], Result]]:
    """Decorator: register the decorated `run(ctx) -> Result` as an obligation (returns it unchanged)."""

    def wrap(run: Callable[[Context], Result]) -> Callable[[Context], Result]:
        kw = {} if profiles is None else {"profiles": profiles}
        register(Obligation(id=id, engine=engine, invariants=list(invariants), statement=statement,
                            run=run, kernel_functions=list(kernel_functions), time_scale=time_scale, **kw))
        return run

    return wrap


def load_all() -> list[tuple[str, str]]:
    """Import every check module (once); returns (module, error) for those that failed to import."""
    for name in _current.modules():
        if any(m == name for m, _ in _current.load_errors):
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken check module must surface as an error, not vanish
            _current.load_errors.append((name, _summarise(exc)))
    return list(_current.load_errors)


def check_modules() -> list[str]:
    """The modules the current registry imports (what a worker process must import to match it)."""
    return _current.modules()


def load_errors() -> list[tuple[str, str]]:
    return list(_current.load_errors)


def all_obligations() -> list[Obligation]:
    return list(_current.obligations.values())


def get(id: str) -> Obligation | None:
    return _current.obligations.get(id)


def matches(ob_id: str, pattern: str) -> bool:
    """fnmatch-style glob on the id, or a substring of it; case-insensitive; ',' separates patterns."""
    ob_id = ob_id.lower()
    for p in (p.strip().lower() for p in pattern.split(",")):
        if p and (fnmatch.fnmatchcase(ob_id, p) or p in ob_id):
            return True
    return False


def select(pattern: str | None = None, profile: str | None = None) -> list[Obligation]:
    """Obligations whose id matches `pattern` (all if None) and that run in `profile` (any if None)."""
    return [ob for ob in _current.obligations.values()
            if (pattern is None or matches(ob.id, pattern)) and (profile is None or profile in ob.profiles)]


@contextlib.contextmanager
def isolated(modules: list[str] | None = None) -> Iterator[Registry]:
    """Use a fresh, empty registry (for tests: register fake obligations without shipping them)."""
    global _current
    saved, _current = _current, Registry(list(modules or []))
    try:
        yield _current
    finally:
        _current = saved


# ---------------------------------------------------------------------------------------------- runner

class DeadlineExceeded(BaseException):
    """Raised inside a check that is still running after its deadline plus grace.

    A BaseException so that checkers which treat Exception as "the property failed" (hypothesis)
    let it through instead of reporting it as a counterexample.
    """


class Listener:
    """Receives the runner's events; the CLI's progress display subclasses this."""

    def started(self, ob: Obligation, index: int, count: int) -> None: ...

    def progressed(self, ob: Obligation, advance: int, total: int | None, note: str | None) -> None: ...

    def finished(self, ob: Obligation, result: Result, index: int, count: int) -> None: ...


def _summarise(exc: BaseException, frames: int = 4) -> str:
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__][-frames:]
    where = "".join(f"\n  at {f.filename}:{f.lineno} in {f.name}" for f in tb)
    return f"{type(exc).__name__}: {exc}{where}"


# After the first stop, the timer keeps firing at this interval until the guarded block is left: a
# DeadlineExceeded raised where Python cannot propagate it (inside a gc callback, such as the one
# hypothesis registers, or a __del__: "Exception ignored in ...") or caught by the check is raised
# again, so a check that loops on after its stop was lost is still stopped (a mutant once ran on,
# and grew to 16 GB, after its only alarm landed in a gc callback).
RESTOP_SECONDS = 0.25


@contextlib.contextmanager
def _hard_stop(seconds: float) -> Iterator[list[bool]]:
    """Raise DeadlineExceeded in this thread after `seconds`, and again every RESTOP_SECONDS until
    the block is left, where a timer signal is available.

    Yields a one-element list that becomes [True] once the alarm fired (even if the check swallowed
    the exception). A stop Python could not deliver (raised in a gc callback or a finaliser) is
    not printed as an ignored exception: the next one is delivered.
    """
    fired = [False]
    usable = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and seconds != float("inf"))
    if usable and signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        usable = False  # someone else's timer (e.g. pytest-timeout): do not clobber it
    if not usable:
        yield fired
        return
    active = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if not active[0]:                   # the block is being left: nothing more to stop
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        fired[0] = True
        raise DeadlineExceeded()

    def unraisable(args: Any) -> None:
        if not isinstance(args.exc_value, DeadlineExceeded):
            old_hook(args)

    old = signal.signal(signal.SIGALRM, on_alarm)
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), RESTOP_SECONDS)
    try:
        yield fired
    finally:
        while True:             # a stop landing here, before the timer is off, is absorbed
            try:
                active[0] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except DeadlineExceeded:
                continue
        signal.signal(signal.SIGALRM, old)
        sys.unraisablehook = old_hook


def _invalid(value: Any) -> str | None:
    if not isinstance(value, Result):
        return f"check returned {type(value).__name__}, not a Result"
    if value.status not in STATUSES:
        return f"check returned status {value.status!r}"
    if isinstance(value.examples, bool) or not isinstance(value.examples, int) or value.examples < 0:
        return f"check returned examples={value.examples!r} (want an int >= 0)"
    if value.counterexample is not None and not isinstance(value.counterexample, dict):
        return f"check returned a counterexample of type {type(value.counterexample).__name__}, not dict"
    if value.rlimit is not None and (isinstance(value.rlimit, bool) or not isinstance(value.rlimit, int)):
        return f"check returned rlimit={value.rlimit!r} (want an int or None)"
    if not isinstance(value.detail, str):
        return f"check returned detail of type {type(value.detail).__name__}, not str"
    return None


def cpu_time() -> float:
    """CPU seconds (user and system) of this process and of the child processes it has waited
    for: what a check costs whatever else the machine runs (a compiler it ran counts too)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def cpu_rate(count: int, cpu_seconds: float) -> str:
    """``count`` per CPU second of ``cpu_seconds``, as a whole number (the rates in check details:
    "... steps per CPU second"); a zero time counts as 1 ns."""
    return f"{count / max(cpu_seconds, 1e-9):.0f}"


def run_obligation(ob: Obligation, profile: str, seed: int,
                   progress: Callable[..., None] = _no_progress, slack: float = 1.0) -> Result:
    """Run one obligation under its budget and apply the honesty rules. `slack` stretches the hang
    guard (for a run under an instrument that slows every call down, never for a verdict)."""
    budget = profile_table.budget(profile)
    allowed = profile_table.hang_guard(budget, ob.time_scale, slack)
    grace = float(budget["grace_seconds"])

    def safe_progress(advance: int | None = None, total: int | None = None, note: str | None = None) -> None:
        if advance is None:
            advance = 1 if total is None and note is None else 0
        try:
            progress(advance, total, note)
        except Exception:
            pass  # a display problem must not change a check's result

    start, cpu0 = time.monotonic(), cpu_time()
    ctx = Context(profile=profile, seed=seed, budget=budget, deadline=start + allowed,
                  check_id=ob.id, progress=safe_progress)
    factor = float(budget["hang_guard_factor"])
    stopped = Result("unknown", f"stopped: still running {allowed + grace:g}s after it started, at "
                                f"its hang guard ({factor:g}x its nominal {allowed / factor:g}s plus "
                                f"{grace:g}s grace; {profile} profile); budget not completed")
    fired = [False]
    try:
        with _hard_stop(allowed + grace) as fired:
            value = ob.run(ctx)
        problem = _invalid(value)
        result = Result("error", problem) if problem else dataclasses.replace(value)
    except DeadlineExceeded:
        result = stopped
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit from a tool's main() is an error too
        result = Result("error", _summarise(exc))
    elapsed, cpu = time.monotonic() - start, cpu_time() - cpu0
    if fired[0] and result is not stopped:  # the check swallowed the stop: whatever it says is moot
        result = dataclasses.replace(stopped, detail=stopped.detail + f"; it then returned '{result.status}'")

    if result.status in PASSING and result.examples == 0:
        result = dataclasses.replace(result, status="unknown", detail="nothing was checked" + (
            f" [{result.detail}]" if result.detail else ""))
    if result.status == "refuted" and not result.counterexample:
        result.detail = (result.detail + " " if result.detail else "") + "(the check gave no counterexample)"
    if result.status == "unknown" and not result.detail.strip():
        result.detail = "the check gave no reason"
    result.seconds, result.cpu_seconds = elapsed, cpu
    result.id, result.engine, result.invariants = ob.id, ob.engine, list(ob.invariants)
    return result


def run_all(obligations: list[Obligation], profile: str, seed: int,
            listener: Listener | None = None) -> list[Result]:
    """Run `obligations` in order. Ctrl-C marks the current and the remaining ones unknown."""
    listener = listener or Listener()
    results: list[Result] = []
    count = len(obligations)
    for index, ob in enumerate(obligations):
        listener.started(ob, index, count)
        try:
            result = run_obligation(ob, profile, seed,
                                    lambda a, t, n, ob=ob: listener.progressed(ob, a, t, n))
            interrupt.check()       # a check that swallowed Ctrl-C / SIGTERM gives no verdict
        except KeyboardInterrupt:
            for j, rest in enumerate(obligations[index:], start=index):
                why = "interrupted by the user" if j == index else "not run: interrupted by the user"
                r = Result("unknown", why, id=rest.id, engine=rest.engine, invariants=list(rest.invariants))
                results.append(r)
                listener.finished(rest, r, j, count)
            break
        results.append(result)
        listener.finished(ob, result, index, count)
    return results
