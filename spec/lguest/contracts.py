"""Contracts of lguest's hypercall-level operations, judged over (pre state, step, post state).

Models what each entry point of drivers/lguest/page_tables.c (Linux 4.7) may do to the shadow
translations, stated per 4K page of every shadow pgdir: set_pte (LG-C-SET-PTE), set_pgd
(LG-C-SET-PGD, with LG-BND for its index), set_pmd (LG-C-SET-PMD), new_pagetable
(LG-C-NEW-PGTABLE), flush_user (LG-C-FLUSH), clear_all (LG-C-CLEAR-ALL), a guest page fault
(LG-C-DEMAND), and the per-step form of LG-SHADOW: every shadow translation a step creates or
changes is justified, at that moment, by the guest's tables (or by the PTE the guest passed to
set_pte).

A step record is {"op", "args", "ret", "out"} (docs/lguest.md). A step that kills the guest
("dead" set in post) is judged only by the invariants and LG-SHADOW's per-step form: the guest never
runs again. Set-up, running and tear-down are in spec/lguest/contracts_life.py, the operations
that answer the guest in spec/lguest/contracts_ops.py. Leaves out: timing, the hypercall batching
of the real launcher.
"""

from ptspec.spec.lguest.invariants import _translations, justify_leaf
from ptspec.spec.lguest.walk import _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PSE, LAYOUTS, P, PAGE, PF_USER, PF_WRITE, guest_allows, guest_walk
from ptspec.spec.lguest.state import U32
from ptspec.spec.violation import Violation
from ptspec.spec.statements import statement


def _leaves(st):
    trans, _ = _translations(st)
    return trans


def _changed(pre_t, post_t, keep):
    """(slot, va) pairs with keep(slot, va) whose leaf differs between pre and post."""
    out = []
    for key in set(pre_t) | set(post_t):
        if keep(*key):
            a, b = pre_t.get(key), post_t.get(key)
            if (a.leaf if a else 0) != (b.leaf if b else 0):
                out.append(key)
    return sorted(out)


def _unchanged(cid, pre_t, post_t, keep, why):
    bad = _changed(pre_t, post_t, keep)
    if not bad:
        return []
    i, va = bad[0]
    a, b = pre_t.get(bad[0]), post_t.get(bad[0])
    return [Violation(cid, f"{why}: slot {i} va {va:#x} changed from {a.leaf if a else 0:#x} to "
                      f"{b.leaf if b else 0:#x} ({len(bad)} page(s) changed)", {"slot": i, "va": va})]


def failure_pending(step):
    """Whether an allocation or get_user_pages failure was pending when the step ran (the step's
    "out" says so as ``fail_alloc``/``fail_gup`` counts; a step record without them is taken as
    possibly failing). A pending failure is a reason for the host to kill the guest."""
    out = step.get("out") or {}
    if "fail_alloc" not in out or "fail_gup" not in out:
        return True
    return bool(out["fail_alloc"] or out["fail_gup"])


def newly_dead(pre, post):
    return pre.dead is None and post.dead is not None


STACK_PAGES_MAX = (U32 + 1) // PAGE     # distinct pages of the 32-bit space: k and k + this coincide


def stack_vas(st):
    """The guest kernel stack pages lguest pins (pin_stack_pages): esp1 - 1 - k * PAGE, each page
    once (a count past the 2**20 pages of the 32-bit space wraps onto pages already listed)."""
    esp, pages = st.stack
    return [((esp - 1 - k * PAGE) & U32) & ~(PAGE - 1) for k in range(min(pages, STACK_PAGES_MAX))]


def stack_unpinned(cid, post, post_t, slot, what):
    """A violation when a stack page is not writable in slot (the guest still alive)."""
    if post.dead is not None:
        return []
    for va in stack_vas(post):
        sh = post_t.get((slot, va))
        if sh is None or not sh.rw:
            return [Violation(cid, f"{what}: the guest's kernel stack page {va:#x} is not writable in "
                              f"slot {slot} ({hex(sh.leaf) if sh else 'not mapped'})",
                              {"slot": slot, "va": va})]
    return []


def per_step_shadow(pre, step, post, pre_t, post_t):
    """LG-SHADOW, per step: each translation below the switcher that the step created or changed is
    justified by the guest's tables in the post state (the linear map before the first cr3), or,
    for set_pte at that page, by the PTE the guest passed."""
    out = []
    sw = post.switcher_addr
    for key in _changed(pre_t, post_t, lambda i, va: va < sw):
        sh = post_t.get(key)
        if sh is None:
            continue
        i, va = key
        why = None
        if step["op"] == "set_pte" and va == step["args"]["vaddr"] & ~(PAGE - 1):
            why = justify_leaf(post, sh, step["args"]["gpte"])
            if why is None:
                continue
        gw = guest_walk(post, post.pgdirs[i]["gpgdir"], va, linear=post.linear_pages)
        if not gw.ok:
            why = why or gw.reason
        else:
            why2 = justify_leaf(post, sh, gw.pte | (_PAGE_DIRTY if post.linear_pages else 0))
            if why2 is None:
                continue
            why = why or why2
        out.append(Violation("LG-SHADOW", f"{step['op']}: new shadow PTE {sh.leaf:#x} at slot {i} va "
                             f"{va:#x} is not justified by the guest's tables: {why}",
                             {"slot": i, "va": va, "pte": sh.leaf}))
    return out


@statement("LG-C-SET-PTE", constrains=(
    "guest_set_pte", "do_set_pte", "gpte_to_spte", "find_pgdir", "release_pte"))
def c_set_pte(pre, step, post, pre_t, post_t):
    """LG-C-SET-PTE: set_pte(gpgdir, vaddr, gpte) touches only vaddr's page: in every pgdir when
    vaddr is at or above the guest's kernel address, else in the pgdir shadowing gpgdir; there
    the page ends translated as gpte allows (the old translation never survives), and absent when
    gpte is not present or has neither ACCESSED nor DIRTY. At or above the switcher: the guest dies;
    below it the guest may die only for a PTE lguest refuses (PSE, frame at or over pfn_limit) or a
    failed allocation.

    Why: the guest changes its PTEs without trapping, and tells the host with this hypercall; a stale
    shadow PTE that survives it keeps a translation the guest has withdrawn (a page it freed stays
    mapped), and one set where the guest did not ask maps memory the guest never agreed to.

    Constrains: guest_set_pte, do_set_pte, gpte_to_spte, find_pgdir, release_pte.
    """
    a = step["args"]
    page = a["vaddr"] & ~(PAGE - 1)
    if a["vaddr"] >= pre.switcher_addr:
        out = _unchanged("LG-C-SET-PTE", pre_t, post_t, lambda i, va: True,
                         "set_pte into the switcher must change nothing")
        if post.dead is None:
            out.append(Violation("LG-C-SET-PTE", f"set_pte at {a['vaddr']:#x} (switcher) did not kill the "
                                 "guest", {}))
        return out
    if a["vaddr"] >= pre.kernel_address:
        slots = {i for i, pd in enumerate(pre.pgdirs) if pd["pgdir"]}
    else:
        hit = [i for i, pd in enumerate(pre.pgdirs) if pd["pgdir"] and pd["gpgdir"] == a["gpgdir"]]
        slots = set(hit[:1])
    out = _unchanged("LG-C-SET-PTE", pre_t, post_t, lambda i, va: not (i in slots and va == page),
                     f"set_pte({a['gpgdir']:#x}, {a['vaddr']:#x}) may change only that page")
    g = a["gpte"]
    lay = LAYOUTS[pre.pae]
    bad_gpte = bool(g & _PAGE_PSE) or lay.frame(g) >= pre.pfn_limit
    if newly_dead(pre, post) and not bad_gpte and not failure_pending(step):
        out.append(Violation("LG-C-SET-PTE", f"set_pte({a['gpgdir']:#x}, {a['vaddr']:#x}, {g:#x}) killed "
                             "the guest, but the PTE is one lguest accepts and no allocation failed",
                             {"va": page}))
    installs = bool(g & (_PAGE_ACCESSED | _PAGE_DIRTY)) and bool(g & P)     # do_set_pte: ACCESSED or DIRTY, present
    for i in sorted(slots):
        sh = post_t.get((i, page))
        if sh is None:
            continue
        if not installs:
            out.append(Violation("LG-C-SET-PTE", f"set_pte({a['gpgdir']:#x}, {a['vaddr']:#x}, {g:#x}): "
                                 f"slot {i} still maps the page ({sh.leaf:#x}), but a PTE that is not "
                                 "present or has neither ACCESSED nor DIRTY must leave it unmapped",
                                 {"slot": i, "va": page, "pte": sh.leaf}))
            continue
        why = justify_leaf(post, sh, a["gpte"])
        if why:
            out.append(Violation("LG-C-SET-PTE", f"set_pte({a['gpgdir']:#x}, {a['vaddr']:#x}, "
                                 f"{a['gpte']:#x}) installed {sh.leaf:#x} in slot {i}: {why}",
                                 {"slot": i, "va": page, "pte": sh.leaf}))
    return out


@statement("LG-C-SET-PGD", constrains=("guest_set_pgd", "release_pgd", "find_pgdir"))
def c_set_pgd(pre, step, post, pre_t, post_t):
    """LG-C-SET-PGD: set_pgd(gpgdir, idx) with idx < PTRS_PER_PGD empties PGD entry idx of the pgdir
    shadowing gpgdir (below the switcher) and changes nothing else below the switcher; an idx at or
    beyond PTRS_PER_PGD kills the guest and changes nothing (LG-BND); one in bounds kills it only
    when an allocation fails.

    Why: a guest that replaces a top-level entry must lose every translation under the old one, and
    the index comes straight from the guest: an unchecked one frees host memory (LG-BND).

    Constrains: guest_set_pgd, release_pgd, find_pgdir.
    """
    a = step["args"]
    lay = LAYOUTS[pre.pae]
    sw = pre.switcher_addr
    if a["idx"] >= lay.root_entries:
        out = _unchanged("LG-BND", pre_t, post_t, lambda i, va: True,
                         f"set_pgd index {a['idx']} is out of bounds and must change nothing")
        if post.dead is None:
            out.append(Violation("LG-BND", f"set_pgd index {a['idx']} >= PTRS_PER_PGD "
                                 f"{lay.root_entries} was accepted: the guest was not killed",
                                 {"idx": a["idx"]}))
        return out
    hit = [i for i, pd in enumerate(pre.pgdirs) if pd["pgdir"] and pd["gpgdir"] == a["gpgdir"]]
    slot = hit[0] if hit else None
    span = lay.root_span()
    if newly_dead(pre, post) and not failure_pending(step):
        return [Violation("LG-C-SET-PGD", f"set_pgd({a['gpgdir']:#x}, {a['idx']}) killed the guest "
                          "though the index is in bounds and no allocation failed", {})]
    out = _unchanged("LG-C-SET-PGD", pre_t, post_t,
                     lambda i, va: va < sw and not (i == slot and va // span == a["idx"]),
                     f"set_pgd({a['gpgdir']:#x}, {a['idx']}) may change only that PGD entry")
    if slot is not None:
        left = [va for (i, va) in post_t if i == slot and va < sw and va // span == a["idx"]]
        if left:
            out.append(Violation("LG-C-SET-PGD", f"slot {slot} still maps {left[0]:#x} after set_pgd of "
                                 f"its PGD entry {a['idx']}", {"slot": slot, "va": left[0]}))
        if post.pgdirs[slot]["last_host_cpu"] != -1:
            out.append(Violation("LG-C-SET-PGD", f"slot {slot}: last_host_cpu not reset", {"slot": slot}))
    return out


def _only_stack(cid, post, post_t, slots, limit, what):
    stack = set(stack_vas(post))
    for (i, va) in sorted(post_t):
        if i in slots and va < limit and not (i == post.cpu_pgd and va in stack):
            return [Violation(cid, f"{what}: slot {i} still maps {va:#x}", {"slot": i, "va": va})]
    return []


@statement("LG-C-CLEAR-ALL", constrains=(
    "guest_pagetable_clear_all", "release_all_pagetables", "pin_stack_pages", "pin_page"))
def c_clear_all(pre, step, post, pre_t, post_t):
    """LG-C-CLEAR-ALL (and LG-C-SET-PMD, which is a clear_all): no pgdir keeps a translation below
    the switcher except the guest's kernel stack, re-pinned (writable) in the current one; the guest
    dies only when an allocation fails or its tables forbid writing a stack page.

    Why: the guest asks for this when it changes its kernel mappings; any shadow translation that
    survives may be one the guest has since withdrawn, and a stack page left unpinned makes the
    next interrupt fault inside the host.

    Constrains: guest_pagetable_clear_all, release_all_pagetables, pin_stack_pages, pin_page.
    """
    cid = "LG-C-SET-PMD" if step["op"] == "set_pmd" else "LG-C-CLEAR-ALL"
    if newly_dead(pre, post) and not failure_pending(step):
        cur = pre.pgdirs[pre.cpu_pgd]["gpgdir"]
        if all(va < pre.switcher_addr and guest_allows(guest_walk(pre, cur, va, linear=pre.linear_pages),
                                                       True, False) for va in stack_vas(pre)):
            return [Violation(cid, f"{step['op']} killed the guest, but no allocation failed and its "
                              "tables allow re-pinning the stack", {})]
    return _only_stack(cid, post, post_t, range(len(post.pgdirs)), post.switcher_addr,
                       f"{step['op']} must drop every translation") + \
        stack_unpinned(cid, post, post_t, post.cpu_pgd, f"{step['op']} must re-pin the stack")


@statement("LG-C-FLUSH", constrains=("guest_pagetable_flush_user", "flush_user_mappings"))
def c_flush(pre, step, post, pre_t, post_t):
    """LG-C-FLUSH: flush_user drops every translation of the current pgdir below the PGD entry of
    the guest's kernel address, and changes nothing else.

    Why: the guest flushes its TLB by this hypercall; a user translation left in the shadow after it
    is a stale TLB entry the guest believes gone.

    Constrains: guest_pagetable_flush_user, flush_user_mappings.
    """
    lay = LAYOUTS[pre.pae]
    cur = pre.cpu_pgd
    limit = (pre.kernel_address // lay.root_span()) * lay.root_span()
    out = _unchanged("LG-C-FLUSH", pre_t, post_t, lambda i, va: not (i == cur and va < limit),
                     "flush_user may change only the current pgdir's user part")
    left = [va for (i, va) in post_t if i == cur and va < limit]
    if left:
        out.append(Violation("LG-C-FLUSH", f"slot {cur} still maps user address {left[0]:#x}",
                             {"slot": cur, "va": left[0]}))
    return out


@statement("LG-C-NEW-PGTABLE", constrains=(
    "guest_new_pagetable", "find_pgdir", "new_pgdir", "flush_user_mappings", "pin_stack_pages",
    "map_switcher_in_guest"))
def c_new_pagetable(pre, step, post, pre_t, post_t):
    """LG-C-NEW-PGTABLE: after new_pagetable(pgtable) the current pgdir shadows pgtable and maps the
    switcher; a cached pgdir keeps its translations; a new one keeps none of its user part except the
    re-pinned stack (pinned, writable, when the slot's page was freshly allocated); other pgdirs
    are untouched; the first call (leaving the linear map) drops all.

    Why: a cr3 switch must run the guest on the tables it named: translations of another process left
    in a freshly used pgdir leak memory between guest processes, and a missing switcher or
    unpinned stack crashes the next trap into the host.

    Constrains: guest_new_pagetable, find_pgdir, new_pgdir, flush_user_mappings, pin_stack_pages, map_switcher_in_guest.
    """
    pg = step["args"]["pgtable"]
    cur = post.cpu_pgd
    out = []
    if post.pgdirs[cur]["gpgdir"] != pg or post.linear_pages:
        out.append(Violation("LG-C-NEW-PGTABLE", f"current slot {cur} shadows "
                             f"{post.pgdirs[cur]['gpgdir']:#x}, not {pg:#x}", {"slot": cur}))
    sw = pre.switcher_addr
    if pre.linear_pages:
        return out + _only_stack("LG-C-NEW-PGTABLE", post, post_t, range(len(post.pgdirs)), sw,
                                 "leaving the linear map must drop every translation")
    hit = [i for i, pd in enumerate(pre.pgdirs) if pd["pgdir"] and pd["gpgdir"] == pg]
    if hit:
        if cur != hit[0]:
            out.append(Violation("LG-C-NEW-PGTABLE", f"pgtable {pg:#x} is cached in slot {hit[0]} but "
                                 f"slot {cur} was chosen", {"slot": cur}))
        return out + _unchanged("LG-C-NEW-PGTABLE", pre_t, post_t, lambda i, va: va < sw,
                                "switching to a cached pgdir changes no translation")
    lay = LAYOUTS[pre.pae]
    limit = (pre.kernel_address // lay.root_span()) * lay.root_span()
    out += _unchanged("LG-C-NEW-PGTABLE", pre_t, post_t, lambda i, va: i != cur and va < sw,
                      "a new pgdir must leave the other slots alone")
    if not pre.pgdirs[cur]["pgdir"]:
        out += stack_unpinned("LG-C-NEW-PGTABLE", post, post_t, cur,
                              "a freshly allocated pgdir must get the stack pinned")
    return out + _only_stack("LG-C-NEW-PGTABLE", post, post_t, {cur}, limit,
                             "a new pgdir keeps no user translation")


@statement("LG-C-DEMAND", constrains=(
    "demand_page", "gpte_to_spte", "check_gpte", "check_gpgd", "find_spte", "release_pte"))
def c_demand(pre, step, post, pre_t, post_t):
    """LG-C-DEMAND: a guest page fault at vaddr (errcode bit 1 write, bit 2 user) is fixed exactly
    when the guest's own tables allow the access (all levels): then the shadow allows it, to the
    right frame, and the guest's PTE gains ACCESSED (and DIRTY for a write, only then); otherwise the fault is
    the guest's (ret False). Only vaddr's page may change. The guest may be killed only when its
    walk reads an entry outside its memory or one lguest refuses, or an allocation failed; it must
    be killed when the walk's PGD (or PAE PMD) entry is outside its memory or refused.

    Why: demand faulting is the only way the shadow grows; fixing a fault the guest's tables forbid
    hands the guest access it denied itself, refusing one they allow loops the guest on the
    fault, and a missed ACCESSED/DIRTY update breaks the guest's own page reclaim.

    Constrains: demand_page, gpte_to_spte, check_gpte, check_gpgd, find_spte, release_pte.
    """
    a = step["args"]
    va, write, user = a["vaddr"], bool(a["errcode"] & PF_WRITE), bool(a["errcode"] & PF_USER)
    page = va & ~(PAGE - 1)
    cur = pre.cpu_pgd
    out = _unchanged("LG-C-DEMAND", pre_t, post_t, lambda i, v: not (i == cur and v == page),
                     f"a fault at {va:#x} may change only that page")
    gw = guest_walk(pre, pre.pgdirs[cur]["gpgdir"], va, linear=pre.linear_pages)
    if newly_dead(pre, post) and not gw.bad and not failure_pending(step):
        out.append(Violation("LG-C-DEMAND", f"fault at {va:#x} killed the guest, but every entry its "
                             "walk reads is in guest memory and one lguest accepts, and no allocation "
                             "failed", {"va": va}))
    if post.dead is not None:
        return out
    if va < pre.switcher_addr and not pre.linear_pages and gw.bad and gw.level in ("pgd", "pmd"):
        out.append(Violation("LG-C-DEMAND", f"fault at {va:#x}: the guest's walk fails at its "
                             f"{gw.level} entry ({gw.reason}), which must kill the guest", {"va": va}))
        return out
    allowed = va < pre.switcher_addr and guest_allows(gw, write, user)
    if bool(step["ret"]) != allowed:
        out.append(Violation("LG-C-DEMAND", f"fault at {va:#x} (write={write}, user={user}) returned "
                             f"{bool(step['ret'])} but the guest's tables "
                             f"{'allow' if allowed else 'do not allow'} it"
                             + ("" if allowed else f" ({gw.reason or 'permissions'})"), {"va": va}))
        return out
    if allowed:
        sh = post_t.get((cur, page))
        if (sh is None or sh.hpfn != post.guest_frames[gw.frame] or (write and not sh.rw)
                or (user and not sh.us)):
            out.append(Violation("LG-C-DEMAND", f"fault at {va:#x} reported fixed but the shadow "
                                 f"{'maps ' + hex(sh.leaf) if sh else 'has nothing'} there", {"va": va}))
        if not pre.linear_pages:
            g = post.read_guest(gw.pte_addr, LAYOUTS[pre.pae].entry_bytes)
            want = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
            if g is None or g & want != want:
                out.append(Violation("LG-C-DEMAND", f"guest PTE at {gw.pte_addr:#x} lacks ACCESSED"
                                     f"{'/DIRTY' if write else ''} after the fault", {"va": va}))
            elif not write and g & _PAGE_DIRTY and not gw.pte & _PAGE_DIRTY:
                out.append(Violation("LG-C-DEMAND", f"a read fault at {va:#x} marked the guest PTE at "
                                     f"{gw.pte_addr:#x} DIRTY", {"va": va}))
    return out


LG_CONTRACTS = {
    "set_pte": c_set_pte, "set_pgd": c_set_pgd, "set_pmd": c_clear_all, "clear_all": c_clear_all,
    "flush_user": c_flush, "new_pagetable": c_new_pagetable, "fault": c_demand,
}
LG_OP_CONTRACT_ID = {
    "set_pte": "LG-C-SET-PTE", "set_pgd": "LG-C-SET-PGD", "set_pmd": "LG-C-SET-PMD",
    "clear_all": "LG-C-CLEAR-ALL", "flush_user": "LG-C-FLUSH", "new_pagetable": "LG-C-NEW-PGTABLE",
    "fault": "LG-C-DEMAND",
}
