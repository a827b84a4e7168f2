"""lguest shadow-table walking, faults and guest updates (drivers/lguest/page_tables.c, Linux 4.7).

Parts (i) to (iii) and (v) of page_tables.c, as a mixin of ``impl.lguest.Lguest``: the shadow and
guest table accessors (spgd_addr, spmd_addr, spte_addr, gpgd_addr, gpmd_addr, gpte_addr),
get_pfn, gpte_to_spte, release_pte/pmd/pgd, the check_gpte/gpgd/gpmd sanity checks, find_spte,
demand_page, page_writable, pin_page, do_set_pte, guest_set_pte, guest_set_pgd, guest_set_pmd,
flush_user_mappings, guest_pagetable_flush_user and guest_pa.

A "pointer" to a shadow entry is a pair (host address of the table page, index). Each place where
the seed breaks the spec is kept, under a finding id, behind ``self.seed_findings`` (see
docs/lguest.md); the default is the corrected code. Left out: locking (callers hold the guest's lock), TLB flushes on
the host (the switcher reloads cr3 on every guest entry).
"""

from ptspec.impl.lguest.x86 import PAGE_SHIFT, PAGE_SIZE, PAGE_MASK, ULONG_MASK, _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_GLOBAL, _PAGE_PRESENT, _PAGE_PSE, _PAGE_RW, _PAGE_TABLE, _PAGE_USER


class ShadowOps:
    """Mixin: needs self.fmt, self.host, self.pgdirs, self.cpu, self.switcher_addr, ..."""

    # ---- accessors ----------------------------------------------------------------------------
    def spgd_addr(self, i, vaddr):
        """spgd_addr: the shadow PGD entry of vaddr in pgdir slot i."""
        return (self.pgdirs[i].pgdir, self.fmt.pgd_index(vaddr))

    def spmd_addr(self, spgd, vaddr):
        """spmd_addr (PAE): the shadow PMD entry of vaddr under a present shadow PGD entry."""
        if not self.fmt.flags(spgd) & _PAGE_PRESENT:
            self.host.errors.append(["bug", f"spmd_addr: shadow pgd {spgd:#x} not present"])
        return (self.fmt.pfn(spgd) << PAGE_SHIFT, self.fmt.pmd_index(vaddr))

    def spte_addr(self, spgd, vaddr):
        """spte_addr: the shadow PTE of vaddr under a present shadow PGD (and PMD) entry."""
        fmt = self.fmt
        if fmt.pae:
            pmd = self.host.read(*self.spmd_addr(spgd, vaddr))
            if not fmt.flags(pmd) & _PAGE_PRESENT:
                self.host.errors.append(["bug", f"spte_addr: shadow pmd {pmd:#x} not present"])
            return (fmt.pfn(pmd) << PAGE_SHIFT, fmt.pte_index(vaddr))
        if not fmt.flags(spgd) & _PAGE_PRESENT:
            self.host.errors.append(["bug", f"spte_addr: shadow pgd {spgd:#x} not present"])
        return (fmt.pfn(spgd) << PAGE_SHIFT, fmt.pte_index(vaddr))

    def gpgd_addr(self, vaddr):
        """gpgd_addr: guest address of the guest PGD entry of vaddr (current pgdir)."""
        base = self.pgdirs[self.cpu.cpu_pgd].gpgdir
        return (base + (vaddr >> self.fmt.pgdir_shift) * self.fmt.entry_bytes) & ULONG_MASK

    def gpmd_addr(self, gpgd, vaddr):
        """gpmd_addr (PAE): guest address of the guest PMD entry under gpgd."""
        gpage = (self.fmt.pfn(gpgd) << PAGE_SHIFT) & ULONG_MASK
        return (gpage + self.fmt.pmd_index(vaddr) * 8) & ULONG_MASK

    def gpte_addr(self, gtable, vaddr):
        """gpte_addr: guest address of the guest PTE under gtable (PGD entry, or PMD with PAE)."""
        gpage = (self.fmt.pfn(gtable) << PAGE_SHIFT) & ULONG_MASK
        return (gpage + self.fmt.pte_index(vaddr) * self.fmt.entry_bytes) & ULONG_MASK

    def lgread(self, addr):
        """lgread: one entry of guest memory; outside it the guest is killed and 0 is read."""
        v = self.host.guest_read(addr, self.fmt.entry_bytes)
        if v is None:
            self.kill_guest(f"bad read address {addr:#x} len {self.fmt.entry_bytes}")
            return 0
        return v

    def lgwrite(self, addr, value):
        if not self.host.guest_write(addr, self.fmt.entry_bytes, value):
            self.kill_guest(f"bad write address {addr:#x} len {self.fmt.entry_bytes}")

    # ---- pages and entries ------------------------------------------------------------------------
    def get_pfn(self, virtpfn, write):
        """get_pfn: host frame of launcher page virtpfn (a reference taken), or -1UL."""
        pfn = self.host.get_user_pages_fast((virtpfn << PAGE_SHIFT) & ULONG_MASK, write)
        return ULONG_MASK if pfn < 0 else pfn

    def gpte_to_spte(self, gpte, write):
        """gpte_to_spte: a shadow PTE for a checked guest PTE: host frame, guest flags minus GLOBAL."""
        fmt = self.fmt
        flags = fmt.flags(gpte) & ~_PAGE_GLOBAL
        base = self.mem_base // PAGE_SIZE
        pfn = self.get_pfn((base + fmt.pfn(gpte)) & ULONG_MASK, write)
        if pfn == ULONG_MASK:
            self.kill_guest(f"failed to get page {fmt.pfn(gpte)}")
            flags = 0
        return fmt.pfn_pte(pfn, flags)

    def release_pte(self, pte):
        """release_pte: drop the host page reference a present shadow PTE holds."""
        if self.fmt.flags(pte) & _PAGE_PRESENT:
            self.host.put_page(self.fmt.pfn(pte))

    def check_gpte(self, gpte):
        if self.fmt.flags(gpte) & _PAGE_PSE or self.fmt.pfn(gpte) >= self.pfn_limit:
            self.kill_guest("bad page table entry")
            return False
        return True

    def check_gpgd(self, gpgd):
        if self.fmt.flags(gpgd) & ~self.fmt.check_gpgd_mask or self.fmt.pfn(gpgd) >= self.pfn_limit:
            self.kill_guest("bad page directory entry")
            return False
        return True

    def check_gpmd(self, gpmd):
        if self.fmt.flags(gpmd) & ~_PAGE_TABLE or self.fmt.pfn(gpmd) >= self.pfn_limit:
            self.kill_guest("bad page middle directory entry")
            return False
        return True

    # ---- find_spte ---------------------------------------------------------------------------
    def find_spte(self, vaddr, allocate, pgd_flags, pmd_flags):
        """find_spte: pointer to the shadow PTE of vaddr in the current pgdir, allocating missing
        levels (with the given flags) when asked; None when absent or out of memory."""
        fmt, host = self.fmt, self.host
        spgd_p = self.spgd_addr(self.cpu.cpu_pgd, vaddr)
        spgd = host.read(*spgd_p)
        if not fmt.flags(spgd) & _PAGE_PRESENT:
            if not allocate:
                return None
            page = host.get_zeroed_page()
            if not page:
                self.kill_guest("out of memory allocating pte page")
                return None
            host.write(*spgd_p, fmt.entry_from_pa(page, pgd_flags))
            spgd = host.read(*spgd_p)
        if fmt.pae:
            spmd_p = self.spmd_addr(spgd, vaddr)
            if not fmt.flags(host.read(*spmd_p)) & _PAGE_PRESENT:
                if not allocate:
                    return None
                page = host.get_zeroed_page()
                if not page:
                    self.kill_guest("out of memory allocating pmd page")
                    return None
                host.write(*spmd_p, fmt.entry_from_pa(page, pmd_flags))
        return self.spte_addr(spgd, vaddr)

    # ---- (i) demand_page ---------------------------------------------------------------------
    def demand_page(self, vaddr, errcode):
        """demand_page: fix a guest page fault from the guest's tables; True when fixed."""
        fmt, cpu = self.fmt, self.cpu
        if vaddr >= self.switcher_addr:
            return False
        if cpu.linear_pages:
            gpgd = self.fmt.check_gpgd_mask
        else:
            gpgd = self.lgread(self.gpgd_addr(vaddr))
            if not fmt.flags(gpgd) & _PAGE_PRESENT:
                return False
            if not self.check_gpgd(gpgd):
                return False
        gpmd = _PAGE_TABLE
        if fmt.pae:
            if not cpu.linear_pages:
                gpmd = self.lgread(self.gpmd_addr(gpgd, vaddr))
                if not fmt.flags(gpmd) & _PAGE_PRESENT:
                    return False
                if not self.check_gpmd(gpmd):
                    return False
            gpte_ptr = self.gpte_addr(gpmd, vaddr)
        else:
            gpte_ptr = self.gpte_addr(gpgd, vaddr)
        if cpu.linear_pages:
            gpte = (vaddr & PAGE_MASK) | _PAGE_RW | _PAGE_PRESENT
        else:
            gpte = self.lgread(gpte_ptr)
        gflags = fmt.flags(gpte)
        if not gflags & _PAGE_PRESENT:
            return False
        if errcode & 2 and not gflags & _PAGE_RW:
            return False
        if errcode & 4 and not gflags & _PAGE_USER:
            return False
        if "demand-upper" not in self.seed_findings and not self._upper_levels_allow(gpgd, gpmd, errcode):
            return False
        if not self.check_gpte(gpte):
            return False
        gpte |= _PAGE_ACCESSED
        if errcode & 2:
            gpte |= _PAGE_DIRTY
        spte_p = self.find_spte(vaddr, True, fmt.flags(gpgd), fmt.flags(gpmd))
        if spte_p is None:
            return False
        self.release_pte(self.host.read(*spte_p))
        if gpte & _PAGE_DIRTY:
            self.host.write(*spte_p, self.gpte_to_spte(gpte, 1))
        else:
            self.host.write(*spte_p, self.gpte_to_spte(gpte & ~_PAGE_RW, 0))
        if not cpu.linear_pages:
            self.lgwrite(gpte_ptr, gpte)
        return True

    def _upper_levels_allow(self, gpgd, gpmd, errcode):
        """Correction (see docs/lguest.md): the access must also be allowed by the guest's PGD
        (2-level) or PMD (PAE) entry, whose RW/USER bits the shadow copies and the CPU checks."""
        upper = self.fmt.flags(gpmd if self.fmt.pae else gpgd)
        if errcode & 2 and not upper & _PAGE_RW:
            return False
        if errcode & 4 and not upper & _PAGE_USER:
            return False
        return True

    # ---- (ii) page_writable / pin_page ---------------------------------------------------------
    def page_writable(self, vaddr):
        if vaddr >= self.switcher_addr:
            return False
        spte_p = self.find_spte(vaddr, False, 0, 0)
        if spte_p is None:
            return False
        flags = self.fmt.flags(self.host.read(*spte_p))
        return flags & (_PAGE_PRESENT | _PAGE_RW) == (_PAGE_PRESENT | _PAGE_RW)

    def pin_page(self, vaddr):
        if not self.page_writable(vaddr) and not self.demand_page(vaddr, 2):
            self.kill_guest(f"bad stack page {vaddr:#x}")

    # ---- (iii) guest_set_pte / do_set_pte / guest_set_pgd / guest_set_pmd ------------------------
    def do_set_pte(self, idx, vaddr, gpte):
        """do_set_pte: replace the shadow PTE of vaddr in slot idx (if its table exists): with the
        new guest PTE when that is accessed or dirty, else with nothing (faulted in later)."""
        fmt, host = self.fmt, self.host
        spgd = host.read(*self.spgd_addr(idx, vaddr))
        if not fmt.flags(spgd) & _PAGE_PRESENT:
            return
        if fmt.pae and not fmt.flags(host.read(*self.spmd_addr(spgd, vaddr))) & _PAGE_PRESENT:
            return
        spte_p = self.spte_addr(spgd, vaddr)
        self.release_pte(host.read(*spte_p))
        wanted = fmt.flags(gpte) & (_PAGE_DIRTY | _PAGE_ACCESSED)
        if wanted and "set-pte-nonpresent" not in self.seed_findings:
            wanted = fmt.flags(gpte) & _PAGE_PRESENT     # correction: a non-present gpte maps nothing
        if wanted:
            if not self.check_gpte(gpte):
                if "set-pte-stale" not in self.seed_findings:
                    host.write(*spte_p, 0)       # correction: never leave the released entry
                return
            if "set-pte-dirty" not in self.seed_findings and not fmt.flags(gpte) & _PAGE_DIRTY:
                gpte &= ~_PAGE_RW                # correction: writable only once dirty
            host.write(*spte_p, self.gpte_to_spte(gpte, fmt.flags(gpte) & _PAGE_DIRTY))
        else:
            host.write(*spte_p, 0)

    def guest_set_pte(self, gpgdir, vaddr, gpte):
        """guest_set_pte (LHCALL_SET_PTE): the guest changed one PTE of pgdir gpgdir."""
        if vaddr >= self.switcher_addr:
            self.kill_guest("attempt to set pte into Switcher pages")
            return
        if vaddr >= self.kernel_address:
            for i, pd in enumerate(self.pgdirs):
                if pd.pgdir:
                    self.do_set_pte(i, vaddr, gpte)
        else:
            i = self.find_pgdir(gpgdir)
            if i != len(self.pgdirs):
                self.do_set_pte(i, vaddr, gpte)

    def guest_set_pgd(self, gpgdir, idx):
        """guest_set_pgd (LHCALL_SET_PGD): the guest changed PGD entry idx of pgdir gpgdir."""
        if "set-pgd-bound" in self.seed_findings:
            limit_ok = idx <= self.fmt.ptrs_per_pgd          # the seed's test: idx > PTRS_PER_PGD
        else:
            limit_ok = idx < self.fmt.ptrs_per_pgd
        if not limit_ok:
            self.kill_guest(f"Attempt to set pgd {idx}/{self.fmt.ptrs_per_pgd}")
            return
        i = self.find_pgdir(gpgdir)
        if i < len(self.pgdirs):
            self.release_pgd(self.pgdirs[i].pgdir, idx)
            if "set-pgd-switcher" not in self.seed_findings:
                # correction: the remap below is done in the *current* pgdir only; a released
                # non-current pgdir must be remapped when it is next switched to
                self.pgdirs[i].switcher_mapped = False
            if not self.allocate_switcher_mapping():
                self.kill_guest("Cannot populate switcher mapping")
            self.pgdirs[i].last_host_cpu = -1

    def guest_set_pmd(self, pmdp, idx):
        """guest_set_pmd (PAE, LHCALL_SET_PMD): throw every shadow table away."""
        self.guest_pagetable_clear_all()

    # ---- releasing ----------------------------------------------------------------------------
    def _release_pte_page(self, page_pa):
        for word in list(self.host.tables.get(page_pa >> PAGE_SHIFT, {}).values()):
            self.release_pte(word)          # every non-zero entry; zero ones release nothing
        self.host.free_page(page_pa)

    def release_pmd(self, pmd_page, idx):
        spmd = self.host.read(pmd_page, idx)
        if self.fmt.flags(spmd) & _PAGE_PRESENT:
            self._release_pte_page(self.fmt.pfn(spmd) << PAGE_SHIFT)
            self.host.write(pmd_page, idx, 0)

    def release_pgd(self, pgdir_pa, idx):
        """release_pgd: free what shadow PGD entry idx points to, dropping every reference."""
        fmt = self.fmt
        spgd = self.host.read(pgdir_pa, idx)
        if fmt.flags(spgd) & _PAGE_PRESENT:
            page = fmt.pfn(spgd) << PAGE_SHIFT
            if fmt.pae:
                for j in sorted(self.host.tables.get(page >> PAGE_SHIFT, {})):
                    self.release_pmd(page, j)
                self.host.free_page(page)
            else:
                self._release_pte_page(page)
            self.host.write(pgdir_pa, idx, 0)

    # ---- (v) flushing ----------------------------------------------------------------------------
    def flush_user_mappings(self, idx):
        """flush_user_mappings: release every PGD entry below the guest's kernel address."""
        top = self.fmt.pgd_index(self.kernel_address)
        root = self.pgdirs[idx].pgdir
        present = sorted(k for k in self.host.tables.get(root >> PAGE_SHIFT, {}) if k < top)
        for i in present:                   # entries that are 0 release nothing
            self.release_pgd(root, i)

    def guest_pagetable_flush_user(self):
        self.flush_user_mappings(self.cpu.cpu_pgd)

    def guest_pa(self, vaddr):
        """guest_pa: walk the guest's tables to a guest-physical address (-1UL when killed)."""
        fmt = self.fmt
        if self.cpu.linear_pages:
            return vaddr
        gpgd = self.lgread(self.gpgd_addr(vaddr))
        if not fmt.flags(gpgd) & _PAGE_PRESENT:
            self.kill_guest(f"Bad address {vaddr:#x}")
            return ULONG_MASK
        if fmt.pae:
            gpmd = self.lgread(self.gpmd_addr(gpgd, vaddr))
            if not fmt.flags(gpmd) & _PAGE_PRESENT:
                self.kill_guest(f"Bad address {vaddr:#x}")
                return ULONG_MASK
            gpte = self.lgread(self.gpte_addr(gpmd, vaddr))
        else:
            gpte = self.lgread(self.gpte_addr(gpgd, vaddr))
        if not fmt.flags(gpte) & _PAGE_PRESENT:
            self.kill_guest(f"Bad address {vaddr:#x}")
        return ((fmt.pfn(gpte) * PAGE_SIZE) | (vaddr & ~PAGE_MASK)) & ULONG_MASK
