"""The host around lguest's page-table code: host pages, the launcher's mapping of guest memory.

Models (Linux 4.7, as page_tables.c sees it through mm/ and drivers/lguest/lg.h):

- shadow table pages from ``get_zeroed_page``/``free_page``: a fixed arena of host frames handed
  out lowest first; an allocation may be made to fail (``fail_next_alloc``). Their words are kept
  sparse (index -> word, absent = 0). An access through a pointer outside a page the host allocated,
  or past the end of one, is *recorded* (``errors``) instead of touching memory: that is the host
  touching memory that is not its shadow tables (LG-BND);
- host page reference counts for the pages lguest may map into a guest (guest memory, the
  launcher's other pages, the switcher pages, each CPU's regs page): ``get_user_pages_fast`` on the
  launcher's address space (may be made to fail), ``get_page``, ``put_page``;
- guest-physical memory, as the launcher maps it at ``mem_base``: ``lgread``/``lgwrite`` with
  lguest_address_ok's bounds check (a failed access kills the guest and reads as zero). It is held
  as the aligned 32-bit little-endian words ever written (address -> word; a word never written
  is absent and reads as zero), so a copy costs the words written, not the memory's size (the
  exhaustive explorer copies a Host for every transition).

Left out: swapping, copy-on-write in get_user_pages, NUMA; the launcher's own pages beyond guest
memory are a few frames (its binary and stack) that gup can reach but the guest must never map.
"""

from ptspec.impl.lguest.x86 import PAGE_SHIFT, PAGE_SIZE, ULONG_MASK


class Host:
    """Host physical pages: shadow-table arena, refcounted mappable pages, the launcher mapping."""

    TABLE_BASE_PFN = 0x1000            # shadow table pages come from here, lowest first
    SWITCHER_BASE_PFN = 0x800          # lg_switcher_pages[]
    REGS_PFN = 0x900                   # the guest CPU's regs page (cpu->regs_page)
    GUEST_BASE_PFN = 0x2000            # host frame of guest frame 0 (launcher memory)
    LAUNCHER_EXTRA = 4                 # launcher pages mapped after guest memory (binary, stack)

    def __init__(self, fmt, pfn_limit: int, mem_base: int, total_switcher_pages: int,
                 arena_pages: int = 256):
        self.fmt = fmt
        self.pfn_limit = pfn_limit
        self.mem_base = mem_base
        self.arena = list(range(self.TABLE_BASE_PFN, self.TABLE_BASE_PFN + arena_pages))
        self.tables: dict[int, dict[int, int]] = {}      # host pfn -> {index: word}
        self.errors: list[list] = []                     # [kind, text]
        self.fail_next_alloc = 0                         # allocations still to fail
        self.fail_next_gup = 0                           # get_user_pages_fast calls still to fail
        self.switcher_pages = [self.SWITCHER_BASE_PFN + i for i in range(total_switcher_pages)]
        self.guest_frames = [self.GUEST_BASE_PFN + g for g in range(pfn_limit)]
        # page_count() of every page lguest may reference; 1 = only the owner's own reference
        self.count: dict[int, int] = {p: 1 for p in self.switcher_pages}
        self.count[self.REGS_PFN] = 1
        for g in range(pfn_limit + self.LAUNCHER_EXTRA):
            self.count[self.GUEST_BASE_PFN + g] = 1
        self.guest_mem: dict[int, int] = {}             # every word ever written: address -> word

    def clone(self) -> "Host":
        new = object.__new__(Host)
        new.__dict__.update(self.__dict__)
        new.arena = list(self.arena)
        new.tables = {k: dict(v) for k, v in self.tables.items()}
        new.errors = [list(e) for e in self.errors]
        new.count = dict(self.count)
        new.guest_mem = dict(self.guest_mem)
        return new

    # --- get_zeroed_page / free_page -------------------------------------------------------
    def get_zeroed_page(self) -> int:
        """Host physical address of a new zeroed page, or 0 when the allocation fails."""
        if self.fail_next_alloc > 0:
            self.fail_next_alloc -= 1
            return 0
        if not self.arena:
            return 0
        pfn = self.arena.pop(0)
        self.tables[pfn] = {}
        return pfn << PAGE_SHIFT

    def free_page(self, pa: int) -> None:
        if pa == 0:
            return
        pfn = pa >> PAGE_SHIFT
        if pfn not in self.tables or pa & (PAGE_SIZE - 1):
            self.errors.append(["free", f"free_page({pa:#x}): not a page the host allocated"])
            return
        del self.tables[pfn]
        self.arena.append(pfn)
        self.arena.sort()

    # --- words of shadow table pages -------------------------------------------------------
    def _where(self, pa: int, idx: int, what: str):
        pfn = pa >> PAGE_SHIFT
        page = self.tables.get(pfn)
        if pa == 0:
            self.errors.append(["null", f"{what} through a NULL table pointer (index {idx})"])
            return None
        if page is None:
            self.errors.append(["wild", f"{what} of page {pa:#x}, which is not an allocated table"])
            return None
        if not 0 <= idx < self.fmt.entries_per_page:
            self.errors.append(["oob", f"{what} of entry {idx} of table {pa:#x}: past the end of "
                                       f"the page ({self.fmt.entries_per_page} entries)"])
            return None
        return page

    def read(self, pa: int, idx: int) -> int:
        page = self._where(pa, idx, "read")
        return 0 if page is None else page.get(idx, 0)

    def write(self, pa: int, idx: int, word: int) -> None:
        page = self._where(pa, idx, "write")
        if page is None:
            return
        if word:
            page[idx] = word & self.fmt.word_mask
        else:
            page.pop(idx, None)

    # --- refcounted pages: get_user_pages_fast, get_page, put_page -----------------------------
    def get_user_pages_fast(self, vaddr: int, write: int) -> int:
        """One page of the launcher's address space at vaddr: its host pfn (a reference taken),
        or -1 when it is not mapped or the call is made to fail."""
        if self.fail_next_gup > 0:
            self.fail_next_gup -= 1
            return -1
        vaddr &= ULONG_MASK
        first = self.mem_base >> PAGE_SHIFT
        vpfn = vaddr >> PAGE_SHIFT
        if not first <= vpfn < first + self.pfn_limit + self.LAUNCHER_EXTRA:
            return -1
        pfn = self.GUEST_BASE_PFN + (vpfn - first)
        self.count[pfn] += 1
        return pfn

    def get_page(self, pfn: int) -> None:
        if pfn not in self.count:
            self.errors.append(["wild", f"get_page of host frame {pfn:#x}, which lguest does not own"])
            return
        self.count[pfn] += 1

    def put_page(self, pfn: int) -> None:
        if pfn not in self.count:
            self.errors.append(["wild", f"put_page of host frame {pfn:#x}, which lguest never "
                                        "referenced"])
            return
        self.count[pfn] -= 1          # below 1 is a put the holder never took: LG-RC sees it

    # --- guest memory through the launcher: lgread / lgwrite ------------------------------------
    def address_ok(self, addr: int, length: int) -> bool:
        """lguest_address_ok: [addr, addr+len) inside guest memory, without wrapping."""
        end = addr + length
        return end <= ULONG_MASK + 1 and end <= self.pfn_limit * PAGE_SIZE

    def _span(self, addr: int, length: int) -> tuple[range, int]:
        """The aligned words holding [addr, addr+length), and all of them as one little-endian
        integer (the first word lowest)."""
        words = range(addr & ~3, addr + length, 4)
        value = 0
        for i, a in enumerate(words):
            value |= self.guest_mem.get(a, 0) << (32 * i)
        return words, value

    def guest_read(self, addr: int, length: int):
        if not self.address_ok(addr, length):
            return None
        _, value = self._span(addr, length)
        return (value >> (8 * (addr & 3))) & ((1 << (8 * length)) - 1)

    def guest_write(self, addr: int, length: int, value: int) -> bool:
        if not self.address_ok(addr, length):
            return False
        words, old = self._span(addr, length)
        shift, mask = 8 * (addr & 3), (1 << (8 * length)) - 1
        new = (old & ~(mask << shift)) | ((value & mask) << shift)
        for i, a in enumerate(words):          # every word the store covers counts as written
            self.guest_mem[a] = (new >> (32 * i)) & 0xFFFF_FFFF
        return True

    def guest_words(self) -> dict[int, int]:
        """Every non-zero aligned 32-bit word of guest memory (for the raw state)."""
        return {a: w for a, w in sorted(self.guest_mem.items()) if w}
