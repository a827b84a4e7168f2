"""Contracts of a stage-2 table's creation and teardown: init and destroy.

Models: kvm_pgtable_stage2_init (kvm_pgd_pages, zalloc_pages_exact, the start level kvm_get_vtcr
chooses) and kvm_pgtable_stage2_destroy (stage2_free_walker, free_pages_exact of the roots)
(arch/arm64/kvm/hyp/pgtable.c), stated over the pages a state holds before and after.

Leaves out: the contents of the tables destroy walks (every counted descriptor's reference is
dropped on the way; S2-LEAK judges what is left in the pool).
"""

from ptspec.spec.arch import geometry as G
from ptspec.spec.stage2.contract_common import Report, check_geometry, check_ret
from ptspec.spec.stage2.step import ENOMEM
from ptspec.spec.statements import statement


@statement("C-INIT", constrains=(
    "kvm_pgtable_stage2_init", "kvm_pgd_pages", "zalloc_pages_exact", "kvm_get_vtcr"))
def contract_init(pre, step, post):
    """C-INIT: kvm_pgtable_stage2_init allocates zeroed root tables, or fails cleanly.

    Statement: ret 0: the post-state has kvm_pgd_pages root pages for the IPA size at the start level
    KVM chooses, each all zero with refcount 1, and no other page was allocated. ret -ENOMEM: no
    root, and no page allocated (nothing leaked). No TLB or cache maintenance.

    Why: the hardware walks these pages as soon as VTTBR points at them: stale contents are
    translations the guest was never given.

    Constrains: kvm_pgtable_stage2_init (kvm_pgd_pages, zalloc_pages_exact), kvm_get_vtcr.
    """
    rep = Report("C-INIT", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    if step.ret == 0:
        ps = post.page_shift
        start = G.stage2_start_level(post.ia_bits, ps)
        n = G.root_pages(post.ia_bits, start, ps)
        if post.start_level != start:
            rep.add(f"start level {post.start_level}, KVM chooses {start} for a {post.ia_bits}-bit IPA")
        if len(post.roots) != n:
            rep.add(f"{len(post.roots)} root page(s), kvm_pgd_pages gives {n}")
        for pa in post.roots:
            descs = post.pages.get(pa)
            if descs is None:
                continue  # S2-TREE reports a root that is not in pages
            if any(descs):
                i = next(k for k, d in enumerate(descs) if d)
                rep.add(f"root {pa:#x} is not zeroed: index {i} holds {descs[i]:#x}", {"table": pa, "index": i})
            if post.refcount[pa] != 1:
                rep.add(f"root {pa:#x} has refcount {post.refcount[pa]}, expected 1", {"table": pa})
        extra = set(post.pages) - set(pre.pages) - set(post.roots)
        for pa in sorted(extra):
            rep.add(f"page {pa:#x} was allocated but is not a root", {"table": pa})
    elif check_ret(rep, step, (0, ENOMEM)):
        if post.roots:
            rep.add(f"returned -ENOMEM but the table has roots {[hex(r) for r in post.roots]}")
        for pa in sorted(set(post.pages) - set(pre.pages)):
            rep.add(f"returned -ENOMEM but page {pa:#x} stays allocated (leaked)", {"table": pa})
    if post.tlb_log:
        rep.add(f"init logged TLB/cache events, first {list(post.tlb_log[0])}")
    return rep.result()


@statement("C-DESTROY", constrains=(
    "kvm_pgtable_stage2_destroy", "stage2_free_walker", "free_pages_exact"))
def contract_destroy(pre, step, post):
    """C-DESTROY: kvm_pgtable_stage2_destroy returns every table page, roots included.

    Statement: ret 0; afterwards there is no root and `pages` is empty (every table page went back
    to the pool); the memcache is untouched (its pages stay there).

    Why: destroy is the only place the hypervisor gets a VM's table pages back.

    Constrains: kvm_pgtable_stage2_destroy, stage2_free_walker (one put per counted descriptor, then
    the table itself), free_pages_exact of the roots.
    """
    rep = Report("C-DESTROY", step)
    if not check_geometry(rep, pre, post):
        return rep.result()
    check_ret(rep, step, 0)
    if post.roots:
        rep.add(f"roots remain after destroy: {[hex(r) for r in post.roots]}")
    for pa in sorted(post.pages):
        rep.add(f"page {pa:#x} was not returned by destroy", {"table": pa})
    if sorted(pre.memcache) != sorted(post.memcache):
        rep.add(f"destroy changed the memcache ({len(pre.memcache)} -> {len(post.memcache)} pages)")
    return rep.result()
