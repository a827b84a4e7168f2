"""Random stage-2 operation sequences for the kernel differ, seeded and geometry-aware.

Addresses cluster in a few windows of the IPA space (its start, the last blocks below the IPA
limit, and the boundary between two concatenated root pages where there are several), chosen level
by level from the largest block size down so that operations overlap: maps with sizes and physical
alignments that allow blocks (1G/2M at 4K, 32M at 16K, 512M at 64K), that force pages (a physical
address off by a page), that split blocks into tables and coalesce tables into blocks, re-maps that
differ only in permissions (-EAGAIN), physical addresses beyond the PA range (owner-0 leaves), plus
unmap, set_owner (ids 0..2), wrprotect, mkyoung, mkold, is_young, relax_perms, flush, get_leaf,
destroy (then re-init), arguments beyond the IPA space and wrapping sizes, memcache top-up policies
and injected allocation failures.

One range in six starts inside an entry at some level and reaches into the next entry (``straddle``),
as ``ptspec.proofs.stage2.strategies.straddles`` draws them for the lock-step. Geometry from spec.

An operation is ``(name, args)`` where ``args`` are the keyword arguments of the ``Pair`` method.
The size of a page-by-page map is capped so one operation stays cheap.
"""

from __future__ import annotations

import random

from ptspec.proofs.stage2.strategies import Geometry

U64 = (1 << 64) - 1
PROT_R, PROT_W, PROT_X, PROT_DEVICE = 4, 2, 1, 8
SW0, SW1, SW3 = 1 << 55, 1 << 56, 1 << 58
PROTS = [PROT_R, PROT_R | PROT_W, PROT_R | PROT_X, PROT_R | PROT_W | PROT_X, PROT_W, PROT_X, 0,
         PROT_R | PROT_DEVICE, PROT_R | PROT_W | PROT_DEVICE, PROT_R | PROT_X | PROT_DEVICE,
         PROT_R | PROT_W | SW0, PROT_R | SW3, PROT_R | PROT_W | SW1]
WEIGHTS = {"map": 30, "unmap": 12, "set_owner": 6, "wrprotect": 6, "mkyoung": 5, "mkold": 5,
           "is_young": 4, "relax_perms": 6, "flush": 4, "get_leaf": 6, "destroy": 0.4,
           "free_memcache": 0.4}
MAX_PAGES_PER_OP = 2048


class OpGen:
    """Seeded generator of operations for one geometry."""

    def __init__(self, geom: Geometry, seed: int):
        self.g = geom
        self.rng = random.Random(seed)
        self.srng = random.Random(seed * 2 + 1)     # straddling ranges only
        gran = geom.gran
        self.page = gran.page_size
        self.sz = gran.size
        self.sl = geom.start_level
        self.top = 1 << geom.ia_bits
        self.pa_bits = gran.pa_bits
        # the largest block level this geometry has: window unit
        self.lmax = next(lv for lv in range(max(self.sl, 1), 4) if gran.block_ok[lv] or lv == 3)
        unit = self.sz[self.lmax]
        self.unit = unit
        anchors = [0, 4 * unit, self.top - 4 * unit]
        if geom.pgd_pages > 1:
            root_span = self.sz[self.sl] << (gran.page_shift - 3)
            anchors.append(root_span - 2 * unit)
        self.anchors = sorted({a for a in anchors if 0 <= a < self.top})
        self.pbase = 1 << 39                     # aligned to every block size we use
        self.names = list(WEIGHTS)
        self.weights = [WEIGHTS[n] for n in self.names]
        self.destroyed = False

    # -- pieces ---------------------------------------------------------------------------------
    def level(self):
        return self.rng.randint(self.lmax, 3)

    def addr(self, level):
        r = self.rng
        a = r.choice(self.anchors)
        for lv in range(self.lmax, level + 1):
            a += r.randint(0, 3 if lv == self.lmax else 2) * self.sz[lv]
        return min(a, self.top - self.page)

    def size(self, level):
        r = self.rng
        s = r.choice((1, 1, 1, 2, 3)) * self.sz[level]
        x = r.random()
        if x < 0.15:
            s += self.page
        elif x < 0.3 and s > self.page:
            s -= self.page
        elif x < 0.4:
            s = r.randint(1, 5) * self.page
        return s

    def prot(self):
        return self.rng.choice(PROTS)

    def phys(self, addr, level, size):
        r = self.rng
        x = r.random()
        aligned = self.pbase + (addr % (4 * self.unit))
        if x < 0.03:
            return r.choice(((1 << self.pa_bits) - self.page, 1 << self.pa_bits, U64 - self.page))
        if x < 0.25 and size // self.page <= MAX_PAGES_PER_OP:
            return aligned + self.page                # forces page mappings
        if x < 0.35:
            return self.pbase + r.randint(0, 7) * self.sz[level]
        return aligned

    def mc(self):
        x = self.rng.random()
        mc = "topup" if x < 0.93 else ("raw" if x < 0.97 else "none")
        fail = self.rng.randint(0, 2) if self.rng.random() < 0.03 else None
        return mc, fail

    def straddle(self, addr, size):
        """One range in six, instead of (addr, size): a range that starts inside the entry holding
        addr at some level from the root down to level 2 and reaches into the next entry (a page,
        two pages or half an entry on each side), where a walker that advances without aligning
        down first goes wrong. Drawn from a second generator, so the other operations of a seed
        stay as they were."""
        r = self.srng
        if r.random() >= 1 / 6:
            return addr, size
        g = self.sz[r.randint(max(self.sl, 1), 2)]
        boundary = (addr // g + 1) * g
        back = r.choice((self.page, 2 * self.page, g // 2))
        ahead = r.choice((self.page, 2 * self.page, g // 2))
        if boundary + ahead > self.top:
            return addr, size
        return boundary - back, back + ahead

    def bad_range(self, addr, size):
        """Occasionally arguments the walker must refuse or treat as empty."""
        x = self.rng.random()
        if x < 0.01:
            return self.top + self.page, self.page            # -ERANGE: start beyond
        if x < 0.02:
            return addr, self.top                              # -ERANGE unless addr is 0
        if x < 0.025:
            return addr, U64 - addr                             # end wraps: empty walk
        if x < 0.03:
            return addr, 0
        return addr, size

    # -- one operation ---------------------------------------------------------------------------
    def next(self):
        r = self.rng
        if self.destroyed:
            self.destroyed = False if r.random() < 0.7 else True
            if not self.destroyed:
                return "init", {}
            lv = self.level()
            return "unmap", {"addr": self.addr(lv), "size": self.page}     # -EINVAL: no root
        op = r.choices(self.names, self.weights)[0]
        lv = self.level()
        addr = self.addr(lv)
        if op == "map":
            addr, size = self.straddle(addr, self.size(lv))
            phys = self.phys(addr, lv, size)
            if phys % self.sz[lv] != addr % self.sz[lv] and size // self.page > MAX_PAGES_PER_OP:
                size = self.sz[lv] if self.sz[lv] // self.page <= MAX_PAGES_PER_OP else self.page
            addr, size = self.bad_range(addr, size)
            mc, fail = self.mc()
            return "map", {"addr": addr, "size": size, "phys": phys, "prot": self.prot(),
                           "mc": mc, "fail": fail}
        if op == "set_owner":
            addr, size = self.straddle(addr, self.size(lv))
            if size // self.page > MAX_PAGES_PER_OP:
                size = self.page * r.randint(1, 8)
            addr, size = self.bad_range(addr, size)
            mc, fail = self.mc()
            return "set_owner", {"addr": addr, "size": size, "owner_id": r.choice((0, 1, 1, 2)),
                                 "mc": mc, "fail": fail}
        if op in ("unmap", "wrprotect", "flush"):
            addr, size = self.bad_range(*self.straddle(addr, self.size(lv)))
            return op, {"addr": addr, "size": size}
        if op in ("mkyoung", "mkold", "is_young", "get_leaf"):
            if r.random() < 0.01:
                addr = self.top + r.randint(0, 3) * self.page
            return op, {"addr": addr + r.randrange(self.page)}
        if op == "relax_perms":
            return op, {"addr": addr + r.randrange(self.page), "prot": self.prot()}
        if op == "destroy":
            self.destroyed = True
            return "destroy", {}
        return "free_memcache", {}
