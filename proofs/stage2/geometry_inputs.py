"""The table geometry checkers build their inputs from, computed by spec, never read from impl.

Models: for a granule and an input size, the per-level shifts and sizes, entries per table, the PA
size, which levels take blocks, the start level and the number of concatenated roots, all from
ptspec.spec.arch.geometry (the architecture's rules as KVM applies them), in the shape the
hypothesis strategies read (``geom.gran.page_size``, ``geom.gran.shift[level]``, ``geom.start_level``,
...). A checker whose address generator followed impl's geometry would inherit impl's mistakes: with
this one, a wrong impl geometry shows up as a violation instead of as moved inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptspec.spec.arch import geometry as G


@dataclass(frozen=True)
class SpecGranule:
    """One granule's per-level constants, from spec (levels 0..3)."""
    page_shift: int

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @property
    def ptrs_per_pte(self) -> int:
        return G.entries_per_table(self.page_shift)

    @property
    def shift(self) -> tuple:
        return tuple(G.granule_shift(level, self.page_shift) for level in range(G.MAX_LEVELS))

    @property
    def size(self) -> tuple:
        return tuple(G.granule_size(level, self.page_shift) for level in range(G.MAX_LEVELS))

    @property
    def pa_bits(self) -> int:
        """The largest PA size KVM 5.x uses with this granule (52 with 64K, else 48)."""
        return G.IPA_RANGE[self.page_shift][1]

    def kvm_level_supports_block_mapping(self, level: int) -> bool:
        return G.level_allows_block(level, self.page_shift)


@dataclass(frozen=True)
class InputGeometry:
    """A table's shape as the inputs see it: granule, input size, start level, root pages."""
    gran: SpecGranule
    ia_bits: int
    start_level: int
    pgd_pages: int = 1


def stage2_geometry(page_shift: int, ia_bits: int) -> InputGeometry:
    """A stage-2 table's shape for a (granule, IPA size), as spec states KVM chooses it."""
    start = G.stage2_start_level(ia_bits, page_shift)
    return InputGeometry(SpecGranule(page_shift), ia_bits, start, G.root_pages(ia_bits, start, page_shift))


def hyp_geometry(page_shift: int, va_bits: int) -> InputGeometry:
    """The hyp stage-1 table's shape: one root at the level the VA size needs."""
    return InputGeometry(SpecGranule(page_shift), va_bits, G.hyp_start_level(va_bits, page_shift), 1)
