"""Shared vocabulary of the operation contracts: frame conditions, expected errors, reporting.

Models: what every stage-2 operation contract (ptspec.spec.stage2.contracts_map, ptspec.spec.stage2.contracts_attr) says in
common: the table's geometry never changes; an operation refused before its walk changes nothing
(no descriptor, refcount, root or memcache change and no TLB or cache maintenance); the return
value is the one the kernel returns; and how findings are described to a reviewer (capped, so a
1 GiB range that went wrong yields a readable report).
"""

from operator import attrgetter

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.segments import is_valid
from ptspec.spec.stage2.step import EINVAL, ret_name, walked_range, walk_error
from ptspec.spec.violation import Violation
from ptspec.spec.arch.walk import START, LEVEL, DESC, TABLE, INDEX, OPAQUE

# Contracts may settle a whole level-3 table at C speed when its descriptors equal, as a list, what
# the operation must leave there, and sweep leaf by leaf only the rest. False gives the plain form
# (every page swept); tests/test_spec_plain.py runs the contracts both ways and holds them equal.
SETTLE_WHOLE_TABLES = True

GEOMETRY_FIELDS = ("kind", "page_shift", "ia_bits", "start_level", "pa_bits", "owner_field",
                   "max_owner_id", "has_fwb", "has_xnx", "cmo", "idmap", "as_s1")
MAX_REPORTS = 16
MAX_DROPPED = 1 << 16    # the summed-up findings a Report keeps for a reader that judges each


class Report:
    """Collects violations of one contract, keeping at most MAX_REPORTS detailed ones; the rest are
    summed up in one "... and N more" violation whose where["dropped"] holds them (for a reader
    that must judge each, as the kernel catalogue does; a reviewer sees the count), up to
    MAX_DROPPED of them: past that where["dropped"] is None (such a reader then judges the
    summary as it would an unknown finding)."""

    def __init__(self, inv, step):
        self.inv = inv
        self.step = step
        self.items = []
        self.rest = []
        self.dropped = 0

    def add(self, message, where=None):
        if len(self.items) < MAX_REPORTS:
            self.items.append(Violation(self.inv, f"{self.step.op}: {message}", dict(where or {})))
            return
        self.dropped += 1
        if self.dropped <= MAX_DROPPED:
            self.rest.append(Violation(self.inv, f"{self.step.op}: {message}", dict(where or {})))

    def result(self):
        if self.dropped:
            kept = tuple(self.rest) if self.dropped <= MAX_DROPPED else None
            self.items.append(Violation(self.inv, f"{self.step.op}: ... and {self.dropped} more "
                                                  f"finding(s) of the same step", {"dropped": kept}))
            self.rest, self.dropped = [], 0
        return self.items


def describe(iv, page_shift):
    """One interval as a reviewer reads it: kind, size, level, output address, descriptor."""
    level, d = iv[LEVEL], iv[DESC]
    if level is None:
        return "no translation (no root)"
    if iv[OPAQUE]:
        return f"an unfollowable table descriptor {d:#x} at level {level}"
    if is_valid(iv):
        size = G.size_text(G.granule_size(level, page_shift))
        kind = "page" if level == 3 else "block"
        return f"a {size} {kind} at level {level} -> {D.address(d, page_shift):#x} (desc {d:#x})"
    return f"invalid {d:#x} at level {level}"


def where_of(iv, s=None):
    w = {"ipa": iv[START] if s is None else s, "desc": iv[DESC]}
    if iv[LEVEL] is not None:
        w["level"] = iv[LEVEL]
    if iv[TABLE] is not None:
        w["table"], w["index"] = iv[TABLE], iv[INDEX]
    return w


_GEOMETRY = attrgetter(*GEOMETRY_FIELDS)


def geometry_changes(pre, post):
    """Names of configuration fields that differ between the two states."""
    if _GEOMETRY(pre) == _GEOMETRY(post):
        return []
    return [f for f in GEOMETRY_FIELDS if getattr(pre, f) != getattr(post, f)
            and not (f == "start_level" and not pre.roots)]


def check_geometry(rep, pre, post):
    """Report a changed configuration; True when the states can be compared."""
    changed = geometry_changes(pre, post)
    for f in changed:
        rep.add(f"{f} changed from {getattr(pre, f)!r} to {getattr(post, f)!r}")
    return not changed


def check_nothing_changed(rep, pre, post, why, allow_log=False):
    """An operation that returned early (or had nothing to do) leaves the state and the TLBs alone."""
    if pre.roots != post.roots:
        rep.add(f"{why}, yet roots changed from {[hex(r) for r in pre.roots]} to "
                f"{[hex(r) for r in post.roots]}")
    same = pre.pages == post.pages and pre.refcount == post.refcount   # (then the loop finds nothing)
    for pa in () if same else sorted(set(pre.pages) | set(post.pages)):
        a, b = pre.pages.get(pa), post.pages.get(pa)
        if a is None or b is None:
            rep.add(f"{why}, yet page {pa:#x} was {'allocated' if a is None else 'freed'}", {"table": pa})
        elif a != b:
            i = next(k for k in range(len(a)) if a[k] != b[k])
            rep.add(f"{why}, yet table {pa:#x} index {i} changed from {a[i]:#x} to {b[i]:#x}",
                    {"table": pa, "index": i, "desc": b[i]})
        elif pre.refcount[pa] != post.refcount[pa]:
            rep.add(f"{why}, yet the refcount of table {pa:#x} changed from {pre.refcount[pa]} to "
                    f"{post.refcount[pa]}", {"table": pa})
    if pre.memcache != post.memcache and sorted(pre.memcache) != sorted(post.memcache):
        rep.add(f"{why}, yet the memcache changed ({len(pre.memcache)} -> {len(post.memcache)} pages)")
    if post.tlb_log and not allow_log:
        rep.add(f"{why}, yet the step logged {len(post.tlb_log)} TLB/cache event(s), first "
                f"{list(post.tlb_log[0])}", {"log_kinds": sorted({ev[0] for ev in post.tlb_log})})


def check_ret(rep, step, expected, why=""):
    """The step returned `expected` (an int, or a tuple of acceptable ints)."""
    ok = step.ret in expected if isinstance(expected, tuple) else step.ret == expected
    if not ok:
        want = " or ".join(ret_name(r) for r in expected) if isinstance(expected, tuple) else ret_name(expected)
        rep.add(f"returned {ret_name(step.ret)}, expected {want}{why}")
    return ok


def early_exit(rep, pre, post, step, A, E, refused=None):
    """Handle the cases where the walk does nothing; True when the contract is fully judged.

    `refused` is the error the operation returns before walking (argument check), or None.
    """
    if refused is not None:
        check_ret(rep, step, refused, " (arguments refused before the walk)")
        check_nothing_changed(rep, pre, post, f"{ret_name(refused)} is returned before any walk")
        return True
    err = walk_error(pre, A, E)
    if err is not None:
        why = (f" (range [{A:#x}, {E:#x}) is not inside the {pre.ia_bits}-bit IPA space)"
               if err != EINVAL else " (the table has no root)")
        check_ret(rep, step, err, why)
        check_nothing_changed(rep, pre, post, f"the walk is refused with {ret_name(err)}")
        return True
    if E <= A:
        check_ret(rep, step, 0, " (empty range: nothing to walk)")
        check_nothing_changed(rep, pre, post, "the walked range is empty")
        return True
    return False


def op_range(pre, step):
    """[A, E) for an op with addr/size, or the one page containing addr for single-address ops."""
    ps = pre.page_shift
    if "size" in step.args:
        return walked_range(step.args["addr"], step.args["size"], ps)
    return walked_range(step.args["addr"], 1, ps)
