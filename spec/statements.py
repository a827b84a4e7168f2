"""The statements registry: every invariant and contract id any check reports, declared once.

Models nothing of the kernel itself: it is the table of contents of spec/. Each id a check can
report (S2-*, S1-*, C-*, C-HYP-*, C-MMU-*, MS, MS-PERM, DIRTY, PROGRESS, MMU-WARN, HOST-MM, KD-*, LG-*,
LG-C-*, KERNEL-WARN) is a ``Statement``: what must hold, why it matters, and the kernel functions
it constrains. There is one way in, with one text layout everywhere (the S2-RC docstring is the
model)::

    ID: one-line summary.

    Statement: what must hold, precisely.

    Why: what breaks when it does not.

    Constrains: the kernel functions it judges, with what each must do.

``@statement("S2-RC", constrains=(...))`` on the function that evaluates the id reads that text
from the function's docstring; ``declare(TEXT, constrains=(...), area=...)`` registers the same
layout for an id that has no evaluator of its own (a contract judged inside a shared function, the
kernel-differential ids judged by comparing impl with the kernel's C, the harness-level ids).
``constrains`` names the kernel functions machine-readably; the prose after "Constrains:" may say
more, but names each of them.

Registration happens when a spec module is imported; ``load_all()`` imports every module of
ptspec.spec, so ``get``, ``all_statements`` and ``constraining`` see them all. Declaring an id twice
is an error (the same declaration seen again, e.g. a function re-executed in its own module, is
not a second one). Standard library only.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
from dataclasses import dataclass

_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$")
_SECTION = re.compile(r"^(Statement|Why|Constrains)\b([^:\n]*):[ \t]*", re.M)


@dataclass(frozen=True)
class Statement:
    """One invariant or contract: its id, area, text, and the kernel functions it constrains."""

    id: str
    area: str                       # arch, stage2, hyp, mmu, lguest: the spec folder it lives in
    title: str                      # the one-line summary
    statement: str                  # what must hold
    why: str                        # what breaks when it does not
    constrains: tuple               # kernel function names
    detail: str = ""                # the "Constrains:" prose: what each function must do
    kernel_versions: str = ""       # a note when the statement differs between kernel versions
    source: str = ""                # module.function that evaluates it, or the declaring module

    def text(self) -> str:
        """The statement as a reviewer reads it: summary, Statement, Why, Constrains."""
        parts = [textwrap.fill(f"{self.id}: {self.title}", 100)]
        if " ".join(self.statement.split()) != self.title:     # else the summary is the statement
            parts.append(f"Statement: {self.statement}")
        parts += [f"Why: {self.why}", "Constrains: " + (self.detail or ", ".join(self.constrains))]
        if self.kernel_versions:
            parts.append(f"Kernel versions: {self.kernel_versions}")
        return "\n\n".join(parts)


def parse(sid: str, doc: str | None) -> dict:
    """Split a docstring in the registry's layout into title, statement, why and detail.

    The first paragraph is ``ID: summary``; then "Statement:", "Why:" and "Constrains:" paragraphs
    (a header may carry a parenthesis, as in "Statement (R = [A, E) the walked range):"). Without a
    "Statement:" paragraph, the text between the summary and the first header is the statement, or
    else the summary itself (a one-paragraph statement)."""
    if not doc or not doc.strip():
        raise ValueError(f"{sid}: no text (a statement needs 'ID: summary', Statement, Why, "
                         f"Constrains)")
    doc = inspect.cleandoc(doc)
    first, _, rest = doc.partition("\n\n")
    if not first.startswith(f"{sid}:") and not first.startswith(f"{sid} "):
        raise ValueError(f"{sid}: the text must open with {sid!r} and a summary, not {first[:60]!r}")
    title = " ".join(first[len(sid):].lstrip(" :").split())
    sections = {"Statement": [], "Why": [], "Constrains": []}
    heads = list(_SECTION.finditer(rest))
    body = rest[:heads[0].start()] if heads else rest
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(rest)
        qualifier = m.group(2).strip()
        sections[m.group(1)].append((qualifier + ": " if qualifier else "") + rest[m.end():end])
    # a summary paragraph with nothing but Why and Constrains after it is the whole statement
    statement = " ".join(sections["Statement"]) or body.strip() or first[len(sid):].lstrip(" :")

    def flat(text):
        return "\n".join(line.rstrip() for line in text.strip().splitlines())

    return {"title": title, "statement": flat(statement), "why": flat(" ".join(sections["Why"])),
            "detail": flat(" ".join(sections["Constrains"]))}


class Registry:
    """Statements by id. ``add`` refuses a second declaration of an id."""

    def __init__(self):
        self._by_id: dict[str, Statement] = {}
        self._origin: dict[str, str] = {}

    def add(self, st: Statement, origin: str) -> Statement:
        if not _ID.match(st.id):
            raise ValueError(f"{st.id!r} is not a statement id (capitals, digits and dashes: S2-RC)")
        if not st.statement or not st.why:
            raise ValueError(f"{st.id}: a statement needs a Statement and a Why ({origin})")
        if not st.constrains or not all(isinstance(f, str) and f.isidentifier() for f in st.constrains):
            raise ValueError(f"{st.id}: constrains must name at least one kernel function ({origin})")
        named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", st.detail))
        missing = [f for f in st.constrains if st.detail and f not in named]
        if missing:
            raise ValueError(f"{st.id}: the Constrains prose does not name {', '.join(missing)} "
                             f"({origin})")
        seen = self._origin.get(st.id)
        if seen is not None:
            if seen == origin:       # the same declaration seen again (its function re-executed)
                return self._by_id[st.id]
            raise ValueError(f"{st.id} is declared twice: in {seen} and in {origin}")
        self._by_id[st.id] = st
        self._origin[st.id] = origin
        return st

    def get(self, sid: str) -> Statement:
        try:
            return self._by_id[sid]
        except KeyError:
            raise KeyError(f"no statement {sid!r} (ptspec explain lists none by that id)") from None

    def __contains__(self, sid) -> bool:
        return sid in self._by_id

    def statements(self) -> list[Statement]:
        return sorted(self._by_id.values(), key=lambda s: (s.area, s.id))

    def constraining(self, kernel_function: str) -> list[Statement]:
        return [s for s in self.statements() if kernel_function in s.constrains]


REGISTRY = Registry()


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[parts.index("spec") + 1] if "spec" in parts[:-1] else parts[-1]


def statement(sid: str, *, constrains, kernel_versions: str = "", registry: Registry | None = None):
    """Decorator: register the function's docstring as the statement of ``sid``; returns it as is."""
    if isinstance(constrains, str):
        raise TypeError(f"{sid}: constrains is a tuple of kernel function names, not {constrains!r}")

    def register(fn):
        text = parse(sid, fn.__doc__)
        origin = f"{fn.__module__}.{fn.__qualname__}"
        (registry or REGISTRY).add(Statement(sid, _area(fn.__module__), constrains=tuple(constrains),
                                             kernel_versions=kernel_versions, source=origin, **text),
                                   origin)
        fn.statement_id = sid
        return fn
    return register


def declare(text: str, *, constrains, area: str | None = None, kernel_versions: str = "",
            registry: Registry | None = None) -> Statement:
    """Register a statement that has no evaluator of its own; ``text`` has the docstring layout
    (``ID: summary``, Statement, Why, Constrains). The area is the declaring module's."""
    if isinstance(constrains, str):
        raise TypeError(f"constrains is a tuple of kernel function names, not {constrains!r}")
    caller = sys._getframe(1)
    module = caller.f_globals.get("__name__", "?")
    sid = inspect.cleandoc(text).split(":", 1)[0].split()[0]
    origin = f"{module}:{caller.f_lineno}"
    st = Statement(sid, area or _area(module), constrains=tuple(constrains),
                   kernel_versions=kernel_versions, source=module, **parse(sid, text))
    return (registry or REGISTRY).add(st, origin)


_loaded = False


def load_all() -> Registry:
    """Import every module of ptspec.spec (registration happens on import); the full registry."""
    global _loaded
    if not _loaded:
        package = importlib.import_module(__name__.rpartition(".")[0])
        for m in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            importlib.import_module(m.name)
        _loaded = True
    return REGISTRY


def get(sid: str) -> Statement:
    """The statement of an id (KeyError when no spec module declares it)."""
    return load_all().get(sid)


def all_statements() -> list[Statement]:
    """Every registered statement, by area and id."""
    return load_all().statements()


def constraining(kernel_function: str) -> list[Statement]:
    """The statements whose Constrains name this kernel function."""
    return load_all().constraining(kernel_function)


__all__ = ["Statement", "Registry", "REGISTRY", "statement", "declare", "parse", "load_all", "get",
           "all_statements", "constraining"]
