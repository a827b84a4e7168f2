"""One entry point for a raw state of any kind: validate every part, then judge every part.

Models: what ``ptspec check-state`` (and any other reader of a state file) asks of the spec. A raw
state is one of

- ``arm64-stage2``: the stage-2 table (S2-*); with an ``mmu`` part (docs/mmu.md) it is a VM state,
  and the memslots, host mm and dirty logs are judged too (MS, DIRTY, MMU-WARN);
- ``arm64-hyp-s1``: a hyp stage-1 table (S1-*); an ``mmu`` part there is an error;
- ``lguest-x86``: an lguest guest's tables (LG-*).

Every part is validated before anything is judged, so a malformed part is a StateError naming
what is wrong and where (its JSON path), never a part silently left unjudged.

Leaves out: two-state checks (steps: spec.check_step, check_hyp_step, check_mmu_step,
lguest_check_step).
"""

from ptspec.spec.lguest.check import lguest_check_state
from ptspec.spec.lguest.state import LgState, load_lguest_state
from ptspec.spec.mmu.invariants import check_mmu_state, check_mmu_warnings
from ptspec.spec.mmu.state import MmuView
from ptspec.spec.stage2.check import check_state
from ptspec.spec.stage2.state import State, StateError, load_state, show


def check_any(obj):
    """Every single-state statement of a raw state of any kind: a list of Violations.

    Dispatches on ``kind`` and on the presence of ``mmu``; raises StateError (what and where) when
    any part is not well formed. A validated State or LgState is accepted too (its mmu part, if
    any, is then not available: pass the raw dict to judge a VM)."""
    if isinstance(obj, LgState):
        return lguest_check_state(obj)
    if isinstance(obj, State):
        return check_state(obj)
    if not isinstance(obj, dict):
        raise StateError(f"state: expected a JSON object, got {show(obj)}")
    kind = obj.get("kind")
    if kind == "lguest-x86":
        return lguest_check_state(load_lguest_state(obj))
    st = load_state(obj)
    if "mmu" not in obj:
        return check_state(st)
    view = MmuView(obj, s2=st)          # validates the mmu part before anything is judged
    return check_state(st) + check_mmu_state(view) + check_mmu_warnings(view)
