"""Valid raw states of every kind check-state accepts, exported by the impl harnesses.

A stage-2 table after some maps (with a tlb_log), a hyp stage-1 table, a VM (stage 2 plus the ``mmu``
part, dirty logging on, an ioremap) and an lguest guest after boot. Tests mutate copies of these.
"""

import copy
import functools

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
