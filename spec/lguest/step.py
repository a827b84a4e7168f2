"""lguest step records (docs/lguest.md): what one hypercall, fault or guest store was asked and answered.

Models: the ``{"op", "args", "ret", "out"}`` record the lguest lock-step hands to
``lguest_check_step`` with a pre- and a post-state, validated as strictly as the stage-2 step
(``spec/stage2/step.py``): a known op, exactly the arguments it takes (integers, or integers
written as hex strings), ``ret`` null, a bool or an integer, ``out`` only the pending-failure
counts ``fail_alloc`` / ``fail_gup``, and no unknown key. A malformed record is a StateError naming
the key at fault by its path (``step.args.vaddr``).

Leaves out: what the operations must do (``spec/lguest/contracts*.py``).
"""

from ptspec.spec.stage2.state import StateError, parse_int, show

U64 = (1 << 64) - 1

# op -> the arguments it takes (the hypercall's, or the fault's / the guest store's)
OPS = {
    "init": (), "set_pte": ("gpgdir", "vaddr", "gpte"), "set_pgd": ("gpgdir", "idx"),
    "set_pmd": ("pmdp", "idx"), "new_pagetable": ("pgtable",), "flush_user": (),
    "clear_all": (), "fault": ("vaddr", "errcode"), "pin": ("vaddr",),
    "set_stack": ("esp", "pages"), "guest_data_init": ("lguest_data",), "pa": ("vaddr",),
    "run": ("host_cpu",), "guest_write": ("addr", "value"), "free": (),
}
OUT_KEYS = ("fail_alloc", "fail_gup")


def _obj(value, where, allowed):
    if not isinstance(value, dict):
        raise StateError(f"{where}: expected an object, got {type(value).__name__} {show(value)}")
    extra = sorted(set(value) - set(allowed), key=str)
    if extra:
        raise StateError(f"{where}.{extra[0]}: unknown key (known: {', '.join(allowed) or 'none'})")
    return value


def load_lguest_step(obj):
    """Validate and normalise an lguest step record; StateError says what and where."""
    obj = _obj(obj, "step", ("op", "args", "ret", "out"))
    op = obj.get("op")
    if type(op) is not str or op not in OPS:
        raise StateError(f"step.op: unknown lguest operation {show(op)} (known: {', '.join(OPS)})")
    names = OPS[op]
    raw = _obj(obj.get("args", {}), "step.args", names)
    args = {}
    for name in names:
        if name not in raw:
            raise StateError(f"step.args.{name}: missing (op {op} takes {', '.join(names) or 'nothing'})")
        args[name] = parse_int(raw[name], f"step.args.{name}", 0, U64)
    ret = obj.get("ret")
    if ret is not None and not isinstance(ret, bool):
        ret = parse_int(ret, "step.ret", -(1 << 63), U64)
    raw_out = _obj({} if obj.get("out") is None else obj["out"], "step.out", OUT_KEYS)
    out = {}
    for k, v in raw_out.items():
        out[k] = v if isinstance(v, bool) else parse_int(v, f"step.out.{k}", 0, U64)
    return {"op": op, "args": args, "ret": ret, "out": out}
