"""Every s2.z3.* obligation proves on the tree and refutes its planted bugs.

Each bug of proofs/stage2/planted_proofs.py.CAUGHT_BY (some from proofs/stage2/planted.py) is planted for the
duration of one run of the obligation, which must come back "refuted" with a violated statement
naming one of the bug's expected ids, inputs in hex, and a program (``ops``) that, executed as
pasted, fails its final assert with the bug planted and passes without it.
"""

import pytest

from program_support import assert_program_judges  # (tests/ is on sys.path)
from ptspec.proofs.runner import budgets, registry
from ptspec.proofs.stage2.planted_proofs import CAUGHT_BY, get, planted

registry.load_all()

Z3_CASES = [(bug, oid) for bug, oids in sorted(CAUGHT_BY.items()) for oid in oids
            if oid.startswith("s2.z3.")]


def z3_obligations():
    return [ob for ob in registry.all_obligations() if ob.id.startswith("s2.z3.")]


def test_z3_module_loads():
    assert not [e for e in registry.load_errors() if "z3" in e[0]]
    assert len(z3_obligations()) >= 12


@pytest.mark.parametrize("oid", sorted(ob.id for ob in z3_obligations()))
def test_obligation_proves_on_the_tree(oid):
    r = registry.run_obligation(registry.get(oid), "default", 0)
    assert r.status == "proved", (oid, r.detail, r.counterexample)
    assert r.examples > 0 and r.rlimit == budgets.budget("default")["z3_rlimit"]


@pytest.mark.parametrize("bug,oid", Z3_CASES, ids=[f"{b}->{o}" for b, o in Z3_CASES])
def test_planted_bug_is_refuted(bug, oid):
    with planted(bug):
        r = registry.run_obligation(registry.get(oid), "default", 0)
    assert r.status == "refuted", (bug, oid, r.status, r.detail)
    cex = r.counterexample
    named = {v.split(":")[0] for v in cex["violations"]}
    assert named & set(get(bug).caught_by), (bug, cex["violations"])
    assert cex["inputs"] and all(v.startswith("0x") or v in ("True", "False")
                                 for v in cex["inputs"].values())
    # the printed program calls the impl with those inputs and ends in the assert that fails
    assert_program_judges(cex.get("ops"), lambda: planted(bug))


def test_every_z3_obligation_has_a_planted_bug():
    covered = {oid for _, oid in Z3_CASES}
    assert {ob.id for ob in z3_obligations()} <= covered


def test_planting_restores_the_impl():
    from ptspec.impl.pgtable import stage2_map
    orig = stage2_map.kvm_block_mapping_supported
    with planted("block-end-overrun"):
        assert stage2_map.kvm_block_mapping_supported is not orig
    assert stage2_map.kvm_block_mapping_supported is orig


def test_hyp_va_allocator_finding_for_huge_sizes():
    """The finding docs/proofs.md reports: without a bound on the size, the one-bit test of
    __create_hyp_private_mapping accepts an allocation that wraps below 0 and leaves the half."""
    from ptspec.proofs.mmu import z3_lemmas as z3_mmu
    out = z3_mmu.lemma_hyp_va(50_000_000, 20_000, max_size_bits=64)
    assert out.status == "refuted"
    cex = out.counterexample
    assert any("half" in v for v in cex["violated"])
    io, size = int(cex["io_map_base"], 16), int(cex["size"], 16)
    assert size > 1 << 38 and io < 1 << 48
