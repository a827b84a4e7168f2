"""No traceback, ever: hypothesis fuzz of every input ptspec reads from a user.

The readers: ``spec.check_any`` (raw states of the four kinds and step files ``{"pre", "step",
"post"}``, as ``ptspec check-state`` hands them), ``spec.check_state`` / ``spec.check_step`` called
by a program with dicts, and the ``ptspec check-state FILE`` command (JSON text); ``ptspec merge``
is fuzzed in test_fuzz_merge.py, and the inputs the fuzz found too costly are pinned in
test_bounded_judgement.py. Valid inputs (tests/state_samples.py, exported by the impl harnesses)
are mutated (tests/fuzz_support.py): keys deleted, values of another type or hostile (extreme
integers, odd strings, nested junk), page keys renamed or duplicated, table descriptors rewired to
other pages (cycles, shared tables), step records with random ops, args, ret and out. The only
acceptable outcomes are a list of violations or a StateError (API), exit 0/1 or exit 2 with one
line on stderr that is not an "internal error" (CLI), each within a CPU-time budget (a walk must
cost what the input holds, not what an address it names spans). The planted-bug tests show the
harness can fail.
"""


from __future__ import annotations

import copy
import json

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from ptspec import spec
from ptspec.proofs.cli import check_state as cli_check_state
from state_samples import KINDS, sample, step_sample

from fuzz_support import (  # noqa: F401 (print_counts: an autouse fixture)
    COUNTS, EXTREME, OverBudget, fuzz_settings, json_nodes, judged, mutated, node_role, plain,
    print_counts, scalars, within_budget)

# -- table rewiring: cycles, shared tables, descriptors pointing anywhere -----------------------

def _addr_bits(pa, ps):
    """A table descriptor's output-address field (64K: PA 51:48 in bits 15:12)."""
    bits = pa & ((1 << 48) - 1) & ~((1 << ps) - 1)
    return bits | (((pa >> 48) & 0xF) << 12 if ps == 16 else 0)


@st.composite
def rewired(draw, base):
    """A copy of an arm64 state (or of the pre/post of a step file) whose descriptors are rewritten
    to tables of other pages (an ancestor, itself, a sibling, a root, a page that is not there) or
    to drawn 64-bit values, roots reordered or repeated."""
    obj = plain(base)
    states = [obj[k] for k in ("pre", "post") if k in obj] or [obj]
    s = draw(st.sampled_from(states))
    pages = s["pages"]
    ps = int(s["page_shift"])
    keys = sorted(pages, key=str)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(keys))
        i = draw(st.integers(0, len(pages[key]) - 1))
        target = draw(st.one_of(st.sampled_from(keys).map(lambda k: int(k, 0) if isinstance(k, str) else k),
                                st.sampled_from([0, 1 << ps, (1 << 52) - (1 << ps), 1 << 47])))
        desc = draw(st.one_of(
            st.just(_addr_bits(target, ps) | 3),
            st.just(_addr_bits(target, ps) | 1),
            st.sampled_from([(1 << 64) - 1, (1 << 64) - 2, 3, 1, 2, 1 << 63]),
            st.integers(0, (1 << 64) - 1)))
        pages[key][i] = desc
    if draw(st.booleans()) and s["roots"]:
        r = s["roots"]
        s["roots"] = draw(st.sampled_from([r + r[:1], r[::-1], [int(keys[0], 0) if isinstance(keys[0], str)
                                                                  else keys[0]] * 2, r * 3]))
    return obj


def _lguest_pae_sample():
    """A booted PAE lguest guest after a demand fault (the samples hold a 2-level one)."""
    from ptspec.proofs.lguest import guest as lguest_guest
    from ptspec.proofs.lguest.harness import LguestHarness
    lg = LguestHarness("pae", npgdirs=2, rng_seed=1, coherent=True)
    lguest_guest.boot(lg, lguest_guest.GuestLayout("pae"))
    lg.step("fault", vaddr=0x1000, errcode=2)
    assert not lg.violations, lg.violations
    return copy.deepcopy(lg.raw)


_PAE = []


def lguest_base(fmt):
    if fmt == "2level":
        return sample("lguest-x86")
    if not _PAE:
        _PAE.append(_lguest_pae_sample())
    return copy.deepcopy(_PAE[0])


@st.composite
def lguest_rewired(draw, base):
    """An lguest state whose shadow table words point at other table pages (its own root, a
    sibling, a page not held, every bit set) and whose slots point at any table page."""
    obj = plain(base)
    tables = obj["tables"]
    keys = sorted(tables, key=str)
    pages = [int(k) for k in keys] + [0, 0x1000, 0xFFFF_F000]
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(keys))
        idx = draw(st.sampled_from([0, 1, 3, 511, 767, 1023, 1024]))
        word = draw(st.one_of(st.sampled_from(pages).map(lambda pa: pa | 0x67),
                              st.sampled_from([(1 << 32) - 1, (1 << 64) - 1, 0x83, 1 << 63]),
                              st.integers(0, (1 << 64) - 1)))
        tables[key] = dict(tables[key])
        tables[key][str(idx)] = word
    if draw(st.booleans()):
        slot = draw(st.integers(0, len(obj["pgdirs"]) - 1))
        obj["pgdirs"][slot] = dict(obj["pgdirs"][slot], pgdir=draw(st.sampled_from(pages)))
    return obj


@pytest.mark.parametrize("fmt", ["2level", "pae"])
def test_rewired_lguest_tables_are_judged_or_refused(fmt):
    """Shadow tables that share pages, point at their own root or at pages the host does not
    hold, or hold any word: violations (LG-RC, LG-SHADOW ...) or a StateError, never a hang."""
    @fuzz_settings(40)
    @given(st.data())
    def run(data):
        COUNTS[f"rewired lguest {fmt}"] += 1
        judged(spec.check_any, data.draw(lguest_rewired(lguest_base(fmt))))
    run()


# -- step records of every op, with arguments drawn hostile or well-typed -----------------------

@st.composite
def step_records(draw, kind):
    from ptspec.spec.lguest import step as lg_step
    from ptspec.spec.mmu import step as vm_step
    from ptspec.spec.stage2 import step as s2_step
    ints = st.one_of(st.sampled_from(EXTREME), st.integers(0, (1 << 64) - 1),
                     st.sampled_from(["0x1000", "4096", (1 << 64) - 1]))
    maybe = lambda s: st.one_of(s, scalars)                     # noqa: E731
    if kind == "vm":
        op = draw(st.sampled_from(sorted(vm_step.OPS) + ["nope"]))
        required, optional, _, out_keys = vm_step.OPS.get(op, ((), (), None, ()))
        args = {n: draw(maybe(ints)) for n in required}
        for n in optional:
            if draw(st.booleans()):
                args[n] = draw(maybe({"kind": st.sampled_from(vm_step.KINDS), "enomem": st.booleans(),
                                      "writable": st.booleans(), "races": st.integers(-1, 1 << 17),
                                      "race": st.tuples(st.sampled_from(vm_step.RACES), ints).map(list)}[n]))
        out = {}
        for k in out_keys:
            if draw(st.booleans()):
                out[k] = draw(maybe({"result": st.sampled_from(vm_step.RESULTS),
                                     "errno": st.sampled_from([0, -12, -14, 5]),
                                     "faults": st.lists(st.lists(maybe(st.integers(-2, 14)), max_size=5), max_size=3),
                                     "invalidated": st.one_of(st.none(), st.lists(ints, max_size=3)),
                                     "cleared": st.one_of(ints, st.just((1 << 600) - 1))}[k]))
        rec = {"op": op, "args": args, "ret": draw(maybe(st.sampled_from(
            [0, -12, -14, -22, True, False, None, *vm_step.RESULTS]))), "out": out,
            "dic": draw(maybe(st.booleans()))}
    elif kind == "lguest-x86":
        op = draw(st.sampled_from(sorted(lg_step.OPS) + ["nope"]))
        rec = {"op": op, "args": {n: draw(maybe(ints)) for n in lg_step.OPS.get(op, ())},
               "ret": draw(maybe(st.sampled_from([None, True, False, 0, -12, -22]))),
               "out": {"fail_alloc": draw(maybe(st.integers(0, 2))), "fail_gup": draw(maybe(st.integers(0, 2)))}}
    else:
        ops = ["init", "map", "destroy"] if kind == "arm64-hyp-s1" else sorted(s2_step.OP_ARGS)
        op = draw(st.sampled_from(ops + ["nope"]))
        args = {n: draw(maybe(ints)) for n in s2_step.OP_ARGS.get(op, ())}
        if op == "map" and draw(st.booleans()):
            args["force_pte"] = draw(maybe(st.booleans()))
        rec = {"op": op, "args": args, "ret": draw(maybe(st.sampled_from([0, -12, -22, -34, -11, 1]))),
               "out": draw(st.sampled_from([{}, {"young": True}, {"warnings": ["x"]}]) | st.builds(
                   lambda p, lv: {"pte": p, "level": lv}, ints, maybe(st.integers(-1, 4))))}
    if draw(st.integers(0, 4)) == 0:
        rec = draw(mutated(rec))
    return rec


# -- the API: check_any on states and step files -----------------------------------------------

def _fuzz_any(obj, label):
    COUNTS[label] += 1
    judged(spec.check_any, obj)


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_states_are_judged_or_refused(kind):
    @fuzz_settings(60)
    @given(st.data())
    def run(data):
        _fuzz_any(data.draw(mutated(sample(kind))), f"state {kind}")
    run()


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_step_files_are_judged_or_refused(kind):
    @fuzz_settings(40)
    @given(st.data())
    def run(data):
        _fuzz_any(data.draw(mutated(step_sample(kind))), f"step file {kind}")
    run()


@pytest.mark.parametrize("kind", KINDS)
def test_random_step_records_are_judged_or_refused(kind):
    @fuzz_settings(60)
    @given(st.data())
    def run(data):
        obj = step_sample(kind)
        obj["step"] = data.draw(step_records(kind))
        _fuzz_any(obj, f"step record {kind}")
    run()


@pytest.mark.parametrize("kind", ["arm64-stage2", "arm64-hyp-s1", "vm"])
def test_rewired_tables_are_judged_or_refused(kind):
    """Descriptors rewired to ancestors, to themselves, to siblings, to roots, to missing pages, or
    to any 64-bit value: a cycle or a table reached twice is a violation (S2-TREE / S1-TREE), not
    a hang or an exception."""
    @fuzz_settings(40)
    @given(st.data())
    def run(data):
        _fuzz_any(data.draw(rewired(sample(kind))), f"rewired {kind}")
        _fuzz_any(data.draw(rewired(step_sample(kind))), f"rewired step file {kind}")
    run()


TWO_STATE = {"arm64-stage2": "check_step", "arm64-hyp-s1": "check_hyp_step", "vm": "check_vm_step",
             "lguest-x86": "lguest_check_step"}


@pytest.mark.parametrize("kind", KINDS)
def test_programmatic_entry_points_take_any_dict(kind):
    """check_state(dict) and each kind's two-state check (check_step, check_hyp_step,
    check_vm_step, lguest_check_step) called with dicts, the pre-state not judged first (as a
    program may call them): the same promise as check_any."""
    two = getattr(spec, TWO_STATE[kind])
    one = spec.lguest_check_state if kind == "lguest-x86" else spec.check_state

    @fuzz_settings(25)
    @given(st.data())
    def run(data):
        obj = data.draw(st.one_of(mutated(step_sample(kind)), rewired(step_sample(kind))) if kind != "lguest-x86"
                        else mutated(step_sample(kind)))
        COUNTS[f"programmatic {kind}"] += 1
        judged(one, obj.get("pre") if isinstance(obj, dict) else obj)
        if isinstance(obj, dict) and all(k in obj for k in ("pre", "step", "post")):
            judged(lambda o: two(o["pre"], o["step"], o["post"]), obj)
    run()


SWEEP = ["delete", None, -1, [], True, (1 << 64) - 1, 1 << 47, "0x1000"]


def _sweep_cases(base):
    """(role, paths, action) of a systematic sweep: for every role of the base (a key path with
    indices and page keys as '*'), all its node paths (deepest first) and its first node alone,
    with every action of SWEEP."""
    roles = {}
    for path, _ in json_nodes(base):
        if path:
            roles.setdefault(node_role(path), []).append(path)
    return [(role, chosen, action)
            for role, paths in sorted(roles.items(), key=lambda rp: repr(rp[0]))
            for chosen in (sorted(paths, key=len, reverse=True), paths[:1]) for action in SWEEP]


def _swept(base, paths, action):
    obj = plain(base)
    for path in paths:
        parent = obj
        try:
            for k in path[:-1]:
                parent = parent[k]
            if action == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(action)
        except (KeyError, IndexError, TypeError):
            pass                 # a node an earlier edit of this sweep removed
    return obj


@pytest.mark.parametrize("make", [sample, step_sample], ids=["state", "step file"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_key_deleted_or_retyped_everywhere(kind, make):
    """A deterministic sweep: every key of every part (all vmas' "writable", every memslot's
    "npages", every descriptor list ...) deleted, or made null, -1, [], true, 2**64 - 1, 2**47 or
    "0x1000", at all its places
    at once and at its first place alone: a list of violations or a StateError each time."""
    base = make(kind)
    for role, paths, action in _sweep_cases(base):
        COUNTS[f"sweep {make.__name__} {kind}"] += 1
        try:
            judged(spec.check_any, _swept(base, paths, action))
        except AssertionError:
            raise
        except Exception as exc:           # noqa: BLE001 -- name the sweep case that escaped
            raise AssertionError(f"{role} -> {action!r}: {type(exc).__name__}: {exc}") from exc


# -- the CLI: check-state on JSON text ----------------------------------------------------------

TEXT_EDITS = [
    lambda t: t[: len(t) // 2], lambda t: t.replace("0", "1" * 41, 1), lambda t: "[" * 300 + t,
    lambda t: t.replace("false", "NaN", 1), lambda t: t.replace("0", "Infinity", 1),
    lambda t: "\ufeff" + t, lambda t: t.replace('"', "'", 1), lambda t: t + t, lambda t: "",
    lambda t: t.replace("{", '{"kind": "arm64-stage2", ', 1), lambda t: t.replace(",", ",,", 1),
    lambda t: t.replace("1", "-" + "9" * 39, 1), lambda t: t.replace("[", '["\\ud800", ', 1),
]


def _check_state_cli(tmp_path, payload, capsys):
    path = tmp_path / "in.json"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        path.write_text(payload, encoding="utf-8", errors="surrogatepass")
    code = within_budget(cli_check_state.run, str(path), print)
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 1, 2), code
    assert len(err) == 1, err
    assert "internal error" not in err[0] and "Traceback" not in err[0], err[0]
    if code == 2:
        assert err[0].startswith("ptspec check-state: ")
    return code


def test_check_state_cli_on_mutated_files(tmp_path, capsys):
    @fuzz_settings(40)
    @given(st.data())
    def run(data):
        kind = data.draw(st.sampled_from(KINDS))
        make = data.draw(st.sampled_from([sample, step_sample]))
        obj = data.draw(mutated(make(kind)))
        try:
            text = json.dumps(obj)
        except (TypeError, ValueError):
            return
        if data.draw(st.booleans()):
            text = data.draw(st.sampled_from(TEXT_EDITS))(text)
        COUNTS["check-state CLI"] += 1
        _check_state_cli(tmp_path, text if data.draw(st.integers(0, 9)) else text.encode()[:-3] + b"\xff",
                         capsys)
    run()


def _geometry_states():
    """Raw states over every granule, input size 32..52 and start level 0..3, with the root count
    the geometry needs (at most 16: more is a large input, not an edge), one root, and 16 roots (most of the combinations are not a KVM geometry), each
    mapping its first and last page: for stage 2 and hyp stage 1."""
    from test_spec_builder import S2
    for kind in ("arm64-stage2", "arm64-hyp-s1"):
        for ps in (12, 14, 16):
            for ia in (32, 33, 36, 39, 40, 42, 47, 48, 49, 52):
                for start in range(4):
                    span = 1 << ((ps - 3) * (4 - start) + 3 + ps - 3)
                    for nroots in (min(max(1, (1 << ia) // span), 16), 1, 16):
                        try:
                            b = S2(ps=ps, ia=ia, start=start, nroots=nroots, kind=kind,
                                   pa_bits=52 if ps == 16 and ia > 48 else 48)
                            b.page(0, 0x4000_0000).page((1 << ia) - (1 << ps), 0x8000_0000)
                        except (IndexError, KeyError, ValueError, OverflowError):
                            continue          # the builder cannot lay this one out: nothing to judge
                        yield b.raw()


def test_every_geometry_edge_is_judged_or_refused():
    """Start level and input size at and beyond their edges, for every granule: the state is
    judged (a geometry KVM never builds is S2-TREE / S1-TREE, not an exception) or refused."""
    clean = broken = 0
    for raw in _geometry_states():
        COUNTS["geometry"] += 1
        if judged(spec.check_any, raw) == "violations":
            found = spec.check_any(raw)
            clean, broken = clean + (not found), broken + bool(found)
    assert clean and broken, (clean, broken)     # KVM's geometries hold, the others do not


def test_budget_catches_a_planted_hang(monkeypatch):
    """The CPU-time budget can fail: a loader that loops forever is interrupted, never a pass."""
    from ptspec.spec.lguest import state as lg_state
    orig = lg_state.load_lguest_state

    def hang(raw):
        while True:
            pass
    monkeypatch.setattr("ptspec.spec.any_state.load_lguest_state", hang)
    with pytest.raises(OverBudget):
        within_budget(spec.check_any, sample("lguest-x86"), budget=0.5)
    assert orig is lg_state.load_lguest_state


def test_fuzz_catches_a_planted_crash(monkeypatch):
    """The state fuzz can fail: a loader that lets a TypeError out on a string start_level is
    found within this module's example budget."""
    from ptspec.spec.stage2 import state as s2_state
    orig = s2_state.parse_int

    def planted(value, where, lo=None, hi=None):
        if where == "start_level" and not isinstance(value, int):
            raise TypeError("planted")
        return orig(value, where, lo, hi)
    monkeypatch.setattr(s2_state, "parse_int", planted)

    @settings(fuzz_settings(60), phases=[Phase.generate])        # found is enough: no shrinking
    @given(st.data())
    def run(data):
        judged(spec.check_any, data.draw(mutated(sample("arm64-stage2"))))
    with pytest.raises(Exception) as info:
        run()
    assert "planted" in str(info.value) or any("planted" in str(e) for e in
                                               getattr(info.value, "exceptions", ()))
