"""Checks of the hyp private VA allocator (``__create_hyp_private_mapping``) against C-HYP-VA.

* ``run_sequences``: real ``HypMmu`` instances (``kvm_mmu_init`` first) receive sequences of private
  mappings (``create_hyp_io_mappings`` / ``create_hyp_exec_mappings``) with sizes at every boundary
  that matters (0, 1, page +- 1, the room left below ``io_map_base`` +- a page, the half of the VA
  space) and physical addresses with every in-page offset class; each call is judged by
  ``ptspec.spec.mmu.hyp_va.check_hyp_private`` against the EL2 table after it. Sizes stay within what a
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

from ptspec.impl.mmu import hyp as mmu_hyp
from ptspec.spec.mmu.hyp_va import check_hyp_private, hyp_va_fits
from ptspec.spec.arch.walk import translate


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


def _z3_setup(va_bits: int, page_shift: int, timeout_ms: int | None, rlimit: int):
    import z3
    s = z3.Solver()
    if timeout_ms is not None:           # the hang guard (None: no clock); the rlimit is the budget
        s.set("timeout", max(int(timeout_ms), 1))
    s.set("rlimit", int(rlimit))
    b0, phys, size = z3.BitVecs("io_map_base phys size", 64)
    alloc, base, crossed = mmu_hyp.hyp_private_va(b0, phys, size, va_bits, page_shift)
    return z3, s, (b0, phys, size), (alloc, base, crossed)


def z3_allocator(va_bits: int, page_shift: int, timeout_ms: int | None, rlimit: int):
    """('proved' | 'refuted' | 'unknown', model or reason)."""
    from ptspec.proofs.engines.z3.explore import rlimit_count, solver_check, why_unknown
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
    before = rlimit_count(s)
    r = solver_check(s)
    if r == z3.unsat:
        return "proved", None
    if r == z3.sat:
        m = s.model()
        return "refuted", {k: m.eval(v, model_completion=True).as_long()
                           for k, v in (("io_map_base", b0), ("phys", phys), ("size", size))}
    return "unknown", why_unknown(s, rlimit, rlimit_count(s) - before)


def z3_wrap_witness(va_bits: int = 48, page_shift: int = 12, timeout_ms: int = 20000,
                    rlimit: int = 50_000_000):
    """A request outside the domain that the allocator accepts although it does not fit."""
    from ptspec.proofs.engines.z3.explore import solver_check
    z3, s, (b0, phys, size), (alloc, base, crossed) = _z3_setup(va_bits, page_shift, timeout_ms,
                                                                rlimit)
    s.add(z3.ULT(b0, 1 << va_bits), b0 == 0x4100_0000, phys == 0, crossed == 0,
          z3.UGT(size, b0))
    if solver_check(s) == z3.sat:
        m = s.model()
        return {"io_map_base": m.eval(b0).as_long(), "size": m.eval(size).as_long(),
                "base": m.eval(base, model_completion=True).as_long()}
    return None


# -- the rest of the hyp side, as unit cases (mmu.units.hyp) --------------------------------------

def _hyp_maps(hm, va, pa):
    t = translate(hm.hyp_pgtable.snapshot(), va)
    return t.valid and t.oa == pa


def check_hyp_units():
    """HypMmu's layout, kern_hyp_va, kvm_kaddr_to_phys, kvm_mmu_init, create_hyp_mappings and
    the ioremap side of create_hyp_io_mappings / create_hyp_exec_mappings, against values worked
    out by hand from mmu.c / va_layout.c (5.13). A list of violations."""
    bad = []
    U64 = (1 << 64) - 1
    hm = mmu_hyp.HypMmu()
    got = (hm.page_shift, hm.page_size, hm.va_bits, hm.hyp_va_bits, hm.idmap_text, hm.vhe,
           hm.tag, hm.page_offset, hm.high_memory, hm.pool.npages, hm.pool.page_shift,
           hm.hyp_pgtable, hm.hyp_idmap_start, hm.hyp_idmap_end, hm.io_map_base, hm.vmalloc,
           hm.ioremaps, hm._next_ioremap)
    want = (12, 0x1000, 48, 48, (0x4100_0800, 0x4100_0F00), False, 1 << 47, 0xFFFF_0000_0000_0000,
            0xFFFF_0001_0000_0000, 256, 12, None, 0, 0, 0, {}, [], 0xFFFF_8000_1000_0000)
    bad += [f"HypMmu() field {i}: {g!r}, expected {w!r}" for i, (g, w) in
            enumerate(zip(got, want)) if g != w]
    for ps, va, idmap, tag, po in ((16, 52, 0x8_0000_0000_0000 + 0x1_0000, 0,
                                    0xFFF0_0000_0000_0000),
                                   (14, 47, 0x4000_0000, 1 << 46, 0xFFFF_8000_0000_0000),
                                   (12, 39, 0x40_0000_0000, 0, 0xFFFF_FF80_0000_0000)):
        h2 = mmu_hyp.HypMmu(ps, va, va, idmap_text=(idmap, idmap + 8), arena_pages=8)
        if (h2.page_size, h2.tag, h2.page_offset, h2.pool.npages, h2.pool.page_shift) != \
                (1 << ps, tag, po, 8, ps):
            bad.append(f"HypMmu({ps}, {va}) page {h2.page_size:#x} tag {h2.tag:#x} "
                       f"PAGE_OFFSET {h2.page_offset:#x}")
        if h2.kern_hyp_va(U64) != ((1 << (va - 1)) - 1) | tag or h2.kern_hyp_va(0) != tag:
            bad.append(f"kern_hyp_va with VA_BITS {va}: {h2.kern_hyp_va(U64):#x}")
    half = 1 << 47                            # idmap text ending exactly at the half: its start
    if mmu_hyp.HypMmu(idmap_text=(half - 0x100, half)).tag != half:   # picks the tag
        bad.append("the kern_hyp_va tag is not taken from the idmap text's start")
    if mmu_hyp.HypMmu(tag=0x1234).tag != 0x1234:
        bad.append("an explicit tag is ignored")
    kv = {0xFFFF_0000_1234_5678: 0x8000_1234_5678, 0xFFFF_FFFF_FFFF_FFFF: 0xFFFF_FFFF_FFFF,
          0x7FFF_FFFF_FFFF: 0xFFFF_FFFF_FFFF, 0x8000_0000_0000: 0x8000_0000_0000}
    bad += [f"kern_hyp_va({k:#x}) = {hm.kern_hyp_va(k):#x}, expected {v:#x}"
            for k, v in kv.items() if hm.kern_hyp_va(k) != v]
    # kvm_kaddr_to_phys: vmalloc pages, the linear map, and nothing else
    hm.vmalloc[0xFFFF_8000_0000_3000] = 0x8_8000_0000
    for k, v in ((0xFFFF_8000_0000_3ABC, 0x8_8000_0ABC), (0xFFFF_8000_0000_3001, 0x8_8000_0001), (0xFFFF_0000_0000_0000, 0x4000_0000),
                 (0xFFFF_0000_FFFF_FFFF, 0x1_3FFF_FFFF), (0xFFFF_0000_0000_1234, 0x4000_1234)):
        if hm.kvm_kaddr_to_phys(k) != v:
            bad.append(f"kvm_kaddr_to_phys({k:#x}) = {hm.kvm_kaddr_to_phys(k):#x}, not {v:#x}")
    for k in (0xFFFF_0001_0000_0000, 0xFFFE_FFFF_FFFF_F000, 0xFFFF_8000_0000_4000):
        try:
            hm.kvm_kaddr_to_phys(k)
            bad.append(f"kvm_kaddr_to_phys({k:#x}) accepted an address outside both maps")
        except ValueError:
            pass
    # kvm_mmu_init: idmap bounds, the BUG, the overlap refusal, the executable idmap
    for text, ps, tag, want_err, bounds in (
            ((0x4100_0800, 0x4100_0F00), 12, None, 0, (0x4100_0000, 0x4100_1000)),
            ((0x4100_0000, 0x4100_1000), 12, None, 0, (0x4100_0000, 0x4100_1000)),
            ((0x4100_0800, 0x4100_0F00), 12, 0, -errno.EINVAL, None),
            ((0x4100_0000, 0x4100_0F00), 12, 0, 0, (0x4100_0000, 0x4100_1000)),
            ((0x1_0000_0010, 0x1_0000_0020), 12, 0, 0, (0x1_0000_0000, 0x1_0000_1000)),
            ((0xFFFF_F010, 0xFFFF_F020), 12, 0, -errno.EINVAL, None),
            ((0x4100_4800, 0x4100_7000), 14, None, 0, (0x4100_4000, 0x4100_8000)),
            ((0x4100_0800, 0x4100_1800), 12, None, "BUG", None),
            ((0x4100_0800, 0x4100_1000), 12, None, 0, (0x4100_0000, 0x4100_1000)),
            ((0x4100_0000, 0x4100_0001), 12, None, 0, (0x4100_0000, 0x4100_1000)),
            ((0x4100_0801, 0x4100_0803), 12, None, 0, (0x4100_0000, 0x4100_1000)),
            ((0x800, 0x900), 12, 0, -errno.EINVAL, None),
            ((0x0, 0x900), 12, 0, 0, (0x0, 0x1000))):
        h3 = mmu_hyp.HypMmu(ps, 48, 48, idmap_text=text, tag=tag, arena_pages=16)
        try:
            err, bits = mmu_hyp.kvm_mmu_init(h3)
        except ValueError:
            err, bits = "BUG", 48
        where = f"kvm_mmu_init with idmap text {text[0]:#x}-{text[1]:#x} tag {tag}"
        if err != want_err or bits != 48:
            bad.append(f"{where}: {err}, expected {want_err}")
            continue
        if err == 0:
            got = (h3.hyp_idmap_start, h3.hyp_idmap_end)
            if got != bounds or h3.io_map_base != bounds[0]:
                bad.append(f"{where}: idmap {got} io_map_base {h3.io_map_base:#x}")
            t = translate(h3.hyp_pgtable.snapshot(), bounds[0])
            n = translate(h3.hyp_pgtable.snapshot(), bounds[1])
            if not t.valid or t.oa != bounds[0] or t.attrs is None or t.attrs.xn or n.valid:
                bad.append(f"{where}: the idmap page is not mapped executable at itself ({t})")
        elif err != "BUG" and h3.hyp_pgtable is not None:
            bad.append(f"{where}: failed but left a hyp table")
    h4 = mmu_hyp.HypMmu(12, 48, 48, arena_pages=2)          # no room for the idmap's tables
    err, _ = mmu_hyp.kvm_mmu_init(h4)
    if err != -errno.ENOMEM or h4.hyp_pgtable is not None or h4.pool.free_pages() != 2:
        bad.append(f"kvm_mmu_init with a 2-page pool: {err}, table {h4.hyp_pgtable}, "
                   f"{h4.pool.free_pages()} pages free")
    full = mmu_hyp.PagePool(12, 4)
    while full.alloc_page() is not None:
        pass
    h5 = mmu_hyp.HypMmu(pool=full)
    if mmu_hyp.kvm_mmu_init(h5) != (-errno.ENOMEM, 48) or h5.hyp_pgtable is not None:
        bad.append("kvm_mmu_init without a page for the hyp table root is not -ENOMEM")
    # create_hyp_mappings: page by page through kern_hyp_va and kvm_kaddr_to_phys
    hm = mmu_hyp.HypMmu(arena_pages=64)
    mmu_hyp.kvm_mmu_init(hm)
    hm.vmalloc[0xFFFF_8000_0001_0000] = 0x9_0000_0000
    hm.vmalloc[0xFFFF_8000_0001_1000] = 0x7_0000_0000
    for frm, to, pages in ((0xFFFF_0000_0012_3456, 0xFFFF_0000_0012_5001, [0x4012_3000, 0x4012_4000,
                                                                           0x4012_5000]),
                           (0xFFFF_8000_0001_0010, 0xFFFF_8000_0001_1010, [0x9_0000_0000,
                                                                           0x7_0000_0000]),
                           (0xFFFF_0000_0020_0000, 0xFFFF_0000_0020_2000, [0x4020_0000,
                                                                           0x4020_1000])):
        if mmu_hyp.create_hyp_mappings(hm, frm, to, mmu_hyp.PAGE_HYP) != 0:
            bad.append(f"create_hyp_mappings({frm:#x}, {to:#x}) failed")
        hva = hm.kern_hyp_va(frm) & ~0xFFF
        for k, pa in enumerate(pages):
            if not _hyp_maps(hm, hva + k * 0x1000, pa):
                bad.append(f"create_hyp_mappings({frm:#x}, {to:#x}): hyp va "
                           f"{hva + k * 0x1000:#x} does not map {pa:#x}")
        if _hyp_maps(hm, hva + len(pages) * 0x1000, pages[-1] + 0x1000) or \
                translate(hm.hyp_pgtable.snapshot(), hva - 0x1000).valid:
            bad.append(f"create_hyp_mappings({frm:#x}, {to:#x}) maps beyond the range")
    tiny = mmu_hyp.HypMmu(arena_pages=5)
    mmu_hyp.kvm_mmu_init(tiny)
    if mmu_hyp.create_hyp_mappings(tiny, 0xFFFF_0000_8000_0000, 0xFFFF_0000_8000_2000,
                                   mmu_hyp.PAGE_HYP) != -errno.ENOMEM:
        bad.append("create_hyp_mappings does not pass the table's -ENOMEM on")
    vhe = mmu_hyp.HypMmu(vhe=True)
    vhe.hyp_pgtable = False                   # any use of the table would fail
    if mmu_hyp.create_hyp_mappings(vhe, 0xFFFF_0000_0000_0000, 0xFFFF_0000_0000_1000, 3) != 0:
        bad.append("create_hyp_mappings with VHE is not a no-op")
    # create_hyp_io_mappings: the ioremap, its address, iounmap on failure, VHE
    for v in (False, True):
        hm = mmu_hyp.HypMmu(vhe=v, arena_pages=64)
        mmu_hyp.kvm_mmu_init(hm)
        k0 = hm._next_ioremap
        r1 = mmu_hyp.create_hyp_io_mappings(hm, 0x900_0123, 0x1000)
        r2 = mmu_hyp.create_hyp_io_mappings(hm, 0x900_5000, 0x10)
        w1 = (0, k0 + 0x123, k0 + 0x123 if v else hm.hyp_idmap_start - 0x2000 + 0x123)
        w2 = (0, k0 + 0x3000, k0 + 0x3000 if v else hm.hyp_idmap_start - 0x3000)
        if (r1, r2) != (w1, w2) or hm.ioremaps != [(k0 + 0x123, 0x900_0123, 0x1000),
                                                   (k0 + 0x3000, 0x900_5000, 0x10)] \
                or hm._next_ioremap != k0 + 0x5000:
            bad.append(f"create_hyp_io_mappings (vhe={v}): {r1}, {r2}, ioremaps {hm.ioremaps}")
        if not v and not _hyp_maps(hm, w1[2] - 0x123 + 0x1000, 0x900_1000):
            bad.append("create_hyp_io_mappings: the second page of the request is not mapped")
    hm = mmu_hyp.HypMmu(arena_pages=64)
    mmu_hyp.kvm_mmu_init(hm)
    k0 = hm._next_ioremap
    for phys, size, span in ((0x900_0000, 0x1000, 0x1000), (0x900_0001, 0x1000, 0x2000),
                             (0x900_0FFF, 0x2, 0x2000), (0x900_0010, 0xFF0, 0x1000)):
        r = mmu_hyp.create_hyp_io_mappings(hm, phys, size)
        if r[0] or r[1] != k0 + phys % 0x1000 or hm._next_ioremap != k0 + span + 0x1000:
            bad.append(f"create_hyp_io_mappings({phys:#x}, {size:#x}) = {r}: the ioremap of "
                       f"{span:#x} bytes moved the next ioremap by {hm._next_ioremap - k0:#x}")
        k0 = hm._next_ioremap
    b0 = hm.io_map_base
    r = mmu_hyp.create_hyp_exec_mappings(hm, 0x880_0010, 0x20)
    if r != (0, b0 - 0x1000 + 0x10):
        bad.append(f"create_hyp_exec_mappings = {r}, expected (0, {b0 - 0x1000 + 0x10:#x})")
    h6 = mmu_hyp.HypMmu(arena_pages=4)               # the idmap's tables use the whole pool
    mmu_hyp.kvm_mmu_init(h6)
    got = mmu_hyp.create_hyp_io_mappings(h6, 0x900_0000, 0x1000)
    if got != (-errno.ENOMEM, None, None) or h6.ioremaps or h6.io_map_base != 0x40FF_F000:
        bad.append(f"create_hyp_io_mappings whose table allocation fails: {got}, ioremaps "
                   f"{h6.ioremaps}, io_map_base {h6.io_map_base:#x}")
    if mmu_hyp.create_hyp_exec_mappings(h6, 0x900_0000, 0x1000) != (-errno.ENOMEM, None):
        bad.append("create_hyp_exec_mappings whose table allocation fails")
    hm = mmu_hyp.HypMmu(arena_pages=64, idmap_text=(0x3000, 0x3010))
    mmu_hyp.kvm_mmu_init(hm)
    got = mmu_hyp.create_hyp_io_mappings(hm, 0x900_0000, 0x4000)
    if got != (-errno.ENOMEM, None, None) or hm.ioremaps or hm.io_map_base != 0x3000:
        bad.append(f"create_hyp_io_mappings without room: {got}, ioremaps {hm.ioremaps}")
    got = mmu_hyp.create_hyp_exec_mappings(hm, 0x900_0000, 0x4000)
    if got != (-errno.ENOMEM, None):
        bad.append(f"create_hyp_exec_mappings without room: {got}")
    try:
        mmu_hyp.create_hyp_exec_mappings(mmu_hyp.HypMmu(vhe=True), 0x900_0000, 0x1000)
        bad.append("create_hyp_exec_mappings with VHE did not BUG")
    except ValueError:
        pass
    return bad
