"""VM step records (docs/mmu.md): what one mmu.c-level operation of a VM was asked and answered.

Models: the ``{"op", "args", "ret", "out", "dic"}`` record the VM lock-step hands to
``check_mmu_step`` with a pre- and a post-state, validated as strictly as the stage-2 step
(``spec/stage2/step.py``): a known op, every argument it takes present with the right type and
range, no unknown key anywhere, ``ret`` and ``out`` of the op's shape; integers may be written as
hex strings. A malformed record is a StateError naming the key at fault by its path
(``step.args.ipa``); the returned record is a plain dict with ints, bools and strings only.

``check_vm_step(pre, step, post)`` judges one VM step from raw states: the step's mmu contract and
C-MMU-CMO (``check_mmu_step``) and S2-BBM with the whole mmu.c operation as the step.

Leaves out: the hyp private-VA allocator's record (``spec/mmu/hyp_va.py``), which is no VM step.
"""

from ptspec.spec.stage2.state import StateError, parse_int, show

U64 = (1 << 64) - 1
MAX_RANGE = 1 << 52            # no IPA space and no host range is larger
KINDS = ("read", "write", "exec", "s1ptw", "cm")
RESULTS = ("done", "mmio", "pabt", "dabt", "vabt", "skip", "error", "stuck")
RACES = ("split_thp", "zap", "ksm_merge")

# op -> (required integer args, optional args, ret kind, out keys)
#   ret kind: "int" (0 / -errno), "count" (an int), "bool", "none", "result" (an access result)
OPS = {
    "set_memory_region": (("slot", "flags", "guest_phys_addr", "memory_size", "userspace_addr"),
                          (), "int", ()),
    "access": (("ipa",), ("kind", "race", "races", "enomem"), "result",
               ("result", "errno", "faults")),
    "split_thp": (("hva",), (), "bool", ("invalidated",)),
    "ksm": (("hva",), (), "bool", ("invalidated",)),
    "zap": (("hva", "size"), (), "none", ("invalidated",)),
    "age": (("hva", "start", "end"), (), "bool", ()),
    "test_age": (("hva", "start", "end"), (), "bool", ()),
    "get_dirty_log": (("slot",), (), "count", ("cleared",)),
    "clear_dirty_log": (("slot", "first", "num"), (), "count", ("cleared",)),
    "ioremap": (("ipa", "pa", "size"), ("writable",), "int", ()),
    "unmap_vm": ((), (), "none", ()),
}
# integer args with a smaller range than u64
_RANGES = {"slot": (0, (1 << 32) - 1), "flags": (0, (1 << 32) - 1), "races": (0, 1 << 16),
           "first": (0, U64), "num": (0, U64), "size": (0, MAX_RANGE),
           "memory_size": (0, MAX_RANGE)}


def _keys(obj, where, allowed):
    if not isinstance(obj, dict):
        raise StateError(f"{where}: expected an object, got {type(obj).__name__} {show(obj)}")
    extra = sorted(set(obj) - set(allowed), key=str)
    if extra:
        raise StateError(f"{where}.{extra[0]}: unknown key (known: {', '.join(allowed) or 'none'})")
    return obj


def _bool(value, where):
    if not isinstance(value, bool):
        raise StateError(f"{where}: expected true or false, got {show(value)}")
    return value


def _int(value, where, name=None):
    lo, hi = _RANGES.get(name, (0, U64))
    return parse_int(value, where, lo, hi)


def _pair(value, where):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise StateError(f"{where}: expected [lo, hi], got {show(value)}")
    lo, hi = (parse_int(v, f"{where}[{i}]", 0, U64) for i, v in enumerate(value))
    if lo > hi:
        raise StateError(f"{where}: lo {lo:#x} is above hi {hi:#x}")
    return [lo, hi]


def _args(op, raw):
    required, optional, _, _ = OPS[op]
    raw = _keys(raw, "step.args", required + optional)
    args = {}
    for name in required:
        if name not in raw:
            raise StateError(f"step.args.{name}: missing (op {op} takes "
                             f"{', '.join(required + optional)})")
        args[name] = _int(raw[name], f"step.args.{name}", name)
    for name in optional:
        if name not in raw:
            continue
        v, where = raw[name], f"step.args.{name}"
        if name == "kind":
            if v not in KINDS:
                raise StateError(f"{where}: expected one of {', '.join(KINDS)}, got {show(v)}")
            args[name] = v
        elif name in ("enomem", "writable"):
            args[name] = _bool(v, where)
        elif name == "race":
            if not isinstance(v, (list, tuple)) or len(v) != 2 or v[0] not in RACES:
                raise StateError(f"{where}: expected [event, hva] with event one of "
                                 f"{', '.join(RACES)}, got {show(v)}")
            args[name] = [v[0], parse_int(v[1], f"{where}[1]", 0, U64)]
        else:
            args[name] = _int(v, where, name)
    if op == "access" and "kind" not in args:
        raise StateError(f"step.args.kind: missing (op access takes {', '.join(required + optional)})")
    if op == "ioremap" and "writable" not in args:
        raise StateError("step.args.writable: missing (op ioremap takes ipa, pa, size, writable)")
    if "start" in args and args["start"] > args["end"]:
        raise StateError(f"step.args.start: {args['start']:#x} is above step.args.end "
                         f"{args['end']:#x}")
    return args


def _ret(op, v):
    kind = OPS[op][2]
    if kind == "none":
        if v is not None:
            raise StateError(f"step.ret: op {op} returns nothing (null), got {show(v)}")
        return None
    if kind == "bool":
        return _bool(v, "step.ret")
    if kind == "result":
        if v not in RESULTS:
            raise StateError(f"step.ret: expected one of {', '.join(RESULTS)}, got {show(v)}")
        return v
    return parse_int(v, "step.ret", -4095, U64)


def _faults(v):
    if not isinstance(v, (list, tuple)):
        raise StateError(f"step.out.faults: expected a list, got {show(v)}")
    out = []
    for i, f in enumerate(v):
        where = f"step.out.faults[{i}]"
        if not isinstance(f, (list, tuple)) or len(f) != 4:
            raise StateError(f"{where}: expected [fsc, level, write, ret], got {show(f)}")
        out.append([parse_int(f[0], f"{where}[0]", 0, 0x3F), parse_int(f[1], f"{where}[1]", -1, 3),
                    _bool(f[2], f"{where}[2]"), parse_int(f[3], f"{where}[3]", -4095, U64)])
    return out


def _out(op, raw):
    keys = OPS[op][3]
    raw = _keys({} if raw is None else raw, "step.out", keys)
    out = {}
    for k, v in raw.items():
        where = f"step.out.{k}"
        if k == "result":
            if v not in RESULTS:
                raise StateError(f"{where}: expected one of {', '.join(RESULTS)}, got {show(v)}")
            out[k] = v
        elif k == "errno":
            out[k] = parse_int(v, where, -4095, 0)
        elif k == "faults":
            out[k] = _faults(v)
        elif k == "invalidated":
            out[k] = None if v is None else _pair(v, where)
        else:                                   # cleared: a dirty-bitmap mask
            out[k] = parse_int(v, where, 0)
    if op == "access":
        for k in keys:
            if k not in out:
                raise StateError(f"step.out.{k}: missing (an access's out is "
                                 f"{{result, errno, faults}})")
    return out


def load_mmu_step(obj):
    """Validate and normalise a VM step record (docs/mmu.md); StateError says what and where."""
    obj = _keys(obj, "step", ("op", "args", "ret", "out", "dic"))
    op = obj.get("op")
    if type(op) is not str or op not in OPS:
        raise StateError(f"step.op: unknown VM operation {show(op)} (known: {', '.join(OPS)})")
    step = {"op": op, "args": _args(op, obj.get("args", {})),
            "ret": _ret(op, obj.get("ret")), "out": _out(op, obj.get("out"))}
    if "dic" in obj:
        step["dic"] = _bool(obj["dic"], "step.dic")
    return step


class _VmOp:
    """What S2-BBM reads of a VM step: its op, with no caller-flushes exemption (the whole mmu.c
    operation, its own TLB invalidations included, is the step)."""

    def __init__(self, op):
        self.op = f"vm:{op}"


def check_vm_step(pre, step, post):
    """The two-state statements of one VM step, from raw states (or MmuViews): the op's contract,
    C-MMU-CMO and S2-BBM over the whole operation. The record is validated first."""
    from ptspec.spec.mmu.contracts import check_mmu_step
    from ptspec.spec.mmu.state import MmuView
    from ptspec.spec.stage2.bbm import check_bbm
    step = load_mmu_step(step)
    pre = pre if isinstance(pre, MmuView) else MmuView(pre)
    post = post if isinstance(post, MmuView) else MmuView(post)
    return check_mmu_step(pre, step, post) + check_bbm(pre.s2, _VmOp(step["op"]), post.s2)
