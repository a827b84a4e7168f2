"""Benchmark of the mmu.c model: numbers, not assertions.

Prints:
* a 1 GiB guest (4K pages, THP backing) touching every page once: the guest's accesses with its
  TLB (every fault goes through kvm_handle_guest_abort / user_mem_abort);
* the same with hugetlb 1G pages, and with small pages only (262144 faults);
* the same 1 GiB touched page by page while dirty logging is on, then the dirty log harvested;
* lock-step throughput of the checked hypothesis machine (steps/s with every check).

Run: .venv/bin/python bench/bench_mmu.py
"""

from __future__ import annotations

import time

from ptspec.impl.mmu.guest import Guest, Vmm
from ptspec.impl.mmu.host import HostMM
from ptspec.impl.mmu.kvm import Kvm

GIB = 1 << 30
G, HVA = 1 << 32, 1 << 46


def touch_all(backing: str, write: bool = True, logging: bool = False, size: int = GIB):
    host = HostMM(12)
    if backing == "hugetlb":
        host.mmap(HVA, size, "hugetlb", shift=30)
    else:
        host.mmap(HVA, size, "anon", thp=backing == "thp")
    kvm = Kvm(12, 40, host=host, arena_pages=4096)
    guest = Guest(kvm, tlb=True)
    vmm = Vmm(kvm, guest)
    assert vmm.set_memory_region(0, 1 if logging else 0, G, size, HVA) == 0
    kind = "write" if write else "read"
    faults = 0
    t0 = time.perf_counter()
    access = guest.access
    for ipa in range(G, G + size, 0x1000):
        o = access(ipa, kind)
        if o.result != "done":
            raise AssertionError(f"access at {ipa:#x} ended {o.result}")
        faults += len(o.faults)
    t1 = time.perf_counter()
    extra = ""
    if logging:
        got = vmm.get_dirty_log(0)
        extra = f", harvest of {bin(got).count('1')} dirty pages {time.perf_counter() - t1:.2f} s"
    return t1 - t0, faults, extra


def machine_throughput():
    from ptspec.proofs.mmu.lockstep import run_machine
    out = run_machine(examples=30, steps=20, seed=0)
    return out.steps / out.cpu_seconds, out.status


def main():
    for label, kw in (("1 GiB, THP, write every page", dict(backing="thp")),
                      ("1 GiB, hugetlb 1G, write every page", dict(backing="hugetlb")),
                      ("1 GiB, 4K pages only, write every page", dict(backing="anon")),
                      ("1 GiB, THP, dirty logging on", dict(backing="thp", logging=True))):
        secs, faults, extra = touch_all(**kw)
        print(f"{label:42s} {secs:6.2f} s  ({faults} faults{extra})")
    rate, status = machine_throughput()
    print(f"{'checked hypothesis machine':42s} {rate:6.0f} steps per CPU second ({status})")


if __name__ == "__main__":
    main()
