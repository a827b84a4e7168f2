"""The historical bug corpus: every bug of docs/bugs.md as a planted variant of impl.

Models the public table of real bugs in pgtable.c, mmu.c and lguest's page_tables.c (ids, the
upstream fix, what went wrong, what must catch it). Each entry names the planted-bug module of its
area and the bug id there (proofs/stage2/planted.py, proofs/mmu/planted.py, proofs/lguest/planted.py): the
planted variant is the bug put back into a copy of one impl function, restored afterwards. The
checkers are never changed. ``seed_findings()`` adds the findings where the seed code itself breaks
the spec (the lguest ``seed-as-written`` variant), when the lguest area provides them.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class CorpusBug:
    id: str
    where: str              # file / function
    fix: str                # upstream fix (commit and title) or provenance
    what: str               # what went wrong
    planted_module: str     # module holding the planted variant
    planted_fn: str         # its context manager
    planted_id: str         # the bug's id there
    exclude: tuple = ()     # obligations that may not count as catching it (they replay it)

    def plant(self):
        mod = importlib.import_module(self.planted_module)
        return getattr(mod, self.planted_fn)(self.planted_id)

    @property
    def expected(self) -> tuple:
        """The invariant / contract ids that must catch it (any of them), as its area declares."""
        mod = importlib.import_module(self.planted_module)
        return tuple(mod.BUGS[self.planted_id].caught_by)

    @property
    def area(self) -> str:
        if self.planted_fn == "planted_seed_finding":
            return "lg"
        return {"ptspec.proofs.stage2.planted": "s2", "ptspec.proofs.mmu.planted": "mmu",
                "ptspec.proofs.lguest.planted": "lg"}.get(self.planted_module, "s2")


def _s2(id, where, fix, what):
    return CorpusBug(id, where, fix, what, "ptspec.proofs.stage2.planted", "planted", id)


def _mmu(id, where, fix, what):
    return CorpusBug(id, where, fix, what, "ptspec.proofs.mmu.planted", "planted_mmu", id)


HISTORICAL = [
    _s2("walk-align", "pgtable.c __kvm_pgtable_visit",
        "357ad203d45c KVM: arm64: Fix range alignment when walking page tables",
        "after a leaf the walker advanced from the unaligned address: later entries skipped"),
    _s2("valid-update-ref", "pgtable.c stage2_map_walker_try_leaf",
        "5c646b7e1d8b KVM: arm64: Fix memory leak on stage2 update of a valid PTE",
        "replacing a valid leaf took a reference without dropping the old one"),
    _s2("owner-unmap", "pgtable.c stage2_unmap_walker",
        "part of 'KVM: arm64: Use page-table to track page ownership' (2021)",
        "unmap treated only valid descriptors as counted: owner annotations stayed"),
    _s2("eagain-abort", "pgtable.c stage2_map_walker_try_leaf",
        "KVM: arm64: Continue stage-2 map when re-creating mappings (2021-07)",
        "-EAGAIN on a permission-only re-map stopped the walk: the rest stayed unmapped"),
    _s2("coalesce-tlbi", "pgtable.c stage2_map_walk_table_pre",
        "3a0b870e3448 KVM: arm64: Fix handling of merging tables into a block entry",
        "a table replaced by a block invalidated one IPA, not the VMID"),
    _mmu("memslot-bounds", "mmu.c fault_supports_stage2_huge_mapping",
         "6794ad5443a2 KVM: arm/arm64: Fix unintended stage 2 PMD mappings",
         "a block at a memslot's head or tail could extend outside it"),
    _mmu("force-pte-size", "mmu.c user_mem_abort",
         "a80868f39855 KVM: arm/arm64: Enforce PTE mappings at stage2 when needed",
         "force_pte set but the mapping size stayed huge"),
    _mmu("ipa-limit", "mmu.c kvm_arch_prepare_memory_region",
         "c3058d5da222 (2014); off-by-one fixed in 262b003d059c (2021)",
         "a memslot could end beyond the IPA space"),
    _mmu("dirty-before", "mmu.c user_mem_abort",
         "509552e65ae8 KVM: arm64: Mark the page dirty only if the fault is handled successfully",
         "the page was marked dirty before the mapping was installed, also on failure"),
    _mmu("perm-level", "mmu.c user_mem_abort",
         "7d894834a305 KVM: arm64: Add usage of stage 2 fault lookup level in user_mem_abort()",
         "relax_perms chosen without comparing the fault level: the guest looped on the fault"),
    CorpusBug("shadow-release", "lguest demand_page / do_set_pte", "design of page_tables.c",
              "a present shadow PTE overwritten without releasing its host page",
              "ptspec.proofs.lguest.planted", "planted_lguest", "shadow-release"),
]


def seed_findings() -> list[CorpusBug]:
    """The lguest seed-as-written findings: the seed's own code for one finding put back into the
    (corrected) impl. The lg.seed-as-written obligation replays exactly these counterexamples, so
    it does not count: the other checks must find each one by themselves."""
    from ptspec.impl.lguest import SEED_FINDINGS
    return [CorpusBug(f, "lguest page_tables.c (4.7)", "seed as written (docs/lguest.md)",
                      f"the seed's code for finding {f}", "ptspec.proofs.mutation.corpus", "planted_seed_finding", f,
                      exclude=("lg.seed-as-written",))
            for f in SEED_FINDINGS]


class _Findings:
    """What corpus entries of seed findings expect (the ids ptspec.proofs.lguest.findings.EXPECTED names)."""

    def __getitem__(self, finding):
        from ptspec.proofs.lguest.findings import EXPECTED
        return type("F", (), {"caught_by": (EXPECTED[finding],)})


BUGS = _Findings()


@contextlib.contextmanager
def planted_seed_finding(finding: str):
    """Every lguest built while this is active keeps the seed's code for `finding`."""
    from ptspec.impl.lguest import lguest as L
    orig = L.Lguest.__init__

    def init(self, *args, seed_findings=None, **kwargs):
        variant = kwargs.get("variant", "corrected")
        base = set(seed_findings) if seed_findings is not None else (
            set(L.SEED_FINDINGS) if variant == "seed-as-written" else set())
        orig(self, *args, seed_findings=tuple(sorted(base | {finding})), **kwargs)
    L.Lguest.__init__ = init
    try:
        yield finding
    finally:
        L.Lguest.__init__ = orig


def all_bugs() -> list[CorpusBug]:
    return HISTORICAL + seed_findings()
