"""Print lguest shadow tables for a reviewer, in a ptdump-like style (arch/x86/mm/dump_pagetables.c).

One block per shadow pgdir slot: which guest pgdir it shadows, then one line per run of contiguous
pages with the same attributes: virtual range, size, host frames, flags (RW/ro, USR, PWT, PCD, A,
D, GLB, NX), and what the host frames are (guest frames, switcher, regs page). Addresses in hex.
Reads only the raw state (through the spec's walk), so it draws states from any source.
"""

from ptspec.spec.lguest.state import load_lguest_state
from ptspec.spec.lguest.walk import shadow_translations

FLAG_NAMES = ((0x2, "RW", "ro"), (0x4, "USR", "   "), (0x8, "PWT", "   "), (0x10, "PCD", "   "),
              (0x20, "A", " "), (0x40, "D", " "), (0x100, "GLB", "   "))


def _flags(leaf, pae):
    parts = [on if leaf & bit else off for bit, on, off in FLAG_NAMES]
    if pae:
        parts.append("NX" if leaf >> 63 else "x ")
    return " ".join(parts)


def _what(st, hpfn):
    g = st.guest_frame_of(hpfn)
    if g is not None:
        return f"guest frame {g:#x}"
    if hpfn in st.switcher_pages:
        return f"switcher page {st.switcher_pages.index(hpfn)}"
    if hpfn == st.regs_page:
        return "regs page"
    return "NOT GUEST MEMORY"


def render_lguest(raw) -> str:
    st = load_lguest_state(raw)
    lines = [f"lguest {st.format}: pfn_limit {st.pfn_limit:#x}, switcher at {st.switcher_addr:#x}, "
             f"kernel_address {st.kernel_address:#x}, cpu_pgd {st.cpu_pgd}"
             + (", linear" if st.linear_pages else "") + (f", DEAD ({st.dead})" if st.dead else "")]
    for i, pd in enumerate(st.pgdirs):
        if not pd["pgdir"]:
            lines.append(f"slot {i}: (no pgdir)")
            continue
        lines.append(f"slot {i}: shadow pgdir {pd['pgdir']:#x} for guest pgdir {pd['gpgdir']:#x}"
                     f"{' [switcher]' if pd['switcher_mapped'] else ''} last cpu {pd['last_host_cpu']}")
        trans = sorted(shadow_translations(st, pd["pgdir"]).items())
        run = None
        for va, sh in trans + [(None, None)]:
            key = None if sh is None else (_flags(sh.leaf, st.pae), _what(st, sh.hpfn).split()[0])
            if run and sh is not None and va == run[1] and key == run[2] and sh.hpfn == run[4] + 1:
                run = (run[0], va + 4096, key, run[3], sh.hpfn)
                continue
            if run:
                n = (run[1] - run[0]) // 4096
                lines.append(f"  {run[0]:#010x}-{run[1]:#010x} {n:4d}x4K  host {run[3]:#x}..  "
                             f"{run[2][0]}  {_what(st, run[3])}")
            run = None if sh is None else (va, va + 4096, key, sh.hpfn, sh.hpfn)
    for kind, text in st.host_errors:
        lines.append(f"host error ({kind}): {text}")
    return "\n".join(lines)
