"""The symbolic executor of proofs/engines/z3/bv.py: faithful to Python ints, complete over paths, honest.

SymInt arithmetic is compared with Python's on concrete values (z3 evaluates the terms), the
explorer must find every path of small branching functions, and z3 ``unknown`` (a tiny rlimit),
contradictory assumptions or too many paths must never come back as proved.
"""

import random

import pytest
import z3

from ptspec.proofs.engines.z3 import bv as B
from ptspec.proofs.engines.z3 import explore as E


def _eval(term, env):
    """Value of a SymInt/int under concrete inputs, as a Python int (signed W-bit)."""
    if isinstance(term, int):
        return term
    subst = [(v, z3.BitVecVal(env[n], v.size())) for n, v in env["_vars"].items()]
    return z3.simplify(z3.substitute(term.e, *subst)).as_signed_long()


OPS = [
    ("and", lambda a, b: a & b), ("or", lambda a, b: a | b), ("xor", lambda a, b: a ^ b),
    ("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
    ("mask-not", lambda a, b: a & ~b & ((1 << 64) - 1)), ("shr", lambda a, b: a >> 13),
    ("shl", lambda a, b: (a << 7) | b), ("invert", lambda a, b: ~a),
    ("align", lambda a, b: (a & ~((1 << 21) - 1)) + (1 << 21)),
]


@pytest.mark.parametrize("name,op", OPS, ids=[n for n, _ in OPS])
def test_symint_matches_python_ints(name, op):
    rng = random.Random(7)
    inputs = {}
    a, b = B.sym("a", 64, inputs), B.sym("b", 64, inputs)
    ex = E.Explorer(rlimit=10**6, timeout_ms=1000)
    B._ACTIVE.append(ex)
    ex.side = []
    try:
        term = op(a, b)
    finally:
        B._ACTIVE.pop()
    for _ in range(50):
        va, vb = rng.getrandbits(64), rng.getrandbits(64)
        env = {"a": va, "b": vb, "_vars": inputs}
        assert _eval(term, env) == op(va, vb), (name, hex(va), hex(vb))


def test_explorer_enumerates_every_path():
    inputs = {}
    x = B.sym("x", 64, inputs)

    def body():
        out = 0
        if x & 1:
            out |= 1
        if x > 100:
            out |= 2
        if x & 1 and x < 50:       # feasible only with x odd and small
            out |= 4
        return out
    paths = E.Explorer(rlimit=10**7, timeout_ms=5000).run(body)
    assert sorted(p.value for p in paths) == [0, 1, 2, 3, 5]


def test_prove_and_refute_with_hex_counterexample():
    inputs = {}
    x = B.sym("x", 64, inputs)
    ok = E.prove(lambda: (x & 0xfff) < 0x1000, inputs, rlimit=10**7, timeout_ms=5000)
    assert ok.status == "proved" and ok.paths == 1
    bad = E.prove(lambda: {"low bits below 0x800": (x & 0xfff) < 0x800}, inputs,
                  rlimit=10**7, timeout_ms=5000)
    assert bad.status == "refuted"
    assert bad.counterexample["x"].startswith("0x")
    assert int(bad.counterexample["x"], 16) & 0xfff >= 0x800
    assert bad.counterexample["violated"] == ["low bits below 0x800"]


def test_a_raising_path_is_a_refutation():
    inputs = {}
    x = B.sym("x", 64, inputs)

    def body():
        if x == 0x1234:
            raise ValueError("boom")
        return True
    out = E.prove(body, inputs, rlimit=10**7, timeout_ms=5000)
    assert out.status == "refuted" and out.counterexample["x"] == "0x1234"
    assert "boom" in out.counterexample["raised"]


def test_overflow_of_the_int_model_is_not_a_proof():
    inputs = {}
    x = B.sym("x", 64, inputs)
    out = E.prove(lambda: (x << 100) >= 0, inputs, rlimit=10**7, timeout_ms=5000)
    assert out.status == "refuted"
    assert any("side condition" in v for v in out.counterexample["violated"])


def test_unknown_is_never_proved():
    inputs = {}
    x, y = B.sym("x", 64, inputs), B.sym("y", 64, inputs)
    # a hard query (multiplication) with an rlimit far too small to decide it
    out = E.prove(lambda: B.SymBool(z3.Not(z3.And(x.e * y.e == 0x123456789abcdef1, x.e > 1,
                                                    y.e > 1))),
                  inputs, rlimit=1, timeout_ms=5000)
    assert out.status == "unknown"
    assert "unknown" in out.detail


def test_contradictory_assumptions_check_nothing():
    inputs = {}
    x = B.sym("x", 64, inputs)
    out = E.prove(lambda: False, inputs, assume=[x.e < 0], rlimit=10**7, timeout_ms=5000)
    assert out.status == "unknown" and "contradictory" in out.detail


def test_too_many_paths_is_unknown():
    inputs = {}
    x = B.sym("x", 64, inputs)

    def body():
        n = 0
        for i in range(12):
            if x >> i & 1:
                n += 1
        return n >= 0
    out = E.prove(body, inputs, rlimit=10**7, timeout_ms=5000, max_paths=100)
    assert out.status == "unknown" and "paths" in out.detail


def test_symbolic_index_is_an_error_not_a_pass():
    inputs = {}
    x = B.sym("x", 64, inputs)
    with pytest.raises(B.SymbolicError):
        E.prove(lambda: [1, 2, 3][x & 1] > 0, inputs, rlimit=10**7, timeout_ms=5000)
