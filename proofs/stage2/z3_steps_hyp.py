"""Step lemma: hyp stage 1's map callback keeps S1-RC, S1-BA and S1-TREE on a symbolic page.

Models one LEAF call of ``hyp_map_walker`` (arch/arm64/kvm/hyp/pgtable.c, 5.15; the impl's
``HypMapData.walk``) on a whole symbolic table page (``proofs/stage2/z3_steps_model.py``): any
page whose entries satisfy the hyp invariants (S1-BA, S1-TREE), any non-table entry, any
page-aligned range and output address and any attributes. z3 proves, for every granule and level:

* the frame: only entry idx changes, every write is a u64 inside the page, no page is got, put or
  counted (S1-RC: hyp table pages keep refcount 1 in 5.15, no per-entry counting);
* S1-BA / S1-TREE of the entry after the step (the old entry: any descriptor S1-BA and S1-TREE
  allow; an invalid one may hold anything, as the spec does not judge invalid hyp entries): a
  leaf aligned and in range at a level that allows it, a table pointing at the page just taken
  from the pool (``zalloc_page(NULL)``: the pool's contract -- a zeroed page, count 1, in no
  table -- is the fake's, z3_steps_model.StepMmOps);
* the result is 0, -ENOMEM only when the pool is empty (nothing changed), -EINVAL only at the last
  level (the kernel's WARN, nothing changed); a WARN for a conflicting mapping leaves the entry,
  and the other WARN (kvm_set_table_pte over a valid entry: a page mapped inside an existing block
  that cannot be re-created) replaces the block by the new table, as the kernel does.
"""

from __future__ import annotations

import errno

import z3

from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import hyp

from ptspec.proofs.engines.z3.bv import sym
from ptspec.proofs.stage2.z3_lemmas import aligned, combine
from ptspec.proofs.stage2.z3_steps_model import (GEOMS, NEW_TABLE, PTP, StepPgt, attr_ok,
                                                 desc_addr, entry_props, is_table, label,
                                                 page_assumptions, step_inputs, z)
from ptspec.proofs.stage2.z3_steps_replay import FRAME, replay, ret_in


def lemma_hyp_map_step(rlimit, timeout_ms, deadline=None):
    """hyp stage 1's map step (hyp_map_walker: hyp_map_walker_try_leaf, or a new table from the
    pool): from any page satisfying S1-BA/S1-TREE, any non-table entry, any page-aligned range
    and any page-aligned output address inside the PA range (the callers' contract, which the
    kernel does not check), the step changes entry idx only, leaves it well formed, names no page
    but the one it allocated (S1-RC: counts stay 1), and returns 0, -ENOMEM (empty pool) or
    -EINVAL (last level, WARN), the last two changing nothing.

    Fake: the pool is z3_steps_model.StepMmOps.zalloc_page(NULL) -- a zeroed page in no table, page
    aligned and inside the PA range, count 1, or nothing (``alloc_ok`` = 0): hyp_pool's contract;
    the step only encodes the page's address into the table descriptor."""
    def cases():
        for ps, ia in GEOMS:
            for level in range(4):
                inputs, page, idx, j, old, n, addr, end, phys, attr = step_inputs(
                    SG.entries_per_table(ps), ("addr", "end", "phys", "attr"))
                alloc = sym("alloc_ok", 1, inputs)            # the pool has a page to give

                def body(ps=ps, ia=ia, level=level, page=page, idx=idx, j=j, old=old, n=n,
                         addr=addr, end=end, phys=phys, attr=attr, alloc=alloc):
                    page.arr = page.arr0
                    page.index_ok, page.fits = [], []
                    pgt = StepPgt(ps, ia, rc=1, alloc_ok=alloc, cmo=False)
                    data = hyp.HypMapData(pgt, phys)
                    data.attr = attr
                    ret = data.walk(addr, end, level, page, PTP, idx, 1)
                    new = page.after(idx)
                    mm = pgt.mm_ops
                    ok = page.frame(idx, j, "S1-TREE")
                    ok["S1-RC: no page is got, put or counted; counts stay 1"] = z3.BoolVal(
                        not mm.touched and not mm.errors and mm.rc == 1)
                    ok.update(entry_props(new, level, ps, pgt.pa_bits, inv="S1"))
                    ok["S1-TREE: a table the step installs is the page it allocated, and every "
                       "page it allocated is installed"] = z3.And(
                        z3.Implies(is_table(new, level), z3.And(
                            desc_addr(new, ps) == NEW_TABLE, z3.BoolVal(len(mm.allocated) == 1))),
                        z3.Implies(z3.Not(is_table(new, level)), z3.BoolVal(not mm.allocated)))
                    ok[f"C-HYP-MAP: returns 0, -ENOMEM or -EINVAL (got {ret})"] = z3.BoolVal(
                        ret in (0, -errno.ENOMEM, -errno.EINVAL))
                    if ret == -errno.ENOMEM:
                        ok["C-HYP-MAP: -ENOMEM only from an empty pool, changing nothing"] = (
                            z3.And(z(alloc) == 0, new == z(old)))
                    if ret == -errno.EINVAL:
                        ok["C-HYP-MAP: -EINVAL only at the last level, changing nothing"] = (
                            z3.And(z3.BoolVal(level == 3), new == z(old)))
                    if pgt.warnings:
                        # hyp_pte_needs_update's WARN keeps the old leaf; kvm_set_table_pte's
                        # WARN_ON is the kernel replacing a valid block by a new table
                        ok["C-HYP-MAP: a WARN keeps the entry, or splits a valid block into the "
                           "new table"] = z3.Or(new == z(old), z3.And(
                               z(old) & 1 == 1, is_table(new, level),
                               desc_addr(new, ps) == NEW_TABLE))
                    return ok
                assume = page_assumptions(page, idx, j, old, n, level, ps, SG.IPA_RANGE[ps][1],
                                          None)
                assume += [z3.Not(is_table(old, level)), aligned(addr, 1 << ps),
                           aligned(end, 1 << ps), z(addr) < z(end), z(end) <= (1 << ia),
                           aligned(phys, 1 << ps),
                           # the callers' contract: hyp maps physical memory. The kernel does not
                           # check it: kvm_block_mapping_supported treats a PA beyond the range as
                           # KVM_PHYS_INVALID (no alignment check) and a block is installed from it
                           z(phys) < (1 << SG.IPA_RANGE[ps][1]),
                           attr_ok(attr, hyp=True)]       # hyp_set_prot_attr's (prot-attr)
                def code(v):
                    return (f"data = hyp.HypMapData(pgt, {v['phys']:#x})\n"
                            f"data.attr = {v['attr']:#x}\n"
                            f"ret = data.walk({v['addr']:#x}, {v['end']:#x}, level, tbl, PTP, idx, "
                            f"W.KVM_PGTABLE_WALK_LEAF)   # hyp_map_walker\n")
                checks = [("S1-TREE: (frame) no entry other than idx changes", FRAME[1]),
                          ("S1-RC: no page is got, put or counted; counts stay 1",
                           "not pgt.mm_ops.touched and not pgt.mm_ops.errors and "
                           "pgt.mm_ops.rc == 1"),
                          ("S1-BA/S1-TREE: the entry is well formed",
                           "not spec_entry_problems(tbl[idx], level, ps, pa_bits, own=False)"),
                          ret_in(0, -errno.ENOMEM, -errno.EINVAL)]
                yield (label(ps, level), body, inputs, assume,
                       replay(ps, ia, level, code, checks, rc=1, cmo=False))
    return combine(cases(), rlimit, timeout_ms, deadline)


LEMMAS = {"hyp-map": lemma_hyp_map_step}
