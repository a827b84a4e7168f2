"""impl.lguest on its own: page_tables.c behaviour in both formats, checked by hand-computed values."""

import errno

import pytest

from ptspec.impl.lguest import SEED_FINDINGS, Lguest
from ptspec.impl.lguest.x86 import FORMATS
from ptspec.proofs.lguest import guest as G

FMTS = ["2level", "pae"]


def booted(fmt, **kw):
    lg = Lguest(fmt, npgdirs=2, rng_seed=1, **kw)
    L = G.GuestLayout(fmt)
    assert lg.init() == 0
    for a, v in L.boot_writes():
        lg.guest_write(a, v)
    lg.guest_write(L.lguest_data, G.KERNEL_ADDRESS)
    lg.guest_data_init(L.lguest_data)
    lg.new_pagetable(L.pgdirs[0])
    lg.set_stack(L.stack_esp, 1)
    assert lg.dead is None
    return lg, L


def spte(lg, va):
    p = lg.find_spte(va, False, 0, 0)
    return None if p is None else lg.host.read(*p)


def test_formats():
    f2, fp = FORMATS["2level"], FORMATS["pae"]
    assert (f2.pgd_index(0xC0001000), f2.pte_index(0xC0001000)) == (768, 1)
    assert (fp.pgd_index(0xC0001000), fp.pmd_index(0xC0201000), fp.pte_index(0xC0001000)) == (3, 1, 1)
    assert f2.pfn_pte(0xFFFFFFFF, 0) == 0xFFFFF000            # -1UL truncated to a 32-bit PTE
    assert fp.pfn(0x8000_0FFF_FFFF_F067) == 0xFFFF_FFFF and fp.flags(0x8000_0000_0000_1067) == (1 << 63) | 0x67


@pytest.mark.parametrize("fmt", FMTS)
def test_init_maps_switcher_and_linear_faults(fmt):
    lg = Lguest(fmt)
    assert lg.init() == 0 and lg.cpu.linear_pages
    sw = spte(lg, lg.switcher_addr)
    assert lg.fmt.pfn(sw) == lg.host.switcher_pages[0] and not sw & 2
    assert lg.fault(0x5000, 2) is True
    e = spte(lg, 0x5000)
    assert lg.fmt.pfn(e) == lg.host.guest_frames[5] and e & 2       # linear: guest frame 5, writable
    assert lg.host.count[lg.host.guest_frames[5]] == 2
    assert lg.fault(0x5000, 4) is False                             # linear map is kernel-only
    lg.fault(lg.pfn_limit * 4096, 0)
    assert lg.dead == "bad page table entry"


@pytest.mark.parametrize("fmt", FMTS)
def test_demand_page_read_then_write(fmt):
    lg, L = booted(fmt)
    lg.guest_write(L.pte_addr(0, 0x1000), G.pte_value(12, G.P | G.RW | G.US))   # clean, not accessed
    assert lg.fault(0x1000, 0) is True
    e = spte(lg, 0x1000)
    assert e & 1 and not e & 2                                      # read: write-protected
    gpte = lg.host.guest_read(L.pte_addr(0, 0x1000), L.eb)
    assert gpte & G.A
    assert lg.fault(0x1000, 6) is True                              # user write
    assert spte(lg, 0x1000) & 2
    held = lg.host.count[lg.fmt.pfn(spte(lg, 0x1000))]
    assert held == 2                                                # old reference released
    assert lg.fault(0x8000, 2) is False                             # guest PTE not present


@pytest.mark.parametrize("fmt", FMTS)
def test_set_pte_kernel_goes_to_every_pgdir(fmt):
    lg, L = booted(fmt)
    lg.new_pagetable(L.pgdirs[1])                                   # the other slot
    k = G.KERNEL_ADDRESS + 0x7000
    assert lg.fault(k, 2) and lg.dead is None
    assert lg.cpu.cpu_pgd == 1 and spte(lg, k) & 1                  # stack page in both slots
    lg.set_pte(L.pgdirs[1], k, 0)
    for i in range(2):
        assert lg.host.read(*lg.spte_addr(lg.host.read(*lg.spgd_addr(i, k)), k)) == 0


@pytest.mark.parametrize("fmt", FMTS)
def test_set_pte_clean_entry_is_write_protected(fmt):
    lg, L = booted(fmt)
    k = G.KERNEL_ADDRESS + 0x1000
    lg.set_pte(L.pgdirs[0], k, G.pte_value(13, G.P | G.RW | G.A))
    assert spte(lg, k) & 1 and not spte(lg, k) & 2
    seed, _ = booted(fmt, variant="seed-as-written")
    seed.set_pte(L.pgdirs[0], k, G.pte_value(13, G.P | G.RW | G.A))
    assert spte(seed, k) & 2                                        # the seed's behaviour


@pytest.mark.parametrize("fmt", FMTS)
def test_set_pte_into_switcher_kills(fmt):
    lg, L = booted(fmt)
    lg.set_pte(L.pgdirs[0], lg.switcher_addr, 0x1063)
    assert lg.dead == "attempt to set pte into Switcher pages"


@pytest.mark.parametrize("fmt", FMTS)
def test_set_pgd_bounds(fmt):
    lg, L = booted(fmt)
    n = lg.fmt.ptrs_per_pgd
    lg.set_pgd(L.pgdirs[0], n)
    assert lg.dead is not None and lg.host.errors == []
    seed, _ = booted(fmt, variant="seed-as-written")
    seed.set_pgd(L.pgdirs[0], n)
    assert seed.dead is None
    assert [e[0] for e in seed.host.errors] == (["oob"] if fmt == "2level" else [])


@pytest.mark.parametrize("fmt", FMTS)
def test_new_pgdir_random_eviction_and_flush(fmt):
    lg, L = booted(fmt)
    assert lg.fault(0x1000, 2)
    cur = lg.cpu.cpu_pgd
    lg.forced_random = [cur]                                        # evict the running slot
    lg.new_pagetable(L.pgdirs[2])
    assert lg.cpu.cpu_pgd == cur and lg.pgdirs[cur].gpgdir == L.pgdirs[2]
    assert spte(lg, 0x1000) in (None, 0)                            # user part flushed
    assert spte(lg, G.KERNEL_ADDRESS + 0x7000) & 1                  # kernel part kept
    assert lg.pgdirs[cur].switcher_mapped


@pytest.mark.parametrize("fmt", FMTS)
def test_run_maps_percpu_pages(fmt):
    lg, _ = booted(fmt)
    lg.run(1)
    base = lg.switcher_addr + 0x1000 + 2 * 0x1000
    assert lg.fmt.pfn(spte(lg, base)) == lg.host.REGS_PFN and spte(lg, base) & 2
    assert lg.fmt.pfn(spte(lg, base + 0x1000)) == lg.host.switcher_pages[4]
    lg.run(0)
    assert spte(lg, base) == 0
    assert lg.host.count[lg.host.REGS_PFN] == 2


@pytest.mark.parametrize("fmt", FMTS)
def test_failures_kill(fmt):
    lg, L = booted(fmt)
    lg.host.fail_next_gup = 1
    assert lg.fault(0x1000, 0) is True                              # as the seed: true, guest dead
    assert lg.dead.startswith("failed to get page")
    lg2 = Lguest(fmt)
    lg2.host.fail_next_alloc = 1
    assert lg2.init() == -errno.ENOMEM


@pytest.mark.parametrize("fmt", FMTS)
def test_free_releases_everything(fmt):
    lg, _ = booted(fmt)
    lg.fault(0x1000, 2)
    lg.run(0)
    lg.free()
    assert lg.host.tables == {} and all(c == 1 for c in lg.host.count.values())


def test_guest_pa_and_data_init():
    lg, L = booted("2level")
    assert lg.pa(G.KERNEL_ADDRESS + 0x1234) == (L.data_frames[1] << 12) | 0x234
    assert lg.host.guest_read(L.lguest_data + 4, 4) == 0x400000     # reserve_mem = 4G - switcher
    lg.guest_data_init(L.lguest_data)
    assert lg.dead == "already have lguest_data"               # LHCALL_LGUEST_INIT only once
    fresh = Lguest("2level")
    fresh.init()
    fresh.guest_write(L.lguest_data, 0xFFC0_0000)
    fresh.guest_data_init(L.lguest_data)
    assert fresh.dead.startswith("bad kernel address")


def test_clone_is_independent():
    lg, _ = booted("pae")
    c = lg.clone()
    c.fault(0x1000, 2)
    assert spte(lg, 0x1000) in (None, 0) and spte(c, 0x1000) & 1


def test_variants_and_findings():
    assert Lguest("2level", variant="seed-as-written").seed_findings == frozenset(SEED_FINDINGS)
    assert Lguest("2level").seed_findings == frozenset()
    with pytest.raises(ValueError):
        Lguest("2level", seed_findings=("nope",))
    with pytest.raises(TypeError):
        Lguest("2level").set_pgd(0x1000, "3")
    with pytest.raises(ValueError):
        Lguest("pae").set_pte(0, 0, 1 << 64)
