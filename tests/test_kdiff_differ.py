"""The random differ and the difference catalogue on the real 6.1 pgtable.c. Skipped (with the
reason) without the package or a C compiler."""

import pytest

from ptspec.proofs.kernel import catalogue
from ptspec.proofs.kernel import differ


from kdiff_support import need_kernel  # noqa: E402  (tests/ is on sys.path)


@pytest.mark.parametrize("geometry", ["4k-39", "4k-34", "16k-40", "64k-52"])
def test_profile_6_1_has_no_difference(geometry):
    need_kernel(16 if geometry.startswith("64k") else 14 if geometry.startswith("16k") else 12)
    out = differ.run([geometry], 120 if geometry.startswith("64k") else 250, seed=3)
    assert out.status == "passed", out.finding and out.finding.report()
    assert out.ops >= 120 and out.spec_checks == out.ops


@pytest.mark.parametrize("profile,expect", [("5.15", "KD-TLB"), ("impl-default", None)])
def test_older_profiles_are_caught_and_shrunk(profile, expect):
    need_kernel()
    out = differ.run(["4k-39"], 400, seed=0, profile=profile, shrink_replays=60)
    assert out.status == "refuted"
    f = out.finding
    assert f.kind == "difference" and len(f.ops) <= 4
    if expect:
        assert f.ids == [expect]
    rep = f.report()
    assert f"p = Pair('4k-39', '{profile}'" in rep
    assert "C side (kernel pgtable.c):" in rep and "stage 2: 4K granule" in rep
    # the printed program is pasteable, replays to the same difference and ends in the judge
    assert f.program.splitlines()[-2:] == differ.DIFF_JUDGE.splitlines()
    ns = {}
    with pytest.raises(AssertionError):
        exec(f.program, ns)
    assert sorted({d.id for d in ns["d"]}) == f.ids


@pytest.mark.parametrize("entry", catalogue.ENTRIES, ids=lambda e: e.id)
def test_catalogue_entry_reproduces(entry):
    need_kernel()
    assert catalogue.verify_entry(entry) == []


def test_main_exit_codes(capsys):
    need_kernel()
    assert differ.main(["--ops", "60", "--geometry", "4k-39", "--seed", "2"]) == 0
    assert "no difference" in capsys.readouterr().out
    assert differ.main(["--ops", "300", "--geometry", "4k-39", "--kernel-version", "5.15"]) == 1
    assert "KD-TLB" in capsys.readouterr().out


def test_known_deviation_is_counted_and_strict_mode_reports_it():
    need_kernel()
    out = differ.run(["4k-39"], 400, seed=2)
    assert out.status == "passed" and out.known.get("eagain-abort", 0) > 0
    assert "catalogued finding eagain-abort" in differ.format_outcome(out, "6.1")
    strict = differ.run(["4k-39"], 400, seed=2, strict=True, shrink_replays=60)
    assert strict.status == "refuted" and strict.finding.kind == "c-violation"
    assert strict.finding.ids == ["C-MAP"]
    # the C-side violation's program judges every step and ends in the assert that fails
    program = strict.finding.program
    assert program.splitlines()[-1].startswith("assert not found")
    ns = {}
    with pytest.raises(AssertionError) as err:
        exec(program, ns)
    assert "C-MAP" in str(err.value)
