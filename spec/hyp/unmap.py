"""Contract of the hyp stage-1 unmap: kvm_pgtable_hyp_unmap (6.0 on; 5.12-5.15 have no hyp unmap).

Models which hyp mappings an unmap of [A, E) removes and what it returns, over the leaves of the
table before and after, from the walk's rules: the walk visits [A, E) in address order and stops
at the first page that is not mapped, or whose leaf does not lie entirely inside the range; every
leaf before that point is removed and counted in the return value (bytes unmapped).

Leaves out: which table pages are freed (S1-LEAK and S1-RC judge the tree that remains), TLB
invalidation (S1-UNMAP-TLBI, spec/hyp/tlbi.py).
"""

from ptspec.spec.arch import geometry as G
from ptspec.spec.arch.walk import DESC, END, LEVEL, OPAQUE, START
from ptspec.spec.stage2.contract_common import Report
from ptspec.spec.stage2.state import load_state
from ptspec.spec.stage2.step import load_step, walked_range
from ptspec.spec.statements import statement


def removed_leaves(pre, A, E):
    """The leaves (start, end, level, desc) an unmap of [A, E) removes from `pre`, in order."""
    out = []
    va = A
    walk = pre.walk()
    while va < E:
        iv = walk.find(va)
        if iv is None or not iv[DESC] or iv[START] < A or iv[END] > E:
            break
        out.append((iv[START], iv[END], iv[LEVEL], iv[DESC]))
        va = iv[END]
    return out


def nonzero_leaves(state, opaque=True):
    """{(start, level): desc} of every non-zero leaf the walk reaches; with opaque=False without
    the table descriptors the walk could not follow (S2-TREE reports those). S1-UNMAP-TLBI and
    C-HYP-MAP read it too."""
    return {(iv[START], iv[LEVEL]): iv[DESC] for iv in state.walk().intervals
            if iv[DESC] and (opaque or not iv[OPAQUE])}


@statement("C-HYP-UNMAP", constrains=("kvm_pgtable_hyp_unmap", "hyp_unmap_walker"))
def contract_hyp_unmap(pre, step, post):
    """C-HYP-UNMAP: kvm_pgtable_hyp_unmap removes the whole leaves at the start of the range, only.

    Statement (R = [A, E) the walked range): from A upwards, every valid leaf that lies entirely
    inside R is removed, up to the first page that is not mapped or is mapped by a leaf reaching
    outside R, where the unmap stops; the return value is the number of bytes removed; every other
    leaf, inside R after the stop or outside R, is unchanged, and no leaf appears. A range outside
    the VA space, or a table without a root, returns 0 and changes nothing.

    Why: EL2 unmaps what it mapped for the host or a guest; removing a block that starts before
    the range takes away a mapping the caller still uses, and a return value that is not the bytes
    removed makes the caller's accounting (unmapped == size) wrong.

    Constrains: kvm_pgtable_hyp_unmap, hyp_unmap_walker.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    rep = Report("C-HYP-UNMAP", step)
    A, E = walked_range(step.args["addr"], step.args["size"], pre.page_shift)
    limit = 1 << pre.ia_bits
    gone = [] if (A > limit or E > limit or not pre.roots) else removed_leaves(pre, A, E)
    want = sum(e - s for s, e, _, _ in gone)
    if step.ret != want:
        rep.add(f"returned {step.ret:#x}, expected {want:#x} (the bytes of the "
                f"{len(gone)} whole leaves at the start of [{A:#x}, {E:#x}))")
    before, after = nonzero_leaves(pre), nonzero_leaves(post)
    removed = {(s, level) for s, _, level, _ in gone}
    for (s, level), d in before.items():
        if (s, level) in removed:
            if (s, level) in after:
                rep.add(f"leaf {d:#x} at {s:#x} level {level} lies inside [{A:#x}, {E:#x}) "
                        "before the stop but was not removed", {"ipa": s, "level": level})
        elif after.get((s, level)) != d:
            g = G.granule_size(level, pre.page_shift)
            rep.add(f"leaf {d:#x} at [{s:#x}, {s + g:#x}) level {level} must stay (it is not a "
                    f"whole leaf at the start of [{A:#x}, {E:#x})) but "
                    f"{'was removed' if (s, level) not in after else 'changed'}",
                    {"ipa": s, "level": level, "desc": d})
    for (s, level), d in after.items():
        if (s, level) not in before:
            rep.add(f"new leaf {d:#x} at {s:#x} level {level}", {"ipa": s, "level": level})
    return rep.result()
