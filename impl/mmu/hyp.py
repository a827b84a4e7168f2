"""Hyp mappings of arch/arm64/kvm/mmu.c (Linux 5.13): the EL2 table and the private VA allocator.

Models, with the kernel's order of operations and error codes:

* ``kvm_mmu_init``: the idmap page bounds (page aligned; BUG when the idmap text crosses a page),
  the refusal when the idmap overlaps the kernel's linear-map range in hyp VA (-EINVAL), the hyp
  table (``ptspec.impl.pgtable.hyp.HypPgtable``), the idmap mapped executable, and ``io_map_base`` starting at the
  idmap page;
* ``__create_hyp_mappings`` (the host owns the hyp table), ``kvm_kaddr_to_phys`` (linear map or a
  vmalloc page), ``create_hyp_mappings`` (``kern_hyp_va``, page by page);
* ``__create_hyp_private_mapping``: the allocation grows down from ``io_map_base``: the size rounded up
  to pages including the physical address's offset in its page, ``base = io_map_base - size``,
  -ENOMEM when bit ``VA_BITS - 1`` differs between ``base`` and ``io_map_base`` (the allocation would
  leave the half of the VA space the idmap is in), ``io_map_base`` moved before the mapping is made
  (a failed mapping does not give the VA back), the returned address keeps the page offset.
  ``hyp_private_va`` is the arithmetic alone (no branch), so that z3 can run it on bit-vectors;
* ``create_hyp_io_mappings`` (ioremap, then the private mapping as device memory; iounmap and NULLs
  on failure; with VHE the kernel address is the hyp address), ``create_hyp_exec_mappings``.

Left out: protected KVM (``kvm_host_owns_hyp_mappings`` false: the mappings are made by hypercalls
into the hypervisor), hyp VA randomisation (the ``kern_hyp_va`` tag is only the half-selecting bit
of ``compute_layout``, no random bits).
"""

from __future__ import annotations

import errno

from ptspec.impl.pgtable import args
from ptspec.impl.pgtable.hyp import HypPgtable
from ptspec.impl.pgtable.pool import PagePool
from ptspec.impl.pgtable.pte import KVM_PGTABLE_PROT_DEVICE, KVM_PGTABLE_PROT_R, KVM_PGTABLE_PROT_W, KVM_PGTABLE_PROT_X

U64 = (1 << 64) - 1
PAGE_HYP = KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_W
PAGE_HYP_EXEC = KVM_PGTABLE_PROT_R | KVM_PGTABLE_PROT_X
PAGE_HYP_RO = KVM_PGTABLE_PROT_R
PAGE_HYP_DEVICE = PAGE_HYP | KVM_PGTABLE_PROT_DEVICE
PHYS_OFFSET = 0x4000_0000


class HypMmu:
    """mmu.c's hyp state: hyp_pgtable, hyp_idmap_start/end/vector, io_map_base; plus the build."""

    def __init__(self, page_shift: int = 12, va_bits: int = 48, hyp_va_bits: int = 48, *,
                 idmap_text=(0x4100_0800, 0x4100_0F00), vhe: bool = False, tag=None,
                 pool: PagePool | None = None, arena_pages: int = 256):
        page_shift = args.page_shift(page_shift)
        va_bits = args.integer("va_bits", va_bits)
        hyp_va_bits = args.integer("hyp_va_bits", hyp_va_bits)
        idmap_text = args.u64_pair("idmap_text", idmap_text)
        vhe = args.flag("vhe", vhe)
        tag = args.optional_u64("tag", tag)
        pool = args.pool(pool, page_shift)
        arena_pages = args.positive("arena_pages", arena_pages)
        self.page_shift = page_shift
        self.page_size = 1 << page_shift
        self.va_bits = va_bits                      # the kernel's VA_BITS
        self.hyp_va_bits = hyp_va_bits              # from idmap_t0sz
        self.idmap_text = idmap_text                # __hyp_idmap_text_start/end (physical)
        self.vhe = vhe                              # is_kernel_in_hyp_mode()
        # compute_layout (va_layout.c): kernel addresses go to the half the idmap is not in
        msb = 1 << (va_bits - 1)
        self.tag = (msb ^ (idmap_text[0] & msb)) if tag is None else tag
        self.pool = pool if pool is not None else PagePool(page_shift, arena_pages)
        self.hyp_pgtable = None
        self.hyp_idmap_start = self.hyp_idmap_end = 0
        self.io_map_base = 0
        self.vmalloc: dict[int, int] = {}           # vmalloc page VA -> physical page
        self.ioremaps: list = []                    # (kaddr, phys, size) live ioremaps
        self._next_ioremap = 0xFFFF_8000_1000_0000
        self.page_offset = (-(1 << va_bits)) & U64  # PAGE_OFFSET of the linear map (5.13)
        self.high_memory = self.page_offset + (1 << 32)

    def kern_hyp_va(self, v: int) -> int:
        """Keep the bits below VA_BITS - 1 and insert the tag above them."""
        return (v & ((1 << (self.va_bits - 1)) - 1)) | self.tag

    def kvm_kaddr_to_phys(self, kaddr: int) -> int:
        page = kaddr & ~(self.page_size - 1)
        if page in self.vmalloc:
            return self.vmalloc[page] + (kaddr & (self.page_size - 1))
        if not self.page_offset <= kaddr < self.high_memory:
            raise ValueError(f"{kaddr:#x} is neither a linear-map nor a vmalloc address (BUG_ON)")
        return kaddr - self.page_offset + PHYS_OFFSET


def kvm_mmu_init(hm: HypMmu):
    """Returns (err, hyp_va_bits). The kernel runs it once, at boot: a second run is refused.
    The idmap BUG_ON comes, as in the kernel, after the idmap bounds are computed and stored."""
    hm = _not_initialised(hm)
    ps = hm.page_size
    start, end = hm.idmap_text
    hm.hyp_idmap_start = start & ~(ps - 1)
    hm.hyp_idmap_end = (end + ps - 1) & ~(ps - 1)
    if (hm.hyp_idmap_start ^ (hm.hyp_idmap_end - 1)) & ~(ps - 1):
        raise ValueError("BUG_ON: the hyp idmap text crosses a page boundary")
    if hm.kern_hyp_va(hm.page_offset) <= hm.hyp_idmap_start < hm.kern_hyp_va(hm.high_memory - 1) \
            and hm.hyp_idmap_start != start:
        return -errno.EINVAL, hm.hyp_va_bits
    pgt = HypPgtable(hm.page_shift, hm.hyp_va_bits, pool=hm.pool)
    err = pgt.init()
    if err:
        return err, hm.hyp_va_bits
    hm.hyp_pgtable = pgt
    err = kvm_map_idmap_text(hm)
    if err:
        pgt.destroy()
        hm.hyp_pgtable = None
        return err, hm.hyp_va_bits
    hm.io_map_base = hm.hyp_idmap_start
    return 0, hm.hyp_va_bits


def kvm_map_idmap_text(hm: HypMmu) -> int:
    size = hm.hyp_idmap_end - hm.hyp_idmap_start
    return __create_hyp_mappings(hm, hm.hyp_idmap_start, size, hm.hyp_idmap_start, PAGE_HYP_EXEC)


def __create_hyp_mappings(hm: HypMmu, start, size, phys, prot) -> int:
    return hm.hyp_pgtable.map(start, size, phys, prot)


def create_hyp_mappings(hm: HypMmu, from_kva: int, to_kva: int, prot: int) -> int:
    """A kernel address that is neither linear-map nor vmalloc is the kernel's BUG_ON, met page by
    page as in the kernel: the pages before it stay mapped (ValueError after partial work)."""
    from_kva = args.u64("from_kva", from_kva)
    to_kva = args.u64("to_kva", to_kva)
    prot = args.u64("prot", prot)
    hm = _hyp_table(hm)
    start = hm.kern_hyp_va(from_kva)
    end = hm.kern_hyp_va(to_kva)
    if hm.vhe:
        return 0
    ps = hm.page_size
    start &= ~(ps - 1)
    end = (end + ps - 1) & ~(ps - 1)
    virt = start
    while virt < end:
        phys = hm.kvm_kaddr_to_phys(from_kva + virt - start)
        err = __create_hyp_mappings(hm, virt, ps, phys, prot)
        if err:
            return err
        virt += ps
    return 0


def hyp_private_va(io_map_base, phys_addr, size, va_bits: int, page_shift: int):
    """The allocator's arithmetic: (page-aligned size, base, crossed); crossed is non-zero when
    bit VA_BITS-1 differs between base and io_map_base. Works on ints and on z3 bit-vectors."""
    page_size = 1 << page_shift
    size = (size + (phys_addr & (page_size - 1)) + page_size - 1) & (U64 & ~(page_size - 1))
    base = (io_map_base - size) & U64
    crossed = (base ^ io_map_base) & (1 << (va_bits - 1))
    return size, base, crossed


def __create_hyp_private_mapping(hm: HypMmu, phys_addr, size, prot):
    """Returns (ret, haddr)."""
    page_size = hm.page_size
    ret = 0
    size, base, crossed = hyp_private_va(hm.io_map_base, phys_addr, size, hm.va_bits,
                                         hm.page_shift)
    if crossed:
        ret = -errno.ENOMEM
    else:
        hm.io_map_base = base
    if ret:
        return ret, None
    ret = __create_hyp_mappings(hm, base, size, phys_addr, prot)
    if ret:
        return ret, None
    haddr = base + (phys_addr & (page_size - 1))
    return 0, haddr


def _not_initialised(hm: HypMmu):
    if hm.hyp_pgtable is not None:
        raise ValueError("kvm_mmu_init has already run: the hyp table exists")
    return hm


def _hyp_table(hm: HypMmu):
    """The hyp table mappings go into: kvm_mmu_init must have made it (not needed with VHE)."""
    if not hm.vhe and hm.hyp_pgtable is None:
        raise ValueError("no hyp page table: kvm_mmu_init has not run (or failed)")
    return hm


def create_hyp_io_mappings(hm: HypMmu, phys_addr, size):
    """Returns (ret, kaddr, haddr)."""
    phys_addr = args.u64("phys_addr", phys_addr)
    size = args.u64("size", size)
    hm = _hyp_table(hm)
    kaddr = hm._next_ioremap + (phys_addr & (hm.page_size - 1))
    span = (size + (phys_addr & (hm.page_size - 1)) + hm.page_size - 1) & ~(hm.page_size - 1)
    hm._next_ioremap += span + hm.page_size
    hm.ioremaps.append((kaddr, phys_addr, size))
    if hm.vhe:
        return 0, kaddr, kaddr
    ret, addr = __create_hyp_private_mapping(hm, phys_addr, size, PAGE_HYP_DEVICE)
    if ret:
        hm.ioremaps.remove((kaddr, phys_addr, size))        # iounmap
        return ret, None, None
    return 0, kaddr, addr


def create_hyp_exec_mappings(hm: HypMmu, phys_addr, size):
    """Returns (ret, haddr)."""
    phys_addr = args.u64("phys_addr", phys_addr)
    size = args.u64("size", size)
    if hm.vhe:
        raise ValueError("BUG_ON: create_hyp_exec_mappings with the kernel in hyp mode")
    hm = _hyp_table(hm)
    ret, addr = __create_hyp_private_mapping(hm, phys_addr, size, PAGE_HYP_EXEC)
    if ret:
        return ret, None
    return 0, addr
