"""The statements registry (ptspec.spec.statements) and `ptspec explain ID|FUNCTION`.

Every id a check can report is found programmatically — the invariants every obligation declares,
and every id-shaped string in spec/ and proofs/ (the first argument of a Violation, a Difference,
an id passed on to a shared evaluator, the "HOST-MM ..." prefix of a counterexample line) — and
must be declared once in spec/ with a statement, a why and the kernel functions it constrains.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ptspec import spec
from ptspec.proofs.cli import explain
from ptspec.proofs.cli import main as cli
from ptspec.proofs.runner import registry
from ptspec.spec import statements
from ptspec.spec.lguest.check import lguest_explain

ROOT = Path(__file__).resolve().parent.parent
# the id families checks report (MS-PERM too); MS, DIRTY and PROGRESS (no dash) come in through
# the obligations
ID = re.compile(r"^(?:S1|S2|C|LG|KD|MMU|MS|HOST|KERNEL)(?:-[A-Z0-9]+)+$")
REPORTERS = {"Violation", "Difference", "_v"}


def ids_in_source(text: str) -> dict[str, str]:
    """{id: how it was found} for every id-shaped string of one module's source."""
    found = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            arg = node.args[0]
            if name in REPORTERS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found[arg.value] = f"{name}(...)"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
            token = node.value.split(" ", 1)[0]
            for cand in (node.value, token):
                if ID.match(cand):
                    found.setdefault(cand, "string")
    return found


def reported_ids() -> dict[str, str]:
    found = {}
    for layer in ("spec", "proofs"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            for sid, how in ids_in_source(path.read_text()).items():
                found.setdefault(sid, f"{path.relative_to(ROOT)}: {how}")
    return found


@pytest.fixture(scope="module")
def obligations():
    assert registry.load_all() == []
    return registry.all_obligations()


@pytest.fixture(scope="module")
def registered():
    return {s.id: s for s in statements.all_statements()}


def test_every_obligation_id_is_registered(obligations, registered):
    declared = {i for o in obligations for i in o.invariants}
    assert len(declared) >= 67
    assert sorted(declared - set(registered)) == []


def test_every_reported_id_is_registered(registered):
    found = reported_ids()
    # the scan sees the families it must: a Violation id, a Difference id, a forwarded id
    assert {"S2-RC", "KD-WORDS", "C-ARGS", "LG-C-ARGS", "HOST-MM", "KERNEL-WARN", "MMU-WARN",
            "C-HYP-VA", "C-MMU-FAULT"} <= set(found)
    missing = {sid: where for sid, where in found.items() if sid not in registered}
    assert missing == {}


def test_the_scan_catches_an_undeclared_id(registered):
    planted = ('from ptspec.spec.violation import Violation\n'
               'def s2_new(state):\n'
               '    return [Violation("S2-NOPE", "a new check nobody stated", {})]\n'
               'def forwarded(state):\n'
               '    return helper(state, "LG-C-NOPE")\n')
    found = ids_in_source(planted)
    assert found == {"S2-NOPE": "Violation(...)", "LG-C-NOPE": "string"}
    assert not set(found) & set(registered)


def test_every_statement_is_complete(registered, obligations):
    assert len(registered) >= 68
    covered = {i for o in obligations for i in o.invariants}
    for sid, st in registered.items():
        assert st.id == sid and st.area in ("arch", "stage2", "hyp", "mmu", "lguest"), sid
        assert st.title and st.statement.strip() and st.why.strip(), sid
        assert st.constrains and all(f.isidentifier() for f in st.constrains), sid
        text = st.text()
        assert text.startswith(f"{sid}: ") and "Why:" in text and "Constrains:" in text, sid
        # every statement but KERNEL-WARN (reported inside the lock-step obligations' C-* runs) is
        # declared by at least one obligation
        assert sid in covered or sid == "KERNEL-WARN", sid


def test_moved_statements_live_in_spec(registered):
    for sid, module in {"HOST-MM": "mmu", "C-ARGS": "stage2", "LG-C-ARGS": "lguest",
                        "KD-RET": "stage2", "KD-WARN": "stage2", "PROGRESS": "mmu",
                        "C-MMU-TLB": "mmu", "KERNEL-WARN": "stage2"}.items():
        st = registered[sid]
        assert st.area == module and st.source.startswith("ptspec.spec."), sid


def test_existing_lookups_read_the_registry(registered):
    assert spec.explain("S2-RC") == registered["S2-RC"].text()
    assert spec.explain("KD-PAGES") == registered["KD-PAGES"].text()
    assert lguest_explain("LG-C-ARGS") == registered["LG-C-ARGS"].text()
    with pytest.raises(KeyError):
        lguest_explain("S2-RC")           # not an lguest statement
    with pytest.raises(KeyError):
        spec.explain("S9-NOPE")
    assert statements.constraining("stage2_unmap_walker")
    assert "S2-RC" in {s.id for s in statements.constraining("stage2_unmap_walker")}


# -- the registration mechanism ------------------------------------------------------------------

GOOD = """X-ONE: a summary.

Statement: what must hold.

Why: what breaks.

Constrains: kvm_thing (what it must do), other_thing.
"""


def test_declaring_an_id_twice_raises():
    reg = statements.Registry()
    statements.declare(GOOD, constrains=("kvm_thing", "other_thing"), area="stage2", registry=reg)
    with pytest.raises(ValueError, match="declared twice"):
        statements.declare(GOOD, constrains=("kvm_thing",), area="stage2", registry=reg)

    @statements.statement("X-TWO", constrains=("kvm_thing",), registry=reg)
    def first(state):
        """X-TWO: a summary.

        Statement: it holds. Why: n/a

        Why: it matters.
        """
    with pytest.raises(ValueError, match="X-TWO is declared twice"):
        @statements.statement("X-TWO", constrains=("kvm_thing",), registry=reg)
        def second(state):
            """X-TWO: another.

            Statement: it holds.

            Why: it matters.
            """
    # the real registry refuses a second S2-RC from anywhere else too
    with pytest.raises(ValueError, match="S2-RC is declared twice"):
        statements.declare(GOOD.replace("X-ONE", "S2-RC"), constrains=("kvm_thing",), area="stage2")
    assert statements.get("S2-RC").source.endswith("s2_rc")


@pytest.mark.parametrize("text, constrains, error", [
    (GOOD.replace("Why: what breaks.\n", ""), ("kvm_thing",), "needs a Statement and a Why"),
    (GOOD, (), "at least one kernel function"),
    (GOOD, ("kvm_missing",), "does not name kvm_missing"),
    (GOOD, "kvm_thing", "tuple of kernel function names"),
    ("a summary without its id.\n\nWhy: x.", ("kvm_thing",), "is not a statement id"),
])
def test_incomplete_statements_are_refused(text, constrains, error):
    with pytest.raises((ValueError, TypeError), match=error):
        statements.declare(text, constrains=constrains, area="stage2", registry=statements.Registry())


def test_a_docstring_must_open_with_its_id():
    with pytest.raises(ValueError, match="must open with 'X-THREE'"):
        @statements.statement("X-THREE", constrains=("kvm_thing",), registry=statements.Registry())
        def evaluator(state):
            """Operations that change nothing.

            Why: x.
            """
    with pytest.raises(ValueError, match="no text"):
        @statements.statement("X-THREE", constrains=("kvm_thing",), registry=statements.Registry())
        def undocumented(state):
            return []


def test_parse_reads_the_model_layout():
    st = statements.get("C-MAP")
    assert st.title.startswith("kvm_pgtable_stage2_map installs the largest leaves")
    assert st.statement.startswith("(R = [A, E) the walked range") and "-EAGAIN" in st.statement
    assert st.why.startswith("a leaf smaller than necessary")
    assert "kvm_pgtable_walk" in st.constrains and "(range and -ERANGE)" in st.detail


# -- ptspec explain ------------------------------------------------------------------------------

def test_explain_answers_every_id(registered, obligations, capsys):
    for sid in sorted(registered):
        assert cli.main(["explain", sid]) == 0, sid
        out = capsys.readouterr().out
        assert out.startswith(f"{sid}:") and "Why:" in out and "checked by:" in out, sid
        if sid != "KERNEL-WARN":
            assert "(no obligation yet)" not in out, sid


def test_explain_answers_every_kernel_function_with_a_twin(obligations, capsys):
    names = explain.kernel_functions()
    with_twin = {n: explain.impl_twins(n) for n in sorted(names)}
    with_twin = {n: t for n, t in with_twin.items() if t}
    assert len(with_twin) >= 100
    for name, twins in with_twin.items():
        assert cli.main(["explain", name]) == 0, name
        out = capsys.readouterr().out
        assert out.startswith(f"{name} (kernel function)"), name
        for t in twins:
            assert f"{t.path}:{t.line}" in out, name
            # the line really is the twin's definition
            line = (ROOT / t.path).read_text().splitlines()[t.line - 1]
            assert re.search(rf"def {re.escape(t.qualname.rsplit('.', 1)[-1])}\(", line), (name, line)


@pytest.mark.parametrize("name, path, qualname, statement", [
    ("stage2_unmap_walker", "impl/pgtable/stage2_walkers.py", "stage2_unmap_walker", "S2-RC"),
    ("kvm_pgtable_stage2_map", "impl/pgtable/stage2_map.py", "kvm_pgtable_stage2_map", "C-MAP"),
    ("user_mem_abort", "impl/mmu/fault.py", "user_mem_abort", "C-MMU-FAULT"),
    ("demand_page", "impl/lguest/shadow.py", "ShadowOps.demand_page", "LG-C-DEMAND"),
])
def test_explain_function_shows_twin_statements_and_checks(obligations, capsys, name, path,
                                                           qualname, statement):
    assert cli.main(["explain", name]) == 0
    out = capsys.readouterr().out
    twin = next(t for t in explain.impl_twins(name) if t.by == "name")
    assert twin.path == path and twin.qualname == qualname
    assert f"{path}:{twin.line}  {qualname}" in out
    assert f"  {statement}  " in out
    judged = [o.id for o in obligations if name in o.kernel_functions]
    assert judged and all(f"  {o}  (" in out for o in judged)


def test_twins_keep_the_kernels_underscore_levels():
    # the kernel has kvm_pgtable_walk, _kvm_pgtable_walk and __kvm_pgtable_walk; so does impl
    for name in ("kvm_pgtable_walk", "_kvm_pgtable_walk", "__kvm_pgtable_walk"):
        by_name = [t.qualname for t in explain.impl_twins(name) if t.by == "name"]
        assert by_name == [name], (name, by_name)
    # a kernel name impl spells without its leading underscores is still found
    assert [t.qualname for t in explain.impl_twins("__kvm_pgtable_stage2_init")
            if t.by == "name"] == ["kvm_pgtable_stage2_init"]


def test_explain_function_lists_checks_through_its_statements(obligations, capsys):
    # kvm_pgd_pages: named by S2-TREE and C-INIT, so every obligation checking those judges it
    assert cli.main(["explain", "kvm_pgd_pages"]) == 0
    out = capsys.readouterr().out
    assert "S2-TREE" in out and "C-INIT" in out
    via = [o.id for o in obligations if {"S2-TREE", "C-INIT"} & set(o.invariants)
           and "kvm_pgd_pages" not in o.kernel_functions]
    assert via and all(f"  {o}  (" in out for o in via)


@pytest.mark.parametrize("arg", ["S2-NOPE", "no_such_kernel_function", "not a name"])
def test_explain_unknown_exits_2_with_one_line(obligations, capsys, arg):
    assert cli.main(["explain", arg]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and arg in captured.err


def test_explain_keeps_obligation_and_pattern_lookups(obligations, capsys):
    assert cli.main(["explain", "s2.lockstep.4k-39"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("s2.lockstep.4k-39  (random") and "S2-RC:" in out
    assert cli.main(["explain", "s2.lockstep.*"]) == 2              # several: listed on stderr
    assert "s2.lockstep.4k-48" in capsys.readouterr().err
    assert cli.main(["explain", "mmu.units.host.mem*"]) == 0         # exactly one
    assert capsys.readouterr().out.startswith("mmu.units.host.memslot")
