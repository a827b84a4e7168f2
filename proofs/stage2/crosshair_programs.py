"""Runnable counterexamples of the CrossHair obligations: the refuting call, then the failing
``assert``.

CrossHair reports a refuted contract as text ("false when calling f(9, False) (which returns
...)") and a behaviour difference as the arguments and both results. The builders here turn
either into a program a reviewer pastes into Python:

* ``contract_program``: the imports, the arguments of the refuting call as assignments, the call
  (the impl function itself where the target only forwards to it, ``DIRECT``), and the
  postcondition of the target's docstring as an ``assert`` with ``_`` standing for the result;
* ``diff_program``: the arguments, both sides of the pair (the impl side and the spec side of
  ``proofs/stage2/crosshair_targets.py``), and ``assert got == want``.

An exception in the call fails the program's check too (``minimize.judged_program``).
"""

from __future__ import annotations

import ast
import inspect
import re

from ptspec.proofs.engines.minimize import judged_program

# target -> (import, call) of the impl function a contract target only forwards to
DIRECT = {"stage2_prot_attr": ("from ptspec.impl.pgtable import stage2_map",
                               "stage2_map.stage2_set_prot_attr")}


def call_args(fn, message: str) -> dict | None:
    """The arguments of ``fn`` in CrossHair's "... when calling fn(a, b) ..." message, by
    parameter name; None when the message names no such call with literal arguments."""
    m = re.search(rf"calling ({re.escape(fn.__name__)}\(.*?\))(?: \(which|$)", message)
    if m is None:
        return None
    try:
        node = ast.parse(m.group(1), mode="eval").body
        pos = [ast.literal_eval(a) for a in node.args]
        kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        return dict(inspect.signature(fn).bind(*pos, **kw).arguments)
    except (SyntaxError, ValueError, TypeError):
        return None


def contract_program(fn, message: str, condition: str) -> str | None:
    """The refuted contract of ``fn`` as a program ending in ``assert <postcondition>``."""
    args = call_args(fn, message)
    if args is None or not condition:
        return None
    module = inspect.getmodule(fn)
    used = {n.id for n in ast.walk(ast.parse(condition, mode="eval")) if isinstance(n, ast.Name)}
    names = sorted(n for n in used - set(args) - {"_"} if n in vars(module))
    imports = [_import(module, n) for n in names]
    if fn.__name__ in DIRECT:
        imp, target = DIRECT[fn.__name__]
        imports.append(imp)
    else:
        imports.append(f"from {module.__name__} import {fn.__name__}")
        target = fn.__name__
    call = f"_ = {target}({', '.join(args)})"
    return judged_program(imports, args, [call], f"assert {condition}, _", what=target)


def _import(module, name: str) -> str:
    """The import of a name the postcondition uses, from where it is defined."""
    obj = vars(module)[name]
    if inspect.ismodule(obj):
        return (f"import {obj.__name__}" if obj.__name__ == name
                else f"from {obj.__name__.rpartition('.')[0]} import {obj.__name__.rpartition('.')[2]} as {name}"
                if "." in obj.__name__ else f"import {obj.__name__} as {name}")
    return f"from {module.__name__} import {name}"


def diff_program(fn1, fn2, args: dict, setup=(), kernel_function: str = "") -> str:
    """A behaviour difference of the pair (impl side ``fn1``, spec side ``fn2``) as a program
    ending in ``assert got == want``. ``args`` may be hex strings (as reported)."""
    values = {k: _value(v) for k, v in args.items()}
    module = inspect.getmodule(fn1).__name__
    note = f"  # {kernel_function} through the impl side" if kernel_function else ""
    names = ", ".join(values)
    return judged_program(
        [f"from {module} import {fn1.__name__}, {fn2.__name__}"] + [
            f"from {module} import {s.split('(')[0]}" for s in setup],
        values,
        list(setup) + [f"got = {fn1.__name__}({names}){note}",
                       f"want = {fn2.__name__}({names})"],
        "assert got == want, f'impl {got!r}, spec {want!r}'", what="a side")


def _value(v):
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            try:
                return ast.literal_eval(v)
            except (SyntaxError, ValueError):
                return v
    return v
