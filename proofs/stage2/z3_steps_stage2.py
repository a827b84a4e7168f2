"""Step lemmas: every callback of every stage-2 walker keeps S2-RC, S2-OWN, S2-BA and S2-TREE.

Models one call of each walker callback of arch/arm64/kvm/hyp/pgtable.c (5.12-5.15, pKVM owners)
as the walker makes it (``__kvm_pgtable_visit``: TABLE_PRE and TABLE_POST on table entries, LEAF on
the others), run as the impl's own code on a whole symbolic table page
(``proofs/stage2/z3_steps_model.py``): every descriptor, the page's count, the child's count, the
entry index and the step's arguments are symbolic, constrained only by the invariants and by the
walk phase the step runs in. For every granule and every level a walk can reach, z3 proves on every
path of the step:

* FRAME: no entry of the page other than ``idx`` changes, every write is a u64 at an index inside
  the page, and the only other page the step gets, puts or counts is the child the entry points to;
* S2-OWN, S2-BA and S2-TREE (table upper bits, a new table is a fresh page from the memcache) of the
  entry after the step; with the frame, of the whole page;
* S2-RC: the page's count after the step is ``1 + n + counted(entry)`` plus what the walk phase
  holds (the anchor's reference between map's TABLE_PRE and TABLE_POST; nothing in a normal walk),
  with ``n`` the counted entries other than ``idx`` (unchanged, by the frame) -- or, in the phases
  that release a subtree (map under an anchor, destroy), ``1 + n`` with ``n`` the counted entries
  not yet visited, so the page's count reaches 1 exactly when its last entry is visited and the
  TABLE_POST above it puts it to 0 (freed);
* the step's return value is one the operation allows, and nothing WARNs.

The walk phases and how the steps compose into the operation-level theorem are in docs/proofs.md.
"""

from __future__ import annotations

import errno

import z3

from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers
from ptspec.impl.pgtable import walker as W
from ptspec.impl.pgtable.pte import KVM_PTE_LEAF_ATTR_HI, KVM_PTE_LEAF_ATTR_LO

from ptspec.proofs.engines.z3.bv import SymBool, ite
from ptspec.proofs.stage2.z3_lemmas import aligned, combine
from ptspec.proofs.stage2.z3_steps_model import (NEW_TABLE, PTP, U64, StepPgt, counted, desc_addr,
                                                 entry_ok, entry_props, is_table,
                                                 page_assumptions, step_inputs, z)

_MEMCACHE = object()              # the caller's memcache (zalloc_page may still come back empty)
GEOMS = ((12, 48), (14, 48), (16, 52))      # (page_shift, ia_bits): every level a walk reaches
FIELD = (63, 56)


def levels(ps: int, ia: int):
    lo = min(SG.stage2_start_level(i, ps) for i in range(SG.IPA_RANGE[ps][0], SG.IPA_RANGE[ps][1] + 1))
    return range(lo, 4)


def label(ps, level, extra=""):
    return f"{1 << (ps - 10)}K level {level}{extra}"


def count(n, *extra):
    """1 + n + sum(extra) as a symbolic int (each extra a z3 Boolean or an int), no fork."""
    out = n + 1
    for e in extra:
        out = out + (ite(e, 1, 0) if isinstance(e, z3.BoolRef) else e)
    return out


def block_allowed(addr, end, phys, level, ps, pa_bits, force_pte=False) -> z3.BoolRef:
    """The architecture's condition for one leaf at `level` to map [addr, addr + granule) onto
    phys (the s2.z3.block-mapping statement): the level allows a leaf, addr aligned, inside the
    range, the output aligned and inside the PA range or the owner marker."""
    g = SG.granule_size(level, ps)
    if force_pte and level < 3:
        return z3.BoolVal(False)
    return z3.And(z3.BoolVal(SG.level_allows_leaf(level, ps)), aligned(addr, g),
                  z(addr) + g <= z(end),
                  z3.Or(z(phys) == U64, z3.And(aligned(phys, g), z(phys) + g <= (1 << pa_bits))))


def _no_warn(pgt) -> dict:
    mm = pgt.mm_ops
    return {f"S2-LEAK: no WARN and no pool misuse ({pgt.warnings + mm.errors})":
            z3.BoolVal(not pgt.warnings and not mm.errors)}


def _walk_range(addr, end, ps, ia):
    """The walk hands callbacks a page-aligned [addr, end) inside the input range, addr < end."""
    return [aligned(addr, 1 << ps), aligned(end, 1 << ps), z(addr) < z(end), z(end) <= (1 << ia)]


def _phys_ok(phys, ps, pa_bits):
    return z3.Or(z3.And(z(phys) < (1 << pa_bits), aligned(phys, 1 << ps)), z(phys) == U64)


def replay(ps, ia, level, call, *, held=0, child=False, rc=None, **pgt_kw):
    """A counterexample's step run again on plain ints: a page of zeros holding `old` at `idx`,
    the counts the lemma assumed, and `call(values, pgt, tbl, idx) -> (text, ret)`; shows the call,
    the entry and the counts before and after (proofs/stage2/checks_z3.py prints them)."""
    def show(v):
        ptrs = SG.entries_per_table(ps)
        idx, old, n = v.get("idx", 0) % ptrs, v.get("old", 0), v.get("n", 0)
        tbl = [0] * ptrs
        tbl[idx] = old
        rc0 = 1 + n + (old != 0) + held if rc is None else rc
        pgt = StepPgt(ps, ia, rc=rc0, child_rc=v.get("child_rc") if child else None, **pgt_kw)
        text, ret = call(v, pgt, tbl, idx)
        mm = pgt.mm_ops
        counts = f"page {PTP:#x}: {rc0} -> {mm.rc}" + (f" (n = {n} other counted entries)"
                                                       if rc is None else "")
        if child:
            counts += f"; child: {v.get('child_rc')} -> {mm.child_rc}"
        return {"replay": f"{text} -> {ret}" + (f" (WARN: {pgt.warnings})" if pgt.warnings else ""),
                "entry": f"tbl[{idx:#x}] at level {level}: {old:#x} -> {tbl[idx]:#x}",
                "refcount": counts}
    return show


# ------------------------------------------------------------------------ map / set_owner LEAF

def lemma_map_leaf(rlimit, timeout_ms, deadline=None, *, set_owner=False):
    """map's LEAF step stage2_map_walk_leaf outside an anchor (stage2_map_walker_try_leaf, or a new
    table from the memcache, splitting a block): from any page satisfying the invariants, any
    non-table entry, any page-aligned range, output address (or the owner marker) and attributes,
    the step changes entry idx only, leaves it well formed (S2-OWN, S2-BA, S2-TREE: a table it
    installs points to the page it allocated), the page's count is 1 + counted entries after it,
    and it returns 0, -EAGAIN or -ENOMEM (only when the memcache is empty, changing nothing)."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                # force_pte (a block refused at levels 0-2) and the 5.15 owner field 9:2 with 4K
                # only: they change which branch is taken and the annotation's bits, not sizes
                if set_owner:
                    variants = [(True, f) for f in (((63, 56), (9, 2)) if ps == 12
                                                    else ((63, 56),))]
                else:
                    variants = [(False, FIELD)] + ([(True, FIELD)] if level < 3 and ps == 12
                                                   else [])
                for force, field in variants:
                    inputs, page, idx, j, old, n, addr, end, phys, attr, oid = step_inputs(
                        SG.entries_per_table(ps), ("addr", "end", "phys", "attr", "owner_id"))
                    alloc = z3.Bool("alloc_ok")
                    inputs["alloc_ok"] = alloc

                    def body(ps=ps, ia=ia, level=level, force=force, field=field, page=page,
                             idx=idx, j=j, old=old, n=n, addr=addr, end=end, phys=phys, attr=attr,
                             oid=oid, alloc=alloc):
                        page.arr = page.arr0
                        page.index_ok, page.fits = [], []
                        pgt = StepPgt(ps, ia, rc=count(n, counted(old)), alloc_ok=SymBool(alloc),
                                      cmo=ps == 12, owner_field=field, max_owner_id=1)
                        if set_owner:
                            data = stage2_map.Stage2MapData(pgt, U64, _MEMCACHE, owner_id=oid,
                                                            force_pte=True)
                        else:
                            data = stage2_map.Stage2MapData(pgt, phys, _MEMCACHE, force_pte=force)
                            data.attr = attr
                        ret = stage2_map.stage2_map_walk_leaf(addr, end, level, page, PTP, idx,
                                                              data)
                        new = page.after(idx)
                        mm = pgt.mm_ops
                        ok = page.frame(idx, j)
                        ok.update(_no_warn(pgt))
                        ok["FRAME: no other page is named"] = z3.BoolVal(not mm.touched)
                        ok["S2-RC: count == 1 + counted entries after the step"] = (
                            z(mm.rc) == z(count(n, counted(new))))
                        ok.update(entry_props(new, level, ps, pgt.pa_bits, field, 1))
                        ok["S2-TREE: a table the step installs is the page it allocated, and "
                           "every page it allocated is installed"] = z3.And(
                            z3.Implies(is_table(new, level),
                                       z3.And(desc_addr(new, ps) == NEW_TABLE,
                                              z3.BoolVal(len(mm.allocated) == 1))),
                            z3.Implies(z3.Not(is_table(new, level)),
                                       z3.BoolVal(not mm.allocated)))
                        ok[f"C-MAP: returns 0, -EAGAIN or -ENOMEM (got {ret})"] = z3.BoolVal(
                            ret in (0, -errno.EAGAIN, -errno.ENOMEM))
                        if ret == -errno.ENOMEM:
                            ok["C-MAP: -ENOMEM only from an empty memcache, changing nothing"] = (
                                z3.And(z3.Not(alloc), new == z(old)))
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], field, 1)
                    assume += [z3.Not(is_table(old, level))] + _walk_range(addr, end, ps, ia)
                    if set_owner:
                        assume.append(z(oid) <= 1)
                    else:
                        assume.append(_phys_ok(phys, ps, SG.IPA_RANGE[ps][1]))
                    def call(v, pgt, tbl, i, level=level, force=force):
                        phys = U64 if set_owner else v["phys"]
                        data = stage2_map.Stage2MapData(pgt, phys, _MEMCACHE,
                                                        owner_id=v["owner_id"], force_pte=force)
                        data.attr = 0 if set_owner else v["attr"]
                        ret = stage2_map.stage2_map_walk_leaf(v["addr"], v["end"], level, tbl,
                                                              PTP, i, data)
                        return (f"stage2_map_walk_leaf(addr={v['addr']:#x}, end={v['end']:#x}, "
                                f"level={level}, &tbl[{i:#x}]) with phys={phys:#x}, "
                                f"attr={data.attr:#x}, owner_id={v['owner_id']:#x}, "
                                f"force_pte={force}"), ret
                    yield (label(ps, level, f" field {field[0]}:{field[1]}" if set_owner else
                                 " force_pte" if force else ""),
                           body, inputs, assume,
                           replay(ps, ia, level, call, owner_field=field, max_owner_id=1))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_set_owner_leaf(rlimit, timeout_ms, deadline=None):
    """set_owner's LEAF step (stage2_map_walk_leaf with KVM_PHYS_INVALID, force_pte, any owner id
    up to KVM_MAX_OWNER_ID), outside an anchor: the statements of map's LEAF step."""
    return lemma_map_leaf(rlimit, timeout_ms, deadline, set_owner=True)


# ------------------------------------------------------------------ map: the anchor (table->block)

def _anchored_data(pgt, phys, attr, anchored):
    data = stage2_map.Stage2MapData(pgt, phys, _MEMCACHE)
    data.attr = attr
    if anchored:
        data.anchor = ([0], 0)           # an anchor higher up, on another page
        data.childp = NEW_TABLE + (1 << 20)
    return data


def lemma_map_table_pre(rlimit, timeout_ms, deadline=None):
    """map's TABLE_PRE step stage2_map_walk_table_pre on a table entry: with an anchor already set
    it does nothing; otherwise, exactly when a block may map [addr, addr + granule) (the
    architecture's condition, as s2.z3.block-mapping states it), it clears the entry, records the
    anchor (this page, idx) and the child it pointed to, and keeps the page's count: the anchor
    holds the cleared entry's reference until TABLE_POST (count == 1 + n + 1 with the entry 0)."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                if level == 3:
                    continue                   # no table entries at the last level
                # force_pte (set_owner, or a memslot that needs pages): never anchors; 4K only
                for anchored, force in ((False, False), (True, False)) + (
                        ((False, True),) if ps == 12 else ()):
                    inputs, page, idx, j, old, n, addr, end, phys, attr = step_inputs(
                        SG.entries_per_table(ps), ("addr", "end", "phys", "attr"))

                    def body(ps=ps, ia=ia, level=level, anchored=anchored, force=force, page=page,
                             idx=idx, j=j, old=old, n=n, addr=addr, end=end, phys=phys,
                             attr=attr):
                        page.arr = page.arr0
                        page.index_ok, page.fits = [], []
                        pgt = StepPgt(ps, ia, rc=count(n, 1))
                        data = _anchored_data(pgt, phys, attr, anchored)
                        data.force_pte = force
                        before = data.anchor
                        ret = stage2_map.stage2_map_walk_table_pre(addr, end, level, page, PTP,
                                                                   idx, data)
                        new = page.after(idx)
                        mm = pgt.mm_ops
                        ok = page.frame(idx, j)
                        ok.update(_no_warn(pgt))
                        ok[f"C-MAP: TABLE_PRE returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        ok["FRAME: no other page is named"] = z3.BoolVal(not mm.touched)
                        ok["S2-RC: the count is kept (the entry's or the anchor's reference)"] = (
                            z(mm.rc) == z(count(n, 1)))
                        if anchored:
                            ok["C-MAP: under an anchor TABLE_PRE changes nothing"] = z3.And(
                                z3.BoolVal(data.anchor is before and page.writes == 0))
                            return ok
                        allowed = block_allowed(addr, end, phys, level, ps, pgt.pa_bits, force)
                        a = data.anchor
                        set_here = a is not None and a[0] is page
                        ok["S2-TREE: the anchor is set exactly when a block may replace the "
                           "table"] = z3.BoolVal(set_here) == allowed if a is None or set_here \
                            else z3.BoolVal(False)
                        if set_here:
                            ok["S2-TREE: the anchored entry is cleared and its child kept for "
                               "TABLE_POST"] = z3.And(z(a[1]) == z(idx), new == 0,
                                                      z(data.childp) == desc_addr(old, ps))
                        else:
                            ok["FRAME: no anchor, no change"] = z3.And(new == z(old),
                                                                       z3.BoolVal(data.childp is None))
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], FIELD, 1)
                    assume += [is_table(old, level), desc_addr(old, ps) != PTP,
                               _phys_ok(phys, ps, SG.IPA_RANGE[ps][1])] + _walk_range(addr, end,
                                                                                      ps, ia)
                    def call(v, pgt, tbl, i, level=level, anchored=anchored, force=force):
                        data = _anchored_data(pgt, v["phys"], v["attr"], anchored)
                        data.force_pte = force
                        ret = stage2_map.stage2_map_walk_table_pre(v["addr"], v["end"], level,
                                                                   tbl, PTP, i, data)
                        return (f"stage2_map_walk_table_pre(addr={v['addr']:#x}, "
                                f"end={v['end']:#x}, level={level}, &tbl[{i:#x}]) with "
                                f"phys={v['phys']:#x}, anchor {'set' if anchored else 'none'}; "
                                f"anchor after: {'here' if data.anchor and data.anchor[0] is tbl else data.anchor}"), ret
                    yield (label(ps, level, " anchored" if anchored else
                                 " force_pte" if force else ""), body, inputs, assume,
                           replay(ps, ia, level, call))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_map_anchored_leaf(rlimit, timeout_ms, deadline=None):
    """map's LEAF step under an anchor (inside the subtree being replaced by a block): it drops the
    page's reference for a counted entry and changes nothing else (no write, data.phys and the
    anchor kept), so the page's count is 1 + its counted entries not yet visited."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                inputs, page, idx, j, old, n, addr, end, phys, attr = step_inputs(
                    SG.entries_per_table(ps), ("addr", "end", "phys", "attr"))

                def body(ps=ps, ia=ia, level=level, page=page, idx=idx, j=j, old=old, n=n,
                         addr=addr, end=end, phys=phys, attr=attr):
                    page.arr = page.arr0
                    page.index_ok, page.fits = [], []
                    pgt = StepPgt(ps, ia, rc=count(n, counted(old)))
                    data = _anchored_data(pgt, phys, attr, True)
                    anchor = data.anchor
                    ret = stage2_map.stage2_map_walk_leaf(addr, end, level, page, PTP, idx, data)
                    mm = pgt.mm_ops
                    ok = page.frame(idx, j)
                    ok.update(_no_warn(pgt))
                    ok[f"C-MAP: returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                    ok["FRAME: no other page is named, nothing allocated"] = z3.BoolVal(
                        not mm.touched and not mm.allocated)
                    ok["FRAME: the entry, data.phys and the anchor are kept"] = z3.And(
                        z3.BoolVal(page.writes == 0 and data.anchor is anchor),
                        z(data.phys) == z(phys))
                    ok["S2-RC: count == 1 + counted entries not yet visited"] = z(mm.rc) == z(n) + 1
                    return ok
                assume = page_assumptions(page, idx, j, old, n, level, ps, SG.IPA_RANGE[ps][1],
                                          FIELD, 1)
                assume += [z3.Not(is_table(old, level)),
                           _phys_ok(phys, ps, SG.IPA_RANGE[ps][1])] + _walk_range(addr, end, ps,
                                                                                  ia)
                def call(v, pgt, tbl, i, level=level):
                    data = _anchored_data(pgt, v["phys"], v["attr"], True)
                    ret = stage2_map.stage2_map_walk_leaf(v["addr"], v["end"], level, tbl, PTP,
                                                          i, data)
                    return (f"stage2_map_walk_leaf(addr={v['addr']:#x}, end={v['end']:#x}, "
                            f"level={level}, &tbl[{i:#x}]) under an anchor"), ret
                yield label(ps, level), body, inputs, assume, replay(ps, ia, level, call)
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_map_table_post(rlimit, timeout_ms, deadline=None):
    """map's TABLE_POST step stage2_map_walk_table_post. Outside an anchor: nothing. Inside an
    anchored subtree (a table entry below the anchor): the child (every entry visited, count 1) and
    the page's reference for the entry are put, so the child is freed (count 0). At the anchor
    (entry cleared by TABLE_PRE, the anchor holding its reference, the block condition true as
    TABLE_PRE found it): the block is installed, the detached child freed, the anchor's reference
    dropped: count == 1 + counted entries, the new entry is a valid, aligned block."""
    def cases():
        for ps, ia in GEOMS:
            for level in levels(ps, ia):
                if level == 3:
                    continue
                # an anchor is only set where a block may be installed (TABLE_PRE's condition)
                for phase in (("none", "inside", "anchor") if SG.level_allows_leaf(level, ps)
                              else ("none", "inside")):
                    inputs, page, idx, j, old, n, addr, end, phys, attr, c, cp = step_inputs(
                        SG.entries_per_table(ps), ("addr", "end", "phys", "attr", "child_rc",
                                                   "childp"))

                    def body(ps=ps, ia=ia, level=level, phase=phase, page=page, idx=idx, j=j,
                             old=old, n=n, addr=addr, end=end, phys=phys, attr=attr, c=c, cp=cp):
                        page.arr = page.arr0
                        page.index_ok, page.fits = [], []
                        held = 1 if phase == "anchor" else 0
                        rc0 = count(n, counted(old), held)
                        pgt = StepPgt(ps, ia, rc=rc0, child_rc=c, cmo=ps == 12)
                        data = _anchored_data(pgt, phys, attr, phase == "inside")
                        if phase == "anchor":
                            data.anchor = (page, idx)
                            data.childp = cp
                        ret = stage2_map.stage2_map_walk_table_post(addr, end, level, page, PTP,
                                                                    idx, data)
                        new = page.after(idx)
                        mm = pgt.mm_ops
                        ok = page.frame(idx, j)
                        ok.update(_no_warn(pgt))
                        ok[f"C-MAP: TABLE_POST returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        if phase == "none":
                            ok["FRAME: outside an anchor nothing changes"] = z3.And(
                                z3.BoolVal(page.writes == 0 and not mm.touched),
                                z(mm.rc) == z(rc0))
                            return ok
                        child = cp if phase == "anchor" else desc_addr(old, ps)
                        ok["FRAME: the only other page named is the entry's child"] = (
                            mm.touched_only(child))
                        ok["S2-LEAK: the child (all entries visited) is freed"] = (
                            z(mm.child_rc) == 0)
                        if phase == "inside":
                            ok["S2-RC: count == 1 + counted entries not yet visited"] = (
                                z(mm.rc) == z(n) + 1)
                            ok["FRAME: the entry is left for the page's own release"] = (
                                z3.BoolVal(page.writes == 0))
                            return ok
                        ok["C-MAP: the anchor is cleared"] = z3.BoolVal(data.anchor is None)
                        ok["S2-RC: count == 1 + counted entries (the anchor's reference "
                           "dropped)"] = z(mm.rc) == z(count(n, counted(new)))
                        ok.update(entry_props(new, level, ps, pgt.pa_bits, FIELD, 1))
                        ok["S2-TREE: a valid block replaces the anchored table, nothing "
                           "allocated"] = z3.And(z(new) & 3 == 1, z3.BoolVal(not mm.allocated))
                        return ok
                    assume = [z(j) < SG.entries_per_table(ps), z(idx) < SG.entries_per_table(ps),
                              z(n) < SG.entries_per_table(ps), page.before(idx) == z(old),
                              z(c) == 1, _phys_ok(phys, ps, SG.IPA_RANGE[ps][1])]
                    assume += _walk_range(addr, end, ps, ia)
                    if phase == "anchor":
                        # TABLE_PRE cleared the entry and kept its child; the block was allowed;
                        # only map anchors (set_owner forces pages), and map's phys is a PA
                        assume += [z(old) == 0, z(phys) != U64, z(cp) != PTP, aligned(cp, 1 << ps),
                                   block_allowed(addr, end, phys, level, ps,
                                                 SG.IPA_RANGE[ps][1])]
                    else:
                        assume += [is_table(old, level), desc_addr(old, ps) != PTP,
                                   entry_ok(old, level, ps, SG.IPA_RANGE[ps][1], FIELD, 1)]
                    def call(v, pgt, tbl, i, level=level, phase=phase):
                        data = _anchored_data(pgt, v["phys"], v["attr"], phase == "inside")
                        if phase == "anchor":
                            data.anchor, data.childp = (tbl, i), v["childp"]
                        ret = stage2_map.stage2_map_walk_table_post(v["addr"], v["end"], level,
                                                                    tbl, PTP, i, data)
                        return (f"stage2_map_walk_table_post(addr={v['addr']:#x}, "
                                f"end={v['end']:#x}, level={level}, &tbl[{i:#x}]) {phase} "
                                f"(anchor's child {v['childp']:#x})"), ret
                    yield (label(ps, level, f" {phase}"), body, inputs, assume,
                           replay(ps, ia, level, call, held=int(phase == "anchor"), child=True))
    return combine(cases(), rlimit, timeout_ms, deadline)


# ------------------------------------------------------------------------------------ unmap

def lemma_unmap_step(rlimit, timeout_ms, deadline=None):
    """unmap's steps stage2_unmap_walker: LEAF on a leaf, annotation or empty entry clears it and
    drops its reference; TABLE_POST on a table entry releases it exactly when the child's count is
    1 (S2-RC of the child: no counted entry left), putting the child to 0, and otherwise leaves it.
    In every case: frame, the page's count is 1 + counted entries, the entry is well formed, the
    only other page named is the child, and the step returns 0 (with and without FWB)."""
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
                            flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF
                            ret = stage2_walkers.stage2_unmap_walker(pgt, addr, addr + 1, level,
                                                                     page, PTP, idx, flag)
                            new = page.after(idx)
                            mm = pgt.mm_ops
                            ok = page.frame(idx, j)
                            ok.update(_no_warn(pgt))
                            ok[f"C-UNMAP: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                            ok["S2-RC: count == 1 + counted entries after the step"] = (
                                z(mm.rc) == z(count(n, counted(new))))
                            ok.update(entry_props(new, level, ps, pgt.pa_bits, FIELD, 1))
                            if not table:
                                ok["C-UNMAP: a leaf, annotation or empty entry is 0 after LEAF"] = (
                                    new == 0)
                                ok["FRAME: no other page is named"] = z3.BoolVal(not mm.touched)
                                return ok
                            freed = new == 0
                            ok["FRAME: the only other page named is the child"] = (
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
                        def call(v, pgt, tbl, i, level=level, table=table):
                            flag = (W.KVM_PGTABLE_WALK_TABLE_POST if table
                                    else W.KVM_PGTABLE_WALK_LEAF)
                            ret = stage2_walkers.stage2_unmap_walker(pgt, v["addr"], v["addr"] + 1,
                                                                     level, tbl, PTP, i, flag)
                            return (f"stage2_unmap_walker(addr={v['addr']:#x}, level={level}, "
                                    f"&tbl[{i:#x}], {'TABLE_POST' if table else 'LEAF'})"), ret
                        yield (label(ps, level, (" TABLE_POST" if table else " LEAF")
                                     + (" fwb" if fwb else "")), body, inputs, assume,
                               replay(ps, ia, level, call, child=True, fwb=fwb))
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
                    ok.update(_no_warn(pgt))
                    ok[f"C-WRPROTECT: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                    ok["FRAME: no other page is named"] = z3.BoolVal(not mm.touched)
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
                assume += [z3.Not(is_table(old, level)), z(aset) & (U64 & ~ATTR_MASK) == 0,
                           z(aclr) & (U64 & ~ATTR_MASK) == 0]
                def call(v, pgt, tbl, i, level=level):
                    data = stage2_walkers.Stage2AttrData(v["attr_set"], v["attr_clr"])
                    ret = stage2_walkers.stage2_attr_walker(pgt, data, v["addr"], v["addr"] + 1,
                                                            level, tbl, PTP, i,
                                                            W.KVM_PGTABLE_WALK_LEAF)
                    return (f"stage2_attr_walker(set={v['attr_set']:#x}, clr={v['attr_clr']:#x}, "
                            f"level={level}, &tbl[{i:#x}])"), ret
                yield label(ps, level), body, inputs, assume, replay(ps, ia, level, call)
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
                        ok.update(_no_warn(pgt))
                        ok[f"C-DESTROY: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        ok["FRAME: no entry is written"] = z3.BoolVal(page.writes == 0)
                        ok["S2-RC: count == 1 + counted entries not yet visited"] = (
                            z(mm.rc) == z(n) + 1)
                        if table:
                            ok["FRAME: the only other page named is the child"] = (
                                mm.touched_only(desc_addr(old, ps)))
                            ok["S2-LEAK: the child is freed (count 0)"] = z(mm.child_rc) == 0
                        else:
                            ok["FRAME: no other page is named"] = z3.BoolVal(not mm.touched)
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], FIELD, 1)
                    if table:
                        assume += [is_table(old, level), desc_addr(old, ps) != PTP, z(c) == 1]
                    else:
                        assume.append(z3.Not(is_table(old, level)))
                    def call(v, pgt, tbl, i, level=level, table=table):
                        flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF
                        ret = stage2_walkers.stage2_free_walker(pgt, 0, 1, level, tbl, PTP, i, flag)
                        return (f"stage2_free_walker(level={level}, &tbl[{i:#x}], "
                                f"{'TABLE_POST' if table else 'LEAF'})"), ret
                    yield (label(ps, level, " TABLE_POST" if table else " LEAF"), body, inputs,
                           assume, replay(ps, ia, level, call, child=True))
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
                        ok.update(_no_warn(pgt))
                        ok[f"C-FLUSH: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        ok["S2-RC: no entry written, no page named, the count kept"] = z3.And(
                            z3.BoolVal(page.writes == 0 and not mm.touched), z(mm.rc) == z(rc0))
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], FIELD, 1)
                    assume.append(z3.Not(is_table(old, level)))
                    def call(v, pgt, tbl, i, level=level):
                        ret = stage2_walkers.stage2_flush_walker(pgt, 0, 1, level, tbl, PTP, i,
                                                                 W.KVM_PGTABLE_WALK_LEAF)
                        return f"stage2_flush_walker(level={level}, &tbl[{i:#x}])", ret
                    yield (label(ps, level, " fwb" if fwb else ""), body, inputs, assume,
                           replay(ps, ia, level, call, fwb=fwb))
    return combine(cases(), rlimit, timeout_ms, deadline)


LEMMAS = {
    "map-leaf": lemma_map_leaf,
    "set-owner-leaf": lemma_set_owner_leaf,
    "map-table-pre": lemma_map_table_pre,
    "map-anchored-leaf": lemma_map_anchored_leaf,
    "map-table-post": lemma_map_table_post,
    "unmap": lemma_unmap_step,
    "attr": lemma_attr_step,
    "free": lemma_free_step,
    "flush": lemma_flush_step,
}
