"""The trace minimiser: shortest replayed sub-sequence that still breaks the same check."""

from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW
from ptspec.proofs.engines import minimize
from ptspec.proofs.stage2.harness import Stage2Harness, replay
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


def _same(target):
    return lambda h: bool(minimize.ids(h.violations) & target)


def test_replay_without_bug_is_clean():
    h, used = replay(PADDED, make)
    assert h.violations == [] and used == len(PADDED)
    assert h.steps == 1 + sum(1 for e in PADDED if e[0] == "op")


def test_minimize_keeps_only_what_the_failure_needs():
    with planted("eagain-abort"):
        h, used = replay(PADDED, make)
        assert "C-MAP" in minimize.ids(h.violations) and used == 9   # fails at the second map of K4
        cut = minimize.shortest(PADDED, lambda t: replay(t, make), _same({"C-MAP"}), 200)
    assert cut.reproduced and cut.replays <= 200
    assert "C-MAP" in minimize.ids(cut.outcome.violations)
    assert [e[1] for e in cut.trace] == ["map", "map"], cut.trace
    assert cut.trace[0][2]["addr"] == K4 and cut.trace[1][2]["size"] == 2 * K4
    # the harness the minimiser returns is the replay of exactly that trace
    h = cut.outcome
    assert [ln.split("(")[0] for ln in h.lines if ln.startswith("pgt.")] == \
        ["pgt.init", "pgt.map", "pgt.map"]
    # and its program, pasted, reproduces under the bug and not without it
    with planted("eagain-abort"):
        try:
            exec(h.program(), {})
        except AssertionError as exc:
            assert "C-MAP" in str(exc)
        else:
            raise AssertionError("the printed program did not reproduce")
    exec(h.program(), {})


def test_minimize_budget_is_replays_not_time():
    """The same inputs give the same cut whatever the clock does; the budget caps the replays."""
    with planted("eagain-abort"):
        one = minimize.shortest(PADDED, lambda t: replay(t, make), _same({"C-MAP"}), 3)
        two = minimize.shortest(PADDED, lambda t: replay(t, make), _same({"C-MAP"}), 3)
    assert one.replays == 3 and one.trace == two.trace and len(one.trace) <= 9


def test_minimize_returns_the_trace_when_it_does_not_reproduce():
    cut = minimize.shortest(PADDED, lambda t: replay(t, make), _same({"C-MAP"}), 50)
    assert not cut.reproduced and cut.trace == PADDED and cut.outcome.violations == []


def test_a_finding_inside_a_flaky_failure_is_found():
    class Finding(AssertionError):
        pass
    inner = Finding("S2-RC")
    group = ExceptionGroup("Hypothesis: failed on the first run but now succeeds", [inner])
    assert minimize.found_in(group, Finding) is inner
    assert minimize.found_in(ValueError("x"), Finding) is None
