"""Calls into a kernel tree's C code that always come back (the shim's ``kdiff_guarded_call``).

A tree under review can hold a loop that never ends or a bad pointer. Called plainly through
ctypes, the first hangs the check for good (Python's hang guard cannot interrupt C code) and the
second kills the process with SIGSEGV: no verdict, no report. Every library function that runs
the kernel's code (``kvm_pgtable_*`` and the shim's wrappers around them, ``RUNS_KERNEL_CODE``)
is therefore bound through ``bind``: it runs under a budget of CPU time (``CALL_CPU_SECONDS``,
not wall-clock: a busy machine does not shorten it) with the fault signals caught, and a call that
does not return in budget, or faults, raises ``SubjectFault`` naming the call, its arguments and
the signal. The harnesses turn that into a C-RETURNS violation with the operation sequence that
led there (spec/stage2/calls.py).

The budget: the kernel's operations here take microseconds to a few milliseconds (the largest
measured, a whole-range map on 64K pages, about 20 ms of CPU); a call still running after
``CALL_CPU_SECONDS`` of its own CPU time is hundreds of times past that, so a slower machine
gives the same verdict.

The accessors (arena, log, refcounts, reset) are our own code and run unguarded: a guarded call
costs about 3 us more than a plain one.
"""

from __future__ import annotations

import ctypes
import signal

from ptspec.proofs.runner import budgets
from ptspec.proofs.stage2 import returns
from ptspec.proofs.stage2.harness import SubjectFault

CALL_CPU_SECONDS = budgets.CALL_CPU_SECONDS   # (a module name: tests shorten it)
NULL_PAGE = 1 << 16         # a fault below this address is a NULL pointer plus a field offset
U64 = (1 << 64) - 1

# the shim's functions that call into pgtable.c (besides every kvm_pgtable_* entry point)
RUNS_KERNEL_CODE = frozenset((
    "kdiff_init", "kdiff_get_leaf", "kdiff_hyp_init", "kdiff_ml_init", "kdiff_ml_map",
    "kdiff_ml_set_owner", "kdiff_ml_mkyoung", "kdiff_ml_mkold", "kdiff_ml_is_young",
    "kdiff_ml_test_clear_young", "kdiff_ml_split", "kdiff_ml_relax_perms", "kdiff_ml_annotate",
))


def runs_kernel_code(name: str) -> bool:
    return name.startswith("kvm_pgtable_") or name in RUNS_KERNEL_CODE


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _word(value, argtype) -> int:
    """One argument as the u64 word the trampoline passes (what ctypes would pass for it)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value & U64
    if isinstance(value, ctypes._SimpleCData):
        return (value.value or 0) & U64
    obj = getattr(value, "_obj", None)          # ctypes.byref(x)
    if obj is not None:
        return ctypes.addressof(obj)
    if isinstance(value, (ctypes.Array, ctypes.Structure)):
        return ctypes.addressof(value)
    raise ctypes.ArgumentError(f"argument of type {type(value).__name__} for a "
                               f"{getattr(argtype, '__name__', argtype)} parameter")


def _result(word: int, restype):
    """The u64 the trampoline returned, read as the function's declared result type."""
    if restype is None:
        return None
    if restype is ctypes.c_bool:
        return bool(word & 0xFF)
    if restype is ctypes.c_void_p:
        return word or None
    size = ctypes.sizeof(restype) * 8
    word &= (1 << size) - 1
    if restype in (ctypes.c_int, ctypes.c_int32, ctypes.c_int8, ctypes.c_int16, ctypes.c_int64,
                   ctypes.c_long) and word >> (size - 1):
        word -= 1 << size
    return word


class GuardedCall:
    """A library function called through ``kdiff_guarded_call``: the same arguments and result
    as the plain ctypes function; raises SubjectFault when the call does not come back."""

    __slots__ = ("name", "address", "restype", "argtypes", "_call", "_args", "_status", "_trap")

    def __init__(self, lib, name: str, restype, argtypes):
        raw = lib[name]                          # a fresh function pointer (no attribute cache)
        self.name, self.restype, self.argtypes = name, restype, list(argtypes)
        self.address = ctypes.cast(raw, ctypes.c_void_p).value
        tramp = lib["kdiff_guarded_call"]
        tramp.restype = ctypes.c_uint64
        tramp.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64,
                          ctypes.POINTER(ctypes.c_uint64)]
        self._call = tramp
        try:                                     # the shim's trap window (kdiff_rt.c)
            self._trap = lib["kdiff_trap_pa"]
            self._trap.restype, self._trap.argtypes = ctypes.c_uint64, [ctypes.c_uint64]
        except AttributeError:
            self._trap = None
        self._args = (ctypes.c_uint64 * 8)()
        self._status = (ctypes.c_uint64 * 2)()

    def __call__(self, *args):
        if len(args) != len(self.argtypes):
            raise TypeError(f"{self.name} takes {len(self.argtypes)} arguments "
                            f"({len(args)} given)")
        words = self._args
        try:                            # the common case: every argument a Python int
            words[:len(args)] = [v & U64 for v in args]
        except TypeError:
            for i, (v, t) in enumerate(zip(args, self.argtypes)):
                words[i] = _word(v, t)
        status = self._status
        ret = self._call(self.address, words, int(CALL_CPU_SECONDS * 1e6), status)
        if status[0]:
            raise SubjectFault(self._describe(int(status[0]), int(status[1])))
        return _result(ret, self.restype)

    def _describe(self, sig: int, addr: int) -> str:
        """What became of the call (its arguments are the step's, shown with it; host pointers
        such as the table's address would differ from run to run)."""
        call = self.name
        if sig == signal.SIGPROF:
            return returns.overrun(call, CALL_CPU_SECONDS)
        where = ""
        if sig in (signal.SIGSEGV, signal.SIGBUS):       # a host address varies from run to run
            pa = self._trap(addr) if self._trap is not None else U64
            if pa != U64:
                where = f" at PA {pa:#x}, outside the page-table memory the allocator handed out"
            else:
                where = (f" at address {addr:#x} (a NULL pointer)" if addr < NULL_PAGE
                         else " at a host address (a wild pointer)")
        return f"{call} faulted: {_signal_name(sig)}{where}"


def bind(lib, sigs: dict) -> None:
    """Declare ``sigs`` ({name: (restype, argtypes)}) on ``lib``: functions that run the kernel's
    code become GuardedCalls (``lib.name`` is then the guarded one); the rest get their ctypes
    types. A name the library lacks is skipped (an entry point of other versions)."""
    for name, (res, args) in sigs.items():
        try:
            fn = lib[name]
        except AttributeError:
            continue
        if runs_kernel_code(name) and hasattr(lib, "kdiff_guarded_call"):
            setattr(lib, name, GuardedCall(lib, name, res, args))
        else:
            fn.restype, fn.argtypes = res, args
            setattr(lib, name, fn)
