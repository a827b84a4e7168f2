"""`ptspec explain ARG`: an obligation, a statement id, or a kernel function, from the registries.

ARG is looked up in this order:

1. an exact obligation id: the obligation, its kernel functions, and the statement of each id it
   checks;
2. a statement id (S2-RC, C-MMU-FAULT, KD-WORDS, ...): its statement, why, the kernel functions
   it constrains, and the obligations that check it (ptspec.spec.statements, the one registry);
3. a glob or substring of obligation ids: the one obligation it matches (several: the list, exit 2);
4. a kernel function name (stage2_unmap_walker, user_mem_abort, demand_page, ...): its twin(s) in
   impl (file:line), the statements that constrain it, and the obligations that judge it (those
   whose kernel_functions name it, and those that check a statement constraining it).

An impl twin is found by name, the way impl names them (DESIGN.md "Code conventions"): a function
or method with the kernel function's name (leading underscores aside), or one whose first
docstring line names it. Nothing found: one line on stderr, exit 2.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptspec.proofs.runner import budgets as profile_table
from ptspec.proofs.runner import registry
from ptspec.proofs.runner.registry import Obligation

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _statements():
    """The spec's statements registry module, loaded whole (ImportError/ValueError if broken)."""
    from ptspec.spec import statements
    statements.load_all()
    return statements


def statement_doc(sid: str) -> str:
    """The registry's text for a statement id, or a note in parentheses saying why there is none."""
    try:
        statements = _statements()
    except Exception as exc:            # a broken spec must not break `ptspec explain OBLIGATION`
        return f"(spec is not importable: {type(exc).__name__}: {exc})"
    try:
        return statements.get(sid).text()
    except KeyError:
        return "(not a check id the spec knows)"


@dataclass(frozen=True)
class Twin:
    """A Python function of impl that models a kernel function."""

    path: str          # relative to the repository (impl/pgtable/stage2_walkers.py)
    line: int
    qualname: str      # Class.method or function
    by: str            # "name" or "docstring"

    def __str__(self) -> str:
        note = "  (named in its docstring)" if self.by == "docstring" else ""
        return f"{self.path}:{self.line}  {self.qualname}{note}"


@functools.lru_cache(maxsize=1)
def _impl_functions() -> tuple:
    """(path, line, qualname, name, first docstring line) of every function and method of impl."""
    from ptspec import impl
    root = Path(impl.__path__[0])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = f"impl/{path.relative_to(root).as_posix()}"
        tree = ast.parse(path.read_text(), str(path))

        def visit(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(child) or ""
                    out.append((rel, child.lineno, prefix + child.name, child.name,
                                doc.strip().splitlines()[0] if doc.strip() else ""))
                    visit(child, prefix + child.name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, prefix + child.name + ".")
        visit(tree, "")
    return tuple(out)


def impl_twins(kernel_function: str) -> list[Twin]:
    """The impl functions that model ``kernel_function``: by name (exactly; failing that, leading
    underscores aside, as impl may drop them), then those whose first docstring line names it."""
    bare = kernel_function.lstrip("_")
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(kernel_function)}(?![A-Za-z0-9_])")
    exact, loose, by_doc = [], [], []
    for path, line, qualname, name, first in _impl_functions():
        if name == kernel_function:
            exact.append(Twin(path, line, qualname, "name"))
        elif bare and name.lstrip("_") == bare:
            loose.append(Twin(path, line, qualname, "name"))
        elif word.search(first):
            by_doc.append(Twin(path, line, qualname, "docstring"))
    return (exact or loose) + by_doc


def kernel_functions() -> set[str]:
    """Every kernel function a statement constrains or an obligation names."""
    names = {f for o in registry.all_obligations() for f in o.kernel_functions}
    try:
        names |= {f for s in _statements().all_statements() for f in s.constrains}
    except Exception:
        pass
    return names


def _profiles(ob: Obligation) -> str:
    return ", ".join(p for p in profile_table.PROFILE_NAMES if p in ob.profiles)


def explain_obligation(ob: Obligation) -> str:
    lines = [f"{ob.id}  ({ob.engine}; profiles: {_profiles(ob)})", "", ob.statement, ""]
    if ob.kernel_functions:
        lines += ["kernel functions: " + ", ".join(ob.kernel_functions), ""]
    for inv in ob.invariants:
        lines += [f"{inv}:", *("  " + l for l in statement_doc(inv).splitlines()), ""]
    return "\n".join(lines).rstrip()


def explain_statement(sid: str) -> str | None:
    """The text for a statement id (None when neither the registry nor any obligation knows it)."""
    covering = [o.id for o in registry.all_obligations() if sid in o.invariants]
    doc = statement_doc(sid)
    if not covering and doc.startswith("("):
        return None
    lines = [f"{sid}:", *("  " + l for l in doc.splitlines())]
    lines.append("checked by: " + (", ".join(covering) or "(no obligation yet)"))
    return "\n".join(lines)


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def explain_function(name: str) -> str | None:
    """Twins, constraining statements and judging obligations of a kernel function (None: unknown)."""
    if not _IDENT.match(name):
        return None
    twins = impl_twins(name)
    try:
        constraining = _statements().constraining(name)
    except Exception:
        constraining = []
    ids = {s.id for s in constraining}
    direct = [o for o in registry.all_obligations() if name in o.kernel_functions]
    via = [o for o in registry.all_obligations() if o not in direct and ids & set(o.invariants)]
    if not twins and not constraining and not direct:
        return None
    lines = [f"{name} (kernel function)", "", "impl twin:" if len(twins) == 1 else "impl twins:"]
    lines += [f"  {t}" for t in twins] or ["  (none in impl)"]
    lines += ["", "constrained by:"]
    lines += [f"  {s.id}  {_short(s.title)}" for s in constraining] or ["  (no statement names it)"]
    lines += ["", "judged by (obligations naming it):"]
    lines += [f"  {o.id}  ({o.engine})" for o in direct] or ["  (none)"]
    if via:
        lines += ["", "judged through the statements that constrain it:"]
        lines += [f"  {o.id}  ({o.engine}; {', '.join(sorted(ids & set(o.invariants)))})" for o in via]
    return "\n".join(lines)


def run(arg: str, print_plain: Callable[[str], None]) -> int:
    """The `ptspec explain ARG` command: 0 when ARG is explained, 2 when it is unknown or ambiguous."""
    ob = registry.get(arg)
    if ob:
        print_plain(explain_obligation(ob))
        return 0
    text = explain_statement(arg)
    if text:
        print_plain(text)
        return 0
    candidates = registry.select(arg)
    if len(candidates) == 1:
        print_plain(explain_obligation(candidates[0]))
        return 0
    if len(candidates) > 1:
        print(f"ptspec explain: {arg!r} matches {len(candidates)} obligations:", file=sys.stderr)
        for c in candidates:
            print(f"  {c.id}", file=sys.stderr)
        return 2
    text = explain_function(arg)
    if text:
        print_plain(text)
        return 0
    print(f"ptspec explain: {arg!r} is no obligation, statement id or kernel function ptspec knows",
          file=sys.stderr)
    return 2
