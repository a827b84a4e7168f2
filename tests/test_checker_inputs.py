"""Checkers take their inputs from spec, never from impl (DESIGN.md, STYLE.md).

A checker whose address generator followed impl's geometry would inherit impl's mistakes: a wrong
level shift in impl would move the addresses the checker tries along with it, and the two would
agree. Two guards:

* an AST scan: the modules that build checker inputs (proofs/**/strategies|exhaustive|errorpaths|
  layouts|guest|lockstep|program.py) import nothing of impl's geometry or encodings (impl's
  operations and its API flags, such as KVM_PGTABLE_PROT_R, are fine: they drive impl);
* planted wrong impl geometries (monkeypatched): impl's own view moves, the checkers' inputs do not.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
INPUT_MODULES = ("strategies", "program", "exhaustive", "errorpaths", "layouts", "guest", "lockstep")

# impl modules that hold geometry or encodings, and impl names that do
FORBIDDEN_MODULES = {"ptspec.impl.pgtable.geometry", "ptspec.impl.lguest.x86"}
FORBIDDEN_NAMES = {
    "ptspec.impl.mmu.host": {"HostSizes", "DEVICE_BASE", "_CONT_PTES", "_CONT_PMDS"},
    "ptspec.impl.pgtable.pte": {"kvm_pte_to_phys", "kvm_phys_to_pte", "KVM_PTE_VALID", "KVM_PTE_TYPE"},
    "ptspec.impl.pgtable": {"geometry"},
    "ptspec.impl.lguest": {"x86"},
}
# converted on another branch (strategies): remove from here once merged


def input_modules():
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proofs").rglob("*.py")
                  if p.stem in INPUT_MODULES)


def impl_geometry_imports(path: pathlib.Path) -> list[str]:
    """Imports of impl geometry or encodings in one module, as 'module' or 'module.name'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in FORBIDDEN_MODULES:
                bad.append(node.module)
            bad += [f"{node.module}.{a.name}" for a in node.names
                    if a.name in FORBIDDEN_NAMES.get(node.module, ())]
    return bad


def test_the_scan_sees_every_input_module():
    found = input_modules()
    for want in ("proofs/stage2/exhaustive.py", "proofs/stage2/errorpaths.py", "proofs/hyp/lockstep.py",
                 "proofs/mmu/layouts.py", "proofs/mmu/lockstep.py", "proofs/lguest/guest.py",
                 "proofs/lguest/lockstep.py", "proofs/stage2/strategies.py"):
        assert want in found


def test_the_scan_catches_a_planted_import(tmp_path):
    bad = tmp_path / "lockstep.py"
    bad.write_text("from ptspec.impl.pgtable.geometry import Stage2Geometry\n"
                   "from ptspec.impl.mmu.host import HostSizes, Vma\n"
                   "import ptspec.impl.lguest.x86\n"
                   "from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R\n")
    assert impl_geometry_imports(bad) == ["ptspec.impl.pgtable.geometry", "ptspec.impl.mmu.host.HostSizes",
                                          "ptspec.impl.lguest.x86"]


@pytest.mark.parametrize("rel", input_modules())
def test_input_modules_do_not_import_impl_geometry(rel):
    assert impl_geometry_imports(ROOT / rel) == []


# -- planted wrong impl geometries -----------------------------------------------------------------

@pytest.fixture
def wrong_impl_level_shift(monkeypatch):
    """impl computes every level's shift one bit too large (a wrong ARM64_HW_PGTABLE_LEVEL_SHIFT)."""
    from ptspec.impl.pgtable import geometry as impl_geometry
    right = impl_geometry.arm64_hw_pgtable_level_shift
    monkeypatch.setattr(impl_geometry, "arm64_hw_pgtable_level_shift", lambda ps, lvl: right(ps, lvl) + 1)
    return impl_geometry


def _draws(strategy, n=40):
    """n values of a strategy, drawn deterministically."""
    from hypothesis import given, settings, HealthCheck
    out = []

    @settings(max_examples=n, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        out.append(x)
    collect()
    return out


def test_hyp_inputs_do_not_follow_a_wrong_impl_geometry(wrong_impl_level_shift):
    from ptspec.impl.pgtable import hyp as hyp_impl
    from ptspec.impl.pgtable.pool import PagePool
    from ptspec.proofs.hyp import lockstep as H
    from ptspec.proofs.stage2 import strategies as S
    from ptspec.spec.arch import geometry as G
    for name, (ps, va_bits) in H.HYP_GEOMETRIES.items():
        geom = H.hyp_geometry(name)
        # impl's view moved with the plant ...
        planted = hyp_impl.HypPgtable(ps, va_bits, pool=PagePool(ps, 1)).gran
        assert planted.shift[3] != G.granule_shift(3, ps)
        # ... the checker's did not: spec's shifts, spec's start level
        assert geom.gran.shift == tuple(G.granule_shift(lv, ps) for lv in range(4))
        assert geom.start_level == G.hyp_start_level(va_bits, ps)
        page = 1 << ps
        assert all(a % page in (0, 1, page // 2, page - 1) and a < 1 << va_bits
                   for a in _draws(S.addresses(geom)))
        assert _draws(H.hyp_sizes(geom)) and page in _draws(H.hyp_sizes(geom), 200)


def test_hyp_inputs_equal_impl_geometry_when_impl_is_right():
    """Sanity: the spec-derived shape is the one the unpatched impl uses (so nothing moved)."""
    from ptspec.impl.pgtable import hyp as hyp_impl
    from ptspec.impl.pgtable.pool import PagePool
    from ptspec.proofs.hyp import lockstep as H
    for name, (ps, va_bits) in H.HYP_GEOMETRIES.items():
        geom = H.hyp_geometry(name)
        pgt = hyp_impl.HypPgtable(ps, va_bits, pool=PagePool(ps, 1))
        assert (geom.gran.shift, geom.gran.size, geom.gran.ptrs_per_pte, geom.gran.pa_bits,
                geom.start_level) == (pgt.gran.shift, pgt.gran.size, pgt.gran.ptrs_per_pte,
                                      pgt.gran.pa_bits, pgt.start_level)


def test_mmu_layouts_do_not_follow_wrong_impl_host_sizes(monkeypatch):
    from ptspec.impl.mmu import host
    from ptspec.proofs.mmu import layouts
    right = layouts.layout_pool(40)
    assert [layouts.backings(ps) for ps in (12, 14, 16)] == \
        [["anon", "thp", "pfnmap"] + [f"hugetlb:{s}" for s in host.HostSizes(ps).hugetlb_shifts()]
         for ps in (12, 14, 16)]
    monkeypatch.setattr(host, "_CONT_PTES", {12: 32, 14: 64, 16: 16})      # planted: wrong CONT_PTES
    assert host.HostSizes(12).CONT_PTE_SHIFT != 16                         # impl moved
    assert layouts.layout_pool(40) == right                                # the inputs did not


def test_stage2_exhaustive_canonical_form_decodes_with_spec(monkeypatch):
    """The explorer's state key reads descriptors with spec: a wrong impl decoder does not move it."""
    from ptspec.impl.pgtable import pte
    from ptspec.proofs.stage2 import exhaustive as X
    from ptspec.proofs.stage2.harness import Stage2Harness
    h = Stage2Harness(12, 39, arena_pages=64, mc_capacity=4, check=False)
    for op, args in X.alphabet()[:3]:
        h._call(op, args)
    right = X.canonical(h)
    monkeypatch.setattr(pte, "kvm_pte_to_phys", lambda w, ps: 0)
    assert X.canonical(h) == right
    assert [x for x in right[0] if any(e[1] == "T" for e in x[1][1:] if isinstance(e, tuple) and len(e) == 3)]
