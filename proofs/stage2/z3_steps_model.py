"""The symbolic table page and page pool the walker-step lemmas run the impl's callbacks against.

Models one step of a page-table walk as the kernel's walker performs it: a callback
(arch/arm64/kvm/hyp/pgtable.c) called on entry ``idx`` of the table page at ``ptp`` at some level,
with every descriptor of that page unknown, the page's reference count unknown, and the step's
arguments unknown -- constrained only by the invariants (S2-RC, S2-OWN, S2-BA, S2-TREE) written
here as z3 formulas over one descriptor.

* ``SymPage``: a whole table page as a z3 array from entry index to 64-bit descriptor. The impl's
  ``tbl[idx]`` reads and writes it at a symbolic index; every write is recorded, so a lemma can
  prove the step's frame (an arbitrary other index ``j`` reads the same before and after) and that
  every value written is a u64.
* ``StepMmOps`` / ``StepPgt``: ``struct kvm_pgtable`` and its ``mm_ops`` for one step. The page
  ``PTP`` has a symbolic count; any other page the step names (a child table, through a descriptor
  held in the page) is "the child" with its own symbolic count, and every address the step gets,
  puts or counts is recorded so the lemma can prove it is exactly the child the entry pointed to.
  Pages the step allocates come from ``zalloc_page``: the memcache / pool contract (a zeroed page
  that is in no table, page aligned and inside the PA range, its count 1 for the caller) is stated
  once here and stands for every such page, because the step only encodes the page's address into
  a table descriptor and takes no other decision on it. The allocation may fail (``alloc_ok``).

Reference counting across a step is local: with ``n`` the number of counted entries of the page
*other than* ``idx`` (any number 0 .. PTRS_PER_PTE - 1), the frame lemma (no other entry changes)
makes ``n`` the same after the step, so S2-RC of the page after the step is exactly
``count == 1 + n + counted(tbl[idx]) (+ the references a walk phase holds, see docs/proofs.md)``.
"""

from __future__ import annotations

import z3

from ptspec.spec.arch import descriptor as SD
from ptspec.spec.arch import geometry as SG

from ptspec.proofs.engines.z3.bv import W, SymInt, as_bv, ite, sym
from ptspec.proofs.stage2.z3_fakes import NEW_TABLE, PTP, FakePgt
from ptspec.proofs.stage2.z3_lemmas import aligned

U64 = (1 << 64) - 1
IDX_BITS = 16                       # wide enough for 8192 entries (64K granule)

__all__ = ["PTP", "NEW_TABLE", "SymPage", "StepMmOps", "StepPgt", "counted", "own_ok", "ba_ok",
           "tree_ok", "entry_ok", "entry_props", "desc_addr", "step_inputs", "page_assumptions",
           "GEOMS", "FIELD", "levels", "label", "count", "block_allowed", "no_warn", "walk_range",
           "phys_ok"]


def z(x) -> z3.BitVecRef:
    """The W-bit term of an int, SymInt, SymBool or W-bit z3 term."""
    if isinstance(x, z3.BitVecRef) and not isinstance(x, SymInt):
        return x
    return as_bv(x)


class SymPage:
    """A table page with every entry symbolic: ``arr0`` before the step, ``arr`` after it."""

    def __init__(self, name: str, ptrs: int):
        self.ptrs = ptrs
        self.arr0 = z3.Array(name, z3.BitVecSort(IDX_BITS), z3.BitVecSort(64))
        self.arr = self.arr0
        self.index_ok: list = []        # every index used is in 0 .. ptrs - 1
        self.fits: list = []            # every value written is a u64
        self.writes = 0

    def _i(self, idx) -> z3.BitVecRef:
        e = z(idx)
        self.index_ok.append(z3.And(e >= 0, e < self.ptrs))
        return z3.Extract(IDX_BITS - 1, 0, e)

    def __getitem__(self, idx):
        v = z3.simplify(z3.ZeroExt(W - 64, z3.Select(self.arr, self._i(idx))))
        return v.as_long() if z3.is_bv_value(v) else SymInt(v)

    def __setitem__(self, idx, value):
        e = z(value)
        self.fits.append(z3.And(e >= 0, e <= U64))
        self.arr = z3.Store(self.arr, self._i(idx), z3.Extract(63, 0, e))
        self.writes += 1

    def before(self, j) -> z3.BitVecRef:
        return z3.ZeroExt(W - 64, z3.Select(self.arr0, z3.Extract(IDX_BITS - 1, 0, z(j))))

    def after(self, j) -> z3.BitVecRef:
        return z3.ZeroExt(W - 64, z3.Select(self.arr, z3.Extract(IDX_BITS - 1, 0, z(j))))

    def frame(self, idx, j, inv="S2-TREE") -> dict:
        """The step's frame and the well-formedness of its writes, as named z3 Booleans (named by
        the tree statement `inv`: S2-TREE, or S1-TREE for hyp stage 1)."""
        return {f"{inv}: (frame) no entry other than idx changes": z3.Implies(
                    z(j) != z(idx), self.after(j) == self.before(j)),
                f"{inv}: (frame) every index used is inside the page": z3.And(*self.index_ok)
                if self.index_ok else z3.BoolVal(True),
                f"{inv}: (frame) every descriptor written is a u64": z3.And(*self.fits)
                if self.fits else z3.BoolVal(True)}


class StepMmOps:
    """kvm_pgtable_mm_ops for one step: PTP's count, one child page's count, a recording pool."""

    def __init__(self, rc, child_rc=None, *, alloc_ok=None, cmo=True):
        self.rc = rc                    # page_count(PTP)
        self.child_rc = child_rc        # page_count(child), the page an entry of PTP points to
        self.alloc_ok = alloc_ok        # symbolic: zalloc_page has a page to give (None: always)
        self.touched: list = []         # (what, address) of every non-PTP page the step names
        self.allocated: list = []
        self.errors: list = []
        self.cmo: list = []
        self.dcache_clean_inval_poc = self._cmo("dc") if cmo else None
        self.icache_inval_pou = self._cmo("ic") if cmo else None

    def _cmo(self, what):
        return lambda pa, size: self.cmo.append((what, pa))

    def _page(self, pa):
        """'ptp', 'new' (a page this step allocated) or 'child' (a symbolic address)."""
        if isinstance(pa, SymInt):
            return "child"
        if pa == PTP:
            return "ptp"
        if pa in self.allocated:
            return "new"
        return "child"

    def get_page(self, pa):
        kind = self._page(pa)
        if kind == "ptp":
            self.rc = self.rc + 1
        elif kind == "child":
            self.touched.append(("get", pa))
            self.child_rc = self.child_rc + 1 if self.child_rc is not None else None
        else:
            self.errors.append(f"get_page of the page this step allocated {pa:#x}")

    def put_page(self, pa):
        kind = self._page(pa)
        if kind == "ptp":
            self.rc = self.rc - 1
        elif kind == "child" and self.child_rc is not None:
            self.touched.append(("put", pa))
            self.child_rc = self.child_rc - 1
        else:
            self.errors.append(f"put_page of a page the step does not hold {pa!r}")

    def page_count(self, pa):
        kind = self._page(pa)
        if kind == "ptp":
            return self.rc
        if kind == "child" and self.child_rc is not None:
            self.touched.append(("count", pa))
            return self.child_rc
        self.errors.append(f"page_count of a page the step does not hold {pa!r}")
        return 0

    def zalloc_page(self, mc):
        if self.alloc_ok is not None and not self.alloc_ok:
            return None
        pa = NEW_TABLE + (len(self.allocated) << 16)
        self.allocated.append(pa)
        return pa

    def touched_only(self, child) -> z3.BoolRef:
        """Every non-PTP page the step named is `child`."""
        return z3.And(*[z(pa) == z(child) for _, pa in self.touched]) if self.touched else \
            z3.BoolVal(True)


class StepPgt(FakePgt):
    """FakePgt (geometry, owner field, TLB and WARN hooks) with a StepMmOps."""

    def __init__(self, page_shift, ia_bits, *, rc, child_rc=None, alloc_ok=None, cmo=True, **kw):
        super().__init__(page_shift, ia_bits, rc=rc, child_rc=child_rc, cmo=cmo, **kw)
        self.mm_ops = StepMmOps(rc, child_rc, alloc_ok=alloc_ok, cmo=cmo)


# -------------------------------------------------------------- the invariants, one descriptor

def counted(d) -> z3.BoolRef:
    """spec S2-RC: a descriptor is counted in its page's refcount when it is not zero."""
    return z(d) != 0


def own_ok(d, field=(63, 56), max_id=1) -> z3.BoolRef:
    """spec S2-OWN for one descriptor: valid, zero, or only owner-field bits with id 1..max."""
    hi, lo = field
    mask = SD.field_mask(hi, lo)
    dz = z(d)
    ident = z3.LShR(dz & mask, lo)
    return z3.Or(dz & SD.VALID != 0, dz == 0,
                 z3.And(dz & (U64 & ~mask) == 0, ident >= 1, ident <= max_id))


def desc_addr(d, ps: int) -> z3.BitVecRef:
    """spec descriptor.address: bits 47:page_shift, plus bits 15:12 as 51:48 with 64K."""
    dz = z(d)
    a = dz & (SD.ADDR_MASK_48 & ~((1 << ps) - 1))
    if ps == 16:
        a = a | (z3.LShR(dz & SD.ADDR_51_48_MASK, SD.ADDR_51_48_SHIFT) << SD.ADDR_FIELD_TOP)
    return a


def ba_ok(d, level: int, ps: int, pa_bits: int, unwritten: int = 0) -> z3.BoolRef:
    """spec S2-BA for one descriptor at `level` (the checks of invariants._encoding_problems): a
    valid descriptor is not the reserved level-3 encoding, a block only where the granule allows
    one, 16K RES0 address bits clear, a leaf's output address aligned to its size, every address
    below 2**pa_bits, and a leaf's `unwritten` bits clear (stage 2: D.s2_leaf_unwritten(), 5.x
    has no FEAT_XNX; hyp stage 1: D.HYP_LEAF_UNWRITTEN)."""
    dz = z(d)
    valid = dz & SD.VALID != 0
    typ = dz & SD.TYPE != 0
    addr = desc_addr(d, ps)
    g = SG.granule_size(level, ps)
    leaf = typ if level == SG.LAST_LEVEL else z3.Not(typ)
    conds = [z3.ULT(addr, z3.BitVecVal(1 << pa_bits, W))]
    if level == SG.LAST_LEVEL:
        conds.append(typ)
    elif not SG.level_allows_block(level, ps):
        conds.append(typ)
    if ps == 14:
        conds.append(dz & SD.RES0_16K_MASK == 0)
    conds.append(z3.Implies(leaf, z3.URem(addr, z3.BitVecVal(g, W)) == 0))
    if unwritten:
        conds.append(z3.Implies(leaf, dz & unwritten == 0))
    return z3.Implies(valid, z3.And(*conds))


def is_table(d, level: int) -> z3.BoolRef:
    """spec descriptor.is_table."""
    if level >= SG.LAST_LEVEL:
        return z3.BoolVal(False)
    return z(d) & SD.TYPE_BITS == SD.TABLE_OR_PAGE


def tree_ok(d, level: int) -> z3.BoolRef:
    """spec S2-TREE for one descriptor: a table descriptor keeps its upper bits 63:59 zero."""
    return z3.Implies(is_table(d, level), z(d) & SD.TABLE_UPPER_MASK == 0)


def entry_ok(d, level: int, ps: int, pa_bits: int, field=(63, 56), max_id=1) -> z3.BoolRef:
    """One descriptor satisfies S2-OWN, S2-BA and the local part of S2-TREE, and is a u64
    (`field` None: no S2-OWN, as for hyp stage 1, whose invalid entries the spec leaves free)."""
    dz = z(d)
    own = own_ok(d, field, max_id) if field is not None else z3.BoolVal(True)
    unwritten = SD.s2_leaf_unwritten() if field is not None else SD.HYP_LEAF_UNWRITTEN
    return z3.And(dz >= 0, dz <= U64, own, ba_ok(d, level, ps, pa_bits, unwritten),
                  tree_ok(d, level))


def entry_props(d, level: int, ps: int, pa_bits: int, field=(63, 56), max_id=1,
                inv="S2") -> dict:
    """entry_ok as named statements: the OWN, BA and TREE parts of one descriptor after a step
    (`inv` "S1" for hyp stage 1: no owner annotations, invalid entries are not judged)."""
    dz = z(d)
    own = {"S2-OWN: the entry is valid, 0 or an owner annotation": own_ok(d, field, max_id)} \
        if inv == "S2" else {}
    return {**own,
            f"{inv}-BA: the entry's kind and address are allowed at its level": ba_ok(
                d, level, ps, pa_bits,
                SD.s2_leaf_unwritten() if inv == "S2" else SD.HYP_LEAF_UNWRITTEN),
            f"{inv}-TREE: a table entry keeps bits 63:59 zero; the entry is a u64": z3.And(
                tree_ok(d, level), dz >= 0, dz <= U64)}


def step_inputs(ptrs: int, names=()) -> tuple:
    """(inputs, page, idx, j, old, n, extra symbols...): the symbolic page, the entry index the
    step works on, another index j (for the frame), the old descriptor at idx and the number n of
    other counted entries; `names` add 64-bit symbols."""
    inputs: dict = {}
    page = SymPage("page", ptrs)
    idx, j, old, n = (sym(k, 64, inputs) for k in ("idx", "j", "old", "n"))
    extra = tuple(sym(k, 64, inputs) for k in names)
    return (inputs, page, idx, j, old, n) + extra


def page_assumptions(page: SymPage, idx, j, old, n, level, ps, pa_bits, field=(63, 56),
                     max_id=1) -> list:
    """What the invariants say before the step: idx and j inside the page, old is entry idx,
    entry idx is well formed, n < PTRS_PER_PTE (the other counted entries). The other entries
    need no assumption: the frame lemma shows the step leaves them as they were."""
    return [z(idx) < page.ptrs, z(j) < page.ptrs, page.before(idx) == z(old),
            entry_ok(old, level, ps, pa_bits, field, max_id), z(n) < page.ptrs]


# -------------------------------------------------------- what every step lemma's cases share

GEOMS = ((12, 48), (14, 48), (16, 52))      # (page_shift, ia_bits): every level a walk reaches
FIELD = (63, 56)


def levels(ps: int, ia: int):
    lo = min(SG.stage2_start_level(i, ps)
             for i in range(SG.IPA_RANGE[ps][0], SG.IPA_RANGE[ps][1] + 1))
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


def no_warn(pgt) -> dict:
    mm = pgt.mm_ops
    return {f"S2-LEAK: no WARN and no pool misuse ({pgt.warnings + mm.errors})":
            z3.BoolVal(not pgt.warnings and not mm.errors)}


def walk_range(addr, end, ps, ia):
    """The walk hands callbacks a page-aligned [addr, end) inside the input range, addr < end."""
    return [aligned(addr, 1 << ps), aligned(end, 1 << ps), z(addr) < z(end), z(end) <= (1 << ia)]


def phys_ok(phys, ps, pa_bits):
    return z3.Or(z3.And(z(phys) < (1 << pa_bits), aligned(phys, 1 << ps)), z(phys) == U64)


def attr_ok(attr, hyp=False):
    """The map's attributes set none of the leaf bits KVM never writes: what
    stage2_set_prot_attr (hyp_set_prot_attr with `hyp`) gives (proved by
    z3_lemmas.lemma_prot_attr, s2.z3.prot-attr)."""
    return z(attr) & (SD.HYP_LEAF_UNWRITTEN if hyp else SD.s2_leaf_unwritten()) == 0
