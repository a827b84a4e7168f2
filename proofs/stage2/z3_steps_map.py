"""Step lemmas for the map walker: map and set_owner keep S2-RC, S2-OWN, S2-BA and S2-TREE.

Models each callback of ``stage2_map_walker`` (arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 with pKVM
owners; impl/pgtable/stage2_map.py) as ``__kvm_pgtable_visit`` calls it, in each walk phase:
LEAF outside an anchor (``stage2_map_walker_try_leaf``, or a new table from the memcache that
splits a block) for map and for set_owner, TABLE_PRE (the anchor: a table that a block may
replace), LEAF under an anchor (references of the detached subtree dropped) and TABLE_POST (inside
the anchored subtree: the child freed; at the anchor: the block installed, the detached table freed,
the anchor's reference dropped). Each lemma runs the impl's step on a whole symbolic table page
(``proofs/stage2/z3_steps_model.py``) and proves, on every path, for every granule and level:

* the frame: no entry of the page other than ``idx`` changes, every write is a u64 at an index
  inside the page, and the only other page the step gets, puts or counts is the child the entry
  points to;
* S2-OWN, S2-BA and S2-TREE (table upper bits, a new table is the page just allocated) of the entry
  after the step; with the frame, of the whole page;
* S2-RC: the page's count after the step is ``1 + n + counted(entry)`` plus what the phase holds
  (the anchor's reference between TABLE_PRE and TABLE_POST), ``n`` the counted entries other than
  ``idx`` -- or, under an anchor, ``1 + n`` with ``n`` the counted entries not yet visited, so each
  detached page reaches count 1 when its last entry is visited and its TABLE_POST frees it;
* the result is one the operation allows, and nothing WARNs.

The phases and how the steps compose into the operation-level theorem are in docs/proofs.md.
"""

from __future__ import annotations

import errno

import z3

from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import stage2_map

from ptspec.proofs.engines.z3.bv import sym
from ptspec.proofs.stage2.z3_lemmas import aligned, combine
from ptspec.proofs.stage2.z3_steps_model import (FIELD, GEOMS, NEW_TABLE, PTP, U64, StepPgt,
                                                 attr_ok, block_allowed, count, counted, desc_addr,
                                                 entry_ok, entry_props, is_table, label, levels,
                                                 no_warn, page_assumptions, phys_ok, step_inputs,
                                                 walk_range, z)
from ptspec.proofs.stage2.z3_steps_replay import (CHILD_FREED, ENTRY, FRAME, NO_WARN, NO_WRITE,
                                                  RC_AFTER, RC_KEPT, RC_UNVISITED, replay, ret_in)

_MEMCACHE = object()              # the caller's memcache (zalloc_page may still come back empty)


# ------------------------------------------------------------------------ map / set_owner LEAF

def lemma_map_leaf(rlimit, timeout_ms, deadline=None, *, set_owner=False):
    """map's LEAF step stage2_map_walk_leaf outside an anchor (stage2_map_walker_try_leaf, or a new
    table from the memcache, splitting a block): from any page satisfying the invariants, any
    non-table entry, any page-aligned range, output address (or the owner marker) and attributes,
    the step changes entry idx only, leaves it well formed (S2-OWN, S2-BA, S2-TREE: a table it
    installs points to the page it allocated), the page's count is 1 + counted entries after it,
    and it returns 0, -EAGAIN or -ENOMEM (only when the memcache is empty, changing nothing).

    Fake: the memcache is z3_steps_model.StepMmOps.zalloc_page -- a zeroed page in no table, page
    aligned and inside the PA range, count 1 for the caller, or nothing (``alloc_ok`` = 0): the
    kvm_mmu_memory_cache contract. One address stands for every such page because the step only
    encodes it into the new table descriptor; the lemma proves it is installed and counted once."""
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
                    alloc = sym("alloc_ok", 1, inputs)        # zalloc_page has a page to give

                    def body(ps=ps, ia=ia, level=level, force=force, field=field, page=page,
                             idx=idx, j=j, old=old, n=n, addr=addr, end=end, phys=phys, attr=attr,
                             oid=oid, alloc=alloc):
                        page.arr = page.arr0
                        page.index_ok, page.fits = [], []
                        pgt = StepPgt(ps, ia, rc=count(n, counted(old)), alloc_ok=alloc,
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
                        ok.update(no_warn(pgt))
                        ok["S2-RC: (frame) no other page is named"] = z3.BoolVal(not mm.touched)
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
                                z3.And(z(alloc) == 0, new == z(old)))
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], field, 1)
                    assume += [z3.Not(is_table(old, level))] + walk_range(addr, end, ps, ia)
                    if set_owner:
                        assume.append(z(oid) <= 1)
                    else:
                        assume += [phys_ok(phys, ps, SG.IPA_RANGE[ps][1]), attr_ok(attr)]
                    def code(v, force=force):
                        phys = U64 if set_owner else v["phys"]
                        return (f"data = stage2_map.Stage2MapData(pgt, {phys:#x}, object(), "
                                f"owner_id={v['owner_id']:#x}, force_pte={force})\n"
                                f"data.attr = {0 if set_owner else v['attr']:#x}\n"
                                f"ret = stage2_map.stage2_map_walk_leaf({v['addr']:#x}, "
                                f"{v['end']:#x}, level, tbl, PTP, idx, data)\n")
                    checks = [FRAME, NO_WARN, RC_AFTER, ENTRY,
                              ret_in(0, -errno.EAGAIN, -errno.ENOMEM)]
                    yield (label(ps, level, f" field {field[0]}:{field[1]}" if set_owner else
                                 " force_pte" if force else ""),
                           body, inputs, assume,
                           replay(ps, ia, level, code, checks, owner_field=field, max_owner_id=1))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_set_owner_leaf(rlimit, timeout_ms, deadline=None):
    """set_owner's LEAF step (stage2_map_walk_leaf with KVM_PHYS_INVALID, force_pte, any owner id
    up to KVM_MAX_OWNER_ID), outside an anchor: the statements of map's LEAF step."""
    return lemma_map_leaf(rlimit, timeout_ms, deadline, set_owner=True)


# ------------------------------------------------------------------ map: the anchor (table->block)

def _data_code(v, anchor, force=False) -> str:
    """A replay program's struct stage2_map_data: map's phys and attributes, and the anchor
    ("none"; "elsewhere": higher up, on another page; "here": this entry, as TABLE_PRE left it)."""
    out = (f"data = stage2_map.Stage2MapData(pgt, {v['phys']:#x}, object(), force_pte={force})\n"
           f"data.attr = {v['attr']:#x}\n")
    if anchor == "elsewhere":
        out += f"data.anchor, data.childp = ([0], 0), {NEW_TABLE + (1 << 20):#x}   # higher up\n"
    elif anchor == "here":
        out += f"data.anchor, data.childp = (tbl, idx), {v['childp']:#x}   # TABLE_PRE's anchor\n"
    return out


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
                        ok.update(no_warn(pgt))
                        ok[f"C-MAP: TABLE_PRE returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        ok["S2-RC: (frame) no other page is named"] = z3.BoolVal(not mm.touched)
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
                            ok["S2-TREE: (frame) no anchor, no change"] = z3.And(
                                new == z(old), z3.BoolVal(data.childp is None))
                        return ok
                    assume = page_assumptions(page, idx, j, old, n, level, ps,
                                              SG.IPA_RANGE[ps][1], FIELD, 1)
                    assume += [is_table(old, level), desc_addr(old, ps) != PTP,
                               phys_ok(phys, ps, SG.IPA_RANGE[ps][1]), attr_ok(attr)]
                    assume += walk_range(addr, end, ps, ia)
                    def code(v, anchored=anchored, force=force):
                        return (_data_code(v, "elsewhere" if anchored else "none", force)
                                + f"ret = stage2_map.stage2_map_walk_table_pre({v['addr']:#x}, "
                                  f"{v['end']:#x}, level, tbl, PTP, idx, data)\n")
                    checks = [FRAME, NO_WARN, RC_KEPT, ret_in(0)] + ([NO_WRITE] if anchored
                                                                     else [])
                    yield (label(ps, level, " anchored" if anchored else
                                 " force_pte" if force else ""), body, inputs, assume,
                           replay(ps, ia, level, code, checks))
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
                    ok.update(no_warn(pgt))
                    ok[f"C-MAP: returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                    ok["S2-RC: (frame) no other page is named, nothing allocated"] = z3.BoolVal(
                        not mm.touched and not mm.allocated)
                    ok["S2-TREE: (frame) the entry, data.phys and the anchor are kept"] = z3.And(
                        z3.BoolVal(page.writes == 0 and data.anchor is anchor),
                        z(data.phys) == z(phys))
                    ok["S2-RC: count == 1 + counted entries not yet visited"] = z(mm.rc) == z(n) + 1
                    return ok
                assume = page_assumptions(page, idx, j, old, n, level, ps, SG.IPA_RANGE[ps][1],
                                          FIELD, 1)
                assume += [z3.Not(is_table(old, level)),
                           phys_ok(phys, ps, SG.IPA_RANGE[ps][1]), attr_ok(attr)]
                assume += walk_range(addr, end, ps, ia)
                def code(v):
                    return (_data_code(v, "elsewhere")
                            + f"ret = stage2_map.stage2_map_walk_leaf({v['addr']:#x}, "
                              f"{v['end']:#x}, level, tbl, PTP, idx, data)\n")
                yield (label(ps, level), body, inputs, assume,
                       replay(ps, ia, level, code, [NO_WRITE, NO_WARN, RC_UNVISITED, ret_in(0)]))
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
                        ok.update(no_warn(pgt))
                        ok[f"C-MAP: TABLE_POST returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        if phase == "none":
                            ok["S2-TREE: (frame) outside an anchor nothing changes"] = z3.And(
                                z3.BoolVal(page.writes == 0 and not mm.touched),
                                z(mm.rc) == z(rc0))
                            return ok
                        child = cp if phase == "anchor" else desc_addr(old, ps)
                        ok["S2-RC: (frame) the only other page named is the entry's child"] = (
                            mm.touched_only(child))
                        ok["S2-LEAK: the child (all entries visited) is freed"] = (
                            z(mm.child_rc) == 0)
                        if phase == "inside":
                            ok["S2-RC: count == 1 + counted entries not yet visited"] = (
                                z(mm.rc) == z(n) + 1)
                            ok["S2-TREE: (frame) the entry is left for the page's own release"] = (
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
                              z(c) == 1, phys_ok(phys, ps, SG.IPA_RANGE[ps][1]), attr_ok(attr)]
                    assume += walk_range(addr, end, ps, ia)
                    if phase == "anchor":
                        # TABLE_PRE cleared the entry and kept its child; the block was allowed;
                        # only map anchors (set_owner forces pages), and map's phys is a PA
                        assume += [z(old) == 0, z(phys) != U64, z(cp) != PTP, aligned(cp, 1 << ps),
                                   block_allowed(addr, end, phys, level, ps,
                                                 SG.IPA_RANGE[ps][1])]
                    else:
                        assume += [is_table(old, level), desc_addr(old, ps) != PTP,
                                   entry_ok(old, level, ps, SG.IPA_RANGE[ps][1], FIELD, 1)]
                    def code(v, phase=phase):
                        where = {"none": "none", "inside": "elsewhere", "anchor": "here"}[phase]
                        return (_data_code(v, where)
                                + f"ret = stage2_map.stage2_map_walk_table_post({v['addr']:#x}, "
                                  f"{v['end']:#x}, level, tbl, PTP, idx, data)\n")
                    checks = {"none": [NO_WRITE, RC_KEPT],
                              "inside": [NO_WRITE, RC_UNVISITED, CHILD_FREED],
                              "anchor": [RC_AFTER, CHILD_FREED, ENTRY,
                                         ("C-MAP: the anchor is cleared", "data.anchor is None")]
                              }[phase] + [NO_WARN, ret_in(0)]
                    yield (label(ps, level, f" {phase}"), body, inputs, assume,
                           replay(ps, ia, level, code, checks, held=int(phase == "anchor"),
                                  child=True))
    return combine(cases(), rlimit, timeout_ms, deadline)


LEMMAS = {
    "map-leaf": lemma_map_leaf,
    "set-owner-leaf": lemma_set_owner_leaf,
    "map-table-pre": lemma_map_table_pre,
    "map-anchored-leaf": lemma_map_anchored_leaf,
    "map-table-post": lemma_map_table_post,
}
