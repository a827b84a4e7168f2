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

Each is impl's own ``kernel_version`` (impl/pgtable/versions.py). ``make_impl(profile, ...)`` builds the
impl table and memcache for a profile.
"""

from __future__ import annotations

from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
from ptspec.impl.pgtable.stage2 import KvmPgtable

# kdiff profile name -> impl kernel_version (impl/pgtable/versions.py)
PROFILES = {"impl-default": "default", "5.15": "5.15", "6.1": "6.1"}
DEFAULT_PROFILE = "6.1"


def check_profile(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown kernel profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def _force_all(addr, end, prot):
    return True


def make_impl(name: str, page_shift: int, ia_bits: int, *, npages: int, fwb: bool = False,
              cmo: bool = True, mc_capacity: int = 40, flags: int = 0, force_pte: bool = False):
    """(KvmPgtable, KvmMmuMemoryCache) for the profile, on a fresh pool of npages pages;
    force_pte installs a force_pte_cb that always asks for pages."""
    pool = PagePool(page_shift, npages)
    pgt = KvmPgtable(page_shift, ia_bits, pool=pool, kernel_version=check_profile(name), fwb=fwb,
                     cmo=cmo, flags=flags, force_pte_cb=_force_all if force_pte else None)
    return pgt, KvmMmuMemoryCache(pool, mc_capacity)
