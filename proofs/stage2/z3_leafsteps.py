"""Inductive z3 lemmas: the stage-2 leaf steps that change reference counts keep S2-RC and S2-OWN.

One step of a walker changes one descriptor of one table page and that page's reference count
(arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 with pKVM owners). For a **symbolic** old descriptor, a
symbolic number ``n`` of other counted entries in the page (0 <= n < PTRS_PER_PTE) and symbolic
step arguments (address, end, output address or owner id, attributes), the impl's own step function
is run on every path (``proofs/engines/z3/bv.py``) against a page whose count satisfies S2-RC before the
step (``1 + n + counted(old)``), and z3 proves, on every path:

* ``stage2_map_walk_leaf`` (map's leaf step: ``stage2_map_walker_try_leaf``, or the split into a
  new table): S2-RC after (``1 + n + counted(new)``), S2-OWN kept, no WARN, no unknown page touched;
* the same step as ``kvm_pgtable_stage2_set_owner`` drives it (``KVM_PHYS_INVALID``, page
  granularity, id <= KVM_MAX_OWNER_ID), for both owner-field positions;
* ``stage2_unmap_walker`` on a leaf or invalid entry (the entry is 0 afterwards: the unmap contract)
  and on a table entry at TABLE_POST (the child is released exactly when only its own reference is
  left); S2-RC and S2-OWN kept;
* ``stage2_free_walker``: the entry's reference (and a child table's) is dropped once, so the page's
  count minus its not-yet-visited counted entries stays 1.

Counted and well-formed are the spec's definitions (ptspec.spec.stage2.invariants: counted = non-zero; S2-OWN via
ptspec.spec.arch.descriptor.owner_of), not the impl's predicates. Granules and levels are concrete and looped.
Left out: the anchor (table-to-block) path, whose counts are checked by the exhaustive and lock-step
checkers over whole trees.
"""

from __future__ import annotations

import errno

import z3

from ptspec.spec.arch import descriptor as SD
from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers
from ptspec.impl.pgtable import walker as W

from ptspec.proofs.engines.z3.bv import as_bv, ite, sym
from ptspec.proofs.stage2 import z3_programs as ZP
from ptspec.proofs.stage2.z3_fakes import PTP, FakePgt
from ptspec.proofs.stage2.z3_lemmas import U64, aligned, combine

_MEMCACHE = object()       # a non-empty memcache: zalloc_page succeeds


def _z(x):
    return as_bv(x)


def counted(d) -> z3.BoolRef:
    """spec: a descriptor is counted in its table's refcount when it is not zero."""
    return _z(d) != 0


def own_ok(d, field, max_id) -> z3.BoolRef:
    """spec S2-OWN for one descriptor, as a z3 Boolean (valid, zero, or a proper annotation)."""
    hi, lo = field
    mask = SD.field_mask(hi, lo)
    dz = _z(d)
    ident = z3.LShR(dz & mask, lo)
    return z3.Or(dz & SD.VALID != 0, dz == 0,
                 z3.And(dz & (U64 & ~mask) == 0, ident >= 1, ident <= max_id))


def _count(n, old):
    """1 + n + counted(old) as a symbolic int, without forking."""
    return ite(counted(old), n + 2, n + 1)


def _label(ps, level, extra=""):
    return f"{1 << (ps - 10)}K level {level}{extra}"


def _geometries():
    """(page_shift, ia_bits, levels where a leaf step can run) for each granule."""
    for ps, ia in ((12, 48), (14, 48), (16, 52)):
        sl = SG.stage2_start_level(ia, ps)
        yield ps, ia, range(sl, 4)


def _not_table(old, level):
    return z3.Not(z3.And(level < 3, _z(old) & 3 == 3))


def _common_ok(pgt, tbl, n, field, max_id):
    mm = pgt.mm_ops
    return {f"S2-LEAK: no WARN and no unknown page ({pgt.warnings + mm.errors})":
            z3.BoolVal(not pgt.warnings and not mm.errors),
            "S2-RC: refcount == 1 + counted entries after the step":
            _z(mm.rc) == _z(_count(n, tbl[0])),
            "S2-OWN: the entry is valid, 0, or an annotation with id 1..max": own_ok(tbl[0], field,
                                                                                    max_id)}


def lemma_map_leaf(rlimit, timeout_ms, deadline=None, *, set_owner=False):
    """S2-RC and S2-OWN across map's leaf step stage2_map_walk_leaf (stage2_map_walker_try_leaf,
    or a split into a new table), from any well-formed non-table old entry, any count of other
    entries, any page-aligned range and output address (or the owner marker) and any attributes:
    after the step the page's count is 1 + its counted entries, the entry is well formed, nothing
    WARNs and the step returns 0 or -EAGAIN (also with the seed's -EAGAIN-stops behaviour)."""
    fields = ((63, 56), (9, 2)) if set_owner else ((63, 56),)

    def cases():
        for ps, ia, levels in _geometries():
            for level in levels:
                # both owner fields and the seed's -EAGAIN-stops branch with 4K only (the other
                # granules differ in sizes, not in these branches)
                for field in (fields if ps == 12 else fields[:1]):
                    for cont in ((True, False) if ps == 12 and level == 3 and not set_owner
                                 else (True,)):
                        inputs: dict = {}
                        old, n, addr, end, phys, attr = (
                            sym(k, 64, inputs) for k in ("old", "n", "addr", "end", "phys",
                                                         "attr"))
                        oid = sym("owner_id", 8, inputs)

                        def body(ps=ps, ia=ia, level=level, field=field, cont=cont, old=old, n=n,
                                 addr=addr, end=end, phys=phys, attr=attr, oid=oid):
                            # cache maintenance hooks change no count: exercised with 4K only
                            pgt = FakePgt(ps, ia, owner_field=field, max_owner_id=1,
                                          rc=_count(n, old), eagain_continues=cont,
                                          cmo=ps == 12)
                            if set_owner:
                                data = stage2_map.Stage2MapData(pgt, U64, _MEMCACHE,
                                                                owner_id=oid, force_pte=True)
                            else:
                                data = stage2_map.Stage2MapData(pgt, phys, _MEMCACHE)
                                data.attr = attr
                            tbl = [old]
                            ret = stage2_map.stage2_map_walk_leaf(addr, end, level, tbl, PTP, 0,
                                                                  data)
                            ok = _common_ok(pgt, tbl, n, field, 1)
                            ok[f"C-MAP: the step returns 0 or -EAGAIN (got {ret})"] = z3.BoolVal(
                                ret in (0, -errno.EAGAIN))
                            return ok
                        assume = [_not_table(old, level), own_ok(old, field, 1),
                                  _z(n) < SG.entries_per_table(ps) - 1,
                                  _z(end) <= (1 << ia), _z(addr) < _z(end),
                                  # the walk's range is whole pages (kvm_pgtable_walk rounds it)
                                  aligned(addr, 1 << ps), aligned(end, 1 << ps)]
                        if set_owner:
                            assume.append(_z(oid) <= 1)
                        else:
                            # map passes a page-aligned PA (it rounds phys down), or the marker
                            assume.append(z3.Or(z3.And(_z(phys) < (1 << SG.IPA_RANGE[ps][1]),
                                                       aligned(phys, 1 << ps)),
                                                _z(phys) == U64))
                        extra = f" field {field[0]}:{field[1]}" if set_owner else (
                            "" if cont else " (seed: -EAGAIN stops)")
                        yield (_label(ps, level, extra), body, inputs, assume,
                               _replay_map_leaf(ps, ia, level, field, cont, set_owner),
                               ZP.map_leaf(ps, ia, level, field, cont, set_owner))
    return combine(cases(), rlimit, timeout_ms, deadline)


def _replay_map_leaf(ps, ia, level, field, cont, set_owner):
    """The counterexample's step run again on plain ints: the call and the counts around it."""
    def show(v):
        old, n = v["old"], v["n"]
        rc = 1 + n + (old != 0)
        pgt = FakePgt(ps, ia, owner_field=field, rc=rc, eagain_continues=cont)
        if set_owner:
            data = stage2_map.Stage2MapData(pgt, U64, _MEMCACHE, owner_id=v["owner_id"],
                                            force_pte=True)
            call = f"set_owner leaf step, owner_id={v['owner_id']:#x}"
        else:
            data = stage2_map.Stage2MapData(pgt, v["phys"], _MEMCACHE)
            data.attr = v["attr"]
            call = f"map leaf step, phys={v['phys']:#x}, attr={v['attr']:#x}"
        tbl = [old]
        ret = stage2_map.stage2_map_walk_leaf(v["addr"], v["end"], level, tbl, PTP, 0, data)
        return {"replay": f"stage2_map_walk_leaf(addr={v['addr']:#x}, end={v['end']:#x}, "
                          f"level={level}) [{call}] -> {ret}",
                "entry": f"{old:#x} -> {tbl[0]:#x}",
                "refcount": f"{rc} -> {pgt.mm_ops.rc} (S2-RC wants {1 + n + (tbl[0] != 0)})"}
    return show


def lemma_set_owner_leaf(rlimit, timeout_ms, deadline=None):
    """S2-RC and S2-OWN across stage2_map_walk_leaf as kvm_pgtable_stage2_set_owner drives it
    (KVM_PHYS_INVALID, page granularity, any owner id up to KVM_MAX_OWNER_ID), for both
    owner-field positions, from any well-formed old entry and any count of other entries."""
    return lemma_map_leaf(rlimit, timeout_ms, deadline, set_owner=True)


def lemma_unmap_step(rlimit, timeout_ms, deadline=None):
    """Across one stage2_unmap_walker step (a leaf or owner annotation at LEAF, a table at
    TABLE_POST; with and without FWB), from any well-formed entry and any counts: S2-RC and S2-OWN
    hold after it, a leaf or annotation is cleared, and a table is released (and its count reaches
    0) exactly when only its own reference was left."""
    def cases():
        for ps, ia, levels in _geometries():
            for level in levels:
                # fwb on 4K only; the 6.1 table TLB hint (tlbi0) on 4K only: both change the
                # step's maintenance, not its counts, and the 4K runs cover the branch
                for fwb, tlbi0 in (((False, False), (True, False), (False, True)) if ps == 12
                                   else ((False, False),)):
                    inputs: dict = {}
                    old, n, c, addr = (sym(k, 64, inputs) for k in ("old", "n", "child_rc",
                                                                     "addr"))

                    def body(ps=ps, ia=ia, level=level, fwb=fwb, tlbi0=tlbi0, old=old, n=n, c=c,
                             addr=addr):
                        pgt = FakePgt(ps, ia, rc=_count(n, old), child_rc=c, fwb=fwb,
                                      table_tlbi_level0=tlbi0)
                        tbl = [old]
                        table = bool(SD.is_table(old, level))
                        flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF
                        ret = stage2_walkers.stage2_unmap_walker(pgt, addr, addr + 1, level, tbl,
                                                                 PTP, 0, flag)
                        ok = _common_ok(pgt, tbl, n, (63, 56), 1)
                        ok[f"C-UNMAP: the step returns 0 (got {ret})"] = z3.BoolVal(ret == 0)
                        if table:
                            freed = _z(tbl[0]) == 0
                            child = _z(pgt.mm_ops.child_rc)
                            ok["S2-LEAK: a table is released exactly when only its own reference "
                               "is left"] = freed == (_z(c) == 1)
                            ok["S2-LEAK: a released table's count reaches 0"] = z3.Implies(
                                freed, child == 0)
                            ok["S2-TREE: a kept table is untouched"] = z3.Implies(
                                z3.Not(freed), z3.And(child == _z(c), _z(tbl[0]) == _z(old)))
                        else:
                            ok["C-UNMAP: a leaf or annotation is cleared"] = _z(tbl[0]) == 0
                        return ok
                    assume = [own_ok(old, (63, 56), 1), _z(n) < SG.entries_per_table(ps) - 1,
                              _z(c) >= 1, _z(c) <= SG.entries_per_table(ps) + 1]
                    yield (_label(ps, level, f" fwb={fwb} tlbi0={tlbi0}"), body, inputs, assume,
                           None, ZP.unmap_step(ps, ia, level, fwb, tlbi0))
    return combine(cases(), rlimit, timeout_ms, deadline)


def lemma_free_step(rlimit, timeout_ms, deadline=None):
    """stage2_free_walker (destroy) drops exactly one reference of the page for a counted entry
    and one of a child table, and leaves the entry alone: the page's count minus its counted
    entries not yet visited stays 1, so the page is freed exactly when its walk is done."""
    def cases():
        for ps, ia, levels in _geometries():
            for level in levels:
                inputs: dict = {}
                old, n, c = (sym(k, 64, inputs) for k in ("old", "n", "child_rc"))

                def body(ps=ps, ia=ia, level=level, old=old, n=n, c=c):
                    pgt = FakePgt(ps, ia, rc=_count(n, old), child_rc=c)
                    tbl = [old]
                    table = bool(SD.is_table(old, level))
                    flag = W.KVM_PGTABLE_WALK_TABLE_POST if table else W.KVM_PGTABLE_WALK_LEAF
                    ret = stage2_walkers.stage2_free_walker(pgt, 0, 1, level, tbl, PTP, 0, flag)
                    mm = pgt.mm_ops
                    return {"C-DESTROY: returns 0, no WARN, no unknown page":
                            z3.BoolVal(ret == 0 and not pgt.warnings and not mm.errors),
                            "C-DESTROY: the entry is left as it was": _z(tbl[0]) == _z(old),
                            "S2-LEAK: one reference dropped per counted entry": _z(mm.rc) == _z(n) + 1,
                            "S2-LEAK: a child table loses exactly its parent's reference":
                            _z(mm.child_rc) == (_z(c) - 1 if table else _z(c))}
                assume = [own_ok(old, (63, 56), 1), _z(n) < SG.entries_per_table(ps) - 1,
                          _z(c) >= 1]
                yield (_label(ps, level), body, inputs, assume, None,
                       ZP.free_step(ps, ia, level))
    return combine(cases(), rlimit, timeout_ms, deadline)


LEMMAS = {
    "rc-own.map-leaf": lemma_map_leaf,
    "rc-own.set-owner-leaf": lemma_set_owner_leaf,
    "rc-own.unmap-step": lemma_unmap_step,
    "rc-own.free-step": lemma_free_step,
}
