"""ptspec.spec: the architecture and the contracts (see docs/interface.md). Imports nothing of impl.

An executable specification of arm64 KVM stage-2 page tables (arch/arm64/kvm/hyp/pgtable.c,
5.12-5.15 with the pKVM page-ownership patch) and of the hyp stage-1 table's structure. It reads
only raw states and step records, and imports only the Python standard library.

Public API:
    StateError, load_state(obj) -> State
    Violation(inv, message, where)
    check_state(state) -> [Violation]          single-state invariants (S2-*, S1-*)
    check_step(pre, step, post) -> [Violation] S2-BBM, the op's contract (C-*), C-CMO, pool balance
    check_hyp_step(pre, step, post) -> [Violation] hyp stage-1 contracts (C-HYP-*), pool balance
    INVARIANTS: id -> function, CONTRACTS: op -> function, CHECKS: id -> function (invariants and
    contracts), CONTRACT_IDS: every contract id, OP_CONTRACT_ID: op -> its contract id, explain(id)
    leaves(state) -> iterator of Leaf, translate(state, ipa) -> Translation
    geometry helpers (granule_shift, stage2_levels, stage2_start_level, root_pages, ...)
"""

from .state import State, StateError, load_state
from .step import Step, load_step, walked_range
from .violation import Violation
from .walk import Leaf, Translation, leaves, translate
from .check import (CHECKS, CONTRACTS, CONTRACT_IDS, HYP_CONTRACT_IDS, INVARIANTS, OP_CONTRACT_ID,
                    check_hyp_step, check_state, check_step, explain)
from .geometry import (granule_shift, granule_size, stage2_levels, stage2_start_level, hyp_start_level,
                       root_pages, level_allows_block, level_allows_leaf, ipa_bits_supported,
                       entries_per_table, IPA_RANGE)

__all__ = [
    "State", "StateError", "load_state", "Step", "load_step", "walked_range", "Violation",
    "Leaf", "Translation", "leaves", "translate",
    "CHECKS", "CONTRACTS", "CONTRACT_IDS", "HYP_CONTRACT_IDS", "OP_CONTRACT_ID", "INVARIANTS",
    "check_state", "check_step", "check_hyp_step", "explain",
    "granule_shift", "granule_size", "stage2_levels", "stage2_start_level", "hyp_start_level",
    "root_pages", "level_allows_block", "level_allows_leaf", "ipa_bits_supported",
    "entries_per_table", "IPA_RANGE",
]
