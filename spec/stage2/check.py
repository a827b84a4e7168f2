"""The checker entry points: every single-state invariant of a state, every two-state check of a step.

Models: the registry of invariants (by id) and operation contracts (by op name), and the two
functions the lock-step checker, the exhaustive explorer and ``ptspec check-state`` call:
check_state(state) and check_step(pre, step, post).
"""

import functools

from ptspec.spec.stage2.bbm import check_bbm
from ptspec.spec.stage2.cmo import check_cmo
from ptspec.spec.stage2.walkcache import check_bbm_walk
from ptspec.spec.stage2.mainline import contract_split, contract_test_clear_young
from ptspec.spec.stage2.contracts_attr import contract_flush, contract_get_leaf, contract_is_young, contract_mkold, contract_mkyoung, contract_relax_perms, contract_unmap, contract_wrprotect
from ptspec.spec.hyp.contracts import HYP_CONTRACTS
from ptspec.spec.hyp.warn import contract_hyp_warn
from ptspec.spec.hyp.tlbi import check_hyp_unmap_tlbi
from ptspec.spec.stage2.contracts_map import contract_annotate, contract_map, contract_set_owner
from ptspec.spec.stage2.contracts_table import contract_destroy, contract_init
from ptspec.spec.hyp.invariants import s1_ba, s1_leak, s1_rc, s1_tree
from ptspec.spec.stage2.invariants import s2_ba, s2_leak, s2_rc, s2_tree
from ptspec.spec.stage2.ownership import s2_own
from ptspec.spec.lguest.check import lguest_check_state
from ptspec.spec.lguest.state import LgState
from ptspec.spec.mmu.invariants import check_dirty, check_mmu_state, check_ms
from ptspec.spec.mmu.perms import check_perms
from ptspec.spec.stage2.state import StateError, load_state
from ptspec.spec.stage2.step import load_step
from ptspec.spec import statements
from ptspec.spec.violation import Violation

STAGE2_INVARIANTS = ("S2-RC", "S2-OWN", "S2-BA", "S2-TREE", "S2-LEAK")
HYP_INVARIANTS = ("S1-TREE", "S1-BA", "S1-RC", "S1-LEAK")

def _one_state(fn):
    """Let a registered invariant take a raw dict as well as a State."""
    @functools.wraps(fn)
    def checked(state):
        return fn(load_state(state))
    return checked


def _two_states(fn):
    """Let a registered two-state check take raw dicts as well as States and Steps."""
    @functools.wraps(fn)
    def checked(pre, step, post):
        return fn(load_state(pre), load_step(step), load_state(post))
    return checked


INVARIANTS = {
    "S2-RC": _one_state(s2_rc),
    "S2-OWN": _one_state(s2_own),
    "S2-BA": _one_state(s2_ba),
    "S2-TREE": _one_state(s2_tree),
    "S2-LEAK": _one_state(s2_leak),
    "S2-BBM": _two_states(check_bbm),       # two-state: (pre, step, post)
    "S2-BBM-WALK": _two_states(check_bbm_walk),     # two-state: table descriptors in walk caches
    "S1-TREE": _one_state(s1_tree),
    "S1-BA": _one_state(s1_ba),
    "S1-RC": _one_state(s1_rc),
    "S1-LEAK": _one_state(s1_leak),
}

# op -> its contract function (States and a Step in); CONTRACTS: the same taking raw records too
_CONTRACT_FNS = {
    "init": contract_init,
    "map": contract_map,
    "set_owner": contract_set_owner,
    "unmap": contract_unmap,
    "wrprotect": contract_wrprotect,
    "mkyoung": contract_mkyoung,
    "mkold": contract_mkold,
    "is_young": contract_is_young,
    "relax_perms": contract_relax_perms,
    "flush": contract_flush,
    "get_leaf": contract_get_leaf,
    "destroy": contract_destroy,
    "test_clear_young": contract_test_clear_young,       # 6.5 on (spec/stage2/mainline.py)
    "split": contract_split,
    "annotate": contract_annotate,      # 7.1 on
}
CONTRACTS = {op: _two_states(fn) for op, fn in _CONTRACT_FNS.items()}

OP_CONTRACT_ID = {
    "init": "C-INIT", "map": "C-MAP", "set_owner": "C-SET-OWNER", "unmap": "C-UNMAP",
    "wrprotect": "C-WRPROTECT", "mkyoung": "C-MKYOUNG", "mkold": "C-MKOLD", "is_young": "C-IS-YOUNG",
    "relax_perms": "C-RELAX-PERMS", "flush": "C-FLUSH", "get_leaf": "C-GET-LEAF", "destroy": "C-DESTROY",
    "test_clear_young": "C-TEST-CLEAR-YOUNG", "split": "C-SPLIT", "annotate": "C-ANNOTATE",
}


def check_pool_balance(pre, step, post):
    """S2-LEAK across one step: pages in use + pages in memcaches + free pool pages is conserved.

    Only judged when both states report free_pages. A page that leaves the tree must go back to the
    pool (or stay in a memcache); one that vanishes from all three is leaked, one that appears in
    two is double-counted (a double free).
    """
    if pre.free_pages is None or post.free_pages is None:
        return []
    before = pre.free_pages + len(pre.pages) + len(pre.memcache)
    after = post.free_pages + len(post.pages) + len(post.memcache)
    if before == after:
        return []
    return [Violation("S2-LEAK", f"{step.op}: pool pages are not conserved: free {pre.free_pages} + in use "
                                 f"{len(pre.pages)} + memcache {len(pre.memcache)} = {before} before, free "
                                 f"{post.free_pages} + in use {len(post.pages)} + memcache "
                                 f"{len(post.memcache)} = {after} after", {})]


# every contract id check_step can report: one per operation, plus the cache-maintenance contract
CONTRACT_IDS = tuple(OP_CONTRACT_ID.values()) + ("C-CMO",)

# id -> evaluator, invariants and contracts together (their statements: ptspec.spec.statements)
CHECKS = dict(INVARIANTS)
CHECKS.update({OP_CONTRACT_ID[op]: fn for op, fn in CONTRACTS.items()})
CHECKS["C-CMO"] = _two_states(check_cmo)
HYP_CONTRACT_IDS = {"init": "C-HYP-INIT", "map": "C-HYP-MAP", "destroy": "C-HYP-DESTROY",
                    "unmap": "C-HYP-UNMAP"}
CHECKS.update({HYP_CONTRACT_IDS[op]: fn for op, fn in HYP_CONTRACTS.items()})
CHECKS["C-HYP-WARN"] = _two_states(contract_hyp_warn)
CHECKS["S1-UNMAP-TLBI"] = _two_states(check_hyp_unmap_tlbi)


# mmu.c: MS, MS-PERM and DIRTY judge a stage-2 state with its "mmu" part; the C-MMU-* contracts judge steps
CHECKS["MS"] = check_ms
CHECKS["DIRTY"] = check_dirty
CHECKS["MS-PERM"] = check_perms


def explain(check_id):
    """The reviewer's text for any invariant or contract id: its statement in the registry
    (ptspec.spec.statements). KeyError for an id no spec module declares."""
    return statements.get(check_id).text()


def _is_lguest(state):
    return isinstance(state, LgState) or (isinstance(state, dict) and state.get("kind") == "lguest-x86")


def check_state(state, pages=None):
    """Every single-state invariant of a raw state (dict) or State: a list of Violations.

    A stage-2 state gets S2-*, and MS, MS-PERM and DIRTY too when it carries an "mmu" part (a VM state of
    ptspec.spec.mmu.state); a hyp stage-1 state gets S1-*; an "lguest-x86" state gets LG-*.

    ``pages`` (stage 2): judge the per-table rules only on these table pages, the window
    ptspec.spec.stage2.window.changed_tables(pre, state) of a step from a pre-state that was judged
    whole; the result is then the same as without it (the rules over the whole tree always run)."""
    if _is_lguest(state):
        return lguest_check_state(state)
    st = load_state(state)
    out = []
    if st.kind == "arm64-stage2" and pages is not None:
        if pages:           # the per-table rules of S2-RC, S2-OWN, S2-BA: nothing to judge outside
            out += s2_rc(st, pages) + s2_own(st, pages) + s2_ba(st, pages)
        out += s2_tree(st, pages) + s2_leak(st)
    else:
        ids = STAGE2_INVARIANTS if st.kind == "arm64-stage2" else HYP_INVARIANTS
        for inv in ids:
            out.extend(INVARIANTS[inv](st))
    if isinstance(state, dict) and state.get("mmu") is not None and st.kind == "arm64-stage2":
        out.extend(check_mmu_state(state))
    return out


def check_hyp_step(pre, step, post):
    """The contract of one hyp stage-1 operation (init, map, unmap, destroy) and its WARNs
    (C-HYP-WARN, when the step record carries out.warnings): a list of Violations."""
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    for name, st in (("pre", pre), ("post", post)):
        if st.kind != "arm64-hyp-s1":
            raise StateError(f"{name}: check_hyp_step specifies arm64-hyp-s1 operations, got a {st.kind} state")
    if step.op not in HYP_CONTRACTS:
        raise StateError(f"step: hyp stage-1 has no operation {step.op!r} (known: {', '.join(HYP_CONTRACTS)})")
    return (HYP_CONTRACTS[step.op](pre, step, post) + contract_hyp_warn(pre, step, post)
            + check_hyp_unmap_tlbi(pre, step, post) + check_pool_balance(pre, step, post))


def check_step(pre, step, post):
    """The two-state checks of one stage-2 operation: S2-BBM, S2-BBM-WALK, its contract, C-CMO,
    pool balance.

    pre and post are raw states or States (post.tlb_log holds the events of this step only); step is
    the record of docs/interface.md. Single-state invariants are not re-run: call check_state.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    for name, st in (("pre", pre), ("post", post)):
        if st.kind != "arm64-stage2":
            raise StateError(f"{name}: check_step specifies arm64-stage2 operations, got a {st.kind} state")
    out = check_bbm(pre, step, post)
    out += check_bbm_walk(pre, step, post)
    out += _CONTRACT_FNS[step.op](pre, step, post)
    out += check_cmo(pre, step, post)
    out += check_pool_balance(pre, step, post)
    return out
