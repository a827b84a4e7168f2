"""A small guest for the lguest checks: its page-table layout, and how a well-behaved guest changes it.

``GuestLayout(fmt)`` places, in 32 guest frames, three guest pgdirs, the page tables under them (a
user table per pgdir, kernel tables shared by all, as Linux guests do), the guest's kernel stack and
its ``lguest_data``. ``coop_*`` functions perform what a cooperative (Linux-like) guest does: write
its own table entry, then announce it with the hypercall lguest expects. A hostile guest instead
writes any word anywhere and passes any hypercall arguments (``hostile_*`` value pools here).
"""

from __future__ import annotations

from ptspec.spec.lguest.walk import A, D, LAYOUTS, P, PAGE, PAGE_SHIFT, RW, TABLE_FLAGS, US

PAGE_SIZE = PAGE                   # the x86 page and entry bits come from spec, not impl
_PAGE_TABLE = TABLE_FLAGS
KERNEL_ADDRESS = 0xC000_0000
KERNEL_PGD_INDEX = LAYOUTS[False].indices(KERNEL_ADDRESS)[0]     # 768: the 2-level PDE of the kernel


class GuestLayout:
    def __init__(self, fmt: str, pfn_limit: int = 32):
        self.fmt = fmt
        self.pae = fmt == "pae"
        self.eb = 8 if self.pae else 4
        self.pfn_limit = pfn_limit
        self.pgdirs = [0x1000, 0x2000, 0x3000]
        self.lguest_data = (pfn_limit - 1) * PAGE_SIZE
        self.stack_esp = KERNEL_ADDRESS + 0x8000
        self.data_frames = list(range(12, pfn_limit - 2))
        if self.pae:
            self.kernel_pmd = 0x4000
            self.kernel_pte = 0x5000
            self.user_pmd = [0x6000, 0x7000, 0x8000]
            self.user_pte = [0x9000, 0xA000, 0xB000]
        else:
            self.kernel_pte = 0x4000
            self.user_pte = [0x5000, 0x6000, 0x7000]
        self.user_vas = [k * PAGE_SIZE for k in range(8)]
        self.kernel_vas = [KERNEL_ADDRESS + k * PAGE_SIZE for k in range(9)]

    # ---- where entries live ---------------------------------------------------------------------
    def pte_addr(self, p: int, va: int) -> int:
        table = self.kernel_pte if va >= KERNEL_ADDRESS else self.user_pte[p]
        return table + LAYOUTS[self.pae].indices(va)[2] * self.eb

    def user_pde_addr(self, p: int) -> int:
        """The entry whose change a cooperative guest announces for its user table of pgdir p."""
        return self.user_pmd[p] if self.pae else self.pgdirs[p]

    def kernel_pde_addrs(self) -> list[int]:
        if self.pae:
            return [self.kernel_pmd]                       # pmd[0] of the shared kernel PMD page
        return [g + KERNEL_PGD_INDEX * 4 for g in self.pgdirs]          # pde[768] of every pgdir

    def table_entry_addrs(self) -> list[int]:
        """Every guest address that holds a table entry of the layout (for hostile writes)."""
        out = []
        for p, g in enumerate(self.pgdirs):
            out += [g, g + self.eb, g + 3 * self.eb] if self.pae else [g, g + 4, g + KERNEL_PGD_INDEX * 4, g + 1023 * 4]
            out += [self.pte_addr(p, va) for va in self.user_vas[:3]]
        out += [self.pte_addr(0, va) for va in self.kernel_vas[:3]]
        if self.pae:
            out += [self.kernel_pmd, self.user_pmd[0]]
        return out

    def boot_writes(self) -> list[tuple[int, int]]:
        """(address, value) of the initial guest tables: every pgdir maps its user table at va 0
        (pages 1-3 mapped to frames of its own) and the shared kernel tables at KERNEL_ADDRESS."""
        w = []
        for p, g in enumerate(self.pgdirs):
            if self.pae:
                w.append((g, self.user_pmd[p] | P))
                w.append((g + 3 * 8, self.kernel_pmd | P))
                w.append((self.user_pmd[p], self.user_pte[p] | _PAGE_TABLE))
            else:
                w.append((g, self.user_pte[p] | _PAGE_TABLE))
                w.append((g + KERNEL_PGD_INDEX * 4, self.kernel_pte | P | RW | A | D))
        if self.pae:
            w.append((self.kernel_pmd, self.kernel_pte | P | RW | A | D))
        for p in range(len(self.pgdirs)):                 # user pages 1..3 of every pgdir
            for k in range(1, 4):
                frame = self.data_frames[9 + 3 * p + k - 1]
                w.append((self.pte_addr(p, k * PAGE_SIZE), (frame << PAGE_SHIFT) | P | RW | US | A | D))
        for k, va in enumerate(self.kernel_vas):
            w.append((self.pte_addr(0, va), ((self.data_frames[k] << PAGE_SHIFT) | P | RW | A | D)))
        return w


def boot(h, layout: GuestLayout, linear_faults=()):
    """Init, the guest's tables written, LHCALL_LGUEST_INIT, the first cr3 load, the stack."""
    h.step("init")
    h.begin()
    for va, err in linear_faults:
        h.step("fault", vaddr=va, errcode=err)
    for addr, value in layout.boot_writes():
        h.step("guest_write", addr=addr, value=value)
    h.step("guest_write", addr=layout.lguest_data, value=KERNEL_ADDRESS)
    h.step("guest_data_init", lguest_data=layout.lguest_data)
    h.step("new_pagetable", pgtable=layout.pgdirs[0])
    h.end()
    h.step("set_stack", esp=layout.stack_esp, pages=1)
    if h.lg.dead is not None and not h.violations:
        raise RuntimeError(f"the guest died while booting: {h.lg.dead}\n{h.ops_source}")


def coop_set_pte(h, layout, p, va, gpte):
    h.begin()
    h.step("guest_write", addr=layout.pte_addr(p, va), value=gpte)
    h.step("set_pte", gpgdir=layout.pgdirs[p], vaddr=va, gpte=gpte)
    h.end()


def coop_set_user_pde(h, layout, p, flags):
    """Change pgdir p's user table entry (PGD in 2-level, PMD in PAE) and announce it."""
    table = layout.user_pte[p]
    value = (table | flags) if flags & P else 0
    h.begin()
    h.step("guest_write", addr=layout.user_pde_addr(p), value=value)
    if layout.pae:
        h.step("set_pmd", pmdp=layout.user_pmd[p], idx=0)
    else:
        h.step("set_pgd", gpgdir=layout.pgdirs[p], idx=0)
    h.end()


def coop_set_kernel_pde(h, layout, flags):
    """Change the kernel table entry in every pgdir and announce it for each."""
    value = (layout.kernel_pte | flags) if flags & P else 0
    h.begin()
    for addr in layout.kernel_pde_addrs():
        h.step("guest_write", addr=addr, value=value)
    if layout.pae:
        h.step("set_pmd", pmdp=layout.kernel_pmd, idx=0)
    else:
        for g in layout.pgdirs:
            h.step("set_pgd", gpgdir=g, idx=KERNEL_PGD_INDEX)
    h.end()


def pte_value(frame: int, flags: int) -> int:
    return (frame << PAGE_SHIFT) | flags
