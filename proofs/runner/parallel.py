"""Scaling `ptspec verify` out: shards for a CI matrix, and worker processes for `--jobs N`.

Sharding (`shard`): the selected obligations (after `--only` and the profile) are sorted by id and
shard i of n (1-based) takes those whose position in that sorted list is i-1 modulo n. The split
depends only on the set of selected ids, so every job of a CI matrix computes the same one; the
shards are disjoint and together they are the whole selection. A shard runs its obligations in
registry order.

Worker processes (`run_parallel`): N processes started with the 'spawn' context (a fresh
interpreter: nothing of the parent's threads, progress display or solver state is inherited). Each
worker imports the check modules of the registry the parent uses (`Registry.modules()`), then runs
obligations by id, one at a time, with `registry.run_obligation` in its main thread, so the
deadline, the SIGALRM hard stop and every honesty rule apply exactly as in-process. Results come
back as dicts over a pipe and are returned in the order of the input list, whatever the completion
order. Rules on top of the runner's:

- a worker that dies (a crash in C code, `os._exit`, the OOM killer) is an "error" result for the
  obligation it was running, and a fresh worker takes over the rest: nothing is lost silently;
- a worker still busy `KILL_MARGIN_SECONDS` after the hard stop should have fired (a C call that
  never returns to Python, where SIGALRM cannot interrupt it) is killed: "unknown", like a stop.
  The clock starts when the worker reports that it started the check (or, until then, when the check
  was handed to it, so a worker that hangs while starting is killed too);
- an obligation that is not registered in the worker (registered by code rather than by a check
  module) is an "error" saying so;
- Ctrl-C in the parent stops every worker; the running and the waiting obligations are "unknown".

Workers ignore SIGINT (the parent handles it) and, when `quiet_stdout` is set (`--ktap`), point
their file descriptor 1 at stderr so that nothing a check prints can mix with the parent's stdout.
SIGINT or SIGTERM to the parent (proofs/runner/interrupt.py) kills every worker at once; a worker
whose parent dies anyway (SIGKILL) is killed by the kernel (PR_SET_PDEATHSIG on Linux) and, where
that is not available, exits quietly at its next message to the parent.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

from ptspec.proofs.runner import budgets as profile_table
from ptspec.proofs.runner import interrupt
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Listener, Obligation, Result

KILL_MARGIN_SECONDS = 15.0  # after deadline + grace: time a worker gets before it is killed
PROGRESS_INTERVAL = 0.2  # seconds between progress messages a worker sends for one check
_RESULT_FIELDS = ("status", "detail", "examples", "counterexample", "rlimit", "seconds", "id", "engine",
                  "invariants", "cpu_seconds")


# ------------------------------------------------------------------------------------------ sharding

def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 1 <= i <= n; anything else is a ValueError saying what is wrong."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"shard must be i/n with whole numbers, like 2/4, not {text!r}")
    i, n = int(parts[0]), int(parts[1])
    if n < 1:
        raise ValueError(f"shard {text!r}: the number of shards n must be at least 1")
    if not 1 <= i <= n:
        raise ValueError(f"shard {text!r}: i must be between 1 and {n} (shards are numbered from 1)")
    return i, n


def shard_ids(ids: list[str], i: int, n: int) -> list[str]:
    """Shard i of n (1-based) of a list of ids: every n-th of the sorted ids, starting at the i-th;
    the order of `ids` kept. The one assignment every sharded command uses (verify's obligations,
    mutants' targets, check-kernel's geometries) and `ptspec merge` checks."""
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: want 1 <= i <= n")
    mine = {x for k, x in enumerate(sorted(set(ids))) if k % n == i - 1}
    return [x for x in ids if x in mine]


def shard(obligations: list[Obligation], i: int, n: int) -> list[Obligation]:
    """Shard i of n (1-based) of obligations by id (``shard_ids``); registry order kept."""
    mine = set(shard_ids([ob.id for ob in obligations], i, n))
    return [ob for ob in obligations if ob.id in mine]


# ------------------------------------------------------------------------------------------- workers

def result_to_dict(r: Result) -> dict[str, Any]:
    return {name: getattr(r, name) for name in _RESULT_FIELDS}


def result_from_dict(d: dict[str, Any]) -> Result:
    return Result(**{name: d[name] for name in _RESULT_FIELDS})


def _plain(value: Any) -> Any:
    """A counterexample reduced to JSON types (for one that cannot be pickled back to the parent)."""
    def default(v: Any) -> Any:
        return sorted(v, key=repr) if isinstance(v, (set, frozenset)) else str(v)

    return json.loads(json.dumps(value, default=default))


def _worker_main(conn: Connection, modules: list[str], profile: str, seed: int, quiet_stdout: bool) -> None:
    """A worker: import the check modules, then run obligations by id until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:       # the parent died before the line above took effect
        return
    if quiet_stdout:
        os.dup2(2, 1)
    with registry.isolated(modules):
        registry.load_all()
        try:
            while True:
                try:
                    msg = conn.recv()
                except EOFError:  # the parent went away
                    return
                if msg is None:
                    return
                index, ob_id = msg
                conn.send(("done", index, _run_one(conn, index, ob_id, profile, seed)))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return                   # the parent went away while the check ran: nobody to tell


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)        # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _run_one(conn: Connection, index: int, ob_id: str, profile: str, seed: int) -> dict[str, Any]:
    ob = registry.get(ob_id)
    if ob is None:
        loaded = "; ".join(f"{m}: {e.splitlines()[0]}" for m, e in registry.load_errors())
        return result_to_dict(Result(
            "error", f"obligation {ob_id} is not registered in the worker process (the worker imports "
                     f"only check modules: {', '.join(registry.check_modules()) or 'none'}"
                     + (f"; import errors: {loaded}" if loaded else "") + ")", id=ob_id))
    conn.send(("started", index))
    pending, last = [0], [0.0]

    def progress(advance: int, total: int | None, note: str | None) -> None:
        pending[0] += advance
        now = time.monotonic()
        if total is None and note is None and now - last[0] < PROGRESS_INTERVAL:
            return
        last[0] = now
        conn.send(("progress", index, pending[0], total, note))
        pending[0] = 0

    result = registry.run_obligation(ob, profile, seed, progress)
    if pending[0]:
        conn.send(("progress", index, pending[0], None, None))  # what the throttle held back
    d = result_to_dict(result)
    try:
        ForkingPickler.dumps(d)
    except Exception:
        d["counterexample"] = _plain(d["counterexample"])
    return d


@dataclass
class _Job:
    index: int
    ob: Obligation
    started: float
    kill_at: float


class _Worker:
    def __init__(self, ctx: Any, modules: list[str], profile: str, seed: int, quiet_stdout: bool) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, modules, profile, seed, quiet_stdout),
                                daemon=True, name="ptspec-worker")
        self.proc.start()
        child.close()
        self.job: _Job | None = None

    def stop(self, kill: bool = False) -> None:
        if kill and self.proc.is_alive():
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2.0)
        self.conn.close()


def _death(proc: Any) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_parallel(obligations: list[Obligation], profile: str, seed: int, jobs: int,
                 listener: Listener | None = None, quiet_stdout: bool = False) -> list[Result]:
    """Run `obligations` in up to `jobs` worker processes; results in the order of `obligations`."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number >= 1, not {jobs!r}")
    listener = listener or Listener()
    count = len(obligations)
    if not count:
        return []
    budget = profile_table.budget(profile)
    ctx = multiprocessing.get_context("spawn")
    modules = registry.check_modules()
    queue = collections.deque(enumerate(obligations))
    results: list[Result | None] = [None] * count
    workers: list[_Worker] = []

    def finish(job: _Job, result: Result) -> None:
        if not result.id:
            result.id, result.engine, result.invariants = job.ob.id, job.ob.engine, list(job.ob.invariants)
        results[job.index] = result
        listener.finished(job.ob, result, job.index, count)

    def dispatch(w: _Worker) -> None:
        index, ob = queue.popleft()
        allowed = profile_table.hang_guard(budget, ob.time_scale)
        now = time.monotonic()
        w.job = _Job(index, ob, now, now + allowed + float(budget["grace_seconds"]) + KILL_MARGIN_SECONDS)
        listener.started(ob, index, count)
        try:
            w.conn.send((index, ob.id))
        except OSError:
            pass  # a dead worker: found below through its sentinel

    def receive(w: _Worker) -> bool:
        """Handle what `w` sent; False when it is dead."""
        try:
            while w.conn.poll():
                kind, index, *rest = w.conn.recv()
                job = w.job
                if job is None or index != job.index:
                    continue
                if kind == "started":  # the watchdog counts from here, not from the dispatch
                    now = time.monotonic()
                    job.kill_at += now - job.started
                    job.started = now
                elif kind == "progress":
                    try:
                        listener.progressed(job.ob, *rest)
                    except Exception:
                        pass
                elif kind == "done":
                    w.job = None
                    finish(job, result_from_dict(rest[0]))
        except (EOFError, OSError):
            return False
        return w.proc.is_alive() or w.job is None

    try:
        for _ in range(min(jobs, count)):
            workers.append(_Worker(ctx, modules, profile, seed, quiet_stdout))
        while queue or any(w.job for w in workers):
            for w in workers:
                if w.job is None and queue:
                    dispatch(w)
            busy = [w for w in workers if w.job]
            timeout = max(0.0, min(w.job.kill_at for w in busy) - time.monotonic()) if busy else 0.0
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=min(timeout, 1.0))
            for k, w in enumerate(workers):
                if w.job is None:
                    continue
                alive = receive(w)
                job = w.job
                if job is None:  # its check is done
                    if not alive:  # and the worker died just after: replace it
                        w.stop(kill=True)
                        workers[k] = _Worker(ctx, modules, profile, seed, quiet_stdout) if queue else w
                    continue
                if not alive or not w.proc.is_alive():
                    w.proc.join(1.0)
                    why = (f"the worker process running it died ({_death(w.proc)}) after "
                           f"{time.monotonic() - job.started:.1f}s")
                    r = Result("error", why, seconds=time.monotonic() - job.started)
                elif time.monotonic() >= job.kill_at:
                    r = Result("unknown", f"stopped: its worker was still busy "
                                          f"{time.monotonic() - job.started:.1f}s after it started, past its "
                                          f"hang guard and the hard stop ({profile} profile); the worker "
                                          f"process was killed", seconds=time.monotonic() - job.started)
                    w.proc.kill()
                else:
                    continue
                w.job = None
                w.stop(kill=True)
                finish(job, r)
                workers[k] = _Worker(ctx, modules, profile, seed, quiet_stdout) if queue else w
            interrupt.check()
    except KeyboardInterrupt:
        for w in workers:
            w.stop(kill=True)
        now = time.monotonic()
        for w in workers:
            if w.job:
                finish(w.job, Result("unknown", "interrupted by the user", seconds=now - w.job.started))
                w.job = None
        while queue:
            index, ob = queue.popleft()
            finish(_Job(index, ob, now, now), Result("unknown", "not run: interrupted by the user"))
    finally:
        for w in workers:
            if w.proc.is_alive() or not w.conn.closed:
                w.stop(kill=w.job is not None)
    return [r for r in results if r is not None]
