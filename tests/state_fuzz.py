"""A bounded, seeded fuzzer over raw states: mutate valid states and see what the checker does.

Each case takes a valid sample (tests/state_samples.py: a state, or a step file of two states and
a step record), applies one to three mutations to random
nodes of its JSON tree (replace with a value of another type or a hostile one, delete, wrap in a
list, turn an object into a list or the reverse, nudge a number, nest deeply) and hands it to a
judge. ``fuzz`` returns, per outcome, how many cases ended there: "violations" or "StateError" are
the only acceptable outcomes; anything else is counted under the exception's type and the first
case kept for the report.
"""

import random
from collections import Counter

from state_samples import sample

HOSTILE = [None, True, False, -1, 0, 1, 7, 1 << 64, -(1 << 64), 10 ** 5000, 1.5, float("nan"),
           "", "x", "0x", "0x1g", "1_2", " 12 ", "\u0661\u0662", "-0x10", "12", "0x1000",
           [], {}, [[]], {"a": 1}, [1, 2, 3], ["tlbi_ipa", 1, 2], "lguest-x86", "arm64-stage2"]


def _nodes(obj, path=()):
    """(path, value) of every node of a JSON tree, the root first."""
    yield path, obj
    if len(path) > 12:                  # do not walk into a deep nest an earlier mutation made
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _deep(depth):
    v = 0
    for _ in range(depth):
        v = [v]
    return v


def _new_value(rng, old):
    r = rng.random()
    if r < 0.45:
        return rng.choice(HOSTILE)
    if r < 0.6 and type(old) is int and old.bit_length() < 1000:
        return rng.choice([old + 1, old - 1, old * 2, -old, old << 20, str(old), hex(old)])
    if r < 0.7:
        return [old]
    if r < 0.8 and isinstance(old, dict):
        return list(old.values())
    if r < 0.85 and isinstance(old, list):
        return {str(i): v for i, v in enumerate(old)}
    if r < 0.9:
        return _deep(rng.choice([50, 5000]))
    return rng.choice(HOSTILE)


def _shape(path):
    """A path with list indices and numeric object keys replaced by '*': the node's role."""
    return tuple("*" if isinstance(k, int) or k.isdigit() else k for k in path)


def mutate(obj, rng):
    """One mutation of obj in place (the root is never deleted); returns obj, or a new root.

    The node is drawn by role first (every key of every part equally likely, not every descriptor
    of every table page), then uniformly among the nodes of that role."""
    roles = {}
    for path, value in _nodes(obj):
        roles.setdefault(_shape(path), []).append((path, value))
    path, old = rng.choice(roles[rng.choice(sorted(roles, key=repr))])
    if not path:
        return _new_value(rng, old)
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if rng.random() < 0.2:
        del parent[key]
    else:
        parent[key] = _new_value(rng, old)
    return obj


def fuzz(kind, cases, seed, judge, state_error, make=sample, part=None):
    """Run `cases` mutated copies of the `kind` sample (``make(kind)``: a state by default, or
    state_samples.step_sample for step files) through judge; Counter of outcomes, and the first
    mutated input of each unexpected outcome. ``part``: mutate only that key of the input (a step
    file's "step" record), not the whole."""
    rng = random.Random(f"{seed}:{kind}:{make.__name__}:{part}")
    outcomes, first = Counter(), {}
    for _ in range(cases):
        obj = make(kind)
        for _ in range(rng.randint(1, 3)):
            if part is None:
                obj = mutate(obj, rng)
            else:
                obj[part] = mutate(obj[part], rng)
        _judge_one(obj, judge, state_error, outcomes, first)
    return outcomes, first


def _judge_one(obj, judge, state_error, outcomes, first) -> None:
    """Judge one mutated input and count its outcome: a violation list, a StateError, or what
    escaped (the first input of each escape kind is kept in ``first``)."""
    try:
        found = judge(obj)
    except state_error:
        outcomes["StateError"] += 1
        return
    except Exception as exc:          # noqa: BLE001 -- counting what escapes is the point
        outcome = f"{type(exc).__name__} in {_where(exc)}"
        detail = f"{type(exc).__name__}: {str(exc)[:160]}"
    else:
        if isinstance(found, list):
            outcomes["violations"] += 1
            return
        outcome = detail = f"returned {type(found).__name__}"
    outcomes[outcome] += 1
    first.setdefault(outcome, (obj, detail))


def _where(exc):
    """module:function of the innermost frame that raised exc."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    parts = code.co_filename.replace("\\", "/").split("/")
    return f"{'/'.join(parts[-2:])}:{code.co_name}"


INTS = [0, 1, 2, 3, 7, 0x1000, 0x1fff, 0x200000, 0x4000_0000, 0x1_0000_0000, 0x1_0000_5000,
        (1 << 32) - 1, 1 << 40, (1 << 48) - 0x1000, 1 << 52, (1 << 63) + 5, (1 << 64) - 1]
RETS = [0, -12, -22, -34, -11, 1, 5, True, False, None, "done", "stuck", "mmio", "error"]


def _op_record(kind, rng):
    """A step record of `kind` with a random op of that kind and random (well-typed or not)
    arguments, ret and out."""
    from ptspec.spec.lguest import step as lg_step
    from ptspec.spec.mmu import step as vm_step
    from ptspec.spec.stage2 import step as s2_step
    ints = lambda: rng.choice(INTS)            # noqa: E731
    if kind == "vm":
        op = rng.choice(sorted(vm_step.OPS))
        required, optional, _, out_keys = vm_step.OPS[op]
        args = {n: ints() for n in required}
        for n in optional:
            if rng.random() < 0.7:
                args[n] = {"kind": rng.choice(vm_step.KINDS), "enomem": rng.random() < 0.5,
                           "writable": rng.random() < 0.5, "races": rng.choice([0, 1, 3]),
                           "race": [rng.choice(vm_step.RACES), ints()]}[n]
        out = {}
        for k in out_keys:
            out[k] = {"result": rng.choice(vm_step.RESULTS), "errno": rng.choice([0, -12, -14]),
                      "faults": [[rng.choice([4, 7, 11, 13]), rng.randint(-1, 3), rng.random() < 0.5,
                                  rng.choice([0, 1, -14])] for _ in range(rng.randint(0, 3))],
                      "invalidated": rng.choice([None, sorted([ints(), ints()])]),
                      "cleared": rng.choice([0, 1, 0xff, (1 << 600) - 1])}[k]
        return {"op": op, "args": args, "ret": rng.choice(RETS), "out": out,
                "dic": rng.random() < 0.3}
    if kind == "lguest-x86":
        op = rng.choice(sorted(lg_step.OPS))
        return {"op": op, "args": {n: ints() for n in lg_step.OPS[op]}, "ret": rng.choice(RETS),
                "out": {"fail_alloc": rng.choice([0, 1]), "fail_gup": rng.choice([0, 1])}}
    ops = ["init", "map", "destroy"] if kind == "arm64-hyp-s1" else sorted(s2_step.OP_ARGS)
    op = rng.choice(ops)
    args = {n: ints() for n in s2_step.OP_ARGS[op]}
    if op == "map" and kind == "arm64-stage2":
        args["force_pte"] = rng.random() < 0.5
    out = rng.choice([{}, {"pte": ints()}, {"pte": ints(), "level": rng.randint(0, 3)},
                      {"young": rng.random() < 0.5}])
    return {"op": op, "args": args, "ret": rng.choice([r for r in RETS if type(r) is int]),
            "out": out}


def op_fuzz(kind, cases, seed, judge, state_error, make):
    """Run `cases` step files of `kind` (the sample's pre and post, ``make(kind)``) whose step is a
    random op of the kind with random arguments, ret and out: every op of every kind, boundary
    integers. Counter of outcomes, as ``fuzz``."""
    rng = random.Random(f"ops:{seed}:{kind}")
    outcomes, first = Counter(), {}
    for _ in range(cases):
        obj = make(kind)
        obj["step"] = _op_record(kind, rng)
        _judge_one(obj, judge, state_error, outcomes, first)
    return outcomes, first
