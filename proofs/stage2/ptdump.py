"""Render a raw state's tables the way the kernel's ptdump shows page tables, adapted to stage 2.

One line per run of consecutive leaves that share level and attributes and map contiguous output
addresses: input range, size, level, permissions (R/W/X from S2AP and XN; with FEAT_XNX P or U
for a leaf only EL1 or only EL0 may execute from), AF, shareability, leaf
kind, memory type (NORMAL / DEVICE_nGnRE / raw MemAttr), software bits, and the output address of
the run's start. Owner annotations (invalid descriptors that carry an owner id) get a line with
``owner=N``; holes (descriptor 0) are omitted. A header gives the geometry and one line per table
page (level, input address, refcount, counted descriptors).

It reads the state only through spec (load_state and the walk), so it can render any raw state,
including broken ones: unreachable pages and unfollowable table descriptors are listed as such.
"""

from ptspec.spec import load_state
from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.arch.walk import START, END, LEVEL, DESC, OPAQUE

LEVEL_NAMES = {0: "PGD", 1: "PUD", 2: "PMD", 3: "PTE"}


def _attr_key(desc, page_shift):
    """The descriptor without its address bits: what must match for leaves to share a line."""
    return desc & ~D.encode_address(-1, page_shift) & ((1 << 64) - 1)


def _s2_attrs(desc, level, has_fwb, has_xnx=False):
    a = D.leaf_attrs(desc)
    perms = ("R" if a.r else "-") + ("W" if a.w else "-") + ("-" if a.xn else "X")
    if has_xnx:         # FEAT_XNX: X both ELs, P EL1 only (XN 0b11), U EL0 only (0b01), - none
        perms = perms[:2] + {(True, True): "X", (True, False): "P", (False, True): "U",
                             (False, False): "-"}[D.exec_levels(desc, True)]
    parts = [perms, "AF" if a.af else "  ", f"SH={D.SH_NAMES[a.sh]}", "BLK " if level < 3 else "PAGE",
             D.memattr_name(a.memattr, has_fwb)]
    if a.sw:
        parts.append(f"SW={a.sw:#x}")
    if a.dbm:
        parts.append("DBM")
    if a.contiguous:
        parts.append("CONT")
    return " ".join(parts)


def _s1_attrs(desc, level):
    lo = (desc >> 2) & 0x3FF
    hi = desc >> 51
    return f"{'BLK ' if level < 3 else 'PAGE'} attr_lo={lo:#05x} attr_hi={hi:#x}"


def _line(lo, hi, level, text):
    size = G.size_text(hi - lo)
    name = LEVEL_NAMES.get(level, f"L{level}")
    return f"{lo:#018x}-{hi:#018x} {size:>10} {name} L{level}  {text}"


def _runs(state):
    """(lo, hi, level, first desc, kind) for each run of similar consecutive non-zero leaves."""
    ps = state.page_shift
    runs = []
    for iv in state.walk().intervals:
        d, level = iv[DESC], iv[LEVEL]
        if d == 0 and not iv[OPAQUE]:
            continue
        if iv[OPAQUE]:
            kind = "opaque"
        elif D.is_valid_leaf(d, level):
            kind = "valid"
        else:
            kind = "invalid"
        if runs:
            lo, hi, rlevel, rdesc, rkind = runs[-1]
            if (rkind == kind == "valid" and hi == iv[START] and rlevel == level
                    and _attr_key(rdesc, ps) == _attr_key(d, ps)
                    and D.address(rdesc, ps) + (hi - lo) == D.address(d, ps)):
                runs[-1] = (lo, iv[END], level, rdesc, kind)
                continue
            if rkind == kind == "invalid" and hi == iv[START] and rlevel == level and rdesc == d:
                runs[-1] = (lo, iv[END], level, rdesc, kind)
                continue
        runs.append((iv[START], iv[END], level, d, kind))
    return runs


def render(state, title=None):
    """The tables of a raw state (dict or spec.State) as ptdump-style text."""
    st = load_state(state)
    ps = st.page_shift
    walk = st.walk()
    lines = []
    if title:
        lines += [title, "=" * len(title)]
    if st.kind == "arm64-stage2":
        lines.append(f"stage 2: {G.granule_name(ps)} granule, ia_bits {st.ia_bits}, start level "
                     f"{st.start_level}, pa_bits {st.pa_bits}, FWB {'on' if st.has_fwb else 'off'}, CMO "
                     f"{'on' if st.cmo else 'off'}, owner field [{st.owner_field[0]}:{st.owner_field[1]}], "
                     f"max owner {st.max_owner_id}" + (", FEAT_XNX" if st.has_xnx else ""))
    else:
        lines.append(f"hyp stage 1: {G.granule_name(ps)} granule, va_bits {st.ia_bits}, start level "
                     f"{st.start_level}, pa_bits {st.pa_bits}")
    lines.append("roots: " + (" ".join(f"{r:#x}" for r in st.roots) if st.roots else "none"))
    for pa, (level, base, _, parent, _) in walk.tables.items():
        counted = st.entries - st.pages[pa].count(0)
        role = " (root)" if parent is None else ""
        lines.append(f"table {pa:#x} level {level} ipa {base:#x} refcount {st.refcount[pa]} "
                     f"counted {counted}{role}")
    for pa in st.pages:
        if pa not in walk.tables:
            lines.append(f"page {pa:#x} not reached from the roots, refcount {st.refcount[pa]}")
    if st.memcache:
        lines.append("memcache: " + " ".join(f"{pa:#x}" for pa in st.memcache))
    runs = _runs(st) if st.roots else []
    if runs:
        lines.append("")
    for lo, hi, level, d, kind in runs:
        if kind == "valid":
            attrs = _s2_attrs(d, level, st.has_fwb, st.has_xnx) if st.kind == "arm64-stage2" else _s1_attrs(d, level)
            lines.append(_line(lo, hi, level, f"{attrs}  -> {D.address(d, ps):#x}"))
        elif kind == "opaque":
            lines.append(_line(lo, hi, level, f"TABLE {D.address(d, ps):#x} (not followed: see S2-TREE)"))
        else:
            owner = D.owner_of(d, st.owner_field, getattr(st, "owner_tag", 0)) if st.owner_field and not d & D.VALID else None
            text = f"INVALID owner={owner}" if owner else f"INVALID desc={d:#x}"
            lines.append(_line(lo, hi, level, text))
    return "\n".join(lines) + "\n"
