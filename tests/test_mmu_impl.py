"""impl mmu.c (5.13) behaviour, checked against what the kernel code does, derived by hand."""

import errno

import pytest

from ptspec.impl.mmu import fault as mmu_fault
from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu.fault import FSC_FAULT, FSC_PERM, KvmFault
from ptspec.impl.mmu.guest import Guest, Vmm, once
from ptspec.impl.mmu.host import HostMM
from ptspec.impl.mmu.kvm import Kvm

G, HVA = 0x1_0000_0000, 0x4000_0000_0000
M2, G1 = 0x20_0000, 0x4000_0000
S2AP_W = 1 << 7


def vm(kind="anon", size=4 * M2, ia_bits=40, flags=0, slot_off=0, hva_off=0, **mm):
    host = HostMM(12)
    host.mmap(HVA, size + M2 if kind != "hugetlb" else size + (1 << mm.get("shift", 21)),
              kind, **mm)
    kvm = Kvm(12, ia_bits, host=host, arena_pages=512)
    guest = Guest(kvm)
    vmm = Vmm(kvm, guest)
    assert vmm.set_memory_region(0, flags, G + slot_off, size - slot_off - hva_off,
                                 HVA + slot_off + hva_off) == 0
    return host, kvm, guest, vmm


def leaf(kvm, ipa):
    ret, pte, level = kvm.pgt.get_leaf(ipa)
    assert ret == 0
    return pte, level


def test_thp_fault_maps_a_writable_2m_block_and_cleans_it():
    host, kvm, guest, _ = vm(thp=True)
    assert guest.access(G + 0x3000, "read").result == "done"
    pte, level = leaf(kvm, G + 0x3000)
    assert level == 2 and pte & S2AP_W                # read fault on a writable VMA: mapped W
    assert ("dcache", (pte & 0xFFFF_FFFF_F000), M2) in kvm.pgt.log
    assert not host.refs                              # the gup reference is dropped again


def test_logging_forces_pages_read_only_then_write_marks_dirty():
    host, kvm, guest, vmm = vm(thp=True, flags=1)
    guest.access(G + 0x3000, "read")
    pte, level = leaf(kvm, G + 0x3000)
    assert level == 3 and not pte & S2AP_W
    assert kvm.memslots[0].dirty_gfns() == []
    o = guest.access(G + 0x3000, "write")
    assert o.result == "done" and o.faults[0][0] == FSC_PERM
    assert leaf(kvm, G + 0x3000)[0] & S2AP_W
    assert kvm.memslots[0].dirty_gfns() == [3]


def test_hugetlb_pud_block_and_fallbacks():
    host, kvm, guest, _ = vm("hugetlb", size=2 * G1, shift=30)
    guest.access(G + G1 + 0x5000, "write")
    assert leaf(kvm, G + G1)[1] == 1                  # a 1G block at level 1
    # userspace_addr one page off: PUD -> CONT_PMD -> PMD -> CONT_PTE: pages
    host, kvm, guest, _ = vm("hugetlb", size=2 * G1, shift=30, hva_off=0x1000)
    guest.access(G + 0x5000, "write")
    assert leaf(kvm, G + 0x5000)[1] == 3
    # CONT_PMD hugetlb maps PMD blocks; CONT_PTE hugetlb maps pages
    host, kvm, guest, _ = vm("hugetlb", size=0x400_0000, shift=25)
    guest.access(G + 0x5000, "read")
    assert leaf(kvm, G + 0x5000)[1] == 2
    host, kvm, guest, _ = vm("hugetlb", size=M2, shift=16)
    guest.access(G + 0x5000, "read")
    assert leaf(kvm, G + 0x5000)[1] == 3


def test_block_refused_at_a_partial_head():
    host, kvm, guest, _ = vm(thp=True, slot_off=0x1000)
    guest.access(G + 0x1000, "read")
    assert leaf(kvm, G + 0x1000)[1] == 3              # the THP block would leave the memslot
    guest.access(G + M2 + 0x1000, "read")
    assert leaf(kvm, G + M2)[1] == 2


def test_device_memory_exec_is_a_prefetch_abort_and_accesses_are_device():
    host, kvm, guest, _ = vm("pfnmap", size=0x10000)
    pte, level = leaf(kvm, G)                         # ioremapped when the slot was created
    assert level == 3 and (pte >> 2) & 0xF == 0x1
    assert guest.access(G + 0x1000, "exec").result == "pabt"
    f = KvmFault(G + 0x1000, FSC_PERM, 3, iabt=True)
    slot = kvm.memslots[0]
    assert mmu_fault.user_mem_abort(guest.vcpu, G + 0x1000, slot, HVA + 0x1000, f) == -errno.ENOEXEC


def test_prepare_ipa_bound_and_logging_on_io():
    host = HostMM(12)
    host.mmap(HVA, 4 * M2, "anon")
    host.mmap(HVA + 4 * M2, 0x10000, "pfnmap")
    kvm = Kvm(12, 36, host=host, arena_pages=256)
    vmm = Vmm(kvm, Guest(kvm))
    limit = 1 << 36
    assert vmm.set_memory_region(0, 0, limit - M2 + 0x1000, M2, HVA) == -errno.EFAULT
    assert vmm.set_memory_region(0, 0, limit - M2, M2, HVA) == 0          # ends exactly at it
    assert vmm.set_memory_region(1, 1, 0x1000_0000, 0x10000, HVA + 4 * M2) == -errno.EINVAL
    assert len(kvm.memslots) == 1


def test_notifier_race_retries_without_installing():
    host, kvm, guest, _ = vm(thp=True)
    kvm.after_gfn_to_pfn = once(lambda k: host.split_thp(HVA))
    o = guest.access(G + 0x1000, "write")
    assert o.result == "done" and len(o.faults) == 2  # first fault: retry, nothing mapped
    assert leaf(kvm, G + 0x1000)[1] == 3              # the THP is gone: a page now
    assert not host.refs


def test_access_flag_fault_makes_the_leaf_young():
    host, kvm, guest, _ = vm()
    guest.access(G, "write")
    assert host.age(HVA) is True
    assert not leaf(kvm, G)[0] & (1 << 10)
    o = guest.access(G, "read")
    assert o.result == "done" and o.faults[0][0] == mmu_fault.FSC_ACCESS
    assert host.test_young(HVA) is True


def test_write_protect_mask_first_to_last_bit():
    host, kvm, guest, vmm = vm(flags=1)
    for k in (1, 2, 6):
        guest.access(G + k * 0x1000, "write")
    got = vmm.get_dirty_log(0)
    assert got == 0b1000110
    for k in (1, 2, 6):
        assert not leaf(kvm, G + k * 0x1000)[0] & S2AP_W
    assert kvm.memslots[0].dirty_gfns() == []


def test_eagain_from_map_is_success():
    host, kvm, guest, _ = vm()
    guest.access(G, "write")
    f = KvmFault(G, FSC_FAULT, 3, wnr=True)           # a second vCPU's stale fault
    assert mmu_fault.kvm_handle_guest_abort(guest.vcpu, f) == 1


def test_routing_outside_memslots():
    host, kvm, guest, _ = vm()
    assert guest.access(0x2000, "cm").result == "skip"
    assert guest.access(0x2000, "s1ptw").result == "dabt"
    assert guest.access(0x2000, "exec").result == "pabt"
    assert guest.access(0x2123, "write").result == "mmio"
    assert kvm.mmio_exits[-1] == (0x2123, True)


def test_ioremap_covers_the_offset_page():
    host, kvm, guest, _ = vm()
    assert mmu_stage2.kvm_phys_addr_ioremap(kvm, 0x800FF0, 0x9000FF0, 0x20, False) == 0
    assert leaf(kvm, 0x801000)[0] & 1 and not leaf(kvm, 0x801000)[0] & S2AP_W


def test_hyp_private_allocator_grows_down_and_keeps_offsets():
    hm = mmu_hyp.HypMmu()
    assert mmu_hyp.kvm_mmu_init(hm)[0] == 0
    base0 = hm.io_map_base
    ret, k, haddr = mmu_hyp.create_hyp_io_mappings(hm, 0x0900_0123, 0x2000)
    assert ret == 0 and haddr == base0 - 0x3000 + 0x123 and hm.io_map_base == base0 - 0x3000
    ret, haddr = mmu_hyp.__dict__["__create_hyp_private_mapping"](hm, 0, base0, 1)
    assert ret == -errno.ENOMEM and hm.io_map_base == base0 - 0x3000


def test_python_misuse_raises():
    host, kvm, guest, vmm = vm()
    with pytest.raises(ValueError):
        guest.access(1 << 40, "read")
    with pytest.raises(ValueError):
        guest.access(G, "jump")
    with pytest.raises(ValueError):
        vmm.set_memory_region(0, -1, G, M2, HVA)
    with pytest.raises(ValueError):
        host.mmap(HVA + 0x1000, 0x1000, "hugetlb", shift=21)


def test_guest_tlb_sees_invalidations():
    host, kvm, _, _ = vm(thp=True)
    guest = Guest(kvm, tlb=True)
    guest.access(G, "write")
    assert guest.access(G + 0x1000, "read").faults == []
    host.split_thp(HVA)                               # unmap + tlbi_vmid: the cached block goes
    assert len(guest.access(G + 0x1000, "read").faults) == 1
