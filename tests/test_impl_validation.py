"""impl's entry points refuse Python misuse before they change anything (issue 14, item 6).

Each case found in the audit is refused with TypeError/ValueError and a full snapshot of the state
(raw state, pool, memcache, counters, ghost records) is equal before and after; the refusal checks
(stage-2 harness and errorpaths C-ARGS, mmu.args C-MMU-ARGS, lguest LG-C-ARGS) pass on impl and
catch a planted variant that changes state before refusing."""

import copy

import pytest

from ptspec.impl.lguest import Lguest
from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.pgtable import args as impl_args
from ptspec.impl.pgtable.hyp import HypPgtable
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, MmOps, PagePool
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_RW
from ptspec.impl.pgtable.stage2 import KvmPgtable
from ptspec.impl.pgtable.versions import profile
from ptspec.proofs.lguest import refusal as lg_refusal
from ptspec.proofs.lguest.harness import LguestHarness
from ptspec.proofs.mmu import checks_args
from ptspec.proofs.stage2 import errorpaths, refusal
from ptspec.proofs.stage2.harness import Stage2Harness

K4, M2, G1 = 0x1000, 0x200000, 0x40000000
MISUSE = (TypeError, ValueError)


def _refused(snap, call):
    """call raises TypeError/ValueError and snap() is the same before and after."""
    before = snap()
    with pytest.raises(MISUSE):
        call()
    assert snap() == before


def _table():
    pool = PagePool(12, 64)
    pgt = KvmPgtable(12, 39, pool=pool)
    assert pgt.init() == 0
    mc = KvmMmuMemoryCache(pool, 8)
    mc.topup(8)
    assert pgt.map(G1, K4, 2 * G1, KVM_PGTABLE_PROT_RW, mc) == 0
    return pgt, mc


# -- the cases of the issue ---------------------------------------------------------------------

def test_a_memcache_of_another_pool_is_refused_before_a_table_is_installed():
    pgt, mc = _table()
    other = KvmMmuMemoryCache(PagePool(12, 16, base_pa=0x20_0000_0000), 4)
    other.topup(4)
    for call in (lambda: pgt.map(3 * G1 + K4, K4, 2 * G1, KVM_PGTABLE_PROT_RW, other),
                 lambda: pgt.set_owner(3 * G1 + K4, K4, other, 1),
                 lambda: pgt.map(G1, K4, 0, KVM_PGTABLE_PROT_RW, object())):
        _refused(lambda: (refusal.snapshot(pgt, mc), list(other.objects),
                          sorted(other.pool.pages)), call)
    assert pgt.get_leaf(3 * G1 + K4)[1] == 0              # nothing mapped there


def test_a_memcache_of_the_table_own_pool_still_maps():
    pgt, mc = _table()
    assert pgt.map(3 * G1 + K4, K4, 2 * G1, KVM_PGTABLE_PROT_RW, mc) == 0
    assert pgt.map(3 * G1 + M2, K4, 2 * G1, KVM_PGTABLE_PROT_RW, None) < 0   # NULL memcache: errno


@pytest.mark.parametrize("size", [-1, 1 << 64, 1.0, True])
def test_create_hyp_io_mappings_refuses_a_size_that_is_no_size_t(size):
    hm = mmu_hyp.HypMmu(arena_pages=64)
    assert mmu_hyp.kvm_mmu_init(hm)[0] == 0
    snap = lambda: (hm.io_map_base, hm._next_ioremap, list(hm.ioremaps),  # noqa: E731
                    refusal.snapshot(hm.hyp_pgtable))
    _refused(snap, lambda: mmu_hyp.create_hyp_io_mappings(hm, 0x9000_0000, size))
    _refused(snap, lambda: mmu_hyp.create_hyp_exec_mappings(hm, 0x9000_0000, size))


def test_create_hyp_io_mappings_with_the_largest_size_t_wraps_as_the_kernel_does():
    hm = mmu_hyp.HypMmu(arena_pages=64)
    assert mmu_hyp.kvm_mmu_init(hm)[0] == 0
    ret, _, haddr = mmu_hyp.create_hyp_io_mappings(hm, 0x9000_0000, (1 << 64) - 1)
    assert ret == 0 and haddr == hm.io_map_base           # PAGE_ALIGN wrapped: one page at most


def test_hyp_mappings_need_kvm_mmu_init():
    hm = mmu_hyp.HypMmu(arena_pages=64)
    _refused(lambda: (hm.io_map_base, hm._next_ioremap, list(hm.ioremaps)),
             lambda: mmu_hyp.create_hyp_io_mappings(hm, 0x9000_0000, K4))


def _world():
    return checks_args.World()


@pytest.mark.parametrize("writable", [1, "no", None])
def test_ioremap_records_nothing_before_refusing(writable):
    w = _world()
    _refused(lambda: checks_args.vm_snapshot(w), lambda: mmu_stage2.kvm_phys_addr_ioremap(
        w.kvm, checks_args.IO + K4, 0x9000_1000, K4, writable))


def test_ioremap_arithmetic_is_u64_and_never_raises_midway():
    w = _world()
    kvm = w.kvm
    n = len(kvm.ioremaps)
    # ipa + size wraps past 2**64: the kernel's loop ends before it starts
    assert mmu_stage2.kvm_phys_addr_ioremap(kvm, (1 << 64) - K4, 0x9000_0000, 2 * K4, True) == 0
    # pa wraps past 2**64 on the second page: no ValueError after the first page was mapped
    ret = mmu_stage2.kvm_phys_addr_ioremap(kvm, 0x6000_0000, (1 << 64) - K4, 2 * K4, True)
    assert isinstance(ret, int) and ret <= 0
    assert len(kvm.ioremaps) == n + 2


@pytest.mark.parametrize("slot", [False, True, -1, 1 << 32, 0.0, "0"])
def test_get_dirty_log_refuses_a_slot_that_is_no_u32_and_harvests_nothing(slot):
    w = _world()
    assert w.kvm.memslots[0].dirty_gfns()                 # there is something to harvest
    _refused(lambda: checks_args.vm_snapshot(w), lambda: w.vmm.get_dirty_log(slot))
    assert w.vmm.get_dirty_log(0) > 0                      # slot 0 itself is still dirty


@pytest.mark.parametrize("kw", [dict(cmo="no"), dict(cmo=1), dict(fwb="yes"), dict(max_owner_id=1.5),
                                dict(max_owner_id=True), dict(owner_field=(63.0, 56)),
                                dict(flags=1.0), dict(eagain_continues=0), dict(page_shift=13),
                                dict(page_shift=12.0), dict(force_pte_cb=3),
                                dict(pool=PagePool(16, 4)), dict(kernel_version=["5.15"])])
def test_kvm_pgtable_refuses_a_configuration_kvm_never_builds(kw):
    with pytest.raises(MISUSE):
        KvmPgtable(**kw)


def test_flags_are_bools_and_defaults_stand():
    assert KvmPgtable().cmo is True and KvmPgtable(cmo=False).mm_ops.dcache_clean_inval_poc is None
    with pytest.raises(TypeError):                  # ArgTypeError is a TypeError ...
        KvmPgtable(cmo="no")
    with pytest.raises(ValueError):                 # ... and a ValueError, as impl always refused
        KvmPgtable(cmo="no")


@pytest.mark.parametrize("thunk", [
    lambda: PagePool(13, 4), lambda: PagePool(12.0, 4), lambda: PagePool(12, 0),
    lambda: PagePool(12, 1.5), lambda: PagePool(12, True), lambda: PagePool(12, 4, -4096),
    lambda: KvmMmuMemoryCache(PagePool(12, 4), 1.5), lambda: KvmMmuMemoryCache([], 4),
    lambda: MmOps(PagePool(12, 4), cmo="no"), lambda: HypPgtable(12, pool=PagePool(16, 4)),
    lambda: HypPgtable(12.0), lambda: profile(["5.15"]),
    lambda: Lguest(arena_pages=0), lambda: Lguest(pfn_limit=1.5), lambda: Lguest(host_cpus=True),
    lambda: Lguest(npgdirs="4"), lambda: Lguest(rng_seed=0.5),
    lambda: mmu_hyp.HypMmu(vhe=1), lambda: mmu_hyp.HypMmu(idmap_text=(1, -1)),
    lambda: mmu_hyp.HypMmu(arena_pages=0),
])
def test_constructors_refuse_misuse(thunk):
    with pytest.raises(MISUSE):
        thunk()


def test_pool_and_memcache_calls_refuse_counts_that_are_not_counts():
    pgt, mc = _table()
    for call in (lambda: mc.topup(-1), lambda: mc.topup(True), lambda: mc.topup(1.0),
                 lambda: mc.topup(mc.capacity + 1), lambda: pgt.pool.alloc_pages_exact(0),
                 lambda: pgt.snapshot(drain_log="no")):
        pgt.tlb_flush_vmid()                    # something a wrong drain would lose
        _refused(lambda: refusal.snapshot(pgt, mc), call)


def test_a_failed_kvm_leaves_the_host_as_it_was():
    w = _world()
    before = list(w.host.notifiers)
    for kw in (dict(ia_bits=20), dict(fwb=1), dict(arena_pages=0)):
        with pytest.raises(MISUSE):
            type(w.kvm)(12, host=w.host, **kw)
    with pytest.raises(MemoryError):           # the root allocation fails: -ENOMEM
        type(w.kvm)(12, 40, host=w.host, arena_pages=1)
    assert w.host.notifiers == before


def test_munmap_of_an_unknown_vma_zaps_nothing():
    from ptspec.impl.mmu.host import ANON, Vma
    w = _world()
    _refused(lambda: checks_args.vm_snapshot(w),
             lambda: w.host.munmap(Vma(checks_args.UA, checks_args.UA + 0x40_0000, ANON)))


def test_memslot_ioctls_take_u32_slot_and_flags():
    w = _world()
    snap = lambda: checks_args.vm_snapshot(w)  # noqa: E731
    for call in (lambda: w.vmm.set_memory_region(1 << 32, 0, 0x8000_0000, K4, checks_args.UA),
                 lambda: w.vmm.set_memory_region(1, 1 << 32, 0x8000_0000, K4, checks_args.UA),
                 lambda: w.vmm.clear_dirty_log(0, 0, 1 << 32),
                 lambda: w.vmm.clear_dirty_log(True, 0, 64)):
        _refused(snap, call)
    # a u32 the kernel refuses keeps its errno
    assert w.vmm.set_memory_region((1 << 32) - 1, 0, 0x8000_0000, K4, checks_args.UA) == -22


# -- the checks pass on impl ---------------------------------------------------------------------

def test_errorpaths_and_mmu_args_pass_on_impl():
    bad = [(label, found) for label, _h, found in errorpaths.run_all() if found]
    assert not bad, bad[:3]
    bad = [(label, p) for label, p in checks_args.run_all() if p]
    assert not bad, bad[:3]


# -- and catch a planted bug that changes state before refusing ----------------------------------

def test_stage2_harness_catches_a_refusal_after_a_change_the_raw_state_does_not_show(monkeypatch):
    real = KvmPgtable.map

    def planted(self, addr, size, phys, prot, mc):
        self.mm_ops._inject()              # counts an allocation, then refuses
        return real(self, addr, size, phys, prot, mc)
    monkeypatch.setattr(KvmPgtable, "map", planted)
    h = Stage2Harness(12, 39, arena_pages=64, mc_capacity=8)
    _, found = h.step("map", addr=-K4, size=K4, phys=0, prot=KVM_PGTABLE_PROT_RW)
    assert [v.inv for v in found] == ["C-ARGS"] and "nr_allocs" in found[0].message


def test_errorpaths_catches_a_memcache_check_that_is_missing(monkeypatch):
    monkeypatch.setattr(impl_args, "memcache", lambda value, pool: value)
    h = errorpaths.start("block")
    label, call = errorpaths.MISUSE[0]
    found = errorpaths.misuse(h, label, call)
    assert found and all(v.inv == "C-ARGS" for v in found)


def test_errorpaths_catches_a_memcache_popped_before_the_refusal(monkeypatch):
    real = KvmMmuMemoryCache.topup

    def planted(self, min_pages):
        if self.objects:
            self.objects.insert(0, self.objects.pop())     # reorders the stack, then refuses
        return real(self, min_pages)
    monkeypatch.setattr(KvmMmuMemoryCache, "topup", planted)
    h = errorpaths.start("pages")
    found = errorpaths.misuse(h, "memcache topup of -1 pages", lambda pgt, mc: mc.topup(-1))
    assert found and "memcache" in found[0].message


def test_mmu_args_catches_io_map_base_moved_before_the_refusal(monkeypatch):
    real = mmu_hyp.create_hyp_io_mappings

    def planted(hm, phys_addr, size):
        hm.io_map_base -= 0x1000
        return real(hm, phys_addr, size)
    monkeypatch.setattr(mmu_hyp, "create_hyp_io_mappings", planted)
    found = dict(checks_args.run_all())
    assert any("changed hyp" in p for p in found["create_hyp_io_mappings(size -1)"])


def test_mmu_args_catches_a_harvest_before_the_refusal(monkeypatch):
    from ptspec.impl.mmu import guest as mmu_guest
    real = mmu_guest.kvm_get_dirty_log_protect

    def planted(kvm, slot):
        real(kvm, int(slot) if isinstance(slot, (bool, float)) else 0)   # harvests, then refuses
        return real(kvm, slot)
    monkeypatch.setattr(mmu_guest, "kvm_get_dirty_log_protect", planted)
    found = dict(checks_args.run_all())
    assert any("changed" in p for p in found["vmm.get_dirty_log(False)"])


def test_mmu_args_catches_an_accepted_bool():
    cases = [("get_dirty_log(False) on a variant that takes it",
              lambda w: w.vmm.get_dirty_log(int(False)))]
    (label, problems), = checks_args.run_all(cases)
    assert problems and "was accepted" in problems[0]


def test_lguest_harness_catches_an_arena_page_taken_before_the_refusal(monkeypatch):
    real = Lguest.set_pte

    def planted(self, gpgdir, vaddr, gpte):
        self.host.arena.pop(0)                  # takes a shadow page, then refuses
        return real(self, gpgdir, vaddr, gpte)
    h = LguestHarness("2level")
    h.step("init")
    h.step("new_pagetable", pgtable=0x1000)
    monkeypatch.setattr(Lguest, "set_pte", planted)
    before = copy.deepcopy(lg_refusal.private_state(h.lg))
    assert h.step("set_pte", gpgdir=0x1000, vaddr=-1, gpte=0) is None
    assert lg_refusal.private_state(h.lg) != before
    assert [v.inv for v in h.violations] == ["LG-C-ARGS"]
    assert "arena" in h.violations[0].message


def test_kvm_mmu_init_runs_once():
    hm = mmu_hyp.HypMmu(arena_pages=64)
    assert mmu_hyp.kvm_mmu_init(hm)[0] == 0
    _refused(lambda: (hm.io_map_base, hm.hyp_idmap_start, hm.hyp_idmap_end, id(hm.hyp_pgtable),
                      refusal.snapshot(hm.hyp_pgtable)), lambda: mmu_hyp.kvm_mmu_init(hm))


@pytest.mark.parametrize("kw", [dict(ipa=-1), dict(ipa=1 << 64), dict(wnr=1), dict(level=1.0),
                                dict(far_low=None), dict(sea="no")])
def test_a_fault_syndrome_is_c_values(kw):
    from ptspec.impl.mmu.fault import FSC_FAULT, KvmFault
    a = dict(ipa=0x4000_0000, fsc=FSC_FAULT, level=3)
    a.update(kw)
    with pytest.raises(MISUSE):
        KvmFault(a.pop("ipa"), a.pop("fsc"), a.pop("level"), **a)
