"""What a refused lguest call must leave as it was, beyond the raw state the spec reads.

A call impl refuses (Python misuse: TypeError/ValueError) must refuse before it changes anything
(LG-C-ARGS). ``raw_state()`` holds what the spec judges; a half-done call could also have taken a
page off the shadow-table arena, used up an injected failure, drawn from the guest's random source
(which pgdir a new page table evicts) or marked guest memory as written. ``private_state`` is that
rest; a refusal is judged on both.
"""

from __future__ import annotations


def private_state(lg) -> dict:
    h = lg.host
    return {
        "arena": list(h.arena),
        "fail_next_alloc": h.fail_next_alloc,
        "fail_next_gup": h.fail_next_gup,
        "written": sorted(h.guest_mem),
        "rng": lg.rng.getstate(),
        "forced_random": list(lg.forced_random),
        "lguest_data": lg.lguest_data,
    }


def differences(before: dict, after: dict) -> list[str]:
    return [k for k in before if before[k] != after.get(k)]
