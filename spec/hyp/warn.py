"""C-HYP-WARN: which WARN_ONs a hyp stage-1 operation must raise, and that it raises no other.

Models the two WARN_ONs of kvm_pgtable_hyp_map in 5.12-5.15 that a caller can trigger, as the
kernel raises them while the walker visits [A, E) in address order:

* hyp_pte_needs_update: the leaf the walk would install differs from a valid leaf already there
  in more than the software bits 58:55 (a conflicting re-map); the entry is left as it was and
  the walk goes on (C-HYP-MAP states the entry; this statement states the WARN);
* kvm_set_table_pte: a valid block on the path could not hold the leaf (it does not fit in the
  range or the output address is not aligned to it), so a new table is installed over it.

A step record reports the WARNs in ``out.warnings``: one string per WARN_ON that fired, in order,
each beginning with the name of the kernel function whose WARN_ON it was, then ``:``.

Leaves out: the WARN_ONs no caller can reach (a walk past the last level, no leaf possible at
level 3, a failed walk in destroy): by this statement they never fire. A step record without
``out.warnings`` says nothing about WARNs and is not judged.
"""

from ptspec.spec.arch import descriptor as D
from ptspec.spec.arch import geometry as G
from ptspec.spec.hyp.contracts import SW_MASK, hyp_attrs
from ptspec.spec.stage2.contract_common import Report
from ptspec.spec.stage2.state import load_state
from ptspec.spec.stage2.step import ENOMEM, load_step, walked_range
from ptspec.spec.statements import statement

CONFLICT = "hyp_pte_needs_update"
TABLE_OVER_VALID = "kvm_set_table_pte"


def _entry(state, pa, va, level):
    idx = (va >> G.granule_shift(level, state.page_shift)) % state.entries
    page = state.pages.get(pa) if pa is not None else None
    return page[idx] if page is not None else 0      # a missing page: S1-TREE reports it


def due_warnings(pre, A, E, phys_al, attrs):
    """[(va, function)] of the WARNs a complete map of [A, E) to phys_al over `pre` raises, in order.

    Each leaf slot of R is visited once, from A up: down from the root through existing tables;
    a valid block that cannot hold the leaf is replaced by a fresh (zeroed) table (a WARN, once per
    block); where a leaf fits, a valid entry that differs from the new leaf beyond the software
    bits is a conflict (a WARN).
    """
    ps = pre.page_shift
    out, split = [], set()
    va = A
    while va < E:
        pa = pre.roots[0]
        step = 1 << ps
        quiet = 0        # the end of the first empty entry on the path: below it nothing is due
        for level in range(pre.start_level, G.MAX_LEVELS):
            g = G.granule_size(level, ps)
            base = va - va % g
            if (level, base) in split:                # replaced by a table earlier in this walk
                pa = None
                quiet = quiet or base + g
                continue
            d = _entry(pre, pa, va, level)
            if pa is not None and D.is_table(d, level):
                pa = D.address(d, ps)
                continue
            if not d & D.VALID:
                quiet = quiet or base + g
            oa = phys_al + (base - A)
            if G.level_allows_leaf(level, ps) and base >= A and base + g <= E and oa % g == 0:
                new = D.leaf_descriptor(oa, attrs, level, ps)
                if d & D.VALID and d != new and (d ^ new) & ~SW_MASK:
                    out.append((base, CONFLICT))
                step = base + g - va
                break
            if d & D.VALID:
                out.append((base, TABLE_OVER_VALID))
                split.add((level, base))
            pa = None                                 # a fresh (zeroed) table goes here
        va = max(va + step, quiet)     # the slots up to quiet meet only empty entries: no WARN
    return out


@statement("C-HYP-WARN", constrains=(
    "kvm_pgtable_hyp_map", "hyp_map_walker_try_leaf", "hyp_pte_needs_update", "kvm_set_table_pte",
    "hyp_map_walker", "kvm_pgtable_hyp_init", "kvm_pgtable_hyp_destroy"))
def contract_hyp_warn(pre, step, post):
    """C-HYP-WARN: a hyp stage-1 operation WARNs exactly where the kernel's WARN_ONs are due.

    Statement (R = [A, E) the walked range, as in C-HYP-MAP): kvm_pgtable_hyp_map returning 0
    raises, in address order, one hyp_pte_needs_update WARN per leaf slot of R whose valid entry
    differs from the new leaf beyond software bits 58:55 (a conflicting re-map: re-creating the same
    leaf or changing only software bits raises none), and one kvm_set_table_pte WARN per valid block
    on R's path that cannot hold the new leaf and is replaced by a table; nothing else. Returning
    -ENOMEM it raises a prefix of that list (the walk stopped early). A refused map (-EINVAL,
    -ERANGE), an empty range, init and destroy raise none.

    Why: a WARN at EL2 is how a conflicting hyp mapping is noticed at all (the entry is silently
    kept otherwise); a WARN that is not due is noise that hides the one that is, and on a
    panic_on_warn host takes the machine down.

    Constrains: kvm_pgtable_hyp_map, hyp_map_walker_try_leaf, hyp_pte_needs_update,
    kvm_set_table_pte, hyp_map_walker, kvm_pgtable_hyp_init, kvm_pgtable_hyp_destroy.
    """
    pre, post, step = load_state(pre), load_state(post), load_step(step)
    rep = Report("C-HYP-WARN", step)
    if "warnings" not in step.out:
        return rep.result()
    got = [w.split(":", 1)[0].strip() for w in step.out["warnings"]]
    due = []
    if step.op == "map" and step.ret in (0, ENOMEM) and pre.roots:
        a = step.args
        attrs = hyp_attrs(a["prot"], pre.kernel_version)
        A, E = walked_range(a["addr"], a["size"], pre.page_shift)
        phys_al = a["phys"] - a["phys"] % (1 << pre.page_shift)
        limit = 1 << pre.ia_bits
        if attrs is not None and A < E <= limit:
            if phys_al + (E - A) > 1 << pre.pa_bits:
                return rep.result()                 # outside the contract's domain
            due = due_warnings(pre, A, E, phys_al, attrs)
    kinds = [fn for _, fn in due]
    ok = got == kinds if step.ret != ENOMEM else got == kinds[:len(got)]
    if not ok:
        i = next((i for i, (g, k) in enumerate(zip(got, kinds)) if g != k), min(len(got), len(kinds)))
        if i < len(got) and i < len(kinds):
            rep.add(f"WARN #{i + 1} came from {got[i]}, but the one due was {kinds[i]} at "
                    f"{due[i][0]:#x}", {"ipa": due[i][0]})
        elif i < len(got):
            rep.add(f"a WARN from {got[i]} that is not due ({len(kinds)} due: "
                    f"{', '.join(f'{fn} at {va:#x}' for va, fn in due[:4]) or 'none'})")
        else:
            rep.add(f"no WARN from {kinds[i]} at {due[i][0]:#x} (a WARN_ON is due there; "
                    f"{len(got)} raised, {len(kinds)} due)", {"ipa": due[i][0]})
    return rep.result()
