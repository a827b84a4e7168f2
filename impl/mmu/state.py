"""The raw state of a VM for the spec: the stage-2 raw state plus an ``mmu`` part (docs/mmu.md).

Models nothing of the kernel: it reads ``Kvm``, ``HostMM`` and ``Guest`` and writes plain dicts
(integers, lists, strings) as docs/mmu.md describes. Left out: anything the spec does not judge.
"""

from __future__ import annotations


def mmu_raw_state(kvm, guest=None, drain_log: bool = True) -> dict:
    """A stage-2 raw state (kind arm64-stage2) with the ``mmu`` key added."""
    if kvm.pgt is not None:
        state = kvm.pgt.snapshot(drain_log=drain_log)
    else:
        state = {"kind": "arm64-stage2", "page_shift": kvm.page_shift, "ia_bits": kvm.ia_bits,
                 "start_level": 0, "owner_field": [63, 56], "max_owner_id": 1, "roots": [],
                 "pages": {}, "refcount": {}}
    host = kvm.host
    written = guest.written if guest is not None else {}
    fetched = getattr(guest, "fetched", None) or {}
    state["mmu"] = {
        "memslots": [{"id": s.id, "base_gfn": s.base_gfn, "npages": s.npages,
                      "userspace_addr": s.userspace_addr, "flags": s.flags,
                      "dirty_bitmap": None if s.dirty_bitmap is None else
                      int.from_bytes(s.dirty_bitmap, "little"),
                      "written": sorted(written.get(s.id, ())),
                      "fetched": [list(r) for r in sorted(fetched.get(s.id, ()))]}
                     for s in kvm.memslots],
        "vmas": host.raw_vmas(),
        "host_map": host.host_map(),
        "ram_pfns": [host.ram_lo, host.ram_hi],
        "ioremap": [list(r) for r in kvm.ioremaps],
        "manual_protect": kvm.manual_protect,
        "init_set": kvm.manual_protect_init_set,
        "kvm_page_refs": {str(pfn): n for pfn, n in host.refs.items()},
        "host_errors": list(host.errors),
        "mmu_notifier_seq": kvm.mmu_notifier_seq,
        "mmu_notifier_count": kvm.mmu_notifier_count,
        "warnings": list(kvm.warnings),
        "dic": kvm.dic,
    }
    return state
