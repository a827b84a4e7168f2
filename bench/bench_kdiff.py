"""Benchmark: the kernel's 6.1 pgtable.c (C, via ctypes) against impl on the same large operations.

Figures (each side timed around its own calls, in the same run, tables compared word for word
after each section):

* map of 1 GiB with 4K pages as one call (physical address off by a page, so no block fits);
* the same 1 GiB mapped page by page (262144 calls, memcache topped up before each as KVM does);
* map of 1 GiB of 2M blocks as one call;
* unmap of each of them (one call).

Run: .venv/bin/python bench/bench_kdiff.py [--quick]   (--quick uses 64 MiB instead of 1 GiB)
Needs the cached linux-source-6.1 files (ptspec diff-kernel --fetch) and a C compiler.
"""

from __future__ import annotations

import sys
import time

from ptspec.proofs.kernel import build
from ptspec.proofs.kernel import fetch
from ptspec.proofs.kernel.pair import Pair

GIB = 1 << 30
PAGE = 1 << 12
PHYS = 1 << 39


def timed(p, fn):
    c0, i0, t0 = p.c_seconds, p.i_seconds, time.perf_counter()
    calls0 = p.ops
    fn()
    diffs = p.compare()
    if diffs:
        raise SystemExit("DIFFERENCE: " + "; ".join(map(str, diffs[:3])))
    return p.c_seconds - c0, p.i_seconds - i0, p.ops - calls0, time.perf_counter() - t0


def main(argv):
    size = (64 << 20) if "--quick" in argv else GIB
    src, why = fetch.locate()
    if src is None:
        print(f"bench_kdiff: SKIPPED: {why}")
        return 2
    try:
        build.library(12, src)
    except build.BuildError as exc:
        print(f"bench_kdiff: SKIPPED: {exc}")
        return 2
    npages = size // PAGE // 512 + 1200
    rows = []

    def pair():
        p = Pair("4k-39", "6.1", npages=npages, mc_capacity=1024)
        p.lines = p.lines[:2]
        return p

    def row(name, p, fn):
        c, i, calls, wall = timed(p, fn)
        rows.append((name, calls, c, i))

    p = pair()
    p.topup(1024)
    row(f"map {size >> 20} MiB, 4K pages, one call", p,
        lambda: p.map(0, size, PHYS + PAGE, 6, mc="raw"))
    row(f"unmap {size >> 20} MiB of 4K pages, one call", p, lambda: p.unmap(0, size))

    p = pair()

    def page_by_page():
        for a in range(0, size, PAGE):
            p.map(a, PAGE, PHYS + PAGE + a, 6, mc="topup")
    row(f"map {size >> 20} MiB, page by page", p, page_by_page)
    row(f"unmap {size >> 20} MiB of 4K pages, one call", p, lambda: p.unmap(0, size))

    p = pair()
    # the output address is 2M- but not 1G-aligned, so 2M blocks (not one 1G block) are built
    row(f"map {size >> 20} MiB of 2M blocks, one call", p,
        lambda: p.map(0, size, PHYS + (2 << 20), 6, mc="topup"))
    row(f"unmap {size >> 20} MiB of 2M blocks, one call", p, lambda: p.unmap(0, size))

    lib = p.c.lib
    t0 = time.perf_counter()
    for _ in range(100000):
        lib.kdiff_free_pages()
    ctypes_us = (time.perf_counter() - t0) * 10
    print(f"kernel: Linux {src.version} pgtable.c, host build; impl profile 6.1; tables equal "
          "after every section")
    print(f"(C times include the ctypes call and Pair's bookkeeping; a bare ctypes call costs "
          f"{ctypes_us:.2f} us)")
    print(f"{'operation':44} {'calls':>7} {'C s':>9} {'impl s':>9} {'C us/call':>10} "
          f"{'impl us/call':>12} {'impl/C':>7}")
    for name, calls, c, i in rows:
        print(f"{name:44} {calls:7d} {c:9.3f} {i:9.3f} {c / calls * 1e6:10.1f} "
              f"{i / calls * 1e6:12.1f} {i / c if c else float('inf'):7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
