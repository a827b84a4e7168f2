"""The s2.proof.* obligations (walker-step and walk lemmas) prove on the tree and refute their
planted bugs with hex counterexamples; the z3 statements of one descriptor's invariants agree with
the spec's own checks."""

import random

import pytest
import z3

from ptspec.proofs.runner import budgets, registry
from ptspec.proofs.stage2.planted_proofs import STEP_CAUGHT_BY, get, planted
from ptspec.proofs.stage2 import z3_steps_model as M
from ptspec.spec.arch import descriptor as SD
from ptspec.spec.stage2 import invariants as SI

registry.load_all()

CASES = [(bug, oid) for bug, oids in sorted(STEP_CAUGHT_BY.items()) for oid in oids]


def proof_obligations():
    return sorted(ob.id for ob in registry.all_obligations() if ob.id.startswith("s2.proof."))


def test_registered():
    assert not [e for e in registry.load_errors() if "z3_steps" in e[0]]
    ids = proof_obligations()
    assert {f"s2.proof.step.{n}" for n in ("map-leaf", "set-owner-leaf", "map-table-pre",
                                           "map-anchored-leaf", "map-table-post", "unmap",
                                           "attr", "free", "hyp-map")} <= set(ids)
    assert {f"s2.proof.walk.{n}" for n in ("range", "roots", "table")} <= set(ids)


@pytest.mark.parametrize("oid", proof_obligations())
def test_proves_on_the_tree(oid):
    r = registry.run_obligation(registry.get(oid), "default", 0)
    assert r.status == "proved", (oid, r.detail, r.counterexample)
    assert r.examples > 0 and r.rlimit == budgets.budget("default")["z3_rlimit"]


@pytest.mark.parametrize("bug,oid", CASES, ids=[f"{b}->{o}" for b, o in CASES])
def test_planted_step_bug_is_refuted(bug, oid):
    with planted(bug):
        r = registry.run_obligation(registry.get(oid), "default", 0)
    assert r.status == "refuted", (bug, oid, r.status, r.detail)
    cex = r.counterexample
    named = {part for v in cex["violations"] for part in v.split(":")[0].split("/")}
    assert named & set(get(bug).caught_by), (bug, cex["violations"])
    assert cex["inputs"] and all(v.startswith("0x") or v in ("True", "False")
                                 for v in cex["inputs"].values())
    assert cex["kernel_function"]


def test_every_proof_obligation_has_a_planted_bug():
    assert set(proof_obligations()) <= {oid for _, oid in CASES}


# -- the one-descriptor statements agree with the spec's checks -----------------------------------

def _descs(rng, ps):
    """Descriptors that hit every branch: random, valid leaves/tables, annotations, edge bits."""
    out = [0, 1, 3, (1 << 64) - 1, 0x8000_0000_0000_0003, 1 << 56, 2 << 56, 0x4]
    for _ in range(300):
        d = rng.getrandbits(64)
        kind = rng.randrange(5)
        if kind == 0:
            d &= ~(0x3 << 12) & SD.ADDR_MASK_48 | 3
        elif kind == 1:
            d = (rng.getrandbits(8) << 56) if rng.random() < 0.5 else rng.getrandbits(8) << 2
        elif kind == 2:
            d = (rng.getrandbits(36) << ps) & SD.ADDR_MASK_48 | rng.choice((1, 3))
        elif kind == 3:
            d = (d & ~((1 << 21) - 1) & SD.ADDR_MASK_48) | 1
        out.append(d)
    return out


def _z3_true(f):
    return z3.is_true(z3.simplify(f))


@pytest.mark.parametrize("ps", (12, 14, 16))
def test_descriptor_statements_match_the_spec(ps):
    rng = random.Random(ps)
    pa_bits = {12: 48, 14: 48, 16: 52}[ps]
    for level in range(4):
        g = 1 << (ps + (3 - level) * (ps - 3))
        from ptspec.spec.arch import geometry as SG
        for d in _descs(rng, ps):
            for unwritten in (0, SD.s2_leaf_unwritten()):     # hyp stage 1, stage 2
                want_ba = not (d & SD.VALID) or not SI._encoding_problems(
                    d, level, ps, g, SG.level_allows_block(level, ps), 1 << pa_bits, unwritten)
                assert _z3_true(M.ba_ok(d, level, ps, pa_bits, unwritten)) == want_ba, (hex(d), level)
            for field in ((63, 56), (9, 2)):
                owner = SD.owner_of(d, field)
                want_own = bool(d & SD.VALID) or d == 0 or (owner is not None and owner <= 1)
                assert _z3_true(M.own_ok(d, field, 1)) == want_own, (hex(d), field)
            want_tree = not SD.is_table(d, level) or not d & SD.TABLE_UPPER_MASK
            assert _z3_true(M.tree_ok(d, level)) == want_tree, (hex(d), level)
            assert z3.simplify(M.desc_addr(d, ps)).as_long() == SD.address(d, ps)


def test_step_lemmas_are_deterministic():
    """Same verdict, paths and z3 queries on a second run (rlimit decides, not the clock)."""
    from ptspec.proofs.stage2 import z3_steps_walk, z3_steps_walkers
    for lemma in (z3_steps_walkers.lemma_free_step, z3_steps_walk.lemma_walk_roots):
        a, b = lemma(50_000_000, 20_000), lemma(50_000_000, 20_000)
        assert (a.status, a.paths, a.queries, a.detail) == (b.status, b.paths, b.queries, b.detail)


def test_a_contradictory_phase_is_unknown_not_proved():
    """A case whose assumptions cannot hold proves nothing: the machinery reports unknown."""
    from ptspec.proofs.engines.z3.explore import prove
    from ptspec.proofs.engines.z3.bv import sym
    inputs: dict = {}
    x = sym("x", 64, inputs)
    out = prove(lambda: True, inputs, assume=[M.z(x) < 0], rlimit=1_000_000, timeout_ms=5_000)
    assert out.status == "unknown"


def _visits(pgt, addr, size):
    from ptspec.impl.pgtable import walker as W
    seen = []

    def cb(a, e, level, tbl, ptp, idx, flag):
        seen.append((a, level))
        return 0
    ret = W.kvm_pgtable_walk(pgt, addr, size, W.KvmPgtableWalker(cb, W.KVM_PGTABLE_WALK_LEAF))
    return ret, seen


@pytest.mark.parametrize("ps,ia", [(12, 40), (16, 42)])
def test_the_composed_walk_statement_on_real_trees(ps, ia):
    """What walk.range + walk.roots + walk.table compose to, checked on concrete trees the impl
    built: LEAF visits exactly the leaf slots (spec walk) intersecting [start, end), in order,
    once each; -ERANGE exactly as the kernel; wrapping sizes visit nothing."""
    import errno
    from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
    from ptspec.impl.pgtable.stage2 import KvmPgtable
    from ptspec.spec.arch import geometry as SG
    from ptspec.spec.stage2.state import load_state
    pgt = KvmPgtable(ps, ia, pool=PagePool(ps, 256))
    assert pgt.init() == 0
    mc = KvmMmuMemoryCache(pgt.pool, 32)
    page, big = 1 << ps, SG.granule_size(2, ps)
    for addr, size in ((0, big), (big * 3 + 5 * page, 3 * page), (1 << (ia - 1), big + page)):
        assert mc.topup(16) == 0
        assert pgt.map(addr, size, addr, 0x7, mc) == 0
    assert mc.topup(16) == 0
    assert pgt.set_owner(big * 2, 4 * page, mc, 1) == 0
    state = load_state(pgt.snapshot())
    rng = random.Random(ps)
    limit = 1 << ia
    probes = [(0, limit), (big - page, 3 * page), (limit - page, page), (limit, 0),
              (limit - page, 2 * page), (page, (1 << 64) - page)]
    probes += [(rng.randrange(limit), rng.randrange(4 * big)) for _ in range(40)]
    for addr, size in probes:
        start = addr & ~(page - 1)
        end = (start + size + page - 1) & ~(page - 1) & ((1 << 64) - 1)
        ret, seen = _visits(pgt, addr, size)
        if start > limit or end > limit:
            assert ret == -errno.ERANGE and not seen, (hex(addr), hex(size))
            continue
        assert ret == 0
        want = []
        for s, e, level, d, _, _, _ in state.walk().overlapping(start, end):
            g = SG.granule_size(level, ps)
            want += [(slot, level) for slot in range(s, e, g) if slot < end and slot + g > start]
        got = [(a & ~(SG.granule_size(lv, ps) - 1), lv) for a, lv in seen]
        assert got == want, (hex(addr), hex(size))


STEP_CASES = [(b, o) for b, o in CASES if o.startswith("s2.proof.step.")]


@pytest.mark.parametrize("bug,oid", STEP_CASES, ids=[f"{b}->{o}" for b, o in STEP_CASES])
def test_a_step_refutation_is_a_program_that_fails_with_the_bug_only(bug, oid):
    with planted(bug):
        r = registry.run_obligation(registry.get(oid), "default", 0)
        program = r.counterexample["ops"]
        with pytest.raises(AssertionError):
            exec(compile(program, "<counterexample>", "exec"), {})
    exec(compile(program, "<counterexample>", "exec"), {})      # the tree passes every assert
