"""x86-32 page-table entry formats as lguest's host uses them (Linux 4.7, arch/x86/include/asm/pgtable*.h).

Models the two formats lguest supports, chosen by CONFIG_X86_PAE on host and guest alike:

- ``2level``: 32-bit entries, PGD (bits 31:22, 1024 entries) -> PTE (bits 21:12, 1024 entries);
- ``pae``: 64-bit entries, PGD (bits 31:30, 4 entries in a page of 512) -> PMD (bits 29:21) -> PTE
  (bits 20:12); the frame field is bits 43:12 (__PHYSICAL_MASK_SHIFT = 44 on 32-bit PAE).

Only the accessors page_tables.c calls are modelled: pgd/pmd/pte_index, pfn and flags of an entry,
pfn_pte, and the flag bits. Left out: NX capability detection (NX is assumed supported with PAE and
absent without), and __supported_pte_mask massaging (all bits are taken as supported).
"""

_PAGE_PRESENT = 0x001
_PAGE_RW = 0x002
_PAGE_USER = 0x004
_PAGE_PWT = 0x008
_PAGE_PCD = 0x010
_PAGE_ACCESSED = 0x020
_PAGE_DIRTY = 0x040
_PAGE_PSE = 0x080
_PAGE_GLOBAL = 0x100
_PAGE_NX_PAE = 1 << 63

_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFF_FFFF
ULONG_MASK = 0xFFFF_FFFF          # unsigned long on x86-32


class X86Format:
    """One of the two entry formats: sizes, shifts and the entry accessors of asm/pgtable*.h."""

    def __init__(self, name: str):
        if name not in ("2level", "pae"):
            raise ValueError(f"format must be '2level' or 'pae', not {name!r}")
        self.name = name
        self.pae = name == "pae"
        if self.pae:
            self.entry_bytes = 8
            self.word_mask = (1 << 64) - 1
            self.ptrs_per_pgd = 4
            self.ptrs_per_pmd = 512
            self.ptrs_per_pte = 512
            self.pgdir_shift = 30
            self.pmd_shift = 21
            self.pfn_mask = ((1 << 44) - 1) & ~(PAGE_SIZE - 1)
            self.nx = _PAGE_NX_PAE
        else:
            self.entry_bytes = 4
            self.word_mask = (1 << 32) - 1
            self.ptrs_per_pgd = 1024
            self.ptrs_per_pmd = 1
            self.ptrs_per_pte = 1024
            self.pgdir_shift = 22
            self.pmd_shift = 22
            self.pfn_mask = 0xFFFF_F000
            self.nx = 0
        self.entries_per_page = PAGE_SIZE // self.entry_bytes
        # CHECK_GPGD_MASK: the only flags a guest PGD entry may carry
        self.check_gpgd_mask = _PAGE_PRESENT if self.pae else _PAGE_TABLE
        # PAGE_KERNEL_RX (switcher code), __PAGE_KERNEL & ~_PAGE_GLOBAL (regs page),
        # __PAGE_KERNEL_RO & ~_PAGE_GLOBAL (per-cpu read-only page)
        self.page_kernel_rx = _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_GLOBAL
        self.page_kernel_noglobal = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY | self.nx
        self.page_kernel_ro_noglobal = _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_DIRTY | self.nx

    # --- indices (pgd_index, pmd_index, pte_index) ---
    def pgd_index(self, vaddr: int) -> int:
        return (vaddr >> self.pgdir_shift) & (self.ptrs_per_pgd - 1)

    def pmd_index(self, vaddr: int) -> int:
        return (vaddr >> self.pmd_shift) & (self.ptrs_per_pmd - 1)

    def pte_index(self, vaddr: int) -> int:
        return (vaddr >> PAGE_SHIFT) & (self.ptrs_per_pte - 1)

    # --- entry accessors (pte_pfn/pgd_pfn/pmd_pfn, pte_flags/pgd_flags/pmd_flags, pfn_pte) ---
    def pfn(self, entry: int) -> int:
        return (entry & self.pfn_mask) >> PAGE_SHIFT

    def flags(self, entry: int) -> int:
        return entry & ~self.pfn_mask & self.word_mask

    def pfn_pte(self, pfn: int, flags: int) -> int:
        """pfn_pte / mk_pte: the frame shifted into place, or'ed with the protection, truncated to
        the entry's width (so pfn -1UL gives a non-present entry full of ones when flags is 0)."""
        return ((pfn << PAGE_SHIFT) | flags) & self.word_mask

    def entry_from_pa(self, pa: int, flags: int) -> int:
        """__pgd(__pa(page) | flags) / __pmd(...): a table entry for the page at host address pa."""
        return (pa | flags) & self.word_mask


FORMATS = {name: X86Format(name) for name in ("2level", "pae")}
