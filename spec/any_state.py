"""One entry point for a raw state of any kind: validate every part, then judge every part.

Models: what ``ptspec check-state`` (and any other reader of a state file) asks of the spec. A raw
state is one of

- ``arm64-stage2``: the stage-2 table (S2-*); with an ``mmu`` part (docs/mmu.md) it is a VM state,
  and the memslots, host mm and dirty logs are judged too (MS, DIRTY, MMU-WARN);
- ``arm64-hyp-s1``: a hyp stage-1 table (S1-*); an ``mmu`` part there is an error;
- ``lguest-x86``: an lguest guest's tables (LG-*).

Every part is validated before anything is judged, so a malformed part is a StateError naming
what is wrong and where (its JSON path), never a part silently left unjudged.

A step file ``{"pre": state, "step": record, "post": state}`` (two states of the same kind and a
step record of that kind: docs/interface.md, docs/mmu.md, docs/lguest.md) is judged as the
lock-steps judge a step: the post-state's single-state statements and the step's two-state ones
(``check_any_step``); a pre-state that breaks an invariant is reported instead ("in pre:"),
since a contract presumes a sound pre-state. Both states and the record are validated first; a
StateError then names the part at fault (``pre.pages``, ``post.mmu.memslots[0].npages``,
``step.args.ipa``).
"""

from ptspec.spec.lguest.check import lguest_check_state, lguest_check_step
from ptspec.spec.lguest.state import LgState, load_lguest_state
from ptspec.spec.mmu.invariants import check_mmu_state, check_mmu_warnings
from ptspec.spec.mmu.state import MmuView
from ptspec.spec.mmu.step import check_vm_step, load_mmu_step
from ptspec.spec.stage2.check import check_hyp_step, check_state, check_step
from ptspec.spec.stage2.step import load_step
from ptspec.spec.lguest.step import load_lguest_step
from ptspec.spec.stage2.state import State, StateError, load_state, show
from ptspec.spec.violation import Violation


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
    if "kind" not in obj and any(k in obj for k in STEP_FILE_KEYS):
        return check_any_step(obj)
    kind = obj.get("kind")
    if kind == "lguest-x86":
        return lguest_check_state(load_lguest_state(obj))
    st = load_state(obj)
    if "mmu" not in obj:
        return check_state(st)
    view = MmuView(obj, s2=st)          # validates the mmu part before anything is judged
    return check_state(st) + check_mmu_state(view) + check_mmu_warnings(view)


STEP_FILE_KEYS = ("pre", "step", "post")


def _part(name, load, raw):
    """``load(raw)``, with a StateError's path prefixed by the part's name."""
    try:
        return load(raw)
    except StateError as exc:
        msg = str(exc)
        if msg.startswith(name):
            raise
        if msg.startswith("state:"):
            raise StateError(f"{name}{msg[len('state'):]}") from None
        raise StateError(f"{name}.{msg}") from None


def _kind(raw, name):
    if not isinstance(raw, dict):
        raise StateError(f"{name}: expected a JSON object (a state), got {show(raw)}")
    return raw.get("kind"), "mmu" in raw


def check_any_step(obj):
    """The statements of one step file ``{"pre", "step", "post"}``: the post-state's single-state
    statements (``check_any``) and the step's two-state statements for the kind (stage 2:
    ``check_step``; hyp stage 1: ``check_hyp_step``; a VM: ``check_vm_step``; lguest:
    ``lguest_check_step``). Raises StateError (what and where) when a part is malformed or the
    two states are not of the same kind."""
    if not isinstance(obj, dict):
        raise StateError(f"step file: expected a JSON object, got {show(obj)}")
    extra = sorted(set(obj) - set(STEP_FILE_KEYS), key=str)
    if extra:
        raise StateError(f"{extra[0]}: unknown key of a step file (it has pre, step, post)")
    for key in STEP_FILE_KEYS:
        if key not in obj:
            raise StateError(f"{key}: missing (a step file has pre, step, post)")
    pre, step, post = obj["pre"], obj["step"], obj["post"]
    kinds = (_kind(pre, "pre"), _kind(post, "post"))
    if kinds[0] != kinds[1]:
        show_kind = [f"{show(k)}{' with an mmu part' if m else ''}" for k, m in kinds]
        raise StateError(f"post: a {show_kind[1]} state after a {show_kind[0]} one (a step "
                         f"keeps the kind)")
    kind, vm = kinds[0]
    if kind == "lguest-x86":
        st = _part("step", load_lguest_step, step)
        pre_s = _part("pre", load_lguest_state, pre)
        post_s = _part("post", load_lguest_state, post)
        return _judged(lguest_check_state(pre_s), lguest_check_state(post_s),
                       lambda: lguest_check_step(pre_s, st, post_s))
    if vm:
        st = _part("step", load_mmu_step, step)
        pre_v, post_v = _part("pre", MmuView, pre), _part("post", MmuView, post)
        return _judged(_vm_state(pre_v), _vm_state(post_v),
                       lambda: check_vm_step(pre_v, st, post_v))
    st = _part("step", load_step, step)
    pre_s, post_s = _part("pre", load_state, pre), _part("post", load_state, post)
    two = check_hyp_step if pre_s.kind == "arm64-hyp-s1" else check_step
    return _judged(check_state(pre_s), check_state(post_s), lambda: two(pre_s, st, post_s))


def _vm_state(view):
    return check_state(view.s2) + check_mmu_state(view) + check_mmu_warnings(view)


def _judged(pre_found, post_found, step_found):
    """A step file's verdict. A contract presumes a pre-state that holds the invariants (the
    lock-steps judged it as the previous post-state): a pre-state that breaks them is reported,
    each violation marked "in pre:", and the step is not judged from it; otherwise the
    post-state's violations and the step's."""
    if pre_found:
        return [Violation(v.inv, f"in pre: {v.message}", dict(v.where)) for v in pre_found]
    return list(post_found) + step_found()
