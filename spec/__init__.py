"""ptspec.spec: the architecture and the contracts (see docs/interface.md). Imports nothing of impl.

An executable specification of arm64 KVM stage-2 page tables (arch/arm64/kvm/hyp/pgtable.c,
5.12-5.15 with the pKVM page-ownership patch) and of the hyp stage-1 table's structure. It reads
only raw states and step records, and imports only the Python standard library.

Public API:
    StateError, load_state(obj, prev=None) -> State (arm64) or LgState (lguest-x86); prev: an
                                               earlier State whose parse and walk may be reused
    Violation(inv, message, where)
    check_any(raw) -> [Violation]              every single-state statement of a raw state of any
                                               kind (S2-*, S1-*, MS/DIRTY/MMU-WARN with an mmu part,
                                               LG-*): what `ptspec check-state` calls; a step
                                               file {"pre", "step", "post"} goes to
    check_any_step(obj) -> [Violation]         the post-state's statements and the step's, any kind
    check_state(state) -> [Violation]          single-state invariants (S2-*, S1-*)
    check_step(pre, step, post) -> [Violation] S2-BBM, S2-BBM-WALK, the op's contract (C-*), C-CMO,
                                               pool balance
    stage2.cache.CacheJudge().check(pre, step, post) -> [Violation]  CMO-POC, CMO-POU: stateful,
                                               one judge per stage 2 across its steps
    check_hyp_step(pre, step, post) -> [Violation] hyp stage-1 contracts (C-HYP-*), pool balance
    check_vm_step(pre, step, post) -> [Violation] a VM step: mmu contract, C-MMU-CMO, S2-BBM
    load_step / load_mmu_step / load_lguest_step: the strict step-record loaders of each kind
    INVARIANTS: id -> function, CONTRACTS: op -> function, CHECKS: id -> function (invariants and
    contracts), CONTRACT_IDS: every contract id, OP_CONTRACT_ID: op -> its contract id, explain(id)
    statements: the registry of every id any check reports (statements.get(id), all_statements(),
    constraining(kernel_function)); explain(id) and lguest_explain(id) read it
    leaves(state) -> iterator of Leaf, translate(state, ipa) -> Translation
    geometry helpers (granule_shift, stage2_levels, stage2_start_level, root_pages, ...)
"""

from ptspec.spec.stage2.state import State, StateError
from ptspec.spec.stage2.state import load_state as _load_arm64_state
from ptspec.spec.lguest.state import LgState, load_lguest_state
from ptspec.spec.lguest.check import LG_IDS, lguest_check_state, lguest_check_step, lguest_explain
from ptspec.spec.mmu.invariants import check_mmu_state
from ptspec.spec.mmu.contracts import check_mmu_step
from ptspec.spec.stage2.step import Step, load_step, walked_range
from ptspec.spec.violation import Violation
from ptspec.spec import statements
from ptspec.spec.arch.walk import Leaf, Translation, leaves, translate
from ptspec.spec.stage2.check import CHECKS, CONTRACTS, CONTRACT_IDS, HYP_CONTRACT_IDS, INVARIANTS, OP_CONTRACT_ID, check_hyp_step, check_state, check_step, explain
from ptspec.spec.stage2.window import changed_tables
from ptspec.spec.any_state import check_any, check_any_step
from ptspec.spec.mmu.step import check_vm_step, load_mmu_step
from ptspec.spec.lguest.step import load_lguest_step
from ptspec.spec.arch.geometry import granule_shift, granule_size, stage2_levels, stage2_start_level, hyp_start_level, root_pages, level_allows_block, level_allows_leaf, ipa_bits_supported, entries_per_table, IPA_RANGE



def load_state(obj, prev=None):
    """Validate a raw state of any kind: arm64-stage2 / arm64-hyp-s1 (a State), lguest-x86 (an
    LgState). Raises StateError saying what is wrong and where. ``prev``: an arm64 State loaded
    before whose parsed pages and walk may be reused (spec.stage2.state.load_state)."""
    if isinstance(obj, LgState) or (isinstance(obj, dict) and obj.get("kind") == "lguest-x86"):
        return load_lguest_state(obj)
    return _load_arm64_state(obj, prev)


__all__ = [
    "LgState", "load_lguest_state", "LG_IDS", "lguest_check_state", "lguest_check_step",
    "lguest_explain", "check_mmu_state", "check_mmu_step",
    "State", "StateError", "load_state", "check_any", "check_any_step", "check_vm_step",
    "load_mmu_step", "load_lguest_step", "Step", "load_step", "walked_range", "Violation",
    "Leaf", "Translation", "leaves", "translate",
    "CHECKS", "CONTRACTS", "CONTRACT_IDS", "HYP_CONTRACT_IDS", "OP_CONTRACT_ID", "INVARIANTS",
    "check_state", "check_step", "check_hyp_step", "explain", "statements", "changed_tables",
    "granule_shift", "granule_size", "stage2_levels", "stage2_start_level", "hyp_start_level",
    "root_pages", "level_allows_block", "level_allows_leaf", "ipa_bits_supported",
    "entries_per_table", "IPA_RANGE",
]
