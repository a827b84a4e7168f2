"""The lguest raw state (kind "lguest-x86", docs/lguest.md): validation and the LgState object.

Models: the snapshot of one lguest guest's page-table world that impl (or any other program) hands
to the spec: guest memory words, the guest's pgdirs as lguest caches them, the shadow table pages
the host allocated (sparse: index -> word), the host page references lguest holds, the switcher,
and the host errors the memory model recorded. ``load_lguest_state`` checks keys, types and ranges,
converts hex strings, and says what is wrong and where.

Leaves out: the meaning of the contents (spec/lguest/invariants.py judges that).
"""

from ptspec.spec.lguest.walk import LAYOUTS, PAGE
from ptspec.spec.stage2.state import StateError, parse_int, show

U32 = (1 << 32) - 1
MAX_PGDIRS = 8          # struct lguest has pgdirs[4]; the impl models up to 8 slots
U64 = (1 << 64) - 1
REF_LO, REF_HI = -(1 << 31), (1 << 31) - 1     # a page count is an atomic_t
WORD_BYTES = 4                      # guest_mem holds 32-bit little-endian words
BYTE_MASK = 0xFF
FORMATS = ("2level", "pae")


class LgState:
    """A validated lguest raw state. Integer-keyed: tables {pa: {index: word}}, refs {pfn: n},
    guest_mem {addr: 32-bit word}."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.kind = "lguest-x86"
        self._frame_index = {h: g for g, h in enumerate(self.guest_frames)}

    def guest_frame_of(self, hpfn):
        """The guest frame number backed by host frame hpfn, or None."""
        return self._frame_index.get(hpfn)

    def read_guest(self, addr, nbytes):
        """nbytes of guest-physical memory at addr, little endian; None outside guest memory."""
        if addr < 0 or addr + nbytes > self.pfn_limit * PAGE:
            return None
        value = 0
        for k in range(nbytes):
            b = addr + k
            word, byte = b - b % WORD_BYTES, b % WORD_BYTES
            value |= ((self.guest_mem.get(word, 0) >> (8 * byte)) & BYTE_MASK) << (8 * k)
        return value


def _req(obj, key, where):
    if key not in obj:
        raise StateError(f"{where}: missing key {key!r}")
    return obj[key]


def _bool(v, where):
    if not isinstance(v, bool):
        raise StateError(f"{where}: expected true or false, got {show(v)}")
    return v


def _list(v, where):
    if not isinstance(v, list):
        raise StateError(f"{where}: expected a list, got {show(v)}")
    return v


def _obj(v, where):
    if not isinstance(v, dict):
        raise StateError(f"{where}: expected an object, got {show(v)}")
    return v


def _int(value, lo, hi, where, *parts):
    """parse_int(value, where, lo, hi), its message (``where`` formatted with ``show`` of each of
    ``parts``) built only when the value is refused."""
    if type(value) is int and lo <= value <= hi:
        return value
    if type(value) is str and value.isdigit() and value.isascii() and len(value) <= 20:
        n = int(value)
        if lo <= n <= hi:
            return n
    return parse_int(value, where.format(*map(show, parts)), lo, hi)


def load_lguest_state(raw):
    """An LgState from a raw dict (or an LgState, returned as is)."""
    if isinstance(raw, LgState):
        return raw
    if not isinstance(raw, dict):
        raise StateError(f"state: expected a JSON object, got {show(raw)}")
    if raw.get("kind") != "lguest-x86":
        raise StateError(f"kind: expected 'lguest-x86', got {show(raw.get('kind'))}")
    fmt = _req(raw, "format", "state")
    if type(fmt) is not str or fmt not in FORMATS:
        raise StateError(f"format: expected one of {FORMATS}, got {show(fmt)}")
    word_hi = (1 << 64) - 1 if fmt == "pae" else U32
    pfn_limit = parse_int(_req(raw, "pfn_limit", "state"), "pfn_limit", 1, 1 << 20)
    frames = _req(raw, "guest_frames", "state")
    if not isinstance(frames, list) or len(frames) != pfn_limit:
        raise StateError(f"guest_frames: expected a list of pfn_limit={pfn_limit} host frames")
    frames = [f if type(f) is int and 0 <= f <= U32 else parse_int(f, f"guest_frames[{i}]", 0, U32)
              for i, f in enumerate(frames)]
    sw_pages = _req(raw, "switcher_pages", "state")
    host_cpus = parse_int(_req(raw, "host_cpus", "state"), "host_cpus", 1, 64)
    if not isinstance(sw_pages, list) or len(sw_pages) != 1 + 2 * host_cpus:
        raise StateError(f"switcher_pages: expected 1 + 2 * host_cpus = {1 + 2 * host_cpus} frames")
    sw_pages = [parse_int(p, f"switcher_pages[{i}]", 0, U64) for i, p in enumerate(sw_pages)]
    pgdirs = []
    for i, pd in enumerate(_list(_req(raw, "pgdirs", "state"), "pgdirs")):
        w = f"pgdirs[{i}]"
        if not isinstance(pd, dict):
            raise StateError(f"{w}: expected an object")
        pgdirs.append({"pgdir": parse_int(_req(pd, "pgdir", w), f"{w}.pgdir", 0, U64),
                       "gpgdir": parse_int(_req(pd, "gpgdir", w), f"{w}.gpgdir", 0, U32),
                       "switcher_mapped": _bool(_req(pd, "switcher_mapped", w), f"{w}.switcher_mapped"),
                       "last_host_cpu": parse_int(_req(pd, "last_host_cpu", w), f"{w}.last_host_cpu",
                                                  -1, host_cpus - 1)})
    if not pgdirs or len(pgdirs) > MAX_PGDIRS:
        raise StateError(f"pgdirs: expected 1 to {MAX_PGDIRS} slots, got {len(pgdirs)}")
    tables = {}
    n = LAYOUTS[fmt == "pae"].page_entries
    for key, words in _obj(_req(raw, "tables", "state"), "tables").items():
        pa_i = _int(key, 0, U64, "tables key {}", key)
        if pa_i % PAGE:
            raise StateError(f"tables[{show(key)}]: page address not page aligned")
        if not isinstance(words, dict):
            raise StateError(f"tables[{show(key)}]: expected an object index -> word")
        tables[pa_i] = {_int(k, 0, n - 1, "tables[{}] index {}", key, k):
                        _int(v, 0, word_hi, "tables[{}][{}]", key, k) for k, v in words.items()}
    refs = {_int(k, 0, U64, "refs key {}", k): _int(v, REF_LO, REF_HI, "refs[{}]", k)
            for k, v in _obj(_req(raw, "refs", "state"), "refs").items()}
    mem = {}
    for k, v in _obj(_req(raw, "guest_mem", "state"), "guest_mem").items():
        a = _int(k, 0, U64, "guest_mem key {}", k)
        if a % WORD_BYTES:
            raise StateError(f"guest_mem[{k}]: word address not 4-byte aligned")
        mem[a] = v if type(v) is int and 0 <= v <= U32 else parse_int(v, f"guest_mem[{k}]", 0, U32)
    errors = _req(raw, "host_errors", "state")
    if not isinstance(errors, list) or not all(isinstance(e, (list, tuple)) and len(e) == 2
                                               and all(isinstance(t, str) for t in e) for e in errors):
        raise StateError("host_errors: expected a list of [kind, text] pairs of strings")
    stack = raw.get("stack", [0, 0])
    if not isinstance(stack, list) or len(stack) != 2:
        raise StateError(f"stack: expected [address, pages], got {show(stack)}")
    cpu_pgd = parse_int(_req(raw, "cpu_pgd", "state"), "cpu_pgd", 0, len(pgdirs) - 1)
    dead = raw.get("dead")
    if dead is not None and not isinstance(dead, str):
        raise StateError(f"dead: expected null or a reason string, got {show(dead)}")
    return LgState(
        format=fmt, pae=fmt == "pae", pfn_limit=pfn_limit,
        mem_base=parse_int(_req(raw, "mem_base", "state"), "mem_base", 0, U32),
        guest_frames=frames,
        switcher_addr=parse_int(_req(raw, "switcher_addr", "state"), "switcher_addr", 0, U32),
        switcher_pages=sw_pages, host_cpus=host_cpus,
        regs_page=parse_int(_req(raw, "regs_page", "state"), "regs_page", 0, U64),
        kernel_address=parse_int(_req(raw, "kernel_address", "state"), "kernel_address", 0, U32),
        linear_pages=_bool(_req(raw, "linear_pages", "state"), "linear_pages"),
        cpu_pgd=cpu_pgd,
        stack=(parse_int(stack[0], "stack[0]", 0, U32), parse_int(stack[1], "stack[1]", 0, U32)),
        dead=dead, freed=_bool(raw.get("freed", False), "freed"),
        guest_mem=mem, pgdirs=pgdirs, tables=tables, refs=refs,
        host_errors=[(str(k), str(t)) for k, t in errors])
