"""The shapes of catalogued kernel findings: predicates on a violation (and its step record) that
say whether it is the finding's own bug, not merely a violation of the same statement in the same
kind of step (proofs/kernel/findings.py's ``where``). Each reads the violation's ``where`` dict,
its message, or the step record's ``pre`` (the spec's reading of the pre-state),
``split_excess`` (the hyp harness's count of extra references per table page), and for a hyp map
over a conflicting entry ``warnings`` (the WARN_ONs it raised) and ``version``: such a step is
re-walked as the kernel of that version walks it (hyp_conflict_outcome) and must match exactly.
"""

from __future__ import annotations

import re

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch.walk import DESC, END, LEVEL, START
from ptspec.spec.stage2.mainline import table_spans


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


def _own_level_hint(violation, kind="tlbi_ipa") -> bool:
    """An S2-BBM-WALK violation whose log has an invalidation inside the removed descriptor's
    range with that descriptor's own level as the hint (table-tlbi-level's shape), not one with
    no invalidation there, or with another hint (a 6.8+ kernel's 0, say). With kind "tlbi_el2",
    the same for S1-UNMAP-TLBI's hyp table descriptor (hyp-table-tlbi-level)."""
    where = getattr(violation, "where", None) or {}
    level = where.get("level")
    if kind == "tlbi_el2" and "el2_hints" in where:     # all of them (the message lists six)
        return level is not None and level in where["el2_hints"]
    _, _, near = str(violation).partition("; the log has ")
    return level is not None and str(level) in re.findall(
        kind + r" 0x[0-9a-f]+ level (-?\d+)", near)


# -- a map over a conflicting valid hyp leaf (hyp-conflict-*) --------------------------------------
CONFLICT, TABLE_OVER_VALID, NO_TABLE_AT_LAST = ("hyp_pte_needs_update", "kvm_set_table_pte",
                                                "hyp_map_walker")
# before "Infer the PA offset from IPA" (the 6.4 cycle: 6.3.8 advances, 6.6.9 infers; 6.4 and 6.5
# not run) hyp_map_walker_try_leaf advances data->phys before its conflict WARN, so every later
# output is one block higher; from it phys is data->phys + (ctx->addr - ctx->start)
PHYS_FROM_ADDR_SINCE = (6, 4, 0)
TABLE_WARN_UNTIL = (6, 2, 0)     # kvm_set_table_pte (and its WARN_ON) left with 6.2's walker rework


def hyp_conflict_outcome(pre, args, version):
    """What a 5.17+ kvm_pgtable_hyp_map of `args` over `pre` does, conflicts included (the
    behaviour hyp-conflict-* name): (leaves, stop, warnings). leaves maps (level, base) of each
    leaf the walk installs or keeps in R to its descriptor; stop is the page of a level-3 conflict,
    where the walk fails with -EINVAL (None: it returns 0); warnings are the WARN_ONs raised, in
    order.

    The walk as the kernel's: a leaf that fits over a valid entry differing beyond the software
    bits WARNs (conflict) and fails, and hyp_map_walker then installs a fresh table over it (6.1 and
    before with kvm_set_table_pte's WARN, 6.2 on without) and maps the block's pages of R below
    it, before 6.4 (PHYS_FROM_ADDR_SINCE) with every later output one block higher; at level 3
    it WARNs again (no table at the last level) and stops. A valid block that cannot hold the
    leaf is replaced the same way (with that WARN up to 6.1). Returns None when the prot is
    refused or the range is outside the map's domain."""
    from ptspec.spec.arch import geometry as G
    from ptspec.spec.hyp.contracts import SW_MASK, hyp_attrs, _entry
    from ptspec.spec.stage2.step import walked_range
    attrs = hyp_attrs(args["prot"], pre.kernel_version)
    ps = pre.page_shift
    A, E = walked_range(args["addr"], args["size"], ps)
    phys_al = args["phys"] - args["phys"] % (1 << ps)
    if attrs is None or not pre.roots or not A < E <= 1 << pre.ia_bits:
        return None
    old, warn_table = tuple(version) < PHYS_FROM_ADDR_SINCE, tuple(version) < TABLE_WARN_UNTIL
    leaves, warnings, split, shift, va = {}, [], set(), 0, A
    while va < E:
        pa, nxt = pre.roots[0], va + (1 << ps)
        for level in range(pre.start_level, G.MAX_LEVELS):
            g = G.granule_size(level, ps)
            base = va - va % g
            if (level, base) in split:            # a table this walk installed: go below
                pa = None
                continue
            d = 0 if pa is None else _entry(pre, pa, va, level)
            if D.is_table(d, level):
                pa = D.address(d, ps)
                continue
            oa = phys_al + (base - A) + shift
            if G.level_allows_leaf(level, ps) and A <= base and base + g <= E and oa % g == 0:
                new = D.leaf_descriptor(oa, attrs, level, ps)
                if not (d & D.VALID and d != new and (d ^ new) & ~SW_MASK):
                    leaves[(level, base)] = new
                    nxt = base + g
                    break
                warnings.append(CONFLICT)
                if level == G.LAST_LEVEL:
                    warnings.append(NO_TABLE_AT_LAST)
                    return leaves, base, warnings
                shift += g if old else 0         # data->phys already advanced past the block
            if d & D.VALID and warn_table:
                warnings.append(TABLE_OVER_VALID)
            split.add((level, base))
            pa = None                             # a fresh (zeroed) table goes here
        va = nxt
    return leaves, None, warnings


def _leaf_at(leaves, va, page_shift):
    """(level, descriptor) of the leaf of `leaves` (hyp_conflict_outcome's) holding page va."""
    from ptspec.spec.arch import geometry as G
    for level in range(G.MAX_LEVELS):
        g = G.granule_size(level, page_shift)
        d = leaves.get((level, va - va % g))
        if d is not None:
            return level, d
    return None


def _found(violation):
    """(level, descriptor) a C-HYP-MAP page violation found (its where's found_level and desc;
    "found nothing": None)."""
    where = getattr(violation, "where", None) or {}
    level = where.get("found_level")
    return None if level is None else (level, where.get("desc", 0))


def _hyp_conflict_page(violation, step) -> bool:
    """A C-HYP-MAP violation of a map over a conflicting entry that is the kernel's own conflict
    behaviour (hyp_conflict_outcome): the page holds the leaf that behaviour gives it, or (after a
    level-3 conflict's -EINVAL) is as it was; the -EINVAL itself when such a conflict
    stopped the walk. Anything else (another output, attributes or level, a leaf outside R) is
    not it. Needs the step's pre-state ("pre") and version."""
    out = _conflict_outcome(step)
    if out is None:
        return False
    leaves, stop, _ = out
    text = str(violation)
    if "returned -EINVAL, expected 0 or -ENOMEM" in text:
        return stop is not None and step.get("ret") == -22
    va = (getattr(violation, "where", None) or {}).get("ipa")
    if va is None or not text.startswith("C-HYP-MAP map: page "):
        return False
    leaf = _leaf_at(leaves, va, step["pre"].page_shift)
    if leaf is not None:
        return _found(violation) == leaf
    if stop is None or va < stop:
        return False
    was, got = step["pre"].walk().find(va), _found(violation)   # after the stop: as it was
    was = (was[LEVEL], was[DESC]) if was is not None and was[DESC] else None
    return was == (got if got is not None and got[1] else None)


def _hyp_conflict_warns(violation, step) -> bool:
    """A C-HYP-WARN violation of a map over a conflicting entry whose WARN_ONs are exactly the
    kernel's conflict behaviour's (hyp_conflict_outcome; a prefix of them on -ENOMEM): one WARN
    more, fewer, or from elsewhere is not it. Needs the step's raised "warnings"."""
    out = _conflict_outcome(step)
    if out is None or "warnings" not in step:
        return False
    got = [w.split(":", 1)[0].strip() for w in step["warnings"]]
    want = out[2]
    return got == want[:len(got)] if step.get("ret") == -12 else got == want


_LAST = [None, None, None]  # (pre, key, outcome) of the last step asked: its violations share it


def _conflict_outcome(step):
    if not step or step.get("pre") is None or step.get("op") != "map" or "version" not in step:
        return None
    pre, key = step["pre"], (tuple(sorted(step["args"].items())), tuple(step["version"]))
    if _LAST[0] is not pre or _LAST[1] != key:
        _LAST[:] = [pre, key, hyp_conflict_outcome(pre, step["args"], step["version"])]
    return _LAST[2]


# -- an unmap that starts inside a valid hyp block (hyp-unmap-overreach) ---------------------------
def hyp_unmap_outcome(pre, args):
    """(leaves, bytes) a 5.17+ kvm_pgtable_hyp_unmap of `args` removes from `pre`: hyp_unmap_walker
    visits the leaf at the walk's address and removes it whole when the rest of the range from
    that address is at least the leaf's size, counting its size; it stops at an empty entry or a
    leaf larger than the rest. Only the first leaf can start before the range (the walk's first
    address is A, unaligned), which is where the kernel differs from C-HYP-UNMAP's
    removed_leaves. leaves: {(start, level)}; None outside the VA space or without a root."""
    from ptspec.spec.stage2.step import walked_range
    A, E = walked_range(args["addr"], args["size"], pre.page_shift)
    if A > 1 << pre.ia_bits or E > 1 << pre.ia_bits or not pre.roots:
        return None
    walk, gone, total, va = pre.walk(), set(), 0, A
    while va < E:
        iv = walk.find(va)
        if iv is None or not iv[DESC] & D.VALID or E - va < iv[END] - iv[START]:
            break
        gone.add((iv[START], iv[LEVEL]))
        total += iv[END] - iv[START]
        va = iv[END]
    return gone, total


def _hyp_overreach(violation, step) -> bool:
    """A C-HYP-UNMAP violation of an unmap starting inside a valid block that is the kernel's own
    walk (hyp_unmap_outcome): the return value it counts, or a leaf it removes whole that the
    statement says must stay. Another leaf removed or changed, or another count, is not it."""
    pre = (step or {}).get("pre")
    out = hyp_unmap_outcome(pre, step["args"]) if pre is not None else None
    if out is None:
        return False
    gone, total = out
    text, where = str(violation), getattr(violation, "where", None) or {}
    if text.startswith("C-HYP-UNMAP unmap: returned "):
        return step.get("ret") == total
    return (text.endswith("but was removed") and "ipa" in where
            and (where["ipa"], where.get("level")) in gone)


# -- kvm_pgtable_stage2_annotate with a type past the 4-bit field (annotate-type-truncated) --------
def _annotate_truncated(violation, step) -> bool:
    """A C-ANNOTATE violation of an annotate whose type is 16 or more, when the step did exactly
    what FIELD_PREP's truncation makes of it: an annotate of annotation | (type & 0xf) << 60 by
    C-ANNOTATE's own rules past its argument check (the walk's -ERANGE/-EINVAL with nothing
    changed; else ret 0 with every page of R that descriptor in a level-3 slot, or -ENOMEM with
    each page that, unchanged, or split collateral; nothing outside R changed). Any other outcome
    of such a step is not it. Needs the step's "pre" and "post" (the spec's readings of both)."""
    from types import SimpleNamespace
    from ptspec.spec.stage2.contract_common import Report, check_ret, early_exit, op_range
    from ptspec.spec.stage2.contracts_map import _check_inside, _check_outside
    a = (step or {}).get("args", {})
    t, pre, post = a.get("type"), step.get("pre"), step.get("post")
    if pre is None or post is None or not isinstance(t, int) or t < 16:
        return False
    want = a["annotation"] | (t & 0xF) << D.INVALID_TYPE_SHIFT
    st = SimpleNamespace(op="annotate", args=a, ret=step.get("ret"), out={})
    rep = Report("C-ANNOTATE", st)
    A, E = op_range(pre, st)
    if not early_exit(rep, pre, post, st, A, E) and check_ret(rep, st, (0, -12)):
        _check_inside(rep, pre, post, A, E, [(A, E, 3)], lambda level, ipa: want, st.ret,
                      allow_eagain=False, page_fn=lambda base, i, j: [want] * (j - i))
        _check_outside(rep, pre, post, A, E, "annotated")
    return not rep.items


# -- 6.2's walker descends into the table its TABLE_PRE callback freed (walk-freed-table) ----------
def _walked(step):
    """[A, E), the range a map step walks (C-MAP's op_range: page-aligned)."""
    from types import SimpleNamespace
    from ptspec.spec.stage2.contract_common import op_range
    return op_range(step["pre"], SimpleNamespace(args=step.get("args") or {}))


def freed_table_walk(step) -> set:
    """The pages a 6.2 map that replaced tables by leaves can touch after freeing them: every
    table page below (and of) a table the map replaced by a leaf (a table of the pre-state whose
    whole span lies in the walked range and is one leaf slot of the level above in the
    post-state: a block, or an invalid descriptor when phys is past the PA range), and every page
    the step handed out that nothing reaches after it (tables installed under a freed one, leaked
    or freed again within the step). Empty for any other step. Cached in the step record, with
    the replaced spans (freed_spans) and the bound on how far the walks into freed tables can
    move the output address: the spans of every pre-state table in the range (freed_reach)."""
    if "freed_table_walk" in step:
        return step["freed_table_walk"]
    out, spans_freed, reach = set(), [], 0
    pre, post = step.get("pre"), step.get("post")
    if step.get("op") == "map" and pre is not None and post is not None and pre.roots:
        lo, hi = _walked(step)
        spans = table_spans(pre)
        walk = post.walk() if post.roots else None
        for pa, (level, b, e) in spans.items():
            if not (lo <= b and e <= hi):
                continue
            reach += e - b
            leaf = walk.find(b) if walk is not None else None
            if (leaf is not None and leaf[LEVEL] == level - 1 and leaf[START] == b
                    and leaf[END] == e):
                out.update(p for p, (_, b2, e2) in spans.items() if b <= b2 and e2 <= e)
                spans_freed.append((b, e))
    step["freed_table_walk"], step["freed_spans"] = out, sorted(set(spans_freed))
    step["freed_reach"] = reach
    return out


def _violation_page(violation):
    page = (getattr(violation, "where", None) or {}).get("table")
    if page is None:
        m = re.search(r"\bpage (0x[0-9a-f]+)", str(violation))
        page = int(m.group(1), 16) if m else None
    return page


def _walks_freed_table(violation, step) -> bool:
    """A violation about a page freed_table_walk names (the violation's where["table"], or the page
    its message names), or about a page the step handed out that nothing reaches after it and
    that is not in the memcache: what 6.2's walker does after stage2_map_walk_table_pre freed a
    table."""
    touched = freed_table_walk(step or {})
    if not touched:
        return False
    page = _violation_page(violation)
    if page in touched:
        return True
    if "live_tables" not in step:
        step["live_tables"] = table_spans(step["post"])
    return (page is not None and page not in step["pre"].pages and page not in step["live_tables"]
            and page not in step["post"].memcache)


def _freed_walk_shift(violation, step) -> bool:
    """A C-MAP violation of such a map (freed_table_walk) that the walks into freed tables
    explain: a found leaf that is the leaf C-MAP expects at its level but for an output address
    moved up, by at most the spans of the pre-state's tables in the range (each walk into a freed
    table maps its span a second time, advancing data->phys past it; nested ones again), or a
    -EAGAIN with no page kept when a freed table held a leaf of the range (the -EAGAIN of a walk
    into it). Reads the violation's where (ipa, level, desc)."""
    from ptspec.spec.arch import geometry as G
    if not freed_table_walk(step or {}):
        return False
    pre, a = step["pre"], step.get("args") or {}
    if str(violation).startswith("C-MAP map: returned -EAGAIN, but no page of the range kept"):
        return step.get("ret") == -11 and any(
            lf[START] < e and b < lf[END] and D.is_valid_leaf(lf[DESC], lf[LEVEL])
            for b, e in step["freed_spans"] for lf in pre.walk().overlapping(b, e))
    w = getattr(violation, "where", None) or {}
    if not {"ipa", "level", "desc"} <= w.keys():
        return False
    ps, level = pre.page_shift, w["level"]
    lo, hi = _walked(step)
    g = G.granule_size(level, ps)
    start = w["ipa"] // g * g
    attrs = D.prot_attrs(D.known_prot(a["prot"], pre.kernel_version), pre.has_fwb,
                         D.has_normal_nc(pre.kernel_version), D.has_px_ux(pre.kernel_version),
                         pre.as_s1, D.uses_xnx(pre.kernel_version, pre.has_xnx))
    if attrs is None or not lo <= start or start + g > hi or not D.is_valid_leaf(w["desc"], level):
        return False
    want = D.leaf_descriptor(a["phys"] - (a["phys"] % (1 << ps)) + (start - lo), attrs, level, ps)
    shift = D.address(w["desc"], ps) - D.address(want, ps)
    return (0 < shift <= step["freed_reach"]
            and w["desc"] == D.leaf_descriptor(D.address(want, ps) + shift, attrs, level, ps))
