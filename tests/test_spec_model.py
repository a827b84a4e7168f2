"""The spec judged against a small, test-only model of the kernel's stage-2 walkers.

The model below is written for this test from the kernel's documented algorithm (the walker visits
every entry of the walked range; map tries a leaf at each level, replaces a table by a block when one
fits, splits a block by installing a table; unmap clears whole leaves and frees emptied tables;
attribute walkers rewrite valid leaves). It shares no code with spec or impl. Random operation
sequences run on it, and the spec must find nothing wrong with any step: this guards the spec
against false alarms on legal kernel behaviour. Planted deviations must then be caught.
"""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ptspec import spec
from test_spec_builder import S2, leaf, table_desc, gshift, X, W, R, DEVICE, EINVAL, ERANGE, ENOMEM, EAGAIN

E2BIG = -7
PERMS = (1 << 6) | (1 << 7) | (1 << 54)
AF = 1 << 10


class Kernel:
    """Kernel-like stage-2 operations on an S2 builder; events go to self.log."""

    def __init__(self, b, budget=1000, bug=None):
        self.b, self.budget, self.bug = b, budget, bug
        self.log = []

    # -- helpers -----------------------------------------------------------------------------------
    def g(self, level):
        return 1 << gshift(level, self.b.ps)

    def valid_leaf(self, d, level):
        return d & 1 and ((d & 3) == 3 if level == 3 else (d & 3) == 1)

    def is_table(self, d, level):
        return level < 3 and d & 3 == 3

    def cacheable(self, d):
        return (d >> 2) & 0xF == (0x6 if self.b.fwb else 0xF)

    def walk(self, addr, size, visit):
        b = self.b
        page = 1 << b.ps
        self.addr = addr & ~(page - 1)
        self.end = (self.addr + size + page - 1) & ~(page - 1) & ((1 << 64) - 1)
        limit = 1 << b.ia
        if self.addr > limit or self.end > limit:
            return ERANGE
        if not b.roots:
            return EINVAL
        self.visit, self.eagain = visit, False
        span = self.g(b.start) * b.n
        k = self.addr // span
        while self.addr < self.end:
            ret = self.table(b.roots[k], b.start)
            if ret:
                return ret
            k += 1
        return EAGAIN if self.eagain else 0

    def table(self, pa, level):
        i = (self.addr >> gshift(level, self.b.ps)) % self.b.n
        while i < self.b.n and self.addr < self.end:
            ret = self.visit(pa, i, level)
            if ret:
                return ret
            i += 1
        return 0

    def step_past(self, level):
        g = self.g(level)
        self.addr = self.addr // g * g + g

    def child(self, d):
        return self.b.addr(d)

    def descend(self, pa, i, level):
        return self.table(self.child(self.b.pages[pa][i]), level + 1)

    def free_tree(self, pa, level):
        for d in self.b.pages[pa]:
            if self.is_table(d, level):
                self.free_tree(self.child(d), level + 1)
        del self.b.pages[pa]
        self.b.free += 1

    # -- map / set_owner -----------------------------------------------------------------------------
    def map(self, addr, size, phys, prot, force_pte=False, owner=None):
        if owner is None and prot & X and prot & DEVICE:
            return EINVAL
        page = 1 << self.b.ps
        self.force = force_pte or owner is not None
        self.owner = owner
        if owner is None:
            self.new_attrs = leaf(0, 3, self.b.ps, r=bool(prot & R), w=bool(prot & W), x=bool(prot & X),
                                  device=bool(prot & DEVICE), fwb=self.b.fwb, sw=(prot >> 55) & 0xF) & ~0x3
        self.phys0 = phys & ~(page - 1)
        self.start = addr & ~(page - 1)
        return self.walk(addr, size, self.map_visit)

    def leaf_ok(self, level):
        g = self.g(level)
        allowed = level == 3 or (not self.force and (level == 2 or (level == 1 and self.b.ps == 12)))
        if not allowed or g > self.end - self.addr or self.addr % g:
            return False
        return self.owner is not None or (self.phys0 + self.addr - self.start) % g == 0

    def new_desc(self, level):
        if self.owner is not None:
            return self.owner << self.b.field[1]
        return self._encode(self.phys0 + self.addr - self.start, level)

    def _encode(self, oa, level):
        ps = self.b.ps
        bits = oa & ((1 << 48) - 1) & ~((1 << ps) - 1)
        if ps == 16:
            bits |= ((oa >> 48) & 0xF) << 12
        return bits | self.new_attrs | (3 if level == 3 else 1)

    def try_leaf(self, pa, i, level):
        if not self.leaf_ok(level):
            return E2BIG
        old = self.b.pages[pa][i]
        new = self.new_desc(level)
        if old:
            mask = ~PERMS & ~(((1 << 48) - 1) & ~0xFFF) if self.bug == "perm-mask" else ~PERMS
            if self.valid_leaf(old, level) and new & 1 and not (old ^ new) & mask:
                if self.bug == "eagain-abort":
                    return EAGAIN
                self.eagain = True
                self.step_past(level)
                return 0
            if old & 1:
                self.b.pages[pa][i] = 0
                self.log.append(("tlbi_ipa", self.addr, level))
        if new & 1 and self.b.cmo:
            oa, g = self.b.addr(new), self.g(level)
            if self.cacheable(new) and self.bug != "no-dcache":
                self.log.append(("dcache", oa, g))
            if not new & (1 << 54):
                self.log.append(("icache", oa, g))
        self.b.pages[pa][i] = new
        self.step_past(level)
        return 0

    def map_visit(self, pa, i, level):
        d = self.b.pages[pa][i]
        if self.is_table(d, level):
            if self.leaf_ok(level) and self.bug != "no-coalesce":   # coalesce the table into a block
                self.b.pages[pa][i] = 0
                self.log.append(("tlbi_vmid",) if self.bug != "coalesce-tlbi" else ("tlbi_ipa", self.addr, level))
                self.free_tree(self.child(d), level + 1)
                return self.try_leaf(pa, i, level)
            return self.descend(pa, i, level)
        ret = self.try_leaf(pa, i, level)
        if ret != E2BIG:
            return ret
        if self.budget <= 0:
            return ENOMEM
        self.budget -= 1
        if d & 1:
            self.b.pages[pa][i] = 0
            if self.bug != "split-no-tlbi":
                self.log.append(("tlbi_ipa", self.addr, level))
        self.b.pages[pa][i] = table_desc(self.b.alloc(), self.b.ps)
        return self.descend(pa, i, level)

    # -- unmap -----------------------------------------------------------------------------------------
    def unmap(self, addr, size):
        return self.walk(addr, size, self.unmap_visit)

    def unmap_visit(self, pa, i, level):
        d = self.b.pages[pa][i]
        at = self.addr
        if self.is_table(d, level):
            ret = self.descend(pa, i, level)
            child = self.child(d)
            if not any(self.b.pages[child]):
                self.b.pages[pa][i] = 0
                self.log.append(("tlbi_ipa", at, 0))     # a table: no level hint (S2-BBM-WALK)
                self.free_tree(child, level + 1)
            return ret
        if d and not (self.bug == "owner-unmap" and not d & 1):
            self.b.pages[pa][i] = 0
            if d & 1:
                self.log.append(("tlbi_ipa", self.addr, level))
                if self.cacheable(d) and not self.b.fwb and self.b.cmo:
                    self.log.append(("dcache", self.b.addr(d), self.g(level)))
        if self.bug == "walk-align":
            self.addr += self.g(level)
        else:
            self.step_past(level)
        return 0

    # -- leaf attributes -----------------------------------------------------------------------------
    def attrs(self, addr, size, set_bits, clr_bits):
        self.found = (0, 0)

        def visit(pa, i, level):
            if self.is_table(self.b.pages[pa][i], level):
                return self.descend(pa, i, level)
            d = self.b.pages[pa][i]
            if self.valid_leaf(d, level):
                self.found = (d, level)
                new = (d | set_bits) & ~clr_bits
                if new != d:
                    if self.b.cmo and not new & (1 << 54) and d & (1 << 54):
                        self.log.append(("icache", self.b.addr(d), self.g(level)))
                    self.b.pages[pa][i] = new
            self.step_past(level)
            return 0
        return self.walk(addr, size, visit)


def run_op(model, op, a):
    """Apply one op to the model; return the step record."""
    b = model.b
    out = {}
    if op == "map":
        ret = model.map(a["addr"], a["size"], a["phys"], a["prot"], a["force_pte"])
    elif op == "set_owner":
        ret = EINVAL if a["owner_id"] > b.max_owner else model.map(a["addr"], a["size"], 0, 0, owner=a["owner_id"])
    elif op == "unmap":
        ret = model.unmap(a["addr"], a["size"])
    elif op == "wrprotect":
        ret = model.attrs(a["addr"], a["size"], 0, 1 << 7)
    elif op in ("mkyoung", "mkold", "is_young"):
        s, c = {"mkyoung": (AF, 0), "mkold": (0, AF), "is_young": (0, 0)}[op]
        r = model.attrs(a["addr"], 1, s, c)
        pte = model.found[0] if r == 0 else 0
        if op == "is_young":
            ret = int(bool(pte & AF))
            out = {"young": bool(ret)}
        else:
            ret, out = pte, {"pte": pte}
    elif op == "relax_perms":
        p = a["prot"]
        if p & (0xF << 55):
            ret = EINVAL
        else:
            ret = model.attrs(a["addr"], 1, (1 << 6 if p & R else 0) | (1 << 7 if p & W else 0),
                              (1 << 54) if p & X else 0)
            if ret == 0:
                model.log.append(("tlbi_ipa", a["addr"], model.found[1]))
    elif op == "get_leaf":
        found = {}

        def visit(pa, i, level):
            if model.is_table(b.pages[pa][i], level):
                return model.descend(pa, i, level)
            found.update(pte=b.pages[pa][i], level=level)
            model.step_past(level)
            return 0
        ret = model.walk(a["addr"], 1, visit)
        out = found if ret == 0 else {}
    return {"op": op, "args": a, "ret": ret, "out": out}


GEOS = [dict(ps=12, ia=40), dict(ps=12, ia=32), dict(ps=12, ia=44), dict(ps=14, ia=40),
        dict(ps=16, ia=42, pa_bits=52), dict(ps=12, ia=40, field=(9, 2), cmo=True),
        dict(ps=12, ia=40, fwb=True, cmo=True)]


@st.composite
def op_strategy(draw, ps):
    page = 1 << ps
    blk = 1 << ((ps - 3) * 2 + 3)
    base = draw(st.sampled_from([0, blk, 1 << 30 if ps == 12 else 4 * blk]))
    addr = base + draw(st.sampled_from([0, page, 3 * page, blk - page, blk, 2 * blk])) + draw(st.sampled_from([0, 0, 7]))
    size = draw(st.sampled_from([page, 2 * page, 5 * page, blk, blk + page, 2 * blk]))
    op = draw(st.sampled_from(["map", "map", "map", "set_owner", "unmap", "unmap", "wrprotect", "mkyoung",
                               "mkold", "is_young", "relax_perms", "get_leaf"]))
    phys = draw(st.sampled_from([addr, 0x8000_0000, 0x8000_0000 + page, 0x8000_0000 + blk]))
    prot = draw(st.sampled_from([R, R | W, R | W | X, R | DEVICE, R | W | (1 << 56), X | DEVICE]))
    args = {"addr": addr, "size": size}
    if op == "map":
        args.update(phys=phys, prot=prot, force_pte=draw(st.booleans()))
    elif op == "set_owner":
        args["owner_id"] = draw(st.sampled_from([0, 1, 1, 2]))
    elif op == "relax_perms":
        args = {"addr": addr, "prot": prot}
    elif op in ("mkyoung", "mkold", "is_young", "get_leaf"):
        args = {"addr": addr}
    return op, args


def run_sequence(geo, seq, budget, bug=None):
    """Run ops on the model; return the first step the spec objects to, or None."""
    b = S2(**geo)
    b.free = 1 << 20
    for op, args in seq:
        pre = b.raw()
        model = Kernel(b, budget, bug)
        record = run_op(model, op, args)
        post = b.raw(tlb=model.log)
        vs = spec.check_state(post) + spec.check_step(pre, record, post)
        if vs:
            return record, vs
        budget = model.budget
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_spec_accepts_the_kernel_model(data):
    geo = data.draw(st.sampled_from(GEOS))
    seq = data.draw(st.lists(op_strategy(geo["ps"]), min_size=1, max_size=8))
    budget = data.draw(st.sampled_from([1000, 1000, 2, 0]))
    found = run_sequence(geo, seq, budget)
    assert found is None, found


def test_level1_blocks_and_coalescing_on_the_model():
    seq = [("map", dict(addr=0x4000_0000 + 0x3000, size=0x2000, phys=0x8000_3000, prot=R, force_pte=False)),
           ("map", dict(addr=0x4000_0000, size=1 << 30, phys=0x8000_0000, prot=R | W, force_pte=False)),
           ("map", dict(addr=0x4000_5000, size=0x1000, phys=0x1_0000_0000, prot=R, force_pte=False)),
           ("wrprotect", dict(addr=0x4000_0000, size=1 << 30)),
           ("unmap", dict(addr=0x4010_0000, size=0x1000))]
    assert run_sequence(dict(ps=12, ia=40, cmo=True), seq, 1000) is None
    assert run_sequence(dict(ps=12, ia=40), seq, 1) is None


@pytest.mark.parametrize("bug,seq,inv", [
    ("eagain-abort",
     [("map", dict(addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=R, force_pte=False)),
      ("map", dict(addr=0x4000_0000, size=0x3000, phys=0x8000_0000, prot=R | W, force_pte=False))],
     "C-MAP"),
    ("coalesce-tlbi",
     [("map", dict(addr=0x4000_0000, size=0x2000, phys=0x8000_0000, prot=R, force_pte=False)),
      ("map", dict(addr=0x4000_0000, size=0x20_0000, phys=0x9000_0000, prot=R, force_pte=False))],
     "S2-BBM"),
    ("owner-unmap",
     [("set_owner", dict(addr=0x4000_0000, size=0x1000, owner_id=1)),
      ("unmap", dict(addr=0x4000_0000, size=0x1000))],
     "C-UNMAP"),
    ("walk-align",
     [("map", dict(addr=0x4000_0000, size=0x40_0000, phys=0x8000_0000, prot=R, force_pte=False)),
      ("unmap", dict(addr=0x4000_1000, size=0x20_0000))],
     "C-UNMAP"),
    ("split-no-tlbi",
     [("map", dict(addr=0x4000_0000, size=0x20_0000, phys=0x8000_0000, prot=R, force_pte=False)),
      ("map", dict(addr=0x4000_3000, size=0x1000, phys=0x9000_0000, prot=R, force_pte=False))],
     "S2-BBM"),
    ("no-coalesce",
     [("map", dict(addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=R, force_pte=False)),
      ("map", dict(addr=0x4000_0000, size=0x20_0000, phys=0x8000_0000, prot=R, force_pte=False))],
     "C-MAP"),
    ("perm-mask",
     [("map", dict(addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=R, force_pte=False)),
      ("map", dict(addr=0x4000_0000, size=0x1000, phys=0x9000_0000, prot=R | W, force_pte=False))],
     "C-MAP"),
])
def test_planted_kernel_bugs_are_caught(bug, seq, inv):
    assert run_sequence(dict(ps=12, ia=40), seq, 1000) is None
    record, vs = run_sequence(dict(ps=12, ia=40), seq, 1000, bug)
    assert inv in {v.inv for v in vs}, vs


def test_planted_missing_cmo_is_caught():
    seq = [("map", dict(addr=0x4000_0000, size=0x1000, phys=0x8000_0000, prot=R, force_pte=False))]
    assert run_sequence(dict(ps=12, ia=40, cmo=True), seq, 1000) is None
    record, vs = run_sequence(dict(ps=12, ia=40, cmo=True), seq, 1000, "no-dcache")
    assert [v.inv for v in vs] == ["C-CMO"]
