"""Per-profile budgets for `ptspec verify`: the one table every check reads through `ctx.budget`.

A profile trades time for coverage:

- ``quick``: seconds in total, for an edit-compile-check loop;
- ``default``: about a minute in total, for every CI run;
- ``deep``: long, for nightly runs and before a release.

Budgets are counted in things that do not depend on the machine's speed: examples, steps, states,
exploration depth, replays, z3 resource units. They are caps, not targets: a check stops early when
it has covered its space (an exhaustive exploration that finishes, a z3 query that is proved).
Wall-clock time is only a hang guard: a check still running ``hang_guard_factor`` times its nominal
time (``check_seconds``, what it takes on a reference machine) is stopped and reported unknown. The
factor is large, so a machine several times slower gives the same verdicts; a check that completes
its budget late is not "unknown" for being slow. When a check needs a new knob, add the key to
every profile here (a test keeps the profiles' keys identical) rather than hard-coding a number in the
check.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

PROFILE_NAMES: tuple[str, ...] = ("quick", "default", "deep")
DEFAULT_PROFILE = "default"

# key -> (quick, default, deep), with what the key means.
_TABLE: dict[str, tuple[tuple[float | int, float | int, float | int], str]] = {
    "check_seconds": ((10, 30, 900), "nominal wall-clock time of one check on a reference machine "
                                     "(not a verdict input; the hang guard is a multiple of it)"),
    "hang_guard_factor": ((6, 10, 4), "hang guard: ctx.deadline is start + check_seconds x time_scale "
                                      "x this; a check still running then is stopped (unknown)"),
    "grace_seconds": ((2, 5, 60), "after the hang guard, a check that did not return is stopped"),
    "hypothesis_examples": ((20, 200, 3000), "runs per hypothesis state machine (max_examples)"),
    "steps": ((12, 30, 80), "operations per random sequence (stateful step count)"),
    "lockstep_runs": ((60, 400, 3000), "runs of `steps` operations per stage-2 lock-step (impl, and "
                                       "the kernel's C), plain seeded random choices"),
    "exhaustive_depth": ((2, 3, 5), "operations per sequence in bounded exhaustive exploration"),
    "stage2_exhaustive_depth": ((2, 5, 6), "operations per sequence in the stage-2 exhaustive "
                                           "exploration (s2.exhaustive.*)"),
    "exhaustive_window_pages": ((4, 8, 16), "pages in the IPA window that exhaustive exploration uses"),
    "z3_rlimit": ((5_000_000, 20_000_000, 400_000_000), "z3 per-query resource limit ('rlimit'); "
                                                        "z3's clock is the hang guard"),
    "crosshair_max_iterations": ((100, 200, 5_000), "CrossHair iterations (paths tried) per contract "
                                                    "/ diff pair (a diff splits them between its two "
                                                    "argument orders)"),
    "crosshair_smt_rlimit": ((1_000_000, 5_000_000, 50_000_000), "z3 resource limit ('rlimit') per "
                                                                 "solver query inside CrossHair"),
    "shrink_replays": ((60, 200, 1000), "replays delta debugging may spend cutting a found "
                                        "violation's trace to the shortest one that still fails"),
    "mutant_examples": ((20, 100, 1000), "hypothesis examples spent trying to kill one mutant"),
    "call_cpu_seconds": ((2, 2, 2), "CPU seconds one call into a kernel tree's C code may run "
                                    "before it is judged not to return (C-RETURNS; the longest "
                                    "measured: 8 ms); the same in every profile, a verdict input"),
    "impl_call_cpu_seconds": ((10, 10, 10), "CPU seconds one operation of impl's Python may run "
                                            "before it is judged not to return (C-RETURNS, "
                                            "C-MMU-RETURNS, LG-C-RETURNS; the longest measured: "
                                            "0.3 s, a set_owner on 16K/47); the same in every "
                                            "profile"),
}

# The kernel's C operations return in microseconds to milliseconds (the longest measured in whole
# check-kernel runs, 8 ms of CPU): 2 s is 250 times that. impl's Python is about a hundred times
# slower (the longest operation measured in the default profile's checks and in 80-step lock-step
# runs, a set_owner over a 16K/47 window, 0.3 s): 10 s is 35 times that, and a loop still costs
# only seconds to find. One value each for every profile, read by the harnesses and the C guard,
# which do not know the profile; a slower machine gives the same verdicts.
CALL_CPU_SECONDS: float = float(_TABLE["call_cpu_seconds"][0][0])
IMPL_CALL_CPU_SECONDS: float = float(_TABLE["impl_call_cpu_seconds"][0][0])

_INDEX = {name: i for i, name in enumerate(PROFILE_NAMES)}


def budget(profile: str) -> Mapping[str, float | int]:
    """The budget of `profile` as a read-only mapping (checks must not change the shared table)."""
    if profile not in _INDEX:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    i = _INDEX[profile]
    return MappingProxyType({key: values[i] for key, (values, _) in _TABLE.items()})


def describe() -> list[tuple[str, tuple[float | int, ...], str]]:
    """Every budget key with its value per profile (in PROFILE_NAMES order) and its meaning."""
    return [(key, values, meaning) for key, (values, meaning) in _TABLE.items()]


def hang_guard(profile_budget: Mapping[str, float | int], time_scale: float = 1.0,
               slack: float = 1.0) -> float:
    """Seconds after which a check of this budget is stopped as hung (grace not included)."""
    return (float(profile_budget["check_seconds"]) * float(profile_budget["hang_guard_factor"])
            * time_scale * slack)
