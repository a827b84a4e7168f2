"""Error paths: allocation failure at every allocation point, and bad arguments.

For each scenario (a few setup operations that leave blocks, pages, owner annotations and
concatenated roots behind, then one target operation) the target is first run to count the
page-table allocations it makes; then, from the same starting state, it is run again once per
allocation point with exactly that allocation failing. Every run is judged by the spec like any
other step: all invariants of the state after the failure (nothing leaked, refcounts exact), S2-BBM,
and the operation's failure rule (part of the range may be done, nothing outside it changed).
Initialising the table with the root allocation failing is checked the same way.

Bad arguments -- unaligned, beyond the IPA space, size 0, sizes that wrap, owner ids out of range,
prot values the kernel refuses, and values that are not u64 at all (negative, too large, wrong type,
which impl refuses with ValueError before touching anything) -- are run on every scenario's
starting state. The harness judges the refusal itself (C-ARGS): ValueError for exactly the calls
whose arguments are not u64 values (an owner id: not a u8), a kernel return value for every other
call; a refused call must leave all of impl's state as it was (proofs/stage2/refusal.py: tables,
pool, memcache, allocation counter, undrained log, WARNs).

Misuse the harness's operations cannot express -- a memcache of another page pool, an object that
is no memcache, a non-bool flag, memcache and pool calls with counts that are not counts -- is run
directly on each starting state (MISUSE) and judged the same way: refused, and nothing changed.
"""

from __future__ import annotations


from ptspec import spec
from ptspec.impl.pgtable.pool import KvmMmuMemoryCache, PagePool
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_DEVICE, KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_RW, KVM_PGTABLE_PROT_RWX, KVM_PGTABLE_PROT_SW1, KVM_PGTABLE_PROT_X

from ptspec.impl.pgtable.stage2_map import KVM_PGTABLE_S2_IDMAP
from ptspec.spec.arch import geometry as G

from ptspec.proofs.stage2 import refusal
from ptspec.proofs.stage2.harness import Stage2Harness

K4, M2, G1 = (G.granule_size(level, 12) for level in (3, 2, 1))     # 4K page, 2M and 1G blocks
U64 = (1 << 64) - 1


def scenarios(page_shift: int = 12, ia_bits: int = 39):
    """(SETUPS, TARGETS, IDMAP_STEPS, BAD_ARGS) scaled to a geometry: pages, level-2 blocks and
    level-1 entries of the granule (K4, M2, G1 stand for them; with 16K or 64K pages G1 is the
    span of a level-1 entry, covered by level-2 blocks), and addresses past the IPA space from
    ``ia_bits``. The defaults are impl's table (4K, 39-bit); the kernel-side engines use the rest."""
    K4, M2, G1 = (G.granule_size(level, page_shift) for level in (3, 2, 1))
    setups = {
        "empty": [],
        "block": [("map", dict(addr=G1, size=M2, phys=2 * G1, prot=KVM_PGTABLE_PROT_RW))],
        "pages": [("map", dict(addr=G1 + K4, size=3 * K4, phys=2 * G1 + 5 * K4,
                               prot=KVM_PGTABLE_PROT_RWX))],
        "owned": [("set_owner", dict(addr=G1 + M2, size=2 * K4, owner_id=1)),
                  ("map", dict(addr=G1, size=M2, phys=2 * G1, prot=KVM_PGTABLE_PROT_R))],
        "gigablock": [("map", dict(addr=G1, size=G1, phys=2 * G1, prot=KVM_PGTABLE_PROT_RW))],
    }

    targets = [
        ("map", dict(addr=G1 + K4, size=K4, phys=3 * G1, prot=KVM_PGTABLE_PROT_RW)),
        ("map", dict(addr=G1 + M2 - K4, size=M2 + 2 * K4, phys=3 * G1, prot=KVM_PGTABLE_PROT_RW)),
        ("map", dict(addr=G1 - K4, size=G1 + 2 * K4, phys=3 * G1 - K4, prot=KVM_PGTABLE_PROT_R)),
        ("map", dict(addr=0, size=4 * M2, phys=2 * G1 + K4, prot=KVM_PGTABLE_PROT_R)),
        ("set_owner", dict(addr=G1 + 5 * K4, size=M2, owner_id=1)),
        ("set_owner", dict(addr=G1, size=2 * K4, owner_id=0)),
    ]

    idmap_steps = [
        ("map", dict(addr=G1, size=M2, phys=G1, prot=KVM_PGTABLE_PROT_RW)),              # identity: a block
        ("map", dict(addr=G1 + M2, size=K4, phys=G1, prot=KVM_PGTABLE_PROT_RW)),         # -EINVAL
        ("map", dict(addr=G1 + K4, size=K4, phys=G1 + K4, prot=KVM_PGTABLE_PROT_R)),     # splits the block
        ("set_owner", dict(addr=G1 + 2 * M2, size=K4, owner_id=1)),
    ]

    bad_args = [
        ("map", dict(addr=G1 + 1, size=1, phys=2 * G1 + 7, prot=KVM_PGTABLE_PROT_RW)),   # unaligned
        ("map", dict(addr=1 << ia_bits, size=K4, phys=0, prot=KVM_PGTABLE_PROT_RW)),          # beyond IPA
        ("map", dict(addr=(1 << ia_bits) - K4, size=2 * K4, phys=0, prot=KVM_PGTABLE_PROT_RW)),
        ("map", dict(addr=G1, size=0, phys=0, prot=KVM_PGTABLE_PROT_RW)),                # size 0
        ("map", dict(addr=G1, size=U64, phys=0, prot=KVM_PGTABLE_PROT_RW)),              # wraps
        ("map", dict(addr=G1, size=1 << 63, phys=0, prot=KVM_PGTABLE_PROT_RW)),          # huge
        ("map", dict(addr=G1, size=K4, phys=0,
                     prot=KVM_PGTABLE_PROT_DEVICE | KVM_PGTABLE_PROT_X)),                # -EINVAL
        # no memcache (mc == NULL): -ENOMEM where a table is needed, a block still maps
        ("map", dict(addr=3 * G1 + K4, size=K4, phys=2 * G1, prot=KVM_PGTABLE_PROT_RW, no_memcache=True)),
        ("map", dict(addr=3 * G1, size=M2, phys=2 * G1, prot=KVM_PGTABLE_PROT_RW, no_memcache=True)),
        ("set_owner", dict(addr=3 * G1 + K4, size=K4, owner_id=1, no_memcache=True)),
        ("set_owner", dict(addr=G1, size=K4, owner_id=2)),                               # -EINVAL
        ("set_owner", dict(addr=G1, size=K4, owner_id=255)),
        ("unmap", dict(addr=U64 - K4 + 1, size=K4)),
        ("unmap", dict(addr=G1 + 3, size=U64 - 2)),
        ("wrprotect", dict(addr=1 << (ia_bits + 1), size=1)),
        ("flush", dict(addr=G1, size=1 << (ia_bits + 1))),
        ("relax_perms", dict(addr=G1, prot=KVM_PGTABLE_PROT_RW | KVM_PGTABLE_PROT_SW1)),
        ("relax_perms", dict(addr=1 << ia_bits, prot=KVM_PGTABLE_PROT_RW)),
        ("mkyoung", dict(addr=U64)),
        ("get_leaf", dict(addr=1 << ia_bits)),
        # Not u64 at all: Python misuse, refused with ValueError and nothing changed.
        ("map", dict(addr=-K4, size=K4, phys=0, prot=KVM_PGTABLE_PROT_RW)),
        ("unmap", dict(addr=G1, size=-1)),
        ("map", dict(addr=G1, size=K4, phys=1 << 64, prot=KVM_PGTABLE_PROT_RW)),
        ("set_owner", dict(addr=G1, size=K4, owner_id=-1)),
        ("set_owner", dict(addr=G1, size=K4, owner_id=256)),
        ("map", dict(addr=G1, size=K4, phys=0, prot=True)),
        ("wrprotect", dict(addr="0x40000000", size=K4)),
        ("mkold", dict(addr=None)),
    ]
    return setups, targets, idmap_steps, bad_args


SETUPS, TARGETS, IDMAP_STEPS, BAD_ARGS = scenarios()



def _foreign_memcache(pgt):
    """A topped-up memcache of another pool with the same page size: its pages are not pgt's."""
    mc = KvmMmuMemoryCache(PagePool(pgt.gran.page_shift, 16), 4)
    mc.topup(4)
    return mc


# (label, call(pgt, mc)[, prepare(pgt, mc)]); each call must raise TypeError/ValueError and change
# nothing; prepare (not judged) first makes the state a wrong call would visibly change.
MISUSE = [
    ("map with a memcache of another pool (needs a table)",
     lambda pgt, mc: pgt.map(3 * G1 + K4, K4, 2 * G1, KVM_PGTABLE_PROT_RW, _foreign_memcache(pgt))),
    ("map with a memcache of another pool (a block)",
     lambda pgt, mc: pgt.map(3 * G1, M2, 2 * G1, KVM_PGTABLE_PROT_RW, _foreign_memcache(pgt))),
    ("set_owner with a memcache of another pool",
     lambda pgt, mc: pgt.set_owner(3 * G1 + K4, K4, _foreign_memcache(pgt), 1)),
    ("map with a list for a memcache", lambda pgt, mc: pgt.map(G1, K4, 0, KVM_PGTABLE_PROT_RW, [])),
    ("map with a float address", lambda pgt, mc: pgt.map(1.5, K4, 0, KVM_PGTABLE_PROT_RW, mc)),
    ("set_owner with owner id True", lambda pgt, mc: pgt.set_owner(G1, K4, mc, True)),
    ("snapshot with drain_log='no' (a TLB invalidation logged)",
     lambda pgt, mc: pgt.snapshot(drain_log="no"), lambda pgt, mc: pgt.tlb_flush_vmid()),
    ("memcache topup of -1 pages", lambda pgt, mc: mc.topup(-1)),
    ("memcache topup of True pages", lambda pgt, mc: mc.topup(True)),
    ("memcache topup beyond its capacity", lambda pgt, mc: mc.topup(mc.capacity + 1)),
    ("pool alloc_pages_exact(0)", lambda pgt, mc: pgt.pool.alloc_pages_exact(0)),
]


def misuse(h: Stage2Harness, label: str, call, prepare=None) -> list:
    """Run one misuse call on h's table; C-ARGS violations if it was accepted or changed state."""
    if prepare is not None:
        prepare(h.pgt, h.mc)
    pre = refusal.snapshot(h.pgt, h.mc)
    try:
        ret = call(h.pgt, h.mc)
    except Exception as exc:          # noqa: BLE001 -- any other exception is itself the finding
        changed = refusal.differences(pre, refusal.snapshot(h.pgt, h.mc))
        how = f"{type(exc).__name__}: {exc}"
        h.lines.append(f"# {label}: raised {how}")
        found = [] if isinstance(exc, (TypeError, ValueError)) else [spec.Violation(
            "C-ARGS", f"{label}: raised {how}, not a TypeError/ValueError refusal", {})]
        if changed:
            found.append(spec.Violation("C-ARGS", f"{label}: raised {how} but changed "
                                                  f"{', '.join(changed)}", {}))
        return found
    h.lines.append(f"# {label}: accepted, returned {ret!r}")
    return [spec.Violation("C-ARGS", f"{label}: accepted (returned {ret!r})", {})]


def start(setup: str, harness_factory=Stage2Harness) -> Stage2Harness:
    h = harness_factory(12, 39, arena_pages=96, mc_capacity=8)
    for op, args in SETUPS[setup]:
        h.step(op, **args)
    return h


def count_allocations(h: Stage2Harness, op: str, args: dict) -> int:
    probe = h.fork()
    probe.check = False
    before = probe.pgt.mm_ops.nr_allocs
    probe.step(op, **args)
    return probe.pgt.mm_ops.nr_allocs - before


def run_all(harness_factory=Stage2Harness, progress=None):
    """Yields (label, harness, violations) for every injected failure and every bad argument."""
    failing_init = _failing_init(harness_factory)
    yield "init with zalloc_pages_exact failing", failing_init, failing_init.violations
    # an identity-mapped table (KVM_PGTABLE_S2_IDMAP, the pKVM host): addr != phys is refused
    for i, (op, args) in enumerate(IDMAP_STEPS):
        h = harness_factory(12, 39, arena_pages=96, mc_capacity=8, flags=KVM_PGTABLE_S2_IDMAP)
        found = []
        for op2, args2 in IDMAP_STEPS[:i + 1]:
            found += h.step(op2, **args2)[1]
        if progress:
            progress()
        yield f"identity map: {op}({args})", h, found
    for setup in SETUPS:
        base = start(setup, harness_factory)
        if base.violations:
            yield f"setup {setup}", base, base.violations
            continue
        for op, args in TARGETS:
            n = count_allocations(base, op, args)
            for i in range(n):
                h = base.fork()
                h.fail_allocation(i)
                _, found = h.step(op, **args)
                if progress:
                    progress()
                yield f"{setup}: {op} with allocation {i + 1}/{n} failing", h, found
        for op, args in BAD_ARGS:
            h = base.fork()
            _, found = h.step(op, **args)
            if progress:
                progress()
            yield f"{setup}: {op}({args})", h, found
        for label, call, *prepare in MISUSE:
            h = base.fork()
            found = misuse(h, label, call, *prepare)
            h.violations.extend(found)
            if progress:
                progress()
            yield f"{setup}: {label}", h, found


def _failing_init(harness_factory):
    """A harness whose init() met a failing root allocation."""
    class FailingInit(harness_factory):
        def _call(self, op, args):
            if op == "init":
                self.pgt.mm_ops.fail_at = {self.pgt.mm_ops.nr_allocs}
                self.lines.append("pgt.mm_ops.fail_at = {pgt.mm_ops.nr_allocs}")
            return super()._call(op, args)
    return FailingInit(12, 39, arena_pages=96, mc_capacity=8)
