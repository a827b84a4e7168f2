"""Bad arguments to the kernel's C ``pgtable.c``: the kernel's errno, and nothing changed.

Every bad-argument call of impl's ``proofs/stage2/errorpaths.py`` (``BAD_ARGS``: unaligned
ranges, addresses beyond the IPA space, size 0, sizes that wrap or are huge, prot values KVM
refuses, owner ids past ``KVM_MAX_OWNER_ID``, calls without a memcache, and values that are not
u64 at all; on trees with NORMAL_NC or PX/UX also the prots those make -EINVAL:
``replay.prot_cases``; with annotate its refused types and annotations, no memcache, past the
IPA space, and types 18/19, counted as the catalogued annotate-type-truncated:
``replay.annotate_cases``) is made on the C code from each setup's state (``SETUPS``: empty,
a block, pages, owner annotations, a 1G block), each on a freshly replayed table. The spec judges
each call as any step: a call the kernel refuses returns the errno the operation's contract names (-EINVAL, -ERANGE,
-ENOMEM) and changes nothing (tables, refcounts, memcache, no TLB or cache maintenance), every
invariant still holds; a value that is no kernel value is refused by the Python binding before the
C code runs, with the tables unchanged (C-ARGS).
"""

from __future__ import annotations

import time

from ptspec.proofs.kernel import replay, subject
from ptspec.proofs.kernel.errorpaths import scaled, setup_ops


def cases(tree, cls=None, geometry: str | None = None):
    """Yields (label, harness, violations) for every bad call from every setup, on the geometry
    (default 4K/39; addresses scaled to its granule and IPA size)."""
    cls = cls or subject.subject_factory(tree)
    SETUPS, _, _, BAD_ARGS = scaled(geometry, cls)
    for name in SETUPS:
        setup = setup_ops(name, geometry)
        for op, args in BAD_ARGS:
            h = replay.harness(tree, cls=cls, geometry_name=geometry)
            found, _ = replay.run(h, setup + [("op", op, dict(args))])
            yield f"{name}: {op}({args})", h, found


def run_all(tree, *, expired=None, progress=None, geometry: str | None = None) -> replay.Outcome:
    t0 = time.perf_counter()
    cls = subject.subject_factory(tree)
    SETUPS, _, _, BAD_ARGS = scaled(geometry, cls)
    return replay.judge_cases(
        cases(tree, cls, geometry), cls, t0, expired=expired, progress=progress, noun="calls",
        passed=lambda labels: f"{len(labels)} bad-argument calls ({len(BAD_ARGS)} calls x "
                              f"{len(SETUPS)} setups)")
