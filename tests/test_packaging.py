"""pyproject.toml ships the whole tree: every package folder listed, every data file matched.

setuptools is given an explicit package list (the three layers install under ``ptspec.*`` from
folders at the top of the repository), so a new folder that is not added there is silently left
out of the wheel, and an editable install would still work. These tests hold the list to the tree;
``.ci/wheel_smoke.py`` builds and installs the wheel itself.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
LAYERS = ("ptspec", "spec", "impl", "proofs")


def _skip(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix == ".pyc"


def _folder_of(package: str) -> Path:
    """The folder of a package, by the package-dir mapping (``ptspec.proofs.cli`` -> proofs/cli)."""
    dirs = CONFIG["package-dir"]
    best = max((k for k in dirs if package == k or package.startswith(k + ".")), key=len)
    rest = package[len(best):].lstrip(".")
    return ROOT / dirs[best] / Path(*rest.split(".")) if rest else ROOT / dirs[best]


def _package_of(folder: Path) -> str:
    """The package a folder installs as (the inverse of _folder_of)."""
    rel = folder.relative_to(ROOT)
    for name, top in CONFIG["package-dir"].items():
        if rel.parts[:1] == (top,):
            return ".".join((name, *rel.parts[1:]))
    raise AssertionError(f"{rel} is under no package-dir entry")


def _package_folders() -> set[Path]:
    return {p.parent for layer in LAYERS for p in (ROOT / layer).rglob("__init__.py") if not _skip(p)}


def test_package_dir_maps_each_layer_to_its_top_folder():
    assert CONFIG["package-dir"] == {"ptspec": "ptspec", "ptspec.spec": "spec",
                                     "ptspec.impl": "impl", "ptspec.proofs": "proofs"}


def _package_list_errors(listed: list[str]) -> dict[str, list[str]]:
    on_disk = {_package_of(folder) for folder in _package_folders()}
    return {k: v for k, v in {"not listed": sorted(on_disk - set(listed)),
                              "listed, no __init__.py": sorted(set(listed) - on_disk),
                              "listed twice": sorted({n for n in listed if listed.count(n) > 1})}.items()
            if v}


def test_packages_list_every_folder_with_an_init_and_nothing_else():
    assert _package_list_errors(CONFIG["packages"]) == {}
    for name in CONFIG["packages"]:
        assert (_folder_of(name) / "__init__.py").is_file(), name


def test_a_package_missing_from_the_list_or_one_too_many_is_reported():
    listed = [n for n in CONFIG["packages"] if n != "ptspec.proofs.mutation"]
    assert _package_list_errors(listed) == {"not listed": ["ptspec.proofs.mutation"]}
    assert _package_list_errors(CONFIG["packages"] + ["ptspec.proofs.kdiff"]) == {
        "listed, no __init__.py": ["ptspec.proofs.kdiff"]}


def test_every_python_module_is_inside_a_package():
    """A .py file in a folder without __init__.py would be left out of the wheel."""
    stray = [p.relative_to(ROOT) for layer in LAYERS for p in (ROOT / layer).rglob("*.py")
             if not _skip(p) and p.parent not in _package_folders()]
    assert not stray, stray


def test_every_package_has_a_docstring():
    for folder in _package_folders():
        text = (folder / "__init__.py").read_text().lstrip()
        assert text.startswith(('"""', "'''", 'r"""')), f"{folder.relative_to(ROOT)}/__init__.py"


def _owner(path: Path) -> str:
    """The nearest package folder above a data file: the package that ships it."""
    folders = _package_folders()
    for parent in path.parents:
        if parent in folders:
            return _package_of(parent)
    raise AssertionError(f"{path.relative_to(ROOT)} is in no package")


def _matches(rel: str, globs: list[str]) -> bool:
    """setuptools' glob semantics for package data: '*' does not cross a '/'."""
    return any(fnmatch.fnmatchcase(rel, g) and rel.count("/") == g.count("/") for g in globs)


def _unmatched_data(data: dict[str, list[str]]) -> list[str]:
    files = [p for layer in LAYERS for p in (ROOT / layer).rglob("*")
             if p.is_file() and not _skip(p) and p.suffix != ".py"]
    assert files, "no data files found"
    out = []
    for f in files:
        pkg = _owner(f)
        if not _matches(f.relative_to(_folder_of(pkg)).as_posix(), data.get(pkg, [])):
            out.append(f.relative_to(ROOT).as_posix())
    return sorted(out)


def test_package_data_matches_every_data_file():
    """Every non-Python file under the layers (kernel shims, survivor explanations) is matched by
    a package-data glob of the package that holds it; every glob matches at least one file."""
    data = CONFIG["package-data"]
    assert _unmatched_data(data) == []
    for pkg, globs in data.items():
        for g in globs:
            assert list(_folder_of(pkg).glob(g)), f"{pkg}: {g} matches nothing"


def test_package_data_covers_the_shim_sources_and_the_survivor_files():
    data = CONFIG["package-data"]
    shim = {p.relative_to(ROOT / "proofs/kernel").as_posix()
            for p in (ROOT / "proofs/kernel/shim").rglob("*") if p.is_file()}
    assert {"shim/kdiff_rt.c", "shim/linux/pgtable.h"} <= shim
    assert all(_matches(s, data["ptspec.proofs.kernel"]) for s in shim), shim
    survivors = list((ROOT / "proofs/mutation/survivors").glob("*.toml"))
    assert len(survivors) >= 4
    assert all(_matches(f"survivors/{s.name}", data["ptspec.proofs.mutation"]) for s in survivors)
    # without the shim headers' glob, the headers are reported missing
    partial = dict(data, **{"ptspec.proofs.kernel": ["shim/*.c"]})
    assert [f for f in _unmatched_data(partial) if f.startswith("proofs/kernel/")] == sorted(
        f"proofs/kernel/{s}" for s in shim if s.startswith("shim/linux/"))


TOP_LEVEL_IMPORT = re.compile(r"^\s*from\s+(?:spec|impl|proofs)\b(?=(?:\.\w+)*\s+import\b)"
                              r"|^\s*import\s+(?:spec|impl|proofs)\b(?=[\s.,]|$)"
                              r"|import_module\(\s*[\"'](?:spec|impl|proofs)\b", re.MULTILINE)


def _top_level_imports(text: str) -> list[str]:
    return [m.group(0).strip() for m in TOP_LEVEL_IMPORT.finditer(text)]


def test_nothing_imports_the_layers_by_their_folder_names():
    """Installed, the layers exist only as ptspec.spec / ptspec.impl / ptspec.proofs. Run from the
    repository (pytest's working directory is on sys.path) `import spec` still finds the folder, so
    a stale top-level import passes every in-process test and fails only when installed."""
    offenders = {p.relative_to(ROOT).as_posix(): _top_level_imports(p.read_text())
                 for folder in (*LAYERS, "tests", "bench", ".ci") for p in (ROOT / folder).rglob("*.py")
                 if not _skip(p) and p.name != "test_packaging.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_a_top_level_import_is_found():
    assert _top_level_imports('x = 1\n    spec = importlib.import_module("spec")\n') == [
        'import_module("spec']
    assert _top_level_imports("from impl.lguest import Lguest\nimport proofs.cli\n") == [
        "from impl", "import proofs"]
    assert _top_level_imports("from ptspec.spec import x\nimport spectrum\n") == []
    assert _top_level_imports("a docstring line\nfrom impl: not an import\nfrom impl with words\n") == []
