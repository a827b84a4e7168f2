"""Directed VM scenarios: short operation sequences that walk into each known trouble spot.

Each scenario is a layout (``ptspec.proofs.mmu.layouts.make_layout`` arguments) and a list of steps for
``VmHarness.step``; every step is judged by the spec as usual. They make sure the places where
mmu.c went wrong before (a block at a memslot's partial head, hugetlb with disagreeing alignment,
slots ending at the IPA limit, a failing write fault under dirty logging, a permission fault after
logging was switched off (also over a page an instruction fetch made executable), access-flag
faults, dirty masks with gaps, unaligned ioremaps, PFNMAP slots under ``stage2_unmap_vm``) are visited on every run, whatever the random runs draw.
"""

from __future__ import annotations

from ptspec.proofs.mmu.harness import VmHarness
from ptspec.proofs.mmu.layouts import LOG, make_layout

P = 0x1000


def _slot0(h):
    return h.layout["slots"][0]


def _log(h, on):
    s = _slot0(h)
    flags = (s["flags"] | LOG) if on else (s["flags"] & ~LOG)
    return ("set_memory_region", dict(slot=0, flags=flags, guest_phys_addr=s["gpa"],
                                      memory_size=s["size"], userspace_addr=s["uaddr"]))


def _acc(ipa, kind="read", **kw):
    return ("access", dict(ipa=ipa, kind=kind, **kw))


G = 0x1_0000_0000     # GPA_BASE: slot 0 starts here (plus the head) in every 4K layout below

SCENARIOS = {
    # a THP VMA larger than the slot, the slot starting one page into a block
    "thp-partial-head": (dict(backing="thp", nblocks=2, head=1, tail=1),
                         lambda h: [_acc(G + P), _acc(G + 0x1FF000, "write"),
                                    _acc(G + 0x200000, "write"), _acc(G + 0x3FE000, "exec")]),
    "hugetlb-misaligned": (dict(backing="hugetlb:21", nblocks=2, misalign=True),
                           lambda h: [_acc(G), _acc(G + 0x5000, "write"),
                                      _acc(G + 0x200000, "exec")]),
    "hugetlb-contpte-misaligned": (dict(backing="hugetlb:16", nblocks=2, misalign=True),
                                   lambda h: [_acc(G + 0x3000, "write"), _acc(G + 0xF000)]),
    "hugetlb-contpmd-head": (dict(backing="hugetlb:25", nblocks=1, head=0, tail=1),
                             lambda h: [_acc(G + 0x1E00000, "write"), _acc(G)]),
    "hugetlb-pud": (dict(backing="hugetlb:30", nblocks=1, tail=1),
                    lambda h: [_acc(G + 0x3FFFE000, "write"), _acc(G + 0x1000)]),
    "ipa-top-end": (dict(backing="anon", nblocks=1, top="end", ia_bits=36),
                    lambda h: [_acc((1 << 36) - P, "write")]),
    "ipa-top-beyond": (dict(backing="anon", nblocks=1, top="beyond", ia_bits=36),
                       lambda h: [_acc((1 << 36) - P, "write")]),
    "dirty-write-enomem": (dict(backing="thp", nblocks=1, flags=LOG),
                           lambda h: [_acc(G + 0x3000, "write", enomem=True),
                                      _acc(G + 0x3000, "write")]),
    "perm-after-logging": (dict(backing="thp", nblocks=1),
                           lambda h: [_log(h, True), _acc(G + 0x5000), _log(h, False),
                                      _acc(G + 0x5000, "write")]),
    "exec-then-block": (dict(backing="thp", nblocks=1),
                        lambda h: [_log(h, True), _acc(G + 0x5000, "exec"), _log(h, False),
                                   _acc(G + 0x5000, "write"), _acc(G + 0x9000, "exec")]),
    "perm-after-logging-hugetlb": (dict(backing="hugetlb:21", nblocks=1),
                                   lambda h: [_log(h, True), _acc(G + 0x7000), _log(h, False),
                                              _acc(G + 0x7000, "write")]),
    "logging-over-block": (dict(backing="thp", nblocks=1),
                           lambda h: [_acc(G + 0x2000, "write"), _log(h, True),
                                      _acc(G + 0x4000, "write"), _acc(G + 0x2000, "write"),
                                      ("get_dirty_log", dict(slot=0)),
                                      _acc(G + 0x4000, "write")]),
    "dirty-mask-gap": (dict(backing="anon", nblocks=1, flags=LOG),
                       lambda h: [_acc(G, "write"), _acc(G + 0x5000, "write"),
                                  _acc(G + 0x2000, "read"), ("get_dirty_log", dict(slot=0)),
                                  _acc(G + 0x5000, "write")]),
    "access-flag": (dict(backing="thp", nblocks=1),
                    lambda h: [_acc(G + 0x1000, "write"), ("age", dict(hva=_slot0(h)["uaddr"])),
                               _acc(G + 0x1000, "read"), ("test_age", dict(hva=_slot0(h)["uaddr"]))]),
    "thp-split-race": (dict(backing="thp", nblocks=1),
                       lambda h: [_acc(G + 0x1000, "write",
                                       race=("split_thp", _slot0(h)["uaddr"]), races=1),
                                  _acc(G + 0x1000, "write"), ("split_thp", dict(
                                      hva=_slot0(h)["uaddr"])), _acc(G + 0x9000)]),
    "ksm-cow": (dict(backing="anon", nblocks=1),
                lambda h: [_acc(G + 0x1000, "write"), ("ksm", dict(hva=_slot0(h)["uaddr"] + P)),
                           _acc(G + 0x1000, "read"), _acc(G + 0x1000, "write")]),
    # KSM moves a page whose level-3 table stays (a neighbour is mapped): kvm_set_spte_gfn maps
    # the new page; then the guest executes from it (CMO-POC / CMO-POU of the moved page)
    "ksm-neighbour": (dict(backing="anon", nblocks=1),
                      lambda h: [_acc(G, "write"), _acc(G + 0x1000, "write"),
                                 ("ksm", dict(hva=_slot0(h)["uaddr"] + P)),
                                 _acc(G + 0x1000, "exec")]),
    # an execution fault on a page mapped by a read: permission relaxation grants X
    "exec-after-read": (dict(backing="anon", nblocks=1),
                        lambda h: [_acc(G + 0x3000), _acc(G + 0x3000, "exec"),
                                   _acc(G + 0x4000, "exec")]),
    "routing": (dict(backing="anon", nblocks=1, second_slot=True),
                lambda h: [_acc(0x800000, "cm"), _acc(0x800000, "s1ptw"), _acc(0x800000, "exec"),
                           _acc(0x800000, "write")]),
    "ioremap-unaligned": (dict(backing="anon", nblocks=1),
                          lambda h: [("ioremap", dict(ipa=0x800FF0, pa=0x9000FF0, size=0x20,
                                                      writable=True)), _acc(0x801000, "write"),
                                     # the same page again: the map finds it mapped just so
                                     ("ioremap", dict(ipa=0x800000, pa=0x9000000, size=0x1000,
                                                      writable=True))]),
    "pfnmap-unmap-vm": (dict(backing="pfnmap", nblocks=1, second_slot=True),
                        lambda h: [_acc(G + 0x2000, "write"), _acc(0x10000, "write"),
                                   ("unmap_vm", {}), _acc(G + 0x3000), _acc(G, "exec")]),
    "delete-slot": (dict(backing="anon", nblocks=1, tail=1),
                    lambda h: [_acc(G + 0x1FE000, "write"), _acc(G + 0x1000, "write"),
                               ("set_memory_region", dict(slot=0, flags=0, guest_phys_addr=G,
                                                          memory_size=0,
                                                          userspace_addr=_slot0(h)["uaddr"])),
                               _acc(G + 0x1000)]),
    "zap-pages": (dict(backing="anon", nblocks=1),
                  lambda h: [_acc(G + 0x1000, "write"), _acc(G + 0x2000, "write"),
                             ("zap", dict(hva=_slot0(h)["uaddr"] + P, size=2 * P)),
                             _acc(G + 0x2000)]),
    "zap-hugetlb": (dict(backing="hugetlb:21", nblocks=1),
                    lambda h: [_acc(G + 0x1000, "write"),
                               ("zap", dict(hva=_slot0(h)["uaddr"], size=P)), _acc(G + 0x1000)]),
}


def run_all(names=None, progress=None):
    """Yields (name, harness, violations of the first failing step or [])."""
    for name in names or SCENARIOS:
        kw, steps = SCENARIOS[name]
        h = VmHarness(make_layout(**kw), arena_pages=512)
        found = list(h.violations)
        if not found:
            for op, args in steps(h):
                found = h.step(op, **args)[1]
                if found:
                    break
        if progress:
            progress()
        yield name, h, found
