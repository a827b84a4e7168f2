"""C-HYP-VA: the contract of the hyp private VA allocator (``__create_hyp_private_mapping``, mmu.c 5.13).

Models what a private hyp mapping must give, from the request and the EL2 table after it
(check_hyp_private states it).

The step record: ``{"op": "hyp_private_map", "args": {"phys", "size"}, "pre": {"io_map_base",
"va_bits", "page_shift"}, "ret": 0 | -errno, "out": {"haddr", "io_map_base"}}``; the post state is an
``arm64-hyp-s1`` raw state (``spec.translate`` walks it).
"""

import errno

from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation
from ptspec.spec.arch.walk import translate

U64 = (1 << 64) - 1


def hyp_va_fits(io_map_base, phys, size, va_bits, page_shift):
    """(fits, A): the allocator's room check, in unbounded arithmetic."""
    p = 1 << page_shift
    a = -(-(size + phys % p) // p) * p
    half = 1 << (va_bits - 1)
    fits = a <= io_map_base and (io_map_base - a) // half == io_map_base // half
    return fits, a


@statement("C-HYP-VA", constrains=("__create_hyp_private_mapping", "create_hyp_io_mappings",
                                   "create_hyp_exec_mappings"))
def check_hyp_private(step, post_hyp_state, max_pages_checked=64):
    """C-HYP-VA: the hyp private VA allocator hands out fresh VA below io_map_base, or refuses.

    Statement: with P the page size and B the previous io_map_base, the allocation has
    ``A = ceil((size + phys mod P) / P) * P`` bytes and grows down from B (so it cannot overlap an
    earlier one); it *fits* when ``A <= B`` and ``B - A`` lies in the same half of the ``VA_BITS``
    space as B (bit ``VA_BITS - 1`` equal): the allocator never crosses into the other half, for
    any size. A request that fits succeeds, unless building the EL2 mapping failed, and then
    io_map_base is ``B - A`` (the VA is consumed either way); on success the returned address is
    ``B - A + phys mod P`` and every page of ``[B - A, B)`` translates, in the EL2 table, to the
    matching page of ``phys``. A request that does not fit fails with -ENOMEM and leaves
    io_map_base at B.

    Why: private hyp mappings (device registers, the idmap'd vectors) live in the hypervisor's
    own address space; one that overlaps an earlier mapping or crosses into the other half of
    the VA space replaces a live EL2 mapping or lands on the kernel's linear map.

    Constrains: __create_hyp_private_mapping (the room check and io_map_base), and its callers
    create_hyp_io_mappings and create_hyp_exec_mappings.
    """
    out = []
    a, pre, o = step["args"], step["pre"], step["out"]
    b0, vb, ps = pre["io_map_base"], pre["va_bits"], pre["page_shift"]
    phys, size, ret = a["phys"], a["size"], step["ret"]
    fits, alloc = hyp_va_fits(b0, phys, size, vb, ps)
    p = 1 << ps
    where = f"private mapping of {size:#x} bytes at pa {phys:#x} from io_map_base {b0:#x}"
    if not fits:
        if ret != -errno.ENOMEM or o["io_map_base"] != b0:
            out.append(Violation("C-HYP-VA", f"{where}: needs {alloc:#x} bytes, which do not fit "
                                             f"below io_map_base in its half of the {vb}-bit VA "
                                             f"space, but it returned {ret} and moved io_map_base "
                                             f"to {o['io_map_base']:#x}"))
        return out
    base = b0 - alloc
    if o["io_map_base"] != base:
        out.append(Violation("C-HYP-VA", f"{where}: io_map_base is {o['io_map_base']:#x}, "
                                         f"expected {base:#x}"))
    if ret == -errno.ENOMEM and o["io_map_base"] == b0:
        out.append(Violation("C-HYP-VA", f"{where}: refused although [{base:#x}, {b0:#x}) fits"))
    if ret != 0:
        return out
    want = base + phys % p
    if o["haddr"] != want:
        out.append(Violation("C-HYP-VA", f"{where}: returned {o['haddr']:#x}, expected {want:#x}"))
    pages = alloc // p
    for k in sorted({0, 1, pages - 1, pages // 2} if pages > max_pages_checked
                    else range(pages)):
        if not 0 <= k < pages:
            continue
        t = translate(post_hyp_state, base + k * p)
        exp = (phys & ~(p - 1)) + k * p
        if not t.valid or t.oa != exp:
            got = f"{t.oa:#x}" if t.valid else t.kind
            out.append(Violation("C-HYP-VA", f"{where}: hyp va {base + k * p:#x} maps {got}, "
                                             f"expected pa {exp:#x}"))
            break
    return out
