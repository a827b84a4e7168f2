"""The JSON values of a raw state or step record, read with one-line errors.

Models: the value rules of docs/interface.md shared by every loader (stage 2, hyp stage 1, step
records, and the mmu and lguest parts that reuse them): an integer is a JSON integer or one written
as a string in decimal or 0x-hex (ASCII digits, an optional leading '-', no spaces, no '_', at most
MAX_INT_TEXT characters; never a bool or a float), within the bounds the caller gives; a bool is
true or false; a list is a list. Anything else raises StateError naming where and what, with the
offending value rendered short and safe (``show``: bounded in length and depth, never failing).

Leaves out: what the values mean (ptspec.spec.stage2.state and the other loaders).
"""


class StateError(ValueError):
    """The input is not a well-formed raw state or step record; the message says what and where."""


MAX_INT_TEXT = 80          # characters of an integer written as a string: a u64 in decimal is 20
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_DEC_DIGITS = frozenset("0123456789")


def show(value, limit=60):
    """A short, safe rendering of any JSON value for an error message: bounded in length and depth,
    and never fails (a huge integer is named by its size, deep nesting is cut)."""
    if type(value) is int and value.bit_length() > 128:
        return f"<a {value.bit_length()}-bit integer>"
    if isinstance(value, (list, tuple)):
        return f"<a list of {len(value)}>" if value else "[]"
    if isinstance(value, dict):
        return f"<an object of {len(value)} key(s)>" if value else "{}"
    try:
        text = repr(value)
    except Exception:                      # noqa: BLE001 -- a message must never fail
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _int_text(text):
    """The int a string spells: decimal or 0x-hex, ASCII digits only, optional leading '-', no
    spaces, no '_', at most MAX_INT_TEXT characters; None when it spells none."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_INT_TEXT or not text.isascii():
        return None
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text)
    if body[:2] in ("0x", "0X"):
        digits, base, allowed = body[2:], 16, _HEX_DIGITS
    else:
        digits, base, allowed = body, 10, _DEC_DIGITS
    if not digits or not set(digits) <= allowed:
        return None
    return sign * int(digits, base)


def parse_int(value, where, lo=None, hi=None):
    """An int from an int or an int written as a string ("0x1f", "31"); bools, floats, spaces,
    '_' and non-ASCII digits are rejected."""
    if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value
    if (type(value) is str and value.isdigit() and value.isascii()
            and len(value) <= MAX_INT_TEXT):           # plain ASCII decimal: what _int_text reads
        n = int(value)
        if (lo is None or n >= lo) and (hi is None or n <= hi):
            return n
    if isinstance(value, bool):
        raise StateError(f"{where}: expected an integer, got {value!r}")
    if type(value) is int:
        n = value
    elif isinstance(value, str):
        n = _int_text(value)
        if n is None:
            raise StateError(f"{where}: expected an integer or hex string, got {show(value)}")
    else:
        raise StateError(f"{where}: expected an integer, got {_type_name(value)} {show(value)}")
    if lo is not None and n < lo:
        raise StateError(f"{where}: {_num(n, lo)} is below {_num(lo, lo)}")
    if hi is not None and n > hi:
        raise StateError(f"{where}: {_num(n, hi)} is above {_num(hi, hi)}")
    return n


def _type_name(value):
    """The Python name of a value's type (list, dict, str, float, NoneType)."""
    return type(value).__name__


def _num(n, bound):
    """Addresses and descriptors in hex, small counts and sizes in decimal; a huge n by its size."""
    if n.bit_length() > 128:
        return show(n)
    return f"{n:#x}" if bound >= 1 << 16 else str(n)


def _parse_bool(value, where):
    if not isinstance(value, bool):
        raise StateError(f"{where}: expected true or false, got {show(value)}")
    return value


def _parse_list(value, where):
    if not isinstance(value, (list, tuple)):
        raise StateError(f"{where}: expected a list, got {_type_name(value)}")
    return value
