"""mmu.c argument checks (``mmu.args``): Python misuse of the VM, host and hyp entry points is
refused before anything changes (C-MMU-ARGS).

A VM with a logging memslot, faulted-in pages, a dirty bit, an ioremap and an initialised hyp table
is the starting state; each misuse call (a bool, float, negative, too wide or wrong-typed argument,
a VMA the host does not have, a constructor given a host it must not touch) runs on a fresh copy and
must raise TypeError/ValueError; a few values at the very edge of their C type (ACCEPTED) must not
be refused: the kernel takes them and answers with its errno, which the other mmu checks judge. ``vm_snapshot`` is all of the state a
half-done call could change: the raw state the spec reads, the stage-2 table's pool, memcache,
allocation counter and undrained log (proofs/stage2/refusal.py), the memslots with their dirty
bitmaps, the ghost ioremap and MMIO records, the host's page tables, references and notifier list,
the guest's record of written pages, and the hyp side (io_map_base, the ioremap VA cursor, its
live ioremaps, its table).
"""

from __future__ import annotations

import copy
import errno

from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.impl.mmu import stage2 as mmu_stage2
from ptspec.impl.mmu.fault import FSC_FAULT, KvmFault, kvm_handle_guest_abort
from ptspec.impl.mmu.guest import Guest, Vmm
from ptspec.impl.mmu.host import ANON, PFNMAP, HostMM, Vma
from ptspec.impl.mmu.kvm import Kvm
from ptspec.impl.mmu.memslot import KVM_MEM_LOG_DIRTY_PAGES
from ptspec.impl.mmu.state import mmu_raw_state
from ptspec.proofs.runner.registry import Result, obligation
from ptspec.proofs.stage2 import refusal

P = 0x1000
UA, GPA, IO = 0x7F00_0000_0000, 0x4000_0000, 0x8000_0000


class World:
    """One VM and its surroundings: host, guest, VMM, hyp."""

    def __init__(self):
        self.host = HostMM(12)
        self.host.mmap(UA, 0x40_0000, ANON)
        self.host.mmap(UA + 0x100_0000, 0x1_0000, PFNMAP, pgoff=0x9000)
        self.kvm = Kvm(12, 40, host=self.host, arena_pages=256)
        self.guest = Guest(self.kvm)
        self.vmm = Vmm(self.kvm, self.guest)
        self.hm = mmu_hyp.HypMmu(arena_pages=64)
        err, _ = mmu_hyp.kvm_mmu_init(self.hm)
        assert err == 0, err
        assert self.vmm.set_memory_region(0, KVM_MEM_LOG_DIRTY_PAGES, GPA, 0x40_0000, UA) == 0
        for k in range(4):
            self.guest.access(GPA + k * P, "write")
        assert mmu_stage2.kvm_phys_addr_ioremap(self.kvm, IO, 0x9000_0000, P, True) == 0
        assert mmu_hyp.create_hyp_io_mappings(self.hm, 0x9100_0000, P)[0] == 0


def vm_snapshot(w: World) -> dict:
    """Everything of w a refused call must leave as it was (no log drained)."""
    kvm, host, hm = w.kvm, w.host, w.hm
    return {
        "raw": mmu_raw_state(kvm, w.guest, drain_log=False),
        "stage2": refusal.snapshot(kvm.pgt, kvm.memcache) if kvm.pgt is not None else None,
        "memslots": [(s.id, s.base_gfn, s.npages, s.userspace_addr, s.flags,
                      None if s.dirty_bitmap is None else bytes(s.dirty_bitmap))
                     for s in kvm.memslots],
        "ioremaps": list(kvm.ioremaps),
        "mmio_exits": list(kvm.mmio_exits),
        "notifiers": [id(n) for n in host.notifiers],
        "host": (repr(host.vmas), {k: list(v) for k, v in host.pte.items()}, dict(host.thp),
                 dict(host.huge), dict(host.refs), sorted(host.dirty), sorted(host.accessed),
                 list(host.errors), host._next),
        "written": {k: sorted(v) for k, v in w.guest.written.items()},
        "vcpu": (list(w.guest.vcpu.injected), w.guest.vcpu.pc_skips),
        "hyp": (hm.io_map_base, list(hm.ioremaps), hm._next_ioremap,
                refusal.snapshot(hm.hyp_pgtable) if hm.hyp_pgtable is not None else None),
    }


# (label, call(world)[, prepare(world)]): each call must raise TypeError/ValueError and change
# nothing; prepare (not judged) first sets up the state the call needs.
MISUSE = [
    ("vmm.get_dirty_log(False)", lambda w: w.vmm.get_dirty_log(False)),
    ("vmm.get_dirty_log(-1)", lambda w: w.vmm.get_dirty_log(-1)),
    ("vmm.get_dirty_log(1 << 32)", lambda w: w.vmm.get_dirty_log(1 << 32)),
    ("vmm.get_dirty_log(0.0)", lambda w: w.vmm.get_dirty_log(0.0)),
    ("vmm.clear_dirty_log(False, 0, 64)", lambda w: w.vmm.clear_dirty_log(False, 0, 64)),
    ("vmm.clear_dirty_log(0, -64, 64)", lambda w: w.vmm.clear_dirty_log(0, -64, 64)),
    ("vmm.clear_dirty_log(0, 0, 1 << 32)", lambda w: w.vmm.clear_dirty_log(0, 0, 1 << 32)),
    ("vmm.set_memory_region(1 << 32, ...)", lambda w: w.vmm.set_memory_region(
        1 << 32, 0, GPA + 0x100_0000, P, UA + 0x20_0000)),
    ("vmm.set_memory_region(0, True, ...)", lambda w: w.vmm.set_memory_region(
        0, True, GPA, 0x40_0000, UA)),
    ("vmm.set_memory_region(0, 0, ..., size -P)", lambda w: w.vmm.set_memory_region(
        0, 0, GPA, -P, UA)),
    ("kvm_phys_addr_ioremap(writable=1)", lambda w: mmu_stage2.kvm_phys_addr_ioremap(
        w.kvm, IO + P, 0x9000_1000, P, 1)),
    ("kvm_phys_addr_ioremap(writable='no')", lambda w: mmu_stage2.kvm_phys_addr_ioremap(
        w.kvm, IO + P, 0x9000_1000, P, "no")),
    ("kvm_phys_addr_ioremap(ipa 1.5)", lambda w: mmu_stage2.kvm_phys_addr_ioremap(
        w.kvm, 1.5, 0x9000_1000, P, True)),
    ("create_hyp_io_mappings(size -1)", lambda w: mmu_hyp.create_hyp_io_mappings(
        w.hm, 0x9200_0000, -1)),
    ("create_hyp_io_mappings(size 2**64)", lambda w: mmu_hyp.create_hyp_io_mappings(
        w.hm, 0x9200_0000, 1 << 64)),
    ("create_hyp_io_mappings(phys True)", lambda w: mmu_hyp.create_hyp_io_mappings(
        w.hm, True, P)),
    ("create_hyp_exec_mappings(size -1)", lambda w: mmu_hyp.create_hyp_exec_mappings(
        w.hm, 0x9200_0000, -1)),
    ("create_hyp_mappings(from -1)", lambda w: mmu_hyp.create_hyp_mappings(
        w.hm, -1, w.hm.page_offset + P, mmu_hyp.PAGE_HYP)),
    ("create_hyp_io_mappings before kvm_mmu_init", lambda w: mmu_hyp.create_hyp_io_mappings(
        w.hm, 0x9200_0000, P), lambda w: setattr(w, "hm", mmu_hyp.HypMmu(arena_pages=64))),
    ("kvm_mmu_init a second time", lambda w: mmu_hyp.kvm_mmu_init(w.hm)),
    ("host.zap(-1, P)", lambda w: w.host.zap(-1, P)),
    ("host.munmap(a VMA the host does not have)", lambda w: w.host.munmap(
        Vma(UA, UA + 0x40_0000, ANON))),
    ("host.mmap(start 1.5)", lambda w: w.host.mmap(1.5, P)),
    ("host.mmap(writable='yes')", lambda w: w.host.mmap(UA + 0x200_0000, P, writable="yes")),
    ("host.split_thp(True)", lambda w: w.host.split_thp(True)),
    ("host.ksm_merge(-1)", lambda w: w.host.ksm_merge(-1)),
    ("host.age(None)", lambda w: w.host.age(None)),
    ("host.get_user_pages(-1)", lambda w: w.host.get_user_pages(-1, False)),
    ("guest.access(True)", lambda w: w.guest.access(True, "write")),
    ("KvmFault(-1, ...) into kvm_handle_guest_abort", lambda w: kvm_handle_guest_abort(
        w.guest.vcpu, KvmFault(-1, FSC_FAULT, 3))),
    ("KvmFault(fsc=256) into kvm_handle_guest_abort", lambda w: kvm_handle_guest_abort(
        w.guest.vcpu, KvmFault(GPA, 0x100, 3))),
    ("HypMmu(idmap_text=(1, 2, 3))", lambda w: mmu_hyp.HypMmu(idmap_text=(1, 2, 3))),
    ("KvmFault(wnr=1) into kvm_handle_guest_abort", lambda w: kvm_handle_guest_abort(
        w.guest.vcpu, KvmFault(GPA + 0x10_0000, FSC_FAULT, 3, wnr=1))),
    ("Guest(kvm, tlb='yes')", lambda w: Guest(w.kvm, tlb="yes")),
    ("Kvm(host=host, ia_bits=20)", lambda w: Kvm(12, 20, host=w.host)),
    ("Kvm(host=host, fwb=1)", lambda w: Kvm(12, 40, host=w.host, fwb=1)),
    ("Kvm(host=host, arena_pages=1.5)", lambda w: Kvm(12, 40, host=w.host, arena_pages=1.5)),
]


# (label, call(world)): values at the edge of their C type; the kernel takes them (an errno at most).
# (label, call(world), expected return or ANY)
ANY = object()
ACCEPTED = [
    ("KvmFault(fsc=0xFF, level=0xFF): -EFAULT", lambda w: kvm_handle_guest_abort(
        w.guest.vcpu, KvmFault(GPA, 0xFF, 0xFF)), -errno.EFAULT),
    ("vmm.get_dirty_log(0xFFFFFFFF): -ENOENT", lambda w: w.vmm.get_dirty_log((1 << 32) - 1),
     -errno.ENOENT),
    # u64 arithmetic: ipa + size wraps, so the loop ends before it starts; pa wraps to 0
    ("kvm_phys_addr_ioremap(ipa 2**64 - P, size 2P): nothing to map", lambda w:
     mmu_stage2.kvm_phys_addr_ioremap(w.kvm, (1 << 64) - P, 0x9000_0000, 2 * P, True), 0),
    ("kvm_phys_addr_ioremap(pa 2**64 - P, size 2P): pa wraps", lambda w:
     mmu_stage2.kvm_phys_addr_ioremap(w.kvm, IO + 8 * P, (1 << 64) - P, 2 * P, True), ANY),
]


def misuse(w: World, label: str, call) -> list[str]:
    """Problems with one misuse call on w: accepted, another exception, or state changed."""
    pre = vm_snapshot(w)
    try:
        ret = call(w)
    except Exception as exc:          # noqa: BLE001 -- any other exception is itself the finding
        how = f"{type(exc).__name__}: {exc}"
        post = vm_snapshot(w)
        found = [] if isinstance(exc, (TypeError, ValueError)) else [
            f"C-MMU-ARGS {label} raised {how}, not a TypeError/ValueError refusal"]
        changed = [k for k in pre if pre[k] != post[k]]
        if changed:
            found.append(f"C-MMU-ARGS {label} raised {how} but changed {', '.join(changed)}")
        return found
    return [f"C-MMU-ARGS {label} was accepted (returned {ret!r})"]


def run_all(cases=MISUSE):
    """Yields (label, problems) for every misuse call, each on a fresh copy of one World."""
    base = World()
    for label, call, *prepare in cases:
        w = copy.deepcopy(base)
        for p in prepare:
            p(w)
        yield label, misuse(w, label, call)
    if cases is not MISUSE:
        return
    for label, call, want in ACCEPTED:
        try:
            got = call(copy.deepcopy(base))
        except (TypeError, ValueError) as exc:
            yield label, [f"C-MMU-ARGS {label}: refused ({exc}), a value the kernel takes"]
            continue
        yield label, [] if want is ANY or got == want else [
            f"C-MMU-ARGS {label}: returned {got!r}, the kernel returns {want!r}"]
    # a VM whose stage-2 root cannot be allocated is never made: the host keeps no trace of it
    w = copy.deepcopy(base)
    pre = vm_snapshot(w)
    try:
        Kvm(12, 40, host=w.host, arena_pages=1)
        problems = ["C-MMU-ARGS Kvm(arena_pages=1) was made without its root"]
    except MemoryError:
        changed = [k for k, v in vm_snapshot(w).items() if v != pre[k]]
        problems = [f"C-MMU-ARGS a Kvm that failed kvm_init_stage2_mmu changed "
                    f"{', '.join(changed)}"] if changed else []
    yield "Kvm whose stage-2 root allocation fails", problems


@obligation("mmu.args", engine="unit", invariants=["C-MMU-ARGS"],
            kernel_functions=["kvm_get_dirty_log_protect", "kvm_clear_dirty_log_protect",
                              "__kvm_set_memory_region", "kvm_phys_addr_ioremap",
                              "create_hyp_io_mappings", "create_hyp_exec_mappings",
                              "create_hyp_mappings"])
def bad_arguments(ctx):
    """Python misuse of the VM, host and hyp entry points (bools, floats, strings, negative and
    too-wide values, a VMA the host does not have, constructors given a live host) raises
    TypeError/ValueError and leaves every part of the VM's state as it was: raw state, pool,
    memcache, allocation counter, undrained TLB log, memslots and dirty bitmaps, ioremap records,
    the host's tables and notifier list, the hyp VA cursor and table."""
    n = 0
    for label, problems in run_all():
        n += 1
        if problems:
            return Result.refuted({"ops": f"# ptspec.proofs.mmu.checks_args: {label}",
                                   "violations": problems, "tables": "",
                                   "kernel_function": label.split("(")[0]}, examples=n)
    return Result.passed(n, f"{n} misuse calls refused without a state change")
