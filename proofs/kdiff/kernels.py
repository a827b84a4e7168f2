"""Kernel-version profiles of impl, for comparing it with a given kernel's ``pgtable.c``.

impl follows the 5.12-5.15 algorithms with the pKVM ownership seed patch, and exposes some of the
choices that later kernels made differently as constructor parameters. A profile names the
parameter values (and, where impl has no parameter yet, a prototype of the change) that make impl
behave as one kernel version:

``impl-default``  impl as constructed with no arguments: owner ids in bits 63:56 (the seed patch),
                  and a map that goes on past a leaf that needs no update (the posted, unmerged
                  "Continue stage-2 map when re-creating mappings"; map returns -EAGAIN at the end).
``5.15``          owner ids in bits 9:2 (``KVM_INVALID_PTE_OWNER_MASK``), and -EAGAIN stops the map
                  walk at the first leaf that needs no update.
``6.1``           ``5.15`` plus: when ``stage2_put_pte`` clears a *table* descriptor, the TLB
                  invalidation carries level hint 0 ("any level") instead of the table's level.
                  impl has no parameter for this; ``active("6.1")`` swaps in a prototype of the
                  proposed change (``_stage2_put_pte_6_1``) for the duration of a call. See
                  docs/kdiff.md for the impl change this stands in for.

``make_impl(profile, ...)`` builds the impl table and memcache for a profile; ``active(profile)``
is the context every impl call of that profile must run in.
"""

from __future__ import annotations

import contextlib

from impl import stage2_map, stage2_walkers
from impl.pool import KvmMmuMemoryCache, PagePool
from impl.pte import KVM_PTE_VALID, kvm_pte_table
from impl.stage2 import KvmPgtable

PROFILES = {
    "impl-default": {"owner_field": (63, 56), "eagain_continues": True, "table_tlbi_level0": False},
    "5.15": {"owner_field": (9, 2), "eagain_continues": False, "table_tlbi_level0": False},
    "6.1": {"owner_field": (9, 2), "eagain_continues": False, "table_tlbi_level0": True},
}
DEFAULT_PROFILE = "6.1"


def _stage2_put_pte_6_1(pgt, tbl, ptp, idx, addr, level):
    """stage2_put_pte (arch/arm64/kvm/hyp/pgtable.c, 6.1): a cleared table is invalidated at
    level hint 0; a leaf at its own level; then the parent table's reference is dropped."""
    pte = tbl[idx]
    if pte & KVM_PTE_VALID:
        tbl[idx] = 0
        if kvm_pte_table(pte, level):
            level = 0
        pgt.tlb_flush_vmid_ipa(addr, level)
    pgt.mm_ops.put_page(ptp)


def check_profile(name: str) -> dict:
    if name not in PROFILES:
        raise ValueError(f"unknown kernel profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


@contextlib.contextmanager
def active(name: str):
    """Run impl as the profile's kernel: swaps the prototype functions in, restores on exit."""
    prof = check_profile(name)
    if not prof["table_tlbi_level0"]:
        yield
        return
    saved = (stage2_map.stage2_put_pte, stage2_walkers.stage2_put_pte)
    stage2_map.stage2_put_pte = _stage2_put_pte_6_1
    stage2_walkers.stage2_put_pte = _stage2_put_pte_6_1
    try:
        yield
    finally:
        stage2_map.stage2_put_pte, stage2_walkers.stage2_put_pte = saved


def _force_all(addr, end, prot):
    return True


def make_impl(name: str, page_shift: int, ia_bits: int, *, npages: int, fwb: bool = False,
              cmo: bool = True, mc_capacity: int = 40, flags: int = 0, force_pte: bool = False):
    """(KvmPgtable, KvmMmuMemoryCache) for the profile, on a fresh pool of npages pages;
    force_pte installs a force_pte_cb that always asks for pages."""
    prof = check_profile(name)
    pool = PagePool(page_shift, npages)
    pgt = KvmPgtable(page_shift, ia_bits, pool=pool, owner_field=prof["owner_field"], fwb=fwb,
                     cmo=cmo, eagain_continues=prof["eagain_continues"], flags=flags,
                     force_pte_cb=_force_all if force_pte else None)
    return pgt, KvmMmuMemoryCache(pool, mc_capacity)
