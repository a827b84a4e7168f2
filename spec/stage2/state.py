"""The raw state (docs/interface.md): validation, normalisation, and the State object.

Models: the JSON-shaped snapshot impl (or any other program) hands to spec, for a KVM stage-2 table
(``kind: "arm64-stage2"``) or a hyp stage-1 table (``kind: "arm64-hyp-s1"``). load_state checks
every key, type, range and length, converts hex strings and string page keys to ints, copies the
descriptor lists (so later changes to the source do not alter the snapshot), and says exactly what
is wrong and where when the input is not a state.

Optional stage-2 keys and their defaults: pa_bits 48, has_fwb false, has_xnx false, cmo false,
idmap false, as_s1 false (KVM_PGTABLE_S2_AS_S1, 7.0 on), memcache [],
free_pages absent (None), pool_errors [], tlb_log []. Unknown keys are ignored.

Leaves out: the meaning of the contents (the invariants judge that), lguest states, and the rules
for single JSON values (integers, bools, lists: ptspec.spec.stage2.values, re-exported here).
"""

from array import array
from itertools import chain
from operator import is_, itemgetter

from ptspec.spec.arch import descriptor, geometry
from ptspec.spec.stage2.values import StateError, show, parse_int, _type_name, _parse_bool, _parse_list

KINDS = ("arm64-stage2", "arm64-hyp-s1")
U64_LIMIT = 1 << 64
REF_LO, REF_HI = -(1 << 31), (1 << 31) - 1     # page_count() is an atomic_t


def _parse_descriptors(value, where, count):
    """A list of `count` u64 descriptors, each as parse_int(d, ..., 0, 2**64 - 1) reads it (the plain
    statement, the last line); the common all-int case is checked at C speed first."""
    if not isinstance(value, (list, tuple)):
        raise StateError(f"{where}: expected a list of {count} descriptors, got {_type_name(value)}")
    if len(value) != count:
        raise StateError(f"{where}: expected {count} descriptors, got {len(value)}")
    if list(map(type, value)).count(int) == count:    # plain ints only: array() takes bools too
        try:
            array("Q", value)                   # range checked in C
            return list(value)                  # the copy
        except OverflowError:
            pass
    return [parse_int(d, f"{where}[{i}]", 0, U64_LIMIT - 1) for i, d in enumerate(value)]


def _parse_u64s(value, where):
    """A tuple of u64s from a list, each as parse_int(v, ..., 0, 2**64 - 1) reads it (the plain
    statement, the last line); a list of plain ints is checked at C speed first."""
    value = _parse_list(value, where)
    if set(map(type, value)) <= {int}:
        try:
            return tuple(array("Q", value).tolist())
        except OverflowError:
            pass
    return tuple(parse_int(r, f"{where}[{i}]", 0, U64_LIMIT - 1) for i, r in enumerate(value))


def _page_key(key, where):
    if type(key) is int and 0 <= key < U64_LIMIT:
        return key
    if type(key) is str and 0 < len(key) <= 20 and key.isascii() and key.isdigit():
        return int(key)
    return parse_int(key, f"{where}[{show(key)}]", 0, U64_LIMIT - 1)


_EVENT_ARITY = {"tlbi_ipa": 2, "tlbi_vmid": 0, "dcache": 2, "icache": 2,
                # 6.6 on: TLBI by IPA range [ipa, ipa + size); TLBI of this CPU only (nsh)
                "tlbi_range": 2, "tlbi_ipa_nsh": 2,
                # hyp stage 1 (arm64-hyp-s1): TLBI by VA at EL2, all levels (vae2is) or the last
                # level only (vale2is), [va, level hint] (spec/hyp/tlbi.py)
                "tlbi_el2": 2, "tlbi_el2_last": 2}


def _parse_event(event, where):
    if (type(event) in (list, tuple) and event and type(event[0]) is str
            and _EVENT_ARITY.get(event[0]) == len(event) - 1 and all(type(v) is int for v in event[1:])):
        try:       # the common case, all operands u64 ints: checked at C speed
            return (event[0], *array("Q", event[1:]).tolist())
        except (TypeError, OverflowError):
            pass
    if not isinstance(event, (list, tuple)) or not event or not isinstance(event[0], str):
        raise StateError(f"{where}: expected an event like [\"tlbi_ipa\", ipa, level], got {show(event)}")
    name = event[0]
    if name not in _EVENT_ARITY:
        raise StateError(f"{where}: unknown event {show(name)} (known: {', '.join(_EVENT_ARITY)})")
    if len(event) != 1 + _EVENT_ARITY[name]:
        raise StateError(f"{where}: {name} takes {_EVENT_ARITY[name]} operand(s), got {len(event) - 1}")
    args = [parse_int(v, f"{where}[{i + 1}]", 0, U64_LIMIT - 1) for i, v in enumerate(event[1:])]
    return (name, *args)


_EVENT_LEN = {name: 1 + n for name, n in _EVENT_ARITY.items()}
_NAME, _FIRST, _SECOND = itemgetter(0), itemgetter(1), itemgetter(2)
_OPERANDS = itemgetter(slice(1, None))


_TWO_OPERANDS = frozenset(name for name, n in _EVENT_ARITY.items() if n == 2)


def _parse_log(value):
    """The tlb_log as a list of event tuples, each as _parse_event reads it (the plain statement,
    the last line); the common case (every event a list or tuple of a known name and as many u64
    int operands as the name takes) is checked for the whole log at once, at C speed."""
    return _read_log(value)[0]


def _read_log(value):
    """(_parse_log(value), the set of the event names in it)."""
    log = _parse_list(value, "tlb_log")
    if not log:
        return [], frozenset()
    try:
        kinds = set(map(type, log))
        if kinds <= {list, tuple}:
            distinct = set(map(_NAME, log))
            if set(map(type, distinct)) <= {str}:
                if distinct <= _TWO_OPERANDS and set(map(len, log)) == {3}:     # the usual log
                    operands = [*map(_FIRST, log), *map(_SECOND, log)]
                elif list(map(len, log)) == list(map(_EVENT_LEN.__getitem__, map(_NAME, log))):
                    operands = list(chain.from_iterable(map(_OPERANDS, log)))
                else:
                    operands = None
                if operands is not None and set(map(type, operands)) <= {int}:
                    array("Q", operands)                # range checked in C
                    return (list(log) if kinds == {tuple} else list(map(tuple, log))), distinct
    except (IndexError, KeyError, OverflowError, TypeError):
        pass
    events = [_parse_event(e, f"tlb_log[{i}]") for i, e in enumerate(log)]
    return events, set(map(_NAME, events))


def _same_tuples(pages, tuples):
    """Whether the raw ``pages`` hold exactly the pages of ``tuples`` (pa -> the raw tuple a
    State's page was read from), each as that very tuple object: then they read the same."""
    return (len(pages) == len(tuples) and pages.keys() == tuples.keys()
            and set(map(type, pages)) == {int}                  # int keys (True == 1, 1.0 == 1)
            and all(map(is_, pages.values(), map(tuples.__getitem__, pages))))


def _parse_pages(pages, page_shift, old, old_tuples, tuples):
    """The pages as pa -> list of descriptors; a page equal to one of ``old`` (a previous State's
    pages; ``old_tuples``: the raw tuples they were read from) is shared with it. The raw tuples
    read are recorded in ``tuples``."""
    count = 1 << (page_shift - 3)
    out = {}
    for key, descs in pages.items():
        pa = _page_key(key, "pages")
        if pa % (1 << page_shift):
            raise StateError(f"pages[{show(key)}]: {pa:#x} is not aligned to the {1 << page_shift:#x} page size")
        if pa in out:
            raise StateError(f"pages[{show(key)}]: page {pa:#x} listed twice")
        was = old.get(pa)
        if was is not None and descs is old_tuples.get(pa):
            out[pa] = was       # the very tuple prev's page was read from: the same parse
        elif was is not None and descs == was and list(map(type, descs)).count(int) == count:
            out[pa] = was       # equal to prev's, plain ints: the same parse, shared
        else:
            out[pa] = _parse_descriptors(descs, f"pages[{show(key)}]", count)
        if type(descs) is tuple:
            tuples[pa] = descs
    return out


def _parse_refcount_plain(refs, pages):
    """The refcount object as pa -> n, key by key: one entry for each page of ``pages`` (pa ->
    descriptors), n an atomic_t (the plain statement; _parse_refcount is the same, faster)."""
    if not isinstance(refs, dict):
        raise StateError(f"refcount: expected an object {{pa: n}}, got {_type_name(refs)}")
    out = {}
    for key, n in refs.items():
        pa = _page_key(key, "refcount")
        if pa not in pages:
            raise StateError(f"refcount[{show(key)}]: page {pa:#x} is not in pages")
        out[pa] = (n if type(n) is int and REF_LO <= n <= REF_HI else
                   parse_int(n, f"refcount[{show(key)}]", REF_LO, REF_HI))
    for pa in pages:
        if pa not in out:
            raise StateError(f"refcount: no entry for page {pa:#x} of pages")
    return out


def _parse_refcount(refs, pages):
    """_parse_refcount_plain's reading; the usual object (int keys, exactly the pages', int values
    in range) is checked at C speed and copied (tests/test_state_log.py holds the two equal)."""
    if (type(refs) is dict and refs.keys() == pages.keys() and set(map(type, refs)) <= {int}
            and set(map(type, refs.values())) <= {int}
            and (not refs or REF_LO <= min(refs.values()) and max(refs.values()) <= REF_HI)):
        return dict(refs)
    return _parse_refcount_plain(refs, pages)


class State:
    """A validated raw state. Attributes mirror the raw keys; integers are ints, pages keyed by int.

    ``ia_bits`` is the input-address size for both kinds (``va_bits`` of a hyp stage-1 state is
    also available under that name). ``pages`` maps pa -> list of descriptors, ``refcount`` pa -> n,
    ``roots``/``memcache``/``pool_errors`` are tuples, ``tlb_log`` a list of event tuples.
    """

    __slots__ = ("kind", "page_shift", "ia_bits", "start_level", "pa_bits", "owner_field",
                 "max_owner_id", "has_fwb", "has_xnx", "cmo", "idmap", "as_s1", "roots", "pages",
                 "refcount", "memcache",
                 "free_pages", "pool_errors", "tlb_log", "kernel_version", "_walk", "_events", "_tuples",
                 "_names", "_diff")     # _diff: (pre, the tree diff from pre; spec.stage2.treediff)

    @property
    def va_bits(self):
        return self.ia_bits

    @property
    def owner_tag(self):
        """The type bits of an owner annotation for this state's kernel_version (0 before 7.1)."""
        return descriptor.owner_tag(self.kernel_version)

    @property
    def stage2(self):
        return self.kind == "arm64-stage2"

    @property
    def page_size(self):
        return 1 << self.page_shift

    @property
    def entries(self):
        return 1 << (self.page_shift - 3)

    def walk(self):
        """The tree walk of this state (computed once, then cached): see ptspec.spec.arch.walk."""
        if self._walk is None:
            from ptspec.spec.arch.walk import Walk
            self._walk = Walk(self)
        return self._walk

    def events(self, name):
        """The tlb_log's events named ``name``, in log order: ``[ev for ev in self.tlb_log if ev[0]
        == name]``, cached (and without a pass when the log has no event of that name, or no other)."""
        if self._events is None:
            self._events = {}
        got = self._events.get(name)
        if got is None:
            log, names = self.tlb_log, self._names      # names: the set _read_log found
            got = self._events[name] = ([] if name not in names else list(log) if len(names) == 1
                                        else [ev for ev in log if ev[0] == name])
        return got

    def __repr__(self):
        return (f"<State {self.kind} {geometry.granule_name(self.page_shift)} ia_bits={self.ia_bits} "
                f"start_level={self.start_level} roots={[hex(r) for r in self.roots]} "
                f"pages={len(self.pages)}>")


def load_state(obj, prev=None):
    """Validate and normalise a raw state (a dict as in docs/interface.md) into a State.

    A State is returned unchanged. Raises StateError naming the key (and page, index) at fault.

    ``prev`` (a State loaded before, typically the pre-state of the step that produced obj): its
    parsed pages are reused for the pages of obj whose descriptors are equal (without reading
    them when the page is the very tuple prev's page was read from: a tuple cannot change), and
    its tree walk
    for the parts the walk cannot have changed (``Walk.reuse``), so that loading the next state of
    a run costs what the step changed. The result is the same State either way (every value is
    still validated); tests/test_window.py holds the two equal.
    """
    if isinstance(obj, State):
        return obj
    if not isinstance(obj, dict):
        raise StateError(f"state: expected a JSON object, got {_type_name(obj)}")
    kind = obj.get("kind")
    if type(kind) is not str or kind not in KINDS:
        raise StateError(f"kind: expected one of {', '.join(KINDS)}, got {show(kind)}")
    stage2 = kind == "arm64-stage2"
    bits_key = "ia_bits" if stage2 else "va_bits"
    required = ["page_shift", bits_key, "start_level", "roots", "pages", "refcount"]
    if stage2:
        required += ["owner_field", "max_owner_id"]
    for key in required:
        if key not in obj:
            raise StateError(f"{key}: missing (a {kind} state needs {', '.join(required)})")

    s = State()
    s._walk = s._events = s._diff = None
    s._tuples = tuples = {}        # pa -> the raw tuple its page was read from (immutable)
    s.kind = kind
    s.page_shift = parse_int(obj["page_shift"], "page_shift")
    if s.page_shift not in geometry.PAGE_SHIFTS:
        raise StateError(f"page_shift: expected 12, 14 or 16, got {show(s.page_shift)}")
    s.ia_bits = parse_int(obj[bits_key], bits_key, 32, 52)
    s.start_level = parse_int(obj["start_level"], "start_level", 0, 3)
    s.pa_bits = parse_int(obj.get("pa_bits", 48), "pa_bits")
    if s.pa_bits not in (48, 52):
        raise StateError(f"pa_bits: expected 48 or 52, got {show(s.pa_bits)}")
    if stage2:
        field = _parse_list(obj["owner_field"], "owner_field")
        if len(field) != 2:
            raise StateError(f"owner_field: expected [hi, lo], got {len(field)} element(s)")
        hi = parse_int(field[0], "owner_field[0]", 0, 63)
        lo = parse_int(field[1], "owner_field[1]", 1, 63)
        if hi < lo:
            raise StateError(f"owner_field: hi {hi} is below lo {lo}")
        s.owner_field = (hi, lo)
        s.max_owner_id = parse_int(obj["max_owner_id"], "max_owner_id", 0, (1 << (hi - lo + 1)) - 1)
        s.has_fwb = _parse_bool(obj.get("has_fwb", False), "has_fwb")
        s.has_xnx = _parse_bool(obj.get("has_xnx", False), "has_xnx")      # FEAT_XNX (6.19 on)
        s.cmo = _parse_bool(obj.get("cmo", False), "cmo")
        s.idmap = _parse_bool(obj.get("idmap", False), "idmap")
        s.as_s1 = _parse_bool(obj.get("as_s1", False), "as_s1")
    else:
        s.owner_field, s.max_owner_id, s.has_fwb, s.cmo, s.idmap = None, 0, False, False, False
        s.has_xnx = s.as_s1 = False

    pages = obj["pages"]
    if not isinstance(pages, dict):
        raise StateError(f"pages: expected an object {{pa: [descriptors]}}, got {_type_name(pages)}")
    if isinstance(prev, State) and prev.page_shift == s.page_shift:
        old, old_tuples = prev.pages, prev._tuples
    else:
        old, old_tuples = {}, {}
    if old_tuples and _same_tuples(pages, old_tuples):
        # every page is the very tuple prev's was read from: prev's parse of each, in obj's order
        s.pages = dict(zip(pages, map(old.__getitem__, pages)))
        s._tuples = old_tuples
    else:
        s.pages = _parse_pages(pages, s.page_shift, old, old_tuples, tuples)
    s.refcount = _parse_refcount(obj["refcount"], s.pages)

    s.roots = _parse_u64s(obj["roots"], "roots")
    s.memcache = _parse_u64s(obj.get("memcache", []), "memcache")
    free = obj.get("free_pages")
    s.free_pages = None if free is None else parse_int(free, "free_pages", 0, U64_LIMIT - 1)
    errors = _parse_list(obj.get("pool_errors", []), "pool_errors")
    for i, e in enumerate(errors):
        if not isinstance(e, str):
            raise StateError(f"pool_errors[{i}]: expected a string, got {show(e)}")
    s.pool_errors = tuple(errors)
    s.tlb_log, s._names = _read_log(obj.get("tlb_log", []))
    s.kernel_version = _parse_version(obj.get("kernel_version"))
    if isinstance(prev, State) and prev._walk is not None:
        s._walk = prev._walk.reuse(s)
    return s


def _parse_version(v):
    """kernel_version (optional): "6.6.63" -> (6, 6, 63); absent -> None (judged as 5.12-6.1)."""
    if v is None:
        return None
    parts = v.split(".") if isinstance(v, str) else []
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() and len(p) <= 4 for p in parts):
        raise StateError(f"kernel_version: expected a version like \"6.6.63\", got {show(v)}")
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def kernel_since(state, version: tuple) -> bool:
    """Whether the state comes from a kernel at `version` or later (a state without a
    kernel_version is the 5.12-6.1 code the spec was written for)."""
    return state.kernel_version is not None and state.kernel_version >= version


def kernel_before(state, version: tuple) -> bool:
    """Whether the state comes from a kernel older than `version` (no kernel_version: no)."""
    return state.kernel_version is not None and state.kernel_version < version
