"""The trace minimiser: shortest replayed sub-sequence that still breaks the same check."""

from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW
from ptspec.proofs.engines import minimize
from ptspec.proofs.stage2.harness import Stage2Harness
from ptspec.proofs.stage2.planted import planted

M2, K4 = 0x200000, 0x1000


def make():
    return Stage2Harness(12, 39, arena_pages=128)


PADDED = [
    ("op", "map", dict(addr=0x4000_0000, size=K4, phys=0x1_0000_0000, prot=KVM_PGTABLE_PROT_R)),
    ("op", "get_leaf", dict(addr=0)),
    ("fail", 3),
    ("op", "map", dict(addr=M2, size=K4, phys=0x1_0020_0000, prot=KVM_PGTABLE_PROT_RW)),
    ("op", "is_young", dict(addr=M2)),
    ("op", "flush", dict(addr=0, size=4 * M2)),
    # the essential pair: a page inside a block-sized range, then a re-map of the range that
    # reaches it with permissions changed (-EAGAIN must not stop the walk)
    ("op", "map", dict(addr=K4, size=K4, phys=0x8000_1000, prot=KVM_PGTABLE_PROT_R)),
    ("op", "mkold", dict(addr=0x4000_0000)),
    ("op", "map", dict(addr=K4, size=2 * K4, phys=0x8000_1000, prot=KVM_PGTABLE_PROT_RW)),
    ("op", "unmap", dict(addr=0x4000_0000, size=K4)),
]


def test_replay_without_bug_is_clean():
    h, found, used = minimize.replay(PADDED, make)
    assert found == [] and used == len(PADDED)
    assert h.steps == 1 + sum(1 for e in PADDED if e[0] == "op")


def test_minimize_keeps_only_what_the_failure_needs():
    with planted("eagain-abort"):
        h, found, used = minimize.replay(PADDED, make)
        assert "C-MAP" in minimize.ids(found) and used == 9      # fails at the second map of K4
        trace, h, found = minimize.minimize(PADDED, make, {"C-MAP"}, seconds=30)
    assert "C-MAP" in minimize.ids(found)
    assert [e[1] for e in trace] == ["map", "map"], trace
    assert trace[0][2]["addr"] == K4 and trace[1][2]["size"] == 2 * K4
    # the harness the minimiser returns is the replay of exactly that trace
    assert [ln.split("(")[0] for ln in h.lines if ln.startswith("pgt.")] == \
        ["pgt.init", "pgt.map", "pgt.map"]


def test_minimize_returns_the_trace_when_it_does_not_reproduce():
    trace, h, found = minimize.minimize(PADDED, make, {"C-MAP"}, seconds=5)
    assert trace == PADDED and found == []
