"""Step lemmas for the other stage-2 walkers: unmap, attributes, flush and destroy.

Models the callbacks of arch/arm64/kvm/hyp/pgtable.c (5.12-5.15 with pKVM owners;
impl/pgtable/stage2_walkers.py) as ``__kvm_pgtable_visit`` calls them: ``stage2_unmap_walker``
(LEAF, and TABLE_POST freeing an empty table), ``stage2_attr_walker`` (wrprotect, mkyoung, mkold,
is_young, relax_perms), ``stage2_flush_walker`` and destroy's ``stage2_free_walker``. Each lemma
runs the impl's step on a whole symbolic table page (``proofs/stage2/z3_steps_model.py``) and
proves, on every path, for every granule and level: the frame (only entry ``idx`` changes,
writes are u64s inside the page, the only other page named is the entry's child), S2-OWN / S2-BA /
S2-TREE of the entry after the step, S2-RC of the page (``1 + n + counted(entry)``; in destroy,
``1 + n`` with ``n`` the counted entries not yet visited, so a page's count is 1 once its walk is
done and a child table's TABLE_POST puts it to 0), the allowed result, no WARN. docs/proofs.md
composes them.
"""

from __future__ import annotations

import z3

from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import stage2_walkers
from ptspec.impl.pgtable import walker as W
from ptspec.impl.pgtable.pte import KVM_PTE_LEAF_ATTR_HI, KVM_PTE_LEAF_ATTR_LO

from ptspec.proofs.stage2.z3_lemmas import combine
from ptspec.proofs.stage2.z3_steps_model import (FIELD, GEOMS, PTP, U64, StepPgt, attr_ok, count,
                                                 counted, desc_addr, entry_props, is_table, label,
                                                 levels, no_warn, page_assumptions, step_inputs, z)
from ptspec.proofs.stage2.z3_steps_replay import (CHILD_FREED, ENTRY, FRAME, NO_WARN, NO_WRITE,
                                                  RC_AFTER, RC_KEPT, RC_UNVISITED, replay, ret_in)


# ------------------------------------------------------------------------------------ unmap

def lemma_unmap_step(rlimit, timeout_ms, deadline=None):
    """unmap's steps stage2_unmap_walker: LEAF on a leaf, annotation or empty entry clears it and
    drops its reference; TABLE_POST on a table entry releases it exactly when the child's count is
    1 (S2-RC of the child: no counted entry left), putting the child to 0, and otherwise leaves it.
    In every case: frame, the page's count is 1 + counted entries, the entry is well formed, the
    only other page named is the child, and the step returns 0 (with and without FWB).

    Fake: z3_steps_model.StepMmOps counts the child table with a symbolic count (page_count /
    put_page on any address but the page's own), and the lemma proves that address is the one the
    entry held: the step could not have touched another page."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                for fwb in ((False, True) if ps == 12 else (False,)):
                    for table in ((False, True) if level < 3 else (False,)):
                        inputs, page, idx, j, old, n, addr, c = step_inputs(
                            SG.entries_per_table(ps), ("addr", "child_rc"))

                        def body(ps=ps, ia=ia, level=level, fwb=fwb, table=table, page=page,
                                 idx=idx, j=j, old=old, n=n, addr=addr, c=c):
                            page.arr = page.arr0
                            page.index_ok, page.fits = [], []
                            pgt = StepPgt(ps, ia, rc=count(n, counted(old)), child_rc=c, fwb=fwb,
                                          cmo=ps == 12)
                            flag = (W.KVM_PGTABLE_WALK_TABLE_POST if table
                                    else W.KVM_PGTABLE_WALK_LEAF)
                            ret = stage2_walkers.stage2_unmap_walker(pgt, addr, addr + 1, level,
                                                                     page, PTP, idx, flag)
                            new = page.after(idx)
                            mm = pgt.mm_ops
                            ok = page.frame(idx, j)
                            ok.update(no_warn(pgt))
                            ok[f"C-UNMAP: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                            ok["S2-RC: count == 1 + counted entries after the step"] = (
                                z(mm.rc) == z(count(n, counted(new))))
                            ok.update(entry_props(new, level, ps, pgt.pa_bits, FIELD, 1))
                            if not table:
                                ok["C-UNMAP: a leaf, annotation or empty entry is 0 after LEAF"] = (
                                    new == 0)
                                ok["S2-RC: (frame) no other page is named"] = z3.BoolVal(
                                    not mm.touched)
                                return ok
                            freed = new == 0
                            ok["S2-RC: (frame) the only other page named is the child"] = (
                                mm.touched_only(desc_addr(old, ps)))
                            ok["S2-LEAK: a table is released exactly when its count is 1, and "
                               "then reaches 0"] = z3.And(freed == (z(c) == 1),
                                                          z3.Implies(freed, z(mm.child_rc) == 0))
                            ok["S2-TREE: a kept table is untouched"] = z3.Implies(
                                z3.Not(freed), z3.And(z(mm.child_rc) == z(c), new == z(old)))
                            return ok
                        assume = page_assumptions(page, idx, j, old, n, level, ps,
                                                  SG.IPA_RANGE[ps][1], FIELD, 1)
                        if table:
                            assume += [is_table(old, level), desc_addr(old, ps) != PTP,
                                       z(c) >= 1, z(c) <= SG.entries_per_table(ps) + 1]
                        else:
                            assume.append(z3.Not(is_table(old, level)))
                        def code(v, table=table):
                            return (f"ret = stage2_walkers.stage2_unmap_walker(pgt, "
                                    f"{v['addr']:#x}, {v['addr'] + 1:#x}, level, tbl, PTP, idx, "
                                    f"W.KVM_PGTABLE_WALK_{'TABLE_POST' if table else 'LEAF'})\n")
                        checks = [FRAME, NO_WARN, RC_AFTER, ENTRY, ret_in(0)] + (
                            [("S2-LEAK: a table is released exactly when its count is 1",
                              "(tbl[idx] == 0) == (child_rc0 == 1)"),
                             ("S2-LEAK: a released table's count reaches 0",
                              "tbl[idx] != 0 or pgt.mm_ops.child_rc == 0")] if table else
                            [("C-UNMAP: a leaf, annotation or empty entry is 0 after LEAF",
                              "tbl[idx] == 0")])
                        yield (label(ps, level, (" TABLE_POST" if table else " LEAF")
                                     + (" fwb" if fwb else "")), body, inputs, assume,
                               replay(ps, ia, level, code, checks, child=True, fwb=fwb))
    return combine(cases(), rlimit, timeout_ms, deadline)


# ---------------------------------------------------------------------------- attribute walker

ATTR_MASK = KVM_PTE_LEAF_ATTR_LO | KVM_PTE_LEAF_ATTR_HI     # what stage2_update_leaf_attrs passes


def lemma_attr_step(rlimit, timeout_ms, deadline=None):
    """The attribute walker's LEAF step stage2_attr_walker (wrprotect, mkyoung, mkold, is_young,
    relax_perms), for any attr_set / attr_clr inside the leaf attribute fields (the mask
    stage2_update_leaf_attrs applies): an invalid entry is left alone, a valid leaf keeps its kind
    and output address; frame, count unchanged and still 1 + counted entries, entry well formed,
    no page named, returns 0."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                inputs, page, idx, j, old, n, addr, aset, aclr = step_inputs(
                    SG.entries_per_table(ps), ("addr", "attr_set", "attr_clr"))

                def body(ps=ps, ia=ia, level=level, page=page, idx=idx, j=j, old=old, n=n,
                         addr=addr, aset=aset, aclr=aclr):
                    page.arr = page.arr0
                    page.index_ok, page.fits = [], []
                    rc0 = count(n, counted(old))
                    pgt = StepPgt(ps, ia, rc=rc0, cmo=ps == 12)
                    data = stage2_walkers.Stage2AttrData(aset, aclr)
                    ret = stage2_walkers.stage2_attr_walker(pgt, data, addr, addr + 1, level, page,
                                                            PTP, idx, W.KVM_PGTABLE_WALK_LEAF)
                    new = page.after(idx)
                    mm = pgt.mm_ops
                    ok = page.frame(idx, j)
                    ok.update(no_warn(pgt))
                    ok[f"C-WRPROTECT: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                    ok["S2-RC: (frame) no other page is named"] = z3.BoolVal(not mm.touched)
                    ok["S2-RC: count unchanged and == 1 + counted entries"] = z3.And(
                        z(mm.rc) == z(rc0), z(mm.rc) == z(count(n, counted(new))))
                    ok.update(entry_props(new, level, ps, pgt.pa_bits, FIELD, 1))
                    ok["S2-OWN: an invalid entry is left alone"] = z3.Implies(
                        z(old) & 1 == 0, new == z(old))
                    ok["S2-BA: a leaf keeps its kind and output address"] = z3.And(
                        new & 3 == z(old) & 3, desc_addr(new, ps) == desc_addr(old, ps))
                    return ok
                assume = page_assumptions(page, idx, j, old, n, level, ps, SG.IPA_RANGE[ps][1],
                                          FIELD, 1)
                # every caller sets only AF, S2AP R/W or (relax_perms) clears XN: nothing of
                # the leaf bits KVM never writes (the spec's S2-BA)
                assume += [z3.Not(is_table(old, level)), z(aset) & (U64 & ~ATTR_MASK) == 0,
                           z(aclr) & (U64 & ~ATTR_MASK) == 0, attr_ok(aset)]
                def code(v):
                    return (f"data = stage2_walkers.Stage2AttrData({v['attr_set']:#x}, "
                            f"{v['attr_clr']:#x})\n"
                            f"ret = stage2_walkers.stage2_attr_walker(pgt, data, {v['addr']:#x}, "
                            f"{v['addr'] + 1:#x}, level, tbl, PTP, idx, W.KVM_PGTABLE_WALK_LEAF)\n")
                checks = [FRAME, NO_WARN, RC_KEPT, RC_AFTER, ENTRY,
                          ("S2-OWN: an invalid entry is left alone",
                           "before[idx] & 1 or tbl[idx] == before[idx]"), ret_in(0)]
                yield (label(ps, level), body, inputs, assume,
                       replay(ps, ia, level, code, checks))
    return combine(cases(), rlimit, timeout_ms, deadline)


# --------------------------------------------------------------------------------- destroy

def lemma_free_step(rlimit, timeout_ms, deadline=None):
    """destroy's steps stage2_free_walker (LEAF on non-table entries, TABLE_POST on tables, the
    child fully visited so its count is 1): a counted entry drops the page's reference, a table
    entry also puts its child to 0 (freed); no entry is written, no other page named. The page's
    count stays 1 + its counted entries not yet visited, so it is 1 when its walk is done and the
    TABLE_POST above it (or destroy's free_pages_exact for a root) releases it."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                for table in ((False, True) if level < 3 else (False,)):
                    inputs, page, idx, j, old, n, c = step_inputs(SG.entries_per_table(ps),
                                                                  ("child_rc",))

                    def body(ps=ps, ia=ia, level=level, table=table, page=page, idx=idx, j=j,
                             old=old, n=n, c=c):
                        page.arr = page.arr0
                        page.index_ok, page.fits = [], []
                        pgt = StepPgt(ps, ia, rc=count(n, counted(old)), child_rc=c)
                        flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF
                        ret = stage2_walkers.stage2_free_walker(pgt, 0, 1, level, page, PTP, idx,
                                                                flag)
                        mm = pgt.mm_ops
                        ok = page.frame(idx, j)
                        ok.update(no_warn(pgt))
                        ok[f"C-DESTROY: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        ok["S2-TREE: (frame) no entry is written"] = z3.BoolVal(page.writes == 0)
                        ok["S2-RC: count == 1 + counted entries not yet visited"] = (
                            z(mm.rc) == z(n) + 1)
                        if table:
                            ok["S2-RC: (frame) the only other page named is the child"] = (
                                mm.touched_only(desc_addr(old, ps)))
                            ok["S2-LEAK: the child is freed (count 0)"] = z(mm.child_rc) == 0
                        else:
                            ok["S2-RC: (frame) no other page is named"] = z3.BoolVal(not mm.touched)
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], FIELD, 1)
                    if table:
                        assume += [is_table(old, level), desc_addr(old, ps) != PTP, z(c) == 1]
                    else:
                        assume.append(z3.Not(is_table(old, level)))
                    def code(v, table=table):
                        return (f"ret = stage2_walkers.stage2_free_walker(pgt, 0, 1, level, tbl, "
                                f"PTP, idx, W.KVM_PGTABLE_WALK_{'TABLE_POST' if table else 'LEAF'})"
                                f"\n")
                    checks = [NO_WRITE, NO_WARN, RC_UNVISITED] + ([CHILD_FREED] if table
                                                                  else []) + [ret_in(0)]
                    yield (label(ps, level, " TABLE_POST" if table else " LEAF"), body, inputs,
                           assume, replay(ps, ia, level, code, checks, child=True))
    return combine(cases(), rlimit, timeout_ms, deadline)


# ------------------------------------------------------------------------------------ flush

def lemma_flush_step(rlimit, timeout_ms, deadline=None):
    """kvm_pgtable_stage2_flush's LEAF step stage2_flush_walker (cache maintenance of a cacheable
    leaf), with and without FWB: it writes no entry, gets, puts or counts no page and returns 0,
    so every invariant of the page is kept (the invariants are functions of the entries and the
    counts alone)."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                # FWB changes which leaves are cleaned, not what is written: 4K covers the branch
                for fwb in ((False, True) if ps == 12 else (False,)):
                    inputs, page, idx, j, old, n = step_inputs(SG.entries_per_table(ps))

                    def body(ps=ps, ia=ia, level=level, fwb=fwb, page=page, idx=idx, j=j, old=old,
                             n=n):
                        page.arr = page.arr0
                        page.index_ok, page.fits = [], []
                        rc0 = count(n, counted(old))
                        pgt = StepPgt(ps, ia, rc=rc0, fwb=fwb)
                        ret = stage2_walkers.stage2_flush_walker(pgt, 0, 1, level, page, PTP, idx,
                                                                 W.KVM_PGTABLE_WALK_LEAF)
                        mm = pgt.mm_ops
                        ok = page.frame(idx, j)
                        ok.update(no_warn(pgt))
                        ok[f"C-FLUSH: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        ok["S2-RC: no entry written, no page named, the count kept"] = z3.And(
                            z3.BoolVal(page.writes == 0 and not mm.touched), z(mm.rc) == z(rc0))
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], FIELD, 1)
                    assume.append(z3.Not(is_table(old, level)))
                    def code(v):
                        return ("ret = stage2_walkers.stage2_flush_walker(pgt, 0, 1, level, tbl, "
                                "PTP, idx, W.KVM_PGTABLE_WALK_LEAF)\n")
                    yield (label(ps, level, " fwb" if fwb else ""), body, inputs, assume,
                           replay(ps, ia, level, code, [NO_WRITE, NO_WARN, RC_KEPT, ret_in(0)],
                                  fwb=fwb))
    return combine(cases(), rlimit, timeout_ms, deadline)


LEMMAS = {
    "unmap": lemma_unmap_step,
    "attr": lemma_attr_step,
    "free": lemma_free_step,
    "flush": lemma_flush_step,
}
