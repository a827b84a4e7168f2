"""`ptspec check-state`: every part of every state kind judged through spec.check_any, and no input
ever ends in a traceback: one line on stderr naming what and where, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ptspec import spec
from ptspec.proofs.cli import main as cli
from state_fuzz import fuzz
from state_samples import KINDS, sample


def write(tmp_path, obj, name="s.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def run(tmp_path, obj):
    return cli.main(["check-state", write(tmp_path, obj)])


def _first_key(d):
    return next(iter(d))


def _bump_refcount(o):
    o["refcount"][_first_key(o["refcount"])] += 1
    return o


def _readonly_slot(o):            # the slot's leaves are writable: MS
    o["mmu"]["memslots"][0]["flags"] = 2
    return o


def _dirty_bit_cleared(o):        # the guest wrote gfn offset 3 while logging: DIRTY
    o["mmu"]["memslots"][0]["dirty_bitmap"] = 0
    return o


def _executable_everywhere(o):    # XN cleared in every descriptor: no fetch asked for it: MS-PERM
    o["pages"] = {pa: [w & ~(1 << 54) for w in words] for pa, words in o["pages"].items()}
    return o


def _lguest_extra_ref(o):
    o["refs"][_first_key(o["refs"])] += 1
    return o


def _warned(o):
    o["mmu"]["warnings"] = ["user_mem_abort: fault IPA beyond the IPA space"]
    return o


@pytest.mark.parametrize("kind, break_it, inv", [
    ("arm64-stage2", _bump_refcount, "S2-RC"),
    ("arm64-hyp-s1", _bump_refcount, "S1-RC"),
    ("vm", _bump_refcount, "S2-RC"),
    ("vm", _readonly_slot, "MS"),
    ("vm", _dirty_bit_cleared, "DIRTY"),
    ("vm", _executable_everywhere, "MS-PERM"),
    ("vm", _warned, "MMU-WARN"),
    ("lguest-x86", _lguest_extra_ref, "LG-RC"),
])
def test_violating_state_of_each_kind_exits_1_with_its_id(tmp_path, capsys, kind, break_it, inv):
    assert run(tmp_path, sample(kind)) == 0
    assert "no violation" in capsys.readouterr().err
    assert run(tmp_path, break_it(sample(kind))) == 1
    out = capsys.readouterr().out.splitlines()
    assert out and any(line.startswith(inv + " ") for line in out), out


def test_cli_and_library_agree_on_a_vm_state(tmp_path, capsys):
    o = _dirty_bit_cleared(_readonly_slot(sample("vm")))
    o["mmu"]["memslots"][0]["flags"] = 3        # read-only and logging: not logging (no DIRTY)
    want = [str(v) for v in spec.check_any(o)]
    assert want and run(tmp_path, o) == 1
    assert capsys.readouterr().out.splitlines() == want


def _set(path, value):
    def change(o):
        node = o
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return o
    return change


@pytest.mark.parametrize("kind, change, where", [
    ("vm", _set(("mmu",), 5), "mmu: expected an object"),
    ("vm", _set(("mmu", "memslots"), {}), "mmu.memslots: expected a list"),
    ("vm", _set(("mmu", "memslots", 0, "npages"), "x"), "mmu.memslots[0].npages"),
    ("vm", _set(("mmu", "memslots", 0, "written"), [1 << 20]), "mmu.memslots[0].written[0]"),
    ("vm", _set(("mmu", "memslots", 0, "fetched"), [[0]]), "mmu.memslots[0].fetched[0]"),
    ("vm", _set(("mmu", "dic"), 1), "mmu.dic: expected true or false"),
    ("vm", _set(("mmu", "host_map", 0), [1, 2]), "mmu.host_map[0]: expected a list of 5"),
    ("vm", _set(("mmu", "ram_pfns"), [0, [1]]), "mmu.ram_pfns[1]"),
    ("vm", _set(("mmu", "ioremap", 0, 3), 1), "mmu.ioremap[0][3]: expected true or false"),
    ("arm64-hyp-s1", _set(("mmu",), {"memslots": []}), "only an arm64-stage2 state has an mmu part"),
    ("arm64-stage2", _set(("page_shift",), "1_2"), "page_shift"),
    ("arm64-stage2", _set(("page_shift",), " 12 "), "page_shift"),
    ("arm64-stage2", _set(("page_shift",), "\u0661\u0662"), "page_shift"),
    ("arm64-stage2", _set(("tlb_log", 0), [["tlbi_ipa"], 1, 2]), "tlb_log[0]"),
    ("arm64-stage2", _set(("tlb_log", 0, 1), 10 ** 30), "tlb_log[0][1]"),
    ("lguest-x86", _set(("pgdirs",), 3), "pgdirs: expected a list"),
    ("lguest-x86", _set(("tables",), []), "tables: expected an object"),
    ("lguest-x86", _set(("refs",), "x"), "refs: expected an object"),
    ("lguest-x86", _set(("stack",), 7), "stack: expected"),
])
def test_malformed_part_is_one_line_naming_where(tmp_path, capsys, kind, change, where):
    assert run(tmp_path, change(sample(kind))) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "is not a valid state" in err, err
    assert where in err, err


@pytest.mark.parametrize("text, needle", [
    ("[" * 100_000, "nested more than"),
    ('{"kind": "arm64-stage2", "page_shift": ' + "9" * 5000 + "}", "integer literal of 5000"),
    ('{"kind": "arm64-stage2", "page_shift": NaN}', "NaN is not a JSON number"),
    ('{"kind": "arm64-stage2",', "not JSON: line 1"),
    ("\udcff", "not UTF-8"),
])
def test_unreadable_json_is_one_line(tmp_path, capsys, text, needle):
    p = tmp_path / "s.json"
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert cli.main(["check-state", str(p)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.splitlines()) == 1, err


def test_missing_file_and_directory(tmp_path, capsys):
    assert cli.main(["check-state", str(tmp_path / "missing.json")]) == 2
    assert cli.main(["check-state", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("cannot be read" in line for line in err)


def test_closed_stdin_and_stdin(tmp_path):
    exe = [sys.executable, "-m", "ptspec.proofs.cli.main", "check-state", "-"]
    closed = subprocess.run(exe, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            preexec_fn=lambda: __import__("os").close(0), timeout=120)
    assert closed.returncode == 2 and "Traceback" not in closed.stderr
    assert "standard input: cannot be read" in closed.stderr
    ok = subprocess.run(exe, input=json.dumps(sample("arm64-stage2")), capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and "no violation" in ok.stderr


def test_internal_error_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(spec, "check_any", lambda obj: 1 / 0)
    assert run(tmp_path, sample("arm64-stage2")) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("ptspec check-state: internal error in spec.check_any on "
                           f"{tmp_path / 's.json'}: ZeroDivisionError: division by zero")


def test_fuzzed_states_end_in_violations_or_state_error():
    """Mutated valid states of every kind (250 each, fixed seed): the loaders and invariants raise
    nothing but StateError. Before the loaders were made strict, 2000 such cases hit 26 kinds of
    internal exception (type x raising function)."""
    for kind in KINDS:
        outcomes, first = fuzz(kind, 250, 0, spec.check_any, spec.StateError)
        unexpected = {o: first[o][1] for o in outcomes if o not in ("StateError", "violations")}
        assert not unexpected, (kind, unexpected)
        assert outcomes["StateError"] and outcomes["violations"], (kind, outcomes)


def test_fuzzer_finds_a_planted_crash(monkeypatch):
    """The fuzz test can fail: a loader that lets a TypeError out is caught."""
    from ptspec.spec.mmu import state as mmu_state
    real = mmu_state._host_leaf

    def leaky(raw, i):
        if not isinstance(raw, list):
            raise TypeError("planted")
        return real(raw, i)
    monkeypatch.setattr(mmu_state, "_host_leaf", leaky)
    outcomes, _ = fuzz("vm", 400, 0, spec.check_any, spec.StateError)
    assert any(o.startswith("TypeError") for o in outcomes), outcomes
