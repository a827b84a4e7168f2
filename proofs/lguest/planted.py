"""Planted bugs for lguest: small wrong variants of impl.lguest functions, to show each check fails.

``planted_lguest(bug_id)`` swaps one method of ``ptspec.impl.lguest.Lguest`` for a variant with one named
defect and restores it on exit. tests/test_lguest_planted.py runs the exhaustive explorer and the
lock-step machines under each and requires a refutation naming one of the bug's ids. The first is
the lguest bug of docs/bugs.md ("shadow-release"); the others give every lguest invariant and
contract at least one bug of its own. The seed's own findings are not planted here: they are the
``seed-as-written`` variant (impl.lguest.SEED_FINDINGS), run through the same checks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from ptspec.impl.lguest import Lguest
from ptspec.impl.lguest.x86 import _PAGE_GLOBAL, _PAGE_RW


@dataclass(frozen=True)
class Bug:
    id: str
    what: str
    caught_by: tuple[str, ...]
    patches: tuple                      # ((attribute of Lguest, factory(original) -> new), ...)


def _no_release_in(orig):
    """Run orig with release_pte turned into a no-op (the old shadow PTE is just overwritten)."""
    def wrapped(self, *a):
        self.release_pte = lambda pte: None
        try:
            return orig(self, *a)
        finally:
            del self.release_pte
    return wrapped


def _gpte_to_spte_global(orig):
    def gpte_to_spte(self, gpte, write):
        spte = orig(self, gpte, write)
        return spte | (gpte & _PAGE_GLOBAL)
    return gpte_to_spte


def _check_gpte_no_limit(orig):
    def check_gpte(self, gpte):
        return orig(self, gpte & ~self.fmt.pfn_mask)      # the frame is never compared to pfn_limit
    return check_gpte


def _switcher_rw(orig):
    def allocate(self):
        ok = orig(self)
        pte_p = self.find_spte(self.switcher_addr, False, 0, 0)
        if ok and pte_p:
            w = self.host.read(*pte_p)
            self.host.write(*pte_p, w | _PAGE_RW)
        return ok
    return allocate


def _set_pte_no_switcher_check(orig):
    def guest_set_pte(self, gpgdir, vaddr, gpte):
        if vaddr >= self.switcher_addr:
            for i, pd in enumerate(self.pgdirs):
                if pd.pgdir:
                    self.do_set_pte(i, vaddr, gpte)
            return
        return orig(self, gpgdir, vaddr, gpte)
    return guest_set_pte


def _release_pgd_no_free(orig):
    def release_pgd(self, pgdir_pa, idx):
        self.host.free_page = lambda pa: None
        try:
            return orig(self, pgdir_pa, idx)
        finally:
            del self.host.free_page
    return release_pgd


def _set_pgd_no_bound(orig):
    def guest_set_pgd(self, gpgdir, idx):
        i = self.find_pgdir(gpgdir)
        if i < len(self.pgdirs):
            self.release_pgd(self.pgdirs[i].pgdir, idx)
            self.pgdirs[i].switcher_mapped = False
            if not self.allocate_switcher_mapping():
                self.kill_guest("Cannot populate switcher mapping")
            self.pgdirs[i].last_host_cpu = -1
    return guest_set_pgd


def _percpu_not_removed(orig):
    def map_switcher(self, host_cpu):
        pd = self.pgdirs[self.cpu.cpu_pgd]
        if pd.last_host_cpu not in (-1, host_cpu):
            self.remove_switcher_percpu_map = lambda i: None
        try:
            return orig(self, host_cpu)
        finally:
            self.__dict__.pop("remove_switcher_percpu_map", None)
    return map_switcher


def _demand_ignores_write(orig):
    def demand_page(self, vaddr, errcode):
        return orig(self, vaddr, errcode & ~2) if errcode & 2 else orig(self, vaddr, errcode)
    return demand_page


def _flush_user_noop(orig):
    def flush(self):
        return None
    return flush


def _set_pte_every_slot(orig):
    def guest_set_pte(self, gpgdir, vaddr, gpte):
        if vaddr < self.switcher_addr:
            for i, pd in enumerate(self.pgdirs):
                if pd.pgdir:
                    self.do_set_pte(i, vaddr, gpte)
            return
        return orig(self, gpgdir, vaddr, gpte)
    return guest_set_pte


def _new_pgdir_no_flush(orig):
    def new_pgdir(self, gpgdir):
        saved_ka = self.kernel_address
        self.kernel_address = 0              # flush_user_mappings then releases nothing
        try:
            return orig(self, gpgdir)
        finally:
            self.kernel_address = saved_ka
    return new_pgdir


def _new_pgdir_waits_for_a_free_slot(orig):
    def new_pgdir(self, gpgdir):
        # draws again while every slot holds a pgdir, waiting for a free one: none ever comes
        while all(pd.pgdir for pd in self.pgdirs):
            self.prandom_u32()
        return orig(self, gpgdir)
    return new_pgdir


def _release_all_skips_current(orig):
    def release_all(self):
        cur = self.pgdirs[self.cpu.cpu_pgd]
        saved, cur.pgdir = cur.pgdir, 0
        try:
            return orig(self)
        finally:
            cur.pgdir = saved
    return release_all


def _demand_no_writeback(orig):
    def demand_page(self, vaddr, errcode):
        self.lgwrite = lambda addr, value: None
        try:
            return orig(self, vaddr, errcode)
        finally:
            del self.lgwrite
    return demand_page


def _run_forgets_cpu(orig):
    def map_switcher(self, host_cpu):
        pd = self.pgdirs[self.cpu.cpu_pgd]
        before = pd.last_host_cpu
        ret = orig(self, host_cpu)
        if before != host_cpu:
            pd.last_host_cpu = -1 if before == -1 else before
        return ret
    return map_switcher


def _free_keeps_pgdirs(orig):
    def free(self):
        self.release_all_pagetables()
        self.freed = True
    return free


def _init_no_switcher(orig):
    def init(self):
        self.allocate_switcher_mapping = lambda: True
        try:
            return orig(self)
        finally:
            del self.allocate_switcher_mapping
    return init


def _gpgd_flags_unchecked(orig):
    def check_gpgd(self, gpgd):
        return orig(self, gpgd & self.fmt.pfn_mask)       # the flags are never looked at
    return check_gpgd


def _set_pgd_releases_nothing(orig):
    def guest_set_pgd(self, gpgdir, idx):
        self.release_pgd = lambda pgdir_pa, i: None
        try:
            return orig(self, gpgdir, idx)
        finally:
            del self.release_pgd
    return guest_set_pgd


def _set_pmd_noop(orig):
    def guest_set_pmd(self, pmdp, idx):
        return None
    return guest_set_pmd


def _guest_pa_faults_in(orig):
    def guest_pa(self, vaddr):
        self.demand_page(vaddr, 0)
        return orig(self, vaddr)
    return guest_pa


def _set_stack_no_pin(orig):
    def guest_set_stack(self, esp, pages):
        if pages > 2:
            return orig(self, esp, pages)
        self.esp1, self.stack_pages = esp, pages        # recorded, never pinned
    return guest_set_stack


BUGS = {b.id: b for b in [
    Bug("shadow-release", "demand_page/do_set_pte overwrite a present shadow PTE without releasing "
        "its page reference (docs/bugs.md)", ("LG-RC",),
        (("demand_page", _no_release_in), ("do_set_pte", _no_release_in))),
    Bug("global-kept", "gpte_to_spte keeps the guest's GLOBAL bit", ("LG-SHADOW",),
        (("gpte_to_spte", _gpte_to_spte_global),)),
    Bug("no-pfn-limit", "check_gpte does not compare the frame with pfn_limit: the launcher's own "
        "pages become mappable", ("LG-SHADOW",), (("check_gpte", _check_gpte_no_limit),)),
    Bug("switcher-rw", "allocate_switcher_mapping maps the switcher code page writable",
        ("LG-SWITCHER",), (("allocate_switcher_mapping", _switcher_rw),)),
    Bug("set-pte-switcher", "guest_set_pte lets the guest set PTEs at or above the switcher",
        ("LG-SWITCHER", "LG-C-SET-PTE"), (("guest_set_pte", _set_pte_no_switcher_check),)),
    Bug("release-pgd-leak", "release_pgd clears the entry but never frees the table page",
        ("LG-RC",), (("release_pgd", _release_pgd_no_free),)),
    Bug("set-pgd-unbounded", "guest_set_pgd does not bound the guest's index at all",
        ("LG-BND",), (("guest_set_pgd", _set_pgd_no_bound),)),
    Bug("percpu-stale", "map_switcher_in_guest keeps the previous host CPU's switcher pages",
        ("LG-SWITCHER",), (("map_switcher_in_guest", _percpu_not_removed),)),
    Bug("demand-ignores-write", "demand_page treats a write fault as a read",
        ("LG-C-DEMAND",), (("demand_page", _demand_ignores_write),)),
    Bug("flush-noop", "guest_pagetable_flush_user does nothing", ("LG-C-FLUSH",),
        (("guest_pagetable_flush_user", _flush_user_noop),)),
    Bug("set-pte-every-slot", "guest_set_pte updates user PTEs in every pgdir, not the one shadowing "
        "gpgdir", ("LG-C-SET-PTE", "LG-SHADOW"), (("guest_set_pte", _set_pte_every_slot),)),
    Bug("new-pgdir-keeps-user", "new_pgdir reuses a slot without dropping its user mappings",
        ("LG-C-NEW-PGTABLE", "LG-SHADOW"), (("new_pgdir", _new_pgdir_no_flush),)),
    Bug("new-pgdir-spins", "new_pgdir waits for a slot with no pgdir: once every slot shadows one, "
        "a switch to a new page table never returns", ("LG-C-RETURNS",),
        (("new_pgdir", _new_pgdir_waits_for_a_free_slot),)),
    Bug("clear-all-skips-current", "release_all_pagetables skips the current pgdir",
        ("LG-C-CLEAR-ALL", "LG-C-NEW-PGTABLE"),
        (("release_all_pagetables", _release_all_skips_current),)),
    Bug("demand-no-accessed", "demand_page does not write ACCESSED/DIRTY back to the guest PTE",
        ("LG-C-DEMAND",), (("demand_page", _demand_no_writeback),)),
    Bug("run-forgets-cpu", "map_switcher_in_guest does not record the host CPU it mapped",
        ("LG-C-RUN", "LG-SWITCHER"), (("map_switcher_in_guest", _run_forgets_cpu),)),
    Bug("free-keeps-pgdirs", "free_guest_pagetable never frees the pgdir pages", ("LG-C-FREE",),
        (("free_guest_pagetable", _free_keeps_pgdirs),)),
    Bug("init-no-switcher", "init_guest_pagetable does not map the switcher",
        ("LG-SWITCHER", "LG-C-INIT"), (("init_guest_pagetable", _init_no_switcher),)),
    Bug("set-pgd-keeps", "guest_set_pgd never releases the shadow entry", ("LG-C-SET-PGD",),
        (("guest_set_pgd", _set_pgd_releases_nothing),)),
    Bug("set-pmd-noop", "guest_set_pmd (PAE) throws nothing away", ("LG-C-SET-PMD",),
        (("guest_set_pmd", _set_pmd_noop),)),
    Bug("pa-faults-in", "guest_pa maps the page it looks up", ("LG-C-OTHER",),
        (("guest_pa", _guest_pa_faults_in),)),
    Bug("stack-not-pinned", "guest_set_stack records the stack but does not pin its pages",
        ("LG-C-STACK",), (("guest_set_stack", _set_stack_no_pin),)),
    Bug("gpgd-flags-unchecked", "check_gpgd ignores the flags of a guest PGD entry (a 4M page, "
        "cache bits)", ("LG-SHADOW",), (("check_gpgd", _gpgd_flags_unchecked),)),
]}


@contextlib.contextmanager
def planted_lguest(bug_id: str):
    """Put bug ``bug_id`` into impl.lguest.Lguest for the duration of the with-block."""
    bug = BUGS[bug_id]
    saved = []
    for attr, factory in bug.patches:
        had = attr in Lguest.__dict__
        orig = getattr(Lguest, attr)
        saved.append((attr, had, orig))
        setattr(Lguest, attr, factory(orig))
    try:
        yield bug
    finally:
        for attr, had, orig in reversed(saved):
            if had:
                setattr(Lguest, attr, orig)
            else:
                delattr(Lguest, attr)
