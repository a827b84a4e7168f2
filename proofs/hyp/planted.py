"""Planted bugs of the hyp stage-1 code (impl/pgtable/hyp.py), one per S1-* invariant and C-HYP-* contract
(C-HYP-WARN: a conflict kept silently, a WARN on a software-bit change).

Each swaps one function of ptspec.impl.pgtable.hyp (or one name it calls) for a variant with a single named
defect, restored on exit; tests/test_hyp.py requires the hyp lock-step to refute each one with the
expected id.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ptspec.impl.pgtable import hyp


@dataclass(frozen=True)
class HypBug:
    id: str
    what: str
    caught_by: tuple
    name: str                 # attribute of ptspec.impl.pgtable.hyp replaced
    factory: object           # factory(original) -> variant


def _always_update(orig):
    def needs_update(old, new, warn=None):
        return old != new                          # the bug: a conflicting leaf is overwritten
    return needs_update


def _conflict_silent(orig):
    def needs_update(old, new, warn=None):
        return orig(old, new, None)                # the bug: the conflict is kept without a WARN
    return needs_update


def _sw_change_warns(orig):
    def needs_update(old, new, warn=None):
        if warn is not None and old & 1 and old != new:
            warn("hyp_pte_needs_update: conflicting valid mapping")   # the bug: SW bits WARN too
        return orig(old, new, None)
    return needs_update


def _ap_inverted(orig):
    def set_prot(prot):
        ret, attr = orig(prot)
        if ret == 0:
            attr ^= 0b10 << 6                      # the bug: AP RO <-> RW
        return ret, attr
    return set_prot


def _table_takes_ref(orig):
    def set_table(pgt, tbl, idx, childp):
        orig(pgt, tbl, idx, childp)
        pgt.pool.get_page(childp)                  # the bug: a per-descriptor reference at EL2
    return set_table


def _phys_unaligned_block(orig):
    def supported(gran, addr, end, phys, level, pa_bits):
        return orig(gran, addr, end, phys & ~(gran.size[level] - 1), level, pa_bits)
    return supported                               # the bug: phys alignment not checked


def _phys_page_advance(orig):
    def try_leaf(addr, end, level, tbl, idx, data):
        phys = data.phys
        done = orig(addr, end, level, tbl, idx, data)
        if done:
            data.phys = phys + data.pgt.gran.page_size   # the bug: always one page
        return done
    return try_leaf


def _free_walker_leaves(orig):
    class Leaky(orig):
        def destroy(self):
            self.mm_ops.put_page(self.pgd[0])      # the bug: only the root is freed
            self.pgd = None
    return Leaky


BUGS = {b.id: b for b in [
    HypBug("hyp-conflict-overwrite", "a conflicting valid hyp leaf is overwritten",
           ("C-HYP-MAP",), "hyp_pte_needs_update", _always_update),
    HypBug("hyp-conflict-silent", "a conflicting re-map is left alone without a WARN",
           ("C-HYP-WARN",), "hyp_pte_needs_update", _conflict_silent),
    HypBug("hyp-sw-warn", "changing only software bits of a valid hyp leaf WARNs",
           ("C-HYP-WARN",), "hyp_pte_needs_update", _sw_change_warns),
    HypBug("hyp-ap-inverted", "read-only and read-write swapped in AP", ("C-HYP-MAP",),
           "hyp_set_prot_attr", _ap_inverted),
    HypBug("hyp-table-ref", "installing a table takes a reference on it", ("S1-RC",),
           "kvm_set_table_pte", _table_takes_ref),
    HypBug("hyp-block-phys", "a block with an unaligned output address", ("S1-BA", "C-HYP-MAP"),
           "kvm_block_mapping_supported", _phys_unaligned_block),
    HypBug("hyp-phys-advance", "the output address advances by a page after a block",
           ("C-HYP-MAP",), "hyp_map_walker_try_leaf", _phys_page_advance),
    HypBug("hyp-destroy-leak", "destroy frees the root only", ("S1-LEAK", "C-HYP-DESTROY"),
           "HypPgtable", _free_walker_leaves),
]}


@contextlib.contextmanager
def planted_hyp(bug_id: str):
    bug = BUGS[bug_id]
    orig = getattr(hyp, bug.name)
    setattr(hyp, bug.name, bug.factory(orig))
    try:
        yield bug
    finally:
        setattr(hyp, bug.name, orig)

