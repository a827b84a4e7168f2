"""The stage-2 lock-step's operation generator: one program of operations for every subject.

``Stage2Program(geom)`` produces, one at a time, the operations a lock-step run applies to a
stage-2 table (impl's ``Stage2Harness`` or the kernel's C through ``CSideHarness``): trace entries
``("op", name, args)`` and ``("fail", k)`` (the k-th page-table allocation from now fails). Each
operation kind is a rule with its argument ranges from ``ptspec.proofs.stage2.strategies``; a rule
is picked among those enabled (re-maps and ranges crossing into an earlier mapping need one that
succeeded; destroy, the end of a table, runs at most once and is rarer than the others). The choices go through a chooser, so the same program is
a plain seeded random run (``RandomChooser``) or hypothesis's (``DrawChooser``).

The kinds: maps (IPA-linear output, output anywhere, one whole aligned entry at a level that takes
leaves), re-maps of an earlier mapping with permissions changed and the range grown (-EAGAIN
territory), ranges crossing from one entry into an earlier mapping, ranges straddling an entry
boundary, set_owner, unmap, wrprotect, the access-flag and leaf queries, relax_perms, flush,
arguments beyond the IPA space, injected allocation failures and destroy.
"""

from __future__ import annotations

from ptspec.proofs.stage2 import strategies as S
from ptspec.proofs.stage2.strategies import (choose_address, choose_growth, choose_phys,
                                             choose_phys_offset, choose_prot, choose_size,
                                             choose_straddle)

RANGE_OPS = ("unmap", "wrprotect", "flush", "map", "set_owner")
CROSS_OPS = ("unmap", "wrprotect", "flush", "set_owner")
LEAF_OPS = ("mkyoung", "mkold", "is_young", "get_leaf")
RECENT = 8                  # re-maps and crossings pick one of the last RECENT successful maps
# Every other rule is DESTROY_ODDS times as likely as destroy: a run of 30 steps then ends with a
# destroy about one time in three, and spends most of its steps on a live table.
DESTROY_ODDS = 4


class Stage2Program:
    """Operations for one geometry; ``begin()`` starts a run, ``next(ch)`` gives its next entry,
    ``returned(entry, ret)`` tells it what the subject answered (successful maps are re-used)."""

    def __init__(self, geom: S.Geometry, extra_rules=(), normal_nc: bool = False,
                 px_ux: bool = False):
        """``extra_rules``: operations a subject has beyond these (functions of a chooser that
        return a trace entry), from the subject's ``program_rules(options)`` hook. ``normal_nc``:
        the subject's enum kvm_pgtable_prot has KVM_PGTABLE_PROT_NORMAL_NC (6.9 on), so maps
        also draw non-cacheable prots (``strategies.PROT_BASE_NC``); off, the program is the same
        as without the argument. ``px_ux``: the enum splits X into PX and UX (7.1 on): maps and
        relax_perms also draw prots with one of them (``strategies.prot_options``)."""
        self.geom = geom
        self.normal_nc, self.px_ux = normal_nc, px_ux
        self.perm_sets = S.prot_options(normal_nc, px_ux)[1]
        self.opt = S.options(geom)
        rules = (self.map, self.map_anywhere, self.map_aligned, self.straddle,
                 self.set_owner, self.unmap, self.wrprotect, self.leaf_op, self.relax_perms,
                 self.flush, self.beyond_ipa, self.fail_allocation, *extra_rules)
        self.rules = rules * DESTROY_ODDS
        self.with_mapped = (rules + (self.remap, self.cross_into)) * DESTROY_ODDS
        self.begin()

    def begin(self) -> None:
        self.mapped: list = []          # (addr, size, phys, prot) of maps that returned 0
        self.destroyed = False

    def next(self, ch) -> tuple:
        rules = self.with_mapped if self.mapped else self.rules
        if not self.destroyed:
            rules += (self.destroy,)
        return ch.choice(rules)(ch)

    def returned(self, entry: tuple, ret) -> None:
        if entry[0] == "op" and entry[1] == "map" and ret == 0:
            a = entry[2]
            self.mapped.append((a["addr"], a["size"], a["phys"], a["prot"]))

    def _prot(self, ch) -> int:
        return choose_prot(ch, self.normal_nc, self.px_ux)

    # -- the rules ----------------------------------------------------------------------------
    def map(self, ch):
        a = choose_address(ch, self.opt)
        return "op", "map", dict(addr=a, size=choose_size(ch, self.opt),
                                 phys=a + choose_phys_offset(ch, self.opt), prot=self._prot(ch))

    def map_anywhere(self, ch):
        return "op", "map", dict(addr=choose_address(ch, self.opt), size=choose_size(ch, self.opt),
                                 phys=choose_phys(ch, self.opt), prot=self._prot(ch))

    def map_aligned(self, ch):
        """A whole aligned entry at a level that takes leaves: blocks, and (over existing tables)
        the anchor that coalesces a subtree into one block."""
        a = choose_address(ch, self.opt)
        d = choose_phys_offset(ch, self.opt)
        prot = self._prot(ch)
        g = self.geom.gran.size[ch.choice(self.opt.aligned_levels)]
        a &= ~(g - 1)
        return "op", "map", dict(addr=a, size=g, phys=(a + d) & ~(g - 1), prot=prot)

    def _recent(self, ch):
        return self.mapped[-1 - ch.integer(0, RECENT - 1) % len(self.mapped)]

    def remap(self, ch):
        """Re-create an earlier mapping (what two vCPUs faulting on one page do), with the
        permissions changed and the range grown or moved back: -EAGAIN territory."""
        a, s, p, prot = self._recent(ch)
        perms = ch.choice(S.PERM_CHANGES)
        before, after = choose_growth(ch, self.opt)
        before = min(before, a, p)
        return "op", "map", dict(addr=a - before, size=s + before + after, phys=p - before,
                                 prot=prot ^ perms)

    def cross_into(self, ch):
        """A range that starts 1, 2 or 256 pages before the entry boundary below an earlier
        mapping and ends one page into that mapping: it crosses from one entry (often a block or
        an empty slot) into the next, where there is something to change."""
        a = self._recent(ch)[0]
        lvl = ch.choice(self.opt.straddle_levels)
        back = ch.choice((1, 2, 256))
        op = ch.choice(CROSS_OPS)
        page = self.geom.gran.page_size
        boundary = a & ~(self.geom.gran.size[lvl] - 1)
        start = max(boundary - back * page, 0)
        args = {"addr": start, "size": (a & ~(page - 1)) + page - start}
        if op == "set_owner":
            args["owner_id"] = 1
        return "op", op, args

    def straddle(self, ch):
        """A range crossing an entry boundary at some level (walker alignment edge)."""
        a, s = choose_straddle(ch, self.opt)
        d = choose_phys_offset(ch, self.opt)
        prot = self._prot(ch)
        op = ch.choice(RANGE_OPS)
        args = {"addr": a, "size": s}
        if op == "map":
            args.update(phys=a + d, prot=prot)
        if op == "set_owner":
            args["owner_id"] = 1
        return "op", op, args

    def set_owner(self, ch):
        return "op", "set_owner", dict(addr=choose_address(ch, self.opt),
                                       size=choose_size(ch, self.opt),
                                       owner_id=ch.choice((0, 1, 2)))

    def unmap(self, ch):
        return "op", "unmap", dict(addr=choose_address(ch, self.opt), size=choose_size(ch, self.opt))

    def wrprotect(self, ch):
        return "op", "wrprotect", dict(addr=choose_address(ch, self.opt),
                                       size=choose_size(ch, self.opt))

    def leaf_op(self, ch):
        a = choose_address(ch, self.opt)
        return "op", ch.choice(LEAF_OPS), dict(addr=a)

    def relax_perms(self, ch):
        return "op", "relax_perms", dict(addr=choose_address(ch, self.opt),
                                         prot=ch.choice(self.perm_sets))

    def flush(self, ch):
        return "op", "flush", dict(addr=choose_address(ch, self.opt), size=choose_size(ch, self.opt))

    def beyond_ipa(self, ch):
        a = ch.choice(self.opt.bad_addresses)
        s = choose_size(ch, self.opt)
        op = ch.choice(RANGE_OPS)
        args = {"addr": a, "size": s}
        if op == "map":
            args.update(phys=1 << 32, prot=S.PROT_BASE[1])
        if op == "set_owner":
            args["owner_id"] = 1
        return "op", op, args

    def fail_allocation(self, ch):
        """The k-th page-table allocation from now on fails (fault injection)."""
        return "fail", ch.integer(0, 3)

    def destroy(self, ch):
        self.destroyed = True
        return "op", "destroy", {}
