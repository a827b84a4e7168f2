"""Shared by the tests: a printed counterexample program judges by itself, and the seeded
lock-step program driven through a harness step by step.

``drawn_args(harness_factory, n)``: the arguments the seeded 4K/39 program of a subject draws for
each operation in its first ``n`` entries (every call taken as returning 0).

``editable(raw)``: a deep copy of a raw state whose pages are lists, for a test to edit (a
snapshot's pages are tuples).

``assert_program_judges(program, plant)``: the program (a refutation's ``ops``) ends in an
``assert``, raises AssertionError when executed as pasted (fresh namespace) with the defect
planted (``plant()`` a context manager), and runs clean on the impl as it is.
"""

import copy

import pytest

from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.program import Stage2Program


def assert_program_judges(program, plant):
    assert program, "the refutation printed no program"
    lines = program.rstrip().splitlines()
    assert lines[0].startswith(("from ptspec.", "import ")), program
    assert lines[-1].startswith("assert "), program
    with plant(), pytest.raises(AssertionError):
        exec(program, {})
    exec(program, {})            # the impl without the defect: the same program passes


def program_steps(h, page_shift, ia_bits, seed, steps):
    """Drive harness ``h`` through ``steps`` entries of the seeded lock-step program (the
    generator and chooser of ``s2.lockstep.*``), injecting the allocation failures it asks for;
    yields the violations of each operation step, after the program has seen its return value."""
    prog = Stage2Program(S.geometry(page_shift, ia_bits))
    ch = S.RandomChooser(seed)
    for _ in range(steps):
        e = prog.next(ch)
        if e[0] == "fail":
            h.fail_allocation(e[1])
            continue
        ret, found = h.step(e[1], **e[2])
        prog.returned(e, ret)
        yield found


def drawn_args(harness_factory, n):
    """op -> the argument dicts of its calls among the first ``n`` entries of the seeded (seed 0)
    lock-step program of ``harness_factory``'s subject on 4K/39, each call taken as returning 0
    (what the generator draws for that subject, without running it)."""
    from ptspec.proofs.stage2 import lockstep
    prog = lockstep.subject_program(S.geometry(12, 39), harness_factory)
    ch = S.RandomChooser(0)
    out = {}
    for _ in range(n):
        e = prog.next(ch)
        if e[0] == "op":
            out.setdefault(e[1], []).append(e[2])
        prog.returned(e, 0)
    return out


def editable(raw):
    """A deep copy of raw state ``raw`` with every page (and every VM state's stage-2 page) a list."""
    out = copy.deepcopy(raw)
    out["pages"] = {pa: list(words) for pa, words in out["pages"].items()}
    return out
