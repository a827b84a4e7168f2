"""VM harness: one impl VM (host, KVM, guest, VMM) driven step by step and judged by the spec.

``VmHarness(layout)`` builds the host VMAs and the memslots of a layout, then ``step(op, **args)``
runs one VM-level operation, snapshots the raw state (``ptspec.impl.mmu.state``) and asks the spec for S2-*
(``spec.check_state``), MS, MS-PERM and DIRTY (``ptspec.spec.mmu.invariants``) on the new state and for PROGRESS,
C-MMU-*, the DIRTY step rule (``ptspec.spec.mmu.contracts``) and S2-BBM (``ptspec.spec.stage2.bbm``: every valid translation
the whole mmu.c operation changed was invalidated by it) on the transition. Every call is also recorded as
a line of Python, so a failing run prints as a program a reviewer can paste into a test.

A layout is a dict: ``page_shift``, ``ia_bits``, ``vmas`` (each ``{"start", "size", "kind",
"writable", "shift", "thp", "pgoff"}``), ``slots`` (each ``{"id", "flags", "gpa", "size", "uaddr"}``),
and the VM options ``manual_protect``, ``init_set``, ``dic``, ``fwb``.
"""

from __future__ import annotations

import copy
import errno

from ptspec import spec
from ptspec.proofs.engines import minimize
from ptspec.proofs.stage2 import returns
from ptspec.impl.mmu.guest import Guest, Vmm, once
from ptspec.impl.mmu.host import HostMM
from ptspec.impl.mmu.kvm import Kvm
from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu.state import mmu_raw_state
from ptspec.spec.stage2.bbm import check_bbm
from ptspec.spec.stage2.walkcache import check_bbm_walk
from ptspec.spec.mmu.cache import VmCacheJudge
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.arch.walk import DESC, LEVEL, START
from ptspec.spec.stage2.segments import covering, is_valid
from ptspec.spec.mmu.invariants import check_mmu_state, check_mmu_warnings
from ptspec.spec.mmu.state import MmuView
from ptspec.spec.mmu.contracts import check_mmu_step

ERRNO = {-getattr(errno, n): f"-errno.{n}" for n in
         ("EINVAL", "ENOMEM", "EFAULT", "EEXIST", "ENOENT", "EAGAIN", "ENOEXEC", "ERANGE")}


def h(v):
    return hex(v) if isinstance(v, int) and not isinstance(v, bool) and v > 9 else repr(v)


class VmHarness:
    """One VM checked against the spec after every step."""

    def __init__(self, layout: dict, *, check: bool = True, arena_pages: int = 4096):
        self.layout = layout
        ps, ia = layout["page_shift"], layout["ia_bits"]
        self.check = check
        self.host = HostMM(ps)
        self.lines = ["from ptspec.impl.mmu.host import HostMM",
                      "from ptspec.impl.mmu.kvm import Kvm",
                      "from ptspec.impl.mmu.guest import Guest, Vmm, once",
                      "from ptspec.impl.mmu.stage2 import kvm_phys_addr_ioremap, stage2_unmap_vm",
                      f"host = HostMM({ps})"]
        for v in layout["vmas"]:
            kw = {"writable": v.get("writable", True)}
            if v["kind"] == "hugetlb":
                kw["shift"] = v["shift"]
            if v["kind"] == "anon" and v.get("thp"):
                kw["thp"] = True
            if v["kind"] == "pfnmap" and v.get("pgoff") is not None:
                kw["pgoff"] = v["pgoff"]
            self.host.mmap(v["start"], v["size"], v["kind"], **kw)
            self.lines.append(f"host.mmap({h(v['start'])}, {h(v['size'])}, {v['kind']!r}"
                              + "".join(f", {k}={h(x)}" for k, x in kw.items()) + ")")
        opts = {k: layout.get(k, False) for k in ("manual_protect", "init_set", "dic", "fwb")}
        self.kvm = Kvm(ps, ia, host=self.host, arena_pages=arena_pages, **opts)
        self.lines.append(f"kvm = Kvm({ps}, {ia}, host=host, arena_pages={arena_pages}"
                          + "".join(f", {k}={x}" for k, x in opts.items() if x) + ")")
        self.guest = Guest(self.kvm)
        self.vmm = Vmm(self.kvm, self.guest)
        self.lines.append("guest = Guest(kvm); vmm = Vmm(kvm, guest)")
        self.violations: list = []
        self.cache = VmCacheJudge(dic=bool(opts["dic"]))     # CMO-POC / CMO-POU across the steps
        self.findings: dict = {}        # finding id -> times seen (perm_block_finding)
        self.steps = 0
        self.trace: list = []           # what was run after the layout's slots: (op, args)
        self.calls: list = []           # the same, as harness calls (source, impl line it ran)
        self.initial = (copy.deepcopy(layout), arena_pages)      # what ``replay`` starts from
        self.make_imports = ["from ptspec.proofs.mmu.harness import VmHarness"]
        self._view = self._snapshot() if check else None
        for s in layout["slots"]:
            self._step("set_memory_region", slot=s["id"], flags=s["flags"],
                      guest_phys_addr=s["gpa"], memory_size=s["size"], userspace_addr=s["uaddr"])

    # -- snapshots ---------------------------------------------------------------------------
    def raw_state(self) -> dict:
        return mmu_raw_state(self.kvm, self.guest, drain_log=False)

    @property
    def make_source(self) -> str:
        """The harness's construction as Python (rendered when a program is asked for)."""
        layout, arena_pages = self.initial
        return minimize.call("VmHarness", {"arena_pages": arena_pages}, layout)

    def _snapshot(self):
        raw = mmu_raw_state(self.kvm, self.guest)
        prev = getattr(self, "_view", None)
        # the stage-2 part loaded with the previous state lending its unchanged pages and walk
        view = MmuView(raw, spec.load_state(raw, prev.s2 if prev is not None else None))
        view.warn_violations = check_mmu_warnings(raw)
        return view

    @property
    def ops_source(self) -> str:
        return "\n".join(self.lines)

    # -- running operations ----------------------------------------------------------------------
    def _call(self, op, a):
        kvm, host, guest, vmm = self.kvm, self.host, self.guest, self.vmm
        if op == "set_memory_region":
            ret = vmm.set_memory_region(a["slot"], a["flags"], a["guest_phys_addr"],
                                        a["memory_size"], a["userspace_addr"])
            return ret, {}, (f"vmm.set_memory_region({a['slot']}, {h(a['flags'])}, "
                             f"{h(a['guest_phys_addr'])}, {h(a['memory_size'])}, "
                             f"{h(a['userspace_addr'])})")
        if op == "access":
            pre = []
            race = a.get("race")
            if race:
                what, hva = race
                pre.append(f"kvm.after_gfn_to_pfn = once(lambda k: host.{what}({h(hva)}"
                           f"{', ' + h(host.sz.PAGE_SIZE) if what == 'zap' else ''}))")
                fn = {"split_thp": lambda k: host.split_thp(hva),
                      "zap": lambda k: host.zap(hva, host.sz.PAGE_SIZE),
                      "ksm_merge": lambda k: host.ksm_merge(hva)}[what]
                kvm.after_gfn_to_pfn = once(fn)
            if a.get("enomem"):
                mm = kvm.pgt.mm_ops
                mm.fail_at = {mm.nr_allocs}
                pre.append("kvm.pgt.mm_ops.fail_at = {kvm.pgt.mm_ops.nr_allocs}")
            o = guest.access(a["ipa"], a["kind"])
            kvm.after_gfn_to_pfn = None
            if kvm.pgt is not None:
                kvm.pgt.mm_ops.fail_at = set()
            line = "\n".join(pre + [f"guest.access({h(a['ipa'])}, {a['kind']!r})"])
            return o.result, o.as_dict(), line
        if op == "split_thp":
            pmd = host.sz.PMD_SIZE
            base = a["hva"] & ~(pmd - 1)
            done = host.split_thp(a["hva"])
            return done, {"invalidated": [base, base + pmd] if done else None}, \
                f"host.split_thp({h(a['hva'])})"
        if op == "zap":
            lo, hi = host.zap(a["hva"], a["size"])
            return None, {"invalidated": [lo, hi]}, \
                f"host.zap({h(a['hva'])}, {h(a['size'])})"
        if op == "ksm":
            ps = host.sz.PAGE_SIZE
            done = host.ksm_merge(a["hva"])
            base = a["hva"] & ~(ps - 1)
            return done, {"invalidated": [base, base + ps] if done else None}, \
                f"host.ksm_merge({h(a['hva'])})"
        if op in ("age", "test_age"):
            leaf = host.host_leaf(a["hva"])
            a["start"], a["end"] = (leaf[0], leaf[0] + leaf[1]) if leaf else (a["hva"], a["hva"])
            young = host.age(a["hva"]) if op == "age" else host.test_young(a["hva"])
            return young, {}, f"host.{'age' if op == 'age' else 'test_young'}({h(a['hva'])})"
        if op in ("get_dirty_log", "clear_dirty_log"):
            slot = next((s for s in kvm.memslots if s.id == a["slot"]), None)
            bm = slot.dirty_bitmap if slot is not None else None
            before = int.from_bytes(bm, "little") if bm is not None else 0
            if op == "get_dirty_log":
                got = vmm.get_dirty_log(a["slot"])
                ret = got if got < 0 else bin(got).count("1")
                line = f"vmm.get_dirty_log({a['slot']})"
            else:
                ret = vmm.clear_dirty_log(a["slot"], a["first"], a["num"])
                line = f"vmm.clear_dirty_log({a['slot']}, {h(a['first'])}, {h(a['num'])})"
            after = int.from_bytes(bm, "little") if bm is not None else 0
            return ret, {"cleared": before & ~after}, line
        if op == "ioremap":
            ret = mmu_stage2.kvm_phys_addr_ioremap(kvm, a["ipa"], a["pa"], a["size"], a["writable"])
            return ret, {}, (f"kvm_phys_addr_ioremap(kvm, {h(a['ipa'])}, {h(a['pa'])}, "
                             f"{h(a['size'])}, {a['writable']})")
        if op == "unmap_vm":
            mmu_stage2.stage2_unmap_vm(kvm)
            return None, {}, "stage2_unmap_vm(kvm)"
        raise ValueError(f"unknown VM operation {op!r}")

    def program(self) -> str:
        """The run as a program that replays it through a fresh harness (same layout) and ends in
        the judge (``assert not h.violations``): runnable as pasted."""
        return minimize.program(self.make_imports, self.make_source, self.calls)

    def step(self, op, **args):
        """Run one operation and check it; returns (ret, violations of this step). Recorded in
        the trace, so that ``replay`` can run it again."""
        self.trace.append((op, dict(args)))
        self.calls.append((minimize.call("h.step", args, op), ""))
        mark = len(self.lines)
        try:
            return self._step(op, **args)
        finally:
            if len(self.lines) > mark:
                self.calls[-1] = (self.calls[-1][0], self.lines[-1].replace("\n", "; "))

    def _step(self, op, **args):
        try:
            with returns.within(op):
                ret, out, line = self._call(op, args)
        except returns.SubjectFault as exc:
            # C-MMU-RETURNS: the operation did not come back; its half-done state is not judged
            self.steps += 1
            self.lines.append(f"{op}({', '.join(f'{k}={h(v)}' for k, v in args.items())})"
                              f"  # does not return: {exc}")
            found = [spec.Violation("C-MMU-RETURNS", f"{op}: {exc}", {"op": op})]
            self.violations.extend(found)
            return None, found
        self.steps += 1
        shown = ERRNO.get(ret, h(ret)) if isinstance(ret, int) and not isinstance(ret, bool) \
            else repr(ret)
        if op == "access":
            shown = f"{ret} after {len(out['faults'])} faults"
        self.lines.append(f"{line}  # -> {shown}")
        if not self.check:
            return ret, []
        pre = self._view
        post = self._snapshot()
        self._view = post
        step = {"op": op, "args": args, "ret": ret, "out": out, "dic": self.kvm.dic}
        found = (spec.check_state(post.s2) + check_mmu_state(post) + check_mmu_step(pre, step, post)
                 + check_bbm(pre.s2, _VmStep(op), post.s2)
                 + check_bbm_walk(pre.s2, _VmStep(op), post.s2)
                 + self.cache.check(pre, op, post))
        known = [v for v in found if perm_block_finding(pre, op, post, v)]
        if known:
            self.findings["perm-block-no-clean"] = self.findings.get("perm-block-no-clean", 0) + 1
            for v in known:     # counted once: its uncleaned pages are not reported again later
                self.cache.judge.settle(v, post.s2.page_shift)
            found = [v for v in found if v not in known]
        if post.warn_violations and not pre.warn_violations:
            found += post.warn_violations
        self.violations.extend(found)
        return ret, found


def replay(trace: list, layout: dict, arena_pages: int = 1024):
    """Run a recorded trace on a fresh ``VmHarness(layout)``, stopping at the first step with a
    violation; returns (harness, used) for ``minimize.shortest``."""
    h = VmHarness(layout, arena_pages=arena_pages)
    if h.violations:
        return h, 0
    for i, (op, args) in enumerate(trace):
        _, found = h.step(op, **args)
        if found:
            return h, i + 1
    return h, len(trace)


def perm_block_finding(pre, op, post, v) -> bool:
    """Finding 4 of docs/mmu.md (5.13): a permission fault whose mapping size is larger than the
    fault granule (dirty logging was switched off over a THP or hugetlb page the guest had as
    pages) maps the whole block without cleaning it, because user_mem_abort cleans only on
    faults other than FSC_PERM. Its signature in the states: a CMO-POC violation of an access
    step that logged no D-cache clean, on a block that replaced a mapping of the same output
    (the page the permission fault was taken on) inside its range; and CMO-POU of the same block
    when the fault was an execution: its I-cache invalidation then meets uncleaned pages."""
    vid = getattr(v, "inv", None)
    if (op != "access" or vid not in ("CMO-POC", "CMO-POU") or "leaf_ipa" not in v.where
            or any(e[0] == "dcache" for e in post.s2.tlb_log)):
        return False
    lo, level = v.where["leaf_ipa"], v.where["level"]
    hi = lo + G.granule_size(level, post.s2.page_shift)
    base = D.address(v.where["desc"], post.s2.page_shift)
    ps = pre.s2.page_shift
    return any(is_valid(p) and p[LEVEL] > level and D.address(p[DESC], ps) - p[START] == base - lo
               for p in covering(pre.s2, lo, hi))


class _VmStep:
    """What ptspec.spec.stage2.bbm reads of a step: its op. VM-level ops get no caller-flushes exemption: the
    whole mmu.c operation, its own TLB flushes included, is the step."""

    def __init__(self, op):
        self.op = f"vm:{op}"


def counterexample(harness: VmHarness, violations: list) -> dict:
    """The program, the violations, and the stage-2 tables in ptdump style."""
    from ptspec.proofs.stage2.ptdump import render
    raw = harness.raw_state()
    try:
        tables = render(spec.load_state(raw))
    except Exception as exc:          # a broken state may not draw; keep the rest
        tables = f"(tables not drawable: {exc})"
    slots = "\n".join(f"# memslot {s.id}: gfn {s.base_gfn:#x}+{s.npages:#x} hva "
                      f"{s.userspace_addr:#x} flags {s.flags:#x}" for s in harness.kvm.memslots)
    last = harness.lines[-1].split("(")[0] if harness.lines else ""
    return {"ops": harness.program(), "violations": [str(v) for v in violations],
            "tables": slots + "\n" + tables, "kernel_function": KERNEL_OF.get(last, last)}


KERNEL_OF = {"guest.access": "kvm_handle_guest_abort", "vmm.set_memory_region":
             "kvm_arch_prepare_memory_region", "host.split_thp": "kvm_unmap_gfn_range",
             "host.zap": "kvm_unmap_gfn_range", "host.ksm_merge": "kvm_set_spte_gfn",
             "host.age": "kvm_age_gfn", "host.test_young": "kvm_test_age_gfn",
             "vmm.get_dirty_log": "kvm_mmu_write_protect_pt_masked",
             "vmm.clear_dirty_log": "kvm_mmu_write_protect_pt_masked",
             "kvm_phys_addr_ioremap": "kvm_phys_addr_ioremap", "stage2_unmap_vm": "stage2_unmap_vm"}
