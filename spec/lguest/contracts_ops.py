"""Contracts of the lguest operations that answer the guest rather than change its shadow tables.

Models, over (pre state, step, post state) as spec/lguest/contracts.py does (Linux 4.7):

- ``pa(vaddr)`` (guest_pa, page_tables.c): the guest-physical address of vaddr through the current
  pgdir's guest tables (vaddr itself before the first cr3 load); a walk that meets a non-present
  entry, or reads outside guest memory, kills the guest; a non-present PGD (or PAE PMD) entry
  answers -1UL. No table rule is applied (guest_pa never calls check_gpgd/check_gpte), and the
  table address is an ``unsigned long``: a PAE frame over 4G is truncated, as the kernel does.
- ``guest_data_init(lguest_data)`` (page_table_guest_data_init): reads the guest's kernel address
  at offset 0 of lguest_data and writes ``reserve_mem`` = 4G - switcher_addr at offset 4; an
  unreadable or unwritable lguest_data, or a kernel address at or above the switcher, kills.
- ``set_stack(esp, pages)`` and ``pin(vaddr)`` (guest_set_stack / pin_stack_pages /
  pin_page, interrupts_and_traps.c and page_tables.c): more than 2 pages kills the guest and
  changes nothing; otherwise the stack is recorded and every stack page is writable in the current
  shadow pgdir afterwards (the host must be able to push an interrupt frame there), or the guest
  dies because its tables do not allow a supervisor write there.

All are LG-C-OTHER (no translation changes but what the contract allows) except the stack, which is
LG-C-STACK. Leaves out: a second LHCALL_LGUEST_INIT (the raw state does not say whether one came
before; lg.units.model checks it on impl), the stack segment (lguest keeps it apart).
"""

from ptspec.spec.lguest.contracts import _unchanged, failure_pending, newly_dead, stack_vas
from ptspec.spec.lguest.contracts_life import c_nothing
from ptspec.spec.lguest.walk import LAYOUTS, PAGE, P, guest_allows, guest_walk
from ptspec.spec.statements import declare, statement
from ptspec.spec.violation import Violation

U32 = (1 << 32) - 1


def guest_pa_expect(st, va):
    """(answer, killed) of guest_pa(va) in state st."""
    if st.linear_pages:
        return va, False
    lay = LAYOUTS[st.pae]
    eb = lay.entry_bytes
    i, j, k = lay.indices(va)
    killed = []

    def read(addr):
        v = st.read_guest(addr & U32, eb)
        if v is None:
            killed.append(addr)
            return 0
        return v

    top = read(st.pgdirs[st.cpu_pgd]["gpgdir"] + i * eb)
    if not top & P:
        return U32, True
    upper = top
    if st.pae:
        upper = read(((lay.frame(top) * PAGE) & U32) + j * eb)
        if not upper & P:
            return U32, True
    pte = read(((lay.frame(upper) * PAGE) & U32) + k * eb)
    return (lay.frame(pte) * PAGE | (va & (PAGE - 1))) & U32, bool(killed) or not pte & P


def c_pa(pre, step, post, pre_t, post_t):
    """LG-C-OTHER for guest_pa: no translation changes; the answer is the guest's own translation
    of vaddr (vaddr itself in the linear map), -1UL for a non-present PGD/PMD entry; the guest is
    killed exactly when the walk meets a non-present entry or reads outside guest memory."""
    out = c_nothing(pre, step, post, pre_t, post_t)
    if pre.dead is not None:
        return out
    va = step["args"]["vaddr"]
    want, kill = guest_pa_expect(pre, va)
    if step["ret"] != want:
        out.append(Violation("LG-C-OTHER", f"guest_pa({va:#x}) returned {step['ret']!r}, but the guest's "
                             f"tables translate it to {want:#x}", {"va": va}))
    if (post.dead is not None) != kill:
        out.append(Violation("LG-C-OTHER", f"guest_pa({va:#x}) {'killed' if post.dead else 'did not kill'} "
                             f"the guest, but its walk {'fails' if kill else 'succeeds'}", {"va": va}))
    return out


def c_data_init(pre, step, post, pre_t, post_t):
    """LG-C-OTHER for LHCALL_LGUEST_INIT: no translation changes; when lguest_data's two fields are
    in guest memory, the guest either dies or now has kernel_address = the word at lguest_data
    (below the switcher) and reserve_mem = 4G - switcher_addr at lguest_data + 4, and no other
    guest memory changed; a kernel address
    at or above the switcher, or fields outside guest memory, kill the guest."""
    out = c_nothing(pre, step, post, pre_t, post_t)
    if pre.dead is not None:
        return out
    a = step["args"]["lguest_data"]
    ka = pre.read_guest(a, 4)
    ok = ka is not None and pre.read_guest(a + 4, 4) is not None
    if not ok or ka >= pre.switcher_addr:
        if post.dead is None:
            out.append(Violation("LG-C-OTHER", f"LHCALL_LGUEST_INIT({a:#x}) should kill the guest: "
                                 + ("lguest_data is outside guest memory" if not ok else
                                    f"kernel address {ka:#x} is at or above the switcher"), {}))
        return out
    changed = {w for w in set(pre.guest_mem) | set(post.guest_mem)
               if pre.guest_mem.get(w, 0) != post.guest_mem.get(w, 0) and not (w < a + 8 and w + 4 > a + 4)}
    if changed:
        out.append(Violation("LG-C-OTHER", f"LHCALL_LGUEST_INIT({a:#x}) changed guest memory at "
                             f"{min(changed):#x}, outside reserve_mem", {}))
    if post.dead is None:
        top = (-pre.switcher_addr) & U32
        got = post.read_guest(a + 4, 4)
        if post.kernel_address != ka or got != top:
            out.append(Violation("LG-C-OTHER", f"LHCALL_LGUEST_INIT({a:#x}): kernel_address "
                                 f"{post.kernel_address:#x} (lguest_data says {ka:#x}), reserve_mem "
                                 f"{got!r} (want {top:#x})", {}))
    return out


def _pinned(pre, step, post, post_t, vas, what):
    """Every page of vas writable in the current slot, or a justified death."""
    cur = post.cpu_pgd
    high = [va for va in vas if va >= pre.switcher_addr]
    if high and post.dead is None:
        return [Violation("LG-C-STACK", f"{what}: stack page {high[0]:#x} is at or above the switcher, "
                          "but the guest was not killed", {"va": high[0]})]
    if post.dead is None:
        for va in vas:
            sh = post_t.get((cur, va))
            if sh is None or not sh.rw:
                return [Violation("LG-C-STACK", f"{what}: stack page {va:#x} is not writable in slot {cur} "
                                  f"({hex(sh.leaf) if sh else 'not mapped'})", {"slot": cur, "va": va})]
        return []
    if not newly_dead(pre, post) or failure_pending(step):
        return []
    for va in vas:
        gw = guest_walk(pre, pre.pgdirs[pre.cpu_pgd]["gpgdir"], va, linear=pre.linear_pages)
        if va >= pre.switcher_addr or not guest_allows(gw, True, False):
            return []
    return [Violation("LG-C-STACK", f"{what} killed the guest, but its tables allow a kernel write to "
                      "every stack page and no allocation failed", {})]


@statement("LG-C-STACK", constrains=("guest_set_stack", "pin_stack_pages", "pin_page"))
def c_set_stack(pre, step, post, pre_t, post_t):
    """LG-C-STACK: set_stack(esp, pages) with more than 2 pages kills the guest and changes nothing;
    otherwise the stack becomes (esp, pages), only its pages may change (in the current pgdir), and
    each ends writable there, or the guest dies because its tables forbid a kernel write to one.
    pin_page(vaddr) is judged the same way for its one page.

    Why: the host pushes interrupt frames onto the guest's kernel stack from the switcher; a stack
    page that is not writable in the shadow at that moment faults inside the host.

    Constrains: guest_set_stack, pin_stack_pages, pin_page.
    """
    a = step["args"]
    if pre.dead is not None:
        return []
    if a["pages"] > 2:
        out = _unchanged("LG-C-STACK", pre_t, post_t, lambda i, va: True,
                         f"set_stack with {a['pages']} pages must change nothing")
        if post.dead is None:
            out.append(Violation("LG-C-STACK", f"set_stack with {a['pages']} pages (more than 2) was "
                                 "accepted", {}))
        return out
    out = []
    if tuple(post.stack) != (a["esp"], a["pages"]):
        out.append(Violation("LG-C-STACK", f"set_stack({a['esp']:#x}, {a['pages']}) left the stack at "
                             f"{tuple(post.stack)}", {}))
    vas = stack_vas(post)
    stack = set(vas)
    out += _unchanged("LG-C-STACK", pre_t, post_t, lambda i, va: not (i == pre.cpu_pgd and va in stack),
                      "set_stack may change only the stack pages")
    return out + _pinned(pre, step, post, post_t, vas, f"set_stack({a['esp']:#x}, {a['pages']})")


def c_pin(pre, step, post, pre_t, post_t):
    """LG-C-STACK for pin_page(vaddr): afterwards vaddr's page is writable in the current pgdir, or
    the guest dies because its tables forbid a kernel write there (always at or above the switcher);
    nothing else changes, and nothing at all when the page was already writable in the shadow."""
    if pre.dead is not None:
        return []
    va = step["args"]["vaddr"] & ~(PAGE - 1)
    before = pre_t.get((pre.cpu_pgd, va))
    # page_writable: already writable in the shadow, so pin_page does nothing at all
    if (before is not None and before.rw and va < pre.switcher_addr
            and (post.dead is not None or post.guest_mem != pre.guest_mem)):
        return [Violation("LG-C-STACK", f"pin({step['args']['vaddr']:#x}) of a page already writable in "
                          "the shadow must change nothing", {"va": va})]
    out = _unchanged("LG-C-STACK", pre_t, post_t, lambda i, v: not (i == pre.cpu_pgd and v == va),
                     "pin may change only its page")
    return out + _pinned(pre, step, post, post_t, [va], f"pin({step['args']['vaddr']:#x})")


OPS_CONTRACTS = {"pa": c_pa, "guest_data_init": c_data_init, "set_stack": c_set_stack, "pin": c_pin}
OPS_CONTRACT_ID = {"pa": "LG-C-OTHER", "guest_data_init": "LG-C-OTHER", "set_stack": "LG-C-STACK",
                   "pin": "LG-C-STACK"}


declare("""LG-C-SET-PMD: set_pmd (PAE) is handled as a clear_all: LG-C-CLEAR-ALL's rule, reported
under its own id.

Statement: after set_pmd no pgdir keeps a translation below the switcher except the guest's kernel
stack, re-pinned (writable) in the current one; the guest dies only when an allocation fails or its
tables forbid writing a stack page.

Why: lguest 4.7 does not track which shadow PMD mirrors the guest's, so a PMD change can only be
honoured by dropping every shadow translation; one that survives may be one the guest withdrew.

Constrains: guest_set_pmd (which calls guest_pagetable_clear_all), pin_stack_pages.
""", constrains=("guest_set_pmd", "guest_pagetable_clear_all", "pin_stack_pages"))

declare("""LG-C-RETURNS: every hypercall and fault the host handles returns.

Statement: each operation the harness drives (a guest PTE, PGD or PMD update, a new page table, a
demand fault, a flush, a stack change, a switch to the guest) comes back to its caller: it does
not run on without end. Seen by the harness around the call: one still running after its budget of
CPU time (ptspec.proofs.runner.budgets.IMPL_CALL_CPU_SECONDS, tens of times the longest operation
measured) breaks the statement, and the half-done state is not judged further.

Why: lguest handles these in the host kernel on the guest's behalf; a loop there hangs the host
CPU with the guest's lock held, and without this statement such a bug would stop the check on its
wall-clock guard (an "unknown" that depends on the machine's load) instead of failing it with the
operations that lead there.

Constrains: guest_new_pagetable, new_pgdir, find_pgdir, demand_page, guest_set_pte,
guest_set_pgd, guest_set_pmd, guest_pagetable_clear_all.
""", constrains=("guest_new_pagetable", "new_pgdir", "find_pgdir", "demand_page", "guest_set_pte",
                 "guest_set_pgd", "guest_set_pmd", "guest_pagetable_clear_all"))

declare("""LG-C-ARGS: a call with arguments that are not kernel values changes nothing.

Statement: an operation called with an argument that is not an unsigned 32-bit value (64-bit for a
PAE PTE), or of the wrong type, raises ValueError or TypeError and leaves the whole raw state (guest
memory, shadow tables, host references, the guest's life) exactly as it was.

Why: the hypercall arguments are u32/u64 in the kernel; a Python model that half-runs an operation
on a value the kernel can never see, and then raises, leaves a state no kernel reaches, and every
verdict after it is about that state rather than lguest.

Constrains: every hypercall entry point the harness drives: guest_set_pte, guest_set_pgd,
guest_set_pmd, guest_new_pagetable, demand_page, guest_set_stack, page_table_guest_data_init.
""", constrains=("guest_set_pte", "guest_set_pgd", "guest_set_pmd", "guest_new_pagetable",
                 "demand_page", "guest_set_stack", "page_table_guest_data_init"))
