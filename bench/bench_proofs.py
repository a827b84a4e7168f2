"""Time the z3 and CrossHair obligations (s2.z3.*, s2.crosshair.*), one by one, in a profile.

Usage: .venv/bin/python bench/bench_proofs.py [profile] [pattern]
Prints wall-clock and CPU seconds per obligation and the totals (CPU time is the fairer number on a
shared machine). This is where speed is measured; the tests assert none of it.
"""

import sys
import time

from ptspec.proofs.runner import registry


def main(profile: str = "default", pattern: str = "s2.z3.*,s2.crosshair.*") -> None:
    registry.load_all()
    wall = cpu = 0.0
    for ob in registry.select(pattern, profile):
        c0 = time.process_time()
        r = registry.run_obligation(ob, profile, 0)
        c = time.process_time() - c0
        wall += r.seconds
        cpu += c
        print(f"{ob.id:32s} {r.status:8s} wall {r.seconds:6.2f}s  cpu {c:6.2f}s  {r.examples:5d} checked")
    print(f"{'total':32s} {'':8s} wall {wall:6.2f}s  cpu {cpu:6.2f}s")


if __name__ == "__main__":
    main(*sys.argv[1:])
