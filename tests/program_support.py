"""Shared by the planted-bug tests: a printed counterexample program judges by itself.

``assert_program_judges(program, plant)``: the program (a refutation's ``ops``) ends in an
``assert``, raises AssertionError when executed as pasted (fresh namespace) with the defect
planted (``plant()`` a context manager), and runs clean on the impl as it is.
"""

import pytest


def assert_program_judges(program, plant):
    assert program, "the refutation printed no program"
    lines = program.rstrip().splitlines()
    assert lines[0].startswith(("from ptspec.", "import ")), program
    assert lines[-1].startswith("assert "), program
    with plant(), pytest.raises(AssertionError):
        exec(program, {})
    exec(program, {})            # the impl without the defect: the same program passes
