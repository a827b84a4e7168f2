"""The lguest invariants LG-SHADOW, LG-RC, LG-SWITCHER, LG-BND over one raw state.

Models what drivers/lguest/page_tables.c (Linux 4.7) must keep true of its shadow page tables at
every return to the guest, whatever the guest wrote into its own tables or passed to a hypercall.
Each function takes an LgState and returns a list of Violations; ``coherent`` asks LG-SHADOW to
also compare every shadow translation with the guest's *current* tables (true of a guest that
announces each change through the hypercalls, as a Linux guest does; a hostile guest may change
its tables silently, and then only the per-step form in spec/lguest/contracts.py applies).

Leaves out: the host's own use of its memory beyond the tables lguest owns.
"""

from ptspec.spec.lguest.walk import _PAGE_DIRTY, G, LAYOUTS, P, PAGE, PSE, RW, TABLE_FLAGS, US, guest_walk, shadow_pte_slot_exists, shadow_translations
from ptspec.spec.violation import Violation
from ptspec.spec.statements import statement


def _slots(st):
    return [(i, pd) for i, pd in enumerate(st.pgdirs) if pd["pgdir"]]


def _translations(st):
    """{(slot, va): Shadow} for every slot, and the structure problems met (memoised per state)."""
    memo = st.__dict__.get("_memo_translations")
    if memo is not None:
        return memo
    out, problems = {}, []
    for i, pd in _slots(st):
        for va, sh in shadow_translations(st, pd["pgdir"], problems).items():
            out[(i, va)] = sh
    st._memo_translations = (out, problems)
    return out, problems


def justify_leaf(st, sh, gpte):
    """Why the guest entry gpte does not justify the shadow leaf sh (None when it does)."""
    lay = LAYOUTS[st.pae]
    if not gpte & P:
        return f"guest entry {gpte:#x} is not present"
    if gpte & PSE:
        return f"guest entry {gpte:#x} is a large page"
    g = lay.frame(gpte)
    if g >= st.pfn_limit:
        return f"guest frame {g:#x} is at or above pfn_limit {st.pfn_limit:#x}"
    if st.guest_frames[g] != sh.hpfn:
        return (f"shadow frame {sh.hpfn:#x} is not the host frame {st.guest_frames[g]:#x} of guest "
                f"frame {g:#x}")
    if sh.leaf & RW and not (gpte & RW and gpte & _PAGE_DIRTY):
        return f"shadow is writable but the guest entry {gpte:#x} is not both RW and DIRTY"
    if sh.leaf & US and not gpte & US:
        return f"shadow is user-accessible but the guest entry {gpte:#x} is not"
    if gpte & lay.nx and not sh.nx:
        return f"shadow is executable but the guest entry {gpte:#x} is NX"
    return None


@statement("LG-SHADOW", constrains=(
    "demand_page", "gpte_to_spte", "do_set_pte", "find_spte", "new_pgdir"))
def lg_shadow(st, coherent=False):
    """LG-SHADOW: every present shadow PTE below the switcher is justified by the guest's tables.

    Statement: always, it maps the host frame of a guest frame below ``pfn_limit`` (never the
    launcher's other pages, a switcher page or a shadow table), without GLOBAL, and no shadow entry
    is a large page; shadow table entries carry only the flags lguest accepts from a guest (PAE PGD:
    P only; PGD (2-level) and PMD: P, RW, USER, ACCESSED, DIRTY).
    With ``coherent``: the guest's current tables for that pgdir (or the linear map before the
    guest's first cr3) translate the page present, to the same frame, with permissions never
    narrower than the shadow's (writable only if the guest's entries are RW and its PTE DIRTY; user
    only if USER at every level; executable only if the guest's PTE is not NX, PAE).

    Why: the shadow tables are what the CPU uses while the guest runs; a translation outside guest
    memory hands the guest host memory, a wider one breaks the guest's own protection and its
    dirty tracking.

    Constrains: demand_page, gpte_to_spte, do_set_pte, find_spte, new_pgdir.
    """
    out = []
    lay = LAYOUTS[st.pae]
    trans, problems = _translations(st)
    for kind, text in problems:
        if kind == "large":
            out.append(Violation("LG-SHADOW", text, {}))
    for i, pd in _slots(st):
        for idx, top in st.tables.get(pd["pgdir"], {}).items():
            if idx >= lay.root_entries or not top & P:
                continue
            if lay.flags(top) & ~(P if st.pae else TABLE_FLAGS):
                out.append(Violation("LG-SHADOW", f"slot {i}: shadow pgd[{idx}] = {top:#x} carries "
                                     "flags lguest never accepts", {"slot": i, "index": idx}))
    for (i, va), sh in sorted(trans.items()):
        if va >= st.switcher_addr:
            continue
        where = {"slot": i, "va": va, "pte": sh.leaf}
        for name, pa, idx, word in sh.path[1:-1]:
            if lay.flags(word) & ~TABLE_FLAGS:
                out.append(Violation("LG-SHADOW", f"slot {i} va {va:#x}: shadow {name} {word:#x} "
                                     "carries flags lguest never accepts", where))
        if st.guest_frame_of(sh.hpfn) is None:
            out.append(Violation("LG-SHADOW", f"slot {i} va {va:#x}: shadow PTE {sh.leaf:#x} maps host "
                                 f"frame {sh.hpfn:#x}, which is not guest memory", where))
            continue
        if sh.leaf & G:
            out.append(Violation("LG-SHADOW", f"slot {i} va {va:#x}: shadow PTE {sh.leaf:#x} is GLOBAL",
                                 where))
        if sh.leaf & PSE:
            out.append(Violation("LG-SHADOW", f"slot {i} va {va:#x}: shadow PTE {sh.leaf:#x} has "
                                 "PSE/PAT set", where))
        if coherent:
            gw = guest_walk(st, st.pgdirs[i]["gpgdir"], va, linear=st.linear_pages)
            why = None
            if not gw.ok:
                why = gw.reason
            else:
                why = justify_leaf(st, sh, gw.pte | (_PAGE_DIRTY if st.linear_pages else 0))
                if why is None and sh.rw and not gw.rw:
                    why = "shadow is writable but the guest's table entries are not all RW"
                if why is None and sh.us and not gw.us:
                    why = "shadow is user-accessible but the guest's table entries are not all USER"
            if why:
                out.append(Violation("LG-SHADOW", f"slot {i} (gpgdir {st.pgdirs[i]['gpgdir']:#x}) va "
                                     f"{va:#x}: shadow PTE {sh.leaf:#x} not justified: {why}", where))
    return out


@statement("LG-RC", constrains=(
    "release_pte", "release_pgd", "demand_page", "do_set_pte", "map_switcher_in_guest", "allocate_switcher_mapping", "free_guest_pagetable"))
def lg_rc(st):
    """LG-RC: every host page reference lguest holds belongs to exactly one present shadow PTE.

    Statement: for every host page, the references taken by get_user_pages/get_page and not yet put
    back equal the number of present shadow PTEs (in every pgdir, switcher PTEs included) that map
    it; every shadow table page the host allocated is a pgdir root or hangs under exactly one
    present shadow table entry (no leak, no sharing); no page is freed twice.

    Why: a PTE without its reference lets the page be freed (or swapped) under the guest; a
    reference without a PTE pins the page forever.

    Constrains: release_pte, release_pgd, demand_page,
    do_set_pte, map_switcher_in_guest, allocate_switcher_mapping, free_guest_pagetable.
    """
    out = []
    lay = LAYOUTS[st.pae]
    trans, problems = _translations(st)
    for kind, text in problems:
        if kind in ("dangling", "root"):
            out.append(Violation("LG-RC", text, {}))
    mapped = {}
    for (i, va), sh in trans.items():
        mapped.setdefault(sh.hpfn, []).append((i, va))
    for hpfn in sorted(set(mapped) | set(st.refs)):
        n, held = len(mapped.get(hpfn, [])), st.refs.get(hpfn, 0)
        if n != held:
            who = ", ".join(f"slot {i} va {va:#x}" for i, va in mapped.get(hpfn, [])[:4]) or "no PTE"
            out.append(Violation("LG-RC", f"host frame {hpfn:#x}: {held} reference(s) held, {n} present "
                                 f"shadow PTE(s) map it ({who})", {"hpfn": hpfn}))
    users = {}
    roots = [pd["pgdir"] for _, pd in _slots(st)]
    for r in roots:
        users.setdefault(r, []).append("pgdir root")
    for r in set(roots):
        for idx, top in st.tables.get(r, {}).items():
            if idx < lay.root_entries and top & P:
                t = lay.frame(top) * PAGE
                users.setdefault(t, []).append(f"pgd[{idx}] of {r:#x}")
                if st.pae and t in st.tables:
                    for j, mid in st.tables[t].items():
                        if mid & P:
                            users.setdefault(lay.frame(mid) * PAGE, []).append(f"pmd[{j}] of {t:#x}")
    for pa in sorted(st.tables):
        u = users.get(pa, [])
        if len(u) != 1:
            what = "leaked: no pgdir or table entry points to it" if not u else \
                "shared by " + ", ".join(u)
            out.append(Violation("LG-RC", f"shadow table page {pa:#x} {what}", {"table": pa}))
    for kind, text in st.host_errors:
        if kind == "free":
            out.append(Violation("LG-RC", f"host error: {text}", {}))
    return out


@statement("LG-SWITCHER", constrains=(
    "allocate_switcher_mapping", "map_switcher_in_guest", "guest_set_pgd", "guest_new_pagetable", "guest_pagetable_clear_all"))
def lg_switcher(st):
    """LG-SWITCHER: the switcher is mapped in every shadow pgdir that may run, and only it is there.

    Statement: while the guest lives, the current pgdir and every pgdir marked ``switcher_mapped``
    map the switcher code page at ``switcher_addr`` present, read-only, kernel-only and executable,
    and have shadow PTE slots for every switcher page (map_switcher_in_guest fills them without
    allocating). In every pgdir, a present translation at or above ``switcher_addr`` is one of: the
    code page; a host CPU's regs page (writable, kernel-only) or its read-only page at that CPU's
    two slots (neither global, both NX with PAE: __PAGE_KERNEL and __PAGE_KERNEL_RO carry _PAGE_NX);
    and when the pgdir last ran on host CPU c, only c's slots are mapped.

    Why: the switcher is the only way back to the host; a guest-controlled mapping over it, or a
    missing one, hands the guest the host.

    Constrains: allocate_switcher_mapping,
    map_switcher_in_guest, guest_set_pgd, guest_new_pagetable, guest_pagetable_clear_all.
    """
    out = []
    sw = st.switcher_addr
    total = 1 + 2 * st.host_cpus
    trans, _ = _translations(st)
    for (i, va), sh in sorted(trans.items()):
        if va < sw:
            continue
        k = (va - sw) // PAGE
        where = {"slot": i, "va": va, "pte": sh.leaf}
        last = st.pgdirs[i]["last_host_cpu"]
        if k == 0:
            if sh.hpfn != st.switcher_pages[0] or sh.leaf & RW or sh.leaf & US or sh.nx:
                out.append(Violation("LG-SWITCHER", f"slot {i}: switcher code slot {va:#x} holds "
                                     f"{sh.leaf:#x}, not the switcher page read-only executable", where))
        elif k < total:
            c, second = divmod(k - 1, 2)
            want = st.switcher_pages[2 + 2 * c] if second else st.regs_page
            # __PAGE_KERNEL(_RO) & ~_PAGE_GLOBAL: kernel-only, not global, and NX where NX exists
            bad = (sh.hpfn != want or sh.leaf & US or sh.leaf & G or bool(sh.leaf & RW) == bool(second)
                   or (st.pae and not sh.nx))
            if bad:
                out.append(Violation("LG-SWITCHER", f"slot {i}: host CPU {c}'s switcher slot {va:#x} "
                                     f"holds {sh.leaf:#x}, not its {'read-only' if second else 'regs'} "
                                     "page", where))
            elif last not in (-1, c):
                out.append(Violation("LG-SWITCHER", f"slot {i} last ran on host CPU {last} but CPU "
                                     f"{c}'s switcher page at {va:#x} is still mapped", where))
        else:
            out.append(Violation("LG-SWITCHER", f"slot {i}: {va:#x} at or above the switcher holds "
                                 f"{sh.leaf:#x}, which is no switcher page", where))
    if st.dead is None and not st.freed:
        for i, pd in enumerate(st.pgdirs):
            if not (pd["switcher_mapped"] or i == st.cpu_pgd):
                continue
            if not pd["pgdir"]:
                out.append(Violation("LG-SWITCHER", f"slot {i} may run but has no shadow pgdir",
                                     {"slot": i}))
                continue
            if i == st.cpu_pgd and not pd["switcher_mapped"]:
                out.append(Violation("LG-SWITCHER", f"current slot {i} is not marked switcher_mapped",
                                     {"slot": i}))
            if (i, sw) not in trans:
                out.append(Violation("LG-SWITCHER", f"slot {i} (switcher_mapped) does not map the "
                                     f"switcher code page at {sw:#x}", {"slot": i}))
            for k in range(total):
                if not shadow_pte_slot_exists(st, pd["pgdir"], sw + k * PAGE):
                    out.append(Violation("LG-SWITCHER", f"slot {i} (switcher_mapped) has no shadow PTE "
                                         f"slot for switcher page {sw + k * PAGE:#x}", {"slot": i}))
                    break
    return out


@statement("LG-BND", constrains=(
    "guest_set_pgd", "release_pgd", "remove_switcher_percpu_map", "map_switcher_in_guest", "find_spte"))
def lg_bnd(st):
    """LG-BND: every index that comes from the guest is in bounds; the host touches only its tables.

    Statement: no access the host made went outside a shadow table page it holds (past the end of a
    page, through a NULL or stale table pointer, a BUG_ON hit), and a PAE shadow pgdir uses only its
    four PGD entries. The per-step form (spec/lguest/contracts.py) adds: a hypercall whose pgd index
    is at or beyond PTRS_PER_PGD kills the guest and changes nothing.

    Why: the guest controls these indices; an unchecked one makes the host read, free or write
    memory that is not the guest's shadow tables.

    Constrains: guest_set_pgd, release_pgd,
    remove_switcher_percpu_map, map_switcher_in_guest, find_spte.
    """
    out = []
    for kind, text in st.host_errors:
        if kind != "free":
            out.append(Violation("LG-BND", f"host {kind}: {text}", {}))
    if st.pae:
        for i, pd in _slots(st):
            extra = [k for k in st.tables.get(pd["pgdir"], {}) if k >= 4]
            if extra:
                out.append(Violation("LG-BND", f"slot {i}: PAE shadow pgdir {pd['pgdir']:#x} has entries "
                                     f"beyond the 4 PGD entries (index {extra[0]})", {"slot": i}))
    return out


LG_INVARIANTS = {"LG-SHADOW": lg_shadow, "LG-RC": lg_rc, "LG-SWITCHER": lg_switcher, "LG-BND": lg_bnd}
