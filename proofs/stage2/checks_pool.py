"""The page allocator and memcache behind mm_ops: their kernel semantics, edges included.

ptspec.impl.pgtable.pool plays the host's page allocator and ``struct kvm_mmu_memory_cache`` for the page-table
code. The lock-step checks only see it through full operations; this obligation pins the edges they
rarely reach: the arena running out (``zalloc_pages_exact`` returning NULL, runs that fit exactly),
the power-of-two alignment of concatenated roots, lowest-page-first reuse, ``page_count`` and puts
below zero, ``kvm_mmu_topup_memory_cache`` (nothing allocated while at least ``min`` objects are
cached, -ENOMEM when the pool cannot reach ``min``), LIFO ``kvm_mmu_memory_cache_alloc``, an empty
memcache, freeing the memcache, and fault injection (``fail_at``).
"""

from __future__ import annotations

import errno

from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, MmOps, PagePool

from ptspec.proofs.engines.minimize import unit_program
from ptspec.proofs.runner.registry import Result, obligation

B = 0x10_0000_0000


def cases():
    """(what, got, want) for every behaviour checked."""
    out = []
    p = PagePool(12, 4, B)
    out.append(("4 pages from a 4-page arena", p.alloc_pages_exact(4), [B + (i << 12) for i in range(4)]))
    out.append(("a full arena has no page", p.alloc_page(), None))
    out.append(("and no run", p.alloc_pages_exact(1), None))
    out.append(("3-page arena, 4-page run", PagePool(12, 3, B).alloc_pages_exact(4), None))
    p = PagePool(12, 8, B)
    first = p.alloc_page()
    out.append(("lowest page first", first, B))
    out.append(("a 3-page run is aligned to 4 pages", p.alloc_pages_exact(3), [B + (i << 12) for i in (4, 5, 6)]))
    out.append(("then the lowest free page", p.alloc_page(), B + 0x1000))
    p.put_page(first)
    out.append(("a put to zero frees the page", (p.page_count(first), first in p.pages), (0, False)))
    out.append(("a freed page is reused first", p.alloc_page(), first))
    p.get_page(first)
    out.append(("get_page counts", p.page_count(first), 2))
    p = PagePool(12, 8, B)
    p.alloc_page()
    out.append(("a 2-page run is aligned to 2 pages", p.alloc_pages_exact(2), [B + 0x2000, B + 0x3000]))
    out.append(("a 1-page run is any free page", p.alloc_pages_exact(1), [B + 0x1000]))
    p.get_page(B + 0x7000)
    out.append(("get_page on a page not allocated is an error", (len(p.errors), p.page_count(B + 0x7000)),
                (1, 0)))
    q = PagePool(12, 2, B)
    q.put_page(B)
    out.append(("a put on a page not allocated is an error", len(q.errors), 1))
    pa = q.alloc_page()
    q.get_page(pa)
    q.free_page(pa)
    out.append(("freeing a page with refcount 2 is an error", len(q.errors), 2))
    q.free_page(pa)
    out.append(("a double free is an error", len(q.errors), 3))
    pool = PagePool(12, 6, B)
    mc = KvmMmuMemoryCache(pool, 4)
    out.append(("topup from empty returns 0", mc.topup(2), 0))
    out.append(("and fills to capacity", (mc.nobjs, pool.free_pages()), (4, 2)))
    mc.alloc(), mc.alloc()
    out.append(("topup with min objects cached returns 0", mc.topup(2), 0))
    out.append(("and allocates nothing", (mc.nobjs, pool.free_pages()), (2, 2)))
    out.append(("topup below min refills", (mc.topup(3), mc.nobjs, pool.free_pages()), (0, 4, 0)))
    mc.alloc(), mc.alloc(), mc.alloc()
    out.append(("topup that cannot reach min", mc.topup(2), -errno.ENOMEM))
    exact = KvmMmuMemoryCache(PagePool(12, 2, B), 4)
    out.append(("topup that reaches min exactly as the pool runs out", exact.topup(2), 0))
    top = mc.objects[-1]
    out.append(("alloc is LIFO", mc.alloc(), top))
    out.append(("an empty memcache gives NULL", (mc.alloc(), len(pool.warnings) >= 1), (None, True)))
    pool2 = PagePool(12, 4, B)
    mc2 = KvmMmuMemoryCache(pool2, 3)
    mc2.topup(3)
    mc2.free()
    out.append(("freeing the memcache returns every page", (pool2.free_pages(), pool2.errors), (4, [])))
    mm = MmOps(PagePool(12, 4, B))
    mm.fail_at = {1}
    got = [mm.zalloc_page(None), mm.zalloc_page(None), mm.zalloc_page(None)]
    out.append(("fail_at fails exactly the n-th allocation", [g is None for g in got],
                [False, True, False]))
    return out


@obligation("s2.pool", engine="unit", invariants=["S2-LEAK", "C-INIT"],
            kernel_functions=["zalloc_pages_exact", "kvm_mmu_topup_memory_cache",
                              "kvm_mmu_memory_cache_alloc", "kvm_mmu_free_memory_cache",
                              "get_page", "put_page", "page_count"])
def pool_semantics(ctx):
    """The page allocator and memcache keep the kernel's semantics at their edges: arena
    exhaustion and exact fits, power-of-two aligned runs, lowest page first, counts and errors
    (gets and puts on pages not allocated, double frees), topup/alloc/free of the memcache, fault injection."""
    found = cases()
    bad = [f"S2-LEAK {what}: got {got!r}, expected {want!r}" for what, got, want in found
           if got != want]
    if bad:
        return Result.refuted({"violations": bad[:8], "ops": unit_program(
            ["from ptspec.proofs.stage2.checks_pool import cases"],
            ["bad = [(what, got, want) for what, got, want in cases() if got != want]"],
            "assert not bad, bad[:8]"),
                               "kernel_function": "mm_ops"}, detail=f"{len(bad)} of {len(found)}",
                              examples=len(found))
    return Result.passed(len(found), f"{len(found)} behaviours")
