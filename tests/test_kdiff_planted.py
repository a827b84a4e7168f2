"""Every planted bug of ptspec.proofs.kernel.planted makes the differ report its named id, and the swap is
undone afterwards. Skipped (with the reason) without the package or a C compiler."""

import pytest

from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers
from ptspec.proofs.kernel import cside
from ptspec.proofs.kernel import differ
from ptspec.proofs.kernel import planted


from kdiff_support import need_kernel  # noqa: E402  (tests/ is on sys.path)


@pytest.mark.parametrize("bug_id", list(planted.BUGS))
def test_planted_bug_is_caught(bug_id):
    need_kernel()
    before = (stage2_map.stage2_map_walker_try_leaf, stage2_walkers.kvm_pgtable_stage2_mkyoung)
    with planted.planted(bug_id) as bug:
        out = differ.run(["4k-39"], 400, seed=0, shrink_replays=60)
    assert out.status == "refuted", f"{bug_id} not caught in {out.ops} operations"
    assert bug.expect in out.finding.ids, out.finding.report()
    assert (stage2_map.stage2_map_walker_try_leaf,
            stage2_walkers.kvm_pgtable_stage2_mkyoung) == before
    assert cside.PLANT_DEFINES == ()
    assert differ.run(["4k-39"], 60, seed=0).status == "passed"


class _Ctx:
    budget = {"hypothesis_examples": 20, "shrink_replays": 60}
    seed = 0

    def expired(self):
        return False

    def progress(self, *a, **k):
        pass


@pytest.mark.parametrize("bug_id,expect", [("prot-no-sh", "KD-WORDS"),
                                           ("both-lose-root-ref", "S2-RC")])
def test_obligations_are_refuted_under_planted_bugs(bug_id, expect):
    need_kernel()
    from ptspec.proofs.kernel import checks as checks_kdiff
    with planted.planted(bug_id):
        r = checks_kdiff.random_ops(_Ctx())
    assert r.status == "refuted"
    assert any(v.startswith(expect) for v in r.counterexample["violations"])
    assert "p = Pair(" in r.counterexample["ops"]
    # the printed program ends in its judge and, pasted, fails it under the bug
    assert r.counterexample["ops"].rstrip().splitlines()[-1].startswith("assert not ")
    with planted.planted(bug_id), pytest.raises(AssertionError) as err:
        exec(r.counterexample["ops"], {})
    assert expect in str(err.value)
    with planted.planted("prot-no-sh"):
        r = checks_kdiff.difference_catalogue(_Ctx())
    assert r.status == "refuted" and "6.1 still differs" in " ".join(r.counterexample["violations"])
