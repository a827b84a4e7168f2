"""Contracts of an lguest guest's life: set-up (init), running on a host CPU, tear-down, and the
operations that change no shadow translation.

Models, over (pre state, step, post state) as spec/lguest/contracts.py does (Linux 4.7,
drivers/lguest/page_tables.c): init_guest_pagetable (LG-C-INIT), map_switcher_in_guest before a
run (LG-C-RUN), free_guest_pagetable (LG-C-FREE), and guest memory writes, guest_pa and
LHCALL_LGUEST_INIT, which must leave every shadow translation as it was (LG-C-OTHER).
Leaves out: the switcher's own code and the launcher's memory layout.
"""

from ptspec.spec.lguest.contracts import _unchanged
from ptspec.spec.lguest.walk import LAYOUTS, PAGE
from ptspec.spec.statements import statement
from ptspec.spec.violation import Violation


@statement("LG-C-RUN", constrains=("map_switcher_in_guest", "remove_switcher_percpu_map"))
def c_run(pre, step, post, pre_t, post_t):
    """LG-C-RUN: running on host CPU c leaves the current pgdir's last_host_cpu = c (LG-SWITCHER then
    requires exactly c's switcher pages) and changes no translation below the switcher.

    Why: the switcher pages of another host CPU left mapped let the guest see (and, for the regs page,
    write) the state of a guest running there.

    Constrains: map_switcher_in_guest, remove_switcher_percpu_map.
    """
    c = step["args"]["host_cpu"]
    out = _unchanged("LG-C-RUN", pre_t, post_t, lambda i, va: va < pre.switcher_addr,
                     "running changes no guest translation")
    if post.pgdirs[post.cpu_pgd]["last_host_cpu"] != c:
        out.append(Violation("LG-C-RUN", f"after running on host CPU {c} the current slot says it last "
                             f"ran on {post.pgdirs[post.cpu_pgd]['last_host_cpu']}", {}))
    sw = pre.switcher_addr
    for k, want in ((1 + 2 * c, post.regs_page), (2 + 2 * c, post.switcher_pages[2 + 2 * c])):
        sh = post_t.get((post.cpu_pgd, sw + k * PAGE))
        if sh is None or sh.hpfn != want:
            out.append(Violation("LG-C-RUN", f"host CPU {c}'s switcher slot {sw + k * PAGE:#x} does not "
                                 f"map {want:#x}", {}))
    return out


@statement("LG-C-INIT", constrains=(
    "init_guest_pagetable", "allocate_switcher_mapping", "map_switcher_in_guest"))
def c_init(pre, step, post, pre_t, post_t):
    """LG-C-INIT: init returns 0 with the guest alive, one pgdir (shadowing guest pgdir 0) in linear
    mode mapping the switcher and no table page but the pgdir and those on the switcher pages'
    walks; or -ENOMEM with nothing held.

    Why: the guest's first instruction runs on this pgdir: it needs the switcher to trap back, and a
    failed init must not leave pages the launcher can never free.

    Constrains: init_guest_pagetable, allocate_switcher_mapping, map_switcher_in_guest.
    """
    if step["ret"] == 0:
        cur = post.pgdirs[post.cpu_pgd]
        if not post.linear_pages or not cur["switcher_mapped"] or post.dead is not None:
            return [Violation("LG-C-INIT", "init returned 0 without linear mode and the switcher, or "
                              "with the guest dead", {})]
        if cur["gpgdir"] != 0:
            return [Violation("LG-C-INIT", f"init's pgdir shadows {cur['gpgdir']:#x}, not guest pgdir 0",
                              {})]
        lay = LAYOUTS[post.pae]
        sw = post.switcher_addr
        path = {cur["pgdir"]}
        for k in range(1 + 2 * post.host_cpus):
            i, j, _ = lay.indices(sw + k * PAGE)
            top = post.tables.get(cur["pgdir"], {}).get(i, 0)
            path.add(lay.frame(top) * PAGE)
            if post.pae:
                path.add(lay.frame(post.tables.get(lay.frame(top) * PAGE, {}).get(j, 0)) * PAGE)
        extra = sorted(set(post.tables) - path)
        if extra:
            return [Violation("LG-C-INIT", f"init allocated table page {extra[0]:#x}, which is on no "
                              "switcher page's walk", {})]
        return []
    return c_free(pre, step, post, pre_t, post_t, cid="LG-C-INIT", keep_roots=True)


@statement("LG-C-FREE", constrains=(
    "free_guest_pagetable", "release_all_pagetables", "release_pgd", "release_pte"))
def c_free(pre, step, post, pre_t, post_t, cid="LG-C-FREE", keep_roots=False):
    """LG-C-FREE: after free_guest_pagetable no shadow table page and no host reference is held.

    Statement: the post state holds no shadow table page (init's failure path keeps the pgdir
    roots) and no host page reference taken by the shadow tables.

    Why: after the guest is gone every shadow page and every pinned host page must be given back, or
    each guest that exits leaks host memory.

    Constrains: free_guest_pagetable, release_all_pagetables, release_pgd, release_pte.
    """
    out = []
    roots = {pd["pgdir"] for pd in post.pgdirs if pd["pgdir"]} if keep_roots else set()
    extra = sorted(set(post.tables) - roots)
    if extra:
        out.append(Violation(cid, f"{len(extra)} shadow table page(s) still held, first {extra[0]:#x}", {}))
    held = {p: n for p, n in post.refs.items() if n}
    if held:
        p = min(held)
        out.append(Violation(cid, f"{len(held)} host page(s) still referenced, first {p:#x} "
                             f"({held[p]} reference(s))", {}))
    return out


@statement("LG-C-OTHER", constrains=("guest_pa", "page_table_guest_data_init"))
def c_nothing(pre, step, post, pre_t, post_t):
    """LG-C-OTHER: operations that change no shadow translation leave every one as it was.

    Statement: a guest memory write, guest_pa and LHCALL_LGUEST_INIT change no shadow translation
    in any pgdir (what each answers is in spec/lguest/contracts_ops.py).

    Why: the shadow follows the guest's tables only through the hypercalls that say they changed
    and through demand faults; an operation that changes it on the side breaks that bookkeeping.

    Constrains: guest_pa, page_table_guest_data_init (and guest memory writes, which lguest does
    not see until the next hypercall or fault).
    """
    return _unchanged("LG-C-OTHER", pre_t, post_t, lambda i, va: True,
                      f"{step['op']} must not change the shadow tables")


LIFE_CONTRACTS = {"run": c_run, "init": c_init, "free": c_free, "guest_write": c_nothing,
                  "pa": c_nothing, "guest_data_init": c_nothing}
LIFE_CONTRACT_ID = {"run": "LG-C-RUN", "init": "LG-C-INIT", "free": "LG-C-FREE",
                    "guest_write": "LG-C-OTHER", "pa": "LG-C-OTHER", "guest_data_init": "LG-C-OTHER"}
