"""Entry points of the lguest spec: check one raw state, check one step.

Models: the lguest counterpart of spec/stage2/check.py. ``lguest_check_state(raw, coherent=False)``
returns the LG-SHADOW, LG-RC, LG-SWITCHER and LG-BND violations of one "lguest-x86" raw state;
``lguest_check_step(pre, step, post)`` returns the per-step LG-SHADOW and the operation's contract
(LG-C-*). ``lguest_explain(id)`` gives the statement behind an id (from ptspec.spec.statements).
Leaves out: nothing of the invariants; the contracts are in spec/lguest/contracts.py,
contracts_life.py and contracts_ops.py.
"""

from ptspec.spec.lguest.contracts import LG_CONTRACTS as _BASE_CONTRACTS
from ptspec.spec.lguest.contracts import LG_OP_CONTRACT_ID as _BASE_IDS
from ptspec.spec.lguest.contracts import _leaves, per_step_shadow
from ptspec.spec.lguest.contracts_life import LIFE_CONTRACT_ID, LIFE_CONTRACTS
from ptspec.spec.lguest.contracts_ops import OPS_CONTRACT_ID, OPS_CONTRACTS
from ptspec.spec.lguest.invariants import LG_INVARIANTS
from ptspec.spec.lguest.state import LgState, load_lguest_state
from ptspec.spec.lguest.step import load_lguest_step
from ptspec.spec.stage2.state import StateError
from ptspec.spec import statements

LG_CONTRACTS = {**_BASE_CONTRACTS, **LIFE_CONTRACTS, **OPS_CONTRACTS}
LG_OP_CONTRACT_ID = {**_BASE_IDS, **LIFE_CONTRACT_ID, **OPS_CONTRACT_ID}

LG_IDS = tuple(LG_INVARIANTS) + tuple(sorted(set(LG_OP_CONTRACT_ID.values())))


def lguest_check_state(raw, coherent=False):
    """Every lguest invariant of a raw state: a list of Violations (empty when it holds)."""
    st = load_lguest_state(raw)
    out = []
    for name, fn in LG_INVARIANTS.items():
        out.extend(fn(st, coherent) if name == "LG-SHADOW" else fn(st))
    return out


def lguest_check_step(pre, step, post):
    """The two-state checks of one operation: per-step LG-SHADOW and the op's contract. The step
    record is validated first (``spec/lguest/step.py``: a malformed one is a StateError)."""
    step = load_lguest_step(step)
    pre, post = load_lguest_state(pre), load_lguest_state(post)
    if step["op"] == "run" and step["args"]["host_cpu"] >= pre.host_cpus:
        raise StateError(f"step.args.host_cpu: {step['args']['host_cpu']} is not one of the "
                         f"{pre.host_cpus} host CPUs of the state")
    pre_t, post_t = _leaves(pre), _leaves(post)
    out = per_step_shadow(pre, step, post, pre_t, post_t)
    fn = LG_CONTRACTS.get(step["op"])
    if fn is not None:
        out += fn(pre, step, post, pre_t, post_t)
    return out


def lguest_explain(check_id):
    """The statement of an lguest invariant or contract id, from the registry (spec.statements)."""
    st = statements.get(check_id) if check_id in statements.load_all() else None
    if st is None or st.area != "lguest":
        raise KeyError(f"unknown lguest check {check_id!r} (known: {', '.join(LG_IDS)})")
    return st.text()


__all__ = ["LgState", "load_lguest_state", "lguest_check_state", "lguest_check_step",
           "lguest_explain", "LG_IDS"]
