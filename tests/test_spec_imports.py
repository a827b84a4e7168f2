"""spec/ imports only the standard library and itself: never impl, proofs, or third-party code."""

import ast
import pathlib
import sys

SPEC = pathlib.Path(__file__).resolve().parent.parent / "spec"


def _imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.module or "", node.level


def test_spec_imports_only_stdlib_and_itself():
    bad = []
    files = sorted(SPEC.rglob("*.py"))
    assert files, "no spec modules found"
    for path in files:
        for line, name, level in _imports(path):
            top = name.split(".")[0]
            if level > 0:
                continue                      # relative: spec itself
            if name.startswith("ptspec.spec") or top in sys.stdlib_module_names:
                continue
            bad.append(f"{path.name}:{line} imports {name}")
    assert bad == []


def test_spec_modules_have_docstrings_and_stay_small():
    for path in sorted(SPEC.rglob("*.py")):
        text = path.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{path.name} has no module docstring"
        assert len(text.splitlines()) <= 420, f"{path.name} is {len(text.splitlines())} lines"
