"""Two stage-2 tables in lock-step: the kernel's 6.1 ``pgtable.c`` (C) and impl under a profile.

``Pair(geometry, profile=...)`` owns a ``CPgtable`` and an impl ``KvmPgtable`` built with the same
geometry, arena size, FWB/CMO settings and memcache capacity. Each operation method runs the same
call on both sides (memcache top-up, allocation-failure injection and all), records it as a line of
pasteable Python, and returns ``(c_result, impl_result)``. ``compare()`` then lists every
difference of the whole raw state, each with an id:

``KD-RET``    return value or output (descriptor, level, young) of the call
``KD-PAGES``  which pages are in use, the root pages, the memcache's pages and order, free count
``KD-WORDS``  a descriptor word of a table page
``KD-RC``     a page's refcount
``KD-TLB``    the TLB invalidations and cache maintenance of the call, in order
``KD-WARN``   WARN_ONs, empty-memcache allocations, allocator errors

and ``check_c()`` runs the spec's invariant and step checks on the C side's raw state (ids S2-*,
C-*): the kernel's code under the spec.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass

from ptspec import spec
from ptspec.proofs.stage2 import strategies

from ptspec.proofs.kernel import kernels
from ptspec.proofs.kernel.cside import CPgtable

# name -> (page_shift, ia_bits)
GEOMETRIES = {
    "4k-39": (12, 39),      # 3 levels, one root page
    "4k-48": (12, 48),      # 4 levels from level 0
    "4k-40": (12, 40),      # 3 levels, 2 concatenated roots
    "4k-34": (12, 34),      # 2 levels, 16 concatenated roots
    "16k-47": (14, 47),     # 3 levels from level 1
    "16k-40": (14, 40),     # 2 levels, 16 concatenated roots
    "64k-44": (16, 44),     # 2 levels, 4 concatenated roots
    "64k-52": (16, 52),     # 3 levels, 52-bit IPA and PA
}
KD_IDS = ("KD-RET", "KD-PAGES", "KD-WORDS", "KD-RC", "KD-TLB", "KD-WARN")


@dataclass
class Difference:
    id: str
    text: str

    def __str__(self):
        return f"{self.id} {self.text}"


def _h(v):
    return hex(v) if isinstance(v, int) and not isinstance(v, bool) and v > 9 else repr(v)


def _opener(src) -> str:
    """How a pasteable program opens `src` again (a tree judged as another kernel keeps that)."""
    return src.opener() if hasattr(src, "opener") else f"open_tree({str(src.root)!r})"


class Pair:
    """The C kernel code and impl, driven together."""

    def __init__(self, geometry: str, profile: str = kernels.DEFAULT_PROFILE, *, fwb: bool = False,
                 cmo: bool = True, npages: int | None = None, mc_capacity: int = 40,
                 flags: int = 0, force_pte: bool = False, src=None):
        if geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry {geometry!r}; choose one of {', '.join(GEOMETRIES)}")
        ps, ia = GEOMETRIES[geometry]
        kernels.check_profile(profile)
        self.geometry, self.profile = geometry, profile
        self.geom = strategies.geometry(ps, ia)    # from spec (checkers never learn from impl)
        npages = npages or (4096 if ps == 12 else 1024)
        if flags & 2:
            raise ValueError("KVM_PGTABLE_S2_IDMAP is not compared (the spec's map contract does "
                             "not model it)")
        shape = getattr(src, "shape", None)          # a ptspec.proofs.kernel.tree.Tree
        own = {} if shape is None else {"owner_field": shape.owner_field,
                                         "max_owner_id": shape.max_owner_id}
        self.c = CPgtable(ps, ia, npages=npages, fwb=fwb, cmo=cmo, mc_capacity=mc_capacity,
                          flags=flags, force_pte=force_pte, src=src, **own)
        self.i, self.imc = kernels.make_impl(profile, ps, ia, npages=npages, fwb=fwb, cmo=cmo,
                                             mc_capacity=mc_capacity, flags=flags,
                                             force_pte=force_pte)
        self.min_pages = 3 - self.geom.start_level          # kvm_mmu_cache_min_pages
        self.lines = [
            "from ptspec.proofs.kernel.pair import Pair",
            f"p = Pair({geometry!r}, {profile!r}, fwb={fwb}, cmo={cmo}, npages={npages}, "
            f"mc_capacity={mc_capacity}, flags={flags}, force_pte={force_pte}"
            + ("" if src is None else f", src={_opener(src)}") + ")",
        ]
        if src is not None:
            self.lines.insert(1, "from ptspec.proofs.kernel.tree import open_tree")
        self.c_seconds = self.i_seconds = 0.0
        self.ops = 0
        self.rets: tuple = (None, None)
        self._c_pre = None
        self.init()

    # -- running one call on both sides ----------------------------------------------------
    def _both(self, c_call, i_call):
        t0 = time.perf_counter()
        try:
            cr = c_call()
        except ValueError as exc:
            cr = ("ValueError", str(exc))
        t1 = time.perf_counter()
        try:
            ir = i_call()
        except ValueError as exc:
            ir = ("ValueError", str(exc))
        t2 = time.perf_counter()
        self.c_seconds += t1 - t0
        self.i_seconds += t2 - t1
        self.ops += 1
        self.rets = (cr, ir)
        return cr, ir

    def _line(self, text, rets):
        cr, ir = rets
        if cr == ir:
            self.lines.append(f"{text}  # -> {_h(cr) if not isinstance(cr, tuple) else cr}")
        else:
            self.lines.append(f"{text}  # C -> {cr!r}, impl -> {ir!r}")
        return rets

    def _prepare_mc(self, mc: str, fail):
        """mc: 'topup' (kvm_mmu_topup_memory_cache to min first), 'raw' (as is), 'none' (NULL)."""
        if mc == "topup":
            before = self.imc.nobjs
            self.c.mc.topup(self.min_pages)
            self.imc.topup(self.min_pages)
            if self._c_pre is not None and self.imc.nobjs != before:
                # the top-up is the caller's, before the call: the step starts after it
                self._c_pre = spec.load_state(self.c_raw())
        ops = self.i.mm_ops
        if fail is not None:
            self.c.fail_at([fail])
            ops.fail_at = {ops.nr_allocs + fail}
        return (None, None) if mc == "none" else (self.c.mc, self.imc)

    def _done_mc(self, fail):
        if fail is not None:
            self.c.fail_at([])
            self.i.mm_ops.fail_at = set()

    def init(self):
        return self._line("p.init()", self._both(self.c.init, self.i.init))

    def map(self, addr, size, phys, prot, mc="topup", fail=None):
        cmc, imc = self._prepare_mc(mc, fail)
        r = self._both(lambda: self.c.map(addr, size, phys, prot, cmc),
                       lambda: self.i.map(addr, size, phys, prot, imc))
        self._done_mc(fail)
        return self._line(f"p.map({_h(addr)}, {_h(size)}, {_h(phys)}, {_h(prot)}, mc={mc!r}"
                          f"{'' if fail is None else f', fail={fail}'})", r)

    def set_owner(self, addr, size, owner_id, mc="topup", fail=None):
        cmc, imc = self._prepare_mc(mc, fail)
        r = self._both(lambda: self.c.set_owner(addr, size, cmc, owner_id),
                       lambda: self.i.set_owner(addr, size, imc, owner_id))
        self._done_mc(fail)
        return self._line(f"p.set_owner({_h(addr)}, {_h(size)}, {owner_id}, mc={mc!r}"
                          f"{'' if fail is None else f', fail={fail}'})", r)

    def _range(self, op, addr, size):
        return self._line(f"p.{op}({_h(addr)}, {_h(size)})",
                          self._both(lambda: getattr(self.c, op)(addr, size),
                                     lambda: getattr(self.i, op)(addr, size)))

    def unmap(self, addr, size):
        return self._range("unmap", addr, size)

    def wrprotect(self, addr, size):
        return self._range("wrprotect", addr, size)

    def flush(self, addr, size):
        return self._range("flush", addr, size)

    def _one(self, op, addr):
        return self._line(f"p.{op}({_h(addr)})",
                          self._both(lambda: getattr(self.c, op)(addr),
                                     lambda: getattr(self.i, op)(addr)))

    def mkyoung(self, addr):
        return self._one("mkyoung", addr)

    def mkold(self, addr):
        return self._one("mkold", addr)

    def is_young(self, addr):
        return self._one("is_young", addr)

    def get_leaf(self, addr):
        return self._one("get_leaf", addr)

    def relax_perms(self, addr, prot):
        return self._line(f"p.relax_perms({_h(addr)}, {_h(prot)})",
                          self._both(lambda: self.c.relax_perms(addr, prot),
                                     lambda: self.i.relax_perms(addr, prot)))

    def destroy(self):
        return self._line("p.destroy()", self._both(self.c.destroy, self.i.destroy))

    def free_memcache(self):
        self.c.mc.free()
        self.imc.free()
        self.lines.append("p.free_memcache()")

    def topup(self, n):
        r = (self.c.mc.topup(n), self.imc.topup(n))
        return self._line(f"p.topup({n})", r)

    @property
    def program(self) -> str:
        return "\n".join(self.lines)

    # -- comparing --------------------------------------------------------------------------
    def compare(self, c_events=None) -> list[Difference]:
        """Every difference between the two sides after the last call (drains both TLB logs).

        ``c_events``: the C side's events of the call when a raw-state snapshot already drained
        them (the spec-judged harness of ptspec.proofs.kernel.paired)."""
        out = []
        cr, ir = self.rets
        if cr != ir:
            out.append(Difference("KD-RET", f"last call returned {_h(cr)} in C, {_h(ir)} in impl"))
        c, i, pool = self.c, self.i, self.i.pool
        if c_events is None:
            c_ev = c.drain()
            c.pending.clear()
        else:
            c_ev = [list(e) for e in c_events]
        i_ev = [list(e) for e in i.log]
        i.log.clear()
        self.last_events = c_ev
        if c_ev != i_ev:
            k = next((n for n, (a, b) in enumerate(zip(c_ev, i_ev)) if a != b),
                     min(len(c_ev), len(i_ev)))
            out.append(Difference("KD-TLB", f"event {k}: C {_ev(c_ev, k)}, impl {_ev(i_ev, k)} "
                                            f"(C logged {len(c_ev)}, impl {len(i_ev)})"))
        c_used = c.used_pages()
        in_mc = pool.in_memcache
        i_used = sorted(pa for pa in pool.pages if pa not in in_mc)
        if c_used != i_used:
            only_c = sorted(set(c_used) - set(i_used))
            only_i = sorted(set(i_used) - set(c_used))
            out.append(Difference("KD-PAGES", f"pages in use only in C: {_hl(only_c)}; only in "
                                              f"impl: {_hl(only_i)}"))
        i_roots = list(i.pgd) if i.pgd is not None else []
        if c.roots() != i_roots:
            out.append(Difference("KD-PAGES", f"roots C {_hl(c.roots())}, impl {_hl(i_roots)}"))
        if c.mc.objects != self.imc.objects:
            out.append(Difference("KD-PAGES", f"memcache C {_hl(c.mc.objects)}, impl "
                                              f"{_hl(self.imc.objects)}"))
        if c.free_pages() != pool.free_pages():
            out.append(Difference("KD-PAGES", f"free pages C {c.free_pages()}, impl "
                                              f"{pool.free_pages()}"))
        common = sorted(set(c_used) & set(i_used))
        crc = c.refcounts(common)
        for pa in common:
            cb = c.page_bytes(pa)
            ib = array("Q", pool.pages[pa]).tobytes()
            if cb != ib:
                cw, iw = array("Q", cb), array("Q", ib)
                k = next(n for n in range(len(cw)) if cw[n] != iw[n])
                out.append(Difference("KD-WORDS", f"page {pa:#x} word {k}: C {cw[k]:#018x}, "
                                                  f"impl {iw[k]:#018x}"))
            if crc[pa] != pool.refcount[pa]:
                out.append(Difference("KD-RC", f"page {pa:#x}: refcount C {crc[pa]}, impl "
                                               f"{pool.refcount[pa]}"))
        i_warn = i.warnings + pool.warnings
        if len(c.warnings) != len(i_warn):
            out.append(Difference("KD-WARN", f"warnings C {c.warnings[-3:]}, impl {i_warn[-3:]}"))
        if c.errors != pool.errors:
            out.append(Difference("KD-WARN", f"allocator errors C {c.errors[-3:]}, impl "
                                             f"{pool.errors[-3:]}"))
        return out

    def c_raw(self) -> dict:
        """The C side's raw state, with the events of the last compared call as tlb_log."""
        st = self.c.snapshot()
        st["tlb_log"] = [list(e) for e in getattr(self, "last_events", [])]
        return st

    def check_c(self, step=None) -> list:
        """spec.check_state on the C side's raw state, plus spec.check_step when step is given."""
        post = spec.load_state(self.c_raw())
        found = list(spec.check_state(post))
        if step is not None and self._c_pre is not None:
            found += spec.check_step(self._c_pre, step, post)
        self._c_pre = post
        return found


def _ev(events, k):
    return events[k] if k < len(events) else "(none)"


def _hl(pas):
    if len(pas) > 6:
        return "[" + ", ".join(hex(p) for p in pas[:6]) + f", ... {len(pas)} in all]"
    return "[" + ", ".join(hex(p) for p in pas) + "]"
