"""A guest (or pKVM host) stage-2 page table: ``struct kvm_pgtable`` with its ``kvm_s2_mmu``.

This is the object a user of ptspec drives. Its methods are the kernel's
``kvm_pgtable_stage2_*`` entry points (arch/arm64/kvm/hyp/pgtable.c, 5.12-5.15 with the pKVM
page-ownership patch) and return what they return (0 or a negative errno, a descriptor, a bool);
the algorithms themselves live in ``stage2_map`` (map, set_owner) and ``stage2_walkers`` (the rest).

Build-time and per-VM choices are parameters:

* ``page_shift`` (4K/16K/64K) and ``ia_bits``: the geometry, derived as ``kvm_get_vtcr`` does;
* ``owner_field`` (bits of owner ids in invalid descriptors: (63, 56) as in the seed patch, (9, 2) as
  in 5.15) and ``max_owner_id`` (``KVM_MAX_OWNER_ID``);
* ``fwb`` (``ARM64_HAS_STAGE2_FWB``) and the ``KVM_PGTABLE_S2_NOFWB`` / ``KVM_PGTABLE_S2_IDMAP``
  flags; ``cmo`` (whether mm_ops has the cache-maintenance hooks); ``force_pte_cb``;
* ``eagain_continues``: True (default) applies "KVM: arm64: Continue stage-2 map when re-creating
  mappings" (posted July 2021): a leaf that needs no update is skipped, the walk goes on and map
  returns -EAGAIN at the end; False is the seed's behaviour, where -EAGAIN stops the walk;
* ``table_tlbi_level0``: a cleared table descriptor is invalidated with level hint 0 (6.1);
* ``kernel_version``: a named set of the three above (impl/pgtable/versions.py: default, seed, 5.15, 6.1);
  an explicit keyword wins over it.

TLB invalidations (``__kvm_tlb_flush_vmid_ipa``, ``__kvm_tlb_flush_vmid``) and cache maintenance are
appended to ``log``; ``snapshot()`` drains it into the raw state's ``tlb_log`` (docs/interface.md).
Kernel WARN_ONs are recorded in ``warnings``.

Arguments are u64 in the kernel: a value that is not an int in [0, 2**64) raises ValueError and
changes nothing; so does a memcache that draws from another page pool, a flag that is not a bool,
and a configuration KVM would never build (impl/pgtable/args.py).
"""

from __future__ import annotations

from ptspec.impl.pgtable import args
from ptspec.impl.pgtable.geometry import Stage2Geometry, U64
from ptspec.impl.pgtable.pool import MmOps, PagePool
from ptspec.impl.pgtable.pte import KVM_MAX_OWNER_ID, owner_mask
from ptspec.impl.pgtable import versions as profiles
from ptspec.impl.pgtable import stage2_map
from ptspec.impl.pgtable import stage2_walkers
from ptspec.impl.pgtable.stage2_map import KVM_PGTABLE_S2_IDMAP, KVM_PGTABLE_S2_NOFWB


_NOT_SEEN = (None, None)      # a page the last snapshot did not have: (tuple, copy of the words)


def _u64(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise args.ArgTypeError(f"{name} must be an integer, not {type(value).__name__}")
    if not 0 <= value <= U64:
        raise ValueError(f"{name} = {value:#x} is not a u64 (0 <= {name} < 2**64)")
    return value


class KvmPgtable:
    """struct kvm_pgtable for stage 2, plus the kvm_s2_mmu TLB log."""

    def __init__(self, page_shift: int = 12, ia_bits: int = 40, *, pool: PagePool | None = None,
                 owner_field=None, max_owner_id: int = KVM_MAX_OWNER_ID,
                 fwb: bool = False, flags: int = 0, cmo: bool = True, force_pte_cb=None,
                 eagain_continues: bool | None = None, table_tlbi_level0: bool | None = None,
                 kernel_version: str = "default"):
        page_shift = args.page_shift(page_shift)
        ia_bits = args.integer("ia_bits", ia_bits)
        pool = args.pool(pool, page_shift)
        owner_field = args.owner_field(owner_field)
        max_owner_id = args.integer("max_owner_id", max_owner_id)
        fwb = args.flag("fwb", fwb)
        flags = _u64("flags", flags)
        cmo = args.flag("cmo", cmo)
        force_pte_cb = args.callable_or_none("force_pte_cb", force_pte_cb)
        eagain_continues = args.optional_flag("eagain_continues", eagain_continues)
        table_tlbi_level0 = args.optional_flag("table_tlbi_level0", table_tlbi_level0)
        prof = profiles.profile(kernel_version)
        owner_field = prof["owner_field"] if owner_field is None else owner_field
        eagain_continues = prof["eagain_continues"] if eagain_continues is None else eagain_continues
        self.table_tlbi_level0 = (prof["table_tlbi_level0"] if table_tlbi_level0 is None
                                  else bool(table_tlbi_level0))
        self.kernel_version = kernel_version
        self.geom = Stage2Geometry.from_ipa(page_shift, ia_bits)
        self.gran = self.geom.gran
        hi, lo = owner_field
        if not 63 >= hi >= lo >= 2:
            raise ValueError(f"owner_field {owner_field!r} must be (hi, lo) with 63 >= hi >= lo >= 2")
        if not 0 <= max_owner_id < (1 << (hi - lo + 1)) or max_owner_id > 255:
            raise ValueError(f"max_owner_id {max_owner_id} does not fit the owner field or a u8")
        if flags & ~(KVM_PGTABLE_S2_NOFWB | KVM_PGTABLE_S2_IDMAP):
            raise ValueError(f"unknown stage-2 flags {flags:#x}")
        self.owner_field = (hi, lo)
        self.owner_mask = owner_mask(self.owner_field)
        self.max_owner_id = max_owner_id
        self.ia_bits = ia_bits
        self.start_level = self.geom.start_level
        self.pa_bits = self.gran.pa_bits
        self.fwb_cap = fwb
        self.flags = flags
        self.force_pte_cb = force_pte_cb
        self.eagain_continues = eagain_continues
        self.cmo = cmo
        self.pool = pool if pool is not None else PagePool(page_shift)
        if self.pool.page_shift != page_shift:
            raise ValueError("the page pool's page size differs from the table's")
        self.log: list = []
        self.mm_ops = MmOps(self.pool, self.log, cmo=cmo)
        self.warnings: list[str] = []
        self.pgd = None          # list of root page PAs once initialised
        # the last snapshot's pages: pa -> (the tuple it gave, a private copy of the words then)
        self._last_pages: dict = {}

    def __getstate__(self) -> dict:
        """A copy (pickle or deepcopy, as the harness's fork makes) starts with no record of the
        last snapshot: the record only lets a snapshot hand out the very tuples of the last one,
        and a copy's tuples would not be those a reader holds anyway."""
        state = dict(self.__dict__)
        state["_last_pages"] = {}
        return state

    # -- small kernel helpers used by the walkers --------------------------------------------
    def has_fwb(self) -> bool:
        """stage2_has_fwb"""
        return self.fwb_cap and not self.flags & KVM_PGTABLE_S2_NOFWB

    def pgd_page_idx(self, addr: int) -> int:
        return self.geom.pgd_page_idx(addr)

    def tlb_flush_vmid_ipa(self, addr: int, level: int):
        self.log.append(("tlbi_ipa", addr, level))

    def tlb_flush_vmid(self):
        self.log.append(("tlbi_vmid",))

    def warn(self, msg: str):
        self.warnings.append(msg)

    def pgd_pages(self) -> int:
        return self.geom.pgd_pages

    # -- the API ---------------------------------------------------------------------------
    def init(self) -> int:
        """__kvm_pgtable_stage2_init"""
        return stage2_walkers.kvm_pgtable_stage2_init(self)

    def map(self, addr: int, size: int, phys: int, prot: int, mc) -> int:
        """kvm_pgtable_stage2_map"""
        mc = args.memcache(mc, self.pool)
        return stage2_map.kvm_pgtable_stage2_map(self, _u64("addr", addr), _u64("size", size),
                                                 _u64("phys", phys), _u64("prot", prot), mc)

    def set_owner(self, addr: int, size: int, mc, owner_id: int) -> int:
        """kvm_pgtable_stage2_set_owner (owner_id is a u8)"""
        if isinstance(owner_id, bool) or not isinstance(owner_id, int) or not 0 <= owner_id <= 255:
            raise ValueError(f"owner_id must be a u8 (0..255), not {owner_id!r}")
        mc = args.memcache(mc, self.pool)
        return stage2_map.kvm_pgtable_stage2_set_owner(self, _u64("addr", addr),
                                                       _u64("size", size), mc, owner_id)

    def unmap(self, addr: int, size: int) -> int:
        return stage2_walkers.kvm_pgtable_stage2_unmap(self, _u64("addr", addr), _u64("size", size))

    def wrprotect(self, addr: int, size: int) -> int:
        return stage2_walkers.kvm_pgtable_stage2_wrprotect(self, _u64("addr", addr),
                                                           _u64("size", size))

    def mkyoung(self, addr: int) -> int:
        return stage2_walkers.kvm_pgtable_stage2_mkyoung(self, _u64("addr", addr))

    def mkold(self, addr: int) -> int:
        return stage2_walkers.kvm_pgtable_stage2_mkold(self, _u64("addr", addr))

    def is_young(self, addr: int) -> bool:
        return stage2_walkers.kvm_pgtable_stage2_is_young(self, _u64("addr", addr))

    def relax_perms(self, addr: int, prot: int) -> int:
        return stage2_walkers.kvm_pgtable_stage2_relax_perms(self, _u64("addr", addr),
                                                             _u64("prot", prot))

    def flush(self, addr: int, size: int) -> int:
        return stage2_walkers.kvm_pgtable_stage2_flush(self, _u64("addr", addr), _u64("size", size))

    def get_leaf(self, addr: int):
        """kvm_pgtable_get_leaf: (ret, pte, level); pte and level are 0 unless ret is 0."""
        return stage2_walkers.kvm_pgtable_get_leaf(self, _u64("addr", addr))

    def destroy(self) -> None:
        stage2_walkers.kvm_pgtable_stage2_destroy(self)

    def force_pte(self, addr: int, size: int, prot: int) -> bool:
        """What map passes as force_pte: pgt->force_pte_cb(addr, addr + size, prot)."""
        return bool(self.force_pte_cb and self.force_pte_cb(addr, (addr + size) & U64, prot))

    # -- raw state ---------------------------------------------------------------------------
    def snapshot(self, drain_log: bool = True) -> dict:
        """The raw state of docs/interface.md; drains the TLB/CMO log unless told not to. Pages
        and events are tuples (immutable: a snapshot never changes with the table)."""
        drain_log = args.flag("drain_log", drain_log)
        pool = self.pool
        in_mc = pool.in_memcache
        # each page as a tuple; a page equal to the last snapshot's is that very tuple, which
        # tells a reader (spec.load_state with a previous state) that it did not change. The
        # words are compared with a private list copy (list == list): an unchanged page costs
        # one comparison, no new tuple
        last = self._last_pages
        kept = {}
        pages = {}
        for pa, words in pool.pages.items():
            if pa not in in_mc:
                t, copy = last.get(pa, _NOT_SEEN)
                if words != copy:
                    t, copy = tuple(words), words[:]
                pages[pa] = t
                kept[pa] = (t, copy)
        self._last_pages = kept
        state = {
            "kind": "arm64-stage2",
            "page_shift": self.gran.page_shift,
            "ia_bits": self.ia_bits,
            "start_level": self.start_level,
            "pa_bits": self.pa_bits,
            "owner_field": list(self.owner_field),
            "max_owner_id": self.max_owner_id,
            "has_fwb": self.has_fwb(),
            "idmap": bool(self.flags & KVM_PGTABLE_S2_IDMAP),
            "cmo": self.cmo,
            "roots": list(self.pgd) if self.pgd is not None else [],
            "pages": pages,
            "refcount": {pa: pool.refcount[pa] for pa in pages},
            "memcache": sorted(in_mc),
            "free_pages": pool.free_pages(),
            "pool_errors": list(pool.errors),
            "tlb_log": list(self.log),
            "warnings": self.warnings + pool.warnings,
        }
        if drain_log:
            self.log.clear()
        return state
