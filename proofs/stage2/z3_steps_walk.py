"""Walk lemmas: the generic walker visits exactly the entries a range intersects, in order, once.

Models the walker of arch/arm64/kvm/hyp/pgtable.c (``kvm_pgtable_walk`` -> ``_kvm_pgtable_walk``
-> ``__kvm_pgtable_walk`` -> ``__kvm_pgtable_visit``), run as the impl's own code on symbolic
addresses, descriptors and callback results. A whole walk has unboundedly many iterations, so the
proof is by induction, and each lemma proves one induction step on every path:

* ``walk.range`` (every granule and IPA size): the walked range is [start, end) with
  start = ALIGN_DOWN(addr, PAGE_SIZE) and end = PAGE_ALIGN(start + size) in u64 arithmetic (a size
  that wraps gives end <= start); the walk returns -ERANGE exactly when start or end lies beyond
  2**ia_bits (the kernel's test), returns 0 without visiting anything when end <= start, and
  otherwise starts the root walk at start with that end.
* ``walk.roots`` (every geometry, concatenated roots included): the root loop walks root page
  r = the address bits above the start level's granule, at the start level; if that walk ends
  with 0 and the address below end, the next root walk is page r + 1 (< the number of root pages)
  starting exactly at its first address; a non-zero result is returned at once.
* ``walk.table`` (every granule, every level, the flag sets the walkers use): one iteration of the
  entry loop of a table page, for any address inside the page's span below end, any entry, any
  callback results and any descriptor the callbacks write back: the entry visited is the one the
  address bits name; a table gets TABLE_PRE, a descent into the child the descriptor read *before*
  TABLE_PRE names (at the next level, from the same address), then TABLE_POST with the address the
  visit started at; anything else gets LEAF and, if LEAF made it a table, the descent and
  TABLE_POST; the first non-zero result is returned with nothing visited after it; otherwise the
  address after the entry is in [min(end, next), next] with next the entry's end boundary, and the
  loop goes on exactly when it is below end and the entry is not the page's last -- with the next
  entry read (and nothing else) from exactly its first address.

The descent into a child is the induction hypothesis: a stand-in for ``__kvm_pgtable_walk`` one
level down that returns any result and, on 0, leaves the address anywhere in [min(end, next),
next] -- which is what ``walk.table`` proves of a whole table page, by induction over its
iterations (docs/proofs.md). At the last level no descent happens (checked).
"""

from __future__ import annotations

import errno

import z3

from ptspec.spec.arch import geometry as SG
from ptspec.impl.pgtable import walker as W
from ptspec.impl.pgtable.geometry import Granule, all_stage2_geometries

from ptspec.proofs.engines.z3.bv import SymBool, SymInt, W as WIDTH, ite, sym
from ptspec.proofs.stage2.z3_lemmas import combine
from ptspec.proofs.stage2.z3_steps_model import PTP, desc_addr, is_table, levels, z

U64 = (1 << 64) - 1
PRE, LEAF = W.KVM_PGTABLE_WALK_TABLE_PRE, W.KVM_PGTABLE_WALK_LEAF
POST = W.KVM_PGTABLE_WALK_TABLE_POST
FLAG_SETS = {LEAF: "LEAF (attr, flush, get_leaf, hyp map)",
             LEAF | POST: "LEAF|POST (unmap, destroy)",
             PRE | LEAF | POST: "PRE|LEAF|POST (map, set_owner)",
             POST: "POST (hyp destroy)"}


class NextEntry(Exception):
    """The walk read an entry other than the first: the loop's next iteration has begun."""

    def __init__(self, idx, addr, level):
        super().__init__("next entry")
        self.idx, self.addr, self.level = idx, addr, level


class LoopPage:
    """A table page of which the iteration touches one entry, `first` (holding `desc`); reading
    any other entry ends the run (the loop's next iteration has begun). Writes go to `first` only
    (a callback's write-back; anything else is an error the lemma reports)."""

    def __init__(self, first, desc, level):
        self.first = first
        self.cur = desc
        self.level = level
        self.data = None
        self.stray: list = []

    def __getitem__(self, idx):
        if bool(SymBool(z(idx) != self.first)):
            raise NextEntry(idx, self.data.addr, self.level)
        return self.cur

    def __setitem__(self, idx, value):
        self.stray.append(z(idx) == self.first)
        self.cur = value


class _Pool:
    def __init__(self, pages):
        self.pages = pages


class _MmOps:
    def __init__(self, pages):
        self.pool = _Pool(pages)


class _WalkPgt:
    """The kvm_pgtable a walk reads: geometry, a root array, one table page."""

    def __init__(self, ps, ia, pages=None, pgd=None, start_level=None):
        self.gran = Granule(ps)
        self.ia_bits = ia
        self.start_level = (SG.stage2_start_level(ia, ps) if start_level is None
                            else start_level)
        self.mm_ops = _MmOps(pages if pages is not None else {})
        self.pgd = pgd
        self.warnings: list = []

    def pgd_page_idx(self, addr):
        from ptspec.impl.pgtable.geometry import _kvm_pgd_page_idx
        return _kvm_pgd_page_idx(self.gran, self.ia_bits, self.start_level, addr)

    def warn(self, msg):
        self.warnings.append(msg)


class _Roots:
    """pgt->pgd: root page r is 'the page r' (its address stands for its index)."""

    def __getitem__(self, r):
        return r


def _bits(x, lo: int, hi_excl: int) -> z3.BitVecRef:
    """Address bits [hi_excl - 1 : lo] of a 64-bit value, zero-extended."""
    a64 = z3.Extract(63, 0, z(x))
    hi = min(hi_excl, 64) - 1
    return z3.ZeroExt(WIDTH - (hi - lo + 1), z3.Extract(hi, lo, a64))


def _next_boundary(a, g: int) -> z3.BitVecRef:
    return (z(a) & ~z3.BitVecVal(g - 1, WIDTH)) + g


def _ih(a_fresh, lo, hi):
    """The induction hypothesis' address after a child walk: any value in [lo, hi]."""
    return ite(z3.And(z(a_fresh) >= lo, z(a_fresh) <= hi), a_fresh, SymInt(hi))


class _Stub:
    """__kvm_pgtable_walk one level down (or for a root page): the induction hypothesis."""

    def __init__(self, ret, a_fresh, g, second_raises=False):
        self.calls: list = []
        self.ret = ret
        self.a_fresh = a_fresh
        self.g = g
        self.second_raises = second_raises

    def __call__(self, data, ptp, level):
        if self.second_raises and self.calls:
            raise NextEntry(ptp, data.addr, level)
        start = data.addr
        self.calls.append((ptp, level, start))
        if self.ret:
            return self.ret
        hi = _next_boundary(start, self.g)
        lo = z3.If(z(data.end) < hi, z(data.end), hi)
        data.addr = _ih(self.a_fresh, lo, hi)
        return 0


def _levels(ps):
    return levels(ps, SG.IPA_RANGE[ps][1])


def _swap_walk(stub):
    """Run with __kvm_pgtable_walk (the recursion's target) replaced by `stub`; return the walk
    function the caller asked for before the swap (a planted bug included)."""
    d = W.__dict__
    orig = d["__kvm_pgtable_walk"]
    d["__kvm_pgtable_walk"] = stub
    return orig


def _restore(orig):
    W.__dict__["__kvm_pgtable_walk"] = orig


# ------------------------------------------------------------------------------- walk.table

def lemma_walk_table(rlimit, timeout_ms, deadline=None):
    """One iteration of __kvm_pgtable_walk's entry loop (__kvm_pgtable_visit and the loop test),
    for every granule, level and set of walk flags (symbolic: every subset of PRE|LEAF|POST),
    from any address below end, any entry, any callback results and write-backs and any
    child-walk outcome (the induction hypothesis): the
    right entry, the right callbacks in the kernel's order with the right arguments, descent into
    the child named by the descriptor read before TABLE_PRE, the first error returned at once,
    otherwise the next address in [min(end, next boundary), next boundary] and the loop going on
    exactly when that address is below end and entries remain, from the next entry's first
    address."""
    def cases():
        for ps in (12, 14, 16):
            ptrs = SG.entries_per_table(ps)
            for level in _levels(ps):
                g = SG.granule_size(level, ps)
                inputs: dict = {}
                # any subset of PRE|LEAF|POST (the walkers use FLAG_SETS)
                flags = sym("flags", 3, inputs)
                addr, end, d, w_pre, w_leaf, w_post, a_child = (
                    sym(k, 64, inputs) for k in ("addr", "end", "desc", "write_pre",
                                                 "write_leaf", "write_post", "addr_after_child"))
                r_pre, r_leaf, r_post, r_child = (sym(k, 8, inputs) for k in (
                    "ret_pre", "ret_leaf", "ret_post", "ret_child"))
                idx0 = _bits(addr, SG.granule_shift(level, ps),
                             SG.granule_shift(level, ps) + ps - 3)

                def body(ps=ps, ptrs=ptrs, level=level, g=g, flags=flags, addr=addr, end=end,
                         d=d, w_pre=w_pre, w_leaf=w_leaf, w_post=w_post, a_child=a_child,
                         r_pre=r_pre, r_leaf=r_leaf, r_post=r_post, r_child=r_child,
                         idx0=idx0):
                    page = LoopPage(idx0, d, level)
                    events = []
                    rets = {PRE: r_pre, LEAF: r_leaf, POST: r_post}
                    writes = {PRE: w_pre, LEAF: w_leaf, POST: w_post}

                    def cb(a, e, lvl, tbl, ptp, idx, flag):
                        events.append(("cb", flag, lvl, idx, a, e, tbl is page and ptp == PTP))
                        tbl[idx] = writes[flag]
                        return rets[flag]
                    stub = _Stub(r_child, a_child, g)       # the child spans this entry
                    pgt = _WalkPgt(ps, SG.IPA_RANGE[ps][1], {PTP: page})
                    data = W.WalkData(pgt, W.KvmPgtableWalker(cb, flags), addr, end)
                    page.data = data
                    walk = _swap_walk(stub)
                    nxt = None
                    try:
                        ret = walk(data, PTP, level)
                    except NextEntry as e:
                        nxt, ret = e, None
                    finally:
                        _restore(walk)
                    for c in stub.calls:
                        events.append(("child",) + c)
                    ok = _judge_table(level, ps, ptrs, g, flags, addr, end, d, idx0, rets,
                                      writes, r_child, events, stub, data, ret, nxt,
                                      pgt.warnings)
                    ok["C-GET-LEAF: callbacks write only the entry visited"] = z3.And(
                        *page.stray) if page.stray else z3.BoolVal(True)
                    return ok
                assume = [z(addr) < z(end), z(end) <= (1 << SG.IPA_RANGE[ps][1])]
                yield f"{1 << (ps - 10)}K level {level}", body, inputs, assume
    return combine(cases(), rlimit, timeout_ms, deadline)


def _judge_table(level, ps, ptrs, g, flags, addr, end, d, idx0, rets, writes, r_child, events,
                 stub, data, ret, nxt, warnings):
    """The kernel's walker semantics for one entry (written from pgtable.c's documented
    behaviour), compared with what the impl did on this path."""
    exp = []               # expected callback events, then child calls, in order
    stop = None            # the first non-zero result, if any
    after = None           # the address after the entry
    def nonzero_of(f):          # decided only where the kernel tests it (no needless forks)
        return bool(SymBool(z(rets[f]) != 0))

    class _Lazy(dict):
        def __missing__(self, f):
            return nonzero_of(f)
    nonzero = _Lazy()
    children = []

    def descend(desc):
        nonlocal stop, after
        children.append((desc_addr(desc, ps), level + 1, z(addr)))
        if bool(SymBool(z(r_child) != 0)):
            stop = r_child
            return
        after = "child"
        if flags & POST:
            exp.append((POST,))
            if nonzero[POST]:
                stop = rets[POST]

    if bool(SymBool(is_table(d, level))):
        if flags & PRE:
            exp.append((PRE,))
            if nonzero[PRE]:
                stop = rets[PRE]
        if stop is None:
            descend(d)
    else:
        d2 = d
        if flags & LEAF:
            exp.append((LEAF,))
            d2 = writes[LEAF]
            if nonzero[LEAF]:
                stop = rets[LEAF]
        if stop is None:
            if bool(SymBool(is_table(d2, level))):
                descend(d2)
            else:
                after = "leaf"

    cbs = [e for e in events if e[0] == "cb"]
    kids = [e for e in events if e[0] == "child"]
    ok = {}
    ok["C-GET-LEAF: no WARN"] = z3.BoolVal(not warnings)
    shape = len(cbs) == len(exp) and len(kids) == len(children) and all(
        c[1] == e[0] for c, e in zip(cbs, exp))
    ok[f"C-GET-LEAF: the callbacks {[e[0] for e in exp]} and {len(children)} descent(s), in the "
       f"kernel's order (got {[c[1] for c in cbs]}, {len(kids)})"] = z3.BoolVal(shape)
    if not shape:
        return ok
    ok["C-GET-LEAF: every callback gets this page, the entry the address names, the level, the "
       "visit's start address and end"] = z3.And(*[z3.And(z3.BoolVal(c[2] == level and c[6]),
                                                           z(c[3]) == idx0, z(c[4]) == z(addr),
                                                           z(c[5]) == z(end)) for c in cbs]) \
        if cbs else z3.BoolVal(True)
    ok["C-GET-LEAF: the descent is into the child the descriptor read before TABLE_PRE (or "
       "written by LEAF) names, one level down, from the same address"] = z3.And(
        *[z3.And(z(k[1]) == want[0], z3.BoolVal(k[2] == want[1]), z(k[3]) == want[2])
          for k, want in zip(kids, children)]) if kids else z3.BoolVal(True)
    if stop is not None:
        ok["C-GET-LEAF: the first non-zero result is returned, nothing visited after it"] = (
            z3.And(z3.BoolVal(nxt is None and ret is not None), z(ret) == z(stop))
            if nxt is None and ret is not None else z3.BoolVal(False))
        return ok
    nb = _next_boundary(addr, g)
    lo = z3.If(z(end) < nb, z(end), nb)
    a_after = z(data.addr) if nxt is None else z(nxt.addr)
    ok["C-GET-LEAF: after the entry the address is in [min(end, next boundary), next boundary]"] = (
        z3.And(a_after >= lo, a_after <= nb))
    last = idx0 == ptrs - 1
    go_on = z3.And(a_after < z(end), z3.Not(last))
    if nxt is None:
        ok["C-GET-LEAF: the loop stops exactly when the address reached end or the page ended, "
           "returning 0"] = z3.And(z3.Not(go_on), z(ret) == 0)
    else:
        ok["C-GET-LEAF: the loop goes on exactly when the address is below end and entries "
           "remain, reading the next entry from its first address"] = z3.And(
            go_on, z(nxt.idx) == idx0 + 1, a_after == nb, z3.BoolVal(nxt.level == level))
    return ok


# ------------------------------------------------------------------------------- walk.roots

def _groups():
    """(page_shift, start level, the IPA sizes with that start level): every geometry, grouped so
    that one case proves all IPA sizes of a group with ia_bits symbolic."""
    out: dict = {}
    for geom in all_stage2_geometries():
        out.setdefault((geom.gran.page_shift, geom.start_level), []).append(geom.ia_bits)
    for (ps, sl), ias in sorted(out.items()):
        assert all(SG.stage2_start_level(ia, ps) == sl for ia in ias)
        yield ps, sl, ias


def _one_of(x, values) -> z3.BoolRef:
    return z3.Or(*[z(x) == v for v in values])


def _table(x, fn, values) -> z3.BitVecRef:
    """fn(x) for x symbolic among `values`, as a z3 term (fn a spec function on ints)."""
    out = z3.BitVecVal(fn(values[-1]), WIDTH)
    for v in reversed(values[:-1]):
        out = z3.If(z(x) == v, z3.BitVecVal(fn(v), WIDTH), out)
    return out


def lemma_walk_roots(rlimit, timeout_ms, deadline=None):
    """_kvm_pgtable_walk's root loop, for every granule and IPA size (ia_bits symbolic within each
    start level's sizes; concatenated roots included), from any in-range [addr, end) with
    addr < end and any outcome of the first root walk (the induction hypothesis): root page r =
    the address bits above the start level's granule, at the start level; a non-zero result
    returned at once; otherwise the next root walk happens exactly when the address is below end,
    at page r + 1 < the number of root pages (kvm_pgd_pages), from its first address."""
    def cases():
        for ps, sl, ias in _groups():
            inputs: dict = {}
            addr, end, a_after = (sym(k, 64, inputs) for k in ("addr", "end", "addr_after_root"))
            r = sym("ret_root", 8, inputs)
            ia = sym("ia_bits", 8, inputs)
            span_shift = SG.granule_shift(sl, ps) + ps - 3          # one root page's span

            def body(ps=ps, sl=sl, ias=ias, addr=addr, end=end, a_after=a_after, r=r, ia=ia,
                     span_shift=span_shift):
                stub = _Stub(r, a_after, 1 << span_shift, second_raises=True)
                pgt = _WalkPgt(ps, ia, {}, _Roots(), start_level=sl)
                data = W.WalkData(pgt, W.KvmPgtableWalker(lambda *a: 0, LEAF), addr, end)
                orig = _swap_walk(stub)
                nxt = None
                try:
                    ret = W._kvm_pgtable_walk(data)
                except NextEntry as e:
                    nxt, ret = e, None
                finally:
                    _restore(orig)
                ok = {}
                # root page r: address bits [ia_bits - 1 : span_shift] (0 with a single root)
                first = z3.LShR(z(addr), span_shift)
                roots = _table(ia, lambda i: SG.root_pages(i, sl, ps), ias)
                if len(stub.calls) != 1:
                    return {"C-GET-LEAF: one root walk before the next": z3.BoolVal(False)}
                ptp, lvl, a0 = stub.calls[0]
                ok["C-GET-LEAF: the first root walk is page r (address bits above the start "
                   "level), at the start level, from addr"] = z3.And(
                    z(ptp) == first, z3.BoolVal(lvl == sl), z(a0) == z(addr), first < roots)
                if bool(SymBool(z(r) != 0)):
                    ok["C-GET-LEAF: a non-zero root walk result is returned at once"] = (
                        z(ret) == z(r) if nxt is None else z3.BoolVal(False))
                    return ok
                nb = _next_boundary(addr, 1 << span_shift)
                a1 = z(data.addr) if nxt is None else z(nxt.addr)
                if nxt is None:
                    ok["C-GET-LEAF: the root loop stops exactly when the address reached end, "
                       "returning 0"] = z3.And(a1 >= z(end), z(ret) == 0 if isinstance(ret, SymInt)
                                                else z3.BoolVal(ret == 0))
                else:
                    ok["C-GET-LEAF: the next root walk is page r + 1 < root pages, at the start "
                       "level, from its first address"] = z3.And(
                        a1 < z(end), z(nxt.idx) == first + 1, first + 1 < roots, a1 == nb,
                        z3.BoolVal(nxt.level == sl))
                return ok
            assume = [_one_of(ia, ias), z(addr) < z(end),
                      z(end) <= (z3.BitVecVal(1, WIDTH) << z(ia))]
            yield (f"{1 << (ps - 10)}K start level {sl} ipa {ias[0]}..{ias[-1]}", body, inputs,
                   assume)
    return combine(cases(), rlimit, timeout_ms, deadline)


# ------------------------------------------------------------------------------- walk.range

def lemma_walk_range(rlimit, timeout_ms, deadline=None):
    """kvm_pgtable_walk for every granule and IPA size (ia_bits symbolic within each start
    level's sizes), any addr and size (u64, wrapping included): start = ALIGN_DOWN(addr,
    PAGE_SIZE), end = PAGE_ALIGN(start + size) mod 2**64; -ERANGE exactly when start > 2**ia_bits
    or end > 2**ia_bits; else nothing visited and 0 when end <= start; else the root walk starts
    at start with that end."""
    def cases():
        for ps, sl, ias in _groups():
            inputs: dict = {}
            addr, size = sym("addr", 64, inputs), sym("size", 64, inputs)
            ia = sym("ia_bits", 8, inputs)

            def body(ps=ps, sl=sl, addr=addr, size=size, ia=ia):
                seen = []

                def stub(data, ptp, level):
                    seen.append((data.addr, data.end))
                    raise NextEntry(ptp, data.addr, level)
                pgt = _WalkPgt(ps, ia, {}, _Roots(), start_level=sl)
                orig = _swap_walk(stub)
                try:
                    ret = W.kvm_pgtable_walk(pgt, addr, size, W.KvmPgtableWalker(lambda *a: 0,
                                                                                   LEAF))
                except NextEntry:
                    ret = None
                finally:
                    _restore(orig)
                a64 = z3.Extract(63, 0, z(addr))
                s64 = z3.Extract(63, 0, z(size))
                pmask = z3.BitVecVal((1 << ps) - 1, 64)
                start = a64 & ~pmask
                end = (start + s64 + pmask) & ~pmask          # u64 arithmetic: wraps
                limit = z3.BitVecVal(1, 64) << z3.Extract(63, 0, z(ia))
                erange = z3.Or(z3.UGT(start, limit), z3.UGT(end, limit))
                empty = z3.ULE(end, start)
                zx = lambda v: z3.ZeroExt(WIDTH - 64, v)      # noqa: E731
                if seen:
                    a, e = seen[0]
                    return {"C-GET-LEAF: a walk happens only for an in-range, non-empty range, "
                            "from start to end": z3.And(z3.Not(erange), z3.Not(empty),
                                                        z(a) == zx(start), z(e) == zx(end))}
                got = z(ret) if isinstance(ret, SymInt) else z3.BitVecVal(ret, WIDTH)
                return {"C-GET-LEAF: -ERANGE exactly when start or end lies beyond 2**ia_bits; "
                        "an empty range returns 0": z3.If(
                            erange, got == -errno.ERANGE, z3.And(empty, got == 0))}
            yield (f"{1 << (ps - 10)}K ipa {ias[0]}..{ias[-1]}", body, inputs,
                   [_one_of(ia, ias)])
    return combine(cases(), rlimit, timeout_ms, deadline)


CHECKS = {
    "walk.range": (lemma_walk_range, ["C-GET-LEAF", "C-MAP", "C-UNMAP"],
                   ["kvm_pgtable_walk", "_kvm_pgtable_walk"]),
    "walk.roots": (lemma_walk_roots, ["C-GET-LEAF", "S2-TREE"],
                   ["_kvm_pgtable_walk", "kvm_pgd_page_idx"]),
    "walk.table": (lemma_walk_table, ["C-GET-LEAF", "C-MAP", "C-UNMAP", "C-DESTROY"],
                   ["__kvm_pgtable_walk", "__kvm_pgtable_visit"]),
}
