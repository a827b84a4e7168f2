"""The shapes of catalogued kernel findings: predicates on a violation (and its step record) that
say whether it is the finding's own bug, not merely a violation of the same statement in the same
kind of step (proofs/kernel/findings.py's ``where``). Each reads the violation's ``where`` dict,
its message, or the step record's ``pre`` (the spec's reading of the pre-state) and
``split_excess`` (the hyp harness's count of extra references per table page).
"""

from __future__ import annotations

import re

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch.walk import DESC


def _left_as_it_was(violation, step) -> bool:
    """A C-MAP violation at a page the map left as it was (eagain-abort's shape: the walk stopped
    before it): the leaf found there is the pre-state's. A page the stopped map changed to
    something C-MAP does not expect is not eagain-abort. Needs the step's "pre" (the spec's
    reading of the pre-state, which proofs.kernel.subject passes); without it, no."""
    where = getattr(violation, "where", None) or {}
    pre = step.get("pre") if step else None
    if pre is None or "ipa" not in where or "desc" not in where:
        return False
    leaf = pre.walk().find(where["ipa"]) if pre.roots else None
    return (leaf[DESC] if leaf is not None else 0) == where["desc"]


def _split_excess(violation, step) -> bool:
    """A per-descriptor S1-RC violation of a table page whose refcount is above 1 + its counted
    descriptors by exactly the number of blocks a table replaced in it (hyp-split-ref; the hyp
    harness keeps that count, "split_excess"): any other count, or another page, is not it."""
    where = getattr(violation, "where", None) or {}
    excess = (step or {}).get("split_excess") or {}
    t = where.get("table")
    return (t in excess and "refcount" in where
            and where["refcount"] - 1 - where.get("counted", 0) == excess[t])


def _split_page(violation, step) -> bool:
    """An S1-LEAK or C-HYP-DESTROY violation naming a table page that holds hyp-split-ref's extra
    reference (hyp-split-leak): another page, or a pool error, is not it."""
    where = getattr(violation, "where", None) or {}
    return where.get("table") in ((step or {}).get("split_excess") or {})


def _memtype_changed(violation, step) -> bool:
    """A CMO-POC violation at a leaf whose MemAttr is not what the pre-state's leaf at that
    address had (split-drops-memtype's shape: the block was device or non-cacheable, its pages
    are normal): a split of a normal block that skips a clean owed for it is not it."""
    where = getattr(violation, "where", None) or {}
    pre = step.get("pre") if step else None
    if pre is None or "leaf_ipa" not in where or not pre.roots:
        return False
    old = pre.walk().find(where["leaf_ipa"])
    return (old is not None and old[DESC] & D.VALID
            and (old[DESC] ^ where["desc"]) & D.MEMATTR_MASK != 0)


def _only_range_tlbis(violation) -> bool:
    """A C-UNMAP "refused or empty walk, yet the step logged" violation whose log holds range
    invalidations only (unmap-deferred-tlbi-refused); a log with any other event is not it."""
    where = getattr(violation, "where", None) or {}
    return where.get("log_kinds") == ["tlbi_range"]


def _own_level_hint(violation) -> bool:
    """An S2-BBM-WALK violation whose log has an invalidation inside the removed descriptor's
    range with that descriptor's own level as the hint (table-tlbi-level's shape), not one with
    no invalidation there, or with another hint (a 6.8+ kernel's 0, say)."""
    level = (getattr(violation, "where", None) or {}).get("level")
    _, _, near = str(violation).partition("; the log has ")
    return level is not None and str(level) in re.findall(r"tlbi_ipa 0x[0-9a-f]+ level (-?\d+)",
                                                          near)
