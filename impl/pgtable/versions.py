"""Kernel-version profiles of the stage-2 page-table library: which behaviour impl follows.

impl models arch/arm64/kvm/hyp/pgtable.c as of 5.12-5.15 with the pKVM page-ownership patch. A few
details changed between the versions ptspec is compared with; each is a parameter of
``KvmPgtable`` and a profile names a consistent set of them:

``default``  what the project specifies: the seed patch's owner field (bits 63:56), the posted
             fix "Continue stage-2 map when re-creating mappings" (a leaf that needs no update is
             skipped, the walk goes on, map returns -EAGAIN at the end), and a cleared table
             descriptor invalidated with no level hint (as 6.1 does; the table's own level, as
             5.12-5.15 pass it, is a leaf hint that need not remove a cached table descriptor:
             S2-BBM-WALK, docs/cmo.md);
``seed``     the seed patch as written (March 2021): owner bits 63:56, -EAGAIN stops the map walk;
``5.15``     mainline 5.15: owner bits 9:2 (KVM_INVALID_PTE_OWNER_MASK), -EAGAIN stops the walk;
``6.1``      ``5.15`` plus: stage2_put_pte invalidates a cleared *table* descriptor with level
             hint 0 (no TTL hint) instead of the table's own level, found by running Debian's
             6.1 pgtable.c side by side with impl (docs/kdiff.md).

An explicit keyword given to KvmPgtable wins over the profile's value.
"""

from __future__ import annotations

PROFILES: dict[str, dict] = {
    "default": {"owner_field": (63, 56), "eagain_continues": True, "table_tlbi_level0": True},
    "seed": {"owner_field": (63, 56), "eagain_continues": False, "table_tlbi_level0": False},
    "5.15": {"owner_field": (9, 2), "eagain_continues": False, "table_tlbi_level0": False},
    "6.1": {"owner_field": (9, 2), "eagain_continues": False, "table_tlbi_level0": True},
}


def profile(name: str) -> dict:
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"unknown kernel_version {name!r}; choose one of {', '.join(PROFILES)}")
    return dict(PROFILES[name])
