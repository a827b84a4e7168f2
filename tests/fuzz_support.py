"""The machinery of the input fuzz (tests/test_fuzz_inputs.py, test_fuzz_merge.py,
test_bounded_judgement.py): hypothesis settings (derandomized, no deadline, no database;
PTSPEC_FUZZ_HEAVY=N multiplies every example count by N), the CPU-time budget of one judgement (a
hang is interrupted by a CPU-time timer and fails the test), what a judgement may end in (a list of
violations or a one-line StateError), and the mutation of a valid JSON tree (keys deleted, values
of another type or hostile, optional keys added)."""


from __future__ import annotations

import copy
import os
import signal
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ptspec import spec

HEAVY = max(1, int(os.environ.get("PTSPEC_FUZZ_HEAVY", "1") or 1))
CPU_BUDGET = 5.0          # CPU seconds for one judgement of one (small) input; the samples take < 0.1
COUNTS: Counter = Counter()     # examples run per (reader, kind): printed at the end (-s)


@pytest.fixture(scope="module", autouse=True)
def print_counts():
    yield
    print("\nfuzz examples run:", dict(sorted(COUNTS.items())))


def fuzz_settings(n):
    return settings(max_examples=n * HEAVY, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


class OverBudget(Exception):
    """The CPU-time budget of one judgement ran out (a hang or a walk over an address range)."""


def _on_prof(signum, frame):
    raise OverBudget("the CPU-time budget ran out")


def within_budget(fn, *args, budget=CPU_BUDGET):
    """fn(*args), interrupted by OverBudget after `budget` seconds of this process's CPU time."""
    old = signal.signal(signal.SIGPROF, _on_prof)
    signal.setitimer(signal.ITIMER_PROF, budget)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def judged(fn, obj):
    """fn(obj) must return a list of Violations or raise StateError, within the budget."""
    try:
        found = within_budget(fn, obj)
    except spec.StateError as exc:
        text = str(exc)
        assert text and "\n" not in text and len(text) < 400, f"StateError message: {text!r}"
        return "StateError"
    assert isinstance(found, list) and all(isinstance(v, spec.Violation) for v in found), found
    for v in found:
        str(v)                  # a violation can be printed
    return "violations"


def plain(obj):
    """obj with tuples as lists (the samples hold some tuples; a mutation edits lists in place)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# -- mutation of a JSON tree ------------------------------------------------------------------

EXTREME = [0, 1, -1, 2, 3, 4, 7, 12, 16, 32, 52, 63, 64, 0xFFF, 0x1000, 0x200000, 1 << 31,
           (1 << 32) - 1, 1 << 32, 1 << 48, (1 << 48) - 0x1000, 1 << 52, (1 << 52) - 0x10000,
           1 << 62, 1 << 63, (1 << 63) - 1, (1 << 64) - 1, 1 << 64, (1 << 64) - 0x1000,
           -(1 << 63), -(1 << 64), 1 << 200, -(1 << 200)]
ODD_STRINGS = ["", "x", "0x", "0x1g", "1_2", " 12", "12 ", "\u0661\u0662", "-0x10", "0x1000",
               "18446744073709551615", "18446744073709551616", "0xffffffffffffffff", "-1", "1e3",
               "9" * 90, "0x" + "f" * 78, "nan", "true", "null", "arm64-stage2", "lguest-x86",
               "arm64-hyp-s1", "tlbi_ipa", "tlbi_vmid", "map", "access", "done", "\x00", "\ud800"]
PAGE_KEYS = ["0", "4096", "0x1000", "0X1000", "-4096", "4095", "18446744073709547520",
             "0xfffffffffffff000", "18446744073709551616", "9223372036854775808", " 4096",
             "4096 ", "+4096", "1e4", "", "\u0664\u0660\u0669\u0666", "0x", "00004096", "4_096"]

scalars = st.one_of(
    st.sampled_from(EXTREME), st.integers(-(1 << 70), 1 << 70), st.sampled_from(ODD_STRINGS),
    st.text(max_size=4), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["0", "a", "kind", "op", "4096"]),
                                                 inner, max_size=3)), max_leaves=8)


# optional keys the samples leave out (docs/interface.md, docs/mmu.md, docs/lguest.md), with
# values of the right shape: the "add" mutation puts one into an object
OPTIONAL = {
    "kernel_version": ["7.1.5", "6.6.63", "6.12.19", "6.3.8", "5.15.100", "5.14", "6.1"],
    "as_s1": [True], "idmap": [True], "cmo": [True], "has_fwb": [True], "pa_bits": [52],
    "memcache": [[0x7000_0000], []], "free_pages": [0, 1, (1 << 64) - 1], "pool_errors": [["ENOMEM"]],
    "tlb_log": [[["tlbi_range", 0, 1 << 40]], [["tlbi_ipa_nsh", 0x200000, 3]], [["icache", 0, 4096]]],
    "dirty_bitmap": [0, 1, (1 << 512) - 1, "0x" + "f" * 78], "written": [[0], [511]],
    "fetched": [[[0, 1, 0x40000000]], [[0, 512, 0]]], "ioremap": [[[0, 0, 1 << 52, True]]],
    "vmas": [[{"start": 0, "end": (1 << 64) - 1, "kind": "pfnmap", "pgoff": 0}]],
    "host_map": [[[0, 1 << 52, 0, "hugetlb", True]]], "ram_pfns": [[0, (1 << 52) - 1]],
    "kvm_page_refs": [{"4096": 1}], "dic": [True], "init_set": [True], "manual_protect": [True],
    "stack": [[0xC000_8000, (1 << 32) - 1], [0, 2]], "dead": ["killed"], "freed": [True],
    "warnings": [["x"]], "force_pte": [True], "race": [["zap", 0]], "races": [1 << 16],
}


def json_nodes(obj, path=()):
    yield path, obj
    if len(path) > 10:
        return
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            yield from json_nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from json_nodes(v, path + (i,))


def node_role(path):
    return tuple("*" if isinstance(k, int) or k.isdigit() or k.startswith("0x") else k for k in path)


def _retyped(old):
    """old as another JSON type: int <-> str <-> float <-> bool <-> None <-> list <-> dict."""
    if type(old) is int:
        return [str(old), hex(old) if old >= 0 else str(old), float(old) if abs(old) < 1 << 1000
                else 1e308, bool(old), None, [old], {"0": old}]
    if isinstance(old, str):
        return [len(old), None, [old], {old: old}, old.upper(), old + "x", old[:-1]]
    if isinstance(old, list):
        return [{str(i): v for i, v in enumerate(old)}, old[:-1], old + old[:1], old[::-1], [old],
                tuple(old), len(old)]
    if isinstance(old, dict):
        return [list(old.values()), list(old), {}, [old]]
    return [0, "0", [], {}]


@st.composite
def mutated(draw, base):
    """A copy of base with one to three mutations at nodes drawn by role."""
    obj = plain(base)
    for _ in range(draw(st.integers(1, 3))):
        roles = {}
        for path, value in json_nodes(obj):
            roles.setdefault(node_role(path), []).append((path, value))
        role = draw(st.sampled_from(sorted(roles, key=repr)))
        path, old = draw(st.sampled_from(roles[role]))
        action = draw(st.sampled_from(["replace", "retype", "delete", "rekey", "junk", "grow", "add"]))
        if action == "add" and isinstance(old, dict):
            key = draw(st.sampled_from(sorted(OPTIONAL)))
            new = dict(old)
            new[key] = copy.deepcopy(draw(st.one_of(st.sampled_from(OPTIONAL[key]), scalars)))
        elif action == "retype":
            new = draw(st.sampled_from(_retyped(old)))
        elif action == "junk":
            new = draw(junk)
        elif action == "grow" and isinstance(old, list):
            new = old + [draw(st.sampled_from(old)) if old else 0] * draw(st.sampled_from([1, 7, 600]))
        elif action == "rekey" and isinstance(old, dict) and old:
            k = draw(st.sampled_from(sorted(old, key=str)))
            new = dict(old)
            new[draw(st.sampled_from(PAGE_KEYS))] = new.pop(k) if draw(st.booleans()) else new[k]
        else:
            new = draw(scalars)
        if not path:
            obj = new
            continue
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        if action == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return obj


