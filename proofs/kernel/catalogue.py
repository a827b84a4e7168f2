"""The catalogue of differences between Linux 6.1 ``pgtable.c`` and impl's other profiles.

Each entry names a difference, the profiles that show it, the kernel functions involved, and the
shortest operation sequence that shows it (found by the random differ and shrunk, then kept here as
data). ``verify_entry`` replays the sequence on the C code and on impl: it must differ under each
profile in ``shows_in`` with the named difference id, and must not differ under ``6.1``. A catalogue
entry that no longer reproduces is itself a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptspec.proofs.kernel.pair import Pair

PROT_R, PROT_RW = 4, 6


@dataclass(frozen=True)
class Entry:
    id: str
    what: str
    kernel_functions: tuple
    shows_in: tuple             # profiles that differ from 6.1 on the sequence
    expect: str                 # the KD id the difference is reported as
    geometry: str
    ops: tuple                  # (method, kwargs) on a Pair after init

    def program(self, profile: str) -> str:
        lines = ["from ptspec.proofs.kernel.pair import Pair", f"p = Pair({self.geometry!r}, {profile!r})"]
        for name, kw in self.ops:
            args = ", ".join(f"{k}={hex(v) if isinstance(v, int) and v > 9 else repr(v)}"
                             for k, v in kw.items())
            lines.append(f"p.{name}({args})")
        lines.append("p.compare()")
        return "\n".join(lines)


ENTRIES = (
    Entry("owner-field",
          "set_owner writes the owner id into bits 9:2 (KVM_INVALID_PTE_OWNER_MASK = GENMASK(9, 2)); "
          "the seed patch impl follows by default put it in bits 63:56",
          ("kvm_init_invalid_leaf_owner", "kvm_pgtable_stage2_set_owner"),
          ("impl-default",), "KD-WORDS", "4k-39",
          (("set_owner", {"addr": 0x0, "size": 0x1000, "owner_id": 1}),)),
    Entry("eagain-abort",
          "a map whose first leaf already holds the same output and attributes (or differs only in "
          "permissions) returns -EAGAIN at once: the walk stops and the rest of the range is left "
          "as it was; impl's default (the posted 'Continue stage-2 map when re-creating mappings') "
          "skips that leaf, maps the rest, then returns -EAGAIN",
          ("stage2_map_walker_try_leaf", "stage2_map_walk_leaf", "kvm_pgtable_walk"),
          ("impl-default",), "KD-WORDS", "4k-39",
          (("map", {"addr": 0x0, "size": 0x1000, "phys": 0x8000000000, "prot": PROT_R}),
           ("map", {"addr": 0x0, "size": 0x2000, "phys": 0x8000000000, "prot": PROT_R}))),
    Entry("table-tlbi-level",
          "when a table descriptor is cleared (unmap freeing a now-empty table), stage2_put_pte "
          "invalidates the IPA with level hint 0 (no level information) instead of the table "
          "descriptor's own level; impl (5.12-5.15) passes the table's level, as 5.15.100's C "
          "does (its stage2_put_pte passes the level it is given), a hint that "
          "promises the only cached entry is a leaf at that level, while the walk caches of the "
          "levels below may hold entries from the freed table",
          ("stage2_put_pte", "stage2_unmap_walker"),
          ("5.15",), "KD-TLB", "4k-39",
          (("map", {"addr": 0x0, "size": 0x1000, "phys": 0x8000000000, "prot": PROT_RW}),
           ("unmap", {"addr": 0x0, "size": 0x200000}))),
)


def run_entry(entry: Entry, profile: str):
    """The differences after the last operation of the entry, on a fresh pair."""
    p = Pair(entry.geometry, profile)
    diffs = []
    for name, kw in entry.ops:
        getattr(p, name)(**kw)
        diffs = p.compare()
        if diffs:
            break
    return diffs, p


def verify_entry(entry: Entry) -> list[str]:
    """Problems with the entry (empty when it reproduces exactly as catalogued)."""
    problems = []
    for prof in entry.shows_in:
        diffs, _ = run_entry(entry, prof)
        if not any(d.id == entry.expect for d in diffs):
            problems.append(f"{entry.id}: under profile {prof} expected {entry.expect}, got "
                            f"{[str(d) for d in diffs] or 'no difference'}")
    diffs, _ = run_entry(entry, "6.1")
    if diffs:
        problems.append(f"{entry.id}: profile 6.1 still differs: {[str(d) for d in diffs]}")
    return problems
