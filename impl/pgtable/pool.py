"""The page allocator behind ``struct kvm_pgtable_mm_ops``, and the memcache it draws from.

Models (Linux 5.12-5.15):

* the host page allocator as the page table sees it through mm_ops: ``zalloc_page``,
  ``zalloc_pages_exact`` (the concatenated root, one refcount per page, aligned to its power-of-two
  size like ``alloc_pages_exact``), ``free_pages_exact``, ``get_page``/``put_page``/``page_count``,
  ``phys_to_virt``/``virt_to_phys`` (identity: a page is named by its physical address), and the
  optional cache-maintenance hooks ``dcache_clean_inval_poc`` / ``icache_inval_pou``;
* ``struct kvm_mmu_memory_cache`` with ``kvm_mmu_topup_memory_cache`` / ``kvm_mmu_memory_cache_alloc``
  / ``kvm_mmu_free_memory_cache`` (a LIFO stack of pre-zeroed pages with a capacity).

Deterministic: the pool always hands out the lowest free page of a fixed arena, so two runs of the
same operations (or the kernel's C code on the same allocator) produce the same tables word for word.

Errors a real kernel would not notice are recorded in ``PagePool.errors`` (a put below zero, a put or
free of a page that is not allocated) so the checks see them; nothing is silently ignored.
Fault injection: ``MmOps.fail_at`` holds the indices (0-based, counted per MmOps) of the
``zalloc_page``/``zalloc_pages_exact`` calls that must fail.

An empty memcache returns NULL (as the pKVM hyp allocator does) and records a warning; the host
kernel would WARN and fall back to an atomic allocation.
"""

from __future__ import annotations

import errno
import heapq

from ptspec.impl.pgtable import args

DEFAULT_ARENA_BASE = 0x10_0000_0000
DEFAULT_ARENA_PAGES = 1 << 16
KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE = 40


class PagePool:
    """A fixed arena of physical pages; each allocated page holds its descriptors as a list."""

    def __init__(self, page_shift: int, npages: int = DEFAULT_ARENA_PAGES,
                 base_pa: int = DEFAULT_ARENA_BASE):
        page_shift = args.page_shift(page_shift)
        npages = args.positive("npages", npages)
        base_pa = args.u64("base_pa", base_pa)
        if base_pa & ((1 << page_shift) - 1):
            raise ValueError(f"arena base {base_pa:#x} is not page aligned")
        if npages <= 0:
            raise ValueError("the arena needs at least one page")
        self.page_shift = page_shift
        self.ptrs = 1 << (page_shift - 3)
        self.base_pa = base_pa
        self.npages = npages
        self.pages: dict[int, list] = {}      # allocated page pa -> its 64-bit words
        self.refcount: dict[int, int] = {}     # allocated page pa -> page_count()
        self.in_memcache: set[int] = set()     # allocated pages parked in some memcache
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._heap = list(range(npages))        # free page indices (may hold stale entries)
        self._is_free = bytearray(b"\x01") * npages

    # -- allocation -------------------------------------------------------------------------
    def _take(self, i: int) -> int:
        self._is_free[i] = 0
        pa = self.base_pa + (i << self.page_shift)
        self.pages[pa] = [0] * self.ptrs
        self.refcount[pa] = 1
        return pa

    def alloc_page(self):
        """Lowest free page, zeroed, refcount 1; None when the arena is exhausted."""
        heap, is_free = self._heap, self._is_free
        while heap:
            i = heapq.heappop(heap)
            if is_free[i]:
                return self._take(i)
        return None

    def alloc_pages_exact(self, n: int):
        """Lowest free run of n pages aligned to the next power of two (buddy order)."""
        n = args.positive("n", n)
        order_pages = 1 << (n - 1).bit_length()
        is_free = self._is_free
        for start in range(0, self.npages - n + 1, order_pages):
            if all(is_free[start:start + n]):
                return [self._take(i) for i in range(start, start + n)]
        return None

    def free_pages(self):
        return self._is_free.count(1)

    # -- references -------------------------------------------------------------------------
    def get_page(self, pa: int):
        refcount = self.refcount
        rc = refcount.get(pa)
        if rc is None:
            self.errors.append(f"get_page on page {pa:#x} that is not allocated")
            return
        refcount[pa] = rc + 1

    def put_page(self, pa: int):
        rc = self.refcount.get(pa)
        if rc is None:
            self.errors.append(f"put_page on page {pa:#x} that is not allocated (double free?)")
            return
        if rc <= 0:
            self.errors.append(f"put_page on page {pa:#x} below zero")
            return
        rc -= 1
        if rc:
            self.refcount[pa] = rc
        else:
            self._release(pa)

    def page_count(self, pa: int) -> int:
        return self.refcount.get(pa, 0)

    def _release(self, pa: int):
        i = (pa - self.base_pa) >> self.page_shift
        del self.pages[pa]
        del self.refcount[pa]
        self.in_memcache.discard(pa)
        self._is_free[i] = 1
        heapq.heappush(self._heap, i)

    def free_page(self, pa: int):
        """Return a page the caller owns outright (memcache teardown): refcount must be 1."""
        rc = self.refcount.get(pa)
        if rc is None:
            self.errors.append(f"free of page {pa:#x} that is not allocated (double free?)")
            return
        if rc != 1:
            self.errors.append(f"free of page {pa:#x} with refcount {rc}")
        self._release(pa)


class KvmMmuMemoryCache:
    """struct kvm_mmu_memory_cache: pre-zeroed pages, popped last-in first-out."""

    def __init__(self, pool: PagePool, capacity: int = KVM_ARCH_NR_OBJS_PER_MEMORY_CACHE):
        pool = args.instance("pool", pool, PagePool)
        capacity = args.integer("capacity", capacity)
        if capacity <= 0:
            raise ValueError("memcache capacity must be positive")
        self.pool = pool
        self.capacity = capacity
        self.objects: list[int] = []

    @property
    def nobjs(self) -> int:
        return len(self.objects)

    def topup(self, min_pages: int) -> int:
        """kvm_mmu_topup_memory_cache: fill to capacity once below min; -ENOMEM if short."""
        min_pages = args.nonnegative("min_pages", min_pages)
        if min_pages > self.capacity:
            raise ValueError(f"memcache of capacity {self.capacity} cannot hold {min_pages} pages")
        if len(self.objects) >= min_pages:
            return 0
        while len(self.objects) < self.capacity:
            pa = self.pool.alloc_page()
            if pa is None:
                return 0 if len(self.objects) >= min_pages else -errno.ENOMEM
            self.pool.in_memcache.add(pa)
            self.objects.append(pa)
        return 0

    def alloc(self):
        """kvm_mmu_memory_cache_alloc; None (with a warning) when empty."""
        if not self.objects:
            self.pool.warnings.append("kvm_mmu_memory_cache_alloc on an empty memcache")
            return None
        pa = self.objects.pop()
        self.pool.in_memcache.discard(pa)
        return pa

    def free(self):
        """kvm_mmu_free_memory_cache: give every cached page back to the pool."""
        while self.objects:
            pa = self.objects.pop()
            self.pool.in_memcache.discard(pa)
            self.pool.free_page(pa)


class MmOps:
    """struct kvm_pgtable_mm_ops for one page table, with allocation-failure injection.

    ``log`` receives the cache-maintenance events (``("dcache", pa, size)``, ``("icache", pa,
    size)``) when ``cmo`` is on; with ``cmo`` off the hooks are None, as for the pKVM host stage 2.
    """

    def __init__(self, pool: PagePool, log: list | None = None, cmo: bool = True):
        pool = args.instance("pool", pool, PagePool)
        cmo = args.flag("cmo", cmo)
        self.pool = pool
        # get_page / put_page: the pool's own, as the kernel's mm_ops point straight at the page
        # allocator's (bound once here, not wrapped: they run for every counted entry)
        self.get_page = pool.get_page
        self.put_page = pool.put_page
        self.log = log if log is not None else []
        self.nr_allocs = 0
        self.fail_at: set[int] = set()
        self.dcache_clean_inval_poc = self._dcache if cmo else None
        self.icache_inval_pou = self._icache if cmo else None

    def _inject(self) -> bool:
        n = self.nr_allocs
        self.nr_allocs = n + 1
        return n in self.fail_at

    def zalloc_page(self, mc):
        """A zeroed page from the memcache (stage 2) or straight from the pool (mc is None)."""
        if self._inject():
            return None
        if mc is None:
            return self.pool.alloc_page()
        return mc.alloc()

    def zalloc_pages_exact(self, size: int):
        if self._inject():
            return None
        return self.pool.alloc_pages_exact(size >> self.pool.page_shift)

    def free_pages_exact(self, pas: list, size: int):
        """Drop the allocation reference of each page; a page still referenced stays allocated."""
        for pa in pas:
            self.pool.put_page(pa)

    def page_count(self, pa: int) -> int:
        return self.pool.page_count(pa)

    def _dcache(self, pa: int, size: int):
        self.log.append(("dcache", pa, size))

    def _icache(self, pa: int, size: int):
        self.log.append(("icache", pa, size))
