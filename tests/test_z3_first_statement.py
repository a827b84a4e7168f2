"""A z3 refutation names the first statement (in the body's order) that any input breaks, whatever
model z3 would have picked: the counterexample of a check does not change with what the process
built before it (z3 orders the arguments of the terms it simplifies by creation id)."""

import z3

from ptspec.proofs.engines.z3.bv import sym
from ptspec.proofs.engines.z3.explore import prove


def _refute(order, junk):
    for i in range(junk):                       # terms built earlier in the process
        z3.simplify(z3.BitVec(f"junk{junk}_{i}", 8) + z3.BitVec(f"junk{junk}_{i + 1}", 8))
    inputs = {}
    x = sym("x", 8, inputs)
    props = {"A: x is not 5": x != 5, "B: x is not 7": x != 7, "C: x is below 200": x < 200}

    def body():
        return {k: props[k] for k in order}
    return prove(body, inputs, rlimit=1_000_000, what="t")


def test_the_first_breakable_statement_is_named_whatever_came_before():
    for junk in (0, 1, 17, 300):
        for order in (("A", "B", "C"), ("B", "C", "A"), ("C", "A", "B")):
            names = [n for o in order for n in ("A: x is not 5", "B: x is not 7",
                                                "C: x is below 200") if n.startswith(o)]
            out = _refute(names, junk)
            assert out.status == "refuted"
            assert names[0] in out.counterexample["violated"], (junk, order, out.counterexample)
