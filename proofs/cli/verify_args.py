"""What `ptspec verify` and `ptspec list` refuse before running anything, and `--skip AREA`;
the whole-number arguments of verify and mutants (``count_arg``).

Models: the command line's contract, and the frame a run happens in (``guarded``: report paths,
stale reports, signals). Refused with one line and exit 2: an `--only` pattern that
matches no obligation of the profile (even alongside patterns that do), an empty `--json` or
`--junit` path, the same file for both reports, a `--skip` area no obligation belongs to.

An obligation's *area* is the folder of proofs/ its check module lives in (``proofs/kernel/checks.py``
registers area ``kernel``), or an ``area`` attribute on the obligation where one is set: a property
of the obligation, so a check family added later in that folder is left out too. `--skip AREA`
leaves out every obligation of the area; the summary and the JSON report list them with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Iterable

from ptspec.proofs.report import atomic
from ptspec.proofs.runner import interrupt
from ptspec.proofs.runner.registry import Obligation, matches

# why an area is one a run may need to leave out
AREA_NEEDS = {
    "kernel": "needs a Linux kernel source tree, Debian's package tools to fetch one, and a C "
              "compiler (proofs/kernel)",
}


def area_of(ob: Obligation) -> str | None:
    """The obligation's area: its ``area`` attribute, else proofs/<area>/ of its check module."""
    explicit = getattr(ob, "area", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    parts = (getattr(ob.run, "__module__", None) or "").split(".")
    if len(parts) >= 4 and parts[:2] == ["ptspec", "proofs"]:
        return parts[2]
    return None


def patterns(only: Iterable[str] | None) -> list[str]:
    """The --only patterns, split at commas, blanks dropped."""
    return [p.strip() for text in only or () for p in text.split(",") if p.strip()]


def unmatched(pats: list[str], obligations: list[Obligation]) -> list[str]:
    """The patterns that match none of `obligations`."""
    return [p for p in pats if not any(matches(ob.id, p) for ob in obligations)]


def output_problem(json_path: str | None, junit_path: str | None) -> str | None:
    """Why the report paths cannot be used, or None."""
    for flag, path in (("--json", json_path), ("--junit", junit_path)):
        if path is not None and not path.strip():
            return f"{flag} wants a file name, not an empty string"
    if json_path and junit_path and _same_file(json_path, junit_path):
        return f"--json and --junit name the same file ({json_path}): one report would overwrite the other"
    return None


def prepare_reports(json_path: str | None, junit_path: str | None) -> str | None:
    """Before a run that writes reports (verify, check-kernel, mutants): why the paths cannot be
    used, or None once any report an earlier run left at them is removed (it must not outlive
    this run, whatever becomes of it)."""
    problem = output_problem(json_path, junit_path)
    if problem:
        return problem
    for path in (json_path, junit_path):
        if path:
            try:
                atomic.remove_stale(path)
            except OSError as exc:
                return f"cannot write {path}: {exc.strerror or exc}"
    return None


def guarded(json_path: str | None, junit_path: str | None, verify: Callable[[], int | None]) -> int:
    """Run verify() after checking the report paths and removing a stale report there, under the
    run's signal handling (proofs/runner/interrupt.py): Ctrl-C or SIGTERM ends it with 128 + the
    signal number, never 0, and no report claiming success."""
    with interrupt.handling():
        try:
            problem = prepare_reports(json_path, junit_path)
            if problem:
                print(f"ptspec verify: {problem}", file=sys.stderr)
                return 2
            code = verify()
        except KeyboardInterrupt:
            interrupt.acknowledge()
            code = None
        interrupt.acknowledge()
        if interrupt.received() or code is None:
            print(f"ptspec verify: interrupted by {interrupt.name() or 'SIGINT'}", file=sys.stderr)
            return interrupt.exit_code()
        return code


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def skip_problem(areas: list[str], obligations: list[Obligation]) -> str | None:
    """Why a --skip area is not one the registry knows, or None."""
    known = sorted({a for a in map(area_of, obligations) if a})
    bad = [a for a in areas if a not in known]
    if bad:
        return (f"--skip {bad[0]}: no obligation belongs to area {bad[0]!r} "
                f"(areas: {', '.join(known) or 'none'})")
    return None


def split_skipped(selected: list[Obligation], areas: list[str]) -> tuple[list[Obligation], list[dict]]:
    """(the obligations to run, the ones left out as {"id", "area", "why"})."""
    keep, left_out = [], []
    for ob in selected:
        area = area_of(ob)
        absent = ob.needs() if ob.needs is not None else None
        if area in areas:
            why = f"left out by --skip {area}" + (f": {AREA_NEEDS[area]}" if area in AREA_NEEDS else "")
            left_out.append({"id": ob.id, "area": area, "why": why})
        elif absent:
            left_out.append({"id": ob.id, "area": area, "why": f"optional input absent: {absent}"})
        else:
            keep.append(ob)
    return keep, left_out


def skipped_line(left_out: list[dict]) -> str:
    """One summary line for the obligations left out (empty when none)."""
    if not left_out:
        return ""
    by_area: dict[str, list[str]] = {}
    for s in left_out:
        by_area.setdefault(s["area"], []).append(s["id"])
    parts = [f"{len(ids)} of area {area} ({', '.join(ids)})" for area, ids in by_area.items()]
    reasons = sorted({s["why"] for s in left_out})
    return f"skipped {len(left_out)} obligation(s): " + "; ".join(parts) + " -- " + "; ".join(reasons)


AUTO_JOBS_MAX = 8       # `--jobs auto`: one worker per available CPU, at most this many


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def jobs_arg(flag: str):
    """An argparse type for `--jobs`: a whole number >= 1, or `auto` (one worker per available
    CPU, at most AUTO_JOBS_MAX); anything else is refused in one line (exit 2)."""
    count = count_arg(flag)

    def parse(text: str) -> int:
        if text.strip().lower() == "auto":
            return min(available_cpus(), AUTO_JOBS_MAX)
        try:
            return count(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{flag} wants a whole number >= 1 or auto, not "
                                             f"{text!r}") from None
    return parse


def count_arg(flag: str):
    """An argparse type for a whole number >= 1 (refused in one line, exit 2): `--jobs` of verify
    and mutants, `--sample` of mutants."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} wants a whole number >= 1, not {text!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{flag} wants a whole number >= 1, not {n}")
        return n
    return parse
