"""Counterexamples of the step lemmas as programs a maintainer can paste.

Models nothing of the kernel: it turns a refuted step lemma's hex inputs (proofs/stage2/
z3_steps_map.py, z3_steps_walkers.py, z3_steps_hyp.py) into a Python program that builds the
concrete page and counts the lemma assumed, runs the impl's step with those arguments, and asserts
the lemma's statements on plain ints -- the per-descriptor ones through the spec's own checks
(spec/stage2/invariants.py) -- so that it stops at the violated one. The same text is executed
for the report's replay (call, entry and counts before and after).
"""

from __future__ import annotations

from ptspec.spec.arch import descriptor as SD
from ptspec.spec.arch import geometry as SG

from ptspec.proofs.stage2.z3_steps_model import PTP, U64


class Page(list):
    """A concrete table page for replaying a counterexample: a list that counts its writes."""

    def __init__(self, ptrs: int, entries: dict):
        super().__init__([0] * ptrs)
        for i, d in entries.items():
            super().__setitem__(i, d)
        self.writes = 0

    def __setitem__(self, i, d):
        self.writes += 1
        super().__setitem__(i, d)


def spec_entry_problems(d: int, level: int, ps: int, pa_bits: int, field=(63, 56), max_id=1,
                        own=True) -> list:
    """The spec's per-descriptor checks (S2-OWN, S2-BA, S2-TREE's table bits) on a plain int: what
    a replayed counterexample asserts about the entry the step wrote."""
    from ptspec.spec.stage2.invariants import _encoding_problems
    out = [] if 0 <= d <= U64 else [f"{d:#x} is not a u64"]
    if d & SD.VALID:
        out += _encoding_problems(d, level, ps, SG.granule_size(level, ps),
                                  SG.level_allows_block(level, ps), 1 << pa_bits)
    elif own and d:
        owner = SD.owner_of(d, field)
        if owner is None or not 1 <= owner <= max_id:
            out.append(f"S2-OWN: {d:#x} is not an owner annotation with id 1..{max_id}")
    if SD.is_table(d, level) and d & SD.TABLE_UPPER_MASK:
        out.append(f"S2-TREE: table descriptor {d:#x} sets bits 63:59")
    return out


# what a replayed step asserts, by statement (names: tbl, before, idx, n, level, ps, pa_bits,
# field, pgt, ret, rc0, child_rc0, errno)
FRAME = ("S2-TREE: (frame) no entry other than idx changes",
         "all(tbl[k] == before[k] for k in range(len(tbl)) if k != idx)")
NO_WARN = ("S2-LEAK: no WARN and no pool misuse", "not pgt.warnings and not pgt.mm_ops.errors")
RC_AFTER = ("S2-RC: count == 1 + counted entries after the step",
            "pgt.mm_ops.rc == 1 + n + (tbl[idx] != 0)")
RC_UNVISITED = ("S2-RC: count == 1 + counted entries not yet visited", "pgt.mm_ops.rc == 1 + n")
RC_KEPT = ("S2-RC: the count is kept", "pgt.mm_ops.rc == rc0")
ENTRY = ("S2-OWN/S2-BA/S2-TREE: the entry is well formed",
         "not spec_entry_problems(tbl[idx], level, ps, pa_bits, field)")
NO_WRITE = ("S2-TREE: (frame) no entry is written", "tbl.writes == 0")
CHILD_FREED = ("S2-LEAK: the child is freed (count 0)", "pgt.mm_ops.child_rc == 0")


def ret_in(*values) -> tuple:
    return (f"the step returns one of {values}", f"ret in {values}")


def replay(ps, ia, level, code, checks, *, held=0, child=False, rc=None, **pgt_kw):
    """A counterexample as a program a maintainer can paste: a page of zeros holding `old` at
    `idx`, the counts the lemma assumed, the step (`code(values)`: statements setting `ret`, run
    here too), then the lemma's statements as asserts -- the first violated one fails. Also the
    call, the entry and the counts before and after, for the report."""
    def show(v):
        ptrs = SG.entries_per_table(ps)
        idx, old, n = v.get("idx", 0) % ptrs, v.get("old", 0), v.get("n", 0)
        rc0 = 1 + n + (old != 0) + held if rc is None else rc
        child_rc0 = v.get("child_rc") if child else None
        kw = "".join(f", {k}={val!r}" for k, val in pgt_kw.items())
        if "alloc_ok" in v:                          # the memcache / pool has a page to give
            kw += f", alloc_ok={bool(v['alloc_ok'])}"
        field = pgt_kw.get("owner_field", (63, 56))
        setup = (f"import errno\n"
                 f"from ptspec.impl.pgtable import hyp, stage2_map, stage2_walkers, walker as W\n"
                 f"from ptspec.proofs.stage2.z3_steps_model import PTP, StepPgt\n"
                 f"from ptspec.proofs.stage2.z3_steps_replay import Page, spec_entry_problems\n"
                 f"ps, level, pa_bits, field = {ps}, {level}, {SG.IPA_RANGE[ps][1]}, {field}\n"
                 f"idx, n = {idx:#x}, {n}         # n: the page's other counted entries\n"
                 f"tbl = Page({ptrs}, {{idx: {old:#x}}})\n"
                 f"before = list(tbl)\n"
                 f"rc0, child_rc0 = {rc0}, {child_rc0}\n"
                 f"pgt = StepPgt({ps}, {ia}, rc=rc0, child_rc=child_rc0{kw})\n")
        step = code(v)
        ns: dict = {}
        exec(setup + step, ns)                       # the replay: the same text as the program
        mm = ns["pgt"].mm_ops
        counts = f"page {PTP:#x}: {rc0} -> {mm.rc}" + (f" (n = {n} other counted entries)"
                                                       if rc is None else "")
        if child:
            counts += f"; child: {child_rc0} -> {mm.child_rc}"
        asserts = "".join(f"assert {expr}, {stmt!r}\n" for stmt, expr in checks)
        warn = ns["pgt"].warnings
        return {"replay": f"{step.strip().splitlines()[-1]}  -> {ns['ret']}"
                          + (f" (WARN: {warn})" if warn else ""),
                "entry": f"tbl[{idx:#x}] at level {level}: {old:#x} -> {ns['tbl'][idx]:#x}",
                "refcount": counts, "program": setup + step + asserts}
    return show
