"""ptspec check-kernel: tree version and shape detection (fake minimal trees, no kernel code),
exit codes, catalogued findings by version, the C side under the stage-2 lock-step judged by the
spec alone, and a bug planted in a scratch copy of the C source refuted by the spec. Tests that run
the kernel's C skip (with the reason) without the cached source or a C compiler."""

import errno

import pytest

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import findings
from ptspec.proofs.kernel import check
from ptspec.proofs.kernel import checks_spec
from ptspec.proofs.kernel import planted
from ptspec.proofs.kernel import subject
from ptspec.proofs.kernel import tree as T
from ptspec.proofs.cli.main import main as ptspec_main
from ptspec.proofs.runner import budgets, registry

from kdiff_support import need_kernel, need_tree  # noqa: E402  (tests/ is on sys.path)

INIT_5_16 = ("int __kvm_pgtable_stage2_init(struct kvm_pgtable *pgt, struct kvm_s2_mmu *mmu,\n"
             "\t\t\t      struct kvm_pgtable_mm_ops *mm_ops, int flags,\n"
             "\t\t\t      kvm_pgtable_force_pte_cb_t force_pte_cb)\n{\n}\n")
INIT_5_15 = ("int __kvm_pgtable_stage2_init(struct kvm_pgtable *pgt, struct kvm_arch *arch,\n"
             "\t\t\t      struct kvm_pgtable_mm_ops *mm_ops, int flags,\n"
             "\t\t\t      kvm_pgtable_force_pte_cb_t force_pte_cb)\n{\n}\n")
INIT_5_14 = ("int kvm_pgtable_stage2_init_flags(struct kvm_pgtable *pgt, struct kvm_arch *arch,\n"
             "\t\t\t\t  struct kvm_pgtable_mm_ops *mm_ops, int flags)\n{\n}\n")
OWNER = "#define KVM_INVALID_PTE_OWNER_MASK\tGENMASK(9, 2)\n#define KVM_MAX_OWNER_ID\t\t1\n"


def fake_tree(path, *, init=INIT_5_16, owner=OWNER, force_pte_cb=True, mm_cmo=True,
              makefile="VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 3\nEXTRAVERSION =\n", skip=()):
    hooks = "\tvoid (*dcache_clean_inval_poc)(void *addr, size_t size);\n" if mm_cmo else ""
    files = {
        "arch/arm64/kvm/hyp/pgtable.c": owner + init,
        "arch/arm64/include/asm/kvm_pgtable.h":
            "struct kvm_pgtable_mm_ops {\n" + hooks + "};\n"
            "struct kvm_pgtable {\n" + ("\tvoid *force_pte_cb;\n" if force_pte_cb else "") + "};\n",
        "arch/arm64/include/asm/stage2_pgtable.h": "\n",
        "Makefile": makefile,
    }
    for rel, text in files.items():
        if rel in skip:
            continue
        p = path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return path


# -- version and shape detection --------------------------------------------------------------
def test_version_and_shape_of_a_5_16_style_tree(tmp_path):
    t = T.open_tree(fake_tree(tmp_path))
    assert t.version == "6.1.3" and t.version_tuple() == (6, 1, 3)
    assert t.shape.init == "__kvm_pgtable_stage2_init"
    assert t.shape.init_params == ("pgt", "mmu", "mm_ops", "flags", "force_pte_cb")
    assert t.shape.owner_field == (9, 2) and t.shape.max_owner_id == 1
    assert t.shape.force_pte_cb
    assert T.unsupported(t.shape) is None
    assert "owner ids in bits 9:2" in t.shape.describe()


def test_a_5_15_style_tree_is_detected_and_supported(tmp_path):
    t = T.open_tree(fake_tree(tmp_path, init=INIT_5_15, makefile="VERSION = 5\nPATCHLEVEL = 15\n"
                                                                "SUBLEVEL = 0\n"))
    assert t.version == "5.15.0"
    assert t.shape.init == "__kvm_pgtable_stage2_init"
    assert t.shape.init_params == ("pgt", "arch", "mm_ops", "flags", "force_pte_cb")
    assert t.shape.init_types[1] == "struct kvm_arch *" and t.shape.init_takes == "arch"
    assert T.unsupported(t.shape) is None
    assert T.shim_defines(t.shape) == ("KDIFF_INIT_ARCH",)
    assert "takes struct kvm_arch" in t.shape.describe()


def test_the_5_16_shape_needs_no_shim_define(tmp_path):
    t = T.open_tree(fake_tree(tmp_path))
    assert t.shape.init_takes == "mmu" and T.shim_defines(t.shape) == ()
    assert T.shim_defines(None) == ()


def test_a_5_14_style_tree_is_detected_and_supported_without_force_pte_cb(tmp_path):
    t = T.open_tree(fake_tree(tmp_path, init=INIT_5_14, force_pte_cb=False,
                              owner="#define KVM_INVALID_PTE_OWNER_MASK\tGENMASK(63, 56)\n"
                                    "#define KVM_MAX_OWNER_ID\t\t1\n",
                              makefile="VERSION = 5\nPATCHLEVEL = 14\nSUBLEVEL = 2\n"))
    assert t.version == "5.14.2"
    assert t.shape.init == "kvm_pgtable_stage2_init_flags" and t.shape.init_takes == "arch"
    assert t.shape.owner_field == (63, 56) and not t.shape.force_pte_cb
    assert T.unsupported(t.shape) is None
    assert T.shim_defines(t.shape) == ("KDIFF_INIT_FLAGS",)


def test_init_flags_with_a_force_pte_cb_parameter_is_refused(tmp_path):
    """Only the shapes seen in real trees are driven: a five-parameter init_flags is not one."""
    init = INIT_5_14.replace("int flags)", "int flags, kvm_pgtable_force_pte_cb_t force_pte_cb)")
    t = T.open_tree(fake_tree(tmp_path, init=init))
    why = T.unsupported(t.shape)
    assert "kvm_pgtable_stage2_init_flags(pgt, arch, mm_ops, flags, force_pte_cb)" in why


def test_an_init_taking_neither_mmu_nor_arch_is_refused(tmp_path):
    init = INIT_5_16.replace("struct kvm_s2_mmu *mmu", "struct kvm *kvm")
    t = T.open_tree(fake_tree(tmp_path, init=init))
    assert t.shape.init_takes == "kvm"
    assert "this tree has __kvm_pgtable_stage2_init(pgt, kvm," in T.unsupported(t.shape)


def test_missing_owner_ids_and_force_pte_cb_are_named(tmp_path):
    a = T.open_tree(fake_tree(tmp_path / "a", owner=""))
    assert a.shape.owner_field is None and "KVM_INVALID_PTE_OWNER_MASK" in T.unsupported(a.shape)
    b = T.open_tree(fake_tree(tmp_path / "b", force_pte_cb=False))
    assert not b.shape.force_pte_cb and "force_pte_cb" in T.unsupported(b.shape)


def test_bad_trees_give_one_line_errors(tmp_path):
    with pytest.raises(T.TreeError, match="missing arch/arm64/include/asm/stage2_pgtable.h"):
        T.open_tree(fake_tree(tmp_path / "a", skip=("arch/arm64/include/asm/stage2_pgtable.h",)))
    with pytest.raises(T.TreeError, match="no VERSION/PATCHLEVEL"):
        T.open_tree(fake_tree(tmp_path / "b", makefile="all:\n"))
    with pytest.raises(T.TreeError, match="no stage-2 init function"):
        T.open_tree(fake_tree(tmp_path / "c", init="int other(void)\n{\n}\n"))
    with pytest.raises(T.TreeError, match="not a directory"):
        T.open_tree(tmp_path / "nowhere")


# -- exit codes without running kernel code -----------------------------------------------------
def test_kernel_version_judges_a_tree_as_another_kernel(tmp_path):
    """--kernel-version: the tree is judged as that kernel, its Makefile's version is kept, and a
    pasteable program opens it the same way; a malformed version is one line."""
    t = T.open_tree(fake_tree(tmp_path), kernel_version="6.1")
    assert (t.version, t.makefile_version, t.version_tuple()) == ("6.1.0", "6.1.3", (6, 1, 0))
    assert t.opener() == f"open_tree({str(t.root)!r}, kernel_version='6.1.0')"
    assert T.open_tree(fake_tree(tmp_path)).opener() == f"open_tree({str(t.root)!r})"
    for bad in ("6", "6.x", "6.1.2.3", "v6.1", ""):
        with pytest.raises(T.TreeError) as exc:
            T.open_tree(tmp_path, kernel_version=bad)
        assert "\n" not in str(exc.value) and "MAJOR.MINOR" in str(exc.value)


def test_a_tree_whose_source_contradicts_its_version_is_refused(tmp_path, capsys):
    """A 5.16-6.1 walker judged as 6.7 (a Makefile that does not say what the code is) is refused
    with the remedy, not judged by 6.7's rules; --kernel-version 6.1 judges it; every cached tree
    is consistent with its own Makefile."""
    root = fake_tree(tmp_path, makefile="VERSION = 6\nPATCHLEVEL = 7\nSUBLEVEL = 3\n")
    t = T.open_tree(root)
    assert len(T.version_conflicts(t)) == 1 and "lacks the reworked walker" in T.version_conflicts(t)[0]
    assert ptspec_main(["check-kernel", "--tree", str(root)]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("check-kernel: not checked: its source lacks the reworked walker")
    assert out[-1].endswith("pass --kernel-version with the kernel whose pgtable.c it carries")
    assert T.version_conflicts(T.open_tree(root, kernel_version="6.1.3")) == []
    assert ptspec_main(["check-kernel", "--tree", str(root), "--kernel-version", "6.x"]) == 2
    assert "expected MAJOR.MINOR" in capsys.readouterr().out
    from ptspec.proofs.kernel.tree import trees_dir
    for d in sorted(trees_dir().glob("linux-*")) if trees_dir().is_dir() else []:
        assert T.version_conflicts(T.open_tree(d)) == [], d


def test_a_mainline_tree_judged_as_an_earlier_kernel_names_each_interface(tmp_path):
    tree = need_tree("7.1")
    bad = T.version_conflicts(T.open_tree(tree.root, kernel_version="6.12.0"))
    names = ("mkyoung returning void", "PROT_PX/UX", "S2_AS_S1", "stage2_annotate")
    assert len(bad) == 4 and all(n in b for n, b in zip(names, bad)), bad   # NORMAL_NC is 6.9's
    assert all("has " in b and "judged as Linux 6.12.0" in b for b in bad)
    assert T.version_conflicts(T.open_tree(tree.root, kernel_version="7.1.0")) == []


def test_exit_2_for_a_tree_that_cannot_be_read(tmp_path, capsys):
    assert ptspec_main(["check-kernel", "--tree", str(tmp_path / "nowhere")]) == 2
    assert "not checked: " in capsys.readouterr().out
    fake_tree(tmp_path / "m", skip=("Makefile",))
    assert ptspec_main(["check-kernel", "--tree", str(tmp_path / "m")]) == 2
    assert "missing Makefile" in capsys.readouterr().out


def test_exit_2_for_a_shape_the_shim_cannot_drive(tmp_path, capsys):
    init = ("int kvm_pgtable_stage2_init(struct kvm_pgtable *pgt, struct kvm *kvm, "
            "void *mm_ops)\n{}\n")
    root = fake_tree(tmp_path, init=init)
    assert ptspec_main(["check-kernel", "--tree", str(root)]) == 2
    out = capsys.readouterr().out
    assert "init kvm_pgtable_stage2_init(pgt, kvm, mm_ops) takes struct kvm" in out
    assert "not checked: the shim drives __kvm_pgtable_stage2_init" in out


def test_exit_2_when_the_tree_does_not_build(tmp_path, capsys):
    if build.compiler() is None:
        pytest.skip("no C compiler")
    root = fake_tree(tmp_path)          # right shape, but no kernel code to build
    assert ptspec_main(["check-kernel", "--tree", str(root), "--geometry", "4k-39"]) == 2
    out = capsys.readouterr().out
    assert "not checked: compiling pgtable.c failed" in out


def test_bad_geometry_is_a_usage_error():
    assert check.main(["--geometry", "4k-99"]) == 2


def test_exit_code_rules():
    R = registry.Result
    assert check.exit_code([R.passed(1)]) == 0
    assert check.exit_code([R.passed(1), R.refuted({"ops": ""})]) == 1
    assert check.exit_code([R.passed(1), R.unknown("x")]) == 2
    assert check.exit_code([]) == 2


# -- the findings catalogue ------------------------------------------------------------------


def _eagain_pre():
    """A pre-state with one page at IPA 0x1000 (desc 0x8000_1000 | 0x7c3, say) and none at 0x2000."""
    from ptspec import spec
    from test_spec_builder import S2
    b = S2()
    b.page(0x1000, 0x8000_1000)
    st = spec.load_state(b.raw())
    return st, st.walk().find(0x1000)[3]


def test_findings_apply_only_to_their_versions():
    from ptspec.spec.violation import Violation
    pre, desc = _eagain_pre()
    v = Violation("C-MAP", "map: [0x1000, 0x2000) should be ..., found the old page",
                  {"ipa": 0x1000, "desc": desc})
    eagain = {"op": "map", "ret": -errno.EAGAIN, "pre": pre}
    assert findings.finding_for(v, eagain, (6, 1, 176)).id == "eagain-abort"
    assert findings.finding_for(v, eagain, (5, 10, 0)) is None          # before the finding
    assert findings.finding_for(v, {"op": "map", "ret": 0, "pre": pre}, (6, 1, 0)) is None
    assert findings.finding_for("S2-RC table ...", eagain, (6, 1, 0)) is None
    # eagain-abort is a page the stopped walk left as it was: one it changed is not it
    changed = Violation("C-MAP", "map: [0x1000, 0x2000) should be ..., found another page",
                        {"ipa": 0x1000, "desc": desc ^ 0x10000})
    assert findings.finding_for(changed, eagain, (6, 1, 176)) is None
    empty = Violation("C-MAP", "map: [0x2000, 0x3000) ...", {"ipa": 0x2000, "desc": 0})
    assert findings.finding_for(empty, eagain, (6, 1, 176)).id == "eagain-abort"
    assert findings.finding_for(v, dict(eagain, pre=None), (6, 1, 176)) is None


def test_5_14_is_judged_by_its_own_rules_so_a_set_owner_bug_is_not_set_aside(tmp_path, monkeypatch):
    """5.14's set_owner annotates blocks (no force_pte): a version rule of C-SET-OWNER now, no
    longer the set-owner-blocks finding, which matched any C-SET-OWNER violation of a 5.14
    set_owner. The plant owner-dropped (the annotation loses its owner id) is refuted on 5.14;
    with that catalogue entry put back it is catalogued: the false pass the rule closed."""
    from ptspec.proofs.kernel import planted, subject
    tree = need_tree("5.14")
    assert not {"set-owner-blocks", "prot-sw-unknown", "prot-sw-unknown-map", "unmap-direct-cmo",
                "flush-direct-cmo", "hyp-prot-sw-unknown"} & {f.id for f in findings.FINDINGS}

    def run(t):
        h = subject.subject_factory(t)(12, 39, arena_pages=512)
        ret, found = h.step("set_owner", addr=0x200000, size=0x200000, owner_id=1)
        return ret, [str(v).split()[0] for v in found], h.findings
    assert run(tree) == (0, [], {})             # one level-2 annotation: 5.14's rule
    bad = planted.scratch_tree("owner-dropped", tree, tmp_path / "t")
    assert run(bad) == (0, ["C-SET-OWNER"], {})
    loose = findings.KernelFinding("set-owner-blocks", "C-SET-OWNER", (5, 14, 0), (5, 15, 0), "",
                                   (), lambda step: step is not None and step.get("op") == "set_owner")
    monkeypatch.setattr(findings, "FINDINGS", findings.FINDINGS + (loose,))
    assert run(bad) == (0, [], {"set-owner-blocks": 1})


# -- the kernel's C under the spec ----------------------------------------------------------------
def _tree():
    need_kernel()
    t, why = T.default_tree()
    if t is None:
        pytest.skip(why)
    return t


def test_clean_tree_passes_with_its_catalogued_finding(tmp_path, capsys):
    _tree()
    js = tmp_path / "r.json"
    code = ptspec_main(["check-kernel", "--geometry", "4k-39", "--engines", "lockstep",
                        "--profile", "default", "--json", str(js)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Linux 6.1." in out and "owner ids in bits 9:2" in out
    assert "catalogued finding eagain-abort" in out
    import json
    rep = json.loads(js.read_text())
    assert rep["checks"][0]["id"] == "kernel.lockstep.4k-39"
    assert rep["checks"][0]["status"] == "passed" and rep["checks"][0]["examples"] > 1000
    assert rep["kernel"]["findings"]["eagain-abort"] > 0


def test_harness_refuses_misuse_and_injects_allocation_failures():
    t = _tree()
    h = subject.subject_factory(t)(12, 39, arena_pages=64, mc_capacity=4)
    ret, found = h.step("map", addr=-1, size=0x1000, phys=0x8000000000, prot=4)
    assert ret is None and found == []                       # ValueError, nothing changed
    h.fail_allocation(0)
    ret, found = h.step("map", addr=0x0, size=0x1000, phys=0x8000000000, prot=4,
                        no_memcache=True)
    assert ret == -errno.ENOMEM and found == []
    ret, found = h.step("set_owner", addr=0x0, size=0x1000, owner_id=5)
    assert ret == -errno.EINVAL and found == []
    assert "pgt.fail_at([0])" in h.ops_source


def test_planted_c_bug_is_refuted_by_the_spec_alone(tmp_path):
    """walk-align planted into a scratch copy of the C source: no impl involved."""
    t = _tree()
    bad = planted.scratch_tree("walk-align", t, tmp_path / "tree")
    r = check.check_geometry(bad, "4k-39", budgets.budget("default"), 0)
    assert r.status == "refuted", r.detail
    cex = r.counterexample
    assert any(v.split()[0] in ("C-UNMAP", "C-MAP", "C-WRPROTECT", "C-FLUSH", "C-SET-OWNER",
                                "S2-BBM") for v in cex["violations"])
    assert "subject_factory(open_tree(" in cex["ops"] and "(12, 39" in cex["ops"]
    assert cex["ops"].rstrip().splitlines()[-1].startswith("assert not h.violations")
    assert "C side: Linux" in cex["tables"]
    assert "kvm_pgtable_stage2_" in cex["c_test"]
    head, fn = cex["c_test"].splitlines()[:2]
    assert head == "/* pgt: 4K pages, ia_bits 39, start level 1; FWB off; mm_ops with the CMO hooks */"
    assert fn.startswith("static void")
    # the counterexample runs as pasted and ends in the judge, which fails as the run did
    env = {}
    with pytest.raises(AssertionError):
        exec(cex["ops"], env)
    assert env["h"].violations and env["h"].pgt.snapshot()["pages"]
    # and the clean tree passes the same budget
    assert check.check_geometry(t, "4k-39", budgets.budget("quick"), 0).status == "passed"


def test_a_real_5_15_tree_builds_runs_and_refutes_a_planted_bug(tmp_path):
    """A cached 5.15 tree (ptspec.proofs.kernel.tree.trees_dir()/linux-5.15*; skipped without one):
    detected as the kvm_arch-taking shape, clean under the spec but for the catalogued eagain-abort,
    and the same planted walk-align refuted on a scratch copy of it."""
    t = need_tree("5.15")
    assert t.version_tuple()[:2] == (5, 15)
    assert t.shape.init_takes == "arch" and T.unsupported(t.shape) is None
    r = check.check_geometry(t, "4k-39", budgets.budget("default"), 0)
    assert r.status == "passed", r.detail
    assert "eagain-abort" in r.detail
    bad = planted.scratch_tree("walk-align", t, tmp_path / "tree")
    assert bad.shape.init_takes == "arch"
    r = check.check_geometry(bad, "4k-39", budgets.budget("default"), 0)
    assert r.status == "refuted", r.detail


def test_a_real_5_14_tree_builds_and_runs_with_its_findings(tmp_path):
    """A cached 5.14 tree (skipped without one): 4-parameter init_flags, owner ids in 63:56, no
    force_pte_cb; clean under the spec but for its catalogued findings; walk-align refuted."""
    t = need_tree("5.14")
    assert t.shape.init == "kvm_pgtable_stage2_init_flags" and T.unsupported(t.shape) is None
    assert t.shape.owner_field == (63, 56)
    r = check.check_geometry(t, "4k-39", budgets.budget("default"), 0)
    assert r.status == "passed", r.detail
    bad = planted.scratch_tree("walk-align", t, tmp_path / "tree")
    r = check.check_geometry(bad, "4k-39", budgets.budget("default"), 0)
    assert r.status == "refuted", r.detail


def test_scratch_edit_refuses_a_tree_of_another_shape():
    with pytest.raises(planted.EditError, match="no definition of __kvm_pgtable_visit"):
        planted.apply_edit("int f(void)\n{\n}\n", planted.C_SOURCE_BUGS["walk-align"])


def test_obligation_is_unknown_without_the_source(monkeypatch):
    monkeypatch.setattr(T, "default_tree", lambda: (None, "the source is not cached"))
    ctx = registry.Context("quick", 0, budgets.budget("quick"))
    r = checks_spec._lockstep("4k-39")(ctx)
    assert r.status == "unknown" and "not cached" in r.detail


# -- the one generator: inputs from spec only ------------------------------------------------
def test_strategies_take_their_inputs_from_spec_only():
    import ast
    import inspect
    from ptspec.proofs.stage2 import strategies as S
    tree = ast.parse(inspect.getsource(S))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any("impl" in m.split(".") for m in imported if m), imported
    from ptspec.spec.arch import geometry as G
    for ps, ia in [(12, 39), (12, 48), (12, 34), (12, 40), (14, 47), (14, 40), (16, 44), (16, 52)]:
        g = S.geometry(ps, ia)
        assert g.start_level == G.stage2_start_level(ia, ps)
        assert g.pgd_pages == G.root_pages(ia, g.start_level, ps)
        assert g.gran.size[3] == 1 << ps
    with pytest.raises(ValueError):
        S.geometry(12, 49)


def test_straddles_start_inside_an_entry_and_reach_the_next():
    from hypothesis import given, settings
    from ptspec.proofs.stage2 import strategies as S
    g = S.geometry(12, 39)

    @settings(max_examples=200, database=None)
    @given(S.straddles(g))
    def check(r):
        a, s = r
        # some level's entry boundary lies strictly inside [a, a + s)
        assert any(a % g.gran.size[lv] and (a // g.gran.size[lv] + 1) * g.gran.size[lv] < a + s
                   for lv in S.straddle_levels(g))
    check()


def test_with_impl_is_one_more_judge_that_never_stops_the_spec():
    """impl-default keeps owner ids in bits 63:56, the C code in 9:2: the comparison finds it,
    while the spec judges the same runs to the end and passes them; 6.1 agrees word for word."""
    t = _tree()
    from ptspec.proofs.kernel.paired import paired_factory
    b = budgets.budget("quick")
    h = paired_factory(t, "impl-default")
    r = check.check_geometry(t, "4k-39", b, 0, harness=h)
    assert r.status == "passed"                                  # the spec's judgement
    d = check.impl_judgement("impl-default", {"4k-39": h})
    assert d.status == "refuted" and d.id == "kernel.diff-impl.impl-default"
    assert any(v.startswith(("KD-WORDS", "KD-RC", "KD-TLB")) for v in d.counterexample["violations"])
    calls = [ln for ln in d.counterexample["ops"].splitlines() if ln.startswith("pgt.")]
    assert 2 <= len(calls) <= 4, d.counterexample["ops"]          # shortened by replay
    same = paired_factory(t, "6.1")
    check.check_geometry(t, "4k-39", b, 0, harness=same)
    ok = check.impl_judgement("6.1", {"4k-39": same})
    assert ok.status == "passed" and ok.examples > 50


def test_cli_exit_1_on_a_violation_with_json_and_junit(tmp_path, capsys):
    t = _tree()
    bad = planted.scratch_tree("unmap-busy-table", t, tmp_path / "tree")
    js, ju = tmp_path / "r.json", tmp_path / "r.xml"
    code = ptspec_main(["check-kernel", "--tree", str(bad.root), "--geometry", "4k-39",
                        "--engines", "lockstep",
                        "--profile", "quick", "--json", str(js), "--junit", str(ju)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "kernel.lockstep.4k-39: REFUTED" in out and "operation sequence (pasteable):" in out
    import json
    rep = json.loads(js.read_text())
    assert rep["summary"]["refuted"] == 1 and rep["kernel"]["version"] == t.version
    assert "kernel.lockstep.4k-39" in ju.read_text() and "<failure" in ju.read_text()


def test_a_tree_calling_a_function_the_shim_lacks_is_refused_naming_it(tmp_path):
    """A tree whose pgtable.c calls a kernel function the shim does not define is refused at
    build time (-Wl,-z,defs), in words that name the function: not checked, exit 2; before, the
    library failed to load and the check reported an internal error of ptspec."""
    t = need_kernel(12)
    tree = T.default_tree()[0]
    assert t is not None
    bad = planted.scratch_tree("walk-align", tree, tmp_path / "tree")     # a scratch copy
    c = bad.pgtable_c
    text = c.read_text()
    head = "int kvm_pgtable_stage2_unmap("
    i = text.index(head)
    j = text.index("{", i) + 1
    c.write_text(text[:i] + "extern void ptspec_no_such_helper(void);\n" + text[i:j]
                 + "\n\tptspec_no_such_helper();\n" + text[j:])
    with pytest.raises(build.BuildError, match="undefined reference to `ptspec_no_such_helper'"):
        build.library(12, T.open_tree(tmp_path / "tree"))
    assert ptspec_main(["check-kernel", "--tree", str(tmp_path / "tree"), "--profile", "quick",
                        "--geometry", "4k-39", "--engines", "lockstep"]) == 2


def test_check_kernel_refuses_report_paths_that_cannot_mean_what_they_say(tmp_path, capsys):
    """As verify: an empty --json or --junit name, or one file for both, is refused in one line
    (exit 2) before anything runs; an earlier run's report at the path is removed at the start."""
    assert ptspec_main(["check-kernel", "--json", "", "--geometry", "4k-39"]) == 2
    assert "--json wants a file name" in capsys.readouterr().out
    same = str(tmp_path / "r")
    assert ptspec_main(["check-kernel", "--json", same, "--junit", same]) == 2
    assert "name the same file" in capsys.readouterr().out
    stale = tmp_path / "stale.json"
    stale.write_text('{"summary": {"passed": 1}}')
    assert ptspec_main(["check-kernel", "--tree", str(tmp_path / "nothing-here"),
                        "--json", str(stale)]) == 2
    assert not stale.exists()
