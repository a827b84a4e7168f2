"""Benchmarks for the lguest model (numbers, not assertions): run with
``.venv/bin/python bench/bench_lguest.py``.

Prints, for both formats: impl alone (guest faults and set_pte hypercalls per second on a booted
guest, a clear_all of a populated shadow), the spec alone (check_state per second on a populated
state), the hypothesis lock-step throughput (checked steps per second, cooperative and hostile),
and exhaustive exploration (transitions per CPU second of this process at depths 2 and 3: the
machine may be shared, and CPU time is what the code costs).
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from ptspec.impl.lguest import Lguest  # noqa: E402
from ptspec.proofs.lguest import exhaustive as lguest_exhaustive
from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest import lockstep as lguest_lockstep  # noqa: E402
from ptspec.spec.lguest.check import lguest_check_state  # noqa: E402


def booted(fmt):
    lg = Lguest(fmt, pfn_limit=64, arena_pages=1024)
    L = G.GuestLayout(fmt, pfn_limit=64)
    lg.init()
    for a, v in L.boot_writes():
        lg.guest_write(a, v)
    lg.guest_write(L.lguest_data, G.KERNEL_ADDRESS)
    lg.guest_data_init(L.lguest_data)
    lg.new_pagetable(L.pgdirs[0])
    for k in range(512 if fmt == "pae" else 1024):                 # a full user PTE page
        lg.guest_write(L.pte_addr(0, k * 4096), G.pte_value(12 + k % 40, G.P | G.RW | G.US | G.A))
    return lg, L


def rate(n, seconds):
    return f"{n / seconds:10.0f}/s"


def main():
    for fmt in ("2level", "pae"):
        lg, L = booted(fmt)
        n = 512 if fmt == "pae" else 1024
        t = time.perf_counter()
        for k in range(n):
            lg.fault(k * 4096, 6)
        faults = time.perf_counter() - t
        t = time.perf_counter()
        for k in range(n):
            lg.set_pte(L.pgdirs[0], k * 4096, G.pte_value(12 + k % 40, G.P | G.RW | G.US | G.A | G.D))
        set_ptes = time.perf_counter() - t
        raw = lg.raw_state()
        t = time.perf_counter()
        reps = 20
        for _ in range(reps):
            found = lguest_check_state(raw, coherent=True)
        checks = time.perf_counter() - t
        t = time.perf_counter()
        lg.clear_all()
        clear = time.perf_counter() - t
        print(f"{fmt:6}  demand_page (user write)  {rate(n, faults)}")
        print(f"{fmt:6}  set_pte (dirty)           {rate(n, set_ptes)}")
        print(f"{fmt:6}  clear_all of {n} PTEs      {clear * 1e3:9.2f} ms")
        print(f"{fmt:6}  spec check_state ({n} PTEs, coherent) {rate(reps, checks)}  "
              f"violations {len(found)}")
        for mode in ("coop", "hostile"):
            out = lguest_lockstep.run_lockstep(fmt, mode, examples=30, steps=30, seed=0)
            print(f"{fmt:6}  lock-step {mode:8} {out.status:7} {out.steps:6} steps "
                  f"{rate(out.steps, out.cpu_seconds)} (per CPU second)")
        for depth in (2, 3):
            cpu = time.process_time()
            out = lguest_exhaustive.explore(depth, fmt)
            cpu = time.process_time() - cpu
            print(f"{fmt:6}  exhaustive depth {depth}  {out.status} {out.states} states "
                  f"{out.transitions} transitions {out.transitions / cpu:8.0f} per CPU second")


if __name__ == "__main__":
    main()
