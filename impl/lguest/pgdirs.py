"""lguest's pgdir cache, the switcher mapping and set-up/tear-down (drivers/lguest/page_tables.c, 4.7).

Parts (iv), (vi) and (vii) of page_tables.c, as a mixin of ``impl.lguest.Lguest``: find_pgdir,
new_pgdir (random eviction through ``prandom_u32``, a seeded generator here), guest_new_pagetable,
allocate_switcher_mapping, release_all_pagetables, guest_pagetable_clear_all,
init_guest_pagetable, page_table_guest_data_init, free_guest_pagetable,
remove_switcher_percpu_map, map_switcher_in_guest; and, from interrupts_and_traps.c, the two
callers that pin the guest's kernel stack (pin_stack_pages, guest_set_stack).

Left out: the switcher's own code and the host's per-cpu ``struct lguest_pages`` contents (only
which host page backs which switcher slot matters here).
"""

import errno

from ptspec.impl.lguest.x86 import PAGE_SIZE, ULONG_MASK, _PAGE_PRESENT, _PAGE_TABLE


class PgdirOps:
    """Mixin for the pgdir cache and the switcher."""

    # ---- (iv) switching page tables -------------------------------------------------------------
    def find_pgdir(self, pgtable):
        """find_pgdir: the slot shadowing guest pgdir pgtable, or len(pgdirs) when none does."""
        for i, pd in enumerate(self.pgdirs):
            if pd.pgdir and pd.gpgdir == pgtable:
                return i
        return len(self.pgdirs)

    def new_pgdir(self, gpgdir):
        """new_pgdir: pick a slot at random (allocating its page if it never had one) to shadow
        gpgdir, drop its user mappings; returns (slot, blank) where blank means freshly allocated."""
        blank = False
        nxt = self.prandom_u32() % len(self.pgdirs)
        if not self.pgdirs[nxt].pgdir:
            self.pgdirs[nxt].pgdir = self.host.get_zeroed_page()
            if not self.pgdirs[nxt].pgdir:
                nxt = self.cpu.cpu_pgd
            else:
                blank = True
        self.pgdirs[nxt].gpgdir = gpgdir
        self.flush_user_mappings(nxt)
        self.pgdirs[nxt].last_host_cpu = -1
        return nxt, blank

    def guest_new_pagetable(self, pgtable):
        """guest_new_pagetable (LHCALL_NEW_PGTABLE): the guest loaded cr3 with pgtable."""
        cpu = self.cpu
        if cpu.linear_pages:
            self.release_all_pagetables()
            cpu.linear_pages = False
            newpgdir = len(self.pgdirs)
        else:
            newpgdir = self.find_pgdir(pgtable)
        repin = False
        if newpgdir == len(self.pgdirs):
            newpgdir, repin = self.new_pgdir(pgtable)
        cpu.cpu_pgd = newpgdir
        if repin:
            self.pin_stack_pages()
        if not self.pgdirs[cpu.cpu_pgd].switcher_mapped:
            if not self.allocate_switcher_mapping():
                self.kill_guest("Cannot populate switcher mapping")

    # ---- the switcher ----------------------------------------------------------------------------
    def allocate_switcher_mapping(self):
        """allocate_switcher_mapping: shadow tables for every switcher page in the current pgdir,
        and the switcher code page (read-only, executable) mapped in."""
        fmt, host = self.fmt, self.host
        for i in range(self.total_switcher_pages):
            pte_p = self.find_spte(self.switcher_addr + i * PAGE_SIZE, True,
                                   fmt.check_gpgd_mask, _PAGE_TABLE)
            if pte_p is None:
                return False
            if i == 0 and not fmt.flags(host.read(*pte_p)) & _PAGE_PRESENT:
                host.get_page(host.switcher_pages[0])
                host.write(*pte_p, fmt.pfn_pte(host.switcher_pages[0], fmt.page_kernel_rx))
        self.pgdirs[self.cpu.cpu_pgd].switcher_mapped = True
        return True

    def remove_switcher_percpu_map(self, i):
        """remove_switcher_percpu_map: unmap host CPU i's two switcher pages."""
        base = self.switcher_addr + PAGE_SIZE + i * PAGE_SIZE * 2
        for va in (base, base + PAGE_SIZE):
            pte_p = self.find_spte(va, False, 0, 0)
            if pte_p is None:
                self.host.errors.append(["null", f"remove_switcher_percpu_map: no shadow PTE for "
                                                 f"{va:#x} (dereferenced NULL)"])
                continue
            self.release_pte(self.host.read(*pte_p))
            self.host.write(*pte_p, 0)

    def map_switcher_in_guest(self, host_cpu):
        """map_switcher_in_guest: before running on host_cpu, map that CPU's regs page and
        read-only switcher page into the current pgdir (and unmap the previous CPU's)."""
        fmt, host = self.fmt, self.host
        pgdir = self.pgdirs[self.cpu.cpu_pgd]
        if not pgdir.switcher_mapped:
            host.errors.append(["bug", "map_switcher_in_guest: switcher not mapped (BUG_ON)"])
        if pgdir.last_host_cpu == host_cpu:
            return
        if pgdir.last_host_cpu == -1:
            for i in range(self.host_cpus):
                self.remove_switcher_percpu_map(i)
        else:
            self.remove_switcher_percpu_map(pgdir.last_host_cpu)
        base = self.switcher_addr + PAGE_SIZE + host_cpu * 2 * PAGE_SIZE
        pte_p = self.find_spte(base, False, 0, 0)
        if pte_p is None:
            host.errors.append(["null", f"map_switcher_in_guest: no shadow PTE for {base:#x}"])
        else:
            host.get_page(host.REGS_PFN)
            host.write(*pte_p, fmt.pfn_pte(host.REGS_PFN, fmt.page_kernel_noglobal))
        pte_p = self.find_spte(base + PAGE_SIZE, False, 0, 0)
        if pte_p is None:
            host.errors.append(["null", f"map_switcher_in_guest: no shadow PTE for "
                                        f"{base + PAGE_SIZE:#x}"])
        else:
            page = host.switcher_pages[1 + host_cpu * 2 + 1]
            host.get_page(page)
            host.write(*pte_p, fmt.pfn_pte(page, fmt.page_kernel_ro_noglobal))
        pgdir.last_host_cpu = host_cpu

    # ---- throwing everything away ----------------------------------------------------------------
    def release_all_pagetables(self):
        """release_all_pagetables: every PGD entry of every shadow pgdir."""
        for pd in self.pgdirs:
            if not pd.pgdir:
                continue
            for j in sorted(self.host.tables.get(pd.pgdir >> 12, {})):
                if j < self.fmt.ptrs_per_pgd:
                    self.release_pgd(pd.pgdir, j)
            pd.switcher_mapped = False
            pd.last_host_cpu = -1

    def guest_pagetable_clear_all(self):
        """guest_pagetable_clear_all (LHCALL_FLUSH_TLB with kernel mappings changed)."""
        self.release_all_pagetables()
        self.pin_stack_pages()
        if not self.allocate_switcher_mapping():
            self.kill_guest("Cannot populate switcher mapping")

    # ---- (vii) set-up and tear-down ----------------------------------------------------------------
    def init_guest_pagetable(self):
        """init_guest_pagetable: the first shadow pgdir, linear mode, the switcher; 0 or -ENOMEM."""
        self.cpu.cpu_pgd, allocated = self.new_pgdir(0)
        if not allocated:
            return -errno.ENOMEM
        self.cpu.linear_pages = True
        if not self.allocate_switcher_mapping():
            self.release_all_pagetables()
            return -errno.ENOMEM
        return 0

    def page_table_guest_data_init(self, lguest_data):
        """page_table_guest_data_init (LHCALL_LGUEST_INIT): read the guest's kernel address from
        its lguest_data at guest address lguest_data, tell it the switcher's reserved size."""
        top = (~self.switcher_addr + 1) & ULONG_MASK
        ka = self.host.guest_read(lguest_data + self.LGUEST_DATA_KERNEL_ADDRESS, 4)
        ok = ka is not None and self.host.guest_write(lguest_data + self.LGUEST_DATA_RESERVE_MEM,
                                                        4, top)
        if not ok:
            self.kill_guest(f"bad guest page {lguest_data:#x}")
            return
        self.kernel_address = ka
        if self.kernel_address >= self.switcher_addr:
            self.kill_guest(f"bad kernel address {self.kernel_address:#x}")

    def free_guest_pagetable(self):
        """free_guest_pagetable: release everything and free the pgdir pages."""
        self.release_all_pagetables()
        for pd in self.pgdirs:
            self.host.free_page(pd.pgdir)
            pd.pgdir = 0
        self.freed = True

    # ---- interrupts_and_traps.c callers ------------------------------------------------------------
    def pin_stack_pages(self):
        """pin_stack_pages: make the guest's kernel stack pages writable in the shadow."""
        for i in range(self.stack_pages):
            self.pin_page((self.esp1 - 1 - i * PAGE_SIZE) & ULONG_MASK)

    def guest_set_stack(self, esp, pages):
        """guest_set_stack (LHCALL_SET_STACK, the page-table part): record and pin the stack."""
        if pages > 2:
            self.kill_guest(f"bad stack pages {pages}")
            return
        self.esp1 = esp
        self.stack_pages = pages
        self.pin_stack_pages()
