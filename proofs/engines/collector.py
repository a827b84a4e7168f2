"""Python's cyclic garbage collector during the engines' runs: when it walks what, and how often.

Models nothing of the kernel. A lock-step step allocates thousands of short-lived containers
(snapshot tuples, states, leaf intervals, the CMO log's events), so with the collector's default
thresholds a young-generation collection comes every few hundred allocations, several per step,
and each walks every young container still alive: work that frees nothing, because the objects a
step leaves behind are either still in use or freed at once by their reference counts. The only
cyclic garbage a run makes is its own table's mm_ops (which holds bound methods of itself, and
with them the page pool), dropped when the run ends: a spec walk keeps only what it reads of its
state (spec.arch.walk.WalkSource), not the state, and the tree diff is cached on the post-state,
not on its walk (spec.stage2.treediff), so a dropped state is freed by its reference count
(tests/test_collector.py holds that the spec leaves no cycle).

* ``quiet_gc()``, around a whole lock-step: the objects that exist before it (modules, the spec's
  registries, the caller's results) are set aside from its collections (gc.freeze), so no
  collection walks them; they are put back afterwards.
* ``run_gc()``, around one run: the collector is paused for the run, and one collection of the
  young generations at its end frees what the run dropped (its subject's cycles included). The
  same objects are freed as with the collector running, at the run's end instead of during it;
  nothing older is walked (gc.collect(1) leaves the oldest generation to the collector's own
  schedule). The collection walks what is still alive in the young generations too, so the block
  is best placed where the run's harness is dropped by its end (the lock-step's loop); a replay,
  whose caller keeps the harness, pays for walking it once.

Both do nothing when the collector is off (a caller's choice, left alone), and nest: an inner
``quiet_gc`` leaves an outer freeze in place, an inner ``run_gc`` leaves the pause and the
collection to the outer one. Measured in docs/kernel.md (throughput).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """The objects that exist before the block are left out of its garbage collections
    (gc.freeze), and put back afterwards; nothing is done when some are frozen already (a nested
    run, or a caller's own tuning) or the collector is off."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def run_gc() -> Iterator[None]:
    """The block (one run) with the cyclic collector paused, then one collection of the young
    generations, which frees the cycles the run dropped; nothing is done when the collector is
    off already (a caller's choice, or an outer run_gc). The collector is back on however the
    block ends."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(1)
