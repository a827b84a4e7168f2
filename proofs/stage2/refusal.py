"""What a refused call must leave as it was: the whole impl-side state of a stage-2 or hyp table.

impl refuses Python misuse (a value that is no C value, a memcache of another pool, a flag that is
not a bool) with ValueError/TypeError, and must do so before it changes anything (C-ARGS). The raw
state the spec reads is not all of what a half-done call could change: the memcache's stack and its
order, the pool's free map, the allocation counter that fault injection counts on, the TLB/CMO log
not yet drained, the WARN list. ``snapshot`` takes all of it, without draining anything;
``differences`` names the parts that differ between two snapshots (empty: nothing changed).
"""

from __future__ import annotations


def snapshot(pgt, mc=None) -> dict:
    """Everything of pgt (a KvmPgtable or HypPgtable), its pool and the memcache mc."""
    pool = pgt.pool
    log = getattr(pgt, "log", None)
    return {
        "pgd": None if pgt.pgd is None else list(pgt.pgd),
        "pages": {pa: list(words) for pa, words in pool.pages.items()},   # memcache pages too
        "refcount": dict(pool.refcount),
        "free": bytes(pool._is_free),
        "in_memcache": sorted(pool.in_memcache),
        "pool_errors": list(pool.errors),
        "pool_warnings": list(pool.warnings),
        "memcache": None if mc is None else list(mc.objects),
        "nr_allocs": pgt.mm_ops.nr_allocs,
        "fail_at": sorted(pgt.mm_ops.fail_at),
        "log": None if log is None else [tuple(e) for e in log],
        "warnings": list(pgt.warnings),
    }


def differences(before: dict, after: dict) -> list[str]:
    """The parts of two snapshots that differ, by name."""
    return [k for k in before if before[k] != after.get(k)]
