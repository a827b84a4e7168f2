"""spec/ and impl/ are written independently: neither may import the other (nor proofs/).

The layers install as ``ptspec.spec``, ``ptspec.impl`` and ``ptspec.proofs``; nothing anywhere may
import them under their folder names (``import spec``), which would load a second copy of a layer,
or an unrelated distribution of that name.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ("spec", "impl", "proofs")
FORBIDDEN = {"spec": {"impl", "proofs"}, "impl": {"spec", "proofs"}}


def imported_layers(path: pathlib.Path) -> set[str]:
    """The ptspec layers a module imports (``ptspec.impl...`` -> "impl")."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "ptspec" else [f"ptspec.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "ptspec" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


def bare_layer_imports(path: pathlib.Path) -> list[str]:
    """Imports of a layer by its folder name (``import spec``, ``from impl.x import y``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in LAYERS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in LAYERS:
            bad.append(f"{node.lineno}: from {node.module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_cross_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {str(f.relative_to(ROOT)): imported_layers(f) & FORBIDDEN[package] for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_layers_imported_only_under_ptspec():
    files = [f for top in (*LAYERS, "tests", "bench") for f in sorted((ROOT / top).rglob("*.py"))]
    bad = {str(f.relative_to(ROOT)): b for f in files if (b := bare_layer_imports(f))}
    assert bad == {}


def test_rule_detects_a_planted_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import os\nfrom ptspec.impl.pgtable.stage2 import KvmPgtable\n"
                       "from ptspec import proofs\nimport spec.arch\n")
    assert imported_layers(planted) & FORBIDDEN["spec"] == {"impl", "proofs"}
    assert bare_layer_imports(planted) == ["4: import spec.arch"]
