"""s2.geometry.all: complete over the configurations, and refutes a planted off-by-one."""

import contextlib

from ptspec.impl.pgtable import geometry as IG
from ptspec.proofs.runner import registry
from ptspec.proofs.stage2.checks_geometry import geometry_all


@contextlib.contextmanager
def levels_off_by_one():
    orig = IG.arm64_hw_pgtable_levels
    IG.arm64_hw_pgtable_levels = lambda ps, va: (va - 5) // (ps - 3)    # the bug: 5 for 4
    try:
        yield
    finally:
        IG.arm64_hw_pgtable_levels = orig


def run():
    return geometry_all(registry.Context("default", 0, {}))


def test_clean_tree_is_proved_over_every_configuration():
    r = run()
    # stage 2: IPA 32..48 with 4K and 16K (17 each), 32..52 with 64K (21); hyp: VA 36..48 (13),
    # 36..48 (13), 36..52 (17)
    assert r.status == "proved" and r.examples == (17 + 17 + 21) + (13 + 13 + 17)


def test_planted_levels_bug_is_refuted():
    with levels_off_by_one():
        r = run()
    assert r.status == "refuted" and "start level" in " ".join(r.counterexample["violations"])


def test_constructor_check_passes_and_refutes_a_loosened_bound(monkeypatch):
    from ptspec.proofs.stage2.checks_geometry import constructors
    assert constructors(registry.Context("default", 0, {})).status == "passed"
    from ptspec.impl.pgtable import stage2 as S
    monkeypatch.setattr(S.Stage2Geometry, "from_ipa", classmethod(
        lambda cls, ps, ia: IG.Stage2Geometry(IG.Granule(ps), ia, 1, 1)))   # the bug: no bound
    r = constructors(registry.Context("default", 0, {}))
    assert r.status == "refuted" and "KvmPgtable(12, 31)" in " ".join(r.counterexample["violations"])
