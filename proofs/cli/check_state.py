"""`ptspec check-state FILE`: read a raw state (or a step file), hand it to spec.check_any, print the verdict.

Exit 0 no violation, 1 a violation (one line each on stdout, starting with the statement's id), 2
when the file cannot be read or is not a state: then exactly one line on stderr saying what is wrong
and where (a JSON path, or a line and column of the file). The reader refuses what Python's json
module would accept only at a cost or not at all: nesting deeper than MAX_DEPTH, an integer literal
longer than MAX_INT_DIGITS digits, NaN and Infinity. The spec's own loaders validate the rest; an
exception other than StateError escaping them is reported as an internal error, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

MAX_DEPTH = 200            # a raw state is at most ~6 levels deep
MAX_INT_DIGITS = 40        # a u64 is 20 decimal digits


class ReadError(Exception):
    """The input is not JSON we read: the message says what and where."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ReadError(f"an integer literal of {len(text)} characters (more than {MAX_INT_DIGITS} "
                        f"digits; a state's integers are at most 64 bits)")
    return int(text)


def _parse_constant(name: str):
    raise ReadError(f"{name} is not a JSON number")


def _depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside strings (linear scan)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json(text: str):
    """The JSON value of text; ReadError (what and where) when it is not one we accept."""
    if _depth(text) > MAX_DEPTH:
        raise ReadError(f"nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise ReadError(f"not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ReadError("nested too deeply to read") from None


def read_text(name: str) -> str:
    """The text of a file, or of stdin for '-'; ReadError when it cannot be read."""
    try:
        if name == "-":
            if sys.stdin is None or sys.stdin.closed:
                raise ReadError("cannot be read: it is closed")
            data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        else:
            with open(name, "rb") as f:
                data = f.read()
        return data.decode("utf-8") if isinstance(data, bytes) else data
    except ReadError:
        raise
    except UnicodeDecodeError as exc:
        raise ReadError(f"not UTF-8 text: byte {exc.start}: {exc.reason}") from None
    except (OSError, ValueError) as exc:     # ValueError: I/O on a closed file
        raise ReadError(f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def run(name: str, print_line: Callable[[str], None]) -> int:
    """check-state on one file: the exit status; violations through print_line, the verdict and
    errors on stderr."""
    shown = "standard input" if name == "-" else name
    try:
        obj = parse_json(read_text(name))
    except ReadError as exc:
        return _fail(f"{shown}: {exc}")
    try:
        from ptspec import spec
        check_any, state_error = spec.check_any, spec.StateError
    except Exception as exc:                  # noqa: BLE001 -- reported, exit 2
        return _fail(f"internal error in importing ptspec.spec: {_summary(exc)}")
    try:
        violations = check_any(obj)
    except state_error as exc:
        what = ("step file" if isinstance(obj, dict) and "kind" not in obj
                and any(k in obj for k in ("pre", "step", "post")) else "state")
        return _fail(f"{shown} is not a valid {what}: {exc}")
    except RecursionError as exc:
        return _fail(f"internal error in spec.check_any on {shown}: {_summary(exc)}")
    except Exception as exc:                  # noqa: BLE001 -- the last resort: never a traceback
        return _fail(f"internal error in spec.check_any on {shown}: {_summary(exc)}")
    for v in violations:
        print_line(str(v))
    print(f"{shown}: {len(violations)} violation(s)" if violations else f"{shown}: no violation",
          file=sys.stderr)
    return 1 if violations else 0


def _summary(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _fail(line: str) -> int:
    print(f"ptspec check-state: {line}", file=sys.stderr)
    return 2
