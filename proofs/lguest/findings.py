"""The places where the seed's page_tables.c breaks the spec, each as a replayable counterexample.

Each finding (ids of ``impl.lguest.SEED_FINDINGS``) is a short operation sequence after the usual
boot (``ptspec.proofs.lguest.guest.boot``, two pgdir slots, both formats). ``replay(finding, fmt, variant)``
runs it through ``LguestHarness`` (coherent LG-SHADOW: the guest announces what it writes) and
returns the violations: with the finding kept (the
``seed-as-written`` code) the expected id must be among them; with the corrected code there must
be none. The exhaustive explorer finds each of these on its own (``explore(seed_findings=(id,))``);
the sequences here are the shortest it reported, so the check stays fast and deterministic.
"""

from __future__ import annotations

from ptspec.proofs.lguest import guest as G
from ptspec.proofs.lguest.harness import LguestHarness


def _steps(finding: str, fmt: str) -> list:
    L = G.GuestLayout(fmt)
    A, B = L.pgdirs[0], L.pgdirs[1]
    k1 = G.KERNEL_ADDRESS + 0x1000
    stack = L.stack_esp - 0x1000
    if finding == "set-pte-dirty":           # RW|ACCESSED, not DIRTY: installed writable
        clean = G.pte_value(13, G.P | G.RW | G.A)
        return [("begin", None), ("guest_write", dict(addr=L.pte_addr(0, k1), value=clean)),
                ("set_pte", dict(gpgdir=A, vaddr=k1, gpte=clean)), ("end", None)]
    if finding == "set-pte-stale":           # bad frame on a page with a present shadow PTE
        return [("set_pte", dict(gpgdir=A, vaddr=stack, gpte=G.pte_value(L.pfn_limit + 1,
                                                                         G.P | G.RW | G.A | G.D)))]
    if finding == "set-pte-nonpresent":      # ACCESSED but not PRESENT: a reference taken for nothing
        return [("set_pte", dict(gpgdir=A, vaddr=k1, gpte=G.pte_value(12, G.A)))]
    if finding == "set-pgd-bound":           # idx == PTRS_PER_PGD accepted
        return [("set_pgd", dict(gpgdir=A, idx=4 if L.pae else 1024))]
    if finding == "set-pgd-switcher":        # the switcher's PGD entry of a pgdir not running
        return [("force_random", 1), ("new_pagetable", dict(pgtable=B)), ("force_random", 0),
                ("new_pagetable", dict(pgtable=A)),
                ("set_pgd", dict(gpgdir=B, idx=3 if L.pae else 1023)),
                ("new_pagetable", dict(pgtable=B)), ("run", dict(host_cpu=0))]
    if finding == "demand-upper":            # the guest's PGD/PMD is read-only, its PTE writable
        return [("guest_write", dict(addr=L.pte_addr(0, 0x1000),
                                     value=G.pte_value(12, G.P | G.RW | G.A | G.D))),
                ("guest_write", dict(addr=L.user_pde_addr(0), value=L.user_pte[0] | G.P | G.US | G.A)),
                ("fault", dict(vaddr=0x1000, errcode=2))]
    raise KeyError(finding)


EXPECTED = {"set-pte-dirty": "LG-SHADOW", "set-pte-stale": "LG-RC", "set-pte-nonpresent": "LG-RC",
            "set-pgd-bound": "LG-BND", "set-pgd-switcher": "LG-SWITCHER",
            "demand-upper": "LG-C-DEMAND"}


def replay(finding: str, fmt: str, variant: str):
    """Boot, run the finding's steps; returns the harness (violations in h.violations)."""
    h = LguestHarness(fmt, variant="corrected", npgdirs=2, rng_seed=1, coherent=True,
                      seed_findings=(finding,) if variant == "seed-as-written" else ())
    G.boot(h, G.GuestLayout(fmt))
    for op, args in _steps(finding, fmt):
        if op == "force_random":
            h.force_random(args)
            continue
        if op in ("begin", "end"):
            getattr(h, op)()
            continue
        if h.dead and op != "free":
            break
        h.step(op, **args)
        h.lg.forced_random = []
    return h
