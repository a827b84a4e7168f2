"""The findings of docs/mmu.md, reproduced: what the 5.13 code (as modelled) does, and what the spec says.

These are behaviours of the faithful model, not planted bugs; the random runs steer around them
(docs/mmu.md says how), and these tests keep them visible.
"""

import errno

from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.proofs.mmu.harness import VmHarness
from ptspec.proofs.mmu.hyp_va import z3_wrap_witness
from ptspec.proofs.mmu.layouts import make_layout
from ptspec.spec.mmu.hyp_va import check_hyp_private


def test_finding1_read_only_pfnmap_vma_is_mapped_writable_by_prepare():
    lay = make_layout(backing="pfnmap", nblocks=1, vma_writable=False)
    lay["slots"][0]["flags"] = 0                       # a writable memslot over it
    h = VmHarness(lay)
    msgs = [str(v) for v in h.violations]
    assert any(m.startswith("MS ") and "writable but the host maps" in m for m in msgs), msgs
    assert "vmm.set_memory_region(0, 0," in h.ops_source


def test_finding2_hyp_private_va_wraps_for_huge_sizes():
    w = z3_wrap_witness()
    assert w is not None and w["size"] > w["io_map_base"] and w["base"] >= 1 << 48
    hm = mmu_hyp.HypMmu()
    assert mmu_hyp.kvm_mmu_init(hm)[0] == 0
    b0 = hm.io_map_base
    size = b0 + (1 << 63)
    ret, haddr = mmu_hyp.create_hyp_exec_mappings(hm, 0, size)
    assert ret == -errno.ERANGE and hm.io_map_base == 1 << 63     # moved out of the VA space
    step = {"op": "hyp_private_map", "args": {"phys": 0, "size": size},
            "pre": {"io_map_base": b0, "va_bits": 48, "page_shift": 12},
            "ret": ret, "out": {"haddr": haddr, "io_map_base": hm.io_map_base}}
    assert [str(v).split()[0] for v in check_hyp_private(step, hm.hyp_pgtable.snapshot())] == \
        ["C-HYP-VA"]
    # from then on every private mapping fails
    assert mmu_hyp.create_hyp_exec_mappings(hm, 0x4200_0000, 0x1000)[0] == -errno.ENOMEM


def test_finding3_disabling_logging_fails_with_eagain_over_a_touched_pfnmap_vma():
    lay = make_layout(backing="anon", nblocks=1, flags=1)
    h = VmHarness(lay)
    s = lay["slots"][0]
    h.host.munmap(h.host.vmas[0])
    h.host.mmap(s["uaddr"], 0x10000, "pfnmap")        # a device VMA appears inside the slot
    h.step("access", ipa=s["gpa"], kind="write")       # faulted in as device memory
    ret, found = h.step("set_memory_region", slot=0, flags=0, guest_phys_addr=s["gpa"],
                        memory_size=s["size"], userspace_addr=s["uaddr"])
    assert ret == -errno.EAGAIN and found == []
    assert h.kvm.memslots[0].flags & 1                 # logging stays on
