"""Run the impl's own Python functions on z3 bit-vector terms, forking on every symbolic branch.

This is the machinery behind the ``s2.z3.*`` obligations (DESIGN.md, "Rules that keep results
honest": z3 must check the impl's own code, never a hand-written copy of it).

* ``SymInt`` wraps a z3 bit-vector term and behaves like a Python ``int``: ``& | ^ ~ << >> + -``,
  comparisons. It models Python's unbounded integers exactly: terms are 128-bit two's-complement
  values (``>>`` is arithmetic, comparisons are signed), and every ``+``, ``-`` and ``<<`` adds a side
  condition that it did not overflow 128 bits; a lemma proves those side conditions together with
  its property, so a result is never an artefact of the encoding. Kernel u64 wrap-around is what the
  impl writes explicitly (``& U64``), and is modelled by that mask.
* ``SymBool`` wraps a z3 Boolean. Python asks for a concrete truth value whenever impl code says
  ``if``, ``and``, ``or``, ``not`` or ``bool()``; ``__bool__`` then asks the active ``Explorer``.
* the executor and prover that run impl code on these values are in ``proofs/engines/z3/explore.py``.

Anything the executor cannot represent (a symbolic list index, a symbolic value used as a dict key
or converted with ``int()``) raises ``SymbolicError``: the lemma is then an error, not a pass.
``SymNat`` is the same for exact z3 Int terms (no width), for lemmas about sums and comparisons of
addresses, which bit-blasting handles badly; its bitwise operations take one constant operand.
Left out: division or remainder by anything but a constant (a power of two for ``SymInt``),
multiplication of two symbolic values; the impl functions checked here do not use them.
"""

from __future__ import annotations

import z3

W = 128                                   # width of the terms that stand for Python ints
_SMAX = (1 << (W - 1)) - 1
_SMIN = -(1 << (W - 1))
U64 = (1 << 64) - 1


class SymbolicError(TypeError):
    """impl code did something with a symbolic value that the executor cannot follow."""


_ACTIVE: list = []                 # the running z3_explore.Explorer (innermost last)


def _val(x) -> z3.BitVecRef:
    """The W-bit term of an int, bool or SymInt."""
    if isinstance(x, SymInt):
        return x.e
    if isinstance(x, bool):
        return z3.BitVecVal(int(x), W)
    if isinstance(x, int):
        if not _SMIN <= x <= _SMAX:
            raise SymbolicError(f"constant {x:#x} does not fit the {W}-bit model of Python ints")
        return z3.BitVecVal(x, W)
    raise SymbolicError(f"cannot mix a symbolic integer with {type(x).__name__}")


def _side(cond: z3.BoolRef) -> None:
    """Record a side condition (no overflow of the int model) on the current path."""
    if _ACTIVE:
        _ACTIVE[-1].side.append(cond)
    else:
        raise SymbolicError("symbolic arithmetic outside an Explorer run")


def _wrap(e):
    e = z3.simplify(e)
    if z3.is_bv_value(e):
        v = e.as_signed_long()
        return v
    return SymInt(e)


class SymInt:
    """A symbolic Python int (see the module docstring)."""

    __slots__ = ("e",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, e: z3.BitVecRef):
        if e.size() != W:
            raise SymbolicError(f"a SymInt term must be {W} bits wide")
        self.e = e

    def __repr__(self) -> str:
        return f"SymInt({self.e})"

    # -- bitwise ----------------------------------------------------------------------------
    def __and__(self, o): return _wrap(self.e & _val(o))
    def __rand__(self, o): return _wrap(_val(o) & self.e)
    def __or__(self, o): return _wrap(self.e | _val(o))
    def __ror__(self, o): return _wrap(_val(o) | self.e)
    def __xor__(self, o): return _wrap(self.e ^ _val(o))
    def __rxor__(self, o): return _wrap(_val(o) ^ self.e)
    def __invert__(self): return _wrap(~self.e)

    def __rshift__(self, o):
        if isinstance(o, SymInt):
            _side(z3.And(o.e >= 0, o.e < W))
        elif o < 0:
            raise ValueError("negative shift count")
        return _wrap(self.e >> _val(min(o, W - 1) if isinstance(o, int) else o))

    def __lshift__(self, o):
        if isinstance(o, SymInt):
            _side(z3.And(o.e >= 0, o.e < W))
            r = self.e << o.e
            _side(r >> o.e == self.e)
            return _wrap(r)
        if o < 0:
            raise ValueError("negative shift count")
        if o >= W:
            _side(self.e == 0)
            return _wrap(z3.BitVecVal(0, W))
        r = self.e << o
        _side(r >> o == self.e)
        return _wrap(r)

    def __rlshift__(self, o):
        return SymInt(_val(o)) << self if not isinstance(o, SymInt) else o << self

    def __rrshift__(self, o):
        return SymInt(_val(o)) >> self

    # -- arithmetic -------------------------------------------------------------------------
    def __add__(self, o):
        b = _val(o)
        _side(z3.BVAddNoOverflow(self.e, b, True))
        _side(z3.BVAddNoUnderflow(self.e, b))
        return _wrap(self.e + b)

    def __radd__(self, o):
        return self.__add__(o)

    def __sub__(self, o):
        b = _val(o)
        _side(z3.BVSubNoOverflow(self.e, b))
        _side(z3.BVSubNoUnderflow(self.e, b, True))
        return _wrap(self.e - b)

    def __rsub__(self, o):
        return SymInt(_val(o)) - self

    def __neg__(self):
        return 0 - self

    def __pos__(self):
        return self

    def __mul__(self, o):
        if isinstance(o, SymInt):
            raise SymbolicError("multiplication of two symbolic integers is not modelled")
        b = _val(o)
        _side(z3.BVMulNoOverflow(self.e, b, True))
        _side(z3.BVMulNoUnderflow(self.e, b))
        return _wrap(self.e * b)

    __rmul__ = __mul__

    def __floordiv__(self, o):
        if isinstance(o, SymInt) or o <= 0 or o & (o - 1):
            raise SymbolicError("// is modelled for a constant power of two only")
        return self >> (o.bit_length() - 1)        # floor division, as Python's >> is

    def __mod__(self, o):
        if isinstance(o, SymInt) or o <= 0 or o & (o - 1):
            raise SymbolicError("% is modelled for a constant power of two only")
        return self & (o - 1)                      # Python's % by 2**k: the low bits

    # -- comparisons (signed: Python ints) --------------------------------------------------
    def __lt__(self, o): return SymBool(self.e < _val(o))
    def __le__(self, o): return SymBool(self.e <= _val(o))
    def __gt__(self, o): return SymBool(self.e > _val(o))
    def __ge__(self, o): return SymBool(self.e >= _val(o))
    def __eq__(self, o): return SymBool(self.e == _val(o))    # type: ignore[override]
    def __ne__(self, o): return SymBool(self.e != _val(o))    # type: ignore[override]

    def __bool__(self):
        return decide(self.e != 0)

    # -- what the executor refuses ----------------------------------------------------------
    def __index__(self):
        raise SymbolicError("a symbolic integer was used as an index or converted to int")

    __int__ = __index__


class SymBool:
    """A symbolic Python bool; its truth value is decided by the active Explorer."""

    __slots__ = ("b",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, b: z3.BoolRef):
        self.b = b

    def __repr__(self) -> str:
        return f"SymBool({self.b})"

    def __bool__(self):
        return decide(self.b)

    def __invert__(self):
        return SymBool(z3.Not(self.b))

    def __and__(self, o): return SymBool(z3.And(self.b, as_bool(o)))
    __rand__ = __and__
    def __or__(self, o): return SymBool(z3.Or(self.b, as_bool(o)))
    __ror__ = __or__
    def __eq__(self, o): return SymBool(self.b == as_bool(o))    # type: ignore[override]
    def __ne__(self, o): return SymBool(self.b != as_bool(o))    # type: ignore[override]

    def __index__(self):
        raise SymbolicError("a symbolic bool was used as an index or converted to int")


def _ival(x) -> z3.ArithRef:
    """The Int term of an int, bool or SymNat."""
    if isinstance(x, SymNat):
        return x.e
    if isinstance(x, SymInt):
        raise SymbolicError("cannot mix a bit-vector SymInt with an Int SymNat")
    if isinstance(x, (bool, int)):
        return z3.IntVal(int(x))
    raise SymbolicError(f"cannot mix a symbolic integer with {type(x).__name__}")


def _iwrap(e):
    e = z3.simplify(e)
    if z3.is_int_value(e):
        return e.as_long()
    return SymNat(e)


def _runs(c: int):
    """The runs of one bits of a non-negative constant, as (lo, hi_exclusive) pairs."""
    out, i = [], 0
    while c >> i:
        if c >> i & 1:
            j = i
            while c >> j & 1:
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def _and_const(x: z3.ArithRef, c: int) -> z3.ArithRef:
    """x & c for an integer term x and a constant c, exactly as Python computes it."""
    if c < 0:
        return x - _and_const(x, ~c)            # x & c == x - (x & ~c) when ~c >= 0
    terms = [(x % (1 << hi)) - (x % (1 << lo)) if lo else x % (1 << hi) for lo, hi in _runs(c)]
    return z3.Sum(*terms) if terms else z3.IntVal(0)


class SymNat(SymInt):
    """A symbolic Python int as a z3 Int (exact, no width): for lemmas whose arithmetic (sums and
    comparisons of addresses) bit-blasting handles badly. Bitwise operations need one constant
    operand (masks, shifts by constants); anything else raises SymbolicError."""

    __slots__ = ()

    def __init__(self, e: z3.ArithRef):
        if not z3.is_int(e):
            raise SymbolicError("a SymNat term must be an Int")
        self.e = e

    def __repr__(self) -> str:
        return f"SymNat({self.e})"

    def _const(self, o, what) -> int:
        if isinstance(o, SymInt):
            raise SymbolicError(f"{what} of two symbolic integers needs the bit-vector model")
        return int(o)

    def __and__(self, o): return _iwrap(_and_const(self.e, self._const(o, "&")))
    __rand__ = __and__

    def __or__(self, o):
        c = self._const(o, "|")
        return _iwrap(self.e + c - _and_const(self.e, c))
    __ror__ = __or__

    def __xor__(self, o):
        c = self._const(o, "^")
        return _iwrap(self.e + c - 2 * _and_const(self.e, c))
    __rxor__ = __xor__

    def __invert__(self): return _iwrap(-self.e - 1)

    def __rshift__(self, o):
        k = self._const(o, ">>")
        if k < 0:
            raise ValueError("negative shift count")
        return _iwrap(self.e / (1 << k))          # z3 Int division floors for a positive divisor

    def __lshift__(self, o):
        k = self._const(o, "<<")
        if k < 0:
            raise ValueError("negative shift count")
        return _iwrap(self.e * (1 << k))

    def __rlshift__(self, o):
        raise SymbolicError("a shift by a symbolic amount needs the bit-vector model")

    __rrshift__ = __rlshift__

    def __add__(self, o): return _iwrap(self.e + _ival(o))
    __radd__ = __add__
    def __sub__(self, o): return _iwrap(self.e - _ival(o))
    def __rsub__(self, o): return _iwrap(_ival(o) - self.e)
    def __mul__(self, o): return _iwrap(self.e * self._const(o, "*"))
    __rmul__ = __mul__

    def __floordiv__(self, o):
        c = self._const(o, "//")
        if c <= 0:
            raise SymbolicError("// is modelled for a positive constant only")
        return _iwrap(self.e / c)                  # z3 Int division floors for c > 0

    def __mod__(self, o):
        c = self._const(o, "%")
        if c <= 0:
            raise SymbolicError("% is modelled for a positive constant only")
        return _iwrap(self.e % c)

    def __lt__(self, o): return SymBool(self.e < _ival(o))
    def __le__(self, o): return SymBool(self.e <= _ival(o))
    def __gt__(self, o): return SymBool(self.e > _ival(o))
    def __ge__(self, o): return SymBool(self.e >= _ival(o))
    def __eq__(self, o): return SymBool(self.e == _ival(o))    # type: ignore[override]
    def __ne__(self, o): return SymBool(self.e != _ival(o))    # type: ignore[override]


class Inputs(dict):
    """Named symbolic inputs; for Int inputs also their ranges (0 <= x < 2**bits)."""

    def __init__(self):
        super().__init__()
        self.ranges: list = []


def nat(name: str, bits: int, inputs: Inputs) -> SymNat:
    """A fresh unsigned input of `bits` bits as an exact Int (SymNat), recorded in `inputs`."""
    v = z3.Int(name)
    inputs[name] = v
    inputs.ranges += [v >= 0, v < (1 << bits)]
    return SymNat(v)


def as_bool(x) -> z3.BoolRef:
    """The z3 Boolean of a bool, SymBool, or int/SymInt (non-zero is true)."""
    if isinstance(x, SymBool):
        return x.b
    if isinstance(x, bool):
        return z3.BoolVal(x)
    if isinstance(x, SymInt):
        return x.e != 0
    if isinstance(x, int):
        return _val(x) != 0
    if isinstance(x, z3.BoolRef):
        return x
    raise SymbolicError(f"cannot read {type(x).__name__} as a Boolean")


def as_bv(x) -> z3.BitVecRef:
    """The W-bit term of an int or SymInt (a bool counts as 0/1)."""
    if isinstance(x, SymBool):
        return z3.If(x.b, z3.BitVecVal(1, W), z3.BitVecVal(0, W))
    if isinstance(x, SymInt):
        return x.e
    return _val(x)


def decide(b: z3.BoolRef) -> bool:
    if not _ACTIVE:
        raise SymbolicError("a symbolic condition was evaluated outside an Explorer run")
    return _ACTIVE[-1].decide(b)


def sym(name: str, bits: int = 64, inputs: dict | None = None) -> SymInt:
    """A fresh unsigned input of `bits` bits (0 <= x < 2**bits) as a SymInt; recorded in `inputs`."""
    v = z3.BitVec(name, bits)
    if inputs is not None:
        inputs[name] = v
    return SymInt(z3.ZeroExt(W - bits, v) if bits < W else v)


def ite(c, a, b):
    """A symbolic value that is a when c else b, without forking (for building spec-side values)."""
    return _wrap(z3.If(as_bool(c), as_bv(a), as_bv(b)))
