"""CMO-POC and CMO-POU applied to a VM run by arch/arm64/kvm/mmu.c (5.13).

Models: the cache ghost of ptspec.spec.stage2.cache over the stage 2 of one VM, where mmu.c does
the maintenance itself (its page table has no cache-maintenance hooks in 5.13, so ``cmo`` is false
in the raw state, yet the table is a guest's): ``user_mem_abort`` cleans the D-cache of the
mapping it is about to install (``clean_dcache_guest_page``, skipped with FWB) unless the fault is
a permission fault, and invalidates the I-cache (``invalidate_icache_guest_page``, skipped with
DIC) on an execution fault, before it maps or relaxes permissions; ``kvm_set_spte_gfn`` (KSM and
other page moves) cleans the new page and maps it read-only. A VM step (a guest access with the
faults it takes, a host change the MMU notifiers follow, a memslot change, ...) is one step of the
ghost: its logged maintenance is applied in order, every translation it made visible is judged,
then every output page no leaf maps any more is the host's again (written, as far as the ghost
knows).

The cases the statements single out in 5.13: block builds (a THP or hugetlb block installed by a
fault is cleaned as a whole: pages of the block the guest never had are host-written), a
permission fault that maps a block over pages (after dirty logging stopped: the fault status is
FSC_PERM, so no clean; every page of the block the guest did not have at that moment needs one),
and permission relaxation (an execution fault on a mapped page invalidates its I-cache: the page
was cleaned when it was mapped, and the guest's own writes since are the guest's to maintain).

Leaves out: the order of mmu.c's maintenance relative to its descriptor writes, and IDC (with FWB
the D-side is taken as coherent for instruction fetches, as ptspec.spec.stage2.cache says).
"""

from ptspec.spec.stage2.cache import CacheJudge


class _VmStep:
    """What the judge reads of a VM step: its name, as the message shows it."""

    __slots__ = ("op",)

    def __init__(self, op):
        self.op = f"vm:{op}"


class VmCacheJudge:
    """The cache ghost of one VM; ``check(pre, op, post)`` takes the MmuViews around a VM step."""

    def __init__(self, *, dic=False):
        self.judge = CacheJudge(guest=True, dic=dic)

    def check(self, pre, op, post):
        return self.judge.check(pre.s2, _VmStep(op), post.s2)
