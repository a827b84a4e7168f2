"""Single-state invariants of the hyp stage-1 table: S1-TREE, S1-BA, S1-RC, S1-LEAK.

Models: the EL2 stage-1 table KVM/arm64 5.12-5.15 builds with kvm_pgtable_hyp_init and
kvm_pgtable_hyp_map (one root page, start level from the hyp VA size, no per-descriptor
refcounting, nothing ever unmapped), checked for structure only.

Leaves out: stage-1 attribute meanings (AP, SH, AttrIndx are not judged), and two-state checks:
no hyp stage-1 operation contract is specified here.
"""

from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.invariants import encoding_violations, tree_violations, leak_violations, _rc_violations
from ptspec.spec.statements import statement

HYP = "arm64-hyp-s1"


@statement("S1-TREE", constrains=("kvm_pgtable_hyp_init", "hyp_map_walker", "hyp_free_walker"))
def s1_tree(state):
    """S1-TREE: the hyp tables form a tree with one root at the start level the VA size implies.

    Statement: the root is one page at level 4 - ARM64_HW_PGTABLE_LEVELS(va_bits); every table
    descriptor points to a page in pages reached exactly once (no sharing, no cycle, never the root);
    table descriptors keep bits 63:59 zero; root slots beyond 2**va_bits stay 0.

    Why: the EL2 walker and kvm_pgtable_hyp_destroy both rely on a plain tree; a shared table is
    freed twice on destroy.

    Constrains: kvm_pgtable_hyp_init, hyp_map_walker (installing tables), hyp_free_walker.
    """
    if state.kind != HYP:
        return []
    start = G.hyp_start_level(state.ia_bits, state.page_shift)
    if not 0 <= start <= 3:
        return tree_violations(state, "S1-TREE", -1, 1, f"a {state.ia_bits}-bit hyp VA (no valid start level)")
    note = f"a {state.ia_bits}-bit hyp VA with the {G.granule_name(state.page_shift)} granule"
    return tree_violations(state, "S1-TREE", start, 1, note)


@statement("S1-BA", constrains=(
    "hyp_map_walker_try_leaf", "kvm_block_mapping_supported", "kvm_init_valid_leaf_pte"))
def s1_ba(state):
    """S1-BA: every valid hyp descriptor is a kind its level allows, with an aligned, in-range address.

    Statement: as S2-BA: pages at level 3 are 0b11 (0b01 is reserved), blocks only at levels KVM
    allows (kvm_block_mapping_supported), leaf output addresses aligned to the leaf size and below
    2**pa_bits, table addresses page aligned; a leaf keeps clear the bits KVM never writes at EL2
    (11, 52:51, 49:48, 63:59: nG, the contiguous hint, DBM, LPA2 address bits, PBHA).

    Why: a misaligned hyp block maps host memory EL2 was never meant to see.

    Constrains: hyp_map_walker_try_leaf, kvm_block_mapping_supported, kvm_init_valid_leaf_pte.
    """
    if state.kind != HYP:
        return []
    return encoding_violations(state, "S1-BA")


@statement("S1-RC", constrains=("hyp_map_walker", "kvm_pgtable_hyp_destroy", "hyp_free_walker"))
def s1_rc(state):
    """S1-RC: every hyp table page has refcount exactly 1.

    Statement: hyp stage-1 tables in 5.12-5.15 take no reference per descriptor, so every table page
    in the tree keeps the single reference it was allocated with.

    Why: a changed count means something took or dropped a reference the hyp code never balances;
    kvm_pgtable_hyp_destroy frees each table page with one put.

    Constrains: hyp_map_walker (allocation of tables), kvm_pgtable_hyp_destroy / hyp_free_walker.
    """
    if state.kind != HYP:
        return []
    return _rc_violations(state, "S1-RC", per_descriptor=False)


@statement("S1-LEAK", constrains=("hyp_map_walker", "kvm_pgtable_hyp_destroy"))
def s1_leak(state):
    """S1-LEAK: every hyp table page is reached from the root; no page also in a memcache; no pool error.

    Statement: as S2-LEAK's single-state part, for the hyp stage-1 table.

    Why: EL2 memory is a fixed pool; a page lost from it is never recovered.

    Constrains: hyp_map_walker, kvm_pgtable_hyp_destroy.
    """
    if state.kind != HYP:
        return []
    return leak_violations(state, "S1-LEAK")
