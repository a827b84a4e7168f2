"""Benchmarks of the stage-2 impl and of the lock-step checker (a script, not a test).

Run: .venv/bin/python bench/bench_stage2.py [--repeat N]
Prints the best of N runs for each figure the stage-2 issue asks for:
  map + unmap of 1 GiB at 4K pages on 4K/39-bit (262,144 leaves), map of 1 GiB as 2M blocks,
  and lock-step throughput (operations per second with every invariant and contract checked).
"""

from __future__ import annotations

import argparse
import random
import time

from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_RW
from ptspec.impl.pgtable.stage2 import KvmPgtable

G1, M2, K4 = 1 << 30, 1 << 21, 1 << 12


def fresh(cmo=False):
    pgt = KvmPgtable(12, 39, pool=PagePool(12, 1 << 11), cmo=cmo)
    pgt.init()
    mc = KvmMmuMemoryCache(pgt.pool, 600)
    mc.topup(600)
    return pgt, mc


def bench_pages():
    pgt, mc = fresh()
    t0 = time.perf_counter()
    # phys misaligned to 2M by one page: no block is possible, every leaf is a page.
    assert pgt.map(G1, G1, 2 * G1 + K4, KVM_PGTABLE_PROT_RW, mc) == 0
    t1 = time.perf_counter()
    assert pgt.unmap(G1, G1) == 0
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def bench_blocks():
    pgt, mc = fresh()
    t0 = time.perf_counter()
    # phys 2M aligned but not 1G aligned: 512 level-2 blocks.
    assert pgt.map(G1, G1, 2 * G1 + M2, KVM_PGTABLE_PROT_RW, mc) == 0
    t1 = time.perf_counter()
    assert pgt.unmap(G1, G1) == 0
    return t1 - t0, time.perf_counter() - t1


def bench_lockstep(n_ops=3000, seed=0):
    from ptspec.proofs.stage2.harness import Stage2Harness
    rng = random.Random(seed)
    h = Stage2Harness(12, 39, arena_pages=256)
    W = G1
    addrs = [W + i * K4 for i in (0, 1, 2, 511, 512, 513)] + [W + M2 * i for i in range(3)]
    sizes = [K4, 2 * K4, M2, M2 + K4]
    t0 = time.perf_counter()
    for _ in range(n_ops):
        op = rng.choice(["map", "map", "unmap", "set_owner", "wrprotect", "mkold", "relax_perms"])
        a = rng.choice(addrs)
        if op == "map":
            h.step(op, addr=a, size=rng.choice(sizes), phys=2 * G1 + (a - W), prot=6)
        elif op == "set_owner":
            h.step(op, addr=a, size=rng.choice(sizes), owner_id=rng.choice([0, 1]))
        elif op in ("unmap", "wrprotect"):
            h.step(op, addr=a, size=rng.choice(sizes))
        elif op == "mkold":
            h.step(op, addr=a)
        else:
            h.step(op, addr=a, prot=7)
    dt = time.perf_counter() - t0
    assert not h.violations, h.violations[:3]
    return n_ops / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-lockstep", action="store_true")
    args = ap.parse_args()
    pages = min((bench_pages() for _ in range(args.repeat)), key=sum)
    blocks = min((bench_blocks() for _ in range(args.repeat)), key=sum)
    print(f"1 GiB at 4K pages (262144 leaves): map {pages[0]:.3f} s + unmap {pages[1]:.3f} s "
          f"= {sum(pages):.3f} s")
    print(f"1 GiB as 2M blocks (512 leaves):   map {blocks[0] * 1e3:.2f} ms, "
          f"unmap {blocks[1] * 1e3:.2f} ms")
    if not args.skip_lockstep:
        rate = max(bench_lockstep() for _ in range(args.repeat))
        print(f"lock-step, all invariants and contracts checked: {rate:.0f} ops/s")


if __name__ == "__main__":
    main()
