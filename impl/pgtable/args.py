"""Argument checks for the public entry points of impl/pgtable and impl/mmu: Python misuse is refused.

Models nothing of the kernel. A kernel function takes C values (a ``u64``, a ``u32``, a ``bool``,
a pointer to a memcache of its own VM); a Python caller can pass anything. Each helper here takes
the argument's name and value, returns the value unchanged when it is one the kernel could be given,
and otherwise raises -- before the caller has changed anything, because every entry point calls
these first:

* ``ArgTypeError`` (a ``TypeError`` that is also a ``ValueError``, so the project's long-standing
  "impl refuses misuse with ValueError" still holds for a caller catching either) for a value of the
  wrong Python type: a float, a string, None, or a bool where an integer is wanted;
* ``ValueError`` for an integer outside the C type (negative, ``>= 2**64`` for a u64), a page shift
  that is not 12, 14 or 16, a count that is not positive.

A value the kernel accepts and answers with an errno is *not* refused here: that is the kernel's
path, and impl returns the kernel's errno.

Each entry point rebinds its argument to the helper's result (``addr = u64("addr", addr)``): such a
statement adds no mutation site to the entry point (proofs/mutation/mutate.py), so the ids of its
explained surviving mutants keep their meaning.
"""

from __future__ import annotations

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
PAGE_SHIFTS = (12, 14, 16)


class ArgTypeError(TypeError, ValueError):
    """An argument of the wrong Python type (a TypeError; a ValueError for older callers)."""


def integer(name: str, value) -> int:
    """An int that is not a bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgTypeError(f"{name} must be an integer, not {type(value).__name__} ({value!r})")
    return value


def _unsigned(name: str, value, top: int, ctype: str) -> int:
    integer(name, value)
    if not 0 <= value <= top:
        raise ValueError(f"{name} = {value:#x} is not a {ctype} (0 <= {name} <= {top:#x})")
    return value


def u64(name: str, value) -> int:
    """A C u64 (phys_addr_t, unsigned long, size_t on arm64)."""
    return _unsigned(name, value, U64, "u64")


def optional_u64(name: str, value):
    """None (take the default) or a u64."""
    return value if value is None else u64(name, value)


def u32(name: str, value) -> int:
    """A C u32 (a memslot id, a memslot's flags, a page count of KVM_CLEAR_DIRTY_LOG)."""
    return _unsigned(name, value, U32, "u32")


def u8(name: str, value) -> int:
    """A C u8 (an owner id)."""
    return _unsigned(name, value, 0xFF, "u8")


def flag(name: str, value) -> bool:
    """A C bool: True or False only (not 0/1, not a string that happens to be truthy)."""
    if type(value) is not bool:
        raise ArgTypeError(f"{name} must be True or False, not {type(value).__name__} ({value!r})")
    return value


def optional_flag(name: str, value):
    """None (take the default) or a bool."""
    return value if value is None else flag(name, value)


def nonnegative(name: str, value) -> int:
    """A count that may be zero."""
    integer(name, value)
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return value


def positive(name: str, value) -> int:
    """A count of at least one (pages of an arena, objects of a memcache)."""
    integer(name, value)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def page_shift(value) -> int:
    """A granule the architecture has: 4K, 16K or 64K."""
    integer("page_shift", value)
    if value not in PAGE_SHIFTS:
        raise ValueError(f"page_shift must be one of {PAGE_SHIFTS} (4K, 16K, 64K), not {value}")
    return value


def instance(name: str, value, cls, optional: bool = False):
    """An object of the given class (or None when optional)."""
    if value is None and optional:
        return value
    if not isinstance(value, cls):
        raise ArgTypeError(f"{name} must be a {cls.__name__}{' or None' if optional else ''}, "
                           f"not {type(value).__name__}")
    return value


def pool(value, page_shift: int):
    """A PagePool of the table's granule, or None (the table makes its own)."""
    from ptspec.impl.pgtable.pool import PagePool
    instance("pool", value, PagePool, optional=True)
    if value is not None and value.page_shift != page_shift:
        raise ValueError(f"the page pool's page_shift is {value.page_shift}, the table's "
                         f"{page_shift}")
    return value


def memcache(value, pool):
    """A kvm_mmu_memory_cache drawing from the table's own page pool, or None (mc == NULL).

    A memcache of another pool would hand the table pages it cannot read: refused."""
    from ptspec.impl.pgtable.pool import KvmMmuMemoryCache
    instance("mc", value, KvmMmuMemoryCache, optional=True)
    if value is not None and value.pool is not pool:
        raise ValueError("mc draws from another page pool than the table's")
    return value


def owner_field(value) -> tuple:
    """(hi, lo), two integers: the bits of an invalid descriptor that hold the owner id; or None
    (the kernel version's). Which bits are allowed is KvmPgtable's own check."""
    if value is None:
        return value
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ArgTypeError(f"owner_field must be a pair (hi, lo), not {value!r}")
    return integer("owner_field[0]", value[0]), integer("owner_field[1]", value[1])


def member(name: str, value, container):
    """One of the objects in container (compared by identity or equality, as ``in`` does)."""
    if value not in container:
        raise ValueError(f"{name} {value!r} is not one of the {len(container)} known")
    return value


def ipa_bits(page_shift_: int, value) -> int:
    """An IPA size KVM configures for this granule (kvm_arm_setup_stage2's range)."""
    from ptspec.impl.pgtable.geometry import Stage2Geometry
    Stage2Geometry.from_ipa(page_shift(page_shift_), integer("ia_bits", value))
    return value


def u64_pair(name: str, value) -> tuple:
    """Two u64s, e.g. the (start, end) of a text section."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ArgTypeError(f"{name} must be a pair of integers, not {value!r}")
    return u64(f"{name}[0]", value[0]), u64(f"{name}[1]", value[1])


def callable_or_none(name: str, value):
    if value is not None and not callable(value):
        raise ArgTypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value
