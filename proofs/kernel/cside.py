"""The kernel's own stage-2 page-table code (Linux 6.1 ``pgtable.c``) driven from Python via ctypes.

``CPgtable`` has the methods of ``ptspec.impl.pgtable.stage2.KvmPgtable`` (``init``, ``map``, ``set_owner``,
``unmap``, ``wrprotect``, ``mkyoung``, ``mkold``, ``is_young``, ``relax_perms``, ``flush``,
``get_leaf``, ``destroy``) and a ``snapshot()`` that returns the raw state of docs/interface.md, so
``spec.check_state`` and ``ptspec.proofs.stage2.ptdump`` work on the C side's tables as they do on impl's.
In that raw state the pages and the tlb_log events are tuples (JSON arrays all the same): a page
unchanged since the previous snapshot is the previous tuple itself, which ``spec.load_state``
recognises without reading it again.
``CMemcache`` is the shim's one ``kvm_mmu_memory_cache`` (``topup`` / ``free`` / ``objects``).

The library keeps one page table in global state (as the kernel's mm_ops do), so a new
``CPgtable`` resets the arena of that granule's library: one live C table per granule at a time.
Python misuse (a value that is not a u64, a destroy without a root) raises ValueError here, before
the C code is called, as impl does. A call into the kernel's code that does not return within its
CPU budget, or faults, raises SubjectFault (``ptspec.proofs.kernel.guard``).
"""

from __future__ import annotations

import ctypes
from array import array
from itertools import compress
from operator import not_

from ptspec.proofs.kernel import build, guard

ARENA_BASE = 0x10_0000_0000
OWNER_FIELD_6_1 = (9, 2)          # KVM_INVALID_PTE_OWNER_MASK in 6.1
KVM_MAX_OWNER_ID = 1
EV_TLBI_IPA, EV_TLBI_VMID, EV_DCACHE, EV_ICACHE, EV_WARN, EV_ERR = range(1, 7)
# hyp stage 1's TLBI by VA at EL2 (vae2is, vale2is): read by the hyp harness (ptspec.proofs.kernel.hyp)
EV_TLBI_EL2, EV_TLBI_EL2_LAST = 12, 13
EL2_EVENT_NAMES = {EV_TLBI_EL2: "tlbi_el2", EV_TLBI_EL2_LAST: "tlbi_el2_last"}
_EVENT_NAMES = {EV_TLBI_IPA: "tlbi_ipa", EV_TLBI_VMID: "tlbi_vmid", EV_DCACHE: "dcache",
                EV_ICACHE: "icache"}          # the shim's TLB and cache events, by kind
PG_FREE, PG_USED, PG_MEMCACHE = 0, 1, 2
U64 = (1 << 64) - 1

_LIBS: dict = {}
_LIVE: dict = {}
_WORDS: dict = {}         # id(library) -> (arena address, words, memoryview of the arena's words)
_PAGES: dict = {}         # id(library) -> {pa: (bytes, tuple)} of the pages its tables last showed
# Extra preprocessor symbols for new CPgtables: set only by ptspec.proofs.kernel.planted (C-side bugs).
PLANT_DEFINES: tuple = ()


def load(page_shift: int, defines=(), src=None) -> ctypes.CDLL:
    """The library for this granule, built if needed (raises build.BuildError when it cannot be).

    ``src`` is a kernel tree (``ptspec.proofs.kernel.tree.Tree``); None: the cached Debian 6.1."""
    path = build.library(page_shift, src, defines=tuple(defines))
    key = str(path)
    lib = _LIBS.get(key)
    if lib is not None:
        return lib
    lib = ctypes.CDLL(key)
    u64, u32, i32, vp = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p
    sigs = {
        "kdiff_reset": (i32, [u64, i32, i32, u64]), "kdiff_init": (i32, [u32, u32, i32]),
        "kdiff_pgtable": (vp, []), "kdiff_memcache": (vp, []), "kdiff_vtcr": (u64, []),
        "kdiff_start_level": (u32, []), "kdiff_ia_bits": (u32, []), "kdiff_pgd_pa": (u64, []),
        "kdiff_topup": (i32, [u64]), "kdiff_memcache_free": (None, []),
        "kdiff_memcache_len": (u64, []), "kdiff_memcache_objs": (vp, []),
        "kdiff_fail_at": (None, [u64]), "kdiff_fail_clear": (None, []),
        "kdiff_arena": (vp, []), "kdiff_refcounts": (vp, []), "kdiff_page_states": (vp, []),
        "kdiff_npages": (u64, []), "kdiff_free_pages": (u64, []), "kdiff_log": (vp, []),
        "kdiff_log_len": (u64, []), "kdiff_log_overflowed": (i32, []),
        "kdiff_log_clear": (None, []), "kdiff_page_shift": (i32, []),
        "kdiff_parange_max": (i32, []),
        "kdiff_get_leaf": (i32, [u64, ctypes.POINTER(u64), ctypes.POINTER(u32)]),
        "kvm_pgtable_stage2_map": (i32, [vp, u64, u64, u64, u64, vp]),
        "kvm_pgtable_stage2_set_owner": (i32, [vp, u64, u64, vp, ctypes.c_uint8]),
        "kvm_pgtable_stage2_unmap": (i32, [vp, u64, u64]),
        "kvm_pgtable_stage2_wrprotect": (i32, [vp, u64, u64]),
        "kvm_pgtable_stage2_mkyoung": (u64, [vp, u64]),
        "kvm_pgtable_stage2_mkold": (u64, [vp, u64]),
        "kvm_pgtable_stage2_is_young": (ctypes.c_bool, [vp, u64]),
        "kvm_pgtable_stage2_relax_perms": (i32, [vp, u64, u64]),
        "kvm_pgtable_stage2_flush": (i32, [vp, u64, u64]),
        "kvm_pgtable_stage2_destroy": (None, [vp]),
    }
    guard.bind(lib, sigs)          # skips an entry point this version lacks (6.5 drops mkold)
    if lib.kdiff_page_shift() != page_shift:
        raise build.BuildError(f"a library for {page_shift} was built for another granule")
    _LIBS[key] = lib
    return lib


def _u64(name, v):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= U64:
        raise ValueError(f"{name} must be a u64, not {v!r}")
    return v


class CMemcache:
    """The shim's kvm_mmu_memory_cache (one per library)."""

    def __init__(self, pgt: "CPgtable"):
        self.pgt = pgt
        self.lib = pgt.lib
        self.handle = self.lib.kdiff_memcache()

    @property
    def capacity(self) -> int:
        return self.pgt.mc_capacity

    def topup(self, min_pages: int) -> int:
        if min_pages > self.pgt.mc_capacity:
            raise ValueError(f"memcache of capacity {self.pgt.mc_capacity} cannot hold {min_pages}")
        return self.lib.kdiff_topup(min_pages)

    def free(self):
        self.lib.kdiff_memcache_free()

    @property
    def objects(self) -> list[int]:
        n = self.lib.kdiff_memcache_len()
        return list((ctypes.c_uint64 * n).from_address(self.lib.kdiff_memcache_objs()))


class CPgtable:
    """kernel pgtable.c stage 2, with the same API and raw state as ptspec.impl.pgtable.stage2.KvmPgtable."""

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, npages: int = 4096,
                 fwb: bool = False, flags: int = 0, cmo: bool = True, mc_capacity: int = 40,
                 force_pte: bool = False, src=None, owner_field=OWNER_FIELD_6_1,
                 max_owner_id: int = KVM_MAX_OWNER_ID):
        self.defines = tuple(PLANT_DEFINES)
        self.lib = lib = load(page_shift, self.defines, src)
        # the tree's version (as judged), the state's kernel_version: the spec's version rules
        # (5.14's prot enum, set_owner, unmap's CMO) read it; None for the default Debian 6.1
        self.version = src.version if src is not None else None
        self.owner_field = tuple(owner_field)
        self.max_owner_id = max_owner_id
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self.ptrs = 1 << (page_shift - 3)
        self.ia_bits = ia_bits
        self.npages = npages
        self.fwb_cap = fwb
        if flags & ~3:
            raise ValueError(f"unknown stage-2 flags {flags:#x}")
        self.flags = flags
        self.force_pte_all = force_pte
        self.cmo = cmo
        self.mc_capacity = mc_capacity
        self.pa_bits = 52 if lib.kdiff_parange_max() == 6 else 48
        old = _LIVE.get(id(lib))
        if old is not None:
            old.lib = None                 # the old handle must not touch the reset library
        if lib.kdiff_reset(npages, int(fwb), int(cmo), mc_capacity):
            raise MemoryError(f"could not map an arena of {npages} pages")
        _LIVE[id(lib)] = self
        self.pgt = lib.kdiff_pgtable()
        self.mc = CMemcache(self)
        self._page_cache: dict = {}          # pa -> (bytes, tuple) of the last snapshot
        self._page_cache_at = None           # the arena (address, words) the cache is of
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.pending: list[list] = []
        self.initialised = False
        self.start_level = None
        self.pgd_pages = 0

    def _lib(self):
        if self.lib is None:
            raise RuntimeError("this CPgtable was superseded by a newer one of the same granule")
        return self.lib

    # -- the API ----------------------------------------------------------------------------
    def init(self) -> int:
        lib = self._lib()
        if self.initialised:
            raise ValueError("stage-2 table is already initialised")
        ret = lib.kdiff_init(self.ia_bits, self.flags, int(self.force_pte_all))
        self.start_level = lib.kdiff_start_level()
        if ret != 0:    # no root: pgt->start_level was never set; the one VTCR_EL2.SL0 gave init
            self.start_level = (2 if self.page_shift == 12 else 3) - ((lib.kdiff_vtcr() >> 6) & 3)
        shift = (self.page_shift - 3) * (4 - ((self.start_level - 1) & 0xFFFFFFFF)) + 3
        self.pgd_pages = ((((1 << self.ia_bits) - 1) >> (shift & 0xFFFFFFFFFFFFFFFF)) + 1)
        if ret == 0:
            self.initialised = True
        return ret

    def force_pte(self, addr, size, prot) -> bool:
        """What map passes as force_pte (the shim's callback forces pages everywhere, or none)."""
        return self.force_pte_all

    def _mc(self, mc):
        return None if mc is None else mc.handle

    def map(self, addr, size, phys, prot, mc) -> int:
        return self._lib().kvm_pgtable_stage2_map(self.pgt, _u64("addr", addr), _u64("size", size),
                                                  _u64("phys", phys), _u64("prot", prot),
                                                  self._mc(mc))

    def set_owner(self, addr, size, mc, owner_id) -> int:
        if isinstance(owner_id, bool) or not isinstance(owner_id, int) or not 0 <= owner_id <= 255:
            raise ValueError(f"owner_id must be a u8 (0..255), not {owner_id!r}")
        return self._lib().kvm_pgtable_stage2_set_owner(self.pgt, _u64("addr", addr),
                                                        _u64("size", size), self._mc(mc), owner_id)

    def unmap(self, addr, size) -> int:
        return self._lib().kvm_pgtable_stage2_unmap(self.pgt, _u64("addr", addr),
                                                    _u64("size", size))

    def wrprotect(self, addr, size) -> int:
        return self._lib().kvm_pgtable_stage2_wrprotect(self.pgt, _u64("addr", addr),
                                                        _u64("size", size))

    def mkyoung(self, addr) -> int:
        return self._lib().kvm_pgtable_stage2_mkyoung(self.pgt, _u64("addr", addr))

    def mkold(self, addr) -> int:
        return self._lib().kvm_pgtable_stage2_mkold(self.pgt, _u64("addr", addr))

    def is_young(self, addr) -> bool:
        return bool(self._lib().kvm_pgtable_stage2_is_young(self.pgt, _u64("addr", addr)))

    def relax_perms(self, addr, prot) -> int:
        return self._lib().kvm_pgtable_stage2_relax_perms(self.pgt, _u64("addr", addr),
                                                          _u64("prot", prot))

    def flush(self, addr, size) -> int:
        return self._lib().kvm_pgtable_stage2_flush(self.pgt, _u64("addr", addr),
                                                    _u64("size", size))

    def get_leaf(self, addr):
        """(ret, pte, level) as impl: pte and level are 0 unless ret is 0."""
        pte, level = ctypes.c_uint64(0), ctypes.c_uint32(0)
        ret = self._lib().kdiff_get_leaf(_u64("addr", addr), ctypes.byref(pte),
                                         ctypes.byref(level))
        return (ret, pte.value, level.value) if ret == 0 else (ret, 0, 0)

    def destroy(self) -> None:
        if not self.initialised:
            raise ValueError("kvm_pgtable_stage2_destroy: the table has no root (never "
                             "initialised or already destroyed)")
        self._lib().kvm_pgtable_stage2_destroy(self.pgt)
        self.initialised = False

    def fail_at(self, indices):
        """Allocation calls (0-based, counted from now) that must fail, as impl's MmOps.fail_at."""
        lib = self._lib()
        lib.kdiff_fail_clear()
        for n in indices:
            lib.kdiff_fail_at(n)

    # -- raw state ----------------------------------------------------------------------------
    def drain(self) -> list:
        """Move the C log into warnings/errors and return the TLB/CMO events since the last call
        (each a list, as impl logs them)."""
        return list(map(list, self._drain()))

    def _drain(self) -> list:
        """drain's events as tuples (as the raw state's tlb_log holds them: JSON arrays, which
        spec.load_state reads as lists or tuples; a tuple of ints costs the collector nothing)."""
        lib = self._lib()
        n = lib.kdiff_log_len()
        if lib.kdiff_log_overflowed():
            self.errors.append("kdiff: the shim's event log overflowed")
        raw = array("Q", ctypes.string_at(lib.kdiff_log(), 24 * n)) if n else array("Q")
        events = self._decode(raw)
        lib.kdiff_log_clear()
        self.pending.extend(events)
        return events

    def _decode(self, raw) -> list:
        """The TLB/cache events of a shim log (u64 triples kind, a, b), in order; its WARNs and
        allocator errors go to warnings and errors, a runtime's own events to _extra_event. The
        TLB and cache events are built at C speed, the rest one by one where they stand (the same
        as one loop over the log: tests hold them equal)."""
        kinds = raw[0::3]
        events = list(zip(map(_EVENT_NAMES.get, kinds), raw[1::3], raw[2::3]))
        i = -1
        for _ in range(kinds.count(EV_TLBI_VMID)):      # ("tlbi_vmid",) takes no operands
            i = kinds.index(EV_TLBI_VMID, i + 1)
            events[i] = ("tlbi_vmid",)
        others = list(compress(range(len(kinds)), map(not_, map(_EVENT_NAMES.__contains__, kinds))))
        if not others:
            return events
        out, last = [], 0
        for i in others:
            out += events[last:i]
            last = i + 1
            kind, a, b = kinds[i], raw[3 * i + 1], raw[3 * i + 2]
            if kind > EV_ERR:          # a runtime's own events (kdiff_mainline_rt.c)
                ev = self._extra_event(kind, a, b, len(self.pending) + len(out))
                if ev:
                    out.append(tuple(ev))
            elif kind == EV_WARN:
                self.warnings.append(f"WARN_ON at pgtable.c:{a}")
            elif a == 2:
                self.warnings.append("kvm_mmu_memory_cache_alloc on an empty memcache")
            elif a in (3, 5):
                what = "put_page" if a == 3 else "get_page"
                tail = " (double free?)" if a == 3 else ""
                self.errors.append(f"{what} on page {b:#x} that is not allocated{tail}")
            elif a == 1:
                self.errors.append(f"page reference to {b:#x} outside the arena")
            else:
                self.errors.append(f"allocator error {a} on page {b:#x}")
        out += events[last:]
        return out

    def _extra_event(self, kind: int, a: int, b: int, position: int):
        """An event of a runtime other than kdiff_rt.c (position: TLB/cache events of the step
        before it): none here (recorded as an error)."""
        self.errors.append(f"kdiff: unknown event kind {kind}")
        return None

    def page_states(self) -> bytes:
        lib = self._lib()
        return ctypes.string_at(lib.kdiff_page_states(), self.npages)

    def used_pages(self) -> list[int]:
        """Physical addresses of the pages handed out and not in the memcache, ascending."""
        states = self.page_states()
        out, i = [], states.find(PG_USED)
        while i >= 0:
            out.append(ARENA_BASE + (i << self.page_shift))
            i = states.find(PG_USED, i + 1)
        return out

    def _arena_words(self):
        """The arena as a memoryview of u64 words (kept per library and remade when its arena
        moved: a reset maps a new one; not an attribute, so a CPgtable still deep-copies)."""
        lib = self._lib()
        addr, n = lib.kdiff_arena(), self.npages * self.ptrs
        view = _WORDS.get(id(lib))
        if view is None or view[:2] != (addr, n):
            view = _WORDS[id(lib)] = (addr, n, memoryview((ctypes.c_uint64 * n).from_address(addr))
                                      .cast("B").cast("Q"))
        if self._page_cache_at != (addr, n):        # one page cache per library, shared by its
            self._page_cache = _PAGES.setdefault(id(lib), {})   # tables (a hit is equal bytes)
            self._page_cache_at = (addr, n)
        return view[2]

    def _page_tuples(self, pas) -> dict:
        """{pa: the page's descriptors as a tuple} for the raw state: a page whose bytes are
        those the library's tables last showed at that address (this table's previous snapshot,
        or a fresh table's page equal to an earlier table's) is that tuple itself (an immutable
        value, which spec.load_state then recognises without reading it again); any other page
        is read afresh. The same values as page_words (tests hold them equal)."""
        words = self._arena_words()
        cache, n, ps = self._page_cache, self.ptrs, self.page_shift
        out = {}
        for pa in pas:
            k = ((pa - ARENA_BASE) >> ps) * n
            b = words[k:k + n].tobytes()
            hit = cache.get(pa)
            if hit is None or hit[0] != b:
                hit = cache[pa] = (b, tuple(words[k:k + n].tolist()))
            out[pa] = hit[1]
        return out

    def page_bytes(self, pa: int) -> bytes:
        lib = self._lib()
        return ctypes.string_at(lib.kdiff_arena() + (pa - ARENA_BASE), self.page_size)

    def page_words(self, pa: int) -> list[int]:
        return array("Q", self.page_bytes(pa)).tolist()

    def refcount(self, pa: int) -> int:
        lib = self._lib()
        rc = (ctypes.c_int32 * self.npages).from_address(lib.kdiff_refcounts())
        return rc[(pa - ARENA_BASE) >> self.page_shift]

    def refcounts(self, pas) -> dict:
        lib = self._lib()
        rc = (ctypes.c_int32 * self.npages).from_address(lib.kdiff_refcounts())
        return {pa: rc[(pa - ARENA_BASE) >> self.page_shift] for pa in pas}

    def free_pages(self) -> int:
        return self._lib().kdiff_free_pages()

    def roots(self) -> list[int]:
        if not self.initialised:
            return []
        pgd = self._lib().kdiff_pgd_pa()
        return [pgd + k * self.page_size for k in range(self.pgd_pages)]

    def has_fwb(self) -> bool:
        return self.fwb_cap and not self.flags & 1

    def snapshot(self, drain_log: bool = True) -> dict:
        """The raw state of docs/interface.md (owner field as the tree places it)."""
        self._drain()
        used = self.used_pages()
        state = {
            "kind": "arm64-stage2", "page_shift": self.page_shift, "ia_bits": self.ia_bits,
            "start_level": self.start_level if self.start_level is not None else 0,
            "pa_bits": self.pa_bits, "owner_field": list(self.owner_field),
            "max_owner_id": self.max_owner_id, "has_fwb": self.has_fwb(), "cmo": self.cmo,
            "idmap": bool(self.flags & 2),                           # KVM_PGTABLE_S2_IDMAP
            "roots": self.roots(), "pages": self._page_tuples(used),
            "refcount": self.refcounts(used), "memcache": sorted(self.mc.objects),
            "free_pages": self.free_pages(), "pool_errors": list(self.errors),
            "tlb_log": list(self.pending), "warnings": list(self.warnings),
        }
        if self.version is not None:
            state["kernel_version"] = self.version
        if drain_log:
            self.pending.clear()
        return state
