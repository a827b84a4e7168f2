"""Step records (docs/interface.md): what one page-table operation was asked to do and returned.

Models: the ``{"op", "args", "ret", "out"}`` record the lock-step checker passes with a pre- and a
post-state, validated and normalised (hex strings to ints), and the range an operation walks: the
kernel's ``kvm_pgtable_walk`` aligns the start down to a page and the end up to a page, modulo 2**64,
and refuses (-ERANGE) a start or end above 2**ia_bits, then (-EINVAL) a table without a root.

Leaves out: what the operations must do (spec.contracts_*).
"""

import errno
from dataclasses import dataclass, field

from ptspec.spec.stage2.state import StateError, parse_int, show, U64_LIMIT

EINVAL, ERANGE, ENOMEM, EAGAIN = -errno.EINVAL, -errno.ERANGE, -errno.ENOMEM, -errno.EAGAIN
U64 = U64_LIMIT - 1

# op -> integer arguments it takes (force_pte, a bool, is handled apart)
OP_ARGS = {
    "init": (),
    "map": ("addr", "size", "phys", "prot"),
    "set_owner": ("addr", "size", "owner_id"),
    "unmap": ("addr", "size"),
    "wrprotect": ("addr", "size"),
    "mkyoung": ("addr",),
    "mkold": ("addr",),
    "is_young": ("addr",),
    "relax_perms": ("addr", "prot"),
    "flush": ("addr", "size"),
    "get_leaf": ("addr",),
    "destroy": (),
    # the reworked walker's operations (spec/stage2/mainline.py)
    "test_clear_young": ("addr", "size", "mkold"),
    "split": ("addr", "size"),
    "annotate": ("addr", "size", "type", "annotation"),       # 7.1 on (contracts_map.contract_annotate)
}

ERRNO_NAMES = {0: "0", EINVAL: "-EINVAL", ERANGE: "-ERANGE", ENOMEM: "-ENOMEM", EAGAIN: "-EAGAIN"}


def ret_name(ret):
    """-EINVAL, -ENOMEM ... or the number."""
    return ERRNO_NAMES.get(ret, str(ret))


@dataclass
class Step:
    """A validated step record."""
    op: str
    args: dict
    ret: int
    out: dict = field(default_factory=dict)

    def describe(self):
        """The step as a call, addresses in hex: map(addr=0x1000, size=0x2000, ...) -> -ENOMEM."""
        parts = ", ".join(f"{k}={v:#x}" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={v}"
                          for k, v in self.args.items())
        return f"{self.op}({parts}) -> {ret_name(self.ret)}"


def load_step(obj):
    """Validate and normalise a step record; a Step is returned unchanged."""
    if isinstance(obj, Step):
        return obj
    if not isinstance(obj, dict):
        raise StateError(f"step: expected an object, got {type(obj).__name__}")
    op = obj.get("op")
    if type(op) is not str or op not in OP_ARGS:
        raise StateError(f"step.op: unknown operation {show(op)} (known: {', '.join(OP_ARGS)})")
    raw_args = obj.get("args", {})
    if not isinstance(raw_args, dict):
        raise StateError(f"step.args: expected an object, got {type(raw_args).__name__}")
    args = {}
    for name in OP_ARGS[op]:
        if name not in raw_args:
            raise StateError(f"step.args.{name}: missing (op {op} takes {', '.join(OP_ARGS[op])})")
        args[name] = parse_int(raw_args[name], f"step.args.{name}", 0, U64)
    if op == "map":
        fp = raw_args.get("force_pte", False)
        if not isinstance(fp, bool):
            raise StateError(f"step.args.force_pte: expected true or false, got {show(fp)}")
        args["force_pte"] = fp
    if "ret" not in obj:
        raise StateError("step.ret: missing")
    ret = parse_int(obj["ret"], "step.ret", -4095, U64)
    raw_out = obj.get("out") or {}
    if not isinstance(raw_out, dict):
        raise StateError(f"step.out: expected an object, got {type(raw_out).__name__}")
    out = {}
    for key, value in raw_out.items():
        if key == "warnings":          # the WARN_ONs the step raised (hyp stage 1: C-HYP-WARN)
            if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
                raise StateError(f"step.out.warnings: expected a list of strings, got {show(value)}")
            out[key] = tuple(value)
        elif key == "young":
            if not isinstance(value, bool):
                raise StateError(f"step.out.young: expected true or false, got {show(value)}")
            out[key] = value
        else:
            out[key] = parse_int(value, f"step.out.{key}", 0, U64)
    return Step(op, args, ret, out)


def walked_range(addr, size, page_shift):
    """[A, E) as kvm_pgtable_walk computes it: start aligned down, end page-aligned up, modulo 2**64."""
    page = 1 << page_shift
    a = addr & ~(page - 1) & U64
    e = (a + size + page - 1) & ~(page - 1) & U64
    return a, e


def walk_error(state, a, e):
    """The error kvm_pgtable_walk returns before visiting anything, or None.

    -ERANGE when the start or the end lies above 2**ia_bits (checked first), -EINVAL when the table
    has no root.
    """
    limit = 1 << state.ia_bits
    if a > limit or e > limit:
        return ERANGE
    if not state.roots:
        return EINVAL
    return None
