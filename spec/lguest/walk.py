"""The x86-32 translation walk, over a guest's own tables and over lguest's shadow tables.

Models (Intel SDM vol. 3A, 4.3 "32-bit paging" and 4.4 "PAE paging"), written for the spec:

- 2-level: cr3 -> PDE (va bits 31:22) -> PTE (21:12); 32-bit entries.
- PAE: cr3 -> PDPTE (31:30, 4 entries) -> PDE (29:21) -> PTE (20:12); 64-bit entries, the frame
  in bits 43:12 (the width the 32-bit PAE kernel uses).
- Bits: P 0, RW 1, US 2, PWT 3, PCD 4, A 5, D 6, PSE 7 (PAT in a PTE), G 8, NX 63 (PAE).
- Access rights (CR0.WP set): a write needs RW at every level that has one, a user access US at
  every level that has one (the PAE PDPTE has neither).

The *guest* walk follows the rules lguest sets for guest tables (no large pages, table entries
with only the flags lguest accepts, every frame below ``pfn_limit``); the root is the address the
guest gave for its pgdir, read the way lguest reads it. Before the guest's first cr3 load lguest
pretends a linear map (guest-virtual = guest-physical, kernel read-write). The *shadow* walk reads
the host tables of a raw state. Left out: PAT/MTRR memory types, SMEP/SMAP, 4M pages (which lguest
never creates), and TLBs (lguest's shadow tables are the TLB the guest sees).
"""

from dataclasses import dataclass, field

# x86 page-table entry bits (arch/x86/include/asm/pgtable_types.h), and the short names used below
_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7              # a large page in a PDE (PAT in a PTE)
_PAGE_GLOBAL = 1 << 8
_PAGE_NX = 1 << 63              # PAE only
P, RW, US, PWT, PCD, A, D, PSE, G = (_PAGE_PRESENT, _PAGE_RW, _PAGE_USER, _PAGE_PWT, _PAGE_PCD,
                                     _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PSE, _PAGE_GLOBAL)
TABLE_FLAGS = P | RW | US | A | D       # the flags a table entry may carry in a guest table (_PAGE_TABLE)

PAGE_SHIFT = 12
PAGE = 1 << PAGE_SHIFT
PAGE_OFFSET_MASK = PAGE - 1
PHYS_BITS_PAE = 44                      # the frame width the 32-bit PAE kernel uses (bits 43:12)

# page-fault error code bits (X86_PF_WRITE, X86_PF_USER; PF_WRITE, PF_USER in 4.7)
PF_WRITE = 1 << 1
PF_USER = 1 << 2

# where each level's index sits in a virtual address
PGDIR_SHIFT_2LEVEL, PGDIR_SHIFT_PAE, PMD_SHIFT_PAE = 22, 30, 21


class Layout:
    """Facts of one format, for the spec."""

    def __init__(self, pae):
        self.pae = pae
        self.entry_bytes = 8 if pae else 4
        word_bits = 64 if pae else 32
        self.frame_mask = ((1 << (PHYS_BITS_PAE if pae else word_bits)) - 1) & ~PAGE_OFFSET_MASK
        self.word_mask = (1 << word_bits) - 1
        self.page_entries = PAGE // self.entry_bytes         # PTRS_PER_PTE (and PTRS_PER_PMD with PAE)
        self.pgdir_shift = PGDIR_SHIFT_PAE if pae else PGDIR_SHIFT_2LEVEL
        self.root_entries = 1 << (32 - self.pgdir_shift)     # PTRS_PER_PGD: 4 with PAE, 1024
        self.nx = _PAGE_NX if pae else 0

    def frame(self, e):
        return (e & self.frame_mask) >> PAGE_SHIFT

    def flags(self, e):
        return e & ~self.frame_mask & self.word_mask

    def indices(self, va):
        """(root index, middle index or None, pte index) of va."""
        n, top = self.page_entries, self.root_entries
        if self.pae:
            return ((va >> PGDIR_SHIFT_PAE) % top, (va >> PMD_SHIFT_PAE) % n,
                    (va >> PAGE_SHIFT) % n)
        return (va >> PGDIR_SHIFT_2LEVEL) % top, None, (va >> PAGE_SHIFT) % n

    def va_of(self, i, j, k):
        if self.pae:
            return (i << PGDIR_SHIFT_PAE) | (j << PMD_SHIFT_PAE) | (k << PAGE_SHIFT)
        return (i << PGDIR_SHIFT_2LEVEL) | (k << PAGE_SHIFT)

    def root_span(self):
        """Bytes of virtual space one root entry covers."""
        return 1 << self.pgdir_shift


LAYOUTS = {False: Layout(False), True: Layout(True)}


@dataclass
class GuestWalk:
    """The guest's own translation of one page: ``ok`` when every entry is present and valid.
    ``reason`` says why not; ``bad`` is True when an entry is present but breaks lguest's rules
    (lguest kills a guest that makes it read such an entry)."""
    ok: bool
    reason: str = ""
    bad: bool = False
    frame: int = 0
    rw: bool = False
    us: bool = False
    dirty: bool = False
    pte: int = 0
    pte_addr: int = -1
    upper_rw: bool = True
    upper_us: bool = True
    level: str = ""          # where a bad walk failed: "pgd", "pmd" or "pte" (lguest kills at once
                             # for "pgd"/"pmd"; a bad PTE only once the access checks pass)


def guest_walk(st, gpgdir, va, linear=False):
    """The guest's translation of va through the pgdir at guest address gpgdir."""
    lay = LAYOUTS[st.pae]
    if linear:
        if va >= st.pfn_limit * PAGE:
            return GuestWalk(False, f"linear map: {va:#x} is beyond guest memory", bad=True)
        return GuestWalk(True, frame=va >> PAGE_SHIFT, rw=True, us=False, dirty=True,
                         pte=(va & ~PAGE_OFFSET_MASK) | P | RW)
    i, j, k = lay.indices(va)
    eb = lay.entry_bytes
    top = st.read_guest(gpgdir + i * eb, eb)
    if top is None:
        return GuestWalk(False, f"pgd entry address {gpgdir + i * eb:#x} is outside guest memory", bad=True,
                         level="pgd")
    if not top & P:
        return GuestWalk(False, f"pgd entry {top:#x} not present")
    allowed = P if st.pae else TABLE_FLAGS
    if lay.flags(top) & ~allowed or lay.frame(top) >= st.pfn_limit:
        return GuestWalk(False, f"pgd entry {top:#x} breaks lguest's rules", bad=True, level="pgd")
    upper = top
    if st.pae:
        mid = st.read_guest(lay.frame(top) * PAGE + j * eb, eb)
        if mid is None:
            return GuestWalk(False, "pmd entry outside guest memory", bad=True, level="pmd")
        if not mid & P:
            return GuestWalk(False, f"pmd entry {mid:#x} not present")
        if lay.flags(mid) & ~TABLE_FLAGS or lay.frame(mid) >= st.pfn_limit:
            return GuestWalk(False, f"pmd entry {mid:#x} breaks lguest's rules", bad=True, level="pmd")
        upper = mid
    pte_addr = lay.frame(upper) * PAGE + k * eb
    pte = st.read_guest(pte_addr, eb)
    if pte is None:
        return GuestWalk(False, f"pte address {pte_addr:#x} is outside guest memory", bad=True)
    if not pte & P:
        return GuestWalk(False, f"pte {pte:#x} not present", pte=pte, pte_addr=pte_addr)
    if pte & PSE or lay.frame(pte) >= st.pfn_limit:
        return GuestWalk(False, f"pte {pte:#x} breaks lguest's rules", bad=True, pte=pte,
                         pte_addr=pte_addr)
    return GuestWalk(True, frame=lay.frame(pte), rw=bool(pte & RW and upper & RW),
                     us=bool(pte & US and upper & US), dirty=bool(pte & D), pte=pte,
                     pte_addr=pte_addr, upper_rw=bool(upper & RW), upper_us=bool(upper & US))


def guest_allows(gw, write, user):
    """Whether the guest's own tables allow the access (all levels)."""
    return gw.ok and (not write or gw.rw) and (not user or gw.us)


@dataclass
class Shadow:
    """One present shadow translation of a 4K page."""
    va: int
    hpfn: int
    leaf: int
    rw: bool
    us: bool
    nx: bool
    path: list = field(default_factory=list)     # [(level name, table pa, index, word)]


def shadow_translations(st, root, problems=None):
    """Every present shadow translation under the shadow pgdir at host address root: {va: Shadow}.

    A table page already read in this walk is not read again (the shadow tables never share a
    table inside one pgdir: LG-RC reports a page under two entries), so the walk costs what the
    tables hold. Structure problems found on the way (a table entry pointing to a page the host does not hold as
    a table, a large page) are appended to ``problems`` as (kind, text) when it is a list.
    """
    lay = LAYOUTS[st.pae]
    out = {}
    rootw = st.tables.get(root)
    if rootw is None:
        if problems is not None:
            problems.append(("root", f"pgdir {root:#x} is not a table page the host holds"))
        return out

    expanded = set()      # table pages this walk has read: one under two entries is read once

    def table(pa, what):
        t = st.tables.get(pa)
        if t is None:
            if problems is not None:
                problems.append(("dangling", f"{what} points to {pa:#x}, not a table page the host holds"))
            return None
        if pa in expanded:
            return None           # shared: LG-RC reports it; read again it would multiply the walk
        expanded.add(pa)
        return t

    for i, top in sorted(rootw.items()):
        if i >= lay.root_entries or not top & P:
            continue
        if top & PSE and not st.pae:
            if problems is not None:
                problems.append(("large", f"pgd[{i}] = {top:#x} is a 4M page"))
            continue
        t1 = table(lay.frame(top) * PAGE, f"pgd[{i}] of {root:#x}")
        if t1 is None:
            continue
        mids = sorted(t1.items()) if st.pae else [(None, top)]
        for j, mid in mids:
            if not mid & P:
                continue
            if st.pae:
                if mid & PSE:
                    if problems is not None:
                        problems.append(("large", f"pmd[{i}][{j}] = {mid:#x} is a 2M page"))
                    continue
                ptes = table(lay.frame(mid) * PAGE, f"pmd[{i}][{j}] of {root:#x}")
                if ptes is None:
                    continue
            else:
                ptes = t1
            rw_up = bool(mid & RW)
            us_up = bool(mid & US)
            for k, pte in sorted(ptes.items()):
                if not pte & P:
                    continue
                va = lay.va_of(i, j or 0, k)
                path = [("pgd", root, i, top)]
                if st.pae:
                    path.append(("pmd", lay.frame(top) * PAGE, j, mid))
                path.append(("pte", lay.frame(mid) * PAGE, k, pte))
                out[va] = Shadow(va, lay.frame(pte), pte, rw_up and bool(pte & RW),
                                 us_up and bool(pte & US), bool(pte & lay.nx), path)
    return out


def shadow_pte_slot_exists(st, root, va):
    """Whether the walk of va reaches a shadow PTE slot (every upper level present)."""
    lay = LAYOUTS[st.pae]
    i, j, _ = lay.indices(va)
    top = st.tables.get(root, {}).get(i, 0)
    if not top & P:
        return False
    t1 = st.tables.get(lay.frame(top) * PAGE)
    if t1 is None:
        return False
    if st.pae:
        mid = t1.get(j, 0)
        return bool(mid & P) and lay.frame(mid) * PAGE in st.tables
    return True
