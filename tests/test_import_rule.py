"""spec/ and impl/ are written independently: neither may import the other (nor proofs/)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = {"spec": {"impl", "proofs"}, "impl": {"spec", "proofs"}}


def imported_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_cross_imports(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {str(f.relative_to(ROOT)): imported_packages(f) & FORBIDDEN[package] for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_rule_detects_a_planted_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("import os\nfrom impl.stage2 import KvmPgtable\n")
    assert imported_packages(planted) & FORBIDDEN["spec"] == {"impl"}
