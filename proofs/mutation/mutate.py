"""Mechanical mutants of impl/: small syntactic changes to one function at a time.

Models the classic mutation operators, applied to the abstract syntax tree of each function (and
method) of an impl module:

* ``cmp``   a comparison flipped or loosened (``<`` to ``<=``, ``==`` to ``!=``, ...);
* ``bool``  ``and``/``or`` swapped, a ``not`` dropped;
* ``arith`` an operator swapped (``+``/``-``, ``&``/``|``, ``<<``/``>>``, ``^``/``|``);
* ``swap``  the operands of a non-commutative operator or comparison swapped;
* ``const`` an integer constant moved by one (off-by-one on bounds, shifts and masks), a boolean
  constant negated;
* ``drop``  a statement that is a bare call (``mm_ops.put_page(ptp)``) or an augmented assignment
  (``data.phys += granule``) removed;
* ``ret``   a returned value replaced by 0 (an errno swallowed, a descriptor lost).

A mutant is identified by (module, function qualname, operator, index): the index-th site of that
operator in that function, in source order, so the list is deterministic and a mutant can be named
on the command line. ``applied(mutant)`` compiles the mutated function in its module's namespace and
swaps it in for the original in every ``impl`` module (and class) that refers to it, and in every
loaded ``proofs`` module that imported it by name (a checker calling impl must call the mutant),
restoring all of them on exit. The checkers' own code (spec/, proofs/) is never changed.

Left out: mutations of module-level constants and class bodies other than methods (they are data,
checked by the z3 lemmas over the encoders), and mutations inside nested functions that are not
reached through their enclosing function (they are, since the enclosing function is recompiled).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Iterator

IMPL = "ptspec.impl."  # the package whose modules are mutated; mutant ids leave it out

CMP_FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
             ast.In: ast.NotIn, ast.NotIn: ast.In}
ARITH_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd,
               ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.BitXor: ast.BitOr,
               ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}
NON_COMMUTATIVE = (ast.Sub, ast.LShift, ast.RShift, ast.FloorDiv, ast.Mod)
OPERATORS = ("cmp", "bool", "arith", "swap", "const", "drop", "ret")


@dataclass(frozen=True)
class Mutant:
    module: str          # "ptspec.impl.pgtable.stage2_map"
    qualname: str        # "stage2_map_walker_try_leaf" or "KvmPgtable.map"
    operator: str
    index: int           # the index-th site of `operator` in the function
    line: int            # source line of the site
    what: str            # "`<` -> `<=`", "drop `mm_ops.put_page(ptp)`", ...

    @property
    def id(self) -> str:
        return f"{self.module.removeprefix(IMPL)}:{self.qualname}:{self.operator}{self.index}"


# -- finding mutation sites -------------------------------------------------------------------------

def _annotation_nodes(fn: ast.AST) -> set:
    """Every node inside a type annotation of fn (never evaluated: not a mutation site)."""
    out = set()
    for node in ast.walk(fn):
        anns = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            anns.append(node.returns)
            a = node.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                if arg is not None:
                    anns.append(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
        for ann in anns:
            if ann is not None:
                out.update(id(n) for n in ast.walk(ann))
    return out


def _sites(fn: ast.AST) -> Iterator[tuple[str, ast.AST, object, str]]:
    """(operator, node, detail, description) for every site in fn, in a fixed order."""
    skip = _annotation_nodes(fn)
    for node in ast.walk(fn):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in CMP_FLIPS:
                    yield "cmp", node, k, f"`{_opsym(op)}` -> `{_opsym(CMP_FLIPS[type(op)]())}`"
            if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
                # only ordering comparisons: swapping the operands of ==, != or is changes nothing
                yield "swap", node, None, f"operands of `{_opsym(node.ops[0])}` swapped"
        elif isinstance(node, ast.BoolOp):
            other = "or" if isinstance(node.op, ast.And) else "and"
            yield "bool", node, None, f"`{_opsym(node.op)}` -> `{other}`"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield "bool", node, None, "`not` dropped"
        elif isinstance(node, (ast.BinOp, ast.AugAssign)):
            op = node.op
            if type(op) in ARITH_SWAPS:
                yield "arith", node, None, f"`{_opsym(op)}` -> `{_opsym(ARITH_SWAPS[type(op)]())}`"
            if isinstance(node, ast.BinOp) and isinstance(op, NON_COMMUTATIVE):
                yield "swap", node, None, f"operands of `{_opsym(op)}` swapped"
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            yield "const", node, None, f"`{node.value}` -> `{not node.value}`"
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            yield "const", node, +1, f"`{node.value}` -> `{node.value + 1}`"
            if node.value:
                yield "const", node, -1, f"`{node.value}` -> `{node.value - 1}`"
        if isinstance(node, (ast.FunctionDef, ast.For, ast.While, ast.If, ast.With, ast.Try)):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None) or []
                for k, stmt in enumerate(block):
                    if _droppable(stmt):
                        yield "drop", node, (field, k), f"drop `{_short(stmt)}`"
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value == 0):
            yield "ret", node, None, f"`return {_short(node.value)}` -> `return 0`"


def _droppable(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        return True
    if isinstance(stmt, ast.AugAssign):
        return True
    if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], (ast.Subscript, ast.Attribute)):
        return True        # a store into a table or a field: dropping it loses a write
    return False


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).splitlines()[0]
    return text if len(text) <= 60 else text[:57] + "..."


def _opsym(op: ast.AST) -> str:
    return {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
            ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.And: "and",
            ast.Or: "or", ast.Add: "+", ast.Sub: "-", ast.BitAnd: "&", ast.BitOr: "|",
            ast.LShift: "<<", ast.RShift: ">>", ast.BitXor: "^", ast.Mult: "*",
            ast.FloorDiv: "//", ast.Mod: "%"}[type(op)]


def _apply(node: ast.AST, operator: str, detail) -> None:
    """Mutate `node` in place."""
    if operator == "cmp":
        node.ops[detail] = CMP_FLIPS[type(node.ops[detail])]()
    elif operator == "swap" and isinstance(node, ast.Compare):
        node.left, node.comparators[0] = node.comparators[0], node.left
    elif operator == "swap":
        node.left, node.right = node.right, node.left
    elif operator == "bool":                       # `not x` is handled by _UnwrapNot
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif operator == "arith":
        node.op = ARITH_SWAPS[type(node.op)]()
    elif operator == "const":
        node.value = (not node.value) if type(node.value) is bool else node.value + detail
    elif operator == "drop":
        field, k = detail
        getattr(node, field)[k] = ast.Pass()
    elif operator == "ret":
        node.value = ast.Constant(0)


class _UnwrapNot(ast.NodeTransformer):
    """Replace the one `not x` node marked for removal by `x`."""

    def __init__(self, target):
        self.target = target

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return node.operand if node is self.target else node


# -- enumerating functions --------------------------------------------------------------------------

def module_of(mutant_id: str) -> str:
    """The impl module a mutant id ("pgtable.walker:fn:op0") belongs to."""
    return IMPL + mutant_id.split(":", 1)[0]


def impl_modules() -> list[str]:
    """Every module of impl/ (``ptspec.impl.<area>.<module>``), in name order."""
    from ptspec import impl
    return sorted(m.name for m in pkgutil.walk_packages(impl.__path__, prefix=IMPL) if not m.ispkg)


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    yield f"{node.name}.{item.name}", item


def _module_tree(module: str) -> ast.Module:
    mod = importlib.import_module(module)
    return ast.parse(inspect.getsource(mod))


def enumerate_mutants(modules: list[str] | None = None) -> list[Mutant]:
    """Every mutant of every function of the given impl modules (all of impl/ by default)."""
    out = []
    for module in modules or impl_modules():
        for qualname, fn in _functions(_module_tree(module)):
            counts: dict[str, int] = {}
            for operator, node, _detail, what in _sites(fn):
                k = counts.get(operator, 0)
                counts[operator] = k + 1
                out.append(Mutant(module, qualname, operator, k, getattr(node, "lineno", fn.lineno),
                                  what))
    return out


# -- applying one -----------------------------------------------------------------------------------

def mutated_source(m: Mutant) -> str:
    """The source of the mutated function (for reports and for reviewing a survivor)."""
    return ast.unparse(_mutated_def(m))


def _mutated_def(m: Mutant) -> ast.FunctionDef:
    tree = _module_tree(m.module)
    fn = dict(_functions(tree))[m.qualname]
    fn = copy.deepcopy(fn)
    k = 0
    for operator, node, detail, _what in _sites(fn):
        if operator != m.operator:
            continue
        if k == m.index:
            if operator == "bool" and isinstance(node, ast.UnaryOp):
                fn = _UnwrapNot(node).visit(fn)
            else:
                _apply(node, operator, detail)
            ast.fix_missing_locations(fn)
            return fn
        k += 1
    raise LookupError(f"mutant {m.id} not found (the source changed?)")


def _compile(m: Mutant):
    """The mutated function object, compiled in its module's namespace (decorators applied)."""
    mod = importlib.import_module(m.module)
    fn = _mutated_def(m)
    fn.decorator_list = [d for d in fn.decorator_list if not (
        isinstance(d, ast.Name) and d.id in ("classmethod", "staticmethod", "property"))]
    wrapper = ast.Module(body=[fn], type_ignores=[])
    code = compile(wrapper, f"<mutant {m.id}>", "exec")
    namespace: dict = {}
    exec(code, mod.__dict__, namespace)
    return namespace[fn.name]


@contextlib.contextmanager
def applied(m: Mutant):
    """Swap the mutated function in for the original everywhere impl refers to it."""
    mod = importlib.import_module(m.module)
    cls_name, _, name = m.qualname.rpartition(".")
    owner = getattr(mod, cls_name) if cls_name else mod
    raw = owner.__dict__[name]
    new = _compile(m)
    if isinstance(raw, classmethod):
        new = classmethod(new)
    elif isinstance(raw, staticmethod):
        new = staticmethod(new)
    elif isinstance(raw, property):     # the getter was mutated (setters are plain methods here)
        new = property(new, raw.fset, raw.fdel, raw.__doc__)
    orig = raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw
    saved = []
    try:
        if cls_name:
            saved.append((owner, name, raw))
            setattr(owner, name, new)
        else:
            for other in _holders():
                for attr, value in list(vars(other).items()):
                    if value is orig:
                        saved.append((other, attr, value))
                        setattr(other, attr, new)
        yield new
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


def _holders() -> list:
    """Every module that may hold the function by name: all of impl, and the checkers (a check
    that did `from ptspec.impl.pgtable.pte import kvm_pte_to_phys` calls impl; it must call the mutant)."""
    import sys
    mods = [importlib.import_module(name) for name in impl_modules()]
    return mods + [mod for name, mod in list(sys.modules.items())
                   if mod is not None and name.startswith("ptspec.proofs.")]


def describe(m: Mutant) -> str:
    return f"{m.id} (line {m.line}): {m.what}"
