"""Valid raw states and step files of every kind check-state accepts, exported by the impl harnesses.

A stage-2 table after some maps (with a tlb_log), a hyp stage-1 table, a VM (stage 2 plus the ``mmu``
part, dirty logging on, an ioremap) and an lguest guest after boot. Step files
``{"pre", "step", "post"}``: one impl call on each (a stage-2 map, a hyp map, a guest write access
to a logging memslot, an lguest demand fault), the raw states around it and its step record. Tests
mutate copies of these.
"""

import copy
import functools

from ptspec.impl.mmu.state import mmu_raw_state
from ptspec.proofs.hyp.lockstep import HypHarness
from ptspec.proofs.lguest import guest as lguest_guest
from ptspec.proofs.lguest.harness import LguestHarness
from ptspec.proofs.mmu.harness import VmHarness
from ptspec.proofs.mmu.layouts import make_layout
from ptspec.proofs.stage2.harness import Stage2Harness

VM_IPA = 0x1_0000_0000          # make_layout's first memslot


@functools.lru_cache(maxsize=None)
def _samples():
    s2 = Stage2Harness(12, 40)
    s2.step("map", addr=0x200000, size=0x201000, phys=0x40200000, prot=3)
    s2.step("unmap", addr=0x201000, size=0x1000)
    hyp = HypHarness(12, 48)
    hyp.step("map", addr=0x200000, size=0x1000, phys=0x80000000, prot=3)
    vm = VmHarness(make_layout(backing="thp", nblocks=1))
    vm.step("access", ipa=VM_IPA + 0x1000, kind="write")
    vm.step("set_memory_region", slot=0, flags=1, guest_phys_addr=VM_IPA, memory_size=0x200000,
            userspace_addr=vm.layout["slots"][0]["uaddr"])
    vm.step("access", ipa=VM_IPA + 0x3000, kind="write")
    vm.step("ioremap", ipa=0x8000_0000, pa=0x9000_0000, size=0x2000, writable=True)
    lg = LguestHarness("2level", npgdirs=2, rng_seed=1, coherent=True)
    lguest_guest.boot(lg, lguest_guest.GuestLayout("2level"))
    lg.step("fault", vaddr=0x1000, errcode=2)
    for h in (s2, hyp, vm, lg):
        assert not h.violations, h.violations
    stage2 = s2.raw_state()
    stage2["tlb_log"] = [["tlbi_ipa", 0x201000, 3], ["tlbi_vmid"]]    # a log as a step leaves one
    return {"arm64-stage2": stage2, "arm64-hyp-s1": hyp.raw_state(), "vm": vm.raw_state(),
            "lguest-x86": copy.deepcopy(lg.raw)}


KINDS = ("arm64-stage2", "arm64-hyp-s1", "vm", "lguest-x86")


def sample(kind):
    """A fresh deep copy of the valid sample state of `kind` (one of KINDS)."""
    return copy.deepcopy(_samples()[kind])


def _stage2_step():
    h = Stage2Harness(12, 40)
    h.step("map", addr=0x200000, size=0x1000, phys=0x40200000, prot=3)
    pre = h.pgt.snapshot()
    args = {"addr": 0x400000, "size": 0x201000, "phys": 0x40400000, "prot": 3}
    ret = h.pgt.map(*args.values(), h.mc)
    return pre, {"op": "map", "args": dict(args, force_pte=False), "ret": ret, "out": {}}, \
        h.pgt.snapshot()


def _hyp_step():
    h = HypHarness(12, 48)
    pre = h.pgt.snapshot()
    args = {"addr": 0x200000, "size": 0x2000, "phys": 0x80000000, "prot": 6}    # R|W
    ret = h.pgt.map(*args.values())
    return pre, {"op": "map", "args": args, "ret": ret, "out": {}}, h.pgt.snapshot()


def _vm_step():
    vm = VmHarness(make_layout(backing="thp", nblocks=1))
    vm.step("set_memory_region", slot=0, flags=1, guest_phys_addr=VM_IPA, memory_size=0x200000,
            userspace_addr=vm.layout["slots"][0]["uaddr"])
    pre = mmu_raw_state(vm.kvm, vm.guest)
    o = vm.guest.access(VM_IPA + 0x5000, "write")
    step = {"op": "access", "args": {"ipa": VM_IPA + 0x5000, "kind": "write"}, "ret": o.result,
            "out": o.as_dict(), "dic": vm.kvm.dic}
    return pre, step, mmu_raw_state(vm.kvm, vm.guest)


def _lguest_step():
    lg = LguestHarness("2level", npgdirs=2, rng_seed=1, coherent=True)
    lguest_guest.boot(lg, lguest_guest.GuestLayout("2level"))
    pre = copy.deepcopy(lg.lg.raw_state())
    ret = lg.lg.fault(0x1000, 2)
    return pre, {"op": "fault", "args": {"vaddr": 0x1000, "errcode": 2}, "ret": ret,
                 "out": {"fail_alloc": 0, "fail_gup": 0}}, copy.deepcopy(lg.lg.raw_state())


@functools.lru_cache(maxsize=None)
def _step_samples():
    out = {}
    for kind, make in (("arm64-stage2", _stage2_step), ("arm64-hyp-s1", _hyp_step),
                       ("vm", _vm_step), ("lguest-x86", _lguest_step)):
        pre, step, post = make()
        out[kind] = copy.deepcopy({"pre": pre, "step": step, "post": post})
    return out


def step_sample(kind):
    """A fresh deep copy of the valid step file of `kind` (one of KINDS)."""
    return copy.deepcopy(_step_samples()[kind])
