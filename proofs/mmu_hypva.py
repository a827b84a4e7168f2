"""Checks of the hyp private VA allocator (``__create_hyp_private_mapping``) against C-HYP-VA.

* ``run_sequences``: real ``HypMmu`` instances (``kvm_mmu_init`` first) receive sequences of private
  mappings (``create_hyp_io_mappings`` / ``create_hyp_exec_mappings``) with sizes at every boundary
  that matters (0, 1, page +- 1, the room left below ``io_map_base`` +- a page, the half of the VA
  space) and physical addresses with every in-page offset class; each call is judged by
  ``spec.mmu_hyp.check_hyp_private`` against the EL2 table after it. Sizes stay within what a
  caller can ask for (``size + offset <= 2**(VA_BITS-1)``, see docs/mmu.md finding 2).
* ``z3_allocator``: z3 runs the impl's own ``hyp_private_va`` on 64-bit bit-vectors and proves, for
  every ``io_map_base`` below ``2**VA_BITS``, every physical address and every size in that domain,
  that the allocator refuses exactly the requests that do not fit below ``io_map_base`` in its half
  of the VA space, and that an accepted one ends exactly at ``io_map_base``. ``z3_wrap_witness``
  looks outside the domain and returns the counterexample of finding 2.
"""

from __future__ import annotations

import errno
import random

from impl import mmu_hyp
from spec.mmu_hyp import check_hyp_private, hyp_va_fits


def _request(hm, phys, size, exec_):
    b0 = hm.io_map_base
    if exec_:
        ret, haddr = mmu_hyp.create_hyp_exec_mappings(hm, phys, size)
        call = f"create_hyp_exec_mappings(hm, {phys:#x}, {size:#x})"
    else:
        ret, _, haddr = mmu_hyp.create_hyp_io_mappings(hm, phys, size)
        call = f"create_hyp_io_mappings(hm, {phys:#x}, {size:#x})"
    step = {"op": "hyp_private_map", "args": {"phys": phys, "size": size},
            "pre": {"io_map_base": b0, "va_bits": hm.va_bits, "page_shift": hm.page_shift},
            "ret": ret, "out": {"haddr": haddr, "io_map_base": hm.io_map_base}}
    return step, call


def run_sequences(n_sequences: int, seed: int = 0, expired=lambda: False):
    """Returns (requests checked, None) or (n, counterexample dict)."""
    rng = random.Random(seed)
    checked = 0
    for i in range(n_sequences):
        ps = rng.choice([12, 12, 14, 16])
        va = rng.choice([39, 48]) if ps == 12 else (47 if ps == 14 else 48)
        page = 1 << ps
        half = 1 << (va - 1)
        idmap = rng.choice([0x4100_0000, half + 5 * page, 3 * page, half - page * 8])
        idmap &= ~(page - 1)
        hm = mmu_hyp.HypMmu(ps, va, min(va, 48), idmap_text=(idmap + 0x40, idmap + 0x80),
                            arena_pages=64)
        err, _ = mmu_hyp.kvm_mmu_init(hm)
        if err:
            continue
        lines = [f"hm = HypMmu({ps}, {va}, {min(va, 48)}, idmap_text=({idmap + 0x40:#x}, "
                 f"{idmap + 0x80:#x}))", "kvm_mmu_init(hm)"]
        for _ in range(rng.randint(1, 5)):
            room = hm.io_map_base - (hm.io_map_base // half) * half
            phys = rng.choice([0x0900_0000, 0x0900_0123, 0x4200_0000 - 1, page - 1]) & ((1 << 40) - 1)
            off = phys % page
            size = rng.choice([0, 1, page - 1, page, page + 1, 3 * page, room - off,
                               room - off - 1, room - off + 1, room - off + page, half - off])
            size = max(0, min(size, half - off))
            if size > 1 << 30 and hyp_va_fits(hm.io_map_base, phys, size, va, ps)[0]:
                continue      # would map gigabytes at EL2: the boundaries are tested elsewhere
            if size >= 64 * page:
                exec_ = False         # huge requests: the allocator's answer is what matters
            else:
                exec_ = rng.random() < 0.3
            pool_before = hm.pool.free_pages()
            step, call = _request(hm, phys, size, exec_)
            lines.append(f"{call}  # -> {step['ret']}")
            checked += 1
            if step["ret"] == -errno.ENOMEM and hyp_va_fits(
                    step["pre"]["io_map_base"], phys, size, va, ps)[0] and pool_before == 0:
                continue          # the EL2 table ran out of pages: allowed by the contract
            found = check_hyp_private(step, hm.hyp_pgtable.snapshot())
            if found:
                return checked, {"ops": "\n".join(lines), "violations": [str(v) for v in found],
                                 "tables": "", "kernel_function": "__create_hyp_private_mapping"}
        if expired():
            break
    return checked, None


def _z3_setup(va_bits: int, page_shift: int, timeout_ms: int, rlimit: int):
    import z3
    s = z3.Solver()
    s.set("timeout", int(timeout_ms))
    s.set("rlimit", int(rlimit))
    b0, phys, size = z3.BitVecs("io_map_base phys size", 64)
    alloc, base, crossed = mmu_hyp.hyp_private_va(b0, phys, size, va_bits, page_shift)
    return z3, s, (b0, phys, size), (alloc, base, crossed)


def z3_allocator(va_bits: int, page_shift: int, timeout_ms: int, rlimit: int):
    """('proved' | 'refuted' | 'unknown', model or reason)."""
    z3, s, (b0, phys, size), (alloc, base, crossed) = _z3_setup(va_bits, page_shift, timeout_ms,
                                                                rlimit)
    page = 1 << page_shift
    half = 1 << (va_bits - 1)
    off = phys & (page - 1)
    want = z3.ZeroExt(2, size) + z3.ZeroExt(2, off)         # 66-bit: no wrap
    s.add(z3.ULT(b0, 1 << va_bits), z3.ULE(want, half))
    # the request fits: io_map_base - A stays >= the start of io_map_base's half
    a66 = (want + (page - 1)) & ~(page - 1)
    half_start = z3.ZeroExt(2, b0 & ~(half - 1) & ((1 << 64) - 1))
    fits = z3.And(z3.ULE(a66, z3.ZeroExt(2, b0)), z3.UGE(z3.ZeroExt(2, b0) - a66, half_start))
    ok = z3.And((crossed == 0) == fits,
                z3.Implies(crossed == 0, z3.And(base + alloc == b0, z3.ZeroExt(2, alloc) == a66)))
    s.add(z3.Not(ok))
    r = s.check()
    if r == z3.unsat:
        return "proved", None
    if r == z3.sat:
        m = s.model()
        return "refuted", {k: m.eval(v, model_completion=True).as_long()
                           for k, v in (("io_map_base", b0), ("phys", phys), ("size", size))}
    return "unknown", s.reason_unknown()


def z3_wrap_witness(va_bits: int = 48, page_shift: int = 12, timeout_ms: int = 20000,
                    rlimit: int = 50_000_000):
    """A request outside the domain that the allocator accepts although it does not fit."""
    z3, s, (b0, phys, size), (alloc, base, crossed) = _z3_setup(va_bits, page_shift, timeout_ms,
                                                                rlimit)
    s.add(z3.ULT(b0, 1 << va_bits), b0 == 0x4100_0000, phys == 0, crossed == 0,
          z3.UGT(size, b0))
    if s.check() == z3.sat:
        m = s.model()
        return {"io_map_base": m.eval(b0).as_long(), "size": m.eval(size).as_long(),
                "base": m.eval(base, model_completion=True).as_long()}
    return None
