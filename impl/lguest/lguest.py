"""One lguest guest's page-table state and its hypercall-level API (drivers/lguest/page_tables.c, 4.7).

Models ``struct lguest`` and ``struct lg_cpu`` as far as page_tables.c uses them: the pgdir cache
(``pgdirs[]``, 4 slots in the kernel), guest memory of ``pfn_limit`` frames at ``mem_base`` in the
launcher, the guest's kernel address, the switcher at ``switcher_addr`` with 1 + 2 * host_cpus
pages, one guest CPU (``cpu_pgd``, ``linear_pages``, its kernel stack), and ``kill_guest`` as a
recorded terminal state (``dead``). The algorithms are in the ShadowOps and PgdirOps mixins.

``variant="seed-as-written"`` keeps the seed's code where the checks found it breaking the spec;
the default ``"corrected"`` fixes those places (docs/lguest.md lists each with its counterexample);
``seed_findings=(...)`` keeps only some of them (ids in SEED_FINDINGS).

Public entry points validate their arguments (unsigned long = u32; a PAE PTE is a u64): anything
else is Python misuse, a ValueError/TypeError that changes nothing. ``raw_state()`` is the JSON-able
dict the spec judges (format in docs/lguest.md). Left out: SMP guests (lguest runs one guest CPU),
locking, the hypercall ring.
"""

import random

from ptspec.impl.lguest.host import Host
from ptspec.impl.lguest.pgdirs import PgdirOps
from ptspec.impl.lguest.shadow import ShadowOps
from ptspec.impl.lguest.x86 import FORMATS, PAGE_SHIFT, PAGE_SIZE, X86Format

VARIANTS = ("corrected", "seed-as-written")
# Places where the seed's code breaks the spec (docs/lguest.md has each counterexample); the
# "seed-as-written" variant keeps all of them, "corrected" none.
SEED_FINDINGS = ("set-pte-dirty", "set-pte-stale", "set-pte-nonpresent", "set-pgd-bound",
                 "set-pgd-switcher", "demand-upper")


class Pgdir:
    """struct pgdir: one cached shadow page directory."""
    __slots__ = ("gpgdir", "pgdir", "switcher_mapped", "last_host_cpu")

    def __init__(self):
        self.gpgdir = 0
        self.pgdir = 0               # host address of the shadow PGD page; 0 = never allocated
        self.switcher_mapped = False
        self.last_host_cpu = 0       # lg starts zeroed

    def copy(self):
        new = Pgdir()
        new.gpgdir, new.pgdir = self.gpgdir, self.pgdir
        new.switcher_mapped, new.last_host_cpu = self.switcher_mapped, self.last_host_cpu
        return new


class LgCpu:
    """struct lg_cpu: the fields page_tables.c uses."""
    __slots__ = ("cpu_pgd", "linear_pages")

    def __init__(self):
        self.cpu_pgd = 0
        self.linear_pages = False


def _u(name, value, bits=32):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name}={value!r} is not a u{bits} value")
    return value


def _int(name, value):
    """A count or seed: an int that is not a bool (the ranges are checked where they are used)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _positive(name, value):
    """A count of at least one."""
    if _int(name, value) < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


class Lguest(ShadowOps, PgdirOps):
    """One guest: ``Lguest("2level")`` or ``Lguest("pae", variant="seed-as-written")``."""

    LGUEST_DATA_KERNEL_ADDRESS = 0      # offsets of the two lguest_data fields used here
    LGUEST_DATA_RESERVE_MEM = 4

    def __init__(self, fmt="2level", *, pfn_limit=32, mem_base=0x4000_0000, switcher_addr=None,
                 host_cpus=2, npgdirs=4, rng_seed=0, variant="corrected", arena_pages=256,
                 seed_findings=None):
        pfn_limit = _int("pfn_limit", pfn_limit)
        host_cpus = _int("host_cpus", host_cpus)
        npgdirs = _int("npgdirs", npgdirs)
        rng_seed = _int("rng_seed", rng_seed)
        arena_pages = _positive("arena_pages", arena_pages)
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {fmt!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
        self.fmt = X86Format(fmt)     # per guest (a handful of attributes): no import-time state
        if switcher_addr is None:
            switcher_addr = 0xFFE0_0000 if self.fmt.pae else 0xFFC0_0000
        _u("switcher_addr", switcher_addr)
        _u("mem_base", mem_base)
        if switcher_addr % PAGE_SIZE or mem_base % PAGE_SIZE:
            raise ValueError("switcher_addr and mem_base must be page aligned")
        if not 1 <= pfn_limit <= 1 << 16 or not 1 <= host_cpus <= 8 or not 1 <= npgdirs <= 8:
            raise ValueError("pfn_limit, host_cpus or npgdirs out of the modelled range")
        self.variant = variant
        if seed_findings is None:
            seed_findings = SEED_FINDINGS if variant == "seed-as-written" else ()
        unknown = set(seed_findings) - set(SEED_FINDINGS)
        if unknown:
            raise ValueError(f"unknown seed findings {sorted(unknown)}; known: {SEED_FINDINGS}")
        self.seed_findings = frozenset(seed_findings)
        self.pfn_limit = pfn_limit
        self.mem_base = mem_base
        self.switcher_addr = switcher_addr
        self.host_cpus = host_cpus
        self.total_switcher_pages = 1 + 2 * host_cpus
        if switcher_addr + self.total_switcher_pages * PAGE_SIZE > 1 << 32:
            raise ValueError("the switcher pages must fit below 4G")
        self.host = Host(self.fmt, pfn_limit, mem_base, self.total_switcher_pages, arena_pages)
        self.pgdirs = [Pgdir() for _ in range(npgdirs)]
        self.cpu = LgCpu()
        self.kernel_address = 0
        self.esp1 = 0
        self.stack_pages = 0
        self.lguest_data = None          # guest address given by LHCALL_LGUEST_INIT
        self.dead = None
        self.freed = False
        self.rng = random.Random(rng_seed)
        self.forced_random: list[int] = []
        self.rng_shared = False          # rng is also a clone's (or its original's): copy it to draw

    def clone(self):
        """A deep copy (for exhaustive exploration)."""
        new = object.__new__(Lguest)
        new.__dict__.update(self.__dict__)
        new.host = self.host.clone()
        new.pgdirs = [pd.copy() for pd in self.pgdirs]
        new.cpu = LgCpu()
        new.cpu.cpu_pgd, new.cpu.linear_pages = self.cpu.cpu_pgd, self.cpu.linear_pages
        self.rng_shared = new.rng_shared = True   # one rng for both until one draws (prandom_u32)
        new.forced_random = list(self.forced_random)
        return new

    def prandom_u32(self):
        if self.forced_random:
            return self.forced_random.pop(0)
        if self.rng_shared:               # copy on the first draw: the other one keeps its sequence
            rng = random.Random()
            rng.setstate(self.rng.getstate())
            self.rng, self.rng_shared = rng, False
        return self.rng.getrandbits(32)

    def kill_guest(self, reason):
        """kill_guest: the first reason is kept; the guest never runs again."""
        if self.dead is None:
            self.dead = reason

    # ---- the hypercall-level API, with argument checking ----------------------------------------
    def set_pte(self, gpgdir, vaddr, gpte):
        self.guest_set_pte(_u("gpgdir", gpgdir), _u("vaddr", vaddr),
                           _u("gpte", gpte, 64 if self.fmt.pae else 32))

    def set_pgd(self, gpgdir, idx):
        self.guest_set_pgd(_u("gpgdir", gpgdir), _u("idx", idx))

    def set_pmd(self, pmdp, idx):
        if not self.fmt.pae:
            raise ValueError("LHCALL_SET_PMD exists only with PAE")
        self.guest_set_pmd(_u("pmdp", pmdp), _u("idx", idx))

    def new_pagetable(self, pgtable):
        self.guest_new_pagetable(_u("pgtable", pgtable))

    def flush_user(self):
        self.guest_pagetable_flush_user()

    def clear_all(self):
        self.guest_pagetable_clear_all()

    def fault(self, vaddr, errcode):
        return self.demand_page(_u("vaddr", vaddr), _u("errcode", errcode))

    def pin(self, vaddr):
        self.pin_page(_u("vaddr", vaddr))

    def set_stack(self, esp, pages):
        self.guest_set_stack(_u("esp", esp), _u("pages", pages))

    def guest_data_init(self, lguest_data):
        """LHCALL_LGUEST_INIT (hypercalls.c initialize): accepted once; a second one kills."""
        _u("lguest_data", lguest_data)
        if self.lguest_data is not None:
            self.kill_guest("already have lguest_data")
            return
        self.lguest_data = lguest_data
        self.page_table_guest_data_init(lguest_data)

    def pa(self, vaddr):
        return self.guest_pa(_u("vaddr", vaddr))

    def run(self, host_cpu):
        if isinstance(host_cpu, bool) or not isinstance(host_cpu, int):
            raise TypeError("host_cpu must be an int")
        if not 0 <= host_cpu < self.host_cpus:
            raise ValueError(f"host_cpu {host_cpu} is not one of the {self.host_cpus} host CPUs")
        self.map_switcher_in_guest(host_cpu)

    def guest_write(self, addr, value):
        """The guest stores one entry-sized word into its own memory (no hypercall)."""
        _u("addr", addr)
        _u("value", value, 8 * self.fmt.entry_bytes)
        if not self.host.address_ok(addr, self.fmt.entry_bytes):
            raise ValueError(f"guest address {addr:#x} is outside guest memory")
        self.host.guest_write(addr, self.fmt.entry_bytes, value)

    def init(self):
        return self.init_guest_pagetable()

    def free(self):
        self.free_guest_pagetable()

    # ---- the raw state --------------------------------------------------------------------------
    def raw_state(self):
        """The JSON-able state the spec reads (kind "lguest-x86", docs/lguest.md)."""
        h = self.host
        return {
            "kind": "lguest-x86",
            "format": self.fmt.name,
            "pfn_limit": self.pfn_limit,
            "mem_base": self.mem_base,
            "guest_frames": list(h.guest_frames),
            "switcher_addr": self.switcher_addr,
            "switcher_pages": list(h.switcher_pages),
            "host_cpus": self.host_cpus,
            "regs_page": h.REGS_PFN,
            "kernel_address": self.kernel_address,
            "linear_pages": self.cpu.linear_pages,
            "cpu_pgd": self.cpu.cpu_pgd,
            "stack": [self.esp1, self.stack_pages],
            "dead": self.dead,
            "freed": self.freed,
            "guest_mem": {str(a): w for a, w in h.guest_words().items()},
            "pgdirs": [{"pgdir": pd.pgdir, "gpgdir": pd.gpgdir, "switcher_mapped": pd.switcher_mapped,
                        "last_host_cpu": pd.last_host_cpu} for pd in self.pgdirs],
            "tables": {str(pfn << PAGE_SHIFT): {str(i): w for i, w in sorted(words.items())}
                       for pfn, words in sorted(h.tables.items())},
            "refs": {str(p): c - 1 for p, c in sorted(h.count.items()) if c != 1},
            "host_errors": [list(e) for e in h.errors],
        }
