"""A ghost model of the data and instruction caches, per output (physical) address.

Models: for every physical address, two facts a guest's view of memory depends on:

* **D-clean**: its D-cache lines were cleaned (and invalidated) to the Point of Coherency since the
  host last wrote it, so a non-cacheable access (the guest's own stage 1 may make a cacheable
  stage-2 mapping non-cacheable) reads what the host wrote;
* **I-clean**: its I-cache was invalidated to the Point of Unification since the host last wrote
  it, *after* its D-side reached the PoU (a D-cache clean since that write, or a D-side the caller
  declares coherent), so an instruction fetch does not find stale instructions.

The events that change them: a host write makes both false; ``["dcache", pa, size]`` (the
kernel's ``dcache_clean_inval_poc``, which also reaches the PoU) makes D-clean true;
``["icache", pa, size]`` (``icache_inval_pou``) makes I-clean true where the D-side is clean or
coherent at that moment. Events are applied in log order. Both facts are kept as sorted, disjoint
intervals, so a 1G block costs what a page costs.

Leaves out: which host writes happen (the caller says: ptspec.spec.stage2.cache writes every page a
stage 2 stops mapping), the guest's own writes (the guest maintains its caches for them), cache
line granularity (the kernel maintains whole pages), and the PoU/PoC difference beyond "a clean
to PoC also reaches the PoU".
"""

from bisect import bisect_left, bisect_right


class Intervals:
    """A set of addresses as sorted, disjoint, non-adjacent [lo, hi) intervals."""

    __slots__ = ("lo", "hi")

    def __init__(self):
        self.lo, self.hi = [], []

    def __repr__(self):
        return "Intervals(" + ", ".join(f"[{a:#x}, {b:#x})" for a, b in zip(self.lo, self.hi)) + ")"

    def __eq__(self, other):
        return isinstance(other, Intervals) and (self.lo, self.hi) == (other.lo, other.hi)

    def pairs(self):
        return list(zip(self.lo, self.hi))

    def add(self, a, b):
        """Add [a, b)."""
        if a >= b:
            return
        i = bisect_left(self.hi, a)          # first interval ending at or after a
        j = bisect_right(self.lo, b)         # intervals starting at or before b
        if i < j:
            a, b = min(a, self.lo[i]), max(b, self.hi[j - 1])
        self.lo[i:j], self.hi[i:j] = [a], [b]

    def remove(self, a, b):
        """Remove [a, b)."""
        if a >= b:
            return
        i = bisect_right(self.hi, a)         # first interval ending after a
        j = bisect_left(self.lo, b)          # intervals starting before b
        if i >= j:
            return
        keep_lo, keep_hi = [], []
        if self.lo[i] < a:
            keep_lo.append(self.lo[i]), keep_hi.append(a)
        if self.hi[j - 1] > b:
            keep_lo.append(b), keep_hi.append(self.hi[j - 1])
        self.lo[i:j], self.hi[i:j] = keep_lo, keep_hi

    def first_gap(self, a, b):
        """The first address of [a, b) not in the set, or None when all of [a, b) is."""
        if a >= b:
            return None
        i = bisect_right(self.lo, a) - 1
        if i >= 0 and self.hi[i] >= b:
            return None
        return a if i < 0 or self.hi[i] <= a else self.hi[i]

    def intersect(self, a, b):
        """The parts of [a, b) in the set, as (lo, hi) pairs."""
        out = []
        i = bisect_right(self.hi, a)
        while i < len(self.lo) and self.lo[i] < b:
            out.append((max(a, self.lo[i]), min(b, self.hi[i])))
            i += 1
        return out


class Counts:
    """A count per address, kept as breakpoints: count cs[i] over [xs[i], xs[i + 1]); 0 outside."""

    __slots__ = ("xs", "cs")

    def __init__(self):
        self.xs, self.cs = [], []

    def _split(self, x):
        """Make x a breakpoint; returns its index."""
        i = bisect_left(self.xs, x)
        if i < len(self.xs) and self.xs[i] == x:
            return i
        self.xs.insert(i, x)
        self.cs.insert(i, self.cs[i - 1] if i > 0 else 0)
        return i

    def add(self, a, b, delta):
        """Add delta to the count of every address of [a, b)."""
        if a >= b:
            return
        i, j = self._split(a), self._split(b)
        for k in range(i, j):
            self.cs[k] += delta
        # drop breakpoints that separate equal counts around the edited range
        for k in (j, i):
            if k < len(self.xs) and self.cs[k] == (self.cs[k - 1] if k > 0 else 0):
                del self.xs[k], self.cs[k]

    def zero_parts(self, a, b):
        """The parts of [a, b) whose count is 0 (or below), as (lo, hi) pairs."""
        out = []
        pos = a
        i = bisect_right(self.xs, a) - 1
        while pos < b:
            count = self.cs[i] if i >= 0 else 0
            nxt = self.xs[i + 1] if i + 1 < len(self.xs) else b
            hi = min(b, nxt)
            if count <= 0 and hi > pos:
                if out and out[-1][1] == pos:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((pos, hi))
            pos = hi
            i += 1
        return out


class CacheGhost:
    """The D-clean and I-clean facts of every physical address (see the module docstring).

    Nothing is clean at first: the host wrote every page before a guest could see it.
    ``coherent_d`` declares the D-side coherent for instruction fetches (CTR_EL0.IDC, or a caller
    that does not judge it): an I-cache invalidation then needs no D-cache clean before it.
    """

    __slots__ = ("dclean", "iclean", "coherent_d")

    def __init__(self, coherent_d=False):
        self.dclean, self.iclean = Intervals(), Intervals()
        self.coherent_d = coherent_d

    def host_write(self, pa, size):
        """The host may have written [pa, pa + size): neither clean any more."""
        self.dclean.remove(pa, pa + size)
        self.iclean.remove(pa, pa + size)

    def event(self, ev):
        """Apply one tlb_log event (others than dcache/icache are ignored)."""
        kind = ev[0]
        if kind == "dcache":
            self.dclean.add(ev[1], ev[1] + ev[2])
        elif kind == "icache":
            a, b = ev[1], ev[1] + ev[2]
            if self.coherent_d:
                self.iclean.add(a, b)
            else:
                for lo, hi in self.dclean.intersect(a, b):
                    self.iclean.add(lo, hi)

    def apply(self, log):
        """Apply the dcache / icache events of a log in order. The same as event() one by one
        (tests hold them equal); runs of events over consecutive addresses, as the kernel issues
        them page by page, are applied as one range."""
        if len(log) > 1 and log[-1] == log[0] and log.count(log[0]) == len(log):
            log = log[:1]               # one event again and again (counted at C speed)
        d_run = i_run = None            # [lo, hi) being extended by consecutive events
        i_part = None                   # the same for icache events not wholly D-clean: each
        prev = None                     # takes the D-clean part of its range (event()), and no
        for ev in log:                  # dcache event comes between them
            if ev == prev:              # the same event again at once: no new effect
                continue
            prev = ev
            kind = ev[0]
            if kind == "dcache":
                a, b = ev[1], ev[1] + ev[2]
                if i_part is not None:
                    self._icache_part(*i_part)
                    i_part = None
                if d_run is not None and d_run[1] == a:
                    d_run[1] = b
                    continue
                if d_run is not None:
                    self.dclean.add(*d_run)
                d_run = [a, b]
            elif kind == "icache":
                a, b = ev[1], ev[1] + ev[2]
                covered = (self.coherent_d or (d_run is not None and d_run[0] <= a and b <= d_run[1])
                           or self.dclean.first_gap(a, b) is None)
                if covered and i_run is not None and i_run[1] == a:
                    i_run[1] = b
                    continue
                if i_run is not None:
                    self.iclean.add(*i_run)
                    i_run = None
                if covered:
                    i_run = [a, b]
                    continue
                if d_run is not None:
                    self.dclean.add(*d_run)
                    d_run = None
                if i_part is not None and i_part[1] == a:
                    i_part[1] = b
                    continue
                if i_part is not None:
                    self._icache_part(*i_part)
                i_part = [a, b]
        if d_run is not None:
            self.dclean.add(*d_run)
        if i_run is not None:
            self.iclean.add(*i_run)
        if i_part is not None:
            self._icache_part(*i_part)

    def _icache_part(self, a, b):
        """An icache event over [a, b) where the D-side is neither coherent nor wholly clean: the
        I-cache becomes clean where the D-cache is (event())."""
        for lo, hi in self.dclean.intersect(a, b):
            self.iclean.add(lo, hi)

    def d_gap(self, pa, size):
        """The first address of [pa, pa + size) whose D-cache is not clean to PoC, or None."""
        return self.dclean.first_gap(pa, pa + size)

    def i_gap(self, pa, size):
        """The first address of [pa, pa + size) whose I-cache is not clean, or None."""
        return self.iclean.first_gap(pa, pa + size)
